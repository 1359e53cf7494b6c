"""The tiled shared-memory matmul kernel (batched, any transposes) and the
structural check that a loop-IR kernel is exactly lower_matmul's product."""
from __future__ import annotations

from typing import Optional, Tuple

import llvmlite.ir as ir
import numpy as np

from ...lowering import loop_ir as L
from dataclasses import dataclass

from ...lowering.matvec import matmul_kernel
from ..llvm_cpu import memory_type
from .plans import _I64

# Tiled matmul: TILE x TILE outputs per block of TILE x TILE threads, K in steps of TILE.
MATMUL_TILE = 16

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
