"""Primary-vertex reconstruction by triple-Gaussian smearing of the true collision vertices.

Each coordinate c in (x, y, z) is smeared independently as in LHCb's Lamarr
(``PrimaryVertexSmearing.sql``, LHCBGAUSS-1287): reco = true + mu + N(0, sigma), with
sigma = s1 with probability f1, s2 with probability f2, s3 otherwise.

Difference from Lamarr: the reported covariance is diag(sigma^2) of the component *actually
drawn* for that vertex and coordinate (Lamarr stores min(s1, s2, s3), which makes PV pulls too
wide).  With this choice the pulls (reco - true - mu)/sigma are exactly N(0, 1).

Randomness: ``ctx.random`` keyed by (event number, collision index within the event); stream 0 gives
three uniforms (component choice for x, y, z), stream 1 three normals.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from framework import Algorithm, Collection, ConfigurationError, Input, Output
from framework.random import counter_uniform, normal_pair_draw

__all__ = ["PVSmearingTable", "parse_pv_smearing", "smear_vertices", "PVReconstruction"]

COORDS = ("x", "y", "z")
KEYS = ("mu", "f1", "f2", "s1", "s2", "s3")


class PVSmearingTable:
    """Arrays [3] (x, y, z) of mu, f1, f2, s1, s2, s3 [mm]."""

    def __init__(self, mu, f1, f2, s1, s2, s3):
        self.mu = np.asarray(mu, dtype=np.float64)
        self.f1 = np.asarray(f1, dtype=np.float64)
        self.f2 = np.asarray(f2, dtype=np.float64)
        self.sigmas = np.stack([np.asarray(s, dtype=np.float64) for s in (s1, s2, s3)], axis=1)  # [3 coords, 3 comps]

    def fractions(self) -> np.ndarray:
        """[3 coords, 3 components] mixture fractions."""
        return np.stack([self.f1, self.f2, 1.0 - self.f1 - self.f2], axis=1)


def parse_pv_smearing(table, where: str = "pv_smearing") -> PVSmearingTable:
    """Validate the conditions entry ``{"x": {"mu", "f1", "f2", "s1", "s2", "s3"}, "y": ..., "z": ...}``."""
    if not isinstance(table, dict) and not hasattr(table, "keys"):
        raise ConfigurationError(f"{where}: expected a mapping with keys x, y, z, got {type(table).__name__}")
    vals = {k: [] for k in KEYS}
    for c in COORDS:
        if c not in table:
            raise ConfigurationError(f"{where}: missing coordinate '{c}' (expected keys x, y, z)")
        row = table[c]
        for k in KEYS:
            if k not in row:
                import difflib

                hint = difflib.get_close_matches(k, list(row), n=1)
                raise ConfigurationError(f"{where}.{c}: missing '{k}' (expected {list(KEYS)})"
                                         + (f"; did you mean '{hint[0]}'?" if hint else ""))
            try:
                v = float(row[k])
            except (TypeError, ValueError):
                raise ConfigurationError(f"{where}.{c}.{k}: expected a number, got {row[k]!r}") from None
            if not np.isfinite(v):
                raise ConfigurationError(f"{where}.{c}.{k}: not finite ({v})")
            vals[k].append(v)
        f1, f2 = vals["f1"][-1], vals["f2"][-1]
        if f1 < 0 or f2 < 0 or f1 + f2 > 1 + 1e-12:
            raise ConfigurationError(f"{where}.{c}: fractions f1={f1}, f2={f2} must be >= 0 with f1 + f2 <= 1")
        for k in ("s1", "s2", "s3"):
            if vals[k][-1] <= 0:
                raise ConfigurationError(f"{where}.{c}.{k}: widths must be > 0 mm, got {vals[k][-1]}")
    return PVSmearingTable(**vals)


def smear_vertices(true_xyz: np.ndarray, u: np.ndarray, g: np.ndarray, table: PVSmearingTable):
    """Pure smearing function.

    ``true_xyz`` [N, 3] mm; ``u`` [N, 3] uniforms in (0, 1) choosing the component per coordinate;
    ``g`` [N, 3] standard normals.  Returns ``(reco [N, 3], sigma [N, 3], component [N, 3] int8)``
    with component 0, 1, 2 for s1, s2, s3.
    """
    true_xyz = np.asarray(true_xyz, dtype=np.float64)
    comp = np.where(u < table.f1[None, :], 0, np.where(u < (table.f1 + table.f2)[None, :], 1, 2)).astype(np.int8)
    sigma = np.take_along_axis(np.broadcast_to(table.sigmas[None], (len(u), 3, 3)), comp[..., None].astype(np.int64),
                               axis=2)[..., 0]
    reco = true_xyz + table.mu[None, :] + sigma * g
    return reco, sigma, comp


@nb.njit(cache=True)
def _smear_kernel(key_u, key_g, event_numbers, ev, index, tx, ty, tz, mu, f1, f2, sigmas):
    """:func:`smear_vertices` of every collision with its keyed uniforms/normals, in one pass."""
    n = tx.shape[0]
    out = np.empty((3, n))
    cov = np.zeros((n, 3, 3))
    for i in range(n):
        e = event_numbers[ev[i]]
        for c in range(3):
            u = counter_uniform(key_u, e, index[i], c)
            g = normal_pair_draw(key_g, e, index[i], c)
            k = 0 if u < f1[c] else (1 if u < f1[c] + f2[c] else 2)
            s = sigmas[c, k]
            t = tx[i] if c == 0 else (ty[i] if c == 1 else tz[i])
            out[c, i] = t + mu[c] + s * g
            cov[i, c, c] = s * s
    return out[0], out[1], out[2], cov


class PVReconstruction(Algorithm):
    """Reconstructed primary vertices: triple-Gaussian smearing of the MC collision vertices.

    One reconstructed PV per MC collision (2016 MagUp table of LHCb's Lamarr, from the conditions
    ``pv_smearing``), covariance = diag(sigma^2) of the Gaussian component drawn (pulls N(0, 1)).
    """

    Collisions = Input("/Event/Gen/Collisions", "MC collisions (true PV positions)")
    Vertices = Output("/Event/Rec/Vertices", "reconstructed primary vertices: x, y, z, cov[3,3], collision")

    def initialize(self):
        try:
            table = self.conditions["pv_smearing"]
        except KeyError:
            raise ConfigurationError(f"{self.name}: the conditions have no 'pv_smearing' table "
                                     "(expected {x|y|z: {mu, f1, f2, s1, s2, s3}})") from None
        self.table = parse_pv_smearing(table, where=f"{self.name}: conditions pv_smearing")

    def execute(self, ctx, Collisions):
        n = len(Collisions)
        index = Collisions["collision"] if "collision" in Collisions else Collisions.local_index
        # u = ctx.random.uniform(event, collision, stream=0, n=3), g = ctx.random.normal(..., stream=1, n=3)
        x, y, z, cov = _smear_kernel(ctx.random.key_for(0), ctx.random.key_for(1),
                                     np.asarray(ctx.event_numbers, np.int64), Collisions.event_index,
                                     np.ascontiguousarray(index, dtype=np.int64),
                                     *(np.ascontiguousarray(Collisions[c], dtype=np.float64) for c in COORDS),
                                     self.table.mu, self.table.f1, self.table.f2, self.table.sigmas)
        self.counter("PVs").increment(n)
        return Collection({"x": x, "y": y, "z": z, "cov": cov, "collision": np.asarray(index, dtype=np.int32)},
                          Collisions.offsets, ctx.event_numbers)
