"""Elementwise ops: NumPy broadcasting, NumPy promotion, weak Python scalars.

One table row per op: name, NumPy reference, accepted dtypes, whether a
gradient flows. The public functions are generated from the table.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from .. import dtypes as _dt
from ..errors import DTypeError
from ..graph import Tensor
from . import registry
from .core import apply_op, convert_operands, convert_to_tensor
from .registry import ELEMENTWISE, OpDef
from .rules import broadcast_same, require_dtype, unary_float, unary_same, unary_to_bool

__all__ = []


def _export(fn: Callable) -> Callable:
    __all__.append(fn.__name__)
    globals()[fn.__name__] = fn
    return fn


def _erf(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf
    return erf(x).astype(x.dtype, copy=False)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # exp(-|x|) never overflows; both branches are exact formulations.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def _round_half_even(x: np.ndarray) -> np.ndarray:
    return np.round(x)


def _rsqrt(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return (1 / np.sqrt(x)).astype(x.dtype, copy=False)


def _reciprocal(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return (np.ones((), x.dtype) / x).astype(x.dtype, copy=False)


FLOAT = "float"
NUM = "numeric"
SIGNED = "signed"
ANY = "all"
BOOL = "bool"
_ALLOWED = {FLOAT: _dt.FLOATS, NUM: _dt.NUMERIC, SIGNED: _dt.NUMERIC, ANY: _dt.ALL, BOOL: (_dt.bool_,)}

# name, reference, dtypes, differentiable, doc
UNARY = [
    ("negative", np.negative, NUM, True, "-x"),
    ("abs", np.abs, NUM, True, "|x|"),
    ("sign", np.sign, NUM, False, "-1, 0 or 1 (gradient is zero)"),
    ("square", np.square, NUM, True, "x*x"),
    ("exp", np.exp, FLOAT, True, "e**x"),
    ("log", np.log, FLOAT, True, "natural logarithm"),
    ("log1p", np.log1p, FLOAT, True, "log(1+x), accurate near 0"),
    ("expm1", np.expm1, FLOAT, True, "exp(x)-1, accurate near 0"),
    ("sqrt", np.sqrt, FLOAT, True, "square root"),
    ("rsqrt", _rsqrt, FLOAT, True, "1/sqrt(x)"),
    ("reciprocal", _reciprocal, FLOAT, True, "1/x"),
    ("sin", np.sin, FLOAT, True, "sine"),
    ("cos", np.cos, FLOAT, True, "cosine"),
    ("tan", np.tan, FLOAT, True, "tangent"),
    ("tanh", np.tanh, FLOAT, True, "hyperbolic tangent"),
    ("sigmoid", _sigmoid, FLOAT, True, "1/(1+exp(-x)), overflow-free"),
    ("erf", _erf, FLOAT, True, "error function"),
    ("floor", np.floor, FLOAT, False, "round down (gradient is zero)"),
    ("ceil", np.ceil, FLOAT, False, "round up (gradient is zero)"),
    ("round", _round_half_even, FLOAT, False, "round half to even, like NumPy and TF (gradient is zero)"),
]

# name, reference, dtypes, result dtype (None: input dtype), differentiable, doc
BINARY = [
    ("add", np.add, NUM, None, True, "x + y"),
    ("subtract", np.subtract, NUM, None, True, "x - y"),
    ("multiply", np.multiply, NUM, None, True, "x * y"),
    ("divide", np.divide, FLOAT, None, True, "x / y (true division; integer operands are promoted to float first)"),
    ("floordiv", np.floor_divide, NUM, None, False, "floor(x / y)"),
    ("mod", np.mod, NUM, None, False, "x - floor(x/y)*y (sign of y, like Python and NumPy)"),
    ("pow", np.power, NUM, None, True, "x ** y"),
    ("maximum", np.maximum, NUM, None, True, "elementwise max (NaN propagates)"),
    ("minimum", np.minimum, NUM, None, True, "elementwise min (NaN propagates)"),
    ("equal", np.equal, ANY, _dt.bool_, False, "x == y"),
    ("not_equal", np.not_equal, ANY, _dt.bool_, False, "x != y"),
    ("less", np.less, NUM, _dt.bool_, False, "x < y"),
    ("less_equal", np.less_equal, NUM, _dt.bool_, False, "x <= y"),
    ("greater", np.greater, NUM, _dt.bool_, False, "x > y"),
    ("greater_equal", np.greater_equal, NUM, _dt.bool_, False, "x >= y"),
    ("logical_and", np.logical_and, BOOL, None, False, "x and y"),
    ("logical_or", np.logical_or, BOOL, None, False, "x or y"),
]


def _quiet(fn: Callable, out_dtype: Optional[np.dtype]) -> Callable:
    # NumPy warns on log(0), x/0 etc.; graphc follows IEEE (inf/nan) silently
    # like TF, and keeps the declared dtype exactly.
    def compute(*arrays):
        with np.errstate(all="ignore"):
            r = fn(*arrays)
        return np.asarray(r, dtype=out_dtype or arrays[0].dtype)
    compute.__name__ = getattr(fn, "__name__", "compute")
    return compute


def _int_pow(x, y):
    if x.dtype.kind in "iu" and np.any(y < 0):
        raise ValueError("integers to negative integer powers are not allowed")
    return np.power(x, y)


def _int_div(fn):
    def compute(x, y):
        if x.dtype.kind in "iu" and np.any(y == 0):
            raise ZeroDivisionError("integer division by zero")
        return fn(x, y)
    return compute


for _name, _fn, _kind, _diff, _doc in UNARY:
    registry.register(OpDef(
        name=_name, compute=_quiet(_fn, None), lowering=ELEMENTWISE, inputs=("x",), dtypes=_kind,
        infer=unary_float if _kind == FLOAT else unary_same(_ALLOWED[_kind]),
        differentiable=_diff, doc=_doc))

    def _make_unary(op_name: str, doc: str) -> Callable:
        def fn(x: Any, name: Optional[str] = None) -> Tensor:
            return apply_op(op_name, [x], name=name or op_name)
        fn.__name__ = op_name
        fn.__doc__ = f"Elementwise {doc}."
        return fn
    _export(_make_unary(_name, _doc))

for _name, _fn, _kind, _res, _diff, _doc in BINARY:
    _ref = _fn
    if _name == "pow":
        _ref = _int_pow
    elif _name in ("floordiv", "mod"):
        _ref = _int_div(_fn)
    registry.register(OpDef(
        name=_name, compute=_quiet(_ref, _res), lowering=ELEMENTWISE, inputs=("x", "y"), dtypes=_kind,
        infer=broadcast_same(_ALLOWED[_kind], _res), differentiable=_diff, doc=_doc))

    def _make_binary(op_name: str, kind: str, doc: str) -> Callable:
        def fn(x: Any, y: Any, name: Optional[str] = None) -> Tensor:
            x, y = convert_operands(x, y)
            if kind == FLOAT and x.dtype.kind != "f":
                # true division of integers gives float64, as in NumPy and TF
                x, y = cast(x, _dt.float64), cast(y, _dt.float64)
            return apply_op(op_name, [x, y], name=name or op_name)
        fn.__name__ = op_name
        fn.__doc__ = f"Elementwise {doc}, with NumPy broadcasting."
        return fn
    _export(_make_binary(_name, _kind, _doc))

# TF spellings
sub = subtract
mul = multiply
truediv = divide
floor_div = floordiv
floormod = mod
__all__ += ["sub", "mul", "truediv", "floor_div", "floormod"]


# ---- cast ----------------------------------------------------------------------
def _infer_cast(x, *, dtype):
    return x.shape, dtype


@registry.define("cast", lowering=ELEMENTWISE, inputs=("x",), attrs=("dtype",), dtypes="all",
                 infer=_infer_cast, doc="Converts to `dtype` (float→int truncates toward zero, like C and TF).")
def _cast(x, *, dtype):
    with np.errstate(invalid="ignore"):
        return x.astype(dtype)


def cast(x: Any, dtype: Any, name: Optional[str] = None) -> Tensor:
    dtype = _dt.as_dtype(dtype)
    x = convert_to_tensor(x)
    if x.dtype == dtype:
        return x
    return apply_op("cast", [x], {"dtype": dtype}, name=name or "cast")


__all__.append("cast")


# ---- where / select --------------------------------------------------------------
def _infer_where(c, x, y):
    require_dtype(c, (_dt.bool_,), "condition")
    if x.dtype != y.dtype:
        raise DTypeError(f"x and y must have the same dtype, got {x.dtype.name} and {y.dtype.name}")
    from .. import shapes
    return shapes.broadcast(c.shape, x.shape, y.shape), x.dtype


@registry.define("where", lowering=ELEMENTWISE, inputs=("condition", "x", "y"), dtypes="all",
                 infer=_infer_where, doc="x where condition else y, all three broadcast.")
def _where(c, x, y):
    return np.where(c, x, y)


def where(condition: Any, x: Any = None, y: Any = None, name: Optional[str] = None) -> Tensor:
    """Elementwise choice ``condition ? x : y`` with broadcasting (TF2/NumPy
    semantics). The one-argument form (indices of true elements) has a
    data-dependent shape and is not supported in a static graph."""
    if x is None or y is None:
        raise DTypeError("gc.where(condition) without x and y (indices of true elements) has a "
                         "data-dependent shape and is not supported; pass x and y")
    condition = convert_to_tensor(condition)
    x, y = convert_operands(x, y)
    return apply_op("where", [condition, x, y], name=name or "where")


__all__.append("where")


# ---- composites -----------------------------------------------------------------------
def logical_not(x: Any, name: Optional[str] = None) -> Tensor:
    return apply_op("logical_not", [x], name=name or "logical_not")


registry.register(OpDef(name="logical_not", compute=_quiet(np.logical_not, _dt.bool_), lowering=ELEMENTWISE,
                        inputs=("x",), dtypes=BOOL, infer=unary_to_bool((_dt.bool_,)), differentiable=False,
                        doc="not x"))


def logical_xor(x: Any, y: Any, name: Optional[str] = None) -> Tensor:
    return not_equal(*convert_operands(x, y), name=name or "logical_xor")


def clip_by_value(t: Any, clip_value_min: Any, clip_value_max: Any, name: Optional[str] = None) -> Tensor:
    """min(max(t, lo), hi); the gradient passes where lo <= t <= hi."""
    t = convert_to_tensor(t)
    return minimum(maximum(t, clip_value_min), clip_value_max, name=name or "clip_by_value")


def is_nan(x: Any, name: Optional[str] = None) -> Tensor:
    x = convert_to_tensor(x)
    return not_equal(x, x, name=name or "is_nan")


def squared_difference(x: Any, y: Any, name: Optional[str] = None) -> Tensor:
    d = subtract(x, y)
    return multiply(d, d, name=name or "squared_difference")


def add_n(inputs, name: Optional[str] = None) -> Tensor:
    """Sum of a list of tensors of one shape."""
    inputs = list(inputs)
    if not inputs:
        raise ValueError("add_n needs at least one tensor")
    total = convert_to_tensor(inputs[0])
    for t in inputs[1:]:
        total = add(total, t)
    return identity_if_single(total, name)


def identity_if_single(t: Tensor, name: Optional[str]) -> Tensor:
    if name:
        from .core import identity
        return identity(t, name=name)
    return t


__all__ += ["logical_not", "logical_xor", "clip_by_value", "is_nan", "squared_difference", "add_n"]


# ---- gradient rules ------------------------------------------------------------------
# Each rule is written with op functions, so adjoints are ordinary graph and
# can be differentiated again. Binary rules sum the adjoint back over the
# axes broadcasting added (sum_to_shape_of).
def _grad_rules() -> None:
    from .grad_support import sum_to_shape_of as unb
    from .registry import gradient

    def unary(name, fn):
        gradient(name)(lambda op, g: [fn(op.inputs[0], op.outputs[0], g)])

    unary("negative", lambda x, y, g: negative(g))
    unary("abs", lambda x, y, g: multiply(g, sign(x)))
    unary("square", lambda x, y, g: multiply(g, multiply(x, 2)))
    unary("exp", lambda x, y, g: multiply(g, y))
    unary("log", lambda x, y, g: divide(g, x))
    unary("log1p", lambda x, y, g: divide(g, add(x, 1)))
    unary("expm1", lambda x, y, g: multiply(g, add(y, 1)))
    unary("sqrt", lambda x, y, g: divide(multiply(g, 0.5), y))
    unary("rsqrt", lambda x, y, g: multiply(multiply(g, -0.5), multiply(y, square(y))))
    unary("reciprocal", lambda x, y, g: negative(multiply(g, square(y))))
    unary("sin", lambda x, y, g: multiply(g, cos(x)))
    unary("cos", lambda x, y, g: negative(multiply(g, sin(x))))
    unary("tan", lambda x, y, g: multiply(g, add(square(y), 1)))
    unary("tanh", lambda x, y, g: multiply(g, subtract(1, square(y))))
    unary("sigmoid", lambda x, y, g: multiply(g, multiply(y, subtract(1, y))))
    unary("erf", lambda x, y, g: multiply(g, multiply(2 / np.sqrt(np.pi), exp(negative(square(x))))))

    @gradient("add")
    def _add(op, g):
        x, y = op.inputs
        return [unb(g, x), unb(g, y)]

    @gradient("subtract")
    def _sub(op, g):
        x, y = op.inputs
        return [unb(g, x), unb(negative(g), y)]

    @gradient("multiply")
    def _mul(op, g):
        x, y = op.inputs
        return [unb(multiply(g, y), x), unb(multiply(g, x), y)]

    @gradient("divide")
    def _div(op, g):
        x, y = op.inputs
        gx = divide(g, y)
        return [unb(gx, x), unb(negative(multiply(gx, divide(x, y))), y)]

    @gradient("pow")
    def _pow(op, g):
        x, y = op.inputs
        gx = multiply(g, multiply(y, pow(x, subtract(y, 1))))
        # d/dy x**y = x**y log x, taken as 0 where x <= 0 (as TF does)
        safe_log = where(greater(x, 0), log(where(greater(x, 0), x, 1)), 0)
        gy = multiply(g, multiply(op.outputs[0], safe_log))
        return [unb(gx, x), unb(gy, y)]

    def _select(name, pick_x):
        @gradient(name)
        def _rule(op, g):
            # Ties send the whole gradient to x, as TF does.
            x, y = op.inputs
            mask = pick_x(x, y)
            return [unb(where(mask, g, 0), x), unb(where(mask, 0, g), y)]

    _select("maximum", greater_equal)
    _select("minimum", less_equal)

    @gradient("cast")
    def _cast_grad(op, g):
        x = op.inputs[0]
        return [cast(g, x.dtype) if x.dtype.kind == "f" and g.dtype.kind == "f" else None]

    @gradient("where")
    def _where_grad(op, g):
        c, x, y = op.inputs
        return [None, unb(where(c, g, 0), x), unb(where(c, 0, g), y)]


_grad_rules()
