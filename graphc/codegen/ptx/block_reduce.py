"""Block-level tree reductions: long full, row and column reductions as
shared-memory trees over blocks of threads, with a second launch combining
the blocks' values per result."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import llvmlite.ir as ir
import numpy as np

from ...errors import CompileError
from ...lowering import loop_ir as L
import dataclasses
from dataclasses import dataclass

from ...lowering.split_reduction import analyze_reduction, innermost_count, substitute_var
from ..llvm_cpu import combine_values, memory_type
from .plans import _I64, BufferRef, Launch, _loop_vars, _Part, _entry_name, _thread_loop, collapse_parallel_nest
from .targets import _emit_body, _emit_part, _launch

# ---------------------------------------------------------------------------
# Block-level tree reductions
# ---------------------------------------------------------------------------
# Threads per block of a block reduction (a power of two: the tree halves it).
BLOCK_REDUCE_THREADS = 256
# At most this many blocks per result (so at most 65536 partial sums per result).
BLOCK_REDUCE_MAX_BLOCKS = 256
# Fewer reduced elements per result than this: one thread per result.
BLOCK_REDUCE_MIN_ELEMENTS = 1024
# More results than this: one thread per result already fills the GPU.
BLOCK_REDUCE_MAX_RESULTS = 4096
# Reduced rows per thread a block is added for.
ROWS_PER_THREAD = 8
# Most shared memory the trees of one block reduction may use (48 KiB is the static limit).
BLOCK_REDUCE_MAX_SHARED = 32 << 10


@dataclass
class _BlockReduce:
    """A reduction (full, row or column: AccInits, one sequential loop,
    stores of accumulators, optionally inside one parallel loop over
    ``width`` results) as block-level tree reductions.

    Per result, ``blocks`` blocks of ``BLOCK_REDUCE_THREADS`` threads: thread
    ``c`` of the ``chunks = blocks * threads`` reduces rows ``c, c + chunks,
    c + 2 * chunks, ...`` (adjacent threads read adjacent rows: coalesced),
    as loop IR (``partial``, plus ``tail`` for the last ``rem`` rows); each
    block then combines its threads' values with a tree in shared memory.
    With more than one block per result a second launch combines the
    blocks' values the same way. The last tree's thread 0 runs the original
    final stores (``final``). The combining order depends only on shapes."""
    kernel: L.Kernel
    width: int
    inits: Tuple[L.AccInit, ...]
    ops: Dict[str, str]
    blocks: int
    chunks: int
    rem: int
    partial: L.Kernel
    tail: Optional[L.Kernel]
    final: L.Kernel
    scratch: Tuple[L.Param, ...]
    partial_names: Tuple[str, ...]
    tail_names: Tuple[str, ...]
    block_names: Tuple[str, ...]
    combined_names: Tuple[str, ...]


def _flatten_sequential(loop: L.Loop) -> L.Loop:
    """A perfect nest of sequential loops as one loop over their product."""
    names, extents, inner = [loop.var], [loop.extent], loop.body
    while len(inner) == 1 and isinstance(inner[0], L.Loop) and not inner[0].parallel:
        names.append(inner[0].var)
        extents.append(inner[0].extent)
        inner = inner[0].body
    if len(names) == 1:
        return loop
    flat = f"{loop.var}.flat"
    point = L.unravel(L.IVar(flat), tuple(extents))
    for var, p in zip(names, point):
        inner = substitute_var(inner, var, p)
    return L.Loop(flat, int(np.prod(extents, dtype=np.int64)), tuple(inner), parallel=False)


def _block_reduce_plan(kernel: L.Kernel) -> Optional[_BlockReduce]:
    red = analyze_reduction(kernel)
    if red is None:
        return None
    outer, inits, finals, ops, width = red.outer, red.inits, red.finals, red.ops, red.width
    if width > BLOCK_REDUCE_MAX_RESULTS or width < 1:
        return None
    loop = _flatten_sequential(red.loop)
    rows = loop.extent
    threads = BLOCK_REDUCE_THREADS
    if rows < threads or rows * innermost_count(loop.body) < BLOCK_REDUCE_MIN_ELEMENTS:
        return None
    tree_bytes = threads * sum(np.dtype(s.dtype).itemsize for s in inits)
    if tree_bytes > BLOCK_REDUCE_MAX_SHARED:
        return None
    blocks = max(1, min(BLOCK_REDUCE_MAX_BLOCKS, rows // (threads * ROWS_PER_THREAD)))
    chunks = blocks * threads
    steps, rem = divmod(rows, chunks)

    used = {p.name for p in kernel.params} | set(kernel.constants) | _loop_vars(kernel.body, set())

    def fresh(base: str) -> str:
        while base in used:
            base += "_"
        used.add(base)
        return base

    scratch: List[L.Param] = []

    def buffers(kind: str, size: int) -> Tuple[str, ...]:
        names = tuple(fresh(f"{kind}_{s.name}") for s in inits)
        scratch.extend(L.Param(n, np.dtype(s.dtype), (size,), "output") for n, s in zip(names, inits))
        return names

    partial_names = buffers("partial", width * chunks)
    tail_names = buffers("tail", width * rem) if rem else ()
    block_names = buffers("blocks", width * blocks) if blocks > 1 else ()
    combined_names = buffers("combined", width)
    chunk, step = fresh("gpu.chunk"), fresh(f"{loop.var}.step")
    w = L.IVar(outer.var) if outer is not None else L.IConst(0)
    c = L.IVar(chunk)

    def per_result(body: Sequence[L.Stmt]) -> Tuple[L.Stmt, ...]:
        return (L.Loop(outer.var, width, tuple(body)),) if outer is not None else tuple(body)

    def accumulate_into(names: Tuple[str, ...], count: int) -> List[L.Stmt]:
        return [L.Store(n, L.iadd(L.imul(w, count), c), L.AccRef(s.name, s.dtype)) for n, s in zip(names, inits)]

    row = L.iadd(L.imul(L.IVar(step), chunks), c)
    main = list(inits) + [L.Loop(step, steps, substitute_var(loop.body, loop.var, row), parallel=False)] \
        + accumulate_into(partial_names, chunks)
    by_name = {p.name: p for p in scratch}
    partial = L.Kernel(f"{kernel.name}.block_partial", kernel.params + tuple(by_name[n] for n in partial_names),
                       per_result([L.Loop(chunk, chunks, tuple(main))]), dict(kernel.constants))
    tail = None
    if rem:
        last = L.iadd(L.IConst(steps * chunks), c)
        body = list(inits) + list(substitute_var(loop.body, loop.var, last)) + accumulate_into(tail_names, rem)
        tail = L.Kernel(f"{kernel.name}.block_tail", kernel.params + tuple(by_name[n] for n in tail_names),
                        per_result([L.Loop(chunk, rem, tuple(body))]), dict(kernel.constants))
    final_body = list(inits) + [L.AccUpdate(s.name, ops[s.name], L.Load(n, w, np.dtype(s.dtype)))
                                for n, s in zip(combined_names, inits)] + list(finals)
    final = L.Kernel(f"{kernel.name}.block_final",
                     tuple(dataclasses.replace(by_name[n], role="input") for n in combined_names) + kernel.outputs,
                     per_result(final_body), dict(kernel.constants))
    return _BlockReduce(kernel, width, tuple(inits), ops, blocks, chunks, rem, partial, tail, final, tuple(scratch),
                        partial_names, tail_names, block_names, combined_names)


def _block_tree(target, b: ir.IRBuilder, name: str, tid: ir.Value, values: List[ir.Value],
                br: _BlockReduce, threads: int) -> List[ir.Value]:
    """Combine ``values`` (one per accumulator, in memory types) over the
    block's ``threads`` threads: a tree in shared memory, ``barrier`` between
    levels (uniform control flow: every thread reaches each barrier). The
    results are valid in thread 0."""
    c64 = lambda v: ir.Constant(_I64, v)   # noqa: E731
    shared, types = [], []
    for s, v in zip(br.inits, values):
        el = memory_type(np.dtype(s.dtype))
        types.append(el)
        shared.append(target.shared(b, f"{name}.tree_{s.name}", el, threads))

    def slot(k: int, i: ir.Value) -> ir.Value:
        return b.gep(shared[k], [i], inbounds=True, source_etype=types[k])

    for k, v in enumerate(values):
        b.store(v, slot(k, tid))
    target.barrier(b)
    stride = threads // 2
    while stride >= 1:
        with b.if_then(b.icmp_unsigned("<", tid, c64(stride))):
            other = b.add(tid, c64(stride))
            for k, s in enumerate(br.inits):
                x, y = b.load(slot(k, tid), typ=types[k]), b.load(slot(k, other), typ=types[k])
                b.store(combine_values(b, br.ops[s.name], np.dtype(s.dtype), x, y), slot(k, tid))
        target.barrier(b)
        stride //= 2
    return [b.load(slot(k, c64(0)), typ=types[k]) for k in range(len(values))]


def _emit_block_reduce(module: ir.Module, br: _BlockReduce, index: int, target) -> List[Launch]:
    kernel = br.kernel
    params = list(kernel.params) + list(br.scratch)
    refs = [BufferRef("param", i) for i in range(len(kernel.params))] + \
        [BufferRef("scratch", j) for j in range(len(br.scratch))]
    ref_of = {p.name: r for p, r in zip(params, refs)}
    threads = BLOCK_REDUCE_THREADS
    c64 = lambda v: ir.Constant(_I64, v)   # noqa: E731
    launches: List[Launch] = []

    if br.tail is not None:
        tail = collapse_parallel_nest(br.tail)
        threaded = _thread_loop(tail)
        part = _Part(threaded[0] if threaded else tail, _entry_name(index, kernel.name, "_tail"),
                     tuple(ref_of[p.name] for p in br.tail.params), threaded[1] if threaded else 0)
        _emit_part(module, part, target)
        launches.append(_launch(part))

    threaded = _thread_loop(collapse_parallel_nest(br.partial))
    if threaded is None:
        raise CompileError(f"kernel {kernel.name}: its block reduction has no parallel loop over chunks")
    partial = threaded[0]
    partial_body = _emit_body(module, partial, f"{_entry_name(index, kernel.name, '_block')}.partial", True)
    final_body = _emit_body(module, br.final, f"{_entry_name(index, kernel.name, '_block')}.final", br.width > 1)
    elements = {p.name: memory_type(np.dtype(p.dtype)) for p in br.scratch}

    def run_final(b: ir.IRBuilder, arg: Dict[str, ir.Value], w: ir.Value, results: List[ir.Value]) -> None:
        for name, value in zip(br.combined_names, results):
            b.store(value, b.gep(arg[name], [w], inbounds=True, source_etype=elements[name]))
        extra = [w, b.add(w, c64(1))] if br.width > 1 else []
        b.call(final_body, [arg[p.name] for p in br.final.params] + extra)

    def load(b: ir.IRBuilder, arg: Dict[str, ir.Value], name: str, i: ir.Value) -> ir.Value:
        return b.load(b.gep(arg[name], [i], inbounds=True, source_etype=elements[name]), typ=elements[name])

    # launch 1: every thread reduces its rows, then each block combines its threads'
    entry = _entry_name(index, kernel.name, "_block")
    fn, b, args = target.entry(module, entry, len(params))
    arg = {p.name: a for p, a in zip(params, args)}
    tid, blk = target.sreg(b, "tid.x"), target.sreg(b, "ctaid.x")
    i = b.add(b.mul(blk, c64(threads)), tid)
    b.call(partial_body, [arg[p.name] for p in partial.params] + [i, b.add(i, c64(1))])
    values = [load(b, arg, n, i) for n in br.partial_names]
    if br.tail is not None:
        c = b.urem(i, c64(br.chunks))
        in_tail = b.icmp_unsigned("<", c, c64(br.rem))
        at = b.select(in_tail, b.add(b.mul(b.udiv(i, c64(br.chunks)), c64(br.rem)), c), c64(0))
        values = [b.select(in_tail, combine_values(b, br.ops[s.name], np.dtype(s.dtype), v, load(b, arg, n, at)), v)
                  for s, v, n in zip(br.inits, values, br.tail_names)]
    results = _block_tree(target, b, entry, tid, values, br, threads)
    with b.if_then(b.icmp_unsigned("==", tid, c64(0))):
        if br.blocks == 1:
            run_final(b, arg, blk, results)
        else:
            for name, value in zip(br.block_names, results):
                b.store(value, b.gep(arg[name], [blk], inbounds=True, source_etype=elements[name]))
    b.ret_void()
    target.finish_entry(module, fn)
    launches.append(Launch(entry, tuple(refs), (br.width * br.blocks, 1, 1), (threads, 1, 1)))
    if br.blocks == 1:
        return launches

    # launch 2: one block per result combines its blocks' values
    entry = _entry_name(index, kernel.name, "_blocks")
    second = max(32, 1 << (br.blocks - 1).bit_length())
    fn, b, args = target.entry(module, entry, len(params))
    arg = {p.name: a for p, a in zip(params, args)}
    tid, w = target.sreg(b, "tid.x"), target.sreg(b, "ctaid.x")
    ok = b.icmp_unsigned("<", tid, c64(br.blocks))
    first = b.mul(w, c64(br.blocks))
    at = b.select(ok, b.add(first, tid), first)
    values = []
    for s, name in zip(br.inits, br.block_names):
        identity = _memory_constant(np.dtype(s.dtype), s.value)
        values.append(b.select(ok, load(b, arg, name, at), identity))
    results = _block_tree(target, b, entry, tid, values, br, second)
    with b.if_then(b.icmp_unsigned("==", tid, c64(0))):
        run_final(b, arg, w, results)
    b.ret_void()
    target.finish_entry(module, fn)
    launches.append(Launch(entry, tuple(refs), (br.width, 1, 1), (second, 1, 1)))
    return launches


def _memory_constant(dtype: np.dtype, value) -> ir.Constant:
    el = memory_type(dtype)
    if dtype.kind == "f":
        return ir.Constant(el, float(value))
    return ir.Constant(el, int(value))
