"""TrackIP algorithm (relations + best PV) and the Tracks ntuple columns."""
from types import SimpleNamespace

import numpy as np

from framework import Collection
from framework.context import BatchContext
from algorithms.tracking.ip import TrackIP, ip_ipchi2
from algorithms.tracking.ntuple import track_tuple_columns


def make_inputs(rng):
    # event 0: 3 tracks, 2 PVs; event 1: 1 track, 0 PVs; event 2: 0 tracks, 1 PV
    nt, nv = 4, 3
    pv = Collection.from_counts({"x": np.array([0.8, 0.8, 0.8]), "y": np.array([-0.2, -0.2, -0.2]),
                                 "z": np.array([-30.0, 40.0, 0.0]),
                                 "cov": np.stack([np.diag([1e-4, 1e-4, 4e-3])] * nv),
                                 "collision": np.array([0, 1, 0], np.int32)}, [2, 0, 1])
    z = np.array([-30.0, 40.0, 40.0, 0.0]) + rng.normal(0, 0.05, nt)
    tx, ty = rng.normal(0, 0.1, nt), rng.normal(0, 0.1, nt)
    cov = np.stack([np.diag([4e-4, 4e-4, 1e-7, 1e-7, 1e-12])] * nt)
    p = np.array([5000.0, 12000.0, 3000.0, 8000.0])
    tracks = Collection.from_counts({
        "mc_index": np.array([0, 1, 2, 0], np.int32), "type": np.array([3, 3, 5, 4], np.int8),
        "x": 0.8 + rng.normal(0, 0.02, nt), "y": -0.2 + rng.normal(0, 0.02, nt), "z": z, "tx": tx, "ty": ty,
        "qop": 1 / p, "p": p, "charge": np.ones(nt, np.int8), "chi2PerDoF": np.ones(nt), "ndof": np.full(nt, 20, np.int32),
        "ghostProb": np.zeros(nt), "cov": cov}, [3, 1, 0])
    return tracks, pv


def test_track_ip_algorithm():
    rng = np.random.default_rng(3)
    tracks, pv = make_inputs(rng)
    alg = TrackIP("TrackIP")
    alg._app = SimpleNamespace(msg_svc=None)
    ctx = BatchContext(np.array([7, 8, 9]), 1, 0).for_algorithm(alg.name)
    out = alg.execute(ctx, Tracks=tracks, Vertices=pv)
    rel, per = out["Relations"], out["TrackIPs"]
    np.testing.assert_array_equal(rel.counts, [6, 0, 0])
    np.testing.assert_array_equal(per.counts, tracks.counts)
    # tracks 0 (from the PV at z=-30) and 1, 2 (z=+40) pick the right PV
    np.testing.assert_array_equal(per["best_pv"], [0, 1, 1, -1])
    assert np.isnan(per["ipchi2"][3])
    for k in range(6):
        i, j = rel["track"][k], rel["pv"][k]
        ref = ip_ipchi2(tracks["x"][i], tracks["y"][i], tracks["z"][i], tracks["tx"][i], tracks["ty"][i],
                        tracks["cov"][i], pv["x"][j], pv["y"][j], pv["z"][j], pv["cov"][j])
        assert ref == (rel["ip"][k], rel["ipchi2"][k])
    np.testing.assert_array_equal(per["min_ipchi2"][:3], per["ipchi2"][:3])


def test_track_tuple_columns():
    rng = np.random.default_rng(4)
    tracks, pv = make_inputs(rng)
    parts = Collection.from_counts({"pid": np.array([211, -321, 13, 2212], np.int32),
                                    "px": np.array([1.0, 2, 3, 4]), "py": np.zeros(4), "pz": np.array([10.0, 20, 30, 40]),
                                    "origin_vertex": np.array([0, 0, 1, 0], np.int32)}, [3, 1, 0])
    verts = Collection.from_counts({"x": np.array([0.1, 0.2, 0.3]), "y": np.zeros(3), "z": np.array([1.0, 2, 3])},
                                   [2, 1, 0])
    tip = Collection.from_counts({"best_pv": np.array([0, 1, 1, -1], np.int32), "ip": np.array([0.01, 0.02, 0.03, np.nan]),
                                  "ipchi2": np.array([1.0, 2, 3, np.nan]), "min_ipchi2": np.array([1.0, 2, 3, np.nan])},
                                 [3, 1, 0])
    cols = track_tuple_columns(5, np.array([100, 101, 102]), tracks, tip, parts, verts)
    assert len({len(v) for v in cols.values()}) == 1 and len(cols["p"]) == 4
    np.testing.assert_array_equal(cols["eventNumber"], [100, 100, 100, 101])
    np.testing.assert_array_equal(cols["true_pid"], [211, -321, 13, 2212])
    np.testing.assert_allclose(cols["true_origin_x"], [0.1, 0.1, 0.2, 0.3])
    np.testing.assert_allclose(cols["true_origin_z"], [1, 1, 2, 3])
    t2 = tracks["tx"] ** 2 + tracks["ty"] ** 2
    np.testing.assert_allclose(cols["pT"], tracks["p"] * np.sqrt(t2 / (1 + t2)), rtol=1e-6)
    np.testing.assert_allclose(cols["eta"], np.arcsinh(1 / np.sqrt(t2)), rtol=1e-6)
    np.testing.assert_allclose(cols["cov_x_x"], 4e-4, rtol=1e-6)
    for key in ("runNumber", "type", "x", "y", "z", "tx", "ty", "qop", "phi", "cov_qop_qop", "chi2PerDoF", "ndof",
                "ghostProb", "ip", "ipchi2", "true_px", "true_py", "true_pz", "true_origin_y"):
        assert key in cols
