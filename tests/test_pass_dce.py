"""Dead-code elimination (graphc/passes/dce.py): ops no fetch, target or
side effect needs vanish; writes and random draws whose values went unused
still happen; control edges keep ops alive."""
import numpy as np

import graphc as gc
from graphc.passes import Program, extract, run_pipeline
from test_passes_random import apply_passes, assert_identical, run_program


def _types(program):
    return [op.type for op in program.ops()]


def test_dead_nodes_vanish():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (3,), name="x")
        y = gc.exp(x, name="used")
        gc.log(x, name="dead")
        gc.reduce_sum(gc.tanh(x), name="dead_too")
    program = Program(g, [y], [], [x])
    after = apply_passes(program, ["dce"])
    assert [op.name for op in after.ops()] == ["x", "used"]
    xv = np.array([0.0, -1.0, 2.0], np.float32)
    assert_identical(run_program(program, [xv]), run_program(after, [xv]))
    assert any("removed 3 ops (log, reduce_sum, tanh)" in n for n in after.analyses["_notes"])


def test_ops_left_dead_by_other_passes_are_removed():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (3,), name="x")
        y = gc.identity(x) * (gc.constant(2.0) * gc.constant(3.0))
    program = extract(g, [y], [], [x], [(3,)])
    folded = apply_passes(program, ["fold", "cse", "simplify"])
    after = apply_passes(folded, ["dce"])
    assert folded.num_ops() == 5 and sorted(_types(after)) == ["const", "multiply", "placeholder"]


def test_a_write_whose_value_went_unused_still_happens():
    """shape_of(v.assign_add(...)) folds to a constant; the assign must run."""
    g = gc.Graph()
    with g.as_default():
        v = gc.Variable(np.zeros(3, np.float32), name="v")
        shape = gc.shape_of(v.assign_add(np.ones(3, np.float32)))
    program = extract(g, [shape], [], [])
    after = apply_passes(program, ["fold", "cse", "simplify", "dce"])
    assert "assign_add" in _types(after) and after.fetches[0].op.type == "const"
    for optimize in (False, True):
        with gc.Session(graph=g, config=gc.Config(backend="interpreter", optimize=optimize)) as sess:
            sess.run(v.initializer)
            np.testing.assert_array_equal(sess.run(shape), [3])
            np.testing.assert_array_equal(sess.run(v), [1, 1, 1])


def test_a_random_draw_whose_value_went_unused_still_advances_the_stream():
    g = gc.Graph()
    with g.as_default():
        r = gc.random_uniform([2])
        n = gc.size(r) + gc.shape_of(r)[0]
    program = extract(g, [n], [], [])
    after = apply_passes(program, ["fold", "cse", "simplify", "dce"])
    assert "random_uniform_unit" in _types(after)
    draws = []
    for optimize in (False, True):
        with gc.Session(graph=g, config=gc.Config(backend="interpreter", optimize=optimize, seed=3)) as sess:
            sess.run(n)
            draws.append(sess.run(r))
    np.testing.assert_array_equal(draws[0], draws[1])


def test_unused_variable_reads_are_dropped():
    g = gc.Graph()
    with g.as_default():
        v = gc.Variable(1.0, name="v")
        x = gc.placeholder(gc.float32, (), name="x")
        y = x * 2.0
        v.value() + 1.0
    program = Program(g, [y], [], [x])
    after = apply_passes(program, ["dce"])
    # the read and its use go; the initializer in the graph is a write and stays
    assert "variable" not in _types(after) and "add" not in _types(after)
    assert "assign" in _types(after)


def test_control_edges_keep_ops_alive():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (), name="x")
        before = gc.exp(x, name="before")
        with gc.control_dependencies([before]):
            done = gc.no_op(name="done")
        y = x + 1.0
    program = extract(g, [y], [done], [x], [()])
    after = apply_passes(program, ["dce"])
    assert after is program
    assert {"before", "done"} <= {op.name for op in after.ops()}


def test_nothing_dead_returns_the_same_program_and_a_quiet_stage():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (3,), name="x")
        y = gc.exp(x) + gc.log(x)
    program = extract(g, [y], [], [x], [(3,)])
    _, stages = run_pipeline(program, disabled=[p for p in ("fold", "cse", "simplify")])
    dce = next(s for s in stages if s.name == "dce")
    assert not dce.changed and dce.notes == []
