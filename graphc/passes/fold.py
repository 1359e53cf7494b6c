"""Constant folding.

An op whose inputs are all known while compiling is evaluated once with its
own NumPy reference implementation (the code the interpreter runs) and
replaced by a ``const``, so the folded value is bitwise the value the
unoptimized run computes. Known values are constants, results folded
earlier in the same walk, and, for the inputs that only contribute their
shape (the ``like`` of ``sum_to_shape_of``, ``broadcast_like``,
``reduction_count``, the input of ``shape_of``...), any tensor whose static
shape is fully defined. That folds the shape queries of a specialized
program (``shape_of``, ``size``, ``rank``, ``reduction_count``,
``zeros_like``/``ones_like``) and then whatever computes shapes from them,
so ``reshape_dynamic``/``broadcast_to_dynamic`` get constant shapes that
the simplify pass turns into static ``reshape``/``broadcast_to``.

What is never folded:

* stateful ops (variables, assigns, random draws), ops that read the run
  context, control flow and fused kernels;
* ops with control inputs (their ordering is kept), and ops other ops use as
  control inputs or that are run targets;
* results larger than :data:`MAX_FOLD_ELEMENTS` elements, and results with
  an unknown static shape;
* ops whose evaluation fails (a bad index, an integer division by zero):
  the error is left to the run, which reports it with the op's name.

A folded value that repeats along some axes is materialized compactly: the
smallest array it is a broadcast of becomes the constant, followed by one
``broadcast_to``. A broadcast of a scalar therefore stays a broadcast, never
a big constant. Pointwise ops (elementwise, ``where``, ``cast``) commute with
broadcasting, so on broadcast constants they are evaluated on the cores
whatever the broadcast size: ``gc.zeros([4096, 4096]) + 1.0`` becomes a
broadcast of the scalar ``1.0``. Constants of the input graph with at least
:data:`COMPACT_CONST_ELEMENTS` elements get the compact form too.
"""
from __future__ import annotations

from collections import Counter
from typing import Dict, List, NamedTuple, Optional, Sequence, Set, Tuple, Union

import numpy as np

from .. import shapes as _shapes
from ..graph import Graph, Operation, Tensor
from ..ops.elementwise import BINARY, UNARY
from ..ops.registry import CONTROL_FLOW, FUSED, RANDOM, SOURCE, STATE
from .manager import register_pass
from .program import Program, Rewriter

# Largest folded result (total elements over the op's outputs).
MAX_FOLD_ELEMENTS = 1 << 16
# Input-graph constants at least this big are rewritten as a broadcast of
# their repeating core when they have one.
COMPACT_CONST_ELEMENTS = 16
# A broadcast constant is expanded for evaluating a non-pointwise op on it
# only up to this many elements, bounding compile time and memory.
MAX_EXPANDED_ELEMENTS = 1 << 20

_NEVER = (SOURCE, STATE, RANDOM, CONTROL_FLOW, FUSED)

# Inputs that contribute only their run-time shape, by op type.
_SHAPE_ONLY_INPUTS: Dict[str, Tuple[int, ...]] = {
    "shape_of": (0,), "reduction_count": (0,), "fill_like": (0,),
    "sum_to_shape_of": (1,), "broadcast_like": (1,), "broadcast_reduced": (1,), "reshape_like": (1,),
    "strided_slice_grad": (1,), "gather_grad": (2,), "gather_nd_grad": (2,),
}

# Ops whose small integer results ops.shape.known_value can work out from
# partly known shapes (e.g. dim 1 of shape_of(x) when x is (None, 3)).
_PARTIAL_SHAPE_OPS = ("shape_of", "strided_slice", "stack", "concat", "cast")


def shape_only_inputs(op: Operation) -> Tuple[int, ...]:
    """Positions of the inputs of ``op`` that only contribute their shape."""
    if op.type == "split_like":
        return tuple(range(1, len(op.inputs)))
    return _SHAPE_ONLY_INPUTS.get(op.type, ())


def pinned_ops(program: Program) -> Set[Operation]:
    """Ops a rewrite must keep as they are: run targets and the control
    inputs of other ops (dropping them would drop those edges)."""
    pinned = set(program.targets)
    for op in program.ops():
        pinned.update(op.control_inputs)
    return pinned


def make_const(graph: Graph, value: np.ndarray, like: Operation) -> Tensor:
    """A read-only, C-contiguous ``const`` in ``graph`` named and located
    after ``like`` (like every constant ``gc.constant`` makes: backends may
    copy the bytes as they are)."""
    arr = np.array(value, copy=True, order="C")
    arr.setflags(write=False)
    op = graph.create_op("const", [], {"value": arr}, name=like.name, source=like.source)
    op.gradient_of = like.gradient_of
    return op.outputs[0]


def _bits(arr: np.ndarray) -> np.ndarray:
    """``arr`` viewed as unsigned integers: comparisons are bitwise (-0.0 and
    0.0 differ, a NaN equals itself)."""
    arr = np.ascontiguousarray(arr)
    return arr.view(f"u{arr.itemsize}") if arr.ndim else arr.reshape(1).view(f"u{arr.itemsize}").reshape(())


def compact(arr: np.ndarray) -> np.ndarray:
    """The smallest array whose broadcast to ``arr.shape`` is bitwise
    ``arr``: each axis along which ``arr`` repeats is cut to size 1, then
    leading size-1 axes are dropped (a uniform array gives a scalar)."""
    arr = np.asarray(arr)
    if arr.size == 0:
        return arr
    core, bits = arr, _bits(arr)
    for axis in range(arr.ndim):
        if bits.shape[axis] > 1:
            first = np.take(bits, [0], axis=axis)
            # the second slice settles most non-repeating axes cheaply
            if np.array_equal(first, np.take(bits, [1], axis=axis)) \
                    and np.array_equal(bits, np.broadcast_to(first, bits.shape)):
                bits, core = first, np.take(core, [0], axis=axis)
    lead = 0
    while lead < core.ndim and core.shape[lead] == 1:
        lead += 1
    return core.reshape(core.shape[lead:])


class Splat(NamedTuple):
    """A value known as ``core`` broadcast to ``shape`` (never expanded)."""
    core: np.ndarray
    shape: Tuple[int, ...]


def materialize(graph: Graph, value: Union[np.ndarray, Splat], like: Operation) -> Tensor:
    """``value`` as graph ops: one constant, or a constant core and a
    ``broadcast_to`` when the value repeats."""
    if isinstance(value, Splat):
        core, shape = value.core, tuple(value.shape)
    else:
        core = compact(value) if value.size > 1 else value
        shape = tuple(value.shape)
        if core.size == value.size:
            return make_const(graph, value, like)
    c = make_const(graph, core, like)
    if c.shape == shape:
        return c
    op = graph.create_op("broadcast_to", [c], {"shape": shape}, name=like.name, source=like.source)
    op.gradient_of = like.gradient_of
    return op.outputs[0]


def _core(value: Union[np.ndarray, Splat]) -> np.ndarray:
    return value.core if isinstance(value, Splat) else compact(value) if value.size > 1 else value


def _already_compact(op: Operation, value: Union[np.ndarray, Splat]) -> bool:
    """``op`` is already the compact form of ``value`` (folding it again would
    rebuild the same ops)."""
    if op.type == "const":
        return value.size < COMPACT_CONST_ELEMENTS or compact(value).size == value.size
    if op.type == "broadcast_to" and op.inputs[0].op.type == "const" and not op.inputs[0].op.control_inputs:
        return op.inputs[0].op.attrs["value"].size <= _core(value).size
    return False


def _pure(op: Operation) -> bool:
    opdef = op.opdef
    return not (op.control_inputs or opdef.stateful or opdef.needs_context or opdef.lowering in _NEVER
                or op.subgraphs())


def can_evaluate(op: Operation) -> bool:
    """Whether ``op`` is a pure function of its inputs that folding may
    evaluate (its result size is checked before evaluating)."""
    if not op.outputs or not _pure(op):
        return False
    sizes = [_shapes.num_elements(t.shape) for t in op.outputs]
    return all(s is not None for s in sizes) and sum(sizes) <= MAX_FOLD_ELEMENTS


def _run(op: Operation, inputs: Sequence[np.ndarray]) -> Optional[List[np.ndarray]]:
    opdef = op.opdef
    try:
        with np.errstate(all="ignore"):
            result = opdef.compute(*inputs, **op.attrs)
    except Exception:  # left to the run, which reports it with the op's name
        return None
    single = len(op.outputs) == 1 and opdef.num_outputs == 1
    outs = [np.asarray(result)] if single else [np.asarray(r) for r in result]
    if len(outs) != len(op.outputs) or any(v.dtype != t.dtype for t, v in zip(op.outputs, outs)):
        return None
    return outs


def evaluate(op: Operation, inputs: Sequence[np.ndarray]) -> Optional[List[np.ndarray]]:
    """Run ``op``'s reference implementation on ``inputs``; None when it
    fails or disagrees with the op's static shapes and dtypes."""
    outs = _run(op, inputs)
    if outs is None or any(v.shape != t.shape for t, v in zip(op.outputs, outs)):
        return None
    return outs


def _input_values(op: Operation, known: Dict[Tensor, Union[np.ndarray, Splat]]) -> Optional[List[np.ndarray]]:
    shape_only = shape_only_inputs(op)
    values = []
    for i, t in enumerate(op.inputs):
        if i in shape_only and _shapes.is_fully_defined(t.shape):
            # a zero-strided stand-in: the op reads only its shape
            values.append(np.broadcast_to(np.zeros((), t.dtype), t.shape))
        elif t in known:
            v = known[t]
            if isinstance(v, Splat):
                if _shapes.num_elements(v.shape) > MAX_EXPANDED_ELEMENTS:
                    return None
                # contiguous, as the unoptimized run's broadcast_to gives it:
                # a reduction's summation order follows the memory layout
                v = np.ascontiguousarray(np.broadcast_to(v.core, v.shape))
            values.append(v)
        else:
            return None
    return values


# Pointwise ops commute with broadcasting: op(broadcast(a), broadcast(b)) is
# broadcast(op(a, b)), so they are evaluated on the cores of broadcast
# constants however big the broadcast.
_POINTWISE = frozenset([row[0] for row in UNARY] + [row[0] for row in BINARY] + ["where", "cast", "logical_not"])
_SPREADING = ("broadcast_to", "broadcast_to_dynamic", "broadcast_like")


def _splat(op: Operation, known: Dict[Tensor, Union[np.ndarray, Splat]]) -> Optional[Splat]:
    """The value of a too-big-to-evaluate pointwise op or broadcast whose
    data inputs are known, as a core and a shape."""
    out = op.outputs[0] if len(op.outputs) == 1 else None
    if out is None or not _pure(op) or not _shapes.is_fully_defined(out.shape):
        return None
    if op.type in _SPREADING:
        data = [op.inputs[0]]
    elif op.type in _POINTWISE:
        data = list(op.inputs)
    else:
        return None
    if not all(t in known for t in data):
        return None
    cores = [_core(known[t]) for t in data]
    if op.type in _SPREADING:
        core = cores[0]
    else:
        outs = _run(op, cores)
        if outs is None or outs[0].size > MAX_FOLD_ELEMENTS:
            return None
        core = compact(outs[0]) if outs[0].size > 1 else outs[0]
    try:
        if np.broadcast_shapes(core.shape, out.shape) != tuple(out.shape):
            return None
    except ValueError:
        return None
    return Splat(core, tuple(out.shape))


def _partial_value(op: Operation) -> Optional[np.ndarray]:
    """The value of a small integer shape computation known from partly
    known static shapes."""
    if op.type not in _PARTIAL_SHAPE_OPS or len(op.outputs) != 1 or op.control_inputs:
        return None
    t = op.outputs[0]
    if t.dtype.kind not in "iu" or t.shape is None or len(t.shape) > 1:
        return None
    from ..ops.shape import known_value
    value = known_value(t)
    if value is None:
        return None
    value = np.asarray(value, dtype=t.dtype)
    return value if _shapes.compatible(t.shape, value.shape) else None


def _fill(op: Operation) -> Optional[Splat]:
    """A ``fill_like`` of a statically shaped tensor is a broadcast of its
    fill value (the dependency on the tensor goes away)."""
    if op.type != "fill_like" or op.control_inputs or not _shapes.is_fully_defined(op.inputs[0].shape):
        return None
    return Splat(np.full((), op.attrs["value"], dtype=op.attrs["dtype"]), tuple(op.outputs[0].shape))


def _value_of(op: Operation, known: Dict[Tensor, Union[np.ndarray, Splat]]) -> Optional[List[Union[np.ndarray, Splat]]]:
    if can_evaluate(op):
        inputs = _input_values(op, known)
        if inputs is not None:
            values = evaluate(op, inputs)
            if values is not None:
                return values
    for attempt in (_splat(op, known), _partial_value(op), _fill(op)):
        if attempt is not None:
            return [attempt]
    return None


def plan_folding(program: Program) -> Dict[Operation, List[Union[np.ndarray, Splat]]]:
    """Which ops become constants, with their values (in schedule order)."""
    pinned = pinned_ops(program)
    fed = {t.op for t in program.feeds}
    known: Dict[Tensor, Union[np.ndarray, Splat]] = {}
    plan: Dict[Operation, List[Union[np.ndarray, Splat]]] = {}
    for op in program.ops():
        if op in fed:
            continue
        if op.type == "const":
            value = op.attrs["value"]
            known[op.outputs[0]] = value
            if op not in pinned and not op.control_inputs and not _already_compact(op, value):
                plan[op] = [value]
            continue
        values = _value_of(op, known)
        if values is None:
            continue
        known.update(zip(op.outputs, values))
        if op not in pinned and not _already_compact(op, values[0]):
            plan[op] = values
    return plan


def fold_constants(program: Program) -> Tuple[Program, Counter]:
    """The folding rewrite; returns the program (the same object when
    nothing folds) and how many ops of each type were folded."""
    plan = plan_folding(program)
    if not plan:
        return program, Counter()
    result = Rewriter(program).substitute(
        plan, lambda rw, op, values: [materialize(rw.graph, value, op) for value in values])
    return result, Counter(op.type for op in plan)


def describe(counts: Counter, verb: str) -> str:
    """'<verb> N ops (type xK, ...)' for stage notes."""
    total = sum(counts.values())
    parts = ", ".join(f"{t} x{n}" if n > 1 else t for t, n in sorted(counts.items()))
    return f"{verb} {total} op{'s' if total != 1 else ''} ({parts})"


@register_pass("fold", "evaluate ops whose inputs are constants or static shapes; replace them by constants")
def fold(program: Program) -> Program:
    result, counts = fold_constants(program)
    if result is not program:
        result.analyses.setdefault("_notes", []).append(describe(counts, "folded"))
    return result
