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

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
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
from ..lowering.split_reduction import substitute_var, split_reduction
from .llvm_cpu import emit_kernel, memory_type, split_loop

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
    strategy: str                   # "parallel" | "split_reduction" | "tiled_matmul" | "single_thread" | "empty"

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
# Emission
# ---------------------------------------------------------------------------
def _sreg(b: ir.IRBuilder, name: str) -> ir.Value:
    module = b.module
    full = f"llvm.nvvm.read.ptx.sreg.{name}"
    fn = module.globals.get(full)
    if fn is None:
        fn = ir.Function(module, ir.FunctionType(_I32, []), name=full)
    return b.zext(b.call(fn, []), _I64)


def _global_thread_index(b: ir.IRBuilder, axis: str = "x") -> ir.Value:
    return b.add(b.mul(_sreg(b, f"ctaid.{axis}"), _sreg(b, f"ntid.{axis}"), flags=("nuw", "nsw")),
                 _sreg(b, f"tid.{axis}"), flags=("nuw", "nsw"))


def _entry(module: ir.Module, name: str, nparams: int) -> Tuple[ir.Function, ir.IRBuilder]:
    if name in module.globals:
        raise CompileError(f"PTX entry {name!r} is defined twice")
    fn = ir.Function(module, ir.FunctionType(_VOID, [_PTR] * nparams), name=name)
    fn.calling_convention = "ptx_kernel"
    fn.attributes.add("nounwind")
    for arg in fn.args:
        # every buffer of a launch is its own allocation: lets NVPTX read
        # inputs through the read-only data cache
        arg.add_attribute("noalias")
    return fn, ir.IRBuilder(fn.append_basic_block("entry"))


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


def _emit_part(module: ir.Module, part: _Part) -> None:
    k = part.kernel
    body = emit_kernel(module, k, split=part.threads > 0, symbol=f"{part.entry}.body")
    body.linkage = "internal"
    body.attributes.add("alwaysinline")
    _check_gpu_calls(module, body, k)
    fn, b = _entry(module, part.entry, len(k.params))
    if part.threads > 0:
        i = _global_thread_index(b)
        inside = b.icmp_unsigned("<", i, ir.Constant(_I64, part.threads))
        with b.if_then(inside, likely=True):
            b.call(body, list(fn.args) + [i, b.add(i, ir.Constant(_I64, 1), flags=("nuw", "nsw"))])
    else:
        first = b.icmp_unsigned("==", _global_thread_index(b), ir.Constant(_I64, 0))
        with b.if_then(first):
            b.call(body, list(fn.args))
    b.ret_void()


def _launch(part: _Part) -> Launch:
    if part.threads > 0:
        grid, block = _grid(part.threads)
    else:
        grid, block = (1, 1, 1), (1, 1, 1)
    return Launch(part.entry, part.args, grid, block)


# ---------------------------------------------------------------------------
# Tiled matmul
# ---------------------------------------------------------------------------
def _tiled_matmul_plan(kernel: L.Kernel) -> Optional[Tuple[int, int, int, bool, bool]]:
    """(m, n, k, transpose_a, transpose_b) when ``kernel`` is lower_matmul's
    2-D float matmul (named params in0, in1, out0 with 2-D shapes and no
    constants), else None. The body is checked to be exactly that product,
    so a tiled kernel never replaces anything else."""
    if len(kernel.params) != 3 or kernel.constants:
        return None
    a, bp, c = kernel.params
    if (a.role, bp.role, c.role) != ("input", "input", "output"):
        return None
    if len({np.dtype(p.dtype) for p in kernel.params}) != 1 or np.dtype(c.dtype).kind != "f":
        return None
    if len(a.shape) != 2 or len(bp.shape) != 2 or len(c.shape) != 2:
        return None
    m, n = c.shape
    if m < 2 or n < 2:
        return None
    for ta in (False, True):
        for tb in (False, True):
            kk = a.shape[0] if ta else a.shape[1]
            if (a.shape[1] if ta else a.shape[0]) != m or (bp.shape[0] if tb else bp.shape[1]) != n \
                    or (bp.shape[1] if tb else bp.shape[0]) != kk or kk < 1:
                continue
            if _is_matmul_body(kernel, m, n, kk, ta, tb):
                return m, n, kk, ta, tb
    return None


def _is_matmul_body(kernel: L.Kernel, m: int, n: int, kk: int, ta: bool, tb: bool) -> bool:
    a, bp, c = kernel.params
    dt = np.dtype(c.dtype)
    i, j, r = L.IVar("i"), L.IVar("j"), L.IVar("k")

    def operand(name: str, shape, row: L.IExpr, col: L.IExpr, transposed: bool) -> L.Load:
        point = (col, row) if transposed else (row, col)
        return L.Load(name, L.flat_index(point, shape), dt)

    product = L.Binary("multiply", operand(a.name, a.shape, i, r, ta), operand(bp.name, bp.shape, r, j, tb), dt)
    want = (L.Loop("i", m, (L.Loop("j", n, (
        L.AccInit("acc0", dt, dt.type(0)),
        L.Loop("k", kk, (L.AccUpdate("acc0", "add", product),), parallel=False),
        L.Store(c.name, L.flat_index((i, j), (m, n)), L.AccRef("acc0", dt))),),),),)
    return _same(kernel.body, want)


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


def _emit_tiled_matmul(module: ir.Module, name: str, kernel: L.Kernel, m: int, n: int, kk: int,
                       ta: bool, tb: bool) -> None:
    """``C = op(A) @ op(B)``: a block of TILE x TILE threads computes a TILE x
    TILE tile of C, stepping over K one TILE at a time through two shared
    tiles (each thread loads one element of each, zero outside the matrix,
    barrier, TILE multiply-adds from shared memory, barrier). The sum over K
    runs in order k = 0, 1, ... per output, like the loop IR."""
    t = MATMUL_TILE
    dt = np.dtype(kernel.params[2].dtype)
    el = memory_type(dt)
    tile_type = ir.ArrayType(el, t * t)
    tiles = []
    for which in ("a", "b"):
        g = ir.GlobalVariable(module, tile_type, name=f"{name}.tile_{which}", addrspace=3)
        g.linkage = "internal"
        g.align = 16
        g.initializer = ir.Constant(tile_type, ir.Undefined)
        tiles.append(g)
    fn, b = _entry(module, name, 3)
    pa, pb, pc = fn.args
    tx, ty = _sreg(b, "tid.x"), _sreg(b, "tid.y")
    row = b.add(b.mul(_sreg(b, "ctaid.y"), ir.Constant(_I64, t)), ty, name="row")
    col = b.add(b.mul(_sreg(b, "ctaid.x"), ir.Constant(_I64, t)), tx, name="col")
    barrier = module.globals.get("llvm.nvvm.barrier0")
    if barrier is None:
        barrier = ir.Function(module, ir.FunctionType(_VOID, []), name="llvm.nvvm.barrier0")
    zero = ir.Constant(el, 0.0)
    c64 = lambda v: ir.Constant(_I64, v)   # noqa: E731

    def load_or_zero(ptr: ir.Value, index: ir.Value, ok: ir.Value) -> ir.Value:
        # the address is only formed when in range: clamp the index to 0 otherwise
        safe = b.select(ok, index, c64(0))
        v = b.load(b.gep(ptr, [safe], inbounds=True, source_etype=el), typ=el)
        return b.select(ok, v, zero)

    # generic pointers to the shared tiles (NVPTX's address-space inference
    # turns their loads and stores back into ld/st.shared)
    shared = [b.addrspacecast(g, _PTR) for g in tiles]

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
    b.call(barrier, [])
    total = acc
    for q in range(t):
        x = b.load(slot(shared[0], ty, c64(q)), typ=el)
        y = b.load(slot(shared[1], c64(q), tx), typ=el)
        # multiply then add, both rounded (no contraction): the loop IR's order and rounding
        total = b.fadd(total, b.fmul(x, y))
    b.call(barrier, [])
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


# ---------------------------------------------------------------------------
# compile_ptx
# ---------------------------------------------------------------------------
def _dumping() -> bool:
    from ..dump import _log_of
    log = _log_of(None)
    return log is not None and log.directory is not None


def compile_ptx(kernels: Sequence[L.Kernel], arch: Optional[str] = None, *, name: str = "graphc_ptx",
                tiled_matmul: bool = True) -> PtxModule:
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
    plans: List[PtxKernel] = []
    for index, kernel in enumerate(kernels):
        tiled = _tiled_matmul_plan(kernel) if tiled_matmul else None
        if tiled is not None:
            m, n, kk, ta, tb = tiled
            entry = _entry_name(index, kernel.name, "_tiled")
            _emit_tiled_matmul(module, entry, kernel, m, n, kk, ta, tb)
            t = MATMUL_TILE
            launch = Launch(entry, (BufferRef("param", 0), BufferRef("param", 1), BufferRef("param", 2)),
                            (-(-n // t), -(-m // t), 1), (t, t, 1))
            plans.append(PtxKernel(kernel, (), (launch,), "tiled_matmul"))
            continue
        parts, scratch, strategy = plan_kernel(kernel, index)
        for part in parts:
            try:
                _emit_part(module, part)
            except CompileError as exc:
                text = str(exc)
                if kernel.name not in text:
                    text = f"op {kernel.name}: {text}"
                raise CompileError(text) from None
        plans.append(PtxKernel(kernel, scratch, tuple(_launch(p) for p in parts), strategy))
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
    return PtxModule(ptx, arch, plans, name, timings)


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
