"""Indexing ops: Tensor.__getitem__ (basic NumPy indexing and tensor
indices), gather, gather_nd, unsorted_segment_sum; static shapes, errors and
gradients (finite differences, float64)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import graphc as gc
from conftest import run
from graphc.errors import DTypeError, ExecutionError, InvalidArgumentError, ShapeError

V = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)


def _check(t, expected, feed=None, static=None):
    out = run(t, feed)
    expected = np.asarray(expected)
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


class _Key:
    def __getitem__(self, key):
        return key


K = _Key()

BASIC_KEYS = [
    K[0], K[-1], K[1, 2], K[1, 2, 3], K[-2, -3, -4], K[:], K[...], K[None], K[0:1], K[1:], K[:-1],
    K[::2], K[::-1], K[::-2], K[1::-1], K[-1:0:-2], K[5:], K[-10:10], K[3:1], K[:, 1], K[:, :, ::3],
    K[..., 1], K[..., None], K[None, ..., None], K[1, ..., 2], K[:, None, 1:, ::-2], K[1:, None, ..., ::2],
    K[0, None, 0, None, 0], K[np.int64(1)], K[slice(np.int32(1), None)], K[None, None], K[..., 1:3, :],
]


@pytest.mark.parametrize("key", BASIC_KEYS, ids=[repr(k) for k in BASIC_KEYS])
def test_basic_indexing_static(key):
    t = gc.constant(V)[key]
    expected = V[key]
    _check(t, expected, static=expected.shape)
    assert t.op.type == "strided_slice"


@pytest.mark.parametrize("key", BASIC_KEYS, ids=[repr(k) for k in BASIC_KEYS])
def test_basic_indexing_none_dims(key):
    x = gc.placeholder(gc.float32, (None, 3, None))
    t = x[key]
    expected = V[key]
    assert t.shape is not None and len(t.shape) == expected.ndim
    assert all(s is None or s == e for s, e in zip(t.shape, expected.shape))
    _check(t, expected, {x: V})


@pytest.mark.parametrize("key", BASIC_KEYS[:20], ids=[repr(k) for k in BASIC_KEYS[:20]])
def test_basic_indexing_unknown_rank(key):
    x = gc.placeholder(gc.float32)
    _check(x[key], V[key], {x: V})


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64, np.bool_])
def test_indexing_dtypes_and_scalars(dtype):
    v = (V % 3).astype(dtype)
    _check(gc.constant(v)[1, ::-1], v[1, ::-1])
    s = gc.constant(v[0, 0, 0])
    _check(s[...], v[0, 0, 0][...], static=())
    _check(s[None], v[0, 0, 0][None], static=(1,))
    _check(gc.constant(np.zeros((0, 3), dtype))[:, 1], np.zeros(0, dtype), static=(0,))


def test_attrs_are_normalized_and_hashable():
    x = gc.placeholder(gc.float32, (2, 3, 4))
    a, b, c = x[1], x[1, ...], x[1, :, :]
    assert a.op.attrs == b.op.attrs == c.op.attrs
    hash(a.op.attrs["spec"])
    assert x[..., 0].op.attrs["spec"] == x[:, :, 0].op.attrs["spec"]


def test_static_index_errors_name_op_and_tensor():
    x = gc.placeholder(gc.float32, (2, 3), name="xs")
    _raises(ShapeError, lambda: x[2], "strided_slice", "xs:0", "index 2", "size 2")
    _raises(ShapeError, lambda: x[:, -4], "xs:0", "axis 1")
    _raises(ShapeError, lambda: x[0, 0, 0], "too many indices", "xs:0")
    _raises(InvalidArgumentError, lambda: x[..., ...], "ellipsis")
    _raises(InvalidArgumentError, lambda: x[::0], "step")
    _raises(InvalidArgumentError, lambda: x[True])
    _raises(TypeError, lambda: x["a"])
    _raises(InvalidArgumentError, lambda: x[0.5:])
    _raises(DTypeError, lambda: x[gc.constant(1.0)])
    _raises(DTypeError, lambda: x[gc.constant([True, False])])


def test_runtime_index_errors():
    x = gc.placeholder(gc.float32, (None, 3))
    t = x[4]
    with pytest.raises(ExecutionError) as info:
        run(t, {x: np.zeros((2, 3), np.float32)})
    assert t.op.name in str(info.value)
    u = gc.placeholder(gc.float32)
    _raises(ExecutionError, lambda: run(u[0, 0], {u: np.zeros(3, np.float32)}))


def test_slice_bounds_from_known_tensors():
    x = gc.constant(V)
    other = gc.placeholder(gc.float32, (2, 1))
    _check(x[:, :gc.shape_of(other)[0]], V[:, :2])
    n = gc.placeholder(gc.int32, ())
    _raises(InvalidArgumentError, lambda: x[:n], "gather")


def test_variable_indexing():
    v = gc.Variable(V)
    _check(v[1, :2], V[1, :2])


# ---------------------------------------------------------------------------
# tensor indices (gather)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("i", [0, 1, -1, -2])
def test_scalar_tensor_index(i):
    x = gc.placeholder(gc.float32, (None, 3, 4))
    idx = gc.placeholder(gc.int32, ())
    _check(x[idx], V[i], {x: V, idx: i}, static=(3, 4))
    _check(x[:, idx], V[:, i], {x: V, idx: i}, static=(None, 4))
    _check(x[idx, 1:, idx], V[i, 1:, i], {x: V, idx: i}, static=(2,))
    _check(x[..., idx], V[..., i], {x: V, idx: i}, static=(None, 3))
    _check(x[None, idx, ::-1], V[None, i, ::-1], {x: V, idx: i}, static=(1, 3, 4))
    j = gc.placeholder(gc.int64, ())
    _check(x[idx, j], V[i, 2], {x: V, idx: i, j: 2})


def test_tensor_index_out_of_range():
    x = gc.placeholder(gc.float32, (None, 3))
    idx = gc.placeholder(gc.int32, ())
    t = x[idx]
    _raises(ExecutionError, lambda: run(t, {x: np.zeros((2, 3), np.float32), idx: 2}), "out of range")
    _raises(ExecutionError, lambda: run(t, {x: np.zeros((2, 3), np.float32), idx: -3}), "out of range")


def test_index_arrays():
    x = gc.constant(V)
    _check(x[[1, 0, 1]], V[[1, 0, 1]])
    _check(x[:, np.array([[2, 0], [1, 1]])], V[:, np.array([[2, 0], [1, 1]])])
    _check(x[..., gc.constant([-1, 0])], V[..., [-1, 0]])
    _check(x[None, 1:, [2]], V[None, 1:, [2]])
    _raises(InvalidArgumentError, lambda: x[0, [1, 2]], "index array")
    _raises(InvalidArgumentError, lambda: x[[0], [1, 2]], "index array")


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_hypothesis_basic_indexing(data):
    shape = tuple(data.draw(st.lists(st.integers(0, 4), min_size=0, max_size=4)))
    v = np.arange(int(np.prod(shape)), dtype=np.int32).reshape(shape)
    items = []
    dims_left = len(shape)
    for d in shape:
        kind = data.draw(st.sampled_from(["int", "slice", "newaxis", "stop"] if d else ["slice", "newaxis", "stop"]))
        if kind == "stop":
            break
        if kind == "newaxis":
            items.append(None)
        if kind == "int":
            items.append(data.draw(st.integers(-d, d - 1)))
        else:
            bound = st.one_of(st.none(), st.integers(-6, 6))
            step = data.draw(st.one_of(st.none(), st.integers(-3, 3).filter(bool)))
            items.append(slice(data.draw(bound), data.draw(bound), step))
        dims_left -= 1
    if data.draw(st.booleans()):
        # anywhere when it stands for no dims; otherwise last, so that the
        # drawn integer indices keep their dims
        items.insert(data.draw(st.integers(0, len(items))) if dims_left == 0 else len(items), Ellipsis)
    key = tuple(items)
    expected = v[key]
    with gc.Graph().as_default() as g:
        c = gc.constant(v)[key]
        p = gc.placeholder(gc.int32, [None] * len(shape))
        out_c, out_p = run([c, p[key]], {p: v}, graph=g)
    assert c.shape == expected.shape
    np.testing.assert_array_equal(out_c, expected)
    np.testing.assert_array_equal(out_p, expected)


# ---------------------------------------------------------------------------
# gather
# ---------------------------------------------------------------------------
def _np_gather(params, indices, axis, batch_dims):
    if batch_dims == 0:
        return np.take(params, indices, axis=axis)
    return np.stack([_np_gather(p, i, axis - 1, batch_dims - 1) for p, i in zip(params, indices)])


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64, np.bool_])
@pytest.mark.parametrize("idx_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("idx_shape,axis", [((), 0), ((3,), 0), ((2, 2), 1), ((5,), 2), ((2, 1), -1), ((0,), 1),
                                            ((4,), -3)])
def test_gather(dtype, idx_dtype, idx_shape, axis):
    params = (V % 5).astype(dtype)
    dim = params.shape[axis]
    indices = np.random.default_rng(0).integers(0, dim, size=idx_shape).astype(idx_dtype)
    expected = np.take(params, indices, axis=axis)
    _check(gc.gather(params, indices, axis=axis), expected, static=expected.shape)


@pytest.mark.parametrize("batch_dims,axis,idx_shape", [(1, 1, (2, 5)), (1, 2, (2, 3)), (2, 2, (2, 3, 2)),
                                                        (-1, 1, (2, 4)), (1, None, (2, 2, 2))])
def test_gather_batch_dims(batch_dims, axis, idx_shape):
    rng = np.random.default_rng(1)
    b = batch_dims if batch_dims >= 0 else batch_dims + len(idx_shape)
    ax = b if axis is None else axis
    indices = rng.integers(0, V.shape[ax], size=idx_shape).astype(np.int32)
    expected = _np_gather(V, indices, ax, b)
    _check(gc.gather(V, indices, axis=axis, batch_dims=batch_dims), expected, static=expected.shape)


def test_gather_none_dims_and_errors():
    p = gc.placeholder(gc.float32, (None, 4))
    i = gc.placeholder(gc.int32, (None,))
    g = gc.gather(p, i, name="my_gather")
    assert g.shape == (None, 4)
    pv = V[0]
    _check(g, pv[[2, 0, 2]], {p: pv, i: [2, 0, 2]})
    _check(g, np.zeros((0, 4), np.float32), {p: pv, i: np.zeros(0, np.int32)})
    e = _raises(ExecutionError, lambda: run(g, {p: pv, i: [0, 3]}), "my_gather", "out of range")
    assert "indices[1] = 3" in str(e)
    _raises(ExecutionError, lambda: run(g, {p: pv, i: [-1]}), "my_gather")
    _raises(ExecutionError, lambda: run(g, {p: np.zeros((0, 4), np.float32), i: [0]}), "my_gather")
    _raises(DTypeError, lambda: gc.gather(p, gc.constant([0.0]), name="g_float"), "g_float")
    _raises(ShapeError, lambda: gc.gather(p, i, axis=2, name="g_axis"), "g_axis")
    _raises(ShapeError, lambda: gc.gather(gc.constant(1.0), [0], name="g_scalar"), "g_scalar")
    _raises(ShapeError, lambda: gc.gather(V, np.zeros((3, 2), np.int32), axis=1, batch_dims=1, name="g_b"), "g_b")
    _raises(ShapeError, lambda: gc.gather(V, np.zeros((2, 2), np.int32), axis=0, batch_dims=1, name="g_ba"), "g_ba")
    u = gc.placeholder(gc.float32)
    assert gc.gather(u, [0]).shape is None
    _check(gc.gather(u, [1, 0], axis=-1), V[..., [1, 0]], {u: V})


# ---------------------------------------------------------------------------
# gather_nd / unsorted_segment_sum
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("indices", [[[0, 1], [1, 2]], [[1]], [[[0, 1, 2]], [[1, 2, 3]]], np.zeros((3, 0), np.int32),
                                     np.zeros((0, 2), np.int32)])
def test_gather_nd(indices):
    idx = np.asarray(indices, dtype=np.int32)
    k = idx.shape[-1]
    out_shape = idx.shape[:-1] + V.shape[k:]
    expected = np.empty(out_shape, V.dtype)
    for pos in np.ndindex(*idx.shape[:-1]):
        expected[pos] = V[tuple(idx[pos])]
    _check(gc.gather_nd(V, idx), expected, static=out_shape)


def test_gather_nd_errors():
    p = gc.placeholder(gc.float32, (None, 3))
    i = gc.placeholder(gc.int64, (None, 2))
    g = gc.gather_nd(p, i, name="gnd")
    assert g.shape == (None,)
    pv = V[:, :, 0]
    _check(g, pv[[1, 0], [2, 1]], {p: pv, i: [[1, 2], [0, 1]]})
    _raises(ExecutionError, lambda: run(g, {p: pv, i: [[1, 3]]}), "gnd", "out of range")
    _raises(ShapeError, lambda: gc.gather_nd(V, np.zeros((2, 4), np.int32), name="gnd_k"), "gnd_k")
    _raises(ShapeError, lambda: gc.gather_nd(V, np.int32(0), name="gnd_r"), "gnd_r")
    _raises(InvalidArgumentError, lambda: gc.gather_nd(V, [[0]], batch_dims=1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64])
@pytest.mark.parametrize("ids,n", [([0, 1, 0], 2), ([2, -1, 2], 4), ([[0, 1, 1], [3, 0, -1]], 4), ([], 3), ([1, 1], 0)])
def test_unsorted_segment_sum(dtype, ids, n):
    ids = np.asarray(ids, dtype=np.int32)
    if n == 0:
        ids = np.zeros((0,), np.int32)
    data = np.random.default_rng(2).integers(-9, 9, size=ids.shape + (2,)).astype(dtype)
    expected = np.zeros((n,) + data.shape[ids.ndim:], dtype)
    for pos in np.ndindex(*ids.shape):
        if ids[pos] >= 0:
            expected[ids[pos]] += data[pos]
    _check(gc.unsorted_segment_sum(data, ids, n), expected, static=expected.shape)


def test_unsorted_segment_sum_runtime():
    d = gc.placeholder(gc.float32, (None, 2))
    ids = gc.placeholder(gc.int32, (None,))
    n = gc.placeholder(gc.int32, ())
    s = gc.unsorted_segment_sum(d, ids, n, name="segs")
    assert s.shape == (None, 2)
    dv = np.arange(6, dtype=np.float32).reshape(3, 2)
    _check(s, np.array([[4, 6], [0, 0], [2, 3]], np.float32), {d: dv, ids: [0, 2, 0], n: 3})
    _raises(ExecutionError, lambda: run(s, {d: dv, ids: [0, 3, 0], n: 3}), "segs", "out of range")
    _raises(ShapeError, lambda: gc.unsorted_segment_sum(V, np.zeros((3,), np.int32), 2, name="segs_shape"),
            "segs_shape")
    _raises(DTypeError, lambda: gc.unsorted_segment_sum(V, np.zeros((2,), np.float32), 2))


# ---------------------------------------------------------------------------
# gradients
# ---------------------------------------------------------------------------
A = np.random.default_rng(5).normal(size=(2, 3, 4))

GRAD_CASES = {
    "slice": lambda x: x[1:, None, ..., ::-2],
    "index": lambda x: x[-1, 2],
    "newaxis_ellipsis": lambda x: x[None, ..., 1:3] * 2.0,
    "overlapping_slices": lambda x: x[:, :2] * x[:, 1:],
    "tensor_index": lambda x: x[gc.constant(-1), :, gc.constant(1)],
    "index_array": lambda x: x[:, [2, 0, 2]],
    "gather": lambda x: gc.gather(x, [[0, 2], [2, 2]], axis=1),
    "gather_batch": lambda x: gc.gather(x, [[0, 2, 3], [1, 1, 0]], axis=2, batch_dims=1),
    "gather_nd": lambda x: gc.gather_nd(x, [[0, 1], [1, 2], [0, 1]]),
    "gather_nd_full": lambda x: gc.gather_nd(x, [[0, 1, 3], [0, 1, 3]]),
    "segment_sum": lambda x: gc.unsorted_segment_sum(x, [[0, 2, -1], [1, 2, 2]], 4),
}


@pytest.mark.parametrize("name", sorted(GRAD_CASES))
def test_gradients(name):
    gc.test.check_gradients(GRAD_CASES[name], [A])


@pytest.mark.parametrize("name", ["slice", "gather", "gather_batch", "gather_nd", "segment_sum", "tensor_index"])
def test_second_order_gradients(name):
    fn = GRAD_CASES[name]

    def grad_of(x):
        y = fn(x)
        (gx,) = gc.gradients(gc.reduce_sum(y * y * y), [x])
        return gx
    gc.test.check_gradients(grad_of, [A])


@pytest.mark.parametrize("make", [
    lambda x: x[1:, None, ..., ::-2],
    lambda x: x[-1],
    lambda x: x[:, gc.constant(1)],
    lambda x: gc.gather(x, [1, 0, 1]),
    lambda x: gc.gather(x, [[1, 0], [2, 2]], axis=1),
    lambda x: gc.gather_nd(x, [[1, 0], [0, 2]]),
    lambda x: gc.unsorted_segment_sum(x, [1, -1], 3),
])
def test_gradients_none_dims(make):
    x = gc.placeholder(gc.float64, (None, None, 4))
    assert gc.test.compute_gradient_error(make(x), x, {x: A}) < 1e-6


def test_gradient_of_repeated_gather_indices_accumulates():
    x = gc.placeholder(gc.float64, (3,))
    y = gc.reduce_sum(gc.gather(x, [0, 0, 2, 0]))
    (gx,) = gc.gradients(y, [x])
    np.testing.assert_array_equal(run(gx, {x: np.ones(3)}), [3.0, 0.0, 1.0])


def test_no_gradient_to_indices():
    x = gc.placeholder(gc.float64, (3,))
    i = gc.placeholder(gc.int32, ())
    assert gc.gradients(gc.reduce_sum(x[i] * 2.0), [x, i])[1] is None
