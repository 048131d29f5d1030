"""Inputs for teacher samples: a b-decay-like track spectrum and an nTracks distribution.

All draws are counter-based (``framework.random.RandomStreams``) keyed by (row number, 0), so a row
is the same whatever the sample size.  Reference detector (teacher) inputs — not LHCb data.

b-decay-like spectrum (documented choice, docs/pid_teacher.md):
  ln(p / GeV) ~ N(ln 15, 0.9) truncated to [2, 200] GeV (median 15 GeV, 68 % in 6-37 GeV: the
  momenta of charged b-hadron decay products in the LHCb acceptance);
  eta ~ N(3.2, 0.65) truncated to [1.9, 5.0]; phi uniform; charge +-1 with equal probability;
  origin: z0 ~ N(0, 45 mm) (2016 luminous region) plus a b-hadron flight of Exp(10 mm) along z,
  x = y = 0 at closest-to-beam.
nTracks (flashsim's definition, what the flash PID is conditioned on):
``models/occupancy/minbias_ntracks_2016-MagUp-13TeV.yaml`` (inverse CDF of its histogram); without
that file, the LHCb Lamarr parametrisation exp(4.8703 + 0.5921 N(0,1)) converted to flashsim's
definition with ``NTRACKS_LHCB_PER_FLASHSIM``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.special import ndtri

from framework.random import RandomStreams

from . import constants as C

__all__ = ["NTRACKS_YAML", "BDecaySpectrum", "sample_ntracks", "sample_tracks", "SPECIES_PDG"]

NTRACKS_YAML = Path(__file__).resolve().parents[3] / "models" / "occupancy" / "minbias_ntracks_2016-MagUp-13TeV.yaml"
SPECIES_PDG = {"e": 11, "mu": 13, "pi": 211, "K": 321, "p": 2212}


class BDecaySpectrum:
    """Truncated log-normal momentum and truncated normal pseudorapidity (see module docstring)."""

    def __init__(self, p_median=15000.0, p_sigma_ln=0.9, p_range=(2000.0, 200000.0),
                 eta_mean=3.2, eta_sigma=0.65, eta_range=(1.9, 5.0)):
        self.p_median, self.p_sigma_ln, self.p_range = p_median, p_sigma_ln, p_range
        self.eta_mean, self.eta_sigma, self.eta_range = eta_mean, eta_sigma, eta_range

    @staticmethod
    def _trunc_normal(u, mu, sig, lo, hi):
        from scipy.special import ndtr
        a, b = ndtr((lo - mu) / sig), ndtr((hi - mu) / sig)
        return mu + sig * ndtri(a + u * (b - a))

    def p(self, u):
        lo, hi = np.log(self.p_range[0]), np.log(self.p_range[1])
        return np.exp(self._trunc_normal(u, np.log(self.p_median), self.p_sigma_ln, lo, hi))

    def eta(self, u):
        return self._trunc_normal(u, self.eta_mean, self.eta_sigma, *self.eta_range)


def _load_ntracks_yaml(path: Path):
    import yaml
    d = yaml.safe_load(path.read_text())
    if isinstance(d, dict):
        for qk, pk in (("quantiles", "probabilities"), ("quantiles", "levels")):
            if qk in d and pk in d:
                return np.asarray(d[pk], float), np.asarray(d[qk], float)
        edge_key = "bin_edges" if "bin_edges" in d else "edges"
        if edge_key in d and "counts" in d:
            edges = np.asarray(d[edge_key], float)
            cdf = np.concatenate([[0.0], np.cumsum(np.asarray(d["counts"], float))])
            return cdf / cdf[-1], edges
    raise ValueError(f"{path}: expected keys (quantiles, probabilities) or (edges, counts)")


def sample_ntracks(u, yaml_path: Path | None = NTRACKS_YAML):
    """nTracks from uniforms u (inverse CDF).  Returns (values float64, description string)."""
    u = np.asarray(u, dtype=np.float64)
    if yaml_path is not None and Path(yaml_path).exists():
        try:
            probs, values = _load_ntracks_yaml(Path(yaml_path))
            return np.round(np.interp(u, probs, values)), f"inverse CDF of {Path(yaml_path).name}"
        except (ValueError, KeyError) as exc:  # unknown layout: fall back, but say so
            desc = f"Lamarr parametrisation ({yaml_path} unreadable: {exc})"
    else:
        desc = "Lamarr parametrisation exp(4.8703 + 0.5921 N(0,1)), truncated to [5, 1000]"
    nt = np.exp(4.8703 + 0.5921 * ndtri(u))
    return np.clip(np.round(nt), 5, 1000), desc


def sample_ntracks_flashsim(u, yaml_path: Path | None = NTRACKS_YAML):
    """nTracks in flashsim's definition: the occupancy file, else Lamarr's converted (see module doc)."""
    values, desc = sample_ntracks(u, yaml_path)
    if desc.startswith("Lamarr"):
        return np.round(values / C.NTRACKS_LHCB_PER_FLASHSIM), desc + " / NTRACKS_LHCB_PER_FLASHSIM"
    return values, desc


def sample_tracks(n, species, seed=12345, first_row=0, spectrum: BDecaySpectrum | None = None,
                  ntracks_yaml: Path | None = NTRACKS_YAML, rows=None, hidden_stream: int = 0):
    """n rows of teacher inputs; ``species`` is a PDG id, an array of PDG ids, or a name in SPECIES_PDG.

    Row r (global row number ``first_row + i``) is its own event with index 0, so any sub-range of a
    sample is reproduced exactly; ``rows`` (global row numbers, then ``n`` = their number and
    ``first_row`` unused) reproduces any subset.  Returns a dict of columns (p, eta, phi, charge, pid,
    nTracks, x, y, z, tx, ty, prod_z, event, index).

    ``hidden_stream`` > 0: the variables a flash model is not conditioned on, the azimuth phi and the
    origin z0, come from that random stream instead, while p, eta, charge and nTracks stay those of
    the rows: the same flash inputs with the hidden variables redrawn (the teacher's response to them is
    then a draw from its distribution given the flash's inputs).  0: the rows' own tracks.
    """
    spectrum = spectrum or BDecaySpectrum()
    if rows is None:
        rows = np.arange(first_row, first_row + n, dtype=np.int64)
    else:
        rows = np.asarray(rows, dtype=np.int64)
        n = rows.size
    rs = RandomStreams(seed, 0, "PIDTeacherSample")
    u = rs.uniform(rows, 0, stream=0, n=7)
    if hidden_stream:
        u[:, [2, 5, 6]] = rs.uniform(rows, 0, stream=int(hidden_stream), n=3)
    p = spectrum.p(u[:, 0])
    eta = spectrum.eta(u[:, 1])
    phi = 2.0 * np.pi * u[:, 2] - np.pi
    charge = np.where(u[:, 3] < 0.5, -1, 1).astype(np.int8)
    if ntracks_yaml is None:  # LHCb definition (the public figures): callers convert
        ntracks, _ = sample_ntracks(u[:, 4], None)
    else:
        ntracks, _ = sample_ntracks_flashsim(u[:, 4], ntracks_yaml)
    z0 = 45.0 * ndtri(u[:, 5]) + (-10.0 * np.log(u[:, 6]))
    theta = 2.0 * np.arctan(np.exp(-eta))
    t = np.tan(theta)
    tx, ty = t * np.cos(phi), t * np.sin(phi)
    if isinstance(species, str):
        species = SPECIES_PDG[species]
    base = np.broadcast_to(np.asarray(species, dtype=np.int64), (n,))
    # PDG sign from the physical charge: leptons have negative PDG id for positive charge
    lepton = np.isin(np.abs(base), (11, 13))
    sign = np.where(lepton, -charge, charge)
    pid = (np.abs(base) * sign).astype(np.int32)
    return {"p": p, "eta": eta, "phi": phi, "charge": charge, "pid": pid, "nTracks": ntracks,
            "x": np.zeros(n), "y": np.zeros(n), "z": z0, "tx": tx, "ty": ty, "prod_z": z0,
            "event": rows, "index": np.zeros(n, dtype=np.int64)}
