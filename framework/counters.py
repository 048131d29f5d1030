"""Counters: plain, averaging and binomial (efficiency), printed in a Gaudi-style table."""
from __future__ import annotations

import math

import numpy as np


class Counter:
    """Counts entries: ``increment(n)``."""

    kind = "counter"

    def __init__(self, name: str):
        self.name = name
        self.entries = 0

    def increment(self, n: int = 1):
        self.entries += int(n)

    def __iadd__(self, n):
        self.increment(n)
        return self

    def row(self):
        return (self.name, self.entries, float(self.entries), None, None, None, None)

    def to_dict(self):
        return {"type": self.kind, "entries": self.entries}

    def merge(self, other: "Counter"):
        self.entries += other.entries


class AveragingCounter(Counter):
    """Sum, mean, rms, min and max of added values: ``add(values)``."""

    kind = "averaging"

    def __init__(self, name):
        super().__init__(name)
        self.sum = 0.0
        self.sum2 = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, values):
        v = np.asarray(values, dtype=np.float64).ravel()
        if v.size == 0:
            return
        self.entries += v.size
        self.sum += float(v.sum())
        self.sum2 += float(np.dot(v, v))
        self.min = min(self.min, float(v.min()))
        self.max = max(self.max, float(v.max()))

    @property
    def mean(self):
        return self.sum / self.entries if self.entries else 0.0

    @property
    def rms(self):
        if not self.entries:
            return 0.0
        return math.sqrt(max(self.sum2 / self.entries - self.mean ** 2, 0.0))

    def row(self):
        if not self.entries:
            return (self.name, 0, 0.0, None, None, None, None)
        return (self.name, self.entries, self.sum, self.mean, self.rms, self.min, self.max)

    def to_dict(self):
        return {"type": self.kind, "entries": self.entries, "sum": self.sum, "mean": self.mean,
                "rms": self.rms, "min": self.min if self.entries else None, "max": self.max if self.entries else None}

    def merge(self, other):
        self.entries += other.entries
        self.sum += other.sum
        self.sum2 += other.sum2
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)


class BinomialCounter(Counter):
    """Efficiency ``passed/entries`` with its binomial error: ``add(bool_array)``."""

    kind = "binomial"

    def __init__(self, name):
        super().__init__(name)
        self.passed = 0

    def add(self, passed):
        p = np.asarray(passed, dtype=bool).ravel()
        self.entries += p.size
        self.passed += int(np.count_nonzero(p))

    def add_counts(self, passed: int, total: int):
        self.entries += int(total)
        self.passed += int(passed)

    @property
    def efficiency(self):
        return self.passed / self.entries if self.entries else 0.0

    @property
    def error(self):
        if not self.entries:
            return 0.0
        e = self.efficiency
        return math.sqrt(max(e * (1 - e), 0.0) / self.entries)

    def row(self):
        return (self.name, self.entries, float(self.passed), self.efficiency, self.error, None, None)

    def to_dict(self):
        return {"type": self.kind, "entries": self.entries, "passed": self.passed,
                "efficiency": self.efficiency, "error": self.error}

    def merge(self, other):
        self.entries += other.entries
        self.passed += other.passed


COUNTER_TYPES = {"counter": Counter, "averaging": AveragingCounter, "binomial": BinomialCounter}


def counter_from_dict(name: str, d: dict) -> Counter:
    c = COUNTER_TYPES[d["type"]](name)
    c.entries = d["entries"]
    if isinstance(c, AveragingCounter):
        c.sum = d["sum"]
        c.sum2 = (d["rms"] ** 2 + d["mean"] ** 2) * d["entries"]
        c.min = d["min"] if d["min"] is not None else math.inf
        c.max = d["max"] if d["max"] is not None else -math.inf
    elif isinstance(c, BinomialCounter):
        c.passed = d["passed"]
    return c


def format_counter_table(owner: str, counters: dict[str, Counter]) -> list[str]:
    """Gaudi's ``| Counter | # | sum | mean/eff^* | rms/err^* | min | max |`` table."""
    if not counters:
        return []
    lines = [f"Number of counters : {len(counters)}",
             " |    Counter                                      |     #     |    sum     | mean/eff^* | rms/err^*  |     min     |     max     |"]
    for c in counters.values():
        name, n, s, mean, rms, mn, mx = c.row()
        label = f'"{name}"'
        if c.kind == "binomial":
            lines.append(f" |*{label:<48}| {n:>9d} | {s:>10.6g} |( {100 * mean:#8.5g} +- {100 * rms:#8.5g})% |")
        elif c.kind == "averaging" and mean is not None:
            lines.append(f" | {label:<48}| {n:>9d} | {s:>10.6g} | {mean:>10.5g} | {rms:>10.5g} | {mn:>11.5g} | {mx:>11.5g} |")
        else:
            lines.append(f" | {label:<48}| {n:>9d} |")
    return lines
