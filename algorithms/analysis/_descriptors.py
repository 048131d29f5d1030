"""The single place where the analysis branch imports the decay-descriptor parser.

The parser is a generic utility shared by every branch (``algorithms.common.descriptors``).

Besides re-exporting :func:`parse_descriptor`, :class:`DecayNode`, :class:`DecayDescriptor` and
the particle table, :func:`parse` accepts the DaVinci spellings the generators' parser does not:
``]CC`` (upper case) and a mark on the whole decay written ``^([B+ -> ...]CC)`` or ``^(B+ -> ...)``.
"""
from __future__ import annotations

import re

from algorithms.common.descriptors import DecayDescriptor, DecayNode, canonical_form, parse_descriptor  # noqa: F401
from algorithms.common.particle_table import ParticleTable, default_table  # noqa: F401

__all__ = ["DecayDescriptor", "DecayNode", "canonical_form", "parse_descriptor", "ParticleTable", "default_table", "parse",
           "preorder", "normalise"]


def normalise(text: str) -> str:
    """DaVinci descriptor spellings -> the generators' grammar."""
    t = text.strip()
    t = re.sub(r"\]\s*CC\b", "]cc", t)
    # ^([ ... ]cc)  or  ^( ... )  around the whole decay: mark the head
    m = re.fullmatch(r"\^\s*\(\s*(\[.*\]cc|\[.*\]|.*)\s*\)", t, flags=re.S)
    if m:
        inner = m.group(1).strip()
        if inner.startswith("["):
            t = "[^" + inner[1:].lstrip()
        else:
            t = "^" + inner
    return t


def parse(text: str) -> DecayDescriptor:
    """Parse an LHCb decay descriptor (DaVinci spellings accepted); ConfigurationError on errors."""
    return parse_descriptor(normalise(text))


def preorder(node: DecayNode):
    """Nodes of a tree head-first, depth-first in descriptor order (the analysis node order)."""
    out = [node]
    for d in node.daughters:
        out.extend(preorder(d))
    return out
