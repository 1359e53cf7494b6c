"""Layout ops lowered to loop IR (graphc/lowering/lower.py): each op's kernel,
run by the reference evaluator and natively, against the op's NumPy
reference, on shapes with size-1 and empty dims; the same graphs through a
cpu-backend Session (constant folding off, so the ops run as native code)
against the interpreter; and the guards that keep native code in bounds."""
import numpy as np
import pytest

import graphc as gc
from graphc.backends import get_backend
from graphc.codegen.llvm_cpu import compile_kernel, run_kernel
from graphc.errors import CompileError, ExecutionError
from graphc.lowering import evaluate, loop_ir as L, lower_op
from graphc.ops.core import apply_op
from graphc.session import compile_run

from conftest import assert_same_results

CPU_NO_FOLD = dict(backend="cpu", disabled_passes=("fold",))


def _reference(op, arrays):
    out = op.opdef.compute(*arrays, **{a: op.attrs[a] for a in op.opdef.attrs})
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _check_kernel(t, arrays):
    """lower_op(t.op): evaluated and native results equal the reference."""
    op = t.op
    arrays = [np.asarray(a, dtype=i.dtype) for a, i in zip(arrays, op.inputs)]
    kernel = lower_op(op)
    want = _reference(op, arrays)
    got_eval = evaluate(kernel, arrays)
    got_native = run_kernel(kernel, arrays)
    assert len(want) == len(got_eval) == len(got_native)
    for w, e, n in zip(want, got_eval, got_native):
        w = np.asarray(w)
        assert e.dtype == w.dtype and e.shape == w.shape, kernel.text()
        assert n.dtype == w.dtype and n.shape == w.shape, kernel.text()
        # layout ops move values (pad_adjoint adds them, in the reference's order): exact
        np.testing.assert_array_equal(e, w, err_msg=kernel.text())
        np.testing.assert_array_equal(n, w, err_msg=kernel.text())
    return kernel


def _host_ops(fetches, feeds):
    g = fetches[0].graph
    ex = compile_run(g, fetches, [], list(feeds), [np.shape(v) for v in feeds.values()],
                     gc.Config(**CPU_NO_FOLD), get_backend("cpu"))
    return {op.type for op in ex.host_ops}


def _check_session(fetches, feeds, native_types):
    """cpu backend == interpreter, and ops of ``native_types`` ran natively."""
    g = fetches[0].graph
    with gc.Session(graph=g, config=gc.Config(backend="interpreter", optimize=False)) as sess:
        want = sess.run(fetches, feeds)
    with gc.Session(graph=g, config=gc.Config(**CPU_NO_FOLD)) as sess:
        got = sess.run(fetches, feeds)
    assert_same_results(want, got)
    assert not _host_ops(fetches, feeds) & set(native_types)


def _data(rng, shape, dtype=np.float32):
    if np.dtype(dtype).kind == "b":
        return rng.random(shape) < 0.5
    if np.dtype(dtype).kind in "iu":
        return rng.integers(-50, 50, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


SHAPES = [(3, 4, 5), (1, 4, 1), (2, 0, 3), (1,), (4, 1, 2)]


# ---- point maps: transpose, strided_slice, tile, split, unstack ----------------------
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.bool_])
def test_transpose(rng, shape, dtype):
    x = gc.placeholder(gc.as_dtype(dtype), shape)
    perm = tuple(reversed(range(len(shape)))) if len(shape) < 3 else (1, 2, 0)
    kernel = _check_kernel(gc.transpose(x, perm), [_data(rng, shape, dtype)])
    assert "select" not in kernel.text()        # a pure point map


@pytest.mark.parametrize("key", [
    (slice(1, None), slice(None, None, -2), None, 3),
    (slice(None, None, -1), slice(1, 3)),
    (Ellipsis, slice(4, 0, -3)),
    (2, slice(3, 3)),                # an empty result
    (slice(None, None, 5), 0, slice(1, None, 2)),
    (-1, -1, -1),
])
def test_strided_slice_and_its_gradient(rng, key):
    x = gc.placeholder(gc.float32, (3, 4, 5))
    xv = _data(rng, (3, 4, 5))
    y = x[key]
    _check_kernel(y, [xv])
    dy = gc.placeholder(gc.float32, y.shape)
    grad = apply_op("strided_slice_grad", [dy, x], {"spec": y.op.attrs["spec"]})
    _check_kernel(grad, [_data(rng, tuple(y.shape)), xv])


def test_strided_slice_on_size_one_and_empty_dims(rng):
    x = gc.placeholder(gc.int32, (1, 0, 2))
    _check_kernel(x[0, :, ::-1], [_data(rng, (1, 0, 2), np.int32)])
    z = gc.placeholder(gc.float32, (1, 3))
    _check_kernel(z[:, ::2], [_data(rng, (1, 3))])


@pytest.mark.parametrize("shape,multiples", [((2, 3), (2, 3)), ((1, 3), (4, 1)), ((2, 0), (2, 2)),
                                             ((3, 1), (0, 2)), ((), ())])
def test_tile(rng, shape, multiples):
    x = gc.placeholder(gc.float64, shape)
    _check_kernel(gc.tile(x, list(multiples)), [_data(rng, shape, np.float64)])


@pytest.mark.parametrize("shape,axis,sizes", [((3, 6), 1, [1, 3, 2]), ((4, 2), 0, 2), ((1, 5), 1, [0, 5]),
                                              ((2, 0), 0, [1, 1]), ((6,), 0, [2, -1])])
def test_split_has_one_nest_per_output(rng, shape, axis, sizes):
    x = gc.placeholder(gc.float32, shape)
    parts = gc.split(x, sizes, axis=axis)
    _check_kernel(parts[0], [_data(rng, shape)])


@pytest.mark.parametrize("shape,axis", [((3, 4), 0), ((3, 4), 1), ((2, 1, 3), 1), ((2, 0), 0)])
def test_unstack(rng, shape, axis):
    x = gc.placeholder(gc.int64, shape)
    _check_kernel(gc.unstack(x, axis=axis)[0], [_data(rng, shape, np.int64)])


# ---- selects over index tests: pad, concat, stack, one_hot ---------------------------
@pytest.mark.parametrize("mode", ["CONSTANT", "REFLECT", "SYMMETRIC"])
@pytest.mark.parametrize("shape,paddings", [((3, 4), [[1, 2], [2, 1]]), ((5, 1), [[2, 2], [0, 0]]),
                                            ((1, 6), [[0, 0], [1, 3]]), ((4,), [[3, 0]])])
def test_pad(rng, mode, shape, paddings):
    limit = {"CONSTANT": 99, "REFLECT": 1, "SYMMETRIC": 0}[mode]
    if any(max(p) > d - limit for p, d in zip(paddings, shape) if mode != "CONSTANT" and max(p) > 0):
        pytest.skip("padding wider than the mirror allows")
    x = gc.placeholder(gc.float32, shape)
    _check_kernel(gc.pad(x, paddings, mode=mode, constant_values=-2.5), [_data(rng, shape)])


def test_pad_of_empty_and_int_tensors(rng):
    x = gc.placeholder(gc.int32, (0, 2))
    _check_kernel(gc.pad(x, [[1, 1], [0, 2]], constant_values=7), [np.zeros((0, 2), np.int32)])
    b = gc.placeholder(gc.as_dtype(np.bool_), (2, 2))
    _check_kernel(gc.pad(b, [[1, 0], [0, 1]], constant_values=True), [_data(rng, (2, 2), np.bool_)])


@pytest.mark.parametrize("mode", ["REFLECT", "SYMMETRIC"])
@pytest.mark.parametrize("shape,paddings", [((8, 7), ((1, 2), (1, 2))), ((7, 1, 9), ((0, 3), (0, 0), (2, 2))),
                                            ((11,), ((3, 3),)), ((12, 3), ((4, 3), (0, 0)))])
def test_pad_adjoint_folds_like_the_reference(rng, mode, shape, paddings):
    g = gc.placeholder(gc.float32, shape)
    limit = 1 if mode == "REFLECT" else 0
    if any(max(p) > d - sum(p) - limit for p, d in zip(paddings, shape) if max(p)):
        pytest.skip("padding wider than the mirror allows")
    _check_kernel(apply_op("pad_adjoint", [g], {"paddings": paddings, "mode": mode}), [_data(rng, shape)])


@pytest.mark.parametrize("shapes,axis", [([(2, 3), (2, 1), (2, 4)], 1), ([(1, 3), (3, 3)], 0),
                                         ([(2, 0), (2, 2), (2, 0)], 1), ([(0, 2), (0, 2)], 0)])
def test_concat_is_one_copy_per_piece(rng, shapes, axis):
    xs = [gc.placeholder(gc.float32, s) for s in shapes]
    kernel = _check_kernel(gc.concat(xs, axis=axis), [_data(rng, s) for s in shapes])
    assert "select" not in kernel.text()


@pytest.mark.parametrize("shape,axis,n", [((2, 3), 0, 3), ((2, 3), 2, 2), ((1,), 1, 4), ((0, 2), 1, 2), ((), 0, 3)])
def test_stack(rng, shape, axis, n):
    xs = [gc.placeholder(gc.int32, shape) for _ in range(n)]
    _check_kernel(gc.stack(xs, axis=axis), [_data(rng, shape, np.int32) for _ in range(n)])


def test_concat_and_stack_inside_one_kernel_select_their_piece(rng):
    """As values inside a kernel (not its output) the pieces are selects
    over clamped loads; the evaluator checks every load is in bounds."""
    from graphc.lowering.lower import lower_tensors
    a, b = gc.placeholder(gc.float32, (2, 3)), gc.placeholder(gc.float32, (2, 2))
    y = gc.exp(gc.concat([a, b], axis=1)) + gc.stack([a[:, 0], b[:, 1]], axis=1)[:, :1]
    kernel = lower_tensors("k", [a, b], [y])
    assert "select" in kernel.text()
    av, bv = _data(rng, (2, 3)), _data(rng, (2, 2))
    want = np.exp(np.concatenate([av, bv], 1)) + np.stack([av[:, 0], bv[:, 1]], 1)[:, :1]
    np.testing.assert_allclose(evaluate(kernel, [av, bv])[0], want, rtol=1e-6)
    np.testing.assert_allclose(run_kernel(kernel, [av, bv])[0], want, rtol=1e-6)


@pytest.mark.parametrize("shape,axis", [((5,), -1), ((2, 3), 0), ((2, 3), 1), ((0,), -1), ((), -1)])
def test_one_hot_out_of_range_rows_are_off(rng, shape, axis):
    i = gc.placeholder(gc.int64, shape)
    values = rng.integers(-2, 6, shape)
    _check_kernel(gc.one_hot(i, 4, on_value=3, off_value=-1, axis=axis, dtype=gc.int32), [values])


# ---- broadcasts and reshapes with a shape input ---------------------------------------
def test_broadcast_like_and_broadcast_reduced(rng):
    from graphc.ops.grad_support import broadcast_like, broadcast_reduced
    x, like = gc.placeholder(gc.float32, (3, 1)), gc.placeholder(gc.float32, (2, 3, 4))
    _check_kernel(broadcast_like(x, like), [_data(rng, (3, 1)), _data(rng, (2, 3, 4))])
    for keepdims, gshape in ((False, (3,)), (True, (1, 3, 1))):
        g = gc.placeholder(gc.float32, gshape)
        _check_kernel(broadcast_reduced(g, like, (0, 2), keepdims), [_data(rng, gshape), _data(rng, (2, 3, 4))])


# ---- arg reductions ------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["argmax", "argmin"])
@pytest.mark.parametrize("shape,axis", [((3, 4), 1), ((3, 4), 0), ((2, 1, 3), None), ((1, 5), 0), ((0, 4), 1)])
def test_arg_reductions(rng, op, shape, axis):
    x = gc.placeholder(gc.float32, shape)
    xv = np.round(_data(rng, shape) * 2) / 2         # ties: the first one wins
    _check_kernel(getattr(gc, op)(x, axis=axis, output_type=gc.int32), [xv])


@pytest.mark.parametrize("op", ["argmax", "argmin"])
def test_arg_reductions_return_the_first_nan_and_handle_infinities(op):
    x = gc.placeholder(gc.float64, (4, 5))
    xv = np.array([[1, np.nan, 3, np.nan, 0], [-np.inf] * 5, [np.inf] * 5, [2, 2, -np.inf, np.inf, 2]])
    _check_kernel(getattr(gc, op)(x, axis=1), [xv])
    i = gc.placeholder(gc.int32, (6,))
    info = np.iinfo(np.int32)
    _check_kernel(getattr(gc, op)(i), [np.array([info.min, info.min, info.max, 0, info.max, info.min], np.int32)])


# ---- gathers --------------------------------------------------------------------------------
def test_gather_zero_mode_reads_zero_out_of_range(rng):
    p = gc.placeholder(gc.float32, (3, 4, 2))
    idx = gc.placeholder(gc.int32, (2, 3))
    g = apply_op("gather", [p, idx], {"axis": 1, "batch_dims": 0, "mode": "zero"})
    bad = np.array([[0, 4, -1], [3, -7, 2**31 - 1]], np.int32)
    _check_kernel(g, [_data(rng, (3, 4, 2)), bad])
    gb = apply_op("gather", [p, gc.placeholder(gc.int64, (3, 5))], {"axis": 1, "batch_dims": 1, "mode": "zero"})
    _check_kernel(gb, [_data(rng, (3, 4, 2)), rng.integers(-3, 6, (3, 5))])


@pytest.mark.parametrize("mode", ["error", "wrap"])
def test_gather_with_constant_indices_proven_in_range(rng, mode):
    p = gc.placeholder(gc.float32, (4, 3))
    values = np.array([[0, -4], [3, -1]]) if mode == "wrap" else np.array([[0, 3], [2, 2]])
    g = apply_op("gather", [p, gc.constant(values, dtype=gc.int64)], {"axis": 0, "batch_dims": 0, "mode": mode})
    _check_kernel(g, [_data(rng, (4, 3)), values])


def test_gather_with_run_time_indices_stays_a_host_step_and_raises():
    """Mode "error" must raise on a bad index; a kernel cannot, so the op
    is not lowered (it runs as a host step) and the error still comes."""
    p = gc.placeholder(gc.float32, (4, 3))
    idx = gc.placeholder(gc.int32, (2,))
    g = gc.gather(p, idx)
    with pytest.raises(CompileError, match="out of range at run time"):
        lower_op(g.op)
    feeds = {p: np.ones((4, 3), np.float32), idx: np.array([1, 9], np.int32)}
    assert "gather" in _host_ops([g], feeds)
    with gc.Session(config=gc.Config(**CPU_NO_FOLD)) as sess:
        with pytest.raises(ExecutionError, match="out of range"):
            sess.run(g, feeds)
    bad_const = gc.gather(p, gc.constant([0, 4]))
    with pytest.raises(CompileError, match="out of range"):
        lower_op(bad_const.op)


def test_gather_nd_with_constant_indices(rng):
    p = gc.placeholder(gc.int32, (3, 4, 2))
    values = np.array([[[0, 1], [2, 3]], [[1, 0], [2, 2]]], np.int32)
    _check_kernel(gc.gather_nd(p, gc.constant(values)), [_data(rng, (3, 4, 2), np.int32), values])


# ---- the guards: every load stays in bounds ------------------------------------------------
def _kernel(value, index_dtype=np.int32, n=4):
    return L.Kernel("guard", (L.Param("in0", np.dtype(np.float32), (n,), "input"),
                              L.Param("in1", np.dtype(index_dtype), (n,), "input"),
                              L.Param("out0", np.dtype(np.float32), (n,), "output")),
                    (L.Loop("i", n, (L.Store("out0", L.IVar("i"), value),)),))


def test_an_unclamped_loaded_index_does_not_compile():
    f32 = np.dtype(np.float32)
    raw = L.IndexOf(L.Load("in1", L.IVar("i"), np.dtype(np.int32)))
    with pytest.raises(CompileError, match="outside its 4 elements"):
        compile_kernel(_kernel(L.Load("in0", raw, f32)))
    with pytest.raises(CompileError, match="outside its 4 elements"):
        compile_kernel(_kernel(L.Load("in0", L.imin(raw, L.IConst(3)), f32)))
    clamped = _kernel(L.Select(L.InRange(raw, 0, 4), L.Load("in0", L.iclamp(raw, 0, 3), f32), L.Const(0.0, f32), f32))
    x = np.arange(4, dtype=np.float32) + 1
    idx = np.array([3, -1, 4, 0], np.int32)
    want = np.array([4, 0, 0, 1], np.float32)
    np.testing.assert_array_equal(run_kernel(clamped, [x, idx])[0], want)
    np.testing.assert_array_equal(evaluate(clamped, [x, idx])[0], want)
    text = clamped.text()
    assert "index(in1[i])" in text and "(0 <= index(in1[i]) < 4)" in text and "min(max(" in text


def test_the_evaluator_rejects_out_of_bounds_loads():
    raw = L.IndexOf(L.Load("in1", L.IVar("i"), np.dtype(np.int64)))
    k = _kernel(L.Load("in0", raw, np.dtype(np.float32)), index_dtype=np.int64)
    with pytest.raises(IndexError, match="outside in0"):
        evaluate(k, [np.zeros(4, np.float32), np.array([0, 1, -1, 2])])


def test_index_value_wraps_like_astype():
    i32 = np.dtype(np.int32)
    k = L.Kernel("iv", (L.Param("out0", i32, (3,), "output"),),
                 (L.Loop("i", 3, (L.Store("out0", L.IVar("i"),
                                          L.IndexValue(L.IBin("+", L.imul(L.IVar("i"), 2**31), L.IConst(5)), i32)),)),))
    want = (np.arange(3) * 2**31 + 5).astype(np.int32)
    np.testing.assert_array_equal(run_kernel(k, [])[0], want)
    np.testing.assert_array_equal(evaluate(k, [])[0], want)


# ---- through a Session: cpu backend (native layout ops) == interpreter -------------------
def test_session_layout_graph_runs_natively(rng):
    x = gc.placeholder(gc.float32, (4, 6), name="x")
    i = gc.placeholder(gc.int32, (5,), name="i")
    t = gc.transpose(x)
    s = t[1:5:2, ::-1]
    p = gc.pad(s, [[1, 1], [2, 0]], mode="REFLECT")
    c = gc.concat([p, gc.tile(x[:1, :1], [4, 6])], axis=0)
    a, b = gc.split(c, [3, 5], axis=0)
    st = gc.stack(gc.unstack(a, axis=1), axis=0)
    oh = gc.one_hot(i, 6, axis=0)
    am = gc.argmax(x, axis=1)
    y = gc.reduce_sum(st) + gc.reduce_sum(b) + gc.reduce_sum(gc.matmul(x, oh))
    feeds = {x: _data(rng, (4, 6)), i: np.array([0, 5, 2, -1, 7], np.int32)}
    _check_session([y, st, am, oh], feeds,
                   {"transpose", "strided_slice", "pad", "concat", "tile", "split", "stack", "unstack",
                    "one_hot", "argmax"})


def test_session_layout_gradients_run_natively(rng):
    x = gc.placeholder(gc.float32, (3, 5), name="x")
    y = gc.pad(x[::2, 1:], [[1, 2], [2, 1]], mode="SYMMETRIC")
    z = gc.concat([y, gc.transpose(y)[:3]], axis=0) if y.shape[1] == 3 else gc.concat([y, y], axis=1)
    loss = gc.reduce_sum(gc.square(z) * gc.constant(np.linspace(0, 1, int(np.prod(z.shape))).reshape(z.shape),
                                                    dtype=gc.float32))
    (g,) = gc.gradients(loss, [x])
    feeds = {x: _data(rng, (3, 5))}
    _check_session([loss, g], feeds, {"strided_slice_grad", "pad_adjoint", "strided_slice", "pad", "concat"})
