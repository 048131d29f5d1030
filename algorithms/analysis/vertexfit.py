"""Batched vertex fit (Billoir-Fruehwirth-Regler least squares) and DOCA, as numba kernels.

Each candidate is a list of *inputs* fitted to one common vertex ``v = (x, y, z)``.  Inputs are

* kind 0, **track**: state ``(x, y, tx, ty, q/p)`` at ``z0`` with its 5x5 covariance;
  parameters ``(tx, ty, kappa = 1/p)``, model
  ``h = (x_v + (z0 - z_v) tx, y_v + (z0 - z_v) ty, tx, ty, kappa)`` (straight line);
* kind 1, **flying composite** (a long-lived mother such as D0 or K0S fitted before):
  ``(x, y, tx, ty, kappa, m)`` at ``z0`` = its decay-vertex z; parameters ``(tx, ty, kappa, m)``,
  the same straight-line model: the composite is a "track" starting at its decay vertex;
* kind 2, **resonance composite** (J/psi in B+ -> J/psi K+, decaying at the mother's vertex):
  ``(x, y, z, tx, ty, kappa, m)``; parameters ``(tx, ty, kappa, m)``, model
  ``h = (x_v, y_v, z_v, tx, ty, kappa, m)`` - equivalent to refitting all its tracks together.

The least-squares problem in (v, q_1..q_n) is solved by Gauss-Newton with the Billoir block
elimination (cost linear in n).  ndof = sum(dim m_i) - 3 - sum(dim q_i): 2n - 3 for n tracks,
a resonance composite contributes 3, a flying one 2.  Outputs: vertex and 3x3 covariance, chi2,
ndof, status, the refitted daughter four-momenta and the mother's (x, y, z, px, py, pz, E) with
its 7x7 covariance; :func:`algorithms.analysis.kinematics.composite_measurement` turns the mother
into an input of the next level.

Status codes: 0 success, 1 not converged, 2 failed (singular / non-PD / NaN), 3 bad input.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np

from .kinematics import (
    ConfigurationError,
    chol_decomp,
    chol_inverse,
    composite_measurement,
    p4_mass,
    p4_mass_err,
)

__all__ = [
    "TRACK",
    "FLYING",
    "RESONANCE",
    "SUCCESS",
    "NONCONVERGED",
    "FAILED",
    "BADINPUT",
    "fit_vertex",
    "fit_vertex_ragged",
    "fit_vertex_general",
    "track_inputs",
    "doca",
    "composite_measurement",
]

TRACK, FLYING, RESONANCE = 0, 1, 2
SUCCESS, NONCONVERGED, FAILED, BADINPUT = 0, 1, 2, 3
_MDIM = np.array([5, 6, 7], dtype=np.int64)
_KDIM = np.array([3, 4, 4], dtype=np.int64)


@nb.njit(cache=True, inline="always")
def _model(kind, v, q, z0, h, A, B):
    """Measurement model h(v, q) and its Jacobians A = dh/dv (m x 3), B = dh/dq (m x k)."""
    m = 5 if kind == 0 else (6 if kind == 1 else 7)
    k = 3 if kind == 0 else 4
    for a in range(m):
        for b in range(3):
            A[a, b] = 0.0
        for b in range(k):
            B[a, b] = 0.0
    if kind == 2:
        h[0] = v[0]
        h[1] = v[1]
        h[2] = v[2]
        A[0, 0] = 1.0
        A[1, 1] = 1.0
        A[2, 2] = 1.0
        for b in range(4):
            h[3 + b] = q[b]
            B[3 + b, b] = 1.0
    else:
        dz = z0 - v[2]
        h[0] = v[0] + dz * q[0]
        h[1] = v[1] + dz * q[1]
        A[0, 0] = 1.0
        A[0, 2] = -q[0]
        A[1, 1] = 1.0
        A[1, 2] = -q[1]
        B[0, 0] = dz
        B[1, 1] = dz
        for b in range(k):
            h[2 + b] = q[b]
            B[2 + b, b] = 1.0
    return m, k


@nb.njit(cache=True, inline="always")
def _p4_jac(kind, q, mass, p4, J):
    """Four-momentum from the parameters (tx, ty, kappa[, m]) and J = dp4/dq (4 x k): E = sqrt(p^2 + m^2)
    with the track's mass hypothesis (kind 0) or the composite's fitted invariant mass (kinds 1, 2)."""
    tx, ty, kap = q[0], q[1], q[2]
    p = 1.0 / kap
    n2 = 1.0 + tx * tx + ty * ty
    pz = p / math.sqrt(n2)
    dpz_tx = -pz * tx / n2
    dpz_ty = -pz * ty / n2
    dpz_k = -pz * p
    p4[0] = tx * pz
    p4[1] = ty * pz
    p4[2] = pz
    J[0, 0] = pz + tx * dpz_tx
    J[0, 1] = tx * dpz_ty
    J[0, 2] = tx * dpz_k
    J[1, 0] = ty * dpz_tx
    J[1, 1] = pz + ty * dpz_ty
    J[1, 2] = ty * dpz_k
    J[2, 0] = dpz_tx
    J[2, 1] = dpz_ty
    J[2, 2] = dpz_k
    m = mass if kind == 0 else q[3]  # composites: the invariant mass is a parameter
    E = math.sqrt(p * p + m * m)
    p4[3] = E
    J[3, 0] = 0.0
    J[3, 1] = 0.0
    J[3, 2] = -p * p * p / E
    if kind != 0:
        for a in range(3):
            J[a, 3] = 0.0
        J[3, 3] = m / E


@nb.njit(cache=True)
def _lines_point(meas, kinds, zref, lo, hi, out):
    """Unweighted least-squares point of the straight lines of the inputs (vertex seed)."""
    M = np.zeros((3, 3))
    b = np.zeros(3)
    for i in range(lo, hi):
        if kinds[i] == 2:
            for a in range(3):
                M[a, a] += 1.0
                b[a] += meas[i, a]
            continue
        tx, ty = meas[i, 2], meas[i, 3]
        nrm = math.sqrt(1.0 + tx * tx + ty * ty)
        d0, d1, d2 = tx / nrm, ty / nrm, 1.0 / nrm
        d = (d0, d1, d2)
        a0 = (meas[i, 0], meas[i, 1], zref[i])
        for r in range(3):
            for c in range(3):
                P = (1.0 if r == c else 0.0) - d[r] * d[c]
                M[r, c] += P
                b[r] += P * a0[c]
    det = (M[0, 0] * (M[1, 1] * M[2, 2] - M[1, 2] * M[2, 1])
           - M[0, 1] * (M[1, 0] * M[2, 2] - M[1, 2] * M[2, 0])
           + M[0, 2] * (M[1, 0] * M[2, 1] - M[1, 1] * M[2, 0]))
    if not (abs(det) > 1e-12) or not math.isfinite(det):
        out[0] = meas[lo, 0]
        out[1] = meas[lo, 1]
        out[2] = zref[lo] if kinds[lo] != 2 else meas[lo, 2]
        return False
    inv = 1.0 / det
    out[0] = inv * (b[0] * (M[1, 1] * M[2, 2] - M[1, 2] * M[2, 1]) - M[0, 1] * (b[1] * M[2, 2] - M[1, 2] * b[2])
                    + M[0, 2] * (b[1] * M[2, 1] - M[1, 1] * b[2]))
    out[1] = inv * (M[0, 0] * (b[1] * M[2, 2] - M[1, 2] * b[2]) - b[0] * (M[1, 0] * M[2, 2] - M[1, 2] * M[2, 0])
                    + M[0, 2] * (M[1, 0] * b[2] - b[1] * M[2, 0]))
    out[2] = inv * (M[0, 0] * (M[1, 1] * b[2] - b[1] * M[2, 1]) - M[0, 1] * (M[1, 0] * b[2] - b[1] * M[2, 0])
                    + b[0] * (M[1, 0] * M[2, 1] - M[1, 1] * M[2, 0]))
    return True


@nb.njit(cache=True, error_model="numpy")
def _vertex_kernel(meas, cov, zref, kinds, masses, offsets, max_iter, tol,
                   vtx, vcov, chi2o, ndofo, status, niter, p4o, cov7, dau_p4, dau_par):
    ncand = offsets.shape[0] - 1
    nin = meas.shape[0]
    # per-input weight matrices, computed once
    W = np.zeros((nin, 7, 7))
    okin = np.ones(nin, dtype=np.bool_)
    Lw = np.zeros((7, 7))
    Wk = np.zeros((7, 7))
    for i in range(nin):
        m = 5 if kinds[i] == 0 else (6 if kinds[i] == 1 else 7)
        good = True
        for a in range(m):
            if not math.isfinite(meas[i, a]):
                good = False
        if not math.isfinite(zref[i]) or not (meas[i, 4 if kinds[i] == 0 else (4 if kinds[i] == 1 else 5)] > 0.0):
            good = False
        if good and chol_decomp(cov[i], Lw, m):
            chol_inverse(Lw, W[i], Wk, m)
        else:
            okin[i] = False
    # work space (reused by every candidate)
    maxn = 0
    for c in range(ncand):
        if offsets[c + 1] - offsets[c] > maxn:
            maxn = offsets[c + 1] - offsets[c]
    q = np.zeros((maxn, 4))
    dq = np.zeros(4)
    Ginv = np.zeros((maxn, 4, 4))
    Ei = np.zeros((maxn, 3, 4))
    bq = np.zeros((maxn, 4))
    h = np.zeros(7)
    A = np.zeros((7, 3))
    B = np.zeros((7, 4))
    r = np.zeros(7)
    tmp7 = np.zeros(7)
    WA = np.zeros((7, 3))
    WB = np.zeros((7, 4))
    G = np.zeros((4, 4))
    LG = np.zeros((4, 4))
    D = np.zeros((3, 3))
    LD = np.zeros((3, 3))
    Cv = np.zeros((3, 3))
    bv = np.zeros(3)
    dv = np.zeros(3)
    v = np.zeros(3)
    w3 = np.zeros((3, 3))
    w4 = np.zeros((4, 4))
    tmp = np.zeros(4)
    Jp = np.zeros((4, 4))
    p4 = np.zeros(4)
    Mm = np.zeros((4, 3))
    F = np.zeros((4, 3))
    CP = np.zeros((4, 4))
    JG = np.zeros((4, 4))
    for c in range(ncand):
        lo, hi = offsets[c], offsets[c + 1]
        n = hi - lo
        niter[c] = 0
        st = SUCCESS
        ndof = -3
        for i in range(lo, hi):
            ndof += 2 if kinds[i] == 0 else (2 if kinds[i] == 1 else 3)
            if not okin[i]:
                st = BADINPUT
        ndofo[c] = ndof
        if n < 1 or ndof < 0:
            st = BADINPUT
        if st != SUCCESS:
            status[c] = st
            continue
        _lines_point(meas, kinds, zref, lo, hi, v)
        for j in range(n):
            i = lo + j
            off = 2 if kinds[i] != 2 else 3
            k = 3 if kinds[i] == 0 else 4
            for b in range(k):
                q[j, b] = meas[i, off + b]
        chi2_prev = 1e300
        chi2 = 0.0
        converged = False
        failed = False
        it = 0
        while it < max_iter:
            it += 1
            for a in range(3):
                bv[a] = 0.0
                for b in range(3):
                    D[a, b] = 0.0
            chi2 = 0.0
            for j in range(n):
                i = lo + j
                if kinds[i] == 0:
                    # track: sparse Jacobians A = dh/dv, B = dh/dq written out (most inputs)
                    k = 3
                    tx, ty = q[j, 0], q[j, 1]
                    dz = zref[i] - v[2]
                    r[0] = meas[i, 0] - (v[0] + dz * tx)
                    r[1] = meas[i, 1] - (v[1] + dz * ty)
                    r[2] = meas[i, 2] - tx
                    r[3] = meas[i, 3] - ty
                    r[4] = meas[i, 4] - q[j, 2]
                    for a in range(5):
                        s = 0.0
                        for b in range(5):
                            s += W[i, a, b] * r[b]
                        tmp7[a] = s
                        chi2 += r[a] * s
                        WB[a, 0] = dz * W[i, a, 0] + W[i, a, 2]
                        WB[a, 1] = dz * W[i, a, 1] + W[i, a, 3]
                        WB[a, 2] = W[i, a, 4]
                    w00, w01, w11 = W[i, 0, 0], W[i, 0, 1], W[i, 1, 1]
                    bv[0] += tmp7[0]
                    bv[1] += tmp7[1]
                    bv[2] -= tx * tmp7[0] + ty * tmp7[1]
                    d02 = -(tx * w00 + ty * w01)
                    d12 = -(tx * w01 + ty * w11)
                    D[0, 0] += w00
                    D[0, 1] += w01
                    D[1, 0] += w01
                    D[1, 1] += w11
                    D[0, 2] += d02
                    D[2, 0] += d02
                    D[1, 2] += d12
                    D[2, 1] += d12
                    D[2, 2] += tx * tx * w00 + 2.0 * tx * ty * w01 + ty * ty * w11
                    for c2 in range(3):
                        Ei[j, 0, c2] = WB[0, c2]
                        Ei[j, 1, c2] = WB[1, c2]
                        Ei[j, 2, c2] = -(tx * WB[0, c2] + ty * WB[1, c2])
                        G[0, c2] = dz * WB[0, c2] + WB[2, c2]
                        G[1, c2] = dz * WB[1, c2] + WB[3, c2]
                        G[2, c2] = WB[4, c2]
                    bq[j, 0] = dz * tmp7[0] + tmp7[2]
                    bq[j, 1] = dz * tmp7[1] + tmp7[3]
                    bq[j, 2] = tmp7[4]
                elif kinds[i] == 2:
                    # resonance composite: h = (v, q), A = (I3; 0), B = (0; I4)
                    k = 4
                    for a in range(3):
                        r[a] = meas[i, a] - v[a]
                    for a in range(4):
                        r[3 + a] = meas[i, 3 + a] - q[j, a]
                    for a in range(7):
                        s = 0.0
                        for b in range(7):
                            s += W[i, a, b] * r[b]
                        tmp7[a] = s
                        chi2 += r[a] * s
                    for a in range(3):
                        bv[a] += tmp7[a]
                        for b in range(3):
                            D[a, b] += W[i, a, b]
                        for c2 in range(4):
                            Ei[j, a, c2] = W[i, a, 3 + c2]
                    for a in range(4):
                        bq[j, a] = tmp7[3 + a]
                        for c2 in range(4):
                            G[a, c2] = W[i, 3 + a, 3 + c2]
                else:
                    m, k = _model(kinds[i], v, q[j], zref[i], h, A, B)
                    for a in range(m):
                        r[a] = meas[i, a] - h[a]
                    # WA, WB, chi2
                    for a in range(m):
                        s = 0.0
                        for b in range(m):
                            s += W[i, a, b] * r[b]
                        chi2 += r[a] * s
                        for b in range(3):
                            t = 0.0
                            for e in range(m):
                                t += W[i, a, e] * A[e, b]
                            WA[a, b] = t
                        for b in range(k):
                            t = 0.0
                            for e in range(m):
                                t += W[i, a, e] * B[e, b]
                            WB[a, b] = t
                    for a in range(3):
                        s = 0.0
                        for e in range(m):
                            s += WA[e, a] * r[e]
                        bv[a] += s
                        for b in range(3):
                            t = 0.0
                            for e in range(m):
                                t += A[e, a] * WA[e, b]
                            D[a, b] += t
                        for b in range(k):
                            t = 0.0
                            for e in range(m):
                                t += A[e, a] * WB[e, b]
                            Ei[j, a, b] = t
                    for a in range(k):
                        s = 0.0
                        for e in range(m):
                            s += WB[e, a] * r[e]
                        bq[j, a] = s
                        for b in range(k):
                            t = 0.0
                            for e in range(m):
                                t += B[e, a] * WB[e, b]
                            G[a, b] = t
                if not chol_decomp(G, LG, k):
                    failed = True
                    break
                chol_inverse(LG, Ginv[j], w4, k)
                # Schur complement: D -= E G^-1 E^T ; bv -= E G^-1 bq
                for a in range(3):
                    for b in range(k):
                        t = 0.0
                        for e in range(k):
                            t += Ei[j, a, e] * Ginv[j, e, b]
                        F[b, a] = t  # F = (E G^-1)^T = G^-1 E^T (k x 3)
                for a in range(3):
                    for b in range(3):
                        t = 0.0
                        for e in range(k):
                            t += F[e, a] * Ei[j, b, e]
                        D[a, b] -= t
                    t = 0.0
                    for e in range(k):
                        t += F[e, a] * bq[j, e]
                    bv[a] -= t
            if failed or not math.isfinite(chi2):
                failed = True
                break
            if not chol_decomp(D, LD, 3):
                failed = True
                break
            chol_inverse(LD, Cv, w3, 3)
            if abs(chi2 - chi2_prev) < tol:
                converged = True
                break
            chi2_prev = chi2
            for a in range(3):
                t = 0.0
                for b in range(3):
                    t += Cv[a, b] * bv[b]
                dv[a] = t
            for j in range(n):
                i = lo + j
                k = 3 if kinds[i] == 0 else 4
                for a in range(k):
                    t = bq[j, a]
                    for e in range(3):
                        t -= Ei[j, e, a] * dv[e]
                    tmp[a] = t
                for a in range(k):
                    t = 0.0
                    for e in range(k):
                        t += Ginv[j, a, e] * tmp[e]
                    dq[a] = t
                for a in range(k):
                    q[j, a] += dq[a]
                if not (q[j, 2] > 0.0):
                    failed = True
            for a in range(3):
                v[a] += dv[a]
            if failed:
                break
        niter[c] = it
        if failed:
            status[c] = FAILED
            continue
        # outputs: vertex, covariance, mother p4 and 7x7 covariance
        for a in range(3):
            vtx[c, a] = v[a]
            for b in range(3):
                vcov[c, a, b] = Cv[a, b]
        chi2o[c] = chi2
        for a in range(4):
            p4o[c, a] = 0.0
            for b in range(3):
                Mm[a, b] = 0.0
            for b in range(4):
                CP[a, b] = 0.0
        for j in range(n):
            i = lo + j
            k = 3 if kinds[i] == 0 else 4
            _p4_jac(kinds[i], q[j], masses[i], p4, Jp)
            for a in range(4):
                p4o[c, a] += p4[a]
                dau_p4[i, a] = p4[a]
                dau_par[i, a] = q[j, a] if a < k else p4[3]
            # F = G^-1 E^T (k x 3) again for this input
            for a in range(k):
                for b in range(3):
                    t = 0.0
                    for e in range(k):
                        t += Ginv[j, a, e] * Ei[j, b, e]
                    F[a, b] = t
            for a in range(4):
                for b in range(3):
                    t = 0.0
                    for e in range(k):
                        t += Jp[a, e] * F[e, b]
                    Mm[a, b] += t
                for b in range(k):
                    t = 0.0
                    for e in range(k):
                        t += Jp[a, e] * Ginv[j, e, b]
                    JG[a, b] = t
            for a in range(4):
                for b in range(4):
                    t = 0.0
                    for e in range(k):
                        t += JG[a, e] * Jp[b, e]
                    CP[a, b] += t
        # cov(P) += M Cv M^T ; cov(v, P) = -Cv M^T
        for a in range(3):
            for b in range(3):
                cov7[c, a, b] = Cv[a, b]
        for a in range(4):
            for b in range(3):
                t = 0.0
                for e in range(3):
                    t += Mm[a, e] * Cv[e, b]
                F[a, b] = t  # M Cv
            for b in range(3):
                cov7[c, 3 + a, b] = -F[a, b]
                cov7[c, b, 3 + a] = -F[a, b]
        for a in range(4):
            for b in range(4):
                t = 0.0
                for e in range(3):
                    t += F[a, e] * Mm[b, e]
                cov7[c, 3 + a, 3 + b] = CP[a, b] + t
        ok = math.isfinite(chi2) and chi2 >= 0.0
        for a in range(7):
            if not (cov7[c, a, a] > 0.0) or not math.isfinite(cov7[c, a, a]):
                ok = False
        if not ok:
            status[c] = FAILED
        else:
            status[c] = SUCCESS if converged else NONCONVERGED


def track_inputs(states, covs, charges=1.0):
    """Convert track states (x, y, tx, ty, q/p) (..., 5) and covariances (..., 5, 5) into the
    internal (x, y, tx, ty, kappa=1/p) measurement with kind 0, padded to 7 components."""
    s = np.asarray(states, dtype=np.float64)
    C = np.asarray(covs, dtype=np.float64)
    q = np.abs(np.broadcast_to(np.asarray(charges, dtype=np.float64), s.shape[:-1]))
    sgn = np.sign(s[..., 4])
    scale = np.ones(s.shape)
    scale[..., 4] = sgn / q  # d kappa / d(q/p)
    meas = np.zeros(s.shape[:-1] + (7,))
    meas[..., :5] = s * scale
    cov = np.zeros(s.shape[:-1] + (7, 7))
    cov[..., :5, :5] = C * scale[..., :, None] * scale[..., None, :]
    return meas, cov


def fit_vertex_general(meas, covs, z, kinds, masses, offsets, max_iter: int = 10, tol: float = 1e-6):
    """Ragged vertex fit of mixed inputs (kinds 0 track, 1 flying composite, 2 resonance composite).

    ``meas`` (M,7) internal measurements (see :func:`track_inputs` and
    :func:`~algorithms.analysis.kinematics.composite_measurement`), ``covs`` (M,7,7), ``z`` (M,)
    reference z of each measurement (ignored for kind 2), ``kinds`` (M,), ``masses`` (M,) mass
    hypotheses of tracks [MeV] (ignored for composites), ``offsets`` (N+1,) candidate boundaries.
    Returns a dict of arrays (see module docstring); ``daughter_par`` (M,4) holds the fitted
    (tx, ty, kappa, E) of tracks and (tx, ty, kappa, m) of composites."""
    meas = np.ascontiguousarray(meas, dtype=np.float64)
    covs = np.ascontiguousarray(covs, dtype=np.float64)
    z = np.ascontiguousarray(z, dtype=np.float64)
    kinds = np.ascontiguousarray(kinds, dtype=np.int8)
    masses = np.ascontiguousarray(np.broadcast_to(np.asarray(masses, dtype=np.float64), z.shape))
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    M = meas.shape[0]
    if meas.shape != (M, 7) or covs.shape != (M, 7, 7) or z.shape != (M,) or kinds.shape != (M,):
        raise ConfigurationError("fit_vertex_general: expected meas (M,7), covs (M,7,7), z (M,), kinds (M,), "
                                 f"got {meas.shape}, {covs.shape}, {z.shape}, {kinds.shape}")
    if offsets.ndim != 1 or offsets[0] != 0 or offsets[-1] != M or np.any(np.diff(offsets) < 0):
        raise ConfigurationError("fit_vertex_general: offsets must start at 0, be non-decreasing and end at len(meas)")
    if np.any((kinds < 0) | (kinds > 2)):
        raise ConfigurationError("fit_vertex_general: kinds must be 0 (track), 1 (flying) or 2 (resonance)")
    N = offsets.shape[0] - 1
    nan = np.nan
    out = dict(
        vertex=np.full((N, 3), nan), vertex_cov=np.full((N, 3, 3), nan), chi2=np.full(N, nan),
        ndof=np.zeros(N, np.int32), status=np.zeros(N, np.int8), niter=np.zeros(N, np.int32),
        p4=np.full((N, 4), nan), cov7=np.full((N, 7, 7), nan), daughter_p4=np.full((M, 4), nan),
        daughter_par=np.full((M, 4), nan),
    )
    _vertex_kernel(meas, covs, z, kinds, masses, offsets, int(max_iter), float(tol), out["vertex"],
                   out["vertex_cov"], out["chi2"], out["ndof"], out["status"], out["niter"], out["p4"],
                   out["cov7"], out["daughter_p4"], out["daughter_par"])
    bad = out["status"] >= FAILED
    for key in ("vertex", "vertex_cov", "chi2", "p4", "cov7"):
        out[key][bad] = nan
    if M:
        out["daughter_p4"][np.repeat(bad, np.diff(offsets))] = nan
    out["mass"] = p4_mass(out["p4"])
    out["mass_err"] = p4_mass_err(out["p4"], out["cov7"][:, 3:, 3:])
    out["n_failed"] = int(np.count_nonzero(out["status"] != SUCCESS))
    return out


def fit_vertex_ragged(states, covs, z, masses, offsets, charges=1.0, max_iter: int = 10, tol: float = 1e-6):
    """Vertex fit of tracks only, ragged: ``states`` (M,5), ``covs`` (M,5,5), ``z`` (M,),
    ``masses`` (M,) or scalar, ``offsets`` (N+1,)."""
    meas, cov = track_inputs(states, covs, charges)
    z = np.asarray(z, dtype=np.float64)
    return fit_vertex_general(meas, cov, z, np.zeros(z.shape[0], np.int8), masses, offsets, max_iter, tol)


def fit_vertex(states, covs, z, masses, charges=1.0, max_iter: int = 10, tol: float = 1e-6):
    """Vertex fit of N candidates with n tracks each: ``states`` (N,n,5) = (x, y, tx, ty, q/p) at
    ``z`` (N,n) with ``covs`` (N,n,5,5); ``masses`` (N,n) or (n,) mass hypotheses [MeV]; ``charges``
    |q| (default 1).  Returns a dict: ``vertex`` (N,3), ``vertex_cov`` (N,3,3), ``chi2``, ``ndof``
    (2n-3), ``status``, ``niter``, ``p4`` (N,4), ``cov7`` (N,7,7) of (x,y,z,px,py,pz,E),
    ``mass``, ``mass_err``, ``daughter_p4`` (N,n,4) refitted, ``n_failed``."""
    states = np.asarray(states, dtype=np.float64)
    N, n = states.shape[:2]
    masses = np.broadcast_to(np.asarray(masses, dtype=np.float64), (N, n))
    charges = np.broadcast_to(np.asarray(charges, dtype=np.float64), (N, n))
    offsets = np.arange(N + 1, dtype=np.int64) * n
    out = fit_vertex_ragged(states.reshape(N * n, 5), np.asarray(covs).reshape(N * n, 5, 5),
                            np.asarray(z, dtype=np.float64).reshape(N * n), masses.reshape(-1), offsets,
                            charges.reshape(-1), max_iter, tol)
    out["daughter_p4"] = out["daughter_p4"].reshape(N, n, 4)
    out["daughter_par"] = out["daughter_par"].reshape(N, n, 4)
    return out


# ----------------------------------------------------------------------------------------------
# DOCA
# ----------------------------------------------------------------------------------------------
@nb.njit(cache=True, error_model="numpy")
def _doca_kernel(s1, z1, s2, z2, c1, c2, with_cov, d_out, chi2_out):
    n = s1.shape[0]
    g = np.zeros(8)
    for i in range(n):
        d1 = (s1[i, 2], s1[i, 3], 1.0)
        d2 = (s2[i, 2], s2[i, 3], 1.0)
        dl = (s2[i, 0] - s1[i, 0], s2[i, 1] - s1[i, 1], z2[i] - z1[i])
        nx = d1[1] * d2[2] - d1[2] * d2[1]
        ny = d1[2] * d2[0] - d1[0] * d2[2]
        nz = d1[0] * d2[1] - d1[1] * d2[0]
        nn = math.sqrt(nx * nx + ny * ny + nz * nz)
        if not (nn > 1e-12):  # parallel lines: distance of line 2's point to line 1
            t = (dl[0] * d1[0] + dl[1] * d1[1] + dl[2] * d1[2]) / (d1[0] ** 2 + d1[1] ** 2 + 1.0)
            e0, e1, e2 = dl[0] - t * d1[0], dl[1] - t * d1[1], dl[2] - t
            d_out[i] = math.sqrt(e0 * e0 + e1 * e1 + e2 * e2)
            chi2_out[i] = np.nan
            continue
        u = (nx / nn, ny / nn, nz / nn)
        s = dl[0] * u[0] + dl[1] * u[1] + dl[2] * u[2]
        d_out[i] = abs(s)
        if not with_cov:
            continue
        # ds/d(x1,y1) = -u_xy ; ds/d(x2,y2) = +u_xy
        # ds/dd1 = [(d2 x dl) - s (d2 x u)] / |n| ; ds/dd2 = [(dl x d1) - s (u x d1)] / |n|
        a0 = d2[1] * dl[2] - d2[2] * dl[1] - s * (d2[1] * u[2] - d2[2] * u[1])
        a1 = d2[2] * dl[0] - d2[0] * dl[2] - s * (d2[2] * u[0] - d2[0] * u[2])
        b0 = dl[1] * d1[2] - dl[2] * d1[1] - s * (u[1] * d1[2] - u[2] * d1[1])
        b1 = dl[2] * d1[0] - dl[0] * d1[2] - s * (u[2] * d1[0] - u[0] * d1[2])
        g[0], g[1], g[2], g[3] = -u[0], -u[1], a0 / nn, a1 / nn
        g[4], g[5], g[6], g[7] = u[0], u[1], b0 / nn, b1 / nn
        var = 0.0
        for a in range(4):
            for b in range(4):
                var += g[a] * c1[i, a, b] * g[b] + g[4 + a] * c2[i, a, b] * g[4 + b]
        chi2_out[i] = s * s / var if var > 0.0 else np.nan


def doca(states1, z1, states2, z2, covs1=None, covs2=None):
    """Distance of closest approach [mm] between straight-line tracks (N,5) at z1/z2 (N,);
    with covariances also ``doca_chi2 = doca^2 / sigma^2`` (linear propagation of the (x, y, tx, ty)
    covariances).  Returns ``doca`` or ``(doca, doca_chi2)``."""
    s1 = np.ascontiguousarray(np.atleast_2d(states1), dtype=np.float64)
    s2 = np.ascontiguousarray(np.atleast_2d(states2), dtype=np.float64)
    z1 = np.ascontiguousarray(np.broadcast_to(np.asarray(z1, dtype=np.float64), s1.shape[:1]))
    z2 = np.ascontiguousarray(np.broadcast_to(np.asarray(z2, dtype=np.float64), s2.shape[:1]))
    n = s1.shape[0]
    d = np.empty(n)
    chi2 = np.full(n, np.nan)
    with_cov = covs1 is not None and covs2 is not None
    c1 = np.ascontiguousarray(covs1, dtype=np.float64) if with_cov else np.zeros((n, 5, 5))
    c2 = np.ascontiguousarray(covs2, dtype=np.float64) if with_cov else np.zeros((n, 5, 5))
    _doca_kernel(s1, z1, s2, z2, c1, c2, with_cov, d, chi2)
    return (d, chi2) if with_cov else d
