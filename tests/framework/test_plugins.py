"""Plugins: the example package is pip-installed and found through its entry point."""
import subprocess
import sys

import pytest

from framework import ConfigurationError
from framework.registry import Plugins

from ..conftest import REPO
from .helpers import read_tree, write_options

EXAMPLE = REPO / "tests" / "example_plugin"


@pytest.fixture(scope="module")
def installed_example():
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", str(EXAMPLE)]
    r = subprocess.run(pip, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    yield
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "--quiet", "-y", "flashsim-example-plugin"],
                   capture_output=True, timeout=300)


def test_example_plugin_is_short():
    code = (EXAMPLE / "flashsim_example_plugin" / "__init__.py").read_text().splitlines()
    assert len([l for l in code if l.strip()]) <= 30


def test_installed_plugin_runs_from_options(installed_example, tmp_path):
    r = subprocess.run([sys.executable, "-m", "framework.cli", "plugins"], cwd=tmp_path, capture_output=True, text=True)
    assert "HighPtParticles" in r.stdout and "flashsim-example-plugin 0.1.0" in r.stdout
    from .toy_plugin import write_toy_mlp  # noqa: F401 (toy producer comes from the toy plugin)
    opts = write_options(tmp_path, {"ApplicationMgr": {"EvtMax": 200, "Output": str(tmp_path / "p.root")}, "Algorithms": [
        {"type": "ToyProducer", "name": "Gen"}, {"type": "HighPtParticles", "name": "HighPt", "MinPT": 1500.0}]})
    r = subprocess.run([sys.executable, "-m", "framework.cli", "run", str(opts), "-p", "tests.framework.toy_plugin"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert '"pT > MinPT"' in r.stdout


def test_misspelt_hook_is_rejected(tmp_path, monkeypatch):
    mod = tmp_path / "typo_plugin.py"
    mod.write_text("from framework import hookimpl\n@hookimpl\ndef flashsim_register_component(registry):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigurationError, match="flashsim_register_component"):
        Plugins(extra_plugins=["typo_plugin"])


def test_wrapper_hook_only_called_when_implemented(tmp_path, monkeypatch):
    mod = tmp_path / "audit_plugin.py"
    mod.write_text(
        "from framework import hookimpl\nCALLS = []\n"
        "@hookimpl(wrapper=True)\ndef flashsim_execute_algorithm(algorithm, ctx, inputs):\n"
        "    CALLS.append((algorithm.name, ctx.n_events))\n    result = yield\n    return result\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from framework.appmgr import ApplicationMgr
    from framework.options import load_options
    import io

    opts = write_options(tmp_path, {"ApplicationMgr": {"EvtMax": 30, "BatchSize": 10},
                                    "Algorithms": [{"type": "ToyProducer", "name": "Gen"}]})
    plugins = Plugins(extra_plugins=["tests.framework.toy_plugin", "audit_plugin"])
    app = ApplicationMgr(load_options([opts]), [], plugins, stream=io.StringIO())
    app.run()
    import audit_plugin
    assert audit_plugin.CALLS == [("Gen", 10)] * 3
    plain = ApplicationMgr(load_options([opts]), [], Plugins(extra_plugins=["tests.framework.toy_plugin"]), stream=io.StringIO())
    plain.initialize()
    assert plain._wrapper_hook is False
