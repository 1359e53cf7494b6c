"""Fusion (graphc/passes/fusion.py): elementwise chains, reduction input
fusion, boundaries, the cost rule, multi-output and sibling fusion, cycle
avoidance, refusals recorded, and fused == unfused on random graphs."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphc as gc
from conftest import run
from graphc.backends.interpreter import InterpreterBackend, VariableStore
from graphc.errors import GradientError
from graphc.lowering.lower import lower_op
from graphc.ops.registry import ELEMENTWISE, FUSED, LIBRARY, REDUCTION
from graphc.passes import extract, run_pipeline
from graphc.passes import fusion
from graphc.passes.fusion import FUSED_OP, fuse, fusion_decision
from graphc.passes.verify import verify_program


# --------------------------------------------------------------------------
# helpers (test_pass_memory.py uses them too)
# --------------------------------------------------------------------------
def fuse_only(graph, fetches, feeds, targets=()):
    """Extract with the fed shapes and run the fusion pass alone (verified)."""
    program = extract(graph, fetches, list(targets), list(feeds), [tuple(t.shape) for t in feeds])
    fused = fuse(program)
    verify_program(fused, "fusion")
    return program, fused


def run_program(program, feed_values):
    executable = InterpreterBackend().compile(program)
    return executable.run(list(feed_values), VariableStore(), np.random.default_rng(0))


def fused_ops(program):
    return [op for op in program.ops() if op.type == FUSED_OP]


def source_names(op):
    return [name for name, _, _ in op.attrs["sources"]]


def all_notes(program):
    return "\n".join(program.analyses.get("_notes", []))


def computed_where(program):
    """Op name -> how many times the program computes it (plain ops, and
    every kernel that fuses it)."""
    counts = {}
    for op in program.ops():
        names = source_names(op) if op.type == FUSED_OP else [op.name]
        for n in names:
            counts[n] = counts.get(n, 0) + 1
    return counts


def assert_only_cheap_ops_are_recomputed(before, after):
    """An op computed more than once costs (per element) less than storing
    and loading its result would: transcendentals stay shared."""
    for name, n in computed_where(after).items():
        if n > 1:
            op = before.graph.get_operation_by_name(name)
            out = op.outputs[0]
            limit = (fusion.LOAD_PER_BYTE + fusion.STORE_PER_BYTE) * out.dtype.itemsize
            assert fusion._op_cost(op) < limit, f"{name} ({op.type}) is computed {n} times"


def compute_ops(program):
    """Ops a backend launches: kernels, library calls, control flow, state updates."""
    return [op for op in program.ops() if op.opdef.lowering not in ("source", "state") and op.type != "no_op"]


def build_mlp_step(batch=128):
    """784-256-10 ReLU MLP, softmax cross-entropy, gradients, SGD updates."""
    g = gc.Graph()
    rng = np.random.default_rng(0)
    with g.as_default():
        x = gc.placeholder(gc.float32, (None, 784), name="x")
        y = gc.placeholder(gc.int32, (None,), name="y")
        w1 = gc.Variable((rng.normal(size=(784, 256)) * 0.05).astype(np.float32), name="W1")
        b1 = gc.Variable(np.zeros(256, np.float32), name="b1")
        w2 = gc.Variable((rng.normal(size=(256, 10)) * 0.05).astype(np.float32), name="W2")
        b2 = gc.Variable(np.zeros(10, np.float32), name="b2")
        h = gc.nn.relu(gc.matmul(x, w1) + b1)
        logits = gc.matmul(h, w2) + b2
        loss = gc.reduce_mean(gc.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits),
                              name="loss")
        params = [w1, b1, w2, b2]
        grads = gc.gradients(loss, params)
        train = gc.group(*[v.assign_sub(0.1 * gv) for v, gv in zip(params, grads)], name="train")
    feeds = {x: rng.normal(size=(batch, 784)).astype(np.float32),
             y: rng.integers(0, 10, size=batch).astype(np.int32)}
    return g, x, y, loss, train, params, feeds


def compile_mlp(batch=128):
    g, x, y, loss, train, params, feeds = build_mlp_step(batch)
    program = extract(g, [loss], [train], [x, y], [(batch, 784), (batch,)])
    final, stages = run_pipeline(program, verify=True)
    return final, {s.name: s for s in stages}


# --------------------------------------------------------------------------
# elementwise chains, reductions, boundaries
# --------------------------------------------------------------------------
def test_elementwise_chain_becomes_one_kernel():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (4, 5), name="x")
        y = gc.subtract(gc.tanh(gc.exp(x) * 2.0 + 1.0), x, name="y")
    _, fused = fuse_only(g, [y], [x])
    (kernel,) = fused_ops(fused)
    assert kernel.attrs["kind"] == "loop"
    assert [t for _, t, _ in kernel.attrs["sources"]] == ["exp", "multiply", "add", "tanh", "subtract"]
    assert kernel.name == "y" and fused.fetches[0].op is kernel     # a fetch keeps its name
    assert all(src.startswith(__file__ + ":") for _, _, src in kernel.attrs["sources"])   # user file:line
    assert [op.type for op in fused.ops()] == ["placeholder", "const", "const", FUSED_OP]
    xv = np.random.default_rng(1).normal(size=(4, 5)).astype(np.float32)
    (got,) = run_program(fused, [xv])
    np.testing.assert_allclose(got, np.tanh(np.exp(xv) * 2 + 1) - xv, rtol=1e-6)
    run([y], {x: xv}, graph=g)


def test_reduction_absorbs_its_elementwise_input_and_its_consumer_starts_a_new_kernel():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float64, (6, 7), name="x")
        s = gc.reduce_sum(gc.exp(x) * x, axis=1, name="s")
        out = gc.sqrt(gc.log(s + 10.0), name="out")
    _, fused = fuse_only(g, [out], [x])
    kernels = {k.attrs["kind"]: k for k in fused_ops(fused)}
    red, loop = kernels["reduction"], kernels["loop"]
    assert source_names(red) == ["exp", "multiply", "s"] and red.attrs["roots"] == ("s",)
    assert [t for _, t, _ in loop.attrs["sources"]] == ["add", "log", "sqrt"]
    assert any("s -> add: reduction result" in r for r in loop.attrs["refusals"])
    assert "reduction result" in all_notes(fused)
    xv = np.random.default_rng(2).random((6, 7))
    (got,) = run_program(fused, [xv])
    np.testing.assert_allclose(got, np.sqrt(np.log((np.exp(xv) * xv).sum(1) + 10)), rtol=1e-12)
    run([out], {x: xv}, graph=g)


def test_matmul_is_a_boundary():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (8, 3), name="x")
        w = gc.constant(np.arange(12, dtype=np.float32).reshape(3, 4) / 10, name="w")
        b = gc.constant(np.ones(4, np.float32), name="b")
        h = gc.nn.relu(gc.matmul(gc.tanh(x) * 2.0, w, name="mm") + b)
        y = gc.sigmoid(h, name="y")
    _, fused = fuse_only(g, [y], [x])
    mm = fused.graph.get_operation_by_name("mm")
    assert mm.type == "matmul"
    kernels = fused_ops(fused)
    assert all("mm" not in source_names(k) for k in kernels)
    before, after = (k for k in sorted(kernels, key=lambda k: fused.ops().index(k)))
    assert [t for _, t, _ in before.attrs["sources"]] == ["tanh", "multiply"]
    assert {"add", "sigmoid"} <= {t for _, t, _ in after.attrs["sources"]}
    assert any("mm -> " in r and "library op boundary (matmul)" in r for r in after.attrs["refusals"])
    xv = np.random.default_rng(3).normal(size=(8, 3)).astype(np.float32)
    run([y], {x: xv}, graph=g)
    assert "fused_kernel" not in fusion_decision(mm) and "library op boundary" in fusion_decision(mm)


def test_cheap_broadcast_fuses_but_an_expensive_small_producer_is_not_recomputed():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (128, 10), name="x")
        bias = gc.placeholder(gc.float32, (10,), name="bias")
        y = gc.tanh(x + gc.broadcast_to(bias, (128, 10)) * gc.exp(bias), name="y")
    _, fused = fuse_only(g, [y], [x, bias])
    (kernel,) = fused_ops(fused)
    types = [t for _, t, _ in kernel.attrs["sources"]]
    assert "broadcast_to" in types and "exp" not in types
    assert fused.graph.get_operation_by_name("exp").type == "exp"   # stays a plain op
    assert any("would recompute: exp has 10 elements, the kernel iterates over 1280" in r
               for r in kernel.attrs["refusals"])
    rng = np.random.default_rng(4)
    run([y], {x: rng.normal(size=(128, 10)).astype(np.float32),
              bias: rng.normal(size=10).astype(np.float32)}, graph=g)


def test_a_shared_expensive_producer_is_computed_once():
    """exp(x) feeds two reductions over different axes (two kernels that
    cannot merge): it is fused into one of them and the other reads it as an
    extra output of that kernel, never recomputed."""
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float64, (5, 6), name="x")
        e = gc.exp(x, name="e")
        rows = gc.reduce_sum(e * 2.0, axis=1, name="rows")
        cols = gc.reduce_max(gc.sin(e), axis=0, name="cols")
    _, fused = fuse_only(g, [rows, cols], [x])
    kernels = fused_ops(fused)
    assert len(kernels) == 2
    holders = [k for k in kernels if "e" in source_names(k)]
    assert len(holders) == 1 and len(holders[0].outputs) == 2      # multi-output: e is exported
    other = next(k for k in kernels if k is not holders[0])
    assert any(t.op is holders[0] for t in other.inputs)
    notes = all_notes(fused)
    assert "would duplicate exp" in notes and "different reduction axes" in notes
    xv = np.random.default_rng(5).normal(size=(5, 6))
    got = run_program(fused, [xv])
    np.testing.assert_allclose(got[0], (np.exp(xv) * 2).sum(1), rtol=1e-12)
    np.testing.assert_allclose(got[1], np.sin(np.exp(xv)).max(0), rtol=1e-12)
    run([rows, cols], {x: xv}, graph=g)


def test_sibling_fusion_merges_two_reductions_over_the_same_input():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (16, 9), name="x")
        total = gc.reduce_sum(x, axis=1, name="total")
        peak = gc.reduce_max(x, axis=1, name="peak")
        low = gc.reduce_min(x, axis=0, name="low")      # other axes: stays apart
    _, fused = fuse_only(g, [total, peak, low], [x])
    (kernel,) = fused_ops(fused)
    assert kernel.attrs["kind"] == "reduction"
    assert set(kernel.attrs["roots"]) == {"total", "peak"} and len(kernel.outputs) == 2
    assert fused.graph.get_operation_by_name("low").type == "reduce_min"
    assert "sibling fusion refused: different reduction axes" in all_notes(fused)
    xv = np.random.default_rng(6).normal(size=(16, 9)).astype(np.float32)
    got = run_program(fused, [xv])
    np.testing.assert_allclose(got[0], xv.sum(1), rtol=1e-5)
    np.testing.assert_array_equal(got[1], xv.max(1))
    run([total, peak, low], {x: xv}, graph=g)


def test_sibling_loops_reading_one_input_merge_into_a_multi_output_kernel():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (32, 8), name="x")
        a = gc.tanh(x * 3.0, name="a")
        b = gc.sigmoid(x - 1.0, name="b")
    _, fused = fuse_only(g, [a, b], [x])
    (kernel,) = fused_ops(fused)
    assert set(kernel.attrs["roots"]) == {"a", "b"} and len(kernel.inputs) == 3
    run([a, b], {x: np.linspace(-2, 2, 256, dtype=np.float32).reshape(32, 8)}, graph=g)


def test_a_diamond_through_a_matmul_is_not_fused_into_a_cycle():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (4, 4), name="x")
        w = gc.constant(np.eye(4, dtype=np.float32) * 0.5 + 0.1, name="w")
        a = gc.exp(gc.tanh(x), name="a")
        m = gc.matmul(a, w, name="m")
        c = gc.sigmoid(a * m, name="c")
    _, fused = fuse_only(g, [c], [x])
    order = fused.ops()
    kernels = fused_ops(fused)
    assert [source_names(k) for k in kernels] == [["tanh", "a"], ["multiply", "c"]]
    assert order.index(kernels[0]) < order.index(fused.graph.get_operation_by_name("m")) < order.index(kernels[1])
    assert "a -> multiply: cycle (through m)" in all_notes(fused)
    run([c], {x: np.random.default_rng(7).normal(size=(4, 4)).astype(np.float32)}, graph=g)


def test_multi_output_producer_with_a_consumer_outside():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (6, 6), name="x")
        e = gc.exp(x, name="e")
        y = gc.reduce_sum(e * x, axis=1, name="y")
        z = gc.matmul(e, e, name="z")        # e is also needed outside the kernel
    _, fused = fuse_only(g, [y, z], [x])
    (kernel,) = fused_ops(fused)
    assert source_names(kernel) == ["e", "multiply", "y"] and kernel.attrs["roots"] == ("y", "e")
    z_op = fused.graph.get_operation_by_name("z")
    assert z_op.inputs[0] is kernel.outputs[1]
    run([y, z], {x: np.random.default_rng(8).normal(size=(6, 6)).astype(np.float32) * 0.3}, graph=g)


def test_shape_only_inputs_are_not_kernel_inputs():
    """broadcast_like / sum_to_shape_of read `like` only for its shape: in a
    kernel the static shape replaces it."""
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (3, 4), name="x")
        big = gc.placeholder(gc.float32, (5, 3, 4), name="big")
        spread = gc.broadcast_like(x, big)
        y = gc.sum_to_shape_of(gc.exp(spread), x, name="y")
    _, fused = fuse_only(g, [y], [x, big])
    (kernel,) = fused_ops(fused)
    assert [t.op.name for t in kernel.inputs] == ["x"]
    body_types = [op.type for op in kernel.attrs["body"].get_operations()]
    assert "broadcast_to" in body_types and "reduce_sum" in body_types and "sum_to_shape_of" not in body_types
    rng = np.random.default_rng(9)
    run([y], {x: rng.normal(size=(3, 4)).astype(np.float32), big: np.zeros((5, 3, 4), np.float32)}, graph=g)


def test_ops_with_control_edges_and_targets():
    g = gc.Graph()
    with g.as_default():
        v = gc.Variable(np.ones(4, np.float32), name="v")
        x = gc.placeholder(gc.float32, (4,), name="x")
        upd = v.assign_add(x, name="upd")
        with gc.control_dependencies([upd]):
            after = gc.tanh(gc.identity(v) * 2.0, name="after")
        marker = gc.exp(x, name="marker")
        with gc.control_dependencies([marker]):
            y = gc.sqrt(gc.abs(after) + 1.0, name="y")
    program, fused = fuse_only(g, [y], [x], targets=[upd.op])
    assert "marker" not in [n for k in fused_ops(fused) for n in source_names(k)]
    assert "control dependency" in fusion_decision_of(program, "marker")
    xv = np.arange(4, dtype=np.float32)
    run([y, upd], {x: xv}, graph=g)


def fusion_decision_of(program, name):
    from graphc.passes.fusion import _classify
    op = program.graph.get_operation_by_name(name)
    pinned = set(program.targets) | {c for o in program.ops() for c in o.control_inputs}
    return _classify(op, pinned)[1]


def test_dynamic_shapes_are_boundaries():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (None, 3), name="x")
        y = gc.tanh(gc.exp(x), name="y")
    program = extract(g, [y], [], [x])          # not specialized: the batch dim stays None
    assert fuse(program) is program
    assert fusion_decision(program.graph.get_operation_by_name("y")) == "dynamic shape"


def test_gradients_refuse_fused_kernels_clearly():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (3,), name="x")
        y = gc.reduce_sum(gc.exp(x) * 2.0, name="y")
    _, fused = fuse_only(g, [y], [x])
    with pytest.raises(GradientError, match=r"fused kernels are made by the fusion pass.*unfused ops exp"):
        gc.gradients(fused.fetches[0], fused.feeds[0])


def test_refusals_reach_the_stage_notes_and_the_report():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (4, 4), name="x")
        y = gc.tanh(gc.matmul(gc.exp(x), gc.exp(x)) + 1.0, name="y")
    program = extract(g, [y], [], [x], [(4, 4)])
    final, stages = run_pipeline(program, verify=True)
    record = next(s for s in stages if s.name == "fusion")
    assert any("library op boundary (matmul)" in n for n in record.notes)
    report = final.analyses["fusion"]
    assert report.refusals and "library op boundary" in report.summary()


# --------------------------------------------------------------------------
# rematerialization: cheap intermediates are recomputed, not stored
# --------------------------------------------------------------------------
def kernel_of(program, fetch_or_name):
    name = fetch_or_name if isinstance(fetch_or_name, str) else fetch_or_name.op.name
    return next(k for k in fused_ops(program) if name in source_names(k))


def softmax_graph(residual):
    """Twice the row softmax of x (32, 24): max, sum of exp(x - max), then
    exp(x - max) / sum * 2, plus x itself when ``residual`` (so the last
    kernel reads x anyway)."""
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (32, 24), name="x")
        s = gc.subtract(x, gc.reduce_max(x, axis=1, keepdims=True), name="s")
        e = gc.exp(s, name="e")
        total = gc.reduce_sum(e, axis=1, keepdims=True, name="total")
        y = gc.multiply(gc.divide(e, total), 2.0, name="y")
        if residual:
            y = gc.add(y, x, name="out")
    return g, x, y


def test_an_exp_that_would_need_a_new_load_stays_shared():
    g, x, y = softmax_graph(residual=False)
    _, fused = fuse_only(g, [y], [x])
    total, last = kernel_of(fused, "total"), kernel_of(fused, y)
    assert total is not last
    assert computed_where(fused)["e"] == 1 and computed_where(fused)["s"] == 1
    assert len(total.outputs) == 2 and last.inputs[0] is total.outputs[1]     # e: stored once, loaded once
    assert [t.op.name for t in last.inputs] == ["total", "total", "Const"]
    # recomputing e in the last kernel needs a load of x (16 + 8), as much as reading e (8 + 16)
    assert any("e -> kernel of y: read from the kernel of total: recomputing costs 24 per element, reading it 24"
               in r for r in last.attrs["refusals"])
    xv = np.random.default_rng(10).normal(size=(32, 24)).astype(np.float32) * 3
    (got,) = run_program(fused, [xv])
    ref = np.exp(xv - xv.max(1, keepdims=True))
    np.testing.assert_allclose(got, ref / ref.sum(1, keepdims=True) * 2, rtol=1e-6)
    run([y], {x: xv}, graph=g)


def test_an_exp_is_recomputed_in_a_kernel_that_reads_its_input_anyway():
    g, x, y = softmax_graph(residual=True)
    _, fused = fuse_only(g, [y], [x])
    total, last = kernel_of(fused, "total"), kernel_of(fused, y)
    assert computed_where(fused)["e"] == 2 and computed_where(fused)["s"] == 2   # x - max and its exp
    assert len(total.outputs) == 1                          # nothing full-size leaves the reduction kernel
    assert {t.op.name for t in last.inputs} == {"x", "Max", "total", "Const"}
    xv = np.random.default_rng(11).normal(size=(32, 24)).astype(np.float32)
    run([y], {x: xv}, graph=g)


def test_an_expensive_chain_stays_shared():
    """tanh(exp(x)) costs 32 per element, more than storing and loading it
    (24): the second kernel loads it although it reads x anyway."""
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (16, 12), name="x")
        t = gc.tanh(gc.exp(x), name="t")
        rows = gc.reduce_sum(t * x, axis=1, name="rows")
        cols = gc.reduce_max(t + x, axis=0, name="cols")
    _, fused = fuse_only(g, [rows, cols], [x])
    counts = computed_where(fused)
    assert counts["t"] == 1 and counts[t.op.inputs[0].op.name] == 1
    xv = np.random.default_rng(12).normal(size=(16, 12)).astype(np.float32)
    run([rows, cols], {x: xv}, graph=g)


def test_a_one_hot_mask_is_recomputed_by_each_kernel_and_never_stored():
    """A bool mask from small operands (labels, an iota) costs one compare
    per element: no kernel exports it, whichever kernels need it."""
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (20, 7), name="x")
        labels = gc.placeholder(gc.int32, (20,), name="labels")
        mask = gc.equal(gc.expand_dims(labels, 1), gc.constant(np.arange(7, dtype=np.int32)), name="mask")
        picked = gc.reduce_sum(gc.where(mask, x, gc.zeros_like(x)), axis=1, name="picked")
        spread = gc.where(mask, gc.broadcast_to(gc.expand_dims(picked, 1), (20, 7)), x, name="spread")
        cols = gc.reduce_sum(gc.where(mask, x * x, x), axis=0, name="cols")
    _, fused = fuse_only(g, [spread, cols], [x, labels])
    kernels = fused_ops(fused)
    assert len(kernels) == 2 and all("mask" in source_names(k) for k in kernels)
    assert computed_where(fused)["mask"] == 2
    assert not any(t.dtype == np.bool_ for op in fused.ops() for t in op.outputs)
    rng = np.random.default_rng(13)
    run([spread, cols], {x: rng.normal(size=(20, 7)).astype(np.float32),
                         labels: rng.integers(0, 7, 20).astype(np.int32)}, graph=g)


def build_w4(n, c):
    """Benchmark W4: mean sparse softmax cross-entropy and its gradient
    with respect to the logits."""
    g = gc.Graph()
    with g.as_default():
        logits = gc.placeholder(gc.float32, (n, c), name="logits")
        labels = gc.placeholder(gc.int32, (n,), name="labels")
        loss = gc.reduce_mean(gc.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits),
                              name="loss")
        (grad,) = gc.gradients(loss, [logits])
    return g, logits, labels, loss, grad


def full_size_traffic(program, size):
    """(full-size tensors read by compute ops, full-size tensors they write),
    each counted once per op."""
    ops = compute_ops(program)
    reads = [t for op in ops for t in dict.fromkeys(op.inputs) if int(np.prod(t.shape)) == size]
    writes = [t for op in ops for t in op.outputs if int(np.prod(t.shape)) == size]
    return reads, writes


@pytest.mark.parametrize("n, c", [(4096, 1000), (64, 30)])
def test_softmax_cross_entropy_gradient_moves_no_full_size_intermediate(n, c):
    """W4's fused program reads the logits three times (max, sum of exp, the
    loss's pick and the gradient) and writes only the gradient: the shifted
    logits, their exp, the one-hot mask and its select are recomputed by the
    kernels that need them, and the pick's reduction shares the gradient's
    loop nest."""
    g, logits, labels, loss, grad = build_w4(n, c)
    program = extract(g, [loss, grad], [], [logits, labels], [(n, c), (n,)])
    final, stages = run_pipeline(program, verify=True)
    stages = {s.name: s for s in stages}
    before, after = stages["dce"].program, stages["fusion"].program
    reads, writes = full_size_traffic(after, n * c)
    assert [t.op.type for t in reads] == ["placeholder"] * 3
    assert len(writes) == 1 and writes[0] in after.fetches
    assert_only_cheap_ops_are_recomputed(before, after)
    old_reads, old_writes = full_size_traffic(before, n * c)
    assert len(reads) + len(writes) < len(old_reads) + len(old_writes)
    assert len(compute_ops(after)) <= 6
    (last,) = [op for op in fused_ops(after) if grad.op.name in source_names(op)]
    assert last.attrs["kind"] == "reduction"                  # the loss's pick shares the gradient's loop
    assert not any(t.dtype == np.bool_ for op in after.ops() for t in op.outputs)
    if n * c > 10 ** 5:
        return
    rng = np.random.default_rng(14)
    lv = rng.normal(size=(n, c)).astype(np.float32) * 3
    yv = rng.integers(0, c, n).astype(np.int32)
    got_loss, got_grad = run([loss, grad], {logits: lv, labels: yv}, graph=g)
    shifted = lv.astype(np.float64) - lv.max(1, keepdims=True)
    p = np.exp(shifted) / np.exp(shifted).sum(1, keepdims=True)
    np.testing.assert_allclose(got_loss, -np.log(p[np.arange(n), yv]).mean(), rtol=1e-5)
    p[np.arange(n), yv] -= 1
    np.testing.assert_allclose(got_grad, p / n, rtol=1e-4, atol=1e-7)


# --------------------------------------------------------------------------
# the MLP training step
# --------------------------------------------------------------------------
def test_mlp_training_step_fuses_into_a_few_kernels(capsys):
    final, stages = compile_mlp()
    before, after = stages["dce"].program, stages["fusion"].program
    kernels = fused_ops(after)
    n_before, n_after = len(compute_ops(before)), len(compute_ops(after))
    with capsys.disabled():
        print(f"\nMLP step: {len(compute_ops(before))} compute ops ({before.num_ops()} ops) before fusion -> "
              f"{n_after} ({after.num_ops()} ops) after: {len(kernels)} fused kernels, "
              f"{sum(1 for op in compute_ops(after) if op.opdef.lowering == LIBRARY)} matmuls")
    assert len(kernels) <= 10
    assert n_after <= 20 and n_after <= n_before // 2 + 2
    assert all(op.type == "matmul" for op in compute_ops(after) if op.opdef.lowering == LIBRARY)
    assert_only_cheap_ops_are_recomputed(before, after)
    assert any(k.attrs["kind"] == "reduction" for k in kernels)


def test_mlp_training_step_fused_matches_unfused_over_steps():
    g, x, y, loss, train, params, feeds = build_mlp_step(batch=32)
    results = []
    for optimize in (False, True):
        with gc.Session(graph=g, config=gc.Config(backend="interpreter", optimize=optimize, debug=True)) as sess:
            sess.run(gc.global_variables_initializer())
            losses = [sess.run([loss, train], feeds)[0] for _ in range(3)]
            results.append((losses, sess.run(params)))
    (l0, p0), (l1, p1) = results
    np.testing.assert_allclose(l1, l0, rtol=1e-5)
    assert l0[2] < l0[0]
    for a, b in zip(p0, p1):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------
# random graphs
# --------------------------------------------------------------------------
UNARY = [gc.tanh, gc.sin, gc.negative, gc.abs, gc.sigmoid, gc.exp]
BINARY = [gc.add, gc.multiply, gc.subtract, gc.maximum]


def random_graph(data):
    """A random graph of elementwise ops, reductions (keepdims, so shapes
    stay broadcastable), broadcasts, reshapes and matmuls over a (3, 4)
    input and a (4,) bias. Returns (graph, fetches, feeds, feed values)."""
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float64, (3, 4), name="x")
        b = gc.placeholder(gc.float64, (4,), name="b")
        w = gc.constant(np.linspace(-1, 1, 16).reshape(4, 4), name="w")
        pool = [x, b]
        for _ in range(data.draw(st.integers(1, 10), label="ops")):
            kind = data.draw(st.sampled_from(["unary", "binary", "binary", "reduce", "matmul", "broadcast",
                                              "reshape"]), label="kind")
            t = data.draw(st.sampled_from(pool), label="operand")
            if kind == "unary":
                out = data.draw(st.sampled_from(UNARY), label="fn")(t)
            elif kind == "binary":
                u = data.draw(st.sampled_from(pool), label="other")
                out = data.draw(st.sampled_from(BINARY), label="fn")(t, u)
            elif kind == "reduce" and len(t.shape) == 2:
                fn = data.draw(st.sampled_from([gc.reduce_sum, gc.reduce_max]), label="fn")
                out = fn(t, axis=data.draw(st.sampled_from([0, 1]), label="axis"), keepdims=True)
            elif kind == "reduce":
                out = gc.reduce_sum(t, keepdims=True)
            elif kind == "matmul" and t.shape == (3, 4):
                out = gc.matmul(t, w)
            elif kind == "broadcast":
                out = gc.broadcast_to(t, (3, 4))
            elif kind == "reshape" and t.shape == (3, 4):
                out = gc.reshape(gc.reshape(t, (12,)), (3, 4))
            else:
                out = gc.squeeze(gc.expand_dims(t, 0), 0)
            pool.append(out)
        produced = pool[2:]
        picks = data.draw(st.lists(st.sampled_from(produced), min_size=1, max_size=3, unique_by=id), label="fetches")
    rng = np.random.default_rng(0)
    values = [rng.normal(size=(3, 4)), rng.normal(size=4)]
    return g, picks, [x, b], values


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_graphs_fuse_without_changing_results_or_duplicating_expensive_work(data):
    g, fetches, feeds, values = random_graph(data)
    program, fused = fuse_only(g, fetches, feeds)
    expected = run_program(program, values)
    got = run_program(fused, values)
    for e, r in zip(expected, got):
        assert e.shape == r.shape and e.dtype == r.dtype
        np.testing.assert_allclose(r, e, rtol=1e-12, atol=0, equal_nan=True)
    assert_only_cheap_ops_are_recomputed(program, fused)
    for k in fused_ops(fused):
        assert k.attrs["kind"] in ("loop", "reduction")
        assert len(k.attrs["sources"]) >= 2
        inner = [op for op in k.attrs["body"].get_operations() if op.type != "arg"]
        assert not any(op.opdef.lowering in (LIBRARY, FUSED) for op in inner)
        # a reduction's result is only reshaped inside its own kernel
        for op in inner:
            if op.opdef.lowering == REDUCTION:
                users = [c for c in inner if any(t is op.outputs[0] for t in c.inputs)]
                assert all(c.type == "reshape" for c in users)
        assert all(op.opdef.lowering in (ELEMENTWISE, REDUCTION, "layout", "source") for op in inner)
        lower_op(k)         # the kernel is one the native backends can lower (else CompileError)
