"""The op registry: one :class:`OpDef` per op type.

An OpDef gathers everything graphc knows about an op in one place:

* ``infer(*inputs, **attrs)``: the shape/dtype rule. Receives the input
  Tensors, returns one ``(shape, dtype)`` or a list of them (one per output).
  Raises ShapeError/DTypeError/InvalidArgumentError with a short reason; the
  graph adds op name, input shapes and the user's source line.
* ``compute(*arrays, **attrs)``: the NumPy reference implementation, which the
  interpreter backend runs and every other backend is tested against. Ops
  with ``needs_context`` get the run context as first argument (state,
  random numbers, running subgraphs).
* ``grad``: the gradient rule, ``grad(op, *output_grads) -> input grads``
  (filled in by :mod:`graphc.autodiff`).
* ``lowering``: the lowering class native backends dispatch on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

# Lowering classes: how a backend turns the op into code.
ELEMENTWISE = "elementwise"    # pointwise with broadcasting: fusible loop body
REDUCTION = "reduction"        # reduces axes: a fusion root with accumulators
LAYOUT = "layout"              # reshapes/transposes/slices: index arithmetic
LIBRARY = "library"            # calls a library routine (BLAS gemm, conv)
CONTROL_FLOW = "control_flow"  # holds subgraphs (cond, while_loop)
STATE = "state"                # reads/writes session state (variables)
SOURCE = "source"              # produces values from nothing (const, placeholder)
RANDOM = "random"              # draws random numbers
FUSED = "fused"                # a kernel made by the fusion pass (holds its body subgraph)
LOWERING_CLASSES = (ELEMENTWISE, REDUCTION, LAYOUT, LIBRARY, CONTROL_FLOW, STATE, SOURCE, RANDOM, FUSED)


@dataclass
class OpDef:
    name: str
    infer: Callable[..., Any]
    compute: Callable[..., Any]
    lowering: str
    inputs: Tuple[str, ...] = ()
    attrs: Tuple[str, ...] = ()
    dtypes: str = ""
    doc: str = ""
    num_outputs: Optional[int] = 1   # None: decided by infer
    stateful: bool = False
    needs_context: bool = False
    # False: no gradient flows through (comparisons, argmax, integer ops).
    differentiable: bool = True
    grad: Optional[Callable[..., Any]] = None
    # Notes for the op table (e.g. "second derivative not supported").
    notes: str = ""
    extra: Dict[str, Any] = field(default_factory=dict)


_REGISTRY: Dict[str, OpDef] = {}


def register(opdef: OpDef) -> OpDef:
    if opdef.name in _REGISTRY:
        raise KeyError(f"op {opdef.name!r} registered twice")
    if opdef.lowering not in LOWERING_CLASSES:
        raise ValueError(f"op {opdef.name!r}: unknown lowering class {opdef.lowering!r}")
    _REGISTRY[opdef.name] = opdef
    return opdef


def define(name: str, *, lowering: str, inputs: Sequence[str] = (), attrs: Sequence[str] = (),
           dtypes: str = "", doc: str = "", **kwargs: Any) -> Callable:
    """Decorator form used by op modules::

        @define("exp", lowering=ELEMENTWISE, inputs=("x",), infer=unary_float)
        def _exp(x): return np.exp(x)

    The decorated function is the NumPy reference implementation.
    """
    def wrap(compute: Callable) -> Callable:
        register(OpDef(name=name, compute=compute, lowering=lowering, inputs=tuple(inputs),
                       attrs=tuple(attrs), dtypes=dtypes, doc=doc or (compute.__doc__ or "").strip(),
                       **kwargs))
        return compute
    return wrap


def get(name: str) -> OpDef:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no op type {name!r} is registered") from None


def has(name: str) -> bool:
    return name in _REGISTRY


def all_ops() -> Dict[str, OpDef]:
    return dict(_REGISTRY)


def gradient(name: str) -> Callable:
    """Register the gradient rule of op ``name`` (defined next to the op)::

        @gradient("exp")
        def _exp_grad(op, g):
            return [g * op.outputs[0]]

    The rule receives the forward Operation and one gradient Tensor per
    output (zeros where an output has no incoming gradient) and returns one
    gradient Tensor (or None) per input, built with ordinary op functions so
    the adjoint is itself a differentiable graph.
    """
    def wrap(fn: Callable) -> Callable:
        opdef = get(name)
        if opdef.grad is not None:
            raise KeyError(f"gradient of {name!r} registered twice")
        opdef.grad = fn
        return fn
    return wrap
