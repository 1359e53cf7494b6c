"""Graph construction: names and name scopes, lookup, control dependencies,
source locations, the default-graph stack, graph mixing, Tensor operators."""
import sys

import numpy as np
import pytest

import graphc as gc
from conftest import run
from graphc.errors import GraphcError, GraphMismatchError, InvalidArgumentError

THIS_FILE = __file__


def _line():
    """Line number of the caller."""
    return sys._getframe(1).f_lineno


# ---- names --------------------------------------------------------------------------------
def test_names_are_unique_with_tf1_suffixes():
    a = gc.constant(1.0, name="c")
    b = gc.constant(2.0, name="c")
    c = gc.constant(3.0, name="c")
    assert [a.name, b.name, c.name] == ["c:0", "c_1:0", "c_2:0"]
    s1, s2 = gc.add(a, b), gc.add(a, b)
    assert (s1.op.name, s2.op.name) == ("add", "add_1")


def test_an_explicit_suffixed_name_is_skipped_by_later_suffixes():
    gc.constant(1.0, name="x")
    gc.constant(1.0, name="x_1")
    assert gc.constant(1.0, name="x").name == "x_2:0"


def test_names_are_deduplicated_case_insensitively_like_tf1():
    gc.constant(1.0, name="W")
    assert gc.constant(1.0, name="w").name == "w_1:0"


def test_name_scopes_prefix_and_repeat_with_suffix():
    a = gc.placeholder(gc.float32, (2, 2), name="a")
    with gc.name_scope("layer1") as scope:
        assert scope == "layer1/"
        m = gc.multiply(a, a, name="MatMul")
        m2 = gc.multiply(a, a, name="MatMul")
        with gc.name_scope("inner"):
            inner = gc.negative(a)
    with gc.name_scope("layer1") as scope2:
        assert scope2 == "layer1_1/"
        m3 = gc.multiply(a, a, name="MatMul")
    assert [m.op.name, m2.op.name, inner.op.name, m3.op.name] == [
        "layer1/MatMul", "layer1/MatMul_1", "layer1/inner/negative", "layer1_1/MatMul"]


def test_name_scope_reentry_root_and_nesting():
    with gc.name_scope("outer"):
        with gc.name_scope("outer/"):          # trailing slash: exactly that scope, no suffix
            a = gc.constant(1.0, name="a")
        with gc.name_scope(None):               # back to the root
            b = gc.constant(1.0, name="b")
        assert gc.get_default_graph().get_name_scope() == "outer"
    assert (a.name, b.name) == ("outer/a:0", "b:0")
    assert gc.get_default_graph().get_name_scope() == ""


def test_op_names_and_scope_names_share_one_namespace():
    gc.constant(1.0, name="block")
    with gc.name_scope("block") as scope:
        assert scope == "block_1/"


def test_composite_ops_open_their_own_scope():
    x = gc.constant([1.0, 2.0])
    with gc.name_scope("net"):
        y = gc.reduce_variance(x, name="var")
    assert y.op.name.startswith("net/var/")


def test_variable_names():
    v = gc.Variable(1.0, name="v")
    v2 = gc.Variable(1.0, name="v")
    with gc.name_scope("layer"):
        w = gc.Variable(np.zeros(2), name="w")
    assert (v.name, v2.name, w.name) == ("v:0", "v_1:0", "layer/w:0")
    g = gc.get_default_graph()
    assert g.get_operation_by_name("layer/w") is w.op
    assert gc.global_variables() == [v, v2, w]
    assert gc.trainable_variables() == [v, v2, w]
    assert gc.Variable(0, trainable=False, name="step") not in gc.trainable_variables()


# ---- lookup --------------------------------------------------------------------------------
def test_lookup_by_name():
    g = gc.get_default_graph()
    x = gc.placeholder(gc.float32, (3,), name="x")
    with gc.name_scope("s"):
        y = gc.exp(x, name="y")
    assert g.get_tensor_by_name("x:0") is x
    assert g.get_tensor_by_name("s/y:0") is y
    assert g.get_operation_by_name("s/y") is y.op
    assert g.get_operations() == [x.op, y.op]
    assert g.as_graph_element("x:0") is x and g.as_graph_element("x") is x.op
    with pytest.raises(KeyError, match="nope"):
        g.get_operation_by_name("nope")
    with pytest.raises(KeyError):
        g.get_tensor_by_name("x:1")
    with pytest.raises(InvalidArgumentError, match="tensor name"):
        g.get_tensor_by_name("x")
    with pytest.raises(InvalidArgumentError, match="get_tensor_by_name"):
        g.get_operation_by_name("x:0")
    with pytest.raises(TypeError):
        g.get_operation_by_name(x)


def test_get_operations_is_creation_order_and_a_copy():
    g = gc.Graph()
    with g.as_default():
        ops = [gc.constant(float(i)).op for i in range(5)]
        listed = g.get_operations()
        listed.clear()
        assert g.get_operations() == ops


def test_operation_and_tensor_attributes():
    x = gc.placeholder(gc.float32, (None, 3), name="x")
    y = gc.add(x, 1.0, name="y")
    op = y.op
    assert op.type == "add" and op.name == "y" and op.graph is gc.get_default_graph()
    assert op.inputs[0] is x and op.outputs == (y,) and op.values == (y,)
    assert y.shape == (None, 3) and y.get_shape() == (None, 3) and y.ndim == 2
    assert y.dtype == gc.float32 and y.value_index == 0 and y.graph is op.graph
    assert x.consumers() == [op]
    assert "y:0" in repr(y) and "(?, 3)" in repr(y)


# ---- control dependencies ---------------------------------------------------------------------
def test_control_dependencies_order_is_observable_through_variables():
    v = gc.Variable(0, name="counter")
    inc = v.assign_add(1)
    before = v + 0                                   # no ordering: the start-of-run value
    with gc.control_dependencies([inc]):
        after = v + 0                                # ordered after the increment
    assert inc.op in after.op.inputs[0].op.control_inputs or inc.op in after.op.control_inputs
    with gc.Session(config=gc.Config(backend="interpreter")) as sess:
        sess.run(gc.global_variables_initializer())
        assert sess.run(after) == 1                  # fetching `after` alone runs `inc` first
        assert sess.run(after) == 2
        assert sess.run([before, after]) == [2, 3]
        assert sess.run(v) == 3


def test_control_dependencies_on_ops_groups_and_nesting():
    v = gc.Variable(np.float32(0), name="v")
    w = gc.Variable(np.float32(0), name="w")
    set_v, set_w = v.assign(5.0), w.assign(7.0)
    with gc.control_dependencies([set_v]):
        with gc.control_dependencies([set_w.op]):     # Operations or Tensors
            both = gc.identity(v) + gc.identity(w)
            marker = gc.no_op(name="marker")
        with gc.control_dependencies(None):           # clears the outer dependencies
            free = gc.constant(1.0)
    assert set(marker.control_inputs) == {set_v.op, set_w.op}
    assert free.op.control_inputs == ()
    step = gc.group(set_v, set_w)
    assert step.type == "no_op" and set(step.control_inputs) == {set_v.op, set_w.op}
    with gc.Session(config=gc.Config(backend="interpreter")) as sess:
        sess.run(gc.global_variables_initializer())
        assert sess.run(both) == 12.0
        sess.run(gc.global_variables_initializer())
        assert sess.run(marker) is None
        assert sess.run([v, w]) == [5.0, 7.0]


def test_control_dependencies_refuse_foreign_and_non_ops():
    g = gc.Graph()
    with g.as_default():
        foreign = gc.constant(1.0)
    with pytest.raises(GraphMismatchError):
        with gc.get_default_graph().control_dependencies([foreign]):
            pass
    with pytest.raises(TypeError):
        with gc.control_dependencies([3]):
            pass


# ---- source locations -----------------------------------------------------------------------------
def test_source_points_at_the_user_line():
    x = gc.placeholder(gc.float32, (3,)); line_x = _line()
    y = x * 2.0 + 1.0; line_y = _line()
    z = gc.clip_by_value(y, 0.0, 1.0); line_z = _line()
    v = gc.Variable(1.0); line_v = _line()
    for t, line in [(x, line_x), (y, line_y), (z, line_z), (v.op.outputs[0], line_v)]:
        assert t.op.source.file == THIS_FILE and t.op.source.line == line, (t, t.op.source)
        assert str(t.op.source) == f"{THIS_FILE}:{line}"
    # every op the composite built carries the same user line
    for op in gc.get_default_graph().get_operations():
        assert op.source.file == THIS_FILE


def _helper_building_ops(x):
    return gc.sqrt(x)


def test_source_is_the_innermost_user_frame():
    y = _helper_building_ops(gc.constant(4.0))
    assert y.op.source.function == "_helper_building_ops"
    assert y.op.source.file == THIS_FILE


def test_graph_errors_carry_the_source_line():
    a = gc.constant(np.ones((2, 3)))
    line = _line() + 2
    with pytest.raises(gc.errors.ShapeError) as info:
        gc.add(a, np.ones((4,)))
    assert f"test_graph.py:{line}" in str(info.value)


# ---- default graph stack ---------------------------------------------------------------------------
def test_default_graph_stack():
    outer = gc.get_default_graph()
    g1, g2 = gc.Graph(), gc.Graph()
    with g1.as_default() as entered:
        assert entered is g1 and gc.get_default_graph() is g1
        a = gc.constant(1.0)
        with g2.as_default():
            assert gc.get_default_graph() is g2
            b = gc.constant(2.0)
        assert gc.get_default_graph() is g1
    assert gc.get_default_graph() is outer
    assert a.graph is g1 and b.graph is g2 and outer.get_operations() == []


def test_ops_on_a_graphs_tensors_go_to_that_graph():
    g = gc.Graph()
    with g.as_default():
        a = gc.constant(1.0)
    b = a * 3.0                                    # outside any `with`: follows its input
    assert b.graph is g
    assert run(b, graph=g) == 3.0


def test_reset_default_graph():
    before = gc.get_default_graph()
    gc.constant(1.0)
    gc.reset_default_graph()
    after = gc.get_default_graph()
    assert after is not before and after.get_operations() == []
    with gc.Graph().as_default():
        with pytest.raises(InvalidArgumentError, match="reset_default_graph"):
            gc.reset_default_graph()


def test_finalized_graph_refuses_new_ops():
    g = gc.Graph()
    with g.as_default():
        gc.constant(1.0)
        g.finalize()
        assert g.finalized
        with pytest.raises(GraphcError, match="finalized"):
            gc.constant(2.0)


def test_mixing_graphs_raises_graph_mismatch_error():
    g1, g2 = gc.Graph(), gc.Graph()
    with g1.as_default():
        a = gc.placeholder(gc.float32, (2,), name="a")
    with g2.as_default():
        b = gc.placeholder(gc.float32, (2,), name="b")
    with pytest.raises(GraphMismatchError, match="two graphs"):
        a + b
    with pytest.raises(GraphMismatchError):
        gc.where(gc.constant([True, False]), a, b)
    with g2.as_default():
        with pytest.raises(GraphMismatchError, match="a:0"):
            gc.exp(a)
    assert issubclass(GraphMismatchError, GraphcError) and issubclass(GraphMismatchError, ValueError)
    with gc.Session(graph=g1, config=gc.Config(backend="interpreter")) as sess:
        with pytest.raises(GraphMismatchError):
            sess.run(b, {a: [1.0, 2.0]})


# ---- Tensor operators ---------------------------------------------------------------------------
def test_tensor_arithmetic_operators_match_numpy():
    a = np.array([[1.5, -2.0, 3.0], [4.0, 5.5, -6.0]], np.float32)
    b = np.array([2.0, -3.0, 0.5], np.float32)
    x, y = gc.constant(a), gc.constant(b)
    cases = [
        (x + y, a + b), (x - y, a - b), (x * y, a * b), (x / y, a / b), (x // y, a // b), (x % y, a % b),
        (abs(x) ** y, np.abs(a) ** b), (-x, -a), (abs(x), np.abs(a)), (+x, a),
        (2 + x, 2 + a), (2 - x, 2 - a), (2 * x, 2 * a), (2 / x, 2 / a), (7 // x, 7 // a), (7 % x, 7 % a),
        (2 ** y, 2 ** b), (a + y, a + b), (b * x, b * a), (a - y, a - b),
    ]
    outs = run([t for t, _ in cases])
    for (t, expected), out in zip(cases, outs):
        assert t.dtype == np.float32 and out.dtype == np.float32
        np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_tensor_comparison_and_logical_operators():
    a = np.array([1, 2, 3, 4], np.int32)
    x = gc.constant(a)
    outs = run([x < 3, x <= 3, x > 3, x >= 3, 3 < x, (x > 1) & (x < 4), (x < 2) | (x > 3), ~(x > 2)])
    expected = [a < 3, a <= 3, a > 3, a >= 3, 3 < a, (a > 1) & (a < 4), (a < 2) | (a > 3), ~(a > 2)]
    for out, e in zip(outs, expected):
        assert out.dtype == np.bool_
        np.testing.assert_array_equal(out, e)


@pytest.mark.skipif(not hasattr(gc, "matmul"), reason="gc.matmul (linalg ops) not available yet")
def test_matmul_operator():
    a = np.arange(6, dtype=np.float64).reshape(2, 3)
    b = np.arange(12, dtype=np.float64).reshape(3, 4)
    x, y = gc.constant(a), gc.constant(b)
    np.testing.assert_allclose(run(x @ y), a @ b)
    np.testing.assert_allclose(run(a @ y), a @ b)


def test_bool_of_a_tensor_is_a_type_error():
    x = gc.constant([1.0, 2.0])
    with pytest.raises(TypeError, match="Python bool"):
        bool(x)
    with pytest.raises(TypeError):
        if x > 1.0:
            pass
    with pytest.raises(TypeError):
        iter(x)
    assert len(x) == 2
    with pytest.raises(TypeError):
        len(gc.placeholder(gc.float32, (None,)))
    v = gc.Variable([1.0, 2.0])
    with pytest.raises(TypeError, match="Python bool"):
        bool(v)
    with pytest.raises(TypeError):
        iter(v)


def test_tensors_are_hashable_identity_keys():
    x = gc.constant(1.0)
    y = gc.constant(1.0)
    d = {x: "x", y: "y"}
    assert d[x] == "x" and d[y] == "y"
    assert len({x, y, x}) == 2
    assert x == x and x != y                 # identity, not elementwise (use gc.equal)
    assert isinstance(gc.equal(x, y), gc.Tensor)
    v = gc.Variable(1.0)
    assert {v: 1}[v] == 1
