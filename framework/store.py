"""Transient event store: collections addressed by ``/Event/...`` paths, write-once per batch."""
from __future__ import annotations

import numpy as np

from .collection import Collection
from .errors import did_you_mean


def normalise(path: str) -> str:
    path = path.rstrip("/")
    if not path.startswith("/Event/"):
        raise KeyError(f"event-store paths start with /Event/, got {path!r}")
    return path


class EventStore:
    """One batch of events.  ``put`` is write-once; ``clear`` between batches."""

    def __init__(self):
        self._data: dict[str, Collection] = {}

    def put(self, path: str, obj):
        path = normalise(path)
        if path in self._data:
            raise KeyError(f"{path} already exists in the event store (objects are write-once)")
        self._data[path] = obj

    def get(self, path: str):
        path = normalise(path)
        try:
            return self._data[path]
        except KeyError:
            raise KeyError(f"{path} not in the event store{did_you_mean(path, self._data)}") from None

    def get_if_exists(self, path: str):
        return self._data.get(normalise(path))

    def exists(self, path: str) -> bool:
        return normalise(path) in self._data

    def paths(self):
        return list(self._data)

    def clear(self):
        self._data.clear()

    def select_events(self, event_mask) -> None:
        """Compact every collection to the given events (filters, failed events)."""
        event_mask = np.asarray(event_mask)
        for key, obj in list(self._data.items()):
            if isinstance(obj, Collection):
                self._data[key] = obj.select_events(event_mask)

    def view_events(self, event_indices) -> "EventStore":
        """A new store holding only the given events (used to isolate failing events)."""
        sub = EventStore()
        for key, obj in self._data.items():
            sub._data[key] = obj.select_events(event_indices) if isinstance(obj, Collection) else obj
        return sub
