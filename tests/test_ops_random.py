"""Random ops: shapes, dtypes, moments, ranges, seeding (op seeds and
Session seeds), run-time shapes, errors."""
import numpy as np
import pytest

import graphc as gc
from conftest import run


def _session(seed=None):
    return gc.Session(config=gc.Config(backend="interpreter", seed=seed))


@pytest.mark.parametrize("dtype", [gc.float32, gc.float64])
def test_random_normal_shape_dtype_moments(dtype):
    out = gc.random_normal([200, 100], mean=2.0, stddev=3.0, dtype=dtype)
    assert out.shape == (200, 100) and out.dtype == dtype
    r = run(out)
    assert r.dtype == dtype and r.shape == (200, 100)
    assert abs(r.mean() - 2.0) < 0.1 and abs(r.std() - 3.0) < 0.1


@pytest.mark.parametrize("dtype", [gc.float32, gc.float64])
def test_random_uniform_float_range_and_moments(dtype):
    out = gc.random_uniform((100, 200), minval=-1.0, maxval=3.0, dtype=dtype)
    assert out.shape == (100, 200) and out.dtype == dtype
    r = run(out)
    assert r.dtype == dtype
    assert r.min() >= -1.0 and r.max() < 3.0
    assert abs(r.mean() - 1.0) < 0.05 and abs(r.var() - 16 / 12) < 0.05
    u = run(gc.random_uniform([1000], dtype=dtype))
    assert u.min() >= 0.0 and u.max() < 1.0


@pytest.mark.parametrize("dtype", [gc.int32, gc.int64])
def test_random_uniform_int(dtype):
    out = gc.random_uniform([5000], minval=-3, maxval=4, dtype=dtype)
    assert out.dtype == dtype
    r = run(out)
    assert r.dtype == dtype
    assert set(np.unique(r)) == set(range(-3, 4))


def test_truncated_normal_bounds_and_moments():
    out = gc.truncated_normal([20000], mean=1.0, stddev=0.5, dtype=gc.float64)
    r = run(out)
    assert r.min() >= 0.0 and r.max() <= 2.0
    assert abs(r.mean() - 1.0) < 0.02
    # std of a standard normal truncated to [-2, 2] is about 0.8796
    assert abs(r.std() - 0.5 * 0.8796) < 0.02


@pytest.mark.parametrize("shape", [[], [0], [3, 0, 2], 7, (2, 3)])
def test_shapes_including_scalar_and_empty(shape):
    for t in (gc.random_normal(shape), gc.random_uniform(shape), gc.truncated_normal(shape),
              gc.random_uniform(shape, maxval=5, dtype=gc.int32)):
        expect = (shape,) if isinstance(shape, int) else tuple(shape)
        assert t.shape == expect
        assert run(t).shape == expect


def test_run_time_shape_from_shape_of():
    x = gc.placeholder(gc.float32, (None, 3))
    r = gc.random_normal(gc.shape_of(x))
    assert r.shape == (None, 3)
    assert run(r, {x: np.zeros((5, 3))}).shape == (5, 3)
    dyn = gc.placeholder(gc.int32, (2,))
    u = gc.random_uniform(dyn)
    assert u.shape == (None, None)
    assert run(u, {dyn: [4, 2]}).shape == (4, 2)


def test_tensor_mean_stddev_and_bounds():
    mean = gc.placeholder(gc.float64, (3,))
    out = gc.random_normal([4000, 3], mean=mean, stddev=gc.constant(0.5, gc.float64), dtype=gc.float64)
    r = run(out, {mean: [-5.0, 0.0, 5.0]})
    np.testing.assert_allclose(r.mean(axis=0), [-5.0, 0.0, 5.0], atol=0.05)
    lo = gc.placeholder(gc.float32, ())
    u = run(gc.random_uniform([1000], minval=lo, maxval=lo + 1.0), {lo: 10.0})
    assert u.min() >= 10.0 and u.max() < 11.0


def test_two_runs_differ_and_two_ops_differ():
    a, b = gc.random_normal([10]), gc.random_normal([10])
    with _session() as s:
        a1, b1 = s.run([a, b])
        a2 = s.run(a)
    assert not np.array_equal(a1, a2)
    assert not np.array_equal(a1, b1)


def test_one_draw_per_run_is_shared_by_consumers():
    a = gc.random_uniform([5])
    r1, r2 = run([a * 1.0, a + 0.0])
    np.testing.assert_array_equal(r1, r2)


def test_op_seed_gives_same_sequence_in_new_sessions():
    a = gc.random_normal([6], seed=42)
    b = gc.random_uniform([6], maxval=100, dtype=gc.int64, seed=7)
    with _session() as s1:
        first = [s1.run([a, b]) for _ in range(3)]
    with _session() as s2:
        second = [s2.run([a, b]) for _ in range(3)]
    for (a1, b1), (a2, b2) in zip(first, second):
        np.testing.assert_array_equal(a1, a2)
        np.testing.assert_array_equal(b1, b2)
    assert not np.array_equal(first[0][0], first[1][0])         # successive runs still differ


def test_op_seed_same_in_a_rebuilt_graph():
    def build():
        g = gc.Graph()
        with g.as_default():
            t = gc.truncated_normal([4], seed=3)
        return g, t
    (g1, t1), (g2, t2) = build(), build()
    np.testing.assert_array_equal(run(t1, graph=g1), run(t2, graph=g2))


def test_different_op_seeds_differ():
    a, b = gc.random_normal([8], seed=1), gc.random_normal([8], seed=2)
    ra, rb = run([a, b])
    assert not np.array_equal(ra, rb)


def test_session_seed_makes_unseeded_ops_reproducible():
    a = gc.random_normal([5])
    with _session(seed=123) as s1:
        x1 = [s1.run(a), s1.run(a)]
    with _session(seed=123) as s2:
        x2 = [s2.run(a), s2.run(a)]
    with _session(seed=124) as s3:
        x3 = s3.run(a)
    np.testing.assert_array_equal(x1[0], x2[0])
    np.testing.assert_array_equal(x1[1], x2[1])
    assert not np.array_equal(x1[0], x1[1])
    assert not np.array_equal(x1[0], x3)


def test_random_shuffle():
    v = np.arange(20).reshape(10, 2)
    out = gc.random_shuffle(v, seed=9)
    assert out.shape == (10, 2) and out.dtype == v.dtype
    with _session() as s:
        r1, r2 = s.run(out), s.run(out)
    np.testing.assert_array_equal(np.sort(r1[:, 0]), v[:, 0])
    np.testing.assert_array_equal(r1[:, 1], r1[:, 0] + 1)          # rows move as a whole
    assert not np.array_equal(r1, r2)
    with _session() as s:
        np.testing.assert_array_equal(s.run(out), r1)
    with pytest.raises(gc.errors.ShapeError):
        gc.random_shuffle(gc.constant(1.0))


def test_random_ops_have_no_gradient():
    mean = gc.placeholder(gc.float64, ())
    x = gc.placeholder(gc.float64, (3,))
    y = gc.random_normal([3], mean=mean, dtype=gc.float64)
    g_mean = gc.gradients(gc.reduce_sum(y), [mean])[0]
    assert run(g_mean, {mean: 0.0}) == 3.0                          # the shift is differentiable
    assert gc.gradients(gc.reduce_sum(gc.random_shuffle(x)), [x])[0] is None


def test_errors():
    with pytest.raises(gc.errors.DTypeError):
        gc.random_normal([2], dtype=gc.int32)
    with pytest.raises(gc.errors.DTypeError):
        gc.random_uniform([2], dtype=gc.bool)
    with pytest.raises(gc.errors.InvalidArgumentError, match="maxval"):
        gc.random_uniform([2], dtype=gc.int32)
    with pytest.raises(gc.errors.InvalidArgumentError, match="minval"):
        gc.random_uniform([2], minval=5, maxval=5, dtype=gc.int32)
    with pytest.raises(gc.errors.InvalidArgumentError, match="seed"):
        gc.random_normal([2], seed=-1)
    with pytest.raises(gc.errors.ShapeError, match="unknown"):
        gc.random_normal([None, 2])
    with pytest.raises(gc.errors.ShapeError):
        gc.random_normal([-2, 2])
    with pytest.raises(gc.errors.DTypeError, match="random_standard_normal"):
        gc.random_normal(gc.constant([2.0, 3.0]))
    with pytest.raises(gc.errors.ShapeError, match="random_standard_normal"):
        gc.random_normal(gc.constant([[2, 3]]))
    hi = gc.placeholder(gc.int32, ())
    with pytest.raises(gc.errors.ExecutionError, match="random_uniform_int"):
        run(gc.random_uniform([2], minval=3, maxval=hi, dtype=gc.int32), {hi: 1})
