"""Analysis particles: the columnar layout shared by particle makers, combiners and tuples, and
the particle makers (charged tracks with a mass hypothesis, cut with the cut grammar).

Layout of a particle collection (``/Event/Phys/<Name>/Particles``; one row per particle, rows
grouped by event as every :class:`framework.Collection`):

* the **head columns** (``NODE_FIELDS``): ``pid``, ``charge``, ``p4`` (N,4) = (px, py, pz, E)
  [MeV], ``m`` [MeV] (mass hypothesis for tracks, fitted mass for composites), ``track``
  (within-event index into ``/Event/Rec/Tracks``; -1 for composites), ``mc`` (within-event index
  into ``/Event/MC/Particles`` of the track's MC particle; -1 for composites), the line
  representation ``state`` (N,5) = (x, y, tx, ty, q/p) at ``z`` with ``cov`` (N,5,5) (composites:
  a straight line from the decay vertex along the momentum, q/p replaced by 1/p), track
  ``trtype``, ``trchi2dof``, ``ghostprob``, PID ``PIDe PIDmu PIDK PIDp ProbNNe ProbNNmu ProbNNpi
  ProbNNk ProbNNp ProbNNghost`` (NaN when no PID) and ``isMuon hasRich InMuonAcc``; decay vertex
  ``vtx`` (N,3), ``vcov`` (N,3,3), ``vchi2``, ``vndof`` (NaN/0 for tracks); the own (best) PV
  ``ownpv`` (N,3), ``ownpv_cov`` (N,3,3), ``ip`` [mm], ``ipchi2`` to it, and for composites
  ``fd`` [mm], ``fdchi2``, ``dira``, ``mcorr`` [MeV], ``tau`` [ns] w.r.t. it;
* **flat extras** (``FLAT_EXTRA``): ``best_pv`` (within-event PV index, -1 none), ``mip``,
  ``mipchi2`` (minimum over all PVs), ``cov7`` (N,7,7) of (x, y, z, px, py, pz, E) (composites);
* the **decay tree** as fixed-layout node arrays ``nodes_<field>`` (N, n_nodes, ...) for every
  field of ``NODE_FIELDS``; node 0 is the particle itself, then its daughters depth-first in
  descriptor order (the :class:`Topology` of the producing algorithm).  A track has one node.

Best PV = smallest IPchi2 (straight lines, PV covariance included), as DaVinci's
``BestPVAlgorithm``.  Units: MeV, mm, ns.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numba as nb
import numpy as np

from framework import Algorithm, Collection, ConfigurationError, Input, Output, Property

from ..common.geometry import ip_ipchi2

from .cuts import C_MM_PER_NS, CutError, ParticleView, compile_cut
from .kinematics import chol_decomp, chol_solve, pdg_charge, pdg_mass, resolve_pid, track_p4

__all__ = ["NODE_FIELDS", "FLAT_EXTRA", "PID_FIELDS", "Topology", "empty_particles", "node_columns",
           "line_pv_geometry", "vertex_pv_geometry", "make_track_particles", "find_producer",
           "MakeParticles", "MakeNoPIDParticles", "TRACK_TYPES"]

PID_FLOATS = ("PIDe", "PIDmu", "PIDK", "PIDp", "ProbNNe", "ProbNNmu", "ProbNNpi", "ProbNNk", "ProbNNp",
              "ProbNNghost")
PID_BOOLS = ("isMuon", "hasRich", "InMuonAcc")
PID_FIELDS = PID_FLOATS + PID_BOOLS
TRACK_TYPES = {"Long": 3, "Upstream": 4, "Downstream": 5}

f8, f4, i4, i1 = np.float64, np.float32, np.int32, np.int8
NODE_FIELDS: dict = {
    "pid": (i4, ()), "charge": (i1, ()), "p4": (f8, (4,)), "m": (f8, ()),
    "track": (i4, ()), "mc": (i4, ()),
    "state": (f8, (5,)), "z": (f8, ()), "cov": (f8, (5, 5)),
    "trtype": (i1, ()), "trchi2dof": (f4, ()), "ghostprob": (f4, ()),
    **{k: (f4, ()) for k in PID_FLOATS}, **{k: (np.bool_, ()) for k in PID_BOOLS},
    "vtx": (f8, (3,)), "vcov": (f8, (3, 3)), "vchi2": (f8, ()), "vndof": (i4, ()),
    "ownpv": (f8, (3,)), "ownpv_cov": (f8, (3, 3)), "ip": (f8, ()), "ipchi2": (f8, ()),
    "fd": (f8, ()), "fdchi2": (f8, ()), "dira": (f8, ()), "mcorr": (f8, ()), "tau": (f8, ()),
}
FLAT_EXTRA: dict = {"best_pv": (i4, ()), "mip": (f8, ()), "mipchi2": (f8, ()), "cov7": (f8, (7, 7))}
_FILL = {"track": -1, "mc": -1, "trtype": 0, "vndof": 0, "pid": 0, "charge": 0, "best_pv": -1}


def _filled(dtype, shape, n, key):
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return np.full((n,) + shape, np.nan, dtype=dt)
    if dt.kind == "b":
        return np.zeros((n,) + shape, dtype=dt)
    return np.full((n,) + shape, _FILL.get(key, 0), dtype=dt)


def default_columns(n: int) -> dict:
    """Head + flat columns for n particles, filled with 'missing' values (NaN, -1, False)."""
    out = {k: _filled(dt, sh, n, k) for k, (dt, sh) in NODE_FIELDS.items()}
    out.update({k: _filled(dt, sh, n, k) for k, (dt, sh) in FLAT_EXTRA.items()})
    return out


def node_columns(head: dict, daughters_nodes=()) -> dict:
    """``nodes_<field>`` arrays: the head's own values as node 0 followed by the daughters' node
    arrays (each a dict of ``nodes_<field>`` (N, n_i, ...), row-aligned with ``head``)."""
    out = {}
    for k in NODE_FIELDS:
        parts = [head[k][:, None]] + [d[f"nodes_{k}"] for d in daughters_nodes]
        out[f"nodes_{k}"] = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
    return out


def empty_particles(n_events: int, n_nodes: int = 1, event_numbers=None) -> Collection:
    cols = default_columns(0)
    for k, (dt, sh) in NODE_FIELDS.items():
        cols[f"nodes_{k}"] = np.zeros((0, n_nodes) + sh, dtype=dt)
    return Collection(cols, np.zeros(n_events + 1, np.int64), event_numbers)


# ---------------------------------------------------------------------------------------------
# decay-tree topology (fixed node layout of a particle collection)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Topology:
    """Node layout of the particles of one producer: pre-order (head first, daughters depth-first
    in descriptor order).  ``pids``/``names`` are those of the "particle" alternative (the
    charge-conjugate candidates have conjugated pids in their ``nodes_pid``)."""

    pids: tuple
    names: tuple
    parent: tuple
    basic: tuple

    @property
    def n_nodes(self) -> int:
        return len(self.pids)

    def daughters(self, i: int) -> list[int]:
        return [j for j, p in enumerate(self.parent) if p == i]

    def subtree(self, i: int) -> list[int]:
        out = [i]
        for d in self.daughters(i):
            out.extend(self.subtree(d))
        return out

    def leaves(self, i: int = 0) -> list[int]:
        return [j for j in self.subtree(i) if self.basic[j]]

    def shape(self) -> tuple:
        """(|pid|, parent) per node: topologies with the same shape share the node layout."""
        return tuple((abs(p), q) for p, q in zip(self.pids, self.parent))

    @staticmethod
    def basic_particle(pid: int, name: str) -> "Topology":
        return Topology((int(pid),), (name,), (-1,), (True,))

    @staticmethod
    def combine(pid: int, name: str, children) -> "Topology":
        pids, names, parent, basic = [int(pid)], [name], [-1], [False]
        for ch in children:
            off = len(pids)
            pids += list(ch.pids)
            names += list(ch.names)
            parent += [off + p if p >= 0 else 0 for p in ch.parent]
            basic += list(ch.basic)
        return Topology(tuple(pids), tuple(names), tuple(parent), tuple(basic))

    def describe(self, i: int = 0) -> str:
        d = self.daughters(i)
        if not d:
            return self.names[i]
        inner = " ".join(self.describe(j) if not self.daughters(j) else f"({self.describe(j)})" for j in d)
        return f"{self.names[i]} -> {inner}"


def find_producer(app, path: str, requester: str):
    """The algorithm that writes ``path`` and produces analysis particles (has
    ``particle_topology``); ConfigurationError otherwise."""
    for alg in app.algorithms:
        if not alg.Enable:
            continue
        for h in alg.handles("output"):
            if getattr(alg, h) == path:
                if not hasattr(alg, "particle_topology"):
                    raise ConfigurationError(f"{requester}: input {path} is written by {alg.name} "
                                             f"({type(alg).__name__}), which does not produce analysis particles")
                return alg
    from framework.errors import did_you_mean

    known = [getattr(a, h) for a in app.algorithms for h in a.handles("output") if hasattr(a, "particle_topology")]
    raise ConfigurationError(f"{requester}: no algorithm produces particles at {path}{did_you_mean(path, known)}; "
                             f"particle locations: {', '.join(known) or 'none'}")


# ---------------------------------------------------------------------------------------------
# geometry w.r.t. primary vertices (numba)
# ---------------------------------------------------------------------------------------------
@nb.njit(cache=True)
def _line_pv_kernel(row_event, state, z, cov, pv_off, pvx, pvy, pvz, pvcov, best, ip, ipchi2, mip, mipchi2):
    for i in range(row_event.shape[0]):
        e = row_event[i]
        best[i] = -1
        ip[i] = np.nan
        ipchi2[i] = np.nan
        mip[i] = np.nan
        mipchi2[i] = np.nan
        if not (math.isfinite(state[i, 0]) and math.isfinite(state[i, 2])):
            continue
        bchi = np.inf
        for j in range(pv_off[e], pv_off[e + 1]):
            a, c = ip_ipchi2(state[i, 0], state[i, 1], z[i], state[i, 2], state[i, 3], cov[i],
                            pvx[j], pvy[j], pvz[j], pvcov[j])
            if best[i] < 0 or c < bchi:
                bchi = c
                best[i] = j - pv_off[e]
                ip[i] = a
                ipchi2[i] = c
            if not (mip[i] <= a):
                mip[i] = a
            if not (mipchi2[i] <= c):
                mipchi2[i] = c


def line_pv_geometry(row_event, state, z, cov, pvs: Collection) -> dict:
    """Best PV (smallest IPchi2) of straight lines and IP/IPchi2 to it, plus the minimum IP and
    IPchi2 over all PVs of the event (``MIPDV``, ``MIPCHI2DV``).  ``row_event``: local event
    index of each row.  Returns dict ``best_pv`` (within-event, -1 if no PV), ``ip``, ``ipchi2``,
    ``mip``, ``mipchi2``, ``ownpv`` (N,3), ``ownpv_cov`` (N,3,3)."""
    n = len(row_event)
    out = {"best_pv": np.empty(n, np.int32), "ip": np.empty(n), "ipchi2": np.empty(n), "mip": np.empty(n),
           "mipchi2": np.empty(n)}
    pvc = np.ascontiguousarray(pvs["cov"], dtype=np.float64)
    g = lambda k: np.ascontiguousarray(pvs[k], dtype=np.float64)  # noqa: E731
    _line_pv_kernel(np.ascontiguousarray(row_event, dtype=np.int64), np.ascontiguousarray(state, dtype=np.float64),
                    np.ascontiguousarray(z, dtype=np.float64), np.ascontiguousarray(cov, dtype=np.float64),
                    pvs.offsets, g("x"), g("y"), g("z"), pvc, out["best_pv"], out["ip"], out["ipchi2"],
                    out["mip"], out["mipchi2"])
    has = out["best_pv"] >= 0
    rows = np.where(has, pvs.offsets[:-1][row_event] + out["best_pv"], 0)
    pos = np.stack([g("x"), g("y"), g("z")], 1) if len(pvs) else np.zeros((0, 3))
    out["ownpv"] = np.full((n, 3), np.nan)
    out["ownpv_cov"] = np.full((n, 3, 3), np.nan)
    if len(pvs):
        out["ownpv"][has] = pos[rows[has]]
        out["ownpv_cov"][has] = pvc[rows[has]]
    return out


@nb.njit(cache=True, error_model="numpy")
def _vertex_pv_kernel(vtx, vcov, p4, m, pv, pv_cov, out):
    """``out`` [6, n]: fd, fdchi2, dira, mcorr, tau, tauerr.  fdchi2 = d^T (Vsv + Vpv)^-1 d by Cholesky
    (NaN if the summed covariance is not finite or not positive definite)."""
    A = np.empty((3, 3))
    L = np.zeros((3, 3))
    d = np.empty(3)
    x = np.empty(3)
    h = np.empty(3)
    for k in range(vtx.shape[0]):
        for i in range(3):
            d[i] = vtx[k, i] - pv[k, i]
        px, py, pz = p4[k, 0], p4[k, 1], p4[k, 2]
        pmag = math.sqrt(px * px + py * py + pz * pz)
        h[0], h[1], h[2] = px / pmag, py / pmag, pz / pmag
        fd = math.sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2])
        var = 0.0  # h^T (Vsv + Vpv) h: variance of the flight distance along the momentum
        for i in range(3):
            for j in range(3):
                A[i, j] = vcov[k, i, j] + pv_cov[k, i, j]
                var += h[i] * A[i, j] * h[j]
        fdchi2 = np.nan
        if chol_decomp(A, L, 3):
            chol_solve(L, d, x, 3)
            fdchi2 = d[0] * x[0] + d[1] * x[1] + d[2] * x[2]
        dira = (d[0] * px + d[1] * py + d[2] * pz) / (fd * pmag)
        pl = px * (d[0] / fd) + py * (d[1] / fd) + pz * (d[2] / fd)
        pperp = math.sqrt(max(pmag * pmag - pl * pl, 0.0))
        L_sv = d[0] * h[0] + d[1] * h[1] + d[2] * h[2]
        sL = math.sqrt(max(var, 0.0)) if not math.isnan(var) else np.nan
        scale = m[k] / (pmag * C_MM_PER_NS)
        out[0, k] = fd
        out[1, k] = fdchi2
        out[2, k] = dira
        out[3, k] = math.sqrt(m[k] * m[k] + pperp * pperp) + pperp
        out[4, k] = L_sv * scale
        out[5, k] = sL * scale


def vertex_pv_geometry(vtx, vcov, p4, m, pv, pv_cov) -> dict:
    """Flight distance ``fd`` [mm], ``fdchi2``, ``dira``, corrected mass ``mcorr`` [MeV] and
    proper time ``tau`` [ns] (flight distance projected on the momentum, ``tauerr`` from the
    vertex covariances) of decay vertices ``vtx`` (N,3) w.r.t. ``pv`` (N,3); NaN without PV.

    ``mcorr = sqrt(m^2 + pT'^2) + pT'`` with pT' the momentum transverse to the PV->SV flight
    direction (partially reconstructed decays such as Lambda_b -> Lambda_c mu nu).  One numba pass."""
    f8 = lambda a: np.ascontiguousarray(a, dtype=np.float64)  # noqa: E731
    vtx = f8(vtx)
    n = vtx.shape[0]
    out = np.empty((6, n))
    _vertex_pv_kernel(vtx, f8(vcov), f8(p4), np.broadcast_to(f8(m), (n,)).copy(), f8(pv), f8(pv_cov), out)
    return {"fd": out[0], "fdchi2": out[1], "dira": out[2], "mcorr": out[3], "tau": out[4], "tauerr": out[5]}


# ---------------------------------------------------------------------------------------------
# particles from tracks
# ---------------------------------------------------------------------------------------------
def make_track_particles(tracks: Collection, pvs: Collection, species_pid: int, track_types=(3,),
                         protos: Collection | None = None, cut=None) -> Collection:
    """Charged particles with the mass hypothesis of ``species_pid`` (its charge conjugate for
    tracks of the opposite charge) from reconstructed tracks of the given types; PID columns from
    ``protos`` (same rows as ``tracks``); ``cut`` a compiled particle cut.  Returns a particle
    collection (one node per row)."""
    q_sp = pdg_charge(species_pid)
    if q_sp == 0:
        raise ConfigurationError(f"species {species_pid} is neutral: photons and pi0 need the calorimeter "
                                 "branch (not available yet)")
    ch = np.asarray(tracks["charge"]).astype(np.int64)
    sel = np.isin(np.asarray(tracks["type"]), np.asarray(track_types)) & (ch != 0)
    if protos is not None and len(protos) != len(tracks):
        raise ValueError(f"ProtoParticles has {len(protos)} rows, Tracks has {len(tracks)}: they must match")
    from ._descriptors import default_table

    anti = default_table().antiparticle(int(species_pid))
    idx = np.flatnonzero(sel)
    if cut is not None and not cut.is_trivial:
        # the cut sees lazily built columns: only what it uses is computed for every track
        keep = cut(ParticleView(_TrackParticleColumns(tracks, pvs, species_pid, anti, idx, ch, protos)))
        idx = idx[keep]
    cols = _TrackParticleColumns(tracks, pvs, species_pid, anti, idx, ch, protos).materialize()
    cols.update(node_columns(cols))
    counts = np.bincount(tracks.event_index[idx], minlength=tracks.n_events)
    return Collection.from_counts(cols, counts, tracks.event_numbers)


_GEOMETRY_KEYS = ("best_pv", "ip", "ipchi2", "mip", "mipchi2", "ownpv", "ownpv_cov")


class _TrackParticleColumns(dict):
    """Particle columns of the tracks ``idx`` (mass hypothesis ``species_pid``, its antiparticle
    ``anti`` for the opposite charge), built on first access; :meth:`materialize` fills all."""

    def __init__(self, tracks, pvs, species_pid, anti, idx, charges, protos):
        super().__init__()
        self.tracks, self.pvs, self.protos, self.idx = tracks, pvs, protos, idx
        self.species_pid, self.anti = species_pid, anti
        self.charge = charges[idx]
        self.mass = pdg_mass(abs(int(species_pid)))
        self.n = idx.size

    def _take(self, key, dtype):
        return np.asarray(self.tracks[key], dtype=dtype)[self.idx]

    def _build(self, key):
        t, idx, n = self.tracks, self.idx, self.n
        if key == "pid":
            same = np.sign(self.charge) == np.sign(pdg_charge(self.species_pid))
            return np.where(same, self.species_pid, self.anti).astype(np.int32)
        if key == "charge":
            return self.charge.astype(np.int8)
        if key == "state":
            return np.stack([self._take(k, np.float64) for k in ("x", "y", "tx", "ty", "qop")], 1)
        if key == "z":
            return self._take("z", np.float64)
        if key == "cov":
            return self._take("cov", np.float64)
        if key == "p4":
            return track_p4(self["state"], self.mass, np.abs(self.charge))
        if key == "m":
            return np.full(n, self.mass)
        if key == "track":
            return t.local_index[idx].astype(np.int32)
        if key == "mc" and "mc_index" in t:
            return self._take("mc_index", np.int32)
        if key == "trtype":
            return self._take("type", np.int8)
        if key == "trchi2dof" and "chi2PerDoF" in t:
            return self._take("chi2PerDoF", np.float32)
        if key == "ghostprob" and "ghostProb" in t:
            return self._take("ghostProb", np.float32)
        if key in PID_FIELDS and self.protos is not None and key in self.protos:
            return np.asarray(self.protos[key])[idx].astype(NODE_FIELDS[key][0])
        if key in _GEOMETRY_KEYS:
            geo = line_pv_geometry(t.event_index[idx], self["state"], self["z"], self["cov"], self.pvs)
            for k in _GEOMETRY_KEYS:
                self[k] = geo[k]
            return geo[key]
        spec = NODE_FIELDS.get(key) or FLAT_EXTRA.get(key)
        if spec is None:
            raise KeyError(key)
        return _filled(spec[0], spec[1], n, key)

    def __missing__(self, key):
        v = self._build(key)
        self[key] = v
        return v

    def __contains__(self, key):
        return key in NODE_FIELDS or key in FLAT_EXTRA

    def materialize(self) -> dict:
        return {k: self[k] for k in (*NODE_FIELDS, *FLAT_EXTRA)}


class _ParticleMakerBase(Algorithm):
    Species = Property(str, "pi+", "particle hypothesis, e.g. 'K+' (the charge conjugate is included)")
    Cut = Property(str, "", "selection in the cut grammar, e.g. 'PT > 500 and MIPCHI2DV(PRIMARY) > 9'")
    TrackTypes = Property(list, ["Long"], "track types used: Long, Upstream, Downstream", item_type=str)
    Tracks = Input("/Event/Rec/Tracks", "reconstructed tracks")
    Vertices = Input("/Event/Rec/Vertices", "reconstructed primary vertices")
    Particles = Output("/Event/Phys/Particles", "selected particles (default /Event/Phys/<name>/Particles)")

    def __init__(self, name=None, **properties):
        super().__init__(name, **properties)
        if "Particles" not in self._property_values:
            self._property_values["Particles"] = f"/Event/Phys/{self.name}/Particles"

    def initialize(self):
        try:
            self.pid = resolve_pid(self.Species)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{self.name}.Species: {exc}") from None
        if pdg_charge(self.pid) == 0:
            raise ConfigurationError(f"{self.name}.Species: {self.Species!r} is neutral; only charged species can "
                                     "be made from tracks (photons/pi0 need the calorimeter branch)")
        bad = [t for t in self.TrackTypes if t not in TRACK_TYPES]
        if bad:
            raise ConfigurationError(f"{self.name}.TrackTypes: unknown {bad}; choose from {list(TRACK_TYPES)}")
        self.types = [TRACK_TYPES[t] for t in self.TrackTypes]
        try:
            self.cut = compile_cut(self.Cut, "particle")
            self.cut.check_kind(True, f"{self.Species} from tracks")
        except CutError as exc:
            raise ConfigurationError(f"{self.name}.Cut: {exc}") from None
        if not self.has_pid:
            pid_used = sorted(f for f in self.cut.functors if f.upper().startswith(("PID", "PROBNN", "ISMUON",
                                                                                     "HASRICH", "INMUON")))
            if pid_used:
                raise ConfigurationError(f"{self.name}.Cut uses PID functors {pid_used} but {type(self).__name__} "
                                         "has no ProtoParticles input: use MakeParticles")

    has_pid = False

    def particle_topology(self) -> Topology:
        return Topology.basic_particle(self.pid, self.Species)

    def particle_species(self) -> set:
        from ._descriptors import default_table

        return {self.pid, default_table().antiparticle(self.pid)}

    def _make(self, Tracks, Vertices, protos):
        out = make_track_particles(Tracks, Vertices, self.pid, self.types, protos, self.cut)
        self.counter("tracks").increment(len(Tracks))
        self.counter("particles").increment(len(out))
        return out


class MakeParticles(_ParticleMakerBase):
    """Charged particles from tracks with a mass hypothesis, PID columns and a cut.

    One row per selected track: four-momentum from the track state with the mass of ``Species``
    (the charge conjugate for tracks of the other charge), the state and its covariance, the
    MC link, track quality and PID columns, the best PV (smallest IPchi2) with IP/IPchi2 and the
    minimum IP/IPchi2 over all PVs.  ``Cut`` uses the cut grammar (docs/analysis.md)."""

    ProtoParticles = Input("/Event/Rec/ProtoParticles", "PID information, one row per track")
    has_pid = True

    def execute(self, ctx, Tracks, Vertices, ProtoParticles):
        return self._make(Tracks, Vertices, ProtoParticles)


class MakeNoPIDParticles(_ParticleMakerBase):
    """Like MakeParticles without PID information (LHCb's 'NoPIDs' particles); PID columns are NaN."""

    def execute(self, ctx, Tracks, Vertices):
        return self._make(Tracks, Vertices, None)
