"""Memory planning: an analysis over the final schedule (no rewrite). It sets
``program.analyses["memory_plan"]`` to a :class:`MemoryPlan`:

* every tensor's size in bytes (from its static shape; a tensor with a None
  dim is *dynamic*: listed, not planned) and live interval ``[start, end]``
  in schedule positions: from the op that makes it to the last op that reads
  it; fetched tensors live to the end of the run (position ``len(schedule)``);
* who owns it: feeds belong to the caller, constants to the graph, variable
  values (variable snapshots, reads, assign results) to the session; only
  the rest are *planned*. Ops that return a view of their input (identity,
  stop_gradient, reshape, reshape_like, expand_dims, squeeze) make an
  *alias*: no buffer of its own, and it keeps its base's buffer alive;
* a buffer assignment, scanning the schedule: an output first takes the
  buffer of an input whose last use is this op (in place: elementwise ops,
  and fused kernels that read that input at the output's own index, same
  shape and dtype), else a free buffer (best fit by bytes, any dtype; same
  dtype preferred on ties), else a new buffer. A buffer is free after the
  last use of every tensor in it;
* peak bytes: ``peak_bytes`` (the arena: the sum of buffer sizes, with
  reuse), ``peak_bytes_no_reuse`` (every planned tensor in its own buffer)
  and ``peak_live_bytes`` (the most bytes of planned buffers in use at one
  step).

Backends use ``release_after``: the tensors whose last use is each op (not
fetched), so the interpreter drops its references to dead intermediates
while a run goes on.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from ..graph import Operation, Tensor
from ..ops.registry import ELEMENTWISE, REDUCTION, STATE
from .manager import register_pass
from .program import Program

__all__ = ["Buffer", "InPlace", "MemoryPlan", "TensorLife", "plan_memory"]

# Ops whose result is a view of (or the same array as) input 0.
ALIAS_OPS = frozenset({"identity", "stop_gradient", "reshape", "reshape_like", "expand_dims", "squeeze"})

PLANNED, ALIAS, FEED, CONSTANT, STATE_KIND, DYNAMIC = "planned", "alias", "feed", "constant", "state", "dynamic"


@dataclass
class TensorLife:
    """One tensor of the schedule: size, live interval, owner, buffer."""
    tensor: Tensor
    nbytes: Optional[int]          # None: dynamic shape
    kind: str                      # planned | alias | feed | constant | state | dynamic
    start: int                     # position of the op that makes it
    end: int                       # position of its last reader (len(schedule) when fetched)
    fetched: bool = False
    buffer: Optional[int] = None
    base: Optional[Tensor] = None  # for aliases: the tensor whose memory this is

    @property
    def name(self) -> str:
        return self.tensor.name

    @property
    def owner(self) -> Tensor:
        """The tensor whose buffer holds this value (itself unless an alias)."""
        return self.tensor if self.base is None else self.base


@dataclass
class Buffer:
    id: int
    nbytes: int
    dtype: np.dtype
    tensors: List[Tensor] = field(default_factory=list)   # base tensors, in assignment order


@dataclass(frozen=True)
class InPlace:
    """``op`` writes ``output`` over ``input``, whose last use it is."""
    op: str
    input: str
    output: str


@dataclass
class MemoryPlan:
    schedule: List[Operation]
    tensors: Dict[Tensor, TensorLife]
    buffers: List[Buffer]
    in_place: List[InPlace]
    release_after: Dict[Operation, Tuple[Tensor, ...]]
    peak_bytes: int                 # with reuse: the sum of buffer sizes
    peak_bytes_no_reuse: int        # every planned tensor in a buffer of its own
    peak_live_bytes: int            # most bytes of buffers in use at one step

    @property
    def dynamic(self) -> List[Tensor]:
        return [t for t, life in self.tensors.items() if life.kind == DYNAMIC]

    def buffer_of(self, t: Tensor) -> Optional[int]:
        return self.tensors[t].buffer

    def summary(self) -> str:
        planned = [life for life in self.tensors.values() if life.kind == PLANNED]
        saved = self.peak_bytes_no_reuse - self.peak_bytes
        lines = [f"{len(self.buffers)} buffers for {len(planned)} tensors: peak {_fmt_bytes(self.peak_bytes)} "
                 f"with reuse, {_fmt_bytes(self.peak_bytes_no_reuse)} without"
                 + (f" ({100 * saved / self.peak_bytes_no_reuse:.0f}% saved)" if self.peak_bytes_no_reuse else "")
                 + f"; at most {_fmt_bytes(self.peak_live_bytes)} live at once"]
        if self.in_place:
            lines.append(f"in place ({len(self.in_place)}): "
                         + ", ".join(f"{ip.output} over {ip.input}" for ip in self.in_place))
        for b in self.buffers:
            if len(b.tensors) > 1:
                lines.append(f"buffer {b.id} ({_fmt_bytes(b.nbytes)}): " + " -> ".join(t.name for t in b.tensors))
        dynamic = self.dynamic
        if dynamic:
            lines.append(f"dynamic (not planned): {', '.join(t.name for t in dynamic)}")
        return "\n".join(lines)

    def check(self) -> None:
        """Raise AssertionError unless no buffer holds two tensors live at
        the same time (an in-place write over an input at its last use
        excepted) and every planned tensor fits its buffer."""
        in_place = {(ip.input, ip.output) for ip in self.in_place}
        ends: Dict[Tensor, int] = {}
        for life in self.tensors.values():
            base = life.owner
            ends[base] = max(ends.get(base, -1), life.end)
        for b in self.buffers:
            groups = sorted(b.tensors, key=lambda t: self.tensors[t].start)
            for t in groups:
                life = self.tensors[t]
                assert life.kind == PLANNED and life.buffer == b.id, f"{t.name} is listed in buffer {b.id}"
                assert life.nbytes <= b.nbytes, f"{t.name} ({life.nbytes} bytes) does not fit buffer {b.id}"
            for earlier, later in zip(groups, groups[1:]):
                e, l = self.tensors[earlier], self.tensors[later]
                end = ends[earlier]
                ok = end < l.start or (end == l.start and (earlier.name, later.name) in in_place)
                assert ok, (f"buffer {b.id} holds {earlier.name} (live {e.start}..{end}) and {later.name} "
                            f"(live {l.start}..{ends[later]}) at once")


def _fmt_bytes(n: int) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):.2f} MiB"
    if n >= 1 << 10:
        return f"{n / (1 << 10):.1f} KiB"
    return f"{n} B"


# --------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------
def _nbytes(t: Tensor) -> Optional[int]:
    if t.shape is None or any(d is None for d in t.shape):
        return None
    return int(np.prod(t.shape, dtype=np.int64)) * t.dtype.itemsize


def _lifetimes(program: Program) -> Dict[Tensor, TensorLife]:
    schedule = program.ops()
    end_of_run = len(schedule)
    fetched = set(program.fetches)
    fed = {t.op for t in program.feeds}
    last_use: Dict[Tensor, int] = {}
    for i, op in enumerate(schedule):
        for t in op.inputs:
            last_use[t] = i
    lives: Dict[Tensor, TensorLife] = {}
    for i, op in enumerate(schedule):
        for t in op.outputs:
            size = _nbytes(t)
            base = None
            if op in fed:
                kind = FEED
            elif op.type == "const":
                kind = CONSTANT
            elif op.opdef.lowering == STATE:
                kind = STATE_KIND
            elif op.type in ALIAS_OPS and op.inputs[0] in lives:
                src = lives[op.inputs[0]]
                base = src.owner
                kind = ALIAS if src.kind in (PLANNED, ALIAS) else src.kind
            elif size is None:
                kind = DYNAMIC
            else:
                kind = PLANNED
            end = end_of_run if t in fetched else last_use.get(t, i)
            lives[t] = TensorLife(t, size, kind, i, end, t in fetched, base=base)
    return lives


def _group_ends(lives: Dict[Tensor, TensorLife]) -> Dict[Tensor, int]:
    """A base tensor's buffer is busy until its last alias is dead too."""
    ends: Dict[Tensor, int] = {}
    for life in lives.values():
        base = life.owner
        ends[base] = max(ends.get(base, -1), life.end)
    return ends


# Ops inside a fused kernel that compute their output at the point they read
# their input at (same flat index): an input reached only through these is
# read at the index its kernel writes.
_INDEX_PRESERVING = frozenset({"identity", "stop_gradient", "reshape", "reshape_like", "expand_dims", "squeeze"})


def _reads_at_own_index(op: Operation, position: int, out: Tensor) -> bool:
    """Whether ``op`` reads input ``position`` only at the index it writes
    ``out`` at (so writing ``out`` over that input is safe)."""
    x = op.inputs[position]
    if x.shape != out.shape or x.dtype != out.dtype:
        return False
    if op.opdef.lowering == ELEMENTWISE:
        return True
    if op.type != "fused_kernel":
        return False
    body = op.attrs["body"]
    arg = body.inputs[position]
    n = _count(arg.shape)
    consumers: Dict[Tensor, List[Tuple[Operation, int]]] = {}
    for inner in body.get_operations():
        for pos, t in enumerate(inner.inputs):
            consumers.setdefault(t, []).append((inner, pos))
    # Every value derived from the argument must be computed at the loop
    # index it was read at, up to a reduction root: a layout op on the way
    # (transpose, slice, pad, broadcast...) would make the kernel read the
    # argument at another element than the one it writes.
    todo, seen = [arg], {arg}
    while todo:
        t = todo.pop()
        for inner, pos in consumers.get(t, ()):
            if inner.opdef.lowering == REDUCTION and pos == 0 and inner.type.startswith("reduce_"):
                continue      # a reduction root reads its input at the loop index
            same_count = all(_count(o.shape) == n for o in inner.outputs if o.shape is not None)
            if not same_count or not (inner.opdef.lowering == ELEMENTWISE or inner.type in _INDEX_PRESERVING):
                return False
            for o in inner.outputs:
                if o not in seen:
                    seen.add(o)
                    todo.append(o)
    # every kernel output is written at the loop index of the iteration space
    return _count(out.shape) == n


def _count(shape: Sequence[int]) -> int:
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


def plan_memory(program: Program) -> MemoryPlan:
    """Liveness, buffer assignment with reuse and in-place writes, peaks."""
    schedule = list(program.ops())
    lives = _lifetimes(program)
    ends = _group_ends(lives)
    buffers: List[Buffer] = []
    free: Set[int] = set()
    busy_until: Dict[int, int] = {}          # buffer -> last step its current tensors are live
    in_place: List[InPlace] = []

    for i, op in enumerate(schedule):
        claimed: Set[int] = set()
        for out in op.outputs:
            life = lives[out]
            if life.kind != PLANNED:
                continue
            buf = _in_place_buffer(op, out, lives, ends, buffers, claimed, i)
            if buf is not None:
                in_place.append(InPlace(op.name, buffers[buf].tensors[-1].name, out.name))
            else:
                buf = _best_free(free, buffers, life)
            if buf is None:
                buf = len(buffers)
                buffers.append(Buffer(buf, life.nbytes, out.dtype))
            free.discard(buf)
            claimed.add(buf)
            life.buffer = buf
            buffers[buf].tensors.append(out)
            busy_until[buf] = ends[out]
        # buffers whose tensors all die at this step are free for later ops
        for b, until in list(busy_until.items()):
            if until <= i:
                free.add(b)
                del busy_until[b]
    for life in lives.values():
        if life.kind == ALIAS:
            life.buffer = lives[life.base].buffer
    planned = [life for life in lives.values() if life.kind == PLANNED]
    release = _release_lists(schedule, lives)
    return MemoryPlan(schedule, lives, buffers, in_place, release,
                      peak_bytes=sum(b.nbytes for b in buffers),
                      peak_bytes_no_reuse=sum(life.nbytes for life in planned),
                      peak_live_bytes=_peak_live(buffers, lives, ends, len(schedule)))


def _peak_live(buffers: List[Buffer], lives: Dict[Tensor, TensorLife], ends: Dict[Tensor, int], steps: int) -> int:
    """The most bytes of buffers holding a live tensor at one step (a buffer
    written in place over its input counts once)."""
    in_use = np.zeros(steps + 2, dtype=np.int64)
    for b in buffers:
        busy = np.zeros(steps + 2, dtype=bool)
        for t in b.tensors:
            busy[lives[t].start:ends[t] + 1] = True
        in_use += busy * b.nbytes
    return int(in_use.max(initial=0))


def _in_place_buffer(op: Operation, out: Tensor, lives: Dict[Tensor, TensorLife], ends: Dict[Tensor, int],
                     buffers: List[Buffer], claimed: Set[int], i: int) -> Optional[int]:
    if op.opdef.lowering != ELEMENTWISE and op.type != "fused_kernel":
        return None
    for pos, x in enumerate(op.inputs):
        src = lives.get(x)
        if src is None or src.kind not in (PLANNED, ALIAS):
            continue
        base = src.owner
        buf = lives[base].buffer
        if buf is None or buf in claimed or ends[base] != i or buffers[buf].tensors[-1] is not base:
            continue
        if lives[base].nbytes != lives[out].nbytes or lives[base].tensor.dtype != out.dtype:
            continue
        # every read of this buffer by the op must be at the output's own index
        readers = [p for p, t in enumerate(op.inputs)
                   if t in lives and lives[t].owner is base]
        if all(_reads_at_own_index(op, p, out) for p in readers):
            return buf
    return None


def _best_free(free: Set[int], buffers: List[Buffer], life: TensorLife) -> Optional[int]:
    fits = [b for b in free if buffers[b].nbytes >= life.nbytes]
    if not fits:
        return None
    dtype = life.tensor.dtype
    return min(fits, key=lambda b: (buffers[b].nbytes, buffers[b].dtype != dtype, b))


def _release_lists(schedule: Sequence[Operation], lives: Dict[Tensor, TensorLife]) -> Dict[Operation, Tuple[Tensor, ...]]:
    out: Dict[Operation, List[Tensor]] = {}
    for t, life in lives.items():
        if not life.fetched:
            out.setdefault(schedule[life.end], []).append(t)
    return {op: tuple(ts) for op, ts in out.items()}


# --------------------------------------------------------------------------
# The pass
# --------------------------------------------------------------------------
def memory_pass(program: Program) -> Program:
    """Attach a :class:`MemoryPlan` to the program (the graph is unchanged)."""
    plan = plan_memory(program)
    analyses = dict(program.analyses)
    analyses["memory_plan"] = plan
    notes = analyses.setdefault("_notes", [])
    notes.append("memory: " + plan.summary().splitlines()[0])
    if plan.in_place:
        notes.append(f"memory: {len(plan.in_place)} outputs written in place over a dead input")
    return dataclasses.replace(program, analyses=analyses)


register_pass("memory", "plan buffers: liveness, reuse of dead buffers, in-place writes, peak bytes "
              "(analysis only)")(memory_pass)
