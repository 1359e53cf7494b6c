"""Session.run: fetch structures, feeds (keys, conversion, errors),
variables and their read/write semantics, lifetime, backends, run-time errors."""
import collections
import sys

import numpy as np
import pytest

import graphc as gc
from graphc.backends import available_backends
from graphc.errors import (CompileError, ExecutionError, FeedError, GraphcError, GraphMismatchError,
                           UninitializedVariableError)

Pair = collections.namedtuple("Pair", "first second")


def _session(graph=None):
    return gc.Session(graph=graph, config=gc.Config(backend="interpreter"))


def _line():
    return sys._getframe(1).f_lineno


@pytest.fixture
def xyz():
    x = gc.placeholder(gc.float32, (None, 3), name="x")
    y = gc.multiply(x, 2.0, name="y")
    z = gc.add(y, 1.0, name="z")
    return x, y, z


# ---- fetches ----------------------------------------------------------------------------------
def test_nested_fetches_keep_their_structure(xyz):
    x, y, z = xyz
    noop = gc.no_op(name="nothing")
    fetches = {"list": [y, (z, [y])], "pair": Pair(y, noop), "ordered": collections.OrderedDict(b=z, a=y),
               "tuple": (z,), "empty": []}
    with _session() as sess:
        out = sess.run(fetches, {x: np.ones((2, 3))})
    assert set(out) == set(fetches)
    assert isinstance(out["list"], list) and isinstance(out["list"][1], tuple) and isinstance(out["list"][1][1], list)
    assert isinstance(out["pair"], Pair) and out["pair"].second is None
    assert isinstance(out["ordered"], collections.OrderedDict) and list(out["ordered"]) == ["b", "a"]
    assert isinstance(out["tuple"], tuple) and out["empty"] == []
    np.testing.assert_array_equal(out["list"][0], np.full((2, 3), 2.0))
    np.testing.assert_array_equal(out["list"][1][0], np.full((2, 3), 3.0))
    np.testing.assert_array_equal(out["pair"].first, np.full((2, 3), 2.0))
    np.testing.assert_array_equal(out["ordered"]["b"], np.full((2, 3), 3.0))


def test_single_fetches_ops_and_scalars(xyz):
    x, y, z = xyz
    s = gc.reduce_sum(z)
    with _session() as sess:
        out = sess.run(z, {x: np.zeros((1, 3))})
        assert isinstance(out, np.ndarray) and out.dtype == np.float32
        total = sess.run(s, {x: np.zeros((1, 3))})
        assert np.shape(total) == () and total == 3.0
        assert sess.run(gc.no_op()) is None
        assert sess.run(gc.group(z), {x: np.zeros((1, 3))}) is None


def test_fetch_by_name(xyz):
    x, y, z = xyz
    with _session() as sess:
        np.testing.assert_array_equal(sess.run("z:0", {x: [[1, 2, 3]]}), [[3, 5, 7]])
        assert sess.run("z", {x: [[1, 2, 3]]}) is None      # an op name fetches the operation
        out = sess.run(["y:0", z], {x: [[1, 1, 1]]})
        np.testing.assert_array_equal(out[0], [[2, 2, 2]])
        with pytest.raises(KeyError, match="nope"):
            sess.run("nope:0")
        with pytest.raises(TypeError):
            sess.run(None)
        with pytest.raises(TypeError):
            sess.run([z, 3])


def test_fetch_from_another_graph_is_refused():
    g = gc.Graph()
    with g.as_default():
        foreign = gc.constant(1.0)
    gc.constant(2.0)
    with _session() as sess, pytest.raises(GraphMismatchError):
        sess.run(foreign)


def test_results_are_the_callers_own_arrays():
    v = gc.Variable(np.zeros(3, np.float32), name="v")
    c = gc.constant([1.0, 2.0])
    x = gc.placeholder(gc.float32, (2,))
    ident = gc.identity(x)
    with _session() as sess:
        sess.run(gc.global_variables_initializer())
        value = sess.run(v)
        value += 1                                  # writable, and not the session's state
        np.testing.assert_array_equal(sess.run(v), [0, 0, 0])
        const = sess.run(c)
        const[0] = 9
        np.testing.assert_array_equal(sess.run(c), [1, 2])
        fed = np.array([5.0, 6.0], np.float32)
        out = sess.run(ident, {x: fed})
        out[0] = -1
        np.testing.assert_array_equal(fed, [5, 6])


# ---- feeds --------------------------------------------------------------------------------------
def test_feed_keys_as_tensors_or_names(xyz):
    x, y, z = xyz
    with _session() as sess:
        for key in (x, "x", "x:0"):
            np.testing.assert_array_equal(sess.run(z, {key: [[0, 1, 2]]}), [[1, 3, 5]])
        with pytest.raises(FeedError, match="twice"):
            sess.run(z, {x: [[0, 1, 2]], "x:0": [[0, 1, 2]]})


def test_feeding_a_non_placeholder_skips_its_upstream(xyz):
    x, y, z = xyz
    with _session() as sess:
        # x is never fed: if y's producer ran, the run would fail with a missing feed
        np.testing.assert_array_equal(sess.run(z, {y: np.full((4, 3), 10.0)}), np.full((4, 3), 11.0))
        np.testing.assert_array_equal(sess.run(z, {"y:0": [[0, 0, 0]]}), [[1, 1, 1]])
        # the fed value replaces the tensor even when it is fetched itself
        np.testing.assert_array_equal(sess.run(y, {y: [[7, 7, 7]]}), [[7, 7, 7]])
        v = gc.Variable(np.float32(1), name="v")
        # a variable's read can be fed too: no initialization needed then
        assert sess.run(v * 2.0, {v: 21.0}) == 42.0


def test_feeding_a_tensor_validates_against_its_static_shape(xyz):
    x, y, z = xyz
    with _session() as sess, pytest.raises(FeedError, match=r"tensor 'y:0'.*\(\?, 3\)"):
        sess.run(z, {y: np.ones((2, 2))})


def test_two_batch_sizes_through_one_placeholder(xyz):
    x, y, z = xyz
    with _session() as sess:
        for n in (1, 5, 0, 3):
            out = sess.run(z, {x: np.ones((n, 3))})
            assert out.shape == (n, 3)
            np.testing.assert_array_equal(out, np.full((n, 3), 3.0))


def test_feed_conversions_that_are_allowed():
    f32 = gc.placeholder(gc.float32, (2,), name="f32")
    i32 = gc.placeholder(gc.int32, (), name="i32")
    b = gc.placeholder(gc.bool, (2,), name="b")
    with _session() as sess:
        out = sess.run(f32, {f32: np.array([1.5, 2.5], np.float64)})      # float64 -> float32
        assert out.dtype == np.float32
        assert sess.run(f32, {f32: [1, 2]}).dtype == np.float32            # list of ints -> float
        assert sess.run(i32, {i32: 3}) == 3 and sess.run(i32, {i32: 3}).dtype == np.int32
        assert sess.run(i32, {i32: np.int64(4)}) == 4                       # int64 -> int32
        np.testing.assert_array_equal(sess.run(b, {b: [True, False]}), [True, False])
        with pytest.raises(FeedError, match="f32"):
            sess.run(f32, {f32: np.float32(2)})                             # a scalar is not shape (2,)


def test_integer_feeds_that_do_not_fit_are_refused_not_wrapped():
    i32 = gc.placeholder(gc.int32, (2,), name="ids")
    with _session() as sess:
        np.testing.assert_array_equal(sess.run(i32, {i32: np.array([-5, 2 ** 31 - 1], np.int64)}), [-5, 2 ** 31 - 1])
        with pytest.raises(FeedError, match=r"placeholder 'ids'.*does not fit"):
            sess.run(i32, {i32: [2 ** 40, 1]})


@pytest.mark.parametrize("value", [[1.5, 2.0], np.array([1.0, 2.0]), ["a", "b"], "ab", [None, 1]],
                         ids=["float-list", "float-array", "strings", "string", "objects"])
def test_feed_conversions_that_are_refused(value):
    i32 = gc.placeholder(gc.int32, (2,), name="counts")
    with _session() as sess, pytest.raises(FeedError, match="placeholder 'counts'"):
        sess.run(i32, {i32: value})


def test_feed_errors_name_the_placeholder_and_its_line():
    x = gc.placeholder(gc.float32, (None, 3), name="images"); line = _line()
    y = x * 2.0
    g = gc.Graph()
    with g.as_default():
        other = gc.placeholder(gc.float32, (None, 3), name="images")
    with _session() as sess:
        with pytest.raises(FeedError, match=rf"placeholder 'images'.*test_session.py:{line}"):
            sess.run(y)                                                       # missing
        with pytest.raises(FeedError, match=r"placeholder 'images' expects shape \(\?, 3\).*\(2, 4\)"):
            sess.run(y, {x: np.ones((2, 4))})                                 # wrong shape
        with pytest.raises(FeedError, match=r"placeholder 'images' expects shape.*\(3,\)"):
            sess.run(y, {x: np.ones(3)})                                      # wrong rank
        with pytest.raises(FeedError, match=r"placeholder 'images' expects dtype float32.*<U1"):
            sess.run(y, {x: np.array([["a", "b", "c"]])})                    # wrong dtype
        with pytest.raises(FeedError, match="nope"):
            sess.run(y, {x: np.ones((1, 3)), "nope:0": 1.0})                  # unknown key
        with pytest.raises(FeedError, match="images"):
            sess.run(y, {other: np.ones((1, 3))})                             # key from another graph
        with pytest.raises(FeedError, match="images"):
            sess.run(y, {x: x})                                               # a Tensor is not a value
        with pytest.raises(FeedError):
            sess.run(y, {3: 1.0})


def test_missing_feed_lists_every_missing_placeholder():
    a = gc.placeholder(gc.float32, (), name="alpha")
    b = gc.placeholder(gc.float32, (), name="beta")
    with _session() as sess, pytest.raises(FeedError, match="alpha.*beta"):
        sess.run(a + b)


def test_unfed_placeholders_outside_the_fetched_subgraph_are_fine(xyz):
    x, y, z = xyz
    gc.placeholder(gc.float32, (), name="unused")
    with _session() as sess:
        assert sess.run(gc.constant(2.0) * 3.0) == 6.0


# ---- variables ---------------------------------------------------------------------------------------
def test_variables_persist_across_runs_and_sessions_are_independent():
    v = gc.Variable(np.float32(0), name="v")
    inc = v.assign_add(1.0)
    with _session() as s1, _session() as s2:
        s1.run(gc.global_variables_initializer())
        s2.run(gc.global_variables_initializer())
        for _ in range(3):
            s1.run(inc)
        assert s1.run(v) == 3.0 and s2.run(v) == 0.0


def test_assign_ops_return_the_new_value():
    v = gc.Variable(np.array([1.0, 2.0], np.float32), name="v")
    with _session() as sess:
        sess.run(v.initializer)
        np.testing.assert_array_equal(sess.run(v.assign([5.0, 6.0])), [5, 6])
        np.testing.assert_array_equal(sess.run(v.assign_add([1.0, 1.0])), [6, 7])
        np.testing.assert_array_equal(sess.run(v.assign_sub(np.array([2.0, 2.0]))), [4, 5])
        np.testing.assert_array_equal(sess.run(gc.assign(v, [0.0, 1.0])), [0, 1])
        np.testing.assert_array_equal(sess.run(gc.assign_add(v, [1.0, 1.0])), [1, 2])
        np.testing.assert_array_equal(sess.run(gc.assign_sub(v, [1.0, 1.0])), [0, 1])
        np.testing.assert_array_equal(sess.run(v), [0, 1])
        assert sess.run(v.assign(v * 10.0)).dtype == np.float32


def test_assign_checks_shape_and_dtype_when_the_graph_is_built():
    v = gc.Variable(np.zeros(2, np.int32), name="ints")
    with pytest.raises(gc.errors.ShapeError, match="ints"):
        v.assign(np.zeros(3, np.int32))
    with pytest.raises(gc.errors.DTypeError, match="ints"):
        v.assign(gc.constant([0.5, 1.5]))


def test_initializers():
    a = gc.Variable(1.0, name="a")
    b = gc.Variable(lambda: np.ones(2), name="b")
    c = gc.Variable(a.initial_value * 3.0, name="c")
    with _session() as sess:
        assert sess.run(gc.global_variables_initializer()) is None
        assert sess.run([a, c]) == [1.0, 3.0]
        np.testing.assert_array_equal(sess.run(b), [1, 1])
    with _session() as sess:
        sess.run(gc.variables_initializer([a]))
        assert sess.run(a) == 1.0
        with pytest.raises(UninitializedVariableError, match="'b'"):
            sess.run(b)


def test_uninitialized_variable_is_a_graphc_error_naming_it():
    with gc.name_scope("layer"):
        w = gc.Variable(np.ones(2), name="weights")
    with _session() as sess:
        with pytest.raises(UninitializedVariableError, match=r"'layer/weights'.*initializ"):
            sess.run(w * 2.0)
    assert issubclass(UninitializedVariableError, ExecutionError)
    assert issubclass(UninitializedVariableError, GraphcError)


def test_reads_see_the_start_of_run_value_unless_ordered_after_a_write():
    v = gc.Variable(np.float32(1), name="v")
    write = v.assign(5.0)
    plain = v * 1.0
    with gc.control_dependencies([write]):
        ordered = v * 1.0
    with _session() as sess:
        sess.run(gc.global_variables_initializer())
        assert sess.run([v, write, plain]) == [1.0, 5.0, 1.0]
        sess.run(v.assign(1.0))
        assert sess.run([plain, ordered]) == [1.0, 5.0]
        assert sess.run(v) == 5.0
        # a data dependency orders too: the assign's output is the new value
        sess.run(v.assign(1.0))
        assert sess.run(v.assign_add(2.0) * 10.0) == 30.0


def test_variable_load_and_eval():
    v = gc.Variable(np.zeros(2, np.float32), name="v")
    with _session() as sess:
        v.load([3.0, 4.0], session=sess)
        np.testing.assert_array_equal(v.eval(session=sess), [3, 4])
        with pytest.raises(FeedError):
            v.load([1.0, 2.0, 3.0], session=sess)


# ---- lifetime ---------------------------------------------------------------------------------------
def test_session_as_context_manager_is_the_default_session(xyz):
    x, y, z = xyz
    with _session() as sess:
        assert gc.get_default_session() is sess
        assert gc.get_default_graph() is sess.graph
        np.testing.assert_array_equal(z.eval({x: [[0, 0, 0]]}), [[1, 1, 1]])
        gc.group(z).run({x: [[0, 0, 0]]})
    assert gc.get_default_session() is None
    with pytest.raises(GraphcError, match="closed"):
        sess.run(z, {x: [[0, 0, 0]]})
    with pytest.raises(GraphcError, match="no default session"):
        z.eval({x: [[0, 0, 0]]})


def test_as_default_keeps_the_session_open(xyz):
    x, y, z = xyz
    sess = _session()
    with sess.as_default():
        assert gc.get_default_session() is sess
    np.testing.assert_array_equal(sess.run(z, {x: [[1, 1, 1]]}), [[3, 3, 3]])
    sess.close()


def test_close_frees_state_and_later_runs_fail():
    v = gc.Variable(1.0, name="v")
    sess = _session()
    sess.run(gc.global_variables_initializer())
    assert sess.run(v) == 1.0
    sess.close()
    assert sess._variable_values() == {}
    with pytest.raises(GraphcError, match="closed"):
        sess.run(v)


def test_session_graph_defaults_to_the_default_graph():
    g = gc.Graph()
    with g.as_default():
        c = gc.constant(2.0)
        with _session() as sess:
            assert sess.graph is g and sess.run(c) == 2.0


# ---- backends ------------------------------------------------------------------------------------------
def test_interpreter_backend_and_default():
    assert "interpreter" in available_backends()
    with gc.Session(config=gc.Config(backend="interpreter")) as sess:
        assert sess.backend == "interpreter"
    with gc.Session() as sess:
        expected = "cpu" if "cpu" in available_backends() else "interpreter"
        assert sess.backend == expected


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(CompileError, match=r"'nope'.*interpreter"):
        gc.Session(config=gc.Config(backend="nope"))
    assert issubclass(CompileError, GraphcError)


# ---- run-time errors ------------------------------------------------------------------------------------
def test_run_time_failure_names_the_op_and_its_line():
    a = gc.placeholder(gc.float32, (None,), name="a")
    b = gc.placeholder(gc.float32, (None,), name="b")
    total = gc.add(a, b, name="total"); line = _line()
    assert total.shape == (None,)
    with _session() as sess:
        np.testing.assert_array_equal(sess.run(total, {a: [1, 2], b: [3, 4]}), [4, 6])
        with pytest.raises(ExecutionError, match=rf"add op 'total' created at .*test_session.py:{line}.*\(2,\).*\(3,\)"):
            sess.run(total, {a: np.ones(2), b: np.ones(3)})
        # the session is still usable afterwards
        np.testing.assert_array_equal(sess.run(total, {a: [1], b: [1]}), [2])
