"""Differentiating subgraphs (cond branches, loop bodies).

Graphs only grow: an existing op is never rewritten. So the adjoint of a
subgraph is built by re-creating the subgraph's ops in the graph being built
(``copy_subgraph``, with the subgraph's arguments bound to new tensors) and
differentiating that copy. The forward values inside the copy are recomputed
when the adjoint runs; the passes pipeline may later merge them with the
forward computation.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from ..errors import GradientError
from ..graph import FuncGraph, Tensor, get_default_graph
from .gradients import gradients

def copy_subgraph(fg: FuncGraph, args: Sequence[Tensor], name: str = "copy") -> List[Tensor]:
    """Re-create ``fg``'s ops in the current default graph with ``fg.inputs``
    bound to ``args``; returns the copies of ``fg.outputs``."""
    from ..ops.core import identity
    if len(args) != len(fg.inputs):
        raise GradientError(f"{fg.name}: {len(args)} arguments for {len(fg.inputs)} subgraph inputs")
    graph = get_default_graph()
    mapping: Dict[Tensor, Tensor] = dict(zip(fg.inputs, args))
    op_map = {}
    with graph.name_scope(name):
        for op in fg._ops:
            if op.type == "arg":
                continue
            inputs = [mapping[t] for t in op.inputs]
            if op.type in ("assign_add", "assign_sub"):
                raise GradientError(f"cannot differentiate through {op.describe()} inside {fg.name}: "
                                    "an in-place update inside a cond/while body has no side-effect-free copy")
            if op.type == "assign":
                # re-running it would write state twice: the copy only
                # forwards the written value, which is all the adjoint needs
                mapping[op.outputs[0]] = identity(inputs[0])
                continue
            controls = [op_map[c] for c in op.control_inputs if c in op_map]
            with graph.control_dependencies(controls):
                new = graph.create_op(op.type, inputs, dict(op.attrs), name=op.name.rsplit("/", 1)[-1],
                                      source=op.source)
            new.gradient_of = op.gradient_of
            op_map[op] = new
            for old_t, new_t in zip(op.outputs, new.outputs):
                mapping[old_t] = new_t
    return [mapping[t] for t in fg.outputs]


def subgraph_gradients(fg: FuncGraph, args: Sequence[Tensor], output_grads: Sequence[Optional[Tensor]],
                       name: str = "subgraph_grad") -> List[Optional[Tensor]]:
    """Adjoints of ``fg``'s inputs, given its arguments and the adjoints of its
    outputs (None for outputs with no adjoint), built in the current default
    graph (typically inside the FuncGraph of an adjoint cond branch or loop
    body). Returns one entry per input; None where no gradient flows."""
    outs = copy_subgraph(fg, args, name=name)
    pairs = [(o, g) for o, g in zip(outs, output_grads) if g is not None and o.dtype.kind == "f"]
    if not pairs:
        return [None] * len(args)
    ys, gys = zip(*pairs)
    return gradients(list(ys), list(args), grad_ys=list(gys))
