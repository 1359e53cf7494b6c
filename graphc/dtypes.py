"""Dtypes are plain ``numpy.dtype`` objects; this module names the supported
ones and the promotion rules (NumPy's, with Python scalars weak).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .errors import DTypeError

float32 = np.dtype(np.float32)
float64 = np.dtype(np.float64)
int32 = np.dtype(np.int32)
int64 = np.dtype(np.int64)
bool_ = np.dtype(np.bool_)

SUPPORTED = (float32, float64, int32, int64, bool_)
FLOATS = (float32, float64)
INTEGERS = (int32, int64)
NUMERIC = FLOATS + INTEGERS
ALL = SUPPORTED

_NAMES = {"float32": float32, "float64": float64, "int32": int32,
          "int64": int64, "bool": bool_, "float": float32, "double": float64}

DEFAULT_FLOAT = float32
DEFAULT_INT = int32


def as_dtype(value: Any) -> np.dtype:
    """Normalize ``value`` (a graphc/NumPy dtype, Python type or name) to a
    supported ``numpy.dtype``; raise :class:`DTypeError` otherwise."""
    if isinstance(value, str) and value in _NAMES:
        return _NAMES[value]
    if value is float:
        return float32
    if value is int:
        return int32
    if value is bool:
        return bool_
    try:
        dt = np.dtype(value)
    except TypeError as exc:
        raise DTypeError(f"{value!r} is not a dtype graphc understands") from exc
    if dt not in SUPPORTED:
        raise DTypeError(
            f"dtype {dt} is not supported by graphc; use one of "
            f"{', '.join(d.name for d in SUPPORTED)}")
    # NumPy's own object for it: an equal dtype can be another object (one
    # that came out of pickle, say), and native code compares dtype objects
    return SUPPORTED[SUPPORTED.index(dt)]


def is_floating(dt: np.dtype) -> bool:
    return dt.kind == "f"


def is_integer(dt: np.dtype) -> bool:
    return dt.kind in "iu"


def is_bool(dt: np.dtype) -> bool:
    return dt.kind == "b"


def is_python_scalar(value: Any) -> bool:
    return isinstance(value, (bool, int, float)) and not isinstance(value, np.generic)


def promote(*dtypes: np.dtype) -> np.dtype:
    """NumPy promotion of tensor dtypes, kept inside the supported set."""
    dt = np.result_type(*dtypes)
    if dt not in SUPPORTED:
        raise DTypeError(f"promoting {', '.join(map(str, dtypes))} gives {dt}, "
                         "which graphc does not support")
    return dt


def weak_scalar_dtype(scalar: Any, other: np.dtype) -> np.dtype:
    """Dtype a Python scalar takes next to a tensor of dtype ``other``.

    Python scalars are weak (NEP 50): ``x_f32 * 2.0`` stays float32 and
    ``x_i32 + 1`` stays int32. Only a change of kind promotes: an integer
    tensor with a float scalar becomes the default float (float32), a bool
    tensor with an int scalar becomes int32.
    """
    if isinstance(scalar, bool):
        return other
    if isinstance(scalar, int):
        return other if other.kind in "iuf" else DEFAULT_INT
    if isinstance(scalar, float):
        return other if other.kind == "f" else DEFAULT_FLOAT
    raise DTypeError(f"{scalar!r} is not a Python scalar")


def default_dtype_for(value: Any) -> np.dtype:
    """Dtype of a constant made from Python data, TF-style: float → float32,
    int → int32 (int64 if it does not fit), bool → bool. NumPy arrays and
    NumPy scalars keep their own dtype."""
    if isinstance(value, (np.ndarray, np.generic)):
        return as_dtype(value.dtype)
    arr = np.asarray(value)
    if arr.dtype.kind == "f":
        return float32
    if arr.dtype.kind in "iu":
        if arr.size and (arr.max() > np.iinfo(np.int32).max or arr.min() < np.iinfo(np.int32).min):
            return int64
        return int32
    if arr.dtype.kind == "b":
        return bool_
    raise DTypeError(f"cannot make a graphc tensor from {type(value).__name__} "
                     f"data of NumPy dtype {arr.dtype}")
