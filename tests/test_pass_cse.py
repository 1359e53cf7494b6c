"""Common-subexpression elimination (graphc/passes/cse.py): duplicates
merge; different attributes, constants that differ in a bit, control
inputs, stateful and random ops keep ops apart. Results are checked
bitwise against the unoptimized run."""
import numpy as np

import graphc as gc
from graphc.graph import FuncGraph
from graphc.passes import extract
from graphc.passes.cse import attr_key, attrs_key
from test_passes_random import apply_passes, assert_identical, run_program


def _count(program, op_type):
    return sum(op.type == op_type for op in program.ops())


def _cse(g, fetches, feeds=None, targets=()):
    feeds = feeds or {}
    tensors = list(feeds)
    values = [np.asarray(feeds[t]) for t in tensors]
    program = extract(g, fetches, list(targets), tensors, [v.shape for v in values])
    optimized = apply_passes(program, ["cse", "dce"])
    assert_identical(run_program(program, values), run_program(optimized, values))
    return program, optimized


def test_duplicated_subexpressions_merge():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (2, 3), name="x")
        a = gc.exp(x) + 1.0
        b = gc.exp(x) + 1.0
        y = a * b
    before, after = _cse(g, [y], {x: np.ones((2, 3), np.float32)})
    assert (_count(before, "exp"), _count(before, "add"), _count(before, "const")) == (2, 2, 2)
    assert (_count(after, "exp"), _count(after, "add"), _count(after, "const")) == (1, 1, 1)
    mul = after.fetches[0].op
    assert mul.inputs[0] is mul.inputs[1]


def test_commutative_operands_merge_in_either_order_but_subtraction_does_not():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float64, (3,), name="x")
        y = gc.placeholder(gc.float64, (3,), name="y")
        fetches = [x * y, y * x, x + y, y + x, x - y, y - x, gc.maximum(x, y), gc.maximum(y, x)]
    feeds = {x: np.array([0.0, -0.0, 1.0]), y: np.array([-0.0, 0.0, 2.0])}
    _, after = _cse(g, fetches, feeds)
    assert (_count(after, "multiply"), _count(after, "add"), _count(after, "subtract")) == (1, 1, 2)
    assert _count(after, "maximum") == 2      # not commutative bit for bit on 0.0 / -0.0


def test_constants_compare_by_dtype_shape_and_bytes():
    g = gc.Graph()
    with g.as_default():
        fetches = [gc.constant(0.0), gc.constant(-0.0), gc.constant(0.0),
                   gc.constant(np.array([1, 2], np.int32)), gc.constant(np.array([1, 2], np.int64)),
                   gc.constant(np.array([[1, 2]], np.int32)), gc.constant(np.array([1, 2], np.int32)),
                   gc.constant(np.array([np.nan]), dtype=gc.float64), gc.constant(np.array([np.nan]), dtype=gc.float64)]
    _, after = _cse(g, fetches)
    assert _count(after, "const") == 6
    assert after.fetches[0] is after.fetches[2] and after.fetches[0] is not after.fetches[1]
    assert after.fetches[3] is after.fetches[6] and after.fetches[7] is after.fetches[8]


def test_attributes_must_be_equal():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (2, 3), name="x")
        fetches = [gc.reduce_sum(x, axis=1), gc.reduce_sum(x, axis=-1), gc.reduce_sum(x, axis=0),
                   gc.reduce_sum(x, axis=1, keepdims=True), gc.cast(x, gc.float64), gc.cast(x, gc.int32),
                   gc.cast(x, gc.float64), x[:, 1:], x[:, 1:], x[:, :1], gc.transpose(x), gc.transpose(x, [1, 0])]
    _, after = _cse(g, fetches, {x: np.arange(6, dtype=np.float32).reshape(2, 3)})
    assert _count(after, "reduce_sum") == 3
    assert _count(after, "cast") == 2
    assert _count(after, "strided_slice") == 2
    assert _count(after, "transpose") == 1


def test_random_ops_never_merge():
    g = gc.Graph()
    with g.as_default():
        shape = gc.constant([3], dtype=gc.int32)
        attrs = {"dtype": np.dtype(np.float32), "seed": 7, "key": "same"}
        a = g.create_op("random_uniform_unit", [shape], dict(attrs)).outputs[0]
        b = g.create_op("random_uniform_unit", [shape], dict(attrs)).outputs[0]
        y = a - b
    program = extract(g, [y], [], [])
    after = apply_passes(program, ["cse"])
    assert _count(after, "random_uniform_unit") == 2


def test_two_assigns_never_merge():
    g = gc.Graph()
    with g.as_default():
        v = gc.Variable(0.0, name="v")
        step = gc.group(v.assign_add(1.0), v.assign_add(1.0))
    program = extract(g, [], [step], [])
    after = apply_passes(program, ["cse"])
    assert _count(after, "assign_add") == 2
    for optimize in (False, True):
        with gc.Session(graph=g, config=gc.Config(backend="interpreter", optimize=optimize)) as sess:
            sess.run(v.initializer)
            sess.run(step)
            assert sess.run(v) == 2.0


def test_variable_reads_never_merge():
    g = gc.Graph()
    with g.as_default():
        v = gc.Variable(1.0, name="v")
        x = gc.placeholder(gc.float32, (), name="x")
        r1 = g.create_op("read_variable", [v.value()], dict(v._attrs, ordered=True)).outputs[0]
        r2 = g.create_op("read_variable", [v.value()], dict(v._attrs, ordered=True)).outputs[0]
        y = r1 + r2 + x
    program = extract(g, [y], [], [x], [()])
    assert _count(apply_passes(program, ["cse"]), "read_variable") == 2


def test_control_inputs_are_part_of_the_comparison():
    g = gc.Graph()
    with g.as_default():
        v = gc.Variable(1.0, name="v")
        x = gc.placeholder(gc.float32, (), name="x")
        step = v.assign_add(1.0)
        plain = gc.exp(x)
        with gc.control_dependencies([step]):
            ordered = gc.exp(x)
            ordered_too = gc.exp(x)
    program = extract(g, [plain, ordered, ordered_too], [], [x], [()])
    after = apply_passes(program, ["cse"])
    assert _count(after, "exp") == 2
    assert after.fetches[1] is after.fetches[2] and after.fetches[0] is not after.fetches[1]


def test_no_duplicates_returns_the_same_program():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (3,), name="x")
        y = gc.exp(x) + gc.log(x)
    program = extract(g, [y], [], [x], [(3,)])
    assert apply_passes(program, ["cse"]) is program


def test_conds_with_their_own_branches_stay_apart():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (), name="x")
        a = gc.cond(x > 0, lambda: x * 2.0, lambda: x * 3.0)
        b = gc.cond(x > 0, lambda: x * 2.0, lambda: x * 3.0)
        y = a + b
    before, after = _cse(g, [y], {x: np.float32(1.5)})
    assert _count(before, "greater") == 2 and _count(after, "greater") == 1
    assert _count(after, "cond") == 2      # different subgraph objects


def test_attr_keys_tell_values_apart_exactly():
    assert attr_key(True) != attr_key(1) and attr_key(1) != attr_key(1.0)
    assert attr_key(0.0) != attr_key(-0.0) and attr_key(float("nan")) == attr_key(float("nan"))
    assert attr_key(np.dtype(np.float32)) != attr_key(np.dtype(np.float64))
    assert attr_key((1, 2)) != attr_key([1, 2]) and attr_key((1, (2, None))) == attr_key((1, (2, None)))
    assert attr_key(np.array([1, 2], np.int32)) != attr_key(np.array([1, 2], np.int64))
    assert attr_key(np.float32(1)) != attr_key(np.float64(1))
    f1, f2 = FuncGraph("a", gc.Graph()), FuncGraph("a", gc.Graph())
    assert attr_key(f1) == attr_key(f1) and attr_key(f1) != attr_key(f2)
    fn = lambda: None  # noqa: E731
    assert attr_key(fn) == attr_key(fn) and attr_key(fn) != attr_key(lambda: None)
    hash(attrs_key({"axis": (0, 1), "value": np.zeros(3), "fn": fn, "d": {"k": [1.5]}}))
