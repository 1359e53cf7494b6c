"""Ops that adjoint graphs need: sum a gradient back to an input's
(run-time) shape, and broadcast a value to another tensor's shape. Taking the
shape from a tensor rather than an attribute keeps `None` dims working."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .. import shapes as _shapes
from ..graph import Tensor
from .core import apply_op
from .registry import LAYOUT, REDUCTION, define, gradient

__all__ = ["sum_to_shape_of", "broadcast_like"]


def sum_to(g: np.ndarray, shape) -> np.ndarray:
    """Sum ``g`` over the axes NumPy broadcasting added to reach ``g.shape``."""
    shape = tuple(shape)
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, d in enumerate(shape) if d == 1 and g.shape[lead + i] != 1)
    return np.sum(g, axis=axes, dtype=g.dtype).reshape(shape)


def _infer_sum_to(g, like):
    return like.shape, g.dtype


@define("sum_to_shape_of", lowering=REDUCTION, inputs=("x", "like"), dtypes="numeric", infer=_infer_sum_to,
        doc="Sums `x` over broadcast axes down to the shape of `like` (the adjoint of broadcasting).")
def _sum_to_shape_of(g, like):
    return sum_to(g, like.shape)


def _infer_broadcast_like(x, like):
    return _shapes.broadcast(x.shape, like.shape), x.dtype


@define("broadcast_like", lowering=LAYOUT, inputs=("x", "like"), dtypes="all", infer=_infer_broadcast_like,
        doc="Broadcasts `x` against the shape of `like` (the adjoint of sum_to_shape_of).")
def _broadcast_like(x, like):
    return np.array(np.broadcast_to(x, np.broadcast_shapes(x.shape, like.shape)))


def sum_to_shape_of(x: Any, like: Tensor, name: Optional[str] = None) -> Tensor:
    """``x`` summed down to ``like``'s shape; returns ``x`` when the static
    shapes already match."""
    if x.shape == like.shape and _shapes.is_fully_defined(x.shape):
        return x
    return apply_op("sum_to_shape_of", [x, like], name=name or "sum_to_shape_of")


def broadcast_like(x: Any, like: Tensor, name: Optional[str] = None) -> Tensor:
    if x.shape == like.shape and _shapes.is_fully_defined(x.shape):
        return x
    return apply_op("broadcast_like", [x, like], name=name or "broadcast_like")


@gradient("sum_to_shape_of")
def _sum_to_grad(op, g):
    return [broadcast_like(g, op.inputs[0]), None]


@gradient("broadcast_like")
def _broadcast_like_grad(op, g):
    return [sum_to_shape_of(g, op.inputs[0]), None]


# ---- reductions' adjoints --------------------------------------------------------
def _infer_broadcast_reduced(g, like, *, axis, keepdims):
    return like.shape, g.dtype


@define("broadcast_reduced", lowering=LAYOUT, inputs=("grad", "like"), attrs=("axis", "keepdims"), dtypes="all",
        infer=_infer_broadcast_reduced,
        doc="Re-inserts the reduced `axis` of a reduction result and broadcasts it to `like`'s shape.")
def _broadcast_reduced(g, like, *, axis, keepdims):
    axes = range(like.ndim) if axis is None else [a % like.ndim for a in axis]
    if not keepdims:
        for a in sorted(axes):
            g = np.expand_dims(g, a)
    return np.array(np.broadcast_to(g, like.shape))


def broadcast_reduced(g: Tensor, like: Tensor, axis, keepdims: bool, name: Optional[str] = None) -> Tensor:
    """The value of a reduction over ``axis`` spread back over ``like``'s shape."""
    return apply_op("broadcast_reduced", [g, like], {"axis": axis, "keepdims": keepdims},
                    name=name or "broadcast_reduced")


@gradient("broadcast_reduced")
def _broadcast_reduced_grad(op, g):
    from .reduce import reduce_sum
    return [reduce_sum(g, axis=op.attrs["axis"], keepdims=op.attrs["keepdims"]), None]


def _infer_count(x, *, axis, dtype):
    return (), dtype


@define("reduction_count", lowering=LAYOUT, inputs=("like",), attrs=("axis", "dtype"), dtypes="all",
        infer=_infer_count, differentiable=False,
        doc="Number of elements a reduction over `axis` of `like` combines (read from the run-time shape).")
def _reduction_count(x, *, axis, dtype):
    axes = range(x.ndim) if axis is None else axis
    return np.asarray(np.prod([x.shape[a] for a in axes], dtype=np.int64), dtype=dtype)


def reduction_count(like: Tensor, axis, dtype) -> Tensor:
    """Element count of a reduction: a constant when the shape is static."""
    from .core import constant
    shape = like.shape
    if shape is not None:
        axes = range(len(shape)) if axis is None else axis
        dims = [shape[a] for a in axes]
        if all(d is not None for d in dims):
            return constant(int(np.prod(dims, dtype=np.int64)), dtype=dtype)
    return apply_op("reduction_count", [like], {"axis": axis, "dtype": dtype}, name="reduction_count")


__all__ += ["broadcast_reduced", "reduction_count"]
