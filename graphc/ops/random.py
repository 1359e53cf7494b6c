"""Random ops: stateful primitives that draw from the Session's generator.

Without an op-level ``seed`` an op draws from ``ctx.rng``, the Session's
NumPy Generator (seeded by ``gc.Config(seed=...)``, so a seeded Session
repeats its whole sequence). With ``seed`` an op draws from its own
generator, derived from ``(seed, n)`` where ``n`` counts the op's previous
runs in this Session: the same seed gives the same sequence of values in
every new Session, and successive runs still differ (as in TF1).

The shape is an int32/int64 vector input (a Python list becomes a
constant), so a shape known only at run time works: ``random_uniform(
gc.shape_of(x))`` gets the static shape of ``x``.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from .. import dtypes as _dt
from .. import shapes as _shapes
from ..errors import DTypeError, InvalidArgumentError, ShapeError
from ..graph import Tensor, graph_for_inputs
from .core import apply_op, constant, convert_to_tensor, op_scope
from .registry import RANDOM, define
from .rules import require_dtype

__all__ = ["random_normal", "random_uniform", "truncated_normal", "random_shuffle"]


def static_shape_from_shape_tensor(t: Tensor) -> _shapes.Shape:
    """The static shape a 1-D int tensor will hold at run time, as far as
    the graph says (exact for a constant, the input's static shape for
    ``shape_of(x)``, see ``shape.partial_shape_value``)."""
    if t.shape is not None and len(t.shape) != 1:
        raise ShapeError(f"a shape must be a 1-D tensor, got {t.name} of shape {_shapes.fmt(t.shape)}")
    if t.dtype not in _dt.INTEGERS:
        raise DTypeError(f"a shape must be int32/int64, got {t.name} of dtype {t.dtype.name}")
    from .shape import partial_shape_value
    shape = partial_shape_value(t)
    if shape is not None and any(d is not None and d < 0 for d in shape):
        raise ShapeError(f"shape {shape} has a negative dimension")
    return shape


def shape_tensor(shape: Any, graph: Any = None) -> Tensor:
    """A user shape (list/tuple of ints, or a 1-D int tensor) as a tensor.
    Dims of a Python shape must be known (use ``gc.shape_of(x)`` for run-time
    sizes)."""
    if isinstance(shape, Tensor) or hasattr(shape, "_as_tensor"):
        return convert_to_tensor(shape)
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    dims = list(shape)
    if any(isinstance(d, Tensor) for d in dims):
        return convert_to_tensor(dims)
    parsed = _shapes.as_shape(dims)
    if not _shapes.is_fully_defined(parsed):
        raise ShapeError(f"shape {tuple(dims)} has unknown dims; pass gc.shape_of(x) for a shape known "
                         "only at run time")
    return constant(np.asarray(parsed, dtype=np.int64 if any(d >= 2**31 for d in parsed) else np.int32).reshape(-1),
                    graph=graph)


def _run_count(ctx: Any, key: str) -> int:
    """How often the op ``key`` ran before in this Session (the counters live
    in the Session's store, so a new Session starts again at 0)."""
    counts = ctx.store.random_op_counts
    n = counts.get(key, 0)
    counts[key] = n + 1
    return n


def _generator(ctx: Any, seed: Optional[int], key: str) -> np.random.Generator:
    if seed is None:
        return ctx.rng
    return np.random.default_rng([seed, _run_count(ctx, key)])


def _dims(shape_values: np.ndarray) -> tuple:
    dims = tuple(int(d) for d in np.asarray(shape_values).ravel())
    if any(d < 0 for d in dims):
        raise ValueError(f"shape {dims} has a negative dimension")
    return dims


def _infer_random(shape, *, dtype, seed, key):
    return static_shape_from_shape_tensor(shape), dtype


@define("random_standard_normal", lowering=RANDOM, inputs=("shape",), attrs=("dtype", "seed", "key"),
        dtypes="float", infer=_infer_random, stateful=True, needs_context=True, differentiable=False,
        doc="Samples of N(0, 1) of the given shape.")
def _random_standard_normal(ctx, shape, *, dtype, seed, key):
    return _generator(ctx, seed, key).standard_normal(_dims(shape), dtype=dtype)


@define("random_uniform_unit", lowering=RANDOM, inputs=("shape",), attrs=("dtype", "seed", "key"),
        dtypes="float", infer=_infer_random, stateful=True, needs_context=True, differentiable=False,
        doc="Samples of U[0, 1) of the given shape.")
def _random_uniform_unit(ctx, shape, *, dtype, seed, key):
    return _generator(ctx, seed, key).random(_dims(shape), dtype=dtype)


@define("truncated_standard_normal", lowering=RANDOM, inputs=("shape",), attrs=("dtype", "seed", "key"),
        dtypes="float", infer=_infer_random, stateful=True, needs_context=True, differentiable=False,
        doc="Samples of N(0, 1) of the given shape, redrawn until within 2 standard deviations.")
def _truncated_standard_normal(ctx, shape, *, dtype, seed, key):
    gen = _generator(ctx, seed, key)
    out = gen.standard_normal(_dims(shape), dtype=dtype)
    bad = np.abs(out) > 2
    while bad.any():
        out[bad] = gen.standard_normal(int(bad.sum()), dtype=dtype)
        bad = np.abs(out) > 2
    return out


def _infer_random_int(shape, minval, maxval, *, dtype, seed, key):
    for t, what in ((minval, "minval"), (maxval, "maxval")):
        require_dtype(t, (dtype,), what)
        if t.shape is not None and t.shape != ():
            raise ShapeError(f"{what} must be a scalar, got shape {_shapes.fmt(t.shape)}")
    return static_shape_from_shape_tensor(shape), dtype


@define("random_uniform_int", lowering=RANDOM, inputs=("shape", "minval", "maxval"),
        attrs=("dtype", "seed", "key"), dtypes="int32|int64", infer=_infer_random_int, stateful=True,
        needs_context=True, differentiable=False, doc="Integers uniform in [minval, maxval).")
def _random_uniform_int(ctx, shape, minval, maxval, *, dtype, seed, key):
    lo, hi = int(minval), int(maxval)
    if lo >= hi:
        raise ValueError(f"random_uniform needs minval < maxval, got {lo} and {hi}")
    return _generator(ctx, seed, key).integers(lo, hi, size=_dims(shape), dtype=dtype)


def _infer_shuffle(value, *, seed, key):
    if value.shape is not None and len(value.shape) == 0:
        raise ShapeError("random_shuffle needs a tensor of rank >= 1")
    return value.shape, value.dtype


@define("random_shuffle", lowering=RANDOM, inputs=("value",), attrs=("seed", "key"), dtypes="all",
        infer=_infer_shuffle, stateful=True, needs_context=True, differentiable=False,
        doc="Randomly permutes `value` along its first dim.")
def _random_shuffle(ctx, value, *, seed, key):
    return _generator(ctx, seed, key).permutation(value)


# ---- public functions ------------------------------------------------------------------------
def _seed_attr(seed: Any) -> Optional[int]:
    if seed is None:
        return None
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise InvalidArgumentError(f"seed must be a non-negative int or None, got {seed!r}")
    return int(seed)


def _random_attrs(values: Sequence[Any], dtype: Any, seed: Any, name: str) -> dict:
    """Attributes of a random primitive. ``key`` names the op for its run
    counter: it is the name the op will get, so it is unique in its graph
    and survives saving and loading the graph."""
    graph = graph_for_inputs(values)
    attrs = {"seed": _seed_attr(seed), "key": graph.unique_name(name, mark_used=False)}
    if dtype is not None:
        attrs["dtype"] = dtype
    return attrs


def _float_dtype(dtype: Any, what: str) -> np.dtype:
    dt = _dt.as_dtype(dtype)
    if dt not in _dt.FLOATS:
        raise DTypeError(f"{what} needs a float dtype (float32/float64), got {dt.name}")
    return dt


def _is_python_value(v: Any, value: float) -> bool:
    return _dt.is_python_scalar(v) and float(v) == value


def _scale_shift(x: Tensor, scale: Any, shift: Any) -> Tensor:
    """x * scale + shift, skipping the trivial parts; tensor parameters
    broadcast and are cast to the sample dtype."""
    from . import elementwise as ew
    if not _is_python_value(scale, 1.0):
        x = ew.multiply(x, scale if _dt.is_python_scalar(scale) else ew.cast(scale, x.dtype))
    if not _is_python_value(shift, 0.0):
        x = ew.add(x, shift if _dt.is_python_scalar(shift) else ew.cast(shift, x.dtype))
    return x


def random_normal(shape: Any, mean: Any = 0.0, stddev: Any = 1.0, dtype: Any = _dt.float32,
                  seed: Optional[int] = None, name: Optional[str] = None) -> Tensor:
    """Samples of N(mean, stddev**2); ``shape`` is a list of ints or a 1-D
    int tensor such as ``gc.shape_of(x)``."""
    dt = _float_dtype(dtype, "random_normal")
    with op_scope(name or "random_normal", [v for v in (shape, mean, stddev) if isinstance(v, Tensor)]):
        s = shape_tensor(shape)
        x = apply_op("random_standard_normal", [s], _random_attrs([s], dt, seed, "random_standard_normal"))
        return _scale_shift(x, stddev, mean)


def truncated_normal(shape: Any, mean: Any = 0.0, stddev: Any = 1.0, dtype: Any = _dt.float32,
                     seed: Optional[int] = None, name: Optional[str] = None) -> Tensor:
    """Samples of N(mean, stddev**2) conditioned on lying within two
    standard deviations of the mean (values outside are redrawn)."""
    dt = _float_dtype(dtype, "truncated_normal")
    with op_scope(name or "truncated_normal", [v for v in (shape, mean, stddev) if isinstance(v, Tensor)]):
        s = shape_tensor(shape)
        x = apply_op("truncated_standard_normal", [s], _random_attrs([s], dt, seed, "truncated_standard_normal"))
        return _scale_shift(x, stddev, mean)


def random_uniform(shape: Any, minval: Any = 0, maxval: Any = None, dtype: Any = _dt.float32,
                   seed: Optional[int] = None, name: Optional[str] = None) -> Tensor:
    """Samples uniform in [minval, maxval). For floats ``maxval`` defaults to
    1; for int32/int64 it is required (as in TF)."""
    dt = _dt.as_dtype(dtype)
    with op_scope(name or "random_uniform", [v for v in (shape, minval, maxval) if isinstance(v, Tensor)]):
        s = shape_tensor(shape)
        if dt in _dt.FLOATS:
            maxval = 1.0 if maxval is None else maxval
            u = apply_op("random_uniform_unit", [s], _random_attrs([s], dt, seed, "random_uniform_unit"))
            if _is_python_value(minval, 0.0) and _is_python_value(maxval, 1.0):
                return u
            from . import elementwise as ew
            lo = minval if _dt.is_python_scalar(minval) else ew.cast(minval, dt)
            hi = maxval if _dt.is_python_scalar(maxval) else ew.cast(maxval, dt)
            both_python = _dt.is_python_scalar(lo) and _dt.is_python_scalar(hi)
            width = float(hi) - float(lo) if both_python else ew.subtract(hi, lo)
            return _scale_shift(u, width, lo)
        if dt not in _dt.INTEGERS:
            raise DTypeError(f"random_uniform supports float32/float64/int32/int64, got {dt.name}")
        if maxval is None:
            raise InvalidArgumentError(f"random_uniform with dtype {dt.name} needs maxval")
        lo, hi = (v if isinstance(v, Tensor) else convert_to_tensor(v, dtype=dt) for v in (minval, maxval))
        if _dt.is_python_scalar(minval) and _dt.is_python_scalar(maxval) and int(minval) >= int(maxval):
            raise InvalidArgumentError(f"random_uniform needs minval < maxval, got {minval} and {maxval}")
        return apply_op("random_uniform_int", [s, lo, hi], _random_attrs([s], dt, seed, "random_uniform_int"))


def random_shuffle(value: Any, seed: Optional[int] = None, name: Optional[str] = None) -> Tensor:
    """``value`` with its first dim randomly permuted."""
    value = convert_to_tensor(value)
    op_name = name or "random_shuffle"
    return apply_op("random_shuffle", [value], _random_attrs([value], None, seed, op_name), name=op_name)
