"""Options files: YAML → an effective job configuration (with file and line of every value).

Format::

    include: [common.yaml]          # paths relative to this file; later files win
    ApplicationMgr:
      EvtMax: 1000
      BatchSize: 1000
      Seed: 42
    Algorithms:                     # executed in this order
      - type: ParticleGun
        name: Generation
        Descriptor: "[B+ -> (J/psi(1S) -> mu+ mu-) K+]cc"

Merging (includes, several files on the command line): ``ApplicationMgr`` keys later-wins; an
``Algorithms`` entry whose ``name`` already exists updates that algorithm's properties (later wins;
``type`` may be omitted), new names are appended.  Command-line ``--set Name.Property=value`` is
parsed by the property's type (never ``eval``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigurationError, did_you_mean

TOP_KEYS = ("include", "ApplicationMgr", "Algorithms")
ALG_RESERVED = ("type", "name")


class _LocatedDict(dict):
    lines: dict


class _LocatedList(list):
    lines: list


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader, node, deep=False):
    loader.flatten_mapping(node)
    d = _LocatedDict()
    d.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in d:
            raise ConfigurationError(f"{loader.name}:{key_node.start_mark.line + 1}: duplicate key '{key}'")
        d[key] = loader.construct_object(value_node, deep=True)
        d.lines[key] = key_node.start_mark.line + 1
    return d


def _construct_sequence(loader, node, deep=False):
    lst = _LocatedList(loader.construct_object(child, deep=True) for child in node.value)
    lst.lines = [child.start_mark.line + 1 for child in node.value]
    return lst


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


@dataclass
class Where:
    file: str
    line: int | None = None

    def __str__(self):
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass
class AlgSpec:
    type: str
    name: str
    where: Where
    properties: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, Where] = field(default_factory=dict)


@dataclass
class JobOptions:
    app: dict[str, Any] = field(default_factory=dict)
    app_sources: dict[str, Where] = field(default_factory=dict)
    algorithms: list[AlgSpec] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def algorithm(self, name: str) -> AlgSpec | None:
        for spec in self.algorithms:
            if spec.name == name:
                return spec
        return None

    def to_yaml_dict(self, effective_app: dict | None = None, effective_algs: list[dict] | None = None) -> dict:
        app = effective_app if effective_app is not None else dict(self.app)
        algs = effective_algs if effective_algs is not None else [
            {"type": s.type, "name": s.name, **s.properties} for s in self.algorithms]
        return {"ApplicationMgr": app, "Algorithms": algs}


def _load_yaml(path: Path):
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigurationError(f"options file {path} not found") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot read options file {path}: {exc}") from None
    loader = _Loader(text)
    loader.name = str(path)
    try:
        return loader.get_single_data() or _LocatedDict()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise ConfigurationError(f"{path}:{mark.line + 1 if mark else '?'}: invalid YAML: {exc.problem}") from None
    finally:
        loader.dispose()


def load_options(paths, opts: JobOptions | None = None, _stack=()) -> JobOptions:
    """Load and merge options files in order (includes first, then the file itself)."""
    opts = opts or JobOptions()
    for raw in paths:
        path = Path(raw).resolve()
        if path in _stack:
            raise ConfigurationError(f"{raw}: include cycle: " + " -> ".join(str(p) for p in (*_stack, path)))
        data = _load_yaml(path)
        fname = str(raw)
        if not isinstance(data, dict):
            raise ConfigurationError(f"{fname}: the top level must be a mapping with keys {list(TOP_KEYS)}")
        lines = getattr(data, "lines", {})
        for key in data:
            if key not in TOP_KEYS:
                raise ConfigurationError(
                    f"{fname}:{lines.get(key, '?')}: unknown top-level key '{key}'{did_you_mean(key, TOP_KEYS)}; "
                    f"valid keys: {', '.join(TOP_KEYS)}")
        includes = data.get("include", [])
        if isinstance(includes, str):
            includes = [includes]
        if not isinstance(includes, list):
            raise ConfigurationError(f"{fname}:{lines.get('include', '?')}: 'include' expects a list of file names")
        load_options([path.parent / inc for inc in includes], opts, (*_stack, path))
        opts.files.append(fname)
        app = data.get("ApplicationMgr", {}) or {}
        if not isinstance(app, dict):
            raise ConfigurationError(f"{fname}:{lines.get('ApplicationMgr', '?')}: 'ApplicationMgr' expects a mapping of properties")
        for key, value in app.items():
            opts.app[key] = value
            opts.app_sources[key] = Where(fname, getattr(app, "lines", {}).get(key))
        algs = data.get("Algorithms", []) or []
        if not isinstance(algs, list):
            raise ConfigurationError(f"{fname}:{lines.get('Algorithms', '?')}: 'Algorithms' expects a list of mappings")
        alg_lines = getattr(algs, "lines", [None] * len(algs))
        for entry, line in zip(algs, alg_lines):
            if not isinstance(entry, dict):
                raise ConfigurationError(f"{fname}:{line}: each Algorithms entry must be a mapping with 'type' and 'name'")
            elines = getattr(entry, "lines", {})
            name = entry.get("name") or entry.get("type")
            if not name:
                raise ConfigurationError(f"{fname}:{line}: Algorithms entry without 'type' or 'name'")
            spec = opts.algorithm(name)
            if spec is None:
                if "type" not in entry:
                    raise ConfigurationError(
                        f"{fname}:{line}: algorithm '{name}' has no 'type' and no earlier definition"
                        f"{did_you_mean(name, [s.name for s in opts.algorithms])}")
                spec = AlgSpec(type=str(entry["type"]), name=str(name), where=Where(fname, line))
                opts.algorithms.append(spec)
            elif "type" in entry and entry["type"] != spec.type:
                raise ConfigurationError(
                    f"{fname}:{elines.get('type', line)}: algorithm '{name}' was defined with type '{spec.type}' at "
                    f"{spec.where}, here with type '{entry['type']}'")
            for key, value in entry.items():
                if key in ALG_RESERVED:
                    continue
                spec.properties[key] = value
                spec.sources[key] = Where(fname, elines.get(key, line))
    return opts


def parse_set(item: str) -> tuple[str, str, str]:
    """``Name.Property=value`` → (Name, Property, value text)."""
    target, sep, value = item.partition("=")
    name, dot, prop = target.strip().rpartition(".")
    if not sep or not dot or not name or not prop:
        raise ConfigurationError(f"--set {item!r}: expected Name.Property=value")
    return name, prop, value.strip()
