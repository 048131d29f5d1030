"""ParticleGun: MC truth model, reproducibility across batch splits, cc, generator cuts with
deterministic regeneration, species mode, matrix-element hook, beam spot and occupancy."""
import math
from types import MappingProxyType, SimpleNamespace

import numpy as np
import pytest
import yaml
from scipy import stats

from algorithms.generators.particle_gun import (ParticleGun, SignalGenerator, SpeciesGenerator,
                                                generate_with_weights, helicity_cos,
                                                vector_dilepton_longitudinal_weight)
from algorithms.common.particle_table import ConfigurationError
from framework import Collection
from framework.context import BatchContext

BU = "[B+ -> (J/psi(1S) -> mu+ mu-) K+]cc"
LB = "[Lambda_b0 -> (Lambda_c+ -> p+ K- pi+) mu- anti-nu_mu]cc"
KEYS = np.array([101, 202, 303], dtype=np.uint64)
CONDITIONS = {"beam_spot_mean_mm": [0.83, -0.17, 0.0], "beam_spot_sigma_mm": [0.03, 0.025, 45.0]}


def make_gun(tmp_path=None, conditions=CONDITIONS, **props):
    props.setdefault("Occupancy", "fixed:42")
    gun = ParticleGun("Generation", **props)
    gun._app = SimpleNamespace(conditions=MappingProxyType(dict(conditions)), msg_svc=None)
    gun.initialize()
    return gun


def run(gun, events, seed=7):
    ctx = BatchContext(np.asarray(events), 1, seed).for_algorithm(gun.name)
    return gun.execute(ctx)


# ---------------------------------------------------------------------- data model
def test_mc_truth_model():
    gun = make_gun(Descriptor=BU, GeneratorCut="DaughtersInLHCb")
    out = run(gun, np.arange(200))
    assert set(out) == {"Header", "Collisions", "Vertices", "Particles"}
    P, V, C, H = out["Particles"], out["Vertices"], out["Collisions"], out["Header"]
    dtypes = {"pid": np.int32, "px": np.float64, "py": np.float64, "pz": np.float64, "E": np.float64,
              "mass": np.float64, "origin_vertex": np.int32, "end_vertex": np.int32, "mother": np.int32,
              "collision": np.int32, "is_signal": np.bool_, "status": np.int32}
    assert {k: P[k].dtype for k in dtypes} == {k: np.dtype(v) for k, v in dtypes.items()}
    assert set(V.columns) == {"x", "y", "z", "t", "type", "collision"} and V["type"].dtype == np.int8
    assert set(C.columns) == {"x", "y", "z", "t", "collision"}
    assert {k: H[k].dtype for k in H.columns} == {"n_collisions": np.int32, "ntracks_override": np.int32,
                                                   "signal_trials": np.int32}
    assert (P.counts == 5).all() and (V.counts == 3).all() and (C.counts == 1).all() and H.n_events == 200
    assert (H["n_collisions"] == 1).all() and (H["ntracks_override"] == 42).all() and (H["signal_trials"] >= 1).all()
    ev0 = P.event(0)
    assert list(np.abs(ev0["pid"])) == [521, 443, 321, 13, 13]
    assert list(ev0["mother"]) == [-1, 0, 0, 1, 1]
    assert list(ev0["status"]) == [2, 2, 1, 1, 1]
    assert list(ev0["end_vertex"]) == [1, 2, -1, -1, -1]
    assert list(ev0["origin_vertex"]) == [0, 1, 1, 2, 2]
    assert list(ev0["is_signal"]) == [True, False, False, False, False]
    assert list(V.event(0)["type"]) == [1, 2, 2]
    # links: a daughter starts where its mother ends, in every event
    ev = P.event_index
    mother_rows = P.offsets[ev] + np.maximum(P["mother"], 0)
    has_mother = P["mother"] >= 0
    assert (P["origin_vertex"][has_mother] == P["end_vertex"][mother_rows[has_mother]]).all()
    # the PV of the event is the collision
    np.testing.assert_array_equal(V["z"][V.offsets[:-1]], C["z"])
    # charge conjugation of the whole tree together
    assert (np.sign(P["pid"][P.offsets[:-1]]) == np.sign(P["pid"][P.offsets[:-1] + 2])).all()


def test_decay_vertices_are_displaced_and_stable_particles_not_decayed():
    gun = make_gun(Descriptor="[B0 -> (J/psi(1S) -> mu+ mu-) (KS0 -> pi+ pi-)]cc", Spectrum="FlatPt",
                   PtRange=[0, 10000], EtaRange=[2, 5])
    out = run(gun, np.arange(2000))
    P, V = out["Particles"], out["Vertices"]
    ks = np.abs(P["pid"]) == 310
    ks_vtx = V.offsets[P.event_index[ks]] + P["end_vertex"][ks]
    pv = V.offsets[P.event_index[ks]]
    flight = np.sqrt((V["x"][ks_vtx] - V["x"][pv]) ** 2 + (V["y"][ks_vtx] - V["y"][pv]) ** 2
                     + (V["z"][ks_vtx] - V["z"][pv]) ** 2)
    assert np.median(flight) > 50  # K0S: ctau = 27 mm, boosted
    stable = np.isin(np.abs(P["pid"]), [211, 13])
    assert (P["status"][stable] == 1).all() and (P["end_vertex"][stable] == -1).all()


# ---------------------------------------------------------------------- reproducibility
@pytest.mark.parametrize("props", [dict(Descriptor=BU, GeneratorCut="DaughtersInLHCb"),
                                   dict(Descriptor=LB, GeneratorCut="ChargedDaughtersInEta"),
                                   dict(Species=["pi+", "K+", "p+"], Multiplicity=3, Spectrum="FlatPt",
                                        PtRange=[0, 5000], EtaRange=[1, 6], GeneratorCut="DaughtersInLHCb")])
def test_batch_split_reproducibility(tmp_path, props):
    hist = tmp_path / "occ.yaml"
    hist.write_text(yaml.safe_dump({"variable": "nTracks", "definition": "test", "bin_edges": [0, 50, 100, 300],
                                    "counts": [1, 5, 2], "provenance": "test"}))
    gun = make_gun(Occupancy="minbias", OccupancyFile=str(hist), **props)
    whole = run(gun, np.arange(100))
    parts = [run(gun, np.arange(a, min(a + 7, 100))) for a in range(0, 100, 7)]
    for key in whole:
        joined = Collection.concat([p[key] for p in parts])
        np.testing.assert_array_equal(joined.offsets, whole[key].offsets)
        for col in whole[key].columns:
            np.testing.assert_array_equal(joined[col], whole[key][col], err_msg=f"{key}.{col}")
    # another seed gives other events
    other = run(gun, np.arange(100), seed=8)
    assert not np.array_equal(other["Particles"]["px"], whole["Particles"]["px"])


def test_event_alone_equals_event_in_batch():
    g = SignalGenerator(LB, cut="DaughtersInLHCb")
    a = g.generate(KEYS, np.arange(1000, 1050))
    b = g.generate(KEYS, np.array([1037]))
    for name in ("px", "py", "pz", "E", "mass", "vx", "vz", "ct", "pid", "trials"):
        np.testing.assert_array_equal(getattr(a, name)[37], getattr(b, name)[0])


# ---------------------------------------------------------------------- cc
def test_cc_is_half_and_half():
    g = SignalGenerator(BU, spectrum="FlatPt", pt_range=(0, 10000), eta_range=(2, 5))
    r = g.generate(KEYS, np.arange(20000))
    n_plus = int((r.pid[:, 0] == 521).sum())
    assert set(np.unique(r.pid[:, 0])) == {521, -521}
    assert stats.binomtest(n_plus, 20000, 0.5).pvalue > 1e-3
    # conjugated events have conjugated daughters
    minus = r.pid[:, 0] == -521
    assert (r.pid[minus, 2] == -321).all() and (r.pid[~minus, 2] == 321).all()
    # no cc: only B+
    r2 = SignalGenerator(BU.strip("[]c")).generate(KEYS, np.arange(100))
    assert (r2.pid[:, 0] == 521).all()


# ---------------------------------------------------------------------- generator-level cuts
def _theta(px, py, pz):
    return np.arctan2(np.hypot(px, py), pz)


def test_generator_cut_and_deterministic_regeneration():
    cut = SignalGenerator(LB, cut="DaughtersInLHCb")
    nocut = SignalGenerator(LB, cut="None")
    ev = np.arange(3000)
    r = cut.generate(KEYS, ev)
    charged = np.array([4, 5, 6, 2])  # p K pi mu (the neutrino, column 3, is exempt)
    th = _theta(r.px[:, charged], r.py[:, charged], r.pz[:, charged])
    assert ((th > 0.010) & (th < 0.400)).all()
    assert (r.trials > 0).mean() > 0.3  # the cut rejects a good fraction of events
    # the event kept is trial number `trials` of the uncut generator, and earlier trials fail
    same = nocut.generate(KEYS, ev, trial_start=r.trials)
    for name in ("px", "py", "pz", "mass", "pid", "ct", "vz"):
        np.testing.assert_array_equal(getattr(same, name), getattr(r, name))
    redo = r.trials > 0
    before = nocut.generate(KEYS, ev[redo], trial_start=r.trials[redo] - 1)
    thb = _theta(before.px[:, charged], before.py[:, charged], before.pz[:, charged])
    assert (~((thb > 0.010) & (thb < 0.400)).all(axis=1)).all()
    # efficiency = events / trials agrees with the uncut pass fraction
    u = nocut.generate(KEYS, np.arange(10000, 20000))
    thu = _theta(u.px[:, charged], u.py[:, charged], u.pz[:, charged])
    eff_direct = ((thu > 0.010) & (thu < 0.400)).all(axis=1).mean()
    eff_trials = ev.size / (r.trials + 1).sum()
    assert abs(eff_direct - eff_trials) < 5 * math.sqrt(eff_direct * (1 - eff_direct) / ev.size)


def test_counters_and_trials_in_header():
    gun = make_gun(Descriptor=BU, GeneratorCut="ChargedDaughtersInEta", CutEtaRange=[2.0, 5.0])
    out = run(gun, np.arange(500))
    H, P = out["Header"], out["Particles"]
    c = gun.counters["generator-level cut"]
    assert c.passed == 500 and c.entries == int(H["signal_trials"].sum())
    charged = np.isin(np.abs(P["pid"]), [13, 321])
    eta = np.arcsinh(P["pz"][charged] / np.hypot(P["px"][charged], P["py"][charged]))
    assert ((eta > 2) & (eta < 5)).all()


# ---------------------------------------------------------------------- species gun
def test_species_mode():
    gun = make_gun(Species=["pi+", "K+", "p+"], Multiplicity=4, Spectrum="FlatPt", PtRange=[100, 5000],
                   EtaRange=[2, 5])
    out = run(gun, np.arange(3000))
    P = out["Particles"]
    assert (P.counts == 4).all()
    assert (P["status"] == 1).all() and (P["end_vertex"] == -1).all() and (P["origin_vertex"] == 0).all()
    assert not P["is_signal"].any() and (P["mother"] == -1).all()
    ids, counts = np.unique(P["pid"], return_counts=True)
    assert list(ids) == [-2212, -321, -211, 211, 321, 2212]
    assert stats.chisquare(counts).pvalue > 1e-3
    np.testing.assert_allclose(P["E"] ** 2 - P["px"] ** 2 - P["py"] ** 2 - P["pz"] ** 2, P["mass"] ** 2,
                               rtol=1e-6, atol=1e-3)
    gun2 = make_gun(Species=["pi+"], ChargeConjugates=False, Multiplicity=1, Spectrum="FlatPt")
    assert (run(gun2, np.arange(100))["Particles"]["pid"] == 211).all()


# ---------------------------------------------------------------------- matrix-element hook
def test_matrix_element_hook_gives_longitudinal_jpsi():
    g = SignalGenerator(BU, spectrum="FlatPt", pt_range=(0, 20000), eta_range=(2, 5))
    ev = np.arange(20000)
    r, stats_ = generate_with_weights(g, KEYS, ev, vector_dilepton_longitudinal_weight, np.uint64(999), 1.0)
    assert stats_["me_passed"] == ev.size and 0.55 < ev.size / stats_["me_trials"] < 0.78  # <1-c^2> = 2/3

    def cos_of(r):
        p4 = lambda c: np.stack([r.px[:, c], r.py[:, c], r.pz[:, c], r.E[:, c]], 1)  # noqa: E731
        lep = np.where(r.pid[:, 3] < 0, 3, 4)
        rows = np.arange(r.pid.shape[0])
        l4 = np.stack([r.px[rows, lep], r.py[rows, lep], r.pz[rows, lep], r.E[rows, lep]], 1)
        return helicity_cos(p4(0), p4(1), l4)

    edges = np.linspace(-1, 1, 21)
    counts, _ = np.histogram(cos_of(r), edges)
    expected = np.diff(edges - edges ** 3 / 3) / (4 / 3) * ev.size
    assert stats.chisquare(counts, expected).pvalue > 1e-3
    flat, _ = np.histogram(cos_of(g.generate(KEYS, ev)), edges)
    assert stats.chisquare(flat).pvalue > 1e-3
    # reproducible whatever the batch split
    r2, _ = generate_with_weights(g, KEYS, ev[5:12], vector_dilepton_longitudinal_weight, np.uint64(999), 1.0)
    np.testing.assert_array_equal(r2.px, r.px[5:12])
    np.testing.assert_array_equal(r2.trials, r.trials[5:12])


def test_matrix_element_property_and_bad_callable():
    gun = make_gun(Descriptor=BU, MatrixElementWeight=
                   "algorithms.generators.particle_gun:vector_dilepton_longitudinal_weight")
    out = run(gun, np.arange(300))
    assert gun.counters["matrix-element accept"].passed == 300
    assert (out["Header"]["signal_trials"] >= 1).all()
    with pytest.raises(ConfigurationError, match="no callable"):
        make_gun(Descriptor=BU, MatrixElementWeight="algorithms.generators.particle_gun:nope")
    with pytest.raises(ConfigurationError, match="module:function"):
        make_gun(Descriptor=BU, MatrixElementWeight="nonsense")


# ---------------------------------------------------------------------- beam spot
def test_primary_vertex_from_conditions_and_override():
    gun = make_gun(Descriptor=BU)
    C = run(gun, np.arange(5000))["Collisions"]
    for k, mu, sig in zip("xyz", CONDITIONS["beam_spot_mean_mm"], CONDITIONS["beam_spot_sigma_mm"]):
        x = C[k]
        assert abs(x.mean() - mu) < 4 * sig / math.sqrt(x.size)
        assert abs(x.std() / sig - 1) < 4 / math.sqrt(2 * x.size)
        assert stats.kstest(x, "norm", args=(mu, sig)).pvalue > 1e-3
    assert abs(C["t"].std() - 45.0 / 299.792458) < 0.01
    gun2 = make_gun(Descriptor=BU, BeamSpotMean=[0, 0, 10], BeamSpotSigma=[0, 0, 0], PVTimeSigma=0.0)
    C2 = run(gun2, np.arange(10))["Collisions"]
    assert (C2["z"] == 10).all() and (C2["x"] == 0).all() and (C2["t"] == 0).all()


# ---------------------------------------------------------------------- configuration errors
def test_configuration_errors(tmp_path):
    with pytest.raises(ConfigurationError, match="did you mean"):
        make_gun(Descriptor="[B+ -> (Jpsi -> mu+ mu-) K+]cc")
    with pytest.raises(ConfigurationError, match="kinematically forbidden"):
        make_gun(Descriptor="[B+ -> (J/psi(1S) -> mu+ mu-) (D0 -> K+ K- K+ K-) pi+]cc")
    with pytest.raises(ConfigurationError, match="Descriptor.*Species"):
        make_gun()
    with pytest.raises(ConfigurationError, match="either"):
        make_gun(Descriptor=BU, Species=["pi+"])
    with pytest.raises(ConfigurationError, match="did you mean"):
        make_gun(Species=["pion+"])
    with pytest.raises(ConfigurationError, match="GeneratorCut"):
        ParticleGun("g", GeneratorCut="DaughtersInLHcb")
    with pytest.raises(ConfigurationError, match="beam_spot_mean_mm"):
        make_gun(conditions={}, Descriptor=BU)
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigurationError, match=r"nope\.yaml.*fixed:N"):
        make_gun(Descriptor=BU, Occupancy="minbias", OccupancyFile=str(missing))
    with pytest.raises(ConfigurationError, match="fixed:N"):
        make_gun(Descriptor=BU, Occupancy="fixed:-3")


def test_too_many_trials_fails_the_event():
    g = SignalGenerator(BU, cut="ChargedDaughtersInEta", cut_eta_range=(7.0, 8.0), eta_range=(2, 3), max_trials=50)
    with pytest.raises(RuntimeError, match="too many trials"):
        g.generate(KEYS, np.arange(3))


def test_species_generator_direct_cut():
    g = SpeciesGenerator(["mu-"], multiplicity=2, spectrum="FlatPt", eta_range=(1, 6), cut="ChargedDaughtersInEta")
    r = g.generate(KEYS, np.arange(500))
    eta = np.arcsinh(r.pz / np.hypot(r.px, r.py))
    assert ((eta > 2) & (eta < 5)).all() and (r.trials > 0).any()
