"""HepMC2 / HepMC3 ASCII input into the flashsim MC truth model (through ``pyhepmc``).

Events are served by *global index*: flashsim event ``N`` is always the same bunch crossing
whatever the batch size or sharding.  At ``initialize`` every input file is scanned once (a
vectorised numpy pass over its bytes, ~1 GB/s) to count its events (``E`` lines), to remember the
byte offset and line number of each event, and to check the declared vertex (and, for HepMC3,
particle) counts against the ``V``/``P`` lines that follow; reading then moves forward through an
open reader and seeks (plain files) or re-opens (compressed files) when a batch asks for an event
that is not the next one.

Grouping
    ``"file"`` (default): each file is one bunch crossing whose GenEvents are its pile-up
    collisions (the way LHCb's Gauss writes them).  ``"event"``: every GenEvent is one flashsim
    event with a single collision.

Corrupt input
    * not a HepMC ASCII file (no ``HepMC::IO_GenEvent``/``HepMC::Asciiv3`` header) or an ``E`` line
      that does not parse: :class:`InputError` at initialize naming file and line;
    * an event whose ``V``/``P`` lines do not match its header (typically a truncated last
      event): found by the scan; the file is treated as ending before that event, with an ERROR
      message naming file, event index and line, and the counter ``corrupt files``;
    * an event that pyhepmc cannot parse (garbled numbers): found while reading; same treatment
      (the events before it are kept and counted).  With ``Grouping: event`` the flashsim events
      that pointed at the lost GenEvents come out empty (no collision) and are counted in
      ``unreadable GenEvents``.

Selection of the MC particles: see :mod:`algorithms.generators.truth_builder`.
"""
from __future__ import annotations

import bz2
import glob
import gzip
import lzma
import os
import re
from dataclasses import dataclass, field

import numpy as np

from .truth_builder import (
    C_MM_PER_NS,
    PHYSICAL_STATUSES,
    RawCollision,
    select_truth,
    select_truth_batch,
)

from framework import Algorithm, ConfigurationError, InputError, Output, Property

__all__ = [
    "HepMCFileIndex",
    "scan_hepmc_file",
    "expand_inputs",
    "genevent_to_raw",
    "genevent_to_truth",
    "HepMCSource",
    "HepMCReader",
]

_COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def _natural_key(path: str):
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", path)]


def expand_inputs(patterns) -> list[str]:
    """Files named by ``patterns`` (paths or globs, ``~`` and ``$VARS`` expanded), in the given
    order; the matches of one glob are in natural order (``evt2`` before ``evt10``).  A pattern
    that matches nothing raises :class:`ConfigurationError`."""
    if isinstance(patterns, str):
        patterns = [patterns]
    files: list[str] = []
    for pat in patterns:
        expanded = os.path.expanduser(os.path.expandvars(str(pat)))
        if glob.has_magic(expanded):
            matches = sorted(glob.glob(expanded), key=_natural_key)
            if not matches:
                raise ConfigurationError(f"Input pattern {pat!r} matches no file (cwd {os.getcwd()})")
            files.extend(matches)
        else:
            if not os.path.isfile(expanded):
                raise ConfigurationError(f"Input file {pat!r} does not exist (cwd {os.getcwd()})")
            files.append(expanded)
    return files


# ------------------------------------------------------------------------------------------
# scanning
# ------------------------------------------------------------------------------------------
@dataclass
class HepMCFileIndex:
    """What the scan learnt about one file."""

    path: str
    format: str  # "hepmc2" or "hepmc3"
    offsets: np.ndarray  # byte offset of each E line (uncompressed stream)
    lines: np.ndarray  # 1-based line number of each E line
    event_numbers: np.ndarray  # event number written on the E line
    declared_vertices: np.ndarray
    counted_vertices: np.ndarray
    declared_particles: np.ndarray  # -1 when the format does not declare it (HepMC2)
    counted_particles: np.ndarray
    good_events: int  # events before the first inconsistent one
    problem: str | None = None  # description of the first inconsistency, if any
    has_end_marker: bool = True
    compressed: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def n_declared(self) -> int:
        return int(self.offsets.size)


def _opener(path: str):
    for suffix, fn in _COMPRESSED.items():
        if path.endswith(suffix):
            return lambda: fn(path, "rb"), True
    return lambda: open(path, "rb"), False


def _parse_e_line(text: str, fmt: str, path: str, lineno: int):
    tok = text.split()
    try:
        if fmt == "hepmc2":
            if len(tok) < 12:
                raise ValueError("too few fields")
            return int(tok[1]), int(tok[8]), -1
        if len(tok) < 4:
            raise ValueError("too few fields")
        return int(tok[1]), int(tok[2]), int(tok[3])
    except ValueError as exc:
        raise InputError(f"{path}: line {lineno}: malformed event header {text[:80]!r} ({exc})") from None


def scan_hepmc_file(path: str, chunk_size: int = 1 << 24) -> HepMCFileIndex:
    """Count the events of a HepMC2/HepMC3 ASCII file and check its structure (vectorised)."""
    open_fn, compressed = _opener(path)
    try:
        fh = open_fn()
    except OSError as exc:
        raise InputError(f"{path}: cannot open: {exc}") from None
    with fh:
        try:
            head = fh.read(chunk_size)
        except (OSError, EOFError, lzma.LZMAError) as exc:
            raise InputError(f"{path}: cannot read: {exc}") from None
        if b"HepMC::Asciiv3" in head[:512]:
            fmt = "hepmc3"
        elif b"HepMC::IO_GenEvent" in head[:512]:
            fmt = "hepmc2"
        else:
            first = head[:60].split(b"\n")[0].decode("latin-1")
            raise InputError(f"{path}: line 1: not a HepMC2/HepMC3 ASCII file (no 'HepMC::IO_GenEvent' or "
                             f"'HepMC::Asciiv3' header; starts with {first!r})")
        e_off, e_line, e_text, v_before, p_before = [], [], [], [], []
        tot_v = tot_p = 0
        base = 0  # byte offset of `data` in the (uncompressed) stream
        line_base = 0  # number of lines before `data`
        data = head
        tail_text = b""
        stream_error = None
        eof = False
        while True:
            if not eof:
                try:
                    more = fh.read(chunk_size)
                except (OSError, EOFError, lzma.LZMAError) as exc:  # compressed stream cut short
                    more, stream_error = b"", str(exc)
                if more:
                    data = data + more
                else:
                    eof = True
            if eof:
                block, carry = data, b""
                if block and not block.endswith(b"\n"):
                    block = block + b"\n"
            else:
                cut = data.rfind(b"\n")
                if cut < 0:
                    continue  # a line longer than the chunk: read more
                block, carry = data[:cut + 1], data[cut + 1:]
            if block:
                arr = np.frombuffer(block, dtype=np.uint8)
                nl = np.flatnonzero(arr == 10)
                starts = np.empty(nl.size, dtype=np.int64)
                starts[0] = 0
                starts[1:] = nl[:-1] + 1
                first = arr[starts]
                is_sp = arr[np.minimum(starts + 1, arr.size - 1)] == 32
                is_e = (first == 69) & is_sp
                cv = np.cumsum((first == 86) & is_sp)
                cp = np.cumsum((first == 80) & is_sp)
                ej = np.flatnonzero(is_e)
                e_text.extend(block[starts[j]:nl[j]].decode("latin-1") for j in ej)  # one per event
                e_off.append(base + starts[ej])
                e_line.append(line_base + 1 + ej)
                v_before.append(tot_v + cv[ej])
                p_before.append(tot_p + cp[ej])
                tot_v += int(cv[-1])
                tot_p += int(cp[-1])
                line_base += int(nl.size)
                base += len(block)
                tail_text = block[-200:]
            if eof:
                break
            data = carry
    offsets = np.concatenate(e_off) if e_off else np.zeros(0, np.int64)
    lines = np.concatenate(e_line).astype(np.int64) if e_line else np.zeros(0, np.int64)
    vb = np.concatenate(v_before).astype(np.int64) if v_before else np.zeros(0, np.int64)
    pb = np.concatenate(p_before).astype(np.int64) if p_before else np.zeros(0, np.int64)
    n = offsets.size
    evnum = np.zeros(n, np.int64)
    dv = np.zeros(n, np.int64)
    dp = np.zeros(n, np.int64)
    for i, text in enumerate(e_text):
        evnum[i], dv[i], dp[i] = _parse_e_line(text, fmt, path, int(lines[i]))
    cv_ev = np.diff(np.append(vb, tot_v))
    cp_ev = np.diff(np.append(pb, tot_p))
    bad = dv != cv_ev
    if fmt == "hepmc3":
        bad |= dp != cp_ev
    good = int(np.argmax(bad)) if bad.any() else n
    problem = None if stream_error is None else f"compressed stream ends prematurely ({stream_error})"
    if good < n:
        what = f"{dv[good]} vertices" + (f" and {dp[good]} particles" if fmt == "hepmc3" else "")
        found = f"{cv_ev[good]} V lines" + (f" and {cp_ev[good]} P lines" if fmt == "hepmc3" else "")
        problem = (f"event {good} (line {lines[good]}) declares {what} but the file has {found} "
                   f"(truncated or corrupt)")
    end_marker = b"END_EVENT_LISTING" in tail_text
    return HepMCFileIndex(path, fmt, offsets, lines, evnum, dv, cv_ev, dp if fmt == "hepmc3" else np.full(n, -1),
                          cp_ev, good, problem, end_marker, compressed)


# ------------------------------------------------------------------------------------------
# GenEvent -> truth model
# ------------------------------------------------------------------------------------------
TIME_SCALE_TO_NS = {"mm": 1.0 / C_MM_PER_NS, "ns": 1.0}


def genevent_to_raw(event, time_unit: str = "mm") -> RawCollision:
    """Columnar view of one ``pyhepmc.GenEvent`` (units converted to MeV, mm; times to ns).

    ``time_unit``: unit of the vertex times in the file: ``"mm"`` (mm/c, the HepMC standard) or
    ``"ns"`` (what LHCb's Gauss writes; see :func:`detect_time_unit`).
    """
    import pyhepmc

    if event.momentum_unit != pyhepmc.Units.MEV or event.length_unit != pyhepmc.Units.MM:
        event.set_units(pyhepmc.Units.MEV, pyhepmc.Units.MM)
    data = pyhepmc.GenEventData()
    event.write_data(data)
    P = data.particles
    V = data.vertices
    n = len(P)
    nv = len(V)
    l1 = np.asarray(data.links1, dtype=np.int64)
    l2 = np.asarray(data.links2, dtype=np.int64)
    # ids -> positions in the particle/vertex arrays (HepMC3 files may list vertices out of id order)
    pid_ids = np.asarray(event.numpy.particles.id, dtype=np.int64)
    vtx_ids = np.asarray(event.numpy.vertices.id, dtype=np.int64)
    p_of = np.empty(n, dtype=np.int64)
    p_of[pid_ids - 1] = np.arange(n)
    v_of = np.empty(nv, dtype=np.int64)
    v_of[-vtx_ids - 1] = np.arange(nv)
    prod = np.full(n, -1, dtype=np.int64)
    end = np.full(n, -1, dtype=np.int64)
    m_in = (l1 > 0) & (l2 < 0)  # particle l1 enters vertex l2
    end[p_of[l1[m_in] - 1]] = v_of[-l2[m_in] - 1]
    m_out = (l1 < 0) & (l2 > 0)  # vertex l1 produces particle l2
    prod[p_of[l2[m_out] - 1]] = v_of[-l1[m_out] - 1]
    idx = np.arange(n, dtype=np.int64)
    first_in = np.full(nv + 1, n, dtype=np.int64)
    has_end = end >= 0
    np.minimum.at(first_in, end[has_end], idx[has_end])
    first_in = first_in[:nv]
    parent = np.full(n, -1, dtype=np.int64)
    hp = prod >= 0
    parent[hp] = first_in[prod[hp]]
    parent[parent == n] = -1

    ep = event.event_pos()
    event_pos = np.array([ep.x, ep.y, ep.z, ep.t], dtype=np.float64)
    pos = np.empty((nv, 4), dtype=np.float64)
    if nv:
        pos[:, 0] = V["x"]
        pos[:, 1] = V["y"]
        pos[:, 2] = V["z"]
        pos[:, 3] = V["t"]
        is_set = np.asarray(event.numpy.vertices.has_set_position, dtype=bool)
        if not is_set.all():
            # HepMC3 semantics: an unset position is that of the production vertex of the first
            # incoming particle, recursively, else the event position
            vpar = np.full(nv + 1, nv, dtype=np.int64)
            fi = first_in
            ok = fi < n
            vpar[:nv][ok] = np.where(prod[fi[ok]] >= 0, prod[fi[ok]], nv)
            src = np.where(is_set, np.arange(nv), vpar[:nv])
            src = np.append(src, nv)
            for _ in range(64):
                nxt = np.where(np.append(is_set, True)[src], src, src[src])
                if np.array_equal(nxt, src):
                    break
                src = nxt
            ext = np.vstack([pos, event_pos[None, :]])
            pos = ext[src[:nv]]
    pos[:, 3] = pos[:, 3] * TIME_SCALE_TO_NS[time_unit]

    is_beam = (prod < 0) & (end >= 0)
    pv_vertex = -1
    beams = np.flatnonzero(is_beam)
    if beams.size:
        pv_vertex = int(end[beams[0]])
    elif nv:
        no_in = np.flatnonzero(first_in == n)
        produces = np.zeros(nv, dtype=bool)
        produces[prod[hp]] = True
        cand = no_in[produces[no_in]] if no_in.size else no_in
        sig = np.flatnonzero((P["status"] == 889) & hp)
        if cand.size:
            pv_vertex = int(cand[0])
        elif sig.size:
            pv_vertex = int(prod[sig[0]])
        else:
            pv_vertex = 0
    if pv_vertex >= 0:
        pv = pos[pv_vertex].copy()
    else:
        pv = event_pos.copy()
        pv[3] *= TIME_SCALE_TO_NS[time_unit]
    pv_children = (prod == pv_vertex) if pv_vertex >= 0 else (prod < 0)

    mass = np.where(P["is_mass_set"], P["mass"],
                    np.sqrt(np.maximum(P["e"] ** 2 - P["px"] ** 2 - P["py"] ** 2 - P["pz"] ** 2, 0.0)))
    end_pos = np.zeros((n, 4), dtype=np.float64)
    end_pos[has_end] = pos[end[has_end]]
    children_count = np.bincount(prod[hp], minlength=nv)[end[has_end]] if nv else np.zeros(0, np.int64)
    cc = np.zeros(n, dtype=np.int64)
    cc[has_end] = children_count
    return RawCollision(
        pid=np.asarray(P["pid"], dtype=np.int32), status=np.asarray(P["status"], dtype=np.int32),
        px=np.asarray(P["px"], dtype=np.float64), py=np.asarray(P["py"], dtype=np.float64),
        pz=np.asarray(P["pz"], dtype=np.float64), E=np.asarray(P["e"], dtype=np.float64),
        mass=np.asarray(mass, dtype=np.float64), parent=parent, end_key=end, end_pos=end_pos, pv=pv,
        is_beam=is_beam, pv_children=pv_children, children_count=cc,
        extra={"prod_vertex": prod, "end_vertex": end, "vertex_pos": pos, "pv_vertex": pv_vertex,
               "n_vertices": nv},
    )


def genevent_to_truth(event, statuses=PHYSICAL_STATUSES, time_unit: str = "mm"):
    """``select_truth(genevent_to_raw(event, time_unit), statuses)``."""
    return select_truth(genevent_to_raw(event, time_unit), statuses)


def flight_time_ratio(event) -> np.ndarray:
    """For every decay in ``event`` with a flight distance above 10 um: flight distance divided by
    ``beta * (t_end - t_production)`` with the times as written in the file.  It is 1 when the
    times are in mm/c and c = 299.79 mm/ns when they are in ns."""
    raw = genevent_to_raw(event, "ns")  # times untouched
    prod, end, pos = raw.extra["prod_vertex"], raw.extra["end_vertex"], raw.extra["vertex_pos"]
    ok = (prod >= 0) & (end >= 0)
    if not ok.any():
        return np.zeros(0)
    d = pos[end[ok]] - pos[prod[ok]]
    dr = np.sqrt((d[:, :3] ** 2).sum(axis=1))
    p = np.sqrt(raw.px[ok] ** 2 + raw.py[ok] ** 2 + raw.pz[ok] ** 2)
    beta = p / raw.E[ok]
    good = (dr > 0.01) & (d[:, 3] > 0) & (beta > 0)
    return dr[good] / (beta[good] * d[:, 3][good])


def detect_time_unit(events, min_decays: int = 5):
    """``("mm" | "ns" | None, median ratio, number of decays)`` from the flight distances of the
    decays in ``events`` (an iterable of GenEvents; consumed until ``min_decays`` are found).
    HepMC's standard is mm/c; LHCb's Gauss writes ns."""
    ratios = []
    n = 0
    for ev in events:
        r = flight_time_ratio(ev)
        ratios.append(r)
        n += r.size
        if n >= min_decays:
            break
    if n == 0:
        return None, float("nan"), 0
    med = float(np.median(np.concatenate(ratios)))
    if abs(med - 1.0) < 0.01:
        return "mm", med, n
    if abs(med / C_MM_PER_NS - 1.0) < 0.01:
        return "ns", med, n
    return None, med, n


# ------------------------------------------------------------------------------------------
# random access by global index
# ------------------------------------------------------------------------------------------
class CorruptEvent(Exception):
    """An event that pyhepmc could not read (internal; reported and counted by the reader)."""

    def __init__(self, message, index=-1):
        super().__init__(message)
        self.index = index


class HepMCSource:
    """Serve GenEvents of a list of files by (file index, event index in the file).

    Keeps one reader open and moves forward; seeks (plain files) or re-opens (compressed ones)
    when asked for an event that is not the next one.
    """

    def __init__(self, files: list[str], indices: list[HepMCFileIndex] | None = None):
        self.files = list(files)
        self.indices = indices if indices is not None else [scan_hepmc_file(f) for f in self.files]
        self.good = np.array([ix.good_events for ix in self.indices], dtype=np.int64)
        self._file = None
        self._fobj = None
        self._reader = None
        self._cur_file = -1
        self._next = 0
        self.n_seeks = 0
        self.n_skipped_by_reading = 0

    def close(self):
        if self._reader is not None:
            try:
                self._reader.close()
            except Exception:  # pragma: no cover
                pass
        if self._fobj is not None:
            self._fobj.close()
        self._reader = self._fobj = None
        self._cur_file = -1
        self._next = 0

    def _open_at(self, f: int, k: int):
        import pyhepmc

        self.close()
        ix = self.indices[f]
        open_fn, compressed = _opener(self.files[f])
        fobj = open_fn()
        if not compressed and k > 0:
            fobj.seek(int(ix.offsets[k]))
            self.n_seeks += 1
            start = k
        else:
            start = 0
        self._fobj = fobj
        self._reader = pyhepmc.open(fobj, "r", format=ix.format)
        self._cur_file = f
        self._next = start

    def read(self, f: int, k: int):
        """The ``k``-th GenEvent of file ``f``; raises :class:`CorruptEvent` if unreadable."""
        ix = self.indices[f]
        if k >= self.good[f]:
            raise IndexError(f"{self.files[f]} has {self.good[f]} readable events, event {k} requested")
        if self._cur_file != f or k < self._next or (k > self._next and not ix.compressed):
            self._open_at(f, k)
        while self._next < k:  # compressed: skip by reading
            self._read_next(f)
            self.n_skipped_by_reading += 1
        return self._read_next(f)

    def _read_next(self, f):
        ix = self.indices[f]
        k = self._next
        try:
            ev = self._reader.read()
        except Exception as exc:  # pyhepmc raises for some malformed input
            self.close()
            raise CorruptEvent(f"pyhepmc error: {exc}", k) from None
        if ev is None:
            self.close()
            raise CorruptEvent("pyhepmc could not parse it", k)
        self._next += 1
        if ev.event_number != ix.event_numbers[k] or len(ev.vertices) != ix.declared_vertices[k]:
            self.close()
            raise CorruptEvent(f"read event number {ev.event_number} with {len(ev.vertices)} vertices, "
                               f"expected {ix.event_numbers[k]} with {ix.declared_vertices[k]}", k)
        if ix.declared_particles[k] >= 0 and len(ev.particles) != ix.declared_particles[k]:
            self.close()
            raise CorruptEvent(f"read {len(ev.particles)} particles, header declares {ix.declared_particles[k]}", k)
        return ev


# ------------------------------------------------------------------------------------------
# the algorithm
# ------------------------------------------------------------------------------------------
class HepMCReader(Algorithm):
    """Read HepMC2/HepMC3 ASCII files (pyhepmc) into the MC truth model, by global event index.

    ``Input`` lists files and globs (natural order within a glob).  ``Grouping: file`` (default)
    makes each file one bunch crossing whose GenEvents are its pile-up collisions (LHCb Gauss
    files); ``Grouping: event`` makes every GenEvent one event.  Event ``N`` is the same whatever
    the batch size or sharding.  Particles are selected as LHCb Lamarr's MCParticleSelector does
    (physical decay tree from the collision; statuses ``KeepStatuses``; hadrons, leptons, photons).
    Corrupt or truncated files end where the corruption starts (ERROR message naming file, event
    and line; counter ``corrupt files``).
    """

    Input = Property(list, [], "HepMC2/HepMC3 ASCII files or glob patterns (.gz/.bz2/.xz accepted)", item_type=str)
    Grouping = Property(str, "file", "'file': one file = one bunch crossing (its GenEvents are the pile-up "
                                  "collisions); 'event': one GenEvent = one event", choices=["file", "event"])
    TimeUnit = Property(str, "auto", "unit of the vertex times in the files: 'mm' (mm/c, HepMC standard), 'ns' "
                                     "(LHCb Gauss files) or 'auto' (decided at initialize from the flight "
                                     "distances of the first decays: distance = beta c dt)",
                        choices=["auto", "mm", "ns"])
    KeepStatuses = Property(list, [int(s) for s in PHYSICAL_STATUSES],
                         "HepMC/LHCb status codes of physical particles kept in /Event/MC/Particles", item_type=int)

    Header = Output("/Event/Gen/Header", "one row per event: n_collisions, ntracks_override (-1), signal_trials (1)")
    Collisions = Output("/Event/Gen/Collisions", "one row per pp collision (GenEvent): primary vertex x, y, z [mm], t [ns]")
    Vertices = Output("/Event/MC/Vertices", "MC vertices: PV (type 1) and decay vertices (type 2)")
    Particles = Output("/Event/MC/Particles", "selected MC particles (LHCb status codes kept)")

    def initialize(self):
        if not self.Input:
            raise ConfigurationError(f"{self.name}.Input: no input file given (a list of HepMC files or globs)")
        self._files = expand_inputs(self.Input)
        indices = []
        for path in self._files:
            ix = scan_hepmc_file(path)
            indices.append(ix)
            if ix.problem is not None:
                self.error(f"{path}: {ix.problem}; the file is treated as ending after its first "
                           f"{ix.good_events} events")
                self.counter("corrupt files").increment()
            elif ix.n_declared == 0:
                self.warning(f"{path}: no event in the file" + (" (an empty bunch crossing)" if self.Grouping == "file" else ""))
            elif ix.format == "hepmc2" and not ix.has_end_marker and not ix.compressed:
                self.warning(f"{path}: no END_EVENT_LISTING marker; the file may have been cut at an event boundary")
        self._source = HepMCSource(self._files, indices)
        self._statuses = np.asarray(self.KeepStatuses, dtype=np.int32)
        self._corrupt_reported: set[int] = set()
        self._time_unit = self.TimeUnit
        if self._time_unit == "auto":
            self._time_unit = self._detect_time_unit()
        if self.Grouping == "event":
            self._cum = np.concatenate([[0], np.cumsum(self._source.good)])
            self._n_available = int(self._cum[-1])
        else:
            self._n_available = len(self._files)
        self.info(f"{len(self._files)} file(s), {int(self._source.good.sum())} GenEvents, "
                  f"{self._n_available} events (Grouping={self.Grouping})")

    def _detect_time_unit(self) -> str:
        def first_events(limit=50):
            n = 0
            for f in range(len(self._files)):
                for k in range(int(self._source.good[f])):
                    if n >= limit:
                        return
                    try:
                        ev = self._source.read(f, k)
                    except CorruptEvent:
                        return
                    n += 1
                    yield ev

        unit, ratio, n = detect_time_unit(first_events())
        self._source.close()
        if unit is None and n == 0:
            self.warning("TimeUnit=auto: no decay with a measurable flight in the first events; assuming the "
                         "HepMC standard (mm/c). Set TimeUnit to silence this.")
            return "mm"
        if unit is None:
            raise ConfigurationError(
                f"{self.name}.TimeUnit=auto: flight distance / (beta dt) = {ratio:.4g} over {n} decays is neither 1 "
                f"(times in mm/c) nor c = 299.79 (times in ns); set TimeUnit explicitly")
        self.info(f"TimeUnit=auto: vertex times are in {'mm/c' if unit == 'mm' else 'ns'} (flight distance / "
                  f"(beta dt) = {ratio:.5g} over {n} decays)")
        return unit

    def available_events(self) -> int:
        """Number of flashsim events the input provides (counted at initialize)."""
        return self._n_available

    def _collisions_of(self, event_number: int):
        n = int(event_number)
        if n < 0 or n >= self._n_available:
            raise InputError(f"{self.name}: event {n} requested but the input provides {self._n_available} events "
                             f"(event numbers are 0-based indices into the input)")
        if self.Grouping == "file":
            return [(n, k) for k in range(int(self._source.good[n]))]
        f = int(np.searchsorted(self._cum, n, side="right") - 1)
        return [(f, n - int(self._cum[f]))]

    def _read(self, f, k):
        if k >= self._source.good[f]:  # the file was found corrupt earlier in this job
            return None
        try:
            return self._source.read(f, k)
        except CorruptEvent as exc:
            ix = self._source.indices[f]
            k = exc.index if exc.index >= 0 else k
            self.error(f"{self._files[f]}: event {k} (line {ix.lines[k]}) could not be read ({exc}); the file is "
                       f"treated as ending after its first {k} events")
            self._source.good[f] = k
            if f not in self._corrupt_reported:
                self._corrupt_reported.add(f)
                self.counter("corrupt files").increment()
            return None

    def execute(self, ctx):
        events = []
        n_gen = 0
        n_lost = 0
        for evn in np.asarray(ctx.event_numbers):
            collisions = []
            for f, k in self._collisions_of(evn):
                ev = self._read(f, k)
                if ev is None:
                    n_lost += 1
                    continue
                n_gen += 1
                collisions.append(genevent_to_raw(ev, self._time_unit))
            events.append(collisions)
        # MC-particle selection of all collisions of the batch at once (= select_truth + assemble_truth)
        out = select_truth_batch(events, self._statuses, np.asarray(ctx.event_numbers, dtype=np.int64))
        self.counter("GenEvents read").increment(n_gen)
        if n_lost:
            self.counter("unreadable GenEvents").increment(n_lost)
        self.averaging_counter("collisions per event").add(out["Header"]["n_collisions"])
        self.averaging_counter("MC particles per event").add(out["Particles"].counts)
        return out

    def finalize(self):
        src = getattr(self, "_source", None)
        if src is not None:
            src.close()
