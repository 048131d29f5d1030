"""DecayTree / MCDecayTree from a real job on synthetic events: DaVinci branch names, units,
truth matching, the MCDecayTree link, DTF branches, the tuple-columns hook, empty events."""
import io
import json

import numpy as np
import pytest
import uproot
import yaml
from scipy import stats

from framework import hookimpl
from framework.appmgr import ApplicationMgr
from framework.options import load_options
from framework.registry import Plugins
from tests.analysis.test_combiner_events import CTAU_B, M_B, M_JPSI, PLUGIN

TAU_B_NS = CTAU_B / 299.792458
DECAY = "[B+ -> (J/psi(1S) -> mu+ mu-) K+]cc"


class ExtraBranches:
    __name__ = "extra_branches_plugin"

    @hookimpl
    def flashsim_tuple_columns(self, tuple_name, candidates, ctx):
        if tuple_name == "DecayTree":
            return {"B_PT_GeV": candidates["B_PT"] / 1000.0}
        return None


def run_job(tmp_path, n=300, batch=120, signal=1.0, prompt=(3, 10), collisions=2, hook=False, name="out.root"):
    out = tmp_path / name
    algs = [
        {"type": "SynthEvents", "name": "Gen", "Collisions": collisions, "SignalFraction": signal,
         "Prompt": list(prompt)},
        {"type": "MakeParticles", "name": "Muons", "Species": "mu+", "Cut": "isMuon and PT > 300"},
        {"type": "MakeParticles", "name": "Kaons", "Species": "K+", "Cut": "PIDK > 0"},
        {"type": "CombineParticles", "name": "B2JpsiK", "Decay": DECAY,
         "Inputs": ["/Event/Phys/Muons/Particles", "/Event/Phys/Kaons/Particles"],
         "CombinationCuts": {"J/psi(1S)": "ADAMASS('J/psi(1S)') < 150"},
         "CombinationCut": "ADAMASS('B+') < 500 and ADOCAMAX('') < 1", "MotherCut": "VFASPF(VCHI2/VDOF) < 25"},
        {"type": "DecayTreeTuple", "name": "Tuple", "Candidates": "/Event/Phys/B2JpsiK/Particles",
         "Branches": {"B": "^([B+ -> (J/psi(1S) -> mu+ mu-) K+]CC)", "Jpsi": "J/psi(1S)",
                      "muplus": "[B+ -> (J/psi(1S) -> ^mu+ mu-) K+]CC", "muminus": 3, "K": "K+"},
         "DTF": {"PVJpsi": {"constrainToOriginVertex": True, "daughtersToConstrain": ["J/psi(1S)"]}}},
        {"type": "MCDecayTreeTuple", "name": "MCTuple", "Decay": DECAY,
         "Branches": {"B": 0, "Jpsi": 1, "muplus": 2, "muminus": 3, "K": 4}},
    ]
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"ApplicationMgr": {"EvtMax": n, "BatchSize": batch, "Output": str(out),
                                                       "RunNumber": 4242},
                                    "Algorithms": algs}, sort_keys=False))
    plugins = Plugins(extra_plugins=[PLUGIN] + ([ExtraBranches()] if hook else []))
    app = ApplicationMgr(load_options([path]), [], plugins, stream=io.StringIO())
    app.run()
    with uproot.open(out) as f:
        dt = f["DecayTree"].arrays(library="np")
        mc = f["MCDecayTree"].arrays(library="np")
        types = {k: f["DecayTree"][k].typename for k in f["DecayTree"].keys()}
        meta = json.loads(str(f["flashsim/MCTuple_GeneratorEfficiency"]))
    return dt, mc, types, meta


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    return run_job(tmp_path_factory.mktemp("tuples"), hook=True)


def test_branch_names_and_types(job):
    dt, mc, types, _ = job
    head = ["M", "MM", "P", "PT", "PE", "PX", "PY", "PZ", "ETA", "ID"]
    composite = ["ENDVERTEX_X", "ENDVERTEX_Y", "ENDVERTEX_Z", "ENDVERTEX_CHI2", "ENDVERTEX_NDOF", "OWNPV_X",
                 "OWNPV_Y", "OWNPV_Z", "IP_OWNPV", "IPCHI2_OWNPV", "FD_OWNPV", "FDCHI2_OWNPV", "DIRA_OWNPV",
                 "MCORR", "TAU", "BKGCAT"]
    track = ["TRACK_Type", "TRACK_CHI2NDOF", "TRACK_GhostProb", "PIDe", "PIDmu", "PIDK", "PIDp", "ProbNNe",
             "ProbNNmu", "ProbNNpi", "ProbNNk", "ProbNNp", "ProbNNghost", "isMuon", "hasRich", "InMuonAcc"]
    truth = ["TRUEID", "MC_MOTHER_ID", "TRUEP_X", "TRUEP_Y", "TRUEP_Z", "TRUEP_E", "TRUEPT", "TRUEORIGINVERTEX_X",
             "TRUEORIGINVERTEX_Y", "TRUEORIGINVERTEX_Z", "TRUEENDVERTEX_X", "TRUEENDVERTEX_Y", "TRUEENDVERTEX_Z",
             "TRUETAU"]
    event = ["runNumber", "eventNumber", "nTracks", "nPVs", "nCandidate", "totCandidates", "signalKey"]
    for b in event:
        assert b in dt, b
    for p in ("B", "Jpsi"):
        for b in head + composite + truth:
            assert f"{p}_{b}" in dt, f"{p}_{b}"
    for p in ("muplus", "muminus", "K"):
        for b in head + track + truth:
            assert f"{p}_{b}" in dt, f"{p}_{b}"
        assert f"{p}_BKGCAT" not in dt and f"{p}_ENDVERTEX_X" not in dt
    for b in ("B_PVJpsi_M", "B_PVJpsi_chi2", "B_PVJpsi_nDOF", "B_PVJpsi_ctau", "B_PT_GeV"):
        assert b in dt, b
    n = len(dt["B_M"])
    assert n > 200 and all(len(v) == n for v in dt.values())
    assert types["B_ID"] == "int32_t" and types["B_BKGCAT"] == "int32_t" and types["K_isMuon"] == "bool"
    assert types["eventNumber"] == "uint64_t" and types["runNumber"] == "uint32_t"
    assert np.all(dt["runNumber"] == 4242)
    for b in ["B_" + x for x in ["ID", "TRUEID", "TRUEP_X", "TRUEP_Y", "TRUEP_Z", "TRUEP_E", "TRUEPT", "TRUEM",
                                 "TRUEETA", "TRUETAU", "TRUEORIGINVERTEX_Z", "TRUEENDVERTEX_Z", "MC_MOTHER_ID"]]:
        assert b in mc, b
    assert {"runNumber", "eventNumber", "signalKey", "decayMatched"} <= set(mc)


def test_units_and_physics(job):
    dt, mc, _, _ = job
    sig = dt["B_BKGCAT"] == 0
    assert sig.mean() > 0.7
    # MeV
    assert abs(np.median(dt["B_M"][sig]) - M_B) < 10 and abs(np.median(dt["Jpsi_M"][sig]) - M_JPSI) < 5
    np.testing.assert_allclose(dt["K_M"], 493.677, rtol=1e-6)
    np.testing.assert_allclose(dt["B_PVJpsi_Jpsi_M"][dt["B_PVJpsi_status"] == 0], M_JPSI, atol=1e-3, rtol=0)
    assert np.all(np.abs(dt["B_ID"]) == 521) and np.all(dt["B_ID"] * dt["K_ID"] > 0)
    # mm: reconstructed vs true decay vertex, flight distance ~ beta*gamma*c*tau
    dz = (dt["B_ENDVERTEX_Z"] - dt["B_TRUEENDVERTEX_Z"])[sig]
    assert np.std(dz) < 0.5
    bg = dt["B_TRUEP_Z"][sig] / M_B
    assert 0.6 < np.mean(dt["B_FD_OWNPV"][sig] / bg) / CTAU_B < 1.4
    # ns: MCDecayTree true proper time is exponential with the B lifetime
    tt = mc["B_TRUETAU"]
    assert stats.kstest(tt / TAU_B_NS, "expon").pvalue > 1e-3
    # reconstructed TAU vs true for signal: unbiased, resolution well below the lifetime
    d = (dt["B_TAU"] - dt["B_TRUETAU"])[sig]
    assert abs(np.median(d)) < 0.05 * TAU_B_NS and np.std(d) < 0.3 * TAU_B_NS
    # the Jpsi is a resonance: zero true lifetime w.r.t. the B vertex
    assert np.allclose(dt["Jpsi_TRUETAU"][sig], 0.0, atol=1e-9)
    assert np.all(dt["muplus_TRUEID"][sig] == dt["muplus_ID"][sig]) and np.all(dt["Jpsi_TRUEID"][sig] == 443)
    assert np.all(np.abs(dt["muplus_ID"]) == 13) and np.all(dt["muplus_ID"] == -dt["muminus_ID"])
    assert np.all(dt["K_MC_MOTHER_ID"][sig] == dt["B_TRUEID"][sig])
    np.testing.assert_allclose(dt["B_PT_GeV"], dt["B_PT"] / 1000.0)
    # candidates per event
    key = dt["eventNumber"]
    for e in np.unique(key)[:50]:
        m = key == e
        assert sorted(dt["nCandidate"][m]) == list(range(m.sum())) and np.all(dt["totCandidates"][m] == m.sum())


def test_mcdecaytree_link_and_generator_efficiency(job):
    dt, mc, _, meta = job
    assert len(mc["B_TRUEID"]) == 300 and mc["decayMatched"].all()  # one signal decay per event
    assert set(np.abs(mc["B_TRUEID"])) == {521}
    index = {(int(e), int(k)): i for i, (e, k) in enumerate(zip(mc["eventNumber"], mc["signalKey"]))}
    sig = dt["B_BKGCAT"] == 0
    linked = [index.get((int(e), int(k))) for e, k in zip(dt["eventNumber"], dt["signalKey"])]
    assert all(i is not None for i, s in zip(linked, sig) if s)
    rows = np.array([i for i, s in zip(linked, sig) if s])
    np.testing.assert_allclose(dt["B_TRUEP_X"][sig], mc["B_TRUEP_X"][rows])
    np.testing.assert_allclose(dt["K_TRUEP_Z"][sig], mc["K_TRUEP_Z"][rows])
    assert np.all(dt["signalKey"][dt["B_BKGCAT"] >= 60] == -1)
    # efficiency of reconstructing + selecting the signal
    eff = len(np.unique(rows)) / len(mc["B_TRUEID"])
    assert 0.3 < eff <= 1.0
    assert meta["events"] == 300 and meta["trials"] >= 300
    assert meta["generator_cut_efficiency"] == pytest.approx(300 / meta["trials"])


def test_combinatorial_candidates_are_real(job):
    dt, *_ = job
    cats = set(np.unique(dt["B_BKGCAT"]))
    assert 0 in cats and cats - {0}, cats  # not only truth-matched candidates
    assert np.all(dt["B_TRUEID"][dt["B_BKGCAT"] >= 60] == 0)


def test_empty_events_give_no_rows(tmp_path):
    dt, mc, _, meta = run_job(tmp_path, n=20, batch=7, signal=0.0, prompt=(0, 1), collisions=1, name="empty.root")
    assert len(dt["B_M"]) == 0 and len(mc["B_TRUEID"]) == 0 and meta["events"] == 20


def test_batch_size_independence(tmp_path, job):
    dt1, mc1, _, _ = job
    dt2, mc2, _, _ = run_job(tmp_path, batch=1000, hook=True, name="big.root")
    assert sorted(dt1) == sorted(dt2)
    for k in dt1:
        np.testing.assert_array_equal(dt1[k], dt2[k], err_msg=k)
    for k in mc1:
        np.testing.assert_array_equal(mc1[k], mc2[k], err_msg=k)
