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

from .acceptance import check_card, gather_kinematics
from .features import acceptance_features

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
        acc = np.asarray(Candidates["accepted"], dtype=bool)
        idx = np.flatnonzero(acc)
        ev = Candidates.event_index
        rows = Particles.global_index(ev[idx], Candidates["mc_index"][idx])
        probs = np.full((n, 4), np.nan, dtype=np.float32)
        if len(idx):
            feats = acceptance_features(*gather_kinematics(Particles, Vertices, rows))
            probs[idx] = self.model.run(feats)
        ttype = np.full(n, -1, dtype=np.int8)
        if len(idx):
            u = ctx.random.uniform(ctx.event_numbers[ev[idx]], Candidates["mc_index"][idx], stream=0)
            ttype[idx] = draw_track_type(probs[idx], u)
        reco = ttype[idx] > 0
        self.binomial_counter("reconstructed | accepted").add(reco)
        self.binomial_counter("long | accepted").add(ttype[idx] == 3)
        return Candidates.with_columns(
            p_not_recoed=probs[:, 0], p_long=probs[:, 1], p_upstream=probs[:, 2], p_downstream=probs[:, 3],
            track_type=ttype)
