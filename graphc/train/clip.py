"""Gradient clipping by norm (TF1 semantics), built from ordinary ops so the
clipped values are differentiable graph tensors like any other."""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple, Union

from .. import ops
from ..errors import InvalidArgumentError
from ..graph import Tensor
from ..ops.core import is_tensor_like, op_scope

__all__ = ["clip_by_global_norm", "global_norm", "clip_by_norm"]


def _present(t_list: Sequence[Any]) -> List[Tensor]:
    if isinstance(t_list, (Tensor, str)) or not hasattr(t_list, "__iter__"):
        raise InvalidArgumentError(f"expected a list of tensors, got {type(t_list).__name__}")
    return [ops.convert_to_tensor(t) for t in t_list if t is not None]


def global_norm(t_list: Sequence[Any], name: Optional[str] = None) -> Tensor:
    """``sqrt(sum(sum(t**2) for t in t_list))``; ``None`` entries are ignored.
    Mixed float dtypes promote like NumPy."""
    tensors = _present(t_list)
    if not tensors:
        raise InvalidArgumentError("global_norm needs at least one tensor that is not None")
    for t in tensors:
        if t.dtype.kind != "f":
            raise InvalidArgumentError(f"global_norm takes floating tensors; {t.name} has dtype {t.dtype.name}")
    with op_scope(name or "global_norm", tensors):
        squares = [ops.reduce_sum(ops.square(t)) for t in tensors]
        return ops.sqrt(ops.add_n(squares), name="global_norm")


def clip_by_global_norm(t_list: Sequence[Any], clip_norm: Any, use_norm: Any = None,
                        name: Optional[str] = None) -> Tuple[List[Optional[Tensor]], Tensor]:
    """Scale every tensor by ``clip_norm / max(global_norm, clip_norm)``.

    Returns ``(list_clipped, global_norm)``; ``None`` entries stay ``None``.
    ``use_norm`` replaces the computed global norm. As in TF1, a zero norm
    leaves the tensors unchanged and an infinite norm makes them NaN."""
    items = list(t_list) if not isinstance(t_list, Tensor) else None
    if items is None:
        raise InvalidArgumentError("clip_by_global_norm takes a list of tensors, not a single Tensor")
    present = _present(items)
    with op_scope(name or "clip_by_global_norm", present):
        norm = global_norm(present) if use_norm is None else ops.convert_to_tensor(use_norm)
        clip = ops.cast(ops.convert_to_tensor(clip_norm), norm.dtype) if is_tensor_like(clip_norm) \
            else ops.constant(clip_norm, dtype=norm.dtype)
        # min(1/norm, 1/clip) is 1/clip for a zero norm: no division by zero
        # reaches the result, and the scale is exactly 1 when not clipping.
        scale = ops.multiply(clip, ops.minimum(ops.divide(1.0, norm), ops.divide(1.0, clip)), name="scale")
        clipped: List[Optional[Tensor]] = []
        for t in items:
            if t is None:
                clipped.append(None)
                continue
            t = ops.convert_to_tensor(t)
            s = scale if scale.dtype == t.dtype else ops.cast(scale, t.dtype)
            clipped.append(ops.multiply(t, s, name="clipped"))
    return clipped, norm


def clip_by_norm(t: Any, clip_norm: Any, axes: Union[None, int, Sequence[int]] = None,
                 name: Optional[str] = None) -> Tensor:
    """``t * clip_norm / max(l2norm(t, axes), clip_norm)``: rescale so the L2
    norm over ``axes`` (all axes when None) is at most ``clip_norm``."""
    t = ops.convert_to_tensor(t)
    if t.dtype.kind != "f":
        raise InvalidArgumentError(f"clip_by_norm takes a floating tensor; {t.name} has dtype {t.dtype.name}")
    with op_scope(name or "clip_by_norm", [t]):
        axis = tuple(axes) if isinstance(axes, (list, tuple)) else axes
        sq = ops.reduce_sum(ops.square(t), axis=axis, keepdims=True)
        positive = ops.greater(sq, 0.0)
        # Where the sum is 0, sqrt sees sq + 1 instead (and the result takes
        # sq): the gradient at t == 0 stays finite (sqrt'(0) is infinite).
        safe = ops.where(positive, sq, ops.add(sq, 1.0))
        norm = ops.where(positive, ops.sqrt(safe), sq)
        clip = ops.cast(ops.convert_to_tensor(clip_norm), t.dtype) if is_tensor_like(clip_norm) \
            else ops.constant(clip_norm, dtype=t.dtype)
        return ops.divide(ops.multiply(t, clip), ops.maximum(norm, clip), name="clip_by_norm")
