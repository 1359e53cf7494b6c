"""Algebraic simplification (graphc/passes/simplify.py): each rewrite fires
(one test each, checked on the op types left), the inexact ones are left
alone, and every result is bitwise the unoptimized one (inputs include
-0.0, inf and NaN). Gradient graphs of a small MLP get measurably smaller."""
import numpy as np

import graphc as gc
from graphc.ops.core import apply_op
from graphc.passes import extract, run_pipeline
from test_passes_random import apply_passes, assert_identical, run_program

SPECIAL = np.array([[0.0, -0.0, 1.5], [np.inf, -np.inf, np.nan]], np.float32)


def _types(program):
    return [op.type for op in program.ops()]


def _simplify(g, fetches, feeds=None, specialize=True, passes=("simplify", "dce"), targets=()):
    feeds = feeds or {}
    tensors = list(feeds)
    values = [np.asarray(feeds[t]) for t in tensors]
    program = extract(g, fetches, list(targets), tensors, [v.shape for v in values] if specialize else None)
    optimized = apply_passes(program, passes)
    with np.errstate(all="ignore"):
        assert_identical(run_program(program, values), run_program(optimized, values))
    for old, new in zip(program.fetches, optimized.fetches):
        assert new.dtype == old.dtype and new.shape == old.shape
    return program, optimized


def _graph_with_x(dtype=gc.float32, shape=(2, 3)):
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(dtype, shape, name="x")
    return g, x


# ---- arithmetic identities ----------------------------------------------------------------
def test_multiply_by_one_on_either_side():
    g, x = _graph_with_x()
    with g.as_default():
        a = x * gc.constant(np.float32(1))
        b = gc.constant(np.ones((1, 3), np.float32)) * x
    _, after = _simplify(g, [a, b], {x: SPECIAL})
    assert _types(after) == ["placeholder"]


def test_multiply_by_broadcast_ones_keeps_the_broadcast_shape():
    g, x = _graph_with_x(shape=(3,))
    with g.as_default():
        y = x * gc.ones([2, 3])
    _, after = _simplify(g, [y], {x: SPECIAL[1]})
    assert _types(after) == ["placeholder", "broadcast_to"]


def test_divide_by_one():
    g, x = _graph_with_x()
    with g.as_default():
        y = x / gc.constant(np.float32(1))
    _, after = _simplify(g, [y], {x: SPECIAL})
    assert _types(after) == ["placeholder"]


def test_adding_negative_zero_is_removed_but_positive_zero_is_not():
    """-0.0 + 0.0 is +0.0, so x + 0.0 is not x for floats."""
    g, x = _graph_with_x()
    with g.as_default():
        kept = x + gc.constant(np.float32(0.0))
        gone = gc.constant(np.float32(-0.0)) + x
    before, after = _simplify(g, [kept, gone], {x: SPECIAL})
    assert _types(after) == ["placeholder", "const", "add"]
    assert np.signbit(run_program(before, [SPECIAL])[0][0, 1]) == 0      # -0.0 + 0.0


def test_integer_add_and_subtract_of_zero():
    g, x = _graph_with_x(gc.int32)
    with g.as_default():
        a = x + 0
        b = 0 + x
        c = x - 0
    _, after = _simplify(g, [a, b, c], {x: np.arange(6, dtype=np.int32).reshape(2, 3)})
    assert _types(after) == ["placeholder"]


def test_subtracting_positive_zero_is_removed_but_negative_zero_is_not():
    g, x = _graph_with_x()
    with g.as_default():
        gone = x - gc.constant(np.float32(0.0))
        kept = x - gc.constant(np.float32(-0.0))
    _, after = _simplify(g, [gone, kept], {x: SPECIAL})
    assert _types(after) == ["placeholder", "const", "subtract"]


def test_integer_times_zero_and_x_minus_x_are_zeros_but_not_for_floats():
    g, x = _graph_with_x(gc.int64)
    with g.as_default():
        a = x * 0
        b = x - x
    _, after = _simplify(g, [a, b], {x: np.arange(6).reshape(2, 3)})
    assert "multiply" not in _types(after) and "subtract" not in _types(after)
    g, x = _graph_with_x()
    with g.as_default():
        c = x * 0.0
        d = x - x
    _, after = _simplify(g, [c, d], {x: SPECIAL})
    assert {"multiply", "subtract"} <= set(_types(after))      # inf * 0 and inf - inf are NaN


def test_double_negation():
    g, x = _graph_with_x()
    with g.as_default():
        y = -(-x)
    _, after = _simplify(g, [y], {x: SPECIAL})
    assert _types(after) == ["placeholder"]


def test_adding_a_negation_becomes_a_subtraction_and_back():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (2, 3), name="x")
        y = gc.placeholder(gc.float32, (3,), name="y")
        a = x + (-y)
        b = (-x) + y
        c = x - (-y)
    feeds = {x: SPECIAL, y: np.array([-0.0, 0.0, np.inf], np.float32)}
    _, after = _simplify(g, [a, b, c], feeds)
    assert sorted(_types(after)) == ["add", "placeholder", "placeholder", "subtract", "subtract"]


def test_log_of_exp_is_left_alone():
    """log(exp(x)) is not x where exp overflows (x = 100 in float32 gives inf)."""
    g, x = _graph_with_x(shape=(2,))
    with g.as_default():
        y = gc.log(gc.exp(x))
    before, after = _simplify(g, [y], {x: np.array([100.0, -200.0], np.float32)})
    assert _types(after) == ["placeholder", "exp", "log"]
    np.testing.assert_array_equal(run_program(before, [np.array([100.0, -200.0], np.float32)])[0], [np.inf, -np.inf])


# ---- casts ------------------------------------------------------------------------------------
def test_cast_to_the_same_dtype():
    g, x = _graph_with_x()
    with g.as_default():
        y = apply_op("cast", [x], {"dtype": np.dtype(np.float32)})
    _, after = _simplify(g, [y], {x: SPECIAL})
    assert _types(after) == ["placeholder"]


def test_lossless_cast_round_trips_go_but_lossy_ones_stay():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (2, 3), name="x")
        i = gc.placeholder(gc.int32, (3,), name="i")
        d = gc.placeholder(gc.float64, (3,), name="d")
        a = gc.cast(gc.cast(x, gc.float64), gc.float32)
        b = gc.cast(gc.cast(i, gc.float64), gc.int32)
        lossy = gc.cast(gc.cast(d, gc.float32), gc.float64)
    feeds = {x: SPECIAL, i: np.array([2**31 - 1, -2**31, 3], np.int32), d: np.array([0.1, 1e300, -0.0])}
    _, after = _simplify(g, [a, b, lossy], feeds)
    assert _types(after).count("cast") == 2


# ---- layout ---------------------------------------------------------------------------------------------
def test_identity_permutation_transpose_is_removed():
    g, x = _graph_with_x()
    with g.as_default():
        y = gc.transpose(x, [0, 1])
    _, after = _simplify(g, [y], {x: SPECIAL})
    assert _types(after) == ["placeholder"]


def test_double_transpose_composes_permutations():
    g, x = _graph_with_x(shape=(2, 3, 4))
    with g.as_default():
        back = gc.transpose(gc.transpose(x, [2, 0, 1]), [1, 2, 0])
        other = gc.transpose(gc.transpose(x, [1, 0, 2]), [0, 2, 1])
    xv = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    _, after = _simplify(g, [back, other], {x: xv})
    assert _types(after) == ["placeholder", "transpose"]
    assert after.fetches[1].op.attrs["perm"] == (1, 2, 0)


def test_reshape_to_the_same_shape():
    g, x = _graph_with_x()
    with g.as_default():
        y = gc.reshape(x, [2, -1])
    _, after = _simplify(g, [y], {x: SPECIAL})
    assert _types(after) == ["placeholder"]


def test_reshape_of_a_reshape_is_one_reshape():
    g, x = _graph_with_x(shape=(2, 3, 4))
    with g.as_default():
        y = gc.reshape(gc.squeeze(gc.expand_dims(gc.reshape(x, [6, 4]), 0), 0), [4, 6])
        z = gc.squeeze(gc.expand_dims(x, 1), 1)
    xv = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    _, after = _simplify(g, [y, z], {x: xv})
    assert _types(after) == ["placeholder", "reshape"]
    assert after.fetches[1] is after.ops()[0].outputs[0]


def test_dynamic_shapes_given_as_constants_become_static():
    g, x = _graph_with_x()
    with g.as_default():
        r = apply_op("reshape_dynamic", [x, gc.constant([3, -1])])
        b = apply_op("broadcast_to_dynamic", [x, gc.constant([4, 2, 3])])
        like = gc.placeholder(gc.float32, (6,), name="like")
        rl = apply_op("reshape_like", [x, like])
    _, after = _simplify(g, [r, b, rl], {x: SPECIAL, like: np.zeros(6, np.float32)})
    assert sorted(_types(after)) == ["broadcast_to", "placeholder", "placeholder", "reshape", "reshape"]


def test_shape_queries_feeding_dynamic_reshapes_vanish_after_fold_and_simplify():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (None, 6), name="x")
        y = gc.reshape(x, [gc.shape_of(x)[0], 2, 3])
        z = gc.broadcast_to(gc.constant(1.0), gc.shape_of(y)) * y
    _, after = _simplify(g, [y, z], {x: np.ones((4, 6), np.float32)}, passes=("fold", "cse", "simplify", "dce"))
    assert _types(after) == ["placeholder", "reshape"]


def test_identity_stop_gradient_and_placeholder_with_default_are_removed():
    g, x = _graph_with_x()
    with g.as_default():
        y = gc.identity(gc.stop_gradient(gc.placeholder_with_default(x, (2, 3))))
    _, after = _simplify(g, [y, gc.identity(x)], {x: SPECIAL})
    assert _types(after) == ["placeholder"]
    assert after.fetches[0] is after.fetches[1] is after.feeds[0]


def test_a_declared_shape_more_specific_than_the_input_is_kept():
    g, x = _graph_with_x(shape=(None, 3))
    with g.as_default():
        y = gc.placeholder_with_default(x, (2, 3))
    _, after = _simplify(g, [y], {x: SPECIAL}, specialize=False)
    assert after.fetches[0].shape == (2, 3)
    assert _types(after) == ["placeholder", "reshape"]


def test_fetched_identity_output_stays_available_in_a_session():
    g, x = _graph_with_x()
    with g.as_default():
        y = gc.identity(x, name="out")
    with gc.Session(graph=g, config=gc.Config(backend="interpreter")) as sess:
        value = sess.run(y, {x: SPECIAL})
        value[0, 0] = 42      # an owned copy, not the fed array
    assert SPECIAL[0, 0] == 0.0


def test_broadcast_of_a_scalar_constant_becomes_a_scalar_operand():
    g, x = _graph_with_x()
    with g.as_default():
        y = x * gc.broadcast_to(gc.constant(2.0), [2, 3])
        z = gc.where(gc.broadcast_to(gc.constant(True), [2, 3]), x, gc.broadcast_to(gc.constant(0.0), [2, 3]))
    _, after = _simplify(g, [y, z], {x: SPECIAL})
    assert "broadcast_to" not in _types(after)
    assert [t.shape for t in after.fetches[0].op.inputs] == [(2, 3), ()]


def test_broadcast_to_the_same_shape_and_broadcast_of_a_broadcast():
    g, x = _graph_with_x(shape=(3,))
    with g.as_default():
        same = gc.broadcast_to(gc.reshape(x, [1, 3]), [1, 3])
        twice = gc.broadcast_to(gc.broadcast_to(x, [2, 3]), [4, 2, 3])
    _, after = _simplify(g, [same, twice], {x: SPECIAL[1]})
    assert sorted(_types(after)) == ["broadcast_to", "placeholder", "reshape"]
    assert after.fetches[1].op.inputs[0] is after.feeds[0]


def test_size_one_reductions_become_reshapes_where_exact():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (2, 1, 3), name="x")
        i = gc.placeholder(gc.int32, (2, 1), name="i")
        fetches = [gc.reduce_max(x, axis=1), gc.reduce_min(x, axis=1, keepdims=True), gc.reduce_prod(x, axis=1),
                   gc.reduce_sum(i, axis=1), gc.reduce_sum(x, axis=1), gc.reduce_mean(x, axis=1)]
    feeds = {x: SPECIAL.reshape(2, 1, 3), i: np.array([[3], [-4]], np.int32)}
    _, after = _simplify(g, fetches, feeds)
    assert not [op.type for op in after.ops() if op.type.startswith("reduce")]
    # a float sum or mean of one element is that element + 0.0 (-0.0 becomes 0.0)
    assert [after.fetches[k].op.type for k in (4, 5)] == ["add", "add"]


def test_tile_by_ones_pad_by_zeros_and_concat_of_one_tensor():
    g, x = _graph_with_x()
    with g.as_default():
        fetches = [gc.tile(x, [1, 1]), gc.pad(x, [[0, 0], [0, 0]]), gc.concat([x], axis=1)]
    _, after = _simplify(g, fetches, {x: SPECIAL})
    assert _types(after) == ["placeholder"]


# ---- adjoint helpers ----------------------------------------------------------------------------------
def test_adjoint_helpers_of_matching_shapes_are_their_input():
    g, x = _graph_with_x()
    with g.as_default():
        like = gc.placeholder(gc.float32, (2, 3), name="like")
        a = apply_op("sum_to_shape_of", [x, like])
        b = apply_op("broadcast_like", [x, like])
        c = apply_op("broadcast_reduced", [x, like], {"axis": (), "keepdims": False})
    _, after = _simplify(g, [a, b, c], {x: SPECIAL, like: np.zeros((2, 3), np.float32)})
    assert _types(after) == ["placeholder", "placeholder"]


def test_adjoint_helpers_of_static_shapes_become_plain_ops():
    g = gc.Graph()
    with g.as_default():
        g23 = gc.placeholder(gc.float32, (2, 3), name="g23")
        g2 = gc.placeholder(gc.float32, (2,), name="g2")
        like13 = gc.placeholder(gc.float32, (1, 3), name="like13")
        like23 = gc.placeholder(gc.float32, (2, 3), name="like23")
        s = apply_op("sum_to_shape_of", [g23, like13])
        b = apply_op("broadcast_like", [gc.reshape(g23[0], [1, 3]), like23])
        r = apply_op("broadcast_reduced", [g2, like23], {"axis": (1,), "keepdims": False})
    feeds = {g23: SPECIAL, g2: np.array([-0.0, np.nan], np.float32), like13: np.zeros((1, 3), np.float32),
             like23: np.zeros((2, 3), np.float32)}
    before, after = _simplify(g, [s, b, r], feeds)
    assert not {"sum_to_shape_of", "broadcast_like", "broadcast_reduced"} & set(_types(after))
    assert {"reduce_sum", "broadcast_to", "reshape"} <= set(_types(after))


# ---- where ---------------------------------------------------------------------------------------------
def test_where_chains_on_one_condition_collapse():
    g, x = _graph_with_x()
    with g.as_default():
        c = x > 0
        y = gc.where(c, gc.where(c, x, 0.0), 0.0)
        z = gc.where(c, 1.0, gc.where(c, x, 2.0))
    _, after = _simplify(g, [y, z], {x: SPECIAL})
    assert _types(after).count("where") == 2
    assert all(t.op.type != "where" for op in after.ops() if op.type == "where" for t in op.inputs)


def test_where_with_equal_branches_or_a_constant_condition():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (2, 3), name="x")
        c = gc.placeholder(gc.bool, (2, 3), name="c")
        same = gc.where(c, x, x)
        yes = gc.where(gc.constant(True), x, -x)
        no = gc.where(gc.constant(np.zeros((2, 3), bool)), x, x * 2.0)
    feeds = {x: SPECIAL, c: SPECIAL > 0}
    _, after = _simplify(g, [same, yes, no], feeds)
    assert "where" not in _types(after)


# ---- guards ------------------------------------------------------------------------------------------------
def test_ops_with_control_inputs_or_used_as_control_inputs_are_not_rewritten():
    g = gc.Graph()
    with g.as_default():
        v = gc.Variable(0.0, name="v")
        x = gc.placeholder(gc.float32, (), name="x")
        step = v.assign_add(1.0)
        with gc.control_dependencies([step]):
            ordered = gc.identity(x, name="ordered")
        marker = gc.identity(x, name="marker")
        with gc.control_dependencies([marker]):
            after_marker = gc.identity(x * 1.0, name="after_marker")
    program = extract(g, [ordered, after_marker], [], [x], [()])
    after = apply_passes(program, ["simplify", "dce"])
    names = {op.name for op in after.ops()}
    assert {"ordered", "marker"} <= names and "v_assign_add" in names


def test_chains_collapse_to_a_fixed_point():
    g, x = _graph_with_x()
    with g.as_default():
        y = x
        for _ in range(6):
            y = gc.identity(-(-(gc.transpose(gc.transpose(y)) * 1.0)))
    _, after = _simplify(g, [y], {x: SPECIAL})
    assert _types(after) == ["placeholder"]


def test_nothing_to_simplify_returns_the_same_program():
    g, x = _graph_with_x()
    with g.as_default():
        y = gc.exp(x) * 2.0
    program = extract(g, [y], [], [x], [(2, 3)])
    assert apply_passes(program, ["simplify"]) is program


def test_stage_notes_name_the_rewrites():
    g, x = _graph_with_x()
    with g.as_default():
        y = -(-x) * 1.0
    _, stages = run_pipeline(extract(g, [y], [], [x], [(2, 3)]))
    stage = next(s for s in stages if s.name == "simplify")
    assert stage.changed and any("-(-x) -> x" in n and "x * 1 -> x" in n for n in stage.notes)


# ---- gradient graphs --------------------------------------------------------------------------------------
def test_gradient_seed_ones_are_multiplied_away():
    """d(sum of y)/dx for a vector y seeds with broadcast ones; none of the
    seed survives (no broadcast_like, no multiply by it)."""
    g, x = _graph_with_x(shape=(4,))
    with g.as_default():
        y = gc.exp(x)
        (dx,) = gc.gradients(y, [x])
    xv = np.array([0.0, -0.0, 1.0, 2.0], np.float32)
    before, after = _simplify(g, [dx], {x: xv}, passes=("fold", "cse", "simplify", "dce"))
    assert "broadcast_like" in _types(before)
    assert _types(after) == ["placeholder", "exp"]


def _mlp_training_graph():
    rng = np.random.default_rng(0)
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (None, 4), name="x")
        labels = gc.placeholder(gc.float32, (None, 3), name="labels")
        w1 = gc.Variable(rng.standard_normal((4, 8)).astype(np.float32), name="w1")
        b1 = gc.Variable(np.zeros(8, np.float32), name="b1")
        w2 = gc.Variable(rng.standard_normal((8, 3)).astype(np.float32), name="w2")
        b2 = gc.Variable(np.zeros(3, np.float32), name="b2")
        h = gc.nn.relu(gc.matmul(x, w1) + b1)
        out = gc.matmul(h, w2) + b2
        loss = gc.reduce_mean(gc.square(out - labels))
        params = [w1, b1, w2, b2]
        grads = gc.gradients(loss, params)
        train = gc.group(*[p.assign_sub(0.1 * dp) for p, dp in zip(params, grads)])
    feeds = {x: rng.standard_normal((5, 4)).astype(np.float32),
             labels: rng.standard_normal((5, 3)).astype(np.float32)}
    return g, loss, train, params, feeds


def test_mlp_gradient_graph_gets_smaller_and_trains_the_same():
    """Forward + gc.gradients + SGD assign_sub of a 4-8-3 relu MLP, batch 5:
    49 ops after extract; fold 49 -> 50 (the mean's count and scale fold,
    its broadcast_reduced becomes a scalar broadcast), cse -> 44 (equal
    constants), simplify -> 39 (all 7 sum_to_shape_of of matching shapes
    go, the scalar broadcast joins its multiply), dce -> 36: 13 ops fewer,
    no adjoint helper op left."""
    g, loss, train, params, feeds = _mlp_training_graph()
    tensors = list(feeds)
    values = [feeds[t] for t in tensors]
    program = extract(g, [loss], [train], tensors, [v.shape for v in values])
    counts = [program.num_ops()]
    optimized = program
    for name in ("fold", "cse", "simplify", "dce"):
        optimized = apply_passes(optimized, [name])
        counts.append(optimized.num_ops())
    assert counts == [49, 50, 44, 39, 36]
    assert not {"sum_to_shape_of", "broadcast_reduced", "reduction_count", "broadcast_like"} & set(_types(optimized))
    from graphc.backends.interpreter import InterpreterBackend, VariableStore
    results = []
    for prog in (program, optimized):
        store = VariableStore()
        store.values.update({p.name.split(":")[0]: np.array(p.initial_value.op.attrs["value"]) for p in params})
        executable = InterpreterBackend().compile(prog)
        losses = [executable.run(values, store, np.random.default_rng(0))[0] for _ in range(3)]
        results.append((losses, dict(store.values)))
    assert_identical(results[0][0], results[1][0])
    for name in results[0][1]:
        assert_identical([results[0][1][name]], [results[1][1][name]])
