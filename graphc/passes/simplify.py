"""Algebraic simplification: local rewrites that give bitwise the same
results (NaN payloads aside) with fewer or cheaper ops.

=====================================================  ==============================================
rewrite                                                floating-point results
=====================================================  ==============================================
``identity(x)``, ``stop_gradient(x)``,                 unchanged (the value is passed through; the
``placeholder_with_default(x)`` (unfed in a            tensor keeps its static shape, reshaped when
program), ``custom_gradient`` outputs → their input    the declared shape was more specific)
``cast(x, x.dtype)`` → ``x``                           unchanged
``cast(cast(x, T), x.dtype)`` → ``x`` when T holds     unchanged (float32→float64, int32→int64,
every value of x.dtype                                 int32→float64, bool→anything)
``x * 1``, ``1 * x``, ``x / 1`` → ``x``                unchanged (also for -0.0, inf, NaN)
``x + (-0.0)``, ``(-0.0) + x``, ``x - 0.0`` → ``x``    unchanged. ``x + 0.0`` (positive zero) is NOT
(integers: any zero)                                   rewritten: ``-0.0 + 0.0`` is ``+0.0``
``x * 0``, ``x - x`` → zeros, integers only            not applied to floats (NaN, inf)
``-(-x)`` → ``x``                                      unchanged
``x + (-y)`` → ``x - y``, ``(-x) + y`` → ``y - x``,    unchanged (IEEE subtraction is addition of
``x - (-y)`` → ``x + y``                               the negation)
transpose by the identity permutation → ``x``;         unchanged
transpose of a transpose → one transpose
reshape/squeeze/expand_dims to the input's shape →     unchanged
``x``; a chain of them → one ``reshape``
``reshape_dynamic``/``broadcast_to_dynamic`` with a    unchanged
constant shape → ``reshape``/``broadcast_to``;
``reshape_like`` of a static shape → ``reshape``
``broadcast_to(x, x.shape)`` → ``x``; broadcast of     unchanged
a broadcast → one ``broadcast_to``
elementwise op on ``broadcast_to(c, S)`` where the     unchanged (the op broadcasts ``c`` itself):
other operands already give shape S → op on ``c``      a broadcast scalar constant becomes a scalar
                                                       operand
reduce max/min/prod/any/all/sum/mean over size-1       unchanged: a float sum or mean becomes
axes → reshape (or the input, with keepdims)           ``reshape(x) + 0.0``, as NumPy's sum starts
                                                       from +0.0 (a lone -0.0 sums to 0.0)
``sum_to_shape_of(g, like)``: ``g`` when the shapes    unchanged (the same NumPy sum over the same
match, else ``reduce_sum`` + ``reshape``               axes)
``broadcast_like(x, like)`` → ``x`` when ``like``      unchanged
adds nothing, else ``broadcast_to``;
``broadcast_reduced(g, like)`` → ``reshape`` +
``broadcast_to``
``where(c, x, x)`` → ``x``; ``where(True, x, y)`` →   unchanged
``x`` (``False``: ``y``); ``where(c, where(c, a, b),
y)`` → ``where(c, a, y)`` (and on the false side)
``tile`` by ones, ``pad`` by zeros, ``concat`` of one  unchanged
tensor → ``x``
=====================================================  ==============================================

Left out on purpose: ``log(exp(x))`` → ``x`` (``exp`` overflows to inf for
x > 88.7 in float32 and underflows to 0 below -103, where the original
gives inf or -inf and the rewrite gives x); ``x * 0`` and ``x - x`` for
floats (NaN and inf give NaN); ``x + 0.0`` for floats (the sign of a zero
sum). With those out the pass is exact, ``changes_numerics=False``.

Every replacement keeps the dtype of the tensor it replaces and its static
shape, or refines it (a ``None`` dim becomes known); a ``reshape`` or
``broadcast_to`` is inserted when the value alone would have another
shape. Ops with control inputs, ops other ops use as control inputs, run
targets and stateful ops are never rewritten, and rules look through
producers only when those have no control inputs. Rewrites repeat until
nothing changes (at most :data:`MAX_ROUNDS` rounds), with constant folding
and CSE re-run after each round on what the rewrites exposed.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import shapes as _shapes
from ..errors import GraphcError
from ..graph import Graph, Operation, Tensor, normalize_output_specs
from ..ops import registry
from ..ops.elementwise import BINARY
from .cse import eliminate_common_subexpressions
from .fold import _bits, describe, fold_constants, make_const, pinned_ops
from .manager import register_pass
from .program import Program, Rewriter

MAX_ROUNDS = 8


class _Builder:
    """Builds replacement ops in the new graph, named and located after the
    op they replace (dumps and errors point at the user's line)."""

    def __init__(self, graph: Graph, op: Operation) -> None:
        self.graph = graph
        self.op = op

    def make(self, op_type: str, inputs: Sequence[Tensor], attrs: Optional[dict] = None) -> Tensor:
        new = self.graph.create_op(op_type, list(inputs), dict(attrs or {}), name=self.op.name, source=self.op.source)
        new.gradient_of = self.op.gradient_of
        return new.outputs[0]

    def const(self, value: np.ndarray) -> Tensor:
        return make_const(self.graph, value, self.op)

    def reshape(self, x: Tensor, shape: Sequence[int]) -> Tensor:
        shape = tuple(shape)
        if x.shape == shape and _shapes.is_fully_defined(shape):
            return x
        return self.make("reshape", [x], {"shape": shape})

    def broadcast_to(self, x: Tensor, shape: Sequence[int]) -> Tensor:
        shape = tuple(shape)
        if x.shape == shape and _shapes.is_fully_defined(shape):
            return x
        return self.make("broadcast_to", [x], {"shape": shape})


Build = Callable[[_Builder], List[Tensor]]
Rule = Callable[[Operation, List[Tensor]], Optional[Build]]
_RULES: Dict[str, List[Tuple[str, Rule]]] = {}


def _rule(name: str, *op_types: str) -> Callable[[Rule], Rule]:
    """Register a rewrite for ops of ``op_types``. The rule looks at the op
    and its (already rewritten) inputs and returns None or a function that
    builds the replacement outputs."""
    def wrap(fn: Rule) -> Rule:
        for t in op_types:
            _RULES.setdefault(t, []).append((name, fn))
        return fn
    return wrap


# ---- facts about tensors ------------------------------------------------------------
def _refines(new: _shapes.Shape, old: _shapes.Shape) -> bool:
    """``new`` says at least what ``old`` says about a shape."""
    if old is None:
        return True
    if new is None or len(new) != len(old):
        return False
    return all(o is None or o == n for n, o in zip(new, old))


def _broadcasts_into(small: _shapes.Shape, big: _shapes.Shape) -> bool:
    """Broadcasting ``small`` against ``big`` provably leaves ``big``'s
    run-time shape unchanged."""
    if small is None or big is None or len(small) > len(big):
        return False
    return all(s == 1 or (s is not None and s == b) for s, b in zip(reversed(small), reversed(big)))


def _producer(t: Tensor, *types: str) -> Optional[Operation]:
    """The op that made ``t`` if it is of one of ``types`` and a rewrite may
    look through it (pure, no control inputs)."""
    op = t.op
    if op.type in types and not op.control_inputs and not op.is_stateful:
        return op
    return None


_VALUE_PRESERVING = ("identity", "stop_gradient", "placeholder_with_default", "reshape", "reshape_like",
                     "reshape_dynamic", "squeeze", "expand_dims", "transpose", "broadcast_to",
                     "broadcast_to_dynamic", "broadcast_like", "broadcast_reduced", "tile")


def uniform_value(t: Tensor) -> Optional[np.ndarray]:
    """The single value every element of ``t`` has, when the graph says so
    (a constant, or a broadcast/reshape of one), as a 0-d array of
    ``t``'s dtype; None otherwise (and for tensors that are statically empty)."""
    for _ in range(16):
        if _shapes.num_elements(t.shape) == 0 or t.op.control_inputs:
            return None
        op = t.op
        if op.type == "const":
            flat = _bits(op.attrs["value"]).reshape(-1)
            if flat.size == 0 or (flat.size > 1 and flat[1] != flat[0]) or not np.all(flat == flat[0]):
                return None
            return np.asarray(op.attrs["value"]).reshape(-1)[0:1].reshape(())
        if op.type == "fill_like":
            return np.full((), op.attrs["value"], dtype=op.attrs["dtype"])
        if op.type not in _VALUE_PRESERVING or op.is_stateful:
            return None
        t = op.inputs[0]
    return None


def _is_one(t: Tensor) -> bool:
    v = uniform_value(t)
    return v is not None and v.dtype.kind in "iuf" and v == 1


def _is_zero(t: Tensor, sign: Optional[bool] = None) -> bool:
    """``t`` is all zeros; for floats with ``sign`` given, zeros of that sign
    bit (True: -0.0)."""
    v = uniform_value(t)
    if v is None or v.dtype.kind not in "iuf" or v != 0:
        return False
    return sign is None or v.dtype.kind != "f" or bool(np.signbit(v)) == sign


# ---- replacements -----------------------------------------------------------------------
def _same(r: Tensor, out: Tensor) -> Optional[Build]:
    """Replace ``out`` by ``r``, which has its values and run-time shape."""
    if r.dtype != out.dtype:
        return None
    if _refines(r.shape, out.shape):
        return lambda b: [r]
    if _shapes.is_fully_defined(out.shape):
        return lambda b: [b.reshape(r, out.shape)]
    return None


def _spread(r: Tensor, out: Tensor, same_shape: bool) -> Optional[Build]:
    """Replace ``out`` by ``r`` broadcast to ``out``'s shape (``same_shape``:
    it is provably that shape already)."""
    if r.dtype != out.dtype:
        return None
    if same_shape:
        return _same(r, out)
    if not _shapes.is_fully_defined(out.shape):
        return None
    from ..ops.shape import broadcast_shape_to
    try:
        broadcast_shape_to(r.shape, out.shape)
    except GraphcError:
        return None
    return lambda b: [b.broadcast_to(r, out.shape)]


def _new_op(op_type: str, inputs: Sequence[Tensor], attrs: dict, out: Tensor) -> Optional[Build]:
    """Replace ``out`` by a new ``op_type`` op (broadcast to ``out``'s shape
    when it comes out smaller)."""
    try:
        specs = normalize_output_specs(registry.get(op_type).infer(*inputs, **attrs))
    except (GraphcError, KeyError, TypeError, ValueError):
        return None
    shape, dtype = specs[0]
    shape = _shapes.as_shape(shape)
    if dtype != out.dtype:
        return None
    if _refines(shape, out.shape):
        return lambda b: [b.make(op_type, inputs, attrs)]
    if not _shapes.is_fully_defined(out.shape):
        return None
    from ..ops.shape import broadcast_shape_to
    try:
        broadcast_shape_to(shape, out.shape)
    except GraphcError:
        return None
    return lambda b: [b.broadcast_to(b.make(op_type, inputs, attrs), out.shape)]


def _zeros(out: Tensor) -> Optional[Build]:
    if not _shapes.is_fully_defined(out.shape):
        return None
    return lambda b: [b.broadcast_to(b.const(np.zeros((), out.dtype)), out.shape)]


# ---- pass-through ops ----------------------------------------------------------------------
@_rule("identity removal", "identity", "stop_gradient", "placeholder_with_default")
def _identity(op: Operation, ins: List[Tensor]) -> Optional[Build]:
    return _same(ins[0], op.outputs[0])


@_rule("custom_gradient removal", "custom_gradient")
def _custom_gradient(op: Operation, ins: List[Tensor]) -> Optional[Build]:
    builds = [_same(r, o) for r, o in zip(ins[op.attrs["num_inputs"]:], op.outputs)]
    if any(b is None for b in builds):
        return None
    return lambda b: [build(b)[0] for build in builds]


# ---- casts ------------------------------------------------------------------------------------
_LOSSLESS = {(np.dtype(np.int32), np.dtype(np.int64)), (np.dtype(np.int32), np.dtype(np.float64)),
             (np.dtype(np.float32), np.dtype(np.float64))}


@_rule("cast to the same dtype", "cast")
def _cast_same(op: Operation, ins: List[Tensor]) -> Optional[Build]:
    return _same(ins[0], op.outputs[0]) if ins[0].dtype == op.outputs[0].dtype else None


@_rule("lossless cast round trip", "cast")
def _cast_round_trip(op: Operation, ins: List[Tensor]) -> Optional[Build]:
    inner = _producer(ins[0], "cast")
    if inner is None:
        return None
    src, mid = inner.inputs[0].dtype, ins[0].dtype
    if src != op.outputs[0].dtype or not (src.kind == "b" or (src, mid) in _LOSSLESS):
        return None
    return _same(inner.inputs[0], op.outputs[0])


# ---- arithmetic identities ----------------------------------------------------------------------
@_rule("x * 1 -> x", "multiply")
def _mul_one(op: Operation, ins: List[Tensor]) -> Optional[Build]:
    for c, x in ((ins[1], ins[0]), (ins[0], ins[1])):
        if _is_one(c):
            return _spread(x, op.outputs[0], _broadcasts_into(c.shape, x.shape))
    return None


@_rule("x / 1 -> x", "divide")
def _div_one(op: Operation, ins: List[Tensor]) -> Optional[Build]:
    x, c = ins
    if _is_one(c):
        return _spread(x, op.outputs[0], _broadcasts_into(c.shape, x.shape))
    return None


@_rule("x + 0 -> x", "add")
def _add_zero(op: Operation, ins: List[Tensor]) -> Optional[Build]:
    for c, x in ((ins[1], ins[0]), (ins[0], ins[1])):
        # only -0.0 is an exact additive identity for floats
        if _is_zero(c, sign=True):
            return _spread(x, op.outputs[0], _broadcasts_into(c.shape, x.shape))
    return None


@_rule("x - 0 -> x", "subtract")
def _sub_zero(op: Operation, ins: List[Tensor]) -> Optional[Build]:
    x, c = ins
    if _is_zero(c, sign=False):
        return _spread(x, op.outputs[0], _broadcasts_into(c.shape, x.shape))
    return None


@_rule("x * 0 -> 0 (integers)", "multiply")
def _mul_zero(op: Operation, ins: List[Tensor]) -> Optional[Build]:
    if op.outputs[0].dtype.kind in "iu" and any(_is_zero(t) for t in ins):
        return _zeros(op.outputs[0])
    return None


@_rule("x - x -> 0 (integers)", "subtract")
def _sub_self(op: Operation, ins: List[Tensor]) -> Optional[Build]:
    if op.outputs[0].dtype.kind in "iu" and ins[0] is ins[1]:
        return _zeros(op.outputs[0])
    return None


@_rule("-(-x) -> x", "negative")
def _neg_neg(op: Operation, ins: List[Tensor]) -> Optional[Build]:
    inner = _producer(ins[0], "negative")
    return None if inner is None else _same(inner.inputs[0], op.outputs[0])


@_rule("x + (-y) -> x - y", "add")
def _add_neg(op: Operation, ins: List[Tensor]) -> Optional[Build]:
    x, y = ins
    ny = _producer(y, "negative")
    if ny is not None:
        return _new_op("subtract", [x, ny.inputs[0]], {}, op.outputs[0])
    nx = _producer(x, "negative")
    if nx is not None:
        return _new_op("subtract", [y, nx.inputs[0]], {}, op.outputs[0])
    return None


@_rule("x - (-y) -> x + y", "subtract")
def _sub_neg(op: Operation, ins: List[Tensor]) -> Optional[Build]:
    ny = _producer(ins[1], "negative")
    return None if ny is None else _new_op("add", [ins[0], ny.inputs[0]], {}, op.outputs[0])


# ---- layout ---------------------------------------------------------------------------------------------
@_rule("identity transpose", "transpose")
def _transpose_identity(op: Operation, ins: List[Tensor]) -> Optional[Build]:
    perm = op.attrs["perm"]
    if perm is None or tuple(perm) != tuple(range(len(perm))):
        return None
    return _same(ins[0], op.outputs[0])


@_rule("transpose of a transpose", "transpose")
def _transpose_twice(op: Operation, ins: List[Tensor]) -> Optional[Build]:
    inner = _producer(ins[0], "transpose")
    outer_perm = op.attrs["perm"]
    if inner is None or outer_perm is None or inner.attrs["perm"] is None:
        return None
    inner_perm = inner.attrs["perm"]
    if len(inner_perm) != len(outer_perm):
        return None
    # output dim i is the inner result's dim outer[i], i.e. the input's dim inner[outer[i]]
    perm = tuple(int(inner_perm[p]) for p in outer_perm)
    if perm == tuple(range(len(perm))):
        return _same(inner.inputs[0], op.outputs[0])
    return _new_op("transpose", [inner.inputs[0]], {"perm": perm}, op.outputs[0])


_VIEWS = ("reshape", "reshape_like", "reshape_dynamic", "squeeze", "expand_dims")


@_rule("reshape to the same shape", *_VIEWS)
def _view_same_shape(op: Operation, ins: List[Tensor]) -> Optional[Build]:
    out = op.outputs[0]
    if _shapes.is_fully_defined(out.shape) and ins[0].shape == out.shape:
        return _same(ins[0], out)
    return None


@_rule("reshape of a reshape", *_VIEWS)
def _view_of_view(op: Operation, ins: List[Tensor]) -> Optional[Build]:
    inner = _producer(ins[0], *_VIEWS)
    out = op.outputs[0]
    if inner is None or not _shapes.is_fully_defined(out.shape):
        return None
    root = inner.inputs[0]
    return lambda b: [b.reshape(root, out.shape)]


def _const_vector(t: Tensor) -> Optional[Tuple[int, ...]]:
    p = _producer(t, "const")
    if p is None or p.attrs["value"].ndim != 1:
        return None
    return tuple(int(v) for v in p.attrs["value"])


@_rule("reshape_dynamic with a constant shape", "reshape_dynamic")
def _reshape_dynamic_const(op: Operation, ins: List[Tensor]) -> Optional[Build]:
    shape = _const_vector(ins[1])
    return None if shape is None else _new_op("reshape", [ins[0]], {"shape": shape}, op.outputs[0])


@_rule("reshape_like of a static shape", "reshape_like")
def _reshape_like_static(op: Operation, ins: List[Tensor]) -> Optional[Build]:
    like = ins[1]
    if not _shapes.is_fully_defined(like.shape):
        return None
    return _new_op("reshape", [ins[0]], {"shape": tuple(like.shape)}, op.outputs[0])


@_rule("broadcast_to_dynamic with a constant shape", "broadcast_to_dynamic")
def _broadcast_dynamic_const(op: Operation, ins: List[Tensor]) -> Optional[Build]:
    shape = _const_vector(ins[1])
    return None if shape is None else _new_op("broadcast_to", [ins[0]], {"shape": shape}, op.outputs[0])


_BROADCASTS = ("broadcast_to", "broadcast_to_dynamic", "broadcast_like")


@_rule("broadcast to the same shape", *_BROADCASTS)
def _broadcast_same_shape(op: Operation, ins: List[Tensor]) -> Optional[Build]:
    out = op.outputs[0]
    if _shapes.is_fully_defined(out.shape) and ins[0].shape == out.shape:
        return _same(ins[0], out)
    return None


@_rule("broadcast of a broadcast", *_BROADCASTS)
def _broadcast_twice(op: Operation, ins: List[Tensor]) -> Optional[Build]:
    inner = _producer(ins[0], *_BROADCASTS)
    out = op.outputs[0]
    if inner is None or not _shapes.is_fully_defined(out.shape):
        return None
    return _new_op("broadcast_to", [inner.inputs[0]], {"shape": tuple(out.shape)}, out)


@_rule("broadcast_like of a static shape", "broadcast_like")
def _broadcast_like(op: Operation, ins: List[Tensor]) -> Optional[Build]:
    x, like = ins
    out = op.outputs[0]
    if _broadcasts_into(like.shape, x.shape):
        return _same(x, out)
    if _shapes.is_fully_defined(out.shape):
        return _new_op("broadcast_to", [x], {"shape": tuple(out.shape)}, out)
    return None


@_rule("broadcast_reduced of a static shape", "broadcast_reduced")
def _broadcast_reduced(op: Operation, ins: List[Tensor]) -> Optional[Build]:
    g, like = ins
    out = op.outputs[0]
    if not _shapes.is_fully_defined(like.shape) or g.dtype != out.dtype:
        return None
    rank = len(like.shape)
    axis = op.attrs["axis"]
    axes = set(range(rank)) if axis is None else {a % rank for a in axis} if rank else set()
    kept = tuple(1 if i in axes else d for i, d in enumerate(like.shape))
    if g.shape is not None and _shapes.num_elements(g.shape) not in (None, _shapes.num_elements(kept)):
        return None
    return lambda b: [b.broadcast_to(b.reshape(g, kept), like.shape)]


@_rule("sum_to_shape_of of a static shape", "sum_to_shape_of")
def _sum_to_shape(op: Operation, ins: List[Tensor]) -> Optional[Build]:
    g, like = ins
    out = op.outputs[0]
    if not (_shapes.is_fully_defined(g.shape) and _shapes.is_fully_defined(like.shape)):
        return None
    if g.shape == like.shape:
        return _same(g, out)
    lead = len(g.shape) - len(like.shape)
    if lead < 0 or any(d != 1 and g.shape[lead + i] != d for i, d in enumerate(like.shape)):
        return None
    # the axes ops.grad_support.sum_to sums over, in the same order
    axes = tuple(range(lead)) + tuple(lead + i for i, d in enumerate(like.shape) if d == 1 and g.shape[lead + i] != 1)

    def build(b: _Builder) -> List[Tensor]:
        return [b.reshape(b.make("reduce_sum", [g], {"axis": axes, "keepdims": False}), like.shape)]
    return build


_SIZE_ONE_REDUCTIONS = ("reduce_max", "reduce_min", "reduce_prod", "reduce_any", "reduce_all", "reduce_sum",
                        "reduce_mean")


@_rule("reduction over size-1 axes", *_SIZE_ONE_REDUCTIONS)
def _reduce_size_one(op: Operation, ins: List[Tensor]) -> Optional[Build]:
    x = ins[0]
    out = op.outputs[0]
    if x.shape is None:
        return None
    rank = len(x.shape)
    axis = op.attrs["axis"]
    axes = tuple(range(rank)) if axis is None else tuple(sorted(a % rank for a in axis)) if rank else ()
    if not axes or any(x.shape[a] != 1 for a in axes):
        return None
    if op.attrs["keepdims"]:
        view = _same(x, out)
    elif _shapes.is_fully_defined(out.shape):
        view = lambda b: [b.reshape(x, out.shape)]  # noqa: E731
    else:
        view = _new_op("squeeze", [x], {"axis": axes}, out)
    if view is None or op.type not in ("reduce_sum", "reduce_mean") or x.dtype.kind != "f":
        return view
    # NumPy's sum starts from +0.0: a lone element comes out as x + 0.0
    # (-0.0 becomes 0.0), and the mean divides that by 1
    return lambda b: [b.make("add", [view(b)[0], b.const(np.zeros((), x.dtype))])]


@_rule("tile by ones", "tile")
def _tile_ones(op: Operation, ins: List[Tensor]) -> Optional[Build]:
    return _same(ins[0], op.outputs[0]) if all(m == 1 for m in op.attrs["multiples"]) else None


@_rule("pad by zeros", "pad")
def _pad_zeros(op: Operation, ins: List[Tensor]) -> Optional[Build]:
    return _same(ins[0], op.outputs[0]) if all(b == 0 and a == 0 for b, a in op.attrs["paddings"]) else None


@_rule("concat of one tensor", "concat")
def _concat_one(op: Operation, ins: List[Tensor]) -> Optional[Build]:
    return _same(ins[0], op.outputs[0]) if len(ins) == 1 else None


# ---- elementwise ops on broadcasts, where -------------------------------------------------------------
_BROADCASTING_ELEMENTWISE = tuple(row[0] for row in BINARY) + ("where",)


@_rule("broadcast operand folded into the elementwise op", *_BROADCASTING_ELEMENTWISE)
def _sink_broadcasts(op: Operation, ins: List[Tensor]) -> Optional[Build]:
    out = op.outputs[0]
    if not _shapes.is_fully_defined(out.shape):
        return None
    new = list(ins)
    for i, t in enumerate(ins):
        inner = _producer(t, *_BROADCASTS)
        if inner is None:
            continue
        trial = new[:i] + [inner.inputs[0]] + new[i + 1:]
        try:
            if _shapes.broadcast(*(x.shape for x in trial)) == out.shape:
                new = trial
        except GraphcError:
            pass
    if all(a is b for a, b in zip(new, ins)):
        return None
    return _new_op(op.type, new, dict(op.attrs), out)


@_rule("where with equal branches", "where")
def _where_same(op: Operation, ins: List[Tensor]) -> Optional[Build]:
    c, x, y = ins
    if x is not y:
        return None
    return _spread(x, op.outputs[0], _broadcasts_into(c.shape, x.shape))


@_rule("where with a constant condition", "where")
def _where_const(op: Operation, ins: List[Tensor]) -> Optional[Build]:
    c, x, y = ins
    v = uniform_value(c)
    if v is None:
        return None
    pick, other = (x, y) if bool(v) else (y, x)
    out = op.outputs[0]
    return _spread(pick, out, _broadcasts_into(c.shape, pick.shape) and _broadcasts_into(other.shape, pick.shape))


@_rule("where chain on one condition", "where")
def _where_chain(op: Operation, ins: List[Tensor]) -> Optional[Build]:
    c, x, y = ins
    inner = _producer(x, "where")
    if inner is not None and inner.inputs[0] is c:
        return _new_op("where", [c, inner.inputs[1], y], {}, op.outputs[0])
    inner = _producer(y, "where")
    if inner is not None and inner.inputs[0] is c:
        return _new_op("where", [c, x, inner.inputs[2]], {}, op.outputs[0])
    return None


# ---- the pass --------------------------------------------------------------------------------------------
def _rewritable(op: Operation, pinned: set) -> bool:
    return (op.type in _RULES and bool(op.outputs) and not op.control_inputs and op not in pinned
            and not op.is_stateful)


def _match(op: Operation, ins: List[Tensor]) -> Optional[Tuple[str, Build]]:
    for name, rule in _RULES[op.type]:
        build = rule(op, ins)
        if build is not None:
            return name, build
    return None


def simplify_round(program: Program) -> Tuple[Program, Counter]:
    """One walk over the program applying the first matching rule to each
    op; returns the same program when no rule matches."""
    pinned = pinned_ops(program)
    if not any(_match(op, list(op.inputs)) for op in program.ops() if _rewritable(op, pinned)):
        return program, Counter()
    rw = Rewriter(program)
    fired: Counter = Counter()
    for op in program.ops():
        if rw.is_copied(op):
            continue
        if _rewritable(op, pinned):
            # inputs are the rewritten ones, so chains collapse in one walk
            found = _match(op, [rw[t] for t in op.inputs])
            if found is not None:
                name, build = found
                for old, new in zip(op.outputs, build(_Builder(rw.graph, op))):
                    rw.replace(old, new)
                fired[name] += 1
                continue
        rw.copy(op)
    return rw.finish(), fired


@register_pass("simplify", "exact algebraic rewrites (x*1, double transpose, reshape chains, adjoint helpers "
                           "of static shape...) to a fixed point")
def simplify(program: Program) -> Program:
    current = program
    fired: Counter = Counter()
    folded: Counter = Counter()
    merged: Counter = Counter()
    for _ in range(MAX_ROUNDS):
        result, counts = simplify_round(current)
        if result is current:
            break
        fired.update(counts)
        result, counts = fold_constants(result)
        folded.update(counts)
        result, counts = eliminate_common_subexpressions(result)
        merged.update(counts)
        current = result
    if current is program:
        return program
    notes = current.analyses.setdefault("_notes", [])
    total = sum(fired.values())
    notes.append(f"simplified {total} op{'s' if total != 1 else ''}: "
                 + ", ".join(f"{name} x{n}" for name, n in fired.most_common()))
    if folded:
        notes.append(describe(folded, "then folded"))
    if merged:
        notes.append(describe(merged, "then merged"))
    return current
