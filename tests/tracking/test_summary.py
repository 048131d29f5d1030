"""RecSummary counts from reconstructed objects, particle-gun override."""
from types import SimpleNamespace

import numpy as np

from framework import Collection
from framework.context import BatchContext
from algorithms.tracking.summary import RecSummary, summarize


def test_summarize_counts_and_override():
    ev = np.array([0, 0, 0, 1, 1, 3])
    tt = np.array([3, 4, 5, 3, 3, 5])
    out = summarize(ev, tt, 4, pv_counts=[2, 1, 0, 3])
    np.testing.assert_array_equal(out["nLongTracks"], [1, 2, 0, 0])
    np.testing.assert_array_equal(out["nUpstreamTracks"], [1, 0, 0, 0])
    np.testing.assert_array_equal(out["nDownstreamTracks"], [1, 0, 0, 1])
    np.testing.assert_array_equal(out["nTracks"], [3, 2, 0, 1])
    np.testing.assert_array_equal(out["nPVs"], [2, 1, 0, 3])
    o = summarize(ev, tt, 4, [1, 1, 1, 1], ntracks_override=np.array([-1, 57, -1, 0]))
    np.testing.assert_array_equal(o["nTracks"], [3, 57, 0, 0])
    assert all(v.dtype == np.int32 for v in o.values())


def test_rec_summary_algorithm():
    alg = RecSummary("RecSummary")
    alg._app = SimpleNamespace(msg_svc=None)
    tracks = Collection.from_counts({"type": np.array([3, 3, 5, 4], dtype=np.int8)}, [3, 0, 1])
    pvs = Collection.from_counts({"x": np.zeros(4)}, [1, 2, 1])
    header = Collection.per_event({"n_collisions": np.array([1, 2, 1], np.int32),
                                   "ntracks_override": np.array([-1, -1, 80], np.int32),
                                   "signal_trials": np.ones(3, np.int32)})
    ctx = BatchContext(np.array([10, 11, 12]), 1, 0).for_algorithm(alg.name)
    s = alg.execute(ctx, Tracks=tracks, Vertices=pvs, Header=header)
    assert s.n_events == 3 and len(s) == 3
    np.testing.assert_array_equal(s["nTracks"], [3, 0, 80])
    np.testing.assert_array_equal(s["nLongTracks"], [2, 0, 0])
    np.testing.assert_array_equal(s["nDownstreamTracks"], [1, 0, 0])
    np.testing.assert_array_equal(s["nUpstreamTracks"], [0, 0, 1])
    np.testing.assert_array_equal(s["nPVs"], [1, 2, 1])
