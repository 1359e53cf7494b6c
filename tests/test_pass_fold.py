"""Constant folding (graphc/passes/fold.py): constant subgraphs become
constants, shape queries of static shapes fold, big broadcasts stay
broadcasts, and nothing stateful, control-dependent or failing is folded.
Every test also checks the folded program computes bitwise what the
unoptimized one does."""
import numpy as np
import pytest

import graphc as gc
from graphc.errors import ExecutionError
from graphc.passes import extract, run_pipeline
from graphc.passes.fold import MAX_FOLD_ELEMENTS, compact
from test_passes_random import apply_passes, assert_identical, run_program


def _types(program):
    return [op.type for op in program.ops()]


def _fold(g, fetches, feeds=None, passes=("fold", "dce"), specialize=True, targets=()):
    """(unoptimized program, optimized program); results checked equal."""
    feeds = feeds or {}
    tensors = list(feeds)
    values = [np.asarray(feeds[t]) for t in tensors]
    program = extract(g, fetches, list(targets), tensors, [v.shape for v in values] if specialize else None)
    optimized = apply_passes(program, passes)
    assert_identical(run_program(program, values), run_program(optimized, values))
    return program, optimized


def test_constant_subgraph_folds_to_one_constant():
    g = gc.Graph()
    with g.as_default():
        c1 = gc.constant([1.0, -2.0, 3.0])
        c2 = gc.constant(2.0)
        y = gc.exp(c1 * c2) - gc.reduce_sum(c1) / gc.cast(gc.size(c1), gc.float32)
    before, after = _fold(g, [y])
    assert len(before.ops()) > 5
    assert _types(after) == ["const"]
    assert after.fetches[0].op.type == "const"
    np.testing.assert_array_equal(after.fetches[0].op.attrs["value"], run_program(before, [])[0])


def test_large_broadcast_of_a_scalar_constant_is_not_folded():
    g = gc.Graph()
    with g.as_default():
        y = gc.broadcast_to(gc.constant(2.0), [1000, 1000])
    _, after = _fold(g, [y])
    assert _types(after) == ["const", "broadcast_to"]
    assert all(op.attrs["value"].size == 1 for op in after.ops() if op.type == "const")


def test_pointwise_ops_on_a_big_broadcast_fold_to_a_broadcast():
    """zeros(1024, 512) * 2 + 1 is evaluated on the scalar core only."""
    g = gc.Graph()
    with g.as_default():
        y = gc.exp(gc.zeros([1024, 512]) * 2.0 + 1.0)
    _, after = _fold(g, [y])
    assert _types(after) == ["const", "broadcast_to"]
    const = after.ops()[0].attrs["value"]
    assert const.shape == () and const == np.exp(np.float32(1.0))


def test_small_broadcasts_fold_to_their_compact_form():
    g = gc.Graph()
    with g.as_default():
        row = gc.constant(np.arange(3, dtype=np.float32))
        y = gc.broadcast_to(row, [4, 3]) * 2.0
    _, after = _fold(g, [y])
    assert _types(after) == ["const", "broadcast_to"]
    np.testing.assert_array_equal(after.ops()[0].attrs["value"], [0.0, 2.0, 4.0])


def test_uniform_input_constant_becomes_a_broadcast_of_a_scalar():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (64, 64), name="x")
        y = x + gc.constant(np.full((64, 64), 5.0, np.float32))
    _, after = _fold(g, [y], {x: np.ones((64, 64), np.float32)})
    consts = [op for op in after.ops() if op.type == "const"]
    assert [c.attrs["value"].shape for c in consts] == [()]
    assert "broadcast_to" in _types(after)


def test_results_up_to_the_size_limit_fold_and_bigger_ones_do_not():
    rng = np.random.default_rng(0)
    g = gc.Graph()
    with g.as_default():
        small = gc.exp(gc.constant(rng.standard_normal(MAX_FOLD_ELEMENTS).astype(np.float32)))
        big = gc.exp(gc.constant(rng.standard_normal(MAX_FOLD_ELEMENTS + 1).astype(np.float32)))
    _, after = _fold(g, [small])
    assert _types(after) == ["const"]
    _, after = _fold(g, [big])
    assert _types(after) == ["const", "exp"]


def test_shape_queries_of_static_shapes_fold():
    """shape_of, size, reduction_count (from a mean's gradient) and
    zeros_like of a fed (None, 4) placeholder fold once its shape is
    specialized; the dynamic reshape built from them becomes static."""
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (None, 4), name="x")
        r = gc.reshape(x, [gc.shape_of(x)[0] * 2, -1])
        n = gc.cast(gc.size(x), gc.float32)
        m = gc.reduce_mean(x * x)
        (dx,) = gc.gradients(m, [x])
        z = gc.zeros_like(x) + gc.ones_like(x)
        b = gc.broadcast_to(gc.constant(3.0), gc.shape_of(x))
    xv = np.arange(12, dtype=np.float32).reshape(3, 4)
    before, after = _fold(g, [r, n, dx, z, b], {x: xv}, passes=("fold", "cse", "simplify", "dce"))
    assert {"shape_of", "reduction_count", "fill_like", "reshape_dynamic", "broadcast_to_dynamic"} & set(_types(before))
    assert not {"shape_of", "strided_slice", "stack", "reduction_count", "fill_like", "reshape_dynamic",
                "broadcast_to_dynamic", "broadcast_reduced"} & set(_types(after))
    assert after.fetches[1].op.type == "const" and after.fetches[1].op.attrs["value"] == 12


def test_partly_known_shapes_fold_the_known_dims():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (None, 4), name="x")
        s = gc.shape_of(x)
        cols, rows = s[1], s[0]
    _, after = _fold(g, [cols, rows], {x: np.zeros((5, 4), np.float32)}, specialize=False)
    assert after.fetches[0].op.type == "const" and after.fetches[0].op.attrs["value"] == 4
    assert after.fetches[1].op.type == "strided_slice"


def test_stateful_and_random_ops_are_not_folded():
    g = gc.Graph()
    with g.as_default():
        v = gc.Variable(2.0, name="v")
        y = v * gc.constant(3.0)
        r = gc.random_uniform([3], seed=1) + 1.0
    program = extract(g, [y, r], [], [])
    after = apply_passes(program, ["fold", "dce"])
    assert {"variable", "multiply", "random_uniform_unit", "add"} <= set(_types(after))


def test_an_op_that_fails_is_left_for_the_run_to_report():
    g = gc.Graph()
    with g.as_default():
        q = gc.floordiv(gc.constant(7), gc.constant(0), name="bad_div")
        y = q * 2
    after = apply_passes(extract(g, [y], [], []), ["fold"])
    assert "floordiv" in _types(after)
    for optimize in (False, True):
        with gc.Session(graph=g, config=gc.Config(backend="interpreter", optimize=optimize)) as sess:
            with pytest.raises(ExecutionError, match="bad_div"):
                sess.run(q)


def test_ops_with_control_inputs_are_not_folded():
    g = gc.Graph()
    with g.as_default():
        v = gc.Variable(1.0, name="v")
        step = v.assign_add(1.0)
        with gc.control_dependencies([step]):
            c = gc.add(gc.constant(1.0), gc.constant(2.0), name="ordered")
    program = extract(g, [c], [], [])
    after = apply_passes(program, ["fold"])
    assert "ordered" in [op.name for op in after.ops() if op.type == "add"]


def test_multi_output_ops_fold():
    g = gc.Graph()
    with g.as_default():
        a, b = gc.split(gc.constant(np.arange(6.0)), 2)
        y = a * b
    _, after = _fold(g, [y, a])
    assert _types(after) == ["const", "const"]


def test_nothing_to_fold_returns_the_same_program():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (3,), name="x")
        y = gc.exp(x) * 2.0
    program = extract(g, [y], [], [x], [(3,)])
    assert apply_passes(program, ["fold"]) is program


def test_folded_fetch_comes_back_as_a_writable_copy():
    g = gc.Graph()
    with g.as_default():
        y = gc.constant([1.0, 2.0]) * 3.0
    with gc.Session(graph=g, config=gc.Config(backend="interpreter")) as sess:
        first = sess.run(y)
        first[:] = 0
        np.testing.assert_array_equal(sess.run(y), [3.0, 6.0])


def test_folding_keeps_dtypes_and_integer_semantics():
    g = gc.Graph()
    with g.as_default():
        i = gc.constant(np.array([2**31 - 1, -5], np.int32)) + gc.constant(np.int32(1))
        f = gc.cast(gc.constant([0.5, -1.5, 2.5], gc.float64), gc.int64)
        m = gc.mod(gc.constant(-7), gc.constant(3))
    _, after = _fold(g, [i, f, m])
    assert _types(after) == ["const"] * 3
    assert [t.dtype for t in after.fetches] == [np.int32, np.int64, np.int32]


def test_stage_record_notes_what_was_folded():
    g = gc.Graph()
    with g.as_default():
        y = gc.constant(2.0) * gc.constant(3.0)
    _, stages = run_pipeline(extract(g, [y], [], []))
    fold = next(s for s in stages if s.name == "fold")
    assert fold.changed and any("folded 1 op (multiply)" in n for n in fold.notes)


def test_compact_finds_the_repeating_core():
    a = np.broadcast_to(np.array([[1.0], [2.0]]), (3, 2, 4))
    assert compact(np.ascontiguousarray(a)).shape == (2, 1)
    assert compact(np.full((5, 5), -0.0)).shape == ()
    signs = np.zeros((2, 2))
    signs[1, 1] = -0.0
    assert compact(signs).shape == (2, 2)   # 0.0 and -0.0 differ bitwise


def test_zeros_like_of_a_big_static_tensor_becomes_a_broadcast_of_a_scalar():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (None, 1000), name="x")
        z = gc.ones_like(x) * 2.0
    xv = np.zeros((300, 1000), np.float32)
    _, after = _fold(g, [z], {x: xv})
    assert _types(after) == ["placeholder", "const", "broadcast_to"]
    assert after.ops()[1].attrs["value"] == 2.0


def test_ops_used_as_control_inputs_or_targets_are_not_folded():
    g = gc.Graph()
    with g.as_default():
        marker = gc.add(gc.constant(1.0), gc.constant(2.0), name="marker")
        with gc.control_dependencies([marker]):
            y = gc.multiply(gc.constant(3.0), gc.constant(4.0), name="y")
    program = extract(g, [y], [], [])
    after = apply_passes(program, ["fold", "dce"])
    assert "marker" in [op.name for op in after.ops()]
    assert "y" in [op.name for op in after.ops() if op.type == "multiply"]   # y has a control input
