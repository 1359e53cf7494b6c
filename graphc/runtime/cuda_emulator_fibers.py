"""The CUDA emulator's barrier kernels on fibers: the threads of a block as
``ucontext`` coroutines on one OS thread, switching at every barrier.

A block of 256 threads as 256 OS threads meeting at a ``pthread_barrier``
costs a few hundred context switches per barrier (about a millisecond on a
2-core machine); as fibers, a barrier is one ``swapcontext`` per thread.
Barriers in graphc's kernels are uniform (every thread of the block reaches
every barrier), so round-robin scheduling is exact: thread ``t`` at a
barrier switches to thread ``t + 1``, and the last one to thread 0, which
resumes past the barrier; a thread that returns continues in the next one
(``uc_link``), the last back to the launch.

Only on glibc for x86-64 and AArch64 (the ``ucontext_t`` field offsets
below are those two ABIs'); elsewhere the emulator keeps OS threads.
Everything runs in native code compiled once per emulator (``run_grid``
loops over the blocks, sets each thread's ``ctaid`` and starts the fibers).
"""
from __future__ import annotations

import ctypes
import platform
import threading
from typing import Any, Optional, Tuple

import llvmlite.ir as ir
import numpy as np

__all__ = ["Fibers", "supported"]

# glibc's ucontext_t: uc_link at 8, uc_stack.ss_sp at 16, uc_stack.ss_size at
# 32 on x86-64 and AArch64; its size (968 / 4560 bytes) rounded up generously.
_UC_LINK, _UC_STACK_SP, _UC_STACK_SIZE = 8, 16, 32
CONTEXT_BYTES = 8192
STACK_BYTES = 256 << 10

# The scheduler record (8-byte fields).
_CURRENT, _COUNT, _CONTEXTS, _STATES, _ENTRY, _ARGV, _STACKS, _MAIN, _GRID = 0, 8, 16, 24, 32, 40, 48, 56, 64
_RECORD_BYTES = 96

_I32, _I64, _PTR, _VOID = ir.IntType(32), ir.IntType(64), ir.PointerType(), ir.VoidType()


def supported() -> bool:
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc" and \
        platform.machine().lower() in ("x86_64", "amd64", "aarch64", "arm64")


def _module(ctaid_offset: int) -> ir.Module:
    """``graphc_fiber_barrier(record)``, ``graphc_fiber_trampoline()`` and
    ``graphc_fiber_run_grid(record)`` (see the module docstring)."""
    m = ir.Module(name="graphc_fibers")
    record = ir.GlobalVariable(m, _PTR, name="graphc_fiber_record")
    record.initializer = ir.Constant(_PTR, None)
    swap = ir.Function(m, ir.FunctionType(_I32, [_PTR, _PTR]), name="swapcontext")
    get = ir.Function(m, ir.FunctionType(_I32, [_PTR]), name="getcontext")
    make = ir.Function(m, ir.FunctionType(_VOID, [_PTR, _PTR, _I32], var_arg=True), name="makecontext")
    entry_type = ir.FunctionType(_VOID, [_PTR, _PTR])
    c64 = lambda v: ir.Constant(_I64, v)   # noqa: E731

    def field(b: ir.IRBuilder, base: ir.Value, offset: Any) -> ir.Value:
        off = offset if isinstance(offset, ir.Value) else c64(offset)
        return b.gep(base, [off], source_etype=ir.IntType(8))

    def load(b: ir.IRBuilder, base: ir.Value, offset: int, typ: ir.Type = _I64) -> ir.Value:
        return b.load(field(b, base, offset), typ=typ)

    def context(b: ir.IRBuilder, rec: ir.Value, i: ir.Value) -> ir.Value:
        return field(b, load(b, rec, _CONTEXTS, _PTR), b.mul(i, c64(CONTEXT_BYTES)))

    # barrier: switch to the next fiber (the last one to fiber 0)
    barrier = ir.Function(m, ir.FunctionType(_I32, [_PTR]), name="graphc_fiber_barrier")
    b = ir.IRBuilder(barrier.append_basic_block())
    rec = barrier.args[0]
    cur = load(b, rec, _CURRENT)
    nxt = b.add(cur, c64(1))
    nxt = b.select(b.icmp_unsigned("==", nxt, load(b, rec, _COUNT)), c64(0), nxt)
    b.store(nxt, field(b, rec, _CURRENT))
    b.call(swap, [context(b, rec, cur), context(b, rec, nxt)])
    b.ret(ir.Constant(_I32, 0))

    # trampoline: run the current fiber's thread, then hand over to the next
    tramp = ir.Function(m, ir.FunctionType(_VOID, []), name="graphc_fiber_trampoline")
    b = ir.IRBuilder(tramp.append_basic_block())
    rec = b.load(record, typ=_PTR)
    cur = load(b, rec, _CURRENT)
    state = b.load(field(b, load(b, rec, _STATES, _PTR), b.mul(cur, c64(8))), typ=_PTR)
    entry = b.inttoptr(load(b, rec, _ENTRY), entry_type.as_pointer())
    b.call(entry, [state, load(b, rec, _ARGV, _PTR)])
    b.store(b.add(cur, c64(1)), field(b, rec, _CURRENT))
    b.ret_void()

    # run_grid: every block in order; in each, fresh fibers for all threads
    run = ir.Function(m, ir.FunctionType(_VOID, [_PTR]), name="graphc_fiber_run_grid")
    rec = run.args[0]
    b = ir.IRBuilder(run.append_basic_block("entry"))
    b.store(rec, record)
    n = load(b, rec, _COUNT)
    gx, gy, gz = (load(b, rec, _GRID + 8 * a) for a in range(3))
    blocks = b.mul(b.mul(gx, gy), gz)
    pre = b.block
    block_loop = run.append_basic_block("block")
    thread_loop = run.append_basic_block("thread")
    launch = run.append_basic_block("launch")
    done = run.append_basic_block("done")
    b.branch(block_loop)
    b.position_at_end(block_loop)
    blk = b.phi(_I64)
    blk.add_incoming(c64(0), pre)
    ctaid = (b.urem(blk, gx), b.urem(b.udiv(blk, gx), gy), b.udiv(blk, b.mul(gx, gy)))
    b.branch(thread_loop)
    b.position_at_end(thread_loop)
    t = b.phi(_I64)
    t.add_incoming(c64(0), block_loop)
    state = b.load(field(b, load(b, rec, _STATES, _PTR), b.mul(t, c64(8))), typ=_PTR)
    for a in range(3):
        b.store(b.trunc(ctaid[a], _I32), field(b, state, ctaid_offset + 4 * a))
    ctx = context(b, rec, t)
    b.call(get, [ctx])
    stack = field(b, load(b, rec, _STACKS, _PTR), b.mul(t, c64(STACK_BYTES)))
    b.store(stack, field(b, ctx, _UC_STACK_SP))
    b.store(c64(STACK_BYTES), field(b, ctx, _UC_STACK_SIZE))
    last = b.icmp_unsigned("==", b.add(t, c64(1)), n)
    link = b.select(last, load(b, rec, _MAIN, _PTR), context(b, rec, b.add(t, c64(1))))
    b.store(link, field(b, ctx, _UC_LINK))
    b.call(make, [ctx, tramp, ir.Constant(_I32, 0)])
    t_next = b.add(t, c64(1))
    t.add_incoming(t_next, b.block)
    b.cbranch(b.icmp_unsigned("<", t_next, n), thread_loop, launch)
    b.position_at_end(launch)
    b.store(c64(0), field(b, rec, _CURRENT))
    b.call(swap, [load(b, rec, _MAIN, _PTR), context(b, rec, c64(0))])
    blk_next = b.add(blk, c64(1))
    blk.add_incoming(blk_next, b.block)
    b.cbranch(b.icmp_unsigned("<", blk_next, blocks), block_loop, done)
    b.position_at_end(done)
    b.ret_void()
    return m


class Fibers:
    """The compiled scheduler of one emulator: ``barrier_address`` is what
    kernels' barriers call; :meth:`run` runs a launch's blocks."""

    def __init__(self) -> None:
        from ..codegen import jit
        from ..codegen.ptx.targets import EMU_SREG_OFFSETS
        self.compiled = jit.compile_module(_module(EMU_SREG_OFFSETS["ctaid"]), name="graphc CUDA emulator fibers",
                                           opt=1)
        self.barrier_address = self.compiled.address("graphc_fiber_barrier")
        self._run = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(self.compiled.address("graphc_fiber_run_grid"))
        self._record = np.zeros(_RECORD_BYTES, np.uint8)
        self._memory: Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]] = None
        self._lock = threading.Lock()

    @property
    def record_address(self) -> int:
        """What every thread state's barrier pointer must be."""
        return self._record.ctypes.data

    def run(self, entry: int, argv: int, states: Any, grid: Tuple[int, int, int]) -> None:
        """Run every block of ``grid`` with one fiber per element of
        ``states`` (the threads' state addresses, tids filled in)."""
        with self._lock:
            self._run_locked(entry, argv, states, grid)

    def _run_locked(self, entry: int, argv: int, states: Any, grid: Tuple[int, int, int]) -> None:
        threads = len(states)
        if self._memory is None or len(self._memory[0]) < threads * CONTEXT_BYTES:
            # contexts, stacks (np.empty aligns to 64 bytes), the launching context
            self._memory = (np.empty(threads * CONTEXT_BYTES, np.uint8), np.empty(threads * STACK_BYTES, np.uint8),
                            np.empty(CONTEXT_BYTES, np.uint8))
        contexts, stacks, main = self._memory
        record = self._record
        fields = np.frombuffer(record, np.uint64)
        pointers = (ctypes.c_void_p * threads)(*states)
        fields[:] = 0
        fields[_COUNT // 8] = len(states)
        fields[_CONTEXTS // 8] = contexts.ctypes.data
        fields[_STATES // 8] = ctypes.addressof(pointers)
        fields[_ENTRY // 8] = entry
        fields[_ARGV // 8] = argv
        fields[_STACKS // 8] = stacks.ctypes.data
        fields[_MAIN // 8] = main.ctypes.data
        fields[_GRID // 8:_GRID // 8 + 3] = grid
        self._run(record.ctypes.data)
