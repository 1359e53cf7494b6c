"""Split a program's schedule into native segments and host steps, and say
where every value lives.

An op runs natively when it has static shapes and one of: a loop-IR
lowering (fused kernels, elementwise and reduction ops, broadcasts; the
lowering itself decides, graphc/lowering/lower.py), a BLAS matmul, a view
(reshape and friends: no code, the pointer of its input), or a variable
read/update. Everything else (control flow, random ops, gathers, convs,
ops with data-dependent shapes) is a *host step*: the op's NumPy reference
run by the interpreter. A maximal run of consecutive native ops is one
*segment*, compiled to one entry point; a program whose ops are all native
is one segment: one native call per run.

Storage of a tensor computed in a segment: a fresh output array per run
when something outside the segment needs it (a fetch, a host step, a later
segment, a variable's new value), else a slot of the executable's arena at
the offset the memory plan gave its buffer (graphc/passes/memory.py).
Everything a segment reads from outside (feeds, variable values, results
of host steps and earlier segments) is an argument.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Set, Tuple, Union

import numpy as np

from ...dtypes import SUPPORTED
from ...errors import CompileError
from ...graph import FuncGraph, Operation, Tensor
from ...passes.prune import prune
from ...lowering import loop_ir as L
from ...lowering.lower import lower_op
from ...lowering.matvec import lower_matmul, lower_matvec
from ...passes.memory import ALIAS_OPS, PLANNED
from ...codegen.blas import matmul_dtypes

ALIGN = 64
SOURCES = frozenset({"placeholder", "const", "no_op", "arg"})
CONTROL = frozenset({"cond", "while_loop"})
ASSIGNS = frozenset({"assign", "assign_add", "assign_sub"})
VARIABLE_READS = frozenset({"variable", "read_variable"})

# What a segment argument holds, per run.
#   ("tensor", t)   the value of t computed before the segment (feed, host step, earlier segment)
#   ("start", var)  the variable's value at the start of the run
#   ("current", var) the variable's value when the segment starts
#   ("output", t)   a fresh array the segment writes t into
Source = Tuple[str, object]


@dataclass
class Arg:
    source: Source
    dtype: np.dtype
    shape: Tuple[int, ...]

    @property
    def is_output(self) -> bool:
        return self.source[0] == "output"


@dataclass
class SubProgram:
    """A cond branch or a loop's cond/body, compiled inline: its ops in order."""
    graph: FuncGraph
    ops: List["NativeOp"]


@dataclass
class NativeOp:
    op: Operation
    kind: str        # "kernel" | "matmul" | "view" | "read" | "assign" | "source" | "cond" | "while_loop"
    kernel: Optional[L.Kernel] = None
    subprograms: List[SubProgram] = field(default_factory=list)
    # while_loop: arena offsets of the two sets of loop-variable buffers
    state: List[List[int]] = field(default_factory=list)


@dataclass
class Segment:
    ops: List[NativeOp]
    args: List[Arg] = field(default_factory=list)
    # where each tensor's data is: ("arg", i) | ("arena", offset) | ("const", k) | ("view", root tensor)
    where: Dict[Tensor, Tuple[str, object]] = field(default_factory=dict)
    # variable updates to commit after the call, in schedule order: (var name, tensor)
    commits: List[Tuple[str, Tensor]] = field(default_factory=list)
    # tensors needed after the segment, and where their data is: ("arg", i) or
    # ("const", k); a view of it when the tensor's shape differs
    exports: List[Tuple[Tensor, Tuple[str, int]]] = field(default_factory=list)
    symbol: str = ""
    parallel: bool = False          # its code may open parallel regions (set when emitted)

    def inputs(self) -> List[Arg]:
        return [a for a in self.args if not a.is_output]

    def outputs(self) -> List[Arg]:
        return [a for a in self.args if a.is_output]


@dataclass
class HostStep:
    op: Operation


Step = Union[Segment, HostStep]


@dataclass
class Layout:
    steps: List[Step]
    constants: List[np.ndarray]          # constant arrays native code reads (context table order)
    arena_bytes: int
    const_index: Dict[Tensor, int]


def _static(t: Tensor) -> bool:
    return t.shape is not None and all(d is not None for d in t.shape) and t.dtype in SUPPORTED


def classify(op: Operation, blas: bool = True) -> Optional[NativeOp]:
    """How ``op`` runs natively, or None (a host step). ``blas=False``: every
    matmul becomes a loop kernel (exported libraries call no BLAS)."""
    if not all(_static(t) for t in list(op.inputs) + list(op.outputs)):
        return None
    kind = op.type
    if kind in SOURCES:
        return NativeOp(op, "source")
    if kind in ALIAS_OPS:
        return NativeOp(op, "view")
    if kind in VARIABLE_READS:
        return NativeOp(op, "read")
    if kind in ASSIGNS:
        return NativeOp(op, "assign")
    if kind in CONTROL:
        return _classify_control(op, blas)
    if kind == "matmul":
        kernel = lower_matvec(op) if blas else lower_matmul(op)
        if kernel is not None:
            return NativeOp(op, "kernel", kernel)
        if op.outputs[0].dtype in matmul_dtypes():
            return NativeOp(op, "matmul")
        return None
    if op.opdef.lowering in ("fused", "elementwise", "reduction", "layout"):
        try:
            return NativeOp(op, "kernel", lower_op(op))
        except CompileError:
            return None
    return None


def subgraph_ops(graph: FuncGraph) -> List[Operation]:
    """The ops one run of a subgraph needs, in order."""
    return prune(graph, graph.outputs, [], graph.inputs)


def _classify_control(op: Operation, blas: bool) -> Optional[NativeOp]:
    """cond/while_loop compile inline when every op of their subgraphs does
    and loop variables keep their static shapes. Variable reads and updates
    inside bodies (per-iteration snapshots) stay on the host path."""
    if op.type == "cond":
        graphs = [op.attrs["true_branch"], op.attrs["false_branch"]]
        for fg in graphs:
            if [tuple(t.shape) for t in fg.outputs] != [tuple(t.shape) for t in op.outputs]:
                return None
    else:
        graphs = [op.attrs["cond"], op.attrs["body"]]
        n = op.attrs["num_loop_vars"]
        body = graphs[1]
        if [tuple(t.shape) for t in body.outputs] != [tuple(t.shape) for t in body.inputs[:n]]:
            return None
    subprograms = []
    for fg in graphs:
        if not all(_static(t) for t in list(fg.inputs) + list(fg.outputs)):
            return None
        natives = []
        for sub in subgraph_ops(fg):
            n_op = classify(sub, blas)
            if n_op is None or n_op.kind in ("read", "assign") or sub.type == "placeholder":
                return None
            natives.append(n_op)
        subprograms.append(SubProgram(fg, natives))
    return NativeOp(op, op.type, subprograms=subprograms)


def _nbytes(t: Tensor) -> int:
    return int(np.prod(t.shape, dtype=np.int64)) * t.dtype.itemsize


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def plan_layout(program, schedule: Sequence[Operation], native: Dict[Operation, Optional[NativeOp]]) -> Layout:
    """Steps and storage for ``schedule`` (the program's ops, fed ones excluded)."""
    steps: List[Step] = []
    for op in schedule:
        n = native.get(op)
        if n is None:
            steps.append(HostStep(op))
        elif steps and isinstance(steps[-1], Segment):
            steps[-1].ops.append(n)
        else:
            steps.append(Segment([n]))
    segment_of: Dict[Tensor, Segment] = {}
    for s in steps:
        if isinstance(s, Segment):
            for n in s.ops:
                for t in n.op.outputs:
                    segment_of[t] = s
    # who reads each tensor from outside its segment
    needed_outside: Set[Tensor] = set(program.fetches)
    for s in steps:
        ops = [s.op] if isinstance(s, HostStep) else [n.op for n in s.ops]
        for op in ops:
            for t in op.inputs:
                if segment_of.get(t) is not s:
                    needed_outside.add(t)

    constants: List[np.ndarray] = []
    const_index: Dict[Tensor, int] = {}
    plan = program.analyses.get("memory_plan")
    if plan is not None and getattr(plan, "schedule", None) != program.graph._ops:
        plan = None
    arena = _Arena(plan)
    for s in steps:
        if isinstance(s, Segment):
            _place_segment(s, needed_outside, constants, const_index, arena)
    return Layout(steps, constants, arena.size, const_index)


class _Arena:
    """Offsets in the executable's scratch memory: one region per memory-plan
    buffer that holds an arena tensor (tensors the plan put in one buffer
    share it), else one region per tensor."""

    def __init__(self, plan) -> None:
        self.plan = plan
        self.size = 0
        self.buffer_offset: Dict[int, int] = {}

    def _take(self, nbytes: int) -> int:
        offset = self.size
        self.size += _align(nbytes)
        return offset

    def fresh(self, nbytes: int) -> int:
        """A region of its own (subgraph values, loop state)."""
        return self._take(nbytes)

    def place(self, t: Tensor) -> int:
        plan = self.plan
        life = plan.tensors.get(t) if plan is not None else None
        if life is not None and life.kind == PLANNED and life.buffer is not None:
            if life.buffer not in self.buffer_offset:
                self.buffer_offset[life.buffer] = self._take(plan.buffers[life.buffer].nbytes)
            return self.buffer_offset[life.buffer]
        return self._take(_nbytes(t))


def _place_control(n: NativeOp, where: Dict, read, arena: _Arena) -> None:
    """Places for everything inside a cond/while: subgraph arguments are
    bound at emission, constants go to the table, every computed value gets
    an arena region of its own; a loop gets two sets of loop-variable buffers."""
    for sp in n.subprograms:
        for t in sp.graph.inputs:
            where[t] = ("bound", None)
        for inner in sp.ops:
            op = inner.op
            if op.type == "arg":
                where[op.outputs[0]] = ("bound", None)
            elif inner.kind == "source":
                for t in op.outputs:
                    read(t)
            elif inner.kind == "view":
                where[op.outputs[0]] = ("view", op.inputs[0])
            else:
                for t in op.outputs:
                    where[t] = ("arena", arena.fresh(_nbytes(t)))
                if inner.subprograms:
                    _place_control(inner, where, read, arena)
    if n.op.type == "while_loop":
        loop_vars = n.op.attrs["body"].inputs[:n.op.attrs["num_loop_vars"]]
        n.state = [[arena.fresh(_nbytes(t)) for t in loop_vars] for _ in range(2)]


def _place_segment(seg: Segment, needed_outside: Set[Tensor], constants: List[np.ndarray],
                   const_index: Dict[Tensor, int], arena: _Arena) -> None:
    where = seg.where
    arg_of: Dict[Source, int] = {}

    def arg(source: Source, t_dtype: np.dtype, shape: Tuple[int, ...]) -> Tuple[str, object]:
        if source not in arg_of:
            arg_of[source] = len(seg.args)
            seg.args.append(Arg(source, np.dtype(t_dtype), tuple(shape)))
        return ("arg", arg_of[source])

    def root(t: Tensor) -> Tensor:
        while where.get(t, ("",))[0] == "view":
            t = where[t][1]
        return t

    def read(t: Tensor) -> None:
        """Make sure ``t`` (an input of an op of this segment) has a place."""
        if t in where:
            return
        if t.op.type == "const":
            if t not in const_index:
                const_index[t] = len(constants)
                constants.append(np.ascontiguousarray(np.asarray(t.op.attrs["value"], dtype=t.dtype)))
            where[t] = ("const", const_index[t])
            return
        where[t] = arg(("tensor", t), t.dtype, t.shape)

    last_assign: Dict[str, Tensor] = {}
    computed: List[Tensor] = []
    for n in seg.ops:
        op = n.op
        for t in op.inputs:
            if n.kind != "read":        # a read's input is the snapshot: only a dataflow tie
                read(t)
        if n.kind == "source":
            for t in op.outputs:
                if op.type == "const":
                    read(t)
            continue
        if n.kind == "view":
            where[op.outputs[0]] = ("view", op.inputs[0])
            continue
        if n.kind == "read":
            var = op.attrs["var"]
            t = op.outputs[0]
            if op.type == "variable" or not op.attrs.get("ordered"):
                where[t] = arg(("start", var), t.dtype, t.shape)
            elif var in last_assign:
                where[t] = ("view", last_assign[var])
            else:
                where[t] = arg(("current", var), t.dtype, t.shape)
            continue
        if n.kind == "assign":
            var = op.attrs["var"]
            t = op.outputs[0]
            if op.type != "assign" and var not in last_assign:
                where[("current", var)] = arg(("current", var), t.dtype, t.shape)   # the value updated
            where[t] = arg(("output", t), t.dtype, t.shape)
            last_assign[var] = t
            seg.commits.append((var, t))
            continue
        computed.extend(op.outputs)
        for t in op.outputs:
            where[t] = ("computed", None)      # placed below, once all uses are known
        if n.subprograms:
            _place_control(n, where, read, arena)

    # views needed outside make their roots exported
    exported: Set[Tensor] = set()
    for t in list(where):
        if not isinstance(t, Tensor):
            continue
        if t in needed_outside and where[t][0] == "view":
            r = root(t)
            if r in computed:
                exported.add(r)
    for t in computed:
        if t in needed_outside:
            exported.add(t)
    for t in computed:
        if t in exported:
            where[t] = arg(("output", t), t.dtype, t.shape)
        else:
            where[t] = ("arena", arena.place(t))
    # inputs first, then outputs (Python fills them in that order)
    order = sorted(range(len(seg.args)), key=lambda i: seg.args[i].is_output)
    remap = {old: new for new, old in enumerate(order)}
    seg.args = [seg.args[i] for i in order]
    for key, (kind, val) in list(where.items()):
        if kind == "arg":
            where[key] = ("arg", remap[val])
    for n in seg.ops:
        for t in n.op.outputs:
            if t in needed_outside:
                seg.exports.append((t, where[root(t)]))
