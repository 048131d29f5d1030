"""The numba fast paths of the tracking chain (algorithms/tracking/kernels.py and the kernels in
ctb/resolution/pv/summary) reproduce, bit for bit, the numpy reference code they replaced, on
random inputs with edge cases (no origin vertex, pz <= 0, zero slopes, NaN/inf model outputs,
p_reco <= 0), and draw exactly the numbers of ctx.random (keyed by event number and object index)."""
import numpy as np
import pytest

from framework import Collection
from framework.context import BatchContext
from algorithms.tracking import ctb, kernels
from algorithms.tracking.efficiency import TRACK_TYPE_CODES, draw_track_type
from algorithms.tracking.features import acceptance_features, in_domain, is_tracked_species
from algorithms.tracking.pv import PVSmearingTable, _smear_kernel, smear_vertices
from algorithms.tracking.resolution import apply_resolution
from algorithms.tracking.summary import summarize


def same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)


def random_mc(seed=1, n_events=7):
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 40, n_events)
    n = int(counts.sum())
    nv = rng.integers(1, 4, n_events)
    pid = rng.choice([211, -211, 321, -2212, 13, -11, 22, 111, 2112, 11], n).astype(np.int32)
    parts = {"pid": pid, "px": rng.normal(0, 500, n), "py": rng.normal(0, 500, n),
             "pz": np.where(rng.random(n) < 0.1, rng.normal(0, 1, n), rng.exponential(2e4, n)),
             "end_vertex": np.where(rng.random(n) < 0.2, 0, -1).astype(np.int32),
             "origin_vertex": np.concatenate([rng.integers(-1, k, c) for k, c in zip(nv, counts)]).astype(np.int32)}
    parts["px"][:3] = 0.0  # zero slopes
    parts["py"][:3] = 0.0
    verts = {c: rng.normal(0, 1, int(nv.sum())) for c in "xyz"}
    return Collection.from_counts(parts, counts), Collection.from_counts(verts, nv)


def ref_gather(Particles, Vertices, rows):
    """algorithms.tracking.acceptance.gather_kinematics before the kernels (numpy reference)."""
    ev = Particles.event_index[rows]
    ov = Particles["origin_vertex"][rows]
    vrow = Vertices.global_index(ev, ov)
    has = vrow >= 0
    safe = np.where(has, vrow, 0)
    pos = [np.where(has, Vertices[c][safe], np.nan) for c in ("x", "y", "z")]
    return (Particles["pid"][rows], pos[0], pos[1], pos[2],
            Particles["px"][rows], Particles["py"][rows], Particles["pz"][rows])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_candidate_selection_gather_and_domain(seed):
    P, V = random_mc(seed)
    rows, ev, mc, pid, x, y, z, px, py, pz, counts = kernels.select_and_gather(P, V)
    ref_rows = np.flatnonzero((P["end_vertex"] < 0) & is_tracked_species(P["pid"]))
    same(rows, ref_rows)
    same(ev, P.event_index[ref_rows])
    same(mc, P.local_index[ref_rows])
    same(counts, np.bincount(ev, minlength=P.n_events))
    for got, want in zip((pid, x, y, z, px, py, pz), ref_gather(P, V, ref_rows)):
        same(got, want)
    assert np.isnan(x).any()  # particles without origin vertex are covered
    # the efficiency's gather of referenced rows
    for got, want in zip(kernels.gather_rows(P, V, ev, mc), ref_gather(P, V, ref_rows)):
        same(got, want)
    feats = acceptance_features(pid, x, y, z, px, py, pz)
    ok, n_ok = kernels.domain_mask(feats, pz)
    same(ok, in_domain(feats, pz))
    assert 0 < n_ok < len(ok)
    ok0, _ = kernels.domain_mask(feats, pz, 0.0)
    same(ok0, np.all(np.isfinite(feats), axis=1) & (pz > 0))
    bad = P.with_columns(origin_vertex=np.full(len(P), 50, np.int32))
    with pytest.raises(IndexError):
        kernels.select_and_gather(bad, V)


def test_draws_are_the_keyed_ctx_random_numbers():
    rng = np.random.default_rng(4)
    numbers = np.array([5, 17, 901, 3])
    ctx = BatchContext(numbers, 1, 42).for_algorithm("Alg")
    ev = np.sort(rng.integers(0, 4, 300))
    mc = rng.integers(0, 1000, 300)
    ok = rng.random(300) < 0.8
    prob = rng.random(300).astype(np.float32)
    acc, n_acc = kernels.bernoulli_accept(ctx.random.key_for(0), numbers, ev, mc, ok, prob)
    u = ctx.random.uniform(numbers[ev], mc, stream=0)
    same(acc, ok & (u < prob))
    assert n_acc == acc.sum() and 0 < n_acc < ok.sum()
    # efficiency: categorical draw of the accepted rows, probabilities scattered into NaN columns
    idx = np.flatnonzero(ok)
    p = rng.dirichlet(np.ones(4), len(idx)).astype(np.float32)
    tt, p0, p1, p2, p3, n_reco, n_long = kernels.draw_track_types(ctx.random.key_for(0), numbers, ev, mc, idx, p,
                                                                 300, TRACK_TYPE_CODES)
    ref = np.full(300, -1, np.int8)
    ref[idx] = draw_track_type(p, ctx.random.uniform(numbers[ev[idx]], mc[idx], stream=0))
    same(tt, ref)
    full = np.full((300, 4), np.nan, np.float32)
    full[idx] = p
    for j, col in enumerate((p0, p1, p2, p3)):
        same(col, full[:, j])
    assert n_reco == (ref > 0).sum() and n_long == (ref == 3).sum()
    # generative-model noise
    rows = np.flatnonzero(rng.random(300) < 0.5)
    noise = kernels.normal_noise(ctx.random.key_for(1), numbers, ev, mc, rows, 9)
    same(noise, ctx.random.normal(numbers[ev[rows]], mc[rows], stream=1, n=9).astype(np.float32))


def test_physical_charge_fast_path_matches_the_pdg_table():
    pids = np.array([11, -11, 13, -13, 211, -211, 321, -321, 2212, -2212])
    same(ctb.physical_charge(pids), ctb._physical_charge_pdg(pids))
    mixed = np.array([211, 22, -3122, 3312, 1000010020, 11])
    same(ctb.physical_charge(mixed), ctb._physical_charge_pdg(mixed))
    same(ctb.physical_charge(mixed), np.array([1, 0, 0, -1, 1, -1], np.int8))


def ref_resolution_features(cx, cy, cz, tx, ty, lp, pid, tt):
    out = np.empty((len(cx), 12), np.float32)
    for k, c in enumerate([cx, cy, cz, tx, ty, lp]):
        out[:, k] = c
    out[:, 6], out[:, 7], out[:, 8] = ctb.species_flags(pid)
    out[:, 9], out[:, 10], out[:, 11] = ctb.type_flags(tt)
    return out


def test_resolution_and_covariance_features():
    rng = np.random.default_rng(5)
    n = 500
    x0, y0, z0 = rng.normal(0, 1, n), rng.normal(0, 1, n), rng.normal(0, 50, n)
    px, py, pz = rng.normal(0, 400, n), rng.normal(0, 400, n), rng.exponential(2e4, n)
    px[:5] = py[:5] = 0.0
    pz[5:8] = [0.0, -3.0, np.nan]
    pid = rng.choice([211, -321, 2212, 13, -11], n)
    tt = rng.choice(np.array([3, 4, 5], np.int8), n)
    with np.errstate(all="ignore"):
        feats, c = ctb.resolution_features_from_momentum(x0, y0, z0, px, py, pz, pid, tt)
        rtx, rty = px / pz, py / pz
        rp = np.sqrt(px * px + py * py + pz * pz)
        rcx, rcy, rcz = ctb.closest_to_beam(x0, y0, z0, rtx, rty)
        ref = ref_resolution_features(rcx, rcy, rcz, rtx, rty, np.log10(rp), pid, tt)
    for k, v in {"x": rcx, "y": rcy, "z": rcz, "tx": rtx, "ty": rty, "p": rp}.items():
        same(c[k], v)
    same(feats, ref)
    # float type codes and broadcast scalars take the reference path
    same(ctb.resolution_features(rcx, rcy, rcz, rtx, rty, 3.5, pid, tt.astype(float)),
         ref_resolution_features(rcx, rcy, rcz, rtx, rty, np.full(n, 3.5), pid, tt))
    chi2, ndf, gh = rng.random(n) * 3, rng.random(n) * 40, rng.random(n).astype(np.float32)
    same(ctb.covariance_features_of_states(rcx, rcy, rcz, rtx, rty, np.log10(rp), pid, tt, chi2, ndf, gh),
         ctb.covariance_features(ref, chi2, ndf, gh))
    # covariance_from_outputs reads float32 outputs directly: same as through a float64 copy
    y = rng.normal(-5, 3, (200, 15)).astype(np.float32)
    y[:, 5:] = rng.uniform(-1, 1, (200, 10))
    y[0, 2] = np.nan
    a, fa = ctb.covariance_from_outputs(y)
    b, fb = ctb.covariance_from_outputs(y.astype(np.float64))
    same(a, b)
    same(fa, fb)


def ref_apply_resolution(c, out, charge):
    out = np.asarray(out, dtype=np.float64)
    charge = np.asarray(charge, dtype=np.float64)
    p = c["p"] + out[:, 5]
    ok = (p > 0) & np.all(np.isfinite(out), axis=1)
    safe_p = np.where(ok, p, 1.0)
    with np.errstate(invalid="ignore"):
        ndof = np.maximum(np.floor(np.nan_to_num(out[:, 7], nan=1.0)), 1.0).astype(np.int32)
    return {"x": c["x"] + out[:, 0], "y": c["y"] + out[:, 1], "z": c["z"] + out[:, 2],
            "tx": c["tx"] + out[:, 3], "ty": c["ty"] + out[:, 4], "qop": charge / safe_p, "p": safe_p,
            "chi2PerDoF": out[:, 6].astype(np.float32), "ndof": ndof, "nDoF_f": out[:, 7].astype(np.float32),
            "ghostProb": out[:, 8].astype(np.float32), "true_x": c["x"], "true_y": c["y"], "true_z": c["z"],
            "true_tx": c["tx"], "true_ty": c["ty"], "true_qop": charge / c["p"]}, ok


def test_apply_resolution_kernel_all_rows_and_compacted():
    from algorithms.tracking.resolution import _run_apply

    rng = np.random.default_rng(6)
    n = 400
    c = {k: rng.normal(0, 1, n) for k in ("x", "y", "z", "tx", "ty")}
    c["p"] = rng.exponential(1e4, n) + 10
    out = rng.normal(0, 5, (n, 9)).astype(np.float32)
    out[:, 7] = rng.uniform(-3, 50, n)
    out[:5, 5] = -1e6  # p_reco <= 0
    out[5, 3] = np.nan
    out[6, 7] = np.inf
    out[7, 7] = np.nan
    charge = rng.choice(np.array([-1, 1], np.int8), n)
    ref, ok_ref = ref_apply_resolution(c, out, charge)
    with np.errstate(invalid="ignore"):
        got, ok = apply_resolution(c, out, charge)
    same(ok, ok_ref)
    assert list(got) == list(ref)
    for k in ref:
        if k == "ndof":  # rows with non-finite nDoF_f are never kept (the cast of inf is undefined)
            same(got[k][ok], ref[k][ok])
        else:
            same(got[k], ref[k])
    # compacted, as the algorithm writes it (finite = model domain), with per-event counts
    finite = rng.random(n) < 0.9
    ev = np.sort(rng.integers(0, 6, n))
    mc = rng.integers(0, 300, n)
    tt = rng.choice(np.array([3, 4, 5], np.int8), n)
    pid = rng.choice(np.array([211, -13], np.int32), n)
    cols, ok2, counts = _run_apply(c, out, charge, finite, mc, tt, pid, ev, 6, True)
    keep = ok_ref & finite
    same(ok2, keep)
    same(counts, np.bincount(ev[keep], minlength=6))
    for k in ref:
        same(cols[k], ref[k][keep])
    same(cols["mc_index"], mc[keep].astype(np.int32))
    same(cols["type"], tt[keep])
    same(cols["pid"], pid[keep])
    same(cols["charge"], charge[keep])


def test_pv_smearing_kernel_and_summary_counts():
    rng = np.random.default_rng(7)
    table = PVSmearingTable([0.0, 0.01, -0.1], [0.6, 0.5, 0.7], [0.3, 0.4, 0.2], [0.01, 0.012, 0.05],
                            [0.02, 0.03, 0.1], [0.05, 0.06, 0.3])
    numbers = np.array([3, 8, 100])
    ev = np.array([0, 0, 1, 2, 2, 2])
    idx = np.array([0, 1, 0, 0, 1, 2])
    xyz = rng.normal(0, 1, (6, 3))
    ctx = BatchContext(numbers, 1, 9).for_algorithm("PV")
    x, y, z, cov = _smear_kernel(ctx.random.key_for(0), ctx.random.key_for(1), numbers, ev, idx,
                                 *(np.ascontiguousarray(xyz[:, k]) for k in range(3)),
                                 table.mu, table.f1, table.f2, table.sigmas)
    u = ctx.random.uniform(numbers[ev], idx, stream=0, n=3)
    g = ctx.random.normal(numbers[ev], idx, stream=1, n=3)
    reco, sigma, _ = smear_vertices(xyz, u, g, table)
    same(np.stack([x, y, z], axis=1), reco)
    ref_cov = np.zeros((6, 3, 3))
    ref_cov[:, np.arange(3), np.arange(3)] = sigma * sigma
    same(cov, ref_cov)
    tev = np.sort(rng.integers(0, 5, 200))
    tt = rng.choice(np.array([3, 4, 5, 3], np.int8), 200)
    s = summarize(tev, tt, 5, [1, 2, 3, 1, 1])
    for name, code in (("nLongTracks", 3), ("nUpstreamTracks", 4), ("nDownstreamTracks", 5)):
        same(s[name], np.bincount(tev[tt == code], minlength=5).astype(np.int32))
    same(s["nTracks"], np.bincount(tev, minlength=5).astype(np.int32))
