"""Lowering of fused kernels to loop IR, checked by running the IR with the
reference evaluator against the graph interpreter."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import graphc as gc
from graphc.backends import get_backend
from graphc.errors import CompileError
from graphc.lowering import evaluate, loop_ir, lower_op
from graphc.session import compile_run
from random_programs import build_program, mlp_step_graph


def _kernels(fetches, feeds):
    """Compile through the pipeline; return (fused ops, interpreter env values)."""
    graph = fetches[0].graph
    ex = compile_run(graph, fetches, [], list(feeds), [np.shape(v) for v in feeds.values()],
                     gc.Config(backend="interpreter"), get_backend("interpreter"))
    return ex


def _check_all_kernels(fetches, feeds, rtol=1e-5):
    """Every fused kernel (and lowerable single op) of the compiled program,
    lowered and evaluated, matches the interpreter on the same inputs."""
    from graphc.backends.interpreter import RunContext, VariableStore, execute_op
    ex = _kernels(fetches, feeds)
    env = dict(zip(ex.feeds, [np.asarray(v, dtype=t.dtype) for t, v in zip(ex.feeds, feeds.values())]))
    ctx = RunContext(VariableStore(), np.random.default_rng(0))
    lowered = 0
    for op in ex.plan:
        ins = [env[t] for t in op.inputs]
        outs = execute_op(op, ins, ctx)
        for t, v in zip(op.outputs, outs):
            env[t] = v
        if op.type == "fused_kernel" or op.opdef.lowering in ("elementwise", "reduction"):
            try:
                kernel = lower_op(op)
            except CompileError:
                if op.type == "fused_kernel":
                    raise
                continue
            got = evaluate(kernel, ins)
            for g, want in zip(got, outs):
                assert g.dtype == want.dtype and g.shape == want.shape, kernel.text()
                if want.dtype.kind == "f":
                    np.testing.assert_allclose(g, want, rtol=rtol, atol=1e-6, equal_nan=True, err_msg=kernel.text())
                else:
                    np.testing.assert_array_equal(g, want, err_msg=kernel.text())
            lowered += 1
    return lowered


def test_elementwise_chain_with_broadcast_is_one_loop_nest():
    x = gc.placeholder(gc.float32, (4, 3), name="x")
    b = gc.placeholder(gc.float32, (3,), name="b")
    y = gc.tanh(x + b) * gc.exp(-x) + 0.5
    ex = _kernels([y], {x: np.zeros((4, 3)), b: np.zeros(3)})
    fused = [op for op in ex.plan if op.type == "fused_kernel"]
    assert len(fused) == 1
    k = lower_op(fused[0])
    text = k.text()
    assert text.count("for ") == 2 and "in1[i1]" in text and "acc" not in text
    r = np.random.default_rng(0)
    assert _check_all_kernels([y], {x: r.normal(size=(4, 3)), b: r.normal(size=3)}) >= 1


def test_reduction_kernel_accumulates_in_a_sequential_inner_loop():
    x = gc.placeholder(gc.float64, (5, 6), name="x")
    s = gc.reduce_sum(gc.square(x), axis=1)
    ex = _kernels([s], {x: np.zeros((5, 6))})
    k = lower_op([op for op in ex.plan if op.type == "fused_kernel"][0])
    loops = [st for st in k.body if isinstance(st, loop_ir.Loop)]
    assert loops and loops[0].parallel
    inner = [st for st in loops[0].body if isinstance(st, loop_ir.Loop)]
    assert inner and not inner[0].parallel
    assert any(isinstance(st, loop_ir.AccInit) for st in loops[0].body)
    _check_all_kernels([s], {x: np.random.default_rng(1).normal(size=(5, 6))})


@pytest.mark.parametrize("op", [gc.reduce_sum, gc.reduce_mean, gc.reduce_max, gc.reduce_min, gc.reduce_prod])
@pytest.mark.parametrize("axis,keepdims", [(None, False), (0, False), (1, True), ((0, 2), False), (-1, True)])
def test_reductions_lower_exactly(op, axis, keepdims):
    x = gc.placeholder(gc.float64, (2, 3, 4), name="x")
    y = op(gc.exp(x) - 1.0, axis=axis, keepdims=keepdims)
    _check_all_kernels([y], {x: np.random.default_rng(2).uniform(-1, 1, (2, 3, 4))}, rtol=1e-12)


def test_multi_output_reduction_kernel_with_full_shape_output():
    x = gc.placeholder(gc.float32, (8, 5), name="x")
    b = gc.placeholder(gc.float32, (5,), name="b")
    h = x + b
    m = gc.reduce_max(h, axis=1, keepdims=True)
    e = gc.exp(h - m)
    loss = gc.reduce_sum(e, axis=1)
    r = np.random.default_rng(3)
    _check_all_kernels([loss, h], {x: r.normal(size=(8, 5)), b: r.normal(size=5)})


def test_mlp_training_step_kernels_all_lower():
    fetches, feeds = mlp_step_graph(gc, np)
    assert _check_all_kernels(fetches, feeds) >= 4


def test_integer_and_bool_kernels():
    a = gc.placeholder(gc.int32, (3, 4), name="a")
    y = gc.reduce_sum(gc.where(a > 2, a * 3, a - 1), axis=0)
    z = gc.reduce_any(gc.equal(a % 2, 0), axis=1)
    _check_all_kernels([y, z], {a: np.arange(12).reshape(3, 4)})


def test_reshape_inside_kernel_maps_indices():
    x = gc.placeholder(gc.float64, (6, 4), name="x")
    y = gc.reshape(gc.exp(x), (4, 6)) * gc.constant(np.arange(6.0))
    _check_all_kernels([y], {x: np.random.default_rng(5).normal(size=(6, 4))}, rtol=1e-12)


def test_unsupported_kernel_is_a_clear_compile_error():
    x = gc.placeholder(gc.float32, (None, 3), name="x")
    y = gc.exp(x)
    with pytest.raises(CompileError, match="static shape"):
        lower_op(y.op)


_UNARY = [gc.exp, gc.tanh, gc.sigmoid, gc.negative, gc.square, gc.abs, lambda t: gc.log1p(gc.square(t))]
_BINARY = [gc.add, gc.subtract, gc.multiply, gc.maximum, gc.minimum]
_REDUCE = [gc.reduce_sum, gc.reduce_max, gc.reduce_mean]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 6), st.integers(0, 5)), min_size=1, max_size=7),
       st.sampled_from([(2, 3), (4, 1), (1, 5), (3, 2, 2)]), st.integers(0, 2**31 - 1))
def test_random_kernels_lower_to_the_interpreter_result(program, shape, seed):
    x = gc.placeholder(gc.float64, shape, name="x")
    y = gc.placeholder(gc.float64, shape[-1:], name="y")
    values = build_program([x, y], program, _UNARY, _BINARY, _REDUCE)
    r = np.random.default_rng(seed)
    _check_all_kernels(values, {x: r.uniform(-2, 2, shape), y: r.uniform(-2, 2, shape[-1:])}, rtol=1e-10)


def test_scalar_constant_inputs_become_immediates_and_fill_like_lowers():
    x = gc.placeholder(gc.float32, (3, 4), name="x")
    y = gc.exp(x) * 0.5 + gc.ones_like(x)
    ex = _kernels([y], {x: np.zeros((3, 4))})
    kernels = [lower_op(op) for op in ex.plan if op.type == "fused_kernel"]
    text = "\n".join(k.text() for k in kernels)
    assert "0.5:float32" in text
    r = np.random.default_rng(6)
    _check_all_kernels([y], {x: r.normal(size=(3, 4))})
    fill = gc.ones_like(x).op
    if fill.type == "fill_like":
        (out,) = evaluate(lower_op(fill), [np.zeros((3, 4), np.float32)])
        np.testing.assert_array_equal(out, np.ones((3, 4), np.float32))
