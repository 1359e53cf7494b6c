"""Reusable shape/dtype rules for op definitions.

Each rule takes the input Tensors (and attributes) and returns
``(shape, dtype)``; raising ShapeError/DTypeError with a short reason is
enough, the graph adds the op name, the input shapes and the source line.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from .. import dtypes as _dt
from .. import shapes as _shapes
from ..errors import DTypeError


def require_dtype(t: Any, allowed: Iterable[np.dtype], what: str = "input", hint: str = "") -> None:
    allowed = tuple(allowed)
    if t.dtype not in allowed:
        names = "/".join(d.name for d in allowed)
        msg = f"{what} must be {names}, got {t.dtype.name} ({t.name})"
        if hint:
            msg += f"; {hint}"
        raise DTypeError(msg)


def same_dtype(*ts: Any) -> np.dtype:
    dts = {t.dtype for t in ts}
    if len(dts) != 1:
        raise DTypeError("inputs must have the same dtype, got " + ", ".join(t.dtype.name for t in ts))
    return ts[0].dtype


def unary_same(allowed=_dt.NUMERIC):
    def infer(x, **_):
        require_dtype(x, allowed, "x")
        return x.shape, x.dtype
    return infer


def unary_float(x, **_):
    require_dtype(x, _dt.FLOATS, "x", "cast it first, e.g. gc.cast(x, gc.float32)")
    return x.shape, x.dtype


def unary_to_bool(allowed=_dt.ALL):
    def infer(x, **_):
        require_dtype(x, allowed, "x")
        return x.shape, _dt.bool_
    return infer


def broadcast_same(allowed=_dt.NUMERIC, result=None):
    """Binary/ternary elementwise: inputs broadcast, share one dtype (the
    op's public function casts operands to their promoted dtype first)."""
    def infer(*xs, **_):
        dtype = same_dtype(*xs)
        if dtype not in allowed:
            raise DTypeError(f"inputs must be {'/'.join(d.name for d in allowed)}, got {dtype.name}")
        return _shapes.broadcast(*(x.shape for x in xs)), (result or dtype)
    return infer
