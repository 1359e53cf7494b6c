"""Jacobians and Hessians, built by repeated reverse passes.

Each row of a Jacobian is one reverse pass seeded with a one-hot ``grad_ys``,
so the cost is one adjoint subgraph per output element: fine for the small
problems Hessians are used on, and every row is an ordinary graph.
"""
from __future__ import annotations

from typing import Any, List, Sequence, Union

import numpy as np

from .. import shapes as _shapes
from ..errors import GradientError
from ..graph import Tensor
from ..ops.core import constant, convert_to_tensor
from .gradients import gradients


def _rows(y: Tensor, x: Any) -> Tensor:
    from ..ops.grad_support import broadcast_like
    from ..ops.shape import reshape, stack
    if not _shapes.is_fully_defined(y.shape):
        raise GradientError(f"jacobian needs the static shape of {y.name}, got {_shapes.fmt(y.shape)}")
    x_t = x._as_graph_element() if hasattr(x, "_as_graph_element") else convert_to_tensor(x)
    if not _shapes.is_fully_defined(x_t.shape):
        raise GradientError(f"jacobian needs the static shape of {x_t.name}, got {_shapes.fmt(x_t.shape)}")
    n = _shapes.num_elements(y.shape)
    rows = []
    for i in range(n):
        onehot = np.zeros(n, dtype=y.dtype)
        onehot[i] = 1
        g = gradients(y, [x], grad_ys=[constant(onehot.reshape(y.shape))])[0]
        rows.append(g if g is not None else broadcast_like(constant(0, dtype=x_t.dtype), x_t))
    if not rows:
        return reshape(constant(np.zeros((0,), dtype=x_t.dtype)), y.shape + x_t.shape)
    return reshape(stack(rows, axis=0), y.shape + x_t.shape)


def jacobian(y: Any, x: Any) -> Tensor:
    """d y / d x with shape ``y.shape + x.shape`` (static shapes required)."""
    return _rows(convert_to_tensor(y), x)


def hessians(ys: Union[Any, Sequence[Any]], xs: Union[Any, Sequence[Any]]) -> List[Tensor]:
    """Second derivatives of ``sum(ys)``: one tensor per x, of shape
    ``x.shape + x.shape``."""
    xs_list = list(xs) if isinstance(xs, (list, tuple)) else [xs]
    out = []
    for x in xs_list:
        g = gradients(ys, [x], unconnected_gradients="zero")[0]
        out.append(_rows(g, x))
    return out
