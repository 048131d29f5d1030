"""Impact parameter (IP) and IPchi2 of straight-line tracks with respect to vertices (numba).

Track state at ``z``: (x, y, tx, ty, q/p) with a 5x5 covariance (only the x, y, tx, ty block is
used: no magnetic field, straight line).  Vertex: (vx, vy, vz) with a 3x3 covariance.

Method (exported for reuse, e.g. by vertexing and DecayTreeFitter-like code):

* extrapolate the track to the vertex z: dz = vz - z; residual in the transverse plane
  r = (x + tx dz - vx, y + ty dz - vy);
* linearised covariance of r:
  V = J_t C_t J_t^T + J_v C_v J_v^T with J_t = [[1, 0, dz, 0], [0, 1, 0, dz]] (track x, y, tx, ty)
  and J_v = [[-1, 0, tx], [0, -1, ty]] (vertex x, y, z: a shift of the vertex along z moves the
  line's crossing point by (tx, ty));
* IPchi2 = r^T V^-1 r (chi2 with 2 degrees of freedom for a track from that vertex with Gaussian
  errors); this equals the chi2 of the 3-D perpendicular residual, since r is its projection
  along the track direction onto the plane z = vz;
* IP = 3-D distance of the vertex to the line: |r3 - (r3.u) u| with r3 = (r_x, r_y, 0) and u the
  unit track direction.

All kernels are ``@njit(cache=True)``, no Python objects, no random numbers.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np

from framework import Algorithm, Collection, Input, Output

from ..common.geometry import ip_ipchi2

__all__ = ["ip_ipchi2", "ip_ipchi2_pairs", "pair_offsets", "best_pv_per_track", "TrackIP"]


@nb.njit(cache=True)
def pair_offsets(track_offsets, pv_offsets):
    """Offsets [n_events+1] of the (track, PV) pairs, all pairs of each event (tracks major)."""
    n_ev = track_offsets.shape[0] - 1
    out = np.zeros(n_ev + 1, dtype=np.int64)
    for e in range(n_ev):
        nt = track_offsets[e + 1] - track_offsets[e]
        nv = pv_offsets[e + 1] - pv_offsets[e]
        out[e + 1] = out[e] + nt * nv
    return out


@nb.njit(cache=True)
def ip_ipchi2_pairs(track_offsets, x, y, z, tx, ty, ctrk, pv_offsets, vx, vy, vz, cvtx):
    """IP and IPchi2 of every track to every PV of the same event.

    Inputs are batch-flat arrays with per-event offsets (tracks: ``x..ty`` [Nt], ``ctrk``
    [Nt, >=4, >=4]; PVs: ``vx, vy, vz`` [Nv], ``cvtx`` [Nv, 3, 3]).  Returns ``(offsets, track,
    pv, ip, ipchi2)``: pair offsets per event and, per pair, the within-event track and PV
    indices (int32) and the values.
    """
    off = pair_offsets(track_offsets, pv_offsets)
    n = off[-1]
    trk = np.empty(n, dtype=np.int32)
    pv = np.empty(n, dtype=np.int32)
    ip = np.empty(n, dtype=np.float64)
    chi2 = np.empty(n, dtype=np.float64)
    n_ev = track_offsets.shape[0] - 1
    for e in range(n_ev):
        k = off[e]
        t0, t1 = track_offsets[e], track_offsets[e + 1]
        p0, p1 = pv_offsets[e], pv_offsets[e + 1]
        for i in range(t0, t1):
            for j in range(p0, p1):
                a, b = ip_ipchi2(x[i], y[i], z[i], tx[i], ty[i], ctrk[i], vx[j], vy[j], vz[j], cvtx[j])
                trk[k] = i - t0
                pv[k] = j - p0
                ip[k] = a
                chi2[k] = b
                k += 1
    return off, trk, pv, ip, chi2


@nb.njit(cache=True)
def best_pv_per_track(track_offsets, pv_offsets, pair_off, ip, chi2):
    """Per track: (best_pv within-event index (-1 if the event has no PV), ip and ipchi2 to that
    PV, min ipchi2) -- the best PV is the one with the smallest IPchi2."""
    nt = track_offsets[-1]
    best = np.full(nt, -1, dtype=np.int32)
    bip = np.full(nt, np.nan)
    bchi2 = np.full(nt, np.nan)
    n_ev = track_offsets.shape[0] - 1
    for e in range(n_ev):
        t0, t1 = track_offsets[e], track_offsets[e + 1]
        nv = pv_offsets[e + 1] - pv_offsets[e]
        k = pair_off[e]
        for i in range(t0, t1):
            m = np.inf
            for j in range(nv):
                c = chi2[k]
                if best[i] < 0 or c < m:
                    m = c
                    best[i] = j
                    bip[i] = ip[k]
                    bchi2[i] = c
                k += 1
    return best, bip, bchi2


class TrackIP(Algorithm):
    """Impact parameter and IPchi2 of every reconstructed track to every reconstructed PV.

    Straight line from the closest-to-beam state (x, y, tx, ty covariance propagated) plus the PV
    covariance; the best PV of a track is the one with the smallest IPchi2.
    """

    Tracks = Input("/Event/Rec/Tracks", "reconstructed tracks (state at closest-to-beam + cov[5,5])")
    Vertices = Input("/Event/Rec/Vertices", "reconstructed primary vertices (x, y, z, cov[3,3])")
    Relations = Output("/Event/Rec/TrackPVRelations", "one row per (track, PV): track, pv, ip, ipchi2")
    TrackIPs = Output("/Event/Rec/TrackIP", "one row per track: best_pv, ip, ipchi2, min_ipchi2")

    def execute(self, ctx, Tracks, Vertices):
        t_off, v_off = Tracks.offsets, Vertices.offsets
        f = lambda c, k: np.ascontiguousarray(c[k], dtype=np.float64)  # noqa: E731
        cov = np.ascontiguousarray(Tracks["cov"], dtype=np.float64)
        vcov = np.ascontiguousarray(Vertices["cov"], dtype=np.float64)
        off, trk, pv, ip, chi2 = ip_ipchi2_pairs(t_off, f(Tracks, "x"), f(Tracks, "y"), f(Tracks, "z"),
                                                 f(Tracks, "tx"), f(Tracks, "ty"), cov, v_off,
                                                 f(Vertices, "x"), f(Vertices, "y"), f(Vertices, "z"), vcov)
        best, bip, bchi2 = best_pv_per_track(t_off, v_off, off, ip, chi2)
        self.counter("track-PV pairs").increment(len(ip))
        if len(bchi2):
            self.averaging_counter("min IPchi2").add(bchi2[np.isfinite(bchi2)])
        rel = Collection({"track": trk, "pv": pv, "ip": ip, "ipchi2": chi2}, off, ctx.event_numbers)
        per_track = Collection({"best_pv": best, "ip": bip, "ipchi2": bchi2, "min_ipchi2": bchi2.copy()},
                               t_off, ctx.event_numbers)
        return {"Relations": rel, "TrackIPs": per_track}
