"""DaVinci-like ntuples: ``DecayTreeTuple`` (reconstructed candidates, ``DecayTree``) and
``MCDecayTreeTuple`` (every generated signal decay, ``MCDecayTree``).

Branch names follow DaVinci's tuple tools (units MeV, mm, ns); see docs/analysis.md for the
list.  Particles are named by ``Branches`` (label -> node): a node index in the candidate's
node order (head 0, then daughters depth-first in descriptor order), a particle name when it is
unique in the decay, or a descriptor with one ``^`` mark (``[B+ -> (J/psi(1S) -> ^mu+ mu-) K+]CC``).
Without ``Branches`` every node is written with an automatic label (``Bplus``, ``Jpsi``,
``muplus``, ``muminus``, ``Kplus``).

Extra branches without writing an algorithm: implement the ``flashsim_tuple_columns`` hook
(TupleTool-like, see docs/analysis.md); it is called once per batch per tuple with the branches
built so far.
"""
from __future__ import annotations

import json
import re

import numba as nb
import numpy as np

from framework import Algorithm, Collection, ConfigurationError, Input, Property

from .particles import PID_FIELDS, Topology, find_producer, vertex_pv_geometry
from .truth import MCTruthIndex, candidate_truth, true_columns

__all__ = ["DecayTreeTuple", "MCDecayTreeTuple", "auto_labels", "resolve_branches", "decay_tree_columns",
           "mc_decay_tree_columns", "match_mc_decays"]


def _label(name: str) -> str:
    s = name.replace("anti-", "anti").replace("~", "bar")
    s = s.replace("+", "plus").replace("-", "minus").replace("*", "st")
    s = re.sub(r"\(\d+S\)", "", s)
    s = re.sub(r"\(\d+\)", "", s)
    s = re.sub(r"[^0-9A-Za-z_]", "", s)
    return s or "P"


def auto_labels(names) -> list[str]:
    """Branch-friendly unique labels: ``B+ -> Bplus``, ``J/psi(1S) -> Jpsi``, duplicates get
    ``_0``, ``_1`` ... suffixes."""
    base = [_label(n) for n in names]
    out, seen = [], {}
    for b in base:
        k = seen.get(b, 0)
        seen[b] = k + 1
        out.append(b if base.count(b) == 1 else f"{b}_{k}")
    return out


def _match(dnode, top: Topology, t: int, marks: list):
    if abs(dnode.pid) != abs(top.pids[t]):
        return False
    if dnode.marked:
        marks.append(t)
    if not dnode.daughters:
        return True
    kids = top.daughters(t)
    if len(kids) != len(dnode.daughters):
        return False
    return all(_match(d, top, k, marks) for d, k in zip(dnode.daughters, kids))


def marked_nodes(text: str, top: Topology, what: str) -> list[int]:
    """Node indices of ``top`` marked with ``^`` in descriptor ``text`` (which must match the
    tree: composites written without daughters match any sub-tree)."""
    from ._descriptors import parse

    try:
        desc = parse(text)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{what}: {exc}") from None
    for alt in desc.alternatives():
        marks: list = []
        if _match(alt, top, 0, marks):
            return marks
    raise ConfigurationError(f"{what}: descriptor {text!r} does not match the candidates' decay "
                             f"{top.describe()!r}")


def resolve_branches(branches: dict, top: Topology, what: str, decay: str = "") -> dict:
    """label -> node index from a ``Branches`` mapping (see module docstring)."""
    if not branches:
        if decay:
            marks = marked_nodes(decay, top, what)
            if marks:
                labels = auto_labels(top.names)
                return {labels[i]: i for i in marks}
        return dict(zip(auto_labels(top.names), range(top.n_nodes)))
    out = {}
    for label, sel in branches.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(label)):
            raise ConfigurationError(f"{what}: branch label {label!r} is not a valid identifier")
        if isinstance(sel, bool) or not isinstance(sel, (int, str)):
            raise ConfigurationError(f"{what}[{label!r}]: expected a node index, a particle name or a marked "
                                     f"descriptor, got {sel!r}")
        if isinstance(sel, int):
            if not 0 <= sel < top.n_nodes:
                raise ConfigurationError(f"{what}[{label!r}]: node index {sel} out of range 0..{top.n_nodes - 1} "
                                         f"for {top.describe()!r}")
            out[label] = sel
        elif "->" in sel:
            marks = marked_nodes(sel, top, f"{what}[{label!r}]")
            if len(marks) != 1:
                raise ConfigurationError(f"{what}[{label!r}]: the descriptor must mark exactly one particle with '^', "
                                         f"it marks {len(marks)}")
            out[label] = marks[0]
        else:
            from .kinematics import resolve_pid

            try:
                pid = resolve_pid(sel)
            except ConfigurationError as exc:
                raise ConfigurationError(f"{what}[{label!r}]: {exc}") from None
            hits = [i for i, p in enumerate(top.pids) if abs(p) == abs(pid)]
            if len(hits) != 1:
                raise ConfigurationError(f"{what}[{label!r}]: {sel!r} appears {len(hits)} times in {top.describe()!r}; "
                                         "use a node index or a descriptor with one '^'")
            out[label] = hits[0]
    dup = {i for i in out.values() if list(out.values()).count(i) > 1}
    if dup:
        raise ConfigurationError(f"{what}: several labels for the same particle (nodes {sorted(dup)})")
    return out


# ---------------------------------------------------------------------------------------------
# DecayTree columns (pure function)
# ---------------------------------------------------------------------------------------------
def _kin(prefix, p4, m, pid):
    px, py, pz, E = p4[:, 0], p4[:, 1], p4[:, 2], p4[:, 3]
    p = np.sqrt(px * px + py * py + pz * pz)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = 0.5 * np.log((p + pz) / (p - pz))
    return {f"{prefix}_M": m, f"{prefix}_MM": m.copy(), f"{prefix}_P": p, f"{prefix}_PT": np.hypot(px, py),
            f"{prefix}_PE": E, f"{prefix}_PX": px, f"{prefix}_PY": py, f"{prefix}_PZ": pz, f"{prefix}_ETA": eta,
            f"{prefix}_ID": pid.astype(np.int32)}


def decay_tree_columns(cands: Collection, top: Topology, labels: dict, ctx_run: int, event_numbers,
                       summary: Collection | None = None, truth: MCTruthIndex | None = None,
                       is_signal=None, bkg_options: dict | None = None) -> dict:
    """DaVinci-named DecayTree branches for candidates of topology ``top`` (see docs)."""
    N = len(cands)
    ev = cands.event_index
    c = cands
    cols: dict = {}
    cols["runNumber"] = np.full(N, ctx_run, np.uint32)
    cols["eventNumber"] = np.asarray(event_numbers, dtype=np.uint64)[ev]
    if summary is not None:
        cols["nTracks"] = np.asarray(summary["nTracks"], dtype=np.int32)[ev]
        cols["nPVs"] = np.asarray(summary["nPVs"], dtype=np.int32)[ev]
    cols["nCandidate"] = c.local_index.astype(np.int32)
    cols["totCandidates"] = c.counts[ev].astype(np.int32)
    tr = truth_nodes = None
    if truth is not None:
        tr = candidate_truth(truth, c, top, **(bkg_options or {}))
        head_row = tr["rows"][:, 0]
        sig = np.zeros(N, bool)
        ok = head_row >= 0
        if is_signal is not None and len(is_signal):
            sig[ok] = np.asarray(is_signal, bool)[head_row[ok]]
        key = np.where(sig, head_row - truth.mcp.offsets[:-1][truth.mcp.event_index[np.maximum(head_row, 0)]]
                       if len(truth.pid) else -1, -1)
        cols["signalKey"] = key.astype(np.int32)
    nodes = {k[6:]: v for k, v in c.columns.items() if k.startswith("nodes_")}
    for label, i in labels.items():
        p4 = nodes["p4"][:, i]
        cols.update(_kin(label, p4, nodes["m"][:, i], nodes["pid"][:, i]))
        own = nodes["ownpv"][:, i]
        cols[f"{label}_OWNPV_X"], cols[f"{label}_OWNPV_Y"], cols[f"{label}_OWNPV_Z"] = own[:, 0], own[:, 1], own[:, 2]
        cols[f"{label}_IP_OWNPV"] = nodes["ip"][:, i]
        cols[f"{label}_IPCHI2_OWNPV"] = nodes["ipchi2"][:, i]
        parent = top.parent[i]
        if parent >= 0:
            ori = nodes["vtx"][:, parent]
            cols[f"{label}_ORIVX_X"], cols[f"{label}_ORIVX_Y"], cols[f"{label}_ORIVX_Z"] = ori[:, 0], ori[:, 1], ori[:, 2]
        if top.basic[i]:
            cols[f"{label}_TRACK_Type"] = nodes["trtype"][:, i].astype(np.int32)
            cols[f"{label}_TRACK_CHI2NDOF"] = nodes["trchi2dof"][:, i]
            cols[f"{label}_TRACK_GhostProb"] = nodes["ghostprob"][:, i]
            for k in PID_FIELDS:
                cols[f"{label}_{k}"] = nodes[k][:, i]
        else:
            v = nodes["vtx"][:, i]
            cols[f"{label}_ENDVERTEX_X"], cols[f"{label}_ENDVERTEX_Y"], cols[f"{label}_ENDVERTEX_Z"] = v[:, 0], v[:, 1], v[:, 2]
            cols[f"{label}_ENDVERTEX_CHI2"] = nodes["vchi2"][:, i]
            cols[f"{label}_ENDVERTEX_NDOF"] = nodes["vndof"][:, i].astype(np.int32)
            cols[f"{label}_FD_OWNPV"] = nodes["fd"][:, i]
            cols[f"{label}_FDCHI2_OWNPV"] = nodes["fdchi2"][:, i]
            cols[f"{label}_DIRA_OWNPV"] = nodes["dira"][:, i]
            cols[f"{label}_MCORR"] = nodes["mcorr"][:, i]
            # proper time: the head w.r.t. its own PV, daughters w.r.t. their mother's vertex
            if parent < 0:
                ref, refcov = own, nodes["ownpv_cov"][:, i]
            else:
                ref, refcov = nodes["vtx"][:, parent], nodes["vcov"][:, parent]
            g = vertex_pv_geometry(v, nodes["vcov"][:, i], p4, nodes["m"][:, i], ref, refcov)
            cols[f"{label}_TAU"], cols[f"{label}_TAUERR"] = g["tau"], g["tauerr"]
        if tr is not None:
            if truth_nodes is None:
                truth_nodes = _true_columns_2d(truth, tr["rows"])
            for k, arr in truth_nodes.items():
                if k == "TRUEKEY":
                    continue
                cols[f"{label}_{k}"] = np.ascontiguousarray(arr[:, i])
            if not top.basic[i]:
                cols[f"{label}_BKGCAT"] = tr["bkgcat"][i].astype(np.int32)
    return cols


def dtf_columns(spec, configs, cands: Collection, top: Topology, head_label: str) -> tuple[dict, dict]:
    """``{head}_{config}_{column}`` branches from :func:`algorithms.analysis.dtf.fit_configs`
    (tracks in descriptor order, the head's own PV); returns (columns, per-config counters)."""
    from . import dtf

    leaves = top.leaves(0)
    nodes = lambda k: np.asarray(cands[f"nodes_{k}"])  # noqa: E731
    st = nodes("state")[:, leaves]
    cv = nodes("cov")[:, leaves]
    z = nodes("z")[:, leaves]
    ms = nodes("m")[:, leaves]
    flat = dtf.fit_configs(spec, configs, st, cv, z, ms, np.asarray(cands["ownpv"]), np.asarray(cands["ownpv_cov"]))
    cols, counters = {}, {}
    for key, arr in flat.items():
        if np.ndim(arr) == 0:
            counters[key] = int(arr)
        elif np.ndim(arr) == 1:
            cols[f"{head_label}_{key}"] = arr
    return cols, counters


_DTF_KEYS = {"pv_constraint": "pv_constraint", "constrainToOriginVertex": "pv_constraint",
             "mass_constraints": "mass_constraints", "daughtersToConstrain": "mass_constraints",
             "substitutions": "substitutions", "Substitutions": "substitutions", "max_iter": "max_iter",
             "tol": "tol"}


def _dtf_configs(mapping: dict, what: str):
    from . import dtf

    out = []
    for name, cfg in mapping.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(name)):
            raise ConfigurationError(f"{what}: configuration name {name!r} must be an identifier (it is part of the "
                                     "branch names)")
        if not isinstance(cfg, dict):
            raise ConfigurationError(f"{what}[{name!r}]: expected a mapping such as {{constrainToOriginVertex: true, "
                                     f"daughtersToConstrain: ['J/psi(1S)']}}, got {cfg!r}")
        kw = {}
        for k, v in cfg.items():
            if k not in _DTF_KEYS:
                from framework.errors import did_you_mean

                raise ConfigurationError(f"{what}[{name!r}]: unknown key {k!r}{did_you_mean(k, _DTF_KEYS)}; "
                                         f"valid keys: {', '.join(_DTF_KEYS)}")
            kw[_DTF_KEYS[k]] = tuple(v) if isinstance(v, (list, tuple)) else v
        out.append(dtf.DTFConfig(name=str(name), **kw))
    return out


# ---------------------------------------------------------------------------------------------
# algorithms
# ---------------------------------------------------------------------------------------------
class DecayTreeTuple(Algorithm):
    """Writes the ``DecayTree`` ntuple: one row per candidate with DaVinci branch names.

    Per particle kinematics, own-PV geometry, vertex quantities (composites), track and PID
    quantities (tracks), MC truth (TRUEID, MC_MOTHER_ID, true momenta/vertices, TRUETAU) and
    BKGCAT (composites); event branches runNumber, eventNumber, nTracks, nPVs, nCandidate,
    totCandidates and signalKey (links rows to MCDecayTree).  Optional DecayTreeFitter branches
    (``DTF``) and plugin branches (``flashsim_tuple_columns`` hook)."""

    TupleName = Property(str, "DecayTree", "TTree name")
    Decay = Property(str, "", "optional descriptor checked against the candidates; its ^ marks select branches")
    Branches = Property(dict, {}, "label -> node index, unique particle name or descriptor with one ^")
    MCTruth = Property(bool, True, "write MC truth branches and BKGCAT")
    SemileptonicDecay = Property(bool, False, "BKGCAT: neutrinos may be missing (DaVinci's SemileptonicDecay)")
    NumNeutrinos = Property(int, 1, "BKGCAT: how many neutrinos may be missing when SemileptonicDecay")
    SoftPhotonCut = Property(float, 300.0, "BKGCAT: missing photons below this energy are ignored [MeV]")
    LowMassBackgroundCut = Property(float, 100.0, "BKGCAT: low-mass background threshold [MeV]")
    DTF = Property(dict, {}, "DecayTreeFitter configurations: name -> {constrainToOriginVertex, "
                             "daughtersToConstrain, Substitutions}; branches {head}_{name}_{column}")
    Candidates = Input("/Event/Phys/Candidates/Particles", "candidates (output of CombineParticles)")
    Summary = Input("/Event/Rec/Summary", "event summary (nTracks, nPVs)")
    MCParticles = Input("/Event/MC/Particles", "MC particles (truth)")
    MCVertices = Input("/Event/MC/Vertices", "MC vertices (truth)")

    def initialize(self):
        alg = find_producer(self.app, self.Candidates, f"{self.name}.Candidates")
        self.topology = alg.particle_topology()
        if self.Decay:
            marked_nodes(self.Decay, self.topology, f"{self.name}.Decay")
        self.labels = resolve_branches(self.Branches, self.topology, f"{self.name}.Branches", self.Decay)
        self.head_label = next((lab for lab, i in self.labels.items() if i == 0), auto_labels(self.topology.names)[0])
        self.bkg_options = dict(semileptonic=self.SemileptonicDecay, num_neutrinos=self.NumNeutrinos,
                                soft_photon_cut=self.SoftPhotonCut, low_mass_cut=self.LowMassBackgroundCut)
        self.dtf_spec = None
        if self.DTF:
            from . import dtf

            self.dtf_configs = _dtf_configs(self.DTF, f"{self.name}.DTF")
            try:
                self.dtf_spec = dtf.compile_tree(_nested(self.topology, 0))
                for cfg in self.dtf_configs:  # validates constraint / substitution names now
                    dtf._compile_config(self.dtf_spec, cfg)
            except ConfigurationError as exc:
                raise ConfigurationError(f"{self.name}.DTF: {exc}") from None
        self.tuple = self.ntuple(self.TupleName)
        self._hook = self.app.plugins.has_external_impls("flashsim_tuple_columns")

    def execute(self, ctx, Candidates, Summary, MCParticles, MCVertices):
        truth = MCTruthIndex.of(MCParticles, MCVertices) if self.MCTruth else None
        cols = decay_tree_columns(Candidates, self.topology, self.labels, ctx.run_number, ctx.event_numbers,
                                  Summary, truth, MCParticles["is_signal"] if self.MCTruth else None,
                                  self.bkg_options)
        if self.dtf_spec is not None:
            extra, counters = dtf_columns(self.dtf_spec, self.dtf_configs, Candidates, self.topology,
                                          self.head_label)
            cols.update(extra)
            for k, v in counters.items():
                self.counter(k).increment(v)
        if self._hook:
            cols.update(call_tuple_hook(self.app, self.TupleName, Candidates, cols, ctx))
        if self.MCTruth and len(Candidates):
            bk = cols.get(f"{self.head_label}_BKGCAT")
            if bk is not None:
                self.binomial_counter("signal (BKGCAT 0)").add(bk == 0)
        self.counter("candidates").increment(len(Candidates))
        self.tuple.extend(cols)


def call_tuple_hook(app, tuple_name, candidates: Collection, cols: dict, ctx) -> dict:
    """Columns from ``flashsim_tuple_columns`` implementations (one entry per row, new names)."""
    view = Collection({**candidates.columns, **cols}, candidates.offsets, candidates.event_numbers)
    extra = {}
    results = app.plugins.pm.hook.flashsim_tuple_columns(tuple_name=tuple_name, candidates=view, ctx=ctx)
    for res in results:
        if res is None:
            continue
        if not isinstance(res, dict):
            raise TypeError(f"flashsim_tuple_columns for {tuple_name} returned {type(res).__name__}, expected a dict")
        for k, v in res.items():
            v = np.asarray(v)
            if v.ndim == 0 or v.shape[0] != len(candidates):
                raise ValueError(f"flashsim_tuple_columns: branch {k!r} of {tuple_name} has "
                                 f"{v.shape[0] if v.ndim else 0} entries, expected {len(candidates)} (one per row)")
            if k in cols or k in extra:
                raise ValueError(f"flashsim_tuple_columns: branch {k!r} of {tuple_name} already exists")
            extra[k] = v
    return extra


def _nested(top: Topology, i: int):
    kids = top.daughters(i)
    if not kids:
        return int(top.pids[i])
    return (int(top.pids[i]), [_nested(top, k) for k in kids])


# ---------------------------------------------------------------------------------------------
# MCDecayTree
# ---------------------------------------------------------------------------------------------
@nb.njit(cache=True)
def _match_kernel(heads, want, parent, occurrence, child_off, child_idx, pid, rows):
    N, n = want.shape
    for c in range(N):
        rows[c, 0] = heads[c]
        for j in range(1, n):
            rows[c, j] = -1
            p = rows[c, parent[j]]
            if p < 0:
                continue
            k = 0
            for q in range(child_off[p], child_off[p + 1]):
                ch = child_idx[q]
                if pid[ch] == want[c, j]:
                    if k == occurrence[j]:
                        rows[c, j] = ch
                        break
                    k += 1


def match_mc_decays(truth: MCTruthIndex, alternatives) -> tuple[np.ndarray, np.ndarray]:
    """Every signal MC particle (``is_signal``) whose PID is the head of one of ``alternatives``
    (DecayNode trees), with its descriptor nodes matched to MC descendants (pre-order; extra
    particles such as FSR photons are ignored).  Returns (rows (N, n_nodes) global MC rows, -1
    where a node is not found; alternative index (N,))."""
    from ._descriptors import preorder

    nodes0 = preorder(alternatives[0])
    n = len(nodes0)
    parent = np.full(n, -1, np.int64)
    occ = np.zeros(n, np.int64)
    index = {id(x): i for i, x in enumerate(nodes0)}
    for x in nodes0:
        seen = {}
        for d in x.daughters:
            parent[index[id(d)]] = index[id(x)]
            occ[index[id(d)]] = seen.get(d.pid, 0)
            seen[d.pid] = seen.get(d.pid, 0) + 1
    sig = np.asarray(truth.mcp["is_signal"], bool)
    heads, alt_of = [], []
    for a, alt in enumerate(alternatives):
        h = np.flatnonzero(sig & (truth.pid == alt.pid))
        heads.append(h)
        alt_of.append(np.full(h.size, a, np.int64))
    h = np.concatenate(heads) if heads else np.zeros(0, np.int64)
    alt_idx = np.concatenate(alt_of) if alt_of else np.zeros(0, np.int64)
    order = np.argsort(h, kind="stable")
    h, alt_idx = h[order], alt_idx[order]
    wants = np.array([[x.pid for x in preorder(alt)] for alt in alternatives], np.int64)
    want = wants[alt_idx] if len(h) else np.zeros((0, n), np.int64)
    rows = np.full((len(h), n), -1, np.int64)
    _match_kernel(h.astype(np.int64), np.ascontiguousarray(want), parent, occ, truth.child_off, truth.child_idx,
                  truth.pid, rows)
    return rows, alt_idx


def _true_columns_2d(truth: MCTruthIndex, rows) -> dict:
    """:func:`true_columns` of every node at once: ``rows`` (N, L) -> dict of (N, L) arrays."""
    rows = np.asarray(rows, dtype=np.int64)
    return {k: v.reshape(rows.shape) for k, v in true_columns(truth, rows.reshape(-1)).items()}


def mc_decay_tree_columns(truth: MCTruthIndex, rows, labels: dict, run_number: int, event_numbers) -> dict:
    N = rows.shape[0]
    cols = {}
    ev = truth.mcp.event_index[rows[:, 0]] if N else np.zeros(0, np.int64)
    cols["runNumber"] = np.full(N, run_number, np.uint32)
    cols["eventNumber"] = np.asarray(event_numbers, dtype=np.uint64)[ev]
    cols["signalKey"] = (rows[:, 0] - truth.mcp.offsets[:-1][ev]).astype(np.int32) if N else np.zeros(0, np.int32)
    cols["decayMatched"] = np.all(rows >= 0, axis=1) if N else np.zeros(0, bool)
    truth_nodes = _true_columns_2d(truth, rows)
    for label, i in labels.items():
        tc = {k: np.ascontiguousarray(v[:, i]) for k, v in truth_nodes.items()}
        for k, arr in tc.items():
            if k in ("TRUEKEY", "MC_MOTHER_KEY"):
                continue
            cols[f"{label}_{k}"] = arr
        p = np.sqrt(tc["TRUEP_X"] ** 2 + tc["TRUEP_Y"] ** 2 + tc["TRUEP_Z"] ** 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            cols[f"{label}_TRUEETA"] = 0.5 * np.log((p + tc["TRUEP_Z"]) / (p - tc["TRUEP_Z"]))
            cols[f"{label}_TRUEM"] = np.sqrt(np.maximum(tc["TRUEP_E"] ** 2 - p * p, 0.0))
        cols[f"{label}_ID"] = tc["TRUEID"].copy()
    return cols


class MCDecayTreeTuple(Algorithm):
    """Writes ``MCDecayTree``: the true kinematics of every generated signal decay matching
    ``Decay``, with runNumber, eventNumber and signalKey (the MC index of the signal head; the
    same key is in DecayTree for truth-matched candidates), and stores the generator-level event
    counts and generator-cut efficiency (events / generation trials) in the output file."""

    TupleName = Property(str, "MCDecayTree", "TTree name")
    Decay = Property(str, "", "decay descriptor of the generated signal, e.g. '[B+ -> (J/psi(1S) -> mu+ mu-) K+]cc'")
    Branches = Property(dict, {}, "label -> node index, unique particle name or descriptor with one ^")
    MCParticles = Input("/Event/MC/Particles", "MC particles")
    MCVertices = Input("/Event/MC/Vertices", "MC vertices")
    Header = Input("/Event/Gen/Header", "generator header (signal_trials)")

    def initialize(self):
        from ._descriptors import default_table, parse, preorder

        if not self.Decay.strip():
            raise ConfigurationError(f"{self.name}.Decay is empty: give the generated signal decay descriptor")
        try:
            desc = parse(self.Decay)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{self.name}.Decay: {exc}") from None
        self.alternatives = desc.alternatives(default_table())
        nodes = preorder(self.alternatives[0])
        top = Topology(tuple(x.pid for x in nodes), tuple(x.name for x in nodes),
                       tuple(_parents(self.alternatives[0])), tuple(not x.daughters for x in nodes))
        self.topology = top
        marked = [i for i, x in enumerate(nodes) if x.marked]
        if not self.Branches and marked:
            labels = auto_labels(top.names)
            self.labels = {labels[i]: i for i in marked}
        else:
            self.labels = resolve_branches(self.Branches, top, f"{self.name}.Branches")
        self.tuple = self.ntuple(self.TupleName)
        self._hook = self.app.plugins.has_external_impls("flashsim_tuple_columns")
        self.n_events = 0
        self.n_trials = 0

    def execute(self, ctx, MCParticles, MCVertices, Header):
        truth = MCTruthIndex.of(MCParticles, MCVertices)
        rows, _alt = match_mc_decays(truth, self.alternatives)
        cols = mc_decay_tree_columns(truth, rows, self.labels, ctx.run_number, ctx.event_numbers)
        if self._hook:
            ev = MCParticles.event_index[rows[:, 0]] if len(rows) else np.zeros(0, np.int64)
            view = Collection.from_event_index({"mc_rows": rows}, ev, ctx.n_events, ctx.event_numbers)
            cols.update(call_tuple_hook(self.app, self.TupleName, view, cols, ctx))
        trials = np.asarray(Header["signal_trials"], dtype=np.int64) if "signal_trials" in Header else \
            np.ones(ctx.n_events, np.int64)
        self.n_events += ctx.n_events
        self.n_trials += int(trials.sum())
        self.counter("events").increment(ctx.n_events)
        self.counter("generator trials").increment(int(trials.sum()))
        self.counter("signal decays").increment(len(rows))
        if len(rows):
            self.binomial_counter("fully matched decays").add(cols["decayMatched"])
        self.tuple.extend(cols)

    def finalize(self):
        eff = self.n_events / self.n_trials if self.n_trials else float("nan")
        err = np.sqrt(eff * (1 - eff) / self.n_trials) if self.n_trials else float("nan")
        self.info(f"generator-cut efficiency {eff:.5f} +- {err:.5f} ({self.n_events} events / {self.n_trials} trials)")
        svc = self.app.output_svc
        if svc is not None and svc.filename:
            svc.put_metadata(f"{self.name}_GeneratorEfficiency", json.dumps(
                {"tuple": self.TupleName, "events": self.n_events, "trials": self.n_trials,
                 "generator_cut_efficiency": eff, "generator_cut_efficiency_error": err}))


def _parents(node):
    from ._descriptors import preorder

    nodes = preorder(node)
    index = {id(x): i for i, x in enumerate(nodes)}
    par = [-1] * len(nodes)
    for x in nodes:
        for d in x.daughters:
            par[index[id(d)]] = index[id(x)]
    return par
