"""The ptx backend on a GPU: results match the interpreter, variables stay
on the device across runs, host steps mix with launches. Every test that
launches needs a CUDA driver and GPU and skips cleanly without one; the op
suites run on it with GRAPHC_TEST_BACKENDS=cpu,ptx (tests/conftest.py)."""
import numpy as np
import pytest

import graphc as gc
from graphc.backends import available_backends
from graphc.errors import CompileError, UninitializedVariableError
from graphc.runtime import cuda

needs_gpu = pytest.mark.skipif(not cuda.available(), reason="no CUDA driver/GPU: " + str(cuda.unavailable_reason()))
F32 = np.float32


def test_without_a_gpu_the_backend_is_absent_and_asking_for_it_names_the_driver():
    if cuda.available():
        pytest.skip("this machine has a usable GPU")
    assert "ptx" not in available_backends()
    with pytest.raises(CompileError, match="ptx.*(CUDA|driver|GPU)"):
        gc.Session(config=gc.Config(backend="ptx"))
    with pytest.raises(CompileError, match="CUDA|driver|GPU"):
        gc.function(lambda x: x * 2.0, input_signature=[gc.TensorSpec((3,), gc.float32)], backend="ptx")(
            np.ones(3, F32))
    with pytest.raises(cuda.CudaUnavailableError):
        cuda.get_context()
    assert cuda.unavailable_reason()
    # "auto" never picks it
    assert gc.Session().backend in ("cpu", "interpreter")


def _run(backend, build, feeds_of, steps=1, init=True):
    g = gc.Graph()
    with g.as_default():
        fetches, placeholders = build()
        inits = gc.global_variables_initializer() if gc.global_variables(g) else None
    results = []
    with gc.Session(graph=g, config=gc.Config(backend=backend)) as sess:
        if init and inits is not None:
            sess.run(inits)
        for step in range(steps):
            results.append(sess.run(fetches, dict(zip(placeholders, feeds_of(step)))))
        variables = sess._variable_values()
    return results, variables


def _close(got, want, rtol=2e-5, atol=2e-6):
    for a, b in zip(got, want):
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and a.shape == b.shape
        if a.dtype.kind == "f":
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, equal_nan=True)
        else:
            np.testing.assert_array_equal(a, b)


def _mlp():
    rng = np.random.default_rng(0)
    x = gc.placeholder(gc.float32, (64, 784), name="x")
    labels = gc.placeholder(gc.int32, (64,), name="labels")
    v = {"W1": gc.Variable(rng.standard_normal((784, 256)).astype(F32) * 0.05, name="W1"),
         "b1": gc.Variable(np.zeros(256, F32), name="b1"),
         "W2": gc.Variable(rng.standard_normal((256, 10)).astype(F32) * 0.06, name="W2"),
         "b2": gc.Variable(np.zeros(10, F32), name="b2")}
    hidden = gc.nn.relu(gc.matmul(x, v["W1"]) + v["b1"])
    logits = gc.matmul(hidden, v["W2"]) + v["b2"]
    loss = gc.reduce_mean(gc.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    train = gc.train.GradientDescentOptimizer(0.1).minimize(loss)
    return [loss, train], [x, labels]


def _mlp_feeds(step):
    rng = np.random.default_rng(100 + step)
    return [rng.standard_normal((64, 784)).astype(F32), rng.integers(0, 10, 64).astype(np.int32)]


@needs_gpu
def test_mlp_training_steps_match_the_interpreter_and_keep_variables_on_the_device():
    want, want_vars = _run("interpreter", _mlp, _mlp_feeds, steps=4)
    got, got_vars = _run("ptx", _mlp, _mlp_feeds, steps=4)
    for g_, w_ in zip(got, want):
        _close([g_[0]], [w_[0]], rtol=1e-4, atol=1e-5)
    assert sorted(got_vars) == sorted(want_vars)
    for name in want_vars:
        np.testing.assert_allclose(got_vars[name], want_vars[name], rtol=1e-4, atol=1e-5)


@needs_gpu
def test_w1_elementwise_chain_and_gradient():
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from benchmarks import workloads
    x = np.random.default_rng(1).standard_normal(1 << 20).astype(F32)
    outs = {}
    for backend in ("interpreter", "ptx"):
        f = gc.value_and_grad(workloads.w1_graphc_fn, input_signature=[gc.TensorSpec(x.shape, gc.float32)],
                              backend=backend)
        outs[backend] = f(x)
    np.testing.assert_allclose(outs["ptx"][0], outs["interpreter"][0], rtol=1e-4)
    np.testing.assert_allclose(outs["ptx"][1], outs["interpreter"][1], rtol=2e-5, atol=1e-6)


@needs_gpu
@pytest.mark.parametrize("shape,axis", [((1000, 1000), None), ((70000, 3), 0), ((3, 70000), 1), ((64, 300), 0),
                                        ((64, 300), 1), ((5, 7, 9), (0, 2))])
def test_reductions_of_every_shape(shape, axis):
    def build():
        x = gc.placeholder(gc.float32, shape)
        return [gc.reduce_sum(x, axis=axis), gc.reduce_max(x, axis=axis), gc.argmax(gc.reshape(x, (-1,)), 0)], [x]

    data = np.random.default_rng(2).standard_normal(shape).astype(F32)
    want, _ = _run("interpreter", build, lambda s: [data])
    got, _ = _run("ptx", build, lambda s: [data])
    _close(got[0], want[0], rtol=1e-4, atol=1e-4)


@needs_gpu
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
def test_matmuls(ta, tb, dtype):
    a_shape = (37, 50) if ta else (50, 37)
    b_shape = (45, 37) if tb else (37, 45)

    def build():
        a = gc.placeholder(gc.as_dtype(dtype), a_shape)
        b = gc.placeholder(gc.as_dtype(dtype), b_shape)
        return [gc.matmul(a, b, transpose_a=ta, transpose_b=tb)], [a, b]

    rng = np.random.default_rng(3)
    feeds = [(rng.standard_normal(a_shape) * 3).astype(dtype), (rng.standard_normal(b_shape) * 3).astype(dtype)]
    want, _ = _run("interpreter", build, lambda s: feeds)
    got, _ = _run("ptx", build, lambda s: feeds)
    _close(got[0], want[0], rtol=1e-4, atol=1e-4)


@needs_gpu
def test_host_steps_between_launches_and_variable_order():
    """Random ops and a while loop run on the host; reads see the start-of-run
    value unless ordered after an update; assign_add updates on the device."""
    def build():
        v = gc.Variable(np.arange(6, dtype=F32), name="v")
        x = gc.placeholder(gc.float32, (6,), name="x")
        noise = gc.random_uniform((6,), seed=3)
        before = v * 1.0
        upd = gc.assign_add(v, x + noise * 0.0)
        with gc.control_dependencies([upd]):
            after = v * 1.0         # a read ordered after the update
        n, total = gc.while_loop(lambda i, t: i < 3, lambda i, t: (i + 1, t + gc.reduce_sum(after)),
                                 [gc.constant(0), gc.constant(0.0)])
        return [before, upd, after, total], [x]

    feeds = lambda s: [np.full(6, s + 1, F32)]  # noqa: E731
    want, want_vars = _run("interpreter", build, feeds, steps=3)
    got, got_vars = _run("ptx", build, feeds, steps=3)
    for g_, w_ in zip(got, want):
        _close(g_, w_)
    np.testing.assert_array_equal(got_vars["v"], want_vars["v"])


@needs_gpu
def test_uninitialized_variables_raise():
    def build():
        v = gc.Variable(np.zeros(3, F32), name="v")
        return [v * 2.0], []

    with pytest.raises(UninitializedVariableError):
        _run("ptx", build, lambda s: [], init=False)


@needs_gpu
def test_a_variable_loaded_on_the_host_is_uploaded_again():
    g = gc.Graph()
    with g.as_default():
        v = gc.Variable(np.ones(4, F32), name="v")
        y = v * 3.0
        inc = gc.assign_add(v, np.ones(4, F32))
    with gc.Session(graph=g, config=gc.Config(backend="ptx")) as sess:
        sess.run(v.initializer)
        np.testing.assert_array_equal(sess.run(y), np.full(4, 3, F32))
        sess.run(inc)
        np.testing.assert_array_equal(sess.run(y), np.full(4, 6, F32))
        sess._load_variable(v, np.full(4, 10, F32))
        np.testing.assert_array_equal(sess.run(y), np.full(4, 30, F32))
        sess.run(inc)
        sess.run(inc)
        np.testing.assert_array_equal(sess._variable_values()["v"], np.full(4, 12, F32))


@needs_gpu
def test_fetches_are_fresh_host_arrays_and_feeds_pass_through():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (5,))
        y = gc.exp(x) + 1.0
    data = np.linspace(-2, 2, 5).astype(F32)
    with gc.Session(graph=g, config=gc.Config(backend="ptx")) as sess:
        a = sess.run(y, {x: data})
        b = sess.run(y, {x: data})
        assert a is not b and not np.shares_memory(a, b)
        np.testing.assert_allclose(a, np.exp(data) + 1.0, rtol=2e-6)
        np.testing.assert_array_equal(sess.run(x, {x: data}), data)


@needs_gpu
def test_the_device_and_its_ptx_are_described():
    ctx = cuda.get_context()
    assert ctx.name and ctx.compute_capability[0] >= 3 and ctx.total_memory > 0
    from graphc.backends.ptx import PtxExecutable
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (100,))
        y = gc.reduce_sum(gc.tanh(x))
    with gc.Session(graph=g, config=gc.Config(backend="ptx")) as sess:
        sess.run(y, {x: np.ones(100, F32)})
        (ex,) = [e for e in sess._cache.values() if isinstance(e, PtxExecutable)]
        assert ".entry" in ex.ptx and ctx.name in ex.describe()
