"""Descriptor-driven candidate building: all combinations per event, combination cuts, vertex
fit, mother cuts (LHCb's ``CombineParticles`` / ``DecayTreeBuilder``).

``CombineParticles`` takes an LHCb decay descriptor (``[B+ -> (J/psi(1S) -> mu+ mu-) K+]cc``),
a list of particle locations (``Inputs``) and cuts in the cut grammar.  Sub-decays written in
parentheses are built bottom-up inside the same algorithm (the J/psi from mu+ mu-, then the B+
from J/psi K+); a particle written without daughters is taken from the inputs (tracks from a
particle maker, or composites from another ``CombineParticles``).  ``cc`` adds the charge
conjugate decay.

Per composite node:

1. every combination of one particle per daughter slot within each event (numba enumeration
   with per-event offsets; slots with the same particle type are taken in increasing row order,
   so a combination is never counted twice; a combination in which two daughters share a track
   is skipped: each reconstructed particle is used at most once per candidate);
2. the ``CombinationCut`` on the summed four-momentum (``AM``, ``ADAMASS``, ``ADOCAMAX`` ...);
3. the vertex fit of :mod:`algorithms.analysis.vertexfit` (tracks; composites as resonances when
   their PDG c*tau < 1 um, else as flying particles), failed fits dropped;
4. the best PV (smallest IPchi2), IP/IPchi2, FD/FDchi2, DIRA, corrected mass, proper time;
5. the ``MotherCut`` (``VFASPF(VCHI2/VDOF)``, ``BPVDIRA``, ``CHILD(PT, 1)`` ...).

Candidates are real: combinatorial ones are kept, truth matching happens in the tuple.
"""
from __future__ import annotations


import numba as nb
import numpy as np

from framework import Algorithm, Collection, ConfigurationError, Input, InputList, Output, Property

from . import vertexfit
from ._descriptors import canonical_form, preorder
from .cuts import CombinationView, CutError, ParticleView, compile_cut
from .kinematics import composite_measurement, pdg_charge, pdg_ctau, resolve_pid
from .particles import (
    NODE_FIELDS,
    Topology,
    default_columns,
    empty_particles,
    find_producer,
    line_pv_geometry,
    vertex_pv_geometry,
)

__all__ = ["enumerate_combinations", "combine_node", "CombineParticles", "RESONANCE_CTAU_MM"]

RESONANCE_CTAU_MM = 1e-3


# ---------------------------------------------------------------------------------------------
# enumeration kernel
# ---------------------------------------------------------------------------------------------
@nb.njit(cache=True)
def _combos(slot_off, slot_base, tracks, same_prev, fill, out_rows, out_off, e0, e1):
    k = slot_off.shape[0]
    T = tracks.shape[1]
    counts = np.zeros(e1 - e0, np.int64)
    cur = np.zeros(k, np.int64)
    for e in range(e0, e1):
        empty = False
        for j in range(k):
            if slot_off[j, e + 1] <= slot_off[j, e]:
                empty = True
        if empty:
            continue
        w = out_off[e - e0] if fill else 0
        c = 0
        j = 0
        cur[0] = -1
        while j >= 0:
            cur[j] += 1
            if cur[j] >= slot_off[j, e + 1] - slot_off[j, e]:
                j -= 1
                continue
            rj = slot_base[j] + slot_off[j, e] + cur[j]
            ok = True
            for a in range(j):
                ra = slot_base[a] + slot_off[a, e] + cur[a]
                for t1 in range(T):
                    x = tracks[rj, t1]
                    if x < 0:
                        break
                    for t2 in range(T):
                        y = tracks[ra, t2]
                        if y < 0:
                            break
                        if x == y:
                            ok = False
                            break
                    if not ok:
                        break
                if not ok:
                    break
            if not ok:
                continue
            if j == k - 1:
                if fill:
                    for a in range(k):
                        out_rows[w, a] = slot_off[a, e] + cur[a]
                    w += 1
                c += 1
                continue
            j += 1
            sp = same_prev[j]
            cur[j] = cur[sp] if sp >= 0 else -1
        counts[e - e0] = c
    return counts


def _slot_arrays(slot_offsets, slot_tracks):
    k = len(slot_offsets)
    n_ev = len(slot_offsets[0]) - 1
    so = np.zeros((k, n_ev + 1), np.int64)
    base = np.zeros(k, np.int64)
    T = max(1, max(t.shape[1] for t in slot_tracks))
    R = sum(t.shape[0] for t in slot_tracks)
    tr = np.full((R, T), -1, np.int32)
    r = 0
    for j in range(k):
        so[j] = slot_offsets[j]
        base[j] = r
        t = slot_tracks[j]
        tr[r:r + t.shape[0], :t.shape[1]] = t
        r += t.shape[0]
    return so, base, tr


def enumerate_combinations(slot_offsets, slot_tracks, same_prev, max_rows: int = 2_000_000):
    """All combinations of one row per slot within each event.

    ``slot_offsets``: per slot, the per-event offsets (n_events+1) of its candidate rows;
    ``slot_tracks``: per slot, (R_j, T_j) int array of the track indices each row uses (-1
    padding after the valid ones); ``same_prev[j]``: the previous slot drawing from the same list
    (then rows are taken in increasing order), -1 otherwise.  Combinations where two rows share a
    track are skipped.  Yields ``(event_index, rows)`` chunks (events in order) with ``rows``
    (M, k) the row of each slot within that slot's list, at most ~``max_rows`` rows per chunk."""
    so, base, tr = _slot_arrays(slot_offsets, slot_tracks)
    sp = np.asarray(same_prev, dtype=np.int64)
    n_ev = so.shape[1] - 1
    k = so.shape[0]
    dummy = np.zeros((0, k), np.int64)
    counts = _combos(so, base, tr, sp, False, dummy, np.zeros(1, np.int64), 0, n_ev)
    cum = np.concatenate([[0], np.cumsum(counts)])
    e0 = 0
    while e0 < n_ev:
        e1 = int(np.searchsorted(cum, cum[e0] + max_rows, side="right")) - 1
        e1 = min(max(e1, e0 + 1), n_ev)
        cnt = counts[e0:e1]
        off = np.concatenate([[0], np.cumsum(cnt)]).astype(np.int64)
        rows = np.empty((int(off[-1]), k), np.int64)
        if off[-1]:
            _combos(so, base, tr, sp, True, rows, off, e0, e1)
        yield np.repeat(np.arange(e0, e1, dtype=np.int64), cnt), rows
        e0 = e1


# ---------------------------------------------------------------------------------------------
# building one composite node
# ---------------------------------------------------------------------------------------------
class _Gather(dict):
    """Columns of ``coll`` at ``rows``, gathered on first access."""

    def __init__(self, coll: Collection, rows):
        super().__init__()
        self.coll = coll
        self.rows = rows

    def __missing__(self, key):
        v = self.coll[key][self.rows]
        self[key] = v
        return v

    def __contains__(self, key):
        return key in self.coll


def _fit_inputs(cols: dict, basic: bool, kind: str):
    if basic:
        meas, cov = vertexfit.track_inputs(cols["state"], cols["cov"], np.abs(cols["charge"]).astype(np.float64))
        return meas, cov, np.asarray(cols["z"], dtype=np.float64), np.zeros(len(meas), np.int8), cols["m"]
    meas, cov, z, kinds = composite_measurement(cols["vtx"], cols["p4"], cols["cov7"], kind)
    return meas, cov, z, kinds, np.zeros(len(meas))


def combine_node(pid: int, slots: list, slot_tops: list, pvs: Collection, comb_cut=None, mother_cut=None,
                 stats: dict | None = None, max_rows: int = 2_000_000, max_iter: int = 10) -> Collection:
    """Build composites ``pid`` from one particle collection per daughter slot (``slots``, all
    with the same events; the same object twice for two daughters of the same type) with their
    :class:`Topology` (``slot_tops``).  Returns a particle collection whose node arrays are
    [head, slot 0 nodes, slot 1 nodes, ...]."""
    n_ev = pvs.n_events
    k = len(slots)
    same_prev = []
    for j in range(k):
        prev = [a for a in range(j) if slots[a] is slots[j]]
        same_prev.append(prev[-1] if prev else -1)
    slot_basic = [t.basic[0] for t in slot_tops]
    slot_tracks = [np.ascontiguousarray(s["nodes_track"][:, t.leaves()], dtype=np.int32)
                   for s, t in zip(slots, slot_tops)]
    kinds = ["flying" if pdg_ctau(abs(int(t.pids[0]))) >= RESONANCE_CTAU_MM else "resonance" for t in slot_tops]
    charge = int(round(pdg_charge(pid)))
    parts = []
    stats = stats if stats is not None else {}
    for ev, rows in enumerate_combinations([s.offsets for s in slots], slot_tracks, same_prev, max_rows):
        stats["combinations"] = stats.get("combinations", 0) + len(ev)
        if len(ev) == 0:
            continue
        dau = [_Gather(slots[j], rows[:, j]) for j in range(k)]
        p4sum = sum(d["p4"] for d in dau)
        if comb_cut is not None and not comb_cut.is_trivial:
            def docas(dau=dau):
                dmax = np.zeros(len(dau[0]["pid"]))
                cmax = np.zeros(len(dau[0]["pid"]))
                for a in range(k):
                    for b in range(a + 1, k):
                        d, c2 = vertexfit.doca(dau[a]["state"], dau[a]["z"], dau[b]["state"], dau[b]["z"],
                                               dau[a]["cov"], dau[b]["cov"])
                        dmax = np.fmax(dmax, d)
                        cmax = np.fmax(cmax, c2)
                return dmax, cmax

            keep = comb_cut(CombinationView(p4sum, [ParticleView(d) for d in dau], docas))
            if not keep.any():
                continue
            ev, rows = ev[keep], rows[keep]
            dau = [_Gather(slots[j], rows[:, j]) for j in range(k)]
        stats["passed_combination_cut"] = stats.get("passed_combination_cut", 0) + len(ev)
        # vertex fit
        M = len(ev)
        fi = [_fit_inputs(d, slot_basic[j], kinds[j]) for j, d in enumerate(dau)]
        meas = np.stack([f[0] for f in fi], 1).reshape(M * k, 7)
        cov = np.stack([f[1] for f in fi], 1).reshape(M * k, 7, 7)
        z = np.stack([f[2] for f in fi], 1).reshape(M * k)
        kd = np.stack([f[3] for f in fi], 1).reshape(M * k)
        ms = np.stack([np.asarray(f[4], dtype=np.float64) for f in fi], 1).reshape(M * k)
        fit = vertexfit.fit_vertex_general(meas, cov, z, kd, ms, np.arange(M + 1, dtype=np.int64) * k, max_iter)
        good = (fit["status"] <= vertexfit.NONCONVERGED) & np.isfinite(fit["chi2"]) & np.isfinite(fit["mass"])
        stats["vertex_fit_failed"] = stats.get("vertex_fit_failed", 0) + int(np.count_nonzero(~good))
        if not good.any():
            continue
        ev, rows = ev[good], rows[good]
        dau = [_Gather(slots[j], rows[:, j]) for j in range(k)]
        M = len(ev)
        head = default_columns(M)
        head["pid"][:] = pid
        head["charge"][:] = charge
        head["p4"] = fit["p4"][good]
        head["m"] = fit["mass"][good]
        head["vtx"] = fit["vertex"][good]
        head["vcov"] = fit["vertex_cov"][good]
        head["vchi2"] = fit["chi2"][good]
        head["vndof"] = fit["ndof"][good].astype(np.int32)
        head["cov7"] = fit["cov7"][good]
        lm, lc, lz, _ = composite_measurement(head["vtx"], head["p4"], head["cov7"], "flying")
        head["state"], head["cov"], head["z"] = lm[:, :5].copy(), lc[:, :5, :5].copy(), lz
        head.update(line_pv_geometry(ev, head["state"], head["z"], head["cov"], pvs))
        geo = vertex_pv_geometry(head["vtx"], head["vcov"], head["p4"], head["m"], head["ownpv"], head["ownpv_cov"])
        for key in ("fd", "fdchi2", "dira", "mcorr", "tau"):
            head[key] = geo[key]
        if mother_cut is not None and not mother_cut.is_trivial:
            keep = mother_cut(ParticleView(head, [ParticleView(d) for d in dau]))
            if not keep.any():
                continue
            ev, rows = ev[keep], rows[keep]
            head = {key: v[keep] for key, v in head.items()}
            dau = [_Gather(slots[j], rows[:, j]) for j in range(k)]
        head.update(_gather_nodes(head, slots, rows))
        parts.append((ev, head))
    n_nodes = 1 + sum(s["nodes_pid"].shape[1] for s in slots)
    if not parts:
        return empty_particles(n_ev, n_nodes, pvs.event_numbers)
    if len(parts) == 1:
        ev, cols = parts[0]
    else:
        ev = np.concatenate([p[0] for p in parts])
        cols = {key: np.concatenate([p[1][key] for p in parts]) for key in parts[0][1]}
    stats["candidates"] = stats.get("candidates", 0) + len(ev)
    return Collection.from_event_index(cols, ev, n_ev, pvs.event_numbers)


def _gather_nodes(head: dict, slots: list, rows) -> dict:
    """``nodes_<field>`` of new composites: the head's values, then each daughter's node arrays
    taken straight from its slot collection (one copy, no intermediate gathers)."""
    sizes = [s["nodes_pid"].shape[1] for s in slots]
    M = len(rows)
    out = {}
    for f, (dt, sh) in NODE_FIELDS.items():
        arr = np.empty((M, 1 + sum(sizes)) + sh, dtype=dt)
        arr[:, 0] = head[f]
        a = 1
        for j, s in enumerate(slots):
            s.take(f"nodes_{f}", rows[:, j], out=arr[:, a:a + sizes[j]])
            a += sizes[j]
        out[f"nodes_{f}"] = arr
    return out


def merge_particles(colls, n_events: int, event_numbers=None, dedupe_tracks: bool = False) -> Collection:
    """Rows of several particle collections (same columns), merged event by event: in each event
    the rows of the first collection, then those of the second, ... (the order of a stable sort by
    event).  Each column is written once, straight to its final rows (no concatenate-and-sort)."""
    colls = [c for c in colls if c is not None]
    if len(colls) == 1:
        return colls[0]
    names = colls[0].names
    counts = [np.asarray(c.counts, dtype=np.int64) for c in colls]
    total = np.sum(counts, axis=0)
    offsets = np.zeros(n_events + 1, dtype=np.int64)
    np.cumsum(total, out=offsets[1:])
    # destination row of each source row: event start + rows of earlier collections in that event
    # + position within its own collection's event
    dest = []
    before = np.zeros(n_events, dtype=np.int64)
    for c, cnt in zip(colls, counts):
        ev = c.event_index
        dest.append(offsets[:-1][ev] + before[ev] + (np.arange(len(ev), dtype=np.int64) - c.offsets[:-1][ev]))
        before = before + cnt
    n = int(offsets[-1])
    cols = {}
    for k in names:
        first = colls[0][k]
        out = np.empty((n,) + first.shape[1:], dtype=first.dtype)
        for c, d in zip(colls, dest):
            out[d] = c[k]
        cols[k] = out
    if not dedupe_tracks or n == 0:
        return Collection(cols, offsets, event_numbers)
    ev = np.repeat(np.arange(n_events, dtype=np.int64), total)
    key = np.stack([ev, cols["track"].astype(np.int64), cols["pid"].astype(np.int64)], 1)
    _, first = np.unique(key, axis=0, return_index=True)
    keep = np.zeros(n, bool)
    keep[first] = True
    ev = ev[keep]
    cols = {k: v[keep] for k, v in cols.items()}
    return Collection.from_event_index(cols, ev, n_events, event_numbers)


# ---------------------------------------------------------------------------------------------
# the algorithm
# ---------------------------------------------------------------------------------------------
class CombineParticles(Algorithm):
    """Combine particles into decays given by an LHCb decay descriptor, with cuts and a vertex fit.

    ``Decay``: e.g. ``[B+ -> (J/psi(1S) -> mu+ mu-) K+]cc`` (sub-decays in parentheses are built
    here, bottom-up; particles without daughters come from ``Inputs``).  ``DaughtersCuts`` apply
    to input particles and to intermediate composites (keys: particle names, both charges);
    ``CombinationCut``/``MotherCut`` to the head, ``CombinationCuts``/``MotherCuts`` (by name) to
    intermediate composites.  Output: ``/Event/Phys/<name>/Particles``."""

    Decay = Property(str, "", "decay descriptor, e.g. '[B+ -> (J/psi(1S) -> mu+ mu-) K+]cc'")
    Inputs = InputList([], "particle locations (outputs of MakeParticles / CombineParticles)")
    DaughtersCuts = Property(dict, {}, "particle name -> cut applied to that daughter type (both charges)")
    CombinationCut = Property(str, "", "cut on the combination before the vertex fit (AM, ADAMASS, ADOCAMAX ...)")
    MotherCut = Property(str, "", "cut on the fitted head (VFASPF(VCHI2/VDOF), BPVDIRA, BPVVDCHI2 ...)")
    CombinationCuts = Property(dict, {}, "intermediate composite name -> its combination cut")
    MotherCuts = Property(dict, {}, "intermediate composite name -> its mother cut")
    MaxCombinations = Property(int, 2_000_000, "combinations processed at once (memory bound, not a cut)")
    VertexFitMaxIter = Property(int, 10, "maximum Gauss-Newton iterations of the vertex fit")
    Vertices = Input("/Event/Rec/Vertices", "reconstructed primary vertices")
    Particles = Output("/Event/Phys/Particles", "candidates (default /Event/Phys/<name>/Particles)")

    def __init__(self, name=None, **properties):
        super().__init__(name, **properties)
        if "Particles" not in self._property_values:
            self._property_values["Particles"] = f"/Event/Phys/{self.name}/Particles"

    # -- configuration ---------------------------------------------------------------------
    def initialize(self):
        from ._descriptors import default_table, parse

        if not self.Decay.strip():
            raise ConfigurationError(f"{self.name}.Decay is empty: give a decay descriptor, e.g. "
                                     "'[B+ -> (J/psi(1S) -> mu+ mu-) K+]cc'")
        try:
            self.descriptor = parse(self.Decay)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{self.name}.Decay: {exc}") from None
        if not self.Inputs:
            raise ConfigurationError(f"{self.name}.Inputs is empty: list the particle locations to combine")
        self.table = default_table()
        self.alternatives = self.descriptor.alternatives(self.table)
        # producers of the inputs
        self.providers = []
        for i, path in enumerate(self.Inputs):
            alg = find_producer(self.app, path.rstrip("/"), f"{self.name}.Inputs[{i}]")
            self.providers.append((i, alg.particle_topology(), alg.particle_species(), path))
        # cuts
        self.topology = self._topology(self.alternatives[0])
        for alt in self.alternatives[1:]:
            self._topology(alt)
        self.daughter_cuts = self._named_cuts(self.DaughtersCuts, "DaughtersCuts", "particle")
        self.comb_cuts = self._named_cuts(self.CombinationCuts, "CombinationCuts", "combination", composite=True)
        self.mother_cuts = self._named_cuts(self.MotherCuts, "MotherCuts", "mother", composite=True)
        try:
            self.head_comb_cut = compile_cut(self.CombinationCut, "combination")
        except CutError as exc:
            raise ConfigurationError(f"{self.name}.CombinationCut: {exc}") from None
        try:
            self.head_mother_cut = compile_cut(self.MotherCut, "mother")
            self.head_mother_cut.check_kind(False, self.alternatives[0].name)
        except CutError as exc:
            raise ConfigurationError(f"{self.name}.MotherCut: {exc}") from None
        self.stats = {}

    def _named_cuts(self, mapping, prop, context, composite=False):
        heads = {id(a) for a in self.alternatives}
        nodes = [n for alt in self.alternatives for n in preorder(alt) if id(n) not in heads]
        if composite:
            nodes = [n for n in nodes if n.daughters]
        out = {}
        for key, text in mapping.items():
            try:
                pid = resolve_pid(key)
            except ConfigurationError as exc:
                raise ConfigurationError(f"{self.name}.{prop}: {exc}") from None
            match = [n for n in nodes if abs(n.pid) == abs(pid)]
            if not match:
                names = sorted({n.name for n in nodes})
                raise ConfigurationError(f"{self.name}.{prop}: {key!r} is not a "
                                         f"{'intermediate composite' if composite else 'daughter'} in "
                                         f"{self.Decay!r} (candidates: {', '.join(names) or 'none'})")
            if abs(pid) in out:
                raise ConfigurationError(f"{self.name}.{prop}: two cuts for {key!r} and its charge conjugate")
            try:
                cut = compile_cut(text, context)
                if context == "particle":
                    for n in match:
                        cut.check_kind(self._is_basic(n), n.name)
                elif context == "mother":
                    cut.check_kind(False, key)
            except CutError as exc:
                raise ConfigurationError(f"{self.name}.{prop}[{key!r}]: {exc}") from None
            out[abs(pid)] = cut
        return out

    def _is_basic(self, node) -> bool:
        return not node.daughters and self._leaf_providers(node)[0][1].basic[0]

    def _leaf_providers(self, node):
        provs = [p for p in self.providers if node.pid in p[2]]
        if not provs:
            offered = sorted({self.table.name(s) for p in self.providers for s in p[2]})
            raise ConfigurationError(
                f"{self.name}: cannot build {self.Decay!r}: no input provides {node.name!r} "
                f"(the inputs {', '.join(p[3] for p in self.providers)} provide {', '.join(offered) or 'nothing'}); "
                f"add a particle maker or combiner for {node.name!r} to Inputs, or write its decay in the descriptor")
        shapes = {p[1].shape() for p in provs}
        if len(shapes) > 1:
            raise ConfigurationError(f"{self.name}: inputs {[p[3] for p in provs]} provide {node.name!r} with different "
                                     "decay trees; combine them separately")
        return provs

    def _topology(self, node) -> Topology:
        if not node.daughters:
            provs = self._leaf_providers(node)
            t = provs[0][1]
            return Topology((node.pid,) + tuple(t.pids[1:]), (node.name,) + tuple(t.names[1:]), t.parent, t.basic)
        return Topology.combine(node.pid, node.name, [self._topology(d) for d in node.daughters])

    def particle_topology(self) -> Topology:
        return self.topology

    def particle_species(self) -> set:
        return {a.pid for a in self.alternatives}

    # -- execution -------------------------------------------------------------------------
    def execute(self, ctx, Vertices, Inputs):
        cache = {}
        parts = []
        for alt in self.alternatives:
            parts.append(self._build(alt, Inputs, Vertices, cache, head=True))
        out = merge_particles(parts, ctx.n_events, ctx.event_numbers)
        self.counter("candidates").increment(len(out))
        for key in ("combinations", "passed_combination_cut", "vertex_fit_failed"):
            self.counter(key).increment(self.stats.pop(key, 0))
        self.stats.clear()
        return out

    def _build(self, node, inputs, pvs, cache, head=False):
        sig = _signature(node) + (head,)
        if sig in cache:
            return cache[sig]
        if node.daughters and not head:
            # the same composite with its daughters in another order (a self-conjugate resonance
            # of the charge-conjugate alternative, J/psi -> mu- mu+): reorder the nodes, don't refit
            reused = self._reorder_cached(node, cache)
            if reused is not None:
                cache[sig] = reused
                return reused
        if not node.daughters:
            colls = []
            for key, _top, species, _path in self._leaf_providers(node):
                c = inputs[key]
                colls.append(c.select_lazy(np.asarray(c["pid"]) == node.pid))
            out = merge_particles(colls, pvs.n_events, pvs.event_numbers, dedupe_tracks=self._is_basic(node))
        else:
            slots = [self._build(d, inputs, pvs, cache) for d in node.daughters]
            tops = [self._topology(d) for d in node.daughters]
            comb = self.head_comb_cut if head else self.comb_cuts.get(abs(node.pid))
            moth = self.head_mother_cut if head else self.mother_cuts.get(abs(node.pid))
            out = combine_node(node.pid, slots, tops, pvs, comb, moth, self.stats, self.MaxCombinations,
                               self.VertexFitMaxIter)
        if not head:
            cut = self.daughter_cuts.get(abs(node.pid))
            if cut is not None and not cut.is_trivial and len(out):
                out = out.select(cut(ParticleView(out.columns)))
        cache[sig] = out
        if node.daughters and not head:
            cache[("unordered", canonical_form(node))] = (node, out)
        return out

    def _reorder_cached(self, node, cache):
        hit = cache.get(("unordered", canonical_form(node)))
        if hit is None:
            return None
        built, coll = hit
        sigs = [_signature(d) for d in built.daughters]
        sizes = [self._topology(d).n_nodes for d in built.daughters]
        starts = np.concatenate([[1], 1 + np.cumsum(sizes)[:-1]]).astype(int)
        used = [False] * len(sigs)
        idx = [0]
        for d in node.daughters:
            s = _signature(d)
            j = next((j for j in range(len(sigs)) if not used[j] and sigs[j] == s), None)
            if j is None:  # a daughter's own sub-tree is ordered differently: build it
                return None
            used[j] = True
            idx.extend(range(starts[j], starts[j] + sizes[j]))
        if idx == list(range(len(idx))):
            return coll
        idx = np.asarray(idx)
        cols = {k: (v[:, idx] if k.startswith("nodes_") else v) for k, v in coll.columns.items()}
        return Collection(cols, coll.offsets, coll.event_numbers)


def _signature(node):
    return (node.pid,) + tuple(_signature(d) for d in node.daughters)
