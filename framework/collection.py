"""Columnar, batched collections: a struct of numpy arrays plus per-event offsets.

A :class:`Collection` holds the rows of many events at once.  Row ``i`` belongs to local event
``event_index[i]`` of the batch; the rows of event ``e`` are ``offsets[e]:offsets[e+1]``.  Columns
may be multi-dimensional (the first axis runs over rows), e.g. a ``[N, 5, 5]`` covariance.
Cross references between rows (mother, vertex, MC link) are *within-event* indices, -1 for none,
so they do not change when events are batched differently.
"""
from __future__ import annotations

from collections.abc import Mapping as _MappingABC
from typing import Iterable, Mapping

import numpy as np


def _rows(v: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``v[idx]`` along the first axis (``np.take`` is faster than fancy indexing for ndim > 1)."""
    return np.take(v, idx, axis=0) if v.ndim > 1 else v[idx]


class _GatheredColumns(_MappingABC):
    """Columns of ``source`` at rows ``idx``, gathered on first access (lazy row selection)."""

    __slots__ = ("_source", "_idx", "_done")

    def __init__(self, source: Mapping[str, np.ndarray], idx: np.ndarray):
        self._source, self._idx, self._done = source, idx, {}

    def __getitem__(self, key):
        v = self._done.get(key)
        if v is None:
            v = _rows(self._source[key], self._idx)
            self._done[key] = v
        return v

    def __iter__(self):
        return iter(self._source)

    def __len__(self):
        return len(self._source)

    def __contains__(self, key):
        return key in self._source


class Collection:
    __slots__ = ("_columns", "offsets", "_event_numbers", "_event_index", "_local_index")

    def __init__(self, columns: Mapping[str, np.ndarray], offsets, event_numbers=None):
        offsets = np.asarray(offsets, dtype=np.int64)
        if offsets.ndim != 1 or offsets.size < 1 or offsets[0] != 0 or np.any(np.diff(offsets) < 0):
            raise ValueError("offsets must be a non-decreasing int64 array starting at 0")
        n_rows = int(offsets[-1])
        cols = {}
        for key, value in columns.items():
            arr = np.asarray(value)
            if arr.ndim == 0 or arr.shape[0] != n_rows:
                raise ValueError(f"column '{key}' has {arr.shape[0] if arr.ndim else 0} rows, offsets say {n_rows}")
            cols[key] = arr
        self._columns = cols
        self.offsets = offsets
        self._event_numbers = None if event_numbers is None else np.asarray(event_numbers, dtype=np.int64)
        self._event_index = None
        self._local_index = None

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_counts(cls, columns: Mapping[str, np.ndarray], counts, event_numbers=None) -> "Collection":
        counts = np.asarray(counts, dtype=np.int64)
        offsets = np.zeros(counts.size + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return cls(columns, offsets, event_numbers)

    @classmethod
    def from_event_index(cls, columns: Mapping[str, np.ndarray], event_index, n_events: int, event_numbers=None) -> "Collection":
        """Rows given with their (sorted, non-decreasing) local event index."""
        event_index = np.asarray(event_index, dtype=np.int64)
        if event_index.size and np.any(np.diff(event_index) < 0):
            raise ValueError("event_index must be sorted")
        counts = np.bincount(event_index, minlength=n_events) if event_index.size else np.zeros(n_events, np.int64)
        return cls.from_counts(columns, counts, event_numbers)

    @classmethod
    def per_event(cls, columns: Mapping[str, np.ndarray], event_numbers=None) -> "Collection":
        """A collection with exactly one row per event (event summaries, headers)."""
        n = len(next(iter(columns.values()))) if columns else (0 if event_numbers is None else len(event_numbers))
        return cls(columns, np.arange(n + 1, dtype=np.int64), event_numbers)

    @classmethod
    def empty(cls, dtypes: Mapping[str, object], n_events: int, event_numbers=None) -> "Collection":
        cols = {}
        for key, dt in dtypes.items():
            if isinstance(dt, tuple):
                cols[key] = np.zeros((0,) + tuple(dt[1]), dtype=dt[0])
            else:
                cols[key] = np.zeros(0, dtype=dt)
        return cls(cols, np.zeros(n_events + 1, dtype=np.int64), event_numbers)

    # -- basic accessors -------------------------------------------------------------------
    def __getitem__(self, key: str) -> np.ndarray:
        try:
            return self._columns[key]
        except KeyError:
            raise KeyError(f"no column '{key}'; columns are {sorted(self._columns)}") from None

    def __contains__(self, key: str) -> bool:
        return key in self._columns

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __repr__(self) -> str:
        return f"Collection({self.n_events} events, {len(self)} rows, columns={list(self._columns)})"

    @property
    def columns(self) -> dict[str, np.ndarray]:
        return dict(self._columns)

    @property
    def names(self) -> list[str]:
        return list(self._columns)

    @property
    def n_events(self) -> int:
        return int(self.offsets.size - 1)

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def event_index(self) -> np.ndarray:
        """Local event index (0..n_events-1) of every row."""
        if self._event_index is None:
            self._event_index = np.repeat(np.arange(self.n_events, dtype=np.int64), self.counts)
        return self._event_index

    @property
    def local_index(self) -> np.ndarray:
        """Index of every row within its event."""
        if self._local_index is None:
            self._local_index = np.arange(len(self), dtype=np.int64) - self.offsets[:-1][self.event_index]
        return self._local_index

    @property
    def event_numbers(self) -> np.ndarray | None:
        return self._event_numbers

    @property
    def event_number(self) -> np.ndarray:
        """Global event number of every row (needs the collection to be bound to its batch)."""
        if self._event_numbers is None:
            raise RuntimeError("collection is not bound to a batch: event numbers unknown")
        return self._event_numbers[self.event_index]

    def bind(self, event_numbers) -> "Collection":
        event_numbers = np.asarray(event_numbers, dtype=np.int64)
        if event_numbers.size != self.n_events:
            raise ValueError(f"collection has {self.n_events} events, batch has {event_numbers.size}")
        self._event_numbers = event_numbers
        return self

    def global_index(self, local_event_index, within_event_index) -> np.ndarray:
        """Batch row of a (local event index, within-event index) reference; -1 stays -1."""
        within = np.asarray(within_event_index, dtype=np.int64)
        out = self.offsets[:-1][np.asarray(local_event_index, dtype=np.int64)] + within
        return np.where(within < 0, -1, out)

    # -- derived collections ---------------------------------------------------------------
    def with_columns(self, **columns) -> "Collection":
        cols = dict(self._columns)
        cols.update(columns)
        new = Collection(cols, self.offsets, self._event_numbers)
        new._event_index, new._local_index = self._event_index, self._local_index
        return new

    def drop_columns(self, *names) -> "Collection":
        return Collection({k: v for k, v in self._columns.items() if k not in names}, self.offsets, self._event_numbers)

    def _selected_rows(self, row_mask):
        """Row indices and per-event counts of a boolean row mask (or of sorted row indices)."""
        row_mask = np.asarray(row_mask)
        if row_mask.dtype == bool:
            if row_mask.shape != (len(self),):
                raise ValueError("row mask length differs from the number of rows")
            idx = np.flatnonzero(row_mask)
        else:
            idx = row_mask.astype(np.int64)
        return idx, np.bincount(self.event_index[idx], minlength=self.n_events)

    def select(self, row_mask) -> "Collection":
        """Keep the rows where ``row_mask`` is true (or the given row indices, sorted)."""
        idx, counts = self._selected_rows(row_mask)
        cols = {k: _rows(v, idx) for k, v in self._columns.items()}
        return Collection.from_counts(cols, counts, self._event_numbers)

    def take(self, key: str, rows, out=None) -> np.ndarray:
        """``self[key][rows]`` (into ``out`` if given); for a :meth:`select_lazy` collection the
        rows are taken straight from the parent's column, without gathering the whole column."""
        cols = self._columns
        if isinstance(cols, _GatheredColumns) and key not in cols._done:
            src, rows = cols._source[key], cols._idx[np.asarray(rows)]
        else:
            src = self[key]
        if out is None:
            return src[rows]
        return np.take(src, rows, axis=0, out=out, mode="clip")

    def select_lazy(self, row_mask) -> "Collection":
        """As :meth:`select`, but each column is gathered only when first read: for wide
        collections of which a consumer reads a few columns."""
        idx, counts = self._selected_rows(row_mask)
        new = Collection.from_counts({}, counts, self._event_numbers)
        new._columns = _GatheredColumns(self._columns, idx)
        return new

    def select_events(self, event_mask) -> "Collection":
        """Keep whole events (a boolean mask or sorted local event indices)."""
        event_mask = np.asarray(event_mask)
        events = np.flatnonzero(event_mask) if event_mask.dtype == bool else event_mask.astype(np.int64)
        counts = self.counts[events]
        starts = self.offsets[:-1][events]
        idx = np.repeat(starts - np.concatenate(([0], np.cumsum(counts)[:-1])), counts) + np.arange(counts.sum())
        cols = {k: _rows(v, idx) for k, v in self._columns.items()}
        numbers = None if self._event_numbers is None else self._event_numbers[events]
        return Collection.from_counts(cols, counts, numbers)

    @staticmethod
    def concat(parts: Iterable["Collection"]) -> "Collection":
        """Events of several collections, appended in order (same columns)."""
        parts = list(parts)
        if not parts:
            raise ValueError("nothing to concatenate")
        names = parts[0].names
        for p in parts[1:]:
            if p.names != names:
                raise ValueError(f"cannot concatenate collections with columns {names} and {p.names}")
        cols = {k: np.concatenate([p[k] for p in parts]) for k in names}
        counts = np.concatenate([p.counts for p in parts])
        if all(p._event_numbers is not None for p in parts):
            numbers = np.concatenate([p._event_numbers for p in parts])
        else:
            numbers = None
        return Collection.from_counts(cols, counts, numbers)

    def event(self, i: int) -> dict[str, np.ndarray]:
        """The rows of local event ``i`` as a dict of arrays (convenience; never in hot paths)."""
        a, b = self.offsets[i], self.offsets[i + 1]
        return {k: v[a:b] for k, v in self._columns.items()}

    def to_dict(self) -> dict[str, np.ndarray]:
        return dict(self._columns)
