"""Random graphs, run unoptimized and optimized, give the same results.

Hypothesis builds graphs from placeholders and constants (random values
with signed zeros, infinities and NaNs, all-ones, all-zeros, repeated
values) with elementwise ops, broadcasting, reductions, reshapes,
transposes, matmuls, casts, where, the identities the simplifier looks for
(x * 1, x + -0.0, --x, double transposes, reshape chains, broadcast
constants) and duplicated subexpressions for CSE.

Tolerance: the cleanup passes (fold, cse, simplify, dce) are exact, so
their result must be bitwise the unoptimized one (NaN payloads aside: any
NaN matches any NaN), for floats as for integers. The whole pipeline
(fusion and memory planning included) is compared as tests/conftest.py
does: integers and bools exactly, floats within rtol 1e-5 (float32) /
1e-12 (float64).
"""
import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

import graphc as gc
from conftest import assert_same_results
from graphc.backends.interpreter import InterpreterBackend, VariableStore
from graphc.passes import extract, pipeline, run_pipeline
from graphc.passes.verify import verify_program

CLEANUP = ("fold", "cse", "simplify", "dce")
SHAPES = [(), (3,), (2, 3), (2, 1), (1, 3), (4, 2, 3)]


def run_program(program, feed_values, seed=0):
    executable = InterpreterBackend().compile(program)
    return executable.run(feed_values, VariableStore(), np.random.default_rng(seed))


def apply_passes(program, names):
    """Run the named passes in order, verifying the graph after each."""
    passes = {p.name: p for p in pipeline()}
    for name in names:
        program = passes[name].fn(program)
        verify_program(program, name)
    return program


def cleanup(program):
    return apply_passes(program, CLEANUP)


def assert_identical(expected, actual):
    """Same dtype, shape and bits; NaN matches NaN."""
    for e, a in zip(expected, actual):
        e, a = np.asarray(e), np.asarray(a)
        assert e.dtype == a.dtype and e.shape == a.shape, (e.dtype, e.shape, a.dtype, a.shape)
        if e.dtype.kind == "f":
            nan = np.isnan(e)
            assert np.array_equal(nan, np.isnan(a)), (e, a)
            e, a = np.where(nan, 0, e), np.where(nan, 0, a)
            assert np.array_equal(np.signbit(e), np.signbit(a)), (e, a)
        np.testing.assert_array_equal(a, e)


def _values(draw, shape, dtype):
    kind = draw(st.sampled_from(["random", "ones", "zeros", "negzero", "repeat", "special"]))
    n = int(np.prod(shape, dtype=np.int64))
    if dtype.kind in "iu":
        base = np.array(draw(st.lists(st.integers(-4, 4), min_size=n, max_size=n)), dtype)
        if kind == "ones":
            base[:] = 1
        elif kind == "zeros":
            base[:] = 0
        return base.reshape(shape)
    floats = st.floats(-3, 3, allow_nan=False, width=32)
    if kind == "special":
        floats = st.sampled_from([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -2.5])
    base = np.array(draw(st.lists(floats, min_size=n, max_size=n)), dtype)
    if kind == "ones":
        base[:] = 1
    elif kind == "zeros":
        base[:] = 0
    elif kind == "negzero":
        base[:] = -0.0
    elif kind == "repeat" and n:
        base[:] = base[0]
    return base.reshape(shape)


class Builder:
    """Grows a random graph one op at a time from a pool of tensors."""

    def __init__(self, draw, dtype):
        self.draw = draw
        self.dtype = np.dtype(dtype)
        self.pool = []
        self.made = []        # (function, inputs) of ops made, to duplicate later

    def pick(self, pred=lambda t: True):
        options = [t for t in self.pool if pred(t)]
        return self.draw(st.sampled_from(options)) if options else None

    def add(self, t):
        if isinstance(t, gc.Variable):
            t = t.value()
        self.pool.append(t)
        return t

    def leaf(self, feeds):
        shape = self.draw(st.sampled_from(SHAPES))
        if self.draw(st.booleans()):
            x = gc.placeholder(self.dtype, shape)
            feeds[x] = _values(self.draw, shape, self.dtype)
            return self.add(x)
        return self.add(gc.constant(_values(self.draw, shape, self.dtype)))

    def binary(self):
        x = self.pick()
        y = self.pick(lambda t: _broadcastable(t.shape, x.shape))
        ops = [gc.add, gc.subtract, gc.multiply, gc.maximum, gc.minimum]
        if self.dtype.kind == "f":
            ops.append(gc.divide)
        fn = self.draw(st.sampled_from(ops))
        self.made.append((fn, (x, y)))
        return self.add(fn(x, y))

    def unary(self):
        x = self.pick()
        fns = [gc.negative, gc.abs, gc.square, gc.identity, gc.stop_gradient]
        if self.dtype.kind == "f":
            fns += [gc.tanh, gc.exp, lambda t: gc.log(gc.abs(t))]
        fn = self.draw(st.sampled_from(fns))
        self.made.append((fn, (x,)))
        return self.add(fn(x))

    def identity_pattern(self):
        x = self.pick()
        one, zero = np.ones((), self.dtype), np.zeros((), self.dtype)
        if self.dtype.kind == "f":
            zero = -zero
        shape = x.shape
        choice = self.draw(st.sampled_from(["mul1", "rmul1", "add0", "sub0", "div1", "negneg", "bcast1",
                                            "where_chain", "cast_trip", "sub_neg", "add_neg"]))
        if choice == "mul1":
            return self.add(x * gc.constant(one))
        if choice == "rmul1":
            return self.add(gc.ones(shape, self.dtype) * x if shape else gc.constant(one) * x)
        if choice == "add0":
            return self.add(x + gc.constant(zero))
        if choice == "sub0":
            return self.add(x - gc.constant(np.zeros((), self.dtype)))
        if choice == "div1" and self.dtype.kind == "f":
            return self.add(x / gc.constant(one))
        if choice == "negneg":
            return self.add(-(-x))
        if choice == "bcast1":
            return self.add(x * gc.broadcast_to(gc.constant(one), (2,) + tuple(shape)))
        if choice == "where_chain":
            c = gc.greater(x, gc.constant(zero))
            return self.add(gc.where(c, gc.where(c, x, gc.zeros_like(x)), gc.zeros_like(x)))
        if choice == "cast_trip":
            wide = gc.float64 if self.dtype.kind == "f" else gc.int64
            return self.add(gc.cast(gc.cast(x, wide), self.dtype))
        y = self.pick(lambda t: _broadcastable(t.shape, x.shape))
        if choice == "sub_neg":
            return self.add(x - (-y))
        return self.add(x + (-y))

    def reduction(self):
        x = self.pick(lambda t: len(t.shape) >= 1)
        if x is None:
            return None
        axis = self.draw(st.sampled_from([None] + list(range(len(x.shape)))))
        keepdims = self.draw(st.booleans())
        fns = [gc.reduce_sum, gc.reduce_max, gc.reduce_min]
        if self.dtype.kind == "f":
            fns.append(gc.reduce_mean)
        fn = self.draw(st.sampled_from(fns))
        self.made.append((lambda t, fn=fn: fn(t, axis=axis, keepdims=keepdims), (x,)))
        return self.add(fn(x, axis=axis, keepdims=keepdims))

    def layout(self):
        x = self.pick(lambda t: len(t.shape) >= 1)
        if x is None:
            return None
        choice = self.draw(st.sampled_from(["flatten", "reshape_twice", "transpose", "transpose_twice",
                                            "expand_squeeze", "broadcast", "shape_of_reshape"]))
        n = int(np.prod(x.shape))
        if choice == "flatten":
            return self.add(gc.reshape(x, [-1]))
        if choice == "reshape_twice":
            return self.add(gc.reshape(gc.reshape(x, [n, 1]), x.shape))
        if choice == "expand_squeeze":
            return self.add(gc.squeeze(gc.expand_dims(x, 0), 0))
        if choice == "broadcast":
            return self.add(gc.broadcast_to(x, (2,) + tuple(x.shape)))
        if choice == "shape_of_reshape":
            return self.add(gc.reshape(x * gc.constant(np.ones((), self.dtype)), gc.shape_of(x)))
        perm = self.draw(st.permutations(list(range(len(x.shape)))))
        t = gc.transpose(x, perm)
        if choice == "transpose_twice":
            perm2 = self.draw(st.permutations(list(range(len(x.shape)))))
            t = gc.transpose(t, perm2)
        return self.add(t)

    def matmul(self):
        x = self.pick(lambda t: len(t.shape) == 2)
        if x is None:
            return None
        w = gc.constant(_values(self.draw, (x.shape[1], 2), self.dtype))
        return self.add(gc.matmul(x, w))

    def duplicate(self):
        if not self.made:
            return None
        fn, inputs = self.draw(st.sampled_from(self.made))
        return self.add(fn(*inputs))


def _broadcastable(a, b):
    try:
        np.broadcast_shapes(a, b)
        return True
    except ValueError:
        return False


@st.composite
def random_graphs(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64, np.int32]))
    g = gc.Graph()
    feeds = {}
    with g.as_default():
        b = Builder(draw, dtype)
        for _ in range(draw(st.integers(1, 3))):
            b.leaf(feeds)
        steps = draw(st.lists(st.sampled_from(["leaf", "binary", "unary", "identity", "reduction", "layout",
                                               "matmul", "duplicate"]), min_size=1, max_size=14))
        for step in steps:
            if step == "leaf":
                b.leaf(feeds)
            elif step == "binary":
                b.binary()
            elif step == "unary":
                b.unary()
            elif step == "identity":
                b.identity_pattern()
            elif step == "reduction":
                b.reduction()
            elif step == "layout":
                b.layout()
            elif step == "matmul":
                b.matmul()
            else:
                b.duplicate()
        count = draw(st.integers(1, min(4, len(b.pool))))
        fetches = draw(st.lists(st.sampled_from(b.pool), min_size=count, max_size=count))
    return g, fetches, feeds


def _check(graph_case, specialize):
    g, fetches, feeds = graph_case
    feed_tensors = list(feeds)
    values = [feeds[t] for t in feed_tensors]
    shapes = [v.shape for v in values] if specialize else None
    program = extract(g, fetches, [], feed_tensors, shapes)
    with np.errstate(all="ignore"):
        expected = run_program(program, values)
        cleaned = cleanup(program)
        assert_identical(expected, run_program(cleaned, values))
        final, _ = run_pipeline(program, verify=True)
        assert_same_results(expected, run_program(final, values))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_graphs())
def test_random_graphs_optimize_to_the_same_results(graph_case):
    _check(graph_case, specialize=True)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_graphs())
def test_random_graphs_without_shape_specialization(graph_case):
    _check(graph_case, specialize=False)


def test_duplicated_subexpressions_in_a_random_style_graph_shrink():
    """A fixed instance of the generator's patterns: the cleanup removes
    the duplicates and identities (op counts checked), results bitwise equal."""
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (2, 3), name="x")
        a = gc.tanh(x) * gc.constant(np.float32(1))
        b = gc.tanh(x) * gc.constant(np.float32(1))
        c = gc.reshape(gc.reshape(a + b, [6, 1]), (2, 3))
        d = gc.transpose(gc.transpose(-(-c), [1, 0]), [1, 0])
    xv = np.array([[0, -0.0, 1], [np.inf, np.nan, -2]], np.float32)
    program = extract(g, [d], [], [x], [xv.shape])
    cleaned = cleanup(program)
    assert [op.type for op in cleaned.ops()] == ["placeholder", "tanh", "add"]
    assert_identical(run_program(program, [xv]), run_program(cleaned, [xv]))
