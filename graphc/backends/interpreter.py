"""The reference backend: runs each op's NumPy implementation in schedule
order. Every other backend is tested against it."""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import shapes as _shapes
from ..errors import ExecutionError, GraphcError, UninitializedVariableError
from ..graph import FuncGraph, Operation, Tensor
from ..passes.prune import prune

# Strict mode checks every op's result against its static shape and dtype: a
# reference implementation that disagrees with its own shape rule is a bug.
STRICT = os.environ.get("GRAPHC_STRICT", "") not in ("", "0")


class VariableStore:
    """Variable values owned by a Session, by variable name.

    A backend that keeps variables in device memory (ptx) does not copy each
    updated value back after every run: it *defers* it (:meth:`defer`), and
    the first access to :attr:`values` from anywhere fetches every deferred
    value first. So the Session, savers, exports and other backends always
    see current values, and a device-only training loop moves none."""

    def __init__(self) -> None:
        self._values: Dict[str, np.ndarray] = {}
        # var -> (owner, fetch): values newer on a device than in _values
        self.deferred: Dict[str, Tuple[object, Callable[[], np.ndarray]]] = {}
        # how often each seeded random op ran in this session (its stream position)
        self.random_op_counts: Dict[str, int] = {}

    @property
    def values(self) -> Dict[str, np.ndarray]:
        if self.deferred:
            self.fetch_deferred()
        return self._values

    def defer(self, var: str, owner: object, fetch: Callable[[], np.ndarray]) -> None:
        """``var``'s current value is held by ``owner`` (a device copy):
        ``fetch()`` returns it as a host array when anyone reads the values."""
        self.deferred[var] = (owner, fetch)

    def fetch_deferred(self) -> None:
        while self.deferred:
            var, (_, fetch) = self.deferred.popitem()
            self._values[var] = fetch()

    def clear(self) -> None:
        self.deferred.clear()
        self._values.clear()
        self.random_op_counts.clear()


def lookup_variable(values: Dict[str, np.ndarray], var: str) -> np.ndarray:
    """``values[var]``, or the error every backend gives for a variable read
    before its initializer ran."""
    try:
        return values[var]
    except KeyError:
        raise UninitializedVariableError(
            f"variable {var!r} is read before it was initialized; run its initializer "
            "(gc.global_variables_initializer()) first") from None


class RunContext:
    """What stateful and control-flow ops see while one run executes."""

    def __init__(self, store: VariableStore, rng: np.random.Generator) -> None:
        self.store = store
        self.rng = rng
        # Variable values at the start of the run and of each enclosing
        # subgraph execution (loop iteration / branch): unordered reads see these.
        self._frames: List[Dict[str, np.ndarray]] = [dict(store.values)]

    def read_start_value(self, var: str) -> np.ndarray:
        return self._lookup(self._frames[0], var)

    def read_frame_value(self, var: str) -> np.ndarray:
        return self._lookup(self._frames[-1], var)

    _lookup = staticmethod(lookup_variable)

    def read_variable(self, var: str) -> np.ndarray:
        return self._lookup(self.store.values, var)

    def write_variable(self, var: str, value: np.ndarray) -> None:
        value.setflags(write=False)
        self.store.values[var] = value

    def run_subgraph(self, graph: FuncGraph, args: Sequence[np.ndarray]) -> List[np.ndarray]:
        """Run a cond branch / loop body: bind its arguments, return its outputs."""
        plan, release = _subgraph_plan(graph)
        env = dict(zip(graph.inputs, args))
        self._frames.append(dict(self.store.values))
        try:
            return run_ops(plan, env, graph.outputs, self, release)
        finally:
            self._frames.pop()


def _subgraph_plan(graph: FuncGraph) -> Tuple[List[Operation], Dict[Operation, List[Tensor]]]:
    """The ops a subgraph run needs, and per op the values it reads last
    (dropped once it ran, so a fused kernel's body or a loop iteration does
    not hold on to dead intermediates)."""
    cache = graph.__dict__.setdefault("_interpreter_plan", {})
    key = len(graph._ops)
    if key not in cache:
        cache.clear()
        plan = prune(graph, graph.outputs, [], graph.inputs)
        last: Dict[Tensor, Operation] = {}
        for op in plan:
            for t in op.inputs:
                last[t] = op
        kept = set(graph.outputs)
        release: Dict[Operation, List[Tensor]] = {}
        for t, op in last.items():
            if t not in kept:
                release.setdefault(op, []).append(t)
        cache[key] = (plan, release)
    return cache[key]


def execute_op(op: Operation, inputs: List[np.ndarray], ctx: RunContext) -> List[np.ndarray]:
    opdef = op.opdef
    try:
        if opdef.needs_context:
            result = opdef.compute(ctx, *inputs, **op.attrs)
        else:
            result = opdef.compute(*inputs, **op.attrs)
    except ExecutionError as exc:
        if op.name in str(exc):
            raise
        raise type(exc)(f"{op.describe()}: {exc}") from None
    except GraphcError as exc:
        # anything an op finds wrong while running is a run-time error
        message = str(exc) if op.name in str(exc) else f"{op.describe()}: {exc}"
        raise ExecutionError(message) from exc
    except Exception as exc:  # NumPy errors: broadcasting, bad indices, ...
        shapes = ", ".join(str(a.shape) for a in inputs)
        raise ExecutionError(f"{op.describe()} failed at run time with input shapes [{shapes}]: "
                             f"{type(exc).__name__}: {exc}") from exc
    n = len(op.outputs)
    outs = [result] if n == 1 and opdef.num_outputs == 1 else list(result)
    outs = [np.asarray(o) for o in outs]
    for t, v in zip(op.outputs, outs):
        if v.dtype != t.dtype or not _shapes.compatible(t.shape, v.shape):
            if STRICT:
                raise ExecutionError(f"{op.describe()}: reference implementation returned {v.dtype}{v.shape} "
                                     f"for output {t.name} declared {t.dtype.name}{_shapes.fmt(t.shape)}")
            if not _shapes.compatible(t.shape, v.shape):
                raise ExecutionError(f"{op.describe()}: output {t.name} has run-time shape {v.shape}, "
                                     f"incompatible with its static shape {_shapes.fmt(t.shape)}")
    return [v if v.dtype == t.dtype else v.astype(t.dtype) for t, v in zip(op.outputs, outs)]


def run_ops(plan: Sequence[Operation], env: Dict[Tensor, np.ndarray], fetches: Sequence[Tensor],
            ctx: RunContext, release: Optional[Dict[Operation, Sequence[Tensor]]] = None) -> List[np.ndarray]:
    """Run ``plan`` in order. ``release`` (from the memory plan) lists, per
    op, the tensors whose last use it is: they are dropped once it ran."""
    for op in plan:
        outs = execute_op(op, [env[t] for t in op.inputs], ctx)
        for t, v in zip(op.outputs, outs):
            if t not in env:           # a fed tensor keeps its fed value
                env[t] = v
        if release is not None:
            for t in release.get(op, ()):
                env.pop(t, None)
    return [env[t] for t in fetches]


def _release_lists(program: Any) -> Optional[Dict[Operation, Sequence[Tensor]]]:
    """The memory plan's per-op lists of dead tensors, when the pipeline made
    one for this very graph (graphc/passes/memory.py)."""
    plan = program.analyses.get("memory_plan")
    if plan is None or getattr(plan, "schedule", None) != program.graph._ops:
        return None
    return plan.release_after


class InterpreterExecutable:
    """Runs a Program's ops in schedule order."""

    def __init__(self, program: Any) -> None:
        self.program = program
        self.fetches = list(program.fetches)
        self.feeds = list(program.feeds)
        fed = {t.op for t in self.feeds}
        self.plan = [op for op in program.graph._ops if op not in fed]
        self.release = _release_lists(program)

    def run(self, feed_values: Sequence[np.ndarray], store: VariableStore, rng: np.random.Generator) -> List[np.ndarray]:
        ctx = RunContext(store, rng)
        env: Dict[Tensor, Any] = dict(zip(self.feeds, feed_values))
        return run_ops(self.plan, env, self.fetches, ctx, self.release)


class InterpreterBackend:
    name = "interpreter"

    def compile(self, program: Any, config: Optional[Any] = None) -> InterpreterExecutable:
        return InterpreterExecutable(program)
