"""Plugin discovery (pluggy entry points) and the component registry.

Load order (as tox and pytest do): the ``flashsim`` entry-point group (built-ins included: the
``algorithms`` package registers itself there like any third-party package) → explicitly given
plugin modules → ``check_pending()``, which rejects misspelt hook implementations.
Set ``FLASHSIM_DISABLE_PLUGIN_AUTOLOAD=1`` to load only the built-in plugin.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field

import pluggy

from . import hookspecs
from .algorithm import Algorithm
from .conditions import ConditionsRegistry
from .errors import ConfigurationError, did_you_mean

ENTRY_POINT_GROUP = "flashsim"
BUILTIN_PLUGIN = "algorithms.plugin"
CORE_PLUGIN = "framework.core"


class _CoreExecute:
    """The framework's own implementation of the execute hook, wrapped by auditor plugins."""

    @hookspecs.hookimpl(trylast=True)
    def flashsim_execute_algorithm(self, algorithm, ctx, inputs):
        return algorithm.execute(ctx, **inputs)


@dataclass
class ComponentInfo:
    cls: type
    plugin: str
    distribution: str
    version: str
    extra: dict = field(default_factory=dict)


class ComponentRegistry:
    """Algorithm types by name, with the plugin and distribution that provided each."""

    def __init__(self):
        self.components: dict[str, ComponentInfo] = {}
        self._current = ("?", "?", "?")

    def add_algorithm(self, cls, name: str | None = None):
        if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
            raise ConfigurationError(f"plugin {self._current[0]} registered {cls!r}, which is not an Algorithm subclass")
        name = name or cls.__name__
        if name in self.components and self.components[name].cls is not cls:
            prev = self.components[name]
            raise ConfigurationError(
                f"algorithm type '{name}' registered by both {prev.plugin} ({prev.distribution}) and {self._current[0]}")
        plugin, dist, version = self._current
        self.components[name] = ComponentInfo(cls, plugin, dist, version)

    def get(self, name: str, where: str = "") -> type:
        info = self.components.get(name)
        if info is None:
            raise ConfigurationError(
                f"{where}unknown algorithm type '{name}'{did_you_mean(name, self.components)}; "
                f"known types: {', '.join(sorted(self.components))} (see `flashsim plugins`)")
        return info.cls


class Plugins:
    """The pluggy manager with flashsim's hookspecs, loaded plugins and registries."""

    def __init__(self, extra_plugins=(), autoload: bool | None = None, trace: bool = False):
        self.pm = pluggy.PluginManager("flashsim")
        self.pm.add_hookspecs(hookspecs)
        if trace:
            self.pm.trace.root.setwriter(print)
            self.pm.enable_tracing()
        if autoload is None:
            autoload = not os.environ.get("FLASHSIM_DISABLE_PLUGIN_AUTOLOAD")
        if autoload:
            try:
                self.pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
            except Exception as exc:
                raise ConfigurationError(f"failed to load a '{ENTRY_POINT_GROUP}' entry-point plugin: {exc}") from exc
        if not any(name == BUILTIN_PLUGIN or getattr(p, "__name__", "") == BUILTIN_PLUGIN
                   for name, p in self.pm.list_name_plugin()):
            try:  # source checkout without an installed entry point
                self.pm.register(importlib.import_module(BUILTIN_PLUGIN), name=BUILTIN_PLUGIN)
            except ImportError:
                pass
        for spec in extra_plugins:
            module = importlib.import_module(spec) if isinstance(spec, str) else spec
            name = spec if isinstance(spec, str) else getattr(module, "__name__", None)
            if self.pm.get_plugin(name) is None:
                self.pm.register(module, name=name)
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise ConfigurationError(f"plugin validation failed: {exc}") from None
        self.pm.register(_CoreExecute(), name=CORE_PLUGIN)
        self.components = ComponentRegistry()
        self.conditions = ConditionsRegistry()
        self._call_with_provenance("flashsim_register_components", registry=self.components)
        self._call_with_provenance("flashsim_register_conditions", conditions=self.conditions)

    def distribution_of(self, plugin) -> tuple[str, str]:
        for p, dist in self.pm.list_plugin_distinfo():
            if p is plugin:
                return dist.project_name if hasattr(dist, "project_name") else dist.metadata["name"], dist.version
        return "(not installed)", "-"

    def _call_with_provenance(self, hook_name: str, **kwargs):
        caller = getattr(self.pm.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):  # registration order
            dist, version = self.distribution_of(impl.plugin)
            target = self.components if "registry" in kwargs else None
            if target is not None:
                target._current = (impl.plugin_name, dist, version)
            args = {k: v for k, v in kwargs.items() if k in impl.argnames}
            if "conditions" in kwargs:
                orig_add = self.conditions.add

                def add(tag, values, _orig=orig_add, _p=impl.plugin_name, **kw):
                    kw.setdefault("provider", _p)
                    return _orig(tag, values, **kw)
                self.conditions.add = add
                try:
                    impl.function(**args)
                finally:
                    self.conditions.add = orig_add
            else:
                impl.function(**args)

    def has_external_impls(self, hook_name: str) -> bool:
        """Whether a plugin other than the framework core implements ``hook_name``."""
        return any(impl.plugin_name != CORE_PLUGIN for impl in getattr(self.pm.hook, hook_name).get_hookimpls())

    def plugin_rows(self):
        rows = []
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None:
                continue
            dist, version = self.distribution_of(plugin)
            hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])
            rows.append((name, dist, version, hooks))
        return rows
