"""Components with typed, documented properties, and data handles that are properties too.

A property is declared at class level with a type, a default and a one-line doc string::

    class Smear(Algorithm):
        Sigma = Property(float, 0.1, "Gaussian width [mm]")
        Particles = Input("/Event/MC/Particles", "generator-level particles")

Values are validated on assignment; an unknown name or a wrong type raises a
:class:`ConfigurationError` naming the component, the property and the expected type.
"""
from __future__ import annotations

import copy
from typing import Any

import yaml

from .errors import ConfigurationError, did_you_mean

_NO_DEFAULT = object()


def _type_name(t) -> str:
    if isinstance(t, tuple):
        return " or ".join(_type_name(x) for x in t)
    return getattr(t, "__name__", str(t))


class Property:
    """A typed property: ``Property(type, default, doc, choices=None, item_type=None)``.

    * ``type`` is one of ``bool, int, float, str, list, dict`` (or a tuple of them);
      ints are accepted for floats, tuples for lists.
    * ``default=None`` means "not set" (e.g. taken from the Conditions); ``None`` is then always
      an accepted value.
    * ``choices`` restricts the value to a set; ``item_type`` validates list items.
    """

    kind = "property"

    def __init__(self, type, default=None, doc: str = "", *, choices=None, item_type=None):
        self.type = type
        self.doc = doc
        self.choices = list(choices) if choices is not None else None
        self.item_type = item_type
        self.name = None  # set by __set_name__
        self.default = default
        if default is not None:
            self.default = self.validate(default, owner="(default)")

    def __set_name__(self, owner, name):
        self.name = name

    # -- descriptor protocol -------------------------------------------------------------
    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        return instance._property_values.get(self.name, self.default)

    def __set__(self, instance, value):
        instance._property_values[self.name] = self.validate(value, owner=getattr(instance, "name", "?"))

    # -- validation ------------------------------------------------------------------------
    def _types(self):
        return self.type if isinstance(self.type, tuple) else (self.type,)

    def validate(self, value, owner: str = "?"):
        if value is None and self.default is None:
            return None
        types = self._types()
        converted = _NO_DEFAULT
        for t in types:
            if t is bool:
                if isinstance(value, bool):
                    converted = value
            elif t is int:
                if isinstance(value, int) and not isinstance(value, bool):
                    converted = int(value)
            elif t is float:
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    converted = float(value)
            elif t is list:
                if isinstance(value, (list, tuple)):
                    converted = list(value)
                    if self.item_type is not None:
                        for item in converted:
                            if not isinstance(item, self.item_type) or isinstance(item, bool) and self.item_type is not bool:
                                raise ConfigurationError(
                                    f"{owner}.{self.name}: list items must be {_type_name(self.item_type)}, "
                                    f"got {type(item).__name__} {item!r}")
            elif t is dict:
                if isinstance(value, dict):
                    converted = dict(value)
            elif isinstance(value, t):
                converted = value
            if converted is not _NO_DEFAULT:
                break
        if converted is _NO_DEFAULT:
            raise ConfigurationError(
                f"{owner}.{self.name}: expected {_type_name(self.type)}, got {type(value).__name__} {value!r}")
        if self.choices is not None and converted not in self.choices:
            raise ConfigurationError(
                f"{owner}.{self.name}: {converted!r} is not one of {self.choices}{did_you_mean(converted, self.choices)}")
        return converted

    def parse(self, text: str, owner: str = "?"):
        """Parse a command-line string by this property's type (never ``eval``)."""
        if self._types() == (str,):
            return self.validate(text, owner)
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigurationError(f"{owner}.{self.name}: cannot parse {text!r} as {_type_name(self.type)}: {exc}") from None
        if value is None and str in self._types():
            value = text
        return self.validate(value, owner)

    def describe(self) -> str:
        return f"{self.name} ({_type_name(self.type)}, default {self.default!r}): {self.doc}"


class DataHandle(Property):
    """An event-store location declared by an algorithm; the location is a ``str`` property."""

    mode = "?"

    def __init__(self, path: str, doc: str = ""):
        if not path.startswith("/Event/"):
            raise ValueError(f"data handle paths start with /Event/, got {path!r}")
        super().__init__(str, path, doc)

    def validate(self, value, owner: str = "?"):
        value = super().validate(value, owner)
        if not isinstance(value, str) or not value.startswith("/Event/"):
            raise ConfigurationError(f"{owner}.{self.name}: an event-store path starting with /Event/ was expected, got {value!r}")
        return value.rstrip("/")


class Input(DataHandle):
    """A collection the algorithm reads (passed to ``execute`` as a keyword argument).

    ``optional=True``: the data-flow check accepts that nobody produces it, and ``execute`` then
    receives ``None``.
    """

    kind = "input"
    mode = "R"

    def __init__(self, path: str, doc: str = "", optional: bool = False):
        super().__init__(path, doc)
        self.optional = optional


class InputList(Property):
    """A configurable list of collections read by the algorithm (``execute`` gets a list)."""

    kind = "inputlist"
    mode = "R"
    optional = False

    def __init__(self, paths=(), doc: str = ""):
        super().__init__(list, list(paths), doc, item_type=str)

    def validate(self, value, owner: str = "?"):
        value = super().validate(value, owner)
        for i, path in enumerate(value):
            if not path.startswith("/Event/"):
                raise ConfigurationError(f"{owner}.{self.name}[{i}]: an event-store path starting with /Event/ was "
                                         f"expected, got {path!r}")
        return [p.rstrip("/") for p in value]


class Output(DataHandle):
    """A collection the algorithm writes (returned by ``execute``)."""

    kind = "output"
    mode = "W"


class Component:
    """Base class of configurable components (algorithms and the application manager)."""

    _properties: dict[str, Property] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        props: dict[str, Property] = {}
        for klass in reversed(cls.__mro__):
            for key, value in vars(klass).items():
                if isinstance(value, Property):
                    props[key] = value
        cls._properties = props

    def __init__(self, name: str | None = None, **properties):
        self.name = name or type(self).__name__
        self._property_values: dict[str, Any] = {}
        for key, prop in self._properties.items():
            if isinstance(prop.default, (list, dict)):
                self._property_values[key] = copy.deepcopy(prop.default)
        for key, value in properties.items():
            self.set_property(key, value)

    # -- properties ----------------------------------------------------------------------
    @classmethod
    def property_names(cls):
        return list(cls._properties)

    @classmethod
    def get_property_descriptor(cls, key: str, owner: str | None = None) -> Property:
        prop = cls._properties.get(key)
        if prop is None:
            owner = owner or cls.__name__
            raise ConfigurationError(
                f"unknown property '{key}' of {owner} ({cls.__name__}){did_you_mean(key, cls._properties)}; "
                f"valid properties: {', '.join(sorted(cls._properties))}")
        return prop

    def set_property(self, key: str, value):
        prop = self.get_property_descriptor(key, self.name)
        prop.__set__(self, value)

    def set_property_from_string(self, key: str, text: str):
        prop = self.get_property_descriptor(key, self.name)
        self._property_values[key] = prop.parse(text, self.name)

    def properties(self) -> dict[str, Any]:
        """Effective values of every property (defaults included)."""
        return {key: getattr(self, key) for key in self._properties}

    @classmethod
    def handles(cls, kind: str):
        return {k: p for k, p in cls._properties.items() if p.kind == kind}

    @classmethod
    def summary_doc(cls) -> str:
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""
