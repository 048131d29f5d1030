"""Exceptions of the framework.  A ``FlashsimError`` is reported as one clear line by the CLI."""
from __future__ import annotations

import difflib


class FlashsimError(Exception):
    """Base class of every error the framework reports without a traceback."""


class ConfigurationError(FlashsimError):
    """A wrong option, property, plugin, model or data-flow problem found before or at initialize."""


class InputError(FlashsimError):
    """Unreadable or corrupt input data."""


class EventError(FlashsimError):
    """Too many failed events (ErrorMax exceeded)."""


def did_you_mean(word: str, choices, n: int = 3) -> str:
    """`` (did you mean 'X'?)`` or an empty string."""
    matches = difflib.get_close_matches(str(word), [str(c) for c in choices], n=n, cutoff=0.6)
    if not matches:
        return ""
    if len(matches) == 1:
        return f" (did you mean '{matches[0]}'?)"
    return " (did you mean one of " + ", ".join(f"'{m}'" for m in matches) + "?)"
