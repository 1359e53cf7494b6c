"""Memory planning (graphc/passes/memory.py): sizes, owners, liveness,
buffer reuse, in-place writes, peaks; the invariant that no buffer holds
two live tensors, on random graphs; and the interpreter dropping dead
intermediates during a run."""
import tracemalloc

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphc as gc
from conftest import run
from graphc.passes import extract, run_pipeline
from graphc.passes.memory import ALIAS, CONSTANT, FEED, PLANNED, STATE_KIND, MemoryPlan, plan_memory
from test_pass_fusion import compile_mlp, random_graph, run_program


def _plan(graph, fetches, feeds, targets=(), disabled=()):
    program = extract(graph, fetches, list(targets), list(feeds), [tuple(t.shape) for t in feeds])
    final, stages = run_pipeline(program, disabled=disabled, verify=True)
    plan = final.analyses["memory_plan"]
    plan.check()
    return final, plan


def _life(plan, program, name):
    return plan.tensors[program.graph.get_tensor_by_name(name)]


def assert_no_overlap(plan: MemoryPlan) -> None:
    """Independent of plan.check(): any two planned tensors in one buffer
    have disjoint live ranges (aliases extend their base's), except an
    in-place write over an input at that input's last use."""
    end = {}
    for life in plan.tensors.values():
        end[life.owner] = max(end.get(life.owner, -1), life.end)
    in_place = {(ip.input, ip.output) for ip in plan.in_place}
    planned = [life for life in plan.tensors.values() if life.kind == PLANNED]
    for life in planned:
        assert life.buffer is not None and plan.buffers[life.buffer].nbytes >= life.nbytes
    for i, a in enumerate(planned):
        for b in planned[i + 1:]:
            if a.buffer != b.buffer:
                continue
            first, second = (a, b) if a.start <= b.start else (b, a)
            if end[first.tensor] < second.start:
                continue
            assert end[first.tensor] == second.start and (first.name, second.name) in in_place, \
                f"{first.name} and {second.name} share buffer {a.buffer} while both are live"


# --------------------------------------------------------------------------
# the MLP training step
# --------------------------------------------------------------------------
def test_mlp_step_peak_bytes_with_reuse_are_lower(capsys):
    final, _ = compile_mlp()
    plan = final.analyses["memory_plan"]
    plan.check()
    assert_no_overlap(plan)
    with capsys.disabled():
        print(f"\nMLP step memory: {plan.peak_bytes} bytes with reuse, {plan.peak_bytes_no_reuse} without, "
              f"{plan.peak_live_bytes} live at most; {len(plan.buffers)} buffers, {len(plan.in_place)} in place")
    assert plan.peak_bytes < 0.75 * plan.peak_bytes_no_reuse
    assert plan.peak_live_bytes <= plan.peak_bytes
    assert plan.in_place
    text = plan.summary()
    assert "buffers for" in text and "with reuse" in text and "without" in text and "in place" in text
    # variables and feeds are not planned buffers
    kinds = {life.tensor.op.type: life.kind for life in plan.tensors.values()}
    assert kinds["variable"] == STATE_KIND and kinds["placeholder"] == FEED and kinds["assign_sub"] == STATE_KIND


# --------------------------------------------------------------------------
# owners, sizes, liveness
# --------------------------------------------------------------------------
def test_sizes_owners_and_live_ranges():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (8, 4), name="x")
        v = gc.Variable(np.ones((8, 4), np.float32), name="v")
        c = gc.constant(np.full((8, 4), 2.0, np.float32), name="c")
        a = gc.exp(x * c + v, name="a")
        r = gc.reshape(a, (32,), name="r")
        s = gc.reduce_sum(gc.cast(r, gc.float64), name="s")
        unused = gc.tanh(a, name="unused")
        out = gc.multiply(s, 2.0, name="out")
    final, plan = _plan(g, [out, r, unused], [x], disabled=("fusion",))
    n = len(plan.schedule)
    assert _life(plan, final, "x:0").kind == FEED
    assert _life(plan, final, "c:0").kind == CONSTANT
    assert _life(plan, final, "v:0").kind == STATE_KIND
    a_life = _life(plan, final, "a:0")
    assert a_life.kind == PLANNED and a_life.nbytes == 8 * 4 * 4
    r_life = _life(plan, final, "r:0")
    assert r_life.kind == ALIAS and r_life.owner is a_life.tensor and r_life.buffer == a_life.buffer
    assert r_life.fetched and r_life.end == n          # a fetch lives to the end, and so its base's buffer
    assert _life(plan, final, "cast:0").nbytes == 32 * 8
    out_life = _life(plan, final, "out:0")
    assert out_life.end == n and out_life.start == final.ops().index(final.fetches[0].op)
    # the buffer of `a` (kept alive by the fetched alias) is not reused after it
    assert all(plan.tensors[t].start <= a_life.start for t in plan.buffers[a_life.buffer].tensors)
    assert [ip.output for ip in plan.in_place if ip.input == "add:0"] == ["a:0"]


def test_dynamic_shapes_are_listed_not_planned():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (None, 3), name="x")
        y = gc.tanh(gc.exp(x), name="y")
    program = extract(g, [y], [], [x])              # shapes not specialized
    plan = plan_memory(program)
    plan.check()
    assert {t.name for t in plan.dynamic} == {"exp:0", "y:0"}
    assert all(life.buffer is None for life in plan.tensors.values())
    assert "dynamic (not planned): exp:0, y:0" in plan.summary()


def test_a_chain_reuses_buffers_and_writes_in_place():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float64, (64, 64), name="x")
        h = x
        for i in range(6):
            h = gc.tanh(h * 1.5, name=f"t{i}")
        y = gc.reduce_sum(h, name="y")
    final, plan = _plan(g, [y], [x], disabled=("fusion",))
    assert_no_overlap(plan)
    # the feed is never written over; each step writes over its dead input
    assert all(ip.input != "x:0" for ip in plan.in_place)
    assert len(plan.in_place) == 11
    assert len(plan.buffers) == 2 and plan.peak_bytes == 64 * 64 * 8 + 8
    assert plan.peak_bytes_no_reuse == 12 * 64 * 64 * 8 + 8
    run([y], {x: np.random.default_rng(0).normal(size=(64, 64))}, graph=g)


def test_no_in_place_over_a_broadcast_read_or_another_dtype():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (16, 16), name="x")
        row = gc.tanh(gc.reduce_sum(x, axis=0, keepdims=True), name="row")       # (1, 16)
        col = gc.exp(gc.reduce_sum(x, axis=1, keepdims=True), name="col")        # (16, 1)
        grid = gc.add(col, row, name="grid")            # reads both at other indices
        wide = gc.cast(gc.sin(grid), gc.float64, name="wide")
        y = gc.reduce_sum(wide, name="y")
    final, plan = _plan(g, [y], [x], disabled=("fusion",))
    assert_no_overlap(plan)
    outputs = {ip.output for ip in plan.in_place}
    assert "grid:0" not in outputs and "wide:0" not in outputs
    assert "sin:0" in outputs                       # sin(grid) can overwrite grid


def test_fetched_tensors_are_not_overwritten_or_released():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (32,), name="x")
        a = gc.exp(x, name="a")
        b = gc.tanh(a, name="b")
        c = gc.sin(b, name="c")
    final, plan = _plan(g, [a, c], [x], disabled=("fusion",))
    assert all(ip.input != "a:0" for ip in plan.in_place)
    assert any(ip.input == "b:0" and ip.output == "c:0" for ip in plan.in_place)
    released = {t.name for ts in plan.release_after.values() for t in ts}
    assert "a:0" not in released and "c:0" not in released and "b:0" in released
    xv = np.linspace(-1, 1, 32, dtype=np.float32)
    av, cv = run([a, c], {x: xv}, graph=g)
    np.testing.assert_allclose(av, np.exp(xv), rtol=1e-6)


def test_fused_kernels_write_in_place_over_inputs_read_at_their_own_index():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (64, 32), name="x")
        b = gc.placeholder(gc.float32, (32,), name="b")
        m = gc.matmul(x, gc.constant(np.eye(32, dtype=np.float32)), name="m")
        y = gc.tanh(m + b, name="y")                   # a kernel reading m elementwise, b broadcast
        z = gc.matmul(y, gc.constant(np.eye(32, dtype=np.float32)), name="z")
    final, plan = _plan(g, [z], [x, b])
    kernel = final.graph.get_operation_by_name("y")
    assert kernel.type == "fused_kernel"
    assert [(ip.op, ip.input) for ip in plan.in_place] == [("y", "m:0")]
    rng = np.random.default_rng(1)
    run([z], {x: rng.normal(size=(64, 32)).astype(np.float32), b: rng.normal(size=32).astype(np.float32)},
        graph=g)


def test_no_in_place_over_an_input_a_kernel_reads_at_other_indices():
    """A body that reads its argument transposed must not overwrite it."""
    from graphc.graph import FuncGraph
    from graphc.passes import Program
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (4, 4), name="x")
        e = gc.exp(x, name="e")
    body = FuncGraph("k", outer=g)
    arg = body.add_arg((4, 4), np.dtype(np.float32))
    flipped = body.create_op("transpose", [arg], {"perm": (1, 0)}).outputs[0]
    body.outputs = [body.create_op("add", [arg, flipped]).outputs[0]]
    kernel = g.create_op("fused_kernel", [e], {"body": body, "kind": "loop", "roots": ("add",),
                                              "sources": (("add", "add", "here:1"),), "refusals": ()}, name="k")
    plan = plan_memory(Program(g, [kernel.outputs[0]], [], [x]))
    plan.check()
    assert plan.in_place == []
    assert plan.tensors[kernel.outputs[0]].buffer != plan.tensors[e].buffer


def test_no_in_place_when_a_value_derived_from_the_input_is_moved():
    """transpose(exp(arg)): exp reads its argument at its own index, but the
    transpose makes the kernel read arg[j, i] while writing out[i, j]."""
    from graphc.graph import FuncGraph
    from graphc.passes import Program
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (4, 4), name="x")
        e = gc.exp(x, name="e")
    body = FuncGraph("k", outer=g)
    arg = body.add_arg((4, 4), np.dtype(np.float32))
    inner = body.create_op("exp", [arg]).outputs[0]
    body.outputs = [body.create_op("transpose", [inner], {"perm": (1, 0)}).outputs[0]]
    kernel = g.create_op("fused_kernel", [e], {"body": body, "kind": "loop", "roots": ("transpose",),
                                              "sources": (("exp", "exp", "here:1"),), "refusals": ()}, name="k")
    plan = plan_memory(Program(g, [kernel.outputs[0]], [], [x]))
    plan.check()
    assert plan.in_place == []


def test_the_memory_pass_only_analyses():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (4,), name="x")
        y = gc.exp(gc.tanh(x), name="y")
    program = extract(g, [y], [], [x], [(4,)])
    final, stages = run_pipeline(program, verify=True)
    fusion, memory = (next(s for s in stages if s.name == n) for n in ("fusion", "memory"))
    assert memory.program.graph is fusion.program.graph and memory.ops_before == memory.ops_after
    assert "memory_plan" not in fusion.program.analyses
    assert any(n.startswith("memory: ") and "with reuse" in n for n in memory.notes)
    assert isinstance(final.analyses["memory_plan"], MemoryPlan)


# --------------------------------------------------------------------------
# the interpreter drops dead intermediates
# --------------------------------------------------------------------------
def _traced_peak(sess, fetch, feeds):
    sess.run(fetch, feeds)            # compile first
    tracemalloc.start()
    try:
        result = sess.run(fetch, feeds)
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


def test_the_interpreter_releases_dead_intermediates():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float64, (500, 500), name="x")
        h = x
        for i in range(8):
            h = gc.sin(h + float(i), name=f"s{i}")     # 2 MB per intermediate
        y = gc.reduce_sum(h, name="y")
    feeds = {x: np.random.default_rng(0).normal(size=(500, 500))}
    peaks, values = [], []
    for disabled in (("fusion", "memory"), ("fusion",), ()):
        config = gc.Config(backend="interpreter", disabled_passes=disabled)
        with gc.Session(graph=g, config=config) as sess:
            peak, value = _traced_peak(sess, y, feeds)
            executable = list(sess._cache.values())[-1]
            assert (executable.release is None) == ("memory" in disabled)
            if not disabled:          # one fused kernel: its body drops dead values too
                assert [op.type for op in executable.program.ops()].count("fused_kernel") == 1
        peaks.append(peak)
        values.append(value)
    without, with_plan, fused = peaks
    assert values[0] == values[1] == values[2]
    assert with_plan < 0.5 * without and fused < 0.5 * without, peaks


# --------------------------------------------------------------------------
# random graphs: the buffer invariant
# --------------------------------------------------------------------------
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.sampled_from([(), ("fusion",)]))
def test_random_graphs_never_share_a_buffer_between_live_tensors(data, disabled):
    g, fetches, feeds, values = random_graph(data)
    program = extract(g, fetches, [], feeds, [tuple(t.shape) for t in feeds])
    expected = run_program(program, values)
    final, _ = run_pipeline(program, disabled=disabled, verify=True)
    plan = final.analyses["memory_plan"]
    plan.check()
    assert_no_overlap(plan)
    assert plan.peak_bytes <= plan.peak_bytes_no_reuse
    assert plan.peak_live_bytes <= plan.peak_bytes
    got = run_program(final, values)            # runs with the plan's releases
    for e, r in zip(expected, got):
        np.testing.assert_allclose(r, e, rtol=1e-12, atol=1e-300, equal_nan=True)
