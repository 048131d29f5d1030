"""LHCb-style decay descriptors parsed into a tree of :class:`DecayNode`.

Grammar (whitespace separates tokens)::

    descriptor := '[' decay ']cc' | decay
    decay      := particle arrow item+
    item       := ['^'] particle | ['^'] '(' decay ')'
    arrow      := '->' | '-->' | '=>' | '==>'

Examples: ``[B+ -> (J/psi(1S) -> mu+ mu-) K+]cc``,
``[Lambda_b0 -> (Lambda_c+ -> p+ K- pi+) mu- anti-nu_mu]cc``,
``[B0 -> ^(K*(892)0 -> ^K+ ^pi-) ^gamma]cc``.

Parentheses that belong to a particle name (``J/psi(1S)``, ``K*(892)0``) are recognised because
they follow a name character directly; a ``(`` at the start of a token opens a sub-decay.
A ``^`` marks the particle (or the head of the sub-decay) that follows it; marks are kept in the
tree for the analysis (``DecayTreeTuple``-like branches).  ``[...]cc`` means "this decay or its
charge conjugate"; only the outermost brackets may carry ``cc``.

Names resolve to PDG ids through :class:`~algorithms.common.particle_table.ParticleTable`
(PDG, EvtGen or LHCb-style names).  Unknown names raise ConfigurationError with did-you-mean.
Parsing also checks electric-charge conservation at every vertex.  Kinematic checks (daughter
masses vs parent mass) are done by :func:`mass_ranges`, which the generators call at
initialize.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .particle_table import ConfigurationError, ParticleTable, default_table

__all__ = [
    "canonical_form",
    "DecayNode",
    "DecayDescriptor",
    "parse_descriptor",
    "FlatTree",
    "flatten",
    "mass_ranges",
]

_ARROWS = ("->", "-->", "=>", "==>")
MIN_RELATIVE_WIDTH = 1e-6  # narrower particles are generated at their nominal mass


@dataclass(frozen=True)
class DecayNode:
    """One particle of a decay descriptor: ``pid``, ``name`` (as written), ``daughters``
    (tuple of DecayNode, empty for a particle that is not decayed) and ``marked`` (``^``)."""

    pid: int
    name: str
    daughters: tuple = ()
    marked: bool = False

    @property
    def is_decayed(self) -> bool:
        return len(self.daughters) > 0

    def conjugate(self, table: ParticleTable | None = None) -> "DecayNode":
        """Charge-conjugate tree (self-conjugate particles keep their pid); names are rewritten
        with the table's EvtGen-style names for the conjugated ids."""
        table = table or default_table()
        pid = table.antiparticle(self.pid)
        name = self.name if pid == self.pid else table.evtgen_name(pid)
        return DecayNode(pid, name, tuple(d.conjugate(table) for d in self.daughters), self.marked)

    def nodes(self):
        """Nodes in breadth-first order (head first): the row order the generators use."""
        out = [self]
        i = 0
        while i < len(out):
            out.extend(out[i].daughters)
            i += 1
        return out

    def marked_nodes(self):
        return [n for n in self.nodes() if n.marked]

    def descriptor(self) -> str:
        """Descriptor text of this (sub)tree."""
        head = ("^" if self.marked else "") + self.name
        if not self.daughters:
            return head
        parts = []
        for d in self.daughters:
            if d.daughters:
                inner = DecayNode(d.pid, d.name, d.daughters, False).descriptor()
                parts.append(("^" if d.marked else "") + "(" + inner + ")")
            else:
                parts.append(d.descriptor())
        return f"{head} -> {' '.join(parts)}"

    def __str__(self) -> str:
        return self.descriptor()


@dataclass(frozen=True)
class DecayDescriptor:
    """A parsed descriptor: the ``head`` tree, the ``cc`` flag and the original ``text``."""

    head: DecayNode
    cc: bool
    text: str = field(default="", compare=False)

    def alternatives(self, table: ParticleTable | None = None) -> list[DecayNode]:
        """[head] or [head, conjugate] if ``cc`` and the conjugate differs."""
        if not self.cc:
            return [self.head]
        conj = self.head.conjugate(table)
        if canonical_form(conj) == canonical_form(self.head):
            return [self.head]
        return [self.head, conj]

    def __str__(self) -> str:
        body = self.head.descriptor()
        return f"[{body}]cc" if self.cc else body


def canonical_form(node: DecayNode):
    """Order-independent form of a tree (a decay and its conjugate with the daughters listed
    in another order are the same decay)."""
    return (node.pid, tuple(sorted(canonical_form(d) for d in node.daughters)))


# ---------------------------------------------------------------------- tokenizer
def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        if text.startswith("]cc", i):
            tokens.append("]cc")
            i += 3
            continue
        if c in "[]()^":
            tokens.append(c)
            i += 1
            continue
        # a name (or an arrow): parentheses inside it are part of the name
        depth = 0
        j = i
        while j < n:
            cj = text[j]
            if cj.isspace():
                break
            if cj == "(":
                depth += 1
            elif cj == ")":
                if depth == 0:
                    break
                depth -= 1
            elif cj in "[]^" and depth == 0:
                break
            j += 1
        tokens.append(text[i:j])
        i = j
    return tokens


class _Parser:
    def __init__(self, text: str, table: ParticleTable):
        self.text = text
        self.table = table
        self.tokens = _tokenize(text)
        self.pos = 0

    def error(self, msg: str) -> ConfigurationError:
        return ConfigurationError(f"bad decay descriptor {self.text!r}: {msg}")

    def peek(self):
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self):
        tok = self.peek()
        if tok is None:
            raise self.error("unexpected end of descriptor")
        self.pos += 1
        return tok

    def particle(self, tok: str, marked: bool) -> DecayNode:
        if tok in "[]()^" or tok in _ARROWS or tok == "]cc":
            raise self.error(f"expected a particle name, got {tok!r}")
        try:
            pid = self.table.pid(tok)
        except ConfigurationError as exc:
            raise self.error(str(exc)) from None
        return DecayNode(pid, tok, (), marked)

    def decay(self, marked_head: bool = False) -> DecayNode:
        head = self.particle(self.take(), marked_head)
        arrow = self.take()
        if arrow not in _ARROWS:
            raise self.error(f"expected '->' after {head.name!r}, got {arrow!r}")
        daughters = []
        while True:
            tok = self.peek()
            if tok is None or tok in (")", "]", "]cc"):
                break
            marked = False
            if tok == "^":
                self.take()
                marked = True
                tok = self.peek()
                if tok is None:
                    raise self.error("'^' at the end of the descriptor")
            if tok == "(":
                self.take()
                daughters.append(self.decay(marked))
                if self.peek() != ")":
                    raise self.error("missing ')' closing a sub-decay")
                self.take()
            elif tok == "[":
                raise self.error("only the outermost brackets may carry 'cc'")
            else:
                daughters.append(self.particle(self.take(), marked))
        if not daughters:
            raise self.error(f"{head.name!r} has no daughters")
        return DecayNode(head.pid, head.name, tuple(daughters), marked_head)

    def parse(self) -> DecayDescriptor:
        if not self.tokens:
            raise self.error("empty descriptor")
        cc = False
        marked = False
        if self.peek() == "[":
            self.take()
            if self.peek() == "^":
                self.take()
                marked = True
            head = self.decay(marked)
            close = self.take()
            if close == "]cc":
                cc = True
            elif close != "]":
                raise self.error(f"expected ']cc' or ']', got {close!r}")
        else:
            if self.peek() == "^":
                self.take()
                marked = True
            head = self.decay(marked)
        if self.peek() is not None:
            raise self.error(f"unexpected {self.peek()!r} after the decay")
        self.check_charge(head)
        return DecayDescriptor(head, cc, self.text)

    def check_charge(self, node: DecayNode):
        if not node.daughters:
            return
        q = self.table.charge([node.pid])[0]
        qd = self.table.charge([d.pid for d in node.daughters]).sum()
        if np.isfinite(q) and np.isfinite(qd) and abs(q - qd) > 1e-6:
            raise self.error(
                f"charge is not conserved in {node.descriptor()!r}: {q:+g} -> {qd:+g}"
            )
        for d in node.daughters:
            self.check_charge(d)


def parse_descriptor(text: str, table: ParticleTable | None = None) -> DecayDescriptor:
    """Parse an LHCb decay descriptor; raises ConfigurationError (with did-you-mean for unknown
    particle names)."""
    return _Parser(text, table or default_table()).parse()


# ---------------------------------------------------------------------- flat arrays
@dataclass
class FlatTree:
    """Breadth-first arrays of one decay tree, the form the numba kernels use.

    ``parent[i]`` (-1 for the head), ``first_daughter[i]``/``n_daughters[i]`` (daughters are
    contiguous in breadth-first order), ``pid``, ``charge``, nominal ``mass``, ``width``,
    ``ctau`` [mm] (0 when unknown; only used for decayed nodes), ``width`` is the PDG width if it
    exceeds ``MIN_RELATIVE_WIDTH`` * mass and 0 otherwise, ``mlo``/``mhi`` the mass range
    each node is generated in (a Breit-Wigner truncated to it, or a fixed mass when
    ``mlo == mhi``), ``marked``.
    """

    pid: np.ndarray
    parent: np.ndarray
    first_daughter: np.ndarray
    n_daughters: np.ndarray
    charge: np.ndarray
    mass: np.ndarray
    width: np.ndarray
    ctau: np.ndarray
    mlo: np.ndarray
    mhi: np.ndarray
    marked: np.ndarray
    names: list

    @property
    def n_nodes(self) -> int:
        return len(self.pid)


def flatten(head: DecayNode, table: ParticleTable | None = None, bw_cutoff: float = 5.0) -> FlatTree:
    """Flatten a tree into :class:`FlatTree` arrays, checking it can be generated.

    Raises ConfigurationError if a mass is unknown, a decayed particle is stable in the PDG
    table (infinite lifetime), or the decay is kinematically forbidden (see
    :func:`mass_ranges`).
    """
    table = table or default_table()
    nodes = head.nodes()
    index = {id(n): i for i, n in enumerate(nodes)}
    n = len(nodes)
    parent = np.full(n, -1, dtype=np.int32)
    first = np.full(n, -1, dtype=np.int32)
    ndau = np.zeros(n, dtype=np.int32)
    for i, node in enumerate(nodes):
        if node.daughters:
            first[i] = index[id(node.daughters[0])]
            ndau[i] = len(node.daughters)
            for d in node.daughters:
                parent[index[id(d)]] = i
    pid = np.array([x.pid for x in nodes], dtype=np.int32)
    mass = table.mass(pid)
    width = table.width(pid)
    ctau = table.ctau(pid)
    charge = table.charge(pid)
    for i, node in enumerate(nodes):
        if not np.isfinite(mass[i]):
            raise ConfigurationError(f"no PDG mass for {node.name!r} (pid {node.pid}) in `particle`")
        if node.daughters and np.isinf(ctau[i]):
            raise ConfigurationError(
                f"{node.name!r} is stable in the PDG table and cannot be decayed in {head.descriptor()!r}"
            )
    # Breit-Wigner only for widths above 1e-6 of the mass (long-lived particles such as B, D,
    # pi, mu have Gamma/m < 1e-12 and keep their nominal mass exactly)
    width = np.where(np.isfinite(width) & (width > MIN_RELATIVE_WIDTH * mass), width, 0.0)
    ctau = np.where(np.isfinite(ctau), ctau, 0.0)  # unknown lifetime -> decays promptly
    charge = np.where(np.isfinite(charge), charge, 0.0)
    tree = FlatTree(
        pid=pid, parent=parent, first_daughter=first, n_daughters=ndau, charge=charge,
        mass=mass, width=width, ctau=ctau, mlo=mass.copy(), mhi=mass.copy(),
        marked=np.array([x.marked for x in nodes], dtype=bool), names=[x.name for x in nodes],
    )
    mass_ranges(tree, bw_cutoff, head.descriptor())
    return tree


def mass_ranges(tree: FlatTree, bw_cutoff: float = 5.0, text: str = "") -> FlatTree:
    """Fill ``tree.mlo``/``tree.mhi``: each node's mass is generated in
    [m0 - k*Gamma, m0 + k*Gamma] (k = ``bw_cutoff``), raised to the sum of its daughters'
    minimum masses and lowered so that it fits in its parent's maximum mass together with its
    siblings' minimum masses (the Breit-Wigner is truncated so that every decay stays allowed).

    Raises ConfigurationError if the sum of the daughters' minimum masses exceeds the parent's
    maximum mass (kinematically forbidden decay).
    """
    n = tree.n_nodes
    lo = tree.mass - bw_cutoff * tree.width
    hi = tree.mass + bw_cutoff * tree.width
    lo = np.maximum(lo, 0.0)
    # bottom-up: minimum masses (breadth-first order => children have larger indices)
    for i in range(n - 1, -1, -1):
        if tree.n_daughters[i] > 0:
            f, k = tree.first_daughter[i], tree.n_daughters[i]
            thr = lo[f:f + k].sum()
            if thr >= hi[i]:
                raise ConfigurationError(
                    f"kinematically forbidden decay in {text!r}: {tree.names[i]} "
                    f"(maximum mass {hi[i]:.3f} MeV) -> daughters with minimum masses summing to "
                    f"{thr:.3f} MeV"
                )
            # keep a tiny margin above threshold so momenta stay well defined
            lo[i] = max(lo[i], thr * (1 + 1e-9) + 1e-6)
    # top-down: cap each daughter by its parent's maximum mass
    for i in range(n):
        if tree.n_daughters[i] > 0:
            f, k = tree.first_daughter[i], tree.n_daughters[i]
            total_lo = lo[f:f + k].sum()
            for j in range(f, f + k):
                cap = hi[i] - (total_lo - lo[j])
                if cap < hi[j]:
                    hi[j] = cap * (1 - 1e-12)
                if hi[j] <= lo[j] and tree.width[j] > 0:
                    raise ConfigurationError(
                        f"kinematically forbidden decay in {text!r}: no mass range left for "
                        f"{tree.names[j]}"
                    )
    # fixed-mass (width 0) nodes keep exactly their nominal mass
    fixed = tree.width <= 0
    lo[fixed] = tree.mass[fixed]
    hi[fixed] = tree.mass[fixed]
    # (a fixed-mass decayed node above threshold was checked bottom-up)
    tree.mlo, tree.mhi = lo, hi
    if not np.all(np.isfinite(lo) & np.isfinite(hi)):
        raise ConfigurationError(f"non-finite mass range in {text!r}")
    return tree
