"""Momentum spectra of particle-gun parents, as numba functions on counter-based randoms.

Modes (``SPECTRA`` maps the option string to the code used in kernels):

* ``FlatP``   : |p| uniform in [p_min, p_max], pseudorapidity eta uniform in [eta_min, eta_max],
  phi uniform in [0, 2 pi).
* ``FlatPt``  : pT uniform in [pt_min, pt_max], eta uniform, phi uniform.
* ``BHadron`` : a parametrised b-hadron production spectrum for pp collisions at LHC energies,

      d2N / (dpT dy)  proportional to  pT / (1 + (pT/p0)^2)^n  *  exp(-y^2 / (2 sigma_y^2)),

  restricted to pT in [pt_min, pt_max] and eta in [eta_min, eta_max].  The pT factor is the
  power-law form commonly used to describe heavy-flavour pT spectra (e.g. in CDF and ALICE
  fits of J/psi spectra); with the defaults p0 = 6.5 GeV and n = 3 it peaks at
  p0/sqrt(2n-1) ~ 2.9 GeV, has <pT> ~ 5.1 GeV and a pT^-5 tail, roughly the shape of FONLL
  b-hadron predictions at 13 TeV (Cacciari, Greco, Nason, JHEP 05 (1998) 007; FONLL web
  interface).  The rapidity factor is a broad Gaussian (sigma_y = 3 by default).  **The
  parameters were chosen by hand to resemble FONLL-like shapes; they are not a fit to FONLL
  tables nor to LHCb data** - replace them (properties) or reweight for precision studies.
  Sampling: pT by inverse CDF (analytic), eta uniform, then accept-reject with the weight
  beta * exp(-y^2/(2 sigma_y^2)) <= 1, where beta = dy/deta at fixed pT converts d/dy into
  d/deta.

``params`` is a float64 array ``[a_min, a_max, eta_min, eta_max, p0, n, sigma_y, A, B]`` where
(a_min, a_max) is the p range (FlatP) or the pT range (FlatPt, BHadron), in MeV, and A, B are
precomputed bounds of the BHadron inverse CDF (use :func:`spectrum_params`).
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np

from framework.random import counter_uniform

__all__ = [
    "SPECTRA",
    "FLAT_P",
    "FLAT_PT",
    "BHADRON",
    "sample_momentum",
    "spectrum_params",
    "bhadron_pt_cdf",
    "bhadron_pt_pdf",
]

FLAT_P, FLAT_PT, BHADRON = 0, 1, 2
SPECTRA = {"FlatP": FLAT_P, "FlatPt": FLAT_PT, "BHadron": BHADRON}
_TWO_PI = 2.0 * math.pi


def spectrum_params(mode: int, momentum_range, eta_range, p0=6500.0, n=3.0, sigma_y=3.0) -> np.ndarray:
    """Pack spectrum parameters (validated) into the float64 array the kernels take."""
    a_min, a_max = (float(x) for x in momentum_range)
    e_min, e_max = (float(x) for x in eta_range)
    if not (0 <= a_min < a_max and np.isfinite(a_max)):
        raise ValueError(f"momentum range must satisfy 0 <= min < max < inf, got {momentum_range}")
    if not e_min < e_max:
        raise ValueError(f"eta range must satisfy min < max, got {eta_range}")
    if mode == FLAT_P and a_min <= 0:
        raise ValueError("FlatP needs p_min > 0")
    if mode == BHADRON and not (p0 > 0 and n > 1 and sigma_y > 0):
        raise ValueError(f"BHadron spectrum needs p0 > 0, n > 1, sigma_y > 0; got {p0}, {n}, {sigma_y}")
    # precomputed bounds of the BHadron pT inverse CDF
    ea = (1.0 + (a_min / p0) ** 2) ** (1.0 - n) if mode == BHADRON else 0.0
    eb = (1.0 + (a_max / p0) ** 2) ** (1.0 - n) if mode == BHADRON else 0.0
    return np.array([a_min, a_max, e_min, e_max, float(p0), float(n), float(sigma_y), ea, eb])


@nb.njit(cache=True)
def _bhadron_pt(u, p0, n, a, b):
    # inverse CDF of pT/(1+(pT/p0)^2)^n between the precomputed (1+(pT/p0)^2)^(1-n) bounds a, b
    s = a + u * (b - a)
    return p0 * math.sqrt(max(s ** (1.0 / (1.0 - n)) - 1.0, 0.0))


@nb.njit(cache=True)
def sample_momentum(mode, params, mass, key, event, index, draw):
    """Draw (px, py, pz) for a particle of ``mass`` from spectrum ``mode``.

    Uses counter randoms (key, event, index, draw, draw+1, ...); returns
    (px, py, pz, next_draw).
    """
    a_min = params[0]
    a_max = params[1]
    e_min = params[2]
    e_max = params[3]
    while True:
        u1 = counter_uniform(key, event, index, draw)
        u2 = counter_uniform(key, event, index, draw + 1)
        u3 = counter_uniform(key, event, index, draw + 2)
        draw += 3
        eta = e_min + (e_max - e_min) * u2
        phi = _TWO_PI * u3
        ch = math.cosh(eta)
        if mode == FLAT_P:
            pt = (a_min + (a_max - a_min) * u1) / ch
        elif mode == FLAT_PT:
            pt = a_min + (a_max - a_min) * u1
        else:
            pt = _bhadron_pt(u1, params[4], params[5], params[7], params[8])
            pz = pt * math.sinh(eta)
            p = pt * ch
            energy = math.sqrt(p * p + mass * mass)
            y = 0.5 * math.log((energy + pz) / (energy - pz)) if energy > abs(pz) else eta
            w = (p / energy) * math.exp(-0.5 * (y / params[6]) ** 2)
            u4 = counter_uniform(key, event, index, draw)
            draw += 1
            if u4 > w:
                continue
        return pt * math.cos(phi), pt * math.sin(phi), pt * math.sinh(eta), draw


def bhadron_pt_pdf(pt, p0=6500.0, n=3.0):
    """Unnormalised pT density of the BHadron spectrum."""
    pt = np.asarray(pt, dtype=float)
    return pt / (1.0 + (pt / p0) ** 2) ** n


def bhadron_pt_cdf(pt, pt_min, pt_max, p0=6500.0, n=3.0):
    """CDF of the BHadron pT factor truncated to [pt_min, pt_max] (for tests)."""
    e = 1.0 - n
    f = lambda x: (1.0 + (np.asarray(x, float) / p0) ** 2) ** e  # noqa: E731
    return (f(np.clip(pt, pt_min, pt_max)) - f(pt_min)) / (f(pt_max) - f(pt_min))
