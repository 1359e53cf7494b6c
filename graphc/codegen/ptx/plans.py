"""Launch plans (what the runtime launches for each kernel) and the loop-IR
rewrites that map a kernel's parallel loops onto GPU threads."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import llvmlite.ir as ir
import numpy as np

from ...errors import CompileError
from ...lowering import loop_ir as L
from dataclasses import dataclass, field
import re

from ...lowering.split_reduction import split_reduction, substitute_var
from ..llvm_cpu import split_loop

# Threads per block of the one-iteration-per-thread launches.
BLOCK_SIZE = 256

_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_PTR = ir.PointerType()
_VOID = ir.VoidType()


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
