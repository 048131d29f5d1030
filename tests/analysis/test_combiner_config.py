"""Configuration errors of the analysis algorithms surface at initialize with clear messages."""
import io

import pytest
import yaml

from framework import ConfigurationError
from framework.appmgr import ApplicationMgr
from framework.options import load_options
from framework.registry import Plugins
from tests.analysis.test_combiner_events import PLUGIN

_PLUGINS = None


def plugins():
    global _PLUGINS
    if _PLUGINS is None:
        _PLUGINS = Plugins(extra_plugins=[PLUGIN])
    return _PLUGINS


def job(tmp_path, combiner=None, tuple_=None, makers=None):
    algs = [{"type": "SynthEvents", "name": "Gen"}]
    algs += makers if makers is not None else [
        {"type": "MakeParticles", "name": "Muons", "Species": "mu+", "Cut": "isMuon"},
        {"type": "MakeParticles", "name": "Kaons", "Species": "K+", "Cut": "PIDK > 0"}]
    comb = {"type": "CombineParticles", "name": "B2JpsiK", "Decay": "[B+ -> (J/psi(1S) -> mu+ mu-) K+]cc",
            "Inputs": ["/Event/Phys/Muons/Particles", "/Event/Phys/Kaons/Particles"]}
    comb.update(combiner or {})
    algs.append(comb)
    if tuple_ is not None:
        algs.append({"type": "DecayTreeTuple", "name": "Tuple", "Candidates": "/Event/Phys/B2JpsiK/Particles",
                     **tuple_})
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({"ApplicationMgr": {"EvtMax": 5, "Output": str(tmp_path / "o.root")},
                                    "Algorithms": algs}, sort_keys=False))
    app = ApplicationMgr(load_options([path]), [], plugins(), stream=io.StringIO())
    return app


def init_error(tmp_path, **kw):
    app = job(tmp_path, **kw)
    with pytest.raises(ConfigurationError) as info:
        app.initialize()
    return str(info.value)


def test_valid_configuration_initializes(tmp_path):
    app = job(tmp_path, tuple_={})
    app.initialize()
    comb = app.algorithms[3]
    assert comb.particle_topology().names == ("B+", "J/psi(1S)", "mu+", "mu-", "K+")
    assert comb.particle_species() == {521, -521}
    assert list(app.algorithms[4].labels) == ["Bplus", "Jpsi", "muplus", "muminus", "Kplus"]


def test_unknown_particle_in_descriptor(tmp_path):
    msg = init_error(tmp_path, combiner={"Decay": "[B+ -> (J/psi(1S) -> mu+ mu-) Kplus]cc"})
    assert "B2JpsiK" in msg and "Decay" in msg and "unknown particle name 'Kplus'" in msg
    msg = init_error(tmp_path, combiner={"Decay": "[B+ -> (J/psi(1S) -> mu+ mu-) K+]cc", "Inputs": []})
    assert "Inputs is empty" in msg


def test_daughters_not_in_inputs(tmp_path):
    msg = init_error(tmp_path, combiner={"Decay": "[B+ -> (J/psi(1S) -> mu+ mu-) pi+]cc"})
    assert "no input provides 'pi+'" in msg and "/Event/Phys/Kaons/Particles" in msg
    msg = init_error(tmp_path, combiner={"Decay": "[B+ -> J/psi(1S) K+]cc"})
    assert "no input provides 'J/psi(1S)'" in msg


def test_bad_cuts_and_names(tmp_path):
    msg = init_error(tmp_path, combiner={"DaughtersCuts": {"pi+": "PT > 1"}})
    assert "DaughtersCuts" in msg and "'pi+' is not a daughter" in msg
    msg = init_error(tmp_path, combiner={"MotherCut": "PIDK > 0"})
    assert "MotherCut" in msg and "tracks only" in msg
    msg = init_error(tmp_path, combiner={"CombinationCut": "ADAMASS('B+') < 500 and ADOCAMAX() < 0.5"})
    assert "CombinationCut" in msg and "ADOCAMAX" in msg and "column" in msg
    msg = init_error(tmp_path, combiner={"DaughtersCuts": {"K+": "BPVDIRA > 0.9"}})
    assert "composite particles only" in msg
    kaons = {"type": "MakeParticles", "name": "Kaons", "Species": "K+"}
    msg = init_error(tmp_path, makers=[{"type": "MakeParticles", "name": "Muons", "Species": "mu+",
                                        "Cut": "PT > 500 and PIDX > 0"}, kaons])
    assert "Muons.Cut" in msg and "unknown functor 'PIDX' at column 14 (did you mean 'PIDK'?)" in msg
    msg = init_error(tmp_path, makers=[{"type": "MakeParticles", "name": "Muons", "Species": "gamma"}, kaons])
    assert "neutral" in msg
    msg = init_error(tmp_path, makers=[{"type": "MakeNoPIDParticles", "name": "Muons", "Species": "mu+",
                                        "Cut": "PIDmu > 0"},
                                       {"type": "MakeParticles", "name": "Kaons", "Species": "K+"}])
    assert "no ProtoParticles input" in msg


def test_inputs_must_be_particles(tmp_path):
    app = job(tmp_path, combiner={"Inputs": ["/Event/Phys/Muons/Particles", "/Event/Rec/Tracks"]})
    with pytest.raises(ConfigurationError, match="does not produce analysis particles"):
        app.initialize()
    app = job(tmp_path, combiner={"Inputs": ["/Event/Phys/Muons/Particles", "/Event/Phys/Kaon/Particles"]})
    with pytest.raises(ConfigurationError, match="Kaon/Particles"):
        app.initialize()


def test_tuple_branch_errors(tmp_path):
    msg = init_error(tmp_path, tuple_={"Branches": {"B": "[B+ -> (J/psi(1S) -> ^mu+ mu-) pi+]CC"}})
    assert "Tuple.Branches" in msg and "does not match" in msg
    msg = init_error(tmp_path, tuple_={"Branches": {"mus": "[B+ -> (J/psi(1S) -> ^mu+ ^mu-) K+]CC"}})
    assert "exactly one" in msg
    msg = init_error(tmp_path, tuple_={"Branches": {"X": 9}})
    assert "out of range" in msg
    msg = init_error(tmp_path, tuple_={"DTF": {"PV": {"constrainToOriginVertx": True}}})
    assert "unknown key 'constrainToOriginVertx'" in msg and "did you mean" in msg
    msg = init_error(tmp_path, tuple_={"DTF": {"M": {"daughtersToConstrain": ["D0"]}}})
    assert "Tuple.DTF" in msg and "D0" in msg
