"""Variables: state owned by the Session, read and updated by ops.

Semantics (API.md, "Reads and writes in one run"): a variable read sees the
value at the start of the run unless it is ordered after an update by a data
or control dependency. The ``variable`` op is that start-of-run snapshot; a
``read_variable`` op (made when a Variable is used under
``control_dependencies`` or inside a cond/while body) reads the current value
when it runs. ``assign*`` ops write the new value and output it.
"""
from __future__ import annotations

from typing import Any, List, Optional

import numpy as np

from .. import dtypes as _dt
from .. import shapes as _shapes
from ..errors import DTypeError, InvalidArgumentError, ShapeError
from ..graph import FuncGraph, Graph, Tensor, _explicit_default_graph, get_default_graph, graph_for_inputs
from .core import constant, convert_to_tensor, group, is_tensor_like
from .registry import STATE, define

__all__ = ["Variable", "global_variables_initializer", "variables_initializer", "global_variables",
           "trainable_variables", "assign", "assign_add", "assign_sub"]

GLOBAL_VARIABLES = "variables"
TRAINABLE_VARIABLES = "trainable_variables"


def _infer_var(*, var, shape, dtype):
    return shape, dtype


@define("variable", lowering=STATE, attrs=("var", "shape", "dtype"), dtypes="all", infer=_infer_var,
        stateful=True, needs_context=True, doc="A variable's value at the start of the run.")
def _variable(ctx, *, var, shape, dtype):
    return ctx.read_start_value(var)


def _infer_read(handle, *, var, shape, dtype, ordered):
    return shape, dtype


# The input is the variable's snapshot: its value is not used, but it ties the
# read to the variable in the dataflow graph, so gradients w.r.t. the variable
# flow through reads inside loop bodies and under control dependencies.
# `ordered`: made under control dependencies, so it must see updates made
# before it; otherwise it sees the value at the start of the enclosing body
# execution (one loop iteration, one branch run), like the start-of-run rule.
@define("read_variable", lowering=STATE, inputs=("handle",), attrs=("var", "shape", "dtype", "ordered"),
        dtypes="all", infer=_infer_read, stateful=True, needs_context=True,
        doc="A variable's value inside a cond/while body (as of the body's start) or after the updates it is "
            "ordered after.")
def _read_variable(ctx, handle, *, var, shape, dtype, ordered):
    return ctx.read_variable(var) if ordered else ctx.read_frame_value(var)


def _infer_assign(value, *, var, shape, dtype):
    if value.dtype != dtype:
        raise DTypeError(f"cannot assign a {value.dtype.name} value to variable {var!r} of dtype {dtype.name}")
    try:
        _shapes.merge(value.shape, shape)
    except ShapeError:
        raise ShapeError(f"cannot assign a value of shape {_shapes.fmt(value.shape)} to variable "
                         f"{var!r} of shape {_shapes.fmt(shape)}") from None
    return shape, dtype


def _checked(var: str, shape, value: np.ndarray) -> np.ndarray:
    if tuple(value.shape) != tuple(shape):
        raise ShapeError(f"cannot assign a value of shape {value.shape} to variable {var!r} of shape {tuple(shape)}")
    return value


@define("assign", lowering=STATE, inputs=("value",), attrs=("var", "shape", "dtype"), dtypes="all",
        infer=_infer_assign, stateful=True, needs_context=True,
        doc="Writes `value` to the variable; outputs the new value.")
def _assign(ctx, value, *, var, shape, dtype):
    value = _checked(var, shape, np.array(value, dtype=dtype, copy=True))
    ctx.write_variable(var, value)
    return value


@define("assign_add", lowering=STATE, inputs=("value",), attrs=("var", "shape", "dtype"), dtypes="numeric",
        infer=_infer_assign, stateful=True, needs_context=True,
        doc="Adds `value` to the variable; outputs the new value.")
def _assign_add(ctx, value, *, var, shape, dtype):
    new = _checked(var, shape, np.asarray(ctx.read_variable(var) + value, dtype=dtype))
    ctx.write_variable(var, new)
    return new


@define("assign_sub", lowering=STATE, inputs=("value",), attrs=("var", "shape", "dtype"), dtypes="numeric",
        infer=_infer_assign, stateful=True, needs_context=True,
        doc="Subtracts `value` from the variable; outputs the new value.")
def _assign_sub(ctx, value, *, var, shape, dtype):
    new = _checked(var, shape, np.asarray(ctx.read_variable(var) - value, dtype=dtype))
    ctx.write_variable(var, new)
    return new


class Variable:
    """A tensor-valued state that persists across ``Session.run`` calls.

    ``v`` can be used wherever a Tensor is. Its name is ``"<name>:0"``;
    ``v.initializer`` sets it to ``initial_value``.
    """

    def __init__(self, initial_value: Any = None, name: Optional[str] = None, trainable: bool = True,
                 dtype: Any = None, shape: Any = None) -> None:
        if initial_value is None:
            raise InvalidArgumentError("gc.Variable needs an initial_value")
        graph = get_default_graph()
        if isinstance(initial_value, Tensor):
            graph = graph_for_inputs([initial_value])
        if isinstance(graph, FuncGraph):
            raise InvalidArgumentError(
                "gc.Variable cannot be created inside a cond/while_loop body; create it outside and use it inside")
        self._graph = graph
        with graph.as_default(), graph.control_dependencies(None), graph.name_scope(name or "Variable") as scope:
            self._name = scope[:-1]
            if callable(initial_value):
                initial_value = initial_value()
            if dtype is None or is_tensor_like(initial_value):
                init = convert_to_tensor(initial_value, name="initial_value")
            else:
                # constant() refuses values the dtype cannot hold exactly
                init = constant(initial_value, dtype=dtype, name="initial_value")
            if dtype is not None and init.dtype != _dt.as_dtype(dtype):
                from .elementwise import cast
                init = cast(init, dtype)
            var_shape = _shapes.as_shape(shape) if shape is not None else init.shape
            if not _shapes.is_fully_defined(var_shape):
                raise ShapeError(f"variable {self._name!r} needs a fully defined shape; its initial value has "
                                 f"shape {_shapes.fmt(init.shape)} (pass shape=...)")
            self._shape = var_shape
            self._dtype = init.dtype
            self._attrs = {"var": self._name, "shape": var_shape, "dtype": init.dtype}
            self._snapshot = graph.create_op("variable", [], dict(self._attrs), name=self._name,
                                             exact_name=True).outputs[0]
            self.initial_value = init
            self.initializer = graph.create_op("assign", [init], dict(self._attrs), name="Assign")
        self.trainable = bool(trainable)
        graph._variables.append(self)
        graph.add_to_collection(GLOBAL_VARIABLES, self)
        if self.trainable:
            graph.add_to_collection(TRAINABLE_VARIABLES, self)

    @classmethod
    def _from_ops(cls, snapshot: Any, initial_value: Tensor, initializer: Any, trainable: bool) -> "Variable":
        """Rebuild a Variable around ops that already exist (a loaded graph).
        Collections are restored by the loader, so this does not add to them."""
        var = cls.__new__(cls)
        attrs = snapshot.attrs
        var._graph = snapshot.graph
        var._name = snapshot.name
        var._shape = attrs["shape"]
        var._dtype = attrs["dtype"]
        var._attrs = {"var": attrs["var"], "shape": attrs["shape"], "dtype": attrs["dtype"]}
        var._snapshot = snapshot.outputs[0]
        var.initial_value = initial_value
        var.initializer = initializer
        var.trainable = bool(trainable)
        snapshot.graph._variables.append(var)
        return var

    # ---- identity ---------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._snapshot.name

    @property
    def op(self):
        return self._snapshot.op

    @property
    def graph(self) -> Graph:
        return self._graph

    @property
    def shape(self):
        return self._shape

    def get_shape(self):
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    def __repr__(self) -> str:
        return f"<gc.Variable '{self.name}' shape={_shapes.fmt(self._shape)} dtype={self._dtype.name}>"

    # ---- reading --------------------------------------------------------------------
    def _as_graph_element(self) -> Tensor:
        return self._snapshot

    def _as_tensor(self) -> Tensor:
        explicit = _explicit_default_graph()
        if explicit is not None and explicit is not self._graph and explicit.is_enclosed_by(self._graph):
            # inside a cond/while body: read the current value each time the
            # body runs (a loop sees the updates of earlier iterations)
            attrs = dict(self._attrs, ordered=bool(explicit.current_control_inputs()))
            return explicit.create_op("read_variable", [self._snapshot], attrs,
                                      name=self._name.rsplit("/", 1)[-1] + "_read").outputs[0]
        if self._graph.current_control_inputs():
            with self._graph.as_default():
                return self._graph.create_op("read_variable", [self._snapshot], dict(self._attrs, ordered=True),
                                             name=self._name + "/read").outputs[0]
        return self._snapshot

    def value(self) -> Tensor:
        return self._as_tensor()

    def read_value(self) -> Tensor:
        return self._as_tensor()

    # ---- writing ---------------------------------------------------------------------
    def _update(self, op_type: str, value: Any, name: Optional[str]) -> Tensor:
        graph = graph_for_inputs([value, self._snapshot])
        value = convert_to_tensor(value, graph=graph) if isinstance(value, Tensor) or hasattr(value, "_as_tensor") \
            else convert_to_tensor(np.asarray(value, dtype=self._dtype), graph=graph)
        if value.dtype != self._dtype:
            from .elementwise import cast
            if not np.can_cast(value.dtype, self._dtype, "same_kind"):
                from ..errors import DTypeError
                raise DTypeError(f"cannot {op_type} a {value.dtype.name} value to variable {self._name!r} "
                                 f"of dtype {self._dtype.name}")
            value = cast(value, self._dtype)
        return graph.create_op(op_type, [value], dict(self._attrs), name=name or f"{self._name.rsplit('/', 1)[-1]}_{op_type}").outputs[0]

    def assign(self, value: Any, name: Optional[str] = None) -> Tensor:
        """Op that writes ``value``; its output is the new value."""
        return self._update("assign", value, name)

    def assign_add(self, delta: Any, name: Optional[str] = None) -> Tensor:
        return self._update("assign_add", delta, name)

    def assign_sub(self, delta: Any, name: Optional[str] = None) -> Tensor:
        return self._update("assign_sub", delta, name)

    def eval(self, session: Any = None) -> np.ndarray:
        return self._snapshot.eval(session=session)

    def load(self, value: Any, session: Any = None) -> None:
        """Set the variable's value in ``session`` directly (no op is added)."""
        from ..session import _session_for
        _session_for(self._graph, session)._load_variable(self, value)

    # ---- Tensor-like operators ------------------------------------------------------------
    def __getattr__(self, item: str):
        # Operators and Tensor methods act on the variable's value.
        if item.startswith("__") or item in ("_snapshot", "_attrs", "_graph"):
            raise AttributeError(item)
        return getattr(self._as_tensor(), item)

    __hash__ = object.__hash__
    __array_ufunc__ = None


def _forward(method: str):
    def f(self, *args):
        return getattr(self._as_tensor(), method)(*args)
    f.__name__ = method
    return f


for _m in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__", "__rtruediv__",
           "__floordiv__", "__rfloordiv__", "__mod__", "__rmod__", "__pow__", "__rpow__", "__matmul__",
           "__rmatmul__", "__neg__", "__abs__", "__lt__", "__le__", "__gt__", "__ge__", "__getitem__",
           "__invert__", "__and__", "__or__", "__bool__", "__iter__"):
    setattr(Variable, _m, _forward(_m))


def global_variables(graph: Optional[Graph] = None) -> List[Variable]:
    return (graph or get_default_graph()).get_collection(GLOBAL_VARIABLES)


def trainable_variables(graph: Optional[Graph] = None) -> List[Variable]:
    return (graph or get_default_graph()).get_collection(TRAINABLE_VARIABLES)


def variables_initializer(var_list: List[Variable], name: str = "init"):
    """One op that runs the initializers of ``var_list``."""
    if not var_list:
        from .core import no_op
        return no_op(name=name)
    return group(*[v.initializer for v in var_list], name=name)


def global_variables_initializer():
    return variables_initializer(global_variables(), name="init")


def assign(ref: Variable, value: Any, name: Optional[str] = None) -> Tensor:
    return ref.assign(value, name=name)


def assign_add(ref: Variable, value: Any, name: Optional[str] = None) -> Tensor:
    return ref.assign_add(value, name=name)


def assign_sub(ref: Variable, value: Any, name: Optional[str] = None) -> Tensor:
    return ref.assign_sub(value, name=name)


# The output of an assign is its (new) value, so gradients pass through it
# to the assigned value, as through an identity.
def _grad_rules() -> None:
    from .elementwise import negative
    from .registry import gradient
    gradient("variable")(lambda op, g: [])   # a source: the adjoint stops at the variable
    gradient("assign")(lambda op, g: [g])
    gradient("read_variable")(lambda op, g: [g])
    gradient("assign_add")(lambda op, g: [g])
    gradient("assign_sub")(lambda op, g: [negative(g)])


_grad_rules()
