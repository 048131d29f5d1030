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

import numba as nb
import numpy as np

from framework import Algorithm, Collection, ConfigurationError, Input, Output, Property

from .ctb import RESOLUTION_INPUTS, RESOLUTION_OUTPUTS, physical_charge, resolution_features_from_momentum
from .kernels import domain_mask, gather_rows, normal_noise, ok_rows

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


@nb.njit(cache=True, error_model="numpy")
def _apply_resolution(cx, cy, cz, ctx_, cty, cp, out, charge, finite, mc, ttype, pid, ev, n_events, compact):
    """Reco state of every row (``compact=False``) or of the kept rows only (``compact=True``:
    ``finite`` and ``p_reco > 0`` and all outputs finite), with per-event counts of the rows written."""
    n = cx.shape[0]
    k_out = out.shape[1]
    ok = np.empty(n, np.bool_)
    m = 0
    for i in range(n):
        good = True
        for j in range(k_out):
            if not np.isfinite(out[i, j]):
                good = False
                break
        p = cp[i] + np.float64(out[i, 5])
        good = good and (p > 0) and finite[i]
        ok[i] = good
        m += good
    size = m if compact else n
    cols_f64 = np.empty((13, size))  # x y z tx ty qop p true_x true_y true_z true_tx true_ty true_qop
    chi2 = np.empty(size, np.float32)
    ndof_f = np.empty(size, np.float32)
    ghost = np.empty(size, np.float32)
    ndof = np.empty(size, np.int32)
    omc = np.empty(size, np.int32)
    otype = np.empty(size, np.int8)
    opid = np.empty(size, np.int32)
    ocharge = np.empty(size, np.int8)
    counts = np.zeros(n_events, np.int64)
    k = 0
    for i in range(n):
        if compact and not ok[i]:
            continue
        q = charge[i]
        p = cp[i] + np.float64(out[i, 5])
        safe_p = p if ok[i] else 1.0
        cols_f64[0, k] = cx[i] + np.float64(out[i, 0])
        cols_f64[1, k] = cy[i] + np.float64(out[i, 1])
        cols_f64[2, k] = cz[i] + np.float64(out[i, 2])
        cols_f64[3, k] = ctx_[i] + np.float64(out[i, 3])
        cols_f64[4, k] = cty[i] + np.float64(out[i, 4])
        cols_f64[5, k] = q / safe_p
        cols_f64[6, k] = safe_p
        cols_f64[7, k] = cx[i]
        cols_f64[8, k] = cy[i]
        cols_f64[9, k] = cz[i]
        cols_f64[10, k] = ctx_[i]
        cols_f64[11, k] = cty[i]
        cols_f64[12, k] = q / cp[i]
        chi2[k] = out[i, 6]
        f = np.float64(out[i, 7])
        ndof_f[k] = out[i, 7]
        if f != f:  # nan_to_num(nan=1.0); +-inf only on rows that are not kept
            f = 1.0
        elif f == np.inf:
            f = 1.7976931348623157e308
        elif f == -np.inf:
            f = -1.7976931348623157e308
        ndof[k] = np.int32(max(np.floor(f), 1.0))
        ghost[k] = out[i, 8]
        omc[k] = mc[i]
        otype[k] = ttype[i]
        opid[k] = pid[i]
        ocharge[k] = charge[i]
        counts[ev[i]] += 1
        k += 1
    return ok, cols_f64, chi2, ndof_f, ghost, ndof, omc, otype, opid, ocharge, counts


_F64_NAMES = ("x", "y", "z", "tx", "ty", "qop", "p", "true_x", "true_y", "true_z", "true_tx", "true_ty", "true_qop")


def _run_apply(ctb, out, charge, finite, mc, ttype, pid, ev, n_events, compact):
    f = lambda a: np.ascontiguousarray(a, dtype=np.float64)  # noqa: E731
    n = len(ctb["x"])
    i64 = lambda a: np.ascontiguousarray(np.broadcast_to(np.asarray(a), (n,)), dtype=np.int64)  # noqa: E731
    res = _apply_resolution(f(ctb["x"]), f(ctb["y"]), f(ctb["z"]), f(ctb["tx"]), f(ctb["ty"]), f(ctb["p"]),
                            np.ascontiguousarray(out, dtype=np.float32),
                            np.ascontiguousarray(np.broadcast_to(np.asarray(charge, dtype=np.float64), (n,))),
                            np.ascontiguousarray(np.broadcast_to(finite, (n,)), dtype=np.bool_),
                            i64(mc), i64(ttype), i64(pid), i64(ev), int(n_events), compact)
    ok, c64, chi2, ndof_f, ghost, ndof, omc, otype, opid, ocharge, counts = res
    c = dict(zip(_F64_NAMES, c64))
    cols = {"x": c["x"], "y": c["y"], "z": c["z"], "tx": c["tx"], "ty": c["ty"], "qop": c["qop"], "p": c["p"],
            "chi2PerDoF": chi2, "ndof": ndof, "nDoF_f": ndof_f, "ghostProb": ghost,
            "true_x": c["true_x"], "true_y": c["true_y"], "true_z": c["true_z"], "true_tx": c["true_tx"],
            "true_ty": c["true_ty"], "true_qop": c["true_qop"],
            "mc_index": omc, "type": otype, "pid": opid, "charge": ocharge}
    return cols, ok, counts


def apply_resolution(ctb: dict, out: np.ndarray, charge):
    """Reconstructed state from the true CTB state (``x, y, z, tx, ty, p`` float64) and the model
    outputs ``out`` [N, 9].  Returns ``(columns dict, ok mask)``; ``ok`` is False where
    ``p_reco <= 0`` or an output is not finite (those tracks are not reconstructed).

    reco = true + deltas (float64), ``p = p_true + dp`` (``p`` and ``qop = charge / p`` use 1 where
    not ok), ``ndof = max(floor(nDoF_f), 1)``, ``true_qop = charge / p_true``; one numba pass."""
    n = len(ctb["x"])
    cols, ok, _ = _run_apply(ctb, np.asarray(out), charge, True, 0, 0, 0, 0, 1, False)
    for k in ("mc_index", "type", "pid", "charge"):
        del cols[k]
    return cols, ok if n else np.zeros(0, bool)


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
        tt = np.asarray(TrackTypes["track_type"])
        sel = ok_rows((tt == 3) | (tt == 4) | (tt == 5))
        ev = TrackTypes.event_index[sel]
        mc = np.asarray(TrackTypes["mc_index"])[sel]
        ttype = tt[sel]
        pid, x0, y0, z0, px, py, pz = gather_rows(Particles, Vertices, ev, mc)
        feats, ctb = resolution_features_from_momentum(x0, y0, z0, px, py, pz, pid, ttype)
        finite, n_fin = domain_mask(feats, pz, 0.0)
        out = np.full((len(sel), len(RESOLUTION_OUTPUTS)), np.nan, dtype=np.float32)
        if n_fin:
            rows = ok_rows(finite)
            # noise = ctx.random.normal(event number, mc_index, stream=NOISE_STREAM, n=noise_dim), as float32
            noise = normal_noise(ctx.random.key_for(NOISE_STREAM), ctx.event_numbers, ev, mc, rows,
                                 self.model.noise_dim)
            y = self.model.run({"x": feats if n_fin == len(sel) else feats[rows], "noise": noise})
            if n_fin == len(sel):
                out = y
            else:
                out[rows] = y
        charge = physical_charge(pid)
        cols, ok, counts = _run_apply(ctb, out, charge, finite, mc, ttype, pid, ev, TrackTypes.n_events, True)
        n_ok = len(cols["x"])
        self.counter("tracks").increment(n_ok)
        self.counter("p_reco <= 0 (dropped)").increment(int(n_fin) - n_ok)
        self.counter("out of domain (dropped)").increment(len(sel) - int(n_fin))
        return Collection.from_counts(cols, counts, ctx.event_numbers)
