"""TrackTupleWriter: the ``Tracks`` TTree, one row per reconstructed track.

Branches: runNumber, eventNumber, type (3 long, 4 upstream, 5 downstream), the closest-to-beam
state x, y, z [mm], tx, ty, qop [1/MeV], p, pT [MeV], eta, phi (from the reconstructed state),
cov_x_x, cov_y_y, cov_tx_tx, cov_ty_ty, cov_qop_qop (covariance diagonal), chi2PerDoF, ndof,
ghostProb, ip [mm] and ipchi2 to the best PV (smallest IPchi2; NaN without PV), best_pv, the
truth: true_pid, true_px, true_py, true_pz [MeV], true_origin_x/y/z [mm].
"""
from __future__ import annotations

import numpy as np

from framework import Algorithm, Input, Property

__all__ = ["TrackTupleWriter", "track_tuple_columns"]

_COV_NAMES = ["cov_x_x", "cov_y_y", "cov_tx_tx", "cov_ty_ty", "cov_qop_qop"]


def track_tuple_columns(run_number, event_numbers, Tracks, TrackIP, Particles, Vertices) -> dict:
    """Flat branch arrays for the tracks of one batch (see module docstring)."""
    ev = Tracks.event_index
    tx = np.asarray(Tracks["tx"], dtype=np.float64)
    ty = np.asarray(Tracks["ty"], dtype=np.float64)
    p = np.asarray(Tracks["p"], dtype=np.float64)
    t2 = tx * tx + ty * ty
    with np.errstate(divide="ignore", invalid="ignore"):
        pt = p * np.sqrt(t2 / (1.0 + t2))
        eta = np.arcsinh(1.0 / np.sqrt(t2))
    cov = np.asarray(Tracks["cov"])
    diag = np.diagonal(cov, axis1=1, axis2=2) if len(cov) else np.zeros((0, 5))
    rows = Particles.global_index(ev, Tracks["mc_index"])
    ok = rows >= 0
    safe = np.where(ok, rows, 0)

    def truth(col, dtype=np.float32, fill=np.nan):
        c = Particles[col]
        v = c[safe] if len(c) else np.zeros(len(rows), dtype=c.dtype)
        return np.where(ok, v, fill).astype(dtype)

    ov = np.where(ok, Particles["origin_vertex"][safe] if len(Particles) else -1, -1)
    vrow = Vertices.global_index(ev, ov)
    vok = vrow >= 0
    vsafe = np.where(vok, vrow, 0)

    def origin(c):
        col = Vertices[c]
        v = col[vsafe] if len(col) else np.zeros(len(vrow))
        return np.where(vok, v, np.nan).astype(np.float32)

    out = {
        "runNumber": np.full(len(Tracks), run_number, dtype=np.int32),
        "eventNumber": np.asarray(event_numbers, dtype=np.int64)[ev],
        "type": np.asarray(Tracks["type"], dtype=np.int8).astype(np.int32),
        "x": np.asarray(Tracks["x"], dtype=np.float32),
        "y": np.asarray(Tracks["y"], dtype=np.float32),
        "z": np.asarray(Tracks["z"], dtype=np.float32),
        "tx": tx.astype(np.float32),
        "ty": ty.astype(np.float32),
        "qop": np.asarray(Tracks["qop"], dtype=np.float32),
        "p": p.astype(np.float32),
        "pT": pt.astype(np.float32),
        "eta": eta.astype(np.float32),
        "phi": np.arctan2(ty, tx).astype(np.float32),
    }
    for i, name in enumerate(_COV_NAMES):
        out[name] = diag[:, i].astype(np.float32)
    out.update({
        "chi2PerDoF": np.asarray(Tracks["chi2PerDoF"], dtype=np.float32),
        "ndof": np.asarray(Tracks["ndof"], dtype=np.int32),
        "ghostProb": np.asarray(Tracks["ghostProb"], dtype=np.float32),
        "best_pv": np.asarray(TrackIP["best_pv"], dtype=np.int32),
        "ip": np.asarray(TrackIP["ip"], dtype=np.float32),
        "ipchi2": np.asarray(TrackIP["ipchi2"], dtype=np.float32),
        "true_pid": truth("pid", np.int32, 0),
        "true_px": truth("px"),
        "true_py": truth("py"),
        "true_pz": truth("pz"),
        "true_origin_x": origin("x"),
        "true_origin_y": origin("y"),
        "true_origin_z": origin("z"),
    })
    return out


class TrackTupleWriter(Algorithm):
    """Writes the ``Tracks`` TTree: one row per reconstructed track with state, covariance
    diagonal, quality, best-PV IP/IPchi2 and MC truth."""

    TreeName = Property(str, "Tracks", "name of the output TTree")
    Tracks = Input("/Event/Rec/Tracks", "reconstructed tracks")
    TrackIPs = Input("/Event/Rec/TrackIP", "per-track best-PV IP (TrackIP)")
    Particles = Input("/Event/MC/Particles", "MC particles (truth)")
    Vertices = Input("/Event/MC/Vertices", "MC vertices (true origin)")

    def execute(self, ctx, Tracks, TrackIPs, Particles, Vertices):
        cols = track_tuple_columns(ctx.run_number, ctx.event_numbers, Tracks, TrackIPs, Particles, Vertices)
        self.ntuple(self.TreeName).extend(cols)
        self.counter("rows").increment(len(Tracks))
