"""Conditions: named sets of consistent defaults (√s, beam spot, PV smearing, model set).

The framework knows no physics: presets are registered by plugins through the
``flashsim_register_conditions`` hook.  A job selects one tag with ``ApplicationMgr.Conditions``;
algorithms read it through ``self.conditions`` (read-only).  Tags marked ``extrapolation`` are
reported as such at start-up.
"""
from __future__ import annotations

import copy
from types import MappingProxyType

from .errors import ConfigurationError, did_you_mean


class ConditionsRegistry:
    def __init__(self):
        self._presets: dict[str, dict] = {}
        self._meta: dict[str, dict] = {}

    def add(self, tag: str, values: dict, *, description: str = "", extrapolation: bool = False, provider: str = "?"):
        if tag in self._presets:
            raise ConfigurationError(f"conditions tag '{tag}' registered twice ({self._meta[tag]['provider']} and {provider})")
        self._presets[tag] = copy.deepcopy(values)
        self._meta[tag] = {"description": description, "extrapolation": extrapolation, "provider": provider}

    def tags(self):
        return list(self._presets)

    def meta(self, tag):
        return self._meta[tag]

    def get(self, tag: str) -> MappingProxyType:
        if tag not in self._presets:
            raise ConfigurationError(
                f"unknown conditions tag '{tag}'{did_you_mean(tag, self._presets)}; known tags: {', '.join(self._presets) or 'none'}")
        return MappingProxyType(copy.deepcopy(self._presets[tag]))
