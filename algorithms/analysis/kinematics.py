"""Kinematics helpers shared by the vertex fit and DecayTreeFitter.

Track-state convention (everywhere in flashsim): ``(x, y, tx, ty, q/p)`` at a reference ``z``
[mm, 1/MeV, physical charge], straight-line extrapolation (no magnetic field):
``p = |q| / |q/p|``, direction ``(tx, ty, 1) / sqrt(1 + tx^2 + ty^2)``.

Inside the fits the momentum of a track is parametrised by ``(tx, ty, kappa)`` with
``kappa = 1/p > 0`` (``kappa = |q/p| / |q|``), so that the charge sign and magnitude drop out of
the kernels; composites (fitted mothers used as inputs) carry ``(tx, ty, kappa, m)``.

Particle data (masses, charges, lifetimes) come from the ``particle`` package only; lookups are
cached per PDG id.  The small dense linear algebra (Cholesky, solves, inverses) used by the
numba kernels lives here too: ``np.linalg`` inside numba calls LAPACK with a per-call overhead
that dominates for 3x3 .. 20x20 matrices.
"""
from __future__ import annotations

import functools
import math

import numba as nb
import numpy as np

__all__ = [
    "resolve_pid",
    "pdg_mass",
    "pdg_charge",
    "pdg_ctau",
    "pdg_name",
    "masses_for",
    "charges_for",
    "state_kappa",
    "track_p4",
    "track_p4_cov",
    "p4_mass",
    "p4_mass_err",
    "composite_measurement",
    "txtykappa_p4",
    "chol_decomp",
    "chol_solve",
    "chol_inverse",
]

try:  # the error type of the framework when present; ValueError otherwise
    from framework import ConfigurationError  # type: ignore
except Exception:  # pragma: no cover - framework not there yet
    class ConfigurationError(ValueError):
        pass


# ----------------------------------------------------------------------------------------------
# particle data
# ----------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _particle(pid: int):
    from particle import Particle

    return Particle.from_pdgid(int(pid))


@functools.lru_cache(maxsize=None)
def resolve_pid(name_or_pid) -> int:
    """PDG id of a particle given as an int, a PDG name (``"K+"``, ``"J/psi(1S)"``) or an EvtGen
    name (``"J/psi"``, ``"anti-nu_mu"``).  Raises ConfigurationError with did-you-mean."""
    if isinstance(name_or_pid, (int, np.integer)):
        return int(name_or_pid)
    name = str(name_or_pid).strip()
    try:  # the generators' table knows LHCb/EvtGen aliases
        from algorithms.common.particle_table import default_table  # type: ignore

        tab = default_table()
        for meth in ("pid", "pdgid", "lookup", "from_name"):
            f = getattr(tab, meth, None)
            if f is not None:
                try:
                    return int(f(name))
                except Exception:
                    pass
    except Exception:
        pass
    from particle import Particle
    from particle.particle import ParticleNotFound

    for getter in (Particle.from_name, Particle.from_evtgen_name):
        try:
            return int(getter(name).pdgid)
        except (ParticleNotFound, Exception):
            pass
    import difflib

    names = [p.name for p in Particle.all()]
    close = difflib.get_close_matches(name, names, n=3)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigurationError(f"unknown particle name {name!r}{hint}")


def pdg_mass(pid) -> float:
    """PDG mass [MeV] (0 for massless particles)."""
    m = _particle(resolve_pid(pid)).mass
    return float(m) if m is not None else 0.0


def pdg_charge(pid) -> float:
    """Electric charge in units of e."""
    return float(_particle(resolve_pid(pid)).charge)


def pdg_ctau(pid) -> float:
    """c*tau [mm]; inf for stable particles, 0 if unknown."""
    p = _particle(resolve_pid(pid))
    ct = p.ctau
    if ct is None:
        if p.width is not None and p.width > 0:
            return 197.3269804e-12 / p.width  # hbar c [MeV mm] / Gamma [MeV]
        return 0.0
    return float(ct)


def pdg_name(pid) -> str:
    return str(_particle(resolve_pid(pid)).name)


def _lookup(pids, fn) -> np.ndarray:
    pids = np.asarray(pids, dtype=np.int64)
    uniq, inv = np.unique(pids, return_inverse=True)
    vals = np.array([fn(int(p)) for p in uniq], dtype=np.float64)
    return vals[inv].reshape(pids.shape)


def masses_for(pids) -> np.ndarray:
    """PDG masses [MeV] for an array of PDG ids (one `particle` lookup per distinct id)."""
    return _lookup(pids, pdg_mass)


def charges_for(pids) -> np.ndarray:
    return _lookup(pids, pdg_charge)


# ----------------------------------------------------------------------------------------------
# track states -> four-momenta
# ----------------------------------------------------------------------------------------------
def state_kappa(qop, charge=1.0):
    """kappa = 1/p [1/MeV] from q/p and the physical charge (sign ignored)."""
    return np.abs(np.asarray(qop, dtype=np.float64)) / np.abs(np.asarray(charge, dtype=np.float64))


def track_p4(states, masses, charges=1.0) -> np.ndarray:
    """Four-momenta ``(px, py, pz, E)`` [MeV] of track states ``(..., 5)`` with mass hypotheses."""
    s = np.asarray(states, dtype=np.float64)
    tx, ty = s[..., 2], s[..., 3]
    p = np.abs(np.asarray(charges, dtype=np.float64)) / np.abs(s[..., 4])
    pz = p / np.sqrt(1.0 + tx * tx + ty * ty)
    m = np.asarray(masses, dtype=np.float64)
    return np.stack([tx * pz, ty * pz, pz, np.sqrt(p * p + m * m)], axis=-1)


def track_p4_cov(states, covs, masses, charges=1.0) -> np.ndarray:
    """4x4 covariance of ``(px, py, pz, E)`` from the 5x5 state covariance (linear propagation)."""
    s = np.asarray(states, dtype=np.float64)
    tx, ty, qop = s[..., 2], s[..., 3], s[..., 4]
    q = np.abs(np.asarray(charges, dtype=np.float64)) * np.ones_like(qop)
    m = np.asarray(masses, dtype=np.float64) * np.ones_like(qop)
    p = q / np.abs(qop)
    n2 = 1.0 + tx * tx + ty * ty
    pz = p / np.sqrt(n2)
    E = np.sqrt(p * p + m * m)
    J = np.zeros(s.shape[:-1] + (4, 5))
    dp_dqop = -p / qop  # p = q/|qop| -> dp/dqop = -p/qop
    dpz_dtx, dpz_dty = -pz * tx / n2, -pz * ty / n2
    J[..., 0, 2] = pz + tx * dpz_dtx
    J[..., 0, 3] = tx * dpz_dty
    J[..., 0, 4] = tx * pz / p * dp_dqop
    J[..., 1, 2] = ty * dpz_dtx
    J[..., 1, 3] = pz + ty * dpz_dty
    J[..., 1, 4] = ty * pz / p * dp_dqop
    J[..., 2, 2] = dpz_dtx
    J[..., 2, 3] = dpz_dty
    J[..., 2, 4] = pz / p * dp_dqop
    J[..., 3, 4] = p / E * dp_dqop
    C = np.asarray(covs, dtype=np.float64)
    return J @ C @ np.swapaxes(J, -1, -2)


def p4_mass(p4) -> np.ndarray:
    p4 = np.asarray(p4, dtype=np.float64)
    m2 = p4[..., 3] ** 2 - p4[..., 0] ** 2 - p4[..., 1] ** 2 - p4[..., 2] ** 2
    return np.sign(m2) * np.sqrt(np.abs(m2))


def p4_mass_err(p4, cov4) -> np.ndarray:
    """Uncertainty of the invariant mass from the 4x4 covariance of ``(px, py, pz, E)``."""
    p4 = np.asarray(p4, dtype=np.float64)
    m = p4_mass(p4)
    J = np.stack([-p4[..., 0], -p4[..., 1], -p4[..., 2], p4[..., 3]], axis=-1) / np.where(m != 0, m, np.inf)[..., None]
    var = np.einsum("...i,...ij,...j->...", J, np.asarray(cov4, dtype=np.float64), J)
    return np.sqrt(np.maximum(var, 0.0))


def composite_measurement(vertex, p4, cov7, kind: str = "resonance"):
    """Turn fitted composites into inputs of a higher-level vertex fit.

    ``vertex`` (N,3), ``p4`` (N,4) and ``cov7`` (N,7,7) in the order (x, y, z, px, py, pz, E).
    ``kind="resonance"``: the composite decays at the mother's vertex (J/psi in B+ -> J/psi K+);
    measurement ``(x, y, z, tx, ty, kappa, m)`` (7 components, vertex-fit kind 2).
    ``kind="flying"``: a long-lived composite (D0, K0S, Lambda) enters like a track, a straight line
    from its decay vertex along its momentum: ``(x, y, tx, ty, kappa, m)`` at ``z`` = its vertex z
    (6 components, kind 1).  Returns ``meas (N,7), cov (N,7,7), z (N,), kind (N,) int8`` (padded).
    """
    if kind not in ("resonance", "flying"):
        raise ConfigurationError(f"composite kind must be 'resonance' or 'flying', got {kind!r}")
    v = np.ascontiguousarray(vertex, dtype=np.float64)
    n = v.shape[0]
    meas = np.zeros((n, 7))
    cov = np.zeros((n, 7, 7))
    _composite_measurement_kernel(v, np.ascontiguousarray(p4, dtype=np.float64),
                                  np.ascontiguousarray(cov7, dtype=np.float64), kind == "resonance", meas, cov)
    kinds = np.full(n, 2 if kind == "resonance" else 1, np.int8)
    return meas, cov, v[:, 2].copy(), kinds


@nb.njit(cache=True, error_model="numpy")
def _composite_measurement_kernel(v, P, C7, resonance, meas, cov):
    """One pass of :func:`composite_measurement`: Jacobian J of the measurement w.r.t.
    (x, y, z, px, py, pz, E), ``cov = J C7 J^T`` symmetrised."""
    nr = 7 if resonance else 6
    J = np.zeros((7, 7))
    T = np.empty((7, 7))
    for k in range(v.shape[0]):
        px, py, pz, E = P[k, 0], P[k, 1], P[k, 2], P[k, 3]
        p = math.sqrt(px * px + py * py + pz * pz)
        tx, ty, kap = px / pz, py / pz, 1.0 / p
        for a in range(7):
            for b in range(7):
                J[a, b] = 0.0
        o = 3 if resonance else 2  # first row of the (tx, ty, kappa, m) block
        if resonance:
            J[0, 0] = J[1, 1] = J[2, 2] = 1.0
            meas[k, 0], meas[k, 1], meas[k, 2] = v[k, 0], v[k, 1], v[k, 2]
            meas[k, 3], meas[k, 4], meas[k, 5] = tx, ty, kap
        else:
            J[0, 0] = 1.0
            J[0, 2] = -tx  # x at fixed z0 = z_vertex: moving the vertex along z shifts x by -tx dz
            J[1, 1] = 1.0
            J[1, 2] = -ty
            meas[k, 0], meas[k, 1] = v[k, 0], v[k, 1]
            meas[k, 2], meas[k, 3], meas[k, 4] = tx, ty, kap
        J[o, 3] = 1.0 / pz
        J[o, 5] = -px / pz**2
        J[o + 1, 4] = 1.0 / pz
        J[o + 1, 5] = -py / pz**2
        p3 = p**3
        J[o + 2, 3] = -px / p3
        J[o + 2, 4] = -py / p3
        J[o + 2, 5] = -pz / p3
        # invariant mass instead of the energy: E and |p| of a boosted composite are almost fully
        # correlated, (kappa, E) gives a near-singular covariance and a fitted mass from the tiny
        # difference E^2 - p^2; (kappa, m) is well conditioned at any momentum
        m2 = E * E - p * p
        mm = math.sqrt(m2) if m2 > 1e-6 else 1e-3
        J[o + 3, 3] = -px / mm
        J[o + 3, 4] = -py / mm
        J[o + 3, 5] = -pz / mm
        J[o + 3, 6] = E / mm
        meas[k, o + 3] = mm
        for a in range(nr):
            for c in range(7):
                t = 0.0
                for b in range(7):
                    t += J[a, b] * C7[k, b, c]
                T[a, c] = t
        for a in range(nr):
            for c in range(a, nr):
                s1 = 0.0
                s2 = 0.0
                for b in range(7):
                    s1 += T[a, b] * J[c, b]
                    s2 += T[c, b] * J[a, b]
                x = 0.5 * (s1 + s2)
                cov[k, a, c] = x
                cov[k, c, a] = x


# ----------------------------------------------------------------------------------------------
# numba helpers
# ----------------------------------------------------------------------------------------------
@nb.njit(cache=True, inline="always", error_model="numpy")
def txtykappa_p4(tx, ty, kap, m, p4, J, free_E):
    """p4 = (px, py, pz, E) from (tx, ty, kappa[, E]) and its Jacobian J (4 x 4 used, last column
    only if ``free_E``).  With ``free_E`` the energy is ``p4[3]`` on input (a parameter)."""
    p = 1.0 / kap
    n2 = 1.0 + tx * tx + ty * ty
    pz = p / math.sqrt(n2)
    px = tx * pz
    py = ty * pz
    dpz_tx = -pz * tx / n2
    dpz_ty = -pz * ty / n2
    dpz_k = -pz * p  # d(pz)/d(kappa) = -pz/kappa
    p4[0] = px
    p4[1] = py
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
    if free_E:
        J[3, 0] = 0.0
        J[3, 1] = 0.0
        J[3, 2] = 0.0
        J[0, 3] = 0.0
        J[1, 3] = 0.0
        J[2, 3] = 0.0
        J[3, 3] = 1.0
    else:
        E = math.sqrt(p * p + m * m)
        p4[3] = E
        J[3, 0] = 0.0
        J[3, 1] = 0.0
        J[3, 2] = -p * p * p / E  # dE/dkappa = (p/E) dp/dkappa = -(p/E) p^2


@nb.njit(cache=True, error_model="numpy")
def chol_decomp(A, L, n):
    """Cholesky A = L L^T of the leading n x n block (lower triangle of L written).  Returns
    False if A is not (numerically) positive definite or not finite."""
    for j in range(n):
        s = A[j, j]
        for k in range(j):
            s -= L[j, k] * L[j, k]
        if not (s > 0.0) or not math.isfinite(s):
            return False
        d = math.sqrt(s)
        L[j, j] = d
        inv = 1.0 / d
        for i in range(j + 1, n):
            t = A[i, j]
            for k in range(j):
                t -= L[i, k] * L[j, k]
            L[i, j] = t * inv
    return True


@nb.njit(cache=True, error_model="numpy")
def chol_solve(L, b, x, n):
    """Solve (L L^T) x = b (x may alias b)."""
    for i in range(n):
        s = b[i]
        for k in range(i):
            s -= L[i, k] * x[k]
        x[i] = s / L[i, i]
    for i in range(n - 1, -1, -1):
        s = x[i]
        for k in range(i + 1, n):
            s -= L[k, i] * x[k]
        x[i] = s / L[i, i]


@nb.njit(cache=True, error_model="numpy")
def chol_inverse(L, out, work, n):
    """out = (L L^T)^-1 from the Cholesky factor; ``work`` is an n x n scratch array holding
    L^-1 on return."""
    # Linv (lower triangular)
    for j in range(n):
        work[j, j] = 1.0 / L[j, j]
        for i in range(j + 1, n):
            s = 0.0
            for k in range(j, i):
                s -= L[i, k] * work[k, j]
            work[i, j] = s / L[i, i]
        for i in range(j):
            work[i, j] = 0.0
    # out = Linv^T Linv
    for i in range(n):
        for j in range(i + 1):
            s = 0.0
            for k in range(i, n):
                s += work[k, i] * work[k, j]
            out[i, j] = s
            out[j, i] = s
