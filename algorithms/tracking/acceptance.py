"""Tracking acceptance: which charged final-state particles cross the tracking detectors.

Candidates are the final-state (``end_vertex == -1``) e, mu, pi, K, p of ``/Event/MC/Particles``.
Those in the model domain (pz > 1 MeV, finite features) are sent, in one batched call, to the
ONNX classifier ``models/trk2016_acceptance.onnx`` (inputs: :mod:`algorithms.tracking.features`);
the others are "not accepted" and never reach the model.  A Bernoulli draw with the predicted
probability decides ``accepted``; the uniform comes from ``ctx.random`` keyed by (event number,
MC particle index within the event).
"""
from __future__ import annotations

import numpy as np

from framework import Algorithm, Collection, ConfigurationError, Input, Output, Property

from .features import FEATURE_NAMES, acceptance_features, is_tracked_species
from .kernels import bernoulli_accept, domain_mask, select_and_gather

__all__ = ["Acceptance", "select_candidates", "gather_kinematics", "check_card"]


def check_card(model, name: str, outputs: list[str]):
    """ConfigurationError unless the model card lists the 12 tracking features and ``outputs``."""
    if list(model.input_names) != FEATURE_NAMES:
        raise ConfigurationError(
            f"{name}: model {model.path} has inputs {model.input_names}, expected the tracking features "
            f"{FEATURE_NAMES} (algorithms.tracking.features)")
    if list(model.output_names) != outputs:
        raise ConfigurationError(f"{name}: model {model.path} has outputs {model.output_names}, expected {outputs}")


def select_candidates(Particles) -> np.ndarray:
    """Batch rows of the tracking candidates: final state (no end vertex), e/mu/pi/K/p."""
    return np.flatnonzero((Particles["end_vertex"] < 0) & is_tracked_species(Particles["pid"]))


def gather_kinematics(Particles, Vertices, rows: np.ndarray):
    """(pid, x, y, z, px, py, pz) of the given MC-particle batch rows; the origin vertex position
    is NaN for particles without an origin vertex (they end up out of domain)."""
    ev = Particles.event_index[rows]
    ov = Particles["origin_vertex"][rows]
    vrow = Vertices.global_index(ev, ov)
    has = vrow >= 0
    safe = np.where(has, vrow, 0)
    pos = []
    for c in ("x", "y", "z"):
        col = Vertices[c]
        v = col[safe] if len(col) else np.zeros(len(rows))
        pos.append(np.where(has, v, np.nan))
    return (Particles["pid"][rows], pos[0], pos[1], pos[2],
            Particles["px"][rows], Particles["py"][rows], Particles["pz"][rows])


class Acceptance(Algorithm):
    """Geometrical acceptance of charged final-state particles (ONNX classifier + Bernoulli draw).

    Output: one row per candidate (final-state e/mu/pi/K/p) with ``mc_index``, ``in_domain``,
    ``acceptance_prob`` and ``accepted``.
    """

    Model = Property(str, "models/trk2016_acceptance.onnx", "ONNX acceptance classifier (with its YAML card)")
    Particles = Input("/Event/MC/Particles", "MC particles")
    Vertices = Input("/Event/MC/Vertices", "MC vertices (origin positions)")
    Candidates = Output("/Event/MC/TrackingCandidates",
                        "one row per charged final-state candidate: mc_index, in_domain, acceptance_prob, accepted")

    def initialize(self):
        self.model = self.load_model(self.Model)
        check_card(self.model, self.name, ["acceptance"])

    def execute(self, ctx, Particles, Vertices):
        # one pass: candidate rows, their kinematics and origin vertex (kernels.select_and_gather)
        rows, ev, mc_index, pid, x, y, z, px, py, pz, counts = select_and_gather(Particles, Vertices)
        feats = acceptance_features(pid, x, y, z, px, py, pz)
        ok, n_ok = domain_mask(feats, pz)
        prob = np.zeros(len(rows), dtype=np.float32)
        if n_ok:
            prob[ok] = self.model.run(feats if n_ok == len(rows) else feats[ok])[:, 0]
        # u = ctx.random.uniform(event number, mc_index, stream=0), drawn in the kernel
        accepted, n_acc = bernoulli_accept(ctx.random.key_for(0), ctx.event_numbers, ev, mc_index, ok, prob)
        self.binomial_counter("in domain").add_counts(int(n_ok), len(rows))
        self.binomial_counter("accepted").add_counts(int(n_acc), len(rows))
        return Collection.from_counts({
            "mc_index": mc_index.astype(np.int32),
            "in_domain": ok,
            "acceptance_prob": prob,
            "accepted": accepted,
            "features": feats,
        }, counts, ctx.event_numbers)
