"""The shipped particle-gun options files run through the framework's ApplicationMgr."""
from pathlib import Path

import numpy as np
import pytest
import yaml

from algorithms.generators.occupancy import DEFAULT_OCCUPANCY_FILE, resolve_path
from algorithms.generators.particle_gun import ParticleGun
from framework import hookimpl
from framework.appmgr import ApplicationMgr
from framework.errors import ConfigurationError
from framework.options import load_options
from framework.registry import Plugins

REPO = Path(__file__).resolve().parents[2]
OPTIONS = sorted((REPO / "options" / "generators").glob("pgun_*.yaml"))


class _GunPlugin:
    """Registers ParticleGun in case algorithms/plugin.py does not (yet)."""
    __name__ = "tests.generators.gun_plugin"

    @hookimpl
    def flashsim_register_components(self, registry):
        registry.add_algorithm(ParticleGun)


def _app(path, *overrides):
    opts = load_options([path])
    return ApplicationMgr(opts, overrides=["ApplicationMgr.Output=", *overrides],
                          plugins=Plugins(extra_plugins=[_GunPlugin()], autoload=False))


def test_options_files_exist():
    names = {p.name for p in OPTIONS}
    assert {"pgun_Bu2JpsiK.yaml", "pgun_Lb2Lcmunu.yaml"} <= names
    for p in OPTIONS:
        d = yaml.safe_load(p.read_text())
        assert set(d["ApplicationMgr"]) >= {"EvtMax", "BatchSize", "Seed", "RunNumber", "Output", "Conditions",
                                            "OutputLevel"}
        assert d["Algorithms"][0]["type"] == "ParticleGun"


@pytest.mark.parametrize("path", OPTIONS, ids=lambda p: p.name)
def test_options_run(path):
    app = _app(path, "Generation.Occupancy=fixed:77")
    app.initialize()
    store = app.run_batch(np.arange(250))
    P = store.get("/Event/MC/Particles")
    H = store.get("/Event/Gen/Header")
    assert P.n_events == 250 and (H["ntracks_override"] == 77).all()
    assert P["is_signal"].sum() == 250
    gun = app.algorithms[0]
    assert gun.counters["generator-level cut"].passed == 250


@pytest.mark.parametrize("path", OPTIONS, ids=lambda p: p.name)
def test_options_minbias_occupancy(path):
    app = _app(path)
    if resolve_path(DEFAULT_OCCUPANCY_FILE).exists():
        app.initialize()
        H = app.run_batch(np.arange(50)).get("/Event/Gen/Header")
        assert (H["ntracks_override"] >= 0).all()
    else:
        with pytest.raises(ConfigurationError, match="minbias_ntracks_2016-MagUp-13TeV.yaml.*fixed:N"):
            app.initialize()
