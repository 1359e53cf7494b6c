"""Core plumbing for op functions: converting Python values to Tensors,
creating ops in the right graph, and the source/identity ops (constant,
placeholder, identity, no_op, group)."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional, Sequence, Tuple, Union

import numpy as np

from .. import dtypes as _dt
from .. import shapes as _shapes
from ..errors import DTypeError, ShapeError
from ..graph import Graph, Operation, Tensor, get_default_graph, graph_for_inputs
from . import registry
from .registry import LAYOUT, SOURCE, define

__all__ = ["constant", "placeholder", "placeholder_with_default", "identity", "stop_gradient",
           "no_op", "group", "convert_to_tensor"]

TensorLike = Any


def is_tensor_like(value: Any) -> bool:
    return isinstance(value, Tensor) or hasattr(value, "_as_tensor")


def apply_op(op_type: str, inputs: Sequence[Any], attrs: Optional[dict] = None,
             name: Optional[str] = None) -> Union[Tensor, Tuple[Tensor, ...], Operation]:
    """Create an op in the graph its inputs belong to and return its
    output(s): the Tensor, a tuple of Tensors, or the Operation if it has none."""
    graph = graph_for_inputs(inputs)
    tensors = [convert_to_tensor(v, graph=graph) for v in inputs]
    op = graph.create_op(op_type, tensors, attrs, name=name)
    if not op.outputs:
        return op
    if len(op.outputs) == 1 and registry.get(op_type).num_outputs == 1:
        return op.outputs[0]
    return op.outputs


@contextlib.contextmanager
def op_scope(name: str, values: Sequence[Any] = ()) -> Iterator[str]:
    """Name scope for a composite op, opened in the graph its inputs belong to."""
    graph = graph_for_inputs(values)
    with graph.as_default(), graph.name_scope(name) as scope:
        yield scope


def convert_to_tensor(value: Any, dtype: Any = None, name: Optional[str] = None,
                      graph: Optional[Graph] = None) -> Tensor:
    """Tensors pass through (dtype checked); Variables give their value;
    Python/NumPy data become constants (Python floats float32, ints int32)."""
    if isinstance(value, Tensor):
        if dtype is not None and value.dtype != _dt.as_dtype(dtype):
            raise DTypeError(f"expected a {_dt.as_dtype(dtype).name} tensor, got {value.name} of dtype {value.dtype.name}")
        return value
    if hasattr(value, "_as_tensor"):
        return convert_to_tensor(value._as_tensor(), dtype)
    if isinstance(value, (list, tuple)) and any(is_tensor_like(v) for v in _flatten(value)):
        from .shape import stack
        # plain numbers are left to stack, which gives them the tensors' dtype
        parts = [convert_to_tensor(v, dtype, graph=graph)
                 if dtype is not None or is_tensor_like(v)
                 or (isinstance(v, (list, tuple)) and any(is_tensor_like(u) for u in _flatten(v))) else v
                 for v in value]
        return stack(parts, axis=0)
    return constant(value, dtype=dtype, name=name or "Const", graph=graph)


def _flatten(value):
    for v in value:
        if isinstance(v, (list, tuple)):
            yield from _flatten(v)
        else:
            yield v


def convert_operands(*values: Any) -> Tuple[Tensor, ...]:
    """Convert the operands of an elementwise op to Tensors of one dtype.

    Tensors promote like NumPy; Python scalars are weak and take the tensor
    operands' dtype (``x_f32 * 2.0`` stays float32, ``x_i32 * 0.5`` becomes
    float32: a change of kind goes to the default dtype of the new kind).
    """
    graph = graph_for_inputs(values)
    strong = [v if isinstance(v, Tensor) else (convert_to_tensor(v, graph=graph) if not _dt.is_python_scalar(v) else None)
              for v in values]
    strong_dtypes = [t.dtype for t in strong if t is not None]
    if strong_dtypes:
        dtype = _dt.promote(*strong_dtypes)
        for v, t in zip(values, strong):
            if t is None:
                # a weak scalar only changes the dtype when it changes the kind
                dtype = _dt.weak_scalar_dtype(v, dtype)
    else:
        dtype = _scalars_dtype(values)
    out = []
    for v, t in zip(values, strong):
        if t is None:
            out.append(constant(v, dtype=dtype, graph=graph))
        elif t.dtype != dtype:
            from .elementwise import cast
            out.append(cast(t, dtype))
        else:
            out.append(t)
    return tuple(out)


def _scalars_dtype(values: Sequence[Any]) -> np.dtype:
    """Dtype of an op whose operands are all Python scalars. They are all
    weak, so the widest kind wins at its default dtype: ``1 + 2.0`` is
    float32 (not NumPy's float64 from int32 + float32)."""
    dts = [_dt.default_dtype_for(v) for v in values]
    if any(d.kind == "f" for d in dts):
        return _dt.DEFAULT_FLOAT
    ints = [d for d in dts if d.kind in "iu"]
    return _dt.promote(*ints) if ints else _dt.bool_


# ---- constant --------------------------------------------------------------
def _infer_const(*, value: np.ndarray):
    return value.shape, value.dtype


@define("const", lowering=SOURCE, attrs=("value",), dtypes="all", infer=_infer_const,
        differentiable=False, doc="A constant array, stored in the graph.")
def _const(*, value):
    return value


def constant(value: Any, dtype: Any = None, shape: Any = None, name: Optional[str] = None,
             graph: Optional[Graph] = None) -> Tensor:
    """A constant tensor. Python floats give float32 and ints int32 (TF's
    defaults); NumPy arrays keep their dtype. ``shape`` broadcasts/reshapes
    the value as in TF."""
    if isinstance(value, Tensor):
        raise TypeError(f"gc.constant takes Python or NumPy data, not the Tensor {value.name}")
    target = _dt.as_dtype(dtype) if dtype is not None else _dt.default_dtype_for(value)
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise DTypeError(f"cannot make a constant from {type(value).__name__} data of NumPy dtype {arr.dtype}")
    if arr.dtype.kind == "f" and target.kind in "iub" and arr.size and not np.all(np.isfinite(arr) & (arr == np.round(arr))):
        raise DTypeError(f"constant values {arr.ravel()[:4]}... are not exactly representable as {target.name}")
    if target.kind in "iu" and arr.dtype.kind in "iuf" and arr.size:
        # astype would wrap silently (x_i32 + 2**40 would add 0)
        info = np.iinfo(target)
        if arr.min() < info.min or arr.max() > info.max:
            raise DTypeError(f"constant values in [{arr.min()}, {arr.max()}] do not fit in {target.name}")
    arr = arr.astype(target, copy=True)
    if shape is not None:
        shape = _shapes.as_shape(shape)
        if not _shapes.is_fully_defined(shape):
            raise ShapeError(f"constant shape {shape} must be fully defined")
        if arr.size == _shapes.num_elements(shape) and arr.ndim > 0:
            arr = arr.reshape(shape)
        else:
            try:
                arr = np.broadcast_to(arr, shape).copy()
            except ValueError:
                raise ShapeError(f"cannot make a constant of shape {shape} from a value of shape {arr.shape}") from None
    arr.setflags(write=False)
    graph = graph or get_default_graph()
    return graph.create_op("const", [], {"value": arr}, name=name or "Const").outputs[0]


# ---- placeholder -------------------------------------------------------------
def _infer_placeholder(*, dtype, shape):
    return shape, dtype


@define("placeholder", lowering=SOURCE, attrs=("dtype", "shape"), dtypes="all",
        infer=_infer_placeholder, differentiable=False,
        doc="A value fed at run time; `None` dims take the fed size.")
def _placeholder(*, dtype, shape):
    # Session.run refuses to run a graph whose placeholders are not fed, so
    # reaching this is a bug in the executor, not a user error.
    raise AssertionError("placeholder evaluated without a feed")


def placeholder(dtype: Any, shape: Any = None, name: Optional[str] = None) -> Tensor:
    """A tensor whose value must be fed to ``Session.run``. ``shape=None``
    means any shape; ``None`` dims mean any size along that dim."""
    return get_default_graph().create_op(
        "placeholder", [], {"dtype": _dt.as_dtype(dtype), "shape": _shapes.as_shape(shape)},
        name=name or "Placeholder").outputs[0]


def _infer_placeholder_with_default(x, *, shape):
    if shape is not None and x.shape is not None:
        if len(shape) != len(x.shape) or any(s is not None and d is not None and s != d for s, d in zip(shape, x.shape)):
            raise ShapeError(f"default value of shape {_shapes.fmt(x.shape)} does not fit shape {_shapes.fmt(shape)}")
    return shape, x.dtype


@define("placeholder_with_default", lowering=LAYOUT, inputs=("input",), attrs=("shape",), dtypes="all",
        infer=_infer_placeholder_with_default,
        doc="Passes `input` through unless a value is fed.")
def _placeholder_with_default(x, *, shape):
    return x


def placeholder_with_default(input: Any, shape: Any, name: Optional[str] = None) -> Tensor:
    return apply_op("placeholder_with_default", [input], {"shape": _shapes.as_shape(shape)},
                    name=name or "PlaceholderWithDefault")


# ---- subgraph arguments --------------------------------------------------------
@define("arg", lowering=SOURCE, attrs=("shape", "dtype", "index"), dtypes="all",
        infer=lambda *, shape, dtype, index: (shape, dtype), differentiable=False,
        doc="Argument `index` of a subgraph (cond branch, loop body).")
def _arg(*, shape, dtype, index):
    raise AssertionError("subgraph argument evaluated without a value")


# ---- identity / grouping ---------------------------------------------------------
@define("identity", lowering=LAYOUT, inputs=("input",), dtypes="all",
        infer=lambda x: (x.shape, x.dtype), doc="Returns its input.")
def _identity(x):
    return x


def identity(input: Any, name: Optional[str] = None) -> Tensor:
    return apply_op("identity", [input], name=name or "Identity")


@define("stop_gradient", lowering=LAYOUT, inputs=("input",), dtypes="all",
        infer=lambda x: (x.shape, x.dtype), differentiable=False,
        doc="Returns its input; no gradient flows through it.")
def _stop_gradient(x):
    return x


def stop_gradient(input: Any, name: Optional[str] = None) -> Tensor:
    """Identity in the forward pass; blocks gradients (like torch's detach)."""
    return apply_op("stop_gradient", [input], name=name or "StopGradient")


@define("no_op", lowering=SOURCE, infer=lambda: [], num_outputs=0, differentiable=False,
        doc="Does nothing; used with control dependencies (gc.group).")
def _no_op():
    return ()


def no_op(name: Optional[str] = None) -> Operation:
    return get_default_graph().create_op("no_op", [], name=name or "NoOp")


def group(*inputs: Any, name: Optional[str] = None) -> Operation:
    """One op that runs all of ``inputs`` (ops, tensors, or lists of them)."""
    flat = []
    for i in inputs:
        if isinstance(i, (list, tuple)):
            flat.extend(i)
        else:
            flat.append(i)
    graph = graph_for_inputs([f._as_graph_element() if hasattr(f, "_as_graph_element") else f for f in flat])
    with graph.control_dependencies(flat):
        return graph.create_op("no_op", [], name=name or "group_deps")


# ---- gradient rules ----------------------------------------------------------------------
def _grad_rules() -> None:
    from .registry import gradient
    gradient("identity")(lambda op, g: [g])
    gradient("placeholder_with_default")(lambda op, g: [g])


_grad_rules()
