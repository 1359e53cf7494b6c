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

from typing import Optional, Tuple

import numpy as np

from ..graph import Operation
from . import loop_ir as L


def lower_matvec(op: Operation) -> Optional[L.Kernel]:
    """Loop IR of a 2-D ``matmul`` op whose output is m x 1 or 1 x n (or
    1 x 1), else None (a BLAS matmul)."""
    if op.type != "matmul" or len(op.inputs[0].shape) != 2 or len(op.inputs[1].shape) != 2:
        return None
    m, n = op.outputs[0].shape
    if m != 1 and n != 1:
        return None
    return lower_matmul(op)


def lower_matmul(op: Operation) -> Optional[L.Kernel]:
    """Loop IR of any ``matmul`` op (batched, broadcast, transposed):
    ``out[b, i, j] = sum_k op(A)[b, i, k] * op(B)[b, k, j]``. Used where no
    BLAS may be called (exported libraries) and for matrix-vector products;
    the CPU codegen interchanges the k loop outside the j loop when B is
    contiguous along j, so the inner loop is a vectorized row update."""
    if op.type != "matmul":
        return None
    a, b = op.inputs
    out = op.outputs[0]
    shapes = [a.shape, b.shape, out.shape]
    if any(s is None or any(d is None for d in s) for s in shapes):
        return None
    a_shape, b_shape, c_shape = (tuple(int(d) for d in s) for s in shapes)
    ta, tb = bool(op.attrs["transpose_a"]), bool(op.attrs["transpose_b"])
    return matmul_kernel(op.name, a_shape, b_shape, c_shape, ta, tb, np.dtype(out.dtype))


def matmul_kernel(name: str, a_shape: Tuple[int, ...], b_shape: Tuple[int, ...], c_shape: Tuple[int, ...],
                  ta: bool, tb: bool, dt: np.dtype) -> L.Kernel:
    """:func:`lower_matmul`'s kernel for these static shapes (the PTX codegen
    rebuilds it to recognise a matmul it can tile)."""
    batch = c_shape[:-2]
    m, n = c_shape[-2:]
    k = a_shape[-2] if ta else a_shape[-1]
    batch_point = tuple(L.IVar(f"b{d}") if size != 1 else L.IConst(0) for d, size in enumerate(batch))
    i = L.IVar("i") if m != 1 else L.IConst(0)
    j = L.IVar("j") if n != 1 else L.IConst(0)
    r = L.IVar("k")

    def operand(name: str, shape, row: L.IExpr, col: L.IExpr, transposed: bool) -> L.Load:
        lead = len(batch) - (len(shape) - 2)
        point = tuple(L.IConst(0) if size == 1 else batch_point[lead + d] for d, size in enumerate(shape[:-2]))
        point += (col, row) if transposed else (row, col)
        return L.Load(name, L.flat_index(point, shape), dt)

    product = L.Binary("multiply", operand("in0", a_shape, i, r, ta), operand("in1", b_shape, r, j, tb), dt)
    zero = dt.type(0) if dt.kind != "b" else False
    body = [L.AccInit("acc0", dt, zero),
            L.Loop("k", k, (L.AccUpdate("acc0", "add", product),), parallel=False),
            L.Store("out0", L.flat_index(batch_point + (i, j), c_shape), L.AccRef("acc0", dt))]
    for var, extent in reversed([(f"b{d}", size) for d, size in enumerate(batch)] + [("i", m), ("j", n)]):
        if extent != 1:
            body = [L.Loop(var, extent, tuple(body))]
    params = (L.Param("in0", dt, a_shape, "input"), L.Param("in1", dt, b_shape, "input"),
              L.Param("out0", dt, c_shape, "output"))
    return L.Kernel(name, params, tuple(body))
