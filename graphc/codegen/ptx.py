"""PTX codegen: the CPU backend's loop IR, emitted a second time for NVIDIA GPUs
through LLVM's NVPTX target (no second lowering or fusion path).

:func:`compile_ptx` turns loop-IR kernels (:mod:`graphc.lowering.loop_ir`)
into one PTX module and a *launch plan* per kernel. Shapes are static, so
every grid and block size is known at compile time.

How a kernel maps onto the GPU:

* Every loop-IR statement is emitted by the CPU emitter
  (:func:`graphc.codegen.llvm_cpu.emit_kernel`, ``split=True``) as a *range
  function* ``void body(ptr in0.., ptr out0.., i64 begin, i64 end)`` running
  iterations ``[begin, end)`` of the kernel's outer parallel loop. A
  ``__global__`` entry (calling convention ``ptx_kernel``) computes its
  thread's iteration from ``ctaid.x * ntid.x + tid.x`` and calls it for one
  iteration; the range function is internal and inlined.
* Perfect nests of parallel loops are first collapsed into one flat
  parallel loop (the indices recovered with ``//`` and ``%`` by constants),
  so an elementwise kernel gets one thread per element and a row reduction
  one thread per result, whatever the rank.
* A parallel loop around a reduction that the CPU codegen would interchange
  (a column reduction: stack tiles of accumulators) stays as it is on the
  GPU: one thread per column, adjacent threads reading adjacent columns
  (coalesced). The emitter is kept from interchanging by nesting the body
  in a one-iteration loop, which the interchange analysis does not match.
* Long full and column reductions go through
  :func:`graphc.lowering.split_reduction.split_reduction` (as on the CPU):
  a ``partial`` kernel with one thread per chunk (and column), an optional
  ``tail`` and a ``final`` that combines the partials in chunk order, so
  results do not depend on the launch configuration. The partial buffers
  are *scratch* buffers the plan asks the runtime to allocate.
* Kernels with no parallel loop at all run as a single thread.
* Float32/float64 ``matmul`` kernels in exactly the 2-D form ``lower_matmul``
  gives (any transposes, no batch: see :func:`_tiled_matmul_plan`) use a tiled
  shared-memory kernel (``addrspace(3)`` tiles, ``llvm.nvvm.barrier0``)
  written here; other matmuls run ``lower_matmul``'s loop IR (one thread per
  output element).

Transcendentals come from graphc.codegen.llvm_math (the same polynomials as
on the CPU, no libdevice). Where the CPU emitter would fall back to a libm
call or an LLVM intrinsic that NVPTX turns into one (``GRAPHC_LLVM_MATH=0``),
there is no GPU implementation: :func:`compile_ptx` raises CompileError
naming the op.

Offline validation: :func:`check_with_ptxas` assembles PTX with ``ptxas``
(from the CUDA toolkit, only needed for checking, never at run time).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import llvmlite
import llvmlite.binding as llvm
import llvmlite.ir as ir
import numpy as np

from ..dump import add_artifact, add_timing
from . import jit
from ..errors import CompileError
from ..lowering import loop_ir as L
from ..lowering.split_reduction import analyze_reduction, innermost_count, split_reduction, substitute_var
from ..lowering.matvec import matmul_kernel
from .llvm_cpu import combine_values, emit_kernel, memory_type, split_loop

__all__ = ["DEFAULT_ARCH", "BLOCK_SIZE", "TRIPLE", "BufferRef", "Launch", "PtxKernel", "PtxModule",
           "check_with_ptxas", "compile_ptx", "plan_kernel", "ptxas_available", "target_machine"]

llvmlite.ir_layer_typed_pointers_enabled = False

TRIPLE = "nvptx64-nvidia-cuda"
# The architecture PTX is generated for; GRAPHC_PTX_ARCH overrides it per process.
DEFAULT_ARCH = os.environ.get("GRAPHC_PTX_ARCH", "sm_80")
# Threads per block of the one-iteration-per-thread launches.
BLOCK_SIZE = 256
# Tiled matmul: TILE x TILE outputs per block of TILE x TILE threads, K in steps of TILE.
MATMUL_TILE = 16

_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_PTR = ir.PointerType()
_VOID = ir.VoidType()

# LLVM intrinsics the NVPTX backend can only lower to libm calls (which do not exist on a GPU).
_LIBCALL_INTRINSICS = ("llvm.exp.", "llvm.exp2.f64", "llvm.exp10.", "llvm.log.", "llvm.log2.", "llvm.log10.",
                       "llvm.sin.", "llvm.cos.", "llvm.tan.", "llvm.pow.", "llvm.powi.")


# ---------------------------------------------------------------------------
# Launch plans
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class BufferRef:
    """An argument of a launch: ``("param", i)`` is the kernel's i-th
    parameter (``kernel.params`` order), ``("scratch", j)`` the j-th scratch
    buffer of the plan (allocated by the runtime, contents irrelevant before
    the first launch that writes it)."""
    kind: str
    index: int


@dataclass(frozen=True)
class Launch:
    """One ``cuLaunchKernel`` of an entry of the module: its arguments are
    the data pointers of ``args``, in order."""
    entry: str
    args: Tuple[BufferRef, ...]
    grid: Tuple[int, int, int]
    block: Tuple[int, int, int]
    shared_bytes: int = 0

    @property
    def threads(self) -> int:
        return int(np.prod(self.grid) * np.prod(self.block))


@dataclass
class PtxKernel:
    """How one loop-IR kernel runs: ``launches`` in order, on the kernel's
    parameters and the ``scratch`` buffers."""
    kernel: L.Kernel
    scratch: Tuple[L.Param, ...]
    launches: Tuple[Launch, ...]
    strategy: str    # "parallel" | "block_reduce" | "split_reduction" | "tiled_matmul" | "single_thread" | "empty"

    @property
    def name(self) -> str:
        return self.kernel.name

    @property
    def params(self) -> Tuple[L.Param, ...]:
        return self.kernel.params

    @property
    def entries(self) -> List[str]:
        return [launch.entry for launch in self.launches]


@dataclass
class PtxModule:
    """PTX text of a module and the launch plan of each kernel (in the order
    given to :func:`compile_ptx`)."""
    ptx: str
    arch: str
    kernels: List[PtxKernel]
    name: str = "graphc_ptx"
    timings: Dict[str, float] = field(default_factory=dict)

    @property
    def entries(self) -> List[str]:
        return [e for k in self.kernels for e in k.entries]

    def kernel(self, name: str) -> PtxKernel:
        for k in self.kernels:
            if k.name == name:
                return k
        raise KeyError(name)


# ---------------------------------------------------------------------------
# Target
# ---------------------------------------------------------------------------
_init_lock = threading.Lock()
_initialized = False
_machines: Dict[str, "llvm.TargetMachine"] = {}


def _check_arch(arch: str) -> str:
    if not re.fullmatch(r"sm_\d{2,3}[af]?", arch or ""):
        raise CompileError(f"PTX architecture {arch!r} is not of the form sm_XY (e.g. sm_80, sm_90)")
    return arch


def target_machine(arch: Optional[str] = None) -> "llvm.TargetMachine":
    """The NVPTX TargetMachine for ``arch`` (cached: only emit_assembly is
    ever called on it, which does not take ownership)."""
    global _initialized
    arch = _check_arch(arch or DEFAULT_ARCH)
    with _init_lock:
        if not _initialized:
            llvm.initialize_all_targets()
            llvm.initialize_all_asmprinters()
            _initialized = True
        tm = _machines.get(arch)
        if tm is None:
            try:
                target = llvm.Target.from_triple(TRIPLE)
            except RuntimeError as exc:
                raise CompileError(f"this llvmlite has no NVPTX target: {exc}") from None
            # no explicit +ptxNN: LLVM picks the lowest PTX ISA the arch allows,
            # which the most drivers can load
            tm = target.create_target_machine(cpu=arch, opt=3)
            _machines[arch] = tm
        return tm


# ---------------------------------------------------------------------------
# Loop-IR rewrites for the GPU
# ---------------------------------------------------------------------------
def _loop_vars(stmts: Sequence[L.Stmt], out: set) -> set:
    for s in stmts:
        if isinstance(s, L.Loop):
            out.add(s.var)
            _loop_vars(s.body, out)
    return out


def collapse_parallel_nest(kernel: L.Kernel) -> L.Kernel:
    """``kernel`` with a perfect nest of parallel loops at its top replaced
    by one parallel loop over their product (each former loop variable
    becomes ``flat // stride % extent``). Anything else is returned as is."""
    body = kernel.body
    if len(body) != 1 or not isinstance(body[0], L.Loop) or not body[0].parallel:
        return kernel
    names, extents = [body[0].var], [body[0].extent]
    inner = body[0].body
    while len(inner) == 1 and isinstance(inner[0], L.Loop) and inner[0].parallel:
        names.append(inner[0].var)
        extents.append(inner[0].extent)
        inner = inner[0].body
    if len(names) == 1:
        return kernel
    used = _loop_vars(kernel.body, set())
    flat_name = "gpu.flat"
    while flat_name in used:
        flat_name += "_"
    point = L.unravel(L.IVar(flat_name), tuple(extents))
    for var, p in zip(names, point):
        inner = substitute_var(inner, var, p)
    total = int(np.prod(extents, dtype=np.int64))
    return L.Kernel(kernel.name, kernel.params, (L.Loop(flat_name, total, tuple(inner)),), dict(kernel.constants))


def _thread_loop(kernel: L.Kernel) -> Optional[Tuple[L.Kernel, int]]:
    """(kernel the CPU emitter can split over its outer loop, that loop's
    extent), or None when the kernel has no parallel outer loop."""
    loop = split_loop(kernel)
    if loop is not None:
        return kernel, loop.extent
    body = kernel.body
    if len(body) == 1 and isinstance(body[0], L.Loop) and body[0].parallel and body[0].extent >= 2:
        # A column reduction, which the CPU emitter interchanges (stack tiles
        # of accumulators over a tile of columns). On a GPU each thread keeps
        # its own accumulators: nesting the body in a one-iteration loop keeps
        # the parallel loop outermost (the interchange needs the reduction
        # loop directly inside it).
        outer = body[0]
        used = _loop_vars(kernel.body, set())
        once = f"{outer.var}.thread"
        while once in used:
            once += "_"
        wrapped = L.Kernel(kernel.name, kernel.params,
                           (L.Loop(outer.var, outer.extent, (L.Loop(once, 1, outer.body),)),),
                           dict(kernel.constants))
        if split_loop(wrapped) is not None:
            return wrapped, outer.extent
    return None


def _grid(threads: int, block: int = BLOCK_SIZE) -> Tuple[Tuple[int, int, int], Tuple[int, int, int]]:
    block = max(32, min(block, -(-threads // 32) * 32))
    grid = -(-threads // block)
    if grid >= 2 ** 31:
        raise CompileError(f"{threads} threads do not fit in one grid")
    return (grid, 1, 1), (block, 1, 1)


@dataclass
class _Part:
    """One launch to emit: a loop-IR kernel, how it is split, its arguments."""
    kernel: L.Kernel
    entry: str
    args: Tuple[BufferRef, ...]
    threads: int            # 0: a single thread runs the whole kernel


def _entry_name(index: int, kernel_name: str, suffix: str) -> str:
    base = re.sub(r"[^A-Za-z0-9_]", "_", kernel_name)[:48]
    return f"graphc_k{index}_{base}{suffix}"


def plan_kernel(kernel: L.Kernel, index: int = 0) -> Tuple[List[_Part], Tuple[L.Param, ...], str]:
    """The launches of one kernel (before emission), its scratch buffers and
    the strategy's name."""
    by_name = {p.name: BufferRef("param", i) for i, p in enumerate(kernel.params)}
    if all(p.size == 0 for p in kernel.outputs):
        return [], (), "empty"
    split = split_reduction(kernel)
    scratch: Tuple[L.Param, ...] = ()
    pieces: List[Tuple[L.Kernel, str]] = [(kernel, "")]
    strategy = "parallel"
    if split is not None:
        scratch = split.scratch
        for j, p in enumerate(scratch):
            by_name[p.name] = BufferRef("scratch", j)
        pieces = [(split.partial, "_partial")] + ([(split.tail, "_tail")] if split.tail is not None else []) \
            + [(split.final, "_final")]
        strategy = "split_reduction"
    parts = []
    for piece, suffix in pieces:
        args = tuple(by_name[p.name] for p in piece.params)
        flat = collapse_parallel_nest(piece)
        threaded = _thread_loop(flat)
        if threaded is not None:
            parts.append(_Part(threaded[0], _entry_name(index, kernel.name, suffix), args, threaded[1]))
        else:
            parts.append(_Part(flat, _entry_name(index, kernel.name, suffix), args, 0))
    if split is None and parts and parts[0].threads == 0:
        strategy = "single_thread"
    return parts, scratch, strategy


# ---------------------------------------------------------------------------
# Targets: how an entry reaches thread indices, barriers and shared memory
# ---------------------------------------------------------------------------
class _NvptxTarget:
    """The GPU: ``__global__`` entries (calling convention ``ptx_kernel``),
    special registers through ``llvm.nvvm.read.ptx.sreg.*``, ``barrier0``
    and ``addrspace(3)`` globals for shared memory."""
    host = False

    def entry(self, module: ir.Module, name: str, nparams: int) -> Tuple[ir.Function, ir.IRBuilder, List[ir.Value]]:
        if name in module.globals:
            raise CompileError(f"PTX entry {name!r} is defined twice")
        fn = ir.Function(module, ir.FunctionType(_VOID, [_PTR] * nparams), name=name)
        fn.calling_convention = "ptx_kernel"
        fn.attributes.add("nounwind")
        for arg in fn.args:
            # every buffer of a launch is its own allocation: lets NVPTX read
            # inputs through the read-only data cache
            arg.add_attribute("noalias")
        return fn, ir.IRBuilder(fn.append_basic_block("entry")), list(fn.args)

    def finish_entry(self, module: ir.Module, fn: ir.Function) -> None:
        pass

    def sreg(self, b: ir.IRBuilder, name: str) -> ir.Value:
        module = b.module
        full = f"llvm.nvvm.read.ptx.sreg.{name}"
        fn = module.globals.get(full)
        if fn is None:
            fn = ir.Function(module, ir.FunctionType(_I32, []), name=full)
        return b.zext(b.call(fn, []), _I64)

    def barrier(self, b: ir.IRBuilder) -> None:
        module = b.module
        fn = module.globals.get("llvm.nvvm.barrier0")
        if fn is None:
            fn = ir.Function(module, ir.FunctionType(_VOID, []), name="llvm.nvvm.barrier0")
        b.call(fn, [])

    def shared(self, b: ir.IRBuilder, name: str, el: ir.Type, count: int) -> ir.Value:
        """A generic pointer to ``count`` elements of block-shared memory
        (NVPTX's address-space inference turns its loads and stores back
        into ld/st.shared)."""
        array = ir.ArrayType(el, count)
        g = ir.GlobalVariable(b.module, array, name=name, addrspace=3)
        g.linkage = "internal"
        g.align = 16
        g.initializer = ir.Constant(array, ir.Undefined)
        return b.addrspacecast(g, _PTR)


# The host emulation's per-thread state (graphc.runtime.cuda_emulator fills it):
# i32 tid[3], ntid[3], ctaid[3], nctaid[3]; ptr shared; ptr barrier. A barrier is
# ``EMU_BARRIER_SYMBOL(barrier)``, a symbol the emulator binds to pthread_barrier_wait.
EMU_SREG_OFFSETS = {"tid": 0, "ntid": 12, "ctaid": 24, "nctaid": 36}
EMU_SHARED_OFFSET, EMU_BARRIER_OFFSET, EMU_STATE_BYTES = 48, 56, 64
EMU_BARRIER_SYMBOL = "graphc_emu_barrier_wait"


def _type_bytes(t: ir.Type) -> int:
    if isinstance(t, ir.IntType):
        return max(1, t.width // 8)
    if isinstance(t, ir.FloatType):
        return 4
    if isinstance(t, ir.DoubleType):
        return 8
    raise CompileError(f"no shared-memory size for {t}")


class _HostTarget:
    """The same entries compiled for the host CPU, for
    :mod:`graphc.runtime.cuda_emulator`: each entry takes a pointer to its
    thread's state first (special registers, the block's shared memory, a
    barrier function), and gets two drivers: ``<entry>.call(state, argv)``
    runs one thread, ``<entry>.grid(state, argv)`` every thread of the grid
    one after the other (only valid without barriers)."""
    host = True

    def __init__(self) -> None:
        self.shared_bytes: Dict[str, int] = {}
        self.barriers: set = set()
        self.nparams: Dict[str, int] = {}
        self._entry: Optional[str] = None
        self._state: Optional[ir.Value] = None

    def entry(self, module: ir.Module, name: str, nparams: int) -> Tuple[ir.Function, ir.IRBuilder, List[ir.Value]]:
        if name in module.globals:
            raise CompileError(f"PTX entry {name!r} is defined twice")
        fn = ir.Function(module, ir.FunctionType(_VOID, [_PTR] * (nparams + 1)), name=name)
        fn.attributes.add("nounwind")
        self._entry, self._state = name, fn.args[0]
        self.shared_bytes[name] = 0
        self.nparams[name] = nparams
        return fn, ir.IRBuilder(fn.append_basic_block("entry")), list(fn.args[1:])

    def _field(self, b: ir.IRBuilder, offset: int) -> ir.Value:
        return b.gep(self._state, [ir.Constant(_I64, offset)], inbounds=True, source_etype=ir.IntType(8))

    def sreg(self, b: ir.IRBuilder, name: str) -> ir.Value:
        kind, axis = name.split(".")
        offset = EMU_SREG_OFFSETS[kind] + 4 * "xyz".index(axis)
        return b.zext(b.load(self._field(b, offset), typ=_I32), _I64)

    def barrier(self, b: ir.IRBuilder) -> None:
        self.barriers.add(self._entry)
        wait = b.module.globals.get(EMU_BARRIER_SYMBOL)
        if wait is None:
            wait = ir.Function(b.module, ir.FunctionType(_I32, [_PTR]), name=EMU_BARRIER_SYMBOL)
        b.call(wait, [b.load(self._field(b, EMU_BARRIER_OFFSET), typ=_PTR)])

    def shared(self, b: ir.IRBuilder, name: str, el: ir.Type, count: int) -> ir.Value:
        offset = -(-self.shared_bytes[self._entry] // 16) * 16
        self.shared_bytes[self._entry] = offset + count * _type_bytes(el)
        base = b.load(self._field(b, EMU_SHARED_OFFSET), typ=_PTR)
        return b.gep(base, [ir.Constant(_I64, offset)], inbounds=True, source_etype=ir.IntType(8))

    def finish_entry(self, module: ir.Module, fn: ir.Function) -> None:
        """``<entry>.call(state, argv)`` and ``<entry>.grid(state, argv)``
        (argv: the launch's device pointers as u64s)."""
        nparams = self.nparams[fn.name]
        for suffix in (".call", ".grid"):
            driver = ir.Function(module, ir.FunctionType(_VOID, [_PTR, _PTR]), name=fn.name + suffix)
            state, argv = driver.args
            b = ir.IRBuilder(driver.append_basic_block("entry"))
            args = [b.inttoptr(b.load(b.gep(argv, [ir.Constant(_I64, i)], source_etype=_I64), typ=_I64), _PTR)
                    for i in range(nparams)]
            if suffix == ".call":
                b.call(fn, [state] + args)
                b.ret_void()
                continue
            i32 = lambda off: b.gep(state, [ir.Constant(_I64, off)], source_etype=ir.IntType(8))  # noqa: E731
            dims = {k: [b.zext(b.load(i32(o + 4 * a), typ=_I32), _I64) for a in range(3)]
                    for k, o in (("ntid", 12), ("nctaid", 36))}
            threads = b.mul(b.mul(dims["ntid"][0], dims["ntid"][1]), dims["ntid"][2])
            blocks = b.mul(b.mul(dims["nctaid"][0], dims["nctaid"][1]), dims["nctaid"][2])
            total = b.mul(threads, blocks)
            pre = b.block
            loop = driver.append_basic_block("thread")
            done = driver.append_basic_block("done")
            b.cbranch(b.icmp_unsigned("==", total, ir.Constant(_I64, 0)), done, loop)
            b.position_at_end(loop)
            flat = b.phi(_I64)
            flat.add_incoming(ir.Constant(_I64, 0), pre)
            # last thread first: any order is valid on a GPU, and this one
            # exposes a thread reading what another thread writes in the launch
            index = b.sub(b.sub(total, ir.Constant(_I64, 1)), flat)
            blk, thr = b.udiv(index, threads), b.urem(index, threads)
            for kind, value, extents in (("tid", thr, dims["ntid"]), ("ctaid", blk, dims["nctaid"])):
                for a in range(3):
                    b.store(b.trunc(b.urem(value, extents[a]), _I32), i32(EMU_SREG_OFFSETS[kind] + 4 * a))
                    value = b.udiv(value, extents[a])
            b.call(fn, [state] + args)
            nxt = b.add(flat, ir.Constant(_I64, 1))
            flat.add_incoming(nxt, b.block)
            b.cbranch(b.icmp_unsigned("<", nxt, total), loop, done)
            b.position_at_end(done)
            b.ret_void()


def _callees(fn: ir.Function) -> List[str]:
    names = []
    for block in fn.blocks:
        for instr in block.instructions:
            if isinstance(instr, ir.CallInstr):
                callee = getattr(instr, "callee", None)
                name = getattr(callee, "name", None)
                if name:
                    names.append(name)
    return names


def _check_gpu_calls(module: ir.Module, body: ir.Function, kernel: L.Kernel) -> None:
    """A CompileError naming the op when its code calls a function no GPU has."""
    seen = set()
    todo = [body]
    while todo:
        fn = todo.pop()
        for name in _callees(fn):
            if name in seen:
                continue
            seen.add(name)
            callee = module.globals.get(name)
            if name.startswith("llvm."):
                if name.startswith(_LIBCALL_INTRINSICS):
                    raise CompileError(f"op {kernel.name}: kernel {kernel.name} needs {name}, which NVPTX lowers "
                                       "to a libm call: there is no GPU implementation (graphc.codegen.llvm_math "
                                       "covers it unless GRAPHC_LLVM_MATH=0)")
                continue
            if isinstance(callee, ir.Function) and not callee.is_declaration:
                todo.append(callee)
                continue
            raise CompileError(f"op {kernel.name}: kernel {kernel.name} calls {name} (libm), which has no GPU "
                               "implementation (graphc.codegen.llvm_math covers it unless GRAPHC_LLVM_MATH=0)")


def _global_thread_index(target, b: ir.IRBuilder, axis: str = "x") -> ir.Value:
    return b.add(b.mul(target.sreg(b, f"ctaid.{axis}"), target.sreg(b, f"ntid.{axis}"), flags=("nuw", "nsw")),
                 target.sreg(b, f"tid.{axis}"), flags=("nuw", "nsw"))


def _emit_body(module: ir.Module, kernel: L.Kernel, symbol: str, split: bool) -> ir.Function:
    body = emit_kernel(module, kernel, split=split, symbol=symbol)
    body.linkage = "internal"
    body.attributes.add("alwaysinline")
    _check_gpu_calls(module, body, kernel)
    return body


def _emit_part(module: ir.Module, part: _Part, target) -> None:
    k = part.kernel
    body = _emit_body(module, k, f"{part.entry}.body", part.threads > 0)
    fn, b, args = target.entry(module, part.entry, len(k.params))
    if part.threads > 0:
        i = _global_thread_index(target, b)
        inside = b.icmp_unsigned("<", i, ir.Constant(_I64, part.threads))
        with b.if_then(inside, likely=True):
            b.call(body, args + [i, b.add(i, ir.Constant(_I64, 1), flags=("nuw", "nsw"))])
    else:
        first = b.icmp_unsigned("==", _global_thread_index(target, b), ir.Constant(_I64, 0))
        with b.if_then(first):
            b.call(body, args)
    b.ret_void()
    target.finish_entry(module, fn)


def _launch(part: _Part) -> Launch:
    if part.threads > 0:
        grid, block = _grid(part.threads)
    else:
        grid, block = (1, 1, 1), (1, 1, 1)
    return Launch(part.entry, part.args, grid, block)


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


# ---------------------------------------------------------------------------
# Tiled matmul
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _TiledMatmul:
    m: int
    n: int
    k: int
    ta: bool
    tb: bool
    a_shape: Tuple[int, ...]
    b_shape: Tuple[int, ...]
    batch: Tuple[int, ...]          # the output's batch dims (A's and B's broadcast to them)

    @property
    def batches(self) -> int:
        return int(np.prod(self.batch, dtype=np.int64))


# The most batches one launch covers (grid.z).
MAX_MATMUL_BATCHES = 65535


def _tiled_matmul_plan(kernel: L.Kernel) -> Optional[_TiledMatmul]:
    """How to tile ``kernel`` when it is exactly ``lower_matmul``'s float
    matmul (any transposes, batch dims broadcast like NumPy), else None: the
    body is compared with the kernel lower_matmul builds for these shapes,
    so a tiled kernel never replaces anything else."""
    if len(kernel.params) != 3 or kernel.constants:
        return None
    a, bp, c = kernel.params
    if (a.role, bp.role, c.role) != ("input", "input", "output"):
        return None
    if len({np.dtype(p.dtype) for p in kernel.params}) != 1 or np.dtype(c.dtype).kind != "f":
        return None
    if len(a.shape) < 2 or len(bp.shape) < 2 or len(c.shape) < 2:
        return None
    m, n = c.shape[-2:]
    batch = tuple(c.shape[:-2])
    if m < 2 or n < 2 or int(np.prod(batch, dtype=np.int64)) > MAX_MATMUL_BATCHES:
        return None
    for ta in (False, True):
        for tb in (False, True):
            kk = a.shape[-2] if ta else a.shape[-1]
            if kk < 1 or (a.shape[-1] if ta else a.shape[-2]) != m or (bp.shape[-2] if tb else bp.shape[-1]) != n \
                    or (bp.shape[-1] if tb else bp.shape[-2]) != kk:
                continue
            want = matmul_kernel(kernel.name, tuple(a.shape), tuple(bp.shape), tuple(c.shape), ta, tb,
                                 np.dtype(c.dtype))
            if _same(kernel.body, want.body):
                return _TiledMatmul(m, n, kk, ta, tb, tuple(a.shape), tuple(bp.shape), batch)
    return None


def _same(x, y) -> bool:
    # dataclass equality, with AccInit values compared as numbers
    if isinstance(x, tuple) and isinstance(y, tuple):
        return len(x) == len(y) and all(_same(a, b) for a, b in zip(x, y))
    if isinstance(x, L.AccInit) and isinstance(y, L.AccInit):
        return x.name == y.name and np.dtype(x.dtype) == np.dtype(y.dtype) and float(x.value) == float(y.value)
    if type(x) is not type(y):
        return False
    if isinstance(x, L.Loop):
        return x.var == y.var and x.extent == y.extent and x.parallel == y.parallel and _same(x.body, y.body)
    return x == y


def _emit_tiled_matmul(module: ir.Module, name: str, kernel: L.Kernel, plan: _TiledMatmul, target) -> None:
    """``C = op(A) @ op(B)``: a block of TILE x TILE threads computes a TILE x
    TILE tile of C, stepping over K one TILE at a time through two shared
    tiles (each thread loads one element of each, zero outside the matrix,
    barrier, TILE multiply-adds from shared memory, barrier). The sum over K
    runs in order k = 0, 1, ... per output, like the loop IR. Batches are
    ``ctaid.z``: each block first moves A, B and C to its batch's matrices
    (a broadcast batch dim of A or B stays at 0)."""
    t = MATMUL_TILE
    m, n, kk, ta, tb = plan.m, plan.n, plan.k, plan.ta, plan.tb
    dt = np.dtype(kernel.params[2].dtype)
    el = memory_type(dt)
    fn, b, (pa, pb, pc) = target.entry(module, name, 3)
    c64 = lambda v: ir.Constant(_I64, v)   # noqa: E731
    if plan.batch:
        z = target.sreg(b, "ctaid.z")

        def batch_offset(shape: Tuple[int, ...]) -> ir.Value:
            lead = len(plan.batch) - (len(shape) - 2)
            offset = c64(0)
            for d, size in enumerate(shape[:-2]):
                if size == 1:
                    continue
                inner = int(np.prod(plan.batch[lead + d + 1:], dtype=np.int64))
                coord = b.urem(b.udiv(z, c64(inner)), c64(plan.batch[lead + d]))
                offset = b.add(offset, b.mul(coord, c64(int(np.prod(shape[d + 1:], dtype=np.int64)))))
            return offset

        pa = b.gep(pa, [batch_offset(plan.a_shape)], inbounds=True, source_etype=el)
        pb = b.gep(pb, [batch_offset(plan.b_shape)], inbounds=True, source_etype=el)
        pc = b.gep(pc, [b.mul(z, c64(m * n))], inbounds=True, source_etype=el)
    shared = [target.shared(b, f"{name}.tile_{which}", el, t * t) for which in ("a", "b")]
    tx, ty = target.sreg(b, "tid.x"), target.sreg(b, "tid.y")
    row = b.add(b.mul(target.sreg(b, "ctaid.y"), ir.Constant(_I64, t)), ty, name="row")
    col = b.add(b.mul(target.sreg(b, "ctaid.x"), ir.Constant(_I64, t)), tx, name="col")
    zero = ir.Constant(el, 0.0)

    def load_or_zero(ptr: ir.Value, index: ir.Value, ok: ir.Value) -> ir.Value:
        # the address is only formed when in range: clamp the index to 0 otherwise
        safe = b.select(ok, index, c64(0))
        v = b.load(b.gep(ptr, [safe], inbounds=True, source_etype=el), typ=el)
        return b.select(ok, v, zero)

    def slot(tile: ir.Value, r: ir.Value, c: ir.Value) -> ir.Value:
        return b.gep(tile, [b.add(b.mul(r, c64(t)), c)], inbounds=True, source_etype=el)

    steps = -(-kk // t)
    pre = b.block
    loop = fn.append_basic_block("kstep")
    done = fn.append_basic_block("done")
    b.branch(loop)
    b.position_at_end(loop)
    step = b.phi(_I64, name="step")
    acc = b.phi(el, name="acc")
    step.add_incoming(c64(0), pre)
    acc.add_incoming(zero, pre)
    k0 = b.mul(step, c64(t))
    # A tile: thread (ty, tx) loads op(A)[row, k0 + tx]
    ka = b.add(k0, tx)
    ok_a = b.and_(b.icmp_unsigned("<", row, c64(m)), b.icmp_unsigned("<", ka, c64(kk)))
    ia = b.add(b.mul(ka, c64(m)), row) if ta else b.add(b.mul(row, c64(kk)), ka)
    b.store(load_or_zero(pa, ia, ok_a), slot(shared[0], ty, tx))
    # B tile: thread (ty, tx) loads op(B)[k0 + ty, col]
    kb = b.add(k0, ty)
    ok_b = b.and_(b.icmp_unsigned("<", kb, c64(kk)), b.icmp_unsigned("<", col, c64(n)))
    ib = b.add(b.mul(col, c64(kk)), kb) if tb else b.add(b.mul(kb, c64(n)), col)
    b.store(load_or_zero(pb, ib, ok_b), slot(shared[1], ty, tx))
    target.barrier(b)
    total = acc
    for q in range(t):
        x = b.load(slot(shared[0], ty, c64(q)), typ=el)
        y = b.load(slot(shared[1], c64(q), tx), typ=el)
        # multiply then add, both rounded (no contraction): the loop IR's order and rounding
        total = b.fadd(total, b.fmul(x, y))
    target.barrier(b)
    nxt = b.add(step, c64(1))
    latch = b.block
    step.add_incoming(nxt, latch)
    acc.add_incoming(total, latch)
    b.cbranch(b.icmp_unsigned("<", nxt, c64(steps)), loop, done)
    b.position_at_end(done)
    ok_c = b.and_(b.icmp_unsigned("<", row, c64(m)), b.icmp_unsigned("<", col, c64(n)))
    with b.if_then(ok_c):
        b.store(total, b.gep(pc, [b.add(b.mul(row, c64(n)), col)], inbounds=True, source_etype=el))
    b.ret_void()
    target.finish_entry(module, fn)


# ---------------------------------------------------------------------------
# compile_ptx
# ---------------------------------------------------------------------------
def _dumping() -> bool:
    from ..dump import _log_of
    log = _log_of(None)
    return log is not None and log.directory is not None


def _build(kernels: Sequence[L.Kernel], target, module: ir.Module, tiled_matmul: bool,
           block_reductions: bool) -> List[PtxKernel]:
    """Emit every kernel's entries into ``module`` for ``target``; the plans."""
    plans: List[PtxKernel] = []
    for index, kernel in enumerate(kernels):
        tiled = _tiled_matmul_plan(kernel) if tiled_matmul else None
        if tiled is not None:
            entry = _entry_name(index, kernel.name, "_tiled")
            _emit_tiled_matmul(module, entry, kernel, tiled, target)
            t = MATMUL_TILE
            launch = Launch(entry, (BufferRef("param", 0), BufferRef("param", 1), BufferRef("param", 2)),
                            (-(-tiled.n // t), -(-tiled.m // t), tiled.batches), (t, t, 1))
            plans.append(PtxKernel(kernel, (), (launch,), "tiled_matmul"))
            continue
        block = _block_reduce_plan(kernel) if block_reductions else None
        if block is not None:
            try:
                launches = _emit_block_reduce(module, block, index, target)
            except CompileError as exc:
                text = str(exc)
                raise CompileError(text if kernel.name in text else f"op {kernel.name}: {text}") from None
            plans.append(PtxKernel(kernel, block.scratch, tuple(launches), "block_reduce"))
            continue
        parts, scratch, strategy = plan_kernel(kernel, index)
        for part in parts:
            try:
                _emit_part(module, part, target)
            except CompileError as exc:
                text = str(exc)
                if kernel.name not in text:
                    text = f"op {kernel.name}: {text}"
                raise CompileError(text) from None
        plans.append(PtxKernel(kernel, scratch, tuple(_launch(p) for p in parts), strategy))
    return plans


# PTX text -> what it was built from, for the host emulation (graphc.runtime.cuda_emulator),
# which cannot run PTX itself and rebuilds the same entries for the host CPU instead.
_SOURCES: "OrderedDict[str, Tuple[Tuple[L.Kernel, ...], bool, bool, str]]" = OrderedDict()
_SOURCES_KEPT = 256
_sources_lock = threading.Lock()


def compile_ptx(kernels: Sequence[L.Kernel], arch: Optional[str] = None, *, name: str = "graphc_ptx",
                tiled_matmul: bool = True, block_reductions: bool = True) -> PtxModule:
    """One PTX module holding every kernel's entries, and each kernel's
    launch plan. ``arch`` defaults to :data:`DEFAULT_ARCH`. Raises
    CompileError (naming the op) for a kernel the codegen cannot emit,
    including any that would need libm."""
    arch = _check_arch(arch or DEFAULT_ARCH)
    tm = target_machine(arch)
    timings: Dict[str, float] = {}
    start = time.perf_counter()
    module = ir.Module(name=name)
    module.triple = TRIPLE
    module.data_layout = str(tm.target_data)
    plans = _build(kernels, _NvptxTarget(), module, tiled_matmul, block_reductions)
    timings["ptx: build IR"] = time.perf_counter() - start

    start = time.perf_counter()
    text = str(module)
    # no vector loops: a GPU thread runs one iteration, and NVPTX has no wide vector registers
    llmod = jit.optimize_module(text, tm, name=f"{name} (NVPTX)", opt=3, vectorize=False)
    timings["ptx: optimize"] = time.perf_counter() - start
    start = time.perf_counter()
    ptx = tm.emit_assembly(llmod)
    timings["ptx: codegen"] = time.perf_counter() - start
    extern = re.search(r"^\s*\.extern\s+\.func[^\n]*", ptx, re.M)
    if extern:
        raise CompileError(f"module {name}: the PTX calls an external function no GPU provides: "
                           f"{extern.group(0).strip()}")
    for label, seconds in timings.items():
        add_timing(label, seconds)
    if _dumping():
        add_artifact(f"{name}.nvptx.ll", text)
        add_artifact(f"{name}.ptx", ptx)
    with _sources_lock:
        _SOURCES[_digest(ptx)] = (tuple(kernels), tiled_matmul, block_reductions, name)
        _SOURCES.move_to_end(_digest(ptx))
        while len(_SOURCES) > _SOURCES_KEPT:
            _SOURCES.popitem(last=False)
    return PtxModule(ptx, arch, plans, name, timings)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class HostBuild:
    """A PTX module's entries compiled for the host CPU (see _HostTarget)."""
    compiled: "jit.CompiledModule"
    plans: List[PtxKernel]
    nparams: Dict[str, int]
    barriers: set
    shared_bytes: Dict[str, int]

    def argument_bytes(self, entry: str) -> List[int]:
        """How many bytes each argument of ``entry`` is read or written at
        (from the launch plans): the emulator checks them before a launch."""
        for plan in self.plans:
            for launch in plan.launches:
                if launch.entry == entry:
                    params = [plan.params[a.index] if a.kind == "param" else plan.scratch[a.index]
                              for a in launch.args]
                    return [p.size * np.dtype(p.dtype).itemsize for p in params]
        raise KeyError(entry)


def build_for_host(ptx: str) -> HostBuild:
    """The entries of ``ptx`` (text :func:`compile_ptx` returned in this
    process) emitted again for the host, with the same launch plans: what
    the CUDA emulator runs. The kernel bodies are the same loop IR through
    the same emitter; only thread indices, barriers and shared memory are
    reached differently. The caller binds :data:`EMU_BARRIER_SYMBOL` first."""
    with _sources_lock:
        source = _SOURCES.get(_digest(ptx))
    if source is None:
        raise CompileError("the CUDA emulator runs only PTX that graphc.codegen.ptx.compile_ptx produced in this "
                           "process (it rebuilds the entries for the host from their loop IR)")
    kernels, tiled_matmul, block_reductions, name = source
    module = ir.Module(name=f"{name}_host")
    target = _HostTarget()
    plans = _build(kernels, target, module, tiled_matmul, block_reductions)
    exports = [f"{e}{suffix}" for e in target.nparams for suffix in (".call", ".grid")]
    compiled = jit.compile_module(module, name=f"{name} (host emulation)", opt=1, exports=exports)
    return HostBuild(compiled, plans, dict(target.nparams), set(target.barriers), dict(target.shared_bytes))


# ---------------------------------------------------------------------------
# ptxas (offline checking only)
# ---------------------------------------------------------------------------
def _ptxas() -> Optional[str]:
    return os.environ.get("GRAPHC_PTXAS") or shutil.which("ptxas") or \
        next((p for p in ("/usr/local/cuda/bin/ptxas",) if os.path.exists(p)), None)


def ptxas_available() -> bool:
    """True when a ``ptxas`` executable (CUDA toolkit) can be run."""
    path = _ptxas()
    return path is not None and os.access(path, os.X_OK)


def check_with_ptxas(ptx: str, arch: Optional[str] = None, timeout: float = 300.0) -> str:
    """Assemble ``ptx`` with ``ptxas -arch=<arch>`` (output discarded);
    returns ptxas's messages, raises CompileError with them when it fails."""
    arch = _check_arch(arch or DEFAULT_ARCH)
    path = _ptxas()
    if path is None:
        raise CompileError("ptxas is not installed (it comes with the CUDA toolkit; set GRAPHC_PTXAS)")
    digest = hashlib.sha256(ptx.encode()).hexdigest()[:16]
    with tempfile.TemporaryDirectory(prefix="graphc_ptxas_") as tmp:
        src = os.path.join(tmp, f"{digest}.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        try:
            proc = subprocess.run([path, f"-arch={arch}", "-o", os.devnull, src], capture_output=True,
                                  text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CompileError(f"ptxas could not run: {exc}") from None
    messages = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise CompileError(f"ptxas -arch={arch} rejected the PTX (exit {proc.returncode}): {messages}")
    return messages
