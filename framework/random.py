"""Counter-based random numbers: reproducible whatever the batch size or sharding.

A random number is a pure function of (job seed, run number, algorithm name, stream, event number,
object index within the event, draw index).  Nothing depends on a row's position in a batch, so the
same options and seed give identical output for any batch size and any split of events across
processes.

The generator is a chain of SplitMix64 finalisers (Steele, Lea & Flood 2014), a counter-based hash
that passes BigCrush when used as a counter generator.  Uniforms carry 53 random bits and lie in the
open interval (0, 1); normals use the Box-Muller transform of two such uniforms: ``RandomStreams.normal``
(and :func:`row_normals`/:func:`normal_pair_draw` in kernels) uses both halves of each pair (draws 2k and
2k+1 share uniforms 2k, 2k+1); the older scalar :func:`counter_normal` uses only the cosine half.
"""
from __future__ import annotations

import hashlib
import math

import numba as nb
import numpy as np

__all__ = [
    "stable_hash",
    "derive_key",
    "counter_uniform",
    "counter_normal",
    "row_key",
    "row_uniform",
    "row_normal",
    "row_normals",
    "normal_pair_draw",
    "RandomStreams",
]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_TWO_PI = 2.0 * math.pi
_INV_2_53 = 1.0 / 9007199254740992.0


def stable_hash(text: str) -> int:
    """64-bit hash of a string that is the same in every process (unlike Python's ``hash``)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


@nb.njit(cache=True, inline="always")
def _mix(x):
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@nb.njit(cache=True)
def _hash4(key, event, index, draw):
    h = _mix(np.uint64(key) ^ np.uint64(event))
    h = _mix(h ^ np.uint64(index))
    h = _mix(h ^ np.uint64(draw))
    return h


@nb.njit(cache=True)
def counter_uniform(key, event, index, draw):
    """Uniform in (0, 1) for (key, event, index, draw); callable from numba kernels."""
    h = _hash4(key, event, index, draw)
    return (np.float64(h >> np.uint64(11)) + 0.5) * _INV_2_53


@nb.njit(cache=True)
def counter_normal(key, event, index, draw):
    """Standard normal for (key, event, index, draw); consumes draws 2*draw and 2*draw+1."""
    u1 = counter_uniform(key, event, index, 2 * draw)
    u2 = counter_uniform(key, event, index, 2 * draw + 1)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(_TWO_PI * u2)


@nb.njit(cache=True, inline="always")
def row_key(key, event, index):
    """The part of the hash shared by all draws of one (key, event, index): with
    :func:`row_uniform`/:func:`row_normal` a kernel drawing many numbers per object hashes the
    object once.  ``row_uniform(row_key(k, e, i), d) == counter_uniform(k, e, i, d)`` exactly."""
    return _mix(_mix(np.uint64(key) ^ np.uint64(event)) ^ np.uint64(index))


@nb.njit(cache=True, inline="always")
def row_uniform(hrow, draw):
    """``counter_uniform`` of draw ``draw`` of the object hashed by :func:`row_key`."""
    return (np.float64(_mix(hrow ^ np.uint64(draw)) >> np.uint64(11)) + 0.5) * _INV_2_53


@nb.njit(cache=True, inline="always")
def row_normal(hrow, draw):
    """``counter_normal`` of draw ``draw`` of the object hashed by :func:`row_key` (bit-identical)."""
    u1 = row_uniform(hrow, 2 * draw)
    u2 = row_uniform(hrow, 2 * draw + 1)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(_TWO_PI * u2)


@nb.njit(cache=True, inline="always")
def row_normals(hrow, first_draw, out):
    """Fill ``out`` (1-D) with the normals of draws ``first_draw, first_draw + 1, ...`` of the object
    hashed by :func:`row_key`: draw ``d`` is ``r cos(phi)`` for even ``d`` and ``r sin(phi)`` for odd
    ``d``, with (r, phi) the Box-Muller transform of uniforms ``d - d % 2`` and ``d - d % 2 + 1`` --
    both halves of each pair are used (one log, sqrt and sincos per two normals).  This is the
    definition behind ``RandomStreams.normal``; it is a pure function of (key, event, index, draw)."""
    n = out.shape[0]
    j = 0
    while j < n:
        d = first_draw + j
        base = d - (d & 1)
        r = math.sqrt(-2.0 * math.log(row_uniform(hrow, base)))
        phi = _TWO_PI * row_uniform(hrow, base + 1)
        if d & 1:
            out[j] = r * math.sin(phi)
            j += 1
        else:
            out[j] = r * math.cos(phi)
            if j + 1 < n:
                out[j + 1] = r * math.sin(phi)
            j += 2


@nb.njit(cache=True)
def normal_pair_draw(key, event, index, draw):
    """Scalar form of :func:`row_normals` (the ``RandomStreams.normal`` numbers) for numba kernels."""
    h = row_key(key, event, index)
    base = draw - (draw & 1)
    r = math.sqrt(-2.0 * math.log(row_uniform(h, base)))
    phi = _TWO_PI * row_uniform(h, base + 1)
    return r * math.sin(phi) if draw & 1 else r * math.cos(phi)


@nb.njit(cache=True)
def _uniform_array(key, events, indices, n_draws, first_draw):
    n = events.shape[0]
    out = np.empty((n, n_draws), dtype=np.float64)
    for i in range(n):
        h = row_key(key, events[i], indices[i])
        for j in range(n_draws):
            out[i, j] = row_uniform(h, first_draw + j)
    return out


@nb.njit(cache=True)
def _normal_array(key, events, indices, n_draws, first_draw):
    n = events.shape[0]
    out = np.empty((n, n_draws), dtype=np.float64)
    for i in range(n):
        row_normals(row_key(key, events[i], indices[i]), first_draw, out[i])
    return out


def derive_key(seed: int, run_number: int, name: str, stream: int = 0) -> int:
    """The 64-bit key of one random stream of one algorithm in one run."""
    text = f"{int(seed)}/{int(run_number)}/{name}/{int(stream)}"
    return stable_hash(text)


class RandomStreams:
    """Random numbers for one algorithm: ``uniform``/``normal`` keyed by (event, object index).

    ``stream`` separates independent uses inside one algorithm (e.g. 0 for an acceptance draw,
    1 for the noise of a generative model).  ``n`` draws per row come from draw indices
    ``0..n-1`` of that stream.
    """

    def __init__(self, seed: int, run_number: int, name: str):
        self.seed = int(seed)
        self.run_number = int(run_number)
        self.name = name
        self._keys: dict[int, int] = {}

    def key_for(self, stream: int = 0) -> np.uint64:
        key = self._keys.get(stream)
        if key is None:
            key = self._keys[stream] = derive_key(self.seed, self.run_number, self.name, stream)
        return np.uint64(key)

    @property
    def key(self) -> np.uint64:
        return self.key_for(0)

    @staticmethod
    def _prepare(events, indices):
        events = np.ascontiguousarray(events, dtype=np.int64)
        indices = np.broadcast_to(np.asarray(indices, dtype=np.int64), events.shape)
        return events, np.ascontiguousarray(indices)

    def uniform(self, events, indices=0, stream: int = 0, n: int | None = None, first_draw: int = 0):
        events, indices = self._prepare(events, indices)
        out = _uniform_array(self.key_for(stream), events, indices, 1 if n is None else int(n), int(first_draw))
        return out[:, 0] if n is None else out

    def normal(self, events, indices=0, stream: int = 0, n: int | None = None, first_draw: int = 0):
        events, indices = self._prepare(events, indices)
        out = _normal_array(self.key_for(stream), events, indices, 1 if n is None else int(n), int(first_draw))
        return out[:, 0] if n is None else out

    def exponential(self, events, indices=0, stream: int = 0, n: int | None = None):
        return -np.log(self.uniform(events, indices, stream, n))
