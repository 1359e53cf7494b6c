"""Reverse-mode differentiation as a graph transform.

``gradients(ys, xs)`` walks the ops between ``xs`` and ``ys`` in reverse
schedule order and asks each op's registered rule for the adjoints of its
inputs. The adjoint ops are appended to the same graph (under a
``gradients/`` name scope, each marked with the forward op it differentiates),
so they can be fetched, optimized, compiled, exported and differentiated
again.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Set, Union

import numpy as np

from ..errors import GradientError, InvalidArgumentError
from ..graph import Graph, Operation, Tensor, ancestors, graph_for_inputs
from ..ops import elementwise as ew
from ..ops.core import convert_to_tensor
from ..ops.grad_support import broadcast_like

TensorOrList = Union[Any, Sequence[Any]]


def _as_list(value: TensorOrList) -> List[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _is_float(t: Tensor) -> bool:
    return t.dtype.kind == "f"




def _sum(contributions: List[Tensor]) -> Tensor:
    total = contributions[0]
    for c in contributions[1:]:
        total = ew.add(total, c)
    return total


def gradients(ys: TensorOrList, xs: TensorOrList, grad_ys: Optional[TensorOrList] = None,
              stop_gradients: Optional[TensorOrList] = None, unconnected_gradients: str = "none",
              name: str = "gradients") -> List[Optional[Tensor]]:
    """Symbolic derivatives of ``sum(ys)`` with respect to each of ``xs``.

    ``grad_ys`` weights each y (default ones). Tensors in ``stop_gradients``
    are treated as constants (giving partial derivatives). An x with no
    differentiable path to ys gets ``None``, or zeros when
    ``unconnected_gradients="zero"``. Returns one entry per x.
    """
    if unconnected_gradients not in ("none", "zero"):
        raise InvalidArgumentError(f"unconnected_gradients must be 'none' or 'zero', got {unconnected_gradients!r}")
    ys_list = [convert_to_tensor(y) for y in _as_list(ys)]
    xs_list = _as_list(xs)
    if not xs_list:
        return []
    graph = graph_for_inputs(ys_list)
    # x may be a Variable: every read of it (in loop bodies, under control
    # dependencies) takes the snapshot as input, so the snapshot's adjoint
    # sums over all of them.
    x_groups: List[List[Tensor]] = []
    for x in xs_list:
        if hasattr(x, "_attrs") and hasattr(x, "_as_graph_element"):
            x_groups.append([x._as_graph_element()])
        elif isinstance(x, Tensor):
            x_groups.append([x])
        else:
            raise InvalidArgumentError(f"gradients: xs must be Tensors or Variables, got {type(x).__name__}")
    gy_list: List[Optional[Any]] = _as_list(grad_ys) if grad_ys is not None else [None] * len(ys_list)
    if len(gy_list) != len(ys_list):
        raise InvalidArgumentError(f"gradients: {len(ys_list)} ys but {len(gy_list)} grad_ys")
    stops: Set[Tensor] = {convert_to_tensor(s) for s in _as_list(stop_gradients)} if stop_gradients is not None else set()

    all_x = [t for group in x_groups for t in group]
    with graph.as_default(), graph.name_scope(name):
        grads = _backprop(graph, ys_list, gy_list, all_x, stops)
        results: List[Optional[Tensor]] = []
        for x, group in zip(xs_list, x_groups):
            parts = [grads[t] for t in group if t in grads]
            if parts:
                results.append(_sum(parts))
            elif unconnected_gradients == "zero":
                like = group[0] if group else convert_to_tensor(x)
                results.append(broadcast_like(_zero(like), like))
            else:
                results.append(None)
    return results


def _zero(like: Tensor) -> Tensor:
    from ..ops.core import constant
    return constant(0, dtype=like.dtype)


def _between_ops(graph: Graph, ys: Sequence[Tensor], xs: Sequence[Tensor]) -> Set[Operation]:
    """Ops on a differentiable path from some x to some y."""
    reach_y = ancestors(ys, control=False)
    # forward reachability from xs, restricted to reach_y
    consumers: Dict[Tensor, List[Operation]] = {}
    for op in graph._ops:
        if op in reach_y:
            for t in op.inputs:
                consumers.setdefault(t, []).append(op)
    between: Set[Operation] = set()
    frontier = [t for t in xs if _is_float(t)]
    seen: Set[Tensor] = set()
    while frontier:
        t = frontier.pop()
        if t in seen:
            continue
        seen.add(t)
        for op in consumers.get(t, ()):
            if not op.opdef.differentiable:
                continue
            between.add(op)
            frontier.extend(o for o in op.outputs if _is_float(o))
    return between


def _backprop(graph: Graph, ys: Sequence[Tensor], grad_ys: Sequence[Optional[Any]], xs: Sequence[Tensor],
              stops: Set[Tensor]) -> Dict[Tensor, Tensor]:
    """Adjoints of every x reachable from ys (summed over paths)."""
    between = _between_ops(graph, ys, xs)
    pending: Dict[Tensor, List[Tensor]] = {}
    x_set = set(xs)
    for y, gy in zip(ys, grad_ys):
        if not _is_float(y):
            continue
        if gy is None:
            from ..ops.core import constant
            gy = broadcast_like(constant(1, dtype=y.dtype, name="grad_ys"), y)
        else:
            gy = convert_to_tensor(gy)
            if gy.dtype != y.dtype:
                raise GradientError(f"grad_ys for {y.name} has dtype {gy.dtype.name}, expected {y.dtype.name}")
        pending.setdefault(y, []).append(gy)

    done: Dict[Tensor, Tensor] = {}
    order = sorted(between, key=lambda op: -_index(graph, op))
    for op in order:
        out_grads = []
        any_grad = False
        for o in op.outputs:
            # a stopped tensor keeps its own adjoint but passes nothing upstream
            parts = pending.get(o) if o not in stops else None
            if parts:
                any_grad = True
                g = _sum(parts)
                pending[o] = [g]
                out_grads.append(g)
            else:
                out_grads.append(None)
        if not any_grad:
            continue
        rule = op.opdef.grad
        if rule is None:
            raise GradientError(
                f"no gradient is defined for op type {op.type!r} ({op.describe()}); it lies on the path from "
                f"xs to ys. Wrap its result in gc.stop_gradient to treat it as a constant, or define one with "
                f"gc.custom_gradient")
        out_grads = [g if g is not None else broadcast_like(_zero(o), o) if _is_float(o) else None
                     for g, o in zip(out_grads, op.outputs)]
        with graph.gradient_of(op), graph.name_scope(f"{op.name.replace('/', '_')}_grad"):
            in_grads = rule(op, *out_grads)
        in_grads = list(in_grads)
        if len(in_grads) != len(op.inputs):
            raise GradientError(f"gradient rule of {op.type!r} returned {len(in_grads)} gradients for "
                                f"{len(op.inputs)} inputs")
        for t, g in zip(op.inputs, in_grads):
            if g is None or not _is_float(t):
                continue
            if g.dtype != t.dtype:
                g = ew.cast(g, t.dtype)
            pending.setdefault(t, []).append(g)
    for x in xs:
        parts = pending.get(x)
        if parts:
            done[x] = _sum(parts)
    return done


def _index(graph: Graph, op: Operation) -> int:
    cache = graph.__dict__.setdefault("_op_index", {})
    if len(cache) != len(graph._ops):
        cache.clear()
        cache.update({id(o): i for i, o in enumerate(graph._ops)})
    return cache[id(op)]
