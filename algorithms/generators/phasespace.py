"""Vectorised n-body phase-space decays with numba and counter-based random numbers.

The decay of one particle follows ROOT's ``TGenPhaseSpace`` (F. James, CERN 68-15, the
Raubold-Lynch method): the n-2 intermediate invariant masses are drawn uniformly, the event
weight is the product of the two-body break-up momenta, and events are accepted with
probability weight / weight_max (accept-reject, so accepted decays are unweighted and
distributed uniformly in n-body Lorentz-invariant phase space).  Momenta are built in the
parent rest frame with random rotations and boosted to the lab.

Masses: a particle with a non-zero PDG width gets a non-relativistic Breit-Wigner (Cauchy)
mass truncated to its range ``[mlo, mhi]`` (see :func:`descriptors.mass_ranges`), sampled by
inverse CDF; the daughters' masses of one decay are drawn first (redrawn together in the rare
case that their sum exceeds the parent's mass), then the phase space is generated for those
masses.  The mass distribution of a resonance is therefore exactly the truncated Breit-Wigner;
the phase-space factor is not folded into it (as in RapidSim/TGenPhaseSpace usage).

Lifetimes: each decayed particle gets a proper decay length ct = -ctau * ln(u) from its PDG
lifetime; its decay vertex is origin + (p/m) ct (lab flight beta*gamma*c*t) at time
t0 + (E/m) ct / c.

Random numbers: ``counter_uniform(key, event, index, draw)`` with ``index = (trial << 32) | node``
(node = the particle's breadth-first index inside the decay tree) and draws numbered by a
running counter per (event, trial, node): nothing depends on the batch.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np

from framework.random import counter_uniform
from hepunits.constants import c_light  # mm/ns

from .spectra import sample_momentum

__all__ = [
    "pdk",
    "sample_breit_wigner",
    "decay_at_rest",
    "boost_from_rest",
    "generate_trees",
    "draw_primary_vertex",
    "decay_batch",
    "truncated_bw_cdf",
    "CUT_NONE",
    "CUT_DAUGHTERS_IN_LHCB",
    "CUT_CHARGED_IN_ETA",
]

C_LIGHT = float(c_light)  # 299.792458 mm/ns
_TWO_PI = 2.0 * math.pi
CUT_NONE, CUT_DAUGHTERS_IN_LHCB, CUT_CHARGED_IN_ETA = 0, 1, 2
# per-node cut classes
CLASS_IGNORE, CLASS_CHARGED, CLASS_NEUTRAL = 0, 1, 2
_MAXN = 16  # maximum number of daughters of one decay


@nb.njit(cache=True, inline="always")
def pdk(a, b, c):
    """Two-body break-up momentum of a -> b c."""
    x = (a - b - c) * (a + b + c) * (a - b + c) * (a + b - c)
    return math.sqrt(max(x, 0.0)) / (2.0 * a)


@nb.njit(cache=True)
def sample_breit_wigner(u, m0, width, mlo, mhi):
    """Inverse-CDF draw of a Cauchy(m0, width) truncated to [mlo, mhi] (fixed mass if
    mlo == mhi or width == 0)."""
    if width <= 0.0 or mhi <= mlo:
        return m0 if width <= 0.0 else mlo
    half = 0.5 * width
    a = math.atan((mlo - m0) / half)
    b = math.atan((mhi - m0) / half)
    m = m0 + half * math.tan(a + u * (b - a))
    return min(max(m, mlo), mhi)


def truncated_bw_cdf(m, m0, width, mlo, mhi):
    """CDF of the truncated Breit-Wigner sampled by :func:`sample_breit_wigner` (for tests)."""
    half = 0.5 * width
    a = np.arctan((mlo - m0) / half)
    b = np.arctan((mhi - m0) / half)
    return (np.arctan((np.clip(m, mlo, mhi) - m0) / half) - a) / (b - a)


@nb.njit(cache=True)
def decay_at_rest(M, masses, n, out, work, key, event, index, draw):
    """Raubold-Lynch n-body decay of a particle of mass M at rest into ``masses[:n]``.

    Writes four-momenta (px, py, pz, E) into ``out[:n]``; ``work`` is a float64 [3, 16]
    scratch array.  Accept-reject on the phase-space weight.  Returns the next unused draw
    number.
    """
    tecmtm = M
    for i in range(n):
        tecmtm -= masses[i]
    invm = work[0]
    pd = work[1]
    rno = work[2]
    if n > 2:
        emmax = tecmtm + masses[0]
        emmin = 0.0
        wtmax = 1.0
        for i in range(1, n):
            emmin += masses[i - 1]
            emmax += masses[i]
            wtmax *= pdk(emmax, emmin, masses[i])
    while True:
        rno[0] = 0.0
        for i in range(1, n - 1):
            # insertion sort of the n-2 uniforms
            u = counter_uniform(key, event, index, draw)
            draw += 1
            j = i
            while j > 1 and rno[j - 1] > u:
                rno[j] = rno[j - 1]
                j -= 1
            rno[j] = u
        rno[n - 1] = 1.0
        s = 0.0
        for i in range(n):
            s += masses[i]
            invm[i] = rno[i] * tecmtm + s
        wt = 1.0
        for i in range(n - 1):
            pd[i] = pdk(invm[i + 1], invm[i], masses[i + 1])
            wt *= pd[i]
        if n == 2:
            break
        u = counter_uniform(key, event, index, draw)
        draw += 1
        if u * wtmax <= wt:
            break
    # build the momenta (TGenPhaseSpace::Generate)
    out[0, 0] = 0.0
    out[0, 1] = pd[0]
    out[0, 2] = 0.0
    out[0, 3] = math.sqrt(pd[0] * pd[0] + masses[0] * masses[0])
    out[1, 0] = 0.0
    out[1, 1] = -pd[0]
    out[1, 2] = 0.0
    out[1, 3] = math.sqrt(pd[0] * pd[0] + masses[1] * masses[1])
    i = 1
    while True:
        cz = 2.0 * counter_uniform(key, event, index, draw) - 1.0
        angy = _TWO_PI * counter_uniform(key, event, index, draw + 1)
        draw += 2
        sz = math.sqrt(max(1.0 - cz * cz, 0.0))
        cy = math.cos(angy)
        sy = math.sin(angy)
        for j in range(i + 1):
            x = out[j, 0]
            y = out[j, 1]
            out[j, 0] = cz * x - sz * y
            out[j, 1] = sz * x + cz * y
            x = out[j, 0]
            z = out[j, 2]
            out[j, 0] = cy * x - sy * z
            out[j, 2] = sy * x + cy * z
        if i == n - 1:
            break
        # boost the (0..i) subsystem along +y with its velocity in the (0..i+1) frame
        e_sub = math.sqrt(pd[i] * pd[i] + invm[i] * invm[i])
        beta = pd[i] / e_sub
        gamma = e_sub / invm[i]
        for j in range(i + 1):
            py = out[j, 1]
            e = out[j, 3]
            out[j, 1] = gamma * (py + beta * e)
            out[j, 3] = gamma * (e + beta * py)
        i += 1
        out[i, 0] = 0.0
        out[i, 1] = -pd[i - 1]
        out[i, 2] = 0.0
        out[i, 3] = math.sqrt(pd[i - 1] * pd[i - 1] + masses[i] * masses[i])
    return draw


@nb.njit(cache=True, inline="always")
def boost_from_rest(qx, qy, qz, qe, px, py, pz, pe, m):
    """Boost (qx, qy, qz, qe), given in the rest frame of a particle with lab four-momentum
    (px, py, pz, pe) and mass m, to the lab."""
    pq = px * qx + py * qy + pz * qz
    f = (pq / (pe + m) + qe) / m
    return qx + f * px, qy + f * py, qz + f * pz, (pe * qe + pq) / m


@nb.njit(cache=True)
def draw_daughter_masses(f, n, m0, width, mlo, mhi, key, event, index, draw, dm):
    """One draw of the masses of daughters f..f+n-1 into dm[:n] (truncated Breit-Wigner for broad
    ones, the nominal mass otherwise).  Returns (sum of the masses, next draw index)."""
    s = 0.0
    for j in range(n):
        d = f + j
        if width[d] > 0.0 and mhi[d] > mlo[d]:
            u = counter_uniform(key, event, index, draw)
            draw += 1
            dm[j] = sample_breit_wigner(u, m0[d], width[d], mlo[d], mhi[d])
        else:
            dm[j] = mlo[d] if width[d] > 0.0 else m0[d]
        s += dm[j]
    return s, draw


@nb.njit(cache=True)
def _decay_node(i, first, ndau, m0, width, mlo, mhi, mass, px, py, pz, pe, key, event, index,
                dm, out, work):
    """Draw the daughters' masses of node i and decay it in phase space; fills rows of the
    event's arrays (px, py, pz, pe, mass) for the daughters.  dm, out, work: scratch."""
    f = first[i]
    n = ndau[i]
    draw = 2
    M = mass[i]
    while True:  # daughters' masses (Breit-Wigner), redrawn together if they do not fit
        s, draw = draw_daughter_masses(f, n, m0, width, mlo, mhi, key, event, index, draw, dm)
        if s < M:
            break
    draw = decay_at_rest(M, dm, n, out, work, key, event, index, draw)
    for j in range(n):
        d = f + j
        mass[d] = dm[j]
        qx, qy, qz, qe = boost_from_rest(out[j, 0], out[j, 1], out[j, 2], out[j, 3],
                                         px[i], py[i], pz[i], pe[i], M)
        px[d] = qx
        py[d] = qy
        pz[d] = qz
        pe[d] = qe


@nb.njit(cache=True)
def _passes_cut(cut_mode, cut_params, cls, px, py, pz, start, n):
    if cut_mode == CUT_NONE:
        return True
    for r in range(start, start + n):
        c = cls[r - start]
        if c == CLASS_IGNORE:
            continue
        pt = math.sqrt(px[r] * px[r] + py[r] * py[r])
        if cut_mode == CUT_DAUGHTERS_IN_LHCB:
            if pz[r] <= 0.0:
                return False
            theta = math.atan2(pt, pz[r])
            tmin = cut_params[0] if c == CLASS_CHARGED else cut_params[2]
            tmax = cut_params[1] if c == CLASS_CHARGED else cut_params[3]
            if theta < tmin or theta > tmax:
                return False
        elif cut_mode == CUT_CHARGED_IN_ETA:
            if c != CLASS_CHARGED:
                continue
            if pt <= 0.0:
                return False
            eta = math.asinh(pz[r] / pt)
            if eta < cut_params[0] or eta > cut_params[1]:
                return False
    return True


@nb.njit(cache=True)
def draw_primary_vertex(key, event, mean, sigma, out):
    """Gaussian (x, y, z, t) around ``mean`` with widths ``sigma`` (Box-Muller, both outputs
    used): draws 0..3 of (key, event, index 0)."""
    for k in range(2):
        u1 = counter_uniform(key, event, 0, 2 * k)
        u2 = counter_uniform(key, event, 0, 2 * k + 1)
        r = math.sqrt(-2.0 * math.log(u1))
        out[2 * k] = mean[2 * k] + sigma[2 * k] * r * math.cos(_TWO_PI * u2)
        out[2 * k + 1] = mean[2 * k + 1] + sigma[2 * k + 1] * r * math.sin(_TWO_PI * u2)


@nb.njit(cache=True)
def generate_trees(keys, events, trial_start, parent, first, ndau, end_vertex, m0, width, mlo,
                   mhi, ctau, cut_class, n_alt, spec_mode, spec_params, cut_mode, cut_params,
                   pv_mean, pv_sigma, max_trials):
    """Generate one decay tree per event (the particle-gun signal).

    keys: uint64[3] = (kinematics/cc, decays, primary vertex).  For each event, trials
    ``trial_start[e], trial_start[e]+1, ...`` are generated until the generator-level cut
    passes.  ``n_alt`` = 2 draws the charge-conjugate alternative with probability 1/2.
    ``end_vertex[i]`` is the vertex column (1..V-1) of decayed node i, -1 otherwise.

    Returns (alt int8[E], trial int64[E], px, py, pz, E, mass [E, N], vx, vy, vz, vt, ct [E, V]);
    vertex column 0 is the primary vertex (ct = 0), column k >= 1 the decay vertex of the k-th
    decayed node, ``ct`` its proper decay length [mm].
    """
    ne = events.shape[0]
    nn = parent.shape[0]
    nv = 1
    for i in range(nn):
        if end_vertex[i] >= nv:
            nv = end_vertex[i] + 1
    alt = np.zeros(ne, dtype=np.int8)
    trial_out = np.zeros(ne, dtype=np.int64)
    px = np.empty((ne, nn))
    py = np.empty((ne, nn))
    pz = np.empty((ne, nn))
    pe = np.empty((ne, nn))
    mass = np.empty((ne, nn))
    vx = np.empty((ne, nv))
    vy = np.empty((ne, nv))
    vz = np.empty((ne, nv))
    vt = np.empty((ne, nv))
    ct = np.empty((ne, nv))
    kkin = keys[0]
    kdec = keys[1]
    kpv = keys[2]
    dm = np.empty(_MAXN)
    out = np.empty((_MAXN, 4))
    work = np.empty((3, _MAXN))
    pv = np.empty(4)
    for e in range(ne):
        ev = events[e]
        # primary vertex: independent of the trial
        draw_primary_vertex(kpv, ev, pv_mean, pv_sigma, pv)
        vx[e, 0] = pv[0]
        vy[e, 0] = pv[1]
        vz[e, 0] = pv[2]
        vt[e, 0] = pv[3]
        ct[e, 0] = 0.0
        trial = trial_start[e]
        a = 0
        while True:
            if trial - trial_start[e] >= max_trials:
                raise RuntimeError("generator-level cut: too many trials for one event")
            tbase = np.uint64(trial) << np.uint64(32)
            a = 0
            if n_alt > 1 and counter_uniform(kkin, ev, tbase, 0) < 0.5:
                a = 1
            # head mass and momentum
            if width[0] > 0.0 and mhi[0] > mlo[0]:
                m_head = sample_breit_wigner(counter_uniform(kdec, ev, tbase, 1),
                                             m0[0], width[0], mlo[0], mhi[0])
            else:
                m_head = m0[0]
            hx, hy, hz, _ = sample_momentum(spec_mode, spec_params, m_head, kkin, ev, tbase, 1)
            mass[e, 0] = m_head
            px[e, 0] = hx
            py[e, 0] = hy
            pz[e, 0] = hz
            pe[e, 0] = math.sqrt(hx * hx + hy * hy + hz * hz + m_head * m_head)
            for i in range(nn):
                if ndau[i] > 0:
                    _decay_node(i, first, ndau, m0, width, mlo, mhi, mass[e], px[e], py[e],
                                pz[e], pe[e], kdec, ev, tbase | np.uint64(i), dm, out, work)
            if _passes_cut(cut_mode, cut_params, cut_class, px[e], py[e], pz[e], 0, nn):
                break
            trial += 1
        alt[e] = a
        trial_out[e] = trial
        # decay vertices, top-down (breadth-first order: parents come first)
        tbase = np.uint64(trial) << np.uint64(32)
        for i in range(nn):
            k = end_vertex[i]
            if k < 0:
                continue
            o = 0 if parent[i] < 0 else end_vertex[parent[i]]
            c = -ctau[i] * math.log(counter_uniform(kdec, ev, tbase | np.uint64(i), 0))
            f = c / mass[e, i]
            ct[e, k] = c
            vx[e, k] = vx[e, o] + px[e, i] * f
            vy[e, k] = vy[e, o] + py[e, i] * f
            vz[e, k] = vz[e, o] + pz[e, i] * f
            vt[e, k] = vt[e, o] + pe[e, i] * f / C_LIGHT
    return alt, trial_out, px, py, pz, pe, mass, vx, vy, vz, vt, ct


@nb.njit(cache=True)
def _decay_batch_kernel(key, events, indices, M, px, py, pz, masses, n):
    ne = events.shape[0]
    out = np.empty((ne, n, 4))
    tmp = np.empty((_MAXN, 4))
    work = np.empty((3, _MAXN))
    for e in range(ne):
        decay_at_rest(M[e], masses, n, tmp, work, key, events[e], np.uint64(indices[e]), 2)
        pe = math.sqrt(px[e] ** 2 + py[e] ** 2 + pz[e] ** 2 + M[e] ** 2)
        for j in range(n):
            qx, qy, qz, qe = boost_from_rest(tmp[j, 0], tmp[j, 1], tmp[j, 2], tmp[j, 3],
                                             px[e], py[e], pz[e], pe, M[e])
            out[e, j, 0] = qx
            out[e, j, 1] = qy
            out[e, j, 2] = qz
            out[e, j, 3] = qe
    return out


def decay_batch(key, events, indices, parent_mass, parent_p, daughter_masses) -> np.ndarray:
    """Phase-space decay of a batch of parents (general-purpose helper).

    ``parent_mass`` [N], ``parent_p`` [N, 3] (lab momentum), ``daughter_masses`` (fixed, n <= 16);
    randoms keyed by (key, events[i], indices[i]).  Returns lab four-momenta [N, n, 4]
    (px, py, pz, E).
    """
    dm = np.ascontiguousarray(daughter_masses, dtype=np.float64)
    if not 2 <= dm.size <= _MAXN:
        raise ValueError(f"2 to {_MAXN} daughters supported, got {dm.size}")
    M = np.ascontiguousarray(parent_mass, dtype=np.float64)
    if np.any(M <= dm.sum()):
        raise ValueError("kinematically forbidden decay: parent mass <= sum of daughter masses")
    p = np.asarray(parent_p, dtype=np.float64)
    return _decay_batch_kernel(np.uint64(key), np.ascontiguousarray(events, dtype=np.int64),
                               np.ascontiguousarray(indices, dtype=np.int64), M,
                               np.ascontiguousarray(p[:, 0]), np.ascontiguousarray(p[:, 1]),
                               np.ascontiguousarray(p[:, 2]), dm, dm.size)
