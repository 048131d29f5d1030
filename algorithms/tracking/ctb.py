"""Closest-to-beam (CTB) propagation and the feature functions of the resolution/covariance models.

The *same* functions build the model inputs at runtime (``algorithms.tracking.resolution`` /
``covariance``) and in training (``models.training.tracking.train_*``), so there is no
train/serve skew.

Closest-to-beam point
---------------------
The true track is the straight line (no magnetic field) from the origin vertex ``(x0, y0, z0)``
with slopes ``tx = px/pz``, ``ty = py/pz``.  Its point of closest approach to the beam line
(the z axis) minimises ``(x0 + tx (z - z0))^2 + (y0 + ty (z - z0))^2``::

    z_ctb = (tx^2 z0 - tx x0 + ty^2 z0 - ty y0) / (tx^2 + ty^2)
          = z0 - (tx x0 + ty y0) / (tx^2 + ty^2)

(LHCb Lamarr convention, see ``/work/shared/data/README.md``).  A track parallel to the beam
(``tx = ty = 0``) is at the same distance from the beam everywhere: we keep the origin vertex
(``z_ctb = z0``).

Model inputs
------------
* resolution (12 columns, :data:`RESOLUTION_INPUTS`): ``ctb_x, ctb_y, ctb_z, mc_tx, mc_ty,
  mc_log10_p, is_e, is_mu, is_h, is_long, is_upstream, is_downstream``
* covariance (15 columns, :data:`COVARIANCE_INPUTS`): the 12 above, then the *reconstructed*
  ``chi2PerDoF, nDoF_f, ghostProb`` of the same track.
"""
from __future__ import annotations

import functools

import numba as nb
import numpy as np

from .kernels import charge_fast

__all__ = [
    "RESOLUTION_INPUTS",
    "RESOLUTION_OUTPUTS",
    "COVARIANCE_INPUTS",
    "COVARIANCE_OUTPUTS",
    "CORR_PAIRS",
    "TRACK_TYPES",
    "closest_to_beam",
    "species_flags",
    "type_flags",
    "physical_charge",
    "resolution_features",
    "resolution_features_from_momentum",
    "covariance_features",
    "covariance_features_of_states",
    "covariance_from_outputs",
]

RESOLUTION_INPUTS = (
    "ctb_x", "ctb_y", "ctb_z", "mc_tx", "mc_ty", "mc_log10_p",
    "is_e", "is_mu", "is_h", "is_long", "is_upstream", "is_downstream",
)
RESOLUTION_OUTPUTS = ("dx", "dy", "dz", "dtx", "dty", "dp", "chi2PerDoF", "nDoF_f", "ghostProb")
# (j, i) pairs of the correlation outputs, j < i, in the LHCb model's order 01, 02, 12, 03, 13, 23, ...
CORR_PAIRS = tuple((j, i) for i in range(1, 5) for j in range(i))
COVARIANCE_INPUTS = RESOLUTION_INPUTS + ("chi2PerDoF", "nDoF_f", "ghostProb")
COVARIANCE_OUTPUTS = tuple(f"log_cov_ClosestToBeam_{i}_{i}" for i in range(5)) + tuple(
    f"corr_ClosestToBeam_{j}_{i}" for j, i in CORR_PAIRS
)
#: LHCb track-type codes used for the type flags: long, upstream, downstream
TRACK_TYPES = (3, 4, 5)


@nb.njit(cache=True, fastmath=False)
def _ctb_kernel(x0, y0, z0, tx, ty, out_x, out_y, out_z):
    for i in range(x0.shape[0]):
        t2 = tx[i] * tx[i] + ty[i] * ty[i]
        if t2 > 0.0:
            z = (tx[i] * tx[i] * z0[i] - tx[i] * x0[i] + ty[i] * ty[i] * z0[i] - ty[i] * y0[i]) / t2
        else:  # parallel to the beam: every z is closest, keep the origin
            z = z0[i]
        dz = z - z0[i]
        out_x[i] = x0[i] + tx[i] * dz
        out_y[i] = y0[i] + ty[i] * dz
        out_z[i] = z


def closest_to_beam(x0, y0, z0, tx, ty):
    """Closest-to-beam point ``(x, y, z)`` [mm] of straight lines (origin ``x0, y0, z0``, slopes
    ``tx, ty``); float64 arrays of the broadcast shape.  ``tx = ty = 0`` gives the origin."""
    arrs = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (x0, y0, z0, tx, ty)))
    shape = arrs[0].shape
    flat = [np.ascontiguousarray(a).ravel() for a in arrs]
    n = flat[0].shape[0]
    ox, oy, oz = np.empty(n), np.empty(n), np.empty(n)
    _ctb_kernel(*flat, ox, oy, oz)
    return ox.reshape(shape), oy.reshape(shape), oz.reshape(shape)


def species_flags(pid):
    """``(is_e, is_mu, is_h)`` float32 flags: |pid| = 11, 13, and 211/321/2212."""
    apid = np.abs(np.asarray(pid, dtype=np.int64))
    return (
        (apid == 11).astype(np.float32),
        (apid == 13).astype(np.float32),
        np.isin(apid, (211, 321, 2212)).astype(np.float32),
    )


def type_flags(track_type):
    """``(is_long, is_upstream, is_downstream)`` float32 flags from the LHCb type codes 3, 4, 5."""
    tt = np.asarray(track_type)
    return tuple((tt == code).astype(np.float32) for code in TRACK_TYPES)


@functools.lru_cache(maxsize=4096)
def _charge_of(pid: int) -> float:
    from particle import Particle
    from particle.particle import ParticleNotFound

    try:
        c = Particle.from_pdgid(int(pid)).charge
    except (ParticleNotFound, ValueError, Exception):  # unknown pid: not a charged track
        return 0.0
    return float(c) if c is not None else 0.0


def _physical_charge_pdg(pid):
    pid = np.asarray(pid, dtype=np.int64)
    uniq, inv = np.unique(pid, return_inverse=True)
    table = np.array([_charge_of(int(u)) for u in uniq], dtype=np.float64)
    return np.rint(table[inv.reshape(pid.shape)]).astype(np.int8)


def physical_charge(pid):
    """Physical charge (units of e, int8) of each PDG id, from the ``particle`` package.

    e, mu, pi, K, p (the tracked species) take a numba fast path (their PDG charges: -sign for
    e/mu, +sign for pi/K/p; equality with the ``particle`` table is tested); any other id goes
    through the ``particle`` table."""
    pid = np.asarray(pid, dtype=np.int64)
    if pid.ndim == 1:
        q, unknown = charge_fast(pid)
        if not unknown:
            return q
    return _physical_charge_pdg(pid)


@nb.njit(cache=True)
def _fill_resolution_features(out, cx, cy, cz, tx, ty, lp, pid, tt):
    """Columns 0-11 of ``out`` (float32): the resolution inputs, as :func:`resolution_features`."""
    for i in range(out.shape[0]):
        out[i, 0] = np.float32(cx[i])
        out[i, 1] = np.float32(cy[i])
        out[i, 2] = np.float32(cz[i])
        out[i, 3] = np.float32(tx[i])
        out[i, 4] = np.float32(ty[i])
        out[i, 5] = np.float32(lp[i])
        a = abs(pid[i])
        out[i, 6] = np.float32(1.0) if a == 11 else np.float32(0.0)
        out[i, 7] = np.float32(1.0) if a == 13 else np.float32(0.0)
        out[i, 8] = np.float32(1.0) if (a == 211 or a == 321 or a == 2212) else np.float32(0.0)
        t = tt[i]
        out[i, 9] = np.float32(1.0) if t == 3 else np.float32(0.0)
        out[i, 10] = np.float32(1.0) if t == 4 else np.float32(0.0)
        out[i, 11] = np.float32(1.0) if t == 5 else np.float32(0.0)


def _col64(c, n):
    a = np.asarray(c)
    if a.ndim == 0:
        a = np.broadcast_to(a, (n,))
    return np.ascontiguousarray(a, dtype=np.float64)


def resolution_features(ctb_x, ctb_y, ctb_z, tx, ty, log10_p, pid, track_type):
    """The 12 resolution-model inputs (float32 [N, 12], order :data:`RESOLUTION_INPUTS`):
    ``ctb_x, ctb_y, ctb_z, mc_tx, mc_ty, mc_log10_p`` cast to float32, then the species flags
    (|pid| = 11, 13, 211/321/2212) and the type flags (track type 3, 4, 5) as 0/1."""
    n = np.asarray(ctb_x).shape[0]
    out = np.empty((n, len(RESOLUTION_INPUTS)), dtype=np.float32)
    pid = np.asarray(pid, dtype=np.int64)
    tt = np.asarray(track_type)
    if pid.shape != (n,) or tt.shape != (n,) or tt.dtype.kind not in "iu":
        # general inputs (broadcasting, float type codes): the reference numpy path
        for k, c in enumerate([ctb_x, ctb_y, ctb_z, tx, ty, log10_p]):
            out[:, k] = c
        out[:, 6], out[:, 7], out[:, 8] = species_flags(pid)
        out[:, 9], out[:, 10], out[:, 11] = type_flags(track_type)
        return out
    _fill_resolution_features(out, _col64(ctb_x, n), _col64(ctb_y, n), _col64(ctb_z, n), _col64(tx, n),
                              _col64(ty, n), _col64(log10_p, n), np.ascontiguousarray(pid),
                              np.ascontiguousarray(tt, dtype=np.int64))
    return out


@nb.njit(cache=True, error_model="numpy")
def _ctb_from_momentum(x0, y0, z0, px, py, pz, tx, ty, p, cx, cy, cz):
    for i in range(x0.shape[0]):
        a = px[i] / pz[i]
        b = py[i] / pz[i]
        tx[i] = a
        ty[i] = b
        p[i] = np.sqrt(px[i] * px[i] + py[i] * py[i] + pz[i] * pz[i])
        t2 = a * a + b * b
        if t2 > 0.0:
            z = (a * a * z0[i] - a * x0[i] + b * b * z0[i] - b * y0[i]) / t2
        else:
            z = z0[i]
        dz = z - z0[i]
        cx[i] = x0[i] + a * dz
        cy[i] = y0[i] + b * dz
        cz[i] = z


def resolution_features_from_momentum(x0, y0, z0, px, py, pz, pid, track_type):
    """True CTB state and resolution-model inputs from the origin vertex and momentum.

    Returns ``(features float32 [N, 12], ctb dict)`` where ``ctb`` holds float64 ``x, y, z, tx,
    ty, p`` of the true closest-to-beam state (requires pz != 0; callers feed ``pz > 1 MeV``).
    ``tx = px/pz``, ``ty = py/pz``, ``p = sqrt(px^2 + py^2 + pz^2)`` and the CTB point
    (:func:`closest_to_beam`) in one numba pass; ``log10 p`` by numpy."""
    px, py, pz = (np.asarray(a, dtype=np.float64) for a in (px, py, pz))
    x0, y0, z0 = (np.asarray(a, dtype=np.float64) for a in (x0, y0, z0))
    if not (px.ndim == 1 and px.shape == py.shape == pz.shape == x0.shape == y0.shape == z0.shape):
        tx, ty = px / pz, py / pz
        p = np.sqrt(px * px + py * py + pz * pz)
        cx, cy, cz = closest_to_beam(x0, y0, z0, tx, ty)
    else:
        n = px.shape[0]
        tx, ty, p, cx, cy, cz = (np.empty(n) for _ in range(6))
        with np.errstate(divide="ignore", invalid="ignore"):
            _ctb_from_momentum(*(np.ascontiguousarray(a) for a in (x0, y0, z0, px, py, pz)), tx, ty, p, cx, cy, cz)
    with np.errstate(divide="ignore", invalid="ignore"):
        lp = np.log10(p)
    feats = resolution_features(cx, cy, cz, tx, ty, lp, pid, track_type)
    return feats, {"x": cx, "y": cy, "z": cz, "tx": tx, "ty": ty, "p": p}


@nb.njit(cache=True)
def _fill_covariance_extra(out, chi2, ndof_f, ghost):
    for i in range(out.shape[0]):
        out[i, 12] = np.float32(chi2[i])
        out[i, 13] = np.float32(ndof_f[i])
        out[i, 14] = np.float32(ghost[i])


def covariance_features(res_features, chi2PerDoF, nDoF_f, ghostProb):
    """The 15 covariance-model inputs (float32 [N, 15], order :data:`COVARIANCE_INPUTS`)."""
    res_features = np.asarray(res_features, dtype=np.float32)
    n = res_features.shape[0]
    out = np.empty((n, len(COVARIANCE_INPUTS)), dtype=np.float32)
    out[:, :12] = res_features
    out[:, 12] = chi2PerDoF
    out[:, 13] = nDoF_f
    out[:, 14] = ghostProb
    return out


def covariance_features_of_states(true_x, true_y, true_z, true_tx, true_ty, log10_p, pid, track_type,
                                  chi2PerDoF, nDoF_f, ghostProb):
    """:func:`covariance_features` of :func:`resolution_features` in one pass (same values)."""
    n = np.asarray(true_x).shape[0]
    out = np.empty((n, len(COVARIANCE_INPUTS)), dtype=np.float32)
    _fill_resolution_features(out, _col64(true_x, n), _col64(true_y, n), _col64(true_z, n), _col64(true_tx, n),
                              _col64(true_ty, n), _col64(log10_p, n), np.ascontiguousarray(pid, dtype=np.int64),
                              np.ascontiguousarray(track_type, dtype=np.int64))
    _fill_covariance_extra(out, _col64(chi2PerDoF, n), _col64(nDoF_f, n), _col64(ghostProb, n))
    return out


@nb.njit(cache=True)
def _cov_kernel(y, max_log, out, fixed):
    n = y.shape[0]
    sig = np.empty(5)
    r = np.empty((5, 5))
    L = np.empty((5, 5))
    for k in range(n):
        for i in range(5):
            lv = np.float64(y[k, i])
            if not (lv <= max_log):  # also catches NaN
                lv = max_log if lv == lv else 0.0
            if lv < -max_log:
                lv = -max_log
            sig[i] = np.exp(0.5 * lv)
        for i in range(5):
            r[i, i] = 1.0
        m = 5  # correlation columns in CORR_PAIRS order: 01, 02, 12, 03, 13, 23, 04, 14, 24, 34
        for i in range(1, 5):
            for j in range(i):
                c = np.float64(y[k, m])
                if not (c == c):
                    c = 0.0
                r[i, j] = c
                r[j, i] = c
                m += 1
        # Cholesky of the correlation matrix; on failure shrink towards the identity.
        shrink = 0.0
        for attempt in range(60):
            ok = True
            for i in range(5):
                for j in range(i + 1):
                    s = r[i, j] * (1.0 - shrink) if i != j else 1.0
                    for q in range(j):
                        s -= L[i, q] * L[j, q]
                    if i == j:
                        if s <= 1e-12:
                            ok = False
                            break
                        L[i, i] = np.sqrt(s)
                    else:
                        L[i, j] = s / L[j, j]
                if not ok:
                    break
            if ok:
                break
            shrink = 1e-6 if shrink == 0.0 else min(2.0 * shrink, 1.0)
        if shrink > 0.0:
            fixed[k] = True
        for i in range(5):
            out[k, i, i] = sig[i] * sig[i]
            for j in range(i):
                v = r[i, j] * (1.0 - shrink) * (sig[i] * sig[j])
                out[k, i, j] = v
                out[k, j, i] = v  # exactly symmetric


def covariance_from_outputs(y, max_log: float = 60.0):
    """5x5 covariance matrices (float64 [N, 5, 5], state x, y, tx, ty, q/p) from the covariance
    model's outputs ``y`` [N, 15] (:data:`COVARIANCE_OUTPUTS`):
    ``cov_ii = exp(log_cov_ii)``, ``cov_ij = corr_ij sqrt(cov_ii cov_jj)``.

    The model generates correlation matrices that are positive definite by construction
    (canonical partial correlations); this function is the numerical guard in float64: if a
    correlation matrix fails a Cholesky test (|corr| rounded to 1 in float32, or foreign
    outputs) its off-diagonal part is shrunk towards the identity by the smallest factor
    (1e-6, doubling) that makes it positive definite.  Returns ``(cov, fixed)`` where ``fixed``
    (bool [N]) flags rows that needed the guard."""
    y = np.asarray(y)
    y = np.ascontiguousarray(y, dtype=y.dtype if y.dtype in (np.float32, np.float64) else np.float64)
    if y.ndim != 2 or y.shape[1] != 15:
        raise ValueError(f"covariance_from_outputs: expected [N, 15] outputs, got shape {y.shape}")
    out = np.empty((y.shape[0], 5, 5))
    fixed = np.zeros(y.shape[0], dtype=np.bool_)
    _cov_kernel(y, float(max_log), out, fixed)
    return out, fixed
