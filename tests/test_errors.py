"""The error hierarchy and what error messages say: op type and name, input
shapes and dtypes, the user's file:line, the placeholder or variable at fault."""
import sys

import numpy as np
import pytest

import graphc as gc
from graphc import errors
from conftest import run

BUILTIN_PARENT = {
    "ShapeError": ValueError, "DTypeError": TypeError, "FeedError": ValueError,
    "GraphMismatchError": ValueError, "InvalidArgumentError": ValueError, "GraphFormatError": ValueError,
    "ExecutionError": RuntimeError, "UninitializedVariableError": RuntimeError,
}


def _line():
    return sys._getframe(1).f_lineno


@pytest.mark.parametrize("name", errors.__all__)
def test_every_error_is_a_graphc_error(name):
    cls = getattr(errors, name)
    assert issubclass(cls, errors.GraphcError)
    if name in BUILTIN_PARENT:
        assert issubclass(cls, BUILTIN_PARENT[name])
    assert gc.errors is errors


def test_uninitialized_variable_error_is_an_execution_error():
    assert issubclass(errors.UninitializedVariableError, errors.ExecutionError)


def test_shape_error_names_op_inputs_and_line():
    a = gc.placeholder(gc.float32, (None, 3), name="a")
    b = gc.placeholder(gc.float32, (4,), name="b")
    with gc.name_scope("block"):
        line = _line() + 2
        with pytest.raises(errors.ShapeError) as info:
            gc.multiply(a, b, name="scale")
    msg = str(info.value)
    assert msg.startswith("multiply op 'block/scale' created at ")
    assert f"test_errors.py:{line}" in msg
    assert "x=(?, 3) float32" in msg and "y=(4,) float32" in msg
    assert "cannot be broadcast" in msg


def test_dtype_error_names_op_and_suggests_a_fix():
    i = gc.placeholder(gc.int32, (3,), name="counts")
    line = _line() + 2
    with pytest.raises(errors.DTypeError) as info:
        gc.exp(i)
    msg = str(info.value)
    assert msg.startswith("exp op 'exp'") and f"test_errors.py:{line}" in msg
    assert "int32" in msg and "counts:0" in msg and "gc.cast" in msg


def test_errors_inside_composites_name_the_inner_op_and_the_user_line():
    x = gc.constant(np.zeros((2, 3), np.float32))
    line = _line() + 2
    with pytest.raises(errors.ShapeError) as info:
        gc.clip_by_value(x, np.zeros(4, np.float32), 1.0)
    msg = str(info.value)
    assert "maximum op" in msg and f"test_errors.py:{line}" in msg


def test_feed_errors_name_the_placeholder_and_where_it_was_made():
    line = _line() + 1
    p = gc.placeholder(gc.float32, (2,), name="inputs")
    with pytest.raises(errors.FeedError, match=rf"placeholder 'inputs'.*test_errors.py:{line}"):
        run(p * 2.0)
    with pytest.raises(errors.FeedError, match=rf"placeholder 'inputs'.*test_errors.py:{line}"):
        run(p, {p: np.zeros(3)})


def test_execution_error_keeps_the_numpy_cause():
    a = gc.placeholder(gc.float32, (None,), name="a")
    b = gc.placeholder(gc.float32, (None,), name="b")
    line = _line() + 1
    c = gc.subtract(a, b, name="diff")
    with pytest.raises(errors.ExecutionError) as info:
        run(c, {a: np.ones(2), b: np.ones(5)})
    msg = str(info.value)
    assert "subtract op 'diff'" in msg and f"test_errors.py:{line}" in msg
    assert "(2,)" in msg and "(5,)" in msg
    assert isinstance(info.value.__cause__, ValueError)


def _constant_in_another_graph():
    with gc.Graph().as_default():
        return gc.constant(1.0)


@pytest.mark.parametrize("build", [
    lambda: gc.placeholder(gc.float32, (2, -3)),
    lambda: gc.placeholder("complex64"),
    lambda: gc.constant(["a"]),
    lambda: gc.constant(np.ones(3), shape=(2, 2)),
    lambda: gc.constant(1.0, shape=(None, 2)),
    lambda: gc.Variable(None),
    lambda: gc.Variable(gc.placeholder(gc.float32, (None, 2))),
    lambda: gc.reduce_sum(gc.constant([1.0]), axis=1),
    lambda: gc.argmax(gc.constant([1.0]), output_type=gc.bool),
    lambda: gc.where(gc.constant([True])),
    lambda: gc.cast(gc.constant(1.0), "string"),
    lambda: gc.Session(config=gc.Config(backend="nope")),
    lambda: gc.add(gc.constant(1.0), _constant_in_another_graph()),
], ids=["neg-dim", "complex", "strings", "const-shape", "const-none-dim", "var-none", "var-unknown-shape",
        "axis", "output-type", "where1", "cast-string", "backend", "two-graphs"])
def test_bad_input_raises_graphc_errors(build):
    with pytest.raises(errors.GraphcError):
        build()


def test_variable_shape_error_names_the_variable():
    with pytest.raises(errors.ShapeError, match="'weights'"):
        gc.Variable(gc.placeholder(gc.float32, (None, 2)), name="weights")


def test_uninitialized_read_names_the_variable_and_the_fix():
    v = gc.Variable(np.zeros(2), name="bias")
    with gc.Session(config=gc.Config(backend="interpreter")) as sess:
        with pytest.raises(errors.UninitializedVariableError,
                           match=r"'bias'.*global_variables_initializer"):
            sess.run(v + 1.0)


def test_tensor_misuse_is_a_plain_type_error():
    x = gc.constant([1.0])
    with pytest.raises(TypeError):
        gc.constant(x)
    with pytest.raises(TypeError, match="gc.cond"):
        bool(x)
