"""Elementwise ops against NumPy: every op in the elementwise table, cast,
where, clip_by_value and the composites; broadcasting, dtypes, size-0 dims,
run-time (None) dims, dtype promotion with weak Python scalars, bad dtypes."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp
from scipy import special

import graphc as gc
from conftest import run
from graphc.errors import DTypeError, ExecutionError, GraphcError, ShapeError

FLOATS = [np.float32, np.float64]
INTS = [np.int32, np.int64]
NUMERIC = FLOATS + INTS


def _values(shape, dtype, rng, low=-3.0, high=3.0, nonzero=False):
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if dtype.kind in "iu":
        a = rng.integers(int(low), int(high) + 1, size=shape).astype(dtype)
        return np.where(a == 0, 1, a).astype(dtype) if nonzero else a
    a = rng.uniform(low, high, size=shape).astype(dtype)
    return np.where(np.abs(a) < 0.1, 0.5, a).astype(dtype) if nonzero else a


def _sigmoid(x):
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(x.dtype)


# name -> (reference, allowed dtypes, input range)
UNARY = {
    "negative": (np.negative, NUMERIC, (-3, 3)),
    "abs": (np.abs, NUMERIC, (-3, 3)),
    "sign": (np.sign, NUMERIC, (-3, 3)),
    "square": (np.square, NUMERIC, (-3, 3)),
    "exp": (np.exp, FLOATS, (-3, 3)),
    "log": (np.log, FLOATS, (0.1, 5)),
    "log1p": (np.log1p, FLOATS, (-0.9, 5)),
    "expm1": (np.expm1, FLOATS, (-3, 3)),
    "sqrt": (np.sqrt, FLOATS, (0, 5)),
    "rsqrt": (lambda x: 1 / np.sqrt(x), FLOATS, (0.1, 5)),
    "reciprocal": (lambda x: 1 / x, FLOATS, (0.5, 5)),
    "sin": (np.sin, FLOATS, (-3, 3)),
    "cos": (np.cos, FLOATS, (-3, 3)),
    "tan": (np.tan, FLOATS, (-1.2, 1.2)),
    "tanh": (np.tanh, FLOATS, (-3, 3)),
    "sigmoid": (_sigmoid, FLOATS, (-8, 8)),
    "erf": (special.erf, FLOATS, (-3, 3)),
    "floor": (np.floor, FLOATS, (-3, 3)),
    "ceil": (np.ceil, FLOATS, (-3, 3)),
    "round": (np.round, FLOATS, (-3, 3)),
}


def _tol(dtype):
    return dict(rtol=2e-6, atol=1e-6) if np.dtype(dtype) == np.float32 else dict(rtol=1e-12, atol=1e-12)


def test_every_elementwise_table_op_is_tested():
    from graphc.ops import elementwise as ew
    assert {row[0] for row in ew.UNARY} == set(UNARY)
    assert {row[0] for row in ew.BINARY} == set(BINARY)


@pytest.mark.parametrize("name", sorted(UNARY))
@pytest.mark.parametrize("shape", [(), (5,), (2, 3), (0, 4)], ids=str)
def test_unary_matches_numpy(name, shape, rng):
    ref, dtypes, (lo, hi) = UNARY[name]
    for dtype in dtypes:
        x = _values(shape, dtype, rng, lo, hi)
        out = run(getattr(gc, name)(gc.constant(x)))
        expected = np.asarray(ref(x)).astype(dtype)
        assert out.dtype == dtype and out.shape == shape
        if np.dtype(dtype).kind == "f":
            np.testing.assert_allclose(out, expected, **_tol(dtype))
        else:
            np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("name", sorted(n for n, (_, d, _) in UNARY.items() if d == FLOATS))
def test_float_only_unary_ops_refuse_integers_naming_the_op(name):
    x = gc.placeholder(gc.int32, (3,), name="ints")
    with pytest.raises(DTypeError, match=rf"^{name} op '{name}'.*int32"):
        getattr(gc, name)(x)


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_ops_refuse_bool(name):
    with pytest.raises(DTypeError, match=name):
        getattr(gc, name)(gc.constant([True, False]))


def test_unary_with_unknown_dims_and_unknown_rank(rng):
    x = gc.placeholder(gc.float32, (None, 3))
    y = gc.placeholder(gc.float64, None)
    ex, ey = gc.exp(x), gc.tanh(y)
    assert ex.shape == (None, 3) and ey.shape is None
    for n in (1, 4):
        a, b = _values((n, 3), np.float32, rng), _values((n, 2, 2), np.float64, rng)
        out = run([ex, ey], {x: a, y: b})
        np.testing.assert_allclose(out[0], np.exp(a), rtol=1e-6)
        np.testing.assert_allclose(out[1], np.tanh(b), rtol=1e-12)


def test_special_values_follow_ieee_silently():
    x = gc.constant(np.array([0.0, -1.0, np.inf, -np.inf, np.nan], np.float32))
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(run(gc.log(x)), np.log(x.op.attrs["value"]))
        np.testing.assert_array_equal(run(gc.sqrt(x)), np.sqrt(x.op.attrs["value"]))
    s = run(gc.sigmoid(gc.constant([-1000.0, 1000.0, 0.0])))
    np.testing.assert_array_equal(s, [0.0, 1.0, 0.5])
    np.testing.assert_array_equal(run(gc.round(gc.constant([0.5, 1.5, 2.5, -0.5]))), [0, 2, 2, -0])


# name -> (reference, allowed dtypes, needs nonzero divisor)
BINARY = {
    "add": (np.add, NUMERIC, False),
    "subtract": (np.subtract, NUMERIC, False),
    "multiply": (np.multiply, NUMERIC, False),
    "divide": (np.divide, FLOATS, True),
    "floordiv": (np.floor_divide, NUMERIC, True),
    "mod": (np.mod, NUMERIC, True),
    "pow": (np.power, NUMERIC, False),
    "maximum": (np.maximum, NUMERIC, False),
    "minimum": (np.minimum, NUMERIC, False),
    "equal": (np.equal, NUMERIC + [np.bool_], False),
    "not_equal": (np.not_equal, NUMERIC + [np.bool_], False),
    "less": (np.less, NUMERIC, False),
    "less_equal": (np.less_equal, NUMERIC, False),
    "greater": (np.greater, NUMERIC, False),
    "greater_equal": (np.greater_equal, NUMERIC, False),
    "logical_and": (np.logical_and, [np.bool_], False),
    "logical_or": (np.logical_or, [np.bool_], False),
}

BROADCAST = [((3, 1), (1, 4)), ((5,), (2, 5)), ((), (3,)), ((2, 3), ()), ((), ()), ((0, 3), (1, 3)),
             ((2, 0), (2, 1)), ((4, 1, 3), (2, 1)), ((2, 3), (2, 3))]


def _binary_inputs(name, sa, sb, dtype, rng):
    ref, _, nonzero = BINARY[name]
    if name == "pow":
        a = _values(sa, dtype, rng, 0.5, 2.0) if np.dtype(dtype).kind == "f" else _values(sa, dtype, rng, -3, 3)
        b = _values(sb, dtype, rng, -2.0, 2.0) if np.dtype(dtype).kind == "f" else _values(sb, dtype, rng, 0, 3)
    else:
        a, b = _values(sa, dtype, rng), _values(sb, dtype, rng, nonzero=nonzero)
    return a, b


@pytest.mark.parametrize("name", sorted(BINARY))
@pytest.mark.parametrize("shapes", BROADCAST, ids=str)
def test_binary_matches_numpy_with_broadcasting(name, shapes, rng):
    ref, dtypes, _ = BINARY[name]
    sa, sb = shapes
    for dtype in dtypes:
        a, b = _binary_inputs(name, sa, sb, dtype, rng)
        out_t = getattr(gc, name)(gc.constant(a), gc.constant(b))
        expected = ref(a, b)
        assert out_t.shape == expected.shape
        out = run(out_t)
        assert out.dtype == expected.dtype, (name, dtype)
        if expected.dtype.kind == "f":
            np.testing.assert_allclose(out, expected, **_tol(expected.dtype))
        else:
            np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_with_run_time_dims(name, rng):
    ref, dtypes, _ = BINARY[name]
    dtype = dtypes[0]
    x = gc.placeholder(dtype, (None, 1), name="x")
    y = gc.placeholder(dtype, (None,), name="y")
    z = getattr(gc, name)(x, y)
    assert z.shape == (None, None)
    for n, m in [(2, 3), (1, 1), (0, 4)]:
        a, b = _binary_inputs(name, (n, 1), (m,), dtype, rng)
        np.testing.assert_allclose(run(z, {x: a, y: b}), ref(a, b), rtol=1e-6)


def test_run_time_dims_that_do_not_broadcast_raise_execution_error():
    x = gc.placeholder(gc.float32, (None, 3), name="x")
    y = gc.constant(np.ones((4, 1), np.float32))
    z = gc.add(x, y, name="bad_add")
    assert z.shape == (4, 3)
    np.testing.assert_array_equal(run(z, {x: np.ones((4, 3))}), np.full((4, 3), 2))
    with pytest.raises(ExecutionError, match=r"bad_add.*test_ops_elementwise.py:\d+"):
        run(z, {x: np.ones((2, 3))})


def test_static_broadcast_failure_is_a_shape_error_naming_the_op():
    a = gc.constant(np.ones((2, 3)))
    with pytest.raises(ShapeError, match=r"add op 'my_add'.*\(2, 3\).*\(4,\)"):
        gc.add(a, np.ones(4), name="my_add")


@pytest.mark.parametrize("name,dtype", [("add", np.bool_), ("less", np.bool_), ("pow", np.bool_),
                                        ("logical_and", np.float32), ("logical_or", np.int32)])
def test_binary_invalid_dtypes_raise_dtype_error_naming_the_op(name, dtype):
    x = gc.constant(np.zeros(3, dtype))
    with pytest.raises(DTypeError, match=rf"^{name} op '{name}'"):
        getattr(gc, name)(x, x)


def test_integer_division_semantics():
    a = np.array([7, -7, 7, -7], np.int32)
    b = np.array([2, 2, -2, -2], np.int32)
    ta, tb = gc.constant(a), gc.constant(b)
    np.testing.assert_array_equal(run(ta // tb), a // b)        # floor, like Python
    np.testing.assert_array_equal(run(ta % tb), a % b)          # sign of the divisor
    q = run(ta / tb)
    assert q.dtype == np.float64                                 # true division of ints: float64
    np.testing.assert_array_equal(q, a / b)
    with pytest.raises(ExecutionError, match="floordiv"):
        run(ta // gc.constant(np.array([1, 0, 1, 1], np.int32)))
    with pytest.raises(ExecutionError, match="pow"):
        run(ta ** gc.constant(np.array([1, -1, 1, 1], np.int32)))


def test_float_division_by_zero_is_ieee():
    out = run(gc.constant([1.0, -1.0, 0.0]) / gc.constant([0.0, 0.0, 0.0]))
    assert out[0] == np.inf and out[1] == -np.inf and np.isnan(out[2])


def test_maximum_minimum_propagate_nan():
    x = gc.constant([np.nan, 1.0])
    y = gc.constant([0.0, np.nan])
    assert np.isnan(run(gc.maximum(x, y))).all() and np.isnan(run(gc.minimum(x, y))).all()


def test_tf_spelling_aliases():
    a, b = gc.constant([6.0, 7.0]), gc.constant([4.0, 2.0])
    for alias, canonical in [("sub", "subtract"), ("mul", "multiply"), ("truediv", "divide"),
                             ("floor_div", "floordiv"), ("floormod", "mod")]:
        np.testing.assert_array_equal(run(getattr(gc, alias)(a, b)), run(getattr(gc, canonical)(a, b)))


# ---- dtype promotion ---------------------------------------------------------------------
@pytest.mark.parametrize("da", NUMERIC + [np.bool_])
@pytest.mark.parametrize("db", NUMERIC + [np.bool_])
def test_tensor_tensor_promotion_is_numpy(da, db):
    x, y = gc.placeholder(da, (2,)), gc.placeholder(db, (2,))
    expected = np.result_type(da, db)
    if expected == np.bool_:
        assert gc.equal(x, y).dtype == np.bool_
        with pytest.raises(DTypeError, match="add"):
            gc.add(x, y)
        return
    z = gc.add(x, y)
    assert z.dtype == expected
    a, b = np.array([1, 0], da), np.array([1, 1], db)
    out = run(z, {x: a, y: b})
    assert out.dtype == expected
    np.testing.assert_array_equal(out, np.add(a, b))


@pytest.mark.parametrize("make,expected", [
    (lambda x32, i32, b: x32 * 2.0, np.float32),
    (lambda x32, i32, b: 2.0 * x32, np.float32),
    (lambda x32, i32, b: x32 + 1, np.float32),
    (lambda x32, i32, b: i32 + 1, np.int32),
    (lambda x32, i32, b: 1 - i32, np.int32),
    (lambda x32, i32, b: i32 * 0.5, np.float32),          # a change of kind: the default float
    (lambda x32, i32, b: i32 + True, np.int32),
    (lambda x32, i32, b: b + 1, np.int32),
    (lambda x32, i32, b: x32 ** 2, np.float32),
    (lambda x32, i32, b: x32 < 1, np.bool_),
    (lambda x32, i32, b: gc.maximum(i32, 0), np.int32),
    (lambda x32, i32, b: x32 + np.ones(3, np.float64), np.float64),    # NumPy arrays keep their dtype
    (lambda x32, i32, b: i32 + np.int64(1), np.int64),                # and so do NumPy scalars
    (lambda x32, i32, b: x32 + gc.constant(1.0), np.float32),
    (lambda x32, i32, b: i32 + gc.constant(1), np.int32),
    (lambda x32, i32, b: gc.add(1, 2.0), np.float32),                  # all weak: float32, not float64
    (lambda x32, i32, b: gc.add(1, 2), np.int32),
])
def test_python_scalars_are_weak(make, expected):
    x32 = gc.placeholder(gc.float32, (3,), name="x32")
    i32 = gc.placeholder(gc.int32, (3,), name="i32")
    b = gc.placeholder(gc.bool, (3,), name="b")
    t = make(x32, i32, b)
    assert t.dtype == expected
    feed = {x32: np.ones(3, np.float32), i32: np.ones(3, np.int32), b: np.ones(3, bool)}
    feed = {k: v for k, v in feed.items() if any(k is p for p in _placeholders_of(t))}
    assert run(t, feed).dtype == expected


def _placeholders_of(t):
    seen, stack, out = set(), [t.op], []
    while stack:
        op = stack.pop()
        if op in seen:
            continue
        seen.add(op)
        if op.type == "placeholder":
            out.append(op.outputs[0])
        stack.extend(i.op for i in op.inputs)
    return out


def test_constant_default_dtypes():
    assert gc.constant(1.0).dtype == np.float32
    assert gc.constant(1).dtype == np.int32
    assert gc.constant(True).dtype == np.bool_
    assert gc.constant([1.5, 2]).dtype == np.float32
    assert gc.constant(2 ** 40).dtype == np.int64
    assert gc.constant(np.float64(1)).dtype == np.float64
    assert gc.constant(np.arange(3)).dtype == np.int64
    assert gc.constant(np.ones(2, np.float32)).dtype == np.float32
    assert gc.constant(3, dtype=gc.float64).dtype == np.float64


def test_weak_int_scalar_that_does_not_fit_is_an_error_not_a_wraparound():
    x = gc.placeholder(gc.int32, (2,))
    with pytest.raises(DTypeError, match="int32"):
        x + 2 ** 40
    with pytest.raises(DTypeError, match="int32"):
        gc.constant(2 ** 31, dtype=gc.int32)
    with pytest.raises(DTypeError):
        gc.constant(1.5, dtype=gc.int32)


def test_unsupported_dtypes_are_refused():
    for bad in (np.complex64, np.uint8, np.float16, "string"):
        with pytest.raises(DTypeError):
            gc.placeholder(bad, (2,))
    with pytest.raises(DTypeError):
        gc.constant(["a", "b"])
    with pytest.raises(DTypeError):
        gc.constant(np.ones(2, np.complex64))


# ---- cast ---------------------------------------------------------------------------------
ALL = NUMERIC + [np.bool_]


@pytest.mark.parametrize("src", ALL)
@pytest.mark.parametrize("dst", ALL)
def test_cast_matches_numpy_astype(src, dst):
    x = np.array([0, 1, -2, 3], dtype=np.float64)
    if np.dtype(src).kind == "f":
        x = np.array([0.0, 1.7, -2.7, 3.5, -0.5])
    a = x.astype(src)
    t = gc.cast(gc.constant(a), dst)
    assert t.dtype == dst
    out = run(t)
    assert out.dtype == dst
    np.testing.assert_array_equal(out, a.astype(dst))


def test_cast_truncates_toward_zero_and_is_a_no_op_for_the_same_dtype():
    x = gc.constant([1.9, -1.9, 0.5, -0.5])
    np.testing.assert_array_equal(run(gc.cast(x, gc.int32)), [1, -1, 0, 0])
    assert gc.cast(x, gc.float32) is x
    assert gc.cast(x, np.float64).dtype == np.float64
    assert gc.cast(x, "float64").dtype == np.float64
    with pytest.raises(DTypeError):
        gc.cast(x, np.complex128)
    empty = run(gc.cast(gc.constant(np.zeros((0, 2), np.float32)), gc.int64))
    assert empty.shape == (0, 2) and empty.dtype == np.int64


# ---- where / clip_by_value ----------------------------------------------------------------------
@pytest.mark.parametrize("sc,sx,sy", [((3, 1), (1, 4), ()), ((4,), (2, 4), (4,)), ((), (3,), (3,)),
                                      ((0, 2), (1, 2), ()), ((2, 3), (2, 3), (2, 3))], ids=str)
def test_where_broadcasts_all_three(sc, sx, sy, rng):
    c = rng.random(sc) < 0.5
    x, y = _values(sx, np.float64, rng), _values(sy, np.float64, rng)
    out = run(gc.where(gc.constant(c), x, y))
    np.testing.assert_array_equal(out, np.where(c, x, y))


def test_where_promotes_and_checks_its_condition():
    c = gc.constant([True, False, True])
    out_t = gc.where(c, gc.constant([1, 2, 3]), 0.5)
    assert out_t.dtype == np.float32
    np.testing.assert_array_equal(run(out_t), [1, 0.5, 3])
    assert gc.where(c, gc.constant([1, 2, 3]), 0).dtype == np.int32
    with pytest.raises(DTypeError, match=r"where op.*condition"):
        gc.where(gc.constant([1.0, 0.0, 1.0]), 1.0, 2.0)
    with pytest.raises(DTypeError, match="x and y"):
        gc.where(c)
    with pytest.raises(ShapeError, match="where"):
        gc.where(c, np.ones(4), 0.0)


def test_where_with_a_placeholder_condition():
    c = gc.placeholder(gc.bool, (None,))
    x = gc.placeholder(gc.float32, (None,))
    out = run(gc.where(c, x, -x), {c: [True, False], x: [1.0, 2.0]})
    np.testing.assert_array_equal(out, [1.0, -2.0])


@pytest.mark.parametrize("dtype", NUMERIC)
def test_clip_by_value_matches_numpy_clip(dtype, rng):
    x = _values((4, 5), dtype, rng, -5, 5)
    out = run(gc.clip_by_value(gc.constant(x), -2, 3))
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, np.clip(x, -2, 3))


def test_clip_by_value_with_broadcast_tensor_bounds(rng):
    x = _values((3, 4), np.float32, rng, -5, 5)
    lo = np.array([-1, -2, -3, -4], np.float32)
    hi = np.array([[1], [2], [3]], np.float32)
    out = run(gc.clip_by_value(x, gc.constant(lo), gc.constant(hi)))
    np.testing.assert_array_equal(out, np.minimum(np.maximum(x, lo), hi))
    assert run(gc.clip_by_value(gc.constant(np.zeros((0, 3), np.float32)), 0.0, 1.0)).shape == (0, 3)


# ---- composites ------------------------------------------------------------------------------
def test_composites(rng):
    a, b = _values((3, 4), np.float32, rng), _values((4,), np.float32, rng)
    np.testing.assert_allclose(run(gc.squared_difference(a, b)), (a - b) ** 2, rtol=1e-6)
    np.testing.assert_allclose(run(gc.add_n([a, a, b])), a + a + b, rtol=1e-6)
    assert run(gc.add_n([a], name="total")).shape == (3, 4)
    with pytest.raises(ValueError):
        gc.add_n([])
    x = np.array([1.0, np.nan, np.inf], np.float32)
    np.testing.assert_array_equal(run(gc.is_nan(x)), [False, True, False])
    p, q = np.array([True, True, False, False]), np.array([True, False, True, False])
    np.testing.assert_array_equal(run(gc.logical_xor(p, q)), p ^ q)
    np.testing.assert_array_equal(run(gc.logical_not(p)), ~p)
    with pytest.raises(DTypeError, match="logical_not"):
        gc.logical_not(gc.constant([1.0]))


# ---- randomized broadcasting ----------------------------------------------------------------
_HYPO_OPS = ["add", "subtract", "multiply", "maximum", "minimum", "less", "greater_equal", "equal"]


@settings(max_examples=60, deadline=None)
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, min_side=0, max_side=3),
       op=st.sampled_from(_HYPO_OPS),
       dtype=st.sampled_from([np.float32, np.float64, np.int32, np.int64]),
       seed=st.integers(0, 2 ** 16),
       feed_dims=st.booleans())
def test_random_broadcasting_matches_numpy(shapes, op, dtype, seed, feed_dims):
    rng = np.random.default_rng(seed)
    (sa, sb), result_shape = shapes.input_shapes, shapes.result_shape
    a, b = _values(sa, dtype, rng), _values(sb, dtype, rng)
    g = gc.Graph()
    with g.as_default():
        if feed_dims:   # static shapes unknown: broadcasting is resolved at run time
            x, y = gc.placeholder(dtype, (None,) * len(sa)), gc.placeholder(dtype, None)
            out = run(getattr(gc, op)(x, y), {x: a, y: b}, graph=g)
        else:
            t = getattr(gc, op)(gc.constant(a), gc.constant(b))
            assert t.shape == result_shape
            out = run(t, graph=g)
    expected = getattr(np, op)(a, b)
    assert out.shape == result_shape and out.dtype == expected.dtype
    np.testing.assert_array_equal(out, expected)


@settings(max_examples=30, deadline=None)
@given(x=hnp.arrays(np.float64, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
                    elements=st.floats(-1e3, 1e3)),
       lo=st.floats(-10, 0), hi=st.floats(0, 10))
def test_random_unary_chain_matches_numpy(x, lo, hi):
    g = gc.Graph()
    with g.as_default():
        t = gc.constant(x)
        y = gc.tanh(gc.clip_by_value(t, lo, hi)) * 2.0 - gc.abs(t) + gc.square(gc.sin(t))
        out = run(y, graph=g)
    expected = np.tanh(np.clip(x, lo, hi)) * 2.0 - np.abs(x) + np.square(np.sin(x))
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_errors_are_graphc_errors():
    assert issubclass(DTypeError, GraphcError) and issubclass(DTypeError, TypeError)
    assert issubclass(ShapeError, GraphcError) and issubclass(ShapeError, ValueError)
