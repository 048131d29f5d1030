"""Pythia8Generator: pile-up and beam-spot draws (statistical tests), per-event seeding
(same seed => same events whatever the batch / shard), truth-model consistency, configuration
errors.  Uses the real pythia8mc (skipped if it is not installed)."""
from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from scipy import stats

pytest.importorskip("pythia8mc")

from framework import ConfigurationError, hookimpl  # noqa: E402
from framework.random import RandomStreams  # noqa: E402
from algorithms.generators import pythia8 as P8  # noqa: E402
from algorithms.generators.truth_builder import C_MM_PER_NS  # noqa: E402


@hookimpl
def flashsim_register_components(registry):
    registry.add_algorithm(P8.Pythia8Generator)


def make_app(props=None, **app_props):
    from framework.appmgr import ApplicationMgr
    from framework.options import AlgSpec, JobOptions, Where
    from framework.registry import Plugins

    opts = JobOptions(app={"Output": "", "OutputLevel": "WARNING", "EvtMax": 100, **app_props},
                      algorithms=[AlgSpec("Pythia8Generator", "Generation", Where("test"), dict(props or {}))])
    app = ApplicationMgr(opts, plugins=Plugins(extra_plugins=[sys.modules[__name__]], autoload=False))
    app.initialize()
    return app


def run_events(app, numbers, batch):
    out = {k: [] for k in ("Header", "Collisions", "Vertices", "Particles")}
    for start in range(0, len(numbers), batch):
        store = app.run_batch(np.asarray(numbers[start:start + batch], dtype=np.int64))
        for key, path in (("Header", "/Event/Gen/Header"), ("Collisions", "/Event/Gen/Collisions"),
                          ("Vertices", "/Event/MC/Vertices"), ("Particles", "/Event/MC/Particles")):
            coll = store.get(path)
            out[key].extend(coll.event(i) for i in range(coll.n_events))
    return out


# ------------------------------------------------------------------------------------------
def test_pileup_is_zero_truncated_poisson():
    mu = 1.1
    rs = RandomStreams(7, 1, "Generation")
    ev = np.arange(200_000)
    k = P8.n_collisions_from_uniform(rs.uniform(ev, 0, stream=P8.STREAM_NCOLL), mu)
    assert k.min() >= 1
    kmax = 7
    obs = np.bincount(np.minimum(k, kmax), minlength=kmax + 1)[1:]
    p = stats.poisson.pmf(np.arange(1, kmax + 1), mu) / (1 - math.exp(-mu))
    p[-1] = 1 - p[:-1].sum()
    chi2 = ((obs - ev.size * p) ** 2 / (ev.size * p)).sum()
    assert stats.chi2.sf(chi2, kmax - 1) > 1e-3, (obs, ev.size * p)
    assert abs(k.mean() - mu / (1 - math.exp(-mu))) < 5 * k.std() / math.sqrt(k.size)


def test_beam_spot_and_batch_independence_of_the_setup():
    rs = RandomStreams(3, 5, "Generation")
    mean, sigma = [0.83, -0.17, 0.0], [0.03, 0.025, 45.0]
    ev = np.arange(30_000)
    seeds, ncoll, pv = P8.draw_event_setup(rs, ev, 1.1, mean, sigma)
    assert np.all((seeds >= 1) & (seeds <= P8.PYTHIA_MAX_SEED))
    assert np.unique(seeds).size > ev.size - 5  # collisions in a 9e8 space are rare
    for c in range(3):
        x = pv[:, c]
        pull = (x.mean() - mean[c]) / (sigma[c] / math.sqrt(x.size))
        assert abs(pull) < 5
        assert abs(x.std() / sigma[c] - 1) < 5 / math.sqrt(2 * x.size)
        assert stats.kstest((x - mean[c]) / sigma[c], "norm").pvalue > 1e-3
    # the same events drawn in another order / subset give the same set-up
    sub = np.array([29_999, 5, 17, 1000])
    s2, n2, pv2 = P8.draw_event_setup(rs, sub, 1.1, mean, sigma)
    np.testing.assert_array_equal(s2, seeds[sub])
    np.testing.assert_array_equal(n2, ncoll[sub])
    starts = np.concatenate([[0], np.cumsum(ncoll)])
    np.testing.assert_array_equal(pv2, np.concatenate([pv[starts[i]:starts[i + 1]] for i in sub]))


def test_bad_command_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match=r"'SoftQCD:nonDifractive = on'.*not a Pythia setting"):
        P8.configure_pythia(["SoftQCD:nonDifractive = on"], 13000.0)


@pytest.fixture(scope="module")
def reference():
    app = make_app(Seed=11)
    return run_events(app, list(range(6)), 6)


def test_same_seed_same_events_whatever_the_batching(reference):
    batched = run_events(make_app(Seed=11), list(range(6)), 2)
    shard = run_events(make_app(Seed=11), [5, 3, 4], 3)  # another job, other order
    for key in reference:
        for a, b in zip(reference[key], batched[key]):
            for col in a:
                np.testing.assert_array_equal(a[col], b[col])
        for i, b in zip([5, 3, 4], shard[key]):
            for col in b:
                np.testing.assert_array_equal(reference[key][i][col], b[col])
    other = run_events(make_app(Seed=12), [0], 1)
    assert not np.array_equal(other["Particles"][0]["px"][:50], reference["Particles"][0]["px"][:50])


def test_truth_model_consistency(reference):
    n_decays = 0
    for h, c, v, p in zip(reference["Header"], reference["Collisions"], reference["Vertices"], reference["Particles"]):
        ncoll = int(h["n_collisions"][0])
        assert ncoll >= 1 and len(c["x"]) == ncoll
        assert np.array_equal(np.flatnonzero(v["type"] == 1).size, ncoll)
        assert set(np.unique(p["status"])) <= {1, 2}
        apid = np.abs(p["pid"])
        assert not np.any((apid <= 8) | (apid == 21) | (apid == 90))
        # every collision has particles, cross references in range and within the collision
        assert set(np.unique(p["collision"])) == set(range(ncoll))
        assert np.all(v["collision"][p["origin_vertex"]] == p["collision"])
        # decays: 4-momentum conservation (Pythia keeps every decay product) and flight = beta c dt
        n = len(p["pid"])
        four = np.stack([p["px"], p["py"], p["pz"], p["E"]], axis=1)
        has_m = p["mother"] >= 0
        sums = np.zeros((n, 4))
        np.add.at(sums, p["mother"][has_m], four[has_m])
        dec = p["end_vertex"] >= 0
        assert np.all(np.bincount(p["mother"][has_m], minlength=n)[dec] > 0)
        np.testing.assert_allclose(sums[dec], four[dec], rtol=0, atol=1e-6 * p["E"].max())
        dr = np.sqrt(sum((v[k][p["end_vertex"][dec]] - v[k][p["origin_vertex"][dec]]) ** 2 for k in "xyz"))
        dt = v["t"][p["end_vertex"][dec]] - v["t"][p["origin_vertex"][dec]]
        beta = np.sqrt((four[dec, :3] ** 2).sum(axis=1)) / p["E"][dec]
        far = dr > 1e-3
        np.testing.assert_allclose(dr[far], beta[far] * C_MM_PER_NS * dt[far], rtol=1e-6)
        n_decays += int(dec.sum())
        # masses in MeV
        np.testing.assert_allclose(p["mass"][apid == 211], 139.57, atol=0.01)
        # primary particles start at their collision's PV
        prim = p["mother"] < 0
        np.testing.assert_allclose(v["z"][p["origin_vertex"][prim]], c["z"][p["collision"][prim]])
    assert n_decays > 100


# ------------------------------------------------------------------------------------------
# one nextBatch per batch (re-seeding in a UserHooks callback) and batch-level truth conversion
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pythia_with_hooks():
    hooks = P8.make_batch_hooks()
    return P8.configure_pythia(["SoftQCD:nonDiffractive = on"], 13000.0, hooks=hooks), hooks


def test_batched_generation_equals_per_event_reseeding(pythia_with_hooks):
    py, hooks = pythia_with_hooks
    seeds = np.array([17, 4, 99, 1234, 5])
    ncoll = np.array([2, 1, 0, 3, 1])  # an event without collision (signal events' pile-up can be 0)
    off, cols = P8.generate_batch(py, hooks, seeds, ncoll)
    assert len(off) - 1 == ncoll.sum()
    parts = []
    for s, k in zip(seeds, ncoll):
        if k:
            py.rndm.init(int(s))
            parts.append(P8.batch_arrays(py.nextBatch(int(k))))
    ref_off, ref_cols = P8.concat_batch_arrays(parts)
    np.testing.assert_array_equal(off, ref_off)
    for key in ref_cols:
        np.testing.assert_array_equal(cols[key], ref_cols[key])
    # a subset of the events, in another order, gives the same collisions
    sub_off, sub_cols = P8.generate_batch(py, hooks, seeds[[3, 0]], ncoll[[3, 0]])
    first = np.cumsum(ncoll) - ncoll
    for j, (ev, k) in enumerate([(3, 3), (0, 2)]):
        lo_ref, hi_ref = off[first[ev]], off[first[ev] + k]
        lo, hi = sub_off[[0, 3][j]], sub_off[[3, 5][j]]
        np.testing.assert_array_equal(sub_cols["px"][lo:hi], cols["px"][lo_ref:hi_ref])


def test_batch_truth_conversion_equals_per_collision_selection(pythia_with_hooks):
    from algorithms.generators.truth_builder import assemble_truth, select_truth

    py, hooks = pythia_with_hooks
    seeds, ncoll = np.array([3, 8, 21, 40]), np.array([1, 3, 2, 1])
    pv = np.random.default_rng(2).normal(size=(ncoll.sum(), 4))
    off, cols = P8.generate_batch(py, hooks, seeds, ncoll)
    sizes, flat = P8.strip_system(off, cols)
    signal_rows = np.array([5, int(sizes[0]) + 7])
    out = P8.truth_collections(sizes, flat, pv, ncoll, np.arange(4), signal_rows=signal_rows,
                               signal_trials=[1, 2, 3, 4])
    events, c = [], 0
    for k in ncoll:
        events.append([select_truth(P8.pythia_collision_to_raw(cols, int(off[c + i]), int(off[c + i + 1]), pv[c + i]))
                       for i in range(k)])
        c += k
    ref = assemble_truth(events, np.arange(4), signal_trials=[1, 2, 3, 4])
    for key in ref:
        np.testing.assert_array_equal(ref[key].offsets, out[key].offsets)
        for col in ref[key].columns:
            a, b = ref[key][col], out[key][col]
            assert a.dtype == b.dtype, (key, col)
            if col == "is_signal":
                continue
            np.testing.assert_array_equal(a, b, err_msg=f"{key}.{col}")
    # is_signal marks exactly the kept rows named in signal_rows (if kept)
    P = out["Particles"]
    assert P["is_signal"].sum() <= 2
    sel_pids = flat["id"][signal_rows]
    assert set(P["pid"][P["is_signal"]]) <= set(sel_pids.tolist())
