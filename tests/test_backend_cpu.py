"""The native CPU backend as a whole: segments and host steps, variable
semantics, argument checks, the per-run fast paths, threads, and random
programs against the interpreter."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import graphc as gc
from graphc.backends import available_backends
from graphc.backends.cpu import abi
from graphc.backends.cpu.executable import CpuExecutable
from graphc.codegen import parallel
from graphc.errors import ExecutionError, FeedError, UninitializedVariableError
from random_programs import build_program

pytestmark = pytest.mark.skipif("cpu" not in available_backends(), reason="cpu backend not available")


def _session(graph=None, **config):
    return gc.Session(graph, gc.Config(backend="cpu", **config))


def _executables(sess):
    return [e for e in sess._cache.values() if isinstance(e, CpuExecutable)]


def _mlp(seed=0):
    rng = np.random.default_rng(seed)
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, [None, 6], name="x")
        labels = gc.placeholder(gc.int32, [None], name="labels")
        w1 = gc.Variable(rng.standard_normal((6, 8)).astype(np.float32), name="w1")
        b1 = gc.Variable(np.zeros(8, np.float32), name="b1")
        w2 = gc.Variable(rng.standard_normal((8, 3)).astype(np.float32), name="w2")
        h = gc.nn.relu(gc.matmul(x, w1) + b1)
        loss = gc.reduce_mean(gc.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=gc.matmul(h, w2)))
        step = gc.train.GradientDescentOptimizer(0.1).minimize(loss)
        init = gc.global_variables_initializer()
    return g, x, labels, loss, step, init, [w1, b1, w2]


def _train(backend, steps=5):
    g, x, labels, loss, step, init, params = _mlp()
    rng = np.random.default_rng(1)
    xs = rng.standard_normal((16, 6)).astype(np.float32)
    ys = rng.integers(0, 3, 16).astype(np.int32)
    with gc.Session(g, gc.Config(backend=backend)) as sess:
        sess.run(init)
        losses = [sess.run([loss, step], {x: xs, labels: ys})[0] for _ in range(steps)]
        return losses, sess.run(params), sess


def test_a_training_step_is_one_native_segment_and_matches_the_interpreter():
    ref_losses, ref_params = _train("interpreter")[:2]
    losses, params, sess = _train("cpu")
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    for p, r in zip(params, ref_params):
        np.testing.assert_allclose(p, r, rtol=1e-5, atol=1e-6)


def test_training_step_compiles_to_a_single_entry_point():
    g, x, labels, loss, step, init, _ = _mlp()
    with _session(g) as sess:
        sess.run(init)
        sess.run([loss, step], {x: np.ones((4, 6), np.float32), labels: np.zeros(4, np.int32)})
        ex = [e for e in _executables(sess) if e.fetches][-1]
        assert len(ex.segments) == 1 and not ex.host_ops and ex.single is not None


def test_reads_see_the_start_of_run_value_unless_ordered_after_the_update():
    g = gc.Graph()
    with g.as_default():
        v = gc.Variable(np.array([1.0, 2.0], np.float32))
        before = v * 1.0
        update = v.assign_add(np.array([10.0, 10.0], np.float32))
        with gc.control_dependencies([update]):
            after = v.read_value() * 1.0
        init = gc.global_variables_initializer()
    for backend in ("interpreter", "cpu"):
        with gc.Session(g, gc.Config(backend=backend)) as sess:
            sess.run(init)
            b, u, a = sess.run([before, update, after])
            np.testing.assert_array_equal(b, [1, 2])
            np.testing.assert_array_equal(u, [11, 12])
            np.testing.assert_array_equal(a, [11, 12])
            np.testing.assert_array_equal(sess.run(v), [11, 12])


def test_host_steps_between_native_segments_keep_variable_semantics():
    g = gc.Graph()
    with g.as_default():
        v = gc.Variable(np.float32(1.0))
        x = gc.placeholder(gc.float32, [3])
        first = v.assign(v * 2.0)                       # native
        with gc.control_dependencies([first]):
            looped = gc.while_loop(lambda i, s: i < 3, lambda i, s: (i + 1, s * 2.0 + v.read_value()),
                                   [gc.constant(0), x])[1]
        out = gc.exp(looped) * v                        # native again: v is the start-of-run value
        init = gc.global_variables_initializer()
    feed = np.array([0.1, 0.2, 0.3], np.float32)
    results = {}
    for backend in ("interpreter", "cpu"):
        with gc.Session(g, gc.Config(backend=backend)) as sess:
            sess.run(init)
            results[backend] = sess.run([out, first, looped], {x: feed}) + [sess.run(v)]
            if backend == "cpu":
                ex = [e for e in _executables(sess) if len(e.fetches) == 3][0]
                assert {op.type for op in ex.host_ops} == {"while_loop"} and len(ex.segments) >= 1
    for a, b in zip(results["interpreter"], results["cpu"]):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_uninitialized_variables_raise_on_the_native_path():
    g = gc.Graph()
    with g.as_default():
        v = gc.Variable(np.ones(3, np.float32))
        y = v * 2.0
    with _session(g) as sess:
        with pytest.raises(UninitializedVariableError):
            sess.run(y)


def test_fetched_values_are_fresh_arrays_and_feeds_are_not_aliased():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, [4])
        y = x * 2.0
        c = gc.constant(np.arange(4, dtype=np.float32))
    a = np.ones(4, np.float32)
    with _session(g) as sess:
        for _ in range(3):                      # the later runs take the fast path
            y1, x1, c1 = sess.run([y, x, c], {x: a})
            y2 = sess.run([y, x, c], {x: a})[0]
            assert not np.shares_memory(y1, y2)
            assert not np.shares_memory(x1, a)
            x1[:] = 7
            c1[:] = 7
        np.testing.assert_array_equal(a, 1)
        np.testing.assert_array_equal(sess.run(c), np.arange(4))


def test_fast_path_handles_other_shapes_dtypes_and_layouts():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, [None, None])
        y = gc.reduce_sum(gc.tanh(x) * 3.0, axis=1)
    rng = np.random.default_rng(0)
    with _session(g) as sess:
        for shape in [(3, 5), (3, 5), (2, 7), (3, 5)]:
            a = rng.standard_normal(shape).astype(np.float32)
            np.testing.assert_allclose(sess.run(y, {x: a}), np.tanh(a).sum(1) * 3, rtol=1e-5)
        a = rng.standard_normal((5, 3)).astype(np.float32)
        np.testing.assert_allclose(sess.run(y, {x: a.T}), np.tanh(a.T).sum(1) * 3, rtol=1e-5)   # strided
        np.testing.assert_allclose(sess.run(y, {x: a.astype(np.float64)}), np.tanh(a).sum(1) * 3, rtol=1e-5)
        np.testing.assert_allclose(sess.run(y, {x: a.astype(">f4")}), np.tanh(a).sum(1) * 3, rtol=1e-5)
        with pytest.raises(FeedError):
            sess.run(y, {x: np.ones(3, np.float32)})


def test_function_fast_path_matches_and_falls_back():
    f = gc.function(lambda a, b: (a * b + a, gc.reduce_sum(b)))
    a = np.arange(4, dtype=np.float32)
    b = np.full(4, 2, np.float32)
    for _ in range(3):
        y, s = f(a, b)
        np.testing.assert_array_equal(y, a * b + a)
        assert s == 8
    y, s = f(a[::-1].copy()[::-1], b)        # a strided view: declined natively, right answer anyway
    np.testing.assert_array_equal(y, a * b + a)
    ident = gc.function(lambda a: a)
    out = ident(a)
    out2 = ident(a)
    assert not np.shares_memory(out2, a)


def test_the_entry_point_rejects_bad_arguments_before_writing():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, [3])
        y = x + 1.0
    with _session(g) as sess:
        sess.run(y, {x: np.zeros(3, np.float32)})
        ex = _executables(sess)[0]
    cs = ex.single
    fn, ctx = cs.fn, ex.context_address
    out = np.full(3, -1.0, np.float32)
    good = np.zeros(3, np.float32)
    assert fn(ctx, [good, out]) == 0 and (out == 1).all()
    out[:] = -1
    for bad in (np.zeros(4, np.float32), np.zeros(3, np.float64), np.zeros((3, 1), np.float32),
                np.zeros(6, np.float32)[::2], [0.0, 0.0, 0.0], "no"):
        assert fn(ctx, [bad, out]) == 1
    assert fn(ctx, [good, np.zeros(3, np.float32)[::-1]]) == 2        # outputs must be contiguous
    readonly = np.zeros(3, np.float32)
    readonly.setflags(write=False)
    assert fn(ctx, [good, readonly]) == 2
    assert fn(ctx, [good]) == -1
    assert (out == -1).all()


def test_abi_layout_is_verified_on_this_numpy():
    assert abi.layout_ok()


def test_threads_split_big_kernels_with_identical_results():
    x = np.random.default_rng(0).standard_normal((300, 1000)).astype(np.float32)

    def run():
        g = gc.Graph()
        with g.as_default():
            p = gc.placeholder(gc.float32, x.shape)
            y = gc.tanh(p) * gc.exp(-p * p)
            s = gc.reduce_sum(y, axis=1)
        with _session(g) as sess:
            return sess.run([y, s], {p: x})

    before = parallel.num_threads()
    try:
        parallel.set_num_threads(1)
        one = run()
        parallel.set_num_threads(2)
        two = run()
    finally:
        parallel.set_num_threads(before)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_allclose(one[1], two[1], rtol=1e-6)
    np.testing.assert_allclose(one[0], np.tanh(x) * np.exp(-x * x), rtol=1e-5, atol=1e-6)


def test_ops_without_native_code_become_host_steps():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, [5])
        u = gc.random_uniform([5], seed=3)
        y = gc.exp(x) + u
    with _session(g) as sess:
        out = sess.run(y, {x: np.zeros(5, np.float32)})
        ex = _executables(sess)[0]
        assert any(op.opdef.lowering == "random" for op in ex.host_ops)
        assert ex.segments and ((out >= 1) & (out < 2)).all()


# ---- random programs against the interpreter ---------------------------------------------------------------
_UNARY = [gc.exp, gc.tanh, gc.sigmoid, gc.negative, gc.square, gc.abs, lambda t: gc.log1p(gc.square(t)), gc.sin]
_BINARY = [gc.add, gc.subtract, gc.multiply, gc.maximum, lambda a, b: a / (gc.abs(b) + 1)]
_REDUCE = [gc.reduce_sum, gc.reduce_max, gc.reduce_mean]


@settings(max_examples=20, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 6), st.integers(0, 8)), min_size=1, max_size=7),
       st.sampled_from([(2, 3), (4, 1), (3, 2, 2), (70,)]), st.sampled_from([gc.float32, gc.float64]),
       st.integers(0, 2**31 - 1))
def test_random_programs_on_the_cpu_backend_match_the_interpreter(program, shape, dtype, seed):
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(dtype, shape, name="x")
        y = gc.placeholder(dtype, shape[-1:], name="y")
        values = build_program([x, y], program, _UNARY, _BINARY, _REDUCE)
        total = gc.add_n([gc.reduce_sum(v) for v in values])
        grads = gc.gradients(total, [x, y], unconnected_gradients="zero")
    rng = np.random.default_rng(seed)
    feed = {x: rng.uniform(-2, 2, shape).astype(dtype), y: rng.uniform(-2, 2, shape[-1:]).astype(dtype)}
    fetches = values + grads
    results = {}
    for backend in ("interpreter", "cpu"):
        with gc.Session(g, gc.Config(backend=backend)) as sess:
            results[backend] = sess.run(fetches, feed)
    rtol = 2e-5 if dtype == gc.float32 else 1e-12
    for a, b in zip(results["interpreter"], results["cpu"]):
        np.testing.assert_allclose(b, a, rtol=rtol, atol=rtol)


# ---- long reductions split over threads, matrix-vector products ------------------------------------------
def _run_cpu(build, feeds):
    g = gc.Graph()
    with g.as_default():
        placeholders, outputs = build()
    with _session(g) as sess:
        return sess.run(outputs, dict(zip(placeholders, feeds)))


@pytest.mark.parametrize("shape,axis", [((1_000_003,), None), ((50_001, 37), 0), ((700, 300), None),
                                        ((40_000, 3, 2), (0, 2))])
def test_long_reductions_are_split_and_deterministic(shape, axis):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)

    def build():
        p = gc.placeholder(gc.float32, shape)
        return [p], [gc.reduce_sum(p, axis=axis), gc.reduce_max(p, axis=axis), gc.reduce_mean(p * p, axis=axis),
                     gc.exp(p) * 2.0]

    before = parallel.num_threads()
    try:
        parallel.set_num_threads(1)
        one = _run_cpu(build, [x])
        parallel.set_num_threads(2)
        two = _run_cpu(build, [x])
    finally:
        parallel.set_num_threads(before)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)          # chunking depends on shapes only
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(one[0], x64.sum(axis=axis), rtol=1e-5, atol=1e-6 * np.sqrt(x.size))
    np.testing.assert_array_equal(one[1], x.max(axis=axis))
    np.testing.assert_allclose(one[2], (x64 * x64).mean(axis=axis), rtol=1e-5)
    np.testing.assert_allclose(one[3], np.exp(x) * 2, rtol=1e-6)


def test_split_reduction_kernels_mean_what_the_original_means(monkeypatch):
    from graphc.lowering import split_reduction as sr
    from graphc.lowering.evaluate import evaluate
    from graphc.lowering.lower import lower_tensors
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (7, 5))
        s = gc.reduce_sum(gc.square(x), axis=0)
    kernel = lower_tensors("colsum", [x], [s])
    monkeypatch.setattr(sr, "MIN_CHUNK_ELEMENTS", 2)      # 3 chunks of 2 rows, then a tail of 1 row
    split = sr.split_reduction(kernel)
    assert split is not None and split.tail is not None
    xv = np.random.default_rng(0).standard_normal((7, 5)).astype(np.float32)
    n_scratch = len(split.scratch)
    partial = evaluate(split.partial, [xv])[-n_scratch:]
    tail = evaluate(split.tail, [xv])[-n_scratch:]
    width = 5                                             # the tail fills the last slot of each result
    scratch = [np.concatenate([p[:-width], t[-width:]]) for p, t in zip(partial, tail)]
    final = evaluate(split.final, scratch)[0]
    np.testing.assert_allclose(final, evaluate(kernel, [xv])[0], rtol=1e-6)
    np.testing.assert_allclose(final, (xv.astype(np.float64) ** 2).sum(0), rtol=1e-5)


@pytest.mark.parametrize("a_shape,b_shape,ta,tb", [((300, 7), (7, 1), False, False), ((7, 300), (7, 1), True, False),
                                                   ((1, 7), (7, 300), False, False), ((1, 7), (300, 7), False, True),
                                                   ((1, 50), (50, 1), False, False), ((4, 0), (0, 1), False, False),
                                                   ((1, 9), (1, 9), False, True)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
def test_matrix_vector_products_are_loop_kernels(a_shape, b_shape, ta, tb, dtype):
    rng = np.random.default_rng(0)
    a = rng.integers(-3, 4, a_shape).astype(dtype)
    b = rng.integers(-3, 4, b_shape).astype(dtype)
    g = gc.Graph()
    with g.as_default():
        pa, pb = gc.placeholder(dtype, a_shape), gc.placeholder(dtype, b_shape)
        y = gc.matmul(pa, pb, transpose_a=ta, transpose_b=tb)
    with _session(g) as sess:
        out = sess.run(y, {pa: a, pb: b})
        ex = _executables(sess)[0]
    kinds = [n.kind for s in ex.layout.steps for n in getattr(s, "ops", [])]
    assert "matmul" not in kinds and "kernel" in kinds
    expected = (a.T if ta else a) @ (b.T if tb else b)
    np.testing.assert_allclose(out, expected, rtol=1e-6)


# ---- native control flow -------------------------------------------------------------------------------------
def _native_and_interpreted(build, feeds):
    results = {}
    for backend in ("interpreter", "cpu"):
        g = gc.Graph()
        with g.as_default():
            placeholders, outputs = build()
        with gc.Session(g, gc.Config(backend=backend)) as sess:
            results[backend] = sess.run(outputs, dict(zip(placeholders, feeds)))
            if backend == "cpu":
                ex = _executables(sess)[0]
                assert not ex.host_ops, [op.type for op in ex.host_ops]
                assert len(ex.segments) == 1
    for a, b in zip(results["interpreter"], results["cpu"]):
        np.testing.assert_allclose(b, a, rtol=1e-6)
    return results["cpu"]


def test_while_loop_swapping_its_variables_runs_natively():
    def build():
        a = gc.placeholder(gc.float32, [3])
        b = gc.placeholder(gc.float32, [3])
        i, x, y = gc.while_loop(lambda i, x, y: i < 5, lambda i, x, y: (i + 1, y, x + y), [gc.constant(0), a, b])
        return [a, b], [i, x, y]
    i, x, y = _native_and_interpreted(build, [np.array([1, 0, 2], np.float32), np.array([1, 1, -1], np.float32)])
    assert i == 5
    np.testing.assert_array_equal(x, [8, 5, 1])        # (x, y) -> (y, x + y), five times


def test_while_loop_with_maximum_iterations_and_a_cond_inside_runs_natively():
    def build():
        n0 = gc.placeholder(gc.int32, [])

        def body(n, steps):
            n = gc.cond(gc.equal(n % 2, 0), lambda: n // 2, lambda: 3 * n + 1)
            return n, steps + 1
        n, steps = gc.while_loop(lambda n, steps: gc.not_equal(n, 1), body, [n0, 0], maximum_iterations=10)
        return [n0], [n, steps]
    n, steps = _native_and_interpreted(build, [np.int32(27)])
    assert steps == 10


def test_cond_with_matmuls_and_reductions_in_its_branches_runs_natively():
    rng = np.random.default_rng(0)

    def build():
        x = gc.placeholder(gc.float32, [4, 5])
        w = gc.placeholder(gc.float32, [5, 6])
        out = gc.cond(gc.reduce_sum(x) > 0, lambda: gc.tanh(gc.matmul(x, w)), lambda: gc.matmul(x, w) * 2.0)
        return [x, w], [out, gc.reduce_max(out)]
    for sign in (1, -1):
        x = np.abs(rng.standard_normal((4, 5))).astype(np.float32) * sign
        _native_and_interpreted(build, [x, rng.standard_normal((5, 6)).astype(np.float32)])


def test_gradient_of_a_while_loop_runs_natively():
    def build():
        x = gc.placeholder(gc.float32, [3])
        y = gc.while_loop(lambda i, v: i < 4, lambda i, v: (i + 1, gc.sin(v) * 1.5), [gc.constant(0), x])[1]
        return [x], [y, gc.gradients(gc.reduce_sum(y), [x])[0]]
    results = {}
    g = gc.Graph()
    with g.as_default():
        ph, outs = build()
    for backend in ("interpreter", "cpu"):
        with gc.Session(g, gc.Config(backend=backend)) as sess:
            results[backend] = sess.run(outs, {ph[0]: np.array([0.1, 0.5, -1.0], np.float32)})
    for a, b in zip(results["interpreter"], results["cpu"]):
        np.testing.assert_allclose(b, a, rtol=1e-5)


def test_arrays_with_an_equal_but_foreign_dtype_object_run():
    import pickle
    foreign = pickle.loads(pickle.dumps(np.arange(4, dtype=np.float32)))
    assert foreign.dtype == np.float32 and foreign.dtype is not np.dtype(np.float32)
    f = gc.function(lambda x: x * 2.0)
    np.testing.assert_array_equal(f(foreign), np.arange(4) * 2.0)       # traced on it
    np.testing.assert_array_equal(f(np.arange(4, dtype=np.float32)), np.arange(4) * 2.0)
    np.testing.assert_array_equal(f(foreign), np.arange(4) * 2.0)


def test_variable_buffers_are_reused_only_when_nobody_else_holds_them():
    import weakref
    g = gc.Graph()
    with g.as_default():
        v = gc.Variable(np.zeros(1000, np.float32))
        step = v.assign_add(np.ones(1000, np.float32))
        init = gc.global_variables_initializer()
    with _session(g) as sess:
        sess.run(init)
        (name,) = sess._store.values
        sess.run(step)
        sess.run(step)
        second = weakref.ref(sess._store.values[name])      # not a holder
        sess.run(step)
        sess.run(step)
        assert sess._store.values[name] is second()          # its buffer came back two updates later
        held = sess._store.values[name]                      # now someone holds the value
        sess.run(step)
        sess.run(step)
        sess.run(step)
        np.testing.assert_array_equal(held, 4.0)             # never written again
        np.testing.assert_array_equal(sess.run(v), 7.0)
        assert not held.flags.writeable
