"""Message service: Gaudi-like levels and line format (source padded to 18, level to 7)."""
from __future__ import annotations

import sys
from collections import Counter as _Tally

LEVELS = {"NIL": 0, "VERBOSE": 1, "DEBUG": 2, "INFO": 3, "WARNING": 4, "ERROR": 5, "FATAL": 6, "ALWAYS": 7}
LEVEL_NAMES = {v: k for k, v in LEVELS.items()}


def level_number(level) -> int:
    if isinstance(level, int):
        return level
    try:
        return LEVELS[str(level).upper()]
    except KeyError:
        raise ValueError(f"unknown message level {level!r}; valid: {list(LEVELS)}") from None


class MessageSvc:
    """Prints ``source  LEVEL  text`` lines; at most ``limit`` WARNING/ERROR lines per source."""

    def __init__(self, level="INFO", stream=None, limit: int = 500):
        self.level = level_number(level)
        self.stream = stream
        self.limit = limit
        self._tally: _Tally = _Tally()
        self.counts: _Tally = _Tally()

    def format(self, source: str, level: int, text: str) -> str:
        return f"{source[:18]:<18} {LEVEL_NAMES.get(level, str(level)):<7} {text}"

    def report(self, source: str, level, text: str, source_level=None):
        level = level_number(level)
        self.counts[level] += 1
        threshold = self.level if source_level is None else level_number(source_level)
        if level < threshold:
            return
        if level in (LEVELS["WARNING"], LEVELS["ERROR"]):
            key = (source, level)
            self._tally[key] += 1
            if self._tally[key] > self.limit:
                if self._tally[key] == self.limit + 1:
                    text = f"(further {LEVEL_NAMES[level]} messages from {source} suppressed)"
                else:
                    return
        stream = self.stream or sys.stdout
        print(self.format(source, level, text), file=stream, flush=level >= LEVELS["WARNING"])
