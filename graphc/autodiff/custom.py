"""``gc.custom_gradient``: user-defined adjoints, as in TF."""
from __future__ import annotations

import functools
from typing import Any, Callable, List

from ..graph import graph_for_inputs
from ..ops.core import convert_to_tensor
from ..ops.registry import LAYOUT, define, gradient


def _infer_custom(*inputs, grad_fn, num_inputs):
    return [(t.shape, t.dtype) for t in inputs[num_inputs:]]


@define("custom_gradient", lowering=LAYOUT, inputs=("xs...", "ys..."), attrs=("grad_fn", "num_inputs"),
        dtypes="all", infer=_infer_custom, num_outputs=None,
        doc="Passes ys through; its gradient is the user's grad_fn (gc.custom_gradient).")
def _custom_gradient(*arrays, grad_fn, num_inputs):
    return list(arrays[num_inputs:])


@gradient("custom_gradient")
def _custom_gradient_grad(op, *grads):
    n = op.attrs["num_inputs"]
    result = op.attrs["grad_fn"](*grads)
    result = list(result) if isinstance(result, (list, tuple)) else [result]
    if len(result) != n:
        from ..errors import GradientError
        raise GradientError(f"the grad_fn of custom_gradient op '{op.name}' (created at {op.source}) returned "
                            f"{len(result)} gradients for {n} inputs")
    result = [None if r is None else convert_to_tensor(r) for r in result]
    # the forward computation of ys is replaced by grad_fn: nothing flows into it
    return result + [None] * (len(op.inputs) - n)


def custom_gradient(f: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: ``f(*xs)`` returns ``(y, grad_fn)`` where ``grad_fn(*dys)``
    returns one gradient per x. ``y`` may be a Tensor or a list of Tensors."""
    @functools.wraps(f)
    def wrapper(*args: Any) -> Any:
        graph = graph_for_inputs(args)
        with graph.as_default():
            xs = [convert_to_tensor(a) for a in args]
            y, grad_fn = f(*xs)
            single = not isinstance(y, (list, tuple))
            ys: List[Any] = [convert_to_tensor(v) for v in ([y] if single else y)]
            op = graph.create_op("custom_gradient", xs + ys, {"grad_fn": grad_fn, "num_inputs": len(xs)},
                                 name=getattr(f, "__name__", "custom_gradient"))
        return op.outputs[0] if single else list(op.outputs)
    return wrapper
