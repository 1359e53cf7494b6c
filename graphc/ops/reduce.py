"""Reductions over axes (axis=None|int|tuple, keepdims) and arg-reductions.

Sums, products and means keep the input dtype (TF semantics; NumPy would
widen int32 sums to int64). Max/min of an empty axis give the identity of
the reduction (-inf/+inf, or the integer extremes), as TF does.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from .. import dtypes as _dt
from .. import shapes as _shapes
from ..errors import DTypeError, InvalidArgumentError, ShapeError
from ..graph import Tensor
from .core import apply_op, convert_to_tensor, op_scope
from .registry import REDUCTION, define
from .rules import require_dtype

__all__ = ["reduce_sum", "reduce_mean", "reduce_max", "reduce_min", "reduce_prod",
           "reduce_any", "reduce_all", "reduce_logsumexp", "argmax", "argmin",
           "count_nonzero", "reduce_variance", "reduce_std"]


def reduced_shape(shape: _shapes.Shape, axes: Optional[Tuple[int, ...]], keepdims: bool) -> _shapes.Shape:
    """Shape after reducing ``axes`` (None: all axes)."""
    if shape is None:
        return None if (keepdims or axes is not None) else ()
    if axes is None:
        axes = tuple(range(len(shape)))
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _reduction_rule(allowed, out_dtype=None):
    def infer(x, *, axis, keepdims):
        require_dtype(x, allowed, "input")
        if axis is not None and x.shape is not None:
            # axes of an unknown-rank input are kept as given (maybe negative)
            axis = tuple(_shapes.normalize_axis(a, len(x.shape)) for a in axis)
        return reduced_shape(x.shape, axis, keepdims), (out_dtype or x.dtype)
    return infer


def _identity_of(fn: str, dtype: np.dtype):
    if dtype.kind == "f":
        return -np.inf if fn == "max" else np.inf
    if dtype.kind == "b":
        return fn != "max"
    info = np.iinfo(dtype)
    return info.min if fn == "max" else info.max


@define("reduce_sum", lowering=REDUCTION, inputs=("input",), attrs=("axis", "keepdims"), dtypes="numeric",
        infer=_reduction_rule(_dt.NUMERIC), doc="Sum over `axis`.")
def _reduce_sum(x, *, axis, keepdims):
    return np.sum(x, axis=axis, keepdims=keepdims, dtype=x.dtype)


@define("reduce_prod", lowering=REDUCTION, inputs=("input",), attrs=("axis", "keepdims"), dtypes="numeric",
        infer=_reduction_rule(_dt.NUMERIC), doc="Product over `axis`.")
def _reduce_prod(x, *, axis, keepdims):
    return np.prod(x, axis=axis, keepdims=keepdims, dtype=x.dtype)


@define("reduce_mean", lowering=REDUCTION, inputs=("input",), attrs=("axis", "keepdims"), dtypes="float",
        infer=_reduction_rule(_dt.FLOATS), doc="Mean over `axis` (NaN for an empty axis).")
def _reduce_mean(x, *, axis, keepdims):
    with np.errstate(invalid="ignore", divide="ignore"):
        n = np.prod([x.shape[a] for a in (axis if axis is not None else range(x.ndim))], dtype=np.int64)
        total = np.sum(x, axis=axis, keepdims=keepdims, dtype=x.dtype)
        return np.asarray(total / x.dtype.type(n) if n else total * x.dtype.type(np.nan), dtype=x.dtype)


@define("reduce_max", lowering=REDUCTION, inputs=("input",), attrs=("axis", "keepdims"), dtypes="numeric",
        infer=_reduction_rule(_dt.NUMERIC), doc="Max over `axis` (NaN propagates; -inf for an empty axis).")
def _reduce_max(x, *, axis, keepdims):
    return np.max(x, axis=axis, keepdims=keepdims, initial=_identity_of("max", x.dtype))


@define("reduce_min", lowering=REDUCTION, inputs=("input",), attrs=("axis", "keepdims"), dtypes="numeric",
        infer=_reduction_rule(_dt.NUMERIC), doc="Min over `axis` (NaN propagates; +inf for an empty axis).")
def _reduce_min(x, *, axis, keepdims):
    return np.min(x, axis=axis, keepdims=keepdims, initial=_identity_of("min", x.dtype))


@define("reduce_any", lowering=REDUCTION, inputs=("input",), attrs=("axis", "keepdims"), dtypes="bool",
        infer=_reduction_rule((_dt.bool_,)), differentiable=False, doc="Logical or over `axis`.")
def _reduce_any(x, *, axis, keepdims):
    return np.any(x, axis=axis, keepdims=keepdims)


@define("reduce_all", lowering=REDUCTION, inputs=("input",), attrs=("axis", "keepdims"), dtypes="bool",
        infer=_reduction_rule((_dt.bool_,)), differentiable=False, doc="Logical and over `axis`.")
def _reduce_all(x, *, axis, keepdims):
    return np.all(x, axis=axis, keepdims=keepdims)


def _axis_attr(x: Tensor, axis: Any, op_type: str = "reduction") -> Optional[Tuple[int, ...]]:
    """Normalize a user axis argument into the attribute form (a sorted
    tuple of non-negative axes, or None for all axes). Errors name the op:
    they are raised before the graph can add it."""
    if axis is None:
        return None
    if isinstance(axis, Tensor):
        raise DTypeError(f"{op_type}: axis must be a Python int or tuple of ints, not the tensor {axis.name}")
    if isinstance(axis, (list, tuple)) and all(isinstance(a, (int, np.integer)) and not isinstance(a, bool)
                                               for a in axis):
        axis = tuple(int(a) for a in axis)
    elif isinstance(axis, (int, np.integer)) and not isinstance(axis, bool):
        axis = (int(axis),)
    else:
        raise DTypeError(f"{op_type}: axis must be an int, a tuple of ints or None, got {axis!r}")
    if x.shape is None:
        return axis
    try:
        return _shapes.normalize_axes(axis, len(x.shape))
    except (ShapeError, InvalidArgumentError) as exc:
        raise type(exc)(f"{op_type} of {x.name} with shape {_shapes.fmt(x.shape)}: {exc}") from None


def _make(op_type: str, default_name: str):
    def fn(input_tensor: Any, axis: Any = None, keepdims: bool = False, name: Optional[str] = None) -> Tensor:
        x = convert_to_tensor(input_tensor)
        return apply_op(op_type, [x], {"axis": _axis_attr(x, axis, op_type), "keepdims": bool(keepdims)},
                        name=name or default_name)
    fn.__name__ = op_type
    fn.__doc__ = f"{op_type}(input_tensor, axis=None, keepdims=False): reduce over `axis` (None: all)."
    return fn


reduce_sum = _make("reduce_sum", "Sum")
reduce_prod = _make("reduce_prod", "Prod")
reduce_mean = _make("reduce_mean", "Mean")
reduce_max = _make("reduce_max", "Max")
reduce_min = _make("reduce_min", "Min")
reduce_any = _make("reduce_any", "Any")
reduce_all = _make("reduce_all", "All")


def reduce_logsumexp(input_tensor: Any, axis: Any = None, keepdims: bool = False,
                     name: Optional[str] = None) -> Tensor:
    """log(sum(exp(x))) computed stably: the max is subtracted first (and
    kept out of the gradient, which is softmax either way)."""
    from . import elementwise as ew
    from .core import stop_gradient
    x = convert_to_tensor(input_tensor)
    if x.dtype.kind != "f":
        raise DTypeError(f"reduce_logsumexp: input must be float32/float64, got {x.dtype.name} ({x.name}); "
                         "cast it first, e.g. gc.cast(x, gc.float32)")
    with op_scope(name or "ReduceLogSumExp", [x]):
        m = stop_gradient(reduce_max(x, axis=axis, keepdims=True))
        # an infinite max would give inf - inf = nan below; shift by 0 there
        # instead (not m * 0, which is nan too)
        m = ew.where(ew.is_nan(ew.subtract(m, m)), 0.0, m)
        s = reduce_sum(ew.exp(ew.subtract(x, m)), axis=axis, keepdims=True)
        out = ew.add(ew.log(s), m)
        if not keepdims:
            from .shape import squeeze
            # axis=None: every dim is 1 now, and squeeze(axis=None) drops them
            # all, even when the rank is only known at run time
            out = squeeze(out, axis=_axis_attr(x, axis, "reduce_logsumexp"))
        return out


def reduce_variance(input_tensor: Any, axis: Any = None, keepdims: bool = False,
                    name: Optional[str] = None) -> Tensor:
    from . import elementwise as ew
    x = convert_to_tensor(input_tensor)
    with op_scope(name or "ReduceVariance", [x]):
        mean = reduce_mean(x, axis=axis, keepdims=True)
        return reduce_mean(ew.square(ew.subtract(x, mean)), axis=axis, keepdims=keepdims)


def reduce_std(input_tensor: Any, axis: Any = None, keepdims: bool = False, name: Optional[str] = None) -> Tensor:
    from . import elementwise as ew
    return ew.sqrt(reduce_variance(input_tensor, axis, keepdims), name=name or "ReduceStd")


def count_nonzero(input_tensor: Any, axis: Any = None, keepdims: bool = False, dtype: Any = _dt.int64,
                  name: Optional[str] = None) -> Tensor:
    from . import elementwise as ew
    x = convert_to_tensor(input_tensor)
    nz = ew.not_equal(x, False if x.dtype == _dt.bool_ else 0)
    return reduce_sum(ew.cast(nz, dtype), axis=axis, keepdims=keepdims, name=name or "count_nonzero")


# ---- arg reductions --------------------------------------------------------------------
def _infer_arg(x, *, axis, output_type):
    require_dtype(x, _dt.NUMERIC, "input")
    if axis is None:
        if _shapes.num_elements(x.shape) == 0:
            raise ShapeError("cannot take arg max/min of an empty tensor")
        return (), output_type
    if x.shape is None:
        return None, output_type
    a = _shapes.normalize_axis(axis, len(x.shape))
    if x.shape[a] == 0:
        raise ShapeError(f"cannot take arg max/min over axis {axis} of size 0")
    return tuple(d for i, d in enumerate(x.shape) if i != a), output_type


@define("argmax", lowering=REDUCTION, inputs=("input",), attrs=("axis", "output_type"), dtypes="numeric",
        infer=_infer_arg, differentiable=False,
        doc="Index of the largest value (first on ties; axis=None flattens like NumPy).")
def _argmax(x, *, axis, output_type):
    return np.asarray(np.argmax(x, axis=axis), dtype=output_type)


@define("argmin", lowering=REDUCTION, inputs=("input",), attrs=("axis", "output_type"), dtypes="numeric",
        infer=_infer_arg, differentiable=False,
        doc="Index of the smallest value (first on ties; axis=None flattens like NumPy).")
def _argmin(x, *, axis, output_type):
    return np.asarray(np.argmin(x, axis=axis), dtype=output_type)


def _make_arg(op_type: str):
    def fn(input: Any, axis: Optional[int] = None, output_type: Any = _dt.int64, name: Optional[str] = None) -> Tensor:
        x = convert_to_tensor(input)
        if axis is not None:
            if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
                raise DTypeError(f"{op_type} axis must be an int or None, got {axis!r}")
            if x.shape is not None:
                try:
                    axis = _shapes.normalize_axis(int(axis), len(x.shape))
                except ShapeError as exc:
                    raise ShapeError(f"{op_type} of {x.name} with shape {_shapes.fmt(x.shape)}: {exc}") from None
        out = _dt.as_dtype(output_type)
        if out not in _dt.INTEGERS:
            raise DTypeError(f"{op_type} output_type must be int32 or int64, got {out.name}")
        return apply_op(op_type, [x], {"axis": axis, "output_type": out}, name=name or op_type)
    fn.__name__ = op_type
    fn.__doc__ = f"{op_type}(input, axis=None, output_type=int64); axis=None flattens like NumPy."
    return fn


argmax = _make_arg("argmax")
argmin = _make_arg("argmin")


# ---- gradient rules ---------------------------------------------------------------------
def _grad_rules() -> None:
    from . import elementwise as ew
    from .grad_support import broadcast_reduced, reduction_count
    from .registry import gradient

    @gradient("reduce_sum")
    def _sum(op, g):
        return [broadcast_reduced(g, op.inputs[0], op.attrs["axis"], op.attrs["keepdims"])]

    @gradient("reduce_mean")
    def _mean(op, g):
        x = op.inputs[0]
        n = reduction_count(x, op.attrs["axis"], x.dtype)
        return [broadcast_reduced(ew.divide(g, n), x, op.attrs["axis"], op.attrs["keepdims"])]

    def _extremum(name):
        @gradient(name)
        def _rule(op, g):
            # The gradient is split evenly among tied extremal elements (TF's rule).
            x = op.inputs[0]
            axis, keepdims = op.attrs["axis"], op.attrs["keepdims"]
            out = broadcast_reduced(op.outputs[0], x, axis, keepdims)
            hits = ew.cast(ew.equal(x, out), x.dtype)
            count = broadcast_reduced(reduce_sum(hits, axis=axis, keepdims=True), x, axis, True)
            return [ew.multiply(ew.divide(hits, count), broadcast_reduced(g, x, axis, keepdims))]

    _extremum("reduce_max")
    _extremum("reduce_min")

    @gradient("reduce_prod")
    def _prod(op, g):
        # d prod / d x_i = product of the other elements. Dividing the product
        # by x_i fails on zeros, so count zeros: with none it is prod/x_i; with
        # exactly one, only the zero element gets the product of the rest.
        x = op.inputs[0]
        axis, keepdims = op.attrs["axis"], op.attrs["keepdims"]
        is_zero = ew.equal(x, 0)
        zeros = reduce_sum(ew.cast(is_zero, x.dtype), axis=axis, keepdims=True)
        nonzero_prod = reduce_prod(ew.where(is_zero, 1, x), axis=axis, keepdims=True)
        zeros_b = broadcast_reduced(zeros, x, axis, True)
        prod_b = broadcast_reduced(nonzero_prod, x, axis, True)
        safe_x = ew.where(is_zero, 1, x)
        other = ew.where(ew.equal(zeros_b, 0), ew.divide(prod_b, safe_x),
                         ew.where(ew.logical_and(is_zero, ew.equal(zeros_b, 1)), prod_b, 0))
        return [ew.multiply(other, broadcast_reduced(g, x, axis, keepdims))]


_grad_rules()
