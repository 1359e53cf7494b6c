"""Matrix-vector products as loop IR.

A matmul whose result has one row or one column reads its matrix once and
does two flops per element read: it runs at memory speed, where a BLAS gemm
call built for n = 1 runs several times slower (measured on issue 5's W3:
X @ w over a 100000 x 256 X took 24 ms through sgemm, X^T @ dz 88 ms, against
~5-8 ms as loop-IR reductions). As a reduction kernel it also gets the CPU
codegen's handling of reductions: vectorized row sums, column sums
interchanged so the matrix is read row by row.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..graph import Operation
from . import loop_ir as L


def lower_matvec(op: Operation) -> Optional[L.Kernel]:
    """Loop IR of a 2-D ``matmul`` op whose output is m x 1 or 1 x n (or
    1 x 1), else None (a BLAS matmul)."""
    if op.type != "matmul":
        return None
    a, b = op.inputs
    out = op.outputs[0]
    if len(a.shape) != 2 or len(b.shape) != 2 or any(d is None for d in tuple(a.shape) + tuple(b.shape)):
        return None
    m, n = out.shape
    if m != 1 and n != 1:
        return None
    ta, tb = bool(op.attrs["transpose_a"]), bool(op.attrs["transpose_b"])
    k = a.shape[0] if ta else a.shape[1]
    dt = np.dtype(out.dtype)
    i, j, r = L.IVar("i"), L.IVar("j"), L.IVar("k")
    row = L.IConst(0) if m == 1 else i
    col = L.IConst(0) if n == 1 else j
    a_index = L.iadd(L.imul(r, m), row) if ta else L.iadd(L.imul(row, k), r)
    b_index = L.iadd(L.imul(col, k), r) if tb else L.iadd(L.imul(r, n), col)
    product = L.Binary("multiply", L.Load("in0", a_index, dt), L.Load("in1", b_index, dt), dt)
    zero = dt.type(0) if dt.kind != "b" else False
    body = [L.AccInit("acc0", dt, zero),
            L.Loop("k", k, (L.AccUpdate("acc0", "add", product),), parallel=False),
            L.Store("out0", L.iadd(L.imul(row, n), col), L.AccRef("acc0", dt))]
    if n != 1:
        body = [L.Loop("j", n, tuple(body))]
    if m != 1:
        body = [L.Loop("i", m, tuple(body))]
    params = (L.Param("in0", dt, tuple(a.shape), "input"), L.Param("in1", dt, tuple(b.shape), "input"),
              L.Param("out0", dt, (m, n), "output"))
    return L.Kernel(op.name, params, tuple(body))
