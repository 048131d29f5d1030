"""The command line as a user runs it (subprocesses): exit codes, one-line errors, provenance."""
import subprocess
import sys

import numpy as np

from .helpers import read_tree, write_options
from .toy_plugin import write_toy_mlp
from ..conftest import REPO


def flashsim(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "framework.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def toy_options(tmp_path):
    model = write_toy_mlp(tmp_path)
    return write_options(tmp_path, {"ApplicationMgr": {"EvtMax": 50, "Output": str(tmp_path / "o.root")}, "Algorithms": [
        {"type": "ToyProducer", "name": "Gen"}, {"type": "ToyMLP", "name": "MLP", "ModelFile": str(model)},
        {"type": "ToyTuple", "name": "Tuple"}]})


def test_version_and_help():
    r = flashsim("--version")
    assert r.returncode == 0 and r.stdout.startswith("flashsim ")
    r = flashsim("run", "--help")
    assert r.returncode == 0 and "--show-dataflow" in r.stdout and "--dry-run" in r.stdout


def test_run_writes_output_and_provenance(tmp_path):
    opts = toy_options(tmp_path)
    r = flashsim("run", opts, "-p", "tests.framework.toy_plugin", "-n", 40, "--seed", 5, "--batch-size", 8,
                 "-o", tmp_path / "x.root")
    assert r.returncode == 0, r.stderr
    assert "output written to" in r.stdout and "events/s" in r.stdout
    rows = read_tree(tmp_path / "x.root", "Toy")
    assert np.unique(rows["eventNumber"]).max() <= 39
    r = flashsim("provenance", tmp_path / "x.root")
    assert r.returncode == 0 and "seed: 5" in r.stdout and "toy_mlp" in r.stdout


def test_bad_option_is_one_line_exit_2(tmp_path):
    opts = toy_options(tmp_path)
    r = flashsim("run", opts, "-p", "tests.framework.toy_plugin", "--set", "Gen.Maen=3")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "did you mean 'Mean'" in lines[0] and "Traceback" not in r.stderr
    r = flashsim("run", opts, "-p", "tests.framework.toy_plugin", "--set", "Gen.Maen=3", "--debug")
    assert r.returncode == 2 and "Traceback" in r.stderr


def test_dry_run_dump_and_dataflow(tmp_path):
    opts = toy_options(tmp_path)
    dump = tmp_path / "dump.yaml"
    r = flashsim("run", opts, "-p", "tests.framework.toy_plugin", "--set", "Gen.Mean=4", "--dry-run", "--dump", dump)
    assert r.returncode == 0 and "Mean: 4.0" in r.stdout and dump.exists()
    r = flashsim("run", dump, "-p", "tests.framework.toy_plugin", "--show-dataflow", "--dataflow-dot", tmp_path / "g.dot")
    assert r.returncode == 0 and "INPUT  /Event/MC/Particles" in r.stdout
    assert (tmp_path / "g.dot").read_text().startswith("digraph")


def test_killed_job_leaves_no_file_under_requested_name(tmp_path):
    opts = toy_options(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "framework.cli", "run", str(opts), "-p", "tests.framework.toy_plugin",
                             "-n", "100000000", "--batch-size", "100"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    import time
    time.sleep(6)
    proc.kill()
    proc.wait()
    assert not (tmp_path / "o.root").exists()


def test_plugins_listing_shows_provenance_and_docs():
    r = flashsim("plugins", "-p", "tests.framework.toy_plugin")
    assert r.returncode == 0
    assert "ToyProducer" in r.stdout and "mean multiplicity" in r.stdout and "[plugin tests.framework.toy_plugin" in r.stdout
    assert "plugin builtin  [flashsim" in r.stdout
