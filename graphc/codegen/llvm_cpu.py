"""LLVM codegen of loop IR (graphc.lowering.loop_ir) for the CPU.

:func:`emit_kernel` turns one :class:`~graphc.lowering.loop_ir.Kernel` into
``void <name>(ptr noalias in0, ..., ptr noalias out0, ...)`` in an
llvmlite module (opaque pointers); :func:`compile_kernels` JIT-compiles
kernels (cached by their text) and :func:`run_kernel` runs one on NumPy
arrays.

Code shape. Every loop is emitted rotated, in LLVM's canonical form
(preheader, header with an ``i64`` induction phi, one latch that is the only
exit), with constant trip counts (blocked and tiled loops below excepted:
their last chunk is shorter), so LoopVectorize handles the contiguous
inner loops; loads and stores are ``inbounds`` GEPs on the element type;
accumulators are SSA values carried by header phis. Float add/mul
reduction updates, and only those, carry ``reassoc nsz`` so the vectorizer
splits them into vector partial sums. Float sums are in addition *blocked*:
a sequential loop whose float sum sees more than ``REDUCTION_BLOCK``
values is split into chunks summed into fresh partials, and the partials
are combined in groups of ``REDUCTION_RADIX`` (a cascade carried by the
chunk loop, the body emitted once), which keeps the rounding error of long
float32 sums at the level of NumPy's pairwise sum. A column reduction (a
parallel loop over results whose inputs are contiguous along it, around a
sequential nest over rows) is interchanged: accumulators become stack
arrays over a tile of columns (``INTERCHANGE_TILE_BYTES`` per array) and
each row updates the whole tile in a contiguous, vectorizable loop.

Scalar semantics are NumPy's (the reference is graphc.lowering.evaluate):

* integers wrap; bool is ``i8`` in memory and ``i1`` in registers;
* comparisons are ordered (false on NaN) except ``not_equal`` (``une``);
* float ``maximum``/``minimum`` (and max/min reductions) propagate NaN
  (``llvm.maximum``/``llvm.minimum``); they order -0.0 below +0.0, where
  NumPy returns one of the two zeros by operand position;
* integer ``floordiv``/``mod`` round toward negative infinity (Python's
  rule); division by zero gives 0 for both, as NumPy's result does (NumPy
  also warns; graphc's interpreter raises); ``INT_MIN // -1`` wraps to
  ``INT_MIN`` like NumPy instead of trapping;
* float ``floordiv``/``mod`` follow NumPy's ``npy_divmod`` exactly
  (``fmod`` then sign fix-up and snapping), including division by zero;
* ``round`` is round-half-to-even (``llvm.roundeven``);
* float → int casts use ``llvm.fptosi.sat``: NaN gives 0 and out-of-range
  values clamp to the integer range, where NumPy on x86 gives INT_MIN for
  all of them (its result is undefined in C); any → bool is ``x != 0``
  (NaN is true);
* integer ``pow`` is exact modulo 2**bits (square-and-multiply); a negative
  exponent gives the truncated ``1 / x**-y`` (1 for x == 1, ±1 for
  x == -1, else 0) where NumPy raises.

Transcendentals go through :func:`emit_math`: graphc.codegen.llvm_math's
vectorizable implementations for the names it supports, LLVM intrinsics or
libm calls otherwise.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import re
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import llvmlite
import llvmlite.ir as ir
import numpy as np

from ..dump import add_timing
from ..errors import CompileError, InvalidArgumentError
from ..lowering import loop_ir as L
from . import jit

__all__ = ["CompiledKernel", "INTERCHANGE_REDUCTIONS", "INTERCHANGE_TILE_BYTES", "REDUCTION_BLOCK",
           "REDUCTION_RADIX", "UNROLL_EXTENT", "USE_LLVM_MATH", "compile_kernel", "compile_kernels",
           "emit_kernel", "emit_math", "kernel_key", "kernel_module", "llvm_type", "memory_type", "run_kernel",
           "split_loop"]

llvmlite.ir_layer_typed_pointers_enabled = False

# Values of one float sum in one vectorized leaf loop; partials are then
# combined REDUCTION_RADIX at a time.
REDUCTION_BLOCK = 4096
REDUCTION_RADIX = 16
# Column reductions (reduced axes outside the contiguous one) keep one
# accumulator per column, for at most INTERCHANGE_TILE_BYTES of each
# accumulator array at a time (tiles of equal width).
INTERCHANGE_REDUCTIONS = True
INTERCHANGE_TILE_BYTES = 32 << 10
# Loops of at most this many iterations are emitted unrolled (LLVM's own
# unroller is off by default, see jit.UNROLL_LOOPS: it costs compile time).
UNROLL_EXTENT = 4
# False: intrinsics/libm calls even where llvm_math has an implementation
# (GRAPHC_LLVM_MATH=0 sets it for a process).
USE_LLVM_MATH = os.environ.get("GRAPHC_LLVM_MATH", "1") not in ("0", "")

_I1 = ir.IntType(1)
_I8 = ir.IntType(8)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_F32 = ir.FloatType()
_F64 = ir.DoubleType()
_PTR = ir.PointerType()
_VOID = ir.VoidType()

_REGISTER = {"float32": _F32, "float64": _F64, "int32": _I32, "int64": _I64, "bool": _I1}
_MEMORY = {"float32": _F32, "float64": _F64, "int32": _I32, "int64": _I64, "bool": _I8}
_REASSOC = ("reassoc", "nsz")


def llvm_type(dtype: np.dtype) -> ir.Type:
    """Register type of a dtype (bool is i1)."""
    try:
        return _REGISTER[np.dtype(dtype).name]
    except KeyError:
        raise CompileError(f"dtype {np.dtype(dtype).name} has no LLVM lowering") from None


def memory_type(dtype: np.dtype) -> ir.Type:
    """In-memory element type of a dtype (bool is i8, like NumPy)."""
    try:
        return _MEMORY[np.dtype(dtype).name]
    except KeyError:
        raise CompileError(f"dtype {np.dtype(dtype).name} has no LLVM lowering") from None


def _is_float(dtype: np.dtype) -> bool:
    return np.dtype(dtype).kind == "f"


def _const(dtype: np.dtype, value: Any) -> ir.Constant:
    dtype = np.dtype(dtype)
    typ = llvm_type(dtype)
    if dtype.kind == "f":
        return ir.Constant(typ, float(value))
    if dtype.kind == "b":
        return ir.Constant(typ, int(bool(value)))
    return ir.Constant(typ, int(value))


# ---------------------------------------------------------------------------
# Intrinsics, libm and the transcendental dispatch
# ---------------------------------------------------------------------------
def _declare(module: ir.Module, name: str, ret: ir.Type, args: Sequence[ir.Type]) -> ir.Function:
    fn = module.globals.get(name)
    if fn is None:
        fn = ir.Function(module, ir.FunctionType(ret, list(args)), name=name)
        if not name.startswith("llvm."):
            # libm without errno, as clang's -fno-math-errno: lets LLVM CSE and hoist calls
            fn.attributes.add("nounwind")
            fn.attributes.add("readnone")
    return fn


def _intrinsic(b: ir.IRBuilder, name: str, args: Sequence[ir.Value]) -> ir.Value:
    """Call ``llvm.<name>.<type suffix>`` on ``args`` (overloaded on, and
    returning, the first argument's type)."""
    typ = args[0].type
    return b.call(_declare(b.module, f"llvm.{name}.{_type_suffix(typ)}", typ, [a.type for a in args]), list(args))


def _type_suffix(typ: ir.Type) -> str:
    if isinstance(typ, ir.VectorType):
        return f"v{typ.count}{_type_suffix(typ.element)}"
    if isinstance(typ, ir.FloatType):
        return "f32"
    if isinstance(typ, ir.DoubleType):
        return "f64"
    return f"i{typ.width}"


# Fallbacks when llvm_math lacks a function: LLVM intrinsics (lowered to
# libm calls except sqrt), or libm itself where LLVM has no intrinsic.
_LIBM = ("log1p", "expm1", "erf", "tanh", "tan")
_INTRINSIC_UNARY = ("exp", "log", "sin", "cos", "sqrt")


def _llvm_math():
    if not USE_LLVM_MATH:
        return None
    try:
        from . import llvm_math
    except ImportError:
        return None
    return llvm_math


def emit_math(b: ir.IRBuilder, name: str, args: Sequence[ir.Value]) -> ir.Value:
    """A float transcendental (or pow) at the builder: llvm_math's inline,
    vectorizable version when it supports ``name``, else an LLVM intrinsic
    or libm call. The one place that chooses, so switching is trivial."""
    lm = _llvm_math()
    if lm is not None:
        if len(args) == 1 and name in lm.SUPPORTED_UNARY:
            return lm.emit_unary(b, name, args[0])
        if len(args) == 2 and name in lm.SUPPORTED_BINARY:
            return lm.emit_binary(b, name, args[0], args[1])
    return _fallback_math(b, name, args)


def _fallback_math(b: ir.IRBuilder, name: str, args: Sequence[ir.Value]) -> ir.Value:
    x = args[0]
    typ = x.type
    one = ir.Constant(typ, 1.0)
    if name in _INTRINSIC_UNARY:
        return _intrinsic(b, name, [x])
    if name in _LIBM:
        sym = name + ("f" if typ == _F32 else "")
        return b.call(_declare(b.module, sym, typ, [typ]), [x])
    if name == "pow":
        return _intrinsic(b, "pow", list(args))
    if name == "rsqrt":
        return b.fdiv(one, _intrinsic(b, "sqrt", [x]))
    if name == "sigmoid":
        # exp(-|x|) never overflows; the same two exact branches as the reference
        e = emit_math(b, "exp", [b.fneg(_intrinsic(b, "fabs", [x]))])
        d = b.fadd(one, e)
        return b.select(b.fcmp_ordered(">=", x, ir.Constant(typ, 0.0)), b.fdiv(one, d), b.fdiv(e, d))
    raise CompileError(f"no LLVM lowering for the float function {name!r}")


# ---------------------------------------------------------------------------
# Scalar operations
# ---------------------------------------------------------------------------
_FLOAT_UNARY_MATH = {"exp", "log", "log1p", "expm1", "sqrt", "rsqrt", "sin", "cos", "tan", "tanh",
                     "sigmoid", "erf"}
_CMP = {"equal": "==", "not_equal": "!=", "less": "<", "less_equal": "<=", "greater": ">",
        "greater_equal": ">="}


def _unary(b: ir.IRBuilder, op: str, x: ir.Value, dtype: np.dtype) -> ir.Value:
    typ = x.type
    if dtype.kind == "f":
        if op in _FLOAT_UNARY_MATH:
            return emit_math(b, op, [x])
        if op == "negative":
            return b.fneg(x)
        if op == "abs":
            return _intrinsic(b, "fabs", [x])
        if op == "square":
            return b.fmul(x, x)
        if op == "reciprocal":
            return b.fdiv(ir.Constant(typ, 1.0), x)
        if op in ("floor", "ceil"):
            return _intrinsic(b, op, [x])
        if op == "round":
            return _intrinsic(b, "roundeven", [x])
        if op == "sign":
            zero = ir.Constant(typ, 0.0)
            # NaN stays NaN, both zeros give +0.0 (np.sign)
            rest = b.select(b.fcmp_unordered("uno", x, x), x, zero)
            rest = b.select(b.fcmp_ordered("<", x, zero), ir.Constant(typ, -1.0), rest)
            return b.select(b.fcmp_ordered(">", x, zero), ir.Constant(typ, 1.0), rest)
    elif dtype.kind in "iu":
        zero = ir.Constant(typ, 0)
        if op == "negative":
            return b.sub(zero, x)
        if op == "abs":
            return _intrinsic(b, "abs", [x, ir.Constant(_I1, 0)])
        if op == "square":
            return b.mul(x, x)
        if op == "sign":
            pos = b.zext(b.icmp_signed(">", x, zero), typ)
            neg = b.zext(b.icmp_signed("<", x, zero), typ)
            return b.sub(pos, neg)
    elif dtype.kind == "b":
        if op == "logical_not":
            return b.xor(x, ir.Constant(_I1, 1))
    raise CompileError(f"no LLVM lowering for {op}({dtype.name})")


def _binary(b: ir.IRBuilder, op: str, x: ir.Value, y: ir.Value, dtype: np.dtype) -> ir.Value:
    """``op(x, y)`` computed in the operands' dtype ``dtype``."""
    if op in _CMP:
        if dtype.kind == "f":
            if op == "not_equal":
                return b.fcmp_unordered("!=", x, y)
            return b.fcmp_ordered(_CMP[op], x, y)
        if dtype.kind == "b":
            if op in ("equal", "not_equal"):
                return b.icmp_unsigned(_CMP[op], x, y)
        else:
            return b.icmp_signed(_CMP[op], x, y)
    if dtype.kind == "f":
        simple = {"add": b.fadd, "subtract": b.fsub, "multiply": b.fmul, "divide": b.fdiv}
        if op in simple:
            return simple[op](x, y)
        if op == "maximum":
            return _intrinsic(b, "maximum", [x, y])
        if op == "minimum":
            return _intrinsic(b, "minimum", [x, y])
        if op == "pow":
            return emit_math(b, "pow", [x, y])
        if op in ("floordiv", "mod"):
            return _float_divmod(b, x, y, want_div=op == "floordiv")
    elif dtype.kind in "iu":
        simple = {"add": b.add, "subtract": b.sub, "multiply": b.mul}
        if op in simple:
            return simple[op](x, y)
        if op == "maximum":
            return _intrinsic(b, "smax", [x, y])
        if op == "minimum":
            return _intrinsic(b, "smin", [x, y])
        if op in ("floordiv", "mod"):
            return _int_divmod(b, x, y, want_div=op == "floordiv")
        if op == "pow":
            return _int_pow(b, x, y)
    elif dtype.kind == "b":
        if op == "logical_and":
            return b.and_(x, y)
        if op == "logical_or":
            return b.or_(x, y)
    raise CompileError(f"no LLVM lowering for {op}({dtype.name}, {dtype.name})")


def _float_divmod(b: ir.IRBuilder, a: ir.Value, d: ir.Value, want_div: bool) -> ir.Value:
    """NumPy's npy_divmod / npy_floor_divide / npy_remainder, branch-free."""
    typ = a.type
    zero, one, half = ir.Constant(typ, 0.0), ir.Constant(typ, 1.0), ir.Constant(typ, 0.5)
    mod = b.frem(a, d)                                  # C fmod
    div = b.fdiv(b.fsub(a, mod), d)
    # Python's sign convention: the remainder takes the divisor's sign
    fix = b.and_(b.fcmp_unordered("!=", mod, zero),
                 b.icmp_unsigned("!=", b.fcmp_ordered("<", d, zero), b.fcmp_ordered("<", mod, zero)))
    mod_fixed = b.select(fix, b.fadd(mod, d), mod)
    div = b.select(fix, b.fsub(div, one), div)
    mod_fixed = b.select(b.fcmp_ordered("==", mod, zero), _intrinsic(b, "copysign", [zero, d]), mod_fixed)
    if not want_div:
        # npy_remainder: plain fmod when the divisor is zero
        return b.select(b.fcmp_ordered("==", d, zero), mod, mod_fixed)
    floor = _intrinsic(b, "floor", [div])
    floor = b.select(b.fcmp_ordered(">", b.fsub(div, floor), half), b.fadd(floor, one), floor)
    quotient = b.fdiv(a, d)
    floor = b.select(b.fcmp_ordered("==", div, zero), _intrinsic(b, "copysign", [zero, quotient]), floor)
    return b.select(b.fcmp_ordered("==", d, zero), quotient, floor)


def _int_divmod(b: ir.IRBuilder, a: ir.Value, d: ir.Value, want_div: bool) -> ir.Value:
    """Floor division / modulo with Python's signs; d == 0 gives 0 and
    INT_MIN // -1 wraps, with no trapping division ever executed."""
    typ = a.type
    zero, one, minus_one = ir.Constant(typ, 0), ir.Constant(typ, 1), ir.Constant(typ, -1)
    d_zero = b.icmp_signed("==", d, zero)
    d_m1 = b.icmp_signed("==", d, minus_one)
    safe = b.select(b.or_(d_zero, d_m1), one, d)
    q = b.sdiv(a, safe)
    r = b.srem(a, safe)
    fix = b.and_(b.icmp_signed("!=", r, zero),
                 b.icmp_unsigned("!=", b.icmp_signed("<", r, zero), b.icmp_signed("<", d, zero)))
    if want_div:
        q = b.select(fix, b.sub(q, one), q)
        q = b.select(d_m1, b.sub(zero, a), q)
        return b.select(d_zero, zero, q)
    r = b.select(fix, b.add(r, d), r)
    return b.select(b.or_(d_zero, d_m1), zero, r)


def _int_pow(b: ir.IRBuilder, base: ir.Value, exp: ir.Value) -> ir.Value:
    """x**y by square-and-multiply (a small loop over y's bits)."""
    typ = base.type
    zero, one = ir.Constant(typ, 0), ir.Constant(typ, 1)
    fn = b.function
    pre = b.block
    negative = b.icmp_signed("<", exp, zero)
    e0 = b.select(negative, zero, exp)
    head = fn.append_basic_block("ipow.head")
    body = fn.append_basic_block("ipow.body")
    done = fn.append_basic_block("ipow.done")
    b.branch(head)
    b.position_at_end(head)
    acc = b.phi(typ)
    sq = b.phi(typ)
    e = b.phi(typ)
    b.cbranch(b.icmp_signed("!=", e, zero), body, done)
    b.position_at_end(body)
    odd = b.icmp_signed("!=", b.and_(e, one), zero)
    acc_next = b.select(odd, b.mul(acc, sq), acc)
    sq_next = b.mul(sq, sq)
    e_next = b.lshr(e, one)
    b.branch(head)
    for phi, start, nxt in ((acc, one, acc_next), (sq, base, sq_next), (e, e0, e_next)):
        phi.add_incoming(start, pre)
        phi.add_incoming(nxt, body)
    b.position_at_end(done)
    # negative exponents: the truncated 1 / x**-y
    odd_exp = b.icmp_signed("!=", b.and_(exp, one), zero)
    minus_one_pow = b.select(odd_exp, ir.Constant(typ, -1), one)
    neg_result = b.select(b.icmp_signed("==", base, one), one,
                          b.select(b.icmp_signed("==", base, ir.Constant(typ, -1)), minus_one_pow, zero))
    return b.select(negative, neg_result, acc)


def _cast(b: ir.IRBuilder, x: ir.Value, src: np.dtype, dst: np.dtype) -> ir.Value:
    if src == dst:
        return x
    to = llvm_type(dst)
    if dst.kind == "b":
        if src.kind == "f":
            return b.fcmp_unordered("!=", x, ir.Constant(x.type, 0.0))
        return b.icmp_signed("!=", x, ir.Constant(x.type, 0))
    if src.kind == "b":
        return b.uitofp(x, to) if dst.kind == "f" else b.zext(x, to)
    if src.kind == "f" and dst.kind == "f":
        return b.fpext(x, to) if dst.itemsize > src.itemsize else b.fptrunc(x, to)
    if src.kind == "f":
        fn = _declare(b.module, f"llvm.fptosi.sat.{_type_suffix(to)}.{_type_suffix(x.type)}", to, [x.type])
        return b.call(fn, [x])
    if dst.kind == "f":
        return b.sitofp(x, to)
    if dst.itemsize > src.itemsize:
        return b.sext(x, to)
    return b.trunc(x, to)


# ---------------------------------------------------------------------------
# Static checks: every index stays inside its buffer
# ---------------------------------------------------------------------------
def _bounds(e: L.IExpr, ranges: Dict[str, Tuple[int, int]]) -> Tuple[int, int]:
    if isinstance(e, L.IConst):
        return e.value, e.value
    if isinstance(e, L.IVar):
        if e.name not in ranges:
            raise CompileError(f"index variable {e.name} is used outside its loop")
        return ranges[e.name]
    if isinstance(e, L.IndexOf):
        # a loaded value may be anything its dtype holds: only a clamp bounds it
        return _dtype_range(_expr_dtype(e.x))
    (alo, ahi), (blo, bhi) = _bounds(e.a, ranges), _bounds(e.b, ranges)
    if e.op == "+":
        return alo + blo, ahi + bhi
    if e.op == "min":
        return min(alo, blo), min(ahi, bhi)
    if e.op == "max":
        return max(alo, blo), max(ahi, bhi)
    if e.op == "*":
        products = (alo * blo, alo * bhi, ahi * blo, ahi * bhi)
        return min(products), max(products)
    if blo <= 0 <= bhi:
        raise CompileError(f"index expression {e} may divide by zero")
    if e.op == "//":
        quotients = (alo // blo, alo // bhi, ahi // blo, ahi // bhi)
        return min(quotients), max(quotients)
    if e.op == "%":
        if blo > 0 and alo >= 0:
            return 0, min(ahi, bhi - 1)
        m = max(abs(blo), abs(bhi))
        return -m + 1, m - 1
    raise CompileError(f"unknown index operator {e.op!r}")


def _dtype_range(dtype: np.dtype) -> Tuple[int, int]:
    """Every value an index read from a scalar of ``dtype`` can have."""
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return 0, 1
    if dtype.kind not in "iu":
        raise CompileError(f"an index cannot be read from a {dtype.name} value")
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def _nonnegative(e: L.IExpr) -> bool:
    """True when every constant in ``e`` is >= 0 (loop variables always are),
    so ``//`` and ``%`` can be unsigned."""
    if isinstance(e, L.IConst):
        return e.value >= 0
    if isinstance(e, L.IVar):
        return True
    if isinstance(e, L.IndexOf):
        return False        # a loaded value may be negative
    return _nonnegative(e.a) and _nonnegative(e.b)


# ---------------------------------------------------------------------------
# Reduction blocking: which accumulators a loop sums, and how many values
# ---------------------------------------------------------------------------
def _scan(stmts: Sequence[L.Stmt], inits: Set[str], float_adds: Set[str], others: Set[str],
          refs: Set[str]) -> None:
    for s in stmts:
        if isinstance(s, L.Loop):
            _scan(s.body, inits, float_adds, others, refs)
        elif isinstance(s, L.AccInit):
            inits.add(s.name)
        elif isinstance(s, L.AccUpdate):
            _expr_refs(s.value, refs)
            (float_adds if s.op == "add" else others).add(s.name)
        elif isinstance(s, L.Store):
            _expr_refs(s.value, refs)


def _expr_refs(e: L.Expr, refs: Set[str]) -> None:
    if isinstance(e, L.AccRef):
        refs.add(e.name)
    for child in ("x", "y", "cond"):
        sub = getattr(e, child, None)
        if sub is not None:
            _expr_refs(sub, refs)


def _updates_per_iteration(stmts: Sequence[L.Stmt], name: str) -> int:
    count = 0
    for s in stmts:
        if isinstance(s, L.Loop):
            count += s.extent * _updates_per_iteration(s.body, name)
        elif isinstance(s, L.AccUpdate) and s.name == name:
            count += 1
    return count


def _assigned_in(stmts: Sequence[L.Stmt], out: Set[str]) -> Set[str]:
    for s in stmts:
        if isinstance(s, L.Loop):
            _assigned_in(s.body, out)
        elif isinstance(s, (L.AccInit, L.AccUpdate)):
            out.add(s.name)
    return out


# ---------------------------------------------------------------------------
# Reduction interchange: column reductions run rows outside, columns inside
# ---------------------------------------------------------------------------
def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _stride(e: L.IExpr, var: str) -> Optional[int]:
    """Coefficient of ``var`` in ``e`` when ``e`` is affine in it, else None."""
    if isinstance(e, L.IConst):
        return 0
    if isinstance(e, L.IVar):
        return int(e.name == var)
    if isinstance(e, L.IndexOf):
        return None         # data-dependent
    sa, sb = _stride(e.a, var), _stride(e.b, var)
    if sa is None or sb is None:
        return None
    if e.op == "+":
        return sa + sb
    if e.op == "*":
        if sa == 0 and sb == 0:
            return 0
        if isinstance(e.b, L.IConst):
            return sa * e.b.value
        if isinstance(e.a, L.IConst):
            return sb * e.a.value
        return None
    return 0 if sa == 0 and sb == 0 else None


def _accesses(stmts: Sequence[L.Stmt], out: List[L.IExpr]) -> List[L.IExpr]:
    def visit(e: L.Expr) -> None:
        if isinstance(e, L.Load):
            out.append(e.index)
        for child in ("x", "y", "cond"):
            sub = getattr(e, child, None)
            if sub is not None:
                visit(sub)
    for s in stmts:
        if isinstance(s, L.Store):
            out.append(s.index)
            visit(s.value)
        elif isinstance(s, L.AccUpdate):
            visit(s.value)
    return out


def _interchange_plan(loop: L.Loop):
    """(inits, sequential nest, innermost statements, final stores) when
    ``loop`` is a parallel loop whose body is AccInits, one perfect nest of
    sequential loops updating them, then stores; and its accesses are
    contiguous along ``loop`` but not along the nest's innermost loop."""
    if not loop.parallel or loop.extent < 2:
        return None
    body = list(loop.body)
    inits = []
    while body and isinstance(body[0], L.AccInit):
        inits.append(body.pop(0))
    if not inits or not body or not isinstance(body[0], L.Loop) or body[0].parallel:
        return None
    nest = [body.pop(0)]
    finals = body
    if not all(isinstance(s, L.Store) for s in finals):
        return None
    inner = nest[0].body
    while len(inner) == 1 and isinstance(inner[0], L.Loop) and not inner[0].parallel:
        nest.append(inner[0])
        inner = inner[0].body
    names = {s.name for s in inits}
    refs: Set[str] = set()
    for s in inner:
        if isinstance(s, L.Loop) or isinstance(s, L.AccInit):
            return None
        if isinstance(s, L.AccUpdate) and s.name not in names:
            return None
        _expr_refs(s.value, refs)
    if refs or any(lp.extent <= 0 for lp in nest):
        return None
    # Only accesses that move with both loops decide: one indexed by the rows
    # alone (a per-row scale) is invariant in the interchanged inner loop.
    indices = [i for i in _accesses(inner, []) if _stride(i, loop.var) != 0 and _stride(i, nest[-1].var) != 0]
    along_loop = sum(_stride(i, loop.var) == 1 for i in indices)
    along_rows = sum(_stride(i, nest[-1].var) == 1 for i in indices)
    if along_loop <= along_rows:
        return None
    return inits, nest, inner, finals


# ---------------------------------------------------------------------------
# The kernel emitter
# ---------------------------------------------------------------------------
class _KernelEmitter:
    def __init__(self, module: ir.Module, kernel: L.Kernel, fn: ir.Function,
                 buffers: Dict[str, Tuple[ir.Value, np.dtype, int]]) -> None:
        self.module = module
        self.kernel = kernel
        self.fn = fn
        self.buffers = buffers
        self.b = ir.IRBuilder(fn.append_basic_block("entry"))
        self.vars: Dict[str, ir.Value] = {}
        self.ranges: Dict[str, Tuple[int, int]] = {}
        self.accs: Dict[str, Tuple[ir.Value, np.dtype]] = {}
        self.memo: Dict[Tuple[type, int], Tuple[L.Expr, ir.Value]] = {}
        # (loop, begin, end): run only iterations [begin, end) of that loop
        self.split: Optional[Tuple[L.Loop, ir.Value, ir.Value]] = None

    def fail(self, why: str) -> CompileError:
        return CompileError(f"kernel {self.kernel.name}: {why}")

    # ---- statements ------------------------------------------------------
    def stmts(self, stmts: Sequence[L.Stmt]) -> None:
        # Stores of one block are issued after every value of the block is
        # computed: a kernel may then write an output over an input it reads
        # at the same index (the memory plan's in-place writes), even when a
        # later statement of the block reads that input again.
        pending: List[Tuple[ir.Value, ir.Value]] = []
        for s in stmts:
            if isinstance(s, L.Loop):
                self.flush(pending)
                self.loop(s)
            elif isinstance(s, L.Store):
                pending.append(self.store_value(s))
            elif isinstance(s, L.AccInit):
                self.accs[s.name] = (_const(s.dtype, s.value), np.dtype(s.dtype))
            elif isinstance(s, L.AccUpdate):
                self.acc_update(s)
            else:
                raise self.fail(f"unknown loop IR statement {s!r}")
        self.flush(pending)

    def flush(self, pending: List[Tuple[ir.Value, ir.Value]]) -> None:
        for value, address in pending:
            self.b.store(value, address)
        pending.clear()

    def store_value(self, s: L.Store) -> Tuple[ir.Value, ir.Value]:
        """The value ``s`` stores (in memory type) and its address."""
        ptr, dtype, size = self.buffer(s.buffer)
        if s.buffer not in {p.name for p in self.kernel.outputs}:
            raise self.fail(f"stores into {s.buffer}, which is not an output")
        self.memo = {}
        value = self.expr(s.value)
        if value.type != llvm_type(dtype):
            raise self.fail(f"stores a {value.type} into {s.buffer} ({dtype.name})")
        if dtype.kind == "b":
            value = self.b.zext(value, _I8)
        return value, self.address(s.buffer, s.index)

    def acc_update(self, s: L.AccUpdate) -> None:
        if s.name not in self.accs:
            raise self.fail(f"accumulator {s.name} is updated before its AccInit")
        acc, dtype = self.accs[s.name]
        self.memo = {}
        v = self.expr(s.value)
        try:
            new = combine_values(self.b, s.op, dtype, acc, v)
        except ValueError as exc:
            raise self.fail(str(exc)) from None
        self.accs[s.name] = (new, dtype)

    # ---- loops -----------------------------------------------------------
    def loop(self, loop: L.Loop) -> None:
        if loop.extent <= 0:
            return
        assigned = _assigned_in(loop.body, set())
        saved_range = self.ranges.get(loop.var)
        self.ranges[loop.var] = (0, loop.extent - 1)
        blocked = self.blocked_accs(loop)
        plan = _interchange_plan(loop) if INTERCHANGE_REDUCTIONS else None
        if self.split is not None and self.split[0] is loop:
            begin, end = self.split[1], self.split[2]
            self.counted_loop(loop.var, begin, self.b.sub(end, begin), lambda _: self.stmts(loop.body), assigned)
        elif plan is not None:
            self.interchanged(loop, *plan)
        elif not blocked:
            self.counted_loop(loop.var, None, loop.extent, lambda _: self.stmts(loop.body), assigned)
        else:
            per_iter = max(_updates_per_iteration(loop.body, a) for a in blocked)
            leaf = max(1, REDUCTION_BLOCK // max(per_iter, 1))
            self.chunked(loop, blocked, assigned, leaf)
        if saved_range is None:
            self.ranges.pop(loop.var, None)
        else:
            self.ranges[loop.var] = saved_range

    def blocked_accs(self, loop: L.Loop) -> List[str]:
        """Float-sum accumulators of an enclosing scope that ``loop`` adds
        more than REDUCTION_BLOCK values into (and only adds to, and does
        not read): they are summed in blocks."""
        if loop.parallel:
            return []
        inits: Set[str] = set()
        adds: Set[str] = set()
        others: Set[str] = set()
        refs: Set[str] = set()
        _scan(loop.body, inits, adds, others, refs)
        names = []
        for name in sorted(adds - inits - others - refs):
            if name in self.accs and _is_float(self.accs[name][1]):
                if loop.extent * _updates_per_iteration(loop.body, name) > REDUCTION_BLOCK:
                    names.append(name)
        return names

    def chunked(self, loop: L.Loop, accs: List[str], assigned: Set[str], leaf: int) -> None:
        """``loop`` in chunks of ``leaf`` iterations, each summed into fresh
        partials of ``accs``; the partials are combined REDUCTION_RADIX at a
        time through level sums carried by the chunk loop (a cascade: every
        sum adds at most REDUCTION_RADIX terms). The body is emitted once;
        the last chunk is shorter when ``leaf`` does not divide the extent."""
        extent, radix = loop.extent, REDUCTION_RADIX
        if radix < 2 or radix & (radix - 1):
            raise CompileError("REDUCTION_RADIX must be a power of two")
        chunks = _ceil_div(extent, leaf)
        levels = 1
        while radix ** levels < chunks:
            levels += 1
        level_names = {a: [f"{a}.level{j}" for j in range(1, levels)] for a in accs}
        for a in accs:
            dtype = self.accs[a][1]
            for name in level_names[a]:
                self.accs[name] = (_const(dtype, 0), dtype)
        chunk_var = f"{loop.var}.chunk"
        b = self.b

        def chunk(c: ir.Value) -> None:
            start = b.mul(c, ir.Constant(_I64, leaf), flags=("nuw", "nsw"))
            count = self.block_count(c, leaf, extent)
            totals = {a: self.accs[a] for a in accs}
            for a in accs:
                self.accs[a] = (_const(totals[a][1], 0), totals[a][1])
            self.counted_loop(loop.var, start, count, lambda _: self.stmts(loop.body), assigned)
            done = b.add(c, ir.Constant(_I64, 1), flags=("nuw", "nsw"))
            for a in accs:
                dtype = totals[a][1]
                chain = [self.accs[n][0] for n in level_names[a]] + [totals[a][0]]
                carry = self.accs[a][0]
                value = b.fadd(chain[0], carry)
                for j in range(1, levels):
                    flush = b.icmp_unsigned("==", b.and_(done, ir.Constant(_I64, radix ** j - 1)),
                                            ir.Constant(_I64, 0))
                    chain[j] = b.select(flush, b.fadd(chain[j], value), chain[j])
                    self.accs[level_names[a][j - 1]] = (b.select(flush, _const(dtype, 0), value), dtype)
                    value = chain[j]
                self.accs[a] = (value, dtype)

        self.counted_loop(chunk_var, None, chunks, chunk, assigned | {n for ns in level_names.values() for n in ns})
        for a in accs:
            dtype = self.accs[a][1]
            total = self.accs[a][0]
            for name in reversed(level_names[a]):
                total = b.fadd(total, self.accs.pop(name)[0])
            self.accs[a] = (total, dtype)

    def interchanged(self, loop: L.Loop, inits: List[L.AccInit], nest: List[L.Loop], inner: Sequence[L.Stmt],
                     finals: Sequence[L.Stmt]) -> None:
        """A parallel loop over reduction results whose inputs are contiguous
        along it (a column reduction), emitted with the reduction outside:
        accumulators become stack arrays over a tile of the parallel loop and
        the sequential nest runs over rows, updating a whole tile per row (a
        contiguous, vectorizable inner loop). Float sums over more than
        REDUCTION_BLOCK rows add each chunk of rows into partial arrays
        first, then the partials into the totals."""
        b = self.b
        extent = loop.extent
        dtypes = {s.name: np.dtype(s.dtype) for s in inits}
        widest = max(16, INTERCHANGE_TILE_BYTES // max(d.itemsize for d in dtypes.values()))
        # tiles of equal width (a multiple of 16), the last one maybe shorter
        tile = min(extent, _ceil_div(_ceil_div(extent, _ceil_div(extent, widest)), 16) * 16)
        tiles = _ceil_div(extent, tile)
        rows = int(np.prod([lp.extent for lp in nest], dtype=np.int64))
        blocked = [s.name for s in inits if dtypes[s.name].kind == "f" and rows > REDUCTION_BLOCK
                   and all(u.op == "add" for u in inner if isinstance(u, L.AccUpdate) and u.name == s.name)]
        totals = {n: self.entry_array(memory_type(d), tile, f"{n}.tile") for n, d in dtypes.items()}
        partials = {n: self.entry_array(memory_type(dtypes[n]), tile, f"{n}.part") for n in blocked}
        updated = {n: partials.get(n, totals[n]) for n in totals}      # what the row loop accumulates into
        saved_accs = dict(self.accs)

        def tile_body(t: Optional[ir.Value]) -> None:
            base = None if t is None else b.mul(t, ir.Constant(_I64, tile), flags=("nuw", "nsw"))
            count = tile if t is None else self.block_count(t, tile, extent)

            def over_tile(body: Callable[[ir.Value], None]) -> None:
                self.counted_loop(loop.var, base, count, body, set())
                self.accs = dict(saved_accs)

            def fill(arrays: Dict[str, ir.AllocaInstr], value: Callable[[str, ir.Value], ir.Value]) -> None:
                over_tile(lambda p: [self.array_store(arr, p, dtypes[n], value(n, p)) for n, arr in arrays.items()])

            def update(p: ir.Value) -> None:
                for name, arr in updated.items():
                    self.accs[name] = (self.array_load(arr, p, dtypes[name]), dtypes[name])
                self.stmts(inner)
                for name, arr in updated.items():
                    self.array_store(arr, p, dtypes[name], self.accs[name][0])

            def row_nest(levels: List[L.Loop], first: Optional[ir.Value] = None, first_count: Any = None) -> None:
                if not levels:
                    over_tile(update)
                    return
                lp = levels[0]
                self.counted_loop(lp.var, first, lp.extent if first_count is None else first_count,
                                  lambda _: row_nest(levels[1:]), set())

            initial = {s.name: _const(s.dtype, s.value) for s in inits}
            fill(totals, lambda n, p: initial[n])
            saved_ranges = dict(self.ranges)
            for lp in nest:
                self.ranges[lp.var] = (0, lp.extent - 1)
            if not blocked:
                row_nest(nest)
            else:
                outer = nest[0]
                chunk = max(1, REDUCTION_BLOCK // (rows // outer.extent))

                def one_chunk(c: ir.Value) -> None:
                    fill(partials, lambda n, p: _const(dtypes[n], 0))
                    row_nest(nest, b.mul(c, ir.Constant(_I64, chunk), flags=("nuw", "nsw")),
                             self.block_count(c, chunk, outer.extent))
                    fill({n: totals[n] for n in blocked},
                         lambda n, p: b.fadd(self.array_load(totals[n], p, dtypes[n]),
                                             self.array_load(partials[n], p, dtypes[n])))

                self.counted_loop(f"{outer.var}.chunk", None, _ceil_div(outer.extent, chunk), one_chunk, set())
            self.ranges = saved_ranges

            def final(p: ir.Value) -> None:
                for name, arr in totals.items():
                    self.accs[name] = (self.array_load(arr, p, dtypes[name]), dtypes[name])
                self.stmts(finals)

            over_tile(final)

        if tiles == 1:
            tile_body(None)
        else:
            self.counted_loop(f"{loop.var}.tile", None, tiles, tile_body, set())
        self.accs = saved_accs

    def entry_array(self, typ: ir.Type, n: int, name: str) -> ir.AllocaInstr:
        """A stack array of ``n`` ``typ`` allocated once, in the entry block."""
        entry = self.fn.entry_basic_block
        b = ir.IRBuilder(entry)
        if entry.instructions:
            b.position_before(entry.instructions[0])
        slot = b.alloca(typ, size=ir.Constant(_I64, n), name=name)
        slot.align = 64
        if self.b.block is entry:
            # llvmlite builders insert at an index: move past the new alloca
            self.b.position_at_end(entry)
        return slot

    def _array_slot(self, arr: ir.AllocaInstr, i: ir.Value) -> ir.Value:
        return self.b.gep(arr, [i], inbounds=True, source_etype=arr.allocated_type)

    def array_load(self, arr: ir.AllocaInstr, i: ir.Value, dtype: np.dtype) -> ir.Value:
        v = self.b.load(self._array_slot(arr, i), typ=memory_type(dtype))
        return self.b.icmp_unsigned("!=", v, ir.Constant(_I8, 0)) if dtype.kind == "b" else v

    def array_store(self, arr: ir.AllocaInstr, i: ir.Value, dtype: np.dtype, value: ir.Value) -> None:
        if dtype.kind == "b":
            value = self.b.zext(value, _I8)
        self.b.store(value, self._array_slot(arr, i))

    def block_count(self, i: ir.Value, size: int, total: int) -> Any:
        """Iterations in block ``i`` of ``total`` split into blocks of
        ``size``: ``size``, or what is left in the last block."""
        if total % size == 0:
            return size
        last = self.b.icmp_unsigned("==", i, ir.Constant(_I64, _ceil_div(total, size) - 1))
        return self.b.select(last, ir.Constant(_I64, total % size), ir.Constant(_I64, size))

    def unrolled(self, var: str, base: Optional[ir.Value], count: int, body: Callable[[ir.Value], None]) -> None:
        """A loop of at most UNROLL_EXTENT iterations as straight-line code,
        so the loop around it becomes the innermost, vectorizable one."""
        saved_var = self.vars.get(var)
        for i in range(count):
            iv = ir.Constant(_I64, i)
            self.vars[var] = iv if base is None else self.b.add(base, iv, flags=("nuw", "nsw"))
            body(iv)
        if saved_var is None:
            self.vars.pop(var, None)
        else:
            self.vars[var] = saved_var

    def counted_loop(self, var: str, base: Optional[ir.Value], count: Any, body: Callable[[ir.Value], None],
                     assigned: Set[str]) -> None:
        """``for var in base + [0, count)``, rotated: preheader → header (phis)
        → body → latch (the only exit). ``count`` is an int or an i64 value
        known to be >= 1; ``body`` gets the induction variable (counting from
        0). Accumulators live before the loop and assigned in it get header
        phis."""
        if isinstance(count, int):
            if count <= 0:
                return
            if count <= UNROLL_EXTENT:
                self.unrolled(var, base, count, body)
                return
            count = ir.Constant(_I64, count)
        b = self.b
        pre = b.block
        header = self.fn.append_basic_block(f"{var}.loop")
        b.branch(header)
        b.position_at_end(header)
        iv = b.phi(_I64, name=var)
        iv.add_incoming(ir.Constant(_I64, 0), pre)
        carried = {}
        for name in sorted(assigned):
            if name in self.accs:
                value, dtype = self.accs[name]
                phi = b.phi(value.type, name=f"{name}.{var}")
                phi.add_incoming(value, pre)
                carried[name] = phi
                self.accs[name] = (phi, dtype)
        saved_var = self.vars.get(var)
        self.vars[var] = iv if base is None else b.add(base, iv, flags=("nuw", "nsw"))
        body(iv)
        latch = self.fn.append_basic_block(f"{var}.latch")
        b.branch(latch)
        b.position_at_end(latch)
        nxt = b.add(iv, ir.Constant(_I64, 1), flags=("nuw", "nsw"))
        exit_block = self.fn.append_basic_block(f"{var}.exit")
        b.cbranch(b.icmp_unsigned("<", nxt, count), header, exit_block)
        iv.add_incoming(nxt, latch)
        for name, phi in carried.items():
            phi.add_incoming(self.accs[name][0], latch)
        b.position_at_end(exit_block)
        if saved_var is None:
            self.vars.pop(var, None)
        else:
            self.vars[var] = saved_var

    # ---- expressions -----------------------------------------------------
    def buffer(self, name: str) -> Tuple[ir.Value, np.dtype, int]:
        if name not in self.buffers:
            raise self.fail(f"reads or writes unknown buffer {name!r}")
        return self.buffers[name]

    def address(self, name: str, index: L.IExpr) -> ir.Value:
        ptr, dtype, size = self.buffer(name)
        lo, hi = _bounds(index, self.ranges)
        if lo < 0 or hi >= size:
            raise self.fail(f"index {index} of {name} ranges over [{lo}, {hi}], outside its {size} elements")
        return self.b.gep(ptr, [self.index(index)], inbounds=True, source_etype=memory_type(dtype))

    def index(self, e: L.IExpr) -> ir.Value:
        b = self.b
        if isinstance(e, L.IConst):
            return ir.Constant(_I64, e.value)
        if isinstance(e, L.IVar):
            return self.vars[e.name]
        if isinstance(e, L.IndexOf):
            dtype = _expr_dtype(e.x)
            _dtype_range(dtype)
            v = self.expr(e.x)
            if v.type == _I64:
                return v
            return b.zext(v, _I64) if dtype.kind in "bu" else b.sext(v, _I64)
        x, y = self.index(e.a), self.index(e.b)
        if e.op in ("min", "max"):
            return _intrinsic(b, "smin" if e.op == "min" else "smax", [x, y])
        unsigned = _nonnegative(e)
        if e.op == "+":
            return b.add(x, y, flags=("nuw", "nsw") if unsigned else ())
        if e.op == "*":
            return b.mul(x, y, flags=("nuw", "nsw") if unsigned else ())
        if unsigned:
            return b.udiv(x, y) if e.op == "//" else b.urem(x, y)
        return _int_divmod(b, x, y, want_div=e.op == "//")

    def expr(self, e: L.Expr) -> ir.Value:
        # Within one statement every subexpression is evaluated at one point,
        # so equal subtrees (the lowering repeats shared values) are emitted once.
        key = (type(e), id(e))
        hit = self.memo.get(key)
        if hit is not None:
            return hit[1]
        try:
            value = self._expr(e)
        except CompileError as exc:
            if str(exc).startswith(f"kernel {self.kernel.name}:"):
                raise
            raise self.fail(str(exc)) from None
        if value.type != llvm_type(e.dtype):
            raise self.fail(f"{e} is declared {np.dtype(e.dtype).name} but computes {value.type}")
        self.memo[key] = (e, value)      # keeps e alive so its id stays unique
        return value

    def _expr(self, e: L.Expr) -> ir.Value:
        b = self.b
        if isinstance(e, L.Const):
            return _const(e.dtype, e.value)
        if isinstance(e, L.Load):
            ptr, dtype, _ = self.buffer(e.buffer)
            if np.dtype(e.dtype) != dtype:
                raise self.fail(f"loads {e.buffer} ({dtype.name}) as {np.dtype(e.dtype).name}")
            v = b.load(self.address(e.buffer, e.index), typ=memory_type(dtype))
            return b.icmp_unsigned("!=", v, ir.Constant(_I8, 0)) if dtype.kind == "b" else v
        if isinstance(e, L.AccRef):
            if e.name not in self.accs:
                raise self.fail(f"reads accumulator {e.name} before its AccInit")
            return self.accs[e.name][0]
        if isinstance(e, L.Unary):
            return _unary(b, e.op, self.expr(e.x), _expr_dtype(e.x))
        if isinstance(e, L.Binary):
            xd, yd = _expr_dtype(e.x), _expr_dtype(e.y)
            if xd != yd:
                raise self.fail(f"{e.op} of {xd.name} and {yd.name}: operands must have one dtype")
            return _binary(b, e.op, self.expr(e.x), self.expr(e.y), xd)
        if isinstance(e, L.Select):
            return b.select(self.expr(e.cond), self.expr(e.x), self.expr(e.y))
        if isinstance(e, L.Cast):
            return _cast(b, self.expr(e.x), _expr_dtype(e.x), np.dtype(e.dtype))
        if isinstance(e, L.IndexValue):
            # i64 index → the dtype, wrapping like astype
            return _cast(b, self.index(e.index), np.dtype(np.int64), np.dtype(e.dtype))
        if isinstance(e, L.InRange):
            i = self.index(e.index)
            return b.and_(b.icmp_signed(">=", i, ir.Constant(_I64, e.lo)),
                          b.icmp_signed("<", i, ir.Constant(_I64, e.hi)))
        raise self.fail(f"unknown loop IR expression {e!r}")


def _expr_dtype(e: L.Expr) -> np.dtype:
    return np.dtype(e.dtype)


# ---------------------------------------------------------------------------
# Public emitter
# ---------------------------------------------------------------------------
def _symbol(module: ir.Module, name: str) -> str:
    # The "graphc." prefix is no C identifier, so a kernel named like a libm
    # function ("cos") never captures the calls LLVM emits for intrinsics.
    base = "graphc." + (re.sub(r"[^A-Za-z0-9_]", "_", name) or "kernel")
    candidate, n = base, 1
    while candidate in module.globals:
        candidate = f"{base}.{n}"
        n += 1
    return candidate


_HEX_ESCAPES = np.array([list(f"\\{i:02X}".encode()) for i in range(256)], dtype=np.uint8)


class _BytesConstant(ir.Constant):
    """An ``[N x i8]`` constant whose ``c"..."`` text NumPy writes (llvmlite
    escapes byte by byte in Python: ~0.4 s for 4 MB; this takes ~20 ms)."""

    def __init__(self, data: bytes) -> None:
        super().__init__(ir.ArrayType(_I8, len(data)), None)
        self._data = data

    def _get_reference(self) -> str:
        escaped = _HEX_ESCAPES[np.frombuffer(self._data, dtype=np.uint8)].tobytes()
        return 'c"' + escaped.decode("ascii") + '"'


def _constant_global(module: ir.Module, name: str, value: np.ndarray) -> ir.GlobalVariable:
    data = np.ascontiguousarray(value)
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    init = _BytesConstant(data.tobytes())
    g = ir.GlobalVariable(module, init.type, name=_symbol(module, name))
    g.global_constant = True
    g.linkage = "internal"
    g.unnamed_addr = True
    g.align = 64
    g.initializer = init
    return g


def combine_values(b: ir.IRBuilder, op: str, dtype: np.dtype, acc: ir.Value, v: ir.Value) -> ir.Value:
    """``acc <op> v`` as an accumulator update does it (``op`` one of
    loop_ir.ACC_OPS) for values of ``dtype``: also how the GPU's block
    reductions combine partial results. ValueError for an op the dtype has
    not."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        if op == "add":
            return b.fadd(acc, v, flags=_REASSOC)
        if op == "mul":
            return b.fmul(acc, v, flags=_REASSOC)
        if op in ("max", "min"):
            return _intrinsic(b, "maximum" if op == "max" else "minimum", [acc, v])
    elif dtype.kind in "iu":
        if op == "add":
            return b.add(acc, v)
        if op == "mul":
            return b.mul(acc, v)
        if op in ("max", "min"):
            return _intrinsic(b, ("s" if dtype.kind == "i" else "u") + op, [acc, v])
    else:
        # bools (i1 in registers, i8 in memory: both 0/1)
        ops = {"and": b.and_, "or": b.or_, "max": b.or_, "min": b.and_}
        if op in ops:
            return ops[op](acc, v)
    raise ValueError(f"accumulator op {op!r} on {dtype.name}")


def split_loop(kernel: L.Kernel) -> Optional[L.Loop]:
    """The loop a kernel can be split over threads by: its body is one
    parallel loop (not a column reduction, which is interchanged)."""
    if len(kernel.body) != 1 or not isinstance(kernel.body[0], L.Loop):
        return None
    loop = kernel.body[0]
    if not loop.parallel or loop.extent < 2:
        return None
    if INTERCHANGE_REDUCTIONS and _interchange_plan(loop) is not None:
        return None
    return loop


def emit_kernel(module: ir.Module, kernel: L.Kernel, *, noalias: bool = True,
                symbol: Optional[str] = None, split: bool = False) -> ir.Function:
    """Emit ``kernel`` into ``module`` as ``void <symbol>(ptr in0, ..., ptr out0, ...)``
    (parameter order = ``kernel.params``). The symbol is ``symbol`` when
    given (it must be unused in the module), else ``graphc.<kernel name>``
    with characters outside ``[A-Za-z0-9_]`` replaced, made unique in the
    module: read it from the returned function's ``name``. Buffers are
    ``noalias`` unless ``noalias=False`` (for callers that run a kernel in
    place). ``split=True`` (for kernels with a :func:`split_loop`) adds
    two ``i64`` parameters ``begin, end``: the call runs iterations
    ``[begin, end)`` of that loop, ``0 <= begin < end <= extent`` (the
    caller splits the range over threads). Raises CompileError for IR it
    cannot lower, including any index that could leave its buffer."""
    for p in kernel.params:
        memory_type(p.dtype)
    if symbol is not None and symbol in module.globals:
        raise CompileError(f"kernel {kernel.name}: symbol {symbol!r} is already defined in the module")
    outer = split_loop(kernel) if split else None
    if split and outer is None:
        raise CompileError(f"kernel {kernel.name}: split=True needs a body that is one parallel loop")
    extra = [_I64, _I64] if split else []
    fn = ir.Function(module, ir.FunctionType(_VOID, [_PTR] * len(kernel.params) + extra),
                     name=symbol or _symbol(module, kernel.name))
    fn.attributes.add("nounwind")
    buffers: Dict[str, Tuple[ir.Value, np.dtype, int]] = {}
    for arg, p in zip(fn.args, kernel.params):
        arg.name = p.name
        if noalias:
            arg.add_attribute("noalias")
        arg.add_attribute("captures(none)")
        nbytes = p.size * np.dtype(p.dtype).itemsize
        if nbytes:
            arg.attributes.dereferenceable = nbytes
        buffers[p.name] = (arg, np.dtype(p.dtype), p.size)
    for name, value in kernel.constants.items():
        if name in buffers:
            raise CompileError(f"kernel {kernel.name}: constant {name} shadows a parameter")
        value = np.asarray(value)
        memory_type(value.dtype)
        buffers[name] = (_constant_global(module, f"{fn.name}.{name}", value), value.dtype, value.size)
    em = _KernelEmitter(module, kernel, fn, buffers)
    if outer is not None:
        begin, end = fn.args[len(kernel.params):]
        begin.name, end.name = "begin", "end"
        em.split = (outer, begin, end)
    em.stmts(kernel.body)
    em.b.ret_void()
    return fn


def kernel_module(kernels: Sequence[L.Kernel], name: str = "graphc_kernels") -> Tuple[ir.Module, List[str]]:
    """A module holding every kernel; returns it and each kernel's symbol."""
    module = ir.Module(name=name)
    names = [emit_kernel(module, k).name for k in kernels]
    return module, names


# ---------------------------------------------------------------------------
# JIT-compiled kernels, cached by their text
# ---------------------------------------------------------------------------
def kernel_key(kernel: L.Kernel) -> str:
    """Cache key: the kernel's text plus its constants' bytes (the text
    names constants but does not show their values)."""
    h = hashlib.sha256(kernel.text().encode())
    for name, value in kernel.constants.items():
        value = np.ascontiguousarray(value)
        h.update(f"{name}:{value.dtype.str}:{value.shape}".encode())
        h.update(value.tobytes())
    h.update(f"block={REDUCTION_BLOCK},{REDUCTION_RADIX};interchange={INTERCHANGE_REDUCTIONS},"
             f"{INTERCHANGE_TILE_BYTES};unroll={UNROLL_EXTENT};math={_llvm_math() is not None}".encode())
    return h.hexdigest()


class CompiledKernel:
    """A JIT-compiled kernel: call it with its input arrays (exact dtypes
    and shapes) to get its outputs. ``outputs=`` passes preallocated,
    C-contiguous output arrays instead."""

    def __init__(self, kernel: L.Kernel, module: jit.CompiledModule, symbol: str) -> None:
        self.kernel = kernel
        self.module = module
        self.symbol = symbol
        self.address = module.address(symbol)
        self._fn = ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * len(kernel.params)))(self.address)

    @property
    def optimized_ir(self) -> str:
        return self.module.optimized_ir

    def __call__(self, *inputs: Any, outputs: Optional[Sequence[np.ndarray]] = None) -> List[np.ndarray]:
        k = self.kernel
        if len(inputs) != len(k.inputs):
            raise InvalidArgumentError(f"kernel {k.name} takes {len(k.inputs)} inputs, got {len(inputs)}")
        arrays = []
        for i, (p, x) in enumerate(zip(k.inputs, inputs)):
            a = np.asarray(x)
            if a.dtype != p.dtype or a.shape != tuple(p.shape):
                raise InvalidArgumentError(f"kernel {k.name}: input {i} ({p.name}) must be "
                                           f"{p.dtype.name}{list(p.shape)}, got {a.dtype.name}{list(a.shape)}")
            arrays.append(np.ascontiguousarray(a))
        if outputs is None:
            outs = [np.empty(p.shape, dtype=p.dtype) for p in k.outputs]
        else:
            outs = self._check_outputs(outputs, arrays)
        self._fn(*[a.ctypes.data for a in arrays + outs])
        return outs

    def _check_outputs(self, outputs: Sequence[np.ndarray], inputs: Sequence[np.ndarray]) -> List[np.ndarray]:
        k = self.kernel
        outputs = list(outputs)
        if len(outputs) != len(k.outputs):
            raise InvalidArgumentError(f"kernel {k.name} has {len(k.outputs)} outputs, got {len(outputs)} arrays")
        for i, (p, o) in enumerate(zip(k.outputs, outputs)):
            if not isinstance(o, np.ndarray) or o.dtype != p.dtype or o.shape != tuple(p.shape) \
                    or not o.flags.c_contiguous or not o.flags.writeable:
                raise InvalidArgumentError(f"kernel {k.name}: output {i} ({p.name}) must be a writeable "
                                           f"C-contiguous {p.dtype.name}{list(p.shape)} array")
            for other in list(inputs) + outputs[:i]:
                if o.size and np.may_share_memory(o, other):
                    raise InvalidArgumentError(f"kernel {k.name}: output {i} ({p.name}) overlaps another "
                                               "argument (buffers are noalias)")
        return outputs


_cache: Dict[str, CompiledKernel] = {}
_cache_lock = threading.Lock()
_stats = {"compiled_kernels": 0, "modules": 0}


def compile_kernels(kernels: Sequence[L.Kernel], name: str = "graphc_kernels") -> List[CompiledKernel]:
    """JIT-compile kernels (those not already compiled in this process, as
    one module) and return one callable per kernel."""
    keys = [kernel_key(k) for k in kernels]
    with _cache_lock:
        todo: Dict[str, L.Kernel] = {}
        for key, k in zip(keys, kernels):
            if key not in _cache:
                todo.setdefault(key, k)
        if todo:
            start = time.perf_counter()
            module, symbols = kernel_module(list(todo.values()), name)
            build = time.perf_counter() - start
            compiled = jit.compile_module(module, name=name, exports=symbols)
            compiled.timings = {"llvm: build IR": build, **compiled.timings}
            add_timing("llvm: build IR", build)
            for (key, k), sym in zip(todo.items(), symbols):
                _cache[key] = CompiledKernel(k, compiled, sym)
            _stats["compiled_kernels"] += len(todo)
            _stats["modules"] += 1
        return [_cache[key] for key in keys]


def compile_kernel(kernel: L.Kernel) -> CompiledKernel:
    return compile_kernels([kernel], name=re.sub(r"[^A-Za-z0-9_.]", "_", kernel.name) or "kernel")[0]


def run_kernel(kernel: L.Kernel, inputs: Sequence[Any],
               outputs: Optional[Sequence[np.ndarray]] = None) -> List[np.ndarray]:
    """Compile (once per process) and run ``kernel`` natively on NumPy
    inputs of exactly its parameters' dtypes and shapes; returns its outputs."""
    return compile_kernel(kernel)(*inputs, outputs=outputs)
