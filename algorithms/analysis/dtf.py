"""DecayTreeFitter: whole-decay-chain least-squares fit, batched in numba.

Method (see docs/decaytreefitter.md): the reduced ("substituted") parametrisation of Hulsbergen's
decay-chain fit.  The hard constraints of DTF are eliminated by construction:

* a composite's four-momentum is the sum of its daughters' (momentum conservation);
* a long-lived composite decays at ``x_prod + L * p/|p|`` (geometric constraint), ``L`` being the
  lab-frame decay length from its production vertex; resonances (c*tau < 1 um) share their
  mother's vertex;
* the head is produced at the PV when the PV constraint is on (the PV position is then a fit
  parameter with its measurement); otherwise the head vertex is 3 free parameters.

Free parameters: 3 (PV or head vertex) + 1 per long-lived composite (+3 instead for one with a
missing daughter: no pointing) + 3 per track ``(tx, ty, kappa = 1/p)``.  Measurements: the
5-dim track states (straight-line model) and the PV.  Mass constraints are exact (Lagrange
multipliers, ``E^2 - |p|^2 = m_PDG^2``).  Gauss-Newton in information form with hand-written
Cholesky; converged when the step costs < ``tol`` in chi2 and the mass constraints hold to
1e-8 MeV.  At the minimum this is identical to DTF (same chi2, ndof, covariance).

ndof = 5 n_tracks (+3 with PV) - n_par + n_mass_constraints:
B+ -> J/psi K+: 3; with PV: 5; with PV and m(J/psi): 6.

Public API: :func:`compile_tree` -> :class:`DTFSpec`, :class:`DTFConfig`, :func:`fit_batch`
(one configuration, dict of arrays) and :func:`fit_configs` (several named configurations,
flat ``{config}_{column}`` dict for ntuples).
"""
from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass

import numba as nb
import numpy as np

from .kinematics import (
    ConfigurationError,
    chol_decomp,
    chol_inverse,
    chol_solve,
    pdg_charge,
    pdg_ctau,
    pdg_mass,
    pdg_name,
    resolve_pid,
    txtykappa_p4,
)

__all__ = [
    "SUCCESS",
    "NONCONVERGED",
    "FAILED",
    "BADINPUT",
    "FLAG_DOWNSTREAM",
    "DTFSpec",
    "DTFConfig",
    "compile_tree",
    "fit_batch",
    "fit_configs",
]

SUCCESS, NONCONVERGED, FAILED, BADINPUT = 0, 1, 2, 3
FLAG_DOWNSTREAM = 1  # bit in ``flags``: a downstream track is used (straight-line approximation)
STATUS_NAMES = {SUCCESS: "Success", NONCONVERGED: "NonConverged", FAILED: "Failed", BADINPUT: "BadInput"}

K_TRACK, K_COMPOSITE, K_MISSING = 0, 1, 2
V_FREE, V_POINTING, V_SHARED = 0, 1, 2
RESONANCE_CTAU_MM = 1e-3  # c*tau below 1 um: the composite shares its mother's vertex
_NEUTRINOS = {12, 14, 16}
# no fast-math: with reassociation/contraction allowed, the machine code of these kernels (which
# call helpers of kinematics.py) depended on what else had been compiled in the process, so a
# first run (fresh compilation) and later runs (numba cache) differed by ~1e-11 relative in every
# DTF output.  Same options + seed must give identical files; the cost was not measurable.
_FM = False


# ----------------------------------------------------------------------------------------------
# tree description
# ----------------------------------------------------------------------------------------------
def _label(name: str) -> str:
    s = name.replace("anti-", "anti")
    s = s.replace("+", "plus").replace("-", "minus").replace("~", "bar").replace("*", "st")
    s = re.sub(r"\(\d+S\)", "", s)
    s = re.sub(r"\(\d+\)", "", s)
    s = re.sub(r"[^0-9A-Za-z_]", "", s)
    return s or "P"


@dataclass
class DTFSpec:
    """A decay tree compiled to arrays (post-order: daughters before mothers, head last).

    ``kind`` 0 track / 1 composite / 2 missing (left out of the fit), ``parent`` (-1 head),
    ``dau_start``/``dau_idx`` (CSR daughters), ``long_lived`` (composite with c*tau >= 1 um),
    ``has_missing`` (a missing particle below), ``track_nodes[j]`` = node of track column j
    (tracks in the order they appear in the descriptor), ``labels`` unique branch-like names.
    """

    pid: np.ndarray
    names: list
    labels: list
    kind: np.ndarray
    parent: np.ndarray
    dau_start: np.ndarray
    dau_idx: np.ndarray
    long_lived: np.ndarray
    has_missing: np.ndarray
    track_nodes: np.ndarray
    track_abs_charge: np.ndarray
    descriptor: str = ""

    @property
    def n_nodes(self) -> int:
        return len(self.pid)

    @property
    def n_tracks(self) -> int:
        return len(self.track_nodes)

    @property
    def head(self) -> int:
        return self.n_nodes - 1

    def find(self, key, what: str = "particle") -> list[int]:
        """Nodes matching a label (``Jpsi``), a particle name (``J/psi(1S)``; both charges) or
        a node index.  Raises ConfigurationError with did-you-mean."""
        if isinstance(key, (int, np.integer)):
            if not 0 <= int(key) < self.n_nodes:
                raise ConfigurationError(f"{what}: node index {key} out of range 0..{self.n_nodes - 1}")
            return [int(key)]
        key = str(key).strip()
        if key in self.labels:
            return [self.labels.index(key)]
        hits = [i for i, nm in enumerate(self.names) if nm == key]
        if not hits:
            try:
                pid = resolve_pid(key)
                hits = [i for i in range(self.n_nodes) if abs(int(self.pid[i])) == abs(pid)]
            except ConfigurationError:
                hits = []
        if not hits:
            close = difflib.get_close_matches(key, list(self.labels) + list(self.names), n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigurationError(f"{what} {key!r} is not in the decay tree {self.descriptor!r} "
                                     f"(labels {self.labels}){hint}")
        return hits


def _as_tree(obj):
    """(pid, name, [daughter trees]) from a DecayNode-like object, a descriptor string or nested
    tuples ``("B+", [("J/psi(1S)", ["mu+", "mu-"]), "K+"])``."""
    if hasattr(obj, "pid") and hasattr(obj, "daughters"):
        return int(obj.pid), str(getattr(obj, "name", pdg_name(obj.pid))), [_as_tree(d) for d in obj.daughters]
    if hasattr(obj, "head") and hasattr(obj.head, "daughters"):
        return _as_tree(obj.head)
    if isinstance(obj, str):
        if "->" in obj or "=>" in obj:
            try:
                from algorithms.common.descriptors import parse_descriptor
            except Exception as exc:  # pragma: no cover
                raise ConfigurationError(f"cannot parse descriptor {obj!r}: {exc}") from exc
            return _as_tree(parse_descriptor(obj).head)
        return resolve_pid(obj), obj, []
    if isinstance(obj, (int, np.integer)):
        return int(obj), pdg_name(obj), []
    if isinstance(obj, (tuple, list)) and len(obj) == 2 and isinstance(obj[1], (tuple, list)):
        head = obj[0]
        pid = resolve_pid(head)
        name = head if isinstance(head, str) else pdg_name(pid)
        return pid, name, [_as_tree(d) for d in obj[1]]
    raise ConfigurationError(f"cannot interpret {obj!r} as a decay tree (expected a DecayNode, a descriptor "
                             "string or nested (name, [daughters]) tuples)")


def compile_tree(tree, resonances=(), long_lived=()) -> DTFSpec:
    """Compile a decay tree once into :class:`DTFSpec` arrays.

    ``tree``: a ``DecayNode`` (from ``algorithms.common.descriptors``), a descriptor string
    (``"B+ -> (J/psi(1S) -> mu+ mu-) K+"``) or nested tuples.  Composites with PDG c*tau < 1 um
    share their mother's vertex; override with ``resonances=`` / ``long_lived=`` (names).
    Neutrinos are *missing*: left out of the fit.  Other neutral final states (photons, pi0
    merged) are not supported yet."""
    root = _as_tree(tree)
    pids, names, kinds, parents, daus = [], [], [], [], []
    res_set = {abs(resolve_pid(r)) for r in resonances}
    ll_set = {abs(resolve_pid(r)) for r in long_lived}

    def visit(node, parent_slot):
        pid, name, children = node
        my = len(pids)
        pids.append(pid), names.append(name), parents.append(parent_slot), daus.append([])
        if children:
            kinds.append(K_COMPOSITE)
        elif abs(pid) in _NEUTRINOS:
            kinds.append(K_MISSING)
        else:
            if pdg_charge(pid) == 0:
                raise ConfigurationError(f"final-state particle {name!r} is neutral: only charged tracks and "
                                         "missing neutrinos are supported by the DecayTreeFitter kernel")
            kinds.append(K_TRACK)
        for ch in children:
            daus[my].append(visit(ch, my))
        return my

    visit(root, -1)
    # post-order permutation
    order = []

    def post(i):
        for d in daus[i]:
            post(d)
        order.append(i)

    post(0)
    new = {old: k for k, old in enumerate(order)}
    n = len(order)
    pid = np.array([pids[o] for o in order], np.int64)
    kind = np.array([kinds[o] for o in order], np.int8)
    parent = np.array([new[parents[o]] if parents[o] >= 0 else -1 for o in order], np.int32)
    nm = [names[o] for o in order]
    dstart = np.zeros(n + 1, np.int32)
    didx = []
    for k, o in enumerate(order):
        didx.extend(new[d] for d in daus[o])
        dstart[k + 1] = len(didx)
    ll = np.zeros(n, bool)
    hm = np.zeros(n, bool)
    for k in range(n):
        if kind[k] == K_COMPOSITE:
            a = abs(int(pid[k]))
            ll[k] = (pdg_ctau(a) >= RESONANCE_CTAU_MM or a in ll_set) and a not in res_set
        if kind[k] == K_MISSING:
            j = k
            while j >= 0:
                hm[j] = True
                j = parent[j]
    hm_comp = hm & (kind == K_COMPOSITE)
    hm[:] = hm_comp
    labels, seen = [], {}
    for k in range(n):
        base = _label(nm[k])
        c = seen.get(base, 0)
        seen[base] = c + 1
        labels.append(base if c == 0 else f"{base}_{c}")
    # disambiguate: first occurrence also gets a suffix if the base repeats
    counts = {b: c for b, c in seen.items() if c > 1}
    labels = [(lab + "_0") if lab in counts else lab for lab in labels]
    tracks = np.array([k for k in range(n) if kind[k] == K_TRACK], np.int32)
    if kind[n - 1] != K_COMPOSITE:
        raise ConfigurationError("the head of the decay tree must be a composite with daughters")
    text = tree if isinstance(tree, str) else str(tree)
    return DTFSpec(pid=pid, names=nm, labels=labels, kind=kind, parent=parent, dau_start=dstart,
                   dau_idx=np.array(didx, np.int32), long_lived=ll, has_missing=hm, track_nodes=tracks,
                   track_abs_charge=np.array([abs(pdg_charge(int(pid[t]))) for t in tracks], np.float64),
                   descriptor=text)


@dataclass
class DTFConfig:
    """One named DecayTreeFitter configuration.

    ``pv_constraint``: the head points back to the PV (PV position a fit parameter with its
    measurement).  ``mass_constraints``: particles (labels or names) whose mass is fixed to the
    PDG value (of the substituted hypothesis, if any).  ``substitutions``: ``"K+ -> pi+"`` strings
    (both charges) or a dict ``{label_or_name: new_name}``.  ``max_iter``, ``tol`` (chi2 cost of the
    last step for convergence)."""

    name: str = "DTF"
    pv_constraint: bool = False
    mass_constraints: tuple = ()
    substitutions: tuple = ()
    max_iter: int = 10
    tol: float = 1e-3


@dataclass
class _Compiled:
    vmode: np.ndarray
    par_off: np.ndarray
    vowner: np.ndarray
    prod_owner: np.ndarray
    mcon: np.ndarray
    mcon_val: np.ndarray
    ref_mass: np.ndarray
    node_pid: np.ndarray
    track_mass_sub: np.ndarray
    pv_off: int
    npar: int
    ndof: int


def _parse_substitutions(spec: DTFSpec, subs):
    out = {}
    items = subs.items() if isinstance(subs, dict) else []
    if not isinstance(subs, dict):
        pairs = []
        for s in ([subs] if isinstance(subs, str) else subs):
            if "->" not in s:
                raise ConfigurationError(f"substitution {s!r}: expected 'OLD -> NEW', e.g. 'K+ -> pi+'")
            a, b = (t.strip() for t in s.split("->", 1))
            pairs.append((a, b))
        items = pairs
    for old, new in items:
        new_pid = resolve_pid(new)
        if isinstance(old, str) and old in spec.labels:
            nodes = [spec.labels.index(old)]
        else:
            nodes = spec.find(old, "substitution")
        old_pid = resolve_pid(old) if not (isinstance(old, str) and old in spec.labels) else None
        for k in nodes:
            p = int(spec.pid[k])
            # keep the charge sign of the node: K+ -> pi+ also turns K- into pi-
            if old_pid is not None and p == -old_pid:
                out[k] = -new_pid
            else:
                out[k] = new_pid
    return out


def _compile_config(spec: DTFSpec, cfg: DTFConfig) -> _Compiled:
    n = spec.n_nodes
    head = spec.head
    sub = _parse_substitutions(spec, cfg.substitutions)
    node_pid = spec.pid.copy()
    for k, p in sub.items():
        node_pid[k] = p
    if cfg.pv_constraint and spec.has_missing[head]:
        raise ConfigurationError(f"{cfg.name}: no PV constraint for a partially reconstructed head "
                                 f"({spec.names[head]} has a missing daughter): its visible momentum does not "
                                 "point back to the PV")
    vmode = np.full(n, -1, np.int8)
    par_off = np.full(n, -1, np.int32)
    npar = 0
    pv_off = -1
    if cfg.pv_constraint:
        pv_off, npar = 0, 3
    # vertex modes, pre-order (head first = reverse post-order)
    for k in range(n - 1, -1, -1):
        if spec.kind[k] != K_COMPOSITE:
            continue
        if k == head:
            vmode[k] = V_POINTING if cfg.pv_constraint else V_FREE
        elif spec.long_lived[k]:
            vmode[k] = V_FREE if spec.has_missing[k] else V_POINTING
        else:
            vmode[k] = V_SHARED
    for k in range(n - 1, -1, -1):
        if spec.kind[k] == K_COMPOSITE and vmode[k] != V_SHARED:
            par_off[k] = npar
            npar += 3 if vmode[k] == V_FREE else 1
    for k in range(n):
        if spec.kind[k] == K_TRACK:
            par_off[k] = npar
            npar += 3
    vowner = np.full(n, -1, np.int32)
    for k in range(n - 1, -1, -1):
        if spec.kind[k] == K_COMPOSITE:
            vowner[k] = k if vmode[k] != V_SHARED else vowner[spec.parent[k]]
        else:
            vowner[k] = vowner[spec.parent[k]]  # origin vertex of a final-state particle
    prod_owner = np.full(n, -1, np.int32)
    for k in range(n):
        if spec.kind[k] == K_COMPOSITE and vmode[k] == V_POINTING:
            prod_owner[k] = n if k == head else vowner[spec.parent[k]]
    # every free vertex needs two lines
    for k in range(n):
        if spec.kind[k] == K_COMPOSITE and vmode[k] == V_FREE:
            nl = sum(1 for j in range(n) if j != k and vowner[j] == k and spec.kind[j] == K_TRACK) + sum(
                1 for j in range(n) if spec.kind[j] == K_COMPOSITE and vmode[j] != V_SHARED and j != k
                and vowner[spec.parent[j]] == k)
            if nl < 2:
                raise ConfigurationError(f"{cfg.name}: the vertex of {spec.names[k]} has fewer than two visible "
                                         "particles and no pointing constraint: it cannot be fitted")
    mcon = np.zeros(n, bool)
    for key in cfg.mass_constraints:
        for k in spec.find(key, f"{cfg.name}: mass constraint"):
            if spec.kind[k] != K_COMPOSITE:
                raise ConfigurationError(f"{cfg.name}: mass constraint on {spec.names[k]!r}, which is not a composite")
            if spec.has_missing[k]:
                raise ConfigurationError(f"{cfg.name}: mass constraint on {spec.names[k]!r}, which has a missing daughter")
            mcon[k] = True
    ref_mass = np.array([pdg_mass(int(p)) if spec.kind[k] != K_MISSING else 0.0 for k, p in enumerate(node_pid)])
    tsub = np.full(spec.n_tracks, np.nan)
    for j, k in enumerate(spec.track_nodes):
        if k in sub:
            tsub[j] = ref_mass[k]
    nmeas = 5 * spec.n_tracks + (3 if cfg.pv_constraint else 0)
    ndof = nmeas - npar + int(mcon.sum())
    if ndof < 0:
        raise ConfigurationError(f"{cfg.name}: under-constrained fit (ndof = {ndof})")
    return _Compiled(vmode=vmode, par_off=par_off, vowner=vowner, prod_owner=prod_owner, mcon=mcon,
                     mcon_val=ref_mass.copy(), ref_mass=ref_mass, node_pid=node_pid, track_mass_sub=tsub,
                     pv_off=pv_off, npar=npar, ndof=ndof)


# ----------------------------------------------------------------------------------------------
# the kernel
# ----------------------------------------------------------------------------------------------
@nb.njit(cache=True, fastmath=_FM, error_model="numpy")
def _evaluate(theta, kind, dstart, didx, vmode, par_off, vowner, prod_owner, tcol, tmass, npar, nn,
              p4, Jp4, pos, Jpos, J43, with_jac=True):
    """Four-momenta (post-order) and vertex positions (pre-order) with dense Jacobians."""
    for i in range(nn):
        if kind[i] == 0:
            o = par_off[i]
            txtykappa_p4(theta[o], theta[o + 1], theta[o + 2], tmass[tcol[i]], p4[i], J43, False)
            if not with_jac:
                continue
            for a in range(4):
                for c in range(npar):
                    Jp4[i, a, c] = 0.0
                for b in range(3):
                    Jp4[i, a, o + b] = J43[a, b]
        elif kind[i] == 1:
            for a in range(4):
                p4[i, a] = 0.0
                if with_jac:
                    for c in range(npar):
                        Jp4[i, a, c] = 0.0
            for q in range(dstart[i], dstart[i + 1]):
                d = didx[q]
                if kind[d] == 2:
                    continue
                for a in range(4):
                    p4[i, a] += p4[d, a]
                if with_jac:
                    for a in range(4):
                        for c in range(npar):
                            Jp4[i, a, c] += Jp4[d, a, c]
    if not with_jac:
        return
    for i in range(nn - 1, -1, -1):
        if kind[i] != 1:
            continue
        vm = vmode[i]
        o = par_off[i]
        if vm == 0:
            for a in range(3):
                pos[i, a] = theta[o + a]
                for c in range(npar):
                    Jpos[i, a, c] = 0.0
                Jpos[i, a, o + a] = 1.0
        elif vm == 1:
            pr = prod_owner[i]
            L = theta[o]
            px, py, pz = p4[i, 0], p4[i, 1], p4[i, 2]
            pp = math.sqrt(px * px + py * py + pz * pz)
            u0, u1, u2 = px / pp, py / pp, pz / pp
            u = (u0, u1, u2)
            pos[i, 0] = pos[pr, 0] + L * u0
            pos[i, 1] = pos[pr, 1] + L * u1
            pos[i, 2] = pos[pr, 2] + L * u2
            f = L / pp
            for a in range(3):
                for c in range(npar):
                    s = Jpos[pr, a, c]
                    # L (I - u u^T)/|p| dp/dtheta
                    t = Jp4[i, a, c] - u[a] * (u0 * Jp4[i, 0, c] + u1 * Jp4[i, 1, c] + u2 * Jp4[i, 2, c])
                    Jpos[i, a, c] = s + f * t
                Jpos[i, a, o] += u[a]


@nb.njit(cache=True, fastmath=_FM, error_model="numpy", inline="always")
def _fwd(L, b, y, n):
    """y = L^-1 b (forward substitution)."""
    for i in range(n):
        s = b[i]
        for k in range(i):
            s -= L[i, k] * y[k]
        y[i] = s / L[i, i]


@nb.njit(cache=True, fastmath=_FM, error_model="numpy", inline="always")
def _var(L, jv, y, Z, Sinv, t, n, ncon):
    """j^T C j for C = N^-1 - N^-1 A^T S^-1 A N^-1 from the Cholesky factor L of N and
    Z_k = L^-1 A_k; leaves y = L^-1 j and t_k = y.Z_k."""
    _fwd(L, jv, y, n)
    v = 0.0
    for i in range(n):
        v += y[i] * y[i]
    for k in range(ncon):
        s = 0.0
        for i in range(n):
            s += y[i] * Z[k, i]
        t[k] = s
    for k in range(ncon):
        for k2 in range(ncon):
            v -= t[k] * Sinv[k, k2] * t[k2]
    return v


@nb.njit(cache=True, error_model="numpy")
def _seed_point(lines_a, lines_d, nl, out):
    M = np.zeros((3, 3))
    b = np.zeros(3)
    for l in range(nl):
        d = lines_d[l]
        nrm = math.sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2])
        for r in range(3):
            for c in range(3):
                P = (1.0 if r == c else 0.0) - d[r] * d[c] / (nrm * nrm)
                M[r, c] += P
                b[r] += P * lines_a[l, c]
    L = np.zeros((3, 3))
    if nl >= 2 and chol_decomp(M, L, 3):
        chol_solve(L, b, out, 3)
        return True
    for a in range(3):
        out[a] = lines_a[0, a]
    return False


@nb.njit(cache=True, fastmath=_FM, error_model="numpy")
def _dtf_kernel(kind, parent, dstart, didx, vmode, par_off, vowner, prod_owner, tnode, mcon, mcon_val,
                ref_mass, tmass_sub, pv_off, npar, max_iter, tol, states, covs, zref, masses, abs_charge,
                pv, pv_cov, has_pv,
                status, niter, chi2o, node_p4, node_merr, node_pos, node_poserr, node_L, node_Lerr,
                node_ctau, node_ctauerr, head_perr, pv_fit):
    ncand = states.shape[0]
    nt = tnode.shape[0]
    nn = kind.shape[0]
    head = nn - 1
    tcol = np.full(nn, -1, np.int64)
    for j in range(nt):
        tcol[tnode[j]] = j
    ncon = 0
    for i in range(nn):
        if mcon[i]:
            ncon += 1
    cidx = np.zeros(max(ncon, 1), np.int64)
    k = 0
    for i in range(nn):
        if mcon[i]:
            cidx[k] = i
            k += 1
    use_pv = pv_off >= 0
    # work space
    theta = np.zeros(npar)
    p4 = np.zeros((nn, 4))
    Jp4 = np.zeros((nn, 4, npar))
    pos = np.zeros((nn + 1, 3))
    Jpos = np.zeros((nn + 1, 3, npar))
    J43 = np.zeros((4, 4))
    W = np.zeros((nt, 5, 5))
    meas = np.zeros((nt, 5))
    tmass = np.zeros(nt)
    Wpv = np.zeros((3, 3))
    L5 = np.zeros((5, 5))
    w5 = np.zeros((5, 5))
    C5 = np.zeros((5, 5))
    Nm = np.zeros((npar, npar))
    Lm = np.zeros((npar, npar))
    g = np.zeros(npar)
    delta = np.zeros(npar)
    H = np.zeros((5, npar))
    T = np.zeros((5, npar))
    r = np.zeros(5)
    Wr = np.zeros(5)
    A = np.zeros((max(ncon, 1), npar))
    cval = np.zeros(max(ncon, 1))
    U = np.zeros((max(ncon, 1), npar))
    S = np.zeros((max(ncon, 1), max(ncon, 1)))
    LS = np.zeros((max(ncon, 1), max(ncon, 1)))
    rhs = np.zeros(max(ncon, 1))
    lam = np.zeros(max(ncon, 1))
    jv = np.zeros(npar)
    yv = np.zeros(npar)
    Y3 = np.zeros((3, npar))
    nc1 = max(ncon, 1)
    Z = np.zeros((nc1, npar))
    Sinv = np.zeros((nc1, nc1))
    wS = np.zeros((nc1, nc1))
    tk = np.zeros(nc1)
    tk3 = np.zeros((3, nc1))
    seeds = np.zeros((nn + 1, 3))
    la = np.zeros((nn + 1, 3))
    ld = np.zeros((nn + 1, 3))
    V3 = np.zeros((3, 3))
    L3 = np.zeros((3, 3))
    tmp3 = np.zeros(3)
    for c in range(ncand):
        niter[c] = 0
        st = SUCCESS
        # ---------------- inputs
        for j in range(nt):
            q = abs_charge[j]
            sgn = 1.0 if states[c, j, 4] > 0 else -1.0
            for a in range(5):
                meas[j, a] = states[c, j, a]
                if not math.isfinite(meas[j, a]):
                    st = BADINPUT
            if not (states[c, j, 4] != 0.0) or not math.isfinite(zref[c, j]):
                st = BADINPUT
            meas[j, 4] = abs(states[c, j, 4]) / q
            for a in range(5):
                sa = sgn / q if a == 4 else 1.0
                for b in range(5):
                    sb = sgn / q if b == 4 else 1.0
                    C5[a, b] = covs[c, j, a, b] * sa * sb
            if st == SUCCESS and chol_decomp(C5, L5, 5):
                chol_inverse(L5, W[j], w5, 5)
            else:
                st = BADINPUT
            tmass[j] = tmass_sub[j] if math.isfinite(tmass_sub[j]) else masses[c, j]
        if use_pv:
            for a in range(3):
                if not math.isfinite(pv[c, a]):
                    st = BADINPUT
            if st == SUCCESS and chol_decomp(pv_cov[c], L3, 3):
                chol_inverse(L3, Wpv, V3, 3)
            else:
                st = BADINPUT
        if st != SUCCESS:
            status[c] = st
            continue
        # ---------------- seed
        for j in range(nt):
            o = par_off[tnode[j]]
            theta[o] = meas[j, 2]
            theta[o + 1] = meas[j, 3]
            theta[o + 2] = meas[j, 4]
        _evaluate(theta, kind, dstart, didx, vmode, par_off, vowner, prod_owner, tcol, tmass, npar, nn,
                  p4, Jp4, pos, Jpos, J43, False)  # momenta only
        for v in range(nn):
            if kind[v] != 1 or vmode[v] == 2:
                continue
            nl = 0
            for i in range(nn):
                if kind[i] == 0 and vowner[i] == v:
                    j = tcol[i]
                    la[nl, 0] = meas[j, 0]
                    la[nl, 1] = meas[j, 1]
                    la[nl, 2] = zref[c, j]
                    ld[nl, 0] = meas[j, 2]
                    ld[nl, 1] = meas[j, 3]
                    ld[nl, 2] = 1.0
                    nl += 1
                elif kind[i] == 1 and i != v and vmode[i] != 2 and vowner[parent[i]] == v:
                    for a in range(3):
                        la[nl, a] = seeds[i, a]
                        ld[nl, a] = p4[i, a]
                    nl += 1
            _seed_point(la, ld, nl, tmp3)
            for a in range(3):
                seeds[v, a] = tmp3[a]
        if use_pv:
            for a in range(3):
                theta[pv_off + a] = pv[c, a]
                seeds[nn, a] = pv[c, a]
        for v in range(nn - 1, -1, -1):
            if kind[v] != 1 or vmode[v] == 2:
                continue
            o = par_off[v]
            if vmode[v] == 0:
                for a in range(3):
                    theta[o + a] = seeds[v, a]
            else:
                pr = prod_owner[v]
                pp = math.sqrt(p4[v, 0] ** 2 + p4[v, 1] ** 2 + p4[v, 2] ** 2)
                s = 0.0
                for a in range(3):
                    s += (seeds[v, a] - seeds[pr, a]) * p4[v, a] / pp
                theta[o] = s
        # ---------------- Gauss-Newton
        converged = False
        failed = False
        it = 0
        chi2 = 0.0
        while it < max_iter:
            it += 1
            if use_pv:
                for a in range(3):
                    pos[nn, a] = theta[pv_off + a]
                    for cc in range(npar):
                        Jpos[nn, a, cc] = 0.0
                    Jpos[nn, a, pv_off + a] = 1.0
            _evaluate(theta, kind, dstart, didx, vmode, par_off, vowner, prod_owner, tcol, tmass, npar, nn,
                      p4, Jp4, pos, Jpos, J43)
            for a in range(npar):
                g[a] = 0.0
                for b in range(npar):
                    Nm[a, b] = 0.0
            chi2 = 0.0
            for j in range(nt):
                i = tnode[j]
                v = vowner[i]
                o = par_off[i]
                tx, ty = theta[o], theta[o + 1]
                dz = zref[c, j] - pos[v, 2]
                r[0] = meas[j, 0] - (pos[v, 0] + dz * tx)
                r[1] = meas[j, 1] - (pos[v, 1] + dz * ty)
                r[2] = meas[j, 2] - tx
                r[3] = meas[j, 3] - ty
                r[4] = meas[j, 4] - theta[o + 2]
                for cc in range(npar):
                    H[0, cc] = Jpos[v, 0, cc] - tx * Jpos[v, 2, cc]
                    H[1, cc] = Jpos[v, 1, cc] - ty * Jpos[v, 2, cc]
                H[0, o] += dz
                H[1, o + 1] += dz
                for a in range(5):
                    s = 0.0
                    for b in range(5):
                        s += W[j, a, b] * r[b]
                    Wr[a] = s
                    chi2 += r[a] * s
                # N += H^T W H with H = (h0, h1, e_o, e_o+1, e_o+2): dense part from h0, h1 only
                w00, w01, w11 = W[j, 0, 0], W[j, 0, 1], W[j, 1, 1]
                for aa in range(npar):
                    x0 = H[0, aa]
                    x1 = H[1, aa]
                    if x0 == 0.0 and x1 == 0.0:
                        continue
                    g[aa] += x0 * Wr[0] + x1 * Wr[1]
                    va = w00 * x0 + w01 * x1
                    vb = w01 * x0 + w11 * x1
                    for bb in range(aa, npar):
                        Nm[aa, bb] += va * H[0, bb] + vb * H[1, bb]
                    for b in range(3):
                        t = W[j, 0, 2 + b] * x0 + W[j, 1, 2 + b] * x1
                        ob = o + b
                        if aa < ob:
                            Nm[aa, ob] += t
                        elif aa > ob:
                            Nm[ob, aa] += t
                        else:
                            Nm[ob, ob] += 2.0 * t
                for a in range(3):
                    g[o + a] += Wr[2 + a]
                    for b in range(a, 3):
                        Nm[o + a, o + b] += W[j, 2 + a, 2 + b]
            if use_pv:
                for a in range(3):
                    r[a] = pv[c, a] - theta[pv_off + a]
                for a in range(3):
                    s = 0.0
                    for b in range(3):
                        s += Wpv[a, b] * r[b]
                        if b >= a:
                            Nm[pv_off + a, pv_off + b] += Wpv[a, b]
                    g[pv_off + a] += s
                    chi2 += r[a] * s
            for a in range(npar):
                for b in range(a):
                    Nm[a, b] = Nm[b, a]
            if not math.isfinite(chi2) or not chol_decomp(Nm, Lm, npar):
                failed = True
                break
            chol_solve(Lm, g, delta, npar)
            cok = True
            if ncon > 0:
                for k in range(ncon):
                    i = cidx[k]
                    E, px, py, pz = p4[i, 3], p4[i, 0], p4[i, 1], p4[i, 2]
                    M0 = mcon_val[i]
                    cval[k] = E * E - px * px - py * py - pz * pz - M0 * M0
                    for cc in range(npar):
                        A[k, cc] = 2.0 * (E * Jp4[i, 3, cc] - px * Jp4[i, 0, cc] - py * Jp4[i, 1, cc]
                                          - pz * Jp4[i, 2, cc])
                    chol_solve(Lm, A[k], U[k], npar)
                for k in range(ncon):
                    s = cval[k]
                    for cc in range(npar):
                        s += A[k, cc] * delta[cc]
                    rhs[k] = s
                    for k2 in range(ncon):
                        t = 0.0
                        for cc in range(npar):
                            t += A[k, cc] * U[k2, cc]
                        S[k, k2] = t
                if not chol_decomp(S, LS, ncon):
                    failed = True
                    break
                chol_solve(LS, rhs, lam, ncon)
                for cc in range(npar):
                    s = 0.0
                    for k in range(ncon):
                        s += U[k, cc] * lam[k]
                    delta[cc] -= s
            # chi2 cost of the step: delta^T N delta = delta^T g - (A delta)^T lambda
            gd = 0.0
            for a in range(npar):
                gd += g[a] * delta[a]
            step = gd
            for k in range(ncon):
                t = 0.0
                for cc in range(npar):
                    t += A[k, cc] * delta[cc]
                step -= t * lam[k]
            if step < tol and cok:
                converged = True
                break
            for a in range(npar):
                theta[a] += delta[a]
            for j in range(nt):
                if not (theta[par_off[tnode[j]] + 2] > 0.0):
                    failed = True
            if failed:
                break
        niter[c] = it
        if failed:
            status[c] = FAILED
            continue
        # ---------------- apply the last step (linearised chi2: |r - H delta|^2_W), then project
        # onto the exact mass constraints with the last linearisation
        for a in range(npar):
            theta[a] += delta[a]
        chi2 += step - 2.0 * gd
        if use_pv:
            for a in range(3):
                pos[nn, a] = theta[pv_off + a]
        _evaluate(theta, kind, dstart, didx, vmode, par_off, vowner, prod_owner, tcol, tmass, npar, nn,
                  p4, Jp4, pos, Jpos, J43)
        if ncon > 0:
            for rep in range(3):
                done = True
                for k in range(ncon):
                    i = cidx[k]
                    M0 = mcon_val[i]
                    cval[k] = p4[i, 3] * p4[i, 3] - p4[i, 0] * p4[i, 0] - p4[i, 1] * p4[i, 1] - p4[i, 2] * p4[i, 2] - M0 * M0
                    if abs(cval[k]) > 2.0 * M0 * 3e-8:  # ~ the rounding limit of E^2 - p^2
                        done = False
                if done:
                    break
                chol_solve(LS, cval, lam, ncon)
                for cc in range(npar):
                    s = 0.0
                    for k in range(ncon):
                        s += U[k, cc] * lam[k]
                    theta[cc] -= s
                if use_pv:
                    for a in range(3):
                        pos[nn, a] = theta[pv_off + a]
                _evaluate(theta, kind, dstart, didx, vmode, par_off, vowner, prod_owner, tcol, tmass, npar, nn,
                          p4, Jp4, pos, Jpos, J43)
        for j in range(nt):
            if not (theta[par_off[tnode[j]] + 2] > 0.0):
                failed = True
        if failed or not math.isfinite(chi2):
            status[c] = FAILED
            continue
        # ---------------- covariance, never formed: var(j^T theta) = |L^-1 j|^2 - t^T S^-1 t with
        # t_k = (L^-1 j).(L^-1 A_k) (C = N^-1 - N^-1 A^T S^-1 A N^-1)
        if ncon > 0:
            chol_inverse(LS, Sinv, wS, ncon)
            for k in range(ncon):
                _fwd(Lm, A[k], Z[k], npar)
        ok = chi2 >= 0.0
        chi2o[c] = chi2
        # ---------------- derived quantities
        for i in range(nn):
            if kind[i] == 2:
                continue
            for a in range(4):
                node_p4[c, i, a] = p4[i, a]
            if kind[i] != 1:
                continue
            E, px, py, pz = p4[i, 3], p4[i, 0], p4[i, 1], p4[i, 2]
            m2 = E * E - px * px - py * py - pz * pz
            mm = math.sqrt(m2) if m2 > 0 else 0.0
            if not (mm > 0.0):
                ok = False
                continue
            if mcon[i]:
                node_merr[c, i] = 0.0  # exact constraint
            else:
                for cc in range(npar):
                    jv[cc] = (E * Jp4[i, 3, cc] - px * Jp4[i, 0, cc] - py * Jp4[i, 1, cc] - pz * Jp4[i, 2, cc]) / mm
                var = _var(Lm, jv, Y3[0], Z, Sinv, tk, npar, ncon)
                if not (var > 0.0):
                    ok = False
                node_merr[c, i] = math.sqrt(abs(var))
            if vmode[i] != 2:
                for a in range(3):
                    node_pos[c, i, a] = pos[i, a]
                    for cc in range(npar):
                        jv[cc] = Jpos[i, a, cc]
                    var = _var(Lm, jv, Y3[a], Z, Sinv, tk3[a], npar, ncon)
                    if not (var > 0.0):
                        ok = False
                    node_poserr[c, i, a] = math.sqrt(abs(var))
                if i == head and has_pv and vmode[i] != 1:
                    # V = cov(x_head) + cov(PV), from the three vectors just computed
                    for a in range(3):
                        for b in range(3):
                            s = pv_cov[c, a, b]
                            for cc in range(npar):
                                s += Y3[a, cc] * Y3[b, cc]
                            for k in range(ncon):
                                for k2 in range(ncon):
                                    s -= tk3[a, k] * Sinv[k, k2] * tk3[b, k2]
                            V3[a, b] = s
            pp = math.sqrt(px * px + py * py + pz * pz)
            if i == head:
                for cc in range(npar):
                    jv[cc] = (px * Jp4[i, 0, cc] + py * Jp4[i, 1, cc] + pz * Jp4[i, 2, cc]) / pp
                var = _var(Lm, jv, yv, Z, Sinv, tk, npar, ncon)
                head_perr[c] = math.sqrt(abs(var))
            mref = ref_mass[i]
            if vmode[i] == 1:
                o = par_off[i]
                Lv = theta[o]
                node_L[c, i] = Lv
                for cc in range(npar):
                    jv[cc] = 0.0
                jv[o] = 1.0
                var = _var(Lm, jv, yv, Z, Sinv, tk, npar, ncon)
                if not (var > 0.0):
                    ok = False
                node_Lerr[c, i] = math.sqrt(abs(var))
                node_ctau[c, i] = Lv * mref / pp
                for cc in range(npar):
                    jv[cc] = -Lv * mref / (pp * pp * pp) * (px * Jp4[i, 0, cc] + py * Jp4[i, 1, cc]
                                                            + pz * Jp4[i, 2, cc])
                jv[o] += mref / pp
                var = _var(Lm, jv, yv, Z, Sinv, tk, npar, ncon)
                if not (var > 0.0):
                    ok = False
                node_ctauerr[c, i] = math.sqrt(abs(var))
            elif i == head and has_pv:
                # no pointing: decay length projected on the momentum, d = x_head - x_PV with
                # V = cov(x_head) + cov(PV); L = u^T V^-1 d / u^T V^-1 u (momentum direction fixed)
                if not chol_decomp(V3, L3, 3):
                    ok = False
                    continue
                u0, u1, u2 = px / pp, py / pp, pz / pp
                tmp3[0], tmp3[1], tmp3[2] = u0, u1, u2
                chol_solve(L3, tmp3, tmp3, 3)
                den = u0 * tmp3[0] + u1 * tmp3[1] + u2 * tmp3[2]
                num = 0.0
                for a in range(3):
                    num += tmp3[a] * (pos[i, a] - pv[c, a])
                Lv = num / den
                node_L[c, i] = Lv
                node_Lerr[c, i] = math.sqrt(1.0 / den)
                node_ctau[c, i] = Lv * mref / pp
                node_ctauerr[c, i] = math.sqrt(1.0 / den) * mref / pp
        if use_pv:
            for a in range(3):
                pv_fit[c, a] = theta[pv_off + a]
        if not ok:
            status[c] = FAILED
        else:
            status[c] = SUCCESS if converged else NONCONVERGED


# ----------------------------------------------------------------------------------------------
# Python API
# ----------------------------------------------------------------------------------------------
def fit_batch(spec: DTFSpec, config: DTFConfig, track_states, track_covs, track_z, track_masses=None,
              pv=None, pv_cov=None, downstream=None) -> dict:
    """Fit N candidates of one decay tree with one configuration.

    ``track_states`` (N, nt, 5) = (x, y, tx, ty, q/p) at ``track_z`` (N, nt) [mm, 1/MeV],
    ``track_covs`` (N, nt, 5, 5); tracks in ``spec.track_nodes`` order (the descriptor's order).
    ``track_masses`` (N, nt) or (nt,) mass hypotheses [MeV] (default: PDG masses of the spec;
    ``config.substitutions`` override them).  ``pv`` (N, 3), ``pv_cov`` (N, 3, 3): the (best) PV;
    required for ``pv_constraint``; without the constraint it is used only for the decay length
    (projection of the head's flight onto its momentum).  ``downstream`` (N, nt) bool: tracks
    whose state is far from the vertex (flagged, straight-line approximation).

    Returns a dict of arrays: head ``M, MERR, P, PERR, PT, ctau, ctauErr, decayLength,
    decayLengthErr`` [MeV, mm] (the last four only with a PV), ``chi2, nDOF, status, niter,
    flags``, the head decay vertex ``ENDVERTEX_X/Y/Z`` and errors, ``PV_X/Y/Z`` (fitted, PV
    constraint only), and per node ``{label}_PX/PY/PZ/PE/M`` (+ ``_MERR`` for composites,
    ``_ctau/_ctauErr/_decayLength/_decayLengthErr`` for long-lived intermediate composites);
    ``node_p4`` (N, n_nodes, 4); scalars ``n_failed``, ``n_nonconverged``, ``n_badinput``.
    Rows with status != 0 may hold NaN; rows with status 0 never do."""
    cc = _compile_config(spec, config)
    states = np.ascontiguousarray(track_states, dtype=np.float64)
    N = states.shape[0]
    nt = spec.n_tracks
    if states.shape != (N, nt, 5):
        raise ConfigurationError(f"{config.name}: track_states must be (N, {nt}, 5) for {spec.descriptor!r}, "
                                 f"got {states.shape}")
    covs = np.ascontiguousarray(track_covs, dtype=np.float64)
    if covs.shape != (N, nt, 5, 5):
        raise ConfigurationError(f"{config.name}: track_covs must be (N, {nt}, 5, 5), got {covs.shape}")
    z = np.ascontiguousarray(np.broadcast_to(np.asarray(track_z, dtype=np.float64), (N, nt)))
    if track_masses is None:
        track_masses = np.array([pdg_mass(int(spec.pid[k])) for k in spec.track_nodes])
    masses = np.ascontiguousarray(np.broadcast_to(np.asarray(track_masses, dtype=np.float64), (N, nt)))
    has_pv = pv is not None
    if config.pv_constraint and not has_pv:
        raise ConfigurationError(f"{config.name}: pv_constraint=True needs pv and pv_cov")
    if has_pv:
        pv = np.ascontiguousarray(pv, dtype=np.float64).reshape(N, 3)
        pv_cov = np.ascontiguousarray(pv_cov, dtype=np.float64).reshape(N, 3, 3)
    else:
        pv = np.zeros((N, 3))
        pv_cov = np.zeros((N, 3, 3))
    nn = spec.n_nodes
    nan = np.nan
    status = np.zeros(N, np.int8)
    niter = np.zeros(N, np.int32)
    chi2 = np.full(N, nan)
    node_p4 = np.full((N, nn, 4), nan)
    node_merr = np.full((N, nn), nan)
    node_pos = np.full((N, nn, 3), nan)
    node_poserr = np.full((N, nn, 3), nan)
    node_L = np.full((N, nn), nan)
    node_Lerr = np.full((N, nn), nan)
    node_ctau = np.full((N, nn), nan)
    node_ctauerr = np.full((N, nn), nan)
    head_perr = np.full(N, nan)
    pv_fit = np.full((N, 3), nan)
    _dtf_kernel(spec.kind, spec.parent, spec.dau_start, spec.dau_idx, cc.vmode, cc.par_off, cc.vowner,
                cc.prod_owner, spec.track_nodes, cc.mcon, cc.mcon_val, cc.ref_mass, cc.track_mass_sub,
                cc.pv_off, cc.npar, int(config.max_iter), float(config.tol), states, covs, z, masses,
                spec.track_abs_charge, pv, pv_cov, has_pv, status, niter, chi2, node_p4, node_merr, node_pos,
                node_poserr, node_L, node_Lerr, node_ctau, node_ctauerr, head_perr, pv_fit)
    h = spec.head
    P4 = node_p4[:, h]
    p = np.sqrt(np.sum(P4[:, :3] ** 2, 1))
    m2 = P4[:, 3] ** 2 - p**2
    out = {
        "M": np.sqrt(np.where(m2 > 0, m2, np.nan)),
        "MERR": node_merr[:, h],
        "P": p,
        "PERR": head_perr,
        "PT": np.hypot(P4[:, 0], P4[:, 1]),
        "PX": P4[:, 0], "PY": P4[:, 1], "PZ": P4[:, 2], "PE": P4[:, 3],
        "chi2": chi2,
        "nDOF": np.full(N, cc.ndof, np.int32),
        "status": status,
        "niter": niter,
        "ENDVERTEX_X": node_pos[:, h, 0], "ENDVERTEX_Y": node_pos[:, h, 1], "ENDVERTEX_Z": node_pos[:, h, 2],
        "ENDVERTEX_XERR": node_poserr[:, h, 0], "ENDVERTEX_YERR": node_poserr[:, h, 1],
        "ENDVERTEX_ZERR": node_poserr[:, h, 2],
    }
    if has_pv:
        out.update(ctau=node_ctau[:, h], ctauErr=node_ctauerr[:, h], decayLength=node_L[:, h],
                   decayLengthErr=node_Lerr[:, h])
    if config.pv_constraint:
        out.update(PV_X=pv_fit[:, 0], PV_Y=pv_fit[:, 1], PV_Z=pv_fit[:, 2])
    for k in range(nn - 1):
        if spec.kind[k] == K_MISSING:
            continue
        lab = spec.labels[k]
        out[f"{lab}_PX"], out[f"{lab}_PY"], out[f"{lab}_PZ"], out[f"{lab}_PE"] = (node_p4[:, k, a] for a in range(4))
        mm2 = node_p4[:, k, 3] ** 2 - np.sum(node_p4[:, k, :3] ** 2, 1)
        out[f"{lab}_M"] = np.sqrt(np.maximum(mm2, 0.0))
        if spec.kind[k] == K_COMPOSITE:
            out[f"{lab}_MERR"] = node_merr[:, k]
            if cc.vmode[k] == V_POINTING:
                out[f"{lab}_ctau"], out[f"{lab}_ctauErr"] = node_ctau[:, k], node_ctauerr[:, k]
                out[f"{lab}_decayLength"], out[f"{lab}_decayLengthErr"] = node_L[:, k], node_Lerr[:, k]
    flags = np.zeros(N, np.int32)
    if downstream is not None:
        ds = np.broadcast_to(np.asarray(downstream, dtype=bool), (N, nt))
        flags |= np.where(ds.any(1), FLAG_DOWNSTREAM, 0).astype(np.int32)
    out["flags"] = flags
    # never a NaN in a good row
    good = status == SUCCESS
    for key, arr in list(out.items()):
        if arr.dtype.kind == "f":
            bad = good & ~np.isfinite(arr)
            if bad.any():
                status[bad] = FAILED
                good &= ~bad
    out["node_p4"] = node_p4
    out["n_failed"] = int(np.count_nonzero(status == FAILED))
    out["n_nonconverged"] = int(np.count_nonzero(status == NONCONVERGED))
    out["n_badinput"] = int(np.count_nonzero(status == BADINPUT))
    return out


def fit_configs(spec: DTFSpec, configs, track_states, track_covs, track_z, track_masses=None, pv=None,
                pv_cov=None, downstream=None) -> dict:
    """Several named configurations (a list of DTFConfig or dict name -> DTFConfig) on the same
    candidates; returns a flat dict ``{f"{config.name}_{column}": array}`` of 1-D arrays (the
    per-configuration counters as ``{name}_n_failed`` etc.)."""
    if isinstance(configs, dict):
        configs = [DTFConfig(**{**c.__dict__, "name": n}) for n, c in configs.items()]
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"DecayTreeFitter configuration names must be unique, got {names}")
    flat = {}
    for cfg in configs:
        res = fit_batch(spec, cfg, track_states, track_covs, track_z, track_masses, pv, pv_cov, downstream)
        for key, arr in res.items():
            if key == "node_p4":
                continue
            flat[f"{cfg.name}_{key}"] = arr
    return flat
