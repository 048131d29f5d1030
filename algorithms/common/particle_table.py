"""Dense particle-property lookup built once from the `particle` package (PDG data).

``ParticleTable()`` reads every entry of ``particle.Particle.all()`` once and stores masses,
widths, proper decay lengths, charges and names in arrays.  Vectorised look-ups
(``mass(pids)``, ``charge(pids)``, ``ctau(pids)``, ``width(pids)``) map a PDG id to its row
through a dense slot array for |pid| < 2**17 (which covers every hadron, lepton and boson an
analysis uses, including excited states such as psi(2S) = 100443) and a binary search for the
rest (nuclei, 9xxxxxx states): ~1 ms per 10**6 look-ups.

Names: a name resolves to a PDG id if it is a `particle` (PDG) name (``J/psi(1S)``,
``K*(892)0``, ``Lambda(b)0``), an EvtGen name (``J/psi``, ``K*0``, ``Lambda_b0``, ``anti-nu_mu``,
``p+``, ``K_S0``) or an LHCb-style alias derived from those by rule (``KS0``, ``KL0``,
``Lambda_b~0``, ``p~-``, ``nu_mu~``, ``B~0``).  Unknown names raise
:class:`ConfigurationError` with did-you-mean suggestions.

Data not available in `particle` is handled this way:
* ``ctau`` is ``None`` for most entries: it is computed as hbar*c / width when the width is
  known and positive, otherwise NaN (unknown).  ``inf`` means stable.
* ``mass`` is ``None`` for neutrinos (-> 0) and a few exotic states (-> NaN).
* ``width`` ``None`` -> NaN.

Units: MeV, mm (hepunits conventions).
"""
from __future__ import annotations

import difflib
import functools
import math

import numpy as np

try:
    from framework import ConfigurationError
except ImportError:  # pragma: no cover - framework package written concurrently
    try:
        from framework.errors import ConfigurationError
    except ImportError:
        class ConfigurationError(ValueError):
            """Bad configuration (stand-in until framework.ConfigurationError exists)."""

from hepunits.constants import hbarc  # MeV * mm

__all__ = ["ParticleTable", "default_table", "ConfigurationError", "lhcb_alias"]

_DENSE = 1 << 17
_CHARGE_SUFFIXES = ("++", "--", "+", "-", "0")


def lhcb_alias(evtgen_name: str) -> str | None:
    """LHCb-style spelling of an EvtGen name, or None if it is the same.

    ``anti-Lambda_b0`` -> ``Lambda_b~0``, ``anti-p-`` -> ``p~-``, ``anti-nu_mu`` -> ``nu_mu~``,
    ``K_S0`` -> ``KS0``, ``K_L0`` -> ``KL0``.
    """
    if evtgen_name in ("K_S0", "K_L0"):
        return evtgen_name.replace("_", "")
    if evtgen_name.startswith("anti-"):
        base = evtgen_name[5:]
        for suffix in _CHARGE_SUFFIXES:
            if base.endswith(suffix) and len(base) > len(suffix):
                return base[: -len(suffix)] + "~" + suffix
        return base + "~"
    return None


class ParticleTable:
    """Particle properties from `particle`, looked up once into dense arrays.

    Not a singleton: build one per process (``default_table()`` caches one) and pass it around.
    """

    def __init__(self):
        from particle import Particle

        entries = sorted(Particle.all(), key=lambda p: int(p.pdgid))
        n = len(entries)
        self.pids = np.empty(n, dtype=np.int64)
        self._mass = np.full(n, np.nan)
        self._width = np.full(n, np.nan)
        self._ctau = np.full(n, np.nan)
        self._charge = np.full(n, np.nan)
        self._names: list[str] = []
        self._evtgen: list[str | None] = []
        self._name_to_pid: dict[str, int] = {}
        aliases: list[tuple[str, int]] = []
        pdg_names: list[tuple[str, int]] = []
        for i, p in enumerate(entries):
            pid = int(p.pdgid)
            self.pids[i] = pid
            if p.mass is not None:
                self._mass[i] = float(p.mass)
            elif p.pdgid.is_lepton and (p.charge == 0):
                self._mass[i] = 0.0  # neutrinos: `particle` has no mass value
            if p.width is not None:
                self._width[i] = float(p.width)
            if p.ctau is not None:
                self._ctau[i] = float(p.ctau)
            elif p.width is not None and p.width > 0:
                self._ctau[i] = hbarc / float(p.width)
            elif p.width is not None and p.width == 0:
                self._ctau[i] = math.inf
            if p.charge is not None:
                self._charge[i] = float(p.charge)
            self._names.append(p.name)
            try:
                evt = p.evtgen_name
            except Exception:
                evt = None
            self._evtgen.append(evt)
            if evt:
                self._name_to_pid.setdefault(evt, pid)
                alias = lhcb_alias(evt)
                if alias:
                    aliases.append((alias, pid))
            pdg_names.append((p.name, pid))
        # priority: EvtGen names, then PDG (particle) names, then LHCb-style aliases
        for name, pid in pdg_names + aliases:
            self._name_to_pid.setdefault(name, pid)
        for attr in ("_mass", "_width", "_ctau", "_charge"):
            setattr(self, attr, np.append(getattr(self, attr), np.nan))
        self._slot = np.full(2 * _DENSE + 1, -1, dtype=np.int32)
        small = np.abs(self.pids) < _DENSE
        self._slot[self.pids[small] + _DENSE] = np.nonzero(small)[0].astype(np.int32)
        self._pid_set = set(self.pids.tolist())

    # ------------------------------------------------------------------ lookups
    def index(self, pids) -> np.ndarray:
        """Row of each pid in the table (-1 for unknown pids)."""
        pids = np.asarray(pids, dtype=np.int64)
        if pids.size == 0 or (pids.min() > -_DENSE and pids.max() < _DENSE):
            return self._slot[pids + _DENSE]
        out = np.full(pids.shape, -1, dtype=np.int64)
        small = np.abs(pids) < _DENSE
        out[small] = self._slot[pids[small] + _DENSE]
        if not small.all():
            big = pids[~small]
            pos = np.clip(np.searchsorted(self.pids, big), 0, len(self.pids) - 1)
            out[~small] = np.where(self.pids[pos] == big, pos, -1)
        return out

    def _lookup(self, values, pids):
        # values carry a trailing NaN so that row -1 (unknown pid) reads NaN
        return values[self.index(pids)]

    def mass(self, pids) -> np.ndarray:
        """Nominal mass [MeV] (NaN for unknown pid/mass; 0 for neutrinos)."""
        return self._lookup(self._mass, pids)

    def width(self, pids) -> np.ndarray:
        """Total width [MeV] (NaN when unknown)."""
        return self._lookup(self._width, pids)

    def ctau(self, pids) -> np.ndarray:
        """Proper decay length c*tau [mm]: inf for stable, hbar*c/width if only the width is
        known, NaN if neither is known."""
        return self._lookup(self._ctau, pids)

    def charge(self, pids) -> np.ndarray:
        """Electric charge in units of e (float64; NaN for unknown pids)."""
        return self._lookup(self._charge, pids)

    def __contains__(self, pid) -> bool:
        return int(pid) in self._pid_set

    def name(self, pid: int) -> str:
        """PDG name from `particle` (e.g. ``J/psi(1S)``)."""
        row = int(self.index([pid])[0])
        if row < 0:
            raise KeyError(f"unknown PDG id {pid}")
        return self._names[row]

    def evtgen_name(self, pid: int) -> str:
        """EvtGen name (falls back to the PDG name)."""
        row = int(self.index([pid])[0])
        if row < 0:
            raise KeyError(f"unknown PDG id {pid}")
        return self._evtgen[row] or self._names[row]

    def antiparticle(self, pid: int) -> int:
        """PDG id of the antiparticle (the same id for self-conjugate particles)."""
        return -int(pid) if -int(pid) in self._pid_set else int(pid)

    def names(self) -> list[str]:
        """Every name the table resolves."""
        return list(self._name_to_pid)

    def suggest(self, name: str, n: int = 5) -> list[str]:
        return difflib.get_close_matches(name, self._name_to_pid.keys(), n=n, cutoff=0.6)

    def pid(self, name: str) -> int:
        """PDG id for a PDG, EvtGen or LHCb-style name; ConfigurationError with did-you-mean."""
        pid = self._name_to_pid.get(name)
        if pid is None:
            hints = self.suggest(name)
            hint = f"; did you mean {', '.join(repr(h) for h in hints)}?" if hints else ""
            raise ConfigurationError(
                f"unknown particle name {name!r}{hint} "
                "(PDG names such as 'J/psi(1S)', EvtGen names such as 'Lambda_b0', 'anti-nu_mu')"
            )
        return pid


@functools.lru_cache(maxsize=1)
def default_table() -> ParticleTable:
    """A process-wide cached ParticleTable (build cost ~0.5 s once)."""
    return ParticleTable()
