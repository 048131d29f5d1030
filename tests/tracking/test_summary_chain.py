"""End-to-end through the ApplicationMgr: Pythia8 -> PVReconstruction -> Acceptance ->
TrackingEfficiency -> (test stub: truth tracks with a diagonal covariance) -> TrackIP -> RecSummary.
Checks the data flow, the summary counts against the track types, the best PV of prompt tracks, and
that results do not depend on the batch size."""
from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("pythia8mc")

from framework import Algorithm, Collection, Input, Output, hookimpl  # noqa: E402
from algorithms.tracking.acceptance import Acceptance  # noqa: E402
from algorithms.tracking.efficiency import TrackingEfficiency  # noqa: E402
from algorithms.tracking.ip import TrackIP  # noqa: E402
from algorithms.tracking.ntuple import TrackTupleWriter  # noqa: E402
from algorithms.tracking.pv import PVReconstruction  # noqa: E402
from algorithms.tracking.summary import RecSummary  # noqa: E402


class TruthTracks(Algorithm):
    """Test stub for TrackResolution+TrackCovariance: the true state at the origin vertex z
    (closest-to-beam-like) with a diagonal covariance and no smearing."""

    TrackTypes = Input("/Event/MC/TrackTypes", "")
    Particles = Input("/Event/MC/Particles", "")
    Vertices = Input("/Event/MC/Vertices", "")
    Tracks = Output("/Event/Rec/Tracks", "")

    def execute(self, ctx, TrackTypes, Particles, Vertices):
        reco = TrackTypes.select(TrackTypes["track_type"] >= 3)
        rows = Particles.global_index(reco.event_index, reco["mc_index"])
        vrow = Vertices.global_index(reco.event_index, Particles["origin_vertex"][rows])
        px, py, pz = Particles["px"][rows], Particles["py"][rows], Particles["pz"][rows]
        p = np.sqrt(px * px + py * py + pz * pz)
        n = len(reco)
        cov = np.zeros((n, 5, 5))
        cov[:, [0, 1, 2, 3, 4], [0, 1, 2, 3, 4]] = [0.015 ** 2, 0.015 ** 2, 4e-4 ** 2, 4e-4 ** 2, 1e-12]
        return reco.with_columns(type=reco["track_type"], x=Vertices["x"][vrow], y=Vertices["y"][vrow],
                                 z=Vertices["z"][vrow], tx=px / pz, ty=py / pz, qop=1 / p, p=p,
                                 charge=np.ones(n, np.int8), chi2PerDoF=np.ones(n), ndof=np.full(n, 20, np.int32),
                                 ghostProb=np.zeros(n), cov=cov)


@hookimpl
def flashsim_register_components(registry):
    from algorithms.generators.pythia8 import Pythia8Generator

    for cls in (Pythia8Generator, PVReconstruction, Acceptance, TrackingEfficiency, TruthTracks, TrackIP, RecSummary,
                TrackTupleWriter):
        registry.add_algorithm(cls)


def make_app(batch, output="", extra=()):
    from framework.appmgr import ApplicationMgr
    from framework.options import AlgSpec, JobOptions, Where
    from framework.registry import Plugins

    algs = [AlgSpec(t, t, Where("test"), {}) for t in ("Pythia8Generator", "PVReconstruction", "Acceptance",
                                                       "TrackingEfficiency", "TruthTracks", "TrackIP", "RecSummary",
                                                       *extra)]
    opts = JobOptions(app={"Output": output, "OutputLevel": "WARNING", "EvtMax": 12, "BatchSize": batch}, algorithms=algs)
    plugins = Plugins(extra_plugins=[sys.modules[__name__], "algorithms.plugin"], autoload=False)
    app = ApplicationMgr(opts, plugins=plugins)
    app.initialize()
    return app


def collect(app, batch, n=12):
    out = {}
    for start in range(0, n, batch):
        store = app.run_batch(np.arange(start, min(start + batch, n), dtype=np.int64))
        for path in ("/Event/Rec/Summary", "/Event/MC/TrackTypes", "/Event/Rec/TrackIP", "/Event/Rec/Tracks",
                     "/Event/Gen/Header", "/Event/Rec/Vertices", "/Event/Gen/Collisions", "/Event/MC/Particles"):
            out.setdefault(path, []).append(store.get(path))
    return {k: Collection.concat(v) for k, v in out.items()}


def test_chain_counts_best_pv_and_batch_independence():
    a = collect(make_app(12), 12)
    s, tt, tip, trk = a["/Event/Rec/Summary"], a["/Event/MC/TrackTypes"], a["/Event/Rec/TrackIP"], a["/Event/Rec/Tracks"]
    # summary counts = reconstructed track types per event; nPVs = collisions
    for name, code in (("nLongTracks", 3), ("nUpstreamTracks", 4), ("nDownstreamTracks", 5)):
        np.testing.assert_array_equal(s[name], np.bincount(tt.event_index[tt["track_type"] == code], minlength=12))
    np.testing.assert_array_equal(s["nTracks"], s["nLongTracks"] + s["nUpstreamTracks"] + s["nDownstreamTracks"])
    np.testing.assert_array_equal(s["nPVs"], a["/Event/Gen/Header"]["n_collisions"])
    assert s["nTracks"].sum() > 50
    # prompt tracks: the best PV is (almost always) the PV of their own collision
    parts = a["/Event/MC/Particles"]
    rows = parts.global_index(trk.event_index, trk["mc_index"])
    own = parts["collision"][rows]
    pv_coll = a["/Event/Rec/Vertices"]["collision"]
    best = tip["best_pv"]
    best_coll = pv_coll[a["/Event/Rec/Vertices"].global_index(tip.event_index, best)]
    multi = a["/Event/Gen/Header"]["n_collisions"][trk.event_index] > 1
    if multi.sum() > 20:
        assert np.mean(best_coll[multi] == own[multi]) > 0.8
    # same results with batches of 5
    b = collect(make_app(5), 5)
    for path, col in (("/Event/MC/TrackTypes", "track_type"), ("/Event/Rec/Summary", "nTracks"),
                      ("/Event/Rec/Vertices", "z"), ("/Event/Rec/TrackIP", "ipchi2")):
        np.testing.assert_array_equal(a[path][col], b[path][col])


def test_tracks_ntuple_written(tmp_path):
    import uproot

    out = tmp_path / "trk.root"
    app = make_app(6, output=str(out), extra=("TrackTupleWriter",))
    app.run()
    with uproot.open(out) as f:
        t = f["Tracks"].arrays(library="np")
    assert len(t["p"]) > 20
    for key in ("runNumber", "eventNumber", "type", "x", "y", "z", "tx", "ty", "qop", "p", "pT", "eta", "phi",
                "cov_x_x", "cov_y_y", "cov_tx_tx", "cov_ty_ty", "cov_qop_qop", "chi2PerDoF", "ndof", "ghostProb",
                "ip", "ipchi2", "true_pid", "true_px", "true_py", "true_pz", "true_origin_x", "true_origin_y",
                "true_origin_z"):
        assert key in t, key
    assert set(np.unique(t["type"])) <= {3, 4, 5}
    # stub tracks are unsmeared: p equals the true momentum
    np.testing.assert_allclose(t["p"], np.sqrt(t["true_px"] ** 2 + t["true_py"] ** 2 + t["true_pz"] ** 2), rtol=1e-5)
