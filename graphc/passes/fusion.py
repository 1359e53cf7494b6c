"""Fusion: groups of elementwise, cheap layout and reduction ops become
``fused_kernel`` ops, XLA style, so that a backend emits one loop nest per
kernel instead of one per op and intermediates never reach memory.

What may be fused (decided per op on the specialized, static shapes; an op
with a None dim anywhere is a boundary):

* elementwise ops (lowering ELEMENTWISE, except ``range`` whose length is
  data-dependent), including ``fill_like``;
* *trivial* ops: pure index arithmetic on one input, never arithmetic on
  values -- ``identity stop_gradient reshape reshape_like expand_dims squeeze
  broadcast_to broadcast_like broadcast_reduced fill_like`` (and
  ``sum_to_shape_of`` when it sums over nothing). ``transpose``, slices,
  gathers, ``concat``, ``pad``, ``tile`` and ``one_hot`` move data and stay
  boundaries;
* reductions ``reduce_sum/mean/max/min/prod/any/all`` and ``sum_to_shape_of``,
  only as kernel *roots*: a reduction absorbs the producers of its input, and
  its consumers start another kernel (XLA's reduction input fusion).

Library ops (matmul, conv, pooling), control flow, state, random and source
ops are boundaries; so is any op used as a control input or run as a target.

Producer→consumer fusion walks the schedule backwards: each op not yet in a
kernel roots a new one, which then considers its producers latest first. A
producer joins only if

* it is fusible and not a reduction;
* it creates no cycle between kernels (no path from it to the kernel through
  another op or kernel; consecutive stateful ops are chained so that kernels
  never force stateful ops to be reordered);
* the cost rule holds (below): a producer that other kernels or ops read too
  is either recomputed here or read from memory, whichever costs less; a
  non-trivial op is never fused where it has fewer elements than the
  kernel's iteration space (``exp(bias)`` of shape (10,) into a (128, 10)
  kernel would be recomputed 128 times). Trivial ops are index arithmetic and
  may be duplicated into every kernel that reads them, at any size.

A non-trivial producer that the cost rule does not recompute and that also
has consumers outside the kernel joins as an extra output (multi-output
fusion). Afterwards kernels with the same iteration space are merged
(producer-consumer and sibling multi-output fusion) when one reads the
other's output, or both read a common input of the full iteration size, or
both read a common smaller input (a label vector, an iota, a bias) and the
merged kernel reduces over trailing axes only (its full-shape stores stay
contiguous) -- so a reduction's input chain and a later elementwise consumer
over the same shape share one loop nest -- and no path through a third op or
kernel connects them. Reductions in one kernel share input shape and reduced
axes, and no kernel consumes its own reduction's result. Merged kernels read
more tensors, so each kernel then reconsiders the full-size values it reads
from other kernels (rematerialization: it recomputes one when the cost model
prefers that, e.g. ``exp(x - max)`` in a kernel that reads ``x`` anyway), and
merging runs again. A kernel of one op stays a plain op.

The cost model (XLA's and Grappler's "duplicate cheap producers into their
consumers", with the prices written down). Costs are per element, in units of
one vectorized cheap op:

=========================================  ======
add, subtract, multiply, negative, abs,       1
compare, logical ops, where (select), cast,
min/max, square, sign, floor/ceil/round
divide, reciprocal, sqrt, rsqrt               4
exp, log, tanh, sigmoid, erf, pow, sin...    16  (any op not listed)
index arithmetic (reshape, broadcast...)      0
loading a full-size operand                   2 per byte (8 per float32)
storing a full-size result                    4 per byte (read for ownership + write back)
loading a smaller, broadcast operand          0  (it stays in cache)
=========================================  ======

8-byte types fill half the vector lanes: their ops cost twice. Calibrated on
the native CPU backend (inline vectorized exp), 4096x1000 float32: an exp
costs ~0.3 ns per element per core and a full-size intermediate stored by
one kernel and loaded by the next ~0.4 ns (it does not stay in cache).

Recomputing producer ``p`` in kernel ``k`` costs ``p``'s op plus a load of
each full-size operand ``k`` neither computes nor reads already (or that
operand's own recomputation, where cheaper than its load). Reading ``p``
instead costs its load plus a share of its store: the store is spared only
when nothing else needs ``p`` in memory (no fetch, no non-fusible reader), so
it is divided among the kernels and ops outside ``p``'s kernel that read it.
``p`` is recomputed when that is strictly cheaper. So ``x - max`` (1, or 9
with a new load of ``x``), a bool one-hot mask ``equal(labels[:, None],
iota)`` (1: both operands are small) and ``where(mask, c, 0)`` are recomputed
by every kernel that needs them instead of being stored (8 + 16 = 24 per
float32 element) and loaded; ``exp(x - max)`` is recomputed only in a kernel
that reads ``x`` anyway and when it is the only other reader (16 < 24; with a
new load of ``x`` it would cost 24: a tie keeps it shared), and a chain such
as ``tanh(exp(x))`` (32) is always shared.

Every refusal is a :class:`FusionDecision`; they go to the pass notes, to
``program.analyses["fusion"]`` and to the ``refusals`` attribute of the
kernel that refused. Refusals to fuse a source (placeholder, constant,
variable snapshot) are not recorded: those are a kernel's inputs by nature.

Inside a kernel, inputs used only for their shape (``broadcast_like``'s
``like``, ``sum_to_shape_of``'s ``like``...) are replaced by the static shape,
so the kernel does not keep that tensor alive or wait for it (an op left
without readers by this is dropped; ops dead before the pass stay for dce).

A kernel op is named after its last fetched root, else its last root (a
fetched ``loss`` keeps its name), and holds ``body`` (a FuncGraph: args = the
kernel's inputs, results = its outputs, that root's value first), ``kind``
("loop" or "reduction"), ``roots``, ``sources`` ((name, type, file:line) of
every fused op) and ``refusals``.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

import numpy as np

from .. import shapes as _shapes
from ..errors import CompileError, GradientError, InvalidArgumentError, ShapeError
from ..graph import FuncGraph, Operation, Tensor, ancestors
from ..ops.registry import (CONTROL_FLOW, ELEMENTWISE, FUSED, LAYOUT, LIBRARY, RANDOM, REDUCTION, SOURCE, STATE,
                            define, gradient)
from .manager import register_pass
from .program import Program, Rewriter

__all__ = ["FUSED_OP", "FusionDecision", "FusionReport", "KernelInfo", "fuse", "fusion_decision"]

FUSED_OP = "fused_kernel"

# Pure index arithmetic on one input: cheap enough to recompute anywhere.
TRIVIAL_OPS = frozenset({"identity", "stop_gradient", "reshape", "reshape_like", "expand_dims", "squeeze",
                         "broadcast_to", "broadcast_like", "broadcast_reduced", "fill_like"})
REDUCTION_ROOTS = frozenset({"reduce_sum", "reduce_mean", "reduce_max", "reduce_min", "reduce_prod",
                             "reduce_any", "reduce_all", "sum_to_shape_of"})
# Elementwise by lowering but not by iteration: the length is data-dependent.
NOT_FUSED_ELEMENTWISE = frozenset({"range"})
# Inputs a fused op reads only for their (static) shape.
SHAPE_ONLY_INPUTS: Dict[str, Tuple[int, ...]] = {
    "broadcast_like": (1,), "broadcast_reduced": (1,), "reshape_like": (1,), "sum_to_shape_of": (1,),
    "fill_like": (0,)}

TRIVIAL, ELEMENTWISE_ROLE, REDUCTION_ROLE = "trivial", "elementwise", "reduction"

# The cost model (see the module doc): per element, in units of one
# vectorized arithmetic op. Elementwise ops not listed cost EXPENSIVE_OP.
CHEAP_OP, DIVIDE_OP, EXPENSIVE_OP = 1.0, 4.0, 16.0
OP_COSTS: Dict[str, float] = {
    **dict.fromkeys(("negative", "abs", "sign", "square", "floor", "ceil", "round", "add", "subtract", "multiply",
                     "maximum", "minimum", "equal", "not_equal", "less", "less_equal", "greater", "greater_equal",
                     "logical_and", "logical_or", "logical_not", "cast", "where"), CHEAP_OP),
    **dict.fromkeys(("divide", "reciprocal", "sqrt", "rsqrt"), DIVIDE_OP),
}
LOAD_PER_BYTE = 2.0     # streaming a full-size operand in: a float32 load costs 8 cheap ops
STORE_PER_BYTE = 4.0    # a store moves its cache line twice (read for ownership, write back)


# --------------------------------------------------------------------------
# The fused_kernel op
# --------------------------------------------------------------------------
def _infer_fused(*inputs: Tensor, body: FuncGraph, kind: str, roots: Tuple[str, ...],
                 sources: Tuple[Tuple[str, str, str], ...], refusals: Tuple[str, ...]):
    if len(inputs) != len(body.inputs):
        raise InvalidArgumentError(f"the kernel body takes {len(body.inputs)} inputs, got {len(inputs)}")
    for i, (t, arg) in enumerate(zip(inputs, body.inputs)):
        if t.dtype != arg.dtype or t.shape != arg.shape:
            raise ShapeError(f"input {i} is {t.dtype.name}{_shapes.fmt(t.shape)}, the kernel body expects "
                             f"{arg.dtype.name}{_shapes.fmt(arg.shape)}")
    return [(o.shape, o.dtype) for o in body.outputs]


@define(FUSED_OP, lowering=FUSED, inputs=("inputs",), attrs=("body", "kind", "roots", "sources", "refusals"),
        dtypes="all", infer=_infer_fused, num_outputs=None, needs_context=True,
        notes="made by the fusion pass, after autodiff; gradients refuse it (differentiate the unfused graph)",
        doc="A kernel made by the fusion pass: runs its `body` subgraph (args = inputs, results = outputs). "
            "`kind` is 'loop' or 'reduction'; `sources` lists the fused ops (name, type, file:line).")
def _fused_kernel(ctx, *arrays, body, kind, roots, sources, refusals):
    return ctx.run_subgraph(body, list(arrays))


@gradient(FUSED_OP)
def _fused_kernel_grad(op: Operation, *grads: Tensor):
    raise GradientError(
        f"cannot differentiate {op.describe()}: fused kernels are made by the fusion pass, which runs after "
        "autodiff inside compilation; call gc.gradients on the graph you built (it holds the unfused ops "
        f"{', '.join(name for name, _, _ in op.attrs['sources'])})")


# --------------------------------------------------------------------------
# Decisions and the report
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class FusionDecision:
    """Why ``producer`` was not fused into ``consumer`` (op or kernel root
    names), as XLA's FusionDecision."""
    producer: str
    consumer: str
    reason: str

    def __str__(self) -> str:
        return f"{self.producer} -> {self.consumer}: {self.reason}"


@dataclass
class KernelInfo:
    name: str
    kind: str
    roots: Tuple[str, ...]
    sources: Tuple[Tuple[str, str, str], ...]
    num_inputs: int
    num_outputs: int


@dataclass
class FusionReport:
    """What the fusion pass did (``program.analyses["fusion"]``)."""
    ops_before: int
    ops_after: int
    kernels: List[KernelInfo] = field(default_factory=list)
    refusals: List[FusionDecision] = field(default_factory=list)

    def summary(self) -> str:
        n = len(self.kernels)
        lines = [f"fusion: {n} kernel{'' if n == 1 else 's'}, {self.ops_before} ops -> {self.ops_after} ops"]
        for k in self.kernels:
            lines.append(f"  {k.name} ({k.kind}, {len(k.sources)} ops, {k.num_inputs} in, {k.num_outputs} out): "
                         + ", ".join(f"{n} ({t})" for n, t, _ in k.sources))
        for r in self.refusals:
            lines.append(f"  not fused: {r}")
        return "\n".join(lines)


# --------------------------------------------------------------------------
# Per-op classification
# --------------------------------------------------------------------------
def _static(shape: Any) -> bool:
    return shape is not None and all(d is not None for d in shape)


def _count(shape: Tuple[int, ...]) -> int:
    return math.prod(shape)


def _op_cost(op: Operation) -> float:
    """Per-element cost of computing ``op`` once (index arithmetic is free);
    8-byte types fill half as many vector lanes, so they cost twice."""
    if _classify(op, set())[0] == TRIVIAL:
        return 0.0
    width = max(t.dtype.itemsize for t in list(op.inputs) + list(op.outputs))
    return OP_COSTS.get(op.type, EXPENSIVE_OP) * max(1.0, width / 4)


def _load_cost(t: Tensor) -> float:
    return LOAD_PER_BYTE * t.dtype.itemsize


def _store_cost(t: Tensor) -> float:
    return STORE_PER_BYTE * t.dtype.itemsize


def _boundary_reason(op: Operation) -> str:
    lowering = op.opdef.lowering
    if lowering == LIBRARY:
        return f"library op boundary ({op.type})"
    if lowering == CONTROL_FLOW:
        return f"control flow boundary ({op.type})"
    if lowering == STATE:
        return f"state op boundary ({op.type})"
    if lowering == RANDOM:
        return f"random op boundary ({op.type})"
    if lowering == SOURCE:
        return f"kernel input ({op.type})"
    if lowering == FUSED:
        return "already a fused kernel"
    if lowering == LAYOUT:
        return f"layout op {op.type} moves data (not fused)"
    if lowering == REDUCTION:
        return f"{op.type} is not a fusible reduction"
    return f"{op.type} is not fusible"


def _classify(op: Operation, pinned: Set[Operation]) -> Tuple[Optional[str], str]:
    """(role, "") for a fusible op, (None, reason) for a boundary."""
    t = op.type
    lowering = op.opdef.lowering
    if lowering == ELEMENTWISE and t not in NOT_FUSED_ELEMENTWISE:
        role = TRIVIAL if t == "fill_like" else ELEMENTWISE_ROLE
    elif t in TRIVIAL_OPS:
        role = TRIVIAL
    elif t in REDUCTION_ROOTS:
        role = REDUCTION_ROLE
    else:
        return None, _boundary_reason(op)
    if op in pinned:
        return None, "control dependency (used as a control input or run as a target)"
    if len(op.outputs) != 1 or op.is_stateful:
        return None, f"{t} is not fusible"
    if not all(_static(x.shape) for x in list(op.inputs) + list(op.outputs)):
        return None, "dynamic shape"
    if t == "sum_to_shape_of" and op.inputs[0].shape == op.inputs[1].shape:
        role = TRIVIAL      # sums over nothing: an identity
    return role, ""


def _reduced_axes(op: Operation) -> Tuple[int, ...]:
    """The input axes a reduction root combines."""
    x = op.inputs[0]
    if op.type == "sum_to_shape_of":
        return _sum_to_axes(x.shape, op.inputs[1].shape)
    axis = op.attrs.get("axis")
    if axis is None:
        return tuple(range(len(x.shape)))
    return tuple(sorted(a % len(x.shape) for a in axis))


def _sum_to_axes(shape: Tuple[int, ...], target: Tuple[int, ...]) -> Tuple[int, ...]:
    lead = len(shape) - len(target)
    return tuple(range(lead)) + tuple(lead + i for i, d in enumerate(target) if d == 1 and shape[lead + i] != 1)


def _needed_ops(program: Program) -> Set[Operation]:
    """Ops the fetches, targets and stateful ops depend on (themselves included)."""
    return ancestors(program.fetches, ops=list(program.targets) + [op for op in program.ops() if op.is_stateful])


def fusion_decision(op: Operation) -> str:
    """Why ``op`` would not take part in fusion ('' if it could)."""
    return _classify(op, set())[1]


# --------------------------------------------------------------------------
# Kernels under construction
# --------------------------------------------------------------------------
class _Kernel:
    __slots__ = ("id", "root", "owned", "dup", "kind", "space", "count", "axes", "refusals", "version")

    def __init__(self, kid: int, root: Operation, role: str) -> None:
        self.id = kid
        self.root = root
        self.owned: Set[Operation] = {root}
        self.dup: Set[Operation] = set()        # trivial ops recomputed here (they also exist elsewhere)
        if role == REDUCTION_ROLE:
            self.kind = "reduction"
            self.space = tuple(root.inputs[0].shape)
            self.axes: Optional[Tuple[int, ...]] = _reduced_axes(root)
        else:
            self.kind = "loop"
            self.space = tuple(root.outputs[0].shape)
            self.axes = None
        self.count = _count(self.space)
        self.refusals: List[FusionDecision] = []
        self.version = 0                        # bumped when the kernel grows

    @property
    def members(self) -> Set[Operation]:
        return self.owned | self.dup

    def __repr__(self) -> str:
        return f"<kernel {self.id} root={self.root.name} ops={len(self.members)}>"


Unit = Union[_Kernel, Operation]


class _Fuser:
    """Plans the kernels. Reachability between kernels and unfused ops is
    searched on the op graph with each kernel's owned ops contracted into one
    node (a union-find over schedule positions); a trivial op recomputed in
    a kernel stays a node of its own, which passes reachability through
    just as the kernel reading its inputs would. All inputs count as edges
    (even those read only for their shape), and so do control edges and the
    chain of stateful ops."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self.ops = list(program.ops())
        self.index = {op: i for i, op in enumerate(self.ops)}
        self.uses: Dict[Operation, List[Tuple[Operation, int]]] = {op: [] for op in self.ops}
        self.ctrl_uses: Dict[Operation, List[Operation]] = {op: [] for op in self.ops}
        for op in self.ops:
            for pos, t in enumerate(op.inputs):
                self.uses[t.op].append((op, pos))
            for c in op.control_inputs:
                self.ctrl_uses[c].append(op)
        pinned = set(program.targets) | {c for op in self.ops for c in op.control_inputs}
        self.fetched = set(program.fetches)
        self.fetched_ops = {t.op for t in self.fetched}
        # Ops no fetch, target or state update needs are dce's to drop (it
        # may be switched off): they stay, unfused.
        self.dead = set(self.ops) - _needed_ops(program)
        self.roles: Dict[Operation, Optional[str]] = {}
        self.reasons: Dict[Operation, str] = {}
        for op in self.ops:
            self.roles[op], self.reasons[op] = _classify(op, pinned)
            if op in self.dead and self.roles[op] is not None:
                self.roles[op], self.reasons[op] = None, "dead op (left for dce)"
        # Stateful ops keep their order: chaining them makes any fusion that
        # would need a reorder show up as a cycle.
        self.succ_ids: List[List[int]] = []
        for op in self.ops:
            readers = {self.index[c] for c, _ in self.uses[op]} | {self.index[c] for c in self.ctrl_uses[op]}
            self.succ_ids.append(sorted(readers))
        stateful = [self.index[op] for op in self.ops if op.is_stateful]
        for a, b in zip(stateful, stateful[1:]):
            self.succ_ids[a].append(b)
        self.rep = list(range(len(self.ops)))            # union-find: each op's group representative
        self.group: Dict[int, List[int]] = {i: [i] for i in range(len(self.ops))}
        # Bitsets (Python ints, bit i = op i): what each op reaches in the op
        # graph, and per kernel group its ops and what they reach.
        self.desc: List[int] = [0] * len(self.ops)
        for i in reversed(range(len(self.ops))):
            bits = 1 << i
            for j in self.succ_ids[i]:
                bits |= self.desc[j]
            self.desc[i] = bits
        self.group_bits: Dict[int, int] = {}
        self.group_desc: Dict[int, int] = {}
        self.kernel_at: Dict[int, _Kernel] = {}          # union-find root -> kernel
        self.owner: Dict[Operation, _Kernel] = {}
        self.member_of: Dict[Operation, Set[_Kernel]] = {}
        self.skipped: Set[Operation] = set()     # trivial ops every reader recomputes: no copy of their own
        self.kernels: List[Optional[_Kernel]] = []
        self.refusals: List[FusionDecision] = []
        self._recorded: Set[Tuple[str, str, str]] = set()
        self._read_by: Dict[int, Tuple[int, Set[Tensor]]] = {}   # kernel id -> (version, tensors it reads)
        self._merge_refused: Set[Tuple[int, int, int, int]] = set()

    # ---- bookkeeping -------------------------------------------------------
    def _refuse(self, producer: str, consumer: str, reason: str, *kernels: _Kernel) -> None:
        key = (producer, consumer, reason)
        if key in self._recorded:
            return
        self._recorded.add(key)
        decision = FusionDecision(producer, consumer, reason)
        self.refusals.append(decision)
        for k in kernels:
            k.refusals.append(decision)

    def _find(self, i: int) -> int:
        return self.rep[i]

    def _union(self, a: int, b: int) -> int:
        ra, rb = self.rep[a], self.rep[b]
        if ra == rb:
            return ra
        if len(self.group[ra]) < len(self.group[rb]):
            ra, rb = rb, ra
        moved = self.group.pop(rb)
        for j in moved:           # the smaller group is relabelled: O(n log n) in all
            self.rep[j] = ra
        self.group[ra].extend(moved)
        for r in (ra, rb):
            self.group_bits.setdefault(r, 1 << r)
            self.group_desc.setdefault(r, self.desc[r])
        self.group_bits[ra] |= self.group_bits.pop(rb)
        self.group_desc[ra] |= self.group_desc.pop(rb)
        return ra

    def _node(self, k: _Kernel) -> int:
        return self._find(self.index[k.root])

    def _add_member(self, k: _Kernel, op: Operation, own: bool) -> None:
        if own:
            node = self._node(k)
            k.owned.add(op)
            self.owner[op] = k
            self.kernel_at.pop(node, None)
            self.kernel_at[self._union(node, self.index[op])] = k
        else:
            k.dup.add(op)
        k.version += 1
        self.member_of.setdefault(op, set()).add(k)

    def _new_kernel(self, root: Operation) -> _Kernel:
        k = _Kernel(len(self.kernels), root, self.roles[root])
        self.kernels.append(k)
        self.owner[root] = k
        self.member_of.setdefault(root, set()).add(k)
        self.kernel_at[self._find(self.index[root])] = k
        return k

    # ---- reachability --------------------------------------------------------
    def _successors(self, node: int) -> Set[int]:
        rep = self.rep
        return {rep[j] for i in self.group[node] for j in self.succ_ids[i]} - {node}

    def _reaches(self, starts: Iterable[int], targets: Iterable[int]) -> bool:
        """Whether a path leads from a start node to a target node in the
        graph with kernels contracted: the ops reachable in the op graph,
        closed under "touching a kernel reaches everything the kernel
        reaches"."""
        reach = 0
        for node in starts:
            reach |= self.group_desc.get(node, self.desc[node])
        targets = set(targets)
        target_bits = 0
        for t in targets:
            target_bits |= self.group_bits.get(t, 1 << t)
        pending = [g for g in self.group_bits if g not in targets]
        while not reach & target_bits:
            touched = [g for g in pending if reach & self.group_bits[g]]
            if not touched:
                return False
            for g in touched:
                reach |= self.group_desc[g]
            pending = [g for g in pending if not reach & self.group_bits[g]]
        return True

    def _cycle_via(self, starts: Iterable[int], targets: Iterable[int]) -> Optional[int]:
        """The first start node (in schedule order) with a path to a target."""
        starts = sorted(starts)
        targets = set(targets)
        if not starts or not self._reaches(starts, targets):
            return None
        return next(s for s in starts if self._reaches([s], targets))

    def _node_name(self, node: int) -> str:
        k = self.kernel_at.get(node)
        return f"kernel of {k.root.name}" if k is not None else self.ops[node].name

    # ---- producer -> consumer fusion ----------------------------------------
    def _data_inputs(self, op: Operation) -> List[Tensor]:
        skip = SHAPE_ONLY_INPUTS.get(op.type, ())
        return [t for pos, t in enumerate(op.inputs) if pos not in skip]

    def _data_producers(self, op: Operation) -> List[Operation]:
        skip = SHAPE_ONLY_INPUTS.get(op.type, ())
        return [t.op for pos, t in enumerate(op.inputs) if pos not in skip]

    def _grow(self, k: _Kernel) -> None:
        heap: List[Tuple[int, Operation, Operation]] = []
        decided: Set[Operation] = set()

        def push(consumer: Operation) -> None:
            for p in self._data_producers(consumer):
                if p not in decided:
                    decided.add(p)
                    heapq.heappush(heap, (-self.index[p], p, consumer))

        push(k.root)
        while heap:
            _, p, consumer = heapq.heappop(heap)
            if p in k.members:
                continue
            if self._try_join(p, k, consumer):
                push(p)

    def _try_join(self, p: Operation, k: _Kernel, consumer: Operation) -> bool:
        role = self.roles[p]

        def refuse(reason: str) -> bool:
            self._refuse(p.name, consumer.name, reason, k)
            return False

        if role is None:
            if p.opdef.lowering != SOURCE and p.type != "variable":
                refuse(self.reasons[p])
            return False
        if role == REDUCTION_ROLE:
            return refuse("reduction result (a reduction's consumers start a new kernel)")
        n = _count(p.outputs[0].shape)
        if n > k.count:
            return refuse(f"different iteration space ({n} elements, kernel iterates over {k.count})")
        node = self._node(k)
        # owned when every reader is in this kernel, else recomputed here
        exclusive = p not in self.owner and not self._successors(self.index[p]) - {node}
        if role == TRIVIAL:
            # a fetched one too: it may have another size than the kernel's outputs
            self._add_member(k, p, exclusive and p not in self.fetched_ops)
            return True
        costs = ""
        if n == k.count and not exclusive:
            recompute, reuse = self._remat_cost(p, k), self._reuse_cost(p)
            if recompute < reuse:
                self._add_member(k, p, False)
                return True
            costs = f": recomputing costs {recompute:g} per element, reading it {reuse:g}"
        if p in self.owner:
            return refuse(f"would duplicate {p.type} (already in the kernel of {self.owner[p].root.name}){costs}")
        if n < k.count:
            return refuse(f"would recompute: {p.type} has {n} elements, the kernel iterates over {k.count}")
        outside = self._exits([self.index[p]], {node}, [k])
        if outside:
            via = self._cycle_via(outside, [node])
            if via is not None:
                return refuse(f"cycle (through {self._node_name(via)})")
        self._add_member(k, p, True)
        return True

    def _read_by_kernel(self, k: _Kernel) -> Set[Tensor]:
        cached = self._read_by.get(k.id)
        if cached is None or cached[0] != k.version:
            cached = (k.version, self._inputs_of(k))
            self._read_by[k.id] = cached
        return cached[1]

    def _remat_cost(self, p: Operation, k: _Kernel) -> float:
        """Per-element cost of recomputing ``p`` in ``k``: its op, and a
        load of each full-size operand ``k`` neither computes nor reads yet
        (smaller operands are broadcast: they stay in cache)."""
        cost = _op_cost(p)
        read = self._read_by_kernel(k)
        members = k.members
        for t in dict.fromkeys(self._data_inputs(p)):
            if t.op not in members and t not in read and _count(t.shape) >= k.count:
                cost += _load_cost(t)
        return cost

    def _reuse_cost(self, p: Operation) -> float:
        """Per-element cost of reading ``p`` from memory instead: the load,
        plus a share of the store that makes it when recomputing could spare
        that store (no fetch, every reader fusible, so each may recompute
        it). The store is shared among the readers outside the kernel that
        computes ``p``: kernels count once, readers inside it not at all."""
        cost = _load_cost(p.outputs[0])
        readers = {c for c, _ in self.uses[p]}
        if (p.outputs[0] in self.fetched or self.ctrl_uses[p]
                or any(self.roles[c] is None for c in readers)):
            return cost
        home = self.owner.get(p)
        units = {self.owner.get(c, c) for c in readers} - {home}
        return cost + _store_cost(p.outputs[0]) / max(1, len(units))

    # ---- rematerialization after merging ------------------------------------------
    def _remat_chain(self, op: Operation, k: _Kernel) -> Tuple[float, List[Operation]]:
        """Per-element cost of recomputing ``op`` in ``k``, and the ops that
        takes: an operand ``k`` neither computes nor reads is loaded, or
        recomputed itself where that is cheaper than its load (searched
        only while cheaper: a load costs a few ops, so chains stay short)."""
        read = self._read_by_kernel(k)
        members = k.members

        def chain(o: Operation, budget: float) -> Tuple[float, List[Operation]]:
            cost, ops = _op_cost(o), [o]
            for t in dict.fromkeys(self._data_inputs(o)):
                if t.op in members or t in read or _count(t.shape) < k.count:
                    continue
                load = _load_cost(t)
                spare = min(load, budget - cost)
                if (spare > 0 and self.roles[t.op] in (TRIVIAL, ELEMENTWISE_ROLE)
                        and _count(t.op.outputs[0].shape) == k.count and t.op not in self.fetched_ops):
                    sub_cost, sub_ops = chain(t.op, spare)
                    if sub_cost < spare:
                        cost += sub_cost
                        ops += [s for s in sub_ops if s not in ops]
                        continue
                cost += load
            return cost, ops

        return chain(op, float("inf"))

    def _remat_phase(self) -> bool:
        """Each kernel recomputes the full-size values it reads from other
        kernels where the cost model prefers that to the load (and the
        store, when no other reader needs it): merged kernels read more, so
        values that needed an extra load before may now be recomputed from
        tensors the kernel reads anyway. Whether anything changed."""
        changed = False
        for k in sorted((k for k in self.kernels if k is not None), key=lambda k: -self.index[k.root]):
            for t in sorted(self._read_by_kernel(k), key=lambda t: (self.index[t.op], t.value_index)):
                op = t.op
                home = self.owner.get(op)
                if (home is None or home is k or self.roles[op] != ELEMENTWISE_ROLE
                        or _count(t.shape) != k.count or op in k.members):
                    continue
                cost, ops = self._remat_chain(op, k)
                reuse = self._reuse_cost(op)
                if cost < reuse:
                    for o in ops:
                        if o not in k.members:
                            self._add_member(k, o, False)
                    changed = True
                else:
                    self._refuse(op.name, f"kernel of {k.root.name}",
                                 f"read from the kernel of {home.root.name}: recomputing costs {cost:g} per "
                                 f"element, reading it {reuse:g}", k)
        return changed

    def _exits(self, starts: Iterable[int], inside: Set[int], kernels: Sequence[_Kernel]) -> Set[int]:
        """The nodes after ``starts`` from which a path back ``inside`` would
        make a cycle: their successors outside, where an op one of
        ``kernels`` recomputes (a node of its own) stands for its successors:
        its edges stay inside the kernel once fused."""
        recomputed = {self.index[d] for k in kernels for d in k.dup if d not in self.owner} - inside
        out: Set[int] = set()
        seen: Set[int] = set(inside)
        stack = list(starts)
        while stack:
            for s in self._successors(stack.pop()):
                if s in seen:
                    continue
                seen.add(s)
                if s in recomputed:
                    stack.append(s)
                else:
                    out.add(s)
        return out

    def _needed_standalone(self, t: Operation) -> bool:
        """Whether some reader of a trivial or recomputed op gets its value
        from outside a kernel that recomputes it (then it needs a copy of
        its own)."""
        if any(o in self.fetched for o in t.outputs) or self.ctrl_uses[t]:
            return True
        for c, _ in self.uses[t]:
            if c not in self.owner and c not in self.skipped:
                return True
            if any(t not in kk.members for kk in self.member_of.get(c, ())):
                return True
        return False

    # ---- kernel merging (producer-consumer and sibling multi-output) --------
    def _inputs_of(self, k: _Kernel) -> Set[Tensor]:
        members = k.members
        out = set()
        for m in members:
            skip = SHAPE_ONLY_INPUTS.get(m.type, ())
            for pos, t in enumerate(m.inputs):
                if pos not in skip and t.op not in members:
                    out.add(t)
        return out

    def _reads_reduction_of(self, a: _Kernel, b: _Kernel, b_inputs: Set[Tensor]) -> bool:
        """Some op of ``b`` reads a reduction result computed in ``a``."""
        return any(t.op in a.owned and self.roles[t.op] == REDUCTION_ROLE for t in b_inputs)

    def _merge_refusal(self, a: _Kernel, b: _Kernel, inputs: Dict[_Kernel, Set[Tensor]]) -> Optional[str]:
        if a.space != b.space:
            return f"different iteration space ({_shapes.fmt(a.space)} vs {_shapes.fmt(b.space)})"
        if a.axes is not None and b.axes is not None and a.axes != b.axes:
            return f"different reduction axes ({a.axes} vs {b.axes})"
        if self._reads_reduction_of(a, b, inputs[b]) or self._reads_reduction_of(b, a, inputs[a]):
            return "reduction result consumed (a reduction's consumers start a new kernel)"
        both = {self._node(a), self._node(b)}
        via = self._cycle_via(self._exits(both, both, [a, b]), both)
        if via is not None:
            return f"cycle (through {self._node_name(via)})"
        return None

    def _merge(self, a: _Kernel, b: _Kernel) -> None:
        na, nb = self._node(a), self._node(b)
        self.kernel_at.pop(na, None)
        self.kernel_at.pop(nb, None)
        self.kernel_at[self._union(na, nb)] = a
        for op in b.owned:
            self.owner[op] = a
        a.owned |= b.owned
        a.dup = (a.dup | b.dup) - a.owned
        for op in b.members:
            s = self.member_of[op]
            s.discard(b)
            s.add(a)
        if a.kind == "loop" and b.kind == "reduction":
            a.kind, a.axes = "reduction", b.axes
        if self.index[b.root] > self.index[a.root]:
            a.root = b.root
        a.refusals.extend(r for r in b.refusals if r not in a.refusals)
        a.version += b.version + 1
        self.kernels[b.id] = None

    def _merge_phase(self) -> None:
        # pairs refused at their current versions stay refused until one grows
        while self._merge_once(self._merge_refused):
            pass

    def _merge_once(self, refused: Set[Tuple[int, int, int, int]]) -> bool:
        """Merge one pair of kernels; False when none can be merged."""
        alive = sorted((k for k in self.kernels if k is not None), key=lambda k: -self.index[k.root])
        inputs = {k: self._inputs_of(k) for k in alive}
        readers: Dict[Tensor, List[_Kernel]] = {}
        for k in alive:
            for t in inputs[k]:
                readers.setdefault(t, []).append(k)
        for a in alive:
            linked: Dict[_Kernel, None] = {}
            for m in a.owned:
                for b in readers.get(m.outputs[0], ()):
                    linked[b] = None
            siblings: Dict[_Kernel, None] = {}
            near: Dict[_Kernel, None] = {}      # share only a smaller input
            for t in sorted(inputs[a], key=lambda t: (self.index[t.op], t.value_index)):
                producer = self.owner.get(t.op)
                if producer is not None and producer is not a:
                    linked[producer] = None
                n = _count(t.shape)
                if n == a.count:
                    for b in readers[t]:
                        siblings[b] = None
                elif n > 1:
                    for b in readers[t]:
                        if b.space == a.space and _rows(a, b):
                            near[b] = None
            for b in list(linked) + [s for s in siblings if s not in linked] + [
                    s for s in near if s not in linked and s not in siblings]:
                if b is a:
                    continue
                key = (a.id, a.version, b.id, b.version) if a.id < b.id else (b.id, b.version, a.id, a.version)
                if key in refused:
                    continue
                reason = self._merge_refusal(a, b, inputs)
                if reason is None:
                    self._merge(a, b)
                    return True
                refused.add(key)
                if a.space == b.space or b in siblings:
                    first, second = sorted((a, b), key=lambda k: self.index[k.root])
                    what = "producer-consumer" if b in linked else "sibling"
                    self._refuse(f"kernel of {first.root.name}", f"kernel of {second.root.name}",
                                 f"{what} fusion refused: {reason}", a, b)
        return False

    # ---- driver -------------------------------------------------------------
    def plan(self) -> None:
        for op in reversed(self.ops):
            if op in self.owner or self.roles[op] is None:
                continue
            if (self.roles[op] == TRIVIAL or op in self.member_of) and not self._needed_standalone(op):
                self.skipped.add(op)
                continue
            self._grow(self._new_kernel(op))
        self._merge_phase()
        for _ in range(4):      # each round only adds recomputation; a few settle real graphs
            if not self._remat_phase():
                break
            self._merge_phase()
        # a kernel of one op stays a plain op
        for i, k in enumerate(self.kernels):
            if k is not None and len(k.members) == 1:
                del self.owner[k.root]
                self.member_of[k.root].discard(k)
                self.kernels[i] = None


def _rows(a: _Kernel, b: _Kernel) -> bool:
    """Whether a merge of ``a`` and ``b`` reduces (if at all) over trailing
    axes only: then its full-shape stores stay contiguous in the inner loop."""
    axes = a.axes if a.axes is not None else b.axes
    if axes is None:
        return True
    rank = len(a.space)
    return axes == tuple(range(rank - len(axes), rank))


# --------------------------------------------------------------------------
# Building the new program
# --------------------------------------------------------------------------
class _Emitter:
    """Liveness over the fused structure, then the rewrite in a topological
    order of kernels and plain ops."""

    def __init__(self, f: _Fuser) -> None:
        self.f = f
        self.kernels = [k for k in f.kernels if k is not None]
        self.needed: Dict[_Kernel, Set[Operation]] = {k: set() for k in self.kernels}
        self.exports: Dict[_Kernel, Set[Tensor]] = {k: set() for k in self.kernels}
        self.live_ops: Set[Operation] = set()
        self._liveness()

    def _owner(self, op: Operation) -> Optional[_Kernel]:
        k = self.f.owner.get(op)
        return k if k is not None and k in self.needed else None

    def _liveness(self) -> None:
        f = self.f
        stack: List[Tuple[Tensor, Optional[_Kernel]]] = [(t, None) for t in f.program.fetches]
        roots = list(f.program.targets) + [op for op in f.ops if op.is_stateful or op in f.dead]
        seen: Set[Tuple[Tensor, Optional[_Kernel]]] = set()

        def visit_op(op: Operation, k: Optional[_Kernel]) -> None:
            skip = SHAPE_ONLY_INPUTS.get(op.type, ()) if k is not None else ()
            for pos, t in enumerate(op.inputs):
                if pos not in skip:
                    stack.append((t, k))
            for c in op.control_inputs:
                if c not in self.live_ops:
                    self.live_ops.add(c)
                    visit_op(c, None)

        for op in roots:
            if op not in self.live_ops:
                self.live_ops.add(op)
                visit_op(op, None)
        while stack:
            t, requester = stack.pop()
            if (t, requester) in seen:
                continue
            seen.add((t, requester))
            op = t.op
            if requester is not None and op in requester.members:
                if op not in self.needed[requester]:
                    self.needed[requester].add(op)
                    visit_op(op, requester)
                continue
            k = self._owner(op)
            if k is not None:
                self.exports[k].add(t)
                if op not in self.needed[k]:
                    self.needed[k].add(op)
                    visit_op(op, k)
            elif op not in self.live_ops:
                self.live_ops.add(op)
                visit_op(op, None)

    # ---- units and their order ------------------------------------------------
    def _kernel_inputs(self, k: _Kernel) -> List[Tensor]:
        members = self.needed[k]
        out: List[Tensor] = []
        for m in sorted(members, key=self.f.index.get):
            skip = SHAPE_ONLY_INPUTS.get(m.type, ())
            for pos, t in enumerate(m.inputs):
                if pos not in skip and t.op not in members and t not in out:
                    out.append(t)
        return out

    def _unit_of(self, t: Tensor) -> Unit:
        k = self._owner(t.op)
        return k if k is not None and t in self.exports[k] else t.op

    def order(self) -> List[Unit]:
        f = self.f
        units: List[Unit] = [op for op in f.ops if op in self.live_ops]
        units += [k for k in self.kernels if self.needed[k]]
        deps: Dict[Any, Set[Unit]] = {}
        key: Dict[Any, int] = {}
        for u in units:
            if isinstance(u, _Kernel):
                members = self.needed[u]
                ins = [self._unit_of(t) for t in self._kernel_inputs(u)]
                ctrl = [c for m in members for c in m.control_inputs]
                key[u] = max(f.index[m] for m in members)
            else:
                ins = [self._unit_of(t) for t in u.inputs]
                ctrl = list(u.control_inputs)
                key[u] = f.index[u]
            deps[u] = {d for d in ins + ctrl if d is not u}
        stateful = [u for u in units if isinstance(u, Operation) and u.is_stateful]
        for a, b in zip(stateful, stateful[1:]):
            deps[b].add(a)
        users: Dict[Any, List[Unit]] = {u: [] for u in units}
        for u in units:
            for d in deps[u]:
                users[d].append(u)
        pending = {u: len(deps[u]) for u in units}
        heap = [(key[u], id(u), u) for u in units if pending[u] == 0]
        heapq.heapify(heap)
        order: List[Unit] = []
        while heap:
            _, _, u = heapq.heappop(heap)
            order.append(u)
            for v in users[u]:
                pending[v] -= 1
                if pending[v] == 0:
                    heapq.heappush(heap, (key[v], id(v), v))
        if len(order) != len(units):
            raise CompileError("fusion pass: the fused graph has a cycle (this is a bug in graphc)")
        return order

    # ---- emission -------------------------------------------------------------
    def rewrite(self) -> Tuple[Program, List[KernelInfo]]:
        f = self.f
        rw = Rewriter(f.program)
        infos: List[KernelInfo] = []
        for u in self.order():
            if isinstance(u, Operation):
                if not rw.is_copied(u):
                    rw.copy(u)
                continue
            infos.append(self._emit_kernel(rw, u))
        new = rw.finish()
        return new, infos

    def _emit_kernel(self, rw: Rewriter, k: _Kernel) -> KernelInfo:
        f = self.f
        members = sorted(self.needed[k], key=f.index.get)
        inputs = self._kernel_inputs(k)
        # The kernel is named after its last fetched root, else its last
        # root (so a fetched `loss` keeps its name); that value comes first.
        main = max((t.op for t in self.exports[k]), key=lambda op: (op.outputs[0] in f.fetched, f.index[op]))
        outputs = sorted(self.exports[k], key=lambda t: (t.op is not main, f.index[t.op], t.value_index))
        body = FuncGraph(f"fusion/{k.root.name}", outer=rw.graph)
        values: Dict[Tensor, Tensor] = {}
        for t in inputs:
            values[t] = body.add_arg(t.shape, t.dtype, name=t.op.name.replace("/", "_"))
        for m in members:
            values[m.outputs[0]] = _emit_body_op(body, m, values)
        body.outputs = [values[t] for t in outputs]
        sources = tuple((m.name, m.type, str(m.source)) for m in members)
        roots = tuple(dict.fromkeys(t.op.name for t in outputs))
        kind = "reduction" if any(f.roles[m] == REDUCTION_ROLE for m in members) else "loop"
        attrs = {"body": body, "kind": kind, "roots": roots, "sources": sources,
                 "refusals": tuple(str(r) for r in k.refusals)}
        controls = []
        for m in members:
            for c in m.control_inputs:
                new_c = rw.copy(c)
                if new_c not in controls:
                    controls.append(new_c)
        with rw.graph.control_dependencies(controls):
            op = rw.graph.create_op(FUSED_OP, [rw[t] for t in inputs], attrs, name=main.name, source=main.source)
        for t, new_t in zip(outputs, op.outputs):
            rw.replace(t, new_t)
        return KernelInfo(op.name, kind, roots, sources, len(inputs), len(outputs))


def _emit_body_op(body: FuncGraph, m: Operation, values: Dict[Tensor, Tensor]) -> Tensor:
    """Re-create ``m`` in the kernel body; ops that read an input only for
    its shape use the static shape instead."""
    out = m.outputs[0]

    def make(op_type: str, inputs: Sequence[Tensor], attrs: Dict[str, Any], suffix: str = "") -> Tensor:
        op = body.create_op(op_type, list(inputs), attrs, name=m.name + suffix, source=m.source)
        op.gradient_of = m.gradient_of
        return op.outputs[0]

    t = m.type
    if t not in SHAPE_ONLY_INPUTS:
        return make(t, [values[x] for x in m.inputs], dict(m.attrs))
    shape = tuple(out.shape)
    if t == "fill_like":
        value = make("const", [], {"value": np.asarray(m.attrs["value"], dtype=m.attrs["dtype"])}, "/value")
        return make("broadcast_to", [value], {"shape": shape})
    x = values[m.inputs[0]]
    if t == "sum_to_shape_of":
        axes = _sum_to_axes(tuple(x.shape), shape)
        if not axes:
            return make("identity", [x], {})
        # reduce_sum drops the summed axes; a reshape restores like's size-1 dims
        needs_reshape = _reduced_shape(tuple(x.shape), axes) != shape
        summed = make("reduce_sum", [x], {"axis": axes, "keepdims": False}, "/sum" if needs_reshape else "")
        return make("reshape", [summed], {"shape": shape}) if needs_reshape else summed
    if t == "reshape_like":
        return make("reshape", [x], {"shape": shape})
    if t == "broadcast_reduced" and not m.attrs["keepdims"]:
        rank = len(shape)
        axes = range(rank) if m.attrs["axis"] is None else {a % rank for a in m.attrs["axis"]}
        kept = tuple(1 if i in axes else d for i, d in enumerate(shape))
        x = make("reshape", [x], {"shape": kept}, "/reshape")
    if tuple(x.shape) == shape:
        return make("identity", [x], {})
    return make("broadcast_to", [x], {"shape": shape})


def _reduced_shape(shape: Tuple[int, ...], axes: Tuple[int, ...]) -> Tuple[int, ...]:
    return tuple(d for i, d in enumerate(shape) if i not in axes)


# --------------------------------------------------------------------------
# The pass
# --------------------------------------------------------------------------
def fuse(program: Program) -> Program:
    """Group fusible ops into ``fused_kernel`` ops (see the module doc)."""
    f = _Fuser(program)
    f.plan()
    emitter = _Emitter(f)
    refusals = [f"fusion refused: {r}" for r in f.refusals]
    if not any(emitter.needed[k] for k in emitter.kernels) and not f.skipped:
        if refusals:
            program.analyses.setdefault("_notes", []).extend(refusals)
        return program
    new, infos = emitter.rewrite()
    report = FusionReport(program.num_ops(), new.num_ops(), infos, list(f.refusals))
    loops = sum(1 for k in infos if k.kind == "loop")
    notes = list(program.analyses.get("_notes", []))
    notes.append(f"fusion: {len(infos)} kernel{'' if len(infos) == 1 else 's'} ({loops} loop, "
                 f"{len(infos) - loops} reduction) from "
                 f"{sum(len(k.sources) for k in infos)} ops; {report.ops_before} -> {report.ops_after} ops")
    notes.extend(f"fusion: {k.name} ({k.kind}) = " + ", ".join(f"{n} ({t})" for n, t, _ in k.sources)
                 for k in infos)
    notes.extend(refusals)
    new.analyses["fusion"] = report
    new.analyses["_notes"] = notes
    return new


register_pass("fusion", "fuse elementwise/broadcast chains and reductions' inputs into fused_kernel ops "
              "(producer-consumer, multi-output and sibling fusion); cheap producers are recomputed in their "
              "consumers instead of stored (a cost model weighs op costs against loads and stores)")(fuse)
