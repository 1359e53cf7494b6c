"""The ptx backend end to end: results match the interpreter, variables stay
on the device across runs, host steps mix with launches.

On a machine with an NVIDIA GPU these run on it. Without one they run on
the CUDA emulator (graphc.runtime.cuda_emulator: the same entries built for
the host, the same launch plans, barriers and shared memory emulated), so
the backend is exercised in CI too; ``GRAPHC_TEST_REAL_GPU=1`` makes them
skip instead of emulating. The op suites run on it with
GRAPHC_TEST_BACKENDS=cpu,ptx (tests/conftest.py)."""
import os

import numpy as np
import pytest

import graphc as gc
import conftest as _conftest
from graphc.backends import available_backends
from graphc.errors import CompileError, UninitializedVariableError
from graphc.runtime import cuda

F32 = np.float32


REAL_GPU = _conftest.REAL_GPU


@pytest.fixture(autouse=True, scope="module")
def device():
    """The real GPU when there is one, else the emulator (or a skip)."""
    if not REAL_GPU and os.environ.get("GRAPHC_TEST_REAL_GPU"):
        pytest.skip("no CUDA driver/GPU and GRAPHC_TEST_REAL_GPU is set")
    previous = cuda.use_emulator(not REAL_GPU)
    yield cuda.get_context()
    cuda.use_emulator(previous)


def test_without_a_gpu_the_backend_is_absent_and_asking_for_it_names_the_driver():
    if REAL_GPU:
        pytest.skip("this machine has a usable GPU")
    previous = cuda.use_emulator(False)
    try:
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
    finally:
        cuda.use_emulator(previous)


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


# the MLP of benchmark W2 on a GPU; smaller under the emulator, which runs
# every thread of the tiled matmul on the CPU, one after the other
MLP_IN, MLP_HIDDEN = (784, 256) if REAL_GPU else (96, 48)


def _mlp():
    rng = np.random.default_rng(0)
    x = gc.placeholder(gc.float32, (64, MLP_IN), name="x")
    labels = gc.placeholder(gc.int32, (64,), name="labels")
    v = {"W1": gc.Variable(rng.standard_normal((MLP_IN, MLP_HIDDEN)).astype(F32) * 0.05, name="W1"),
         "b1": gc.Variable(np.zeros(MLP_HIDDEN, F32), name="b1"),
         "W2": gc.Variable(rng.standard_normal((MLP_HIDDEN, 10)).astype(F32) * 0.06, name="W2"),
         "b2": gc.Variable(np.zeros(10, F32), name="b2")}
    hidden = gc.nn.relu(gc.matmul(x, v["W1"]) + v["b1"])
    logits = gc.matmul(hidden, v["W2"]) + v["b2"]
    loss = gc.reduce_mean(gc.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    train = gc.train.GradientDescentOptimizer(0.1).minimize(loss)
    return [loss, train], [x, labels]


def _mlp_feeds(step):
    rng = np.random.default_rng(100 + step)
    return [rng.standard_normal((64, MLP_IN)).astype(F32), rng.integers(0, 10, 64).astype(np.int32)]


def test_mlp_training_steps_match_the_interpreter_and_keep_variables_on_the_device():
    want, want_vars = _run("interpreter", _mlp, _mlp_feeds, steps=4)
    got, got_vars = _run("ptx", _mlp, _mlp_feeds, steps=4)
    for g_, w_ in zip(got, want):
        _close([g_[0]], [w_[0]], rtol=1e-4, atol=1e-5)
    assert sorted(got_vars) == sorted(want_vars)
    for name in want_vars:
        np.testing.assert_allclose(got_vars[name], want_vars[name], rtol=1e-4, atol=1e-5)


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


@pytest.mark.parametrize("a_shape,b_shape,ta,tb", [((3, 20, 17), (3, 17, 25), False, False),
                                                   ((2, 1, 17, 20), (3, 17, 25), True, False),
                                                   ((1, 20, 17), (4, 25, 17), False, True),
                                                   ((20, 17), (2, 3, 17, 25), False, False)])
def test_batched_and_broadcast_matmuls_are_tiled_per_batch(a_shape, b_shape, ta, tb):
    def build():
        a = gc.placeholder(gc.float32, a_shape)
        b = gc.placeholder(gc.float32, b_shape)
        return [gc.matmul(a, b, transpose_a=ta, transpose_b=tb)], [a, b]

    rng = np.random.default_rng(4)
    feeds = [rng.standard_normal(a_shape).astype(F32), rng.standard_normal(b_shape).astype(F32)]
    want, _ = _run("interpreter", build, lambda s: feeds)
    g = gc.Graph()
    with g.as_default():
        fetches, placeholders = build()
    with gc.Session(graph=g, config=gc.Config(backend="ptx")) as sess:
        got = sess.run(fetches, dict(zip(placeholders, feeds)))
        assert "tiled_matmul" in _strategies(sess)
    _close(got, want[0], rtol=1e-5, atol=1e-5)


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


def test_uninitialized_variables_raise():
    def build():
        v = gc.Variable(np.zeros(3, F32), name="v")
        return [v * 2.0], []

    with pytest.raises(UninitializedVariableError):
        _run("ptx", build, lambda s: [], init=False)


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


def test_the_device_and_its_ptx_are_described(device):
    ctx = device
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


def _strategies(sess):
    from graphc.backends.ptx import PtxExecutable
    return {k.strategy for e in sess._cache.values() if isinstance(e, PtxExecutable) and e.ptx_module
            for k in e.ptx_module.kernels}


@pytest.mark.parametrize("case", ["float_rows", "int_full_tail", "bool_columns", "fused_store_and_sum",
                                  "float64_prod", "moments"])
def test_block_level_tree_reductions_match_the_interpreter(case):
    def build():
        rng = np.random.default_rng(7)
        if case == "float_rows":
            x = gc.placeholder(gc.float32, (3, 70000))
            return [gc.reduce_sum(x, axis=1), gc.reduce_max(x, axis=1), gc.reduce_mean(x * x, axis=1)], [x], \
                [rng.standard_normal((3, 70000)).astype(F32)]
        if case == "int_full_tail":
            x = gc.placeholder(gc.int32, (100003,))
            return [gc.reduce_sum(x), gc.reduce_max(x), gc.reduce_min(x)], [x], \
                [rng.integers(-1000, 1000, 100003).astype(np.int32)]
        if case == "bool_columns":
            x = gc.placeholder(gc.float32, (70000, 3))
            return [gc.reduce_any(x > 3.9, axis=0), gc.reduce_all(x > -4.5, axis=0)], [x], \
                [rng.standard_normal((70000, 3)).astype(F32)]
        if case == "fused_store_and_sum":
            x = gc.placeholder(gc.float32, (50000,))
            y = gc.exp(x * 0.1)
            return [y, gc.reduce_sum(y)], [x], [rng.standard_normal(50000).astype(F32)]
        if case == "float64_prod":
            x = gc.placeholder(gc.float64, (5000,))
            return [gc.reduce_prod(x)], [x], [1.0 + rng.standard_normal(5000) * 1e-3]
        x = gc.placeholder(gc.float32, (64, 1500))
        mean = gc.reduce_mean(x, axis=1, keepdims=True)
        return [mean, gc.reduce_mean(gc.square(x - mean), axis=1), gc.reduce_logsumexp(x, axis=1)], [x], \
            [rng.standard_normal((64, 1500)).astype(F32)]

    results = {}
    for backend in ("interpreter", "ptx"):
        g = gc.Graph()
        with g.as_default():
            fetches, placeholders, data = build()
        with gc.Session(graph=g, config=gc.Config(backend=backend)) as sess:
            results[backend] = sess.run(fetches, dict(zip(placeholders, data)))
            if backend == "ptx":
                assert "block_reduce" in _strategies(sess)
    _close(results["ptx"], results["interpreter"], rtol=1e-4, atol=1e-4)


def test_updated_variables_stay_on_the_device_until_someone_reads_them():
    """A training loop that fetches nothing copies no variable back: the
    store defers to the device copies and fetches them when read."""
    if REAL_GPU:
        pytest.skip("counts driver calls, which only the emulator records")
    g = gc.Graph()
    with g.as_default():
        fetches, placeholders = _mlp()
        init = gc.global_variables_initializer()
    driver = cuda.get_context().driver.lib
    with gc.Session(graph=g, config=gc.Config(backend="ptx")) as sess:
        sess.run(init)
        sess.run(fetches[1], dict(zip(placeholders, _mlp_feeds(0))))
        before = driver.calls.get("cuMemcpyDtoH_v2", 0)
        for step in range(1, 4):
            sess.run(fetches[1], dict(zip(placeholders, _mlp_feeds(step))))
        assert driver.calls.get("cuMemcpyDtoH_v2", 0) == before
        assert sorted(sess._store.deferred) == ["W1", "W2", "b1", "b2"]
        values = sess._variable_values()
        assert driver.calls["cuMemcpyDtoH_v2"] == before + 4 and not sess._store.deferred
        # the fetched values are the device's: the interpreter agrees after the same steps
        loss = sess.run(fetches[0], dict(zip(placeholders, _mlp_feeds(9))))
    want, want_vars = _run("interpreter", _mlp, _mlp_feeds, steps=4)
    for name in want_vars:
        np.testing.assert_allclose(values[name], want_vars[name], rtol=1e-4, atol=1e-5)
    assert np.isfinite(loss)


def test_kernel_outputs_share_device_buffers_when_their_lifetimes_do_not_overlap():
    from graphc.backends.ptx import PtxExecutable
    g = gc.Graph()
    with g.as_default():
        fetches, placeholders = _mlp()
        init = gc.global_variables_initializer()
    with gc.Session(graph=g, config=gc.Config(backend="ptx")) as sess:
        sess.run(init)
        sess.run(fetches, dict(zip(placeholders, _mlp_feeds(0))))
        ex = max((e for e in sess._cache.values() if isinstance(e, PtxExecutable)), key=lambda e: len(e.steps))
    plan = ex.program.analyses["memory_plan"]
    outputs = [t for s in ex.steps if type(s).__name__ == "_KernelStep" for t in s.op.outputs if t in ex.slots]
    assert len(set(ex.slots.values())) < len(outputs)
    assert sum(ex.slot_bytes) < sum(plan.tensors[t].nbytes for t in outputs)
    # no two tensors in one buffer are alive at once (views of them included), not even in place
    ends = {}
    for life in plan.tensors.values():
        ends[life.owner] = max(ends.get(life.owner, -1), life.end)
    by_slot = {}
    for t in outputs:
        by_slot.setdefault(ex.slots[t], []).append(t)
    for tensors in by_slot.values():
        tensors.sort(key=lambda t: plan.tensors[t].start)
        for a, b in zip(tensors, tensors[1:]):
            assert ends[a] < plan.tensors[b].start


def test_a_failing_kernel_is_an_error_naming_its_op(monkeypatch):
    """A launch the driver refuses names the op and its source line; a fault
    found only at the end of the run says how to find the op."""
    if REAL_GPU:
        pytest.skip("makes the emulated driver fail on purpose")
    from graphc.errors import ExecutionError
    from graphc.runtime import cuda_emulator
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (100,))
        y = gc.exp(x) * 2.0
    feeds = {x: np.ones(100, F32)}

    def failing_launch(self, *args):
        raise cuda_emulator._Failure(cuda_emulator.CUDA_ERROR_ILLEGAL_ADDRESS, "injected fault")

    with gc.Session(graph=g, config=gc.Config(backend="ptx")) as sess:
        sess.run(y, feeds)
        monkeypatch.setattr(cuda_emulator.EmulatedDriver, "_cuLaunchKernel", failing_launch)
        with pytest.raises(ExecutionError, match=r"op '.*' created at .*test_backend_ptx.py:\d+.*"
                                                 r"ILLEGAL_ADDRESS: injected fault"):
            sess.run(y, feeds)
        monkeypatch.undo()

        def failing_sync(self):
            raise cuda_emulator._Failure(cuda_emulator.CUDA_ERROR_ILLEGAL_ADDRESS, "late fault")

        monkeypatch.setattr(cuda_emulator.EmulatedDriver, "_cuCtxSynchronize", failing_sync)
        with pytest.raises(ExecutionError, match="failed on the GPU.*late fault.*GRAPHC_CUDA_SYNC=1"):
            sess.run(y, feeds)
    with gc.Session(graph=g, config=gc.Config(backend="ptx", debug=True)) as sess:
        with pytest.raises(ExecutionError, match=r"op '.*' created at .*its kernel graphc_k\d.*late fault"):
            sess.run(y, feeds)


def test_start_of_run_reads_after_a_host_step_see_the_start_value():
    """A run updates the variable on the device, a host step then copies the
    update to the host, and an unordered read scheduled after both must
    still see the start-of-run value (uploaded again: the device copy now
    holds the update)."""
    def build():
        v = gc.Variable(np.arange(4, dtype=F32), name="v")
        x = gc.placeholder(gc.float32, (4,), name="x")
        upd = gc.assign_add(v, x)
        with gc.control_dependencies([upd]):
            after = v * 1.0
        noise = gc.random_uniform((4,), seed=1) * 0.0       # a host step after the update
        late = v * 1.0 + noise                              # unordered: the start-of-run value
        return [upd, after, late], [x]

    feeds = lambda s: [np.full(4, s + 1, F32)]  # noqa: E731
    want, want_vars = _run("interpreter", build, feeds, steps=3)
    got, got_vars = _run("ptx", build, feeds, steps=3)
    for g_, w_ in zip(got, want):
        _close(g_, w_)
    np.testing.assert_array_equal(got_vars["v"], want_vars["v"])
