"""A Program is what the pass pipeline transforms and backends compile: a
graph holding exactly the ops one run needs, with its fetches, targets and
fed placeholders. Passes never edit a graph in place (graphs only grow);
they rebuild it with a :class:`Rewriter`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import shapes as _shapes
from ..graph import Graph, Operation, Tensor
from .prune import prune


@dataclass
class Program:
    graph: Graph
    fetches: List[Tensor]
    targets: List[Operation]
    feeds: List[Tensor]            # placeholders of `graph`, one per fed tensor, in feed order
    # Results of analysis passes (e.g. "memory_plan") keyed by pass name.
    analyses: Dict[str, Any] = field(default_factory=dict)

    def ops(self) -> List[Operation]:
        return self.graph._ops

    def num_ops(self) -> int:
        return len(self.graph._ops)


class Rewriter:
    """Builds the next Program from ``old`` op by op, in schedule order.

    ``rw[t]`` is the new tensor standing for old tensor ``t``; ``copy(op)``
    re-creates ``op`` (same type, attrs, name where free, source line and
    gradient link) on the mapped inputs; ``replace(old_t, new_t)`` makes
    later uses of ``old_t`` use ``new_t``. Inside ``with rw.graph.as_default()``
    a pass can build replacement ops with the ordinary op functions.
    """

    def __init__(self, old: Program) -> None:
        self.old = old
        self.graph = Graph()
        self._map: Dict[Tensor, Tensor] = {}
        self._op_map: Dict[Operation, Operation] = {}
        self.changed = False
        self.feeds = []
        for ph in old.feeds:
            new = self.graph.create_op("placeholder", [], dict(ph.op.attrs), name=ph.op.name,
                                       source=ph.op.source).outputs[0]
            self._map[ph] = new
            self._op_map[ph.op] = new.op
            self.feeds.append(new)

    def __getitem__(self, t: Tensor) -> Tensor:
        return self._map[t]

    def __contains__(self, t: Tensor) -> bool:
        return t in self._map

    def replace(self, old_t: Tensor, new_t: Tensor) -> None:
        self._map[old_t] = new_t
        self.changed = True

    def is_copied(self, op: Operation) -> bool:
        return op in self._op_map

    def copy(self, op: Operation, inputs: Optional[Sequence[Tensor]] = None,
             attrs: Optional[Dict[str, Any]] = None, op_type: Optional[str] = None) -> Operation:
        """Re-create ``op`` in the new graph (on ``inputs``/``attrs`` if given)."""
        if op in self._op_map:
            return self._op_map[op]
        new_inputs = [self._map[t] for t in op.inputs] if inputs is None else list(inputs)
        controls = [self._op_map[c] for c in op.control_inputs if c in self._op_map]
        with self.graph.control_dependencies(controls):
            new = self.graph.create_op(op_type or op.type, new_inputs,
                                       dict(op.attrs) if attrs is None else attrs,
                                       name=op.name, source=op.source)
        new.gradient_of = op.gradient_of
        self._op_map[op] = new
        for o, n in zip(op.outputs, new.outputs):
            self._map.setdefault(o, n)
        if inputs is not None or attrs is not None or op_type is not None:
            self.changed = True
        return new

    def substitute(self, plan: Dict[Operation, Any],
                   outputs_for: Callable[["Rewriter", Operation, Any], Sequence[Tensor]]) -> Program:
        """Copy every op in order, except that an op in ``plan`` is replaced:
        its outputs become ``outputs_for(self, op, plan[op])``."""
        for op in self.old.ops():
            if self.is_copied(op):
                continue
            if op in plan:
                for old_t, new_t in zip(op.outputs, outputs_for(self, op, plan[op])):
                    self.replace(old_t, new_t)
            else:
                self.copy(op)
        return self.finish()

    def copy_all(self) -> Program:
        for op in self.old.ops():
            if op not in self._op_map:
                self.copy(op)
        return self.finish()

    def finish(self) -> Program:
        """The new Program, fetches and targets mapped. Ops the rewrite left
        without consumers stay until the dce pass removes them (dumps show
        what each pass did)."""
        fetches = [self._map[t] for t in self.old.fetches]
        targets = [self._op_map[op] for op in self.old.targets if op in self._op_map]
        return Program(self.graph, fetches, targets, self.feeds, dict(self.old.analyses))


def extract(graph: Graph, fetches: Sequence[Tensor], targets: Sequence[Operation], feeds: Sequence[Tensor],
            feed_shapes: Optional[Sequence[Tuple[int, ...]]] = None) -> Program:
    """Copy the ops one run needs into a fresh graph. Fed tensors become
    placeholders; with ``feed_shapes`` they get those concrete shapes, so
    every shape downstream is re-inferred concretely (shape specialization)."""
    ops = prune(graph, fetches, targets, feeds)
    new = Graph()
    mapping: Dict[Tensor, Tensor] = {}
    op_map: Dict[Operation, Operation] = {}
    new_feeds = []
    for i, t in enumerate(feeds):
        shape = tuple(feed_shapes[i]) if feed_shapes is not None else t.shape
        name = t.op.name if t.op.type == "placeholder" and t.value_index == 0 else t.name.replace(":", "_")
        ph = new.create_op("placeholder", [], {"dtype": t.dtype, "shape": _shapes.as_shape(shape)},
                           name=name, source=t.op.source).outputs[0]
        mapping[t] = ph
        new_feeds.append(ph)
    for op in ops:
        controls = [op_map[c] for c in op.control_inputs if c in op_map]
        with new.control_dependencies(controls):
            copy = new.create_op(op.type, [mapping[t] for t in op.inputs], dict(op.attrs), name=op.name,
                                 source=op.source)
        copy.gradient_of = op.gradient_of
        op_map[op] = copy
        for o, n in zip(op.outputs, copy.outputs):
            mapping.setdefault(o, n)
    return Program(new, [mapping[t] for t in fetches], [op_map[op] for op in targets], new_feeds)
