"""Pythia 8 event generation (``pythia8mc``) into the flashsim MC truth model.

Reproducibility
    Every flashsim event re-seeds Pythia's generator (``pythia.rndm.init(seed)``) with a seed drawn
    from the counter-based stream keyed by (job seed, run number, algorithm name, event number),
    then generates all the event's pile-up collisions with one ``nextBatch(n)`` call.  Event ``N``
    is therefore the same whatever the batch size, the shard or the events generated before it.
    Pythia's seed space is 9 x 10^8 seeds: two events share a seed (and are identical) with
    probability ~ n^2 / 1.8e9 for n events (0.06 pairs expected in 10^4 events, 5.6 in 10^5).

Pile-up
    The number of visible collisions per crossing is Poisson(``mean_collisions``) conditioned on
    >= 1 (inverse CDF of one counter-based uniform); each collision gets its own primary vertex
    drawn from the Conditions' Gaussian luminous region (``beam_spot_mean_mm``,
    ``beam_spot_sigma_mm``); PV times are 0 (no time spread in the Conditions).

Columnar read
    ``nextBatch`` returns an awkward array; its flat numpy buffers are taken directly from the
    layout (no per-particle Python).  Conversion to the truth model (which particles are kept,
    mother links, vertices) is shared with the HepMC reader, see
    :mod:`algorithms.generators.truth_builder`: Pythia's physical particles are the hadronisation
    and decay products (|status| 81-99) and every final-state particle (status > 0, e.g. shower
    photons); in ``status`` they become 1 (final) or 2 (decayed by Pythia).
"""
from __future__ import annotations

import math
import time

import numpy as np

from framework import Algorithm, ConfigurationError, Output, Property

from .truth_builder import C_MM_PER_NS, RawCollision, assemble_truth, select_truth

__all__ = [
    "PYTHIA_MAX_SEED",
    "n_collisions_from_uniform",
    "pythia_seeds_from_uniform",
    "draw_event_setup",
    "batch_arrays",
    "pythia_collision_to_raw",
    "configure_pythia",
    "Pythia8Generator",
]

PYTHIA_MAX_SEED = 900_000_000
GEV = 1000.0  # MeV

# random streams of this algorithm
STREAM_SEED = 0
STREAM_NCOLL = 1
STREAM_PV = 2


def n_collisions_from_uniform(u, mean: float, kmax: int = 200) -> np.ndarray:
    """Poisson(mean) conditioned on >= 1, by inverse CDF of uniforms ``u`` in (0, 1)."""
    if not mean > 0:
        raise ConfigurationError(f"mean number of collisions must be > 0, got {mean}")
    k = np.arange(1, kmax + 1)
    logp = k * math.log(mean) - mean - np.array([math.lgamma(x + 1) for x in k])
    p = np.exp(logp) / (-math.expm1(-mean))
    cdf = np.cumsum(p)
    cdf[-1] = 1.0
    return (1 + np.searchsorted(cdf, np.asarray(u), side="right")).astype(np.int64).clip(1, kmax)


def pythia_seeds_from_uniform(u) -> np.ndarray:
    """Pythia seeds in [1, 9e8] from uniforms in (0, 1)."""
    return (1 + np.floor(np.asarray(u) * PYTHIA_MAX_SEED)).astype(np.int64).clip(1, PYTHIA_MAX_SEED)


def draw_event_setup(random, event_numbers, mean_collisions, bs_mean, bs_sigma):
    """Counter-based per-event set-up: ``(seeds [n_events], n_collisions [n_events],
    pv [n_collisions_total, 4])``.  ``mean_collisions=None`` means exactly one collision.
    ``random`` is the algorithm's ``ctx.random`` (draws keyed by event number and collision
    index only)."""
    ev = np.asarray(event_numbers, dtype=np.int64)
    seeds = pythia_seeds_from_uniform(random.uniform(ev, 0, stream=STREAM_SEED))
    if mean_collisions is not None:
        ncoll = n_collisions_from_uniform(random.uniform(ev, 0, stream=STREAM_NCOLL), mean_collisions)
    else:
        ncoll = np.ones(ev.size, dtype=np.int64)
    ev_of_coll = np.repeat(ev, ncoll)
    coll_index = np.concatenate([np.arange(k) for k in ncoll]) if ev.size else np.zeros(0, np.int64)
    z = random.normal(ev_of_coll, coll_index, stream=STREAM_PV, n=3)
    pv = np.zeros((ev_of_coll.size, 4))
    pv[:, :3] = np.asarray(bs_mean, dtype=np.float64) + np.asarray(bs_sigma, dtype=np.float64) * z
    return seeds, ncoll, pv


def batch_arrays(batch) -> tuple[np.ndarray, dict]:
    """Flat numpy columns of a ``nextBatch`` awkward array, straight from its layout buffers.

    Returns ``(offsets, columns)``: ``offsets`` int64 [n_events + 1] into the flat particle
    list (Pythia entry 0, the system, included); columns ``id, status, mother1, daughter1,
    daughter2, px, py, pz, e, m`` (GeV) and ``vx, vy, vz, vt`` (mm, mm/c; 0 where Pythia has no
    production vertex)."""
    layout = batch.layout
    prt = layout.content("prt")
    offsets = np.asarray(prt.offsets.data, dtype=np.int64)
    rec = prt.content
    start, stop = int(offsets[0]), int(offsets[-1])

    def col(name):
        return np.asarray(rec.content(name).data)[start:stop]

    cols = {k: col(k) for k in ("id", "status", "mother1", "daughter1", "daughter2", "m")}
    p = rec.content("p")
    for k in ("px", "py", "pz", "e"):
        cols[k] = np.asarray(p.content(k).data)[start:stop]
    vopt = rec.content("vProd")
    index = np.asarray(vopt.index.data)[start:stop]
    has = index >= 0
    vrec = vopt.content
    for k, name in (("px", "vx"), ("py", "vy"), ("pz", "vz"), ("e", "vt")):
        data = np.asarray(vrec.content(k).data)
        out = np.zeros(index.size, dtype=np.float64)
        out[has] = data[index[has]]
        cols[name] = out
    return offsets - offsets[0], cols


def pythia_collision_to_raw(cols: dict, lo: int, hi: int, pv) -> RawCollision:
    """One Pythia event (flat rows ``lo:hi`` of :func:`batch_arrays`, entry 0 = system) as a
    :class:`RawCollision` in MeV, mm, ns, with the vertices shifted to the primary vertex ``pv``
    (x, y, z [mm], t [ns])."""
    sl = slice(lo + 1, hi)  # drop the system entry 0
    pid = cols["id"][sl].astype(np.int32)
    st = cols["status"][sl]
    n = pid.size
    physical = (st > 0) | ((np.abs(st) >= 81) & (np.abs(st) <= 99))
    status = np.where(physical, np.where(st > 0, 1, 2), 3).astype(np.int32)
    parent = cols["mother1"][sl].astype(np.int64) - 1  # 0 (system) -> -1
    d1 = cols["daughter1"][sl].astype(np.int64) - 1
    d2 = cols["daughter2"][sl].astype(np.int64) - 1
    decayed = (st < 0) & physical & (d1 >= 0)
    end_key = np.where(decayed, d1, -1)
    pv = np.asarray(pv, dtype=np.float64)
    vtx = np.stack([cols["vx"][sl] + pv[0], cols["vy"][sl] + pv[1], cols["vz"][sl] + pv[2],
                    cols["vt"][sl] / C_MM_PER_NS + pv[3]], axis=1)
    end_pos = np.zeros((n, 4), dtype=np.float64)
    end_pos[decayed] = vtx[d1[decayed]]
    is_beam = np.abs(st) == 12
    children = np.where(decayed, np.where(d2 >= d1, d2 - d1 + 1, 1), 0)
    return RawCollision(
        pid=pid, status=status,
        px=cols["px"][sl] * GEV, py=cols["py"][sl] * GEV, pz=cols["pz"][sl] * GEV, E=cols["e"][sl] * GEV,
        mass=cols["m"][sl] * GEV, parent=parent, end_key=end_key, end_pos=end_pos, pv=pv,
        is_beam=is_beam, pv_children=np.zeros(n, dtype=bool), children_count=children,
        extra={"pythia_status": st, "vertex_pos": vtx},
    )


def configure_pythia(commands, sqrt_s_gev: float, quiet: bool = True):
    """A ``pythia8mc.Pythia`` for pp at ``sqrt_s_gev``, with ``commands`` applied and initialised.

    Every ``readString`` and ``init`` is checked: a rejected string raises
    :class:`ConfigurationError` naming it."""
    import pythia8mc

    pythia = pythia8mc.Pythia("", False)
    base = ["Beams:idA = 2212", "Beams:idB = 2212", f"Beams:eCM = {float(sqrt_s_gev)!r}",
            "Random:setSeed = on", "Random:seed = 1", "Next:numberCount = 0"]
    if quiet:
        base.append("Print:quiet = on")
    for cmd in base:
        if not pythia.readString(cmd):  # pragma: no cover - fixed strings
            raise ConfigurationError(f"Pythia8 rejected the built-in setting {cmd!r}")
    for cmd in commands:
        if not isinstance(cmd, str) or not pythia.readString(cmd):
            key = str(cmd).split("=")[0].strip()
            hint = ""
            if ":" in key and not (pythia.settings.isFlag(key) or pythia.settings.isMode(key)
                                   or pythia.settings.isParm(key) or pythia.settings.isWord(key)):
                hint = f": '{key}' is not a Pythia setting"
            raise ConfigurationError(f"Pythia8 rejected the command {cmd!r}{hint} (see the Pythia 8 manual)")
    if not pythia.init():
        raise ConfigurationError(f"Pythia8 init() failed with commands {list(commands)!r} at sqrt(s) = {sqrt_s_gev} GeV")
    return pythia


class Pythia8Generator(Algorithm):
    """Generate pp collisions with Pythia 8 (pythia8mc) with pile-up and a Gaussian luminous region.

    Each event re-seeds Pythia from (job seed, run, event number), so event N is the same whatever
    the batch size or sharding.  The number of collisions per crossing is Poisson(mean_collisions)
    with at least one; each collision has its own primary vertex from the beam spot.  Outputs the
    MC truth model (particles selected as for HepMC input).
    """

    Commands = Property(list, ["SoftQCD:nonDiffractive = on"],
                        "Pythia 8 setting strings passed to readString (each is checked)", item_type=str)
    SqrtS = Property(float, None, "centre-of-mass energy [GeV] (default: Conditions sqrt_s_GeV)")
    MeanCollisions = Property(float, None, "mean visible pp collisions per crossing (default: Conditions mean_collisions)")
    BeamSpotMean = Property(list, None, "luminous-region mean x, y, z [mm] (default: Conditions beam_spot_mean_mm)")
    BeamSpotSigma = Property(list, None, "luminous-region sigma x, y, z [mm] (default: Conditions beam_spot_sigma_mm)")
    PileUp = Property(bool, True, "draw the number of collisions (False: exactly one per event)")

    Header = Output("/Event/Gen/Header", "one row per event: n_collisions, ntracks_override (-1), signal_trials (1)")
    Collisions = Output("/Event/Gen/Collisions", "one row per pp collision: primary vertex x, y, z [mm], t [ns]")
    Vertices = Output("/Event/MC/Vertices", "MC vertices: PVs (type 1) and decay vertices (type 2)")
    Particles = Output("/Event/MC/Particles", "selected MC particles (status 1 final, 2 decayed by Pythia)")

    def _cond(self, prop, key):
        value = getattr(self, prop)
        if value is not None:
            return value
        try:
            return self.conditions[key]
        except (KeyError, TypeError):
            raise ConfigurationError(f"{self.name}.{prop} not set and the Conditions have no '{key}'") from None

    def initialize(self):
        self._sqrt_s = float(self._cond("SqrtS", "sqrt_s_GeV"))
        self._mu = float(self._cond("MeanCollisions", "mean_collisions"))
        self._bs_mean = np.asarray(self._cond("BeamSpotMean", "beam_spot_mean_mm"), dtype=np.float64)
        self._bs_sigma = np.asarray(self._cond("BeamSpotSigma", "beam_spot_sigma_mm"), dtype=np.float64)
        if self._bs_mean.shape != (3,) or self._bs_sigma.shape != (3,) or np.any(self._bs_sigma < 0):
            raise ConfigurationError(f"{self.name}: beam spot mean/sigma must be 3 numbers (sigma >= 0), got "
                                     f"{self._bs_mean.tolist()} / {self._bs_sigma.tolist()}")
        if self.PileUp and not self._mu > 0:
            raise ConfigurationError(f"{self.name}: mean number of collisions must be > 0, got {self._mu}")
        t0 = time.perf_counter()
        self._pythia = configure_pythia(self.Commands, self._sqrt_s, quiet=self.OutputLevel not in ("DEBUG", "VERBOSE"))
        self.info(f"Pythia {self._pythia.settings.parm('Pythia:versionNumber'):.3f} initialised in "
                  f"{time.perf_counter() - t0:.1f} s: pp at {self._sqrt_s} GeV, {self.Commands}, "
                  f"mean collisions {self._mu if self.PileUp else 1}")
        self.pythia_seconds = 0.0
        self.total_seconds = 0.0

    def draw_event_setup(self, ctx):
        """Per event: Pythia seed, number of collisions; per collision: PV (x, y, z, t)."""
        return draw_event_setup(ctx.random, ctx.event_numbers, self._mu if self.PileUp else None,
                                self._bs_mean, self._bs_sigma)

    def execute(self, ctx):
        t_start = time.perf_counter()
        seeds, ncoll, pv = self.draw_event_setup(ctx)
        events = []
        t_py = 0.0
        c0 = 0
        for j in range(ctx.n_events):
            k = int(ncoll[j])
            t0 = time.perf_counter()
            self._pythia.rndm.init(int(seeds[j]))
            batch = self._pythia.nextBatch(k)
            t_py += time.perf_counter() - t0
            if len(batch) != k:
                raise RuntimeError(f"Pythia8 returned {len(batch)} of {k} collisions for event {int(ctx.event_numbers[j])}")
            offsets, cols = batch_arrays(batch)
            collisions = [select_truth(pythia_collision_to_raw(cols, int(offsets[c]), int(offsets[c + 1]), pv[c0 + c]))
                          for c in range(k)]
            c0 += k
            events.append(collisions)
        out = assemble_truth(events, np.asarray(ctx.event_numbers, dtype=np.int64))
        self.pythia_seconds += t_py
        self.total_seconds += time.perf_counter() - t_start
        self.counter("collisions").increment(int(ncoll.sum()))
        self.averaging_counter("collisions per event").add(ncoll)
        self.averaging_counter("MC particles per event").add(out["Particles"].counts)
        return out

    def finalize(self):
        if self.total_seconds > 0:
            self.info(f"time in Pythia: {self.pythia_seconds:.2f} s of {self.total_seconds:.2f} s "
                      f"({100 * (1 - self.pythia_seconds / self.total_seconds):.1f} % outside Pythia)")
