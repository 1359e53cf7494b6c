"""Shape ops: forward results against NumPy, static shape inference (None
dims, unknown rank), errors, and gradients (finite differences, float64)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import graphc as gc
from conftest import run
from graphc.errors import DTypeError, ExecutionError, InvalidArgumentError, ShapeError

DTYPES = [np.float32, np.float64, np.int32, np.int64, np.bool_]


def _data(shape, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype) == np.bool_:
        return rng.random(shape) > 0.5
    return (rng.normal(size=shape) * 10).astype(dtype)


def _check(t, expected, feed=None, static=None):
    out = run(t, feed)
    assert out.dtype == expected.dtype
    assert out.shape == expected.shape
    np.testing.assert_array_equal(out, expected)
    if static is not None:
        assert t.shape == static


def _raises(exc, fn, *names):
    with pytest.raises(exc) as info:
        fn()
    for n in names:
        assert n in str(info.value), str(info.value)
    return info.value


# ---------------------------------------------------------------------------
# reshape
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,target,static", [
    ((2, 3, 4), [4, 6], (4, 6)),
    ((2, 3, 4), [-1], (24,)),
    ((2, 3, 4), [2, -1, 2], (2, 6, 2)),
    ((6,), [1, 6, 1], (1, 6, 1)),
    ((), [1, 1], (1, 1)),
    ((1, 1), [], ()),
    ((0, 3), [3, 0], (3, 0)),
    ((0, 3), [-1, 3], (0, 3)),
])
def test_reshape_static(dtype, shape, target, static):
    v = _data(shape, dtype)
    _check(gc.reshape(gc.constant(v), target), v.reshape(target), static=static)


def test_reshape_none_dims_and_feeds():
    x = gc.placeholder(gc.float32, (None, 3, 4))
    y = gc.reshape(x, [-1, 12])
    z = gc.reshape(x, [-1])
    assert y.shape == (None, 12) and z.shape == (None,)
    for n in (0, 1, 5):
        v = _data((n, 3, 4))
        _check(y, v.reshape(-1, 12), {x: v})
        _check(z, v.reshape(-1), {x: v})


def test_reshape_tuple_and_numpy_shapes():
    v = _data((2, 6))
    _check(gc.reshape(v, (3, 4)), v.reshape(3, 4))
    _check(gc.reshape(v, np.array([4, 3])), v.reshape(4, 3))
    _check(gc.reshape(v, 12), v.reshape(12))


def test_reshape_dynamic_shape_tensor():
    x = gc.placeholder(gc.float32, (None, 3, 4))
    s = gc.placeholder(gc.int32, (2,))
    y = gc.reshape(x, s)
    assert y.shape == (None, None)
    v = _data((2, 3, 4))
    _check(y, v.reshape(4, 6), {x: v, s: [4, 6]})
    _check(y, v.reshape(-1, 8), {x: v, s: [-1, 8]})
    # a list mixing ints and scalar tensors is a run-time shape
    y2 = gc.reshape(x, [gc.shape_of(x)[0], -1])
    assert y2.shape == (None, None)
    _check(y2, v.reshape(2, 12), {x: v})
    # int64 shape tensors work too
    y3 = gc.reshape(x, gc.cast(gc.shape_of(gc.transpose(x)), gc.int64))
    _check(y3, v.reshape(4, 3, 2), {x: v})


def test_reshape_shape_tensor_known_while_building_is_static():
    x = gc.constant(_data((2, 6)))
    y = gc.reshape(x, gc.constant([3, -1]))
    assert y.op.type == "reshape" and y.shape == (3, 4)
    other = gc.placeholder(gc.float32, (4, 3))
    z = gc.reshape(x, gc.shape_of(other))
    assert z.op.type == "reshape" and z.shape == (4, 3)
    assert gc.reshape(x, [gc.constant(6), 2]).shape == (6, 2)


def test_reshape_partial_static_value():
    x = gc.placeholder(gc.float32, (None, 12))
    n = gc.placeholder(gc.int32, ())
    y = gc.reshape(x, [n, 3, 4])
    assert y.shape == (None, 3, 4)
    v = _data((2, 12))
    _check(y, v.reshape(2, 3, 4), {x: v, n: 2})


def test_reshape_errors():
    x = gc.constant(_data((2, 3)))
    _raises(ShapeError, lambda: gc.reshape(x, [4, 2], name="bad_reshape"), "bad_reshape", "6 elements")
    _raises(ShapeError, lambda: gc.reshape(x, [-1, -1], name="two_holes"), "two_holes", "-1")
    _raises(ShapeError, lambda: gc.reshape(x, [-1, 4], name="no_fit"), "no_fit")
    _raises(ShapeError, lambda: gc.reshape(x, [None, 3]), "None")
    p = gc.placeholder(gc.float32, (None, 3))
    _raises(ShapeError, lambda: gc.reshape(p, [4], name="not_multiple"), "not_multiple", "multiple of 3")
    y = gc.reshape(p, [-1, 2], name="runtime_bad")
    _raises(ExecutionError, lambda: run(y, {p: _data((1, 3))}), "runtime_bad")
    s = gc.placeholder(gc.float32, (2,))
    _raises(DTypeError, lambda: gc.reshape(x, s))


# ---------------------------------------------------------------------------
# transpose / expand_dims / squeeze
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,perm", [
    ((2, 3), None), ((2, 3, 4), None), ((2, 3, 4), [1, 2, 0]), ((2, 3, 4), [-1, 0, -2]),
    ((), None), ((0, 3), [1, 0]), ((5,), [0]),
])
def test_transpose(dtype, shape, perm):
    v = _data(shape, dtype)
    t = gc.transpose(gc.constant(v), perm)
    _check(t, np.transpose(v, perm), static=np.transpose(v, perm).shape)


def test_transpose_none_dims_and_unknown_rank():
    x = gc.placeholder(gc.float32, (None, 3, 4))
    assert gc.transpose(x).shape == (4, 3, None)
    assert gc.transpose(x, [0, 2, 1]).shape == (None, 4, 3)
    u = gc.placeholder(gc.float32)
    assert gc.transpose(u).shape is None
    assert gc.transpose(u, [1, 0, 2]).shape == (None, None, None)
    v = _data((2, 3, 4))
    _check(gc.transpose(u), v.T, {u: v})
    _check(gc.transpose(u, [1, 0, 2]), v.transpose(1, 0, 2), {u: v})


def test_transpose_errors():
    x = gc.constant(_data((2, 3)))
    _raises(InvalidArgumentError, lambda: gc.transpose(x, [0, 0], name="dup_perm"), "dup_perm", "permutation")
    _raises(ShapeError, lambda: gc.transpose(x, [0, 1, 2], name="long_perm"), "long_perm")
    _raises(InvalidArgumentError, lambda: gc.transpose(x, [0, 5], name="big_perm"), "big_perm")


@pytest.mark.parametrize("shape,axis", [((), 0), ((), -1), ((2, 3), 0), ((2, 3), 1), ((2, 3), 2),
                                        ((2, 3), -1), ((2, 3), -3), ((0, 2), 1)])
def test_expand_dims(shape, axis):
    v = _data(shape)
    _check(gc.expand_dims(v, axis), np.expand_dims(v, axis), static=np.expand_dims(v, axis).shape)


def test_expand_dims_none_and_errors():
    x = gc.placeholder(gc.int32, (None, 2))
    assert gc.expand_dims(x, -1).shape == (None, 2, 1)
    assert gc.expand_dims(gc.placeholder(gc.int32), 0).shape is None
    u = gc.placeholder(gc.float32)
    v = _data((2, 3))
    _check(gc.expand_dims(u, -1), v[..., None], {u: v})
    _raises(ShapeError, lambda: gc.expand_dims(x, 3, name="far_axis"), "far_axis", "out of range")
    _raises(InvalidArgumentError, lambda: gc.expand_dims(x, 0.5))


@pytest.mark.parametrize("shape,axis", [((1, 3, 1), None), ((1, 3, 1), 0), ((1, 3, 1), -1), ((1, 3, 1), (0, 2)),
                                        ((1, 3, 1), [-1, 0]), ((1,), None), ((1, 1), None), ((3,), None),
                                        ((1, 0), 0), ((2, 3), ())])
def test_squeeze(shape, axis):
    v = _data(shape)
    np_axis = tuple(axis) if isinstance(axis, list) else axis
    expected = np.squeeze(v, np_axis)
    _check(gc.squeeze(v, axis), expected, static=expected.shape)


def test_squeeze_none_dims():
    x = gc.placeholder(gc.float32, (None, 1, 3))
    y = gc.squeeze(x, 1)
    assert y.shape == (None, 3)
    assert gc.squeeze(x).shape is None          # a None dim might be 1
    v = _data((1, 1, 3))
    _check(gc.squeeze(x), v.reshape(3), {x: v})
    w = _data((4, 1, 3))
    _check(y, w[:, 0], {x: w})
    z = gc.squeeze(x, 0, name="runtime_squeeze")
    assert z.shape == (1, 3)
    _raises(ExecutionError, lambda: run(z, {x: w}), "runtime_squeeze")


def test_squeeze_errors():
    x = gc.constant(_data((1, 3)))
    _raises(ShapeError, lambda: gc.squeeze(x, 1, name="sq_three"), "sq_three", "axis 1", "size is 3")
    _raises(ShapeError, lambda: gc.squeeze(x, 2, name="sq_far"), "sq_far")
    _raises(InvalidArgumentError, lambda: gc.squeeze(x, (0, 0), name="sq_dup"), "sq_dup")


# ---------------------------------------------------------------------------
# concat / stack / unstack / split
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes,axis", [
    ([(2, 3), (4, 3)], 0), ([(2, 3), (2, 1), (2, 0)], 1), ([(2, 3), (2, 5)], -1),
    ([(1, 2, 3), (1, 2, 3), (1, 2, 3)], -2), ([(3,)], 0), ([(0, 2), (0, 2)], 0),
])
def test_concat(dtype, shapes, axis):
    vs = [_data(s, dtype, seed=i) for i, s in enumerate(shapes)]
    expected = np.concatenate(vs, axis)
    _check(gc.concat([gc.constant(v) for v in vs], axis), expected, static=expected.shape)


def test_concat_none_dims_python_values_and_unknown_rank():
    x = gc.placeholder(gc.float32, (None, 3))
    y = gc.placeholder(gc.float32, (2, None))
    c = gc.concat([x, y], 0)
    assert c.shape == (None, 3)
    vx, vy = _data((4, 3)), _data((2, 3), seed=1)
    _check(c, np.concatenate([vx, vy]), {x: vx, y: vy})
    assert gc.concat([x, y], 1).shape == (2, None)
    # Python/NumPy data take the tensors' dtype
    c2 = gc.concat([x, [[1, 2, 3]]], 0)
    assert c2.dtype == np.float32
    _check(c2, np.concatenate([vx, [[1, 2, 3]]]).astype(np.float32), {x: vx})
    u = gc.placeholder(gc.float32)
    assert gc.concat([u, x], 0).shape == (None, 3)
    assert gc.concat([u, u], 0).shape is None
    _check(gc.concat([u, u], -1), np.concatenate([vx, vx], -1), {u: vx})


def test_concat_errors():
    a = gc.constant(_data((2, 3)))
    b = gc.constant(_data((3, 3)))
    _raises(ShapeError, lambda: gc.concat([a, b], 1, name="cat_dims"), "cat_dims", "dimension 0")
    _raises(ShapeError, lambda: gc.concat([a, gc.constant(_data((2,)))], 0, name="cat_rank"), "cat_rank", "rank")
    _raises(DTypeError, lambda: gc.concat([a, gc.constant(_data((2, 3), np.float64))], 0, name="cat_dt"), "cat_dt")
    _raises(ShapeError, lambda: gc.concat([a, a], 2, name="cat_axis"), "cat_axis")
    _raises(ShapeError, lambda: gc.concat([gc.constant(1.0), gc.constant(2.0)], 0, name="cat_sc"), "cat_sc")
    _raises(InvalidArgumentError, lambda: gc.concat([], 0))
    x = gc.placeholder(gc.float32, (None, 3))
    c = gc.concat([x, a], 1, name="cat_runtime")
    _raises(ExecutionError, lambda: run(c, {x: _data((3, 3))}), "cat_runtime")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,n,axis", [((2, 3), 3, 0), ((2, 3), 2, 1), ((2, 3), 1, 2), ((2, 3), 2, -1),
                                          ((2, 3), 2, -3), ((), 4, 0), ((0, 3), 2, 1)])
def test_stack_unstack(dtype, shape, n, axis):
    vs = [_data(shape, dtype, seed=i) for i in range(n)]
    expected = np.stack(vs, axis)
    s = gc.stack([gc.constant(v) for v in vs], axis)
    _check(s, expected, static=expected.shape)
    parts = gc.unstack(s, axis=axis)
    assert len(parts) == n
    for p, v in zip(run(parts), vs):
        np.testing.assert_array_equal(p, v)


def test_stack_python_scalars_and_convert_to_tensor():
    x = gc.placeholder(gc.float64, ())
    s = gc.stack([x, 2.0, 3])
    assert s.dtype == np.float64 and s.shape == (3,)
    _check(s, np.array([1.5, 2.0, 3.0]), {x: 1.5})
    _check(gc.stack([1, 2]), np.array([1, 2], np.int32))
    nested = gc.convert_to_tensor([[x, x], [x, x]])
    _check(nested, np.full((2, 2), 0.5), {x: 0.5})


def test_stack_unstack_none_dims():
    x = gc.placeholder(gc.float32, (None, 2))
    y = gc.placeholder(gc.float32, (3, None))
    s = gc.stack([x, y], axis=1)
    assert s.shape == (3, 2, 2)
    u = gc.unstack(x, num=4)
    assert [t.shape for t in u] == [(2,)] * 4
    v = _data((4, 2))
    for t, row in zip(run(u, {x: v}), v):
        np.testing.assert_array_equal(t, row)
    _raises(ExecutionError, lambda: run(u, {x: _data((3, 2))}))
    assert gc.unstack(gc.placeholder(gc.float32, (0, 2))) == []


def test_stack_unstack_errors():
    a = gc.constant(_data((2, 3)))
    _raises(ShapeError, lambda: gc.stack([a, gc.constant(_data((3, 2)))], name="stk_shape"), "stk_shape")
    _raises(ShapeError, lambda: gc.stack([a, a], axis=3, name="stk_axis"), "stk_axis")
    _raises(DTypeError, lambda: gc.stack([a, gc.constant(_data((2, 3), np.int32))], name="stk_dt"), "stk_dt")
    _raises(ShapeError, lambda: gc.unstack(gc.placeholder(gc.float32, (None, 2))), "pass num")
    _raises(ShapeError, lambda: gc.unstack(a, num=3, name="unstk"), "unstk")
    _raises(ShapeError, lambda: gc.unstack(a, axis=2, name="unstk_axis"), "unstk_axis")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,spec,axis", [
    ((6, 2), 3, 0), ((6, 2), 2, 1), ((6, 2), 1, -1), ((6, 2), [1, 2, 3], 0), ((6, 2), [4, -1], 0),
    ((6, 2), [0, 6, 0], 0), ((2, 5), [-1, 0], -1), ((0, 2), 2, 0),
])
def test_split(dtype, shape, spec, axis):
    v = _data(shape, dtype)
    parts = gc.split(v, spec, axis)
    if isinstance(spec, int):
        expected = np.split(v, spec, axis)
    else:
        sizes = list(spec)
        if -1 in sizes:
            sizes[sizes.index(-1)] = v.shape[axis] - (sum(sizes) + 1)
        expected = np.split(v, np.cumsum(sizes)[:-1], axis)
    assert len(parts) == len(expected)
    for p, e in zip(parts, expected):
        _check(p, e, static=e.shape)


def test_split_none_dims():
    x = gc.placeholder(gc.float32, (None, 3))
    parts = gc.split(x, 2)
    assert [p.shape for p in parts] == [(None, 3)] * 2
    parts2 = gc.split(x, [1, -1])
    assert [p.shape for p in parts2] == [(1, 3), (None, 3)]
    v = _data((4, 3))
    for p, e in zip(run(parts + parts2, {x: v}), np.split(v, 2) + np.split(v, [1])):
        np.testing.assert_array_equal(p, e)
    _raises(ExecutionError, lambda: run(parts[0], {x: _data((3, 3))}), "split")


def test_split_errors():
    v = gc.constant(_data((6, 2)))
    _raises(ShapeError, lambda: gc.split(v, 4, name="split_uneven"), "split_uneven", "4 equal parts")
    _raises(ShapeError, lambda: gc.split(v, [2, 3], name="split_sum"), "split_sum", "add up to 5")
    _raises(ShapeError, lambda: gc.split(v, [4, 3, -1], name="split_over"), "split_over")
    _raises(InvalidArgumentError, lambda: gc.split(v, [-1, -1], name="split_holes"), "split_holes")
    _raises(InvalidArgumentError, lambda: gc.split(v, 0, name="split_zero"), "split_zero")
    _raises(ShapeError, lambda: gc.split(v, 2, axis=2, name="split_axis"), "split_axis")


# ---------------------------------------------------------------------------
# broadcast_to / tile / fill
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,target", [((), (2, 3)), ((3,), (2, 3)), ((2, 1), (2, 4)), ((1, 1), (0, 5)),
                                          ((2, 3), (2, 3)), ((1,), (4, 1, 2))])
def test_broadcast_to(dtype, shape, target):
    v = _data(shape, dtype)
    _check(gc.broadcast_to(v, target), np.broadcast_to(v, target), static=target)


def test_broadcast_to_dynamic_and_errors():
    x = gc.placeholder(gc.float32, (None, 1))
    s = gc.placeholder(gc.int32, (2,))
    b = gc.broadcast_to(gc.constant(_data((3,))), s)
    assert b.shape == (None, 3)
    v = _data((3,))
    b = gc.broadcast_to(gc.constant(v), s)
    _check(b, np.broadcast_to(v, (4, 3)), {s: [4, 3]})
    like = gc.broadcast_to(gc.constant(v), gc.shape_of(gc.concat([x, x, x], 1)))
    assert like.shape == (None, 3)
    _check(like, np.broadcast_to(v, (2, 3)), {x: _data((2, 1))})
    _raises(ShapeError, lambda: gc.broadcast_to(gc.constant(v), [3, 2], name="bc_bad"), "bc_bad")
    _raises(ShapeError, lambda: gc.broadcast_to(gc.constant(_data((2, 3))), [3], name="bc_rank"), "bc_rank")
    bad = gc.broadcast_to(x, [3, 2], name="bc_runtime")
    _raises(ExecutionError, lambda: run(bad, {x: _data((2, 1))}), "bc_runtime")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,multiples", [((2, 3), [1, 1]), ((2, 3), [2, 3]), ((2, 3), [0, 2]), ((3,), [4]),
                                             ((), []), ((0, 2), [3, 1]), ((1, 2, 1), [2, 1, 3])])
def test_tile(dtype, shape, multiples):
    v = _data(shape, dtype)
    expected = np.tile(v, multiples) if multiples else v
    _check(gc.tile(v, multiples), expected.reshape([d * m for d, m in zip(shape, multiples)]),
           static=tuple(d * m for d, m in zip(shape, multiples)))


def test_tile_none_dims_and_errors():
    x = gc.placeholder(gc.float32, (None, 2))
    t = gc.tile(x, [3, 2])
    assert t.shape == (None, 4)
    assert gc.tile(x, [0, 1]).shape == (0, 2)
    v = _data((2, 2))
    _check(t, np.tile(v, (3, 2)), {x: v})
    _check(gc.tile(x, gc.constant([1, 2])), np.tile(v, (1, 2)), {x: v})
    _raises(ShapeError, lambda: gc.tile(x, [2], name="tile_rank"), "tile_rank")
    _raises(InvalidArgumentError, lambda: gc.tile(x, [-1, 2], name="tile_neg"), "tile_neg")


def test_fill_zeros_ones():
    _check(gc.zeros([2, 3]), np.zeros((2, 3), np.float32), static=(2, 3))
    _check(gc.ones((4,), dtype=gc.int64), np.ones(4, np.int64))
    _check(gc.zeros([], dtype=gc.bool), np.zeros((), np.bool_))
    _check(gc.ones([0, 2], dtype=np.float64), np.ones((0, 2)))
    _check(gc.fill([2, 2], 7), np.full((2, 2), 7, np.int32))
    _check(gc.fill([3], 2.5), np.full(3, 2.5, np.float32))
    s = gc.placeholder(gc.int32, (None,))
    z = gc.zeros(s, dtype=gc.float64)
    assert z.shape is None or z.shape == (None,) or z.shape == ()  # rank unknown when length unknown
    _check(z, np.zeros((2, 3)), {s: [2, 3]})
    x = gc.placeholder(gc.float32, (None, 3))
    o = gc.ones(gc.shape_of(x))
    assert o.shape == (None, 3)
    _check(o, np.ones((5, 3), np.float32), {x: _data((5, 3))})
    v = gc.placeholder(gc.float32, ())
    _check(gc.fill([2], v), np.full(2, 1.5, np.float32), {v: 1.5})
    _raises(ShapeError, lambda: gc.fill([2], gc.constant([1.0, 2.0])), "scalar")


@pytest.mark.parametrize("fn,value", [(gc.zeros_like, 0), (gc.ones_like, 1)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_zeros_ones_like(fn, value, dtype):
    x = gc.placeholder(dtype, (None, 3))
    y = fn(x)
    assert y.shape == (None, 3) and y.dtype == dtype
    for n in (0, 2):
        _check(y, np.full((n, 3), value, dtype), {x: _data((n, 3), dtype)})
    z = fn(x, dtype=gc.float64)
    _check(z, np.full((2, 3), value, np.float64), {x: _data((2, 3), dtype)})
    u = gc.placeholder(dtype)
    _check(fn(u), np.full((2, 1, 2), value, dtype), {u: _data((2, 1, 2), dtype)})


# ---------------------------------------------------------------------------
# pad
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["CONSTANT", "REFLECT", "SYMMETRIC", "constant", "reflect"])
@pytest.mark.parametrize("shape,paddings", [((3, 4), [[1, 2], [0, 3]]), ((4,), [[3, 1]]), ((2, 3), [[0, 0], [0, 0]]),
                                            ((3, 3, 3), [[1, 1], [2, 0], [0, 2]])])
def test_pad(dtype, mode, shape, paddings):
    v = _data(shape, dtype)
    expected = np.pad(v, paddings, mode=mode.lower())
    _check(gc.pad(v, paddings, mode), expected, static=expected.shape)


def test_pad_constant_values_and_edge_cases():
    v = _data((2, 3))
    _check(gc.pad(v, [[1, 0], [1, 1]], constant_values=-2.5), np.pad(v, [[1, 0], [1, 1]], constant_values=-2.5))
    iv = _data((2, 3), np.int32)
    _check(gc.pad(iv, [[1, 0], [1, 1]], constant_values=4), np.pad(iv, [[1, 0], [1, 1]], constant_values=4))
    _check(gc.pad(gc.constant(3.0), []), np.array(3.0, np.float32))
    _check(gc.pad(np.zeros((0, 2), np.float32), [[1, 1], [0, 0]]), np.zeros((2, 2), np.float32))
    _check(gc.pad(v, gc.constant([[1, 1], [0, 1]])), np.pad(v, [[1, 1], [0, 1]]))


def test_pad_none_dims_and_errors():
    x = gc.placeholder(gc.float32, (None, 3))
    p = gc.pad(x, [[1, 1], [2, 2]], "REFLECT", name="refl")
    assert p.shape == (None, 7)
    v = _data((4, 3))
    _check(p, np.pad(v, [[1, 1], [2, 2]], "reflect"), {x: v})
    _raises(ExecutionError, lambda: run(p, {x: _data((1, 3))}), "refl")
    c = gc.constant(v)
    _raises(ShapeError, lambda: gc.pad(c, [[4, 0], [0, 0]], "REFLECT", name="pad_far"), "pad_far", "at most 3")
    _raises(ShapeError, lambda: gc.pad(c, [[5, 0], [0, 0]], "SYMMETRIC", name="pad_sym"), "pad_sym")
    _raises(ShapeError, lambda: gc.pad(c, [[1, 0]], name="pad_rows"), "pad_rows")
    _raises(InvalidArgumentError, lambda: gc.pad(c, [[1, 0], [0, 1]], "WRAP", name="pad_mode"), "pad_mode")
    _raises(InvalidArgumentError, lambda: gc.pad(c, [[-1, 0], [0, 1]], name="pad_neg"), "pad_neg")
    _raises(DTypeError, lambda: gc.pad(gc.constant([1, 2]), [[1, 1]], constant_values=0.5))


# ---------------------------------------------------------------------------
# shape queries, one_hot, range, reverse
# ---------------------------------------------------------------------------
def test_shape_of_size_rank():
    x = gc.placeholder(gc.float32, (None, 3))
    s = gc.shape_of(x)
    assert s.shape == (2,) and s.dtype == np.int32
    v = _data((5, 3))
    _check(s, np.array([5, 3], np.int32), {x: v})
    _check(gc.shape_of(x, out_type=gc.int64), np.array([5, 3], np.int64), {x: v})
    _check(gc.size(x), np.array(15, np.int32), {x: v})
    _check(gc.size(x, out_type=gc.int64), np.array(15, np.int64), {x: v})
    _check(gc.rank(x), np.array(2, np.int32))
    u = gc.placeholder(gc.float32)
    assert gc.shape_of(u).shape == (None,)
    _check(gc.shape_of(u), np.array([2, 1, 4], np.int32), {u: _data((2, 1, 4))})
    _check(gc.rank(u), np.array(3, np.int32), {u: _data((2, 1, 4))})
    _check(gc.size(u), np.array(0, np.int32), {u: _data((2, 0, 4))})
    _check(gc.shape_of(gc.constant(1.0)), np.zeros(0, np.int32))
    _check(gc.size(gc.constant(1.0)), np.array(1, np.int32))
    _raises(DTypeError, lambda: gc.shape_of(x, out_type=gc.float32))


@pytest.mark.parametrize("shape,depth,axis", [((4,), 3, -1), ((4,), 3, 0), ((2, 3), 5, 1), ((2, 3), 5, -1),
                                              ((), 4, -1), ((0,), 2, -1), ((3,), 0, -1)])
@pytest.mark.parametrize("idx_dtype", [np.int32, np.int64])
def test_one_hot(shape, depth, axis, idx_dtype):
    rng = np.random.default_rng(1)
    idx = rng.integers(-1, depth + 1, size=shape).astype(idx_dtype)   # includes out-of-range values
    hot = (idx[..., None] == np.arange(depth)).astype(np.float32)
    expected = np.moveaxis(hot, -1, idx.ndim if axis == -1 else axis)
    _check(gc.one_hot(idx, depth, axis=axis), expected, static=expected.shape)


def test_one_hot_values_dtypes_and_errors():
    idx = np.array([0, 2, 1])
    out = gc.one_hot(idx, 3, on_value=5, off_value=-1, dtype=gc.int32)
    _check(out, np.where(idx[:, None] == np.arange(3), 5, -1).astype(np.int32))
    x = gc.placeholder(gc.int64, (None,))
    oh = gc.one_hot(x, 4, dtype=gc.float64)
    assert oh.shape == (None, 4)
    _check(oh, np.eye(4)[[3, 0]], {x: [3, 0]})
    _raises(DTypeError, lambda: gc.one_hot(gc.constant([0.0]), 2, name="oh_float"), "oh_float")
    _raises(ShapeError, lambda: gc.one_hot(gc.constant([0]), 2, axis=3, name="oh_axis"), "oh_axis")


def test_range():
    _check(gc.range(5), np.arange(5, dtype=np.int32))
    _check(gc.range(2, 9, 3), np.arange(2, 9, 3, dtype=np.int32))
    _check(gc.range(5, 0, -2), np.arange(5, 0, -2, dtype=np.int32))
    _check(gc.range(0.0, 1.0, 0.25), np.arange(0, 1, 0.25, dtype=np.float32))
    _check(gc.range(3, dtype=gc.float64), np.arange(3, dtype=np.float64))
    _check(gc.range(0), np.zeros(0, np.int32))
    n = gc.placeholder(gc.int32, ())
    r = gc.range(n)
    assert r.shape == (None,) and r.dtype == np.int32
    _check(r, np.arange(4, dtype=np.int32), {n: 4})
    _check(gc.range(1, n, 2), np.arange(1, 7, 2, dtype=np.int32), {n: 7})
    f = gc.placeholder(gc.float64, ())
    _check(gc.range(f, 2.0, 0.5), np.arange(0.5, 2.0, 0.5), {f: 0.5})
    _raises(InvalidArgumentError, lambda: gc.range(1, 5, 0))
    d = gc.placeholder(gc.int32, ())
    rz = gc.range(0, 5, d, name="range_zero")
    _raises(ExecutionError, lambda: run(rz, {d: 0}), "range_zero")


@pytest.mark.parametrize("shape,axis", [((3,), 0), ((2, 3), 1), ((2, 3), [0, 1]), ((2, 3, 4), [-1, 0]), ((0, 2), 0)])
def test_reverse(shape, axis):
    v = _data(shape)
    _check(gc.reverse(v, axis), np.flip(v, axis if isinstance(axis, int) else tuple(axis)), static=shape)


def test_reverse_none_dims():
    x = gc.placeholder(gc.int32, (None, 2))
    v = _data((3, 2), np.int32)
    _check(gc.reverse(x, 0), v[::-1], {x: v})
    _raises(ShapeError, lambda: gc.reverse(x, 2))


# ---------------------------------------------------------------------------
# hypothesis: reshape/transpose/pad round trips against NumPy
# ---------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(0, 4), min_size=0, max_size=4), data=st.data())
def test_hypothesis_layout_ops(shape, data):
    v = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    perm = data.draw(st.permutations(list(range(len(shape)))))
    pads = [data.draw(st.tuples(st.integers(0, 2), st.integers(0, 2))) for _ in shape]
    mult = [data.draw(st.integers(0, 2)) for _ in shape]
    with gc.Graph().as_default() as g:
        x = gc.placeholder(gc.float32, [None] * len(shape))
        outs = [gc.transpose(x, perm), gc.reshape(x, [-1]), gc.pad(x, pads), gc.tile(x, mult)]
        res = run(outs, {x: v}, graph=g)
    expected = [np.transpose(v, perm), v.reshape(-1), np.pad(v, pads) if shape else v,
                np.tile(v, mult).reshape([d * m for d, m in zip(shape, mult)]) if shape else v]
    for r, e in zip(res, expected):
        np.testing.assert_array_equal(r, e)


# ---------------------------------------------------------------------------
# gradients
# ---------------------------------------------------------------------------
A = np.random.default_rng(3).normal(size=(2, 3, 4))

GRAD_CASES = {
    "reshape": lambda x: gc.reshape(x, [4, -1]),
    "reshape_dynamic": lambda x: gc.reshape(x, [gc.shape_of(x)[0], -1]),
    "transpose": lambda x: gc.transpose(x, [2, 0, 1]),
    "transpose_default": lambda x: gc.transpose(x),
    "expand_dims": lambda x: gc.expand_dims(x, -1) * 2.0,
    "squeeze": lambda x: gc.squeeze(gc.expand_dims(x, 1), 1),
    "concat": lambda x: gc.concat([x, x * 2.0, x[:, :1]], axis=1),
    "stack": lambda x: gc.stack([x, x * 3.0], axis=-1),
    "unstack": lambda x: gc.unstack(x, axis=1)[1] * 2.0 + gc.unstack(x, axis=1)[2],
    "split_sizes": lambda x: gc.split(x, [1, -1], axis=2)[1],
    "split_even": lambda x: gc.split(x, 2, axis=0)[0] * gc.split(x, 2, axis=0)[1],
    "broadcast_to": lambda x: gc.broadcast_to(x[:, :1], [5, 2, 3, 4]),
    "tile": lambda x: gc.tile(x, [2, 1, 3]),
    "pad_constant": lambda x: gc.pad(x, [[1, 0], [0, 2], [1, 1]], constant_values=3.0),
    "pad_reflect": lambda x: gc.pad(x, [[1, 0], [0, 2], [3, 2]], "REFLECT"),
    "pad_symmetric": lambda x: gc.pad(x, [[1, 2], [3, 2], [3, 4]], "SYMMETRIC"),
    "fill": lambda x: gc.fill([3, 4], x[0, 0, 0]) * x[0],
    "reverse": lambda x: gc.reverse(x, [0, -1]),
    "ones_like": lambda x: x * gc.ones_like(x) + gc.zeros_like(x),
}


@pytest.mark.parametrize("name", sorted(GRAD_CASES))
def test_gradients(name):
    gc.test.check_gradients(GRAD_CASES[name], [A])


@pytest.mark.parametrize("name", ["concat", "tile", "pad_reflect", "split_sizes", "stack", "broadcast_to"])
def test_second_order_gradients(name):
    fn = GRAD_CASES[name]

    def grad_of(x):
        y = fn(x)
        (gx,) = gc.gradients(gc.reduce_sum(y * y * y), [x])
        return gx
    gc.test.check_gradients(grad_of, [A])


NONE_DIM_CASES = {
    "reshape": lambda x: gc.reshape(x, [-1, 4]),
    "reshape_dynamic": lambda x: gc.reshape(x, [gc.shape_of(x)[0], -1]),
    "transpose": lambda x: gc.transpose(x),
    "squeeze_all": lambda x: gc.squeeze(gc.expand_dims(x, 1)),
    "concat_none_axis": lambda x: gc.concat([x, x * 2.0, x[:1]], axis=0),
    "concat": lambda x: gc.concat([x, x * 2.0, x[:, :1]], axis=-2),
    "stack": lambda x: gc.stack([x, x * 3.0], axis=1),
    "unstack": lambda x: gc.unstack(x, num=3, axis=1)[1],
    "split": lambda x: gc.split(x, 2, axis=0)[1],
    "split_sizes": lambda x: gc.split(x, [1, -1], axis=1)[1] * 2.0,
    "broadcast_to": lambda x: gc.broadcast_to(x[:1], gc.shape_of(x)),
    "tile": lambda x: gc.tile(x, [2, 1, 3]),
    "pad": lambda x: gc.pad(x, [[1, 0], [0, 2], [1, 1]]),
    "pad_reflect": lambda x: gc.pad(x, [[1, 0], [0, 2], [3, 2]], "REFLECT"),
    "expand_dims": lambda x: gc.expand_dims(x, 0),
}


@pytest.mark.parametrize("name", sorted(NONE_DIM_CASES))
def test_gradients_none_dims(name):
    x = gc.placeholder(gc.float64, (None, None, 4))
    y = NONE_DIM_CASES[name](x)
    assert gc.test.compute_gradient_error(y, x, {x: A}) < 1e-6


def test_gradients_unknown_rank():
    x = gc.placeholder(gc.float64)
    for y in [gc.reshape(x, [-1]), gc.transpose(x), gc.squeeze(x), gc.expand_dims(x, -1)]:
        assert gc.test.compute_gradient_error(y, x, {x: A[:, :1]}) < 1e-6


def test_no_gradient_through_integer_ops():
    x = gc.placeholder(gc.float64, (None, 3))
    y = gc.reduce_sum(gc.cast(gc.shape_of(x), gc.float64)) + gc.reduce_sum(gc.zeros_like(x))
    assert gc.gradients(y, [x]) == [None]
    idx = gc.placeholder(gc.int32, (2,))
    h = gc.one_hot(idx, 3, dtype=gc.float64)
    assert gc.gradients(gc.reduce_sum(h * x[:2]), [x])[0] is not None
