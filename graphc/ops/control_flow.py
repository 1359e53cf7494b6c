"""Functional control flow: ``gc.cond`` and ``gc.while_loop``.

The user's Python callables are traced into :class:`~graphc.graph.FuncGraph`
subgraphs. Each construct is then one primitive op whose inputs are all it
depends on (the predicate or the loop variables, plus every tensor of an
enclosing graph the subgraphs capture) and whose attributes hold the
subgraphs, so passes, pruning and autodiff see an ordinary op. Every
subgraph of one op takes the same argument list, lined up with the op's
inputs: a branch also gets (unused) arguments for the other branch's captures.

Side effects: a stateful op in a subgraph whose results do not depend on it
(``v.assign(...)`` whose value is not returned) would be pruned away when the
subgraph runs. Every result is therefore given a control dependency on such
ops, so they run exactly when their branch or iteration runs.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, List, Optional, Sequence, Set, Tuple

import numpy as np

from .. import dtypes as _dt
from .. import shapes as _shapes
from ..errors import DTypeError, InvalidArgumentError, ShapeError
from ..graph import (FuncGraph, Graph, Operation, Tensor, _describe_failure, ancestors, graph_for_inputs,
                     user_source_location)
from . import registry
from .core import constant, convert_to_tensor, identity, stop_gradient
from .registry import CONTROL_FLOW, define

__all__ = ["cond", "while_loop"]

Spec = Tuple[Any, ...]


# --------------------------------------------------------------------------
# Nested structures (Tensor, or list/tuple/namedtuple/dict nestings of them)
# --------------------------------------------------------------------------
def _is_namedtuple(value: Any) -> bool:
    return isinstance(value, tuple) and hasattr(type(value), "_fields")


def _sorted_keys(d: dict) -> List[Any]:
    # Sorted so two dicts built in different orders line up leaf by leaf.
    try:
        return sorted(d)
    except TypeError:
        return list(d)


def _flatten(value: Any) -> Tuple[Spec, List[Tuple[str, Any]]]:
    """The structure of ``value`` and its leaves as (path, leaf) pairs."""
    leaves: List[Tuple[str, Any]] = []
    return _flatten_into(value, "", leaves), leaves


def _flatten_into(value: Any, path: str, leaves: List[Tuple[str, Any]]) -> Spec:
    if value is None:
        return ("none",)
    if isinstance(value, dict):
        keys = _sorted_keys(value)
        return ("dict", type(value), tuple(keys),
                tuple(_flatten_into(value[k], f"{path}[{k!r}]", leaves) for k in keys))
    if _is_namedtuple(value):
        return ("namedtuple", type(value),
                tuple(_flatten_into(v, f"{path}.{f}", leaves) for f, v in zip(value._fields, value)))
    if isinstance(value, (list, tuple)):
        kind = "list" if isinstance(value, list) else "tuple"
        return (kind, tuple(_flatten_into(v, f"{path}[{i}]", leaves) for i, v in enumerate(value)))
    leaves.append((path, value))
    return ("leaf",)


def _children(spec: Spec) -> Tuple[Spec, ...]:
    return spec[3] if spec[0] == "dict" else spec[2] if spec[0] == "namedtuple" else spec[1]


def _pack(spec: Spec, leaves: Iterator[Any]) -> Any:
    """Rebuild a structure from its spec and an iterator over its leaves."""
    kind = spec[0]
    if kind == "none":
        return None
    if kind == "leaf":
        return next(leaves)
    if kind == "dict":
        d = {k: _pack(s, leaves) for k, s in zip(spec[2], spec[3])}
        try:
            return spec[1](d)
        except TypeError:        # dict subclasses with other constructors
            return d
    if kind == "namedtuple":
        return spec[1](*[_pack(s, leaves) for s in spec[2]])
    items = [_pack(s, leaves) for s in spec[1]]
    return items if kind == "list" else tuple(items)


def _describe(spec: Spec) -> str:
    kind = spec[0]
    if kind == "none":
        return "None"
    if kind == "leaf":
        return "a single value"
    if kind == "dict":
        return f"a dict with keys {list(spec[2])}"
    if kind == "namedtuple":
        return f"a {spec[1].__name__}"
    return f"a {kind} of {len(spec[1])}"


def _mismatch(a: Spec, b: Spec, path: str = "", loose: bool = False) -> Optional[Tuple[str, str, str]]:
    """The first place where two structures differ: (path, what a has, what
    b has), or None. ``loose`` treats lists and tuples alike."""
    ka, kb = a[0], b[0]
    if loose and ka in ("list", "tuple") and kb in ("list", "tuple"):
        ka = kb
    if (ka != kb or (ka == "dict" and a[2] != b[2]) or (ka == "namedtuple" and a[1] is not b[1])
            or (ka in ("list", "tuple") and len(a[1]) != len(b[1]))):
        return path, _describe(a), _describe(b)
    if ka in ("none", "leaf"):
        return None
    if ka == "dict":
        labels = [f"[{k!r}]" for k in a[2]]
    elif ka == "namedtuple":
        labels = [f".{f}" for f in a[1]._fields]
    else:
        labels = [f"[{i}]" for i in range(len(a[1]))]
    for label, ca, cb in zip(labels, _children(a), _children(b)):
        found = _mismatch(ca, cb, path + label, loose)
        if found:
            return found
    return None


def _where(path: str, what: str = "result") -> str:
    return f"the {what}" if not path else f"{what}{path}"


# --------------------------------------------------------------------------
# Tracing helpers
# --------------------------------------------------------------------------
def _fail(graph: Graph, op_type: str, name: str, exc_type: type, reason: str) -> None:
    """Raise an error worded like the graph's shape-rule errors (op name and
    user source line) for a problem found before the op exists."""
    full = graph.unique_name(name, mark_used=False)
    raise exc_type(_describe_failure(registry.get(op_type), full, [], user_source_location(), reason))


def _check_callable(fn: Any, what: str, op_type: str) -> None:
    if not callable(fn):
        raise InvalidArgumentError(f"{op_type}: {what} must be a callable, got {type(fn).__name__}")


def _call(fg: FuncGraph, fn: Callable, args: Sequence[Any]) -> Any:
    # Errors raised by the user's function propagate unchanged.
    with fg.as_default():
        return fn(*args)


def _capture_all(fg: FuncGraph, outer_tensors: Sequence[Tensor]) -> None:
    for t in outer_tensors:
        fg.capture(t)


def _captured(fg: FuncGraph) -> List[Tensor]:
    return [outer for outer, _ in fg.captures]


def _resolve_leaf(fg: FuncGraph, value: Any, graph: Graph, op_type: str, name: str, path: str) -> Any:
    """A traced result as a tensor of ``fg`` (outer tensors captured,
    Variables read inside the subgraph, arrays made constants). Python
    scalars are weak, so they stay as they are until the dtype they must take
    is known; Operations stay (they are side effects, not values)."""
    if isinstance(value, Operation):
        if value.graph is not fg:
            _fail(graph, op_type, name, InvalidArgumentError,
                  f"{_where(path)} is operation '{value.name}' of another graph; a branch can only "
                  "return operations it creates")
        return value
    if _dt.is_python_scalar(value):
        return value
    with fg.as_default():
        if isinstance(value, Tensor):
            return fg._resolve_input(value)
        return fg._resolve_input(convert_to_tensor(value))


def _weak_to_tensor(fg: FuncGraph, value: Any, like: Any) -> Any:
    """Make a Python scalar result a constant of ``fg``, of the dtype of the
    tensor it pairs with (``like``) when there is one."""
    if not _dt.is_python_scalar(value):
        return value
    dtype = _dt.weak_scalar_dtype(value, like.dtype) if isinstance(like, Tensor) else None
    with fg.as_default():
        return constant(value, dtype=dtype)


def _pending_effects(fg: FuncGraph, outputs: Sequence[Tensor], returned_ops: Sequence[Operation]) -> List[Operation]:
    """Stateful (and explicitly returned) ops of ``fg`` its results do not reach."""
    reached = ancestors(outputs)
    wanted = set(returned_ops)
    return [op for op in fg._ops if op not in reached and (op in wanted or op.is_stateful)]


def _seal(fg: FuncGraph, outputs: List[Tensor], effects: List[Operation], token: bool) -> List[Tensor]:
    """Set ``fg.outputs``: ``outputs`` made to run after ``effects``; with
    ``token``, plus a bool scalar that carries the effects when there is no
    other result."""
    if effects or token:
        with fg.as_default(), fg.control_dependencies(effects):
            if effects:
                outputs = [identity(t, name="after_side_effects") for t in outputs]
            if token:
                outputs = outputs + [constant(True, name="side_effects_done")]
    fg.outputs = list(outputs)
    return fg.outputs


def _check_args(fg: FuncGraph, inputs: Sequence[Tensor], what: str) -> None:
    if len(fg.inputs) != len(inputs):
        raise InvalidArgumentError(f"{what} takes {len(fg.inputs)} arguments but the op has {len(inputs)} "
                                   "inputs for it")
    for i, (arg, t) in enumerate(zip(fg.inputs, inputs)):
        if arg.dtype != t.dtype:
            raise DTypeError(f"argument {i} of {what} is {arg.dtype.name} but the op passes "
                             f"{t.dtype.name} ({t.name})")


def _fits(shape: _shapes.Shape, invariant: _shapes.Shape) -> bool:
    """Whether ``shape`` is at least as specific as ``invariant``."""
    if invariant is None:
        return True
    if shape is None or len(shape) != len(invariant):
        return False
    return all(i is None or s == i for s, i in zip(shape, invariant))


def _py_shape(shape: _shapes.Shape) -> str:
    return "None" if shape is None else repr(tuple(shape))


# --------------------------------------------------------------------------
# cond
# --------------------------------------------------------------------------
def _infer_cond(pred: Tensor, *captured: Tensor, true_branch: FuncGraph, false_branch: FuncGraph):
    if pred.dtype != _dt.bool_:
        raise DTypeError(f"pred must be a scalar bool tensor, got {pred.dtype.name} ({pred.name}); "
                         "compare it with something first, e.g. x > 0")
    if pred.shape is not None and pred.shape != ():
        raise ShapeError(f"pred must be a scalar, got shape {_shapes.fmt(pred.shape)} ({pred.name}); "
                         "reduce it first, e.g. gc.reduce_all(p)")
    _check_args(true_branch, captured, "true_fn")
    _check_args(false_branch, captured, "false_fn")
    if len(true_branch.outputs) != len(false_branch.outputs):
        raise InvalidArgumentError(f"true_fn returns {len(true_branch.outputs)} tensors but false_fn returns "
                                   f"{len(false_branch.outputs)}")
    specs = []
    for i, (t, f) in enumerate(zip(true_branch.outputs, false_branch.outputs)):
        if t.dtype != f.dtype:
            raise DTypeError(f"output {i}: true_fn returns {t.dtype.name} but false_fn returns {f.dtype.name}")
        if t.shape is not None and f.shape is not None and len(t.shape) != len(f.shape):
            raise ShapeError(f"output {i}: true_fn returns shape {_shapes.fmt(t.shape)} but false_fn returns "
                             f"shape {_shapes.fmt(f.shape)} (a different rank)")
        specs.append((_shapes.relax(t.shape, f.shape), t.dtype))
    return specs


@define("cond", lowering=CONTROL_FLOW, inputs=("pred",), attrs=("true_branch", "false_branch"), dtypes="all",
        infer=_infer_cond, num_outputs=None, needs_context=True,
        doc="Runs subgraph `true_branch` if `pred` else `false_branch` on the captured inputs; "
            "outputs the chosen branch's results.")
def _cond(ctx, pred, *captured, true_branch, false_branch):
    pred = np.asarray(pred)
    if pred.shape != ():
        raise InvalidArgumentError(f"pred must be a scalar, got a value of shape {pred.shape}")
    branch = true_branch if bool(pred) else false_branch
    return list(ctx.run_subgraph(branch, list(captured)))


def _is_static_bool(pred: Any) -> bool:
    return isinstance(pred, (bool, np.bool_)) or (
        isinstance(pred, np.ndarray) and pred.shape == () and pred.dtype == np.bool_)


def _static_cond_result(result: Any) -> Any:
    # A Python-bool predicate just calls the chosen function; its data leaves
    # still come back as Tensors, as from a traced cond.
    spec, leaves = _flatten(result)
    values = [v if isinstance(v, (Tensor, Operation)) else convert_to_tensor(v) for _, v in leaves]
    return _pack(spec, iter(values))


def _trace_branch(graph: Graph, fg: FuncGraph, fn: Callable, op_name: str) -> Tuple[Spec, List[Tuple[str, Any]]]:
    spec, leaves = _flatten(_call(fg, fn, []))
    return spec, [(p, _resolve_leaf(fg, v, graph, "cond", op_name, p)) for p, v in leaves]


def _line_up_leaves(graph: Graph, name: str, true_fg: FuncGraph, false_fg: FuncGraph,
                    true_leaves: List[Tuple[str, Any]], false_leaves: List[Tuple[str, Any]]):
    """Pair the branches' results position by position: data with data
    (Python scalars taking the other side's dtype), operations with operations."""
    data_t, data_f, op_slots, ops_t, ops_f = [], [], [], [], []
    for (path, t), (_, f) in zip(true_leaves, false_leaves):
        if isinstance(t, Operation) or isinstance(f, Operation):
            if not (isinstance(t, Operation) and isinstance(f, Operation)):
                _fail(graph, "cond", name, InvalidArgumentError,
                      f"{_where(path)}: one branch returns an operation and the other a tensor; "
                      "both must return the same kind of value")
            op_slots.append(True)
            ops_t.append(t)
            ops_f.append(f)
            continue
        op_slots.append(False)
        data_t.append(_weak_to_tensor(true_fg, t, f))
        data_f.append(_weak_to_tensor(false_fg, f, t))
    return data_t, data_f, op_slots, ops_t, ops_f


def cond(pred: Any, true_fn: Callable[[], Any], false_fn: Callable[[], Any], name: Optional[str] = None) -> Any:
    """``true_fn()`` if ``pred`` else ``false_fn()``, decided when the graph
    runs; only the chosen branch runs.

    Both functions take no arguments and return the same structure (a Tensor,
    or a list/tuple/dict nesting of Tensors; Python scalars and arrays are
    converted) with the same dtypes; a shape dim the branches disagree on is
    None in the result. Operations a branch returns (and branches returning
    nothing) give the cond Operation, which runs the branch's side effects.
    A Python bool ``pred`` just calls the chosen function.
    """
    _check_callable(true_fn, "true_fn", "cond")
    _check_callable(false_fn, "false_fn", "cond")
    if _is_static_bool(pred):
        return _static_cond_result(true_fn() if bool(pred) else false_fn())
    pred = convert_to_tensor(pred)
    graph = graph_for_inputs([pred])
    op_name = name or "cond"
    label = graph.unique_name(op_name, mark_used=False)

    true_fg = FuncGraph(f"{label}/true_fn", outer=graph)
    true_spec, true_leaves = _trace_branch(graph, true_fg, true_fn, op_name)
    false_fg = FuncGraph(f"{label}/false_fn", outer=graph)
    _capture_all(false_fg, _captured(true_fg))
    false_spec, false_leaves = _trace_branch(graph, false_fg, false_fn, op_name)

    found = _mismatch(true_spec, false_spec)
    if found:
        path, has_t, has_f = found
        _fail(graph, "cond", op_name, InvalidArgumentError,
              f"true_fn and false_fn must return the same structure, but at {_where(path)} true_fn returns "
              f"{has_t} and false_fn returns {has_f}")
    data_t, data_f, op_slots, ops_t, ops_f = _line_up_leaves(graph, op_name, true_fg, false_fg,
                                                            true_leaves, false_leaves)
    _capture_all(true_fg, _captured(false_fg))

    effects_t = _pending_effects(true_fg, data_t, ops_t)
    effects_f = _pending_effects(false_fg, data_f, ops_f)
    token = not data_t and bool(effects_t or effects_f)
    _seal(true_fg, data_t, effects_t, token)
    _seal(false_fg, data_f, effects_f, token)

    op = graph.create_op("cond", [pred] + _captured(true_fg),
                         {"true_branch": true_fg, "false_branch": false_fg}, name=op_name)
    if not op_slots:
        # branches that return nothing run only for their side effects
        return op
    outputs = iter(op.outputs)
    return _pack(true_spec, iter([op if is_op else next(outputs) for is_op in op_slots]))


# --------------------------------------------------------------------------
# while_loop
# --------------------------------------------------------------------------
def _split_while_inputs(inputs: Sequence[Tensor], num_loop_vars: int, has_maximum_iterations: bool):
    stop = len(inputs) - (1 if has_maximum_iterations else 0)
    limit = inputs[-1] if has_maximum_iterations else None
    return list(inputs[:num_loop_vars]), list(inputs[num_loop_vars:stop]), limit


def _check_loop_cond(cond_graph: FuncGraph) -> None:
    if len(cond_graph.outputs) != 1:
        raise InvalidArgumentError(f"cond must return one bool scalar, got {len(cond_graph.outputs)} values")
    c = cond_graph.outputs[0]
    if c.dtype != _dt.bool_:
        raise DTypeError(f"cond must return a bool scalar, got {c.dtype.name}")
    if c.shape is not None and c.shape != ():
        raise ShapeError(f"cond must return a scalar, got shape {_shapes.fmt(c.shape)}")


def _check_loop_body(body: FuncGraph, inits: Sequence[Tensor]) -> None:
    n = len(inits)
    if len(body.outputs) != n:
        raise InvalidArgumentError(f"body returns {len(body.outputs)} values for {n} loop variables")
    for i, (init, arg, out) in enumerate(zip(inits, body.inputs, body.outputs)):
        if not _fits(init.shape, arg.shape):
            raise ShapeError(f"loop variable {i} has initial shape {_shapes.fmt(init.shape)}, which does not fit "
                             f"its shape invariant {_shapes.fmt(arg.shape)}")
        if out.dtype != arg.dtype:
            raise DTypeError(f"body changes the dtype of loop variable {i} from {arg.dtype.name} to "
                             f"{out.dtype.name}; loop variables keep their dtype (cast in the body)")
        if not _fits(out.shape, arg.shape):
            raise ShapeError(
                f"loop variable {i} has shape {_shapes.fmt(arg.shape)} entering the body but "
                f"{_shapes.fmt(out.shape)} after one iteration; pass shape_invariants (e.g. "
                f"{_py_shape(_shapes.relax(arg.shape, out.shape))} for it) to allow a shape that changes")


def _infer_while(*inputs: Tensor, cond: FuncGraph, body: FuncGraph, num_loop_vars: int,
                 has_maximum_iterations: bool):
    inits, captured, limit = _split_while_inputs(inputs, num_loop_vars, has_maximum_iterations)
    _check_args(cond, inits + captured, "cond")
    _check_args(body, inits + captured, "body")
    _check_loop_cond(cond)
    _check_loop_body(body, inits)
    if limit is not None:
        if limit.dtype not in _dt.INTEGERS:
            raise DTypeError(f"maximum_iterations must be an int32/int64 scalar, got {limit.dtype.name}")
        if limit.shape is not None and limit.shape != ():
            raise ShapeError(f"maximum_iterations must be a scalar, got shape {_shapes.fmt(limit.shape)}")
    # The last output, the number of iterations run, is for autodiff only.
    return [(arg.shape, arg.dtype) for arg in body.inputs[:num_loop_vars]] + [((), _dt.int32)]


@define("while_loop", lowering=CONTROL_FLOW, inputs=(), attrs=("cond", "body", "num_loop_vars",
                                                             "has_maximum_iterations"),
        dtypes="all", infer=_infer_while, num_outputs=None, needs_context=True,
        doc="Runs subgraph `body` on the loop variables while subgraph `cond` is true (and fewer than "
            "`maximum_iterations` iterations ran); outputs the final loop variables and the iteration count.")
def _while_loop(ctx, *inputs, cond, body, num_loop_vars, has_maximum_iterations):
    values, captured, limit = _split_while_inputs(list(inputs), num_loop_vars, has_maximum_iterations)
    if limit is not None:
        limit = int(np.asarray(limit))
        if limit < 0:
            raise InvalidArgumentError(f"maximum_iterations must be >= 0, got {limit}")
    count = 0
    while limit is None or count < limit:
        (keep_going,) = ctx.run_subgraph(cond, values + captured)
        if not bool(keep_going):
            break
        values = _checked_iteration(ctx.run_subgraph(body, values + captured), body, count)
        count += 1
    return list(values) + [np.asarray(count, dtype=np.int32)]


def _checked_iteration(values: List[np.ndarray], body: FuncGraph, count: int) -> List[np.ndarray]:
    for i, (v, arg) in enumerate(zip(values, body.inputs)):
        if not _shapes.compatible(arg.shape, v.shape):
            raise ShapeError(f"loop variable {i} has shape {v.shape} after iteration {count + 1}, which does not "
                             f"fit its shape {_shapes.fmt(arg.shape)}")
    return values


def _loop_call_args(spec: Spec, args: Sequence[Tensor]) -> List[Any]:
    """How cond/body are called: one argument per element of a list/tuple
    of loop variables (as TF does), else the structure itself."""
    it = iter(args)
    if spec[0] in ("list", "tuple", "namedtuple"):
        return [_pack(child, it) for child in _children(spec)]
    return [_pack(spec, it)]


def _shape_invariants(shape_invariants: Any, spec: Spec, graph: Graph, name: str) -> List[_shapes.Shape]:
    """One shape per loop variable, following the loop_vars structure (a
    shape is itself a tuple, so it cannot be flattened on its own)."""
    out: List[_shapes.Shape] = []

    def walk(s: Spec, value: Any, path: str) -> None:
        kind = s[0]
        if kind == "leaf":
            out.append(_shapes.as_shape(value))
            return
        if kind == "none":
            return
        if kind == "dict":
            if not isinstance(value, dict) or set(value) != set(s[2]):
                _fail(graph, "while_loop", name, InvalidArgumentError,
                      f"shape_invariants{path} must be a dict with keys {list(s[2])}")
            for k, child in zip(s[2], s[3]):
                walk(child, value[k], f"{path}[{k!r}]")
            return
        children = _children(s)
        if not isinstance(value, (list, tuple)) or len(value) != len(children):
            _fail(graph, "while_loop", name, InvalidArgumentError,
                  f"shape_invariants{path} must have the structure of loop_vars ({_describe(s)})")
        for i, (child, v) in enumerate(zip(children, value)):
            walk(child, v, f"{path}[{i}]")

    walk(spec, shape_invariants, "")
    return out


def _iteration_limit(maximum_iterations: Any, graph: Graph, name: str) -> Optional[Tensor]:
    if maximum_iterations is None:
        return None
    if isinstance(maximum_iterations, (bool, np.bool_)):
        _fail(graph, "while_loop", name, InvalidArgumentError,
              f"maximum_iterations must be an int or an int scalar tensor, got {maximum_iterations!r}")
    if isinstance(maximum_iterations, (int, np.integer)):
        if maximum_iterations < 0:
            _fail(graph, "while_loop", name, InvalidArgumentError,
                  f"maximum_iterations must be >= 0, got {maximum_iterations}")
        with graph.as_default():
            return constant(int(maximum_iterations), name="maximum_iterations")
    with graph.as_default():
        return convert_to_tensor(maximum_iterations)


def _loop_args(fg: FuncGraph, inits: Sequence[Tensor], shapes: Sequence[_shapes.Shape]) -> List[Tensor]:
    return [fg.add_arg(shape, t.dtype, name=f"loop_var_{i}") for i, (t, shape) in enumerate(zip(inits, shapes))]


def _trace_loop_cond(graph: Graph, fg: FuncGraph, fn: Callable, spec: Spec, args: List[Tensor], name: str) -> Tensor:
    result = _call(fg, fn, _loop_call_args(spec, args))
    if isinstance(result, (bool, np.bool_)):
        with fg.as_default():
            return constant(bool(result))
    rspec, leaves = _flatten(result)
    if rspec[0] != "leaf" or isinstance(leaves[0][1], Operation):
        _fail(graph, "while_loop", name, InvalidArgumentError,
              f"cond must return one bool scalar tensor, got {_describe(rspec)}")
    return _weak_to_tensor(fg, _resolve_leaf(fg, leaves[0][1], graph, "while_loop", name, ""), None)


def _single_leaf(spec: Spec) -> bool:
    """A bare value, or a list/tuple holding just one."""
    return spec[0] == "leaf" or (spec[0] in ("list", "tuple") and len(spec[1]) == 1 and spec[1][0][0] == "leaf")


def _body_leaves(graph: Graph, spec: Spec, result: Any, name: str) -> List[Tuple[str, Any]]:
    """The body's results, checked against the loop_vars structure (a bare
    tensor is accepted for a single loop variable)."""
    rspec, leaves = _flatten(result)
    if _single_leaf(spec) and _single_leaf(rspec):
        return leaves
    found = _mismatch(spec, rspec, loose=True)
    if found:
        path, want, got = found
        _fail(graph, "while_loop", name, InvalidArgumentError,
              f"body must return the structure of loop_vars, but at {_where(path, 'loop_vars')} loop_vars is "
              f"{want} and body returns {got}")
    for path, v in leaves:
        if isinstance(v, Operation):
            _fail(graph, "while_loop", name, InvalidArgumentError,
                  f"body returns operation '{v.name}' for loop_vars{path}; loop variables are tensors")
    return leaves


def while_loop(cond: Callable[..., Any], body: Callable[..., Any], loop_vars: Any,
               shape_invariants: Any = None, maximum_iterations: Any = None, name: Optional[str] = None, *,
               parallel_iterations: int = 10, back_prop: bool = True, swap_memory: bool = False) -> Any:
    """Repeat ``loop_vars = body(*loop_vars)`` while ``cond(*loop_vars)``.

    ``loop_vars`` is a list/tuple (cond and body get one argument per
    element), a single Tensor or a nested structure; ``body`` returns the
    same structure (a bare tensor for one loop variable is fine) with the
    same dtypes and shapes. A loop variable whose shape changes needs a
    ``shape_invariants`` entry with None for the dims that change.
    ``maximum_iterations`` (int or int scalar tensor) stops the loop after
    that many iterations even if ``cond`` still holds. Returns the final
    loop variables in the structure of ``loop_vars``. ``parallel_iterations``
    and ``swap_memory`` are accepted for TF1 compatibility (iterations run in
    order); ``back_prop=False`` stops gradients at the results.
    """
    _check_callable(cond, "cond", "while_loop")
    _check_callable(body, "body", "while_loop")
    spec, leaves = _flatten(loop_vars)
    values = [v for _, v in leaves]
    graph = graph_for_inputs(values)
    op_name = name or "while"
    if not values:
        _fail(graph, "while_loop", op_name, InvalidArgumentError, "loop_vars must contain at least one tensor")
    if any(isinstance(v, Operation) for v in values):
        _fail(graph, "while_loop", op_name, InvalidArgumentError, "loop_vars must be tensors, not operations")
    with graph.as_default():
        inits = [convert_to_tensor(v) for v in values]
    limit = _iteration_limit(maximum_iterations, graph, op_name)
    shapes = ([t.shape for t in inits] if shape_invariants is None
              else _shape_invariants(shape_invariants, spec, graph, op_name))
    label = graph.unique_name(op_name, mark_used=False)

    cond_fg = FuncGraph(f"{label}/cond", outer=graph)
    keep_going = _trace_loop_cond(graph, cond_fg, cond, spec, _loop_args(cond_fg, inits, shapes), op_name)
    body_fg = FuncGraph(f"{label}/body", outer=graph)
    body_args = _loop_args(body_fg, inits, shapes)
    _capture_all(body_fg, _captured(cond_fg))
    result = _call(body_fg, body, _loop_call_args(spec, body_args))
    outs = [_weak_to_tensor(body_fg, _resolve_leaf(body_fg, v, graph, "while_loop", op_name, p), arg)
            for (p, v), arg in zip(_body_leaves(graph, spec, result, op_name), body_args)]
    _capture_all(cond_fg, _captured(body_fg))

    _seal(cond_fg, [keep_going], _pending_effects(cond_fg, [keep_going], []), False)
    _seal(body_fg, outs, _pending_effects(body_fg, outs, []), False)
    inputs = inits + _captured(body_fg) + ([limit] if limit is not None else [])
    op = graph.create_op("while_loop", inputs,
                         {"cond": cond_fg, "body": body_fg, "num_loop_vars": len(inits),
                          "has_maximum_iterations": limit is not None}, name=op_name)
    results = list(op.outputs[:len(inits)])
    if not back_prop:
        with graph.as_default():
            results = [stop_gradient(t) for t in results]
    return _pack(spec, iter(results))


# --------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------
def _is_float(t: Tensor) -> bool:
    return t.dtype.kind == "f"


def _connected_args(fg: FuncGraph) -> Set[int]:
    """Indices of ``fg``'s float arguments with a differentiable path to one
    of its float results (the others get no gradient)."""
    index = {t: i for i, t in enumerate(fg.inputs)}
    found: Set[int] = set()
    seen: Set[Tensor] = set()
    stack = [t for t in fg.outputs if _is_float(t)]
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        if t in index:
            found.add(index[t])
        elif t.op.opdef.differentiable:
            stack.extend(x for x in t.op.inputs if _is_float(x))
    return found


def _inside(t: Optional[Tensor]) -> Optional[Tensor]:
    """``t`` as a tensor of the graph being built (captured if it is outer):
    autodiff looks for the consumers of the tensors it differentiates with
    respect to in that graph."""
    if t is None:
        return None
    from ..graph import get_default_graph
    return get_default_graph()._resolve_input(t)


def _shaped_like(g: Tensor, like: Tensor, shape: _shapes.Shape) -> Tensor:
    """``g`` with a static shape at least as specific as ``shape`` (a loop
    variable of an adjoint loop must keep its shape)."""
    if _fits(g.shape, shape):
        return g
    from .core import apply_op
    return apply_op("reshape_like", [g, like], name="reshape_like")


@registry.gradient("cond")
def _cond_grad(op: Operation, *out_grads: Optional[Tensor]) -> List[Optional[Tensor]]:
    """A cond over the adjoints of the two branches: the branch that ran
    forward is the one differentiated."""
    from ..autodiff.subgraph import subgraph_gradients
    from .shape import zeros_like
    pred, captured = op.inputs[0], list(op.inputs[1:])
    branches = (op.attrs["true_branch"], op.attrs["false_branch"])
    wanted = sorted(_connected_args(branches[0]) | _connected_args(branches[1]))
    result: List[Optional[Tensor]] = [None] * len(op.inputs)
    if not wanted:
        return result

    def adjoint(fg: FuncGraph) -> Callable[[], List[Tensor]]:
        def fn() -> List[Tensor]:
            args = [_inside(t) for t in captured]
            grads = subgraph_gradients(fg, args, [_inside(g) for g in out_grads], name="branch_grad")
            return [grads[i] if grads[i] is not None else zeros_like(args[i]) for i in wanted]
        return fn

    grads = cond(pred, adjoint(branches[0]), adjoint(branches[1]), name="cond_grad")
    for i, g in zip(wanted, grads):
        result[1 + i] = g
    return result


def _check_stackable(op: Operation, body: FuncGraph, inits: Sequence[Tensor]) -> None:
    from ..errors import GradientError
    for i, (init, arg) in enumerate(zip(inits, body.inputs)):
        if arg.shape is None:
            raise GradientError(f"cannot differentiate {op.describe()}: loop variable {i} has an unknown rank, "
                                "so its per-iteration values cannot be stacked for the backward pass")
        if arg.shape != init.shape:
            raise GradientError(
                f"cannot differentiate {op.describe()}: loop variable {i} may change shape between iterations "
                f"(shape invariant {_shapes.fmt(arg.shape)}, initial shape {_shapes.fmt(init.shape)}), so its "
                "per-iteration values cannot be stacked for the backward pass")


def _record_history(body: FuncGraph, inits: List[Tensor], captured: List[Tensor], count: Tensor) -> List[Tensor]:
    """Re-run the forward loop (a side-effect-free copy of its body, exactly
    ``count`` iterations) and stack each loop variable's value at the start of
    every iteration: the values the adjoint body differentiates at.

    The stacks are allocated at their final size (``count`` rows) and row k
    is written with a ``where``, so every loop variable keeps its shape and
    the recording loop can itself be differentiated (second derivatives)."""
    from ..autodiff.subgraph import copy_subgraph
    from .elementwise import equal, where
    from .grad_support import broadcast_like
    from .shape import expand_dims, range as gc_range, reshape, zeros_like
    n = len(inits)
    arg_shapes = [a.shape for a in body.inputs[:n]]
    rows = gc_range(count)

    def row_mask(selector: Tensor, rank: int) -> Tensor:
        return reshape(selector, [-1] + [1] * rank)

    empty = [broadcast_like(expand_dims(zeros_like(x), 0), row_mask(rows, len(s))) for x, s in zip(inits, arg_shapes)]

    def step(k: Tensor, *state: Tensor) -> List[Tensor]:
        xs, stacks = list(state[:n]), list(state[n:])
        at_k = equal(_inside(rows), k)
        stacked = [where(row_mask(at_k, len(s)), expand_dims(x, 0), h) for x, h, s in zip(xs, stacks, arg_shapes)]
        nxt = copy_subgraph(body, xs + [_inside(c) for c in captured], name="forward")
        return [k + 1] + nxt + stacked

    final = while_loop(lambda k, *state: k < count, step, [constant(0)] + inits + empty,
                       shape_invariants=[()] + arg_shapes + [(None,) + tuple(s) for s in arg_shapes],
                       name="record")
    return list(final[1 + n:])


@registry.gradient("while_loop")
def _while_grad(op: Operation, *out_grads: Optional[Tensor]) -> List[Optional[Tensor]]:
    """Stack the loop variables of every forward iteration, then run an
    adjoint loop exactly as many times, last iteration first, each step
    differentiating the body at that iteration's values."""
    from ..autodiff.subgraph import subgraph_gradients
    from .indexing import gather
    from .shape import zeros_like
    n, body = op.attrs["num_loop_vars"], op.attrs["body"]
    inits, captured, _ = _split_while_inputs(op.inputs, n, op.attrs["has_maximum_iterations"])
    connected = _connected_args(body)
    var_ids = [j for j in range(n) if _is_float(inits[j])]
    cap_ids = [i for i, c in enumerate(captured) if _is_float(c) and n + i in connected]
    result: List[Optional[Tensor]] = [None] * len(op.inputs)
    if not var_ids:
        return result
    _check_stackable(op, body, inits)
    count = op.outputs[-1]
    history = _record_history(body, list(inits), captured, count)
    var_shapes = [body.inputs[j].shape for j in var_ids]

    def step(k: Tensor, *state: Tensor) -> List[Tensor]:
        g_vars, g_caps = state[:len(var_ids)], state[len(var_ids):]
        k = k - 1
        xs = [gather(_inside(h), k) for h in history]
        caps = [_inside(c) for c in captured]
        seeds: List[Optional[Tensor]] = [None] * n
        for j, g in zip(var_ids, g_vars):
            seeds[j] = g
        grads = subgraph_gradients(body, xs + caps, seeds, name="body_grad")
        new_vars = [_shaped_like(grads[j], xs[j], s) if grads[j] is not None else zeros_like(xs[j])
                    for j, s in zip(var_ids, var_shapes)]
        new_caps = [acc + _shaped_like(grads[n + i], caps[i], captured[i].shape)
                    if grads[n + i] is not None else acc for acc, i in zip(g_caps, cap_ids)]
        return [k] + new_vars + new_caps

    start = [count] + [out_grads[j] if out_grads[j] is not None else zeros_like(op.outputs[j]) for j in var_ids] + [zeros_like(captured[i]) for i in cap_ids]
    final = while_loop(lambda k, *state: k > 0, step, start,
                       shape_invariants=[()] + var_shapes + [captured[i].shape for i in cap_ids],
                       name="adjoint")
    for j, g in zip(var_ids, final[1:1 + len(var_ids)]):
        result[j] = g
    for i, g in zip(cap_ids, final[1 + len(var_ids):]):
        result[n + i] = g
    return result
