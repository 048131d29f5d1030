"""MC truth of analysis candidates: true kinematics and DaVinci's background category (BKGCAT).

Tracks carry the within-event index of the MC particle they come from (``mc`` / ``mc_index``);
a composite is associated to the *common mother* of its final-state tracks (DaVinci's
``DaVinciSmartAssociator``: the background-category origin when the category is below 60), so
its TRUEID is 0 for combinatorial candidates.

Background category (``background_category``), following ``BackgroundCategory::category`` of
DaVinci (Analysis/Phys/DaVinciMCTools) as far as it applies to flashsim:

* **A** - the final-state tracks have a common mother: the same top ancestor, and a lowest common
  ancestor that is not a "stable" particle (e, mu, pi, K, p, gamma, nu).  If A holds:

  * **B** fully reconstructed: every final-state descendant of the common mother (descending
    through decayed particles, stopping at stable ones) is one of the tracks, except photons
    below ``SoftPhotonCut`` (300 MeV) and, with ``SemileptonicDecay``, up to ``NumNeutrinos``
    neutrinos.  If B holds:

    * **C** every track has the reconstructed PID (signed) of its MC particle, else **30**
      (reflection, e.g. K <-> pi swapped);
    * **D** the common mother has the candidate's PID (|PID| for neutral mothers), else **20**;
    * **E** no intermediate resonance missed (DaVinci's topology check: sum of |PID| of the
      reconstructed descendants equals that of the MC descendants), **0** (signal), else **10**
      (quasi-signal).
  * not B: **50** (low-mass background) if C holds and the common mother's mass minus
    ``LowMassBackgroundCut`` (100 MeV) is below the PDG mass of the candidate, else **40**
    (partially reconstructed).  A semileptonic signal (Lambda_b -> Lambda_c mu nu) is 50 unless
    ``SemileptonicDecay`` is set (then 0).
* not A (combinatorial): **60** if a track has no MC particle (cannot occur: flashsim makes no
  ghosts), **100** if the tracks come from different collisions (pile-up), **80** if all come
  from the primary vertex (origin vertex primary, or within 10 nm of it), **70** if some do,
  else **110** / **120** / **130** if a top ancestor contains a b / c quark / neither.

Units: MeV, mm; ``TRUETAU`` in ns (true proper time from the true flight distance and momentum).
"""
from __future__ import annotations

import functools

import numba as nb
import numpy as np

from framework import Collection

__all__ = ["STABLE_ABSPIDS", "MCTruthIndex", "true_columns", "background_category", "candidate_truth",
           "CATEGORY_NAMES"]

C_MM_PER_NS = 299.792458
STABLE_ABSPIDS = (11, 22, 13, 12, 14, 16, 211, 321, 2212)
CATEGORY_NAMES = {-1: "Undefined", 0: "Signal", 10: "QuasiSignal", 20: "FullyRecoPhysBkg", 30: "Reflection",
                  40: "PartRecoPhysBkg", 50: "LowMassBkg", 60: "Ghost", 70: "FromPV", 80: "AllFromSamePV",
                  100: "FromDifferentPV", 110: "bbar", 120: "ccbar", 130: "uds"}


@nb.njit(cache=True, inline="always")
def _is_stable(pid):
    a = abs(pid)
    return a == 11 or a == 22 or a == 13 or a == 12 or a == 14 or a == 16 or a == 211 or a == 321 or a == 2212


@nb.njit(cache=True, inline="always")
def _is_nu(pid):
    a = abs(pid)
    return a == 12 or a == 14 or a == 16


@functools.lru_cache(maxsize=None)
def _quark_content(pid: int):
    from particle import PDGID

    p = PDGID(int(pid))
    return bool(p.has_bottom), bool(p.has_charm)


@functools.lru_cache(maxsize=None)
def _is_neutral(pid: int) -> bool:
    from .kinematics import pdg_charge

    try:
        return pdg_charge(int(pid)) == 0
    except Exception:
        return True


class MCTruthIndex:
    """Batch-global views of ``/Event/MC/Particles`` and ``/Event/MC/Vertices``: global mother,
    children (CSR), origin/end vertex rows, top ancestor, primary-vertex position and quark
    content per MC particle."""

    def __init__(self, mcp: Collection, mcv: Collection):
        self.mcp, self.mcv = mcp, mcv
        n = len(mcp)
        ev = mcp.event_index
        poff, voff = mcp.offsets, mcv.offsets
        self.pid = np.ascontiguousarray(mcp["pid"], dtype=np.int64)
        self.p4 = np.stack([np.asarray(mcp[k], dtype=np.float64) for k in ("px", "py", "pz", "E")], 1) if n else \
            np.zeros((0, 4))
        self.mass = np.asarray(mcp["mass"], dtype=np.float64) if "mass" in mcp else np.sqrt(np.maximum(
            self.p4[:, 3] ** 2 - np.sum(self.p4[:, :3] ** 2, 1), 0))
        mother = np.asarray(mcp["mother"], dtype=np.int64)
        self.mother = np.where(mother >= 0, poff[:-1][ev] + mother, -1)
        ov = np.asarray(mcp["origin_vertex"], dtype=np.int64)
        endv = np.asarray(mcp["end_vertex"], dtype=np.int64)
        self.origin_v = np.where(ov >= 0, voff[:-1][ev] + ov, -1)
        self.end_v = np.where(endv >= 0, voff[:-1][ev] + endv, -1)
        self.collision = np.asarray(mcp["collision"], dtype=np.int64)
        self.vpos = np.stack([np.asarray(mcv[k], dtype=np.float64) for k in ("x", "y", "z")], 1) if len(mcv) else \
            np.zeros((0, 3))
        self.vtype = np.asarray(mcv["type"], dtype=np.int64)
        # children CSR
        has = self.mother >= 0
        kids = np.flatnonzero(has)
        order = np.argsort(self.mother[kids], kind="stable")
        self.child_idx = kids[order].astype(np.int64)
        cnt = np.bincount(self.mother[kids], minlength=n) if n else np.zeros(0, np.int64)
        self.child_off = np.zeros(n + 1, np.int64)
        np.cumsum(cnt, out=self.child_off[1:])
        self.top = _top_ancestor(self.mother)
        self.origin_primary = np.zeros(n, bool)
        self.prim_pos = np.full((n, 3), np.nan)
        okv = self.origin_v >= 0
        self.origin_primary[okv] = self.vtype[self.origin_v[okv]] == 1
        top_ov = self.origin_v[self.top] if n else np.zeros(0, np.int64)
        okt = top_ov >= 0
        self.prim_pos[okt] = self.vpos[top_ov[okt]]
        self.origin_pos = np.full((n, 3), np.nan)
        self.origin_pos[okv] = self.vpos[self.origin_v[okv]]
        self.end_pos = np.full((n, 3), np.nan)
        oke = self.end_v >= 0
        self.end_pos[oke] = self.vpos[self.end_v[oke]]
        uniq = np.unique(self.pid)
        hb = np.array([_quark_content(int(p))[0] for p in uniq], bool)
        hc = np.array([_quark_content(int(p))[1] for p in uniq], bool)
        neu = np.array([_is_neutral(int(p)) for p in uniq], bool)
        pos = np.searchsorted(uniq, self.pid)
        self.has_b = hb[pos] if n else np.zeros(0, bool)
        self.has_c = hc[pos] if n else np.zeros(0, bool)
        self.neutral = neu[pos] if n else np.zeros(0, bool)

    _last = None  # (mcp, mcv, index) of the latest batch: tuples of the same batch share it

    @classmethod
    def of(cls, mcp: Collection, mcv: Collection) -> "MCTruthIndex":
        """The index of these collections, shared by every caller in the same batch (the store's
        collections are write-once, so identity means same content)."""
        last = cls._last
        if last is not None and last[0] is mcp and last[1] is mcv:
            return last[2]
        index = cls(mcp, mcv)
        cls._last = (mcp, mcv, index)
        return index

    def global_rows(self, event_index, local) -> np.ndarray:
        """Global MC rows of within-event indices (-1 stays -1)."""
        local = np.asarray(local, dtype=np.int64)
        ev = np.asarray(event_index, dtype=np.int64)
        ev = np.broadcast_to(ev.reshape(ev.shape + (1,) * (local.ndim - ev.ndim)), local.shape)
        return np.where(local >= 0, self.mcp.offsets[:-1][ev] + local, -1)


@nb.njit(cache=True)
def _top_ancestor(mother):
    n = mother.shape[0]
    top = np.empty(n, np.int64)
    for i in range(n):
        j = i
        while mother[j] >= 0:
            j = mother[j]
        top[i] = j
    return top


_TRUE_FLOATS = ("TRUEP_X", "TRUEP_Y", "TRUEP_Z", "TRUEP_E", "TRUEPT", "TRUEORIGINVERTEX_X", "TRUEORIGINVERTEX_Y",
                "TRUEORIGINVERTEX_Z", "TRUEENDVERTEX_X", "TRUEENDVERTEX_Y", "TRUEENDVERTEX_Z", "TRUETAU")
_TRUE_INTS = ("TRUEID", "MC_MOTHER_ID", "MC_MOTHER_KEY", "MC_GD_MOTHER_ID", "TRUEKEY")
_F64_MAX = np.finfo(np.float64).max


@nb.njit(cache=True)
def _true_columns_kernel(rows, pid, mother, ev, off, p4, mass, origin_pos, end_pos, fout, iout):
    """One pass over the rows: ``fout`` [12, n] float64 (order of ``_TRUE_FLOATS``), ``iout`` [5, n]
    int32 (order of ``_TRUE_INTS``)."""
    for k in range(rows.shape[0]):
        r = rows[k]
        if r < 0:
            for a in range(8):
                fout[a, k] = 0.0
            for a in range(8, 11):
                fout[a, k] = np.nan
            fout[11, k] = -1.0
            iout[0, k] = 0
            iout[1, k] = 0
            iout[2, k] = -1
            iout[3, k] = 0
            iout[4, k] = -1
            continue
        iout[0, k] = pid[r]
        mo = mother[r]
        if mo >= 0:
            iout[1, k] = pid[mo]
            iout[2, k] = mo - off[ev[mo]]
            gd = mother[mo]
            iout[3, k] = pid[gd] if gd >= 0 else 0
        else:
            iout[1, k] = 0
            iout[2, k] = -1
            iout[3, k] = 0
        iout[4, k] = r - off[ev[r]]
        px, py, pz = p4[r, 0], p4[r, 1], p4[r, 2]
        fout[0, k] = px
        fout[1, k] = py
        fout[2, k] = pz
        fout[3, k] = p4[r, 3]
        fout[4, k] = np.hypot(px, py)
        for a in range(3):
            o = origin_pos[r, a]
            if np.isnan(o):
                o = 0.0
            elif o == np.inf:
                o = _F64_MAX
            elif o == -np.inf:
                o = -_F64_MAX
            fout[5 + a, k] = o
            fout[8 + a, k] = end_pos[r, a]
        d0 = end_pos[r, 0] - origin_pos[r, 0]
        d1 = end_pos[r, 1] - origin_pos[r, 1]
        d2 = end_pos[r, 2] - origin_pos[r, 2]
        L = np.sqrt(d0 * d0 + d1 * d1 + d2 * d2)
        pmag = np.sqrt(px * px + py * py + pz * pz)
        tau = L * mass[r] / (pmag * C_MM_PER_NS)
        fout[11, k] = tau if np.isfinite(tau) else -1.0


def true_columns(truth: MCTruthIndex, rows) -> dict:
    """DaVinci MC-truth columns for MC rows (global, -1 = no truth: zeros, as DaVinci):
    ``TRUEID, MC_MOTHER_ID, MC_MOTHER_KEY, MC_GD_MOTHER_ID, TRUEP_X/Y/Z/E, TRUEPT,
    TRUEORIGINVERTEX_X/Y/Z, TRUEENDVERTEX_X/Y/Z`` (NaN without end vertex), ``TRUETAU`` [ns]
    (-1 without end vertex or truth) and ``TRUEKEY`` (within-event index, -1 none)."""
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    n = rows.shape[0]
    if len(truth.pid) == 0:
        return _empty_truth(n)
    fout = np.empty((len(_TRUE_FLOATS), n))
    iout = np.empty((len(_TRUE_INTS), n), np.int32)
    _true_columns_kernel(rows, truth.pid, truth.mother, truth.mcp.event_index, truth.mcp.offsets, truth.p4,
                         truth.mass, truth.origin_pos, truth.end_pos, fout, iout)
    out = dict(zip(_TRUE_INTS, iout))
    out.update(zip(_TRUE_FLOATS, fout))
    return out


def _empty_truth(n):
    out = {k: np.zeros(n, np.int32) for k in ("TRUEID", "MC_MOTHER_ID", "MC_GD_MOTHER_ID")}
    out["MC_MOTHER_KEY"] = np.full(n, -1, np.int32)
    for k in ("TRUEP_X", "TRUEP_Y", "TRUEP_Z", "TRUEP_E", "TRUEPT", "TRUEORIGINVERTEX_X", "TRUEORIGINVERTEX_Y",
              "TRUEORIGINVERTEX_Z"):
        out[k] = np.zeros(n)
    for k in ("TRUEENDVERTEX_X", "TRUEENDVERTEX_Y", "TRUEENDVERTEX_Z"):
        out[k] = np.full(n, np.nan)
    out["TRUETAU"] = np.full(n, -1.0)
    out["TRUEKEY"] = np.full(n, -1, np.int32)
    return out


# ---------------------------------------------------------------------------------------------
# background category kernel
# ---------------------------------------------------------------------------------------------
@nb.njit(cache=True)
def _bkgcat_kernel(m, reco_pid, head_pid, head_pdg_mass, reco_sum, pid, mother, top, child_off, child_idx,
                   energy, mass, neutral, collision, origin_primary, origin_pos, prim_pos, has_b, has_c,
                   semileptonic, num_nu, soft_photon, low_mass_cut, rescut, cat, common):
    N, L = m.shape
    stack = np.empty(4096, np.int64)
    for c in range(N):
        common[c] = -1
        ghost = False
        for i in range(L):
            if m[c, i] < 0:
                ghost = True
        # --- condition A: common mother
        cm = -1
        if not ghost:
            same_top = True
            for i in range(1, L):
                if top[m[c, i]] != top[m[c, 0]]:
                    same_top = False
            if same_top:
                cand = mother[m[c, 0]]
                while cand >= 0:
                    allok = True
                    for i in range(1, L):
                        a = mother[m[c, i]]
                        found = False
                        while a >= 0:
                            if a == cand:
                                found = True
                                break
                            a = mother[a]
                        if not found:
                            allok = False
                            break
                    if allok:
                        break
                    cand = mother[cand]
                if cand >= 0 and not _is_stable(pid[cand]):
                    cm = cand
        if cm >= 0:
            common[c] = cm
            # --- B: fully reconstructed
            full = True
            nnu = 0
            sp = 0
            for q in range(child_off[cm], child_off[cm + 1]):
                stack[sp] = child_idx[q]
                sp += 1
            while sp > 0 and full:
                sp -= 1
                f = stack[sp]
                if child_off[f + 1] > child_off[f] and not _is_stable(pid[f]):
                    for q in range(child_off[f], child_off[f + 1]):
                        if sp < stack.shape[0]:
                            stack[sp] = child_idx[q]
                            sp += 1
                    continue
                if semileptonic and nnu < num_nu and _is_nu(pid[f]):
                    nnu += 1
                    continue
                if abs(pid[f]) == 22 and energy[f] < soft_photon:
                    continue
                hit = False
                for i in range(L):
                    if m[c, i] == f:
                        hit = True
                        break
                if not hit:
                    full = False
            # --- C: correct PID
            pid_ok = True
            for i in range(L):
                if reco_pid[c, i] != pid[m[c, i]]:
                    pid_ok = False
            if full:
                if not pid_ok:
                    cat[c] = 30
                    continue
                if neutral[cm]:
                    mother_ok = abs(pid[cm]) == abs(head_pid[c])
                else:
                    mother_ok = pid[cm] == head_pid[c]
                if not mother_ok:
                    cat[c] = 20
                    continue
                # --- E: topology (resonances) check
                s = 0
                sp = 0
                for q in range(child_off[cm], child_off[cm + 1]):
                    stack[sp] = child_idx[q]
                    sp += 1
                while sp > 0:
                    sp -= 1
                    f = stack[sp]
                    a = abs(pid[f])
                    if child_off[f + 1] == child_off[f] or _is_stable(pid[f]) or a == 111:
                        if a != 22 and a != 12 and a != 14 and a != 16:
                            s += a
                    else:
                        s += a
                        for q in range(child_off[f], child_off[f + 1]):
                            if sp < stack.shape[0]:
                                stack[sp] = child_idx[q]
                                sp += 1
                cat[c] = 0 if s == reco_sum[c] else 10
            else:
                if pid_ok and (mass[cm] - low_mass_cut) < head_pdg_mass[c]:
                    cat[c] = 50
                else:
                    cat[c] = 40
            continue
        # --- combinatorics
        if ghost:
            cat[c] = 60
            continue
        pile = False
        for i in range(1, L):
            if collision[m[c, i]] != collision[m[c, 0]]:
                pile = True
        if pile:
            cat[c] = 100
            continue
        nfrom = 0
        for i in range(L):
            f = m[c, i]
            if origin_primary[f]:
                nfrom += 1
            else:
                d2 = 0.0
                for a in range(3):
                    d2 += (origin_pos[f, a] - prim_pos[f, a]) ** 2
                if d2 < rescut * rescut:
                    nfrom += 1
        if nfrom > 0:
            cat[c] = 80 if nfrom == L else 70
            continue
        b = False
        ch = False
        for i in range(L):
            t = top[m[c, i]]
            if has_b[t]:
                b = True
            if has_c[t]:
                ch = True
        cat[c] = 110 if b else (120 if ch else 130)


def background_category(truth: MCTruthIndex, mc_rows, reco_pids, head_pid, reco_desc_sum, head_pdg_mass,
                        semileptonic: bool = False, num_neutrinos: int = 0, soft_photon_cut: float = 300.0,
                        low_mass_cut: float = 100.0, rescut: float = 1e-5):
    """BKGCAT of N composites.  ``mc_rows`` (N, L) global MC rows of the composite's final-state
    tracks (-1: no MC particle), ``reco_pids`` (N, L) their reconstructed PIDs, ``head_pid`` (N,),
    ``reco_desc_sum`` (N,) or scalar: sum of |PID| of all reconstructed descendants except photons,
    ``head_pdg_mass`` (N,) or scalar [MeV].  Returns ``(category int32 (N,), common_mother (N,)
    global MC row or -1)``."""
    m = np.ascontiguousarray(mc_rows, dtype=np.int64)
    N = m.shape[0]
    cat = np.full(N, -1, np.int32)
    common = np.full(N, -1, np.int64)
    if N == 0:
        return cat, common
    reco = np.ascontiguousarray(reco_pids, dtype=np.int64)
    hp = np.ascontiguousarray(np.broadcast_to(np.asarray(head_pid, dtype=np.int64), (N,)))
    hm = np.ascontiguousarray(np.broadcast_to(np.asarray(head_pdg_mass, dtype=np.float64), (N,)))
    rs = np.ascontiguousarray(np.broadcast_to(np.asarray(reco_desc_sum, dtype=np.int64), (N,)))
    t = truth
    _bkgcat_kernel(m, reco, hp, hm, rs, t.pid, t.mother, t.top, t.child_off, t.child_idx,
                   np.ascontiguousarray(t.p4[:, 3]), np.ascontiguousarray(t.mass), t.neutral, t.collision,
                   t.origin_primary, t.origin_pos, t.prim_pos, t.has_b, t.has_c, bool(semileptonic),
                   int(num_neutrinos), float(soft_photon_cut), float(low_mass_cut), float(rescut), cat, common)
    return cat, common


def candidate_truth(truth: MCTruthIndex, candidates: Collection, topology, **bkg_options) -> dict:
    """Per node of the candidates' :class:`~algorithms.analysis.particles.Topology`: global MC row
    (tracks: their MC particle; composites: the common mother, -1 for combinatorics) and, for
    composites, BKGCAT.  Returns ``{"rows": (N, n_nodes) int64, "bkgcat": {node: (N,) int32}}``."""
    from .kinematics import pdg_mass

    N = len(candidates)
    ev = candidates.event_index
    mc_local = np.asarray(candidates["nodes_mc"], dtype=np.int64)
    pids = np.asarray(candidates["nodes_pid"], dtype=np.int64)
    rows = truth.global_rows(ev, mc_local) if N else np.zeros((0, topology.n_nodes), np.int64)
    rows = np.array(rows, dtype=np.int64)
    bkg = {}
    for i in range(topology.n_nodes):
        if topology.basic[i]:
            continue
        leaves = topology.leaves(i)
        desc = [j for j in topology.subtree(i)[1:] if abs(topology.pids[j]) != 22]
        reco_sum = sum(abs(topology.pids[j]) for j in desc)
        cat, common = background_category(truth, rows[:, leaves], pids[:, leaves], pids[:, i], reco_sum,
                                          pdg_mass(abs(topology.pids[i])), **bkg_options)
        bkg[i] = cat
        rows[:, i] = np.where(cat < 60, common, -1)
    return {"rows": rows, "bkgcat": bkg}
