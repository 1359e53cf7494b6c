"""graphc.codegen.llvm_math: accuracy in ULP against NumPy, special values,
and vectorization of loops that use the functions.

Each (function, dtype) is compiled into a tiny module with a loop
``out[i] = f(in[i])`` over noalias pointers, optimized at O3 (loop and SLP
vectorizers on) for the host CPU and run through MCJIT + ctypes.

Run as a script for the measurements in docs/transcendentals.md:
``python3 tests/test_llvm_math.py [--stride N] [--bench]``.
"""
from __future__ import annotations

import ctypes
import os
import platform
import re
import sys
import threading
import time
from typing import Callable, Dict, Tuple

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import llvmlite  # noqa: E402
import llvmlite.binding as llvm  # noqa: E402
import llvmlite.ir as ir  # noqa: E402

from graphc.codegen import llvm_math  # noqa: E402

llvmlite.ir_layer_typed_pointers_enabled = False

F32, F64 = np.float32, np.float64
MAX_ULP_F32 = 4
MAX_ULP_F64 = 4

# ---------------------------------------------------------------------------
# JIT harness
# ---------------------------------------------------------------------------
_init_lock = threading.Lock()
_initialized = []
_kernels: Dict[Tuple[str, type, bool, str], "Kernel"] = {}


def _init() -> None:
    with _init_lock:
        if not _initialized:
            llvm.initialize_native_target()
            llvm.initialize_native_asmprinter()
            _initialized.append(True)


def _host_tm(cpu: str = "") -> "llvm.TargetMachine":
    """The host CPU's target machine, or a named CPU with its default features."""
    target = llvm.Target.from_default_triple()
    if cpu:
        return target.create_target_machine(cpu=cpu, features="", opt=3, jit=True)
    return target.create_target_machine(cpu=llvm.get_host_cpu_name(),
                                        features=llvm.get_host_cpu_features().flatten(),
                                        opt=3, jit=True)


class Kernel:
    """out[i] = name(in0[i] [, in1[i]]) for i < n, JIT-compiled."""

    def __init__(self, name: str, dtype: type, inline: bool = False, cpu: str = ""):
        _init()
        self.name, self.dtype = name, np.dtype(dtype)
        arity = 2 if name in llvm_math.SUPPORTED_BINARY else 1
        self.arity = arity
        module = self._build(name, arity, inline)
        tm = _host_tm(cpu)
        mod = llvm.parse_assembly(str(module))
        mod.verify()
        pto = llvm.create_pipeline_tuning_options(speed_level=3)
        pto.loop_vectorization = True
        pto.slp_vectorization = True
        pb = llvm.create_pass_builder(tm, pto)
        pb.getModulePassManager().run(mod, pb)
        self.optimized_ir = str(mod)
        # MCJIT owns its TargetMachine: one per engine
        self.engine = llvm.create_mcjit_compiler(mod, _host_tm(cpu))
        self.engine.finalize_object()
        addr = self.engine.get_function_address("kernel")
        self.cfunc = ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * (arity + 1)), ctypes.c_int64)(addr)

    def _build(self, name: str, arity: int, inline: bool) -> ir.Module:
        elem = ir.DoubleType() if self.dtype == np.float64 else ir.FloatType()
        ptr, i64 = ir.PointerType(), ir.IntType(64)
        module = ir.Module(name=f"math_{name}")
        module.triple = llvm.get_process_triple()
        fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [ptr] * (arity + 1) + [i64]), name="kernel")
        for arg in fn.args[:-1]:
            arg.add_attribute("noalias")
        entry, body, done = (fn.append_basic_block(n) for n in ("entry", "body", "done"))
        b = ir.IRBuilder(entry)
        n = fn.args[-1]
        b.cbranch(b.icmp_signed(">", n, ir.Constant(i64, 0)), body, done)
        b.position_at_end(body)
        i = b.phi(i64)
        i.add_incoming(ir.Constant(i64, 0), entry)
        args = [b.load(b.gep(p, [i], inbounds=True, source_etype=elem), typ=elem) for p in fn.args[:arity]]
        if arity == 1:
            y = llvm_math.emit_unary(b, name, args[0], inline=inline)
        else:
            y = llvm_math.emit_binary(b, name, args[0], args[1], inline=inline)
        b.store(y, b.gep(fn.args[arity], [i], inbounds=True, source_etype=elem))
        nxt = b.add(i, ir.Constant(i64, 1))
        i.add_incoming(nxt, body)
        b.cbranch(b.icmp_signed("<", nxt, n), body, done)
        b.position_at_end(done)
        b.ret_void()
        return module

    def __call__(self, *arrays: np.ndarray) -> np.ndarray:
        arrays = [np.ascontiguousarray(a, dtype=self.dtype) for a in arrays]
        out = np.empty_like(arrays[0])
        self.cfunc(*[a.ctypes.data for a in arrays], out.ctypes.data, out.size)
        return out


def kernel(name: str, dtype: type, inline: bool = False, cpu: str = "") -> Kernel:
    key = (name, dtype, inline, cpu)
    if key not in _kernels:
        _kernels[key] = Kernel(name, dtype, inline, cpu)
    return _kernels[key]


# ---------------------------------------------------------------------------
# References and ULP distance
# ---------------------------------------------------------------------------
def _sigmoid_ref(x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _erf_ref(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf
    return erf(x)


REFERENCES: Dict[str, Callable] = {
    "exp": np.exp, "expm1": np.expm1, "log": np.log, "log1p": np.log1p, "tanh": np.tanh,
    "sigmoid": _sigmoid_ref, "sin": np.sin, "cos": np.cos, "tan": np.tan, "sqrt": np.sqrt,
    "rsqrt": lambda x: 1 / np.sqrt(x), "erf": _erf_ref, "pow": np.power,
}


def reference(name: str, dtype: type, *args: np.ndarray) -> np.ndarray:
    """NumPy's value: float32 via float64 rounded to float32."""
    with np.errstate(all="ignore"):
        if np.dtype(dtype) == np.float32:
            return REFERENCES[name](*[a.astype(np.float64) for a in args]).astype(np.float32)
        return REFERENCES[name](*args)


def _ordered(a: np.ndarray) -> np.ndarray:
    """Float bit patterns mapped to integers in value order (+0 and -0 both 0)."""
    ibits = a.view(np.int32 if a.dtype == np.float32 else np.int64).astype(np.int64)
    mag = ibits & (0x7FFFFFFF if a.dtype == np.float32 else 0x7FFFFFFFFFFFFFFF)
    return np.where(ibits < 0, -mag, mag)


def ulp_error(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Distance in ULPs as float64 (inf where exactly one side is nan)."""
    a, b = _ordered(got), _ordered(want)
    same_sign = (a >= 0) == (b >= 0)
    # same sign: exact int64 difference; opposite signs: |a| + |b|, which
    # could overflow int64 and is large anyway
    d = np.where(same_sign, np.abs(np.where(same_sign, a - b, 0)).astype(np.float64),
                 np.abs(a).astype(np.float64) + np.abs(b).astype(np.float64))
    d[np.isnan(got) & np.isnan(want)] = 0
    d[np.isnan(got) ^ np.isnan(want)] = np.inf
    return d


def max_ulp(name: str, dtype: type, *args: np.ndarray) -> Tuple[float, np.ndarray]:
    got = kernel(name, dtype)(*args)
    want = reference(name, dtype, *args)
    err = ulp_error(got, want)
    return float(err.max(initial=0)), err


def test_ulp_error_metric():
    for dt in (F32, F64):
        info = np.finfo(dt)
        got = np.array([1.0, -0.0, info.smallest_subnormal, np.inf, np.nan, np.nan, -info.max], dt)
        want = np.array([np.nextafter(dt(1), dt(2)), 0.0, -info.smallest_subnormal, info.max, np.nan, 1.0,
                         info.max], dt)
        err = ulp_error(got, want)
        assert err[:5].tolist() == [1, 0, 2, 1, 0] and err[5] == np.inf and err[6] > 1e9


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------
def f32_sweep(stride: int, offset: int = 0) -> np.ndarray:
    """Every `stride`-th float32 bit pattern over all 2^32 (nan included)."""
    return np.arange(offset, 2 ** 32, stride, dtype=np.uint64).astype(np.uint32).view(np.float32)


def dense(center: float, width: float, n: int, dtype: type) -> np.ndarray:
    return np.linspace(center - width, center + width, n).astype(dtype)


def f32_hotspots(name: str) -> np.ndarray:
    """Dense samples where the algorithms switch or reduce: near 0, the
    overflow/underflow thresholds, reduction boundaries, denormals."""
    rng = np.random.default_rng(1)
    parts = [
        dense(0.0, 1e-3, 4001, F32), dense(0.0, 1.0, 20001, F32),
        rng.uniform(-100, 100, 20000).astype(F32),
        np.arange(0, 2 ** 23, 997, dtype=np.uint32).view(F32),            # denormals
        -np.arange(0, 2 ** 23, 997, dtype=np.uint32).view(F32),
        (np.arange(-40, 41) * np.log(2) / 2).astype(F32),                 # exp reduction boundaries
    ]
    special_regions = {
        "exp": [(88.72, 0.01), (-87.33, 0.01), (-103.97, 0.03), (-96.0, 8.0)],
        "expm1": [(88.72, 0.01), (-17.33, 0.05), (0.3466, 0.001), (-0.3466, 0.001)],
        "sigmoid": [(-88.72, 0.05), (-103.97, 0.05), (16.6, 0.2), (-16.6, 0.2)],
        "tanh": [(9.0, 0.2), (-9.0, 0.2), (0.55, 0.1)],
        "log": [(1.0, 1e-4), (1.41421, 1e-4), (0.70711, 1e-4), (2.0, 0.01)],
        "log1p": [(0.0, 1e-6), (-0.99, 0.01), (0.41421, 1e-4), (-0.29289, 1e-4)],
        "erf": [(1.0, 0.01), (4.0, 0.1), (3.92, 0.01), (-1.0, 0.01)],
        "sin": [(np.pi, 1e-3), (np.pi / 2, 1e-3), (np.pi / 4, 1e-3), (1e4, 10.0), (1e6, 100.0)],
    }
    special_regions["cos"] = special_regions["tan"] = special_regions["sin"]
    for c, w in special_regions.get(name, []):
        parts.append(dense(c, w, 4001, F32))
    if name in ("sin", "cos", "tan"):
        k = np.arange(1, 200001, dtype=np.float64)
        parts.append((k * np.pi / 2).astype(F32))                          # near multiples of pi/2
        parts.append(np.nextafter((k * np.pi / 2).astype(F32), F32(np.inf)))
        parts.append((2.0 ** rng.uniform(20, 128, 20000)).astype(F32))   # huge arguments
    return np.concatenate(parts)


def f64_inputs(name: str, n: int = 200000) -> np.ndarray:
    """Random float64 bit patterns plus random values in the ranges that matter."""
    rng = np.random.default_rng(2)
    raw = rng.integers(0, 2 ** 64, n // 4, dtype=np.uint64).view(F64)
    mag = 2.0 ** rng.uniform(-60, 12, n // 4) * rng.choice([-1.0, 1.0], n // 4)
    ranges = {"exp": 745.0, "expm1": 745.0, "sigmoid": 745.0, "tanh": 25.0, "erf": 7.0,
              "sin": 1e4, "cos": 1e4, "tan": 1e4}
    uni = rng.uniform(-1, 1, n // 4) * ranges.get(name, 10.0)
    small = rng.uniform(-1, 1, n // 4)
    parts = [raw, mag, uni, small]
    if name in ("log", "log1p", "sqrt", "rsqrt"):
        parts.append(np.abs(raw))
        parts.append(2.0 ** rng.uniform(-1074, 1024, n // 4))
    if name in ("sin", "cos", "tan"):
        k = rng.integers(1, 2 ** 31, n // 4).astype(F64)
        near = k * (np.pi / 2)
        parts.append(near)
        parts.append(2.0 ** rng.uniform(0, 32, n // 4) * rng.choice([-1.0, 1.0], n // 4))
    x = np.concatenate(parts)
    if name in ("sin", "cos", "tan"):
        x = x[np.abs(x) < llvm_math.SIN_EXACT_LIMIT_F64]
    return x


# ---------------------------------------------------------------------------
# Tests: accuracy
# ---------------------------------------------------------------------------
UNARY = llvm_math.SUPPORTED_UNARY


@pytest.mark.parametrize("name", UNARY)
def test_f32_sweep_and_hotspots(name):
    x = np.concatenate([f32_sweep(65537 * 7 + 2, offset=sum(map(ord, name)) % 97), f32_hotspots(name)])
    worst, err = max_ulp(name, F32, x)
    bad = x[err > MAX_ULP_F32][:5]
    assert worst <= MAX_ULP_F32, f"{name} float32: {worst} ulp, e.g. at {bad!r}"


@pytest.mark.parametrize("name", UNARY)
def test_f64_random(name):
    x = f64_inputs(name)
    worst, err = max_ulp(name, F64, x)
    bad = x[err > MAX_ULP_F64][:5]
    assert worst <= MAX_ULP_F64, f"{name} float64: {worst} ulp, e.g. at {bad!r}"


def pow_inputs(dtype: type, n: int = 100000) -> Tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.uniform(0, 4, n), 2.0 ** rng.uniform(-30, 30, n),
                        rng.uniform(0.9, 1.1, n), rng.uniform(-3, 3, n)])
    y = np.concatenate([rng.uniform(-30, 30, n), rng.uniform(-4, 4, n),
                        rng.uniform(-2000, 2000, n), np.round(rng.uniform(-20, 20, n))])
    # x near 1 with |y log x| large: log x must be accurate far beyond the format
    x1 = 1 + rng.uniform(-1, 1, n) * 2.0 ** rng.uniform(-23, -1, n)
    with np.errstate(divide="ignore"):
        y1 = rng.uniform(-80, 80, n) / np.log(x1)
    x, y = np.concatenate([x, x1]), np.concatenate([y, y1])
    if np.dtype(dtype) == np.float64:
        # near overflow/underflow: |y log x| up to ~745
        x2 = 2.0 ** rng.uniform(-1000, 1000, n)
        y2 = rng.uniform(-745, 745, n) / np.log(x2)
        x, y = np.concatenate([x, x2]), np.concatenate([y, y2])
    else:
        x2 = 2.0 ** rng.uniform(-120, 120, n)
        y2 = rng.uniform(-104, 89, n) / np.log(x2)
        x, y = np.concatenate([x, x2]), np.concatenate([y, y2])
    return x.astype(dtype), y.astype(dtype)


@pytest.mark.parametrize("dtype", [F32, F64])
def test_pow_accuracy(dtype):
    x, y = pow_inputs(dtype)
    worst, err = max_ulp("pow", dtype, x, y)
    limit = MAX_ULP_F32 if dtype == F32 else MAX_ULP_F64
    assert worst <= limit, f"pow {dtype.__name__}: {worst} ulp at {x[err > limit][:3]!r}, {y[err > limit][:3]!r}"


# ---------------------------------------------------------------------------
# Tests: special values, exactly as NumPy
# ---------------------------------------------------------------------------
SPECIALS = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, 0.5, -0.5, 2.0, 1e-300, -1e-300,
                     5e-324, -5e-324, 1e-40, -1e-40, 1e-45, 1e30, -1e30, 1e300, -1e300, 3.4e38, -3.4e38,
                     88.72, 88.73, -87.4, -103.9, -104.0, -150.0, 709.78, 709.79, -745.1, -746.0,
                     -708.5, 20.0, -20.0])


def _same(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Bit-identical up to nan payload; zeros must agree in sign."""
    nan = np.isnan(got) & np.isnan(want)
    return nan | ((got == want) & (np.signbit(got) == np.signbit(want)))


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("name", UNARY)
def test_special_values(name, dtype):
    info = np.finfo(dtype)
    limits = [info.max, -info.max, info.tiny, -info.tiny, info.smallest_subnormal, -info.smallest_subnormal]
    with np.errstate(all="ignore"):
        x = np.concatenate([SPECIALS.astype(dtype), np.array(limits, dtype)])
    if name in ("sin", "cos", "tan") and dtype == F64:
        x = x[~(np.abs(x) > llvm_math.SIN_EXACT_LIMIT_F64)]   # see test_f64_sin_beyond_exact_range
    got = kernel(name, dtype)(x)
    want = reference(name, dtype, x)
    err = ulp_error(got, want)
    exactly = ~np.isfinite(want) | (want == 0) | ~np.isfinite(x) | (x == 0)
    bad = (exactly & ~_same(got, want)) | (err > 4)
    assert not bad.any(), f"{name} {np.dtype(dtype)}: x={x[bad]!r} got={got[bad]!r} want={want[bad]!r}"


@pytest.mark.parametrize("dtype", [F32, F64])
def test_exp_limits(dtype):
    info = np.finfo(dtype)
    fmax = np.log(info.max)
    tiny = np.log(np.array(info.smallest_subnormal, F64)) - 0.7   # rounds to 0
    x = np.array([fmax * 1.0001, -fmax, tiny, -np.inf, np.inf], dtype)
    got = kernel("exp", dtype)(x)
    assert got[0] == np.inf and got[3] == 0 and got[4] == np.inf
    assert 0 < got[1] < info.tiny * 4 and got[2] == 0
    # gradual underflow: every denormal output within one denormal step of NumPy
    xs = np.linspace(np.log(info.tiny), np.log(float(info.smallest_subnormal)), 5001).astype(dtype)
    want = reference("exp", dtype, xs)
    assert (want < info.tiny).sum() > 4000
    assert ulp_error(kernel("exp", dtype)(xs), want).max() <= 1


@pytest.mark.parametrize("dtype", [F32, F64])
def test_log_denormal_inputs(dtype):
    bits = np.arange(1, 2 ** 20, 7, dtype=np.uint64)
    x = bits.astype(np.uint32 if dtype == F32 else np.uint64).view(dtype)
    worst, _ = max_ulp("log", dtype, x)
    assert worst <= 1


POW_SPECIAL_VALUES = [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 3.0, -3.0, 2.5, -2.5, np.inf, -np.inf,
                      np.nan, 1e-3, 1e3, 1e-40]


@pytest.mark.parametrize("dtype", [F32, F64])
def test_pow_special_values(dtype):
    v = np.array(POW_SPECIAL_VALUES, dtype)
    x, y = (a.ravel() for a in np.meshgrid(v, v, indexing="ij"))
    got = kernel("pow", dtype)(x, y)
    want = reference("pow", dtype, x, y)
    ok = _same(got, want) | (np.isfinite(want) & (want != 0) & (ulp_error(got, want) <= 2))
    assert ok.all(), f"pow: x={x[~ok]!r} y={y[~ok]!r} got={got[~ok]!r} want={want[~ok]!r}"
    # odd and even integer exponents of negative bases, and huge even exponents
    xx = np.array([-2.0, -2.0, -0.5, -8.0, -1.0, -1.0, -3.0], dtype)
    yy = np.array([3.0, 4.0, 3.0, 1 / 3, 1e30, np.inf, 2.0 ** 60], dtype)
    assert _same(kernel("pow", dtype)(xx, yy), reference("pow", dtype, xx, yy)).all()


def test_f64_sin_beyond_exact_range():
    """Past 2^32 pi/2 the float64 reduction is no longer exact: the result
    is sin(x + d) with |d| a few ulp of x; from 2^52 on it is nan."""
    rng = np.random.default_rng(4)
    x = 2.0 ** rng.uniform(32.7, 51.9, 20000)
    for name in ("sin", "cos"):
        got = kernel(name, F64)(x)
        want = reference(name, F64, x)
        assert np.all(np.abs(got - want) <= 4 * np.spacing(x))
        assert np.all(np.abs(got) <= 1)
    huge = np.array([2.0 ** 52, 1e20, -1e300, np.inf])
    assert np.isnan(kernel("sin", F64)(huge)).all()


def test_f32_sin_huge_arguments_exact():
    """float32 sin/cos/tan reduce every finite argument exactly."""
    x = np.array([3.4e38, -3.4e38, 1e38, 2.0 ** 100, 16777216.0, 1e10, 1e20, 123456789.0], F32)
    for name in ("sin", "cos", "tan"):
        worst, _ = max_ulp(name, F32, x)
        assert worst <= 1


# ---------------------------------------------------------------------------
# Tests: API and vectorization
# ---------------------------------------------------------------------------
def test_vectorized_exp_loop():
    ir_text = kernel("exp", F32).optimized_ir
    assert "x float>" in ir_text, "the f32 exp loop was not vectorized"
    # the scalar remainder loop may call intrinsics, never a library function
    assert not re.search(r"call (fast )?float @(?!llvm\.)", ir_text)


@pytest.mark.parametrize("name", ["log", "tanh", "sigmoid", "sin", "erf", "pow"])
def test_other_loops_vectorize(name):
    ir_text = kernel(name, F32).optimized_ir
    assert "x float>" in ir_text, f"the f32 {name} loop was not vectorized"
    assert "@graphc.math" not in ir_text, "the math function was not inlined"


def _vector_kernel(name: str, dtype: type, inline: bool, lanes: int = 4) -> Callable:
    """x[0:lanes] -> out, computed on one <lanes x T> value without any
    optimisation pass (the calls stay calls unless inline)."""
    _init()
    elem = ir.DoubleType() if dtype == F64 else ir.FloatType()
    vec, ptr = ir.VectorType(elem, lanes), ir.PointerType()
    arity = 2 if name in llvm_math.SUPPORTED_BINARY else 1
    module = ir.Module()
    module.triple = llvm.get_process_triple()
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [ptr] * (arity + 1)), name="kernel")
    b = ir.IRBuilder(fn.append_basic_block())
    # NumPy buffers are not vector-aligned
    args = [b.load(p, typ=vec, align=np.dtype(dtype).itemsize) for p in fn.args[:arity]]
    if arity == 1:
        y = llvm_math.emit_unary(b, name, args[0], inline=inline)
    else:
        y = llvm_math.emit_binary(b, name, args[0], args[1], inline=inline)
    b.store(y, fn.args[arity], align=np.dtype(dtype).itemsize)
    b.ret_void()
    mod = llvm.parse_assembly(str(module))
    mod.verify()
    engine = llvm.create_mcjit_compiler(mod, _host_tm())
    engine.finalize_object()
    cf = ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * (arity + 1)))(engine.get_function_address("kernel"))

    def run(*arrays: np.ndarray) -> np.ndarray:
        out = np.empty(lanes, dtype)
        cf(*[a.ctypes.data for a in arrays], out.ctypes.data)
        return out
    run.engine = engine       # keep the code alive
    return run


@pytest.mark.parametrize("inline", [False, True])
@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("name", UNARY + llvm_math.SUPPORTED_BINARY)
def test_vector_operands(name, dtype, inline):
    """x may already be a vector: the same IR works lane-wise, as a call or inline."""
    f = _vector_kernel(name, dtype, inline)
    x = np.array([0.75, -1.5, np.inf, 3.0], dtype)
    args = (np.abs(x), np.array([2.5, -0.5, 2.0, np.nan], dtype)) if name == "pow" else (x,)
    got, want = f(*args), reference(name, dtype, *args)
    assert (ulp_error(got, want) <= 4).all(), (got, want)


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86-64 CPU names")
@pytest.mark.parametrize("name", ["exp", "expm1", "tanh", "sin", "erf", "pow"])
def test_accuracy_without_fma(name):
    """Compiled for x86-64-v2 (SSE4.2, no FMA: fmuladd stays a multiply and
    an add) the loops still vectorize and keep their accuracy."""
    for dtype in (F32, F64):
        k = kernel(name, dtype, cpu="x86-64-v2")
        assert " x float>" in k.optimized_ir or dtype == F64
        if name == "pow":
            args = pow_inputs(dtype, 20000)
        else:
            args = (f32_sweep(65537 * 13 + 5) if dtype == F32 else f64_inputs(name, 40000),)
        got, want = k(*args), reference(name, dtype, *args)
        assert ulp_error(got, want).max() <= (MAX_ULP_F32 if dtype == F32 else MAX_ULP_F64)


def test_function_reuse_and_errors():
    module = ir.Module()
    f1 = llvm_math.math_function(module, "exp", ir.FloatType())
    assert llvm_math.math_function(module, "exp", ir.FloatType()) is f1
    assert f1.linkage == "internal" and "alwaysinline" in f1.attributes
    with pytest.raises(KeyError, match="supported"):
        llvm_math.math_function(module, "lgamma", ir.FloatType())
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [ir.IntType(32)]), name="g")
    b = ir.IRBuilder(fn.append_basic_block())
    with pytest.raises(TypeError, match="float or double"):
        llvm_math.emit_unary(b, "exp", fn.args[0])
    with pytest.raises(KeyError):
        llvm_math.emit_binary(b, "exp", fn.args[0], fn.args[0])


# ---------------------------------------------------------------------------
# Measurements for docs/transcendentals.md
# ---------------------------------------------------------------------------
def _measure(stride: int) -> None:
    print(f"| function | float32 max ULP, every {stride}th bit pattern + hot spots (share identical) "
          f"| float64 max ULP, random sweep |")
    print("|---|---|---|")
    for name in UNARY:
        worst32, same, total = 0.0, 0, 0
        chunk = stride * 2 ** 20
        for start in range(0, 2 ** 32, chunk):
            x = np.arange(start, min(start + chunk, 2 ** 32), stride, dtype=np.uint64)
            err = max_ulp(name, F32, x.astype(np.uint32).view(F32))[1]
            worst32, same, total = max(worst32, err.max()), same + int((err == 0).sum()), total + err.size
        worst32 = max(worst32, max_ulp(name, F32, f32_hotspots(name))[0])
        worst64 = max_ulp(name, F64, f64_inputs(name, 2000000))[0]
        print(f"| {name} | {worst32:g} ({100 * same / total:.3f}%) | {worst64:g} |", flush=True)
    p32 = max_ulp("pow", F32, *pow_inputs(F32, 1000000))[0]
    p64 = max_ulp("pow", F64, *pow_inputs(F64, 1000000))[0]
    print(f"| pow | {p32:g} (random x, y) | {p64:g} |")


def _w1_forward_kernel() -> Callable:
    """One vectorized loop out = tanh(x)*exp(-x*x) + 0.5*x*sigmoid(x)."""
    _init()
    f32, ptr, i64 = ir.FloatType(), ir.PointerType(), ir.IntType(64)
    module = ir.Module()
    module.triple = llvm.get_process_triple()
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [ptr, ptr, i64]), name="w1")
    for a in fn.args[:2]:
        a.add_attribute("noalias")
    entry, body, done = (fn.append_basic_block(n) for n in ("entry", "body", "done"))
    b = ir.IRBuilder(entry)
    n = fn.args[2]
    b.cbranch(b.icmp_signed(">", n, ir.Constant(i64, 0)), body, done)
    b.position_at_end(body)
    i = b.phi(i64)
    i.add_incoming(ir.Constant(i64, 0), entry)
    x = b.load(b.gep(fn.args[0], [i], inbounds=True, source_etype=f32), typ=f32)
    t = b.fmul(llvm_math.emit_unary(b, "tanh", x), llvm_math.emit_unary(b, "exp", b.fneg(b.fmul(x, x))))
    y = b.fadd(t, b.fmul(b.fmul(ir.Constant(f32, 0.5), x), llvm_math.emit_unary(b, "sigmoid", x)))
    b.store(y, b.gep(fn.args[1], [i], inbounds=True, source_etype=f32))
    nxt = b.add(i, ir.Constant(i64, 1))
    i.add_incoming(nxt, body)
    b.cbranch(b.icmp_signed("<", nxt, n), body, done)
    b.position_at_end(done)
    b.ret_void()
    mod = llvm.parse_assembly(str(module))
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pto.loop_vectorization = pto.slp_vectorization = True
    tm = _host_tm()
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    engine = llvm.create_mcjit_compiler(mod, _host_tm())
    engine.finalize_object()
    cf = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)(engine.get_function_address("w1"))
    cf.engine = engine
    return cf


def _bench() -> None:
    from scipy.special import erf as sp_erf
    n = 10_000_000
    x = (np.random.default_rng(0).standard_normal(n) * 10).astype(F32)
    ax, y = np.abs(x), (x / 10).copy()
    out = np.empty_like(x)
    print(f"host CPU {llvm.get_host_cpu_name()}, {n} float32 elements, one thread; min of 20 (NumPy/SciPy 10) runs, ms")
    print(f"copy: {_best(lambda: np.copyto(out, x), 20):.2f}")
    # ufuncs write into a preallocated array like the JIT loop; sigmoid is
    # graphc's NumPy reference expression
    cases = [("exp", (x,), np.exp), ("tanh", (x,), np.tanh), ("sigmoid", (x,), None),
             ("log", (ax,), np.log), ("erf", (x,), sp_erf), ("sin", (x,), np.sin), ("pow", (ax, y), np.power)]
    for name, args, ref in cases:
        k = kernel(name, F32)
        ptrs = [a.ctypes.data for a in args]
        ours = _best(lambda: k.cfunc(*ptrs, out.ctypes.data, n), 20)
        with np.errstate(all="ignore"):
            theirs = _best((lambda: ref(*args, out=out)) if ref else (lambda: _sigmoid_ref(x)), 10)
        print(f"{name}: graphc {ours:.2f}, NumPy/SciPy {theirs:.2f}, ratio {theirs / ours:.2f}")
    w1 = _w1_forward_kernel()
    ours = _best(lambda: w1(y.ctypes.data, out.ctypes.data, n), 20)
    theirs = _best(lambda: np.tanh(y) * np.exp(-y * y) + 0.5 * y * (1 / (1 + np.exp(-y))), 5)
    print(f"W1 forward tanh(x)*exp(-x*x) + 0.5*x*sigmoid(x), x ~ N(0,1): graphc {ours:.2f}, NumPy {theirs:.2f}, "
          f"ratio {theirs / ours:.2f}")


def _best(fn: Callable[[], object], reps: int) -> float:
    """Fastest of `reps` runs, in milliseconds."""
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1e3


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description="measure llvm_math accuracy and speed")
    ap.add_argument("--stride", type=int, default=97, help="float32 bit-pattern stride (1 = exhaustive)")
    ap.add_argument("--bench", action="store_true", help="throughput only")
    opts = ap.parse_args()
    if opts.bench:
        _bench()
    else:
        _measure(opts.stride)
