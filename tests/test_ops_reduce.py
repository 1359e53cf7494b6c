"""Reductions against NumPy: every op in graphc/ops/reduce.py over several
shapes (scalars, size-0 dims), axis None/int/negative/tuple/empty, keepdims,
dtypes, unknown dims and rank, empty reductions, bad axes and dtypes."""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp
from scipy import special

import graphc as gc
from conftest import run
from graphc.errors import DTypeError, ExecutionError, InvalidArgumentError, ShapeError

FLOATS = [np.float32, np.float64]
INTS = [np.int32, np.int64]
NUMERIC = FLOATS + INTS


def _values(shape, dtype, rng):
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if dtype.kind in "iu":
        return rng.integers(-3, 4, size=shape).astype(dtype)
    return rng.uniform(-2, 2, size=shape).astype(dtype)


def _ident(kind, dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return -np.inf if kind == "max" else np.inf
    info = np.iinfo(dtype)
    return info.min if kind == "max" else info.max


# name -> (NumPy reference keeping the input dtype, allowed dtypes)
REDUCTIONS = {
    "reduce_sum": (lambda x, axis, keepdims: np.sum(x, axis=axis, keepdims=keepdims, dtype=x.dtype), NUMERIC),
    "reduce_prod": (lambda x, axis, keepdims: np.prod(x, axis=axis, keepdims=keepdims, dtype=x.dtype), NUMERIC),
    "reduce_mean": (lambda x, axis, keepdims: np.mean(x, axis=axis, keepdims=keepdims, dtype=x.dtype), FLOATS),
    "reduce_max": (lambda x, axis, keepdims: np.max(x, axis=axis, keepdims=keepdims,
                                                    initial=_ident("max", x.dtype)), NUMERIC),
    "reduce_min": (lambda x, axis, keepdims: np.min(x, axis=axis, keepdims=keepdims,
                                                    initial=_ident("min", x.dtype)), NUMERIC),
    "reduce_any": (lambda x, axis, keepdims: np.any(x, axis=axis, keepdims=keepdims), [np.bool_]),
    "reduce_all": (lambda x, axis, keepdims: np.all(x, axis=axis, keepdims=keepdims), [np.bool_]),
}

CASES = [((), None), ((), ()), ((5,), None), ((5,), 0), ((5,), -1), ((3, 4), None), ((3, 4), 0), ((3, 4), 1),
         ((3, 4), -2), ((3, 4), (0, 1)), ((3, 4), (-1, 0)), ((3, 4), ()), ((2, 3, 4), (0, 2)), ((2, 3, 4), -2),
         ((2, 3, 4), [1, 2]), ((0, 3), 0), ((0, 3), 1), ((0, 3), None), ((3, 0), (0, 1)), ((2, 0, 3), 1)]


def _close(out, expected):
    assert out.dtype == expected.dtype and out.shape == expected.shape
    if expected.dtype.kind == "f":
        np.testing.assert_allclose(out, expected, rtol=2e-6 if expected.dtype == np.float32 else 1e-12, atol=1e-6)
    else:
        np.testing.assert_array_equal(out, expected)


def _np_axis(axis):
    return tuple(axis) if isinstance(axis, list) else axis


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@pytest.mark.parametrize("shape,axis", CASES, ids=str)
@pytest.mark.parametrize("keepdims", [False, True])
def test_reduction_matches_numpy(name, shape, axis, keepdims, rng):
    ref, dtypes = REDUCTIONS[name]
    for dtype in dtypes:
        x = _values(shape, dtype, rng)
        t = getattr(gc, name)(gc.constant(x), axis=axis, keepdims=keepdims)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)    # NumPy's "mean of empty slice"
            expected = np.asarray(ref(x, _np_axis(axis), keepdims))
        assert t.shape == expected.shape and t.dtype == expected.dtype
        _close(run(t), expected)


def test_empty_reductions_give_the_identity():
    e = gc.constant(np.zeros((0, 2), np.float32))
    ei = gc.constant(np.zeros((0, 2), np.int32))
    eb = gc.constant(np.zeros((0, 2), bool))
    out = run([gc.reduce_sum(e, 0), gc.reduce_prod(e, 0), gc.reduce_max(e, 0), gc.reduce_min(e, 0),
               gc.reduce_mean(e, 0), gc.reduce_max(ei, 0), gc.reduce_min(ei), gc.reduce_any(eb), gc.reduce_all(eb)])
    np.testing.assert_array_equal(out[0], [0, 0])
    np.testing.assert_array_equal(out[1], [1, 1])
    np.testing.assert_array_equal(out[2], [-np.inf, -np.inf])
    np.testing.assert_array_equal(out[3], [np.inf, np.inf])
    assert np.isnan(out[4]).all()
    np.testing.assert_array_equal(out[5], [np.iinfo(np.int32).min] * 2)
    assert out[6] == np.iinfo(np.int32).max
    assert out[7] == False and out[8] == True  # noqa: E712


def test_sums_and_products_keep_the_integer_dtype():
    x = gc.constant(np.full(4, 2 ** 30, np.int32))
    s = run(gc.reduce_sum(x))
    assert s.dtype == np.int32          # TF semantics: no widening to int64
    assert run(gc.reduce_sum(gc.cast(x, gc.int64))) == 2 ** 32


def test_max_min_propagate_nan():
    x = gc.constant([[1.0, np.nan], [2.0, 3.0]])
    np.testing.assert_array_equal(np.isnan(run(gc.reduce_max(x, axis=1))), [True, False])
    np.testing.assert_array_equal(np.isnan(run(gc.reduce_min(x, axis=0))), [False, True])


@pytest.mark.parametrize("name", ["reduce_sum", "reduce_mean", "reduce_max", "reduce_min", "reduce_prod"])
def test_unknown_dims_and_unknown_rank(name, rng):
    ref = REDUCTIONS[name][0]
    x = gc.placeholder(gc.float64, (None, 3), name="x")
    r = gc.placeholder(gc.float64, None, name="r")
    t0, t1, tk = getattr(gc, name)(x, axis=0), getattr(gc, name)(x, axis=-1), getattr(gc, name)(x, keepdims=True)
    tr, tra = getattr(gc, name)(r, axis=-1), getattr(gc, name)(r)
    assert t0.shape == (3,) and t1.shape == (None,) and tk.shape == (1, 1)
    assert tr.shape is None and tra.shape == ()
    for n in (1, 4):
        a, b = _values((n, 3), np.float64, rng), _values((2, n, 2), np.float64, rng)
        outs = run([t0, t1, tk, tr, tra], {x: a, r: b})
        _close(outs[0], ref(a, 0, False))
        _close(outs[1], ref(a, -1, False))
        _close(outs[2], ref(a, None, True))
        _close(outs[3], ref(b, -1, False))
        _close(outs[4], np.asarray(ref(b, None, False)))


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
def test_bad_axes_name_the_op(name):
    dtype = REDUCTIONS[name][1][0]
    x = gc.constant(np.zeros((2, 3), dtype), name="x")
    fn = getattr(gc, name)
    with pytest.raises(ShapeError, match=rf"{name}.*out of range"):
        fn(x, axis=2)
    with pytest.raises(ShapeError, match=name):
        fn(x, axis=(0, -3))
    with pytest.raises(InvalidArgumentError, match=rf"{name}.*duplicate"):
        fn(x, axis=(1, -1))
    with pytest.raises(DTypeError, match=name):
        fn(x, axis=1.5)
    with pytest.raises(DTypeError, match=name):
        fn(x, axis=gc.constant(0))
    with pytest.raises(DTypeError, match=name):
        fn(x, axis=True)


def test_bad_axis_on_unknown_rank_fails_at_run_time_naming_the_op():
    r = gc.placeholder(gc.float32, None)
    t = gc.reduce_sum(r, axis=3, name="late_sum")
    with pytest.raises(ExecutionError, match=r"late_sum.*test_ops_reduce.py"):
        run(t, {r: np.ones((2, 2))})


@pytest.mark.parametrize("name,dtype", [("reduce_sum", np.bool_), ("reduce_max", np.bool_),
                                        ("reduce_mean", np.int32), ("reduce_mean", np.int64),
                                        ("reduce_any", np.float32), ("reduce_all", np.int32),
                                        ("argmax", np.bool_), ("argmin", np.bool_)])
def test_invalid_dtypes_raise_dtype_error_naming_the_op(name, dtype):
    with pytest.raises(DTypeError, match=rf"^{name} op '"):
        getattr(gc, name)(gc.constant(np.zeros(3, dtype)))


# ---- arg reductions ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["argmax", "argmin"])
@pytest.mark.parametrize("shape,axis", [((5,), None), ((5,), 0), ((3, 4), None), ((3, 4), 0), ((3, 4), 1),
                                        ((3, 4), -1), ((2, 3, 4), -2), ((0, 3), 1), ((1,), 0)], ids=str)
@pytest.mark.parametrize("dtype", NUMERIC)
def test_arg_reductions_match_numpy(name, shape, axis, dtype, rng):
    x = _values(shape, dtype, rng)     # small integer values: many ties, first index wins
    t = getattr(gc, name)(gc.constant(x), axis=axis)
    expected = getattr(np, name)(x, axis=axis)
    assert t.dtype == np.int64 and t.shape == np.shape(expected)
    out = run(t)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, expected)


def test_arg_reduction_output_type_and_unknown_dims(rng):
    x = gc.placeholder(gc.float32, (None, 4))
    t = gc.argmax(x, axis=1, output_type=gc.int32)
    assert t.dtype == np.int32 and t.shape == (None,)
    a = _values((3, 4), np.float32, rng)
    np.testing.assert_array_equal(run(t, {x: a}), np.argmax(a, axis=1))
    r = gc.placeholder(gc.float32, None)
    tr = gc.argmin(r, axis=-1)
    assert tr.shape is None
    np.testing.assert_array_equal(run(tr, {r: a}), np.argmin(a, axis=-1))
    with pytest.raises(DTypeError, match="argmax"):
        gc.argmax(x, output_type=gc.float32)


def test_arg_reduction_bad_axes_and_empty_inputs():
    x = gc.constant(np.zeros((2, 3), np.float32))
    with pytest.raises(ShapeError, match="argmax"):
        gc.argmax(x, axis=2)
    with pytest.raises(DTypeError, match="argmin"):
        gc.argmin(x, axis=(0, 1))
    with pytest.raises(ShapeError, match=r"argmax op.*size 0"):
        gc.argmax(gc.constant(np.zeros((0, 3), np.float32)), axis=0)
    with pytest.raises(ShapeError, match=r"argmin op.*empty"):
        gc.argmin(gc.constant(np.zeros((0, 3), np.float32)))
    e = gc.placeholder(gc.float32, (None,))
    with pytest.raises(ExecutionError, match="argmax"):
        run(gc.argmax(e), {e: np.zeros(0, np.float32)})


# ---- composite reductions ----------------------------------------------------------------------
needs_shape_ops = pytest.mark.skipif(not hasattr(gc, "squeeze"), reason="gc.squeeze (shape ops) not available yet")


@needs_shape_ops
@pytest.mark.parametrize("shape,axis", [((5,), None), ((3, 4), 1), ((3, 4), -2), ((2, 3, 4), (0, 2)),
                                        ((3, 4), None), ((), None), ((0, 3), 0)], ids=str)
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("dtype", FLOATS)
def test_reduce_logsumexp_matches_scipy(shape, axis, keepdims, dtype, rng):
    x = _values(shape, dtype, rng)
    t = gc.reduce_logsumexp(gc.constant(x), axis=axis, keepdims=keepdims)
    expected = np.asarray(special.logsumexp(x.astype(np.float64), axis=_np_axis(axis), keepdims=keepdims))
    # NumPy's keepdims shape (SciPy gives a 0-d input shape (1,))
    expected = expected.reshape(np.sum(x, axis=_np_axis(axis), keepdims=keepdims).shape)
    out = run(t)
    assert out.dtype == dtype and out.shape == expected.shape and t.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-6 if dtype == np.float32 else 1e-12)


@needs_shape_ops
def test_reduce_logsumexp_is_stable_and_handles_infinities():
    x = gc.constant(np.array([[1000.0, 1000.0], [-1000.0, -1000.0], [-np.inf, -np.inf], [np.inf, 0.0]]))
    out = run(gc.reduce_logsumexp(x, axis=1))
    np.testing.assert_allclose(out[:2], [1000 + np.log(2), -1000 + np.log(2)])
    assert out[2] == -np.inf and out[3] == np.inf
    r = gc.placeholder(gc.float64, None)
    np.testing.assert_allclose(run(gc.reduce_logsumexp(r), {r: np.zeros((2, 3))}), np.log(6))


def test_reduce_logsumexp_refuses_integers_naming_itself():
    with pytest.raises(DTypeError, match="reduce_logsumexp"):
        gc.reduce_logsumexp(gc.constant([1, 2]))


@pytest.mark.parametrize("axis,keepdims", [(None, False), (0, False), (-1, True), ((0, 1), False)])
def test_variance_std_and_count_nonzero(axis, keepdims, rng):
    x = _values((3, 4), np.float64, rng)
    x[0, 0] = 0.0
    out = run([gc.reduce_variance(x, axis, keepdims), gc.reduce_std(x, axis, keepdims),
               gc.count_nonzero(x, axis, keepdims), gc.count_nonzero(x > 0, axis, keepdims, dtype=gc.int32)])
    np.testing.assert_allclose(out[0], np.var(x, axis=axis, keepdims=keepdims), rtol=1e-12)
    np.testing.assert_allclose(out[1], np.std(x, axis=axis, keepdims=keepdims), rtol=1e-12)
    assert out[2].dtype == np.int64 and out[3].dtype == np.int32
    np.testing.assert_array_equal(out[2], np.count_nonzero(x, axis=axis, keepdims=keepdims))
    np.testing.assert_array_equal(out[3], np.count_nonzero(x > 0, axis=axis, keepdims=keepdims))


def test_reductions_accept_variables_and_python_data():
    v = gc.Variable(np.arange(6, dtype=np.float32).reshape(2, 3), name="v")
    assert run(gc.reduce_sum(v)) == 15
    np.testing.assert_array_equal(run(gc.reduce_max([[1, 5], [7, 2]], axis=0)), [7, 5])


@settings(max_examples=60, deadline=None)
@given(x=hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=4),
                    elements=st.floats(-100, 100)),
       data=st.data(), name=st.sampled_from(["reduce_sum", "reduce_max", "reduce_min", "reduce_prod"]),
       keepdims=st.booleans())
def test_random_axes_match_numpy(x, data, name, keepdims):
    axes = data.draw(st.lists(st.integers(-x.ndim, x.ndim - 1), unique_by=lambda a: a % x.ndim, max_size=x.ndim))
    g = gc.Graph()
    with g.as_default():
        out = run(getattr(gc, name)(gc.constant(x), axis=tuple(axes), keepdims=keepdims), graph=g)
    expected = np.asarray(REDUCTIONS[name][0](x, tuple(axes), keepdims))
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-12)
