"""matmul (with batch broadcasting and transpose flags), einsum, tensordot,
norm, trace, matrix_transpose: forward against NumPy, shape/dtype errors,
gradients and second derivatives against finite differences."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import graphc as gc
from conftest import run

R = np.random.default_rng(7)
check = gc.test.check_gradients


def _arr(shape, dtype=np.float64):
    if np.dtype(dtype).kind == "i":
        return R.integers(-5, 6, size=shape).astype(dtype)
    return R.standard_normal(shape).astype(dtype)


def _t(x, transpose):
    return np.swapaxes(x, -1, -2) if transpose else x


# ---- matmul forward -------------------------------------------------------------------------
MATMUL_SHAPES = [
    ((2, 3), (3, 4)),
    ((1, 1), (1, 1)),
    ((5, 2, 3), (5, 3, 4)),
    ((2, 1, 3, 4), (5, 4, 2)),      # batch dims broadcast: (2, 1) with (5,)
    ((3, 4), (2, 4, 5)),            # unbatched with batched
    ((4, 1, 2, 3), (1, 6, 3, 2)),
]


@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
def test_matmul_matches_numpy(shapes, ta, tb):
    a, b = _arr(shapes[0]), _arr(shapes[1])
    a_in, b_in = _t(a, ta), _t(b, tb)     # stored transposed, the flags undo it
    out = gc.matmul(a_in, b_in, transpose_a=ta, transpose_b=tb)
    expect = np.matmul(a, b)
    assert out.shape == expect.shape
    np.testing.assert_allclose(run(out), expect, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64])
def test_matmul_dtypes(dtype):
    a, b = _arr((3, 4), dtype), _arr((4, 2), dtype)
    out = gc.matmul(a, b)
    assert out.dtype == dtype
    r = run(out)
    assert r.dtype == dtype
    np.testing.assert_allclose(r, a @ b, rtol=1e-5)


def test_matmul_promotes_mixed_dtypes_like_numpy():
    a, b = _arr((2, 3), np.float32), _arr((3, 2), np.float64)
    out = gc.matmul(a, b)
    assert out.dtype == np.float64
    np.testing.assert_allclose(run(out), a.astype(np.float64) @ b, rtol=1e-6)


def test_matmul_operator_and_reflected():
    a = gc.placeholder(gc.float64, (2, 3))
    b = _arr((3, 2))
    av = _arr((2, 3))
    r1, r2 = run([a @ b, b @ a], {a: av})
    np.testing.assert_allclose(r1, av @ b)
    np.testing.assert_allclose(r2, b @ av)


@pytest.mark.parametrize("shapes", [((0, 3), (3, 4)), ((2, 0), (0, 4)), ((2, 3), (3, 0)), ((0, 2, 3), (3, 1))],
                         ids=str)
def test_matmul_size_zero_dims(shapes):
    a, b = _arr(shapes[0]), _arr(shapes[1])
    r = run(gc.matmul(a, b))
    np.testing.assert_array_equal(r, a @ b)
    assert r.shape == (a @ b).shape


def test_matmul_unknown_dims_fed_at_run_time():
    a = gc.placeholder(gc.float32, (None, None, 3))
    b = gc.placeholder(gc.float32, (3, None))
    out = gc.matmul(a, b)
    assert out.shape == (None, None, None)
    av, bv = _arr((4, 2, 3), np.float32), _arr((3, 5), np.float32)
    np.testing.assert_allclose(run(out, {a: av, b: bv}), av @ bv, rtol=1e-5)


def test_matmul_unknown_rank():
    a = gc.placeholder(gc.float64)
    b = _arr((3, 2))
    out = gc.matmul(a, b)
    assert out.shape is None
    av = _arr((2, 2, 3))
    np.testing.assert_allclose(run(out, {a: av}), av @ b)


@pytest.mark.parametrize("sa,sb", [((3,), (3, 4)), ((2, 3), (3,)), ((3,), (3,)), ((2, 4, 3), (3,)), ((3,), (2, 3, 4))])
def test_matmul_rank1_operands_promote_like_numpy(sa, sb):
    a, b = _arr(sa), _arr(sb)
    out = gc.matmul(a, b)
    expect = np.matmul(a, b)
    assert out.shape == np.shape(expect)
    np.testing.assert_allclose(run(out), expect)


def test_matmul_inner_mismatch_names_op_and_both_shapes():
    a = gc.placeholder(gc.float32, (2, 3), name="lhs")
    b = gc.placeholder(gc.float32, (4, 5), name="rhs")
    with pytest.raises(gc.errors.ShapeError) as e:
        gc.matmul(a, b, name="my_matmul")
    msg = str(e.value)
    assert "my_matmul" in msg and "(2, 3)" in msg and "(4, 5)" in msg and "3 and 4" in msg


def test_matmul_transpose_flag_mismatch_mentions_flag():
    with pytest.raises(gc.errors.ShapeError, match="transpose_a"):
        gc.matmul(_arr((2, 3)), _arr((3, 4)), transpose_a=True)


def test_matmul_batch_mismatch():
    with pytest.raises(gc.errors.ShapeError, match="batch"):
        gc.matmul(_arr((2, 3, 4)), _arr((5, 4, 2)))


def test_matmul_rank0_and_bool_rejected():
    with pytest.raises(gc.errors.ShapeError, match="matmul"):
        gc.matmul(gc.constant(2.0), _arr((2, 2), np.float32))
    with pytest.raises(gc.errors.DTypeError, match="matmul"):
        gc.matmul(gc.constant(np.ones((2, 2), bool)), gc.constant(np.ones((2, 2), bool)))
    with pytest.raises(gc.errors.ShapeError, match="transpose"):
        gc.matmul(_arr((3,)), _arr((3, 2)), transpose_b=True)


def test_matmul_run_time_inner_mismatch_is_execution_error():
    a = gc.placeholder(gc.float64, (2, None))
    b = gc.placeholder(gc.float64, (None, 2))
    with pytest.raises(gc.errors.ExecutionError, match="matmul"):
        run(gc.matmul(a, b), {a: _arr((2, 3)), b: _arr((4, 2))})


@settings(max_examples=30, deadline=None)
@given(batch_a=st.lists(st.sampled_from([1, 2, 3]), max_size=3),
       batch_b=st.lists(st.sampled_from([1, 2, 3]), max_size=3),
       m=st.integers(0, 3), k=st.integers(0, 3), n=st.integers(0, 3),
       ta=st.booleans(), tb=st.booleans())
def test_matmul_hypothesis_broadcasting(batch_a, batch_b, m, k, n, ta, tb):
    # make the batch shapes broadcast-compatible by forcing 1s where they differ
    la, lb = len(batch_a), len(batch_b)
    for i in range(1, min(la, lb) + 1):
        if batch_a[-i] != batch_b[-i]:
            batch_b[-i] = 1
    a, b = _arr(tuple(batch_a) + (m, k)), _arr(tuple(batch_b) + (k, n))
    g = gc.Graph()
    with g.as_default():
        out = gc.matmul(_t(a, ta), _t(b, tb), transpose_a=ta, transpose_b=tb)
        np.testing.assert_allclose(run(out, graph=g), np.matmul(a, b), rtol=1e-10, atol=1e-12)


# ---- matmul gradients ---------------------------------------------------------------------------
@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize("shapes", [((2, 3), (3, 4)), ((2, 1, 2, 3), (3, 3, 2)), ((2, 3), (2, 3, 2))], ids=str)
def test_matmul_gradient(ta, tb, shapes):
    a, b = _t(_arr(shapes[0]), ta), _t(_arr(shapes[1]), tb)
    check(lambda x, y: gc.matmul(x, y, transpose_a=ta, transpose_b=tb), [a, b])


@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
def test_matmul_second_derivative(ta, tb):
    a, b = _t(_arr((2, 2, 3)), ta), _t(_arr((3, 2)), tb)

    def grad_a(x, y):
        loss = gc.reduce_sum(gc.square(gc.matmul(x, y, transpose_a=ta, transpose_b=tb)))
        return gc.gradients(loss, [x])[0]

    check(grad_a, [a, b], rtol=1e-4)


def test_matmul_rank1_gradient():
    check(lambda v, m: gc.matmul(v, m), [_arr((3,)), _arr((3, 2))])
    check(lambda m, v: gc.matmul(m, v), [_arr((2, 3)), _arr((3,))])


def test_matmul_gradient_with_unknown_batch_dim():
    a = gc.placeholder(gc.float64, (None, 2, 3))
    b = gc.placeholder(gc.float64, (3, 4))
    ga, gb = gc.gradients(gc.reduce_sum(gc.matmul(a, b)), [a, b])
    assert gb.shape == (3, 4)
    av, bv = _arr((5, 2, 3)), _arr((3, 4))
    rga, rgb = run([ga, gb], {a: av, b: bv})
    np.testing.assert_allclose(rga, np.broadcast_to(bv.sum(1), (5, 2, 3)))
    np.testing.assert_allclose(rgb, np.broadcast_to(av.sum(axis=(0, 1))[:, None], (3, 4)))


# ---- einsum -----------------------------------------------------------------------------------------
EINSUM_CASES = [
    ("ij,jk->ik", [(2, 3), (3, 4)]),
    ("ij,jk", [(2, 3), (3, 4)]),
    ("bij,bjk->bik", [(2, 2, 3), (2, 3, 4)]),
    ("i,i->", [(5,), (5,)]),
    ("i,i", [(5,), (5,)]),
    ("i,j->ij", [(3,), (4,)]),
    ("ij,ij->ij", [(2, 3), (2, 3)]),
    ("ij,ij->", [(2, 3), (2, 3)]),
    ("ij->ji", [(2, 3)]),
    ("ij->", [(2, 3)]),
    ("ij->j", [(2, 3)]),
    ("ii->i", [(3, 3)]),
    ("ii", [(3, 3)]),
    ("bii->b", [(2, 3, 3)]),
    ("abc,cd->abd", [(2, 3, 4), (4, 5)]),
    ("abcd,cdef->abef", [(2, 3, 4, 2), (4, 2, 3, 2)]),
    ("abc,bcd->ad", [(2, 3, 4), (3, 4, 5)]),
    ("bhqd,bhkd->bhqk", [(2, 3, 4, 5), (2, 3, 6, 5)]),
    ("ijk,ikl,ilm->ijm", [(2, 3, 4), (2, 4, 5), (2, 5, 2)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)]),
    ("...ij,...jk->...ik", [(2, 1, 2, 3), (4, 3, 2)]),
    ("...ij,jk", [(2, 2, 3), (3, 4)]),
    ("i...->...", [(3, 2, 2)]),
    ("ij,k->ijk", [(2, 3), (2,)]),
    ("ab,ab,ab->a", [(2, 3), (2, 3), (2, 3)]),
    ("ij,jk->ki", [(0, 3), (3, 2)]),
    ("ij,jk->ik", [(2, 0), (0, 2)]),
]


@pytest.mark.parametrize("eq,shapes", EINSUM_CASES, ids=[c[0] for c in EINSUM_CASES])
def test_einsum_matches_numpy(eq, shapes):
    arrays = [_arr(s) for s in shapes]
    out = gc.einsum(eq, *arrays)
    expect = np.einsum(eq, *arrays)
    assert out.shape == np.shape(expect)
    np.testing.assert_allclose(run(out), expect, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("eq,shapes", [("ij,jk->ik", [(2, 3), (3, 4)]), ("abc,bcd->ad", [(2, 3, 2), (3, 2, 2)]),
                                       ("bij,bjk->bik", [(2, 2, 3), (2, 3, 2)]), ("i,j->ij", [(3,), (2,)]),
                                       ("ii->i", [(3, 3)]), ("ij,jk,kl->il", [(2, 3), (3, 2), (2, 2)])],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_einsum_gradient(eq, shapes):
    check(lambda *xs: gc.einsum(eq, *xs), [_arr(s) for s in shapes])


def test_einsum_int_and_mixed_dtypes():
    a, b = _arr((2, 3), np.int32), _arr((3, 2), np.int32)
    out = gc.einsum("ij,jk->ik", a, b)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(run(out), a @ b)
    c = _arr((3, 2), np.float64)
    assert gc.einsum("ij,jk->ik", a, c).dtype == np.float64


@pytest.mark.parametrize("eq", ["ij,jk->ik", "abc,bcd->ad", "abc,cd->abd", "bij,bjk->bik"])
def test_einsum_unknown_dims(eq):
    lhs = eq.split("->")[0].split(",")
    sizes = {"a": 2, "b": 3, "c": 4, "d": 2, "i": 3, "j": 2, "k": 4}
    arrays = [_arr(tuple(sizes[c] for c in s)) for s in lhs]
    phs = [gc.placeholder(gc.float64, (None,) * a.ndim) for a in arrays]
    out = gc.einsum(eq, *phs)
    np.testing.assert_allclose(run(out, dict(zip(phs, arrays))), np.einsum(eq, *arrays), rtol=1e-10)


def test_einsum_errors():
    with pytest.raises(gc.errors.InvalidArgumentError, match="operand"):
        gc.einsum("ij,jk->ik", _arr((2, 3)))
    with pytest.raises(gc.errors.ShapeError, match="size"):
        gc.einsum("ij,jk->ik", _arr((2, 3)), _arr((4, 2)))
    with pytest.raises(gc.errors.ShapeError, match="rank"):
        gc.einsum("ijk->i", _arr((2, 3)))
    with pytest.raises(gc.errors.InvalidArgumentError, match="output"):
        gc.einsum("ij->iz", _arr((2, 3)))
    with pytest.raises(gc.errors.InvalidArgumentError):
        gc.einsum("i1->i", _arr((2, 3)))
    with pytest.raises(gc.errors.InvalidArgumentError):
        gc.einsum("ij->ii", _arr((2, 3)))


# ---- tensordot ------------------------------------------------------------------------------------
@pytest.mark.parametrize("sa,sb,axes", [
    ((2, 3), (3, 4), 1), ((2, 3, 4), (3, 4, 5), 2), ((2, 3), (4, 5), 0), ((3,), (3,), 1),
    ((2, 3, 4), (4, 3, 5), [[1, 2], [1, 0]]), ((2, 3, 4), (5, 2), [[0], [1]]), ((3, 4), (4, 3), ([0, 1], [1, 0])),
    ((2, 3), (3, 2), [-1, 0]),
])
def test_tensordot_matches_numpy(sa, sb, axes):
    a, b = _arr(sa), _arr(sb)
    out = gc.tensordot(a, b, axes)
    expect = np.tensordot(a, b, axes)
    assert out.shape == expect.shape
    np.testing.assert_allclose(run(out), expect, rtol=1e-10)


def test_tensordot_gradient_and_errors():
    check(lambda x, y: gc.tensordot(x, y, [[1, 2], [0, 1]]), [_arr((2, 3, 2)), _arr((3, 2, 2))])
    with pytest.raises(gc.errors.ShapeError, match="differ"):
        gc.tensordot(_arr((2, 3)), _arr((4, 2)), 1)
    with pytest.raises(gc.errors.ShapeError):
        gc.tensordot(_arr((2, 3)), _arr((3,)), 2)


# ---- norm, trace, matrix_transpose -------------------------------------------------------------------
@pytest.mark.parametrize("ord_,axis,np_ord", [
    ("euclidean", None, None), (1, None, 1), (np.inf, None, np.inf), (2, -1, 2), (1, 0, 1), (3, 1, 3),
    ("euclidean", (0, 1), "fro"), ("fro", (1, 2), "fro"), (1, (1, 2), 1), (np.inf, (1, 2), np.inf),
    (1, (2, 1), 1), (np.inf, (-1, 0), np.inf),
])
@pytest.mark.parametrize("keepdims", [False, True])
def test_norm_matches_numpy(ord_, axis, np_ord, keepdims):
    x = _arr((2, 3, 4))
    out = gc.norm(x, ord=ord_, axis=axis, keepdims=keepdims)
    if axis is None:
        expect = np.linalg.norm(x.ravel(), ord=np_ord)
        if keepdims:
            expect = np.reshape(expect, (1, 1, 1))
    else:
        expect = np.linalg.norm(x, ord=np_ord, axis=axis, keepdims=keepdims)
    assert out.shape == np.shape(expect)
    np.testing.assert_allclose(run(out), expect, rtol=1e-10)


def test_norm_float32_gradient_and_errors():
    assert run(gc.linalg_norm(np.array([3.0, 4.0], np.float32))).dtype == np.float32
    check(lambda x: gc.norm(x, axis=1), [_arr((2, 3))])
    check(lambda x: gc.norm(x, ord=3, axis=0), [np.abs(_arr((3, 2))) + 0.5])
    with pytest.raises(gc.errors.InvalidArgumentError):
        gc.norm(_arr((2, 3)), ord=2, axis=(0, 1))
    with pytest.raises(gc.errors.InvalidArgumentError):
        gc.norm(_arr((2, 3)), ord=-1)
    with pytest.raises(gc.errors.DTypeError):
        gc.norm(np.ones(3, np.int32))


@pytest.mark.parametrize("shape", [(3, 3), (2, 3), (4, 2, 5), (2, 0, 0)])
def test_trace(shape):
    x = _arr(shape)
    out = gc.trace(x)
    expect = np.trace(x, axis1=-2, axis2=-1)
    np.testing.assert_allclose(run(out), expect)
    assert out.shape == np.shape(expect)


def test_trace_gradient_and_errors():
    check(gc.trace, [_arr((2, 3, 3))])
    with pytest.raises(gc.errors.ShapeError):
        gc.trace(_arr((3,)))
    with pytest.raises(gc.errors.ShapeError):
        gc.trace(gc.placeholder(gc.float32, (None, None)))


def test_matrix_transpose():
    x = _arr((2, 3, 4))
    out = gc.matrix_transpose(x)
    assert out.shape == (2, 4, 3)
    np.testing.assert_array_equal(run(out), np.swapaxes(x, -1, -2))
    ph = gc.placeholder(gc.float32, (None, 2))
    assert gc.matrix_transpose(ph).shape == (2, None)
    with pytest.raises(gc.errors.ShapeError):
        gc.matrix_transpose(_arr((3,)))
