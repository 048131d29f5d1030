"""Numba kernels of the tracking chain's per-batch hot paths.

The tracking algorithms process a whole batch at once, but a batch of the real LHCb HepMC job is
only ~3000 candidates and ~500 tracks: there, a chain of numpy calls (one temporary per call, a few
microseconds of Python each) costs more than the arithmetic.  These kernels do each step in one
pass over the rows and write the final columns (final dtypes, compacted) directly.

Every kernel reproduces, bit for bit, the numpy code it replaces (tested in
``tests/tracking/test_kernels.py``): same float64 operations in the same order (no fast-math, no
FMA contraction), float32 only where the numpy code cast to float32, and random numbers from the
framework's public counter-based generator (:func:`framework.random.counter_uniform`,
:func:`framework.random.row_normals`) with the key of ``ctx.random.key_for(stream)`` -- the very
numbers ``ctx.random.uniform/normal(event number, MC index, stream)`` return, keyed by (seed, run,
algorithm, stream, event number, object index, draw), never by a row's position in the batch.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from framework.random import counter_uniform, row_key, row_normals

from .features import PZ_MIN_MEV, TRACKED_ABSPIDS

__all__ = [
    "TRACKED",
    "select_and_gather",
    "gather_rows",
    "domain_mask",
    "bernoulli_accept",
    "draw_track_types",
    "normal_noise",
    "charge_fast",
    "ok_rows",
]

#: |PDG id| of the species the tracking models know (e, mu, pi, K, p), as a kernel argument
TRACKED = np.sort(np.array(TRACKED_ABSPIDS, dtype=np.int64))


@nb.njit(cache=True, inline="always")
def _is_tracked(pid, tracked):
    a = abs(np.int64(pid))
    if a > tracked[-1] or a < tracked[0]:  # tracked is sorted
        return False
    for j in range(tracked.shape[0]):
        if a == tracked[j]:
            return True
    return False


@nb.njit(cache=True, inline="always")
def _origin_xyz(ov, v_offset, vx, vy, vz):
    """Origin position of an MC particle with within-event ``origin_vertex`` ``ov`` (vertex rows of its
    event start at ``v_offset``): NaN without an origin vertex, 0 when there is no vertex column at all
    (as gather_kinematics); ``ok`` is False when ``ov`` points beyond the vertices (row 0 is used)."""
    if ov < 0:
        return np.nan, np.nan, np.nan, True
    if vx.shape[0] == 0:
        return 0.0, 0.0, 0.0, True
    r = v_offset + ov
    ok = r < vx.shape[0]
    if not ok:
        r = 0
    return vx[r], vy[r], vz[r], ok


@nb.njit(cache=True)
def _select_and_gather(p_offsets, end_vertex, pid, origin_vertex, px, py, pz, v_offsets, vx, vy, vz, tracked):
    """Candidates (final state, tracked species) with their kinematics and origin position."""
    n_ev = p_offsets.shape[0] - 1
    n = end_vertex.shape[0]
    is_cand = np.empty(n, np.bool_)
    m = 0
    for i in range(n):
        c = end_vertex[i] < 0 and _is_tracked(pid[i], tracked)
        is_cand[i] = c
        m += c
    rows = np.empty(m, np.int64)
    ev = np.empty(m, np.int64)
    mc = np.empty(m, np.int64)
    opid = np.empty(m, pid.dtype)
    x = np.empty(m)
    y = np.empty(m)
    z = np.empty(m)
    opx = np.empty(m)
    opy = np.empty(m)
    opz = np.empty(m)
    counts = np.zeros(n_ev, np.int64)
    bad = -1
    k = 0
    for e in range(n_ev):
        for i in range(p_offsets[e], p_offsets[e + 1]):
            if not is_cand[i]:
                continue
            rows[k] = i
            ev[k] = e
            mc[k] = i - p_offsets[e]
            opid[k] = pid[i]
            opx[k] = px[i]
            opy[k] = py[i]
            opz[k] = pz[i]
            x[k], y[k], z[k], ok = _origin_xyz(origin_vertex[i], v_offsets[e], vx, vy, vz)
            if not ok:
                bad = i
            counts[e] += 1
            k += 1
    return rows, ev, mc, opid, x, y, z, opx, opy, opz, counts, bad


def _f64(a):
    return np.ascontiguousarray(a, dtype=np.float64)


def _i64(a):
    return np.ascontiguousarray(a, dtype=np.int64)


def select_and_gather(Particles, Vertices):
    """One pass over ``/Event/MC/Particles``: the tracking candidates (``end_vertex < 0``, tracked
    species), i.e. :func:`acceptance.select_candidates` + ``gather_kinematics`` at once.

    Returns ``(rows, ev, mc_index, pid, x, y, z, px, py, pz, counts)``: batch rows, local event
    index, within-event index, and per event the number of candidates; the origin position is NaN
    for particles without an origin vertex."""
    out = _select_and_gather(_i64(Particles.offsets), np.ascontiguousarray(Particles["end_vertex"]),
                             np.ascontiguousarray(Particles["pid"]), np.ascontiguousarray(Particles["origin_vertex"]),
                             _f64(Particles["px"]), _f64(Particles["py"]), _f64(Particles["pz"]),
                             _i64(Vertices.offsets), _f64(Vertices["x"]), _f64(Vertices["y"]), _f64(Vertices["z"]),
                             TRACKED)
    if out[-1] >= 0:
        raise IndexError(f"MC particle row {out[-1]}: origin_vertex points beyond /Event/MC/Vertices")
    return out[:-1]


@nb.njit(cache=True)
def _gather_rows(ev, within, p_offsets, pid, origin_vertex, px, py, pz, v_offsets, vx, vy, vz):
    m = ev.shape[0]
    opid = np.empty(m, pid.dtype)
    x = np.empty(m)
    y = np.empty(m)
    z = np.empty(m)
    opx = np.empty(m)
    opy = np.empty(m)
    opz = np.empty(m)
    n = pid.shape[0]
    bad = -1
    for k in range(m):
        i = p_offsets[ev[k]] + within[k]
        if within[k] < 0 or i >= n:
            return opid, x, y, z, opx, opy, opz, k
        opid[k] = pid[i]
        opx[k] = px[i]
        opy[k] = py[i]
        opz[k] = pz[i]
        x[k], y[k], z[k], ok = _origin_xyz(origin_vertex[i], v_offsets[ev[k]], vx, vy, vz)
        if not ok:
            return opid, x, y, z, opx, opy, opz, k
    return opid, x, y, z, opx, opy, opz, bad


def gather_rows(Particles, Vertices, ev, within):
    """``(pid, x, y, z, px, py, pz)`` of the MC particles (local event ``ev``, within-event index
    ``within``), origin position NaN without an origin vertex -- ``gather_kinematics`` of the
    referenced rows in one pass."""
    out = _gather_rows(_i64(ev), _i64(within), _i64(Particles.offsets), np.ascontiguousarray(Particles["pid"]),
                       np.ascontiguousarray(Particles["origin_vertex"]), _f64(Particles["px"]), _f64(Particles["py"]),
                       _f64(Particles["pz"]), _i64(Vertices.offsets), _f64(Vertices["x"]), _f64(Vertices["y"]),
                       _f64(Vertices["z"]))
    if out[-1] >= 0:
        raise IndexError(f"reference {out[-1]}: MC particle or its origin vertex out of range")
    return out[:-1]


@nb.njit(cache=True)
def _domain_mask(feats, pz, pz_min):
    n = feats.shape[0]
    ok = np.empty(n, np.bool_)
    n_ok = 0
    for i in range(n):
        good = pz[i] > pz_min
        if good:
            for j in range(feats.shape[1]):
                if not np.isfinite(feats[i, j]):
                    good = False
                    break
        ok[i] = good
        n_ok += good
    return ok, n_ok


def domain_mask(feats, pz, pz_min=PZ_MIN_MEV):
    """``(pz > pz_min) & np.all(np.isfinite(feats), axis=1)`` in one pass (with the default
    ``pz_min`` this is ``features.in_domain``); returns ``(mask, number of rows in the domain)``."""
    return _domain_mask(np.ascontiguousarray(feats), _f64(pz), float(pz_min))


@nb.njit(cache=True)
def _bernoulli_accept(key, event_numbers, ev, mc, ok, prob):
    n = ev.shape[0]
    acc = np.empty(n, np.bool_)
    n_acc = 0
    for i in range(n):
        a = False
        if ok[i]:
            u = counter_uniform(key, event_numbers[ev[i]], mc[i], 0)
            a = u < np.float64(prob[i])
        acc[i] = a
        n_acc += a
    return acc, n_acc


def bernoulli_accept(key, event_numbers, ev, mc, ok, prob):
    """``ok & (u < prob)`` with ``u = ctx.random.uniform(event_numbers[ev], mc, stream)`` (``key``
    = ``ctx.random.key_for(stream)``); uniforms are drawn only for the ``ok`` rows (the others are
    never accepted whatever their uniform)."""
    return _bernoulli_accept(np.uint64(key), _i64(event_numbers), _i64(ev), _i64(mc), ok, prob)


@nb.njit(cache=True)
def _draw_track_types(key, event_numbers, ev, mc, idx, probs, codes, n):
    """Track types of the accepted rows ``idx``; probabilities scattered into 4 NaN columns."""
    ttype = np.full(n, -1, np.int8)
    p0 = np.full(n, np.nan, np.float32)
    p1 = np.full(n, np.nan, np.float32)
    p2 = np.full(n, np.nan, np.float32)
    p3 = np.full(n, np.nan, np.float32)
    n_reco = 0
    n_long = 0
    for k in range(idx.shape[0]):
        i = idx[k]
        a = probs[k, 0]
        b = probs[k, 1]
        c = probs[k, 2]
        p0[i] = a
        p1[i] = b
        p2[i] = c
        p3[i] = probs[k, 3]
        u = counter_uniform(key, event_numbers[ev[i]], mc[i], 0)
        c0 = np.float64(a)  # cumulative sums in float64, as np.cumsum of the float64 copy
        c1 = c0 + np.float64(b)
        c2 = c1 + np.float64(c)
        j = (u >= c0) + (u >= c1) + (u >= c2)
        t = codes[j]
        ttype[i] = t
        n_reco += t > 0
        n_long += t == 3
    return ttype, p0, p1, p2, p3, n_reco, n_long


def draw_track_types(key, event_numbers, ev, mc, idx, probs, n, codes):
    """Efficiency draw of the accepted candidate rows ``idx`` (``probs`` [len(idx), 4] model
    outputs): ``efficiency.draw_track_type`` with ``u = ctx.random.uniform(event, mc, stream)``,
    and the ``p_*`` columns (NaN for the other rows); ``codes`` int8 [4] the track-type codes of
    the four classes.  Returns ``(track_type int8 [n], p_not_recoed, p_long, p_upstream,
    p_downstream, number reconstructed, number long)``."""
    return _draw_track_types(np.uint64(key), _i64(event_numbers), _i64(ev), _i64(mc), _i64(idx),
                             np.ascontiguousarray(probs, dtype=np.float32), codes, int(n))


@nb.njit(cache=True)
def _normal_noise(key, event_numbers, ev, mc, rows, n_draws):
    out = np.empty((rows.shape[0], n_draws), np.float32)
    buf = np.empty(n_draws)
    for k in range(rows.shape[0]):
        i = rows[k]
        row_normals(row_key(key, event_numbers[ev[i]], mc[i]), 0, buf)
        for j in range(n_draws):
            out[k, j] = np.float32(buf[j])
    return out


def normal_noise(key, event_numbers, ev, mc, rows, n_draws):
    """Model noise [len(rows), n_draws] float32: row ``k`` is
    ``ctx.random.normal(event_numbers[ev[rows[k]]], mc[rows[k]], stream, n=n_draws)`` cast to float32
    (``key`` = ``ctx.random.key_for(stream)``)."""
    return _normal_noise(np.uint64(key), _i64(event_numbers), _i64(ev), _i64(mc), _i64(rows), int(n_draws))


@nb.njit(cache=True)
def _charge_fast(pid):
    """Physical charge of e/mu/pi/K/p from the sign rule; ``unknown`` flags other species."""
    n = pid.shape[0]
    q = np.zeros(n, np.int8)
    unknown = False
    for i in range(n):
        p = pid[i]
        a = abs(p)
        s = 1 if p > 0 else -1
        if a == 11 or a == 13:
            q[i] = -s
        elif a == 211 or a == 321 or a == 2212:
            q[i] = s
        else:
            unknown = True
    return q, unknown


def charge_fast(pid):
    """``(charge int8, any species other than e/mu/pi/K/p)``; the caller falls back to the PDG
    table (``ctb.physical_charge``) when the flag is set."""
    return _charge_fast(_i64(pid))


@nb.njit(cache=True)
def _ok_rows(ok):
    n = 0
    for v in ok:
        n += v
    rows = np.empty(n, np.int64)
    k = 0
    for i in range(ok.shape[0]):
        if ok[i]:
            rows[k] = i
            k += 1
    return rows


def ok_rows(ok):
    """``np.flatnonzero(ok)`` for a boolean mask (int64)."""
    return _ok_rows(np.ascontiguousarray(ok, dtype=np.bool_))
