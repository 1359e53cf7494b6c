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
* Long reductions (full, row or column, up to 4096 results) are
  block-level tree reductions (:func:`_block_reduce_plan`): each thread
  reduces an interleaved set of rows with the kernel's own loop body, each
  block combines its threads' values in a shared-memory tree, and a second
  launch combines the blocks' values per result, whose thread 0 runs the
  kernel's final stores. The combining order depends only on the shapes.
  What they do not cover goes through
  :func:`graphc.lowering.split_reduction.split_reduction` as on the CPU
  (partial, tail and final kernels with scratch buffers).
* Kernels with no parallel loop at all run as a single thread.
* Float32/float64 ``matmul`` kernels exactly as ``lower_matmul`` builds them
  (any transposes, batch dims broadcast; see :func:`_tiled_matmul_plan`)
  use a tiled shared-memory kernel written here, batches in ``grid.z``;
  other matmuls run ``lower_matmul``'s loop IR (one thread per output
  element).

Thread indices, barriers and shared memory are reached through a *target*
(:class:`_NvptxTarget`); :class:`_HostTarget` builds the same entries for
the host CPU, which is what :mod:`graphc.runtime.cuda_emulator` runs.

Transcendentals come from graphc.codegen.llvm_math (the same polynomials as
on the CPU, no libdevice). Where the CPU emitter would fall back to a libm
call or an LLVM intrinsic that NVPTX turns into one (``GRAPHC_LLVM_MATH=0``),
there is no GPU implementation: :func:`compile_ptx` raises CompileError
naming the op.

Offline validation: :func:`check_with_ptxas` assembles PTX with ``ptxas``
(from the CUDA toolkit, only needed for checking, never at run time).

Modules: ``plans`` (launch plans, loop-IR rewrites onto threads),
``targets`` (GPU / host-emulation targets, generic entries),
``block_reduce`` and ``tiled_matmul`` (the two barrier strategies); this
file assembles a module, prints PTX and rebuilds modules for the emulator.
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
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import llvmlite
import llvmlite.binding as llvm
import llvmlite.ir as ir
import numpy as np

from ...dump import add_artifact, add_timing
from .. import jit
from ...errors import CompileError
from ...lowering import loop_ir as L
from .block_reduce import BLOCK_REDUCE_THREADS, _block_reduce_plan, _emit_block_reduce
from .plans import (BLOCK_SIZE, BufferRef, Launch, PtxKernel, PtxModule, collapse_parallel_nest, plan_kernel,
                    _entry_name)
from .targets import _HostTarget, _NvptxTarget, _emit_part, _launch
from .tiled_matmul import MATMUL_TILE, _emit_tiled_matmul, _tiled_matmul_plan

__all__ = ["BLOCK_REDUCE_THREADS", "BLOCK_SIZE", "DEFAULT_ARCH", "MATMUL_TILE", "TRIPLE", "BufferRef", "HostBuild",
           "Launch", "PtxKernel", "PtxModule", "build_for_host", "check_with_ptxas", "collapse_parallel_nest",
           "compile_ptx", "plan_kernel", "ptxas_available", "target_machine"]

llvmlite.ir_layer_typed_pointers_enabled = False

TRIPLE = "nvptx64-nvidia-cuda"
# The architecture PTX is generated for; GRAPHC_PTX_ARCH overrides it per process.
DEFAULT_ARCH = os.environ.get("GRAPHC_PTX_ARCH", "sm_80")


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
# compile_ptx
# ---------------------------------------------------------------------------
def _dumping() -> bool:
    from ...dump import _log_of
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
    reached differently. The caller binds ``targets.EMU_BARRIER_SYMBOL`` first."""
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
