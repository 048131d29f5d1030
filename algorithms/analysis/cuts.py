"""A small, safe cut grammar for particle selections (LoKi-like functors), never ``eval``'d.

Text such as ``"PT > 500*MeV and PIDK > 0"``, ``"isMuon"``, ``"MIPCHI2DV(PRIMARY) > 9"``,
``"VFASPF(VCHI2/VDOF) < 10 and BPVDIRA > 0.999"`` or
``"ADAMASS('B+') < 500 and ADOCAMAX('') < 0.5"`` is tokenized, parsed by recursive descent into
an AST, type-checked (conditions vs numbers) and evaluated vectorised on numpy columns.
Errors name the cut, the token and its column, with did-you-mean suggestions::

    "PT > 500 and PIDX > 0": unknown functor 'PIDX' at column 14 (did you mean 'PIDK'?)

Grammar (case-sensitive functor names; ``and or not`` also spelled ``& | ~``)::

    cut     := or
    or      := and (('or' | '|') and)*
    and     := not (('and' | '&') not)*
    not     := ('not' | '~') not | cmp
    cmp     := sum [('<' | '<=' | '>' | '>=' | '==' | '!=') sum]
    sum     := prod (('+' | '-') prod)*
    prod    := unary (('*' | '/') unary)*
    unary   := '-' unary | atom
    atom    := NUMBER | STRING | '(' or ')' | NAME ['(' [arg (',' arg)*] ')']

Constants: ``ALL`` (true), ``NONE`` (false), units ``MeV GeV TeV keV mm cm um m ns ps fs``
(MeV = mm = ns = 1).  Functions: ``abs(x)``, ``in_range(lo, x, hi)``, ``sqrt(x)``, ``log(x)``,
``min(a, b)``, ``max(a, b)``.

Functor sets (``context``):

* ``particle`` (particle makers, ``DaughtersCuts``): kinematics ``P PT ETA PHI E PX PY PZ M MM``,
  ``ID ABSID Q``; tracks ``TRCHI2DOF TRGHOSTPROB TRTYPE``, PID ``PIDe PIDmu PIDK PIDp``,
  ``ProbNNe/mu/pi/k/p/ghost`` (also ``PROBNNe`` ...), ``isMuon hasRich InMuonAcc`` (also
  ``ISMUON HASRICH INMUONACC``); impact parameters ``MIPDV(PRIMARY)`` [mm],
  ``MIPCHI2DV(PRIMARY)``, ``BPVIP()``, ``BPVIPCHI2()``; composites ``BPVDIRA``, ``BPVVD`` [mm],
  ``BPVVDCHI2`` (= ``BPVFDCHI2``), ``BPVCORRM`` [MeV], ``BPVLTIME()`` [ns],
  ``VFASPF(<vertex expr>)`` with ``VCHI2 VDOF VCHI2PDOF VX VY VZ``, ``ADMASS('name')``,
  ``DMASS('name')``.
* ``mother`` (``MotherCut``): the particle functors plus ``CHILD(f, i)`` (i = 1..n daughters).
* ``combination`` (``CombinationCut``, before the vertex fit): ``AM APT AP AETA``,
  ``ADAMASS('name')``, ``ADOCAMAX('')`` = ``AMAXDOCA('')`` [mm], ``ADOCACHI2MAX('')``,
  ``ACUTDOCA(d, '')``, ``ACUTDOCACHI2(c, '')``, ``AMINCHILD(f)``, ``AMAXCHILD(f)``,
  ``ACHILD(f, i)`` (f a particle functor expression).

Missing values (a track functor on a composite, a composite functor on a track, no PV) are NaN,
so comparisons with them are false.  :meth:`Cut.check_kind` rejects at configuration time a
track-only functor applied to composites and vice versa.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

try:
    from framework import ConfigurationError
except Exception:  # pragma: no cover
    class ConfigurationError(ValueError):
        pass

__all__ = ["CutError", "Cut", "compile_cut", "ParticleView", "CombinationView", "functor_names", "C_MM_PER_NS"]

C_MM_PER_NS = 299.792458


class CutError(ConfigurationError):
    """A cut that cannot be parsed, type-checked or used where it is configured."""


# ---------------------------------------------------------------------------------------------
# tokens
# ---------------------------------------------------------------------------------------------
@dataclass
class Token:
    kind: str  # NUM STR NAME OP LP RP COMMA END
    value: object
    pos: int


_OPS = ("<=", ">=", "==", "!=", "<", ">", "+", "-", "*", "/", "&", "|", "~")
_NUM_RE = re.compile(r"(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z_0-9:]*")


def _error(text: str, pos: int, msg: str, hint: str = "") -> CutError:
    caret = " " * max(pos, 0) + "^"
    return CutError(f'"{text}": {msg} at column {pos + 1}{hint}\n    {text}\n    {caret}')


def _suggest(name: str, candidates) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=5, cutoff=0.5)
    if not close:
        return ""

    def score(c):
        r = difflib.SequenceMatcher(None, name, c).ratio()
        case = sum(a.isupper() == b.isupper() for a, b in zip(name, c))
        return (r, case)

    return f" (did you mean '{max(close, key=score)}'?)"


def tokenize(text: str) -> list[Token]:
    out: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        m = _NUM_RE.match(text, i)
        if m and (c.isdigit() or c == "."):
            out.append(Token("NUM", float(m.group(0)), i))
            i = m.end()
            continue
        if c in "'\"":
            j = text.find(c, i + 1)
            if j < 0:
                raise _error(text, i, "unterminated string")
            out.append(Token("STR", text[i + 1:j], i))
            i = j + 1
            continue
        m = _NAME_RE.match(text, i)
        if m:
            out.append(Token("NAME", m.group(0), i))
            i = m.end()
            continue
        if c == "(":
            out.append(Token("LP", c, i))
            i += 1
            continue
        if c == ")":
            out.append(Token("RP", c, i))
            i += 1
            continue
        if c == ",":
            out.append(Token("COMMA", c, i))
            i += 1
            continue
        if c == "=" and not text.startswith("==", i):
            raise _error(text, i, "'=' is not an operator (use '==' to compare)")
        for op in _OPS:
            if text.startswith(op, i):
                out.append(Token("OP", op, i))
                i += len(op)
                break
        else:
            raise _error(text, i, f"unexpected character {c!r}")
    out.append(Token("END", None, n))
    return out


# ---------------------------------------------------------------------------------------------
# views: the data a cut is evaluated on
# ---------------------------------------------------------------------------------------------
class ParticleView:
    """Particle rows (dict of columns: ``p4`` (N,4), ``m``, ``pid`` and the analysis particle
    columns, see :mod:`algorithms.analysis.particles`); ``children`` (list of ParticleView, one per
    daughter, row-aligned) for MotherCut's ``CHILD``."""

    def __init__(self, columns: dict, children=None):
        self.c = columns
        self.n = len(columns["pid"])
        self.children = children
        self._cache: dict = {}

    def col(self, key):
        try:
            return self.c[key]
        except KeyError:
            raise CutError(f"particle column '{key}' is not available for this cut") from None

    def kin(self, name):
        v = self._cache.get(name)
        if v is not None:
            return v
        p4 = self.col("p4")
        px, py, pz, E = p4[:, 0], p4[:, 1], p4[:, 2], p4[:, 3]
        if name == "PT":
            v = np.hypot(px, py)
        elif name == "P":
            v = np.sqrt(px * px + py * py + pz * pz)
        elif name == "ETA":
            p = self.kin("P")
            with np.errstate(divide="ignore", invalid="ignore"):
                v = 0.5 * np.log((p + pz) / (p - pz))
        elif name == "PHI":
            v = np.arctan2(py, px)
        else:
            v = {"E": E, "PX": px, "PY": py, "PZ": pz}[name]
        self._cache[name] = v
        return v


class CombinationView:
    """Combinations before the vertex fit: ``p4`` (N,4) summed four-momentum, ``children`` (one
    ParticleView per daughter slot), ``doca`` a callable returning ``(doca_max, doca_chi2_max)``."""

    def __init__(self, p4, children, doca: Callable | None = None):
        self.p4 = np.asarray(p4, dtype=np.float64)
        self.n = self.p4.shape[0]
        self.children = children
        self._doca = doca
        self._doca_cache = None

    def doca_max(self):
        if self._doca_cache is None:
            if self._doca is None:
                raise CutError("DOCA functors are not available here")
            self._doca_cache = self._doca()
        return self._doca_cache


# ---------------------------------------------------------------------------------------------
# AST
# ---------------------------------------------------------------------------------------------
class Node:
    type = "num"
    pos = 0

    def eval(self, view):  # pragma: no cover - abstract
        raise NotImplementedError

    def functors(self):
        return set()


@dataclass
class Num(Node):
    value: float
    pos: int = 0
    type: str = "num"

    def eval(self, view):
        return np.float64(self.value)


@dataclass
class BoolConst(Node):
    value: bool
    pos: int = 0
    type: str = "bool"

    def eval(self, view):
        return np.bool_(self.value)


@dataclass
class Unary(Node):
    op: str
    x: Node
    pos: int = 0
    type: str = "num"

    def eval(self, view):
        v = self.x.eval(view)
        return np.logical_not(v) if self.op == "not" else -v

    def functors(self):
        return self.x.functors()


@dataclass
class Binary(Node):
    op: str
    a: Node
    b: Node
    pos: int = 0
    type: str = "num"

    def eval(self, view):
        x, y = self.a.eval(view), self.b.eval(view)
        op = self.op
        with np.errstate(divide="ignore", invalid="ignore"):
            if op == "and":
                return np.logical_and(x, y)
            if op == "or":
                return np.logical_or(x, y)
            if op == "+":
                return x + y
            if op == "-":
                return x - y
            if op == "*":
                return x * y
            if op == "/":
                return np.true_divide(x, y)
            if op == "<":
                return x < y
            if op == "<=":
                return x <= y
            if op == ">":
                return x > y
            if op == ">=":
                return x >= y
            if op == "==":
                return x == y
            if op == "!=":
                return x != y
        raise AssertionError(op)

    def functors(self):
        return self.a.functors() | self.b.functors()


@dataclass
class Call(Node):
    spec: "Functor"
    args: list
    pos: int = 0
    type: str = "num"

    def eval(self, view):
        return self.spec.fn(view, *[a.eval(view) if isinstance(a, Node) else a for a in self.args])

    def functors(self):
        out = {self.spec.name}
        for a in self.args:
            if isinstance(a, Node):
                out |= a.functors()
        return out


@dataclass
class SubView(Node):
    """A particle-functor expression evaluated on each child (AMINCHILD, CHILD, ...)."""

    expr: Node
    pos: int = 0
    type: str = "num"

    def eval(self, view):  # the functor that owns it evaluates it on child views
        return self

    def functors(self):
        return self.expr.functors()


# ---------------------------------------------------------------------------------------------
# functor table
# ---------------------------------------------------------------------------------------------
@dataclass
class Functor:
    name: str
    fn: Callable
    namespace: str = "particle"  # particle | vertex | combination | mother | function
    args: tuple = ()  # arg kinds: num, bool, str, particle (particle name string), PRIMARY, sub, int
    type: str = "num"
    applies: str = "any"  # any | basic | composite (particle namespace)
    optional_call: bool = True  # zero-argument functors may be written with or without ()
    doc: str = ""


_FUNCTORS: dict[str, Functor] = {}


def _reg(name, fn, **kw):
    _FUNCTORS[name] = Functor(name, fn, **kw)


def _col(key, dtype=None):
    def f(view):
        v = view.col(key)
        return v if dtype is None else v.astype(dtype)
    return f


for _k in ("P", "PT", "ETA", "PHI", "E", "PX", "PY", "PZ"):
    _reg(_k, (lambda k: lambda view: view.kin(k))(_k))
_reg("M", _col("m"))
_reg("MM", _col("m"))
_reg("ID", lambda v: v.col("pid").astype(np.float64))
_reg("ABSID", lambda v: np.abs(v.col("pid")).astype(np.float64))
_reg("Q", lambda v: v.col("charge").astype(np.float64))
_reg("TRCHI2DOF", _col("trchi2dof", np.float64), applies="basic")
_reg("TRGHOSTPROB", _col("ghostprob", np.float64), applies="basic")
_reg("TRTYPE", _col("trtype", np.float64), applies="basic")
for _k in ("PIDe", "PIDmu", "PIDK", "PIDp"):
    _reg(_k, _col(_k, np.float64), applies="basic")
for _k in ("e", "mu", "pi", "k", "p", "ghost"):
    _reg(f"ProbNN{_k}", _col(f"ProbNN{_k}", np.float64), applies="basic")
    _reg(f"PROBNN{_k}", _col(f"ProbNN{_k}", np.float64), applies="basic")
for _k, _alias in (("isMuon", "ISMUON"), ("hasRich", "HASRICH"), ("InMuonAcc", "INMUONACC")):
    _reg(_k, _col(_k, bool), type="bool", applies="basic")
    _reg(_alias, _col(_k, bool), type="bool", applies="basic")
_reg("MIPDV", lambda v, _p: v.col("mip"), args=("PRIMARY",))
_reg("MIPCHI2DV", lambda v, _p: v.col("mipchi2"), args=("PRIMARY",))
_reg("BPVIP", _col("ip"))
_reg("BPVIPCHI2", _col("ipchi2"))
_reg("BPVDIRA", _col("dira"), applies="composite")
_reg("BPVVD", _col("fd"), applies="composite")
_reg("BPVVDCHI2", _col("fdchi2"), applies="composite")
_reg("BPVFDCHI2", _col("fdchi2"), applies="composite")
_reg("BPVCORRM", _col("mcorr"), applies="composite")
_reg("BPVLTIME", _col("tau"), applies="composite")
_reg("ADMASS", lambda v, m: np.abs(v.col("m") - m), args=("particle",))
_reg("DMASS", lambda v, m: v.col("m") - m, args=("particle",))
_reg("VFASPF", lambda v, x: x, args=("vertex",), applies="composite")
# vertex functors (inside VFASPF only)
_reg("VCHI2", _col("vchi2"), namespace="vertex")
_reg("VDOF", lambda v: v.col("vndof").astype(np.float64), namespace="vertex")
_reg("VCHI2PDOF", lambda v: v.col("vchi2") / v.col("vndof"), namespace="vertex")
_reg("VX", lambda v: v.col("vtx")[:, 0], namespace="vertex")
_reg("VY", lambda v: v.col("vtx")[:, 1], namespace="vertex")
_reg("VZ", lambda v: v.col("vtx")[:, 2], namespace="vertex")


def _child(view, sub, i):
    ch = view.children
    k = int(i)
    if ch is None or not 1 <= k <= len(ch):
        raise CutError(f"CHILD index {k} out of range 1..{0 if ch is None else len(ch)}")
    return np.asarray(sub.expr.eval(ch[k - 1]), dtype=np.float64)


_reg("CHILD", _child, namespace="mother", args=("sub", "int"))


# combination functors
def _am(view):
    p = view.p4
    m2 = p[:, 3] ** 2 - p[:, 0] ** 2 - p[:, 1] ** 2 - p[:, 2] ** 2
    return np.sign(m2) * np.sqrt(np.abs(m2))


def _children_reduce(view, sub, fn):
    vals = np.stack([np.asarray(sub.expr.eval(c), dtype=np.float64) * np.ones(view.n) for c in view.children], 1)
    return fn(vals, axis=1)


_reg("AM", _am, namespace="combination")
_reg("APT", lambda v: np.hypot(v.p4[:, 0], v.p4[:, 1]), namespace="combination")
_reg("AP", lambda v: np.sqrt(np.sum(v.p4[:, :3] ** 2, 1)), namespace="combination")
_reg("AETA", lambda v: np.arctanh(v.p4[:, 2] / np.sqrt(np.sum(v.p4[:, :3] ** 2, 1))), namespace="combination")
_reg("ADAMASS", lambda v, m: np.abs(_am(v) - m), namespace="combination", args=("particle",))
_reg("ADOCAMAX", lambda v, _s: v.doca_max()[0], namespace="combination", args=("str",))
_reg("AMAXDOCA", lambda v, _s: v.doca_max()[0], namespace="combination", args=("str",))
_reg("ADOCACHI2MAX", lambda v, _s: v.doca_max()[1], namespace="combination", args=("str",))
_reg("ACUTDOCA", lambda v, d, _s: v.doca_max()[0] < d, namespace="combination", args=("num", "str"), type="bool")
_reg("ACUTDOCACHI2", lambda v, d, _s: v.doca_max()[1] < d, namespace="combination", args=("num", "str"),
     type="bool")
_reg("AMINCHILD", lambda v, s: _children_reduce(v, s, np.min), namespace="combination", args=("sub",))
_reg("AMAXCHILD", lambda v, s: _children_reduce(v, s, np.max), namespace="combination", args=("sub",))
_reg("ACHILD", _child, namespace="combination", args=("sub", "int"))

# plain functions (any namespace)
_reg("abs", lambda v, x: np.abs(x), namespace="function", args=("num",))
_reg("sqrt", lambda v, x: np.sqrt(x), namespace="function", args=("num",))
_reg("log", lambda v, x: np.log(x), namespace="function", args=("num",))
_reg("min", lambda v, a, b: np.minimum(a, b), namespace="function", args=("num", "num"))
_reg("max", lambda v, a, b: np.maximum(a, b), namespace="function", args=("num", "num"))
_reg("in_range", lambda v, lo, x, hi: (lo <= x) & (x <= hi), namespace="function", args=("num", "num", "num"),
     type="bool")

_CONSTANTS = {"MeV": 1.0, "GeV": 1e3, "TeV": 1e6, "keV": 1e-3, "mm": 1.0, "cm": 10.0, "um": 1e-3,
              "micrometer": 1e-3, "m": 1e3, "ns": 1.0, "ps": 1e-3, "fs": 1e-6}
_BOOL_CONSTANTS = {"ALL": True, "NONE": False, "True": True, "False": False}
_KEYWORDS = {"and", "or", "not"}

# which namespaces each context may use
_CONTEXT_NS = {
    "particle": ("particle", "function"),
    "mother": ("particle", "mother", "function"),
    "combination": ("combination", "function"),
    "vertex": ("vertex", "function"),
}


def functor_names(context: str = "particle") -> list[str]:
    ns = _CONTEXT_NS[context]
    return sorted(n for n, f in _FUNCTORS.items() if f.namespace in ns)


# ---------------------------------------------------------------------------------------------
# parser
# ---------------------------------------------------------------------------------------------
class _Parser:
    def __init__(self, text: str, context: str, particle_mass: Callable):
        self.text = text
        self.toks = tokenize(text)
        self.i = 0
        self.ctx = [context]
        self.particle_mass = particle_mass

    # helpers
    def peek(self, k=0) -> Token:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def take(self) -> Token:
        t = self.toks[self.i]
        self.i = min(self.i + 1, len(self.toks) - 1)
        return t

    def err(self, tok_or_pos, msg):
        pos = tok_or_pos.pos if isinstance(tok_or_pos, Token) else tok_or_pos
        return _error(self.text, pos, msg)

    def is_op(self, *ops):
        t = self.peek()
        if t.kind == "OP" and t.value in ops:
            return True
        return t.kind == "NAME" and t.value in ops

    def expect_type(self, node: Node, want: str, what: str):
        if node.type != want:
            if want == "bool":
                raise self.err(node.pos, f"{what} must be a condition (a comparison or a boolean functor), "
                                         "got a number")
            raise self.err(node.pos, f"{what} must be a number, got a condition")

    # grammar
    def parse(self) -> Node:
        if self.peek().kind == "END":
            return BoolConst(True, 0)
        node = self.p_or()
        t = self.peek()
        if t.kind != "END":
            if t.kind == "RP":
                raise self.err(t, "unbalanced ')'")
            raise self.err(t, f"unexpected {self._desc(t)}")
        return node

    def _desc(self, t: Token) -> str:
        if t.kind == "END":
            return "end of the cut"
        if t.kind == "STR":
            return f"string {t.value!r}"
        return f"'{t.value}'" if t.kind != "NUM" else f"number {t.value:g}"

    def p_or(self):
        a = self.p_and()
        while self.is_op("or", "|"):
            t = self.take()
            b = self.p_and()
            self.expect_type(a, "bool", f"operand of '{t.value}'")
            self.expect_type(b, "bool", f"operand of '{t.value}'")
            a = Binary("or", a, b, a.pos, "bool")
        return a

    def p_and(self):
        a = self.p_not()
        while self.is_op("and", "&"):
            t = self.take()
            b = self.p_not()
            self.expect_type(a, "bool", f"operand of '{t.value}'")
            self.expect_type(b, "bool", f"operand of '{t.value}'")
            a = Binary("and", a, b, a.pos, "bool")
        return a

    def p_not(self):
        if self.is_op("not", "~"):
            t = self.take()
            x = self.p_not()
            self.expect_type(x, "bool", f"operand of '{t.value}'")
            return Unary("not", x, t.pos, "bool")
        return self.p_cmp()

    def p_cmp(self):
        a = self.p_sum()
        if self.is_op("<", "<=", ">", ">=", "==", "!="):
            t = self.take()
            b = self.p_sum()
            if t.value in ("==", "!=") and a.type == b.type:
                out = Binary(t.value, a, b, a.pos, "bool")
            else:
                self.expect_type(a, "num", f"left side of '{t.value}'")
                self.expect_type(b, "num", f"right side of '{t.value}'")
                out = Binary(t.value, a, b, a.pos, "bool")
            if self.is_op("<", "<=", ">", ">=", "==", "!="):
                raise self.err(self.peek(), "comparisons cannot be chained (write 'a < x and x < b' or "
                                            "in_range(a, x, b))")
            return out
        return a

    def p_sum(self):
        a = self.p_prod()
        while self.is_op("+", "-"):
            t = self.take()
            b = self.p_prod()
            self.expect_type(a, "num", f"operand of '{t.value}'")
            self.expect_type(b, "num", f"operand of '{t.value}'")
            a = Binary(t.value, a, b, a.pos, "num")
        return a

    def p_prod(self):
        a = self.p_unary()
        while self.is_op("*", "/"):
            t = self.take()
            b = self.p_unary()
            self.expect_type(a, "num", f"operand of '{t.value}'")
            self.expect_type(b, "num", f"operand of '{t.value}'")
            a = Binary(t.value, a, b, a.pos, "num")
        return a

    def p_unary(self):
        if self.is_op("-"):
            t = self.take()
            x = self.p_unary()
            self.expect_type(x, "num", "operand of unary '-'")
            return Unary("-", x, t.pos, "num")
        if self.is_op("+"):
            self.take()
            return self.p_unary()
        return self.p_atom()

    def p_atom(self):
        t = self.peek()
        if t.kind == "NUM":
            self.take()
            return Num(t.value, t.pos)
        if t.kind == "LP":
            self.take()
            x = self.p_or()
            if self.peek().kind != "RP":
                raise self.err(self.peek(), f"expected ')' closing the '(' at column {t.pos + 1}, got "
                                            f"{self._desc(self.peek())}")
            self.take()
            x.pos = t.pos
            return x
        if t.kind == "STR":
            raise self.err(t, f"a string ({t.value!r}) is only allowed as a functor argument")
        if t.kind == "NAME":
            return self.p_name()
        raise self.err(t, f"expected a number, a functor or '(', got {self._desc(t)}")

    def p_name(self):
        t = self.take()
        name = t.value
        if name in _KEYWORDS:
            raise self.err(t, f"'{name}' needs an operand before it")
        if name in _CONSTANTS:
            return Num(_CONSTANTS[name], t.pos)
        if name in _BOOL_CONSTANTS:
            return BoolConst(_BOOL_CONSTANTS[name], t.pos)
        spec = _FUNCTORS.get(name)
        allowed = _CONTEXT_NS[self.ctx[-1]]
        if spec is None:
            cands = [n for n, f in _FUNCTORS.items() if f.namespace in allowed] + list(_CONSTANTS)
            raise _error(self.text, t.pos, f"unknown functor '{name}'", _suggest(name, cands))
        if spec.namespace not in allowed:
            where = {"vertex": "inside VFASPF(...)", "combination": "in a CombinationCut",
                     "mother": "in a MotherCut", "particle": "on particles (not in a CombinationCut: "
                                                             "use AMINCHILD/AMAXCHILD/ACHILD)"}[spec.namespace]
            raise self.err(t, f"functor '{name}' can only be used {where}")
        args = []
        if self.peek().kind == "LP":
            lp = self.take()
            if self.peek().kind == "RP":
                self.take()
            else:
                while True:
                    k = len(args)
                    if k >= len(spec.args):
                        raise self.err(self.peek(), f"'{name}' takes {len(spec.args)} argument(s)")
                    args.append(self.p_arg(spec, spec.args[k], name))
                    if self.peek().kind == "COMMA":
                        self.take()
                        continue
                    if self.peek().kind != "RP":
                        raise self.err(self.peek(), f"expected ',' or ')' in the arguments of '{name}' "
                                                    f"(opened at column {lp.pos + 1})")
                    self.take()
                    break
            if len(args) != len(spec.args):
                raise self.err(t, f"'{name}' takes {len(spec.args)} argument(s) "
                                  f"({', '.join(spec.args) or 'none'}), got {len(args)}")
        elif spec.args:
            raise self.err(t, f"'{name}' needs arguments: {name}({', '.join(spec.args)})")
        return Call(spec, args, t.pos, spec.type)

    def p_arg(self, spec, kind, name):
        t = self.peek()
        if kind == "PRIMARY":
            if t.kind == "NAME" and t.value == "PRIMARY":
                self.take()
                return "PRIMARY"
            raise self.err(t, f"'{name}' expects PRIMARY, e.g. {name}(PRIMARY)")
        if kind == "str":
            if t.kind == "STR":
                self.take()
                return t.value
            raise self.err(t, f"'{name}' expects a quoted string, e.g. {name}('')")
        if kind == "particle":
            if t.kind != "STR":
                raise self.err(t, f"'{name}' expects a quoted particle name, e.g. {name}('J/psi(1S)')")
            self.take()
            try:
                return float(self.particle_mass(t.value))
            except ConfigurationError as exc:
                raise self.err(t, f"{name}: {exc}") from None
        if kind == "int":
            if t.kind == "NUM" and float(t.value).is_integer():
                self.take()
                return int(t.value)
            raise self.err(t, f"'{name}' expects an integer index (1 = first daughter)")
        if kind in ("sub", "vertex"):
            self.ctx.append("particle" if kind == "sub" else "vertex")
            try:
                x = self.p_or()
            finally:
                self.ctx.pop()
            self.expect_type(x, "num", f"argument of '{name}'")
            return SubView(x, t.pos) if kind == "sub" else x
        x = self.p_or()
        self.expect_type(x, kind, f"argument of '{name}'")
        return x


def _default_mass(name: str) -> float:
    from .kinematics import pdg_mass, resolve_pid

    return pdg_mass(resolve_pid(name))


@dataclass
class Cut:
    """A compiled cut: ``cut(view) -> bool array``; ``functors`` used; ``text``; ``context``."""

    text: str
    context: str
    ast: Node
    functors: set = field(default_factory=set)

    def __call__(self, view) -> np.ndarray:
        v = self.ast.eval(view)
        out = np.asarray(v, dtype=bool)
        if out.ndim == 0:
            out = np.full(view.n, bool(out))
        return out

    def check_kind(self, basic: bool, what: str = ""):
        """Raise CutError if the cut uses a composite-only functor on basic particles (or a
        track-only functor on composites)."""
        for name in sorted(self.functors):
            f = _FUNCTORS[name]
            if f.applies == "composite" and basic:
                raise CutError(f'"{self.text}": functor {name} applies to composite particles only, '
                               f"but {what or 'these particles'} are basic (tracks)")
            if f.applies == "basic" and not basic:
                raise CutError(f'"{self.text}": functor {name} applies to tracks only, but '
                               f"{what or 'these particles'} are composites")

    @property
    def is_trivial(self) -> bool:
        return isinstance(self.ast, BoolConst) and self.ast.value


def compile_cut(text: str, context: str = "particle", particle_mass: Callable | None = None) -> Cut:
    """Parse and type-check ``text`` for ``context`` (``particle``, ``mother`` or
    ``combination``); raises :class:`CutError` pointing at the offending token."""
    if context not in ("particle", "mother", "combination"):
        raise ValueError(f"unknown cut context {context!r}")
    if not isinstance(text, str):
        raise CutError(f"a cut must be a string, got {type(text).__name__} {text!r}")
    p = _Parser(text, context, particle_mass or _default_mass)
    ast = p.parse()
    if ast.type != "bool":
        raise _error(text, 0, "the cut is a number, not a condition (compare it, e.g. 'PT > 500')")
    return Cut(text, context, ast, ast.functors())
