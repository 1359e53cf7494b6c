"""gc.nn: activations, softmax and cross-entropy losses (against float64 NumPy
references, extreme logits included), bias_add, dropout, conv2d and its
adjoints, pooling; gradients and second derivatives by finite differences."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy.special import erf as np_erf
from scipy.special import logsumexp as np_logsumexp

import graphc as gc
from conftest import run

R = np.random.default_rng(3)
check = gc.test.check_gradients
nn = gc.nn

EXTREME = np.array([-1000.0, -50.0, -1.0, -1e-3, 0.0, 1e-3, 1.0, 50.0, 1000.0])


# ---- activations -----------------------------------------------------------------------------
def _np_softplus(x):
    return np.logaddexp(0.0, x)


def _np_sigmoid(x):
    return 0.5 * (1 + np.tanh(0.5 * x))


SELU_A, SELU_S = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946

ACTIVATIONS = {
    "relu": (nn.relu, lambda x: np.maximum(x, 0)),
    "relu6": (nn.relu6, lambda x: np.clip(x, 0, 6)),
    "leaky_relu": (nn.leaky_relu, lambda x: np.where(x > 0, x, 0.2 * x)),
    "elu": (nn.elu, lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0)))),
    "selu": (nn.selu, lambda x: SELU_S * np.where(x > 0, x, SELU_A * np.expm1(np.minimum(x, 0)))),
    "gelu": (nn.gelu, lambda x: 0.5 * x * (1 + np_erf(x / math.sqrt(2)))),
    "gelu_tanh": (lambda x: nn.gelu(x, approximate=True),
                  lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))),
    "softplus": (nn.softplus, _np_softplus),
    "softsign": (nn.softsign, lambda x: x / (1 + np.abs(x))),
    "silu": (nn.silu, lambda x: x * _np_sigmoid(x)),
    "swish": (nn.swish, lambda x: x * _np_sigmoid(x)),
    "sigmoid": (nn.sigmoid, _np_sigmoid),
    "log_sigmoid": (nn.log_sigmoid, lambda x: -_np_softplus(-x)),
    "tanh": (nn.tanh, np.tanh),
}
SMOOTH = ["elu", "selu", "gelu", "gelu_tanh", "softplus", "softsign", "silu", "sigmoid", "log_sigmoid", "tanh"]


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activation_matches_numpy(name, dtype):
    fn, ref = ACTIVATIONS[name]
    x = np.concatenate([EXTREME, R.uniform(-8, 8, 20)]).astype(dtype)
    out = fn(x)
    assert out.dtype == dtype and out.shape == x.shape
    r = run(out)
    assert r.dtype == dtype
    with np.errstate(over="ignore"):
        expect = ref(x.astype(np.float64))
    assert np.all(np.isfinite(r))
    tol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(r, expect, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("shape", [(), (0,), (2, 0, 3), (2, 3, 4)])
def test_activation_shapes(name, shape):
    fn, ref = ACTIVATIONS[name]
    x = R.uniform(-3, 3, shape)
    out = fn(x)
    assert out.shape == shape
    np.testing.assert_allclose(run(out), ref(x), rtol=1e-12, atol=1e-14)


def test_activation_unknown_dims():
    x = gc.placeholder(gc.float32, (None, 3))
    y = nn.gelu(nn.relu(x))
    assert y.shape == (None, 3)
    xv = R.standard_normal((5, 3)).astype(np.float32)
    np.testing.assert_allclose(run(y, {x: xv}), ACTIVATIONS["gelu"][1](np.maximum(xv, 0)), rtol=1e-6)


def test_relu_on_integers():
    x = np.array([-3, 0, 4], np.int32)
    r = run([nn.relu(x), nn.relu6(np.array([-1, 3, 9], np.int64))])
    np.testing.assert_array_equal(r[0], [0, 0, 4])
    np.testing.assert_array_equal(r[1], [0, 3, 6])
    assert r[0].dtype == np.int32 and r[1].dtype == np.int64


@pytest.mark.parametrize("name", ["leaky_relu", "elu", "selu", "gelu", "softplus", "softsign", "silu",
                                  "log_sigmoid", "softmax", "log_softmax", "l2_loss", "dropout"])
def test_float_only_ops_reject_integers_naming_the_op(name):
    fn = getattr(nn, name)
    args = (0.5,) if name == "dropout" else ()
    with pytest.raises(gc.errors.DTypeError, match=name):
        fn(np.array([1, 2], np.int32), *args)
    with pytest.raises(gc.errors.DTypeError, match="relu"):
        nn.relu(np.array([True, False]))


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_gradient(name):
    fn, _ = ACTIVATIONS[name]
    # points away from the kinks at 0 and 6
    x = np.array([-3.1, -1.2, -0.4, 0.3, 0.9, 2.5, 5.2, 7.5])
    check(fn, [x], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", SMOOTH)
def test_activation_second_derivative(name):
    fn, _ = ACTIVATIONS[name]
    x = np.array([-2.3, -0.7, 0.4, 1.6])

    def first(t):
        return gc.gradients(gc.reduce_sum(fn(t)), [t])[0]
    check(first, [x], rtol=1e-4, atol=1e-6)


def _grad_at(fn, values):
    x = gc.placeholder(gc.float64, (len(values),))
    g = gc.gradients(gc.reduce_sum(fn(x)), [x])[0]
    return run(g, {x: np.asarray(values, np.float64)})


def test_kink_derivatives_follow_tf():
    np.testing.assert_array_equal(_grad_at(nn.relu, [0.0, -1.0, 1.0]), [0, 0, 1])
    np.testing.assert_array_equal(_grad_at(nn.relu6, [0.0, 6.0, 3.0, 7.0]), [0, 0, 1, 0])
    np.testing.assert_allclose(_grad_at(nn.leaky_relu, [0.0, -1.0, 1.0]), [0.2, 0.2, 1])
    np.testing.assert_allclose(_grad_at(nn.elu, [0.0]), [1.0])
    np.testing.assert_allclose(_grad_at(nn.softplus, [0.0]), [0.5])
    np.testing.assert_allclose(_grad_at(nn.softsign, [0.0]), [1.0])


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_gradient_finite_at_extremes(name):
    fn, _ = ACTIVATIONS[name]
    g = _grad_at(fn, EXTREME)
    assert np.all(np.isfinite(g)), g


def test_extreme_gradients_have_right_limits():
    np.testing.assert_allclose(_grad_at(nn.softplus, [-1000.0, 1000.0]), [0.0, 1.0])
    np.testing.assert_allclose(_grad_at(nn.log_sigmoid, [-1000.0, 1000.0]), [1.0, 0.0])
    np.testing.assert_allclose(_grad_at(nn.elu, [-1000.0, 1000.0]), [0.0, 1.0])


@pytest.mark.parametrize("alpha", [0.0, 0.01, 0.5])
def test_leaky_relu_alpha(alpha):
    x = R.uniform(-2, 2, 10)
    np.testing.assert_allclose(run(nn.leaky_relu(x, alpha=alpha)), np.where(x > 0, x, alpha * x))


def test_silu_beta():
    x = R.uniform(-2, 2, 10)
    np.testing.assert_allclose(run(nn.silu(x, beta=2.0)), x * _np_sigmoid(2 * x), rtol=1e-12)


# ---- softmax family ------------------------------------------------------------------------------
def _np_log_softmax(x, axis=-1):
    x = np.asarray(x, np.float64)
    return x - np_logsumexp(x, axis=axis, keepdims=True)


LOGITS = [
    np.array([[1.0, 2.0, 3.0], [1000.0, 0.0, -1000.0], [-1000.0, -1000.0, -1000.0], [1000.0, 1000.0, 999.0]]),
    R.standard_normal((3, 4, 5)) * 10,
    np.array([5.0]),
]


@pytest.mark.parametrize("logits", LOGITS, ids=["extreme", "3d", "single"])
@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_and_log_softmax(logits, axis, dtype):
    x = logits.astype(dtype)
    sm, lsm = run([nn.softmax(x, axis=axis), nn.log_softmax(x, axis=axis)])
    assert sm.dtype == dtype and lsm.dtype == dtype
    assert np.all(np.isfinite(sm)) and np.all(np.isfinite(lsm))
    expect = _np_log_softmax(x, axis)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(lsm, expect, rtol=tol, atol=tol)
    np.testing.assert_allclose(sm, np.exp(expect), rtol=tol, atol=tol)
    np.testing.assert_allclose(sm.sum(axis=axis), 1.0, rtol=tol)


def test_softmax_unknown_dims_and_errors():
    x = gc.placeholder(gc.float64, (None, None))
    y = nn.softmax(x)
    xv = R.standard_normal((3, 7))
    np.testing.assert_allclose(run(y, {x: xv}), np.exp(_np_log_softmax(xv)), rtol=1e-12)
    with pytest.raises(gc.errors.ShapeError, match="softmax"):
        nn.softmax(gc.constant(1.0))
    with pytest.raises(gc.errors.ShapeError, match="log_softmax"):
        nn.log_softmax(np.ones((2, 3)), axis=2)
    with pytest.raises(gc.errors.InvalidArgumentError, match="softmax"):
        nn.softmax(np.ones((2, 3)), axis=(0, 1))


@pytest.mark.parametrize("fn", [nn.softmax, nn.log_softmax], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("axis", [0, -1])
def test_softmax_gradients(fn, axis):
    x = R.standard_normal((3, 4))
    check(lambda t: fn(t, axis=axis), [x])

    def first(t):
        return gc.gradients(gc.reduce_sum(gc.square(fn(t, axis=axis))), [t])[0]
    check(first, [x], rtol=1e-4, atol=1e-7)


def test_softmax_gradient_finite_for_extreme_logits():
    x = gc.placeholder(gc.float64, (2, 3))
    y = nn.log_softmax(x)
    g = gc.gradients(gc.reduce_sum(y * np.array([[1.0, 0, 0], [0, 0, 1.0]])), [x])[0]
    r = run(g, {x: np.array([[1000.0, 0.0, -1000.0], [-1000.0, -1000.0, 1000.0]])})
    np.testing.assert_allclose(r, [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], atol=1e-12)


# ---- cross-entropy losses ---------------------------------------------------------------------------
def test_sigmoid_cross_entropy():
    x = np.concatenate([EXTREME, R.uniform(-5, 5, 7)])
    z = R.uniform(0, 1, x.shape)
    for dtype in (np.float32, np.float64):
        out = nn.sigmoid_cross_entropy_with_logits(labels=z.astype(dtype), logits=x.astype(dtype))
        r = run(out)
        assert r.dtype == dtype and np.all(np.isfinite(r))
        expect = np.logaddexp(0, x.astype(dtype).astype(np.float64)) - x.astype(dtype) * z.astype(dtype)
        np.testing.assert_allclose(r, expect, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-4)


def test_sigmoid_cross_entropy_gradient():
    x, z = R.uniform(-3, 3, (2, 3)), R.uniform(0, 1, (2, 3))
    check(lambda a, b: nn.sigmoid_cross_entropy_with_logits(labels=a, logits=b), [z, x])
    xs = gc.placeholder(gc.float64, (4,))
    loss = nn.sigmoid_cross_entropy_with_logits(labels=np.array([0.0, 1.0, 0.3, 1.0]), logits=xs)
    g = run(gc.gradients(gc.reduce_sum(loss), [xs])[0], {xs: np.array([-1000.0, 1000.0, 0.0, -1000.0])})
    np.testing.assert_allclose(g, [0.0, 0.0, 0.5 - 0.3, -1.0])


def test_sigmoid_cross_entropy_errors():
    with pytest.raises(gc.errors.ShapeError, match="labels"):
        nn.sigmoid_cross_entropy_with_logits(labels=np.zeros((2, 3)), logits=np.zeros((3, 2)))
    with pytest.raises(gc.errors.InvalidArgumentError):
        nn.sigmoid_cross_entropy_with_logits(logits=np.zeros(3))


@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax_cross_entropy(axis):
    logits = np.array([[1000.0, 0.0, -1000.0], [-1000.0, -1000.0, -1000.0], [0.5, 1.5, -0.5], [1000.0, 999.0, 0.0]])
    labels = R.dirichlet(np.ones(3 if axis == -1 else 4), size=4 if axis == -1 else 3)
    labels = labels if axis == -1 else labels.T
    out = nn.softmax_cross_entropy_with_logits(labels=labels, logits=logits, axis=axis)
    r = run(out)
    assert out.shape == (4,) if axis == -1 else (3,)
    assert np.all(np.isfinite(r))
    np.testing.assert_allclose(r, -np.sum(labels * _np_log_softmax(logits, axis), axis=axis), rtol=1e-12)
    r32 = run(nn.softmax_cross_entropy_with_logits(labels=labels.astype(np.float32),
                                                   logits=logits.astype(np.float32), axis=axis))
    assert r32.dtype == np.float32 and np.all(np.isfinite(r32))
    np.testing.assert_allclose(r32, r, rtol=1e-5)


def test_softmax_cross_entropy_gradient():
    logits, labels = R.standard_normal((3, 4)), R.dirichlet(np.ones(4), size=3)
    check(lambda z, x: nn.softmax_cross_entropy_with_logits(labels=z, logits=x), [labels, logits])
    # d loss / d logits = softmax - labels
    x = gc.placeholder(gc.float64, (3, 4))
    g = gc.gradients(gc.reduce_sum(nn.softmax_cross_entropy_with_logits(labels=labels, logits=x)), [x])[0]
    np.testing.assert_allclose(run(g, {x: logits}), np.exp(_np_log_softmax(logits)) - labels, atol=1e-12)

    def first(t):
        return gc.gradients(gc.reduce_sum(nn.softmax_cross_entropy_with_logits(labels=labels, logits=t)), [t])[0]
    check(first, [logits], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("label_dtype", [np.int32, np.int64])
def test_sparse_softmax_cross_entropy(label_dtype):
    logits = np.array([[1000.0, 0.0, -1000.0], [-1000.0, -1000.0, -1000.0], [0.5, 1.5, -0.5],
                       [1000.0, 999.0, 0.0], [-np.inf, 0.0, 1.0]])
    labels = np.array([2, 0, 1, 1, 2], label_dtype)
    out = nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    assert out.shape == (5,)
    r = run(out)
    assert np.all(np.isfinite(r))
    expect = -_np_log_softmax(logits)[np.arange(5), labels]
    np.testing.assert_allclose(r, expect, rtol=1e-12)


def test_sparse_softmax_cross_entropy_batched_unknown_and_float32():
    logits = R.standard_normal((2, 3, 5)).astype(np.float32)
    labels = R.integers(0, 5, (2, 3))
    x = gc.placeholder(gc.float32, (None, None, 5))
    z = gc.placeholder(gc.int64, (None, None))
    out = nn.sparse_softmax_cross_entropy_with_logits(labels=z, logits=x)
    assert out.shape == (None, None) and out.dtype == np.float32
    expect = -np.take_along_axis(_np_log_softmax(logits), labels[..., None], -1)[..., 0]
    np.testing.assert_allclose(run(out, {x: logits, z: labels}), expect, rtol=1e-5)


def test_sparse_softmax_cross_entropy_gradient():
    logits, labels = R.standard_normal((3, 4)), np.array([0, 3, 1])
    check(lambda x: nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=x), [logits])
    x = gc.placeholder(gc.float64, (3, 4))
    g = gc.gradients(gc.reduce_sum(nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=x)), [x])[0]
    np.testing.assert_allclose(run(g, {x: logits}), np.exp(_np_log_softmax(logits)) - np.eye(4)[labels], atol=1e-12)


def test_sparse_softmax_cross_entropy_errors():
    with pytest.raises(gc.errors.DTypeError, match="labels"):
        nn.sparse_softmax_cross_entropy_with_logits(labels=np.zeros(3), logits=np.zeros((3, 4)))
    with pytest.raises(gc.errors.ShapeError, match="labels"):
        nn.sparse_softmax_cross_entropy_with_logits(labels=np.zeros(4, np.int32), logits=np.zeros((3, 4)))
    with pytest.raises(gc.errors.ShapeError, match="classes"):
        nn.sparse_softmax_cross_entropy_with_logits(labels=np.zeros(3, np.int32),
                                                    logits=gc.placeholder(gc.float32, (3, None)))


# ---- l2_loss, bias_add -------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(), (0,), (3,), (2, 3, 4)])
def test_l2_loss(shape):
    t = R.standard_normal(shape)
    out = nn.l2_loss(t)
    assert out.shape == ()
    np.testing.assert_allclose(run(out), np.sum(t ** 2) / 2)
    check(nn.l2_loss, [t])


def test_bias_add():
    v, b = R.standard_normal((2, 3, 4)), R.standard_normal(4)
    np.testing.assert_allclose(run(nn.bias_add(v, b)), v + b)
    bc = R.standard_normal(3)
    np.testing.assert_allclose(run(nn.bias_add(v, bc, data_format="NCHW")), v + bc[:, None])
    x = gc.placeholder(gc.float32, (None, 4))
    y = nn.bias_add(x, b.astype(np.float32))
    assert y.shape == (None, 4) and y.dtype == np.float32
    check(lambda a, c: nn.bias_add(a, c), [v, b])
    with pytest.raises(gc.errors.ShapeError, match="bias"):
        nn.bias_add(v, R.standard_normal(3))
    with pytest.raises(gc.errors.ShapeError):
        nn.bias_add(v, R.standard_normal((1, 4)))
    with pytest.raises(gc.errors.ShapeError):
        nn.bias_add(R.standard_normal(4), R.standard_normal(4))


# ---- dropout -----------------------------------------------------------------------------------------
def test_dropout_rate_zero_is_identity():
    x = gc.placeholder(gc.float32, (3,))
    assert nn.dropout(x, 0.0) is x


def test_dropout_statistics_and_scaling():
    x = np.ones((200, 100), np.float32) * 3.0
    out = nn.dropout(x, rate=0.25)
    r = run(out)
    assert r.dtype == np.float32 and r.shape == x.shape
    kept = r != 0
    assert abs(kept.mean() - 0.75) < 0.02
    np.testing.assert_allclose(r[kept], 4.0, rtol=1e-6)


def test_dropout_seed_noise_shape_unknown_dims_and_gradient():
    x = gc.placeholder(gc.float64, (None, 50))
    out = nn.dropout(x, 0.5, noise_shape=[1, 50], seed=5)
    xv = np.ones((4, 50))
    with gc.Session(config=gc.Config(backend="interpreter")) as s1:
        a = s1.run(out, {x: xv})
    with gc.Session(config=gc.Config(backend="interpreter")) as s2:
        b = s2.run(out, {x: xv})
    np.testing.assert_array_equal(a, b)                    # same seed, same mask
    assert np.all(a == a[0])                               # one mask shared along dim 0
    y = nn.dropout(x, 0.5)
    g = gc.gradients(gc.reduce_sum(y), [x])[0]
    yv, gv = run([y, g], {x: xv * 3})
    np.testing.assert_array_equal(gv * 3, yv)              # same mask in one run, gradient scaled alike
    with pytest.raises(gc.errors.InvalidArgumentError):
        nn.dropout(x, 1.0)


def test_dropout_tensor_rate():
    rate = gc.placeholder(gc.float32, ())
    x = np.ones((100, 100), np.float32)
    r = run(nn.dropout(x, rate), {rate: 0.5})
    assert abs((r != 0).mean() - 0.5) < 0.03
    np.testing.assert_allclose(r[r != 0], 2.0)


# ---- conv2d --------------------------------------------------------------------------------------------
def _same_pads(n, k, s, d):
    eff = (k - 1) * d + 1
    out = -(-n // s)
    total = max((out - 1) * s + eff - n, 0)
    return total // 2, total - total // 2


def _ref_conv2d(x, w, strides, padding, dilations):
    """Direct loops over output positions, TF semantics."""
    sh, sw = strides
    dh, dw = dilations
    kh, kw = w.shape[:2]
    if padding == "SAME":
        pads = (_same_pads(x.shape[1], kh, sh, dh), _same_pads(x.shape[2], kw, sw, dw))
    elif padding == "VALID":
        pads = ((0, 0), (0, 0))
    else:
        pads = padding
    xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    ekh, ekw = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    oh = (xp.shape[1] - ekh) // sh + 1
    ow = (xp.shape[2] - ekw) // sw + 1
    out = np.zeros((x.shape[0], oh, ow, w.shape[3]))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, i * sh: i * sh + ekh: dh, j * sw: j * sw + ekw: dw, :]
            out[:, i, j, :] = np.einsum("nhwc,hwco->no", patch, w)
    return out


CONV_CASES = [
    # input shape, filter shape, strides, padding, dilations
    ((2, 5, 5, 3), (3, 3, 3, 4), (1, 1), "SAME", (1, 1)),
    ((2, 5, 5, 3), (3, 3, 3, 4), (1, 1), "VALID", (1, 1)),
    ((1, 7, 6, 2), (3, 2, 2, 3), (2, 2), "SAME", (1, 1)),
    ((1, 7, 6, 2), (3, 2, 2, 3), (2, 3), "VALID", (1, 1)),
    ((2, 8, 8, 1), (3, 3, 1, 2), (1, 1), "SAME", (2, 2)),
    ((1, 9, 7, 2), (2, 3, 2, 2), (1, 1), "VALID", (2, 1)),
    ((1, 6, 6, 2), (4, 4, 2, 1), (3, 3), "SAME", (1, 1)),
    ((1, 4, 5, 2), (2, 2, 2, 3), (1, 2), ((1, 2), (0, 1)), (1, 1)),
    ((3, 1, 1, 4), (1, 1, 4, 5), (1, 1), "VALID", (1, 1)),
    ((0, 4, 4, 2), (3, 3, 2, 2), (1, 1), "SAME", (1, 1)),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_conv2d_matches_reference(case):
    xs, ws, strides, padding, dilations = case
    x, w = R.standard_normal(xs), R.standard_normal(ws)
    out = nn.conv2d(x, w, strides=strides, padding=padding, dilations=dilations)
    expect = _ref_conv2d(x, w, strides, padding, dilations)
    assert out.shape == expect.shape
    np.testing.assert_allclose(run(out), expect, rtol=1e-10, atol=1e-12)


def test_conv2d_float32_tf_style_arguments_and_unknown_dims():
    x = gc.placeholder(gc.float32, (None, None, None, 3))
    w = R.standard_normal((3, 3, 3, 2)).astype(np.float32)
    out = nn.conv2d(x, w, strides=[1, 2, 2, 1], padding="SAME", dilations=[1, 1, 1, 1])
    assert out.shape == (None, None, None, 2) and out.dtype == np.float32
    xv = R.standard_normal((2, 7, 5, 3)).astype(np.float32)
    r = run(out, {x: xv})
    assert r.dtype == np.float32
    np.testing.assert_allclose(r, _ref_conv2d(xv, w, (2, 2), "SAME", (1, 1)), rtol=1e-4, atol=1e-5)
    x2 = gc.placeholder(gc.float32, (None, 8, 8, 3))
    assert nn.conv2d(x2, w, 2, "VALID").shape == (None, 3, 3, 2)


def test_conv2d_errors():
    x = gc.placeholder(gc.float32, (1, 5, 5, 3))
    with pytest.raises(gc.errors.ShapeError, match="channels") as e:
        nn.conv2d(x, np.zeros((3, 3, 2, 4), np.float32), 1, name="myconv")
    assert "myconv" in str(e.value)
    with pytest.raises(gc.errors.ShapeError, match="rank 4"):
        nn.conv2d(np.zeros((5, 5, 3), np.float32), np.zeros((3, 3, 3, 4), np.float32), 1)
    with pytest.raises(gc.errors.ShapeError, match="window"):
        nn.conv2d(x, np.zeros((7, 7, 3, 1), np.float32), 1, "VALID")
    with pytest.raises(gc.errors.InvalidArgumentError):
        nn.conv2d(x, np.zeros((3, 3, 3, 4), np.float32), 1, "FULL")
    with pytest.raises(gc.errors.InvalidArgumentError):
        nn.conv2d(x, np.zeros((3, 3, 3, 4), np.float32), [2, 2, 2, 2])
    with pytest.raises(gc.errors.InvalidArgumentError):
        nn.conv2d(x, np.zeros((3, 3, 3, 4), np.float32), 0)
    with pytest.raises(gc.errors.DTypeError):
        nn.conv2d(np.zeros((1, 3, 3, 1), np.int32), np.zeros((1, 1, 1, 1), np.int32), 1)


GRAD_CASES = [
    ((1, 4, 4, 2), (2, 2, 2, 2), (1, 1), "SAME", (1, 1)),
    ((2, 5, 4, 1), (3, 3, 1, 2), (2, 2), "SAME", (1, 1)),
    ((1, 5, 5, 2), (2, 2, 2, 1), (2, 1), "VALID", (1, 1)),
    ((1, 5, 5, 1), (2, 2, 1, 2), (1, 1), "SAME", (2, 2)),
    ((1, 4, 3, 1), (2, 2, 1, 1), (1, 1), ((1, 0), (2, 1)), (1, 1)),
]


@pytest.mark.parametrize("case", GRAD_CASES, ids=str)
def test_conv2d_gradient(case):
    xs, ws, strides, padding, dilations = case
    x, w = R.standard_normal(xs), R.standard_normal(ws)
    check(lambda a, b: nn.conv2d(a, b, strides, padding, dilations=dilations), [x, w])


@pytest.mark.parametrize("case", GRAD_CASES[:4], ids=str)
def test_conv2d_second_derivatives(case):
    xs, ws, strides, padding, dilations = case
    x, w = R.standard_normal(xs), R.standard_normal(ws)

    def loss(a, b):
        return gc.reduce_sum(gc.square(nn.conv2d(a, b, strides, padding, dilations=dilations)))

    check(lambda a, b: gc.gradients(loss(a, b), [a])[0], [x, w], rtol=1e-4, atol=1e-6)
    check(lambda a, b: gc.gradients(loss(a, b), [b])[0], [x, w], rtol=1e-4, atol=1e-6)


def test_conv2d_backprop_ops_directly():
    x, w = R.standard_normal((2, 5, 5, 2)), R.standard_normal((3, 3, 2, 3))
    g = R.standard_normal((2, 3, 3, 3))
    # the adjoint identity <conv(x, w), g> = <x, bi(g)> = <w, bf(x, g)>
    conv = run(nn.conv2d(x, w, 2, "SAME"))
    bi = run(nn.conv2d_backprop_input([2, 5, 5, 2], w, g, 2, "SAME"))
    bf = run(nn.conv2d_backprop_filter(x, [3, 3, 2, 3], g, 2, "SAME"))
    assert bi.shape == x.shape and bf.shape == w.shape
    np.testing.assert_allclose(np.sum(conv * g), np.sum(x * bi), rtol=1e-10)
    np.testing.assert_allclose(np.sum(conv * g), np.sum(w * bf), rtol=1e-10)
    check(lambda a, b: nn.conv2d_backprop_input([2, 5, 5, 2], a, b, 2, "SAME"), [w, g])
    check(lambda a, b: nn.conv2d_backprop_filter(a, [3, 3, 2, 3], b, 2, "SAME"), [x, g])
    with pytest.raises(gc.errors.ShapeError):
        nn.conv2d_backprop_input([2, 5, 5, 2], w, R.standard_normal((2, 4, 4, 3)), 2, "SAME")


def test_conv2d_gradient_with_unknown_batch():
    x = gc.placeholder(gc.float64, (None, 6, 6, 2))
    w = gc.placeholder(gc.float64, (3, 3, 2, 4))
    y = nn.conv2d(x, w, 2, "SAME")
    gx, gw = gc.gradients(gc.reduce_sum(gc.square(y)), [x, w])
    assert gx.shape == (None, 6, 6, 2) and gw.shape == (3, 3, 2, 4)
    xv, wv = R.standard_normal((3, 6, 6, 2)), R.standard_normal((3, 3, 2, 4))
    yv, gxv, gwv = run([y, gx, gw], {x: xv, w: wv})
    np.testing.assert_allclose(np.sum(2 * yv * yv), np.sum(gxv * xv), rtol=1e-10)   # Euler: loss is 2-homogeneous
    np.testing.assert_allclose(np.sum(2 * yv * yv), np.sum(gwv * wv), rtol=1e-10)


# ---- pooling ---------------------------------------------------------------------------------------------
def _ref_pool(x, ksize, strides, padding, reduce):
    kh, kw = ksize
    sh, sw = strides
    if padding == "SAME":
        pads = (_same_pads(x.shape[1], kh, sh, 1), _same_pads(x.shape[2], kw, sw, 1))
    else:
        pads = ((0, 0), (0, 0))
    xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=np.nan)
    oh = (xp.shape[1] - kh) // sh + 1
    ow = (xp.shape[2] - kw) // sw + 1
    out = np.zeros((x.shape[0], oh, ow, x.shape[3]))
    for i in range(oh):
        for j in range(ow):
            out[:, i, j, :] = reduce(xp[:, i * sh: i * sh + kh, j * sw: j * sw + kw, :], axis=(1, 2))
    return out


POOL_CASES = [
    ((2, 4, 4, 3), (2, 2), (2, 2), "VALID"),
    ((1, 5, 5, 2), (3, 3), (2, 2), "SAME"),
    ((1, 5, 7, 1), (2, 3), (1, 2), "SAME"),
    ((2, 6, 5, 2), (3, 2), (3, 1), "VALID"),
    ((1, 3, 3, 1), (3, 3), (1, 1), "SAME"),
]


@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_pools_match_reference(case):
    xs, ksize, strides, padding = case
    x = R.standard_normal(xs)
    mx = nn.max_pool2d(x, ksize, strides, padding)
    av = nn.avg_pool2d(x, ksize, strides, padding)
    emx = _ref_pool(x, ksize, strides, padding, np.nanmax)
    eav = _ref_pool(x, ksize, strides, padding, np.nanmean)
    assert mx.shape == emx.shape and av.shape == eav.shape
    rmx, rav = run([mx, av])
    np.testing.assert_array_equal(rmx, emx)
    np.testing.assert_allclose(rav, eav, rtol=1e-12)


@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_pool_gradients_and_second_derivatives(case):
    xs, ksize, strides, padding = case
    x = R.permutation(np.prod(xs)).reshape(xs) * 0.1      # distinct values: no ties for max
    for pool in (nn.max_pool2d, nn.avg_pool2d):
        check(lambda a: pool(a, ksize, strides, padding), [x])

        def first(a):
            return gc.gradients(gc.reduce_sum(gc.square(pool(a, ksize, strides, padding))), [a])[0]
        check(first, [x], rtol=1e-4, atol=1e-6)


def test_max_pool_ties_route_to_first_max_and_tf_arguments():
    x = np.zeros((1, 2, 2, 1))
    xt = gc.placeholder(gc.float64, (None, 2, 2, 1))
    y = nn.max_pool(xt, ksize=[1, 2, 2, 1], strides=[1, 2, 2, 1], padding="VALID")
    assert y.shape == (None, 1, 1, 1)
    g = gc.gradients(gc.reduce_sum(y), [xt])[0]
    np.testing.assert_array_equal(run(g, {xt: x}).ravel(), [1, 0, 0, 0])
    z = nn.avg_pool(xt, 2, 1, "SAME")
    gz = gc.gradients(gc.reduce_sum(z), [xt])[0]
    # each input is in the windows of several outputs; windows at the edge average fewer elements
    np.testing.assert_allclose(run(gz, {xt: x}).ravel(), [0.25, 0.75, 0.75, 2.25])


def test_pool_errors():
    with pytest.raises(gc.errors.InvalidArgumentError):
        nn.max_pool2d(np.zeros((1, 4, 4, 1)), 2, 2, ((0, 0), (0, 0)))
    with pytest.raises(gc.errors.ShapeError):
        nn.avg_pool2d(np.zeros((1, 2, 2, 1)), 3, 1, "VALID")
    with pytest.raises(gc.errors.ShapeError):
        nn.max_pool2d(np.zeros((4, 4, 1)), 2, 2)


@settings(max_examples=20, deadline=None)
@given(h=st.integers(1, 6), w=st.integers(1, 6), k=st.integers(1, 3), s=st.integers(1, 3),
       d=st.integers(1, 2), same=st.booleans())
def test_conv2d_hypothesis(h, w, k, s, d, same):
    padding = "SAME" if same else "VALID"
    if not same and (k - 1) * d + 1 > min(h, w):
        return
    x, f = R.standard_normal((1, h, w, 2)), R.standard_normal((k, k, 2, 2))
    g = gc.Graph()
    with g.as_default():
        out = nn.conv2d(x, f, s, padding, dilations=d)
        np.testing.assert_allclose(run(out, graph=g), _ref_conv2d(x, f, (s, s), padding, (d, d)),
                                   rtol=1e-10, atol=1e-12)
