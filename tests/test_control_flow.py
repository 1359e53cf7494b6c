"""gc.cond and gc.while_loop: tutorial-style programs, structures, side
effects, nesting, shape invariants and bad input."""
import collections

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import graphc as gc
from conftest import run
from graphc.errors import DTypeError, GraphcError, InvalidArgumentError, ShapeError

HERE = "test_control_flow.py"


def ops_of_type(op_type, graph=None):
    return [op for op in (graph or gc.get_default_graph()).get_operations() if op.type == op_type]


# --------------------------------------------------------------------------
# Tutorial-style programs
# --------------------------------------------------------------------------
def collatz_steps(n):
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


def test_collatz_counter_with_cond_in_body():
    n0 = gc.placeholder(gc.int32, [], name="n0")

    def body(n, steps):
        n = gc.cond(gc.equal(n % 2, 0), lambda: n // 2, lambda: 3 * n + 1)
        return n, steps + 1

    n_final, steps = gc.while_loop(lambda n, steps: gc.not_equal(n, 1), body, [n0, 0])
    assert steps.dtype == gc.int32 and steps.shape == ()
    for start in (1, 6, 7, 27, 97):
        got_n, got_steps = run([n_final, steps], {n0: start})
        assert got_n == 1 and got_steps == collatz_steps(start)


def test_double_until_norm_then_cond():
    x = gc.placeholder(gc.float32, [None], name="x")
    v = gc.while_loop(lambda v: gc.sqrt(gc.reduce_sum(v * v)) < 1000.0, lambda v: v * 2.0, [x])[0]
    assert v.shape == (None,)
    out = gc.cond(gc.reduce_sum(v) > 0, lambda: gc.reduce_sum(v), lambda: gc.reduce_max(v) * 10.0)
    for data in ([1.0, 2.0, 3.0], [-1.0, 0.5], [-3.0, -1.0, 2.0, 0.25]):
        arr = np.asarray(data, np.float32)
        expect = arr.copy()
        while np.sqrt(np.sum(expect * expect)) < 1000:
            expect = expect * 2
        expect_out = expect.sum() if expect.sum() > 0 else expect.max() * 10
        got_v, got_out = run([v, out], {x: arr})
        np.testing.assert_allclose(got_v, expect, rtol=1e-6)
        np.testing.assert_allclose(got_out, expect_out, rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64])
def test_accumulate_sum_of_squares(dtype):
    n = gc.placeholder(gc.int32, [], name="n")
    total0 = gc.constant(np.zeros((), dtype))
    _, total = gc.while_loop(lambda i, s: i < n, lambda i, s: (i + 1, s + gc.cast(i * i, dtype)), (0, total0))
    assert total.dtype == np.dtype(dtype)
    for k in (0, 1, 5, 17):
        got = run(total, {n: k})
        assert got.dtype == np.dtype(dtype)
        assert got == sum(i * i for i in range(k))


@settings(max_examples=20, deadline=None)
@given(start=st.integers(-50, 50), step=st.integers(1, 7), stop=st.integers(-50, 120))
def test_counting_loop_matches_python(start, step, stop):
    gc.reset_default_graph()
    i = gc.while_loop(lambda i: i < stop, lambda i: i + step, start)
    expect = start
    while expect < stop:
        expect += step
    assert run(i) == expect


def test_loop_over_matrix_with_unknown_dims():
    a = gc.placeholder(gc.float64, [None, None], name="a")
    k = gc.placeholder(gc.int32, [], name="k")
    # a^(k+1) by repeated products: the loop variable keeps its (None, None) shape
    _, p = gc.while_loop(lambda i, p: i < k, lambda i, p: (i + 1, gc.matmul(p, a)), [0, a])
    assert p.shape == (None, None)
    rng = np.random.default_rng(1)
    m = rng.standard_normal((3, 3)) / 2
    np.testing.assert_allclose(run(p, {a: m, k: 3}), np.linalg.matrix_power(m, 4), rtol=1e-12)
    empty = np.zeros((0, 0))
    assert run(p, {a: empty, k: 2}).shape == (0, 0)


# --------------------------------------------------------------------------
# maximum_iterations and the hidden iteration count
# --------------------------------------------------------------------------
def test_maximum_iterations_int_stops_a_loop_whose_cond_stays_true():
    i = gc.while_loop(lambda i: True, lambda i: i + 1, [0], maximum_iterations=7)
    assert run(i) == [7]


def test_maximum_iterations_tensor_and_cond_stopping_first():
    m = gc.placeholder(gc.int32, [], name="m")
    i, = gc.while_loop(lambda i: i < 5, lambda i: i + 1, [gc.constant(0)], maximum_iterations=m)
    assert run(i, {m: 3}) == 3
    assert run(i, {m: 100}) == 5
    assert run(i, {m: 0}) == 0


def test_maximum_iterations_int64_tensor():
    m = gc.constant(np.int64(4))
    x = gc.while_loop(lambda x: x < 1e9, lambda x: x * 3.0, gc.constant(1.0), maximum_iterations=m)
    assert run(x) == 81.0


def test_hidden_iteration_count_output():
    n = gc.placeholder(gc.int32, [], name="n")
    i, s = gc.while_loop(lambda i, s: i < n, lambda i, s: (i + 2, s * 2.0), [0, gc.constant(1.0)])
    (op,) = ops_of_type("while_loop")
    assert len(op.outputs) == 3
    count = op.outputs[-1]
    assert count.dtype == gc.int32 and count.shape == ()
    assert list(run([count, i], {n: 9})) == [5, 10]
    assert run(count, {n: 0}) == 0


def test_maximum_iterations_bad_values():
    with pytest.raises(InvalidArgumentError, match="while"):
        gc.while_loop(lambda i: True, lambda i: i + 1, [0], maximum_iterations=-1)
    with pytest.raises(InvalidArgumentError, match="while"):
        gc.while_loop(lambda i: True, lambda i: i + 1, [0], maximum_iterations=True)
    with pytest.raises(DTypeError, match="while_loop op 'while"):
        gc.while_loop(lambda i: True, lambda i: i + 1, [0], maximum_iterations=gc.constant(2.0))
    m = gc.placeholder(gc.int32, [], name="m")
    i = gc.while_loop(lambda i: True, lambda i: i + 1, [0], maximum_iterations=m, name="neg_limit")
    with pytest.raises(gc.errors.ExecutionError, match="neg_limit"):
        run(i, {m: -2})


# --------------------------------------------------------------------------
# Shape invariants
# --------------------------------------------------------------------------
def test_growing_concat_with_shape_invariants():
    if not hasattr(gc, "concat"):
        pytest.skip("gc.concat (graphc/ops/shape.py) is not written yet")
    x = gc.constant(np.array([1.0, 2.0], np.float32))
    i, v = gc.while_loop(lambda i, v: i < 3, lambda i, v: (i + 1, gc.concat([v, v * 10.0], axis=0)),
                         [0, x], shape_invariants=[(), (None,)])
    assert v.shape == (None,)
    expect = np.array([1.0, 2.0], np.float32)
    for _ in range(3):
        expect = np.concatenate([expect, expect * 10])
    np.testing.assert_allclose(run(v), expect)
    with pytest.raises(ShapeError, match="shape_invariants"):
        gc.while_loop(lambda i, v: i < 3, lambda i, v: (i + 1, gc.concat([v, v], axis=0)), [0, x])


def test_shape_invariant_allows_a_dim_to_change():
    x = gc.constant(np.arange(1.0, 5.0))                 # (4,) -> (1,) after one iteration
    v = gc.while_loop(lambda v: gc.reduce_max(v) < 100.0,
                      lambda v: gc.reduce_sum(v, keepdims=True) * 2.0, [x], shape_invariants=[(None,)])[0]
    assert v.shape == (None,)
    np.testing.assert_allclose(run(v), [160.0])          # 10*2 = 20, 40, 80, 160


def test_shape_change_without_invariant_is_a_shape_error():
    x = gc.constant(np.arange(4.0))
    with pytest.raises(ShapeError) as info:
        gc.while_loop(lambda v: gc.reduce_max(v) < 100.0, lambda v: gc.reduce_sum(v, keepdims=True), [x],
                      name="grow")
    msg = str(info.value)
    assert "while_loop op 'grow'" in msg and "loop variable 0" in msg and "shape_invariants" in msg
    assert HERE in msg


def test_shape_invariant_that_does_not_fit_the_initial_value():
    x = gc.constant(np.arange(4.0))
    with pytest.raises(ShapeError, match="while_loop op 'while'.*invariant"):
        gc.while_loop(lambda v: True, lambda v: v, [x], shape_invariants=[(3,)], maximum_iterations=1)
    with pytest.raises(InvalidArgumentError, match="shape_invariants"):
        gc.while_loop(lambda v: True, lambda v: v, [x], shape_invariants=[(None,), (None,)])


def test_unknown_rank_invariant():
    x = gc.constant(np.arange(4.0))
    v = gc.while_loop(lambda v: gc.reduce_sum(v) > 5.0, lambda v: gc.reduce_sum(v) * 0.5, [x],
                      shape_invariants=[None])[0]
    assert v.shape is None
    assert run(v) == 3.0


def test_body_output_with_unknown_dim_against_known_shape_is_rejected():
    x = gc.constant(np.ones(3, np.float32))
    p = gc.placeholder(gc.float32, [None], name="p")
    with pytest.raises(ShapeError, match="loop variable 0"):
        gc.while_loop(lambda v: True, lambda v: p, [x], maximum_iterations=1)


# --------------------------------------------------------------------------
# Nesting and captures
# --------------------------------------------------------------------------
def test_nested_while_loops_capture_two_levels_up():
    n = gc.placeholder(gc.int32, [], name="n")
    scale = gc.placeholder(gc.float64, [], name="scale")

    def outer_body(i, total):
        def inner_body(j, acc):
            # `scale` lives two graphs up; `i` one graph up
            return j + 1, acc + scale * gc.cast(i * j, gc.float64)
        _, inner = gc.while_loop(lambda j, acc: j < i, inner_body, [0, gc.constant(0.0, gc.float64)])
        return i + 1, total + inner

    _, total = gc.while_loop(lambda i, total: i < n, outer_body, [0, gc.constant(0.0, gc.float64)])
    for k in (0, 1, 4, 7):
        expect = sum(0.5 * i * j for i in range(k) for j in range(i))
        assert run(total, {n: k, scale: 0.5}) == pytest.approx(expect)


def test_capture_two_levels_up_shares_one_argument():
    a = gc.placeholder(gc.float32, [], name="a")

    def body(x):
        return gc.cond(x > 0, lambda: x - a, lambda: x + a * 0.0 + a)

    x, = gc.while_loop(lambda x: x > 1.0, body, [gc.constant(10.0)])
    (while_op,) = ops_of_type("while_loop")
    body_graph = while_op.attrs["body"]
    assert [outer.name for outer, _ in body_graph.captures] == [a.name]
    (cond_op,) = ops_of_type("cond", body_graph)
    # x and a, each once, though both branches use them
    assert len(cond_op.inputs) == 3
    assert run(x, {a: 3.0}) == 1.0


def test_while_inside_cond_branch():
    x = gc.placeholder(gc.int32, [], name="x")
    out = gc.cond(x > 0,
                  lambda: gc.while_loop(lambda v: v < 100, lambda v: v * 2, [x])[0],
                  lambda: -x)
    assert run(out, {x: 3}) == 192
    assert run(out, {x: -4}) == 4


def test_cond_inside_cond():
    x = gc.placeholder(gc.float32, [], name="x")
    sign = gc.cond(x > 0, lambda: 1.0, lambda: gc.cond(x < 0, lambda: -1.0, lambda: 0.0))
    assert sign.dtype == gc.float32
    assert [float(run(sign, {x: v})) for v in (2.0, -3.0, 0.0)] == [1.0, -1.0, 0.0]


def test_body_returns_outer_tensor_and_untouched_loop_var():
    c = gc.constant(np.array([5, 6], np.int32))
    i, v, w = gc.while_loop(lambda i, v, w: i < 2, lambda i, v, w: (i + 1, c, w),
                            [0, gc.constant(np.array([0, 0], np.int32)), gc.constant(3.5)])
    got = run([i, v, w])
    assert got[0] == 2 and list(got[1]) == [5, 6] and got[2] == 3.5


# --------------------------------------------------------------------------
# cond: choosing, pass-through, shapes, dtypes
# --------------------------------------------------------------------------
def test_cond_selects_between_captured_tensors():
    p = gc.placeholder(gc.bool, [], name="p")
    a = gc.constant(np.array([1.0, 2.0], np.float32))
    b = gc.constant(np.array([7.0, 8.0], np.float32))
    out = gc.cond(p, lambda: a, lambda: b)
    assert out.shape == (2,) and out.dtype == gc.float32
    np.testing.assert_array_equal(run(out, {p: True}), [1.0, 2.0])
    np.testing.assert_array_equal(run(out, {p: False}), [7.0, 8.0])


def test_cond_relaxes_shapes_that_differ():
    p = gc.placeholder(gc.bool, [], name="p")
    x = gc.placeholder(gc.float32, [None, 3], name="x")
    out = gc.cond(p, lambda: gc.constant(np.zeros((2, 3), np.float32)), lambda: x * 2.0)
    assert out.shape == (None, 3)
    out2 = gc.cond(p, lambda: gc.constant(np.zeros((2, 3), np.float32)),
                   lambda: gc.constant(np.ones((2, 4), np.float32)))
    assert out2.shape == (2, None)
    assert run(out2, {p: False}).shape == (2, 4)
    data = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.testing.assert_array_equal(run(out, {p: False, x: data}), data * 2)


def test_cond_python_scalars_are_weak():
    p = gc.placeholder(gc.bool, [], name="p")
    x = gc.placeholder(gc.float64, [], name="x")
    out = gc.cond(p, lambda: x, lambda: 0.0)
    assert out.dtype == gc.float64 and out.shape == ()
    assert run(out, {p: True, x: 1.5}) == 1.5
    assert run(out, {p: False, x: 1.5}) == 0.0
    both = gc.cond(p, lambda: 3, lambda: 4)
    assert both.dtype == gc.int32 and run(both, {p: False}) == 4


def test_cond_with_numpy_array_results_and_bool_pred_tensor_from_variable():
    flag = gc.Variable(True, name="flag")
    out = gc.cond(flag, lambda: np.array([1, 2], np.int64), lambda: np.array([3, 4], np.int64))
    assert out.dtype == gc.int64
    assert list(run(out)) == [1, 2]


def test_python_bool_pred_calls_only_the_chosen_function():
    called = []
    x = gc.constant(2.0)
    out = gc.cond(True, lambda: called.append("t") or x * 3.0, lambda: called.append("f") or x)
    assert called == ["t"]
    assert not ops_of_type("cond")
    assert run(out) == 6.0
    assert run(gc.cond(np.bool_(False), lambda: 1.0, lambda: 2.0)) == 2.0


def test_only_chosen_branch_runs():
    p = gc.placeholder(gc.bool, [], name="p")
    x = gc.placeholder(gc.int32, [], name="x")
    # the false branch would fail at run time (integer division by zero)
    out = gc.cond(p, lambda: x + 1, lambda: x // 0)
    assert run(out, {p: True, x: 4}) == 5


def test_runtime_error_in_branch_names_the_cond_op():
    p = gc.placeholder(gc.bool, [], name="p")
    x = gc.placeholder(gc.int32, [], name="x")
    out = gc.cond(p, lambda: x + 1, lambda: x // 0, name="divider")
    with pytest.raises(GraphcError, match="divider"):
        run(out, {p: False, x: 4})


def test_pred_with_unknown_rank_must_be_scalar_at_run_time():
    p = gc.placeholder(gc.bool, None, name="p")
    out = gc.cond(p, lambda: 1.0, lambda: 2.0, name="pick")
    assert run(out, {p: True}) == 1.0
    # a run-time failure: with shape specialization it is found when the run
    # compiles for the fed shape, before anything executes
    with pytest.raises(gc.errors.ExecutionError, match="pick.*scalar"):
        run(out, {p: [True, False]})


# --------------------------------------------------------------------------
# Structures
# --------------------------------------------------------------------------
Pair = collections.namedtuple("Pair", ["first", "second"])


def test_cond_structures():
    p = gc.placeholder(gc.bool, [], name="p")
    a, b = gc.constant(1.0), gc.constant(2.0)
    single = gc.cond(p, lambda: a, lambda: b)
    assert isinstance(single, gc.Tensor)
    as_list = gc.cond(p, lambda: [a, b], lambda: [b, a])
    assert isinstance(as_list, list) and len(as_list) == 2
    as_tuple = gc.cond(p, lambda: (a, (b, 5.0)), lambda: (b, (a, 6.0)))
    assert isinstance(as_tuple, tuple) and isinstance(as_tuple[1], tuple)
    as_dict = gc.cond(p, lambda: {"x": a, "y": [b]}, lambda: {"y": [a], "x": b})
    assert set(as_dict) == {"x", "y"} and isinstance(as_dict["y"], list)
    named = gc.cond(p, lambda: Pair(a, b), lambda: Pair(b, a))
    assert isinstance(named, Pair)
    got = run([single, as_list, as_tuple, as_dict, named], {p: False})
    assert got[0] == 2.0
    assert [float(v) for v in got[1]] == [2.0, 1.0]
    assert float(got[2][0]) == 2.0 and float(got[2][1][0]) == 1.0 and float(got[2][1][1]) == 6.0
    assert float(got[3]["x"]) == 2.0 and float(got[3]["y"][0]) == 1.0
    assert float(got[4].first) == 2.0 and float(got[4].second) == 1.0


def test_while_structures():
    one = gc.while_loop(lambda x: x < 10, lambda x: x + 3, gc.constant(1))
    assert isinstance(one, gc.Tensor)
    listed = gc.while_loop(lambda x: x < 10, lambda x: x + 3, [gc.constant(1)])
    assert isinstance(listed, list) and len(listed) == 1
    bare_body = gc.while_loop(lambda x: x < 10, lambda x: [x + 3], gc.constant(1))
    assert isinstance(bare_body, gc.Tensor)
    tup = gc.while_loop(lambda i, s: i < 4, lambda i, s: [i + 1, s * 2], (0, 1))
    assert isinstance(tup, tuple)
    d = gc.while_loop(lambda v: v["i"] < 3, lambda v: {"i": v["i"] + 1, "acc": v["acc"] + [1.0, 2.0]},
                      {"i": 0, "acc": gc.constant(np.zeros(2, np.float32))})
    assert set(d) == {"i", "acc"} and d["acc"].shape == (2,)
    # a namedtuple is a tuple: cond and body get one argument per field (as in TF)
    named = gc.while_loop(lambda a, b: a < 5, lambda a, b: Pair(a + 1, b - 1), Pair(0, 0))
    assert isinstance(named, Pair)
    nested = gc.while_loop(lambda i, pair: i < 3, lambda i, pair: (i + 1, (pair[1], pair[0] + pair[1])),
                           [0, (1, 1)])
    assert isinstance(nested, list) and isinstance(nested[1], tuple)
    got = run([one, listed, bare_body, tup, d, named, nested])
    assert got[0] == 10 and list(got[1]) == [10] and got[2] == 10
    assert tuple(int(v) for v in got[3]) == (4, 16)
    assert int(got[4]["i"]) == 3 and list(got[4]["acc"]) == [3.0, 6.0]
    assert int(got[5].first) == 5 and int(got[5].second) == -5
    assert int(got[6][0]) == 3 and (int(got[6][1][0]), int(got[6][1][1])) == (3, 5)


def test_body_python_scalar_takes_loop_var_dtype():
    x = gc.while_loop(lambda x, flag: flag, lambda x, flag: (x * 2.0, False), [gc.constant(1.5, gc.float64), True])
    assert x[0].dtype == gc.float64
    assert list(map(float, run(x))) == [3.0, 0.0]


# --------------------------------------------------------------------------
# Variables and side effects
# --------------------------------------------------------------------------
def test_cond_assigns_in_branches_only_chosen_side_effect_happens():
    v = gc.Variable(0.0, name="v")
    w = gc.Variable(0.0, name="w")
    p = gc.placeholder(gc.bool, [], name="p")
    out = gc.cond(p, lambda: v.assign_add(1.0), lambda: w.assign_add(10.0))
    with gc.Session(config=gc.Config(backend="interpreter")) as sess:
        sess.run(gc.global_variables_initializer())
        assert sess.run(out, {p: True}) == 1.0
        assert sess.run(out, {p: True}) == 2.0
        assert sess.run(out, {p: False}) == 10.0
        assert sess.run([v, w]) == [2.0, 10.0]


def test_cond_side_effect_that_is_not_returned_still_runs():
    v = gc.Variable(np.zeros(2, np.float32), name="v")
    p = gc.placeholder(gc.bool, [], name="p")

    def true_fn():
        v.assign([5.0, 6.0])
        return gc.constant(1)

    out = gc.cond(p, true_fn, lambda: gc.constant(0))
    with gc.Session(config=gc.Config(backend="interpreter")) as sess:
        sess.run(gc.global_variables_initializer())
        assert sess.run(out, {p: False}) == 0
        np.testing.assert_array_equal(sess.run(v), [0.0, 0.0])
        assert sess.run(out, {p: True}) == 1
        np.testing.assert_array_equal(sess.run(v), [5.0, 6.0])


def test_cond_returning_operations_gives_a_runnable_op():
    v = gc.Variable(1.0, name="v")
    p = gc.placeholder(gc.bool, [], name="p")
    step = gc.cond(p, lambda: gc.group(v.assign(v * 3.0)), lambda: gc.no_op())
    assert isinstance(step, gc.Operation) and step.is_stateful
    with gc.Session(config=gc.Config(backend="interpreter")) as sess:
        sess.run(gc.global_variables_initializer())
        assert sess.run(step, {p: True}) is None
        sess.run(step, {p: False})
        sess.run(step, {p: True})
        assert sess.run(v) == 9.0


def test_cond_whose_branches_return_nothing_is_an_op():
    v = gc.Variable(0, name="v")
    p = gc.placeholder(gc.bool, [], name="p")

    def bump():
        v.assign_add(5)

    step = gc.cond(p, bump, lambda: None)
    assert isinstance(step, gc.Operation)
    with gc.Session(config=gc.Config(backend="interpreter")) as sess:
        sess.run(gc.global_variables_initializer())
        sess.run(step, {p: True})
        sess.run(step, {p: False})
        assert sess.run(v) == 5


def test_variable_reads_in_branch():
    v = gc.Variable(2.0, name="v")
    p = gc.placeholder(gc.bool, [], name="p")

    def true_fn():
        update = v.assign(7.0)
        before = v * 1.0                    # the start-of-run value
        with gc.control_dependencies([update]):
            after = v * 1.0                 # ordered after the update: the new value
        return before, after

    out = gc.cond(p, true_fn, lambda: (v * 1.0, v * 1.0))
    assert [float(a) for a in run(out, {p: True})] == [2.0, 7.0]
    assert [float(a) for a in run(out, {p: False})] == [2.0, 2.0]


def test_while_body_updates_a_variable_each_iteration():
    counter = gc.Variable(0, name="counter")
    total = gc.Variable(0.0, name="total")

    def body(i):
        bump = counter.assign_add(1)
        with gc.control_dependencies([bump]):
            # ordered after the update: reads this iteration's count
            total.assign_add(gc.cast(counter, gc.float32))
        return i + 1

    i = gc.while_loop(lambda i: i < 4, body, [0])
    assert ops_of_type("while_loop")[0].is_stateful
    with gc.Session(config=gc.Config(backend="interpreter")) as sess:
        sess.run(gc.global_variables_initializer())
        assert sess.run(i) == [4]
        assert sess.run([counter, total]) == [4, 10.0]


def test_variable_read_in_loop_cond():
    budget = gc.Variable(3, name="budget")

    def body(i):
        budget.assign_sub(1)
        return i + 1

    def cond(i):
        # A plain read inside a body is the start-of-run value; ordering it
        # after the loop variable makes it read the current one.
        with gc.control_dependencies([gc.identity(i)]):
            return budget > 0

    i = gc.while_loop(cond, body, [0])
    assert run(i) == [3]


def test_back_prop_false_stops_gradients():
    x = gc.constant(1.0)
    y = gc.while_loop(lambda y: y < 5.0, lambda y: y * 2.0, [x], back_prop=False)[0]
    assert y.op.type == "stop_gradient"
    assert run(y) == 8.0


# --------------------------------------------------------------------------
# Bad input: graphc errors naming the op (and the user's line)
# --------------------------------------------------------------------------
def test_non_bool_pred():
    x = gc.constant(1.0)
    with pytest.raises(DTypeError) as info:
        gc.cond(x, lambda: x, lambda: x, name="choose")
    assert "cond op 'choose'" in str(info.value) and HERE in str(info.value)
    with pytest.raises(DTypeError, match="cond op 'cond'"):
        gc.cond(gc.constant(1), lambda: x, lambda: x)


def test_non_scalar_pred():
    p = gc.placeholder(gc.bool, [2], name="p")
    with pytest.raises(ShapeError, match="cond op 'cond'.*scalar"):
        gc.cond(p, lambda: 1.0, lambda: 2.0)


def test_mismatched_branch_dtypes():
    p = gc.placeholder(gc.bool, [], name="p")
    with pytest.raises(DTypeError) as info:
        gc.cond(p, lambda: [gc.constant(1.0), gc.constant(1)], lambda: [gc.constant(2.0), gc.constant(2.0)],
                name="mixed")
    msg = str(info.value)
    assert "cond op 'mixed'" in msg and "output 1" in msg and "int32" in msg and "float32" in msg


def test_mismatched_branch_ranks():
    p = gc.placeholder(gc.bool, [], name="p")
    with pytest.raises(ShapeError, match="cond op 'cond'.*output 0"):
        gc.cond(p, lambda: gc.constant([1.0, 2.0]), lambda: gc.constant(3.0))


@pytest.mark.parametrize("true_out, false_out, where", [
    (lambda a: [a, a], lambda a: [a], "the result"),
    (lambda a: {"x": a}, lambda a: {"y": a}, "the result"),
    (lambda a: (a, [a]), lambda a: (a, a), "result[1]"),
    (lambda a: [a, a], lambda a: (a, a), "the result"),
    (lambda a: a, lambda a: None, "the result"),
    (lambda a: {"k": [a, a]}, lambda a: {"k": [a, [a]]}, "result['k'][1]"),
])
def test_mismatched_branch_structures(true_out, false_out, where):
    p = gc.placeholder(gc.bool, [], name="p")
    a = gc.constant(1.0)
    with pytest.raises(InvalidArgumentError) as info:
        gc.cond(p, lambda: true_out(a), lambda: false_out(a))
    msg = str(info.value)
    assert "cond op 'cond'" in msg and where in msg and HERE in msg


def test_branch_returning_op_against_tensor():
    p = gc.placeholder(gc.bool, [], name="p")
    with pytest.raises(InvalidArgumentError, match="operation"):
        gc.cond(p, lambda: gc.no_op(), lambda: gc.constant(1.0))


def test_body_changes_dtype():
    with pytest.raises(DTypeError) as info:
        gc.while_loop(lambda x: x < 10, lambda x: gc.cast(x, gc.float32) + 1.0, [0], name="loop")
    msg = str(info.value)
    assert "while_loop op 'loop'" in msg and "loop variable 0" in msg and HERE in msg


def test_body_changes_shape():
    x = gc.constant(np.ones((2, 2), np.float32))
    with pytest.raises(ShapeError, match="while_loop op 'while'.*loop variable 1"):
        gc.while_loop(lambda i, x: i < 3, lambda i, x: (i + 1, gc.reduce_sum(x, axis=0)), [0, x])


def test_body_structure_mismatch():
    with pytest.raises(InvalidArgumentError, match="while_loop op 'while'.*structure"):
        gc.while_loop(lambda i, s: i < 3, lambda i, s: i + 1, [0, 1])
    with pytest.raises(InvalidArgumentError, match="while_loop op 'while'.*operation"):
        gc.while_loop(lambda i, s: i < 3, lambda i, s: (i + 1, gc.no_op()), [0, 1])


def test_loop_cond_must_return_a_bool_scalar():
    with pytest.raises(DTypeError, match="while_loop op 'while'.*cond must return a bool"):
        gc.while_loop(lambda i: i + 1, lambda i: i + 1, [0])
    with pytest.raises(ShapeError, match="while_loop op 'while'.*scalar"):
        gc.while_loop(lambda i: gc.constant([True, False]), lambda i: i + 1, [0])
    with pytest.raises(InvalidArgumentError, match="while_loop op 'while'.*one bool"):
        gc.while_loop(lambda i: [i < 1, i < 2], lambda i: i + 1, [0])


def test_empty_loop_vars_and_non_callables():
    with pytest.raises(InvalidArgumentError, match="at least one"):
        gc.while_loop(lambda: True, lambda: [], [])
    with pytest.raises(InvalidArgumentError, match="callable"):
        gc.while_loop(True, lambda i: i, [0])
    with pytest.raises(InvalidArgumentError, match="callable"):
        gc.cond(gc.constant(True), 1.0, lambda: 1.0)


def test_errors_in_user_functions_propagate_unchanged():
    class Boom(Exception):
        pass

    def fail():
        raise Boom("from the branch")

    with pytest.raises(Boom, match="from the branch"):
        gc.cond(gc.placeholder(gc.bool, []), fail, lambda: 1.0)
    with pytest.raises(Boom):
        gc.while_loop(lambda i: i < 2, lambda i: fail(), [0])
    x = gc.constant(1.0)
    with pytest.raises(ShapeError):   # an op error inside the body keeps its own type and text
        gc.while_loop(lambda i: i < 2, lambda i: i + gc.matmul(gc.constant(np.ones((2, 3))), gc.constant(np.ones((2, 3)))) * 0 + i, [x])


def test_tensor_from_a_sibling_branch_cannot_be_used():
    p = gc.placeholder(gc.bool, [], name="p")
    leaked = []

    def true_fn():
        t = gc.constant(1.0) * 2.0
        leaked.append(t)
        return t

    with pytest.raises(GraphcError):
        gc.cond(p, true_fn, lambda: leaked[0] + 1.0)


# --------------------------------------------------------------------------
# Gradients (float64, against central differences)
# --------------------------------------------------------------------------
check = gc.test.check_gradients
R = np.random.default_rng(7)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_cond_gradient_follows_the_branch_that_ran(sign):
    def fn(x, y):
        return gc.cond(gc.reduce_sum(x) > 0, lambda: x * y + gc.sin(y), lambda: gc.exp(x) * 2.0)
    check(fn, [sign * R.uniform(0.5, 1.5, (3,)), R.uniform(-1, 1, (3,))])


def test_cond_gradient_values_and_unused_input():
    x = gc.placeholder(gc.float64, [2], name="x")
    y = gc.placeholder(gc.float64, [2], name="y")
    p = gc.placeholder(gc.bool, [], name="p")
    out = gc.cond(p, lambda: gc.reduce_sum(x * x), lambda: gc.reduce_sum(y) * 3.0)
    gx, gy, gp = gc.gradients(out, [x, y, p])
    assert gp is None
    feed = {x: [1.0, 2.0], y: [5.0, 6.0]}
    rx, ry = run([gx, gy], {**feed, p: True})
    np.testing.assert_allclose(rx, [2.0, 4.0])
    np.testing.assert_allclose(ry, [0.0, 0.0])
    rx, ry = run([gx, gy], {**feed, p: False})
    np.testing.assert_allclose(rx, [0.0, 0.0])
    np.testing.assert_allclose(ry, [3.0, 3.0])


def test_cond_gradient_of_pass_through_and_structures():
    def fn(a, b):
        out = gc.cond(gc.reduce_max(a) > 0.5, lambda: {"s": a, "t": [b * a]}, lambda: {"s": b, "t": [a + 1.0]})
        return out["s"] * 2.0 + out["t"][0]
    for shift in (0.0, 1.0):
        check(fn, [R.uniform(-1, 0.4, (2, 2)) + shift, R.uniform(-1, 1, (2, 2))])


def test_nested_cond_gradient_and_second_derivative():
    def fn(x):
        return gc.cond(x > 0, lambda: gc.cond(x > 1, lambda: x ** 3, lambda: x * x), lambda: gc.sin(x))
    for v in (1.5, 0.5, -0.5):
        check(fn, [np.array(v)])

    def first(x):
        return gc.gradients(fn(x), [x])[0]
    for v in (1.5, 0.5, -0.5):
        check(first, [np.array(v)], rtol=1e-4)


def test_while_gradient_of_power_loop():
    x = gc.placeholder(gc.float64, [], name="x")
    n = gc.placeholder(gc.int32, [], name="n")
    _, p = gc.while_loop(lambda i, p: i < n, lambda i, p: (i + 1, p * x), [0, gc.constant(1.0, gc.float64)])
    g, = gc.gradients(p, [x])
    for k in (0, 1, 4):
        got_p, got_g = run([p, g], {x: 1.5, n: k})
        assert got_p == pytest.approx(1.5 ** k)
        assert got_g == pytest.approx(k * 1.5 ** (k - 1) if k else 0.0)


def test_while_gradient_rnn_with_captured_weights():
    def fn(w, h0, u):
        def body(t, h):
            return t + 1, gc.tanh(gc.matmul(h, w) + u * gc.cast(t, gc.float64))
        return gc.while_loop(lambda t, h: t < 4, body, [0, h0])[1]
    check(fn, [R.normal(0, 0.5, (3, 3)), R.normal(0, 1, (2, 3)), R.normal(0, 0.3, (3,))])


def test_while_gradient_with_maximum_iterations_and_several_float_vars():
    def fn(a, b):
        def body(x, y):
            return x * 0.9 + y * y * 0.1, y + gc.sin(x)
        return gc.reduce_sum(gc.while_loop(lambda x, y: True, body, [a, b], maximum_iterations=3)[0])
    check(fn, [R.uniform(-1, 1, (4,)), R.uniform(-1, 1, (4,))])


def test_while_gradient_with_unknown_dims():
    x = gc.placeholder(gc.float64, [None], name="x")
    y = gc.while_loop(lambda v: gc.reduce_sum(v) < 50.0, lambda v: v * 2.0 + 1.0, [x])[0]
    g, = gc.gradients(gc.reduce_sum(y * y), [x])
    data = np.array([1.0, 2.0, 0.5])
    v, steps = data.copy(), 0
    while v.sum() < 50:
        v, steps = v * 2 + 1, steps + 1
    np.testing.assert_allclose(run(g, {x: data}), 2 * v * 2.0 ** steps)


def test_nested_while_gradient():
    def fn(x, s):
        def outer(i, acc):
            inner = gc.while_loop(lambda j, a: j < i, lambda j, a: (j + 1, a * s + x), [0, acc])[1]
            return i + 1, inner
        return gc.while_loop(lambda i, acc: i < 3, outer, [0, x])[1]
    check(fn, [R.uniform(-1, 1, (2,)), np.array(0.7)])


def test_cond_inside_while_and_while_inside_cond_gradients():
    def fn(x):
        def body(v):
            return gc.cond(gc.reduce_sum(v) > 0, lambda: v * 0.5 - 0.1, lambda: v * v + 0.3)
        return gc.while_loop(lambda v: True, body, [x], maximum_iterations=4)[0]
    check(fn, [np.array([0.7, -0.2])])

    def fn2(x):
        return gc.cond(gc.reduce_sum(x) > 0,
                       lambda: gc.while_loop(lambda v: gc.reduce_max(v) < 5.0, lambda v: v * 1.5, [x])[0],
                       lambda: x * 3.0)
    check(fn2, [np.array([0.7, 0.4])])
    check(fn2, [np.array([-0.7, 0.4])])


def test_while_second_derivative():
    x = gc.placeholder(gc.float64, [], name="x")
    p = gc.while_loop(lambda i, p: i < 3, lambda i, p: (i + 1, p * x + gc.sin(p)), [0, x])[1]
    g, = gc.gradients(p, [x])
    h, = gc.gradients(g, [x])

    eps = 1e-4

    def value(v):
        p = v
        for _ in range(3):
            p = p * v + np.sin(p)
        return p
    got_g, got_h = run([g, h], {x: 0.8})
    num_g = (value(0.8 + eps) - value(0.8 - eps)) / (2 * eps)
    num_h = (value(0.8 + eps) - 2 * value(0.8) + value(0.8 - eps)) / eps ** 2
    assert got_g == pytest.approx(num_g, rel=1e-6)
    assert got_h == pytest.approx(num_h, rel=1e-4)


def test_gradient_with_respect_to_variable_used_in_loop():
    w = gc.Variable(np.array([0.5, -0.3]), name="w")
    y = gc.while_loop(lambda i, y: i < 3, lambda i, y: (i + 1, y * w + 1.0), [0, gc.constant(np.ones(2))])[1]
    g, = gc.gradients(gc.reduce_sum(y), [w])
    wv = np.array([0.5, -0.3])
    # y3 = w^3 + w^2 + w + 1 (y0 = 1)
    np.testing.assert_allclose(run(g), 3 * wv ** 2 + 2 * wv + 1)


def test_gradient_does_not_repeat_side_effects():
    v = gc.Variable(np.float64(0.0), name="v")
    x = gc.placeholder(gc.float64, [], name="x")

    def body(i, p):
        v.assign(p)
        return i + 1, p * x

    p = gc.while_loop(lambda i, p: i < 3, body, [0, gc.constant(1.0, gc.float64)])[1]
    g, = gc.gradients(p, [x])
    with gc.Session(config=gc.Config(backend="interpreter")) as sess:
        sess.run(gc.global_variables_initializer())
        got = sess.run([p, g], {x: 2.0})
        assert [float(a) for a in got] == [8.0, 12.0]
        assert sess.run(v) == 4.0         # the forward loop's last write only


def test_unconnected_and_integer_paths_give_none():
    x = gc.placeholder(gc.float64, [], name="x")
    k = gc.while_loop(lambda k: k < 10, lambda k: k + gc.cast(x, gc.int32) + 1, [0])[0]
    y = gc.cast(k, gc.float64)
    assert gc.gradients(y, [x]) == [None]
    c = gc.cond(x > 0, lambda: gc.stop_gradient(x) * 2.0, lambda: gc.constant(1.0, gc.float64))
    assert gc.gradients(c, [x]) == [None]


def test_gradient_of_shape_changing_loop_is_a_gradient_error():
    x = gc.placeholder(gc.float64, [3], name="x")
    v = gc.while_loop(lambda v: gc.reduce_sum(v) < 100.0, lambda v: gc.reduce_sum(v, keepdims=True) * 2.0,
                      [x], shape_invariants=[(None,)], name="shrink")[0]
    with pytest.raises(gc.errors.GradientError, match="shrink"):
        gc.gradients(gc.reduce_sum(v), [x])


def test_loop_condition_sees_variable_updates_of_previous_iterations():
    budget = gc.Variable(5, name="budget")

    def body(i):
        with gc.control_dependencies([budget.assign_sub(1)]):
            return i + 1

    n = gc.while_loop(lambda i: budget > 0, body, [gc.constant(0)])
    assert int(run(n)[0]) == 5


def test_gradient_flows_to_variable_read_inside_loop_body():
    w = gc.Variable(np.array(0.5), name="w")
    x = gc.placeholder(gc.float64, [], name="x")
    out = gc.while_loop(lambda i, h: i < 3, lambda i, h: (i + 1, gc.tanh(w * h + 1.0)),
                        [gc.constant(0), x])[1]
    g, = gc.gradients(out, [w])

    def f(wv, xv):
        h = xv
        for _ in range(3):
            h = np.tanh(wv * h + 1.0)
        return h
    eps = 1e-6
    numeric = (f(0.5 + eps, 0.3) - f(0.5 - eps, 0.3)) / (2 * eps)
    np.testing.assert_allclose(run(g, {x: 0.3}), numeric, rtol=1e-6)
