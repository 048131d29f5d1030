"""Input features of the tracking acceptance and efficiency models.

ONE function, :func:`acceptance_features`, computes the 12 inputs of LHCb's Lamarr 2016 MagUp
acceptance/efficiency models (``lhcb.trk.2016MU.20230128``) in their order::

    mc_x, mc_y, mc_z            origin vertex [mm]
    log10(p / MeV)
    tx = px/pz, ty = py/pz
    eta = asinh(pz / pT)
    phi = atan2(py, px)
    is_e (|pid| = 11), is_mu (|pid| = 13), is_h (|pid| in {211, 321, 2212})
    charge                      physical charge: -sign(pid) for e/mu, +sign(pid) for hadrons

It is used both by the runtime algorithms (:mod:`algorithms.tracking.acceptance`,
:mod:`algorithms.tracking.efficiency`) and by the training scripts
(:mod:`models.training.tracking.train_acceptance`, ``train_efficiency``): no train/serve skew.
Computation is in float64, the result float32 (the ONNX input type).
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "FEATURE_NAMES",
    "FEATURE_UNITS",
    "FEATURE_DESCRIPTIONS",
    "TRACKED_ABSPIDS",
    "PZ_MIN_MEV",
    "acceptance_features",
    "physical_charge",
    "species_flags",
    "is_tracked_species",
    "in_domain",
]

FEATURE_NAMES = ["mc_x", "mc_y", "mc_z", "mc_log10_p", "mc_tx", "mc_ty", "mc_eta", "mc_phi",
                 "mc_is_e", "mc_is_mu", "mc_is_h", "mc_charge"]
FEATURE_UNITS = ["mm", "mm", "mm", "log10(MeV)", "", "", "", "rad", "", "", "", "e"]
FEATURE_DESCRIPTIONS = [
    "origin vertex x", "origin vertex y", "origin vertex z", "log10 of the true momentum p/MeV",
    "true slope px/pz", "true slope py/pz", "true pseudorapidity asinh(pz/pT)", "true azimuth atan2(py, px)",
    "1 if |pid| = 11", "1 if |pid| = 13", "1 if |pid| in {211, 321, 2212}",
    "physical charge: -sign(pid) for e/mu, +sign(pid) for hadrons",
]

#: species sent to the tracking models (e, mu, pi, K, p)
TRACKED_ABSPIDS = (11, 13, 211, 321, 2212)
#: particles with pz <= PZ_MIN_MEV are outside the models' domain (LHCb selects pz > 1 MeV)
PZ_MIN_MEV = 1.0


def species_flags(pid):
    """(is_e, is_mu, is_h) boolean arrays from PDG ids."""
    a = np.abs(np.asarray(pid))
    return a == 11, a == 13, (a == 211) | (a == 321) | (a == 2212)


def is_tracked_species(pid):
    """True for e, mu, pi, K, p (either charge)."""
    is_e, is_mu, is_h = species_flags(pid)
    return is_e | is_mu | is_h


def physical_charge(pid):
    """Physical charge of e/mu/pi/K/p from the PDG id: -sign(pid) for leptons (e- is +11),
    +sign(pid) for hadrons (pi+ is +211); 0 for other species."""
    pid = np.asarray(pid)
    is_e, is_mu, is_h = species_flags(pid)
    s = np.sign(pid).astype(np.int8)
    return np.where(is_e | is_mu, -s, np.where(is_h, s, 0)).astype(np.int8)


def acceptance_features(pid, x, y, z, px, py, pz) -> np.ndarray:
    """The 12 model inputs as float32 [N, 12] (see module docstring for the order).

    Rows with pz <= 0 or pT = 0 give non-finite entries (tx, eta): use :func:`in_domain` to
    exclude them before calling a model.
    """
    pid = np.asarray(pid)
    x, y, z = (np.asarray(v, dtype=np.float64) for v in (x, y, z))
    px, py, pz = (np.asarray(v, dtype=np.float64) for v in (px, py, pz))
    n = pid.shape[0]
    out = np.empty((n, 12), dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        pt = np.hypot(px, py)
        p = np.sqrt(pt * pt + pz * pz)
        out[:, 0] = x
        out[:, 1] = y
        out[:, 2] = z
        out[:, 3] = np.log10(p)
        out[:, 4] = px / pz
        out[:, 5] = py / pz
        out[:, 6] = np.arcsinh(pz / pt)
        out[:, 7] = np.arctan2(py, px)
    is_e, is_mu, is_h = species_flags(pid)
    out[:, 8] = is_e
    out[:, 9] = is_mu
    out[:, 10] = is_h
    out[:, 11] = physical_charge(pid)
    return out


def in_domain(features: np.ndarray, pz) -> np.ndarray:
    """Rows the models may be evaluated on: pz > 1 MeV and all 12 features finite."""
    pz = np.asarray(pz, dtype=np.float64)
    return (pz > PZ_MIN_MEV) & np.all(np.isfinite(features), axis=1)
