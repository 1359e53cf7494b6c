"""Functional tracing: ``gc.function``, ``gc.grad``, ``gc.value_and_grad``.

A Python function on Tensors is traced once per input signature (shapes and
dtypes) into its own Graph; the returned callable takes and returns NumPy
arrays. ``grad``/``value_and_grad`` trace the forward graph plus its adjoint.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import dtypes as _dt
from . import shapes as _shapes
from .errors import GradientError, InvalidArgumentError
from .graph import Graph, Tensor
from .session import _owned


@dataclass(frozen=True)
class TensorSpec:
    """Shape (None dims allowed) and dtype of a function argument."""
    shape: Any
    dtype: Any = _dt.float32
    name: Optional[str] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", _shapes.as_shape(self.shape))
        object.__setattr__(self, "dtype", _dt.as_dtype(self.dtype))


def _flatten(value: Any, out: List[Any]) -> Any:
    """Flatten nested list/tuple/dict of Tensors; returns a rebuild recipe."""
    if isinstance(value, dict):
        return ("dict", type(value), [(k, _flatten(v, out)) for k, v in value.items()])
    if isinstance(value, (list, tuple)):
        return ("seq", type(value), [_flatten(v, out) for v in value])
    out.append(value)
    return len(out) - 1


def _rebuild(recipe: Any, values: Sequence[Any]) -> Any:
    if isinstance(recipe, int):
        return values[recipe]
    kind, typ, items = recipe
    if kind == "dict":
        return typ((k, _rebuild(v, values)) for k, v in items)
    return typ(_rebuild(v, values) for v in items)


class _Trace:
    """One traced graph with its session, for one input signature."""

    def __init__(self, fn: Callable, specs: Sequence[TensorSpec], mode: str, argnums: Union[int, Tuple[int, ...]],
                 config: Any) -> None:
        from . import ops
        from .autodiff import gradients
        from .session import Session
        self.graph = Graph()
        with self.graph.as_default():
            self.inputs = [ops.placeholder(s.dtype, s.shape, name=s.name or f"arg{i}") for i, s in enumerate(specs)]
            result = fn(*self.inputs)
            flat: List[Any] = []
            if mode == "value":
                self.recipe = _flatten(result, flat)
                self.outputs = [ops.convert_to_tensor(t) for t in flat]
            else:
                value = ops.convert_to_tensor(result)
                if value.shape != ():
                    raise GradientError(f"gc.{mode} needs a function returning a scalar; it returned "
                                        f"{value.name} of shape {_shapes.fmt(value.shape)}")
                nums = argnums if isinstance(argnums, tuple) else (argnums,)
                for n in nums:
                    if not 0 <= n < len(self.inputs):
                        raise InvalidArgumentError(f"argnums {n} is out of range for {len(self.inputs)} arguments")
                wrt = [self.inputs[n] for n in nums]
                grads = gradients(value, wrt, unconnected_gradients="zero")
                grad_part: Any = tuple(grads) if isinstance(argnums, tuple) else grads[0]
                self.recipe = _flatten(grad_part if mode == "grad" else (value, grad_part), flat)
                self.outputs = flat
        self.session = Session(graph=self.graph, config=config)
        variables = ops.global_variables(self.graph)
        if variables:
            self.session.run(ops.variables_initializer(variables))

        self.runner: Optional[Callable] = None
        self.single_output = self.recipe == 0

    # ---- pickling (see CompiledFunction.__reduce__) ----------------------------------
    def _pickle_state(self, owner: str) -> Dict[str, Any]:
        """Everything needed to rebuild this trace without its Python
        function: the graph as bytes (serialize.graph_to_bytes), inputs and
        outputs by tensor name, the output recipe, and the session's state
        (variable values, random-op stream positions, generator)."""
        from .errors import ExportError
        from .serialize import graph_to_bytes
        try:
            graph = graph_to_bytes(self.graph)
        except ExportError as exc:
            raise ExportError(f"cannot pickle {owner}: {exc}") from None
        store = self.session._store
        return {"graph": graph, "inputs": [t.name for t in self.inputs], "outputs": [t.name for t in self.outputs],
                "recipe": self.recipe, "variables": {k: np.array(v) for k, v in store.values.items()},
                "random_op_counts": dict(store.random_op_counts), "rng": self.session._rng}

    @classmethod
    def _from_pickle_state(cls, state: Dict[str, Any], config: Any, where: str) -> "_Trace":
        from .serialize import graph_from_bytes
        from .session import Session
        trace = cls.__new__(cls)
        trace.graph = graph_from_bytes(state["graph"], where=where)
        trace.inputs = [trace.graph.get_tensor_by_name(n) for n in state["inputs"]]
        trace.outputs = [trace.graph.get_tensor_by_name(n) for n in state["outputs"]]
        trace.recipe = state["recipe"]
        # nothing is compiled here: the session compiles on the first call, as after tracing
        trace.session = Session(graph=trace.graph, config=config)
        for name, value in state["variables"].items():
            # an unpickled array's dtype is an equal but distinct descriptor object, which the
            # native entry points (they compare descriptor pointers) reject: copy to the canonical one
            value = np.asarray(value).astype(np.dtype(value.dtype.str))
            value.setflags(write=False)
            trace.session._store.values[name] = value
        trace.session._store.random_op_counts.update(state["random_op_counts"])
        trace.session._rng = state["rng"]
        trace.runner = None
        trace.single_output = trace.recipe == 0
        return trace

    def __call__(self, arrays: Sequence[Any]) -> Any:
        values = self.session.run(self.outputs, dict(zip(self.inputs, arrays)))
        if self.runner is None:
            self.runner = self.session._fast_runner(self.outputs, self.inputs, arrays)
        return _rebuild(self.recipe, values)



class CompiledFunction:
    """A traced, compiled function on NumPy arrays. ``.graph`` is the graph
    of the most recent trace."""

    def __init__(self, fn: Callable, input_signature: Optional[Sequence[TensorSpec]] = None, mode: str = "value",
                 argnums: Union[int, Tuple[int, ...]] = 0, config: Any = None, backend: Optional[str] = None) -> None:
        from .session import Config
        self.fn = fn
        self.mode = mode
        self.argnums = argnums
        self.config = config or Config(backend=backend or "auto")
        self.input_signature = list(input_signature) if input_signature is not None else None
        self._traces: Dict[Tuple, _Trace] = {}
        # (shape, dtype, shape, dtype, ...) of ndarray arguments -> their trace, once it ran
        self._by_arrays: Dict[Tuple, _Trace] = {}
        self._last: Optional[_Trace] = None
        self.__name__ = getattr(fn, "__name__", "function")
        self.__doc__ = getattr(fn, "__doc__", None)
        if self.input_signature is not None:
            self._last = self._trace(tuple(self.input_signature))

    def _trace(self, specs: Tuple[TensorSpec, ...]) -> _Trace:
        trace = self._traces.get(specs)
        if trace is None:
            if self.fn is None:
                raise InvalidArgumentError(
                    f"{self.__name__} was unpickled without its Python function, so it runs only the "
                    f"signatures it was traced for: {'; '.join(_fmt_specs(k) for k in self._traces) or 'none'}; "
                    f"it was called with {_fmt_specs(specs)}")
            trace = _Trace(self.fn, specs, self.mode, self.argnums, self.config)
            self._traces[specs] = trace
        return trace

    @property
    def graph(self) -> Graph:
        if self._last is None:
            raise InvalidArgumentError(f"{self.__name__} has not been traced yet: call it once or give input_signature")
        return self._last.graph

    def __call__(self, *args: Any) -> Any:
        try:
            key = tuple([(a.shape, a.dtype) for a in args])
        except AttributeError:
            key = None
        else:
            trace = self._by_arrays.get(key)
            if trace is not None:
                results, fresh = trace.runner(args)
                if results is not None:
                    if trace.single_output:
                        return results[0] if fresh[0] else _owned(results[0], args)
                    return _rebuild(trace.recipe, [r if f else _owned(r, args) for r, f in zip(results, fresh)])
        result = self._call_slow(args)
        if key is not None and self._last is not None and self._last.runner is not None \
                and all(type(a) is np.ndarray for a in args):
            self._by_arrays[key] = self._last
        return result

    def export(self, directory: str, name: str = "fn", *, variables_as: str = "constants",
               cpu: Optional[str] = None, triple: Optional[str] = None) -> Any:
        """Write ``directory/<name>.so`` and ``<name>.h``: this function (its
        most recent trace, or its input_signature) as a C function, inputs in
        argument order, outputs flattened in result order (graphc/export.py).
        Variables are frozen at their current values, or become extra inputs
        with ``variables_as="inputs"``."""
        from .export import export_graph
        if self._last is None:
            raise InvalidArgumentError(f"{self.__name__} has not been traced yet: call it once or give "
                                       "input_signature before exporting")
        trace = self._last
        names = [t.op.name for t in trace.inputs]
        return export_graph(trace.graph, trace.inputs, trace.outputs, directory, name,
                            variables=dict(trace.session._store.values), variables_as=variables_as,
                            input_names=names, cpu=cpu, triple=triple)

    def __reduce__(self) -> Tuple[Any, ...]:
        """Pickle the traced graphs, not the Python function: each trace's
        graph (as graph_to_bytes data), signature, output recipe and
        variable values, plus mode, argnums and config. The unpickled
        function recompiles on its first call and gives the same results; it
        cannot trace new signatures (InvalidArgumentError lists the known
        ones). A graph holding Python code (a custom_gradient op) cannot be
        pickled: ExportError."""
        if not self._traces:
            raise InvalidArgumentError(f"cannot pickle {self.__name__}: it has not been traced yet (call it once "
                                       "or give input_signature); graphc pickles traced graphs, not Python code")
        owner = f"compiled function {self.__name__}"
        traces = [(specs, trace._pickle_state(owner)) for specs, trace in self._traces.items()]
        last = next(i for i, trace in enumerate(self._traces.values()) if trace is self._last) \
            if self._last is not None else None
        state = {"name": self.__name__, "doc": self.__doc__, "mode": self.mode, "argnums": self.argnums,
                 "config": self.config, "input_signature": self.input_signature, "traces": traces, "last": last}
        return _unpickle_compiled, (state,)

    def _call_slow(self, args: Tuple[Any, ...]) -> Any:
        if self.input_signature is not None:
            if len(args) != len(self.input_signature):
                raise InvalidArgumentError(f"{self.__name__} takes {len(self.input_signature)} arguments "
                                           f"({len(args)} given)")
            trace = self._last
        else:
            arrays = [np.asarray(a) for a in args]
            specs = tuple(TensorSpec(a.shape, a.dtype) for a in arrays)
            trace = self._trace(specs)
            self._last = trace
            args = tuple(arrays)
        return trace(args)


def _fmt_specs(specs: Sequence[TensorSpec]) -> str:
    def one(s: TensorSpec) -> str:
        if s.shape is None:
            return f"{s.dtype.name}[unknown rank]"
        return f"{s.dtype.name}[{', '.join('?' if d is None else str(d) for d in s.shape)}]"
    return "(" + ", ".join(one(s) for s in specs) + ")"


def _unpickle_compiled(state: Dict[str, Any]) -> CompiledFunction:
    """Rebuild a pickled CompiledFunction (see its ``__reduce__``)."""
    f = CompiledFunction.__new__(CompiledFunction)
    f.fn = None
    f.mode = state["mode"]
    f.argnums = state["argnums"]
    f.config = state["config"]
    f.input_signature = state["input_signature"]
    f.__name__ = state["name"]
    f.__doc__ = state["doc"]
    where = f"pickled compiled function {f.__name__}"
    f._traces = {specs: _Trace._from_pickle_state(t, f.config, where) for specs, t in state["traces"]}
    f._by_arrays = {}
    f._last = list(f._traces.values())[state["last"]] if state["last"] is not None else None
    return f


def function(fn: Optional[Callable] = None, input_signature: Optional[Sequence[TensorSpec]] = None,
             backend: Optional[str] = None, config: Any = None) -> Any:
    """Trace ``fn`` into a graph and return a callable on NumPy arrays.
    Usable as ``@gc.function`` or ``gc.function(fn, input_signature=[...])``."""
    if fn is None:
        return lambda f: CompiledFunction(f, input_signature, "value", 0, config, backend)
    return CompiledFunction(fn, input_signature, "value", 0, config, backend)


def grad(fn: Callable, argnums: Union[int, Tuple[int, ...]] = 0, input_signature: Optional[Sequence[TensorSpec]] = None,
         backend: Optional[str] = None, config: Any = None) -> CompiledFunction:
    """The gradient of scalar ``fn`` w.r.t. argument(s) ``argnums``: one
    array, or a tuple when ``argnums`` is a tuple."""
    return CompiledFunction(fn, input_signature, "grad", argnums, config, backend)


def value_and_grad(fn: Callable, argnums: Union[int, Tuple[int, ...]] = 0,
                   input_signature: Optional[Sequence[TensorSpec]] = None, backend: Optional[str] = None,
                   config: Any = None) -> CompiledFunction:
    """``(fn(*args), grad)`` with grad as in :func:`grad`."""
    return CompiledFunction(fn, input_signature, "value_and_grad", argnums, config, backend)
