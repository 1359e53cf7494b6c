"""gc.function / gc.grad / gc.value_and_grad, and the gradient checker itself."""
import numpy as np
import pytest

import graphc as gc


def test_function_traces_once_per_signature_and_returns_structure():
    calls = []

    def f(a, b):
        calls.append(1)
        return {"sum": a + b, "both": [a * b, gc.reduce_sum(a)]}

    fn = gc.function(f)
    out = fn(np.ones(3, np.float32), np.full(3, 2.0, np.float32))
    assert set(out) == {"sum", "both"}
    np.testing.assert_array_equal(out["sum"], [3, 3, 3])
    assert out["both"][1] == 3.0 and out["both"][0].dtype == np.float32
    fn(np.zeros(3, np.float32), np.zeros(3, np.float32))
    assert len(calls) == 1
    fn(np.zeros(4, np.float32), np.zeros(4, np.float32))
    assert len(calls) == 2
    assert isinstance(fn.graph, gc.Graph)


def test_function_with_input_signature_and_none_dims():
    fn = gc.function(lambda x: gc.reduce_sum(x, axis=1),
                     input_signature=[gc.TensorSpec((None, 2), gc.float32)])
    assert fn.graph.get_operations()  # traced eagerly
    np.testing.assert_allclose(fn(np.ones((3, 2))), [2, 2, 2])
    np.testing.assert_allclose(fn([[1.0, 2.0]]), [3.0])
    with pytest.raises(gc.errors.FeedError):
        fn(np.ones((3, 3)))


def test_decorator_form():
    @gc.function
    def square(x):
        return x * x
    np.testing.assert_array_equal(square(np.array([2.0, 3.0])), [4.0, 9.0])


def test_grad_and_value_and_grad():
    def loss(w, x):
        return gc.reduce_sum(gc.square(x @ w))

    w = np.array([[1.0], [2.0]])
    x = np.array([[1.0, 1.0], [0.5, -1.0]])
    g = gc.grad(loss)(w, x)
    np.testing.assert_allclose(g, 2 * x.T @ (x @ w))
    value, (gw, gx) = gc.value_and_grad(loss, argnums=(0, 1))(w, x)
    np.testing.assert_allclose(value, np.sum((x @ w) ** 2))
    np.testing.assert_allclose(gw, 2 * x.T @ (x @ w))
    np.testing.assert_allclose(gx, 2 * (x @ w) @ w.T)


def test_grad_needs_a_scalar_function():
    with pytest.raises(gc.errors.GradientError, match="scalar"):
        gc.grad(lambda x: x * 2)(np.ones(3))


def test_grad_of_unconnected_argument_is_zero():
    g = gc.grad(lambda a, b: gc.reduce_sum(a * 2.0), argnums=1)(np.ones(2), np.ones(3))
    np.testing.assert_array_equal(g, np.zeros(3))


def test_check_gradients_detects_a_wrong_gradient():
    @gc.custom_gradient
    def wrong_square(x):
        return x * x, lambda dy: dy * x  # should be 2x

    with pytest.raises(AssertionError, match="argument 0"):
        gc.test.check_gradients(wrong_square, [np.array([1.0, 2.0])])
    assert gc.test.check_gradients(lambda x: x * x, [np.array([1.0, 2.0])]) < 1e-6


def test_compute_gradient_error():
    x = gc.placeholder(gc.float64, (3,), name="x")
    y = gc.tanh(x) * 2.0
    err = gc.test.compute_gradient_error(y, x, feed_dict={x: np.array([0.1, -0.5, 1.0])})
    assert err < 1e-7
