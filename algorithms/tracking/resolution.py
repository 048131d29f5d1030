"""Track resolution: reconstructed closest-to-beam state, fit quality and ghost probability of
every reconstructed track (one joint sample of a generative ONNX model per track).

For each track (``track_type`` 3 long, 4 upstream, 5 downstream in ``/Event/MC/TrackTypes``):

1. true closest-to-beam (CTB) state from the MC origin vertex and momentum
   (:func:`algorithms.tracking.ctb.resolution_features_from_momentum`, a numba kernel);
2. the 12 model inputs (the same function the training uses) and ``noise`` [N, 9] ~ N(0,1) from
   ``ctx.random.normal(event number, MC index, stream=1)`` -- reproducible whatever the batch;
3. one batched call of ``models/trk2016_resolution.onnx`` -> ``dx, dy, dz, dtx, dty, dp,
   chi2PerDoF, nDoF_f, ghostProb``;
4. reco = true + deltas; ``p = p_true + dp``; tracks with ``p <= 0`` (≈0.2 %, as in the
   reference parametrisation) are counted and treated as not reconstructed (dropped);
   ``ndof = max(floor(nDoF_f), 1)``; ``qop = charge / p``.
"""
from __future__ import annotations

import numpy as np

from framework import Algorithm, Collection, ConfigurationError, Input, Output, Property

from .ctb import RESOLUTION_INPUTS, RESOLUTION_OUTPUTS, physical_charge, resolution_features_from_momentum

__all__ = ["TrackResolution", "check_generative_card", "apply_resolution", "NOISE_STREAM", "TRACK_STATE_DTYPES"]

#: ctx.random stream of the model noise
NOISE_STREAM = 1

TRACK_STATE_DTYPES = {
    "mc_index": np.int32, "type": np.int8, "pid": np.int32,
    "x": np.float64, "y": np.float64, "z": np.float64, "tx": np.float64, "ty": np.float64, "qop": np.float64,
    "p": np.float64, "charge": np.int8, "chi2PerDoF": np.float32, "ndof": np.int32, "nDoF_f": np.float32,
    "ghostProb": np.float32,
    "true_x": np.float64, "true_y": np.float64, "true_z": np.float64, "true_tx": np.float64,
    "true_ty": np.float64, "true_qop": np.float64,
}


def check_generative_card(model, name: str, inputs, outputs):
    """ConfigurationError unless the model card lists exactly ``inputs``/``outputs`` and a noise input."""
    if list(model.input_names) != list(inputs):
        raise ConfigurationError(f"{name}: model {model.path} has inputs {model.input_names}, expected {list(inputs)}")
    if list(model.output_names) != list(outputs):
        raise ConfigurationError(f"{name}: model {model.path} has outputs {model.output_names}, expected {list(outputs)}")
    if model.noise_dim <= 0:
        raise ConfigurationError(f"{name}: model {model.path} is not generative (its card has no 'noise' block)")


def apply_resolution(ctb: dict, out: np.ndarray, charge):
    """Reconstructed state from the true CTB state (``x, y, z, tx, ty, p`` float64) and the model
    outputs ``out`` [N, 9].  Returns ``(columns dict, ok mask)``; ``ok`` is False where
    ``p_reco <= 0`` or an output is not finite (those tracks are not reconstructed)."""
    out = np.asarray(out, dtype=np.float64)
    charge = np.asarray(charge, dtype=np.float64)
    p = ctb["p"] + out[:, 5]
    ok = (p > 0) & np.all(np.isfinite(out), axis=1)
    safe_p = np.where(ok, p, 1.0)
    ndof = np.maximum(np.floor(np.nan_to_num(out[:, 7], nan=1.0)), 1.0).astype(np.int32)
    cols = {
        "x": ctb["x"] + out[:, 0], "y": ctb["y"] + out[:, 1], "z": ctb["z"] + out[:, 2],
        "tx": ctb["tx"] + out[:, 3], "ty": ctb["ty"] + out[:, 4],
        "qop": charge / safe_p, "p": safe_p,
        "chi2PerDoF": out[:, 6].astype(np.float32), "ndof": ndof, "nDoF_f": out[:, 7].astype(np.float32),
        "ghostProb": out[:, 8].astype(np.float32),
        "true_x": ctb["x"], "true_y": ctb["y"], "true_z": ctb["z"], "true_tx": ctb["tx"], "true_ty": ctb["ty"],
        "true_qop": charge / ctb["p"],
    }
    return cols, ok


class TrackResolution(Algorithm):
    """Reconstructed closest-to-beam track states (generative ONNX resolution model).

    Output ``/Event/Rec/TrackStates``: one row per reconstructed track with ``mc_index, type, pid,
    x, y, z, tx, ty, qop, p, charge, chi2PerDoF, ndof, nDoF_f, ghostProb`` and the true CTB state
    ``true_x, true_y, true_z, true_tx, true_ty, true_qop``.  Tracks whose generated momentum is
    not positive are dropped (counter ``p_reco <= 0 (dropped)``).
    """

    Model = Property(str, "models/trk2016_resolution.onnx", "generative ONNX resolution model (with its YAML card)")
    TrackTypes = Input("/Event/MC/TrackTypes", "tracking candidates with their track_type")
    Particles = Input("/Event/MC/Particles", "MC particles")
    Vertices = Input("/Event/MC/Vertices", "MC vertices (origin positions)")
    TrackStates = Output("/Event/Rec/TrackStates", "reconstructed closest-to-beam states")

    def initialize(self):
        self.model = self.load_model(self.Model)
        check_generative_card(self.model, self.name, RESOLUTION_INPUTS, RESOLUTION_OUTPUTS)

    def execute(self, ctx, TrackTypes, Particles, Vertices):
        from .acceptance import gather_kinematics

        tt = np.asarray(TrackTypes["track_type"])
        sel = np.flatnonzero((tt == 3) | (tt == 4) | (tt == 5))
        ev = TrackTypes.event_index[sel]
        mc = np.asarray(TrackTypes["mc_index"])[sel].astype(np.int64)
        rows = Particles.global_index(ev, mc)
        pid, x0, y0, z0, px, py, pz = gather_kinematics(Particles, Vertices, rows)
        with np.errstate(divide="ignore", invalid="ignore"):
            feats, ctb = resolution_features_from_momentum(x0, y0, z0, px, py, pz, pid, tt[sel])
        finite = np.all(np.isfinite(feats), axis=1) & (np.asarray(pz, dtype=np.float64) > 0)
        n_noise = self.model.noise_dim
        out = np.full((len(sel), len(RESOLUTION_OUTPUTS)), np.nan, dtype=np.float32)
        if finite.any():
            noise = ctx.random.normal(ctx.event_numbers[ev[finite]], mc[finite], stream=NOISE_STREAM, n=n_noise)
            out[finite] = self.model.run({"x": feats[finite], "noise": noise.astype(np.float32)})
        charge = physical_charge(pid)
        with np.errstate(divide="ignore", invalid="ignore"):
            cols, ok = apply_resolution(ctb, out, charge)
        ok &= finite
        self.counter("tracks").increment(int(ok.sum()))
        self.counter("p_reco <= 0 (dropped)").increment(int((finite & ~ok).sum()))
        self.counter("out of domain (dropped)").increment(int((~finite).sum()))
        cols.update(mc_index=mc.astype(np.int32), type=tt[sel].astype(np.int8), pid=np.asarray(pid, np.int32),
                    charge=charge)
        cols = {k: np.asarray(v)[ok].astype(TRACK_STATE_DTYPES[k]) for k, v in cols.items()}
        return Collection.from_event_index(cols, ev[ok], TrackTypes.n_events, event_numbers=ctx.event_numbers)
