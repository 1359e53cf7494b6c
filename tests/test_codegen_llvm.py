"""LLVM CPU codegen of loop IR: every lowered kernel of real programs, run
natively, matches the interpreter (and the reference evaluator); scalar ops
follow NumPy on special values; contiguous loops and float sums vectorize;
float32 sums are as accurate as NumPy's pairwise sum."""
import re

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import graphc as gc
from graphc.backends import get_backend
from graphc.backends.interpreter import RunContext, VariableStore, execute_op
from graphc.codegen import llvm_cpu
from graphc.errors import CompileError, InvalidArgumentError
from graphc.lowering import evaluate, loop_ir as L, lower_op
from graphc.session import compile_run
from random_programs import build_program, mlp_step_graph

F32, F64, I32, I64, B = (np.dtype(t) for t in (np.float32, np.float64, np.int32, np.int64, np.bool_))


def _assert_close(got, want, msg=""):
    assert got.dtype == want.dtype and got.shape == want.shape, msg
    if want.dtype == F32:
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6, equal_nan=True, err_msg=msg)
    elif want.dtype == F64:
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12, equal_nan=True, err_msg=msg)
    else:
        np.testing.assert_array_equal(got, want, err_msg=msg)


def _check_native(fetches, feeds, with_evaluator=False):
    """Every lowerable kernel of the compiled program, run natively, equals
    the interpreter (and, when asked, the loop-IR evaluator) on the same inputs."""
    ex = compile_run(fetches[0].graph, fetches, [], list(feeds), [np.shape(v) for v in feeds.values()],
                     gc.Config(backend="interpreter"), get_backend("interpreter"))
    env = {t: np.asarray(v, dtype=t.dtype) for t, v in zip(ex.feeds, feeds.values())}
    ctx = RunContext(VariableStore(), np.random.default_rng(0))
    native = 0
    for op in ex.plan:
        ins = [env[t] for t in op.inputs]
        outs = execute_op(op, ins, ctx)
        env.update(zip(op.outputs, outs))
        if op.type != "fused_kernel" and op.opdef.lowering not in ("elementwise", "reduction"):
            continue
        try:
            kernel = lower_op(op)
        except CompileError:
            if op.type == "fused_kernel":
                raise
            continue
        got = llvm_cpu.run_kernel(kernel, ins)
        refs = [outs] + ([evaluate(kernel, ins)] if with_evaluator else [])
        for ref in refs:
            for g, want in zip(got, ref):
                _assert_close(g, np.asarray(want), kernel.text())
        native += 1
    return native


# ---- real fused kernels --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [gc.float32, gc.float64])
def test_elementwise_chain_with_broadcast(dtype):
    x = gc.placeholder(dtype, (5, 7), name="x")
    b = gc.placeholder(dtype, (7,), name="b")
    y = gc.tanh(x + b) * gc.exp(-x) + 0.5 * x * gc.sigmoid(x) - gc.log1p(gc.square(b)) / gc.sqrt(gc.abs(x) + 1)
    z = gc.maximum(gc.sin(x), gc.cos(b)) + gc.rsqrt(gc.abs(x) + 2) + gc.expm1(x * 0.1) + gc.erf(x)
    r = np.random.default_rng(0)
    assert _check_native([y, z], {x: r.normal(size=(5, 7)), b: r.normal(size=7)}, with_evaluator=True) >= 1


@pytest.mark.parametrize("op", [gc.reduce_sum, gc.reduce_mean, gc.reduce_max, gc.reduce_min, gc.reduce_prod])
@pytest.mark.parametrize("axis,keepdims", [(None, False), (0, False), (1, True), ((0, 2), False), (-1, True)])
def test_reductions_over_axes(op, axis, keepdims):
    x = gc.placeholder(gc.float64, (3, 4, 5), name="x")
    y = op(gc.exp(x) - 1.0, axis=axis, keepdims=keepdims)
    _check_native([y], {x: np.random.default_rng(2).uniform(-1, 1, (3, 4, 5))})


@pytest.mark.parametrize("dtype", [gc.float32, gc.int32, gc.int64])
def test_reductions_of_other_dtypes(dtype):
    x = gc.placeholder(dtype, (6, 9), name="x")
    outs = [gc.reduce_sum(x * 3, axis=1), gc.reduce_max(x - 1, axis=0), gc.reduce_min(x, axis=None),
            gc.reduce_prod(x, axis=1, keepdims=True)]
    values = np.random.default_rng(3).integers(-3, 4, (6, 9))
    _check_native(outs, {x: values}, with_evaluator=True)


def test_multi_output_softmax_kernels():
    x = gc.placeholder(gc.float32, (8, 5), name="x")
    b = gc.placeholder(gc.float32, (5,), name="b")
    h = x + b
    m = gc.reduce_max(h, axis=1, keepdims=True)
    e = gc.exp(h - m)
    loss = gc.reduce_sum(e, axis=1)
    r = np.random.default_rng(3)
    _check_native([loss, h], {x: r.normal(size=(8, 5)), b: r.normal(size=5)}, with_evaluator=True)


def test_mlp_training_step_kernels():
    fetches, feeds = mlp_step_graph(gc, np)
    assert _check_native(fetches, feeds) >= 4


@pytest.mark.parametrize("dtype", [gc.int32, gc.int64])
def test_integer_and_bool_kernels(dtype):
    a = gc.placeholder(dtype, (3, 4), name="a")
    d = gc.placeholder(dtype, (4,), name="d")
    y = gc.reduce_sum(gc.where(a > 2, a * 3, a - 1), axis=0)
    z = gc.reduce_any(gc.equal(a % 2, 0), axis=1)
    w = gc.reduce_all(gc.logical_or(a < 5, gc.logical_not(gc.greater_equal(a, d))), axis=0)
    q = gc.floordiv(a, d) + gc.mod(a, d) * gc.sign(a) + gc.abs(-a) + gc.maximum(a, d) - gc.minimum(a, -d)
    p = gc.pow(a, gc.constant(np.array([0, 1, 2, 3]), dtype=dtype))
    c = gc.cast(a, gc.float32) * 0.5 + gc.cast(gc.cast(a, gc.bool), gc.float32)
    values = np.arange(-5, 7).reshape(3, 4)
    _check_native([y, z, w, q, p, c], {a: values, d: np.array([3, -2, 5, -7])}, with_evaluator=True)


def test_reshape_and_constants_inside_kernel():
    x = gc.placeholder(gc.float64, (6, 4), name="x")
    y = gc.reshape(gc.exp(x), (4, 6)) * gc.constant(np.arange(6.0))
    z = gc.reshape(gc.reduce_sum(gc.reshape(x, (3, 8)) * gc.constant(np.linspace(0, 1, 8)), axis=1), (3, 1))
    _check_native([y, z], {x: np.random.default_rng(5).normal(size=(6, 4))}, with_evaluator=True)


def test_casts_and_rounding():
    x = gc.placeholder(gc.float32, (11,), name="x")
    outs = [gc.cast(x, gc.int32), gc.cast(x, gc.int64), gc.cast(x, gc.float64), gc.cast(x, gc.bool),
            gc.round(x), gc.floor(x), gc.ceil(x), gc.cast(gc.cast(x, gc.float64) * 1e3, gc.int32)]
    values = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.7, -3.7, 0.0, 1e6, -1e6], np.float32)
    _check_native(outs, {x: values}, with_evaluator=True)


def test_size_zero_dims():
    x = gc.placeholder(gc.float32, (0, 3), name="x")
    y = gc.reduce_sum(gc.exp(x), axis=0)
    z = gc.reduce_max(x, axis=1)
    _check_native([y, z], {x: np.zeros((0, 3))})


# ---- scalar semantics on special values, against NumPy directly ---------------------------------------
def _binary_kernel(op, dtype, n, out_dtype=None):
    out_dtype = out_dtype or dtype
    i = L.IVar("i0")
    body = L.Store("out0", i, L.Binary(op, L.Load("in0", i, dtype), L.Load("in1", i, dtype), out_dtype))
    return L.Kernel(f"{op}_{dtype.name}", (L.Param("in0", dtype, (n,), "input"), L.Param("in1", dtype, (n,), "input"),
                                           L.Param("out0", out_dtype, (n,), "output")), (L.Loop("i0", n, (body,)),))


def _unary_kernel(op, dtype, n):
    i = L.IVar("i0")
    body = L.Store("out0", i, L.Unary(op, L.Load("in0", i, dtype), dtype))
    return L.Kernel(f"{op}_{dtype.name}",
                    (L.Param("in0", dtype, (n,), "input"), L.Param("out0", dtype, (n,), "output")),
                    (L.Loop("i0", n, (body,)),))


_SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 2.5, -2.5, 7.0, -7.0, 1e30, -1e-30, 3.0]


def _pairs(dtype):
    a, b = np.meshgrid(np.array(_SPECIAL, dtype), np.array(_SPECIAL, dtype))
    return a.ravel(), b.ravel()


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("op,ref", [("maximum", np.maximum), ("minimum", np.minimum), ("floordiv", np.floor_divide),
                                    ("mod", np.mod), ("add", np.add), ("divide", np.divide), ("pow", np.power)])
def test_float_binary_special_values(dtype, op, ref):
    a, b = _pairs(dtype)
    got = llvm_cpu.run_kernel(_binary_kernel(op, dtype, a.size), [a, b])[0]
    with np.errstate(all="ignore"):
        want = ref(a, b)
    if op in ("maximum", "minimum"):
        # NaN propagates; signed zeros compare equal (see the module docstring)
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-6, equal_nan=True)
        # the sign of zero results matches too (Python's convention for mod/floordiv)
        zero = want == 0
        np.testing.assert_array_equal(np.signbit(got[zero]), np.signbit(want[zero]))


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("op,ref", [("equal", np.equal), ("not_equal", np.not_equal), ("less", np.less),
                                    ("less_equal", np.less_equal), ("greater", np.greater),
                                    ("greater_equal", np.greater_equal)])
def test_comparisons_with_nan_are_numpy_s(dtype, op, ref):
    a, b = _pairs(dtype)
    got = llvm_cpu.run_kernel(_binary_kernel(op, dtype, a.size, B), [a, b])[0]
    np.testing.assert_array_equal(got, ref(a, b))


@pytest.mark.parametrize("dtype", [I32, I64])
@pytest.mark.parametrize("op,ref", [("floordiv", np.floor_divide), ("mod", np.mod), ("multiply", np.multiply),
                                    ("add", np.add), ("subtract", np.subtract), ("maximum", np.maximum)])
def test_integer_binary_wraps_and_divides_like_numpy(dtype, op, ref):
    info = np.iinfo(dtype)
    vals = np.array([0, 1, -1, 2, -2, 7, -7, 13, -13, info.max, info.min, info.min + 1], dtype)
    a, b = (m.ravel() for m in np.meshgrid(vals, vals))
    got = llvm_cpu.run_kernel(_binary_kernel(op, dtype, a.size), [a, b])[0]
    with np.errstate(all="ignore"):
        want = ref(a, b)          # division by zero: NumPy's result is 0 (it only warns)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [I32, I64])
def test_integer_pow(dtype):
    base = np.array([0, 1, -1, 2, -2, 3, -3, 7, 12345, -12345, 2, 3], dtype)
    exp = np.array([0, 5, 7, 10, 11, 3, 4, 20, 3, 5, 40, 63], dtype)
    got = llvm_cpu.run_kernel(_binary_kernel("pow", dtype, base.size), [base, exp])[0]
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(got, np.power(base, exp))   # wraps modulo 2**bits like NumPy
    neg = llvm_cpu.run_kernel(_binary_kernel("pow", dtype, 4), [np.array([1, -1, -1, 5], dtype),
                                                                 np.array([-3, -3, -2, -1], dtype)])[0]
    np.testing.assert_array_equal(neg, [1, -1, 1, 0])   # truncated 1/x**-y (NumPy raises)


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("op,ref", [("sign", np.sign), ("abs", np.abs), ("round", np.round), ("floor", np.floor),
                                    ("ceil", np.ceil), ("negative", np.negative), ("sqrt", np.sqrt),
                                    ("reciprocal", np.reciprocal), ("square", np.square)])
def test_float_unary_special_values(dtype, op, ref):
    x = np.array(_SPECIAL + [0.5, 1.5, -0.5, 2.4999, 1e-45], dtype)
    got = llvm_cpu.run_kernel(_unary_kernel(op, dtype, x.size), [x])[0]
    with np.errstate(all="ignore"):
        want = ref(x)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("op", ["exp", "log", "log1p", "expm1", "sin", "cos", "tan", "tanh", "sigmoid", "erf",
                                "rsqrt"])
def test_transcendentals_match_numpy(dtype, op):
    from graphc.ops import registry
    r = np.random.default_rng(7)
    # huge arguments of sin/cos/tan are llvm_math's accuracy business (tests/test_llvm_math.py)
    special = [v for v in _SPECIAL if op not in ("sin", "cos", "tan") or abs(v) < 1e6]
    x = np.concatenate([r.uniform(-10, 10, 500), r.uniform(0, 2, 200), special, [-1.0, 88.0, -100.0]]).astype(dtype)
    got = llvm_cpu.run_kernel(_unary_kernel(op, dtype, x.size), [x])[0]
    want = registry.get(op).compute(x)
    tol = 2e-6 if dtype == F32 else 1e-13
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol, equal_nan=True)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))


def test_where_and_bool_ops_with_nan():
    n = 6
    i = L.IVar("i0")
    x, y = L.Load("in0", i, F32), L.Load("in1", i, F32)
    c = L.Binary("logical_or", L.Binary("greater", x, y, B), L.Unary("logical_not", L.Binary("equal", x, x, B), B), B)
    body = (L.Store("out0", i, L.Select(c, x, y, F32)), L.Store("out1", i, c),
            L.Store("out2", i, L.Cast(L.Cast(x, B), F64)))
    k = L.Kernel("where_nan", (L.Param("in0", F32, (n,), "input"), L.Param("in1", F32, (n,), "input"),
                               L.Param("out0", F32, (n,), "output"), L.Param("out1", B, (n,), "output"),
                               L.Param("out2", F64, (n,), "output")), (L.Loop("i0", n, body),))
    a = np.array([np.nan, 1, 2, -np.inf, 0, np.nan], np.float32)
    b = np.array([1, np.nan, 1, 0, -0.0, np.nan], np.float32)
    out, cond, as_bool = llvm_cpu.run_kernel(k, [a, b])
    want_c = (a > b) | ~(a == a)
    np.testing.assert_array_equal(cond, want_c)
    np.testing.assert_array_equal(out, np.where(want_c, a, b))
    np.testing.assert_array_equal(as_bool, a.astype(bool).astype(np.float64))
    for got, want in zip(out, evaluate(k, [a, b])[0]):
        assert got == want or (np.isnan(got) and np.isnan(want))


def test_float_to_int_cast_saturates():
    n = 6
    i = L.IVar("i0")
    k = L.Kernel("sat", (L.Param("in0", F64, (n,), "input"), L.Param("out0", I32, (n,), "output")),
                 (L.Loop("i0", n, (L.Store("out0", i, L.Cast(L.Load("in0", i, F64), I32)),)),))
    got = llvm_cpu.run_kernel(k, [np.array([np.nan, 1e20, -1e20, np.inf, -2.9, 2.9])])[0]
    # llvm.fptosi.sat: NaN → 0, overflow clamps (NumPy on x86 gives INT_MIN for all four)
    np.testing.assert_array_equal(got, [0, 2**31 - 1, -2**31, 2**31 - 1, -2, 2])


@pytest.mark.parametrize("op,dtype", [("max", F32), ("min", F64), ("add", F32), ("mul", F64)])
def test_reductions_propagate_nan(op, dtype):
    n = 10000
    x = np.random.default_rng(0).random(n).astype(dtype)
    x[7777] = np.nan
    k = _sum_kernel(n, dtype, op, {"max": -np.inf, "min": np.inf, "add": 0.0, "mul": 1.0}[op])
    assert np.isnan(llvm_cpu.run_kernel(k, [x])[0])
    x[7777] = 0.5
    want = {"max": np.max, "min": np.min, "add": np.sum, "mul": np.prod}[op](x)
    np.testing.assert_allclose(llvm_cpu.run_kernel(k, [x])[0], want, rtol=1e-5)


def test_bool_reductions():
    n = 5000
    for op, init, ref in (("and", True, np.all), ("or", False, np.any)):
        k = _sum_kernel(n, B, op, init)
        for x in (np.ones(n, bool), np.zeros(n, bool), np.arange(n) == 4321, np.arange(n) != 4321):
            assert llvm_cpu.run_kernel(k, [x])[0] == ref(x)


# ---- vectorization and accuracy -----------------------------------------------------------------------
def _sum_kernel(n, dtype, op="add", init=0.0, name=None):
    return L.Kernel(name or f"{op}_{np.dtype(dtype).name}_{n}",
                    (L.Param("in0", dtype, (n,), "input"), L.Param("out0", dtype, (), "output")),
                    (L.AccInit("acc0", dtype, init),
                     L.Loop("r0", n, (L.AccUpdate("acc0", op, L.Load("in0", L.IVar("r0"), dtype)),), parallel=False),
                     L.Store("out0", L.IConst(0), L.AccRef("acc0", dtype))))


def test_elementwise_f32_kernel_vectorizes():
    n = 1 << 20
    i = L.IVar("i0")
    x, y = L.Load("in0", i, F32), L.Load("in1", i, F32)
    v = L.Binary("add", L.Binary("multiply", x, y, F32), L.Binary("maximum", x, L.Const(0.0, F32), F32), F32)
    k = L.Kernel("axpy_relu", (L.Param("in0", F32, (n,), "input"), L.Param("in1", F32, (n,), "input"),
                               L.Param("out0", F32, (n,), "output")), (L.Loop("i0", n, (L.Store("out0", i, v),)),))
    ck = llvm_cpu.compile_kernel(k)
    assert re.search(r"<\d+ x float>", ck.optimized_ir), ck.optimized_ir
    r = np.random.default_rng(0)
    a, b = r.normal(size=n).astype(np.float32), r.normal(size=n).astype(np.float32)
    np.testing.assert_array_equal(ck(a, b)[0], a * b + np.maximum(a, 0))
    assert "vmov" in ck.module.assembly() or "mov" in ck.module.assembly()


def test_float32_sum_vectorizes_and_is_as_accurate_as_numpy():
    n = 1_000_000
    ck = llvm_cpu.compile_kernel(_sum_kernel(n, F32))
    assert re.search(r"fadd reassoc nsz <\d+ x float>", ck.optimized_ir)
    x = np.random.default_rng(11).random(n, dtype=np.float32)
    exact = np.sum(x, dtype=np.float64)
    err = abs(float(ck(x)[0]) - exact) / exact
    naive = abs(float(np.cumsum(x)[-1]) - exact) / exact      # a serial float32 sum
    numpy_err = abs(float(np.sum(x)) - exact) / exact
    assert naive > 1e-6
    assert err < 1e-6 and err < 5 * max(numpy_err, 1e-7), (err, numpy_err, naive)


def test_blocked_sum_over_several_axes_is_accurate():
    # a reduce_sum over all axes of (300, 2000): the outer sequential loop is blocked too
    x = gc.placeholder(gc.float32, (300, 2000), name="x")
    s = gc.reduce_sum(gc.abs(x), axis=None)
    ex = compile_run(s.graph, [s], [], [x], [(300, 2000)], gc.Config(backend="interpreter"),
                     get_backend("interpreter"))
    k = lower_op([op for op in ex.plan if op.type == "fused_kernel"][0])
    v = np.random.default_rng(12).random((300, 2000), dtype=np.float32)
    exact = np.sum(v, dtype=np.float64)
    assert abs(float(llvm_cpu.run_kernel(k, [v])[0]) - exact) / exact < 1e-6


@pytest.mark.parametrize("n", [4097, 4096 * 16 * 3 + 4097 + 5, 4096 * 16 * 16 + 1])
def test_blocked_sum_visits_every_element_once(n):
    # integer-valued float64: every summation order gives the exact sum, so
    # any lost or repeated chunk (remainders at several levels) shows
    x = np.random.default_rng(n).integers(-1000, 1000, n).astype(np.float64)
    i = L.IVar("r0")
    v = L.Load("in0", i, F64)
    body = (L.AccUpdate("acc0", "add", v), L.AccUpdate("acc1", "max", v),
            L.Store("out2", i, L.Binary("multiply", v, L.Const(2.0, F64), F64)))
    k = L.Kernel(f"blocked_{n}", (L.Param("in0", F64, (n,), "input"), L.Param("out0", F64, (), "output"),
                                  L.Param("out1", F64, (), "output"), L.Param("out2", F64, (n,), "output")),
                 (L.AccInit("acc0", F64, 0.0), L.AccInit("acc1", F64, -np.inf), L.Loop("r0", n, body, parallel=False),
                  L.Store("out0", L.IConst(0), L.AccRef("acc0", F64)),
                  L.Store("out1", L.IConst(0), L.AccRef("acc1", F64))))
    total, biggest, doubled = llvm_cpu.run_kernel(k, [x])
    assert total == x.sum() and biggest == x.max()
    np.testing.assert_array_equal(doubled, 2 * x)


def test_constant_arrays_become_globals():
    n = 3000
    r = np.random.default_rng(9)
    weights, mask = r.normal(size=n).astype(np.float32), r.random(n) < 0.5
    i = L.IVar("i0")
    v = L.Select(L.Load("const1", i, B), L.Binary("multiply", L.Load("in0", i, F32), L.Load("const0", i, F32), F32),
                 L.Const(-1.0, F32), F32)
    k = L.Kernel("consts", (L.Param("in0", F32, (n,), "input"), L.Param("out0", F32, (n,), "output")),
                 (L.Loop("i0", n, (L.Store("out0", i, v),)),), {"const0": weights, "const1": mask})
    x = r.normal(size=n).astype(np.float32)
    np.testing.assert_array_equal(llvm_cpu.run_kernel(k, [x])[0], np.where(mask, x * weights, np.float32(-1)))
    # same text, other constant values: a different kernel, not a cache hit
    k2 = L.Kernel("consts", k.params, k.body, {"const0": -weights, "const1": mask})
    np.testing.assert_array_equal(llvm_cpu.run_kernel(k2, [x])[0], np.where(mask, -x * weights, np.float32(-1)))


def _fused(fetches, feeds):
    ex = compile_run(fetches[0].graph, fetches, [], list(feeds), [np.shape(v) for v in feeds.values()],
                     gc.Config(backend="interpreter"), get_backend("interpreter"))
    return [lower_op(op) for op in ex.plan if op.type == "fused_kernel"]


def _interchanged(kernel):
    import llvmlite.ir as ir
    module = ir.Module()
    llvm_cpu.emit_kernel(module, kernel)
    return ".tile" in str(module)


@pytest.mark.parametrize("shape,axis", [((7, 2500), 0), ((3, 4, 5), (0, 1)), ((6, 5, 4), 1), ((5000, 3), 0)])
@pytest.mark.parametrize("dtype", [gc.float64, gc.int32])
def test_column_reductions_are_interchanged(shape, axis, dtype, monkeypatch):
    # reduced axes outside the contiguous one: rows outside, a tile of
    # column accumulators inside (2500 columns make 5 tiles here, the last
    # one shorter); every reduction kind, with full-shape and mean outputs
    # in the same kernel
    monkeypatch.setattr(llvm_cpu, "INTERCHANGE_TILE_BYTES", 4096)
    x = gc.placeholder(dtype, shape, name="x")
    h = x * 3 - 1
    outs = [gc.reduce_sum(h, axis=axis), gc.reduce_max(h, axis=axis, keepdims=True), gc.reduce_min(h, axis=axis),
            gc.reduce_any(h > 4, axis=axis), h]
    if dtype == gc.float64:
        outs.append(gc.reduce_mean(h, axis=axis))
    values = np.random.default_rng(sum(shape)).integers(-9, 9, shape)
    assert _check_native(outs, {x: values}) >= 1
    assert any(_interchanged(k) for k in _fused(outs, {x: values}))


def test_long_column_sums_are_blocked_and_accurate():
    x = gc.placeholder(gc.float32, (20000, 40), name="x")
    s = gc.reduce_sum(gc.abs(x), axis=0)
    v = np.random.default_rng(13).random((20000, 40), dtype=np.float32)
    (k,) = _fused([s], {x: v})
    assert _interchanged(k)
    got = llvm_cpu.run_kernel(k, [v])[0]
    exact = v.astype(np.float64).sum(axis=0)
    assert np.max(np.abs(got - exact) / exact) < 1e-6
    ints = np.random.default_rng(14).integers(0, 100, (20000, 40)).astype(np.float32)   # exact in any order
    np.testing.assert_array_equal(llvm_cpu.run_kernel(k, [ints])[0], ints.sum(axis=0))


# ---- driver behaviour ---------------------------------------------------------------------------------
def test_bad_inputs_are_errors_not_crashes():
    k = _sum_kernel(10, F32, name="validate")
    ck = llvm_cpu.compile_kernel(k)
    with pytest.raises(InvalidArgumentError, match="validate.*float32\\[10\\]"):
        ck(np.zeros(10, np.float64))
    with pytest.raises(InvalidArgumentError, match="float32\\[10\\]"):
        ck(np.zeros(11, np.float32))
    with pytest.raises(InvalidArgumentError, match="takes 1 inputs"):
        ck()
    with pytest.raises(InvalidArgumentError, match="output 0"):
        ck(np.zeros(10, np.float32), outputs=[np.zeros(2, np.float32)])
    x = np.arange(20, dtype=np.float32)[::2]                       # strided: copied, not rejected
    assert ck(x)[0] == x.sum()
    out = np.empty((), np.float32)
    assert ck(x, outputs=[out])[0] is out and out == x.sum()


def test_out_of_bounds_index_is_a_compile_error():
    k = L.Kernel("oob", (L.Param("in0", F32, (4,), "input"), L.Param("out0", F32, (4,), "output")),
                 (L.Loop("i0", 4, (L.Store("out0", L.IVar("i0"), L.Load("in0", L.IBin("+", L.IVar("i0"), L.IConst(1)),
                                                                            F32)),)),))
    with pytest.raises(CompileError, match="oob.*outside its 4 elements"):
        llvm_cpu.compile_kernel(k)


def test_ir_the_codegen_cannot_lower_is_a_compile_error_naming_the_kernel():
    i = L.IVar("i0")
    params = (L.Param("in0", I32, (4,), "input"), L.Param("out0", I32, (4,), "output"))
    bad = {
        "no LLVM lowering for exp": L.Unary("exp", L.Load("in0", i, I32), I32),
        "declared float32": L.Binary("add", L.Load("in0", i, I32), L.Load("in0", i, I32), F32),
        "operands must have one dtype": L.Binary("add", L.Load("in0", i, I32), L.Const(1, I64), I32),
    }
    for why, value in bad.items():
        k = L.Kernel("bad_ir", params, (L.Loop("i0", 4, (L.Store("out0", i, value),)),))
        with pytest.raises(CompileError, match=f"kernel bad_ir: .*{why}"):
            llvm_cpu.compile_kernel(k)
    k = L.Kernel("bad_ir", params, (L.Loop("i0", 4, (L.Store("in0", i, L.Load("in0", i, I32)),)),))
    with pytest.raises(CompileError, match="not an output"):
        llvm_cpu.compile_kernel(k)


def test_compiled_kernels_are_cached_by_text():
    k1 = _sum_kernel(123, F64, name="cached")
    k2 = _sum_kernel(123, F64, name="cached")
    a = llvm_cpu.compile_kernel(k1)
    assert llvm_cpu.compile_kernel(k2) is a
    many = llvm_cpu.compile_kernels([_sum_kernel(5, F64, name="m1"), _sum_kernel(6, F64, name="m2"), k1])
    assert many[2] is a and many[0].module is many[1].module
    assert set(many[0].module.timings) >= {"llvm: optimize", "llvm: codegen"}


def test_module_of_several_kernels_and_name_clashes():
    import llvmlite.ir as ir
    module = ir.Module("m")
    f1 = llvm_cpu.emit_kernel(module, _sum_kernel(3, F32, name="a/b"))
    f2 = llvm_cpu.emit_kernel(module, _sum_kernel(4, F32, name="a/b"))
    assert f1.name == "graphc.a_b" and f2.name != f1.name
    text = str(module)
    assert "noalias" in text and "ptr" in text


def test_kernel_without_noalias_runs_in_place():
    import ctypes
    import llvmlite.ir as ir
    from graphc.codegen import jit
    n = 1000
    i = L.IVar("i0")
    v = L.Unary("sqrt", L.Binary("add", L.Load("in0", i, F64), L.Load("in1", i, F64), F64), F64)
    k = L.Kernel("inplace", (L.Param("in0", F64, (n,), "input"), L.Param("in1", F64, (n,), "input"),
                             L.Param("out0", F64, (n,), "output")), (L.Loop("i0", n, (L.Store("out0", i, v),)),))
    module = ir.Module("inplace")
    fn = llvm_cpu.emit_kernel(module, k, noalias=False, symbol="inplace_kernel")
    assert fn.name == "inplace_kernel" and "noalias" not in str(module)
    compiled = jit.compile_module(module, name="inplace")
    call = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)(compiled.address("inplace_kernel"))
    a, b = np.arange(n, dtype=np.float64), np.full(n, 2.0)
    want = np.sqrt(a + b)
    call(a.ctypes.data, b.ctypes.data, a.ctypes.data)          # out0 is in0
    np.testing.assert_array_equal(a, want)


def test_compilation_writes_ir_and_assembly_into_the_dump(tmp_path):
    from graphc.dump import compiling
    from graphc.passes import extract
    x = gc.placeholder(gc.float32, (3,), name="x")
    y = gc.exp(x)
    program = extract(y.graph, [y], [], [x], [(3,)])
    with compiling(program, [], {}, str(tmp_path)) as log:
        llvm_cpu.compile_kernels([_sum_kernel(77, F32, name="dumped")], name="dumped_module")
    files = {name for name, _ in log.artifacts}
    assert {"dumped_module.ll", "dumped_module.opt.ll", "dumped_module.s"} <= files
    assert "llvm: optimize" in log.timings and "llvm: build IR" in log.timings
    with open(f"{log.directory}/dumped_module.s") as f:
        assert "graphc.dumped" in f.read()


# ---- random programs ------------------------------------------------------------------------------------
_UNARY = [gc.exp, gc.tanh, gc.sigmoid, gc.negative, gc.square, gc.abs, lambda t: gc.log1p(gc.square(t)),
          gc.sin, lambda t: gc.sqrt(gc.abs(t))]
_BINARY = [gc.add, gc.subtract, gc.multiply, gc.maximum, gc.minimum, lambda a, b: a / (gc.abs(b) + 1)]
_REDUCE = [gc.reduce_sum, gc.reduce_max, gc.reduce_mean, gc.reduce_min]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 6), st.integers(0, 8)), min_size=1, max_size=7),
       st.sampled_from([(2, 3), (4, 1), (1, 5), (3, 2, 2), (70,)]), st.sampled_from([gc.float32, gc.float64]),
       st.integers(0, 2**31 - 1))
def test_random_float_programs_run_natively(program, shape, dtype, seed):
    x = gc.placeholder(dtype, shape, name="x")
    y = gc.placeholder(dtype, shape[-1:], name="y")
    values = build_program([x, y], program, _UNARY, _BINARY, _REDUCE)
    r = np.random.default_rng(seed)
    _check_native(values, {x: r.uniform(-2, 2, shape), y: r.uniform(-2, 2, shape[-1:])})


_INT_BINARY = [gc.add, gc.subtract, gc.multiply, gc.maximum, gc.minimum,
               lambda a, b: gc.floordiv(a, gc.abs(b) + 1), lambda a, b: gc.mod(a, -gc.abs(b) - 1),
               lambda a, b: gc.where(a > b, a, b * 2)]


@settings(max_examples=20, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 6), st.integers(0, 8)), min_size=1, max_size=6),
       st.sampled_from([(2, 3), (3, 4), (9,)]), st.sampled_from([gc.int32, gc.int64]), st.integers(0, 2**31 - 1))
def test_random_integer_programs_run_natively(program, shape, dtype, seed):
    x = gc.placeholder(dtype, shape, name="x")
    y = gc.placeholder(dtype, shape[-1:], name="y")
    values = [x, y]
    for kind, a, b in program:
        u = values[a % len(values)]
        if kind == 0:
            values.append([gc.negative, gc.abs, gc.square, gc.sign][b % 4](u))
        elif kind == 1:
            values.append(_INT_BINARY[b % len(_INT_BINARY)](u, values[b % len(values)]))
        else:
            rank = len(u.shape)
            values.append([gc.reduce_sum, gc.reduce_max, gc.reduce_min][b % 3](u, axis=a % rank, keepdims=True))
    r = np.random.default_rng(seed)
    _check_native(values[2:], {x: r.integers(-50, 50, shape), y: r.integers(-50, 50, shape[-1:])})


# ---- random expression trees over every dtype, bit-exact against NumPy --------------------------------
# Only IEEE-exact operations (no transcendentals), so the native result must
# equal NumPy's bit for bit (NaN == NaN); the reference spells out the two
# documented differences: llvm.maximum/minimum's zero ordering and the
# saturating float → int cast.
_DTYPES = [F32, F64, I32, I64, B]
_EXACT_UNARY = {"f": ["negative", "abs", "sign", "square", "sqrt", "reciprocal", "floor", "ceil", "round"],
                "i": ["negative", "abs", "square", "sign"], "b": ["logical_not"]}
_EXACT_BINARY = {"f": ["add", "subtract", "multiply", "divide", "maximum", "minimum", "floordiv", "mod"],
                 "i": ["add", "subtract", "multiply", "maximum", "minimum", "floordiv", "mod", "pow"],
                 "b": ["logical_and", "logical_or", "equal", "not_equal"]}


def _random_expr(r, dtype, depth):
    kind = dtype.kind
    choice = r.integers(0, 6) if depth > 0 else 0
    if choice == 0:
        if r.random() < 0.2:
            value = {"f": r.choice([0.5, -2.0, 3.0, np.inf]), "i": r.integers(-3, 4), "b": bool(r.integers(0, 2))}[kind]
            return L.Const(value, dtype)
        return L.Load(f"in{_DTYPES.index(dtype)}", L.IVar("i0"), dtype)
    if choice == 1:
        return L.Unary(str(r.choice(_EXACT_UNARY[kind])), _random_expr(r, dtype, depth - 1), dtype)
    if choice == 2 and kind == "b":
        src = _DTYPES[r.integers(0, 5)]
        ops = _EXACT_BINARY["b"][2:] if src.kind == "b" else list(_CMP_OPS)
        return L.Binary(str(r.choice(ops)), _random_expr(r, src, depth - 1), _random_expr(r, src, depth - 1), dtype)
    if choice in (2, 3):
        op = str(r.choice(_EXACT_BINARY[kind]))
        x, y = _random_expr(r, dtype, depth - 1), _random_expr(r, dtype, depth - 1)
        if op == "pow":
            y = L.Binary("mod", y, L.Const(5, dtype), dtype)      # exponents 0..4
        return L.Binary(op, x, y, dtype)
    if choice == 4:
        return L.Select(_random_expr(r, B, depth - 1), _random_expr(r, dtype, depth - 1),
                        _random_expr(r, dtype, depth - 1), dtype)
    return L.Cast(_random_expr(r, _DTYPES[r.integers(0, 5)], depth - 1), dtype)


_CMP_OPS = {"equal": np.equal, "not_equal": np.not_equal, "less": np.less, "less_equal": np.less_equal,
            "greater": np.greater, "greater_equal": np.greater_equal}


def _numpy_expr(e, arrays):
    from graphc.ops import registry
    if isinstance(e, L.Const):
        return np.full(arrays[0].shape, e.value, e.dtype)
    if isinstance(e, L.Load):
        return arrays[int(e.buffer[2:])]
    if isinstance(e, L.Select):
        return np.where(_numpy_expr(e.cond, arrays), _numpy_expr(e.x, arrays), _numpy_expr(e.y, arrays))
    with np.errstate(all="ignore"):
        if isinstance(e, L.Cast):
            x = _numpy_expr(e.x, arrays)
            if x.dtype.kind == "f" and e.dtype.kind in "iu":        # llvm.fptosi.sat
                info = np.iinfo(e.dtype)
                x = np.where(np.isnan(x), 0, np.clip(x, info.min, info.max))
                return np.where(x >= float(info.max), info.max, x.astype(e.dtype)).astype(e.dtype)
            return x.astype(e.dtype)
        if isinstance(e, L.Unary):
            return registry.get(e.op).compute(_numpy_expr(e.x, arrays))
        x, y = _numpy_expr(e.x, arrays), _numpy_expr(e.y, arrays)
        if x.dtype.kind == "f" and e.op in ("maximum", "minimum"):
            # llvm.maximum/minimum: NaN wins, +0.0 > -0.0
            zeros = (x == 0) & (y == 0)
            pick = np.maximum(x, y) if e.op == "maximum" else np.minimum(x, y)
            signed = (x + y) if e.op == "maximum" else -((-x) + (-y))
            return np.where(zeros, signed, pick)
        if e.op in ("floordiv", "mod"):
            return (np.floor_divide if e.op == "floordiv" else np.mod)(x, y)
        if e.op == "pow":
            return np.power(x, y)
        return registry.get(e.op).compute(x, y)


def _random_inputs(r, n):
    out = []
    for dtype in _DTYPES:
        if dtype.kind == "f":
            v = r.normal(0, 4, n)
            special = r.random(n) < 0.2
            v[special] = r.choice([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e300, 2.5, -3.0], int(special.sum()))
            with np.errstate(over="ignore"):
                out.append(v.astype(dtype))
        elif dtype.kind == "i":
            v = r.integers(-20, 20, n)
            v[r.random(n) < 0.1] = np.iinfo(dtype).min
            out.append(v.astype(dtype))
        else:
            out.append(r.random(n) < 0.5)
    return out


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 4))
def test_random_expression_trees_are_bit_exact(seed, depth):
    r = np.random.default_rng(seed)
    n = 37
    outs = [_DTYPES[r.integers(0, 5)] for _ in range(2)]
    exprs = [_random_expr(r, d, depth) for d in outs]
    params = tuple(L.Param(f"in{j}", d, (n,), "input") for j, d in enumerate(_DTYPES)) + \
        tuple(L.Param(f"out{j}", d, (n,), "output") for j, d in enumerate(outs))
    body = tuple(L.Store(f"out{j}", L.IVar("i0"), e) for j, e in enumerate(exprs))
    k = L.Kernel(f"tree_{seed}_{depth}", params, (L.Loop("i0", n, body),))
    arrays = _random_inputs(r, n)
    got = llvm_cpu.run_kernel(k, arrays)
    for g, e in zip(got, exprs):
        want = _numpy_expr(e, arrays).astype(e.dtype)
        np.testing.assert_array_equal(g, want, err_msg=f"{e}")
        if g.dtype.kind == "f":      # signed zeros too (a NaN's sign means nothing)
            number = ~np.isnan(want)
            np.testing.assert_array_equal(np.signbit(g[number]), np.signbit(want[number]), err_msg=f"{e}")
