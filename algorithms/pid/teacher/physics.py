"""Closed-form physics of the reference detector (teacher) — not LHCb data.

Plain numpy functions (vectorised, also used by the tests) for the Cherenkov relations, the
penetration of muons through the absorbers and the multiple-scattering spread at the muon stations,
and the geometry of the straight-line-plus-kick track model.
"""
from __future__ import annotations

import math

import numpy as np

from . import constants as C

__all__ = [
    "species_index",
    "refractive_index",
    "cherenkov_threshold",
    "cherenkov_angle",
    "max_cherenkov_angle",
    "expected_photons",
    "highland_theta0",
    "muon_ms_sigma",
    "muon_reach_probability",
    "extrapolate",
    "decay_probability",
]


def species_index(pid) -> np.ndarray:
    """Dense hypothesis index 0..4 (e, mu, pi, K, p) of PDG ids; anything else -> -1."""
    a = np.abs(np.asarray(pid, dtype=np.int64))
    out = np.full(a.shape, -1, dtype=np.int64)
    for i, code in enumerate(C.HYPO_PDG):
        out[a == code] = i
    return out


def refractive_index(radiator: int) -> float:
    """n of radiator 0 (C4F10, RICH1) or 1 (CF4, RICH2)."""
    return 1.0 + float(C.RICH_N_MINUS_1[radiator])


def cherenkov_threshold(mass, radiator: int):
    """Threshold momentum p = m / sqrt(n^2 - 1) [MeV] (beta = 1/n)."""
    n = refractive_index(radiator)
    return np.asarray(mass, dtype=np.float64) / math.sqrt(n * n - 1.0)


def cherenkov_angle(p, mass, radiator: int):
    """Cherenkov angle cos(theta) = 1/(n beta) [rad]; NaN below threshold (no light)."""
    p = np.asarray(p, dtype=np.float64)
    mass = np.asarray(mass, dtype=np.float64)
    n = refractive_index(radiator)
    cos_t = np.sqrt(1.0 + (mass / p) ** 2) / n   # 1/(n beta)
    with np.errstate(invalid="ignore"):
        return np.where(cos_t < 1.0, np.arccos(np.minimum(cos_t, 1.0)), np.nan)


def max_cherenkov_angle(radiator: int) -> float:
    """Saturated angle arccos(1/n) (beta -> 1)."""
    return math.acos(1.0 / refractive_index(radiator))


def expected_photons(p, mass, radiator: int, path_factor=1.0):
    """Mean detected photo-electrons: N_sat * path_factor * sin^2(theta) / sin^2(theta_max); 0 below threshold."""
    th = cherenkov_angle(p, mass, radiator)
    s2max = math.sin(max_cherenkov_angle(radiator)) ** 2
    out = C.RICH_NPE_SAT[radiator] * np.asarray(path_factor) * np.sin(th) ** 2 / s2max
    return np.where(np.isnan(th), 0.0, out)


def highland_theta0(p, x_over_x0):
    """Projected multiple-scattering angle (Highland, beta = 1, unit charge) [rad], p in MeV."""
    x = np.asarray(x_over_x0, dtype=np.float64)
    return 13.6 / np.asarray(p, dtype=np.float64) * np.sqrt(x) * (1.0 + 0.038 * np.log(x))


def _momentum_at_absorbers(p):
    """Mean muon momentum in the middle of each absorber (MeV), clamped at 300 MeV."""
    loss = np.diff(np.concatenate([[0.0], C.MUON_P_REACH]))  # loss in each absorber
    before = np.concatenate([[0.0], np.cumsum(loss)[:-1]])
    pk = np.asarray(p, dtype=np.float64)[..., None] - before - 0.5 * loss
    return np.maximum(pk, 300.0)


def muon_ms_sigma(p, station: int):
    """Expected multiple-scattering spread (mm, per projection) of a muon at station M2..M5 (0..3)."""
    z_s = C.Z_MUON[station]
    pk = _momentum_at_absorbers(p)
    var = np.zeros(np.shape(p))
    for k in range(len(C.ABSORBER_Z)):
        if C.ABSORBER_Z[k] < z_s:
            var = var + (highland_theta0(pk[..., k], C.ABSORBER_X0[k]) * (z_s - C.ABSORBER_Z[k])) ** 2
    return np.sqrt(var)


def muon_reach_probability(p, station: int):
    """Probability that a muon of momentum p [MeV] reaches station M2..M5 (0..3) (range straggling)."""
    from scipy.special import ndtr

    p = np.asarray(p, dtype=np.float64)
    return ndtr((p / C.MUON_P_REACH[station] - 1.0) / C.MUON_RANGE_STRAGGLING)


def extrapolate(x, y, z, tx, ty, qop, z_target):
    """Straight line from the closest-to-beam state, with a single p_T kick at the magnet centre.

    Before Z_MAGNET_KICK the line is straight (no fringe field); at the kick plane tx changes by
    charge * PT_KICK / p (sign convention: positive charges to +x; the acceptances used here are
    symmetric in x, so the polarity does not matter).  Returns (x, y, tx_after) at z_target.
    """
    x = np.asarray(x, dtype=np.float64)
    dz_pre = np.minimum(z_target, C.Z_MAGNET_KICK) - z
    xk = x + tx * dz_pre
    yk = y + ty * (z_target - z)
    if z_target <= C.Z_MAGNET_KICK:
        return xk, yk, np.asarray(tx, dtype=np.float64)
    tx2 = tx + C.PT_KICK * qop
    return xk + tx2 * (z_target - C.Z_MAGNET_KICK), yk, tx2


def decay_probability(p, mass, ctau, flight_z, slope_norm=1.0):
    """P(decay before travelling flight_z along z) = 1 - exp(-L / (beta gamma c tau)), L = flight_z * slope_norm."""
    bg = np.asarray(p, dtype=np.float64) / mass
    return -np.expm1(-np.asarray(flight_z) * slope_norm / (bg * ctau))
