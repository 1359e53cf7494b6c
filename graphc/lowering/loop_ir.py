"""Loop IR: the target-neutral form of a kernel, between fusion and codegen.

A :class:`Kernel` is a list of statements over named buffers: nested
:class:`Loop` s with integer extents, :class:`Store` s of scalar expressions
into buffers, and accumulators for reductions. Indices are integer
expressions over loop variables (affine in the common case; ``//`` and ``%``
appear where a reshape changes how an index splits into dims). Nothing here
knows about vector width, threads or blocks: the CPU codegen maps loops onto
vector lanes and threads, the PTX codegen onto blocks and threads.

Semantics (the reference is :mod:`graphc.lowering.evaluate`):
* buffers are contiguous, row-major, of the kernel parameter's dtype/shape,
  addressed by a flat element index;
* scalar ops are the registry's elementwise ops with NumPy semantics
  (``Unary("exp", x)``, ``Binary("add", x, y)``), computed in the operand
  dtype, ``Select`` picks lane-wise, ``Cast`` converts like NumPy ``astype``;
* ``AccUpdate(name, "max"|"min", v)`` propagates NaN like NumPy's max/min;
* an accumulator may be read (``AccRef``) in a later loop nest of the same
  block: arg reductions find the best value in one pass, then its first
  index in a second.

Data-dependent indexing and index tests (layout ops: pad, concat, gather,
one_hot, arg reductions), all target-neutral:

* ``IBin("min"|"max", a, b)``: the smaller/larger of two indices; clamps
  are written with them (:func:`iclamp`);
* ``IndexOf(x)``: the value of an integer scalar expression used as an
  index. Its range is the whole range of ``x``'s dtype, so a codegen's
  static bounds check only accepts an address built from it after an
  explicit clamp: a gather index is clamped into its dim (and a ``Select``
  over ``InRange`` decides what an out-of-range index gives), it never
  reads outside a buffer;
* ``IndexValue(index, dtype)``: an index expression as an integer scalar
  of ``dtype`` (wrapping like ``astype``);
* ``InRange(index, lo, hi)``: the bool ``lo <= index < hi``.

``Select`` evaluates both of its operands (codegens emit branch-free
selects), so *every* load in a kernel must stay inside its buffer whether
or not it is selected: loads that only matter in part of the iteration
space (a pad's border, one piece of a concat) clamp their index.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np


# ---- integer index expressions --------------------------------------------------------
@dataclass(frozen=True)
class IVar:
    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class IConst:
    value: int

    def __str__(self) -> str:
        return str(self.value)


@dataclass(frozen=True)
class IBin:
    op: str                 # "+", "*", "//", "%", "min", "max"
    a: "IExpr"
    b: "IExpr"

    def __str__(self) -> str:
        if self.op in ("min", "max"):
            return f"{self.op}({self.a}, {self.b})"
        return f"({self.a} {self.op} {self.b})"


@dataclass(frozen=True)
class IndexOf:
    """The value of the integer scalar expression ``x`` as an index (any
    value of its dtype: clamp before addressing with it)."""
    x: "Expr"

    def __str__(self) -> str:
        return f"index({self.x})"


IExpr = Union[IVar, IConst, IBin, IndexOf]


def iadd(a: IExpr, b: IExpr) -> IExpr:
    if isinstance(a, IConst) and isinstance(b, IConst):
        return IConst(a.value + b.value)
    if isinstance(a, IConst) and a.value == 0:
        return b
    if isinstance(b, IConst) and b.value == 0:
        return a
    return IBin("+", a, b)


def imul(a: IExpr, c: int) -> IExpr:
    if c == 0:
        return IConst(0)
    if c == 1:
        return a
    if isinstance(a, IConst):
        return IConst(a.value * c)
    return IBin("*", a, IConst(c))


def idiv(a: IExpr, c: int) -> IExpr:
    if c == 1:
        return a
    if isinstance(a, IConst):
        return IConst(a.value // c)
    return IBin("//", a, IConst(c))


def imod(a: IExpr, c: int) -> IExpr:
    if c == 1:
        return IConst(0)
    if isinstance(a, IConst):
        return IConst(a.value % c)
    return IBin("%", a, IConst(c))


def imin(a: IExpr, b: IExpr) -> IExpr:
    if isinstance(a, IConst) and isinstance(b, IConst):
        return IConst(min(a.value, b.value))
    return IBin("min", a, b)


def imax(a: IExpr, b: IExpr) -> IExpr:
    if isinstance(a, IConst) and isinstance(b, IConst):
        return IConst(max(a.value, b.value))
    return IBin("max", a, b)


def iclamp(a: IExpr, lo: int, hi: int) -> IExpr:
    """``a`` clamped into ``[lo, hi]`` (``lo <= hi``)."""
    if lo == hi:
        return IConst(lo)
    return imin(imax(a, IConst(lo)), IConst(hi))


def flat_index(point: Tuple[IExpr, ...], shape: Tuple[int, ...]) -> IExpr:
    """Row-major flat index of a multi-index into ``shape``."""
    index: IExpr = IConst(0)
    stride = 1
    for p, d in zip(reversed(point), reversed(shape)):
        if d != 1:
            index = iadd(imul(p, stride), index)
        stride *= d
    return index


def unravel(flat: IExpr, shape: Tuple[int, ...]) -> Tuple[IExpr, ...]:
    """Multi-index into ``shape`` of a row-major flat index."""
    out = []
    stride = 1
    strides = []
    for d in reversed(shape):
        strides.append(stride)
        stride *= d
    strides.reverse()
    for d, s in zip(shape, strides):
        out.append(IConst(0) if d == 1 else imod(idiv(flat, s), d))
    return tuple(out)


# ---- scalar value expressions -----------------------------------------------------------
@dataclass(frozen=True)
class Const:
    value: Any
    dtype: np.dtype

    def __str__(self) -> str:
        return f"{np.asarray(self.value).item()!r}:{self.dtype.name}"


@dataclass(frozen=True)
class Load:
    buffer: str
    index: IExpr
    dtype: np.dtype

    def __str__(self) -> str:
        return f"{self.buffer}[{self.index}]"


@dataclass(frozen=True)
class Unary:
    op: str
    x: "Expr"
    dtype: np.dtype

    def __str__(self) -> str:
        return f"{self.op}({self.x})"


@dataclass(frozen=True)
class Binary:
    op: str
    x: "Expr"
    y: "Expr"
    dtype: np.dtype

    def __str__(self) -> str:
        return f"{self.op}({self.x}, {self.y})"


@dataclass(frozen=True)
class Select:
    cond: "Expr"
    x: "Expr"
    y: "Expr"
    dtype: np.dtype

    def __str__(self) -> str:
        return f"select({self.cond}, {self.x}, {self.y})"


@dataclass(frozen=True)
class Cast:
    x: "Expr"
    dtype: np.dtype

    def __str__(self) -> str:
        return f"cast<{self.dtype.name}>({self.x})"


@dataclass(frozen=True)
class IndexValue:
    """The index ``index`` as an integer scalar of ``dtype``."""
    index: IExpr
    dtype: np.dtype

    def __str__(self) -> str:
        return f"value<{np.dtype(self.dtype).name}>({self.index})"


@dataclass(frozen=True)
class InRange:
    """The bool ``lo <= index < hi``."""
    index: IExpr
    lo: int
    hi: int
    dtype: np.dtype = np.dtype(np.bool_)

    def __str__(self) -> str:
        return f"({self.lo} <= {self.index} < {self.hi})"


@dataclass(frozen=True)
class AccRef:
    name: str
    dtype: np.dtype

    def __str__(self) -> str:
        return self.name


Expr = Union[Const, Load, Unary, Binary, Select, Cast, IndexValue, InRange, AccRef]


# ---- statements ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Loop:
    var: str
    extent: int
    body: Tuple["Stmt", ...]
    # The iterations are independent (no accumulator crosses them): a
    # codegen may vectorize or split them across threads.
    parallel: bool = True


@dataclass(frozen=True)
class Store:
    buffer: str
    index: IExpr
    value: Expr


@dataclass(frozen=True)
class AccInit:
    name: str
    dtype: np.dtype
    value: Any


@dataclass(frozen=True)
class AccUpdate:
    name: str
    op: str                 # "add", "mul", "max", "min", "and", "or"
    value: Expr


Stmt = Union[Loop, Store, AccInit, AccUpdate]

ACC_OPS = ("add", "mul", "max", "min", "and", "or")


@dataclass(frozen=True)
class Param:
    name: str
    dtype: np.dtype
    shape: Tuple[int, ...]
    role: str               # "input" or "output"

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass
class Kernel:
    """One loop nest with its parameters (inputs first, then outputs, in
    the fused op's input and output order) and constant arrays it reads."""
    name: str
    params: Tuple[Param, ...]
    body: Tuple[Stmt, ...]
    constants: Dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def inputs(self) -> Tuple[Param, ...]:
        return tuple(p for p in self.params if p.role == "input")

    @property
    def outputs(self) -> Tuple[Param, ...]:
        return tuple(p for p in self.params if p.role == "output")

    def text(self) -> str:
        """Readable form for dumps and tests."""
        sig = ", ".join(f"{p.role} {p.name}: {p.dtype.name}{list(p.shape)}" for p in self.params)
        lines = [f"kernel {self.name}({sig}) {{"]
        for name, value in self.constants.items():
            lines.append(f"  const {name}: {value.dtype.name}{list(value.shape)}")
        _stmt_lines(self.body, 1, lines)
        lines.append("}")
        return "\n".join(lines)


def _stmt_lines(stmts: Tuple[Stmt, ...], depth: int, lines: List[str]) -> None:
    pad = "  " * depth
    for s in stmts:
        if isinstance(s, Loop):
            lines.append(f"{pad}for {s.var} in 0..{s.extent}{'' if s.parallel else ' (sequential)'} {{")
            _stmt_lines(s.body, depth + 1, lines)
            lines.append(f"{pad}}}")
        elif isinstance(s, Store):
            lines.append(f"{pad}{s.buffer}[{s.index}] = {s.value}")
        elif isinstance(s, AccInit):
            lines.append(f"{pad}{s.name}: {s.dtype.name} = {np.asarray(s.value).item()!r}")
        elif isinstance(s, AccUpdate):
            lines.append(f"{pad}{s.name} = {s.op}({s.name}, {s.value})")
