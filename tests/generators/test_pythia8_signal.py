"""Pythia8SignalGenerator: LHCb-style signal production with pythia8mc (repeated hadronisation, one
chosen candidate decayed in the requested channel, everything else generic).

The physics tests use ``HardQCD:hardbbbar`` for the signal interaction (a b pair in every event:
fast); one test runs the real minimum-bias production (``SoftQCD:nonDiffractive``) on a few
events.  Skipped if pythia8mc is not installed."""
from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from scipy import stats

pytest.importorskip("pythia8mc")

from framework import ConfigurationError, hookimpl  # noqa: E402
from framework.random import RandomStreams  # noqa: E402
from algorithms.generators import phasespace as ps  # noqa: E402
from algorithms.generators import pythia8_signal as S  # noqa: E402
from algorithms.generators.truth_builder import C_MM_PER_NS  # noqa: E402

BU = "[B+ -> (J/psi(1S) -> mu+ mu-) K+]cc"
LB = "[Lambda_b0 -> (Lambda_c+ -> p+ K- pi+) mu- anti-nu_mu]cc"
HARD_BB = ["HardQCD:hardbbbar = on", "PhaseSpace:pTHatMin = 5."]


@hookimpl
def flashsim_register_components(registry):
    registry.add_algorithm(S.Pythia8SignalGenerator)


def make_app(props=None, **app_props):
    from framework.appmgr import ApplicationMgr
    from framework.options import AlgSpec, JobOptions, Where
    from framework.registry import Plugins

    props = {"Descriptor": BU, "Commands": HARD_BB, "PileUpCommands": ["SoftQCD:nonDiffractive = on"],
             "GeneratorCut": "DaughtersInLHCb", **(props or {})}
    opts = JobOptions(app={"Output": "", "OutputLevel": "WARNING", "EvtMax": 1000, **app_props},
                      algorithms=[AlgSpec("Pythia8SignalGenerator", "Generation", Where("test"), props)])
    app = ApplicationMgr(opts, plugins=Plugins(extra_plugins=[sys.modules[__name__]], autoload=False))
    app.initialize()
    return app


PATHS = (("Header", "/Event/Gen/Header"), ("Collisions", "/Event/Gen/Collisions"),
         ("Vertices", "/Event/MC/Vertices"), ("Particles", "/Event/MC/Particles"))


def run_events(app, numbers, batch):
    out = {k: [] for k, _ in PATHS}
    for start in range(0, len(numbers), batch):
        store = app.run_batch(np.asarray(numbers[start:start + batch], dtype=np.int64))
        for key, path in PATHS:
            coll = store.get(path)
            out[key].extend(coll.event(i) for i in range(coll.n_events))
    return out


def daughters(p, i):
    return np.flatnonzero(p["mother"] == i)


def channel(p, i):
    return tuple(sorted(p["pid"][daughters(p, i)].tolist()))


# ------------------------------------------------------------------------------------------
# pure parts: cut, phase-space decay of candidates, decay model
# ------------------------------------------------------------------------------------------
def test_generator_cuts_on_constructed_candidates():
    model = S.SignalDecayModel(BU, cut="DaughtersInLHCb")
    # nodes: B+, J/psi, K+, mu+, mu-  -> classes: ignore, ignore, charged, charged, charged
    assert model.cut_class.tolist() == [0, 0, 1, 1, 1]
    theta = np.array([[0.0, 0.0, 0.1, 0.2, 0.3],     # inside
                      [0.0, 0.0, 0.1, 0.005, 0.3],   # a muon below 10 mrad
                      [0.0, 0.0, 0.1, 0.2, 0.45],    # a muon above 400 mrad
                      [0.0, 3.0, 0.1, 0.2, 0.3]])    # the decayed J/psi is not tested
    p = 10_000.0
    px, pz = p * np.sin(theta), p * np.cos(theta)
    py = np.zeros_like(px)
    assert model.passes((np.ones(4, bool), px, py, pz)).tolist() == [True, False, False, True]
    assert not model.passes((np.zeros(1, bool), px[:1], py[:1], pz[:1]))[0]  # failed decay
    # SignalInEta acts on the signal hadron only; SignalInLHCb: theta < 400 mrad, pz > 0
    eta = np.array([1.9, 2.1, 4.9, 5.1])
    pt = 5000.0
    pxe = np.zeros((4, 5))
    pxe[:, 0] = pt
    pze = np.zeros((4, 5))
    pze[:, 0] = pt * np.sinh(eta)
    assert S.passes_cut(S.CUT_SIGNAL_IN_ETA, [2.0, 5.0, 0, 0], model.cut_class, pxe, 0 * pxe, pze).tolist() == \
        [False, True, True, False]
    th = np.array([0.1, 0.39, 0.41, 3.0])
    pxs = np.zeros((4, 5))
    pxs[:, 0] = np.sin(th)
    pzs = np.zeros((4, 5))
    pzs[:, 0] = np.cos(th)
    assert S.passes_cut(S.CUT_SIGNAL_IN_LHCB, [0.0, 0.4, 0, 0], model.cut_class, pxs, 0 * pxs, pzs).tolist() == \
        [True, True, False, False]
    # the neutrino is exempt from ChargedDaughtersInEta / DaughtersInLHCb
    lb = S.SignalDecayModel(LB, cut="ChargedDaughtersInEta")
    names = [n.name for n in lb.descriptor.head.nodes()]
    assert lb.cut_class[names.index("anti-nu_mu")] == ps.CLASS_IGNORE


def test_phase_space_decay_of_candidates():
    model = S.SignalDecayModel(LB, cut="None")
    rs = RandomStreams(5, 1, "Generation")
    key = rs.key_for(S.STREAM_DECAY)
    n = 4000
    rng = np.random.default_rng(1)
    m_lb = float(model.trees[0].mass[0])
    p3 = rng.normal(0, 20_000, size=(n, 3)) + [0, 0, 80_000]
    p4 = np.column_stack([p3, np.sqrt((p3 ** 2).sum(1) + m_lb ** 2)])
    alt = rng.integers(0, 2, n)
    # at most 255 candidates per hadronisation trial: 16 trials of 250
    parts = [model.decay(key, 7, 3 + t, alt[r], p4[r], np.full(r.size, m_lb))
             for t, r in enumerate(np.array_split(np.arange(n), 16))]
    ok, px, py, pz, pe, mass, ct = (np.concatenate([x[i] for x in parts]) for i in range(7))
    assert ok.all()
    t = model.trees[0]
    # four-momentum conservation at every decay, daughters on their masses
    for i in np.flatnonzero(t.n_daughters > 0):
        d = slice(t.first_daughter[i], t.first_daughter[i] + t.n_daughters[i])
        for a in (px, py, pz, pe):
            np.testing.assert_allclose(a[:, d].sum(1), a[:, i], rtol=0, atol=1e-6 * pe[:, 0].max())
    np.testing.assert_allclose(pe ** 2 - px ** 2 - py ** 2 - pz ** 2, mass ** 2, rtol=1e-6, atol=1e-3)
    # proper decay lengths: exponential with the PDG lifetime (Lambda_c node)
    i_lc = [n_.name for n_ in model.descriptor.head.nodes()].index("Lambda_c+")
    assert stats.kstest(ct[:, i_lc] / t.ctau[i_lc], "expon").pvalue > 1e-3
    # the Lambda_c+ -> p K- pi+ Dalitz plot is flat: m^2(pK) uniform at fixed m^2(Kpi) is hard to
    # test with few rows; test the m(K pi) distribution against the phase-space density instead
    # through its mean (Monte-Carlo integral of the 3-body phase space, tolerance 5 sigma)
    kids = np.arange(t.first_daughter[i_lc], t.first_daughter[i_lc] + 3)
    names = [t.names[k] for k in kids]
    k, pi = kids[names.index("K-")], kids[names.index("pi+")]
    m2 = (pe[:, k] + pe[:, pi]) ** 2 - sum((a[:, k] + a[:, pi]) ** 2 for a in (px, py, pz))
    mk, mpi, mp, mlc = (t.mass[k], t.mass[pi], t.mass[kids[names.index("p+")]], t.mass[i_lc])
    grid = np.linspace((mk + mpi) ** 2, (mlc - mp) ** 2, 20001)[1:-1]
    m12 = np.sqrt(grid)
    def pdk(a, b, c):  # two-body break-up momentum (vectorised)
        return np.sqrt(np.maximum((a - b - c) * (a + b + c) * (a - b + c) * (a + b - c), 0)) / (2 * a)

    dens = pdk(mlc, m12, mp) * pdk(m12, mk, mpi) / m12  # dPhi/dm12^2 (up to a constant)
    mean_pred = (grid * dens).sum() / dens.sum()
    assert abs(m2.mean() - mean_pred) < 5 * m2.std() / math.sqrt(n)
    # reproducible: keyed by (event, trial, candidate index, node)
    sub = model.decay(key, 7, 3, alt[:5], p4[:5], np.full(5, m_lb))
    np.testing.assert_array_equal(sub[1], px[:5])
    other = model.decay(key, 7, 4, alt[:5], p4[:5], np.full(5, m_lb))
    assert not np.array_equal(other[1], px[:5])


def test_decay_model_configuration_errors():
    with pytest.raises(ConfigurationError, match="b or c hadron"):
        S.SignalDecayModel("[K*(892)0 -> K+ pi-]cc")
    with pytest.raises(ConfigurationError, match="did you mean 'DaughtersInLHCb'"):
        S.SignalDecayModel(BU, cut="DaughtersInLHCB")
    with pytest.raises(ConfigurationError, match="CutEtaRange"):
        S.SignalDecayModel(BU, cut="SignalInEta", cut_eta_range=(5.0, 2.0))
    assert S.signal_quark(521) == 5 and S.signal_quark(-4122) == 4 and S.signal_quark(5122) == 5
    assert S.is_heavy_flavour(513, 5) and S.is_heavy_flavour(553, 5) and not S.is_heavy_flavour(421, 5)
    assert S.is_heavy_flavour(421, 4) and S.is_heavy_flavour(521, 4) and not S.is_heavy_flavour(5, 5)


def test_pythia_settings_that_would_break_the_scheme_are_rejected():
    model = S.SignalDecayModel(BU, cut="None")
    with pytest.raises(ConfigurationError, match="HadronLevel:Decay"):
        S.PythiaSignalProducer(HARD_BB + ["HadronLevel:Decay = off"], 13000.0, model)
    with pytest.raises(ConfigurationError, match="does not decay"):
        S.PythiaSignalProducer(HARD_BB + ["521:mayDecay = off"], 13000.0, model)
    with pytest.raises(ConfigurationError, match="not a Pythia setting"):
        S.PythiaSignalProducer(["HardQCD:hardbbar = on"], 13000.0, model)


# ------------------------------------------------------------------------------------------
# the algorithm (hard bbbar signal interaction, minimum-bias pile-up)
# ------------------------------------------------------------------------------------------
N_EVENTS = 24


@pytest.fixture(scope="module")
def app():
    return make_app(Seed=21)


@pytest.fixture(scope="module")
def reference(app):
    return run_events(app, list(range(N_EVENTS)), 8)


def test_forced_channel_in_every_signal_and_in_no_other_hadron(reference):
    n_other_b = n_other_b_jpsik = 0
    other_channels = set()
    heads = []
    for h, c, v, p in zip(*(reference[k] for k, _ in PATHS)):
        sig = np.flatnonzero(p["is_signal"])
        assert sig.size == 1  # exactly one signal hadron per event ...
        s = int(sig[0])
        heads.append(int(p["pid"][s]))
        assert p["collision"][s] == 0  # ... in the signal interaction (collision 0)
        assert abs(p["pid"][s]) == 521 and p["status"][s] == 2
        q = int(np.sign(p["pid"][s]))
        assert channel(p, s) == tuple(sorted([443, 321 * q]))  # forced channel: 100 %
        jpsi = int(daughters(p, s)[p["pid"][daughters(p, s)] == 443][0])
        assert channel(p, jpsi) == (-13, 13)
        assert all(p["end_vertex"][d] == -1 for d in daughters(p, jpsi))  # muons and kaon stable
        # generator-level cut DaughtersInLHCb on the stable charged daughters
        for d in [*daughters(p, jpsi), *daughters(p, s)[p["pid"][daughters(p, s)] != 443]]:
            theta = math.atan2(math.hypot(p["px"][d], p["py"][d]), p["pz"][d])
            assert 0.010 <= theta <= 0.400
        # every other B+- of the crossing decays generically
        for b in np.flatnonzero((np.abs(p["pid"]) == 521) & ~p["is_signal"]):
            if p["end_vertex"][b] < 0:
                continue
            n_other_b += 1
            ch = channel(p, b)
            other_channels.add(ch)
            n_other_b_jpsik += ch in ((-321, 443), (321, 443))
    assert n_other_b >= 5
    # Pythia's BR(B+ -> J/psi K+) = 1e-3: P(>= 2 in n_other_b) < 1e-3 unless the channel were forced
    assert n_other_b_jpsik <= 1, (n_other_b_jpsik, n_other_b)
    assert len(other_channels) >= min(5, n_other_b // 2)
    assert 521 in heads and -521 in heads  # [...]cc: both charges


def test_signal_kinematics_vertices_and_lifetime(reference):
    ct_over_tau = []
    for h, c, v, p in zip(*(reference[k] for k, _ in PATHS)):
        s = int(np.flatnonzero(p["is_signal"])[0])
        four = np.stack([p["px"], p["py"], p["pz"], p["E"]], axis=1)
        for m in (s, *[d for d in daughters(p, s) if p["end_vertex"][d] >= 0]):
            np.testing.assert_allclose(four[daughters(p, m)].sum(0), four[m], rtol=0, atol=1e-6 * four[m, 3])
            assert np.all(p["origin_vertex"][daughters(p, m)] == p["end_vertex"][m])
        ov, ev = p["origin_vertex"][s], p["end_vertex"][s]
        assert v["type"][ev] == 2 and v["collision"][ev] == 0
        dr = np.array([v[k][ev] - v[k][ov] for k in "xyz"])
        dt = v["t"][ev] - v["t"][ov]
        pvec = four[s, :3]
        np.testing.assert_allclose(dr, pvec / four[s, 3] * C_MM_PER_NS * dt, rtol=1e-6, atol=1e-9)
        ct_over_tau.append(np.linalg.norm(dr) * p["mass"][s] / np.linalg.norm(pvec) / 0.4911)  # Pythia tau0(B+)
        # the signal B comes from the collision's PV (directly or through a B* / B** decay)
        top = s
        while p["mother"][top] >= 0:
            top = p["mother"][top]
        np.testing.assert_allclose([v[k][p["origin_vertex"][top]] for k in "xyz"], [c[k][0] for k in "xyz"])
    assert stats.kstest(ct_over_tau, "expon").pvalue > 1e-3


def test_pileup_header_and_counters(app, reference):
    ncoll = np.array([int(h["n_collisions"][0]) for h in reference["Header"]])
    assert ncoll.min() >= 1 and ncoll.max() > 1
    trials = np.array([int(h["signal_trials"][0]) for h in reference["Header"]])
    assert trials.min() >= 1
    for h, c, p in zip(reference["Header"], reference["Collisions"], reference["Particles"]):
        k = int(h["n_collisions"][0])
        assert len(c["x"]) == k and set(np.unique(p["collision"])) == set(range(k))
    cs = app.algorithms[0].counters
    eff = cs["generator-level cut (interactions)"]
    assert eff.passed == N_EVENTS and 0.05 < eff.efficiency < 0.6
    assert cs["hadronisations per signal event"].sum == trials.sum()
    assert cs["parton-level events with b hadrons"].efficiency > 0.95  # hard bbbar: b quarks in every event


def test_same_seed_same_events_whatever_the_batching(app, reference):
    numbers = [5, 3, 17, 4]
    batched = run_events(app, numbers, 3)  # same job, other batches and order
    shard = run_events(make_app(Seed=21), numbers[::-1], 4)  # another job (fresh instances)
    for key, _ in PATHS:
        for i, b in zip(numbers, batched[key]):
            for col in b:
                np.testing.assert_array_equal(reference[key][i][col], b[col])
        for i, b in zip(numbers[::-1], shard[key]):
            for col in b:
                np.testing.assert_array_equal(reference[key][i][col], b[col])
    other = run_events(make_app({"PileUp": False}, Seed=22), [0, 1], 2)
    assert not np.array_equal(other["Particles"][0]["px"][:20], reference["Particles"][0]["px"][:20])
    assert [int(h["n_collisions"][0]) for h in other["Header"]] == [1, 1]  # no pile-up: the signal only
    assert all(p["is_signal"].sum() == 1 for p in other["Particles"])


def test_lambda_b_semileptonic_signal_from_the_producer():
    model = S.SignalDecayModel(LB, cut="ChargedDaughtersInEta", cut_eta_range=(2.0, 5.0))
    prod = S.PythiaSignalProducer(HARD_BB, 13000.0, model)
    rs = RandomStreams(2, 1, "Generation")
    outs = [prod.produce(100 + e, e, rs.key_for(S.STREAM_DECAY), rs.key_for(S.STREAM_CHOICE)) for e in range(3)]
    off, cols = prod.read([o.event for o in outs])
    for k, o in enumerate(outs):
        lo = off[k]
        ids, mo = cols["id"][lo:off[k + 1]], cols["mother1"][lo:off[k + 1]]
        h = o.head
        q = int(np.sign(ids[h]))
        assert ids[h] == 5122 * q and cols["status"][lo + h] < 0
        kids = np.flatnonzero(mo == h)
        assert sorted(ids[kids].tolist()) == sorted([4122 * q, 13 * q, -14 * q])
        lc = int(kids[ids[kids] == 4122 * q][0])
        assert sorted(ids[np.flatnonzero(mo == lc)].tolist()) == sorted([2212 * q, -321 * q, 211 * q])
        # charged daughters in 2 < eta < 5
        for d in [*np.flatnonzero(mo == lc), *kids[np.abs(ids[kids]) == 13]]:
            pt = math.hypot(cols["px"][lo + d], cols["py"][lo + d])
            assert 2.0 <= math.asinh(cols["pz"][lo + d] / pt) <= 5.0
        assert o.hadronisations >= o.parton_events >= 1 and o.candidates >= 1


def test_minimum_bias_signal_production():
    """The real thing: SoftQCD:nonDiffractive parton-level events, ~1 % with b quarks."""
    app = make_app({"Commands": ["SoftQCD:nonDiffractive = on"], "PileUpCommands": None,
                    "GeneratorCut": "SignalInEta"}, Seed=5)
    out = run_events(app, [0, 1, 2], 3)
    for p in out["Particles"]:
        s = int(np.flatnonzero(p["is_signal"])[0])
        eta = math.asinh(p["pz"][s] / math.hypot(p["px"][s], p["py"][s]))
        assert 2.0 <= eta <= 5.0 and channel(p, s) in ((-321, 443), (321, 443))
    cs = app.algorithms[0].counters
    b_frac = cs["parton-level events with b hadrons"]
    assert b_frac.entries >= 30  # tens to hundreds of parton-level events per signal event
    assert 0.002 < b_frac.efficiency < 0.05, b_frac.to_dict()


def test_whole_crossing_is_a_consistent_fully_decayed_record(reference):
    """Undoing the chosen generic decay, appending the forced one and the final decay pass leave a
    consistent record: every decay conserves four-momentum, flights match beta*c*dt, and nothing that
    Pythia decays by default is left undecayed (the trial mode is fully restored)."""
    stable = {11, 12, 13, 14, 16, 22, 130, 211, 321, 2112, 2212}
    n_decays = 0
    for h, c, v, p in zip(*(reference[k] for k, _ in PATHS)):
        final = p["end_vertex"] < 0
        assert set(np.abs(p["pid"][final]).tolist()) <= stable | {1000010020}, \
            set(np.abs(p["pid"][final]).tolist()) - stable
        n = len(p["pid"])
        four = np.stack([p["px"], p["py"], p["pz"], p["E"]], axis=1)
        has_m = p["mother"] >= 0
        sums = np.zeros((n, 4))
        np.add.at(sums, p["mother"][has_m], four[has_m])
        dec = ~final
        np.testing.assert_allclose(sums[dec], four[dec], rtol=0, atol=1e-6 * p["E"].max())
        dr = np.sqrt(sum((v[k][p["end_vertex"][dec]] - v[k][p["origin_vertex"][dec]]) ** 2 for k in "xyz"))
        dt = v["t"][p["end_vertex"][dec]] - v["t"][p["origin_vertex"][dec]]
        beta = np.sqrt((four[dec, :3] ** 2).sum(axis=1)) / p["E"][dec]
        far = dr > 1e-3
        np.testing.assert_allclose(dr[far], beta[far] * C_MM_PER_NS * dt[far], rtol=1e-6)
        assert np.all(v["collision"][p["origin_vertex"]] == p["collision"])
        n_decays += int(dec.sum())
    assert n_decays > 500
