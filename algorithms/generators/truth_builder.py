"""Convert external generator records (HepMC events, Pythia8 event records) into the columnar
MC truth model of flashsim (``/Event/Gen/Header``, ``/Event/Gen/Collisions``,
``/Event/MC/Vertices``, ``/Event/MC/Particles``; see docs/framework-api.md).

Everything here is vectorised with numpy: one generator collision (one HepMC ``GenEvent`` or one
Pythia event) costs a fixed number of array operations, never a loop over particles.  Tree walks
(nearest kept ancestor, "is below a signal-at-rest particle", root of the tree) use pointer
jumping, i.e. ``O(log depth)`` vectorised passes.

Particle selection (what ends up in ``/Event/MC/Particles``) follows LHCb Lamarr's
``MCParticleSelector`` (SQLamarr ``src/MCParticleSelector.cpp``), made explicit and vectorised:

* the physical decay tree hanging from the collision is kept: LHCb status codes
  1 (stable in the production generator), 2 (decayed by it), 777 (decayed by the decay
  generator), 888 (produced by the production generator, decayed by the decay generator),
  889 (signal in the lab frame), 999 (stable in the decay generator);
* status 3 (documentation), 4 (HepMC3 beam) and 998 (signal at rest; and its whole rest-frame
  subtree) are dropped;
* of the kept statuses only hadrons, leptons (charged leptons and neutrinos), photons and nuclei
  are kept: quarks, gluons, diquarks, pomerons, diffractive states and gauge/Higgs bosons are
  dropped (Pythia writes partons with status 2 in LHCb's HepMC files);
* a kept particle's ``mother`` is its nearest *kept* ancestor, and its ``origin_vertex`` is that
  mother's end vertex; particles without a kept ancestor (hadronisation products) come from the
  primary vertex (vertex 0 of their collision, type 1) -- as in Lamarr, where a dropped particle
  passes its production vertex down to its daughters;
* every kept particle with a generator end vertex gets an MC vertex (type 2) at that point, also
  when none of its daughters is kept (it did decay);
* ``is_signal = (status == 889)``.

Differences from Lamarr, on purpose: both beams' sub-trees are walked (Lamarr starts from a single
beam vertex, which loses e.g. the second proton of an elastic collision), and the per-particle
SQL statements are replaced by array operations.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numba as nb
import numpy as np

try:
    from framework import Collection
except Exception:  # pragma: no cover - framework written concurrently
    Collection = None

__all__ = [
    "C_MM_PER_NS",
    "PHYSICAL_STATUSES",
    "RawCollision",
    "TruthCollision",
    "nearest_kept_ancestor",
    "propagate_flag_down",
    "root_of",
    "kept_species",
    "select_truth",
    "assemble_truth",
    "truth_dtypes",
]

C_MM_PER_NS = 299.792458  # speed of light [mm/ns]
PHYSICAL_STATUSES = np.array([1, 2, 777, 888, 889, 999], dtype=np.int32)
SIGNAL_STATUS = 889
SIGNAL_AT_REST_STATUS = 998

PARTICLE_DTYPES = {
    "pid": np.int32, "px": np.float64, "py": np.float64, "pz": np.float64, "E": np.float64,
    "mass": np.float64, "origin_vertex": np.int32, "end_vertex": np.int32, "mother": np.int32,
    "collision": np.int32, "is_signal": np.bool_, "status": np.int32,
}
VERTEX_DTYPES = {"x": np.float64, "y": np.float64, "z": np.float64, "t": np.float64,
                 "type": np.int8, "collision": np.int32}
COLLISION_DTYPES = {"x": np.float64, "y": np.float64, "z": np.float64, "t": np.float64,
                    "collision": np.int32}
HEADER_DTYPES = {"n_collisions": np.int32, "ntracks_override": np.int32, "signal_trials": np.int32}


def truth_dtypes() -> dict[str, dict[str, type]]:
    """Column names and dtypes of the four truth collections."""
    return {"Header": dict(HEADER_DTYPES), "Collisions": dict(COLLISION_DTYPES),
            "Vertices": dict(VERTEX_DTYPES), "Particles": dict(PARTICLE_DTYPES)}


# ------------------------------------------------------------------------------------------
# tree helpers (pointer jumping)
# ------------------------------------------------------------------------------------------
@nb.njit(cache=True)
def _nearest_kept_ancestor(parent, keep):
    n = parent.size
    anc = np.full(n, -2, dtype=np.int64)  # -2: not yet known
    stack = np.empty(n, dtype=np.int64)
    for i in range(n):
        if anc[i] != -2:
            continue
        depth = 0
        j = i
        result = -1
        while True:
            p = parent[j]
            if p < 0:
                result = -1
                break
            if keep[p]:
                result = p
                break
            if anc[p] != -2:
                result = anc[p]
                break
            stack[depth] = j
            depth += 1
            if depth >= n:
                return anc, False  # cycle
            j = p
        anc[j] = result
        for k in range(depth):
            anc[stack[k]] = result
    return anc, True


@nb.njit(cache=True)
def _propagate_flag_down(parent, flag):
    n = parent.size
    state = np.zeros(n, dtype=np.int8)  # 0 unknown, 1 true, 2 false
    stack = np.empty(n, dtype=np.int64)
    for i in range(n):
        if state[i] != 0:
            continue
        depth = 0
        j = i
        while True:
            if flag[j]:
                value = 1
                break
            p = parent[j]
            if p < 0:
                value = 2
                break
            if state[p] != 0:
                value = state[p]
                break
            stack[depth] = j
            depth += 1
            if depth >= n:
                return state == 1, False
            j = p
        state[j] = value
        for k in range(depth):
            state[stack[k]] = value
    return state == 1, True


@nb.njit(cache=True)
def _root_of(parent):
    n = parent.size
    root = np.full(n, -1, dtype=np.int64)
    stack = np.empty(n, dtype=np.int64)
    for i in range(n):
        if root[i] >= 0:
            continue
        depth = 0
        j = i
        while parent[j] >= 0 and root[j] < 0:
            stack[depth] = j
            depth += 1
            if depth >= n:
                return root, False
            j = parent[j]
        r = root[j] if root[j] >= 0 else j
        root[j] = r
        for k in range(depth):
            root[stack[k]] = r
    return root, True


def nearest_kept_ancestor(parent: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Index of the nearest kept strict ancestor of every particle (-1 if none).

    ``parent[i]`` is the index of the (first) parent of particle ``i`` or -1; the parent graph
    must be acyclic.  One memoised walk per particle (numba): O(n).
    """
    parent = np.ascontiguousarray(parent, dtype=np.int64)
    anc, ok = _nearest_kept_ancestor(parent, np.ascontiguousarray(keep, dtype=np.bool_))
    if not ok:
        raise ValueError("the parent graph has a cycle")
    return anc


def propagate_flag_down(parent: np.ndarray, flag: np.ndarray) -> np.ndarray:
    """``flag[i] or flag[any ancestor of i along the parent chain]``."""
    out, ok = _propagate_flag_down(np.ascontiguousarray(parent, dtype=np.int64),
                                   np.ascontiguousarray(flag, dtype=np.bool_))
    if not ok:
        raise ValueError("the parent graph has a cycle")
    return out


def root_of(parent: np.ndarray) -> np.ndarray:
    """Topmost ancestor of every particle along the parent chain (itself if it has no parent)."""
    out, ok = _root_of(np.ascontiguousarray(parent, dtype=np.int64))
    if not ok:
        raise ValueError("the parent graph has a cycle")
    return out


@functools.lru_cache(maxsize=None)
def _species_ok_scalar(pid: int) -> bool:
    from particle import pdgid

    apid = abs(int(pid))
    if apid == 22:
        return True
    if pdgid.is_lepton(apid):  # charged leptons and neutrinos (11-18)
        return True
    if pdgid.is_nucleus(apid):
        return True
    if apid == 990 or apid >= 9900000:  # pomeron, diffractive states
        return False
    return bool(pdgid.is_hadron(apid))


def kept_species(pids: np.ndarray) -> np.ndarray:
    """True for hadrons, leptons, photons and nuclei (PDG classification of `particle`)."""
    pids = np.asarray(pids)
    if pids.size == 0:
        return np.zeros(0, dtype=bool)
    uniq, inv = np.unique(pids, return_inverse=True)
    ok = np.fromiter((_species_ok_scalar(int(p)) for p in uniq), dtype=bool, count=uniq.size)
    return ok[inv.reshape(pids.shape)]


# ------------------------------------------------------------------------------------------
# raw (unselected) and selected per-collision records
# ------------------------------------------------------------------------------------------
@dataclass
class RawCollision:
    """One generator collision before selection.  Units MeV, mm, ns.

    Particles ``i``: ``pid, status, px, py, pz, E, mass``; ``parent[i]`` (first parent, -1 for
    none); ``end_key[i]`` an integer identifying the end vertex (-1 none; particles sharing an end
    vertex share the key) with its position ``end_pos[i] = (x, y, z, t)``.  ``pv = (x, y, z, t)``
    is the primary vertex; ``is_beam[i]`` marks incoming beam particles (roots of the tree);
    ``pv_children[i]`` marks particles produced at the primary vertex.
    """

    pid: np.ndarray
    status: np.ndarray
    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    E: np.ndarray
    mass: np.ndarray
    parent: np.ndarray
    end_key: np.ndarray
    end_pos: np.ndarray  # [n, 4]
    pv: np.ndarray  # [4]
    is_beam: np.ndarray
    pv_children: np.ndarray
    children_count: np.ndarray | None = None  # number of generator children (for checks)
    extra: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.pid.size)


@dataclass
class TruthCollision:
    """One collision after selection, with within-collision indices."""

    particles: dict  # columns of PARTICLE_DTYPES minus "collision"
    vertices: dict  # columns of VERTEX_DTYPES minus "collision"; vertex 0 is the PV
    pv: np.ndarray  # (x, y, z, t)
    selected: np.ndarray  # indices into the raw record of the kept particles

    @property
    def n_particles(self) -> int:
        return int(self.particles["pid"].size)

    @property
    def n_vertices(self) -> int:
        return int(self.vertices["x"].size)


def select_truth(raw: RawCollision, statuses=PHYSICAL_STATUSES) -> TruthCollision:
    """Apply the Lamarr-like selection (module doc) to one collision; fully vectorised."""
    n = raw.n
    parent = np.asarray(raw.parent, dtype=np.int64)
    status = np.asarray(raw.status, dtype=np.int32)
    if n:
        # connected to the collision: the root of the first-parent chain is a beam particle or
        # a particle produced at the primary vertex
        root = root_of(parent)
        connected = raw.is_beam[root] | raw.pv_children[root]
        at_rest_tree = propagate_flag_down(parent, status == SIGNAL_AT_REST_STATUS)
        keep = np.isin(status, statuses) & kept_species(raw.pid) & connected & ~at_rest_tree & ~raw.is_beam
    else:
        keep = np.zeros(0, dtype=bool)
    sel = np.flatnonzero(keep)
    # nearest kept ancestor, mapped to the new indexing
    anc = nearest_kept_ancestor(parent, keep)
    new_index = np.full(n + 1, -1, dtype=np.int64)
    new_index[sel] = np.arange(sel.size)
    mother_old = anc[sel]
    mother = new_index[np.where(mother_old >= 0, mother_old, n)]

    # MC vertices: PV first, then one per distinct end vertex of a kept particle (in order of
    # first appearance among the kept particles)
    end_key = np.asarray(raw.end_key, dtype=np.int64)[sel]
    has_end = end_key >= 0
    keys = end_key[has_end]
    uk, first, inv = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    end_vertex = np.full(sel.size, -1, dtype=np.int64)
    end_vertex[has_end] = 1 + rank[inv]
    n_vtx = 1 + uk.size
    pos = np.empty((n_vtx, 4), dtype=np.float64)
    pos[0] = raw.pv
    if uk.size:
        pos[1 + rank[inv]] = np.asarray(raw.end_pos, dtype=np.float64)[sel[has_end]]
    vtype = np.full(n_vtx, 2, dtype=np.int8)
    vtype[0] = 1
    # origin vertex = end vertex of the kept mother, else the PV
    origin = np.zeros(sel.size, dtype=np.int64)
    has_mother = mother >= 0
    origin[has_mother] = end_vertex[mother[has_mother]]
    # (a kept mother always has an end vertex since it has descendants; guard anyway)
    origin[origin < 0] = 0

    particles = {
        "pid": np.asarray(raw.pid, dtype=np.int32)[sel],
        "px": np.asarray(raw.px, dtype=np.float64)[sel],
        "py": np.asarray(raw.py, dtype=np.float64)[sel],
        "pz": np.asarray(raw.pz, dtype=np.float64)[sel],
        "E": np.asarray(raw.E, dtype=np.float64)[sel],
        "mass": np.asarray(raw.mass, dtype=np.float64)[sel],
        "origin_vertex": origin.astype(np.int32),
        "end_vertex": end_vertex.astype(np.int32),
        "mother": mother.astype(np.int32),
        "is_signal": status[sel] == SIGNAL_STATUS,
        "status": status[sel],
    }
    vertices = {"x": pos[:, 0], "y": pos[:, 1], "z": pos[:, 2], "t": pos[:, 3], "type": vtype}
    return TruthCollision(particles, vertices, np.asarray(raw.pv, dtype=np.float64), sel)


def _concat(parts, key, dtype):
    if not parts:
        return np.zeros(0, dtype=dtype)
    return np.concatenate([np.asarray(p[key], dtype=dtype) for p in parts])


def assemble_truth(events, event_numbers=None, signal_trials=None, ntracks_override=None):
    """Build the four truth collections from ``events``: a list (one entry per flashsim event)
    of lists of :class:`TruthCollision` (its pile-up collisions).

    Returns a dict ``{"Header", "Collisions", "Vertices", "Particles"}`` of
    :class:`framework.Collection` (or of plain ``(columns, counts)`` tuples when the framework
    is not importable).  Cross references are shifted to within-event indices.
    """
    n_events = len(events)
    coll_counts = np.array([len(e) for e in events], dtype=np.int64)
    flat = [c for e in events for c in e]
    collision_index = np.concatenate([np.arange(k, dtype=np.int32) for k in coll_counts]) if flat else np.zeros(0, np.int32)
    npart = np.array([c.n_particles for c in flat], dtype=np.int64)
    nvtx = np.array([c.n_vertices for c in flat], dtype=np.int64)
    # offsets of each collision's vertices/particles within its event
    ev_of_coll = np.repeat(np.arange(n_events), coll_counts)

    def within_event_offsets(counts):
        cum = np.cumsum(counts) - counts  # global offset of each collision
        first_coll = np.cumsum(coll_counts) - coll_counts
        ev_start = np.zeros(n_events, dtype=np.int64)
        has = coll_counts > 0
        ev_start[has] = cum[first_coll[has]]
        return cum - ev_start[ev_of_coll]

    voff = within_event_offsets(nvtx) if flat else np.zeros(0, np.int64)
    poff = within_event_offsets(npart) if flat else np.zeros(0, np.int64)

    P = {k: _concat([c.particles for c in flat], k, dt) for k, dt in PARTICLE_DTYPES.items() if k != "collision"}
    V = {k: _concat([c.vertices for c in flat], k, dt) for k, dt in VERTEX_DTYPES.items() if k != "collision"}
    p_voff = np.repeat(voff, npart)
    p_poff = np.repeat(poff, npart)
    for key in ("origin_vertex", "end_vertex"):
        P[key] = np.where(P[key] >= 0, P[key] + p_voff, -1).astype(np.int32)
    P["mother"] = np.where(P["mother"] >= 0, P["mother"] + p_poff, -1).astype(np.int32)
    P["collision"] = np.repeat(collision_index, npart).astype(np.int32)
    V["collision"] = np.repeat(collision_index, nvtx).astype(np.int32)
    P = {k: P[k] for k in PARTICLE_DTYPES}
    V = {k: V[k] for k in VERTEX_DTYPES}
    pv = np.array([c.pv for c in flat], dtype=np.float64).reshape(-1, 4)
    C = {"x": pv[:, 0], "y": pv[:, 1], "z": pv[:, 2], "t": pv[:, 3], "collision": collision_index}

    ev_particles = np.bincount(ev_of_coll, weights=npart, minlength=n_events).astype(np.int64) if flat else np.zeros(n_events, np.int64)
    ev_vertices = np.bincount(ev_of_coll, weights=nvtx, minlength=n_events).astype(np.int64) if flat else np.zeros(n_events, np.int64)
    H = {
        "n_collisions": coll_counts.astype(np.int32),
        "ntracks_override": (np.full(n_events, -1, np.int32) if ntracks_override is None
                             else np.asarray(ntracks_override, dtype=np.int32)),
        "signal_trials": (np.ones(n_events, np.int32) if signal_trials is None
                          else np.asarray(signal_trials, dtype=np.int32)),
    }
    raw = {
        "Header": (H, np.ones(n_events, dtype=np.int64)),
        "Collisions": (C, coll_counts),
        "Vertices": (V, ev_vertices),
        "Particles": (P, ev_particles),
    }
    if Collection is None:
        return raw
    return {k: Collection.from_counts(cols, counts, event_numbers) for k, (cols, counts) in raw.items()}


# ------------------------------------------------------------------------------------------
# batched selection: select_truth + assemble_truth for all collisions of a batch in one pass
# ------------------------------------------------------------------------------------------
_SPECIES_TABLE_SIZE = 1 << 14  # |pid| below this: dense lookup table; above: sorted cache
_species_table = np.full(_SPECIES_TABLE_SIZE, -1, dtype=np.int8)  # -1 unknown, 0 dropped, 1 kept
_species_big: dict[int, bool] = {}
_species_big_keys = np.zeros(0, dtype=np.int64)
_species_big_vals = np.zeros(0, dtype=np.bool_)


@nb.njit(cache=True)
def _species_lookup(pid, table, big_keys, big_vals):
    n = pid.shape[0]
    ok = np.empty(n, np.bool_)
    n_unknown = 0
    size = table.shape[0]
    for i in range(n):
        a = abs(np.int64(pid[i]))
        if a < size:
            v = table[a]
            if v < 0:
                n_unknown += 1
            ok[i] = v == 1
        else:
            j = np.searchsorted(big_keys, a)
            if j < big_keys.shape[0] and big_keys[j] == a:
                ok[i] = big_vals[j]
            else:
                ok[i] = False
                n_unknown += 1
    return ok, n_unknown


def kept_species_fast(pids: np.ndarray) -> np.ndarray:
    """:func:`kept_species` through a lookup table filled (from the same PDG classification) with
    the ids seen so far: one numba pass once the species of the job are known."""
    global _species_big_keys, _species_big_vals
    pids = np.ascontiguousarray(pids)
    ok, n_unknown = _species_lookup(pids, _species_table, _species_big_keys, _species_big_vals)
    if n_unknown:
        for a in np.unique(np.abs(pids.astype(np.int64))):
            a = int(a)
            if a < _SPECIES_TABLE_SIZE:
                if _species_table[a] < 0:
                    _species_table[a] = 1 if _species_ok_scalar(a) else 0
            elif a not in _species_big:
                _species_big[a] = _species_ok_scalar(a)
        keys = np.array(sorted(_species_big), dtype=np.int64)
        _species_big_keys = keys
        _species_big_vals = np.array([_species_big[int(k)] for k in keys], dtype=np.bool_)
        ok, n_unknown = _species_lookup(pids, _species_table, _species_big_keys, _species_big_vals)
    return ok


@nb.njit(cache=True)
def _select_batch(coff, coll_event, n_events, parent, status, species_ok, is_beam, pv_children, end_key, status_ok,
                  max_key):
    """Selection of every collision (rows ``coff[c]:coff[c+1]``, ``parent``/``end_key`` local to
    the collision; ``status_ok[s]``: status ``s`` kept).  Returns the kept rows (global, collision
    order), their within-event mother, origin and end vertex indices, the number of vertices of
    each collision and an error code (1: cycle in the parent graph).

    One memoised walk up the first-parent chain per particle gives, top down, its root (is it
    connected to the collision), whether it or an ancestor is a signal particle at rest (998),
    ``keep`` and its nearest kept strict ancestor: O(n)."""
    N = parent.shape[0]
    n_coll = coff.shape[0] - 1
    n_st = status_ok.shape[0]
    root = np.full(N, -1, np.int64)  # local index of the root; -1: not yet known
    rest = np.zeros(N, np.bool_)  # itself or an ancestor has status 998
    keep = np.zeros(N, np.bool_)
    anc = np.full(N, -1, np.int64)  # nearest kept strict ancestor (local), -1 none
    stack = np.empty(N + 1, np.int64)
    empty = np.zeros(0, np.int64)
    n_keep = 0
    for c in range(n_coll):
        s = coff[c]
        n = coff[c + 1] - s
        for i in range(n):
            if root[s + i] >= 0:
                continue
            depth = 0
            j = i
            while root[s + j] < 0:
                stack[depth] = j
                depth += 1
                if depth > n:
                    return empty, empty, empty, empty, empty, 1
                p = parent[s + j]
                if p < 0:
                    break
                j = p
            # stack[depth-1] is the topmost unknown node; its parent (if any) is known
            top = stack[depth - 1]
            p = parent[s + top]
            if p >= 0:
                r = root[s + p]
                rv = rest[s + p]
                a = p if keep[s + p] else anc[s + p]
            else:
                r = top
                rv = False
                a = -1
            for q in range(depth - 1, -1, -1):
                node = stack[q]
                g = s + node
                st = status[g]
                rv = rv or st == 998
                root[g] = r
                rest[g] = rv
                anc[g] = a
                rg = s + r
                k = (0 <= st < n_st and status_ok[st]) and species_ok[g] and (is_beam[rg] or pv_children[rg]) \
                    and not rv and not is_beam[g]
                keep[g] = k
                n_keep += k
                if k:
                    a = node
    rows = np.empty(n_keep, np.int64)
    mother = np.empty(n_keep, np.int64)
    origin = np.empty(n_keep, np.int64)
    endv = np.empty(n_keep, np.int64)
    nvtx = np.ones(n_coll, np.int64)  # the PV
    new_index = np.full(N, -1, np.int64)  # within-event index of kept particles
    vmap = np.full(max_key + 1, -1, np.int64)
    ev_p = np.zeros(n_events, np.int64)  # particles so far in each event
    ev_v = np.zeros(n_events, np.int64)  # vertices so far in each event
    k = 0
    for c in range(n_coll):
        s = coff[c]
        n = coff[c + 1] - s
        e = coll_event[c]
        p0 = ev_p[e]
        v0 = ev_v[e]
        first = k
        nv = 1
        for i in range(n):
            g = s + i
            if not keep[g]:
                continue
            new_index[g] = p0 + (k - first)
            rows[k] = g
            key = end_key[g]
            if key >= 0:
                if vmap[key] < 0:
                    vmap[key] = nv
                    nv += 1
                endv[k] = v0 + vmap[key]
            else:
                endv[k] = -1
            k += 1
        for q in range(first, k):  # mothers and origins
            g = rows[q]
            a = anc[g]
            if a >= 0:
                m = new_index[s + a]
                mother[q] = m
                o = endv[first + (m - p0)]
                origin[q] = o if o >= 0 else v0
            else:
                mother[q] = -1
                origin[q] = v0
        for q in range(first, k):  # reset the key map
            key = end_key[rows[q]]
            if key >= 0:
                vmap[key] = -1
        nvtx[c] = nv
        ev_p[e] += k - first
        ev_v[e] += nv
    return rows, mother, origin, endv, nvtx, 0


@nb.njit(cache=True)
def _vertex_positions(coff, rows, endv, pv, end_pos, coll_of_row, vstart_coll, v0_coll, n_vtx):
    """Vertex table: the PV of each collision, then its decay vertices (last writer wins, as the
    fancy assignment of :func:`select_truth`)."""
    pos = np.empty((n_vtx, 4))
    vcoll = np.empty(n_vtx, np.int64)
    vtype = np.full(n_vtx, 2, np.int8)
    n_coll = coff.shape[0] - 1
    for c in range(n_coll):
        b = vstart_coll[c]
        pos[b, :] = pv[c, :]
        vtype[b] = 1
        n_c = (vstart_coll[c + 1] - b)
        for q in range(n_c):
            vcoll[b + q] = c
    for k in range(rows.shape[0]):
        if endv[k] >= 0:
            c = coll_of_row[k]
            r = vstart_coll[c] + (endv[k] - v0_coll[c])
            g = rows[k]
            for d in range(4):
                pos[r, d] = end_pos[g, d]
    return pos, vcoll, vtype


def select_truth_batch(collisions_per_event, statuses=PHYSICAL_STATUSES, event_numbers=None):
    """``assemble_truth([[select_truth(raw, statuses) for raw in event] for event in ...])`` for
    all collisions of a batch at once (numba; same collections, bit for bit -- tested).

    ``collisions_per_event``: list (one entry per event) of lists of :class:`RawCollision`."""
    raws = [r for ev in collisions_per_event for r in ev]
    n_events = len(collisions_per_event)
    coll_counts = np.array([len(ev) for ev in collisions_per_event], dtype=np.int64)
    n_coll = len(raws)
    sizes = np.array([r.n for r in raws], dtype=np.int64)
    coff = np.zeros(n_coll + 1, dtype=np.int64)
    np.cumsum(sizes, out=coff[1:])
    if n_coll == 0 or coff[-1] == 0:
        return assemble_truth([[select_truth(r, statuses) for r in ev] for ev in collisions_per_event], event_numbers)

    def cat(name, dtype):
        return np.concatenate([np.asarray(getattr(r, name), dtype=dtype) for r in raws])

    parent = cat("parent", np.int64)
    end_key = cat("end_key", np.int64)
    max_key = int(end_key.max())
    if max_key > 4 * parent.size + 1_000_000:  # sparse foreign keys: per-collision path
        return assemble_truth([[select_truth(r, statuses) for r in ev] for ev in collisions_per_event], event_numbers)
    pid = cat("pid", np.int32)
    status = cat("status", np.int32)
    coll_event = np.repeat(np.arange(n_events, dtype=np.int64), coll_counts)
    statuses = np.asarray(statuses, dtype=np.int64)
    status_ok = np.zeros(int(max(statuses.max(initial=0), 0)) + 1, dtype=np.bool_)
    status_ok[statuses[statuses >= 0]] = True
    rows, mother, origin, endv, nvtx, err = _select_batch(
        coff, coll_event, n_events, parent, status, kept_species_fast(pid), cat("is_beam", np.bool_),
        cat("pv_children", np.bool_), end_key, status_ok, max(max_key, 0))
    if err:
        raise ValueError("the parent graph has a cycle")
    # collision of each kept row, vertex tables
    coll_of_row = np.repeat(np.arange(n_coll, dtype=np.int64), np.diff(np.searchsorted(rows, coff)))
    vstart_coll = np.zeros(n_coll + 1, dtype=np.int64)
    np.cumsum(nvtx, out=vstart_coll[1:])
    first_coll = np.cumsum(coll_counts) - coll_counts
    ev_vstart = vstart_coll[first_coll] if n_coll else np.zeros(0, np.int64)
    v0_coll = vstart_coll[:-1] - np.repeat(ev_vstart, coll_counts)  # within-event offset of each collision's PV
    pv = np.array([np.asarray(r.pv, dtype=np.float64) for r in raws]).reshape(n_coll, 4)
    end_pos = np.concatenate([np.asarray(r.end_pos, dtype=np.float64).reshape(-1, 4) for r in raws])
    pos, vcoll, vtype = _vertex_positions(coff, rows, endv, pv, end_pos, coll_of_row, vstart_coll, v0_coll,
                                          int(vstart_coll[-1]))
    collision_index = (np.arange(n_coll, dtype=np.int64) - np.repeat(first_coll, coll_counts)).astype(np.int32)
    P = {
        "pid": pid[rows],
        "px": cat("px", np.float64)[rows],
        "py": cat("py", np.float64)[rows],
        "pz": cat("pz", np.float64)[rows],
        "E": cat("E", np.float64)[rows],
        "mass": cat("mass", np.float64)[rows],
        "origin_vertex": origin.astype(np.int32),
        "end_vertex": endv.astype(np.int32),
        "mother": mother.astype(np.int32),
        "collision": collision_index[coll_of_row],
        "is_signal": status[rows] == SIGNAL_STATUS,
        "status": status[rows],
    }
    V = {"x": pos[:, 0], "y": pos[:, 1], "z": pos[:, 2], "t": pos[:, 3], "type": vtype,
         "collision": collision_index[vcoll]}
    C = {"x": pv[:, 0], "y": pv[:, 1], "z": pv[:, 2], "t": pv[:, 3], "collision": collision_index}
    H = {"n_collisions": coll_counts.astype(np.int32), "ntracks_override": np.full(n_events, -1, np.int32),
         "signal_trials": np.ones(n_events, np.int32)}
    p_counts = np.bincount(coll_event[coll_of_row], minlength=n_events).astype(np.int64)
    v_counts = np.bincount(coll_event, weights=nvtx, minlength=n_events).astype(np.int64)
    raw = {"Header": (H, np.ones(n_events, dtype=np.int64)), "Collisions": (C, coll_counts),
           "Vertices": (V, v_counts), "Particles": (P, p_counts)}
    if Collection is None:
        return raw
    return {k: Collection.from_counts(cols, counts, event_numbers) for k, (cols, counts) in raw.items()}
