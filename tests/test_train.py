"""Optimizers, global step, clipping and the gradient-accumulation pattern,
each checked against a hand-written NumPy computation."""
import os
import re

import numpy as np
import pytest

import graphc as gc
from conftest import run

INTERP = gc.Config(backend="interpreter")
DOCS = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "training.md")


def session():
    s = gc.Session(config=INTERP)
    return s


def regression_data(rng, n=32, d=3, dtype=np.float64):
    x = rng.normal(size=(n, d)).astype(dtype)
    y = (x @ np.arange(1, d + 1) + 0.5 + 0.1 * rng.normal(size=n)).astype(dtype).reshape(n, 1)
    return x, y


def linear_model(d, dtype, w0=None, b0=0.0):
    x = gc.placeholder(dtype, (None, d), name="x")
    y = gc.placeholder(dtype, (None, 1), name="y")
    w = gc.Variable(np.zeros((d, 1), dtype) if w0 is None else w0.astype(dtype), name="w")
    b = gc.Variable(np.asarray(b0, dtype), name="b")
    loss = gc.reduce_mean(gc.square(x @ w + b - y))
    return x, y, w, b, loss


def np_grads(x, y, w, b):
    """Gradients of mean((x @ w + b - y)^2) for w (d,1) and b (scalar)."""
    r = x @ w + b - y
    return 2 * x.T @ r / len(y), 2 * np.mean(r)


def train_graph(opt, steps, x_data, y_data, dtype=np.float64, w0=None, fetch_slots=False):
    d = x_data.shape[1]
    x, y, w, b, loss = linear_model(d, dtype, w0=w0)
    train = opt.minimize(loss)
    with session() as sess:
        sess.run(gc.global_variables_initializer())
        for _ in range(steps):
            sess.run(train, {x: x_data, y: y_data})
        return sess.run([w, b])


def np_train(update, steps, x, y, w0=None):
    """Run a NumPy optimizer ``update(params, grads, state, t) -> params``."""
    params = [np.zeros((x.shape[1], 1)) if w0 is None else w0.astype(np.float64), np.float64(0.0)]
    state = {}
    for t in range(1, steps + 1):
        grads = np_grads(x, y, *params)
        params = [update(i, p, g, state, t) for i, (p, g) in enumerate(zip(params, grads))]
    return params


# ---- gradient descent --------------------------------------------------------------------
def test_sgd_linear_regression_matches_numpy_100_steps(rng):
    x, y = regression_data(rng)
    w, b = train_graph(gc.train.GradientDescentOptimizer(0.1), 100, x, y)
    w_ref, b_ref = np_train(lambda i, p, g, s, t: p - 0.1 * g, 100, x, y)
    np.testing.assert_allclose(w, w_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(b, b_ref, rtol=1e-10, atol=1e-12)
    # and it converged to least squares
    lstsq = np.linalg.lstsq(np.hstack([x, np.ones((len(x), 1))]), y, rcond=None)[0]
    np.testing.assert_allclose(np.append(w, b), lstsq.ravel(), atol=1e-2)


def test_sgd_float32_matches_numpy(rng):
    x, y = regression_data(rng, dtype=np.float32)
    w, b = train_graph(gc.train.GradientDescentOptimizer(0.05), 100, x, y, dtype=np.float32)
    assert w.dtype == np.float32 and b.dtype == np.float32
    w_ref, b_ref = np_train(lambda i, p, g, s, t: p - 0.05 * g, 100, x.astype(np.float64), y.astype(np.float64))
    np.testing.assert_allclose(w, w_ref, atol=1e-5)
    np.testing.assert_allclose(b, b_ref, atol=1e-5)


# ---- momentum ------------------------------------------------------------------------------
@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_matches_numpy(rng, nesterov):
    x, y = regression_data(rng)
    w0 = rng.normal(size=(3, 1))
    lr, mu = 0.02, 0.9
    w, b = train_graph(gc.train.MomentumOptimizer(lr, mu, use_nesterov=nesterov), 7, x, y, w0=w0)

    def update(i, p, g, state, t):
        a = state[i] = mu * state.get(i, 0.0) + g
        return p - lr * (g + mu * a if nesterov else a)

    w_ref, b_ref = np_train(update, 7, x, y, w0=w0)
    np.testing.assert_allclose(w, w_ref, rtol=1e-10)
    np.testing.assert_allclose(b, b_ref, rtol=1e-10)


# ---- adam ---------------------------------------------------------------------------------------
def np_adam(lr, b1, b2, eps):
    def update(i, p, g, state, t):
        m, v = state.get(i, (0.0, 0.0))
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        state[i] = (m, v)
        lr_t = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        return p - lr_t * m / (np.sqrt(v) + eps)
    return update


@pytest.mark.parametrize("kwargs", [{}, {"learning_rate": 0.1, "beta1": 0.5, "beta2": 0.9, "epsilon": 1e-3}])
def test_adam_matches_numpy(rng, kwargs):
    x, y = regression_data(rng)
    w0 = rng.normal(size=(3, 1))
    opt = gc.train.AdamOptimizer(**kwargs)
    w, b = train_graph(opt, 6, x, y, w0=w0)
    p = {"learning_rate": 0.001, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, **kwargs}
    w_ref, b_ref = np_train(np_adam(p["learning_rate"], p["beta1"], p["beta2"], p["epsilon"]), 6, x, y, w0=w0)
    np.testing.assert_allclose(w, w_ref, rtol=1e-10)
    np.testing.assert_allclose(b, b_ref, rtol=1e-10)


def test_adam_beta_powers_advance_once_per_step(rng):
    x_data, y_data = regression_data(rng)
    x, y, w, b, loss = linear_model(3, np.float64)
    opt = gc.train.AdamOptimizer(0.01, beta1=0.8, beta2=0.95)
    train = opt.minimize(loss)
    b1p, b2p = opt._get_beta_accumulators(np.float64)
    assert not b1p.trainable and not b2p.trainable
    with session() as sess:
        sess.run(gc.global_variables_initializer())
        for _ in range(3):
            sess.run(train, {x: x_data, y: y_data})
        np.testing.assert_allclose(sess.run([b1p, b2p]), [0.8 ** 4, 0.95 ** 4])


def test_adam_mixed_dtypes(rng):
    w32 = gc.Variable(np.ones(2, np.float32), name="w32")
    w64 = gc.Variable(np.ones(2, np.float64), name="w64")
    loss = gc.reduce_sum(gc.square(w32)) + gc.cast(gc.reduce_sum(gc.square(w64)), gc.float32)
    train = gc.train.AdamOptimizer(0.1).minimize(loss)
    with session() as sess:
        sess.run(gc.global_variables_initializer())
        sess.run(train)
        a, c = sess.run([w32, w64])
    assert a.dtype == np.float32 and c.dtype == np.float64
    # first Adam step moves each weight by lr (up to epsilon)
    np.testing.assert_allclose(a, [0.9, 0.9], rtol=1e-5)
    np.testing.assert_allclose(c, [0.9, 0.9], rtol=1e-6)


# ---- slots -----------------------------------------------------------------------------------------
def test_slot_variables_exist_and_are_not_trainable():
    w = gc.Variable(np.ones((2, 3), np.float32), name="w")
    with gc.name_scope("layer"):
        v = gc.Variable(np.ones(3, np.float32), name="v")
    loss = gc.reduce_sum(w * v)
    adam = gc.train.AdamOptimizer()
    mom = gc.train.MomentumOptimizer(0.1, 0.9)
    adam.minimize(loss)
    mom.minimize(loss)
    assert adam.get_slot_names() == ["m", "v"]
    assert mom.get_slot_names() == ["momentum"]
    assert gc.train.GradientDescentOptimizer(0.1).get_slot_names() == []
    trainable = gc.trainable_variables()
    assert trainable == [w, v]
    names = {x.name for x in gc.global_variables()}
    assert {"w/Adam:0", "w/Adam_1:0", "layer/v/Adam:0", "layer/v/Adam_1:0",
            "w/Momentum:0", "layer/v/Momentum:0"} <= names
    for var in (w, v):
        for opt, slot in ((adam, "m"), (adam, "v"), (mom, "momentum")):
            s = opt.get_slot(var, slot)
            assert s is not None and not s.trainable
            assert s.shape == var.shape and s.dtype == var.dtype
            assert any(s is x for x in gc.global_variables())
    assert adam.get_slot(w, "momentum") is None
    slots = run([adam.get_slot(w, "m"), mom.get_slot(v, "momentum")])
    assert all(np.all(s == 0) for s in slots)


def test_slots_are_reused_across_apply_calls():
    w = gc.Variable(np.ones(2), name="w")
    opt = gc.train.MomentumOptimizer(0.1, 0.5)
    opt.minimize(gc.reduce_sum(w))
    n = len(gc.global_variables())
    opt.minimize(gc.reduce_sum(gc.square(w)))
    assert len(gc.global_variables()) == n


# ---- global step --------------------------------------------------------------------------------------
def test_global_step_increments():
    step = gc.train.get_or_create_global_step()
    assert step is gc.train.get_or_create_global_step() is gc.train.get_global_step()
    assert step.name == "global_step:0" and step.dtype == np.int64 and not step.trainable
    with pytest.raises(gc.errors.InvalidArgumentError):
        gc.train.create_global_step()
    w = gc.Variable(np.ones(2), name="w")
    train = gc.train.GradientDescentOptimizer(0.1).minimize(gc.reduce_sum(gc.square(w)), global_step=step)
    with session() as sess:
        sess.run(gc.global_variables_initializer())
        assert sess.run(step) == 0
        for i in range(3):
            assert sess.run(train) is None
        assert sess.run(step) == 3
        np.testing.assert_allclose(sess.run(w), 0.8 ** 3)


def test_global_step_created_inside_a_scope_keeps_its_name():
    with gc.name_scope("outer"):
        step = gc.train.create_global_step()
    assert step.name == "global_step:0"
    g = gc.Graph()
    with g.as_default():
        other = gc.train.get_or_create_global_step()
    assert other is not step and other.graph is g


# ---- missing gradients ------------------------------------------------------------------------------------
def test_minimize_warns_naming_unconnected_variable():
    w = gc.Variable(np.ones(2), name="used")
    unused = gc.Variable(np.ones(2), name="unused_var")
    loss = gc.reduce_sum(gc.square(w))
    with pytest.warns(UserWarning, match="unused_var"):
        train = gc.train.GradientDescentOptimizer(0.5).minimize(loss)
    with session() as sess:
        sess.run(gc.global_variables_initializer())
        sess.run(train)
        a, c = sess.run([w, unused])
    np.testing.assert_allclose(a, [0.0, 0.0])
    np.testing.assert_allclose(c, [1.0, 1.0])


def test_minimize_with_no_gradients_raises_naming_variables():
    a = gc.Variable(np.ones(2), name="alpha")
    b = gc.Variable(np.ones(2), name="beta")
    loss = gc.cast(gc.argmax(a * b), gc.float64)   # argmax blocks gradients
    with pytest.raises(gc.errors.GradientError, match="alpha.*beta"):
        gc.train.AdamOptimizer().minimize(loss)
    with pytest.raises(gc.errors.GradientError, match="alpha"):
        gc.train.AdamOptimizer().minimize(gc.stop_gradient(gc.reduce_sum(a)), var_list=[a])


def test_bad_arguments():
    w = gc.Variable(np.ones(2), name="w")
    with pytest.raises(gc.errors.InvalidArgumentError, match="gc.Variable"):
        gc.train.GradientDescentOptimizer(0.1).minimize(gc.reduce_sum(w), var_list=[w.value()])
    with pytest.raises(gc.errors.GradientError, match="int32"):
        gc.train.GradientDescentOptimizer(0.1).minimize(gc.constant(1), var_list=[w])
    with pytest.raises(gc.errors.GradientError, match="w"):
        gc.train.GradientDescentOptimizer(0.1).apply_gradients([(None, w)])
    with pytest.raises(gc.errors.InvalidArgumentError, match="pairs"):
        gc.train.GradientDescentOptimizer(0.1).apply_gradients([w])
    g = gc.Graph()
    with g.as_default():
        with pytest.raises(gc.errors.InvalidArgumentError, match="no variables"):
            gc.train.GradientDescentOptimizer(0.1).minimize(gc.constant(1.0))


def test_apply_gradients_skips_none_and_accepts_any_tensor():
    w = gc.Variable(np.ones(2), name="w")
    v = gc.Variable(np.ones(2), name="v")
    g = gc.placeholder(gc.float32, (2,), name="g")     # cast to the variable's dtype
    step = gc.train.get_or_create_global_step()
    train = gc.train.GradientDescentOptimizer(0.5).apply_gradients([(g, w), (None, v)], global_step=step)
    with session() as sess:
        sess.run(gc.global_variables_initializer())
        sess.run(train, {g: [2.0, -2.0]})
        np.testing.assert_allclose(sess.run(w), [0.0, 2.0])
        np.testing.assert_allclose(sess.run(v), [1.0, 1.0])
        assert sess.run(step) == 1


def test_compute_gradients_var_list_and_grad_loss():
    w = gc.Variable(np.array([1.0, 2.0]), name="w")
    v = gc.Variable(np.array([3.0]), name="v")
    loss = gc.reduce_sum(gc.square(w)) + gc.reduce_sum(v)
    opt = gc.train.GradientDescentOptimizer(0.1)
    gv = opt.compute_gradients(loss)
    assert [var for _, var in gv] == [w, v]
    np.testing.assert_allclose(run(gv[0][0]), [2.0, 4.0])
    (gw, var), = opt.compute_gradients(loss, var_list=[w], grad_loss=gc.constant(3.0, gc.float64))
    assert var is w
    np.testing.assert_allclose(run(gw), [6.0, 12.0])


def test_loss_fetched_with_train_op_is_pre_update(rng):
    x_data, y_data = regression_data(rng)
    x, y, w, b, loss = linear_model(3, np.float64)
    train = gc.train.GradientDescentOptimizer(0.1).minimize(loss)
    with session() as sess:
        sess.run(gc.global_variables_initializer())
        l0, _ = sess.run([loss, train], {x: x_data, y: y_data})
        l1 = sess.run(loss, {x: x_data, y: y_data})
    np.testing.assert_allclose(l0, np.mean(y_data ** 2))
    assert l1 < l0


def test_minimize_under_scope_and_control_dependencies():
    w = gc.Variable(np.ones(2), name="w")
    counter = gc.Variable(0.0, name="counter", trainable=False)
    bump = counter.assign_add(1.0)
    with gc.name_scope("training"), gc.control_dependencies([bump]):
        train = gc.train.MomentumOptimizer(0.1, 0.5).minimize(gc.reduce_sum(gc.square(w)), var_list=[w])
    with session() as sess:
        sess.run(gc.global_variables_initializer())
        sess.run(train)
        assert sess.run(counter) == 1.0
        np.testing.assert_allclose(sess.run(w), [0.8, 0.8])


def test_learning_rate_placeholder(rng):
    x_data, y_data = regression_data(rng)
    lr = gc.placeholder(gc.float32, (), name="lr")   # cast to the float64 variables
    x, y, w, b, loss = linear_model(3, np.float64)
    train = gc.train.GradientDescentOptimizer(lr).minimize(loss)
    schedule = [0.1, 0.05, 0.0, 0.02]
    with session() as sess:
        sess.run(gc.global_variables_initializer())
        for rate in schedule:
            sess.run(train, {x: x_data, y: y_data, lr: rate})
        got = sess.run([w, b])
        with pytest.raises(gc.errors.FeedError, match="lr"):
            sess.run(train, {x: x_data, y: y_data})
    params = [np.zeros((3, 1)), 0.0]
    for rate in schedule:
        params = [p - np.float32(rate) * g for p, g in zip(params, np_grads(x_data, y_data, *params))]
    np.testing.assert_allclose(got[0], params[0], rtol=1e-10)
    np.testing.assert_allclose(got[1], params[1], rtol=1e-10)


def test_adam_learning_rate_tensor(rng):
    x_data, y_data = regression_data(rng)
    lr = gc.placeholder(gc.float64, (), name="lr")
    w0 = rng.normal(size=(3, 1))
    x, y, w, b, loss = linear_model(3, np.float64, w0=w0)
    train = gc.train.AdamOptimizer(lr).minimize(loss)
    with session() as sess:
        sess.run(gc.global_variables_initializer())
        for _ in range(4):
            sess.run(train, {x: x_data, y: y_data, lr: 0.05})
        got = sess.run(w)
    w_ref, _ = np_train(np_adam(0.05, 0.9, 0.999, 1e-8), 4, x_data, y_data, w0=w0)
    np.testing.assert_allclose(got, w_ref, rtol=1e-10)


# ---- clipping ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("clip", [0.5, 3.0, 100.0])
def test_clip_by_global_norm_matches_numpy(rng, clip):
    arrays = [rng.normal(size=(2, 3)), rng.normal(size=4), np.array(1.5)]
    tensors = [gc.constant(a) for a in arrays]
    clipped, norm = gc.clip_by_global_norm([tensors[0], None, tensors[1], tensors[2]], clip)
    assert clipped[1] is None
    got = run([clipped[0], clipped[2], clipped[3], norm])
    ref_norm = np.sqrt(sum(np.sum(a ** 2) for a in arrays))
    scale = clip / max(ref_norm, clip)
    np.testing.assert_allclose(got[3], ref_norm)
    for g, a in zip(got[:3], arrays):
        np.testing.assert_allclose(g, a * scale)
    np.testing.assert_allclose(run(gc.global_norm([None] + tensors)), ref_norm)


def test_clip_by_global_norm_use_norm_zero_and_dtypes():
    a = gc.constant(np.array([3.0, 4.0], np.float32))
    clipped, norm = gc.clip_by_global_norm([a], 1.0, use_norm=gc.constant(10.0))
    np.testing.assert_allclose(run(clipped[0]), [0.3, 0.4], rtol=1e-6)
    assert clipped[0].dtype == np.float32
    z = gc.constant(np.zeros(3, np.float32))
    clipped, norm = gc.clip_by_global_norm([z], 1.0)
    assert np.all(run(clipped[0]) == 0) and run(norm) == 0
    clip = gc.placeholder(gc.float32, (), name="clip")
    clipped, _ = gc.clip_by_global_norm([a], clip)
    np.testing.assert_allclose(run(clipped[0], {clip: 2.5}), [1.5, 2.0], rtol=1e-6)
    with pytest.raises(gc.errors.InvalidArgumentError):
        gc.global_norm([None])
    with pytest.raises(gc.errors.InvalidArgumentError):
        gc.clip_by_global_norm(a, 1.0)


@pytest.mark.parametrize("axes", [None, 0, 1, (0, 1), [1]])
def test_clip_by_norm_matches_numpy(rng, axes):
    x = rng.normal(size=(3, 4)) * 2
    x[1] = 0.0
    got = run(gc.clip_by_norm(gc.constant(x), 1.5, axes=axes))
    ax = tuple(axes) if isinstance(axes, list) else axes
    norm = np.sqrt(np.sum(x ** 2, axis=ax, keepdims=True))
    np.testing.assert_allclose(got, x * 1.5 / np.maximum(norm, 1.5))


def test_clipping_is_differentiable(rng):
    x = rng.normal(size=(2, 3))
    gc.test.check_gradients(lambda t: gc.clip_by_norm(t, 1.0, axes=1), [x])
    gc.test.check_gradients(lambda t: gc.clip_by_global_norm([t, 2 * t], 1.0)[0][1], [x])
    # at zero the gradient is finite (the safe-sqrt trick)
    t = gc.Variable(np.zeros(3), name="t")
    g, = gc.gradients(gc.reduce_sum(gc.clip_by_norm(t, 1.0)), [t])
    assert np.all(np.isfinite(run(g)))


def test_clipped_training_step(rng):
    w = gc.Variable(np.array([30.0, 40.0]), name="w")
    loss = 0.5 * gc.reduce_sum(gc.square(w))
    opt = gc.train.GradientDescentOptimizer(1.0)
    grads, variables = zip(*opt.compute_gradients(loss))
    clipped, norm = gc.clip_by_global_norm(list(grads), 5.0)
    train = opt.apply_gradients(zip(clipped, variables))
    with session() as sess:
        sess.run(gc.global_variables_initializer())
        assert sess.run(norm) == pytest.approx(50.0)
        sess.run(train)
        np.testing.assert_allclose(sess.run(w), [27.0, 36.0])


# ---- gradient accumulation -------------------------------------------------------------------------------
def test_accumulation_over_4_feeds_equals_gradient_of_summed_loss(rng):
    x = gc.placeholder(gc.float64, (None, 3), name="x")
    y = gc.placeholder(gc.float64, (None, 1), name="y")
    w = gc.Variable(rng.normal(size=(3, 1)), name="w")
    b = gc.Variable(0.3, dtype=gc.float64, name="b")
    loss = gc.reduce_mean(gc.square(x @ w + b - y))
    opt = gc.train.GradientDescentOptimizer(0.1)
    gv = opt.compute_gradients(loss)
    accums = [gc.Variable(np.zeros(v.shape, v.dtype), trainable=False, name="accum") for _, v in gv]
    accumulate = gc.group([a.assign_add(g) for a, (g, _) in zip(accums, gv)])
    apply = opt.apply_gradients([(a, v) for a, (_, v) in zip(accums, gv)])
    zero = gc.group([a.assign(np.zeros(a.shape, a.dtype)) for a in accums])
    # the reference: one graph-level gradient of the sum of the 4 losses
    xs = [gc.placeholder(gc.float64, (None, 3)) for _ in range(4)]
    ys = [gc.placeholder(gc.float64, (None, 1)) for _ in range(4)]
    summed = gc.add_n([gc.reduce_mean(gc.square(xi @ w + b - yi)) for xi, yi in zip(xs, ys)])
    ref = gc.gradients(summed, [w, b])

    batches = [regression_data(rng, n=n) for n in (5, 8, 3, 8)]   # unequal sizes: None dim
    feed = {**{xi: bx for xi, (bx, _) in zip(xs, batches)}, **{yi: by for yi, (_, by) in zip(ys, batches)}}
    with session() as sess:
        sess.run(gc.global_variables_initializer())
        w0, b0 = sess.run([w, b])
        for bx, by in batches:
            sess.run(accumulate, {x: bx, y: by})
        acc, want = sess.run([accums, ref], feed)
        for a, r in zip(acc, want):
            np.testing.assert_allclose(a, r, rtol=1e-12)
        # and by hand in NumPy
        np_sum = [sum(gi) for gi in zip(*(np_grads(bx, by, w0, b0) for bx, by in batches))]
        for a, r in zip(acc, np_sum):
            np.testing.assert_allclose(a, r, rtol=1e-12)
        sess.run([apply, zero])          # apply reads the start-of-run sums
        np.testing.assert_allclose(sess.run(w), w0 - 0.1 * np_sum[0], rtol=1e-12)
        np.testing.assert_allclose(sess.run(b), b0 - 0.1 * np_sum[1], rtol=1e-12)
        assert all(np.all(a == 0) for a in sess.run(accums))


def _docs_snippets():
    with open(DOCS) as f:
        return re.findall(r"```python\n(.*?)```", f.read(), re.S)


def test_docs_snippets_run():
    intro, clipping, accumulation = _docs_snippets()
    ns = {"__name__": "training_md"}
    exec(compile(intro, DOCS, "exec"), ns)
    assert ns["loss_value"] < 1e-2
    exec(compile(clipping, DOCS, "exec"), ns)
    assert ns["clipped_train"].type == "no_op"
    gc.reset_default_graph()
    exec(compile(accumulation, DOCS, "exec"), {"__name__": "training_md"})   # asserts inside


def test_train_op_names_and_duplicates():
    w = gc.Variable(np.ones(2), name="w")
    loss = gc.reduce_sum(gc.square(w))
    assert gc.train.AdamOptimizer().minimize(loss).name == "Adam"
    assert gc.train.AdamOptimizer().minimize(loss).name == "Adam_1"
    assert gc.train.GradientDescentOptimizer(0.1).minimize(loss, name="sgd_step").name == "sgd_step"
    g, = gc.gradients(loss, [w])
    with pytest.raises(gc.errors.InvalidArgumentError, match="twice"):
        gc.train.GradientDescentOptimizer(0.1).apply_gradients([(g, w), (g, w)])


def test_apply_gradients_converts_numpy_gradients_in_the_variables_graph():
    g = gc.Graph()
    with g.as_default():
        w = gc.Variable(np.ones(2, np.float32), name="w")
    train = gc.train.GradientDescentOptimizer(0.5).apply_gradients([(np.array([1.0, 2.0]), w)])
    assert train.graph is g
    with gc.Session(graph=g, config=INTERP) as sess:
        sess.run(gc.variables_initializer(gc.global_variables(g)))
        sess.run(train)
        np.testing.assert_allclose(sess.run(w), [0.5, 0.0])
