"""Straight-line track geometry shared by the tracking and analysis branches (numba)."""
from __future__ import annotations

import math

import numba as nb
import numpy as np

__all__ = ["ip_ipchi2"]


@nb.njit(cache=True)
def ip_ipchi2(x, y, z, tx, ty, ctrk, vx, vy, vz, cvtx):
    """(IP [mm], IPchi2) of one straight-line track w.r.t. one vertex.

    ``ctrk``: track covariance, at least 4x4 in the order (x, y, tx, ty[, q/p]);
    ``cvtx``: 3x3 vertex covariance (x, y, z).  Returns (ip, inf) if the residual covariance is
    singular.
    """
    dz = vz - z
    rx = x + tx * dz - vx
    ry = y + ty * dz - vy
    # track part: J_t C J_t^T
    v00 = ctrk[0, 0] + 2.0 * dz * ctrk[0, 2] + dz * dz * ctrk[2, 2]
    v11 = ctrk[1, 1] + 2.0 * dz * ctrk[1, 3] + dz * dz * ctrk[3, 3]
    v01 = ctrk[0, 1] + dz * (ctrk[0, 3] + ctrk[2, 1]) + dz * dz * ctrk[2, 3]
    # vertex part: J_v C_v J_v^T with J_v = [[-1, 0, tx], [0, -1, ty]]
    v00 += cvtx[0, 0] - 2.0 * tx * cvtx[0, 2] + tx * tx * cvtx[2, 2]
    v11 += cvtx[1, 1] - 2.0 * ty * cvtx[1, 2] + ty * ty * cvtx[2, 2]
    v01 += cvtx[0, 1] - tx * cvtx[1, 2] - ty * cvtx[0, 2] + tx * ty * cvtx[2, 2]
    det = v00 * v11 - v01 * v01
    # 3-D distance to the line
    n2 = 1.0 + tx * tx + ty * ty
    proj = (rx * tx + ry * ty) / n2          # (r3 . d) / |d|^2 with d = (tx, ty, 1)
    px = rx - proj * tx
    py = ry - proj * ty
    pz = -proj
    ip = math.sqrt(px * px + py * py + pz * pz)
    if det <= 0.0:
        return ip, np.inf
    chi2 = (v11 * rx * rx - 2.0 * v01 * rx * ry + v00 * ry * ry) / det
    return ip, chi2
