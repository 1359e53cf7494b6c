"""Matmul from JIT code through BLAS (graphc/codegen/blas.py)."""

import ctypes
import itertools

import llvmlite.ir as ir
import numpy as np
import pytest

from graphc.codegen import blas
from graphc.codegen import parallel as P

PTR = ir.PointerType()
I32 = ir.IntType(32)
I64 = ir.IntType(64)
VOID = ir.VoidType()
DTYPES = ["float32", "float64", "int32", "int64"]
SIZES = [(1, 1, 1), (5, 7, 3), (3, 1, 9), (1, 6, 4), (0, 3, 4), (3, 0, 4), (3, 4, 0),
         (0, 0, 0), (33, 17, 65), (300, 40, 90), (7, 301, 50)]

_cache = {}


def compile_matmul(dtype, ta, tb, parallel=True):
    """``mm(a, b, c, m, n, k)`` with run-time sizes."""
    key = (dtype, ta, tb, parallel)
    if key not in _cache:
        mod = ir.Module()
        fn = ir.Function(mod, ir.FunctionType(VOID, [PTR, PTR, PTR, I64, I64, I64]), name="mm")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        blas.emit_matmul(b, dtype, *fn.args, transpose_a=ta, transpose_b=tb, parallel=parallel)
        b.ret_void()
        jit = P.jit_compile(mod)
        _cache[key] = (jit, jit.ctypes_function("mm", None, *[ctypes.c_void_p] * 3,
                                                *[ctypes.c_int64] * 3))
    return _cache[key][1]


def operands(dtype, m, n, k, ta, tb, rng):
    def make(shape):
        if np.dtype(dtype).kind == "f":
            return rng.standard_normal(shape).astype(dtype)
        return rng.integers(-50, 50, shape).astype(dtype)
    a = make((k, m) if ta else (m, k))
    b = make((n, k) if tb else (k, n))
    return a, b, (a.T if ta else a) @ (b.T if tb else b)


def garbage(shape, dtype):
    """Output buffers start as NaN / junk: beta=0 must not read them."""
    fill = np.nan if np.dtype(dtype).kind == "f" else 12345
    return np.full(shape, fill, dtype)


def assert_matches(got, want, dtype):
    if np.dtype(dtype).kind == "f":
        tol = 1e-4 if dtype == "float32" else 1e-12
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * 10)
    else:
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("parallel", [True, False])
@pytest.mark.parametrize("ta,tb", list(itertools.product([False, True], repeat=2)))
@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_all_transposes_and_sizes(dtype, ta, tb, parallel):
    fn = compile_matmul(dtype, ta, tb, parallel)
    rng = np.random.default_rng(0)
    for m, n, k in SIZES:
        a, b, want = operands(dtype, m, n, k, ta, tb, rng)
        c = garbage((m, n), dtype)
        fn(a.ctypes.data, b.ctypes.data, c.ctypes.data, m, n, k)
        assert_matches(c, want, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("m,n,k", [(512, 64, 128), (64, 512, 128), (257, 255, 33)])
def test_matmul_split_over_threads(dtype, m, n, k):
    """Big enough to be split by rows (m > n) or by columns (n > m)."""
    P.set_num_threads(2)
    try:
        for ta, tb in itertools.product([False, True], repeat=2):
            a, b, want = operands(dtype, m, n, k, ta, tb, np.random.default_rng(1))
            c = garbage((m, n), dtype)
            compile_matmul(dtype, ta, tb)(a.ctypes.data, b.ctypes.data, c.ctypes.data, m, n, k)
            assert_matches(c, want, dtype)
    finally:
        P.set_num_threads(None)


def test_k_zero_gives_zeros_not_garbage():
    for dtype in DTYPES:
        c = garbage((4, 5), dtype)
        a = np.empty((4, 0), dtype)
        b = np.empty((0, 5), dtype)
        compile_matmul(dtype, False, False)(a.ctypes.data, b.ctypes.data, c.ctypes.data, 4, 5, 0)
        np.testing.assert_array_equal(c, np.zeros((4, 5), dtype))


def test_integer_overflow_wraps_like_numpy():
    a = np.full((3, 4), 2**20, np.int32)
    b = np.full((4, 2), 2**13, np.int32)
    c = garbage((3, 2), "int32")
    compile_matmul("int32", False, False)(a.ctypes.data, b.ctypes.data, c.ctypes.data, 3, 2, 4)
    np.testing.assert_array_equal(c, a @ b)


def _batched_module(dtype, ta, tb, batch_shape, a_str, b_str, c_str, static=False):
    """``bmm(a, b, c, m, n, k, d0, d1)``: batch dims are the run-time d0, d1
    (or the Python ints in ``batch_shape`` when ``static``)."""
    mod = ir.Module()
    fn = ir.Function(mod, ir.FunctionType(VOID, [PTR] * 3 + [I64] * 5), name="bmm")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    a_, b_, c_, m, n, k, d0, d1 = fn.args
    if static:
        m, n, k = (x for x in static)
        shape = batch_shape
    else:
        shape = [d0, d1][:len(batch_shape)]
    blas.emit_matmul(b, dtype, a_, b_, c_, m, n, k, transpose_a=ta, transpose_b=tb,
                     batch_shape=shape, a_batch_strides=a_str, b_batch_strides=b_str,
                     c_batch_strides=c_str)
    b.ret_void()
    jit = P.jit_compile(mod)
    jit.source_ir = str(mod)
    return jit, jit.ctypes_function("bmm", None, *[ctypes.c_void_p] * 3, *[ctypes.c_int64] * 5)


def _call_batched(fn, a, b, c, m, n, k, batch):
    d = list(batch) + [0] * (2 - len(batch))
    fn(a.ctypes.data, b.ctypes.data, c.ctypes.data, m, n, k, *d)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_batched_contiguous(dtype, ta, tb):
    m, n, k, batch = 5, 6, 7, (2, 3)
    rng = np.random.default_rng(2)
    a = rng.standard_normal((*batch, *((k, m) if ta else (m, k)))).astype(dtype)
    b = rng.standard_normal((*batch, *((n, k) if tb else (k, n)))).astype(dtype)
    want = (np.swapaxes(a, -1, -2) if ta else a) @ (np.swapaxes(b, -1, -2) if tb else b)
    jit, fn = _batched_module(dtype, ta, tb, batch, None, None, None)
    c = garbage((*batch, m, n), dtype)
    _call_batched(fn, a, b, c, m, n, k, batch)
    assert_matches(c, want, dtype)


@pytest.mark.parametrize("dtype", ["float32", "int64"])
def test_batched_broadcast_by_zero_strides(dtype):
    """A of batch shape (2, 1) times B of batch shape (1, 3): the caller
    turns NumPy broadcasting into zero strides."""
    m, n, k = 4, 3, 5
    rng = np.random.default_rng(3)
    a = rng.standard_normal((2, 1, m, k)).astype(dtype)
    b = rng.standard_normal((1, 3, k, n)).astype(dtype)
    jit, fn = _batched_module(dtype, False, False, (2, 3),
                              [m * k, 0], [0, k * n], None)
    c = garbage((2, 3, m, n), dtype)
    _call_batched(fn, a, b, c, m, n, k, (2, 3))
    assert_matches(c, a @ b, dtype)


@pytest.mark.parametrize("tb", [False, True])
def test_batched_with_shared_weights_folds_into_one_matmul(tb):
    """x (4, 3, k) @ W (k, n): emitted as one (12 x k) @ (k x n) call."""
    m, n, k = 3, 8, 6
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, m, k)).astype(np.float32)
    w = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    jit, fn = _batched_module("float32", False, tb, (4,), None, [0], None, static=(m, n, k))
    assert "mm.b0" not in jit.source_ir  # no batch loop
    unfolded, _ = _batched_module("float32", False, tb, (4,), None, None, None, static=(m, n, k))
    assert "mm.b0" in unfolded.source_ir
    c = garbage((4, m, n), "float32")
    _call_batched(fn, x, w, c, m, n, k, (4,))
    assert_matches(c, x @ (w.T if tb else w), "float32")


def test_batch_of_zero_and_empty_matrices():
    jit, fn = _batched_module("float64", False, False, (2, 3), None, None, None)
    a = np.empty((0, 3, 2, 2))
    c = garbage((0, 3, 2, 2), "float64")
    _call_batched(fn, a, a, c, 2, 2, 2, (0, 3))
    c = garbage((2, 3, 2, 0), "float64")
    a = np.ones((2, 3, 2, 4))
    b = np.ones((2, 3, 4, 0))
    _call_batched(fn, a, b, c, 2, 0, 4, (2, 3))


def test_integer_inner_loop_is_vectorized():
    compile_matmul("int32", False, False, False)
    ir_text = _cache[("int32", False, False, False)][0].optimized_ir
    assert " x i32>" in ir_text


def test_gemm_addresses_and_symbols():
    for dt in ("float32", "float64"):
        assert blas.gemm_address(dt) > 0
        assert blas.gemm_address(np.dtype(dt)) == blas.gemm_address(dt)
    assert blas.gemm_address("float32") != blas.gemm_address("float64")
    with pytest.raises(TypeError):
        blas.gemm_address("int32")
    blas.register_blas_symbols()
    import llvmlite.binding as llvm
    assert llvm.address_of_symbol(blas.GEMM_SYMBOLS[np.dtype("float32")]) == \
        blas.gemm_address("float32")
    assert blas.blas_threading() in ("graphc", "blas")


def test_unsupported_dtype_is_refused():
    mod = ir.Module()
    fn = ir.Function(mod, ir.FunctionType(VOID, [PTR] * 3), name="f")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    with pytest.raises(TypeError, match="float16"):
        blas.emit_matmul(b, "float16", *fn.args, 2, 2, 2)


def test_without_libgomp_blas_threads_itself():
    """GRAPHC_LIBGOMP=none: the serial runtime; matmul is one BLAS call."""
    import os
    import subprocess
    import sys
    import textwrap
    tests = os.path.dirname(os.path.abspath(__file__))
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {tests!r})
        import numpy as np
        from test_codegen_blas import compile_matmul, operands, assert_matches, blas, P
        assert P.parallel_runtime() == "serial" and blas.blas_threading() == "blas"
        for dtype in ("float32", "int64"):
            a, b, want = operands(dtype, 300, 200, 100, False, True, np.random.default_rng(0))
            c = np.empty((300, 200), dtype)
            compile_matmul(dtype, False, True)(a.ctypes.data, b.ctypes.data, c.ctypes.data,
                                               300, 200, 100)
            assert_matches(c, want, dtype)
        print("ok")
    """)
    env = dict(os.environ, GRAPHC_LIBGOMP="none",
               PYTHONPATH=os.path.dirname(tests) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
