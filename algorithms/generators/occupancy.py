"""Detector occupancy (nTracks) for particle-gun events.

A particle-gun event contains only the signal, but the PID and other occupancy-dependent
parametrisations need the number of reconstructed tracks of a real bunch crossing.  The gun
therefore draws an nTracks value per event and stores it in ``/Event/Gen/Header.ntracks_override``:

* ``"minbias"`` - sampled from a minimum-bias nTracks histogram file (YAML)::

      variable: nTracks
      definition: <str, how nTracks is defined>
      bin_edges: [e0, e1, ..., en]
      counts: [c0, ..., c(n-1)]
      provenance: <str>

  (default file ``models/occupancy/minbias_ntracks_2016-MagUp-13TeV.yaml``, produced by the
  tracking team).  A bin is drawn with probability counts/sum(counts), then a value uniformly
  inside the bin, floored to an integer (clipped to the bin).
* ``"fixed:N"`` - every event gets N.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..common.particle_table import ConfigurationError

__all__ = ["DEFAULT_OCCUPANCY_FILE", "parse_occupancy", "OccupancyHistogram", "resolve_path"]

DEFAULT_OCCUPANCY_FILE = "models/occupancy/minbias_ntracks_2016-MagUp-13TeV.yaml"
_REPO_ROOT = Path(__file__).resolve().parents[2]


def parse_occupancy(spec: str):
    """``"minbias"`` -> ("minbias", None); ``"fixed:N"`` -> ("fixed", N)."""
    s = str(spec).strip()
    if s.lower() == "minbias":
        return "minbias", None
    if s.lower().startswith("fixed:"):
        try:
            n = int(s.split(":", 1)[1])
        except ValueError:
            n = -1
        if n >= 0:
            return "fixed", n
    raise ConfigurationError(
        f"Occupancy must be 'minbias' or 'fixed:N' with an integer N >= 0, got {spec!r}"
    )


def resolve_path(path: str) -> Path:
    """A path as given if it exists, else relative to the repository root."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return _REPO_ROOT / p


class OccupancyHistogram:
    """A binned nTracks distribution with inverse-CDF sampling."""

    def __init__(self, bin_edges, counts, variable="nTracks", definition="", provenance=""):
        edges = np.asarray(bin_edges, dtype=np.float64)
        counts = np.asarray(counts, dtype=np.float64)
        if edges.ndim != 1 or counts.ndim != 1 or edges.size != counts.size + 1 or counts.size == 0:
            raise ConfigurationError(
                f"occupancy histogram needs len(bin_edges) == len(counts) + 1 >= 2, "
                f"got {edges.size} edges and {counts.size} counts"
            )
        if np.any(np.diff(edges) <= 0) or edges[0] < 0:
            raise ConfigurationError("occupancy histogram bin_edges must be increasing and >= 0")
        if np.any(counts < 0) or counts.sum() <= 0:
            raise ConfigurationError("occupancy histogram counts must be >= 0 with a positive sum")
        self.edges = edges
        self.counts = counts
        self.variable = variable
        self.definition = definition
        self.provenance = provenance
        cdf = np.cumsum(counts)
        self._cdf = cdf / cdf[-1]

    @classmethod
    def from_file(cls, path) -> "OccupancyHistogram":
        import yaml

        p = resolve_path(str(path))
        if not p.exists():
            raise ConfigurationError(
                f"occupancy histogram file {str(path)!r} not found (looked at {p}); "
                "it is produced by the tracking team - or set Occupancy: \"fixed:N\" "
                "(or OccupancyFile to another histogram)"
            )
        with open(p) as fh:
            d = yaml.safe_load(fh)
        if not isinstance(d, dict) or "bin_edges" not in d or "counts" not in d:
            raise ConfigurationError(
                f"occupancy histogram {p} must be a mapping with keys variable, definition, "
                "bin_edges, counts, provenance"
            )
        if d.get("variable", "nTracks") != "nTracks":
            raise ConfigurationError(f"occupancy histogram {p}: variable must be nTracks, got {d['variable']!r}")
        return cls(d["bin_edges"], d["counts"], d.get("variable", "nTracks"),
                   d.get("definition", ""), d.get("provenance", ""))

    def sample(self, u_bin, u_in) -> np.ndarray:
        """nTracks values (int32) from two uniform arrays in (0, 1)."""
        b = np.searchsorted(self._cdf, np.asarray(u_bin), side="right")
        b = np.minimum(b, self.counts.size - 1)
        lo = self.edges[b]
        hi = self.edges[b + 1]
        v = np.floor(lo + np.asarray(u_in) * (hi - lo))
        v = np.clip(v, np.ceil(lo), np.maximum(np.ceil(hi) - 1, np.ceil(lo)))
        return v.astype(np.int32)

    def mean(self) -> float:
        centres = 0.5 * (self.edges[1:] + self.edges[:-1])
        return float((centres * self.counts).sum() / self.counts.sum())
