"""Combinatorics (vs brute force), vertex-fitted candidates on synthetic events, geometry."""
import itertools

import numpy as np
import pytest
from scipy import stats

from algorithms.analysis.combiner import combine_node, enumerate_combinations
from algorithms.analysis.cuts import compile_cut
from algorithms.analysis.particles import Topology, make_track_particles, vertex_pv_geometry
from tests.analysis.test_combiner_events import M_B, M_JPSI, make_events


def _random_lists(rng, n_events, n_tracks_max, width):
    counts = rng.integers(0, 6, n_events)
    off = np.concatenate([[0], np.cumsum(counts)])
    tracks = np.full((off[-1], width), -1, np.int32)
    for e in range(n_events):
        nt = rng.integers(width, n_tracks_max + 1)
        for r in range(off[e], off[e + 1]):
            tracks[r] = rng.choice(nt, width, replace=False)
    return off, tracks


@pytest.mark.parametrize("layout", [
    ["a", "b"], ["a", "a"], ["a", "b", "a", "b"], ["a", "a", "a"], ["c", "a"], ["c", "c", "a"], ["a", "b", "c"],
])
def test_enumeration_equals_brute_force(layout):
    """Each reconstructed track at most once per candidate; identical daughters counted once."""
    rng = np.random.default_rng(len(layout) * 7 + hash("".join(layout)) % 97)
    n_ev = 60
    lists = {"a": _random_lists(rng, n_ev, 8, 1), "b": _random_lists(rng, n_ev, 8, 1),
             "c": _random_lists(rng, n_ev, 8, 2)}  # c: two-track composites
    offs = [lists[s][0] for s in layout]
    trks = [lists[s][1] for s in layout]
    same_prev = [max([a for a in range(j) if layout[a] == layout[j]], default=-1) for j in range(len(layout))]
    got = {}
    total = 0
    for ev, rows in enumerate_combinations(offs, trks, same_prev, max_rows=7):  # tiny chunks on purpose
        total += len(ev)
        for e, r in zip(ev, rows):
            used = np.concatenate([trks[j][r[j]] for j in range(len(layout))])
            assert len(set(used)) == len(used), "a track used twice"
            key = (e, tuple(sorted((layout[j], int(r[j])) for j in range(len(layout)))))
            assert key not in got, "a candidate counted twice"
            got[key] = True
    brute = set()
    for e in range(n_ev):
        ranges = [range(o[e], o[e + 1]) for o in offs]
        for combo in itertools.product(*ranges):
            used = [t for j, r in enumerate(combo) for t in trks[j][r]]
            if len(set(used)) != len(used):
                continue
            brute.add((e, tuple(sorted((layout[j], r) for j, r in enumerate(combo)))))
    assert total == len(brute) == len(got)
    assert set(got) == brute
    assert total > 0


@pytest.fixture(scope="module")
def events():
    return make_events(300, seed=11, n_prompt=(2, 8), prompt_muons=1)


def _makers(d, mu_cut="isMuon", k_cut="PIDK > 0"):
    mu = make_track_particles(d["Tracks"], d["Vertices"], -13, (3,), d["ProtoParticles"], compile_cut(mu_cut))
    k = make_track_particles(d["Tracks"], d["Vertices"], 321, (3,), d["ProtoParticles"], compile_cut(k_cut))
    return mu, k


def test_particle_maker_hypothesis_and_ip(events):
    d = events
    mu, k = _makers(d, "ALL", "ALL")
    assert len(mu) == len(k) == len(d["Tracks"])
    np.testing.assert_allclose(k["p4"][:, 3] ** 2 - np.sum(k["p4"][:, :3] ** 2, 1), 493.677**2, rtol=1e-6)
    assert np.all(np.sign(k["pid"]) == np.sign(k["charge"]))
    assert np.all(np.sign(mu["pid"]) == -np.sign(mu["charge"]))  # mu+ has pid -13
    # prompt tracks: IPchi2 to their own PV ~ chi2(2)
    mc = d["MCParticles"]
    rows = mc.offsets[:-1][k.event_index] + k["mc"]
    prompt = np.asarray(mc["mother"])[rows] < 0
    ipc = k["ipchi2"][prompt]
    assert stats.kstest(ipc, stats.chi2(2).cdf).pvalue > 1e-3
    assert np.all(k["mipchi2"] <= k["ipchi2"] + 1e-12)


def _build_b(d, comb="ADAMASS('B+') < 600", mother="ALL"):
    mu, k = _makers(d)
    mup, mum, kp = mu.select(mu["pid"] == -13), mu.select(mu["pid"] == 13), k.select(k["pid"] == 321)
    tmu, tmm, tk = Topology.basic_particle(-13, "mu+"), Topology.basic_particle(13, "mu-"), Topology.basic_particle(321, "K+")
    jp = combine_node(443, [mup, mum], [tmu, tmm], d["Vertices"])
    tj = Topology.combine(443, "J/psi(1S)", [tmu, tmm])
    b = combine_node(521, [jp, kp], [tj, tk], d["Vertices"], compile_cut(comb, "combination"),
                     compile_cut(mother, "mother"))
    return mup, mum, kp, jp, b


def test_candidate_counts_equal_brute_force(events):
    d = events
    mup, mum, kp, jp, b = _build_b(d, comb="ALL")
    nj = nb = 0
    for e in range(d["Tracks"].n_events):
        tp = mup.event(e)["track"]
        tm = mum.event(e)["track"]
        tk = kp.event(e)["track"]
        for a in tp:
            for m in tm:
                if a == m:
                    continue
                nj += 1
                nb += sum(1 for x in tk if x not in (a, m))
    assert len(jp) == nj  # no vertex-fit failures on these clean tracks
    assert len(b) == nb
    tr = b["nodes_track"][:, [2, 3, 4]]
    assert np.all((tr[:, 0] != tr[:, 1]) & (tr[:, 0] != tr[:, 2]) & (tr[:, 1] != tr[:, 2]))
    assert np.all(b["nodes_pid"][:, :2] == [521, 443])


def test_true_signal_vertex_fit_pulls(events):
    d = events
    *_, b = _build_b(d)
    mc = d["MCParticles"]
    ev = b.event_index
    rows = mc.offsets[:-1][ev][:, None] + b["nodes_mc"][:, 2:]
    par = np.asarray(mc["mother"])
    pid = np.asarray(mc["pid"])
    mu1, mu2, kk = rows[:, 0], rows[:, 1], rows[:, 2]
    jm = mc.offsets[:-1][ev] + par[mu1]
    truth = (par[mu1] == par[mu2]) & (pid[jm] == 443) & (par[kk] == par[jm]) & (pid[mu1] == -13) & (pid[kk] == 321)
    assert truth.sum() > 100
    sv_row = np.asarray(mc["end_vertex"])[mc.offsets[:-1][ev] + par[kk]]
    mv = d["MCVertices"]
    true_sv = np.stack([np.asarray(mv[k])[mv.offsets[:-1][ev] + sv_row] for k in "xyz"], 1)
    pull = (b["vtx"] - true_sv) / np.sqrt(np.diagonal(b["vcov"], axis1=1, axis2=2))
    pull = pull[truth]
    for a in range(3):
        assert abs(pull[:, a].mean()) < 0.25 and 0.8 < pull[:, a].std() < 1.25, (a, pull[:, a].mean(), pull[:, a].std())
    mass = b["m"][truth]
    assert abs(np.median(mass) - M_B) < 10
    jmass = b["nodes_m"][truth, 1]
    assert abs(np.median(jmass) - M_JPSI) < 5
    assert np.all(b["nodes_vndof"][:, 1] == 1)
    assert stats.kstest(b["nodes_vchi2"][truth, 1], stats.chi2(1).cdf).pvalue > 1e-3
    # B flies: DIRA close to 1, large FD chi2 for most signal candidates
    assert np.median(b["dira"][truth]) > 0.9999
    assert np.median(b["fdchi2"][truth]) > 50
    assert np.all(b["mcorr"][truth] >= b["m"][truth] - 1e-6)


def test_cuts_reduce_and_empty_events(events):
    d = events
    *_, b_all = _build_b(d)
    *_, b_cut = _build_b(d, mother="VFASPF(VCHI2/VDOF) < 4 and BPVDIRA > 0.9995")
    assert 0 < len(b_cut) < len(b_all)
    ok = (b_all["vchi2"] / b_all["vndof"] < 4) & (b_all["dira"] > 0.9995)
    assert len(b_cut) == ok.sum()
    empty = make_events(5, seed=3, signal_fraction=0.0, n_prompt=(0, 0))
    *_, b0 = _build_b(empty)
    assert len(b0) == 0 and b0.n_events == 5 and b0["nodes_p4"].shape == (0, 5, 4)


def test_geometry_hand_computed():
    pv = np.array([[0.0, 0.0, 0.0]])
    sv = np.array([[3.0, 4.0, 0.0]])  # |d| = 5 along (0.6, 0.8, 0)
    cov = np.eye(3)[None] * 0.5
    p4 = np.array([[0.0, 1000.0, 0.0, 0.0]])  # p = 1000 along y
    m = np.array([2000.0])
    p4[0, 3] = np.hypot(1000.0, 2000.0)
    g = vertex_pv_geometry(sv, cov, p4, m, pv, cov)
    assert g["fd"][0] == pytest.approx(5.0)
    assert g["fdchi2"][0] == pytest.approx(25.0)  # d^T (C1 + C2)^-1 d = 25 / 1
    assert g["dira"][0] == pytest.approx(0.8)
    pperp = 1000.0 * 0.6
    assert g["mcorr"][0] == pytest.approx(np.sqrt(2000.0**2 + pperp**2) + pperp)
    L = 5.0 * 0.8  # flight projected on the momentum
    assert g["tau"][0] == pytest.approx(L * 2000.0 / (1000.0 * 299.792458))


def test_ip_matches_tracking_kernel(events):
    """The analysis IP/IPchi2 (particles.line_pv_geometry) equals the tracking branch's TrackIP."""
    from algorithms.tracking.ip import best_pv_per_track, ip_ipchi2_pairs

    d = events
    t, v = d["Tracks"], d["Vertices"]
    f = lambda c, k: np.ascontiguousarray(c[k], dtype=np.float64)  # noqa: E731
    off, _, _, ip, chi2 = ip_ipchi2_pairs(t.offsets, f(t, "x"), f(t, "y"), f(t, "z"), f(t, "tx"), f(t, "ty"),
                                          np.ascontiguousarray(t["cov"]), v.offsets, f(v, "x"), f(v, "y"), f(v, "z"),
                                          np.ascontiguousarray(v["cov"]))
    best, bip, bchi2 = best_pv_per_track(t.offsets, v.offsets, off, ip, chi2)
    k, _ = _makers(d, "ALL", "ALL")
    np.testing.assert_array_equal(k["best_pv"], best)
    np.testing.assert_allclose(k["ip"], bip, rtol=1e-10)
    np.testing.assert_allclose(k["ipchi2"], bchi2, rtol=1e-10)


def test_merge_particles_is_a_stable_merge_by_event():
    """Rows of several collections merged event by event: in each event the rows of the first
    collection, then the second, ... (a stable sort by event), every column (also [N, a, b] ones)
    carried along; with ``dedupe_tracks`` the first (event, track, pid) occurrence is kept."""
    import numpy as np

    from algorithms.analysis.combiner import merge_particles
    from framework import Collection

    rng = np.random.default_rng(5)
    for _ in range(50):
        ne = 40
        parts = []
        for _p in range(rng.integers(2, 4)):
            cnt = rng.integers(0, 3, ne)
            n = int(cnt.sum())
            cols = {"a": rng.normal(size=n), "b": rng.normal(size=(n, 3, 2)),
                    "track": rng.integers(0, 3, n).astype(np.int32), "pid": rng.choice([13, -13], n).astype(np.int32)}
            parts.append(Collection.from_counts(cols, cnt, np.arange(ne) + 100))
        ev = np.concatenate([p.event_index for p in parts])
        order = np.argsort(ev, kind="stable")
        for dedupe in (False, True):
            m = merge_particles(parts, ne, np.arange(ne) + 100, dedupe_tracks=dedupe)
            ref = {k: np.concatenate([p[k] for p in parts])[order] for k in ("a", "b", "track", "pid")}
            ref_ev = ev[order]
            if dedupe:
                seen, keep = set(), []
                for i in range(len(ref_ev)):
                    key = (ref_ev[i], ref["track"][i], ref["pid"][i])
                    keep.append(key not in seen)
                    seen.add(key)
                keep = np.array(keep, bool)
                ref = {k: v[keep] for k, v in ref.items()}
                ref_ev = ref_ev[keep]
            np.testing.assert_array_equal(m.event_index, ref_ev)
            for k, v in ref.items():
                np.testing.assert_array_equal(m[k], v)
            np.testing.assert_array_equal(m.event_numbers, np.arange(ne) + 100)
