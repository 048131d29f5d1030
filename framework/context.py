"""The batch context handed to ``Algorithm.execute``."""
from __future__ import annotations

import numpy as np

from .random import RandomStreams


class BatchContext:
    """What an algorithm knows about the batch it runs on.

    ``event_numbers`` are global event numbers (unique across shards); ``random`` gives
    counter-based random numbers for the algorithm being executed.
    """

    def __init__(self, event_numbers, run_number: int, seed: int, batch_index: int = 0):
        self.event_numbers = np.asarray(event_numbers, dtype=np.int64)
        self.run_number = int(run_number)
        self.seed = int(seed)
        self.batch_index = batch_index
        self._streams: dict[str, RandomStreams] = {}
        self.algorithm_name = None
        self.random = None

    @property
    def n_events(self) -> int:
        return int(self.event_numbers.size)

    def for_algorithm(self, name: str) -> "BatchContext":
        streams = self._streams.get(name)
        if streams is None:
            streams = self._streams[name] = RandomStreams(self.seed, self.run_number, name)
        self.algorithm_name = name
        self.random = streams
        return self

    def subset(self, event_indices) -> "BatchContext":
        sub = BatchContext(self.event_numbers[np.asarray(event_indices)], self.run_number, self.seed, self.batch_index)
        sub._streams = self._streams
        return sub
