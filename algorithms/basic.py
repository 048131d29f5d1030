"""Small general-purpose algorithms: a no-op (framework benchmarks), counters, a prescaler."""
from __future__ import annotations

import numpy as np

from framework import Algorithm, Filter, Property


class NoOp(Algorithm):
    """Does nothing (used to measure the framework's per-algorithm overhead)."""

    def execute(self, ctx):
        return None


class EventCounter(Algorithm):
    """Counts the events that reach it."""

    def execute(self, ctx):
        self.counter("events").increment(ctx.n_events)


class PrescaleFilter(Filter):
    """Keeps a random fraction of events (counter-based: the same events for any batch size)."""

    AcceptFraction = Property(float, 1.0, "fraction of events kept (0..1)")

    def initialize(self):
        from framework import ConfigurationError

        if not 0.0 <= self.AcceptFraction <= 1.0:
            raise ConfigurationError(f"{self.name}.AcceptFraction must be within [0, 1], got {self.AcceptFraction}")

    def execute(self, ctx):
        u = ctx.random.uniform(ctx.event_numbers, 0)
        return u < self.AcceptFraction
