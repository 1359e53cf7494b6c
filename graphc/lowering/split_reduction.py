"""Split a long reduction into chunks that can run in parallel.

A kernel that reduces over a long sequential loop, either to scalars (a full
reduction) or inside one parallel loop over results (a column reduction,
which the CPU codegen interchanges), has no outer parallel loop to split
over threads. :func:`split_reduction` rewrites it into three kernels of
plain loop IR:

* ``partial``: an outer parallel loop over ``chunks`` chunks of the
  reduction loop; each chunk reduces its rows into fresh accumulators and
  stores them into partial buffers (one per accumulator, indexed by chunk and
  result). Full-shape outputs stored inside the reduction loop are written
  here, at their own indices;
* ``tail`` (when the extent is not a multiple of the chunk): the rest, into
  the last partial slot;
* ``final``: combines the partials in chunk order and runs the original
  final stores.

The chunking depends only on shapes, never on the thread count, so results
are the same whatever the number of threads. Nothing here is CPU-specific:
the PTX backend can map chunks onto blocks the same way.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import loop_ir as L

# Fewest elements (per result) a chunk should cover, and the most chunks.
MIN_CHUNK_ELEMENTS = 32768
MAX_CHUNKS = 64


@dataclass
class SplitReduction:
    partial: L.Kernel
    tail: Optional[L.Kernel]
    final: L.Kernel
    scratch: Tuple[L.Param, ...]      # the partial buffers: outputs of partial/tail, inputs of final


def substitute_var(node: Any, var: str, repl: L.IExpr) -> Any:
    """``node`` with every ``IVar(var)`` replaced by ``repl`` (any loop IR node)."""
    if isinstance(node, L.IVar):
        return repl if node.name == var else node
    if isinstance(node, tuple):
        items = tuple(substitute_var(x, var, repl) for x in node)
        return items if any(a is not b for a, b in zip(items, node)) else node
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        changes = {}
        for f in dataclasses.fields(node):
            value = getattr(node, f.name)
            new = substitute_var(value, var, repl)
            if new is not value:
                changes[f.name] = new
        return dataclasses.replace(node, **changes) if changes else node
    return node


def _contains(e: Any, kind: type) -> bool:
    if isinstance(e, kind):
        return True
    if isinstance(e, tuple):
        return any(_contains(x, kind) for x in e)
    if dataclasses.is_dataclass(e) and not isinstance(e, type):
        return any(_contains(getattr(e, f.name), kind) for f in dataclasses.fields(e))
    return False


def reduction_parts(stmts: Sequence[L.Stmt]):
    """(inits, reduction loop, finals) when ``stmts`` is AccInits, one
    sequential loop, then stores of accumulator expressions; else None."""
    body = list(stmts)
    inits = []
    while body and isinstance(body[0], L.AccInit):
        inits.append(body.pop(0))
    if not inits or not body or not isinstance(body[0], L.Loop) or body[0].parallel:
        return None
    loop = body.pop(0)
    finals = body
    if not all(isinstance(s, L.Store) and not _contains(s.value, L.Load) for s in finals):
        return None
    if _contains(loop.body, L.AccRef) or _contains(loop.body, L.AccInit):
        return None      # accumulators read or restarted inside: not a plain reduction
    return inits, loop, finals


def innermost_count(stmts: Sequence[L.Stmt]) -> int:
    """Innermost iterations of one pass over ``stmts`` (the widest nest)."""
    most = 1
    for s in stmts:
        if isinstance(s, L.Loop):
            most = max(most, s.extent * innermost_count(s.body))
    return most


@dataclass
class Reduction:
    """A kernel that is one reduction: AccInits, one sequential ``loop``
    updating each accumulator with one op (``ops``), then stores of
    accumulator expressions (``finals``), optionally all inside one parallel
    loop over results (``outer``)."""
    outer: Optional[L.Loop]
    inits: List[L.AccInit]
    loop: L.Loop
    finals: List[L.Stmt]
    ops: Dict[str, str]

    @property
    def width(self) -> int:
        return self.outer.extent if self.outer is not None else 1


def analyze_reduction(kernel: L.Kernel) -> Optional[Reduction]:
    """``kernel`` as a :class:`Reduction`, or None when it is not one."""
    outer: Optional[L.Loop] = None
    stmts = kernel.body
    if len(stmts) == 1 and isinstance(stmts[0], L.Loop) and stmts[0].parallel:
        outer = stmts[0]
        stmts = outer.body
    parts = reduction_parts(stmts)
    if parts is None:
        return None
    inits, loop, finals = parts
    ops: Dict[str, str] = {}
    for u in accumulator_updates(loop.body):
        if ops.setdefault(u.name, u.op) != u.op:
            return None
    if set(ops) != {s.name for s in inits}:
        return None
    return Reduction(outer, inits, loop, finals, ops)


def split_reduction(kernel: L.Kernel) -> Optional[SplitReduction]:
    """The three kernels above, or None when ``kernel`` is not a long full or
    column reduction (or is too short to be worth splitting)."""
    red = analyze_reduction(kernel)
    if red is None:
        return None
    outer, inits, loop, finals, updates = red.outer, red.inits, red.loop, red.finals, red.ops
    per_row = innermost_count(loop.body)
    rows = loop.extent
    chunk = max(-(-MIN_CHUNK_ELEMENTS // per_row), -(-rows // MAX_CHUNKS))
    chunks = rows // chunk
    if chunks < 2:
        return None
    tail = rows - chunks * chunk
    slots = chunks + (1 if tail else 0)
    width = outer.extent if outer is not None else 1
    names = {p.name for p in kernel.params} | set(kernel.constants)
    scratch = []
    for s in inits:
        name = f"partial_{s.name}"
        while name in names:
            name += "_"
        scratch.append(L.Param(name, np.dtype(s.dtype), (slots * width,), "output"))

    def slot_index(c: L.IExpr) -> L.IExpr:
        return L.iadd(L.imul(c, width), L.IVar(outer.var)) if outer is not None else c

    def chunk_body(c: L.IExpr, extent: int) -> List[L.Stmt]:
        row = L.iadd(L.imul(c, chunk), L.IVar(f"{loop.var}.r"))
        inner = L.Loop(f"{loop.var}.r", extent, substitute_var(loop.body, loop.var, row), parallel=False)
        stores = [L.Store(p.name, slot_index(c), L.AccRef(s.name, s.dtype)) for p, s in zip(scratch, inits)]
        body: List[L.Stmt] = list(inits) + [inner] + stores
        return [L.Loop(outer.var, outer.extent, tuple(body))] if outer is not None else body

    c = L.IVar("chunk")
    partial = L.Kernel(f"{kernel.name}.partial", kernel.params + tuple(scratch),
                       (L.Loop("chunk", chunks, tuple(chunk_body(c, chunk))),), dict(kernel.constants))
    tail_kernel = None
    if tail:
        tail_kernel = L.Kernel(f"{kernel.name}.tail", kernel.params + tuple(scratch),
                               tuple(chunk_body(L.IConst(chunks), tail)), dict(kernel.constants))
    combine = L.Loop("chunk", slots, tuple(
        L.AccUpdate(s.name, updates[s.name], L.Load(p.name, slot_index(c), np.dtype(s.dtype)))
        for p, s in zip(scratch, inits)), parallel=False)
    final_body: List[L.Stmt] = list(inits) + [combine] + list(finals)
    if outer is not None:
        final_body = [L.Loop(outer.var, outer.extent, tuple(final_body))]
    final_params = tuple(dataclasses.replace(p, role="input") for p in scratch) + kernel.outputs
    final = L.Kernel(f"{kernel.name}.final", final_params, tuple(final_body))
    return SplitReduction(partial, tail_kernel, final, tuple(scratch))


def accumulator_updates(stmts: Sequence[L.Stmt]) -> List[L.AccUpdate]:
    found: List[L.AccUpdate] = []
    for s in stmts:
        if isinstance(s, L.AccUpdate):
            found.append(s)
        elif isinstance(s, L.Loop):
            found.extend(accumulator_updates(s.body))
    return found
