"""Tracking efficiency: reconstruction outcome of the accepted candidates.

The ONNX classifier ``models/trk2016_efficiency.onnx`` (same 12 inputs as the acceptance) gives
P(not reconstructed), P(long), P(upstream), P(downstream) for each *accepted* candidate (one
batched call); a categorical draw -- uniform from ``ctx.random`` keyed by (event number, MC
particle index) -- picks the track type as LHCb's Lamarr does: 0 (not reconstructed), 3 (long),
4 (upstream), 5 (downstream = the remainder).  Candidates that were not accepted get
``track_type = -1`` and NaN probabilities (the model is not evaluated for them).
"""
from __future__ import annotations

import numpy as np

from framework import Algorithm, Input, Output, Property

from .acceptance import check_card
from .features import FEATURE_NAMES, acceptance_features
from .kernels import draw_track_types, gather_rows, ok_rows

__all__ = ["TrackingEfficiency", "draw_track_type", "TRACK_TYPE_CODES", "OUTPUT_NAMES"]

OUTPUT_NAMES = ["not_recoed", "long", "upstream", "downstream"]
TRACK_TYPE_CODES = np.array([0, 3, 4, 5], dtype=np.int8)


def draw_track_type(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Categorical draw: ``probs`` [N, 4] (not_recoed, long, upstream, downstream), ``u`` [N]
    uniforms -> int8 codes 0, 3, 4, 5 (the last class takes the remainder)."""
    cum = np.cumsum(np.asarray(probs, dtype=np.float64)[:, :3], axis=1)
    k = (u[:, None] >= cum).sum(axis=1)
    return TRACK_TYPE_CODES[k]


class TrackingEfficiency(Algorithm):
    """Track type of accepted candidates (ONNX 4-class classifier + categorical draw).

    Output: the candidate rows with ``p_not_recoed, p_long, p_upstream, p_downstream`` and
    ``track_type`` (-1 not accepted, 0 not reconstructed, 3 long, 4 upstream, 5 downstream).
    """

    Model = Property(str, "models/trk2016_efficiency.onnx", "ONNX efficiency classifier (with its YAML card)")
    Candidates = Input("/Event/MC/TrackingCandidates", "tracking candidates from Acceptance")
    Particles = Input("/Event/MC/Particles", "MC particles")
    Vertices = Input("/Event/MC/Vertices", "MC vertices (origin positions)")
    TrackTypes = Output("/Event/MC/TrackTypes", "candidates + p_* and track_type")

    def initialize(self):
        self.model = self.load_model(self.Model)
        check_card(self.model, self.name, OUTPUT_NAMES)

    def execute(self, ctx, Candidates, Particles, Vertices):
        n = len(Candidates)
        idx = ok_rows(Candidates["accepted"])
        ev = Candidates.event_index
        mc = Candidates["mc_index"]
        if len(idx):
            if "features" in Candidates and Candidates["features"].shape == (n, len(FEATURE_NAMES)):
                feats = Candidates["features"][idx]  # the inputs Acceptance computed for these rows
            else:
                feats = acceptance_features(*gather_rows(Particles, Vertices, ev[idx], mc[idx]))
            probs = self.model.run(feats)
        else:
            probs = np.zeros((0, 4), dtype=np.float32)
        # categorical draw with u = ctx.random.uniform(event number, mc_index, stream=0), in the kernel
        ttype, p0, p1, p2, p3, n_reco, n_long = draw_track_types(
            ctx.random.key_for(0), ctx.event_numbers, ev, mc, idx, probs, n, TRACK_TYPE_CODES)
        self.binomial_counter("reconstructed | accepted").add_counts(int(n_reco), len(idx))
        self.binomial_counter("long | accepted").add_counts(int(n_long), len(idx))
        return Candidates.with_columns(p_not_recoed=p0, p_long=p1, p_upstream=p2, p_downstream=p3, track_type=ttype)
