"""BLAS matmul from JIT-compiled code.

SciPy exports its BLAS to Cython as PyCapsules in
``scipy.linalg.cython_blas.__pyx_capi__``; each capsule holds the address
of a C wrapper with the Fortran ABI (every argument by pointer, column-major
storage, no hidden string-length arguments).  ``register_blas_symbols``
registers ``sgemm``/``dgemm`` with the JIT under the names in
``GEMM_SYMBOLS`` so emitted IR simply ``declare``s and calls them; code
cached or exported as objects therefore holds a symbol, not a
process-specific address.  (An exported library must define those symbols,
e.g. link a BLAS and ``-Wl,--defsym=graphc_sgemm=sgemm_``.)

``emit_matmul`` emits row-major ``C = op(A) @ op(B)`` (optionally batched):
float32/float64 through ?gemm, int32/int64 as a plain loop nest (BLAS has
no integer gemm).

Threads: SciPy's OpenBLAS has its own thread pool, whose workers spin for a
long time after each call, as libgomp's do after each parallel region.  Two
spinning pools on the same cores starve each other (measured on the 2-core
dev machine: a 256^3 sgemm alternating with a small parallel loop took
~8 ms instead of ~0.25 ms; docs/cpu_runtime.md).  So when the OpenBLAS
build exposes ``openblas_set_num_threads_local`` (OpenBLAS >= 0.3.27) and
libgomp is loaded, compiled code runs every gemm single-threaded inside
BLAS and splits it over graphc's pool itself (rows or columns of C per
thread): one pool, never two.  ``blas_threading()`` says which mode is
active.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import importlib.util
import os
import sys
import threading
from types import ModuleType
from typing import Optional, Sequence, Union

import llvmlite.binding as llvm
import llvmlite.ir as ir
import numpy as np

from graphc.codegen.parallel import (
    _as_i64, _declare, body_function_type, emit_for_range, emit_parallel_for, ensure_runtime,
    entry_alloca)

__all__ = ["GEMM_SYMBOLS", "BLAS_THREADS_SYMBOL", "GEMM_MIN_WORK_PER_THREAD",
           "gemm_address", "register_blas_symbols", "blas_threading",
           "emit_matmul", "blas_dtypes", "matmul_dtypes"]

# JIT symbol names (graphc-private so they cannot collide with a ``sgemm_``
# some other library put in the process).
GEMM_SYMBOLS = {np.dtype(np.float32): "graphc_sgemm",
                np.dtype(np.float64): "graphc_dgemm"}
BLAS_THREADS_SYMBOL = "graphc_blas_set_threads_local"
# Multiply-adds one thread must get before a matmul is split across threads:
# ~15-30 us of single-core gemm. A region costs ~1-5 us when every core is
# free, but when another process holds a core the worker may wait a scheduler
# tick: with 2^18 (the first choice) a 64x128x10 MLP gradient on the shared
# 2-core machine had a median of 8.4 ms per call (min 0.11 ms); with 2^20 its
# matmuls stay serial and the median is 0.084 ms.
GEMM_MIN_WORK_PER_THREAD = 1 << 20

_CAPSULE_NAMES = {np.dtype(np.float32): "sgemm", np.dtype(np.float64): "dgemm"}
_IR_TYPES = {np.dtype(np.float32): ir.FloatType(), np.dtype(np.float64): ir.DoubleType(),
             np.dtype(np.int32): ir.IntType(32), np.dtype(np.int64): ir.IntType(64)}

_I8 = ir.IntType(8)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_PTR = ir.PointerType()
_VOID = ir.VoidType()
# What a matmul body reads: a, b, c, m, n, k, split_columns (0/1).
_CTX_TYPE = ir.LiteralStructType([_PTR, _PTR, _PTR, _I64, _I64, _I64, _I64])

_lock = threading.Lock()
_state: dict = {}

IntLike = Union[int, ir.Value]


def blas_dtypes() -> tuple[np.dtype, ...]:
    """dtypes whose matmul goes through BLAS."""
    return tuple(GEMM_SYMBOLS)


def matmul_dtypes() -> tuple[np.dtype, ...]:
    """dtypes ``emit_matmul`` accepts."""
    return tuple(_IR_TYPES)


def _capsule_pointer(capsule: object) -> int:
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype = ctypes.c_char_p
    get_name.argtypes = [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype = ctypes.c_void_p
    get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    # The capsule name is the C signature; GetPointer must be given it back.
    return get_pointer(capsule, get_name(capsule))


_CYTHON_BLAS = "scipy.linalg.cython_blas"
_cython_blas_module: Optional[ModuleType] = None


def _load_cython_blas_directly() -> Optional[ModuleType]:
    """``scipy.linalg.cython_blas`` loaded from its extension file without
    running ``scipy/linalg/__init__.py`` (~0.3 s of imports, against ~0.03 s
    for the extension, which imports only ``scipy`` and a few helpers).

    Checked with SciPy 1.17 (Cython 3.2): the extension registers itself in
    ``sys.modules`` while it initializes; it is taken out again so that a
    later ``import scipy.linalg`` goes through the normal import machinery,
    which then sets ``scipy.linalg.cython_blas`` on the package as usual
    (a Cython module asked to initialize twice returns the same module
    object, so the capsules stay the same).  None if anything looks off:
    the caller then imports it the normal way."""
    spec = importlib.util.find_spec("scipy")       # locates, does not import
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(folder, "linalg", "cython_blas" + suffix)
            if not os.path.isfile(path):
                continue
            loader = importlib.machinery.ExtensionFileLoader(_CYTHON_BLAS, path)
            ext_spec = importlib.util.spec_from_file_location(_CYTHON_BLAS, path, loader=loader)
            if ext_spec is None:
                return None
            module = importlib.util.module_from_spec(ext_spec)
            loader.exec_module(module)
            if sys.modules.get(_CYTHON_BLAS) is module and "scipy.linalg" not in sys.modules:
                del sys.modules[_CYTHON_BLAS]
            return module
    return None


def _cython_blas() -> ModuleType:
    """SciPy's ``cython_blas`` module: the one already imported, else the
    extension loaded directly when ``scipy.linalg`` is not imported yet,
    else (or when the direct load fails or lacks a gemm) the normal import."""
    global _cython_blas_module
    if _cython_blas_module is not None:
        return _cython_blas_module
    module = sys.modules.get(_CYTHON_BLAS)
    if module is None and "scipy.linalg" not in sys.modules:
        try:
            module = _load_cython_blas_directly()
        except Exception:  # noqa: BLE001 -- any failure means: use the normal import
            module = None
            # leave no half-initialized module for the normal import to find
            sys.modules.pop(_CYTHON_BLAS, None)
        capi = getattr(module, "__pyx_capi__", None)
        if not isinstance(capi, dict) or not all(n in capi for n in _CAPSULE_NAMES.values()):
            module = None
    if module is None:
        from scipy.linalg import cython_blas as module
    _cython_blas_module = module
    return module


def gemm_address(dtype) -> int:
    """Address of SciPy's Fortran-ABI ``sgemm`` (float32) or ``dgemm``
    (float64)."""
    dt = np.dtype(dtype)
    if dt not in _CAPSULE_NAMES:
        raise TypeError(f"no BLAS gemm for dtype {dt} (only float32/float64)")
    addr = _capsule_pointer(_cython_blas().__pyx_capi__[_CAPSULE_NAMES[dt]])
    if not addr:
        raise RuntimeError(f"scipy.linalg.cython_blas gave a null {_CAPSULE_NAMES[dt]}")
    return addr


def _thread_setter_address() -> Optional[int]:
    """``openblas_set_num_threads_local`` of the BLAS cython_blas is linked
    against (dlsym on the extension's handle searches its dependencies,
    so this is SciPy's copy, not NumPy's), or None for other BLAS builds."""
    try:
        fn = ctypes.CDLL(_cython_blas().__file__).openblas_set_num_threads_local
    except (OSError, AttributeError):
        return None
    return ctypes.cast(fn, ctypes.c_void_p).value


def register_blas_symbols() -> None:
    """Make ``GEMM_SYMBOLS`` (and, when available, ``BLAS_THREADS_SYMBOL``)
    resolvable by MCJIT.  Idempotent; call before finalizing an engine
    whose code uses ``emit_matmul`` (the emitter calls it too)."""
    with _lock:
        if _state:
            return
        for dt, name in GEMM_SYMBOLS.items():
            llvm.add_symbol(name, gemm_address(dt))
        setter = _thread_setter_address()
        if setter:
            llvm.add_symbol(BLAS_THREADS_SYMBOL, setter)
        _state["setter"] = setter


def blas_threading() -> str:
    """``"graphc"``: compiled matmuls run BLAS single-threaded and split the
    work over graphc's pool (libgomp found and OpenBLAS thread-local
    control available).  ``"blas"``: each gemm is one BLAS call that
    threads itself (libgomp missing, or a BLAS without that control)."""
    register_blas_symbols()
    if _state["setter"] and ensure_runtime() == "gomp":
        return "graphc"
    return "blas"


def _gemm_decl(module: ir.Module, dt: np.dtype) -> ir.Function:
    return _declare(module, GEMM_SYMBOLS[dt], ir.FunctionType(_VOID, [_PTR] * 13))


def _set_blas_threads(builder: ir.IRBuilder, n: ir.Value) -> ir.Value:
    fn = _declare(builder.module, BLAS_THREADS_SYMBOL, ir.FunctionType(_I32, [_I32]))
    return builder.call(fn, [n], name="blas.prev_threads")


def _max1(builder: ir.IRBuilder, v: ir.Value) -> ir.Value:
    one = ir.Constant(v.type, 1)
    return builder.select(builder.icmp_signed("<", v, one), one, v)


def _offset(builder: ir.IRBuilder, ptr: ir.Value, elems: ir.Value, ety: ir.Type) -> ir.Value:
    return builder.gep(ptr, [elems], inbounds=True, source_etype=ety)


def _batch_strides(builder: ir.IRBuilder, given: Optional[Sequence[IntLike]],
                   batch: Sequence[ir.Value], matrix: ir.Value) -> list[ir.Value]:
    """Given strides, or the contiguous ones for a buffer of shape
    (*batch, matrix elements)."""
    if given is not None:
        if len(given) != len(batch):
            raise ValueError("one batch stride per batch dimension is required")
        return [_as_i64(builder, s) for s in given]
    strides, acc = [], matrix
    for extent in reversed(batch):
        strides.append(acc)
        acc = builder.mul(acc, extent)
    return strides[::-1]


def emit_matmul(builder: ir.IRBuilder, dtype, a_ptr: ir.Value, b_ptr: ir.Value,
                c_ptr: ir.Value, m: IntLike, n: IntLike, k: IntLike, *,
                transpose_a: bool = False, transpose_b: bool = False,
                batch_shape: Sequence[IntLike] = (),
                a_batch_strides: Optional[Sequence[IntLike]] = None,
                b_batch_strides: Optional[Sequence[IntLike]] = None,
                c_batch_strides: Optional[Sequence[IntLike]] = None,
                parallel: bool = True) -> None:
    """Emit ``C[b] = op(A[b]) @ op(B[b])`` for every batch index ``b``.

    Matrices are contiguous row-major: op(A) is m x k (A itself is k x m
    when ``transpose_a``), op(B) is k x n, C is m x n.  ``m``, ``n``, ``k``
    and the batch extents/strides are Python ints or integer IR values (any
    width; zero is fine: k == 0 gives zeros, m or n == 0 writes nothing).
    C is overwritten, never read (NaN/garbage in C does not leak); C must
    not overlap A or B.

    Batching: ``batch_shape`` is the (broadcast) batch shape, one loop per
    dim; ``*_batch_strides`` are element offsets between consecutive
    matrices along each batch dim.  ``None`` means the contiguous layout of
    a buffer of shape (*batch_shape, rows, cols); a stride of 0 broadcasts
    that operand (NumPy's size-1 batch dims).  The caller resolves
    broadcasting into these strides.  A batched A @ B with B broadcast over
    all batch dims (strides given as literal 0), A and C contiguous and A
    not transposed is emitted as one matmul with m * prod(batch) rows.

    float32/float64 call ``GEMM_SYMBOLS`` (sizes must fit in int32: LP64
    BLAS); int32/int64 use an (i, k, j) loop nest whose inner loop is
    contiguous (vectorizable), or (i, j, k) dot products when B is
    transposed; integer overflow wraps like NumPy's.

    ``parallel``: split each matmul with at least
    ``GEMM_MIN_WORK_PER_THREAD`` multiply-adds per thread over graphc's pool
    (rows of C, or columns when n > m); see ``blas_threading()``.  False
    keeps the matmul on the calling thread (in ``"graphc"`` mode BLAS then
    runs single-threaded too): use it when emitting inside a parallel-for
    body.
    """
    dt = np.dtype(dtype)
    if dt not in _IR_TYPES:
        raise TypeError(f"matmul of dtype {dt} is not supported "
                        f"(float32, float64, int32, int64)")
    if dt in GEMM_SYMBOLS:
        register_blas_symbols()
    m_, n_, k_ = (_as_i64(builder, v) for v in (m, n, k))
    batch = [_as_i64(builder, e) for e in batch_shape]
    use_pool = parallel and ensure_runtime() == "gomp"
    if dt in GEMM_SYMBOLS and blas_threading() != "graphc":
        use_pool = False  # BLAS threads itself; do not add a second pool
    guard_blas = dt in GEMM_SYMBOLS and blas_threading() == "graphc"

    prev = _set_blas_threads(builder, ir.Constant(_I32, 1)) if guard_blas else None
    if (batch and not transpose_a and a_batch_strides is None and c_batch_strides is None
            and b_batch_strides is not None
            and all(isinstance(s, int) and s == 0 for s in b_batch_strides)):
        rows = m_
        for e in batch:
            rows = builder.mul(rows, e)
        _emit_one(builder, dt, a_ptr, b_ptr, c_ptr, rows, n_, k_, False, transpose_b, use_pool)
    else:
        a_str = _batch_strides(builder, a_batch_strides, batch, builder.mul(m_, k_))
        b_str = _batch_strides(builder, b_batch_strides, batch, builder.mul(k_, n_))
        c_str = _batch_strides(builder, c_batch_strides, batch, builder.mul(m_, n_))
        _emit_batch_loops(builder, dt, a_ptr, b_ptr, c_ptr, m_, n_, k_, transpose_a,
                          transpose_b, batch, a_str, b_str, c_str, 0, use_pool)
    if prev is not None:
        _set_blas_threads(builder, prev)


def _emit_batch_loops(builder, dt, a, b, c, m, n, k, ta, tb, batch, a_str, b_str,
                      c_str, level, use_pool) -> None:
    if level == len(batch):
        _emit_one(builder, dt, a, b, c, m, n, k, ta, tb, use_pool)
        return
    ety = _IR_TYPES[dt]
    with emit_for_range(builder, batch[level], name=f"mm.b{level}") as i:
        def at(ptr, strides):
            return _offset(builder, ptr, builder.mul(i, strides[level]), ety)
        _emit_batch_loops(builder, dt, at(a, a_str), at(b, b_str), at(c, c_str), m, n, k,
                          ta, tb, batch, a_str, b_str, c_str, level + 1, use_pool)


def _emit_one(builder, dt, a, b, c, m, n, k, ta, tb, use_pool) -> None:
    """One (unbatched) matmul: a direct call, or a parallel-for over an
    outlined body that computes a block of C."""
    if not use_pool:
        if dt in GEMM_SYMBOLS:
            _emit_gemm_call(builder, dt, a, b, c, m, n, k, ta, tb,
                            lda=m if ta else k, ldb=k if tb else n, ldc=n)
        else:
            _emit_int_rows(builder, dt, a, b, c, ir.Constant(_I64, 0), m, m, n, k, ta, tb)
        return
    body = _matmul_body(builder.module, dt, ta, tb)
    ctx = entry_alloca(builder, _CTX_TYPE, name="mm.ctx")
    # BLAS can split either way; the integer loops split rows only.
    split_cols = (builder.icmp_signed(">", n, m) if dt in GEMM_SYMBOLS
                  else ir.Constant(ir.IntType(1), 0))
    fields = [a, b, c, m, n, k, builder.zext(split_cols, _I64)]
    zero = ir.Constant(_I32, 0)
    for i, v in enumerate(fields):
        builder.store(v, builder.gep(ctx, [zero, ir.Constant(_I32, i)], inbounds=True,
                                     source_etype=_CTX_TYPE))
    extent = builder.select(split_cols, n, m, name="mm.extent")
    work = builder.mul(builder.mul(m, n), k)
    max_threads = builder.sdiv(work, ir.Constant(_I64, GEMM_MIN_WORK_PER_THREAD))
    emit_parallel_for(builder, body, ctx, extent, min_chunk=4, grain=4,
                      max_threads=max_threads)


def _matmul_body(module: ir.Module, dt: np.dtype, ta: bool, tb: bool) -> ir.Function:
    """``void body(ctx, begin, end)``: rows (or columns) [begin, end) of C."""
    name = f"graphc.matmul_body.{dt.name}.{'T' if ta else 'N'}{'T' if tb else 'N'}"
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    fn = ir.Function(module, body_function_type(), name=name)
    fn.linkage = "internal"
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    ctx, begin, end = fn.args
    zero = ir.Constant(_I32, 0)
    a_, b_, c_, m, n, k, split = (
        b.load(b.gep(ctx, [zero, ir.Constant(_I32, i)], inbounds=True, source_etype=_CTX_TYPE),
               typ=_CTX_TYPE.elements[i]) for i in range(7))
    ety = _IR_TYPES[dt]
    if dt not in GEMM_SYMBOLS:
        _emit_int_rows(b, dt, a_, b_, c_, begin, end, m, n, k, ta, tb)
        b.ret_void()
        return fn
    # Threads of the pool are not the caller's: keep their BLAS serial.
    _set_blas_threads(b, ir.Constant(_I32, 1))
    size = b.sub(end, begin)
    by_cols = b.icmp_signed("!=", split, ir.Constant(_I64, 0))
    rows = b.select(by_cols, m, size)
    cols = b.select(by_cols, size, n)
    # Row block r0: op(A) rows start at A + r0*k (or A + r0 when A is
    # stored transposed); C + r0*n.  Column block c0: op(B) columns start
    # at B + c0 (or B + c0*k when stored transposed); C + c0.
    a_row_off = begin if ta else b.mul(begin, k)
    b_col_off = b.mul(begin, k) if tb else begin
    a_blk = b.select(by_cols, a_, _offset(b, a_, a_row_off, ety))
    b_blk = b.select(by_cols, _offset(b, b_, b_col_off, ety), b_)
    c_blk = _offset(b, c_, b.select(by_cols, begin, b.mul(begin, n)), ety)
    _emit_gemm_call(b, dt, a_blk, b_blk, c_blk, rows, cols, k, ta, tb,
                    lda=m if ta else k, ldb=k if tb else n, ldc=n)
    b.ret_void()
    return fn


def _emit_gemm_call(builder, dt, a, b, c, rows, cols, k, ta, tb, lda, ldb, ldc) -> None:
    """C (rows x cols, row stride ldc) = op(A) op(B), with lda/ldb the row
    strides of A and B as stored.  Row-major C is column-major C^T =
    op(B)^T op(A)^T, and a row-major buffer read column-major is its
    transpose: so call gemm with the operands swapped and the flags kept,
    each row stride becoming the leading dimension."""
    ety = _IR_TYPES[dt]
    slots = {}
    for name, typ in (("ta", _I8), ("tb", _I8), ("m", _I32), ("n", _I32), ("k", _I32),
                      ("lda", _I32), ("ldb", _I32), ("ldc", _I32),
                      ("alpha", ety), ("beta", ety)):
        slots[name] = entry_alloca(builder, typ, name=f"gemm.{name}")
    to32 = lambda v: builder.trunc(v, _I32)  # noqa: E731
    values = {"ta": ir.Constant(_I8, ord("T" if tb else "N")),
              "tb": ir.Constant(_I8, ord("T" if ta else "N")),
              "m": to32(cols), "n": to32(rows), "k": to32(k),
              # BLAS rejects ld < 1 even for empty matrices.
              "lda": _max1(builder, to32(ldb)), "ldb": _max1(builder, to32(lda)),
              "ldc": _max1(builder, to32(ldc)),
              "alpha": ir.Constant(ety, 1.0), "beta": ir.Constant(ety, 0.0)}
    for name, v in values.items():
        builder.store(v, slots[name])
    s = slots
    builder.call(_gemm_decl(builder.module, dt),
                 [s["ta"], s["tb"], s["m"], s["n"], s["k"], s["alpha"], b, s["lda"],
                  a, s["ldb"], s["beta"], c, s["ldc"]])


def _emit_int_rows(builder, dt, a, b, c, row_begin, row_end, m, n, k, ta, tb) -> None:
    """Rows [row_begin, row_end) of an integer matmul.  With B not
    transposed: for each row i, zero C[i,:], then for kk, C[i,:] +=
    A[i,kk] * B[kk,:] (contiguous inner loop over j).  With B transposed its
    rows are the columns we need, so a dot product over contiguous kk is
    the better inner loop."""
    ety = _IR_TYPES[dt]
    zero = ir.Constant(ety, 0)

    def load(ptr, idx):
        return builder.load(_offset(builder, ptr, idx, ety), typ=ety)

    def a_index(i, kk):
        return builder.add(builder.mul(kk, m), i) if ta else builder.add(builder.mul(i, k), kk)

    with emit_for_range(builder, row_end, row_begin, name="mm.i") as i:
        c_row = _offset(builder, c, builder.mul(i, n), ety)
        if tb:
            with emit_for_range(builder, n, name="mm.j") as j:
                b_row = _offset(builder, b, builder.mul(j, k), ety)
                acc = entry_alloca(builder, ety, name="mm.acc")
                builder.store(zero, acc)
                with emit_for_range(builder, k, name="mm.k") as kk:
                    prod_ = builder.mul(load(a, a_index(i, kk)), load(b_row, kk))
                    builder.store(builder.add(builder.load(acc, typ=ety), prod_), acc)
                builder.store(builder.load(acc, typ=ety), _offset(builder, c_row, j, ety))
        else:
            with emit_for_range(builder, n, name="mm.z") as j:
                builder.store(zero, _offset(builder, c_row, j, ety))
            with emit_for_range(builder, k, name="mm.k") as kk:
                aik = load(a, a_index(i, kk))
                b_row = _offset(builder, b, builder.mul(kk, n), ety)
                with emit_for_range(builder, n, name="mm.j") as j:
                    cp = _offset(builder, c_row, j, ety)
                    upd = builder.add(builder.load(cp, typ=ety),
                                      builder.mul(aik, load(b_row, j)))
                    builder.store(upd, cp)
