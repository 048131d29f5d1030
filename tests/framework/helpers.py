import io
from pathlib import Path

import numpy as np
import uproot
import yaml

from framework.appmgr import ApplicationMgr
from framework.options import load_options
from framework.registry import Plugins

TOY = "tests.framework.toy_plugin"
_PLUGINS = None


def plugins():
    global _PLUGINS
    if _PLUGINS is None:
        _PLUGINS = Plugins(extra_plugins=[TOY])
    return _PLUGINS


def write_options(tmp_path: Path, data: dict, name="job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def make_app(paths, overrides=()):
    if not isinstance(paths, (list, tuple)):
        paths = [paths]
    log = io.StringIO()
    app = ApplicationMgr(load_options(paths), list(overrides), plugins(), stream=log)
    app.log = log
    return app


def read_tree(path, tree):
    with uproot.open(path) as f:
        return f[tree].arrays(library="np")


def assert_same_columns(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
