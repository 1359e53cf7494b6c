"""Graph IR: :class:`Graph`, :class:`Operation`, :class:`Tensor`, the
default-graph stack, name scopes, control dependencies and subgraphs.

The graph is the single source of truth: autodiff, passes, dumps, export and
every backend read these objects. Creation order is a valid topological order
(an op can only consume tensors that already exist), which backends use as
their schedule.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from . import shapes as _shapes
from .errors import DTypeError, GraphMismatchError, InvalidArgumentError, ShapeError

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
# Files inside the package that are user-level code (their ops should point there).
_USER_CODE_IN_PACKAGE = {os.path.join(_PACKAGE_DIR, "demo.py")}


class SourceLocation(NamedTuple):
    file: str
    line: int
    function: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


_UNKNOWN_LOCATION = SourceLocation("<unknown>", 0, "<unknown>")


def user_source_location() -> SourceLocation:
    """The innermost stack frame that is not graphc's own code: the line of
    user code that created the op."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        path = os.path.abspath(filename)
        if (not path.startswith(_PACKAGE_DIR) or path in _USER_CODE_IN_PACKAGE) and not filename.startswith("<frozen"):
            return SourceLocation(filename, frame.f_lineno, frame.f_code.co_name)
        frame = frame.f_back
    return _UNKNOWN_LOCATION


# --------------------------------------------------------------------------
# Default graph stack
# --------------------------------------------------------------------------
class _DefaultStack(threading.local):
    def __init__(self) -> None:
        self.stack: List["Graph"] = []


_default_stack = _DefaultStack()
_global_graph: Optional["Graph"] = None
_global_lock = threading.Lock()


def get_default_graph() -> "Graph":
    """The graph new ops go to: the innermost ``with g.as_default()``, or the
    process-wide default graph."""
    if _default_stack.stack:
        return _default_stack.stack[-1]
    global _global_graph
    with _global_lock:
        if _global_graph is None:
            _global_graph = Graph()
        return _global_graph


def reset_default_graph() -> None:
    """Replace the process-wide default graph with a new, empty one."""
    if _default_stack.stack:
        raise InvalidArgumentError(
            "reset_default_graph() called inside a `with graph.as_default()` block; "
            "leave the block first")
    global _global_graph
    with _global_lock:
        _global_graph = Graph()


def _explicit_default_graph() -> Optional["Graph"]:
    return _default_stack.stack[-1] if _default_stack.stack else None


def graph_for_inputs(values: Sequence[Any]) -> "Graph":
    """Pick the graph an op with these inputs belongs to.

    Inside ``with g.as_default()`` that is ``g`` (tensors of g's enclosing
    graphs are captured when g is a subgraph). Outside any such block, an op
    whose inputs all live in one graph goes there, as in TF1. Tensors of two
    unrelated graphs never mix.
    """
    graphs = []
    for v in values:
        g = getattr(v, "graph", None)
        if g is not None and isinstance(v, (Tensor, Operation)) and g not in graphs:
            graphs.append(g)
    explicit = _explicit_default_graph()
    target = explicit if explicit is not None else None
    if target is None:
        if not graphs:
            return get_default_graph()
        # innermost graph: the one all others enclose
        for g in graphs:
            if all(o is g or g.is_enclosed_by(o) for o in graphs):
                target = g
                break
        if target is None:
            _raise_mismatch(graphs[0], graphs[1], values)
    for g in graphs:
        if g is not target and not target.is_enclosed_by(g):
            _raise_mismatch(target, g, values)
    return target


def _raise_mismatch(g1: "Graph", g2: "Graph", values: Sequence[Any]) -> None:
    names = [v.name for v in values if isinstance(v, (Tensor, Operation)) and v.graph is g2]
    raise GraphMismatchError(
        f"tensor {names[0] if names else '?'} belongs to {g2!r}, which is not the graph the op "
        f"is being built in ({g1!r}); tensors from two graphs cannot be mixed")


# --------------------------------------------------------------------------
# Graph
# --------------------------------------------------------------------------
class Graph:
    """A dataflow graph of Operations. Also a context manager factory for
    name scopes and control dependencies."""

    def __init__(self, outer: Optional["Graph"] = None) -> None:
        self._ops: List[Operation] = []
        self._ops_by_name: Dict[str, Operation] = {}
        self._names_in_use: Dict[str, int] = {}
        self._name_scope = ""
        self._control_stack: List[List[Operation]] = []
        self._variables: List[Any] = []
        self._collections: Dict[str, List[Any]] = {}
        self._lock = threading.RLock()
        self._finalized = False
        self.outer = outer
        # Set by autodiff while it builds adjoint ops: each new op records the
        # forward op it differentiates (for dumps and error messages).
        self._gradient_of: List["Operation"] = []

    def __repr__(self) -> str:
        return f"<gc.Graph at 0x{id(self):x}, {len(self._ops)} ops>"

    # ---- structure -------------------------------------------------------
    def is_enclosed_by(self, other: "Graph") -> bool:
        """True when ``other`` is an enclosing graph of this (sub)graph."""
        g = self.outer
        while g is not None:
            if g is other:
                return True
            g = g.outer
        return False

    @property
    def version(self) -> int:
        """Number of ops; grows whenever the graph changes (graphs only grow)."""
        return len(self._ops)

    def get_operations(self) -> List["Operation"]:
        return list(self._ops)

    def get_operation_by_name(self, name: str) -> "Operation":
        if not isinstance(name, str):
            raise TypeError(f"operation name must be a str, got {type(name).__name__}")
        if ":" in name:
            raise InvalidArgumentError(f"{name!r} looks like a tensor name; use get_tensor_by_name")
        try:
            return self._ops_by_name[name]
        except KeyError:
            raise KeyError(f"no operation named {name!r} in {self!r}") from None

    def get_tensor_by_name(self, name: str) -> "Tensor":
        if not isinstance(name, str):
            raise TypeError(f"tensor name must be a str, got {type(name).__name__}")
        op_name, sep, index = name.rpartition(":")
        if not sep or not index.isdigit():
            raise InvalidArgumentError(
                f"{name!r} is not a tensor name; tensor names look like 'op_name:0'")
        op = self.get_operation_by_name(op_name)
        i = int(index)
        if i >= len(op.outputs):
            raise KeyError(f"operation {op_name!r} has {len(op.outputs)} outputs; {name!r} does not exist")
        return op.outputs[i]

    def as_graph_element(self, obj: Any) -> Union["Tensor", "Operation"]:
        """Resolve a Tensor, Operation, Variable or name to an element of this graph."""
        if isinstance(obj, str):
            if ":" in obj:
                return self.get_tensor_by_name(obj)
            return self.get_operation_by_name(obj)
        if hasattr(obj, "_as_graph_element"):
            obj = obj._as_graph_element()
        if isinstance(obj, (Tensor, Operation)):
            if obj.graph is not self:
                raise GraphMismatchError(f"{obj.name} belongs to {obj.graph!r}, not to {self!r}")
            return obj
        raise TypeError(f"cannot interpret {type(obj).__name__} {obj!r} as an element of a graph")

    def finalize(self) -> None:
        """Make the graph read-only (new ops raise)."""
        self._finalized = True

    @property
    def finalized(self) -> bool:
        return self._finalized

    # ---- collections -----------------------------------------------------
    def add_to_collection(self, name: str, value: Any) -> None:
        self._collections.setdefault(name, []).append(value)

    def get_collection(self, name: str) -> List[Any]:
        return list(self._collections.get(name, []))

    # ---- contexts --------------------------------------------------------
    @contextlib.contextmanager
    def as_default(self) -> Iterator["Graph"]:
        _default_stack.stack.append(self)
        try:
            yield self
        finally:
            _default_stack.stack.pop()

    @contextlib.contextmanager
    def name_scope(self, name: Optional[str]) -> Iterator[str]:
        """Prefix the names of ops created inside with ``name/``. A name that
        ends in ``/`` re-enters that exact scope; ``None`` or ``""`` resets to
        the root scope. Yields the full scope string (ending in ``/``)."""
        old = self._name_scope
        if not name:
            new = ""
        elif name.endswith("/"):
            new = name
        else:
            new = self.unique_name(name) + "/"
        self._name_scope = new
        try:
            yield new
        finally:
            self._name_scope = old

    @contextlib.contextmanager
    def control_dependencies(self, control_inputs: Optional[Sequence[Any]]) -> Iterator[None]:
        """Ops created inside run after every op in ``control_inputs``
        (Operations, Tensors or Variables). ``None`` clears outer dependencies."""
        if control_inputs is None:
            saved, self._control_stack = self._control_stack, []
            try:
                yield
            finally:
                self._control_stack = saved
            return
        ops = []
        for c in control_inputs:
            if hasattr(c, "_as_graph_element"):
                c = c._as_graph_element()
            if isinstance(c, Tensor):
                c = c.op
            if not isinstance(c, Operation):
                raise TypeError(f"control_dependencies takes Operations or Tensors, got {c!r}")
            if c.graph is not self and not self.is_enclosed_by(c.graph):
                raise GraphMismatchError(f"control input {c.name} belongs to {c.graph!r}, not {self!r}")
            ops.append(c)
        self._control_stack.append(ops)
        try:
            yield
        finally:
            self._control_stack.pop()

    def current_control_inputs(self) -> List["Operation"]:
        seen: List[Operation] = []
        for frame in self._control_stack:
            for op in frame:
                if op.graph is self and op not in seen:
                    seen.append(op)
        return seen

    @contextlib.contextmanager
    def gradient_of(self, op: "Operation") -> Iterator[None]:
        """Ops created inside are marked as part of ``op``'s adjoint."""
        self._gradient_of.append(op)
        try:
            yield
        finally:
            self._gradient_of.pop()

    # ---- naming ----------------------------------------------------------
    def unique_name(self, name: str, mark_used: bool = True) -> str:
        """``scope/name``, suffixed ``_1``, ``_2``... when already taken (TF1 rule)."""
        full = self._name_scope + name
        key = full.lower()
        i = self._names_in_use.get(key, 0)
        if mark_used:
            self._names_in_use[key] = i + 1
        if i == 0:
            return full
        candidate = f"{key}_{i}"
        while candidate in self._names_in_use:
            i += 1
            candidate = f"{key}_{i}"
        if mark_used:
            self._names_in_use[candidate] = 1
        return f"{full}_{i}"

    def get_name_scope(self) -> str:
        return self._name_scope.rstrip("/")

    # ---- op creation -----------------------------------------------------
    def _resolve_input(self, t: "Tensor") -> "Tensor":
        if t.graph is self:
            return t
        if self.is_enclosed_by(t.graph):
            return self.capture(t)
        raise GraphMismatchError(
            f"tensor {t.name} belongs to {t.graph!r}, not to {self!r}; "
            "tensors from two graphs cannot be mixed")

    def capture(self, t: "Tensor") -> "Tensor":
        raise GraphMismatchError(f"tensor {t.name} belongs to {t.graph!r}, not to {self!r}")

    def create_op(self, op_type: str, inputs: Sequence["Tensor"], attrs: Optional[Dict[str, Any]] = None,
                  name: Optional[str] = None, source: Optional[SourceLocation] = None,
                  exact_name: bool = False) -> "Operation":
        """Create an op of a registered type: check inputs, infer output
        shapes/dtypes, record the user's source line. Errors name the op."""
        if self._finalized:
            raise InvalidArgumentError(f"{self!r} is finalized; no op can be added")
        from .ops.registry import get as get_opdef  # late: ops import this module
        opdef = get_opdef(op_type)
        attrs = dict(attrs or {})
        for t in inputs:
            if not isinstance(t, Tensor):
                raise TypeError(f"{op_type}: inputs must be Tensors, got {type(t).__name__}")
        with self._lock:
            inputs = [self._resolve_input(t) for t in inputs]
            source = source or user_source_location()
            if exact_name:
                if not name or name in self._ops_by_name:
                    raise InvalidArgumentError(f"operation name {name!r} is empty or already used")
                full_name = name
            else:
                full_name = self.unique_name(name or op_type, mark_used=False)
            try:
                specs = opdef.infer(*inputs, **attrs)
            except (ShapeError, DTypeError, InvalidArgumentError) as exc:
                raise type(exc)(_describe_failure(opdef, full_name, inputs, source, str(exc))) from None
            specs = normalize_output_specs(specs)
            if exact_name:
                # later unique_name() calls must not hand this name out again
                key = full_name.lower()
                self._names_in_use[key] = max(self._names_in_use.get(key, 0), 1)
            else:
                full_name = self.unique_name(name or op_type)
            op = Operation(self, op_type, full_name, inputs, attrs, source, opdef)
            op.control_inputs = tuple(self.current_control_inputs())
            op.outputs = tuple(Tensor(op, i, shape, dtype) for i, (shape, dtype) in enumerate(specs))
            if self._gradient_of:
                op.gradient_of = self._gradient_of[-1]
            self._ops.append(op)
            self._ops_by_name[full_name] = op
        return op


def normalize_output_specs(specs: Any) -> List[Tuple[Any, np.dtype]]:
    """A shape rule returns one ``(shape, dtype)`` or a list of them."""
    if isinstance(specs, tuple) and len(specs) == 2 and isinstance(specs[1], np.dtype):
        return [specs]
    return list(specs)


def _describe_failure(opdef: Any, name: str, inputs: Sequence["Tensor"],
                      source: SourceLocation, reason: str) -> str:
    parts = []
    for i, t in enumerate(inputs):
        label = opdef.inputs[i] if i < len(opdef.inputs) else f"input{i}"
        parts.append(f"{label}={_shapes.fmt(t.shape)} {t.dtype.name}")
    detail = f" (inputs: {', '.join(parts)})" if parts else ""
    return f"{opdef.name} op '{name}' created at {source}: {reason}{detail}"


def ancestors(tensors: Sequence["Tensor"], control: bool = True, ops: Sequence["Operation"] = ()) -> "set":
    """Every op the given tensors (and ``ops``) depend on, through data
    inputs and, with ``control``, control inputs; themselves included."""
    seen: set = set()
    stack = [t.op for t in tensors] + list(ops)
    while stack:
        op = stack.pop()
        if op in seen:
            continue
        seen.add(op)
        stack.extend(t.op for t in op.inputs)
        if control:
            stack.extend(op.control_inputs)
    return seen


# --------------------------------------------------------------------------
# Subgraphs (bodies of cond / while_loop)
# --------------------------------------------------------------------------
class FuncGraph(Graph):
    """A subgraph with explicit arguments and results. Tensors of enclosing
    graphs used inside are *captured*: each becomes an extra argument, and the
    op that owns the subgraph passes the outer tensor in as an input. So a
    control-flow op's inputs are all it depends on, as for any other op."""

    def __init__(self, name: str, outer: Graph) -> None:
        super().__init__(outer=outer)
        self.name = name
        self.inputs: List[Tensor] = []
        self.outputs: List[Tensor] = []
        self.captures: List[Tuple[Tensor, Tensor]] = []   # (outer tensor, inner argument)
        self._capture_map: Dict[Tensor, Tensor] = {}

    def __repr__(self) -> str:
        return f"<gc.FuncGraph {self.name!r}, {len(self._ops)} ops>"

    def add_arg(self, shape: _shapes.Shape, dtype: np.dtype, name: str = "arg") -> "Tensor":
        op = self.create_op("arg", [], {"shape": shape, "dtype": dtype, "index": len(self.inputs)}, name=name)
        self.inputs.append(op.outputs[0])
        return op.outputs[0]

    def capture(self, t: "Tensor") -> "Tensor":
        if t in self._capture_map:
            return self._capture_map[t]
        outer_t = t if t.graph is self.outer else self.outer._resolve_input(t)
        # A tensor two levels up and its capture in the enclosing subgraph are
        # one value: give them one argument.
        inner = self._capture_map.get(outer_t)
        if inner is None:
            inner = self.add_arg(t.shape, t.dtype, name="capture")
            self._capture_map[outer_t] = inner
            self.captures.append((outer_t, inner))
        self._capture_map[t] = inner
        return inner


# --------------------------------------------------------------------------
# Operation and Tensor
# --------------------------------------------------------------------------
class Operation:
    """A node of the graph: op type, inputs, attributes, outputs."""

    __slots__ = ("graph", "type", "name", "inputs", "attrs", "outputs", "control_inputs",
                 "source", "opdef", "gradient_of", "__weakref__")

    def __init__(self, graph: Graph, op_type: str, name: str, inputs: Sequence["Tensor"],
                 attrs: Dict[str, Any], source: SourceLocation, opdef: Any) -> None:
        self.graph = graph
        self.type = op_type
        self.name = name
        self.inputs: Tuple[Tensor, ...] = tuple(inputs)
        self.attrs = attrs
        self.outputs: Tuple[Tensor, ...] = ()
        self.control_inputs: Tuple[Operation, ...] = ()
        self.source = source
        self.opdef = opdef
        self.gradient_of: Optional[Operation] = None

    def __repr__(self) -> str:
        return f"<gc.Operation '{self.name}' type={self.type}>"

    @property
    def values(self) -> Tuple["Tensor", ...]:
        return self.outputs

    @property
    def is_stateful(self) -> bool:
        """Stateful ops are never merged, folded or reordered across each other."""
        if self.opdef.stateful:
            return True
        for sub in self.subgraphs():
            if any(op.is_stateful for op in sub._ops):
                return True
        return False

    def subgraphs(self) -> List[FuncGraph]:
        return [v for v in self.attrs.values() if isinstance(v, FuncGraph)]

    def describe(self) -> str:
        """'type op 'name' created at file:line' for error messages."""
        text = f"{self.type} op '{self.name}' created at {self.source}"
        if self.gradient_of is not None:
            text += f" (gradient of {self.gradient_of.type} op '{self.gradient_of.name}' created at {self.gradient_of.source})"
        return text

    def run(self, feed_dict: Optional[Dict[Any, Any]] = None, session: Any = None) -> None:
        from .session import _session_for
        _session_for(self.graph, session).run(self, feed_dict)


def _ops_module():
    # Tensor operators call the op functions; imported late to keep the
    # graph module free of op definitions.
    from . import ops
    return ops


class Tensor:
    """A symbolic value: output ``value_index`` of an Operation."""

    __slots__ = ("op", "value_index", "_shape", "dtype", "__weakref__")
    # Let NumPy hand `ndarray <op> Tensor` to our reflected operators.
    __array_ufunc__ = None

    def __init__(self, op: Operation, value_index: int, shape: _shapes.Shape, dtype: np.dtype) -> None:
        self.op = op
        self.value_index = value_index
        self._shape = _shapes.as_shape(shape)
        self.dtype = np.dtype(dtype)

    @property
    def shape(self) -> _shapes.Shape:
        return self._shape

    def get_shape(self) -> _shapes.Shape:
        return self._shape

    @property
    def ndim(self) -> Optional[int]:
        return None if self._shape is None else len(self._shape)

    @property
    def name(self) -> str:
        return f"{self.op.name}:{self.value_index}"

    @property
    def graph(self) -> Graph:
        return self.op.graph

    def consumers(self) -> List[Operation]:
        return [op for op in self.graph._ops if any(t is self for t in op.inputs)]

    def __repr__(self) -> str:
        return f"<gc.Tensor '{self.name}' shape={_shapes.fmt(self._shape)} dtype={self.dtype.name}>"

    def __bool__(self) -> bool:
        raise TypeError(
            f"using graphc Tensor {self.name} as a Python bool is not allowed: its value is only "
            "known when the graph runs. Use gc.cond / gc.where for data-dependent choices.")

    def __iter__(self):
        raise TypeError(f"graphc Tensor {self.name} is not iterable; use gc.split or indexing")

    def __len__(self) -> int:
        if self._shape is None or not self._shape or self._shape[0] is None:
            raise TypeError(f"len() of Tensor {self.name} with shape {_shapes.fmt(self._shape)} is not known statically")
        return self._shape[0]

    def eval(self, feed_dict: Optional[Dict[Any, Any]] = None, session: Any = None) -> np.ndarray:
        from .session import _session_for
        return _session_for(self.graph, session).run(self, feed_dict)

    # ---- operators ---------------------------------------------------------
    def __add__(self, o): return _ops_module().add(self, o)
    def __radd__(self, o): return _ops_module().add(o, self)
    def __sub__(self, o): return _ops_module().subtract(self, o)
    def __rsub__(self, o): return _ops_module().subtract(o, self)
    def __mul__(self, o): return _ops_module().multiply(self, o)
    def __rmul__(self, o): return _ops_module().multiply(o, self)
    def __truediv__(self, o): return _ops_module().divide(self, o)
    def __rtruediv__(self, o): return _ops_module().divide(o, self)
    def __floordiv__(self, o): return _ops_module().floordiv(self, o)
    def __rfloordiv__(self, o): return _ops_module().floordiv(o, self)
    def __mod__(self, o): return _ops_module().mod(self, o)
    def __rmod__(self, o): return _ops_module().mod(o, self)
    def __pow__(self, o): return _ops_module().pow(self, o)
    def __rpow__(self, o): return _ops_module().pow(o, self)
    def __matmul__(self, o): return _ops_module().matmul(self, o)
    def __rmatmul__(self, o): return _ops_module().matmul(o, self)
    def __neg__(self): return _ops_module().negative(self)
    def __pos__(self): return self
    def __abs__(self): return _ops_module().abs(self)
    def __invert__(self): return _ops_module().logical_not(self)
    def __and__(self, o): return _ops_module().logical_and(self, o)
    def __rand__(self, o): return _ops_module().logical_and(o, self)
    def __or__(self, o): return _ops_module().logical_or(self, o)
    def __ror__(self, o): return _ops_module().logical_or(o, self)
    def __lt__(self, o): return _ops_module().less(self, o)
    def __le__(self, o): return _ops_module().less_equal(self, o)
    def __gt__(self, o): return _ops_module().greater(self, o)
    def __ge__(self, o): return _ops_module().greater_equal(self, o)
    def __getitem__(self, key): return _ops_module().getitem(self, key)
    # == and != stay identity-based (as in TF1) so Tensors work as dict keys
    # in feed_dicts; use gc.equal / gc.not_equal for elementwise comparison.
    __hash__ = object.__hash__
