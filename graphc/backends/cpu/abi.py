"""How a compiled entry point sees its arguments: NumPy arrays as
``PyArrayObject*`` and a context table.

Calling native code through ctypes costs little; getting a data pointer
out of an array in Python does not (``a.ctypes.data`` takes ~2 us on the
development machine, more than the whole call budget of issue 5's W5). So
entry points take the arrays themselves (ctypes ``py_object``: the object
pointer, no conversion) and read NumPy's public ``PyArrayObject`` fields
(numpy/ndarraytypes.h, unchanged from NumPy 1.x to 2.x): data pointer,
rank, dimensions, descr and flags. Every argument is checked natively (type,
dtype, rank, each dim, C-contiguous and aligned, writeable for outputs)
before any kernel runs; a mismatch returns the argument's number + 1 and
Python reports it (graphc.backends.cpu.executable). :func:`layout_ok`
verifies the offsets on this process's NumPy at import; if they differ the
CPU backend is not registered, and "auto" uses the interpreter.

The context table (``ptr ctx``, an int64 array the executable owns):
``ctx[0]`` the arena, ``ctx[1]`` the ``numpy.ndarray`` type object,
``ctx[2 + k]`` the canonical descr of ``DTYPES[k]``, then one pointer per
constant array. Addresses live there, not in the code, so compiled code
holds no process-specific address.
"""
from __future__ import annotations

import ctypes
import sys
from typing import Tuple

import llvmlite.ir as ir
import numpy as np


DTYPES: Tuple[np.dtype, ...] = tuple(np.dtype(d) for d in ("float32", "float64", "int32", "int64", "bool"))

# PyListObject fields (64-bit CPython without Py_TRACE_REFS)
OFFSET_LIST_SIZE = 16
OFFSET_LIST_ITEMS = 24
# PyArrayObject fields
OFFSET_TYPE = 8
OFFSET_DATA = 16
OFFSET_NDIM = 24
OFFSET_DIMS = 32
OFFSET_DESCR = 56
OFFSET_FLAGS = 64
FLAG_C_CONTIGUOUS = 0x0001
FLAG_ALIGNED = 0x0100
FLAG_WRITEABLE = 0x0400

CTX_ARENA = 0
CTX_NDARRAY_TYPE = 1
CTX_DESCR_BASE = 2
CTX_CONST_BASE = CTX_DESCR_BASE + len(DTYPES)

_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_PTR = ir.PointerType()


def _read(address: int, ctype) -> int:
    return ctype.from_address(address).value


def layout_ok() -> bool:
    """True when this process's arrays have the field offsets the entry
    points read (checked on a live array, never assumed)."""
    if sys.maxsize != 2 ** 63 - 1 or hasattr(sys, "gettotalrefcount"):
        return False
    a = np.zeros((3, 5), dtype=np.float32)
    b = a[:, ::2]
    base = id(a)
    items = [b, a]
    try:
        dims = _read(base + OFFSET_DIMS, ctypes.c_void_p)
        item_array = _read(id(items) + OFFSET_LIST_ITEMS, ctypes.c_void_p)
        return (_read(id(items) + OFFSET_LIST_SIZE, ctypes.c_ssize_t) == 2
                and (ctypes.c_void_p * 2).from_address(item_array)[:] == [id(b), id(a)]
                and _read(base + OFFSET_TYPE, ctypes.c_void_p) == id(np.ndarray)
                and _read(base + OFFSET_DATA, ctypes.c_void_p) == a.ctypes.data
                and _read(base + OFFSET_NDIM, ctypes.c_int) == 2
                and (ctypes.c_int64 * 2).from_address(dims)[:] == [3, 5]
                and _read(base + OFFSET_DESCR, ctypes.c_void_p) == id(np.dtype(np.float32))
                and _read(base + OFFSET_FLAGS, ctypes.c_int) & (FLAG_C_CONTIGUOUS | FLAG_WRITEABLE)
                == FLAG_C_CONTIGUOUS | FLAG_WRITEABLE
                and not _read(id(b) + OFFSET_FLAGS, ctypes.c_int) & FLAG_C_CONTIGUOUS)
    except (ValueError, OSError):
        return False


def context_prefix() -> np.ndarray:
    """The fixed head of a context table (arena slot left 0)."""
    table = np.zeros(CTX_CONST_BASE, dtype=np.int64)
    table[CTX_NDARRAY_TYPE] = id(np.ndarray)
    for k, dt in enumerate(DTYPES):
        table[CTX_DESCR_BASE + k] = id(dt)
    return table


def descr_slot(dtype: np.dtype) -> int:
    return CTX_DESCR_BASE + DTYPES.index(np.dtype(dtype))


# ---- IR helpers -------------------------------------------------------------------
def _field(b: ir.IRBuilder, obj: ir.Value, offset: int, typ: ir.Type) -> ir.Value:
    addr = b.gep(obj, [ir.Constant(_I64, offset)], inbounds=True, source_etype=ir.IntType(8))
    return b.load(addr, typ=typ)


def ctx_slot(b: ir.IRBuilder, ctx: ir.Value, index: int) -> ir.Value:
    """``ctx[index]`` as a pointer."""
    addr = b.gep(ctx, [ir.Constant(_I64, index)], inbounds=True, source_etype=_I64)
    return b.load(addr, typ=_PTR)


def emit_array_check(b: ir.IRBuilder, ctx: ir.Value, obj: ir.Value, dtype: np.dtype,
                     shape: Tuple[int, ...], writeable: bool) -> ir.Value:
    """i1: ``obj`` is an ndarray (exactly) of ``dtype`` and ``shape``,
    C-contiguous and aligned (and writeable when asked). Fields are only
    read once the type is known to be ndarray (``and`` chains in blocks)."""
    fn = b.function
    ok_type = b.icmp_unsigned("==", _field(b, obj, OFFSET_TYPE, _PTR), ctx_slot(b, ctx, CTX_NDARRAY_TYPE))
    check_bb = fn.append_basic_block("arg.fields")
    done_bb = fn.append_basic_block("arg.checked")
    entry_bb = b.block
    b.cbranch(ok_type, check_bb, done_bb)
    b.position_at_end(check_bb)
    ok = b.icmp_unsigned("==", _field(b, obj, OFFSET_DESCR, _PTR), ctx_slot(b, ctx, descr_slot(dtype)))
    ok = b.and_(ok, b.icmp_signed("==", _field(b, obj, OFFSET_NDIM, _I32), ir.Constant(_I32, len(shape))))
    need = FLAG_C_CONTIGUOUS | FLAG_ALIGNED | (FLAG_WRITEABLE if writeable else 0)
    flags = _field(b, obj, OFFSET_FLAGS, _I32)
    ok = b.and_(ok, b.icmp_unsigned("==", b.and_(flags, ir.Constant(_I32, need)), ir.Constant(_I32, need)))
    if shape:
        # dims are only read when the rank matched
        dims_bb = fn.append_basic_block("arg.dims")
        fields_end = b.block
        b.cbranch(ok, dims_bb, done_bb)
        b.position_at_end(dims_bb)
        dims = _field(b, obj, OFFSET_DIMS, _PTR)
        ok_dims = ir.Constant(ir.IntType(1), 1)
        for i, d in enumerate(shape):
            di = b.load(b.gep(dims, [ir.Constant(_I64, i)], inbounds=True, source_etype=_I64), typ=_I64)
            ok_dims = b.and_(ok_dims, b.icmp_signed("==", di, ir.Constant(_I64, d)))
        dims_end = b.block
        b.branch(done_bb)
        b.position_at_end(done_bb)
        phi = b.phi(ir.IntType(1))
        phi.add_incoming(ir.Constant(ir.IntType(1), 0), entry_bb)
        phi.add_incoming(ir.Constant(ir.IntType(1), 0), fields_end)
        phi.add_incoming(ok_dims, dims_end)
        return phi
    fields_end = b.block
    b.branch(done_bb)
    b.position_at_end(done_bb)
    phi = b.phi(ir.IntType(1))
    phi.add_incoming(ir.Constant(ir.IntType(1), 0), entry_bb)
    phi.add_incoming(ok, fields_end)
    return phi


def emit_list_size(b: ir.IRBuilder, lst: ir.Value) -> ir.Value:
    return _field(b, lst, OFFSET_LIST_SIZE, _I64)


def emit_list_items(b: ir.IRBuilder, lst: ir.Value, count: int) -> list:
    """The first ``count`` item pointers of a Python list (size checked by the caller)."""
    items = _field(b, lst, OFFSET_LIST_ITEMS, _PTR)
    return [b.load(b.gep(items, [ir.Constant(_I64, i)], inbounds=True, source_etype=_PTR), typ=_PTR)
            for i in range(count)]


def emit_data_pointer(b: ir.IRBuilder, obj: ir.Value) -> ir.Value:
    return _field(b, obj, OFFSET_DATA, _PTR)


__all__ = ["CTX_ARENA", "CTX_CONST_BASE", "DTYPES", "context_prefix", "ctx_slot", "descr_slot",
           "emit_array_check", "emit_data_pointer", "emit_list_items", "emit_list_size", "layout_ok"]
