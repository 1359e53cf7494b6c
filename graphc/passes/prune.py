"""Pruning: the ops a run needs, in schedule (topological) order."""
from __future__ import annotations

from typing import Iterable, List, Sequence, Set

from ..errors import FeedError
from ..graph import Graph, Operation, Tensor
from .. import shapes as _shapes


def prune(graph: Graph, fetches: Sequence[Tensor], targets: Sequence[Operation],
          feeds: Iterable[Tensor]) -> List[Operation]:
    """Ops needed to compute ``fetches`` and run ``targets`` when ``feeds``
    are given, in creation order (a valid topological order: an op can only
    use tensors and control inputs that existed before it).

    Raises FeedError naming every placeholder the run needs but was not fed.
    """
    fed: Set[Tensor] = set(feeds)
    needed: Set[Operation] = set()
    stack: List[Operation] = [t.op for t in fetches if t not in fed] + list(targets)
    while stack:
        op = stack.pop()
        if op in needed:
            continue
        needed.add(op)
        for t in op.inputs:
            if t not in fed and t.op not in needed:
                stack.append(t.op)
        for c in op.control_inputs:
            # an op whose every output is fed (a subgraph argument, say) has
            # nothing left to do
            if c not in needed and not (c.outputs and all(o in fed for o in c.outputs)):
                stack.append(c)
    missing = [op for op in needed if op.type == "placeholder"]
    if missing:
        missing.sort(key=lambda op: op.name)
        lines = [f"placeholder '{op.name}' (dtype {op.attrs['dtype'].name}, shape "
                 f"{_shapes.fmt(op.attrs['shape'])}) created at {op.source}" for op in missing]
        raise FeedError("you must feed a value for " + "; ".join(lines))
    order = {id(op): i for i, op in enumerate(graph._ops)}
    return sorted(needed, key=lambda op: order[id(op)])
