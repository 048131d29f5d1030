"""The Algorithm base class: lifecycle, messages, counters, services.

Lifecycle: ``initialize()`` once (properties are set, services available) → ``execute(ctx, **inputs)``
once per batch of events → ``finalize()`` once.  ``execute`` receives one keyword argument per
declared :class:`~framework.component.Input` and returns the declared outputs: a single
:class:`~framework.collection.Collection` when there is one ``Output``, a dict keyed by output
name otherwise, ``None`` when there are none.

A *filter* (``is_filter = True``) returns a boolean array with one entry per event instead; the
application manager then **compacts** the batch — every collection in the store and the batch
context keep only the passing events — so algorithms scheduled after it see passing events only.
"""
from __future__ import annotations

from typing import Any

from .component import Component, Property
from .counters import AveragingCounter, BinomialCounter, Counter
from .messages import LEVELS, level_number


class Algorithm(Component):
    """Base class of every algorithm."""

    OutputLevel = Property(str, "INFO", "message threshold of this algorithm", choices=list(LEVELS))
    Enable = Property(bool, True, "run this algorithm (a disabled algorithm is skipped, its outputs absent)")
    ErrorMax = Property(int, 1, "failed events tolerated before the job stops (Gaudi's ErrorMax)")

    is_filter = False

    def __init__(self, name=None, **properties):
        super().__init__(name, **properties)
        self._app = None
        self._counters: dict[str, Counter] = {}
        self.n_failed_events = 0

    # -- lifecycle (override) ------------------------------------------------------------------
    def initialize(self):
        """Called once after configuration; validate properties, load models."""

    def execute(self, ctx, **inputs) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.execute")

    def finalize(self):
        """Called once at the end of the job."""

    def available_events(self) -> int | None:
        """Producers reading finite inputs return how many events they can provide."""
        return None

    # -- services ------------------------------------------------------------------------------
    @property
    def app(self):
        if self._app is None:
            raise RuntimeError(f"{self.name} is not attached to an application manager")
        return self._app

    @property
    def conditions(self):
        """Read-only mapping of the active conditions tag."""
        return self.app.conditions

    def load_model(self, path: str):
        """An ONNX model with its card, validated now (see :mod:`framework.models`)."""
        return self.app.model_svc.load(path, requester=self.name)

    def ntuple(self, tree: str):
        """A handle on the output TTree ``tree``: ``.extend(dict of arrays)`` once per batch."""
        return self.app.output_svc.ntuple(tree, requester=self.name)

    def service(self, name: str):
        return self.app.service(name)

    # -- messages ------------------------------------------------------------------------------
    def msg(self, level, text: str):
        svc = self._app.msg_svc if self._app is not None else None
        if svc is None:
            if level_number(level) >= level_number(self.OutputLevel):
                print(f"{self.name[:18]:<18} {str(level):<7} {text}")
            return
        svc.report(self.name, level, text, source_level=self.OutputLevel)

    def verbose(self, text):
        self.msg("VERBOSE", text)

    def debug(self, text):
        self.msg("DEBUG", text)

    def info(self, text):
        self.msg("INFO", text)

    def warning(self, text):
        self.msg("WARNING", text)

    def error(self, text):
        self.msg("ERROR", text)

    # -- counters ------------------------------------------------------------------------------
    def _get_counter(self, name, cls):
        c = self._counters.get(name)
        if c is None:
            c = self._counters[name] = cls(name)
        elif type(c) is not cls:
            raise TypeError(f"{self.name}: counter '{name}' is a {c.kind} counter")
        return c

    def counter(self, name: str) -> Counter:
        return self._get_counter(name, Counter)

    def averaging_counter(self, name: str) -> AveragingCounter:
        return self._get_counter(name, AveragingCounter)

    def binomial_counter(self, name: str) -> BinomialCounter:
        return self._get_counter(name, BinomialCounter)

    @property
    def counters(self) -> dict[str, Counter]:
        return self._counters


class Filter(Algorithm):
    """An algorithm whose ``execute`` returns one boolean per event; failing events are dropped."""

    is_filter = True
