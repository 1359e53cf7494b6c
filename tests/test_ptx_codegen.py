"""PTX codegen (graphc.codegen.ptx), checked offline: every op's loop-IR
kernels, the fused kernels of optimized programs (MLP training step, W1's
elementwise chain), split reductions and matmuls become PTX that ptxas
assembles for sm_80 and sm_90. Launch plans are checked against the loop IR
(grids cover every iteration), and ops that would need libm are refused by
name. Tests that assemble skip cleanly without ptxas; none needs a GPU."""
import os
import sys

import numpy as np
import pytest

import graphc as gc
from graphc.dump import CompileLog, _active as _active_logs
from graphc.backends import get_backend
from graphc.codegen import llvm_cpu, ptx
from graphc.errors import CompileError
from graphc.lowering import lower_op
from graphc.lowering.matvec import lower_matmul
from graphc.lowering.split_reduction import split_reduction
from graphc.ops import registry
from graphc.session import compile_run

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from benchmarks import workloads  # noqa: E402

needs_ptxas = pytest.mark.skipif(not ptx.ptxas_available(), reason="ptxas (CUDA toolkit) is not installed")
ARCHS = ("sm_80", "sm_90")
LOOP_CLASSES = ("elementwise", "reduction", "layout", "fused")
F32 = np.float32


# ---------------------------------------------------------------------------
# Graphs covering every op with a loop lowering
# ---------------------------------------------------------------------------
def _elementwise(g):
    x = gc.placeholder(gc.float32, (4, 6), name="x")
    y = gc.placeholder(gc.float32, (6,), name="y")
    d = gc.placeholder(gc.float64, (3, 5), name="d")
    i = gc.placeholder(gc.int32, (4, 6), name="i")
    j = gc.placeholder(gc.int64, (6,), name="j")
    b = gc.placeholder(gc.bool, (4, 6), name="b")
    out = []
    for fn in (gc.abs, gc.ceil, gc.cos, gc.erf, gc.exp, gc.expm1, gc.floor, gc.log, gc.log1p, gc.negative,
               gc.reciprocal, gc.round, gc.rsqrt, gc.sigmoid, gc.sign, gc.sin, gc.sqrt, gc.square, gc.tan, gc.tanh):
        out += [fn(x), fn(d)]
    for fn in (gc.abs, gc.negative, gc.sign, gc.square):
        out += [fn(i), fn(j)]
    for fn in (gc.add, gc.subtract, gc.multiply, gc.divide, gc.maximum, gc.minimum, gc.pow, gc.floordiv, gc.mod,
               gc.equal, gc.not_equal, gc.less, gc.less_equal, gc.greater, gc.greater_equal):
        out += [fn(x, y)]
    out += [gc.pow(d, d), gc.mod(d, d), gc.floordiv(d, d)]
    for fn in (gc.add, gc.subtract, gc.multiply, gc.maximum, gc.minimum, gc.floordiv, gc.mod, gc.pow, gc.less):
        out += [fn(i, gc.cast(j, gc.int32)), fn(gc.cast(i, gc.int64), j)]
    out += [gc.logical_and(b, x > 0), gc.logical_or(b, x < 0), gc.logical_not(b), gc.equal(b, x > 1)]
    out += [gc.where(b, x, y), gc.cast(x, gc.int32), gc.cast(i, gc.float64), gc.cast(b, gc.float32),
            gc.cast(x, gc.bool), gc.cast(d, gc.float32), gc.cast(j, gc.int32), gc.ones_like(x), gc.zeros_like(i),
            gc.range(0, 10, 2), gc.range(1.0, 4.0, 0.5), gc.fill((3, 2), 7.0)]
    return out


def _reductions(g):
    x = gc.placeholder(gc.float32, (5, 7, 3), name="x")
    i = gc.placeholder(gc.int32, (5, 7), name="i")
    b = gc.placeholder(gc.bool, (5, 7), name="b")
    out = []
    for fn in (gc.reduce_sum, gc.reduce_mean, gc.reduce_prod, gc.reduce_max, gc.reduce_min):
        out += [fn(x), fn(x, axis=0), fn(x, axis=1), fn(x, axis=[0, 2], keepdims=True)]
    out += [fn(i, axis=1) for fn in (gc.reduce_sum, gc.reduce_prod, gc.reduce_max, gc.reduce_min)]
    out += [gc.reduce_any(b), gc.reduce_all(b, axis=0), gc.argmax(x, axis=1), gc.argmin(x, axis=0),
            gc.argmax(i, axis=0), gc.reduce_logsumexp(x, axis=2), gc.count_nonzero(i)]
    data = gc.placeholder(gc.float32, (6, 4), name="data")
    seg = gc.constant(np.array([0, 2, 1, 0, 2, 1], dtype=np.int32))
    out += [gc.unsorted_segment_sum(data, seg, 3)]
    return out


def _layout(g):
    x = gc.placeholder(gc.float32, (4, 6), name="x")
    z = gc.placeholder(gc.float32, (2, 3, 4), name="z")
    idx = gc.constant(np.array([2, 0, 3], dtype=np.int32))
    out = [gc.transpose(x), gc.transpose(z, [2, 0, 1]), gc.reshape(x, (6, 4)), gc.expand_dims(x, 1),
           gc.squeeze(gc.reshape(x, (1, 4, 6))), gc.broadcast_to(gc.placeholder(gc.float32, (1, 6)), (5, 6)),
           gc.concat([x, x * 2.0], axis=1), gc.stack([x, x + 1.0], axis=1), gc.tile(x, [2, 3]),
           gc.pad(x, [[1, 2], [0, 3]], constant_values=1.5), gc.getitem(x, (slice(1, 4), slice(None, None, 2))),
           gc.reverse(x, 1), gc.gather(x, idx, axis=0), gc.gather(x, idx, axis=1),
           gc.gather_nd(z, gc.constant(np.array([[0, 1], [1, 2]], dtype=np.int32))),
           gc.one_hot(gc.constant(np.array([1, 0, 3], dtype=np.int32)), 4), gc.identity(x), gc.stop_gradient(x)]
    out += list(gc.split(x, 2, axis=1)) + list(gc.unstack(z, axis=1))
    out += [gc.placeholder_with_default(x, (4, 6)) * 2.0]
    return out


def _gradients(g):
    """Gradients bring the adjoint ops: broadcast_reduced, sum_to_shape_of,
    gather_grad, gather_nd_grad, pad_adjoint, strided_slice_grad,
    reduction_count, broadcast_like, split_like, reshape_like, fill_like..."""
    x = gc.placeholder(gc.float32, (4, 6), name="x")
    y = gc.placeholder(gc.float32, (6,), name="y")
    z = gc.placeholder(gc.float32, (2, 3, 4), name="z")
    idx = gc.constant(np.array([2, 0, 3, 2], dtype=np.int32))
    loss = (gc.reduce_sum(gc.gather(x, idx, axis=0) * y)
            + gc.reduce_mean(gc.pad(x, [[1, 1], [2, 0]]) ** 2)
            + gc.reduce_sum(gc.getitem(x, (slice(0, 3), slice(1, None, 2))))
            + gc.reduce_max(x, axis=1)[0] + gc.reduce_sum(gc.concat(gc.split(x * y, 3, axis=1), axis=0))
            + gc.reduce_sum(gc.gather_nd(z, gc.constant(np.array([[0, 1], [1, 2]], dtype=np.int32))))
            + gc.reduce_sum(gc.tile(y, [2]) * 0.5) + gc.reduce_sum(gc.stack(gc.unstack(z, axis=2), axis=0)))
    return gc.gradients(loss, [x, y, z])


def _mlp(g):
    x = gc.placeholder(gc.float32, (16, 12), name="x")
    labels = gc.placeholder(gc.int32, (16,), name="labels")
    w1 = gc.Variable(np.ones((12, 8), F32) * 0.1, name="W1")
    b1 = gc.Variable(np.zeros(8, F32), name="b1")
    w2 = gc.Variable(np.ones((8, 3), F32) * 0.1, name="W2")
    b2 = gc.Variable(np.zeros(3, F32), name="b2")
    h = gc.nn.relu(gc.matmul(x, w1) + b1)
    logits = gc.matmul(h, w2) + b2
    loss = gc.reduce_mean(gc.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    grads = gc.gradients(loss, [w1, b1, w2, b2])
    return [loss] + grads


GRAPHS = {"elementwise": _elementwise, "reductions": _reductions, "layout": _layout, "gradients": _gradients,
          "mlp": _mlp}


def _adjoints(g):
    """Adjoint ops that gradients only create for run-time shapes
    (reshape_like, broadcast_like, split_like, reduction_count, REFLECT
    pad_adjoint), built directly with static shapes, as a program specialized
    on fed shapes can hold them."""
    from graphc.ops.core import apply_op
    x = gc.placeholder(gc.float32, (4, 6), name="x")
    w = gc.placeholder(gc.float32, (4, 3), name="w")
    c = gc.concat([x, w], axis=1)
    return [apply_op("broadcast_like", [gc.placeholder(gc.float32, (1, 6)), x]),
            apply_op("reshape_like", [gc.placeholder(gc.float32, (24,)), x]),
            *apply_op("split_like", [c, x, w], {"axis": 1}),
            apply_op("pad_adjoint", [gc.placeholder(gc.float32, (6, 9))],
                     {"paddings": ((1, 1), (2, 1)), "mode": "REFLECT"}),
            apply_op("pad_adjoint", [gc.placeholder(gc.float32, (6, 9))],
                     {"paddings": ((1, 1), (2, 1)), "mode": "SYMMETRIC"}),
            apply_op("reduction_count", [x], {"axis": (0,), "dtype": np.dtype(np.float32)})]


GRAPHS = {"elementwise": _elementwise, "reductions": _reductions, "layout": _layout, "gradients": _gradients,
          "mlp": _mlp}


def _dynamic(g):
    """Unknown dims at build time give the run-time-shape ops (reshape_like,
    broadcast_like, split_like, reduction_count, range over tensors...); fed
    with static shapes, the compiled program has them with static shapes."""
    x = gc.placeholder(gc.float32, (None, 6), name="x")
    w = gc.placeholder(gc.float32, (None, 3), name="w")
    n = gc.placeholder(gc.int32, (), name="n")
    loss = (gc.reduce_mean(gc.reshape(x, (-1, 2)) ** 2) + gc.reduce_sum(gc.concat([x, w], axis=1) * 2.0)
            + gc.reduce_mean(gc.pad(x, [[1, 1], [2, 1]], mode="REFLECT") * 3.0)
            + gc.reduce_sum(gc.broadcast_to(gc.reduce_sum(x, axis=0), (2, 6))))
    out = gc.gradients(loss, [x, w])
    out += [gc.range(n, 40, 3), gc.cast(gc.range(0, n), gc.float32) * 0.5]
    return out


GRAPHS = {"elementwise": _elementwise, "reductions": _reductions, "layout": _layout, "gradients": _gradients,
          "mlp": _mlp, "adjoints": _adjoints}


def _kernels_of(ops):
    out = {}
    for op in ops:
        if op.opdef.lowering in LOOP_CLASSES:
            try:
                out[op] = lower_op(op)
            except CompileError:
                if op.type == "fused_kernel":
                    raise
        elif op.type == "matmul":
            out[op] = lower_matmul(op)
    return out


def _graph_kernels(build):
    """(graph, kernels of its single ops, kernels of its optimized program's
    ops): single ops from the graph as built and from its program compiled
    without folding or fusion."""
    g = gc.Graph()
    with g.as_default():
        fetches = [t for t in build(g) if t is not None]
    single = _kernels_of(g._ops)
    feeds = [op.outputs[0] for op in g._ops if op.type == "placeholder"]
    shapes = [tuple(t.shape) for t in feeds]
    for disabled in (("fold", "fusion"), ()):
        ex = compile_run(g, fetches, [], feeds, shapes, gc.Config(backend="interpreter", disabled_passes=disabled),
                         get_backend("interpreter"))
        kernels = _kernels_of(ex.plan)
        if disabled:
            single.update(kernels)
        else:
            optimized = list(kernels.values())
    return g, single, optimized


_cache = {}


def _kernels(name):
    if name not in _cache:
        _cache[name] = _graph_kernels(GRAPHS[name])
    return _cache[name]


def _dedup(kernels):
    seen, out = set(), []
    for k in kernels:
        key = llvm_cpu.kernel_key(k)
        if key not in seen:
            seen.add(key)
            out.append(k)
    return out


# ---------------------------------------------------------------------------
# Launch plans mean what the loop IR means
# ---------------------------------------------------------------------------
def _check_plan(module):
    entries = set(module.entries)
    for pk in module.kernels:
        assert pk.launches or pk.strategy == "empty"
        for launch in pk.launches:
            assert launch.entry in entries
            assert f".entry {launch.entry}(" in module.ptx
            for a in launch.args:
                assert a.kind in ("param", "scratch")
                assert a.index < (len(pk.params) if a.kind == "param" else len(pk.scratch))
            assert all(v >= 1 for v in launch.grid + launch.block)
            assert launch.block[0] * launch.block[1] * launch.block[2] <= 1024
        # every output is written by some launch
        written = {a.index for launch in pk.launches for a in launch.args if a.kind == "param"}
        for i, p in enumerate(pk.params):
            if p.role == "output" and p.size:
                assert i in written, (pk.name, p.name)


def test_every_loop_lowered_op_type_has_a_kernel_here():
    """The graphs above produce a kernel for every registry op that has a
    loop lowering (those lower_op refuses in every graph are listed, with why)."""
    covered = set()
    for name in GRAPHS:
        _, single, _ = _kernels(name)
        covered |= {op.type for op in single}
    wanted = {n for n, d in registry.all_ops().items() if d.lowering in ("elementwise", "reduction", "layout")}
    # Not lowered to loop IR by design: dynamic shapes/values or no computation
    # (lowering/lower.py), so no native backend ever compiles them.
    never = {"shape_of", "reshape_dynamic", "broadcast_to_dynamic", "custom_gradient",
             "range",   # its length depends on the bounds' values: never a static shape
             # scatter-adds: no loop lowering (host steps on every native backend)
             "gather_grad", "gather_nd_grad", "unsorted_segment_sum"}
    missing = wanted - covered - never
    assert not missing, f"no graph here builds a lowered kernel for: {sorted(missing)}"
    assert "matmul" in covered


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_plans_cover_every_output(name):
    _, single, optimized = _kernels(name)
    kernels = _dedup(list(single.values()) + optimized)
    module = ptx.compile_ptx(kernels)
    assert module.arch == ptx.DEFAULT_ARCH
    assert len(module.kernels) == len(kernels)
    _check_plan(module)


@needs_ptxas
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_every_kernel_assembles_with_ptxas(name, arch):
    _, single, optimized = _kernels(name)
    kernels = _dedup(list(single.values()) + optimized)
    module = ptx.compile_ptx(kernels, arch)
    assert f".target {arch}" in module.ptx
    ptx.check_with_ptxas(module.ptx, arch)


@needs_ptxas
@pytest.mark.parametrize("arch", ARCHS)
def test_w1_fused_kernels_and_gradient_assemble(arch):
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (1 << 20,), name="x")
        value = workloads.w1_graphc_fn(x)
        grad = gc.gradients(value, [x])[0]
    ex = compile_run(g, [value, grad], [], [x], [(1 << 20,)], gc.Config(backend="interpreter"),
                     get_backend("interpreter"))
    fused = [lower_op(op) for op in ex.plan if op.type == "fused_kernel"]
    assert fused, "W1 should compile to fused kernels"
    module = ptx.compile_ptx(fused, arch)
    _check_plan(module)
    strategies = {k.strategy for k in module.kernels}
    # the full sum over 2**20 elements is a block-level tree reduction
    assert "block_reduce" in strategies
    ptx.check_with_ptxas(module.ptx, arch)


# ---------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------
def _op_kernel(fn, *shapes, dtype=gc.float32):
    g = gc.Graph()
    with g.as_default():
        ins = [gc.placeholder(dtype, s) for s in shapes]
        out = fn(*ins)
    return lower_op(out.op) if out.op.type != "matmul" else lower_matmul(out.op)


def test_elementwise_nests_become_one_thread_per_element():
    k = _op_kernel(lambda a, b: gc.exp(a) * b, (3, 5, 7), (7,))
    module = ptx.compile_ptx([k])
    (launch,) = module.kernels[0].launches
    assert module.kernels[0].strategy == "parallel"
    assert launch.threads >= 3 * 5 * 7 > launch.threads - launch.block[0]


def test_collapsed_nest_indexes_like_the_original():
    from graphc.lowering import evaluate
    k = _op_kernel(lambda a: gc.transpose(a, [2, 0, 1]), (3, 4, 5))
    flat = ptx.collapse_parallel_nest(k)
    assert len(flat.body) == 1 and flat.body[0].extent == 60
    a = np.random.default_rng(0).standard_normal((3, 4, 5)).astype(F32)
    np.testing.assert_array_equal(evaluate(flat, [a])[0], evaluate(k, [a])[0])
    np.testing.assert_array_equal(evaluate(flat, [a])[0], a.transpose(2, 0, 1))


def test_column_reduction_keeps_one_thread_per_column():
    k = _op_kernel(lambda a: gc.reduce_sum(a, axis=0), (50, 300))
    assert llvm_cpu.split_loop(k) is None          # the CPU interchanges it
    module = ptx.compile_ptx([k])
    pk = module.kernels[0]
    assert pk.strategy == "parallel" and pk.launches[0].threads >= 300
    assert ".local" not in module.ptx               # no stack tiles of accumulators


def test_long_reductions_use_split_reduction_scratch_without_block_reductions():
    k = _op_kernel(lambda a: gc.reduce_sum(a), (512, 1024))
    sr = split_reduction(k)
    assert sr is not None
    module = ptx.compile_ptx([k], block_reductions=False)
    pk = module.kernels[0]
    assert pk.strategy == "split_reduction"
    assert pk.scratch == sr.scratch
    assert [launch.entry.rsplit("_", 1)[-1] for launch in pk.launches][-1] == "final"
    assert any(a.kind == "scratch" for launch in pk.launches for a in launch.args)
    _check_plan(module)


@pytest.mark.parametrize("fn,shape,blocks,width,tail", [
    (lambda a: gc.reduce_sum(a), (1 << 20,), 256, 1, False),          # full: 256 blocks, then one
    (lambda a: gc.reduce_sum(a), (512, 1024), 256, 1, False),         # a 2-D full reduction is flattened
    (lambda a: gc.reduce_max(a), (100003,), 48, 1, True),             # rows not a multiple of the threads
    (lambda a: gc.reduce_sum(a, axis=1), (3, 70000), 34, 3, True),    # long rows, few of them
    (lambda a: gc.reduce_mean(a, axis=0), (70000, 3), 34, 3, True),   # long columns, few of them
    (lambda a: gc.reduce_sum(a, axis=1), (64, 1500), 1, 64, True),    # one block per row
])
def test_long_reductions_are_block_level_tree_reductions(fn, shape, blocks, width, tail):
    k = _op_kernel(fn, shape)
    module = ptx.compile_ptx([k])
    pk = module.kernels[0]
    assert pk.strategy == "block_reduce"
    kinds = [launch.entry.rsplit("_", 1)[-1] for launch in pk.launches]
    assert kinds == (["tail"] if tail else []) + ["block"] + (["blocks"] if blocks > 1 else [])
    block = pk.launches[kinds.index("block")]
    assert block.block == (ptx.BLOCK_REDUCE_THREADS, 1, 1) and block.grid == (width * blocks, 1, 1)
    if blocks > 1:
        assert pk.launches[-1].grid == (width, 1, 1) and pk.launches[-1].block[0] >= blocks
    assert ".shared" in module.ptx and "bar.sync" in module.ptx
    _check_plan(module)


def test_short_or_many_reductions_keep_one_thread_per_result():
    for fn, shape in ((lambda a: gc.reduce_sum(a, axis=1), (64, 300)),       # short rows
                      (lambda a: gc.reduce_sum(a, axis=1), (10000, 2000)),    # enough results to fill a GPU
                      (lambda a: gc.reduce_sum(a), (200,))):
        pk = ptx.compile_ptx([_op_kernel(fn, shape)]).kernels[0]
        assert pk.strategy in ("parallel", "single_thread"), shape


@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_2d_matmuls_use_the_tiled_shared_memory_kernel(ta, tb):
    a_shape = (37, 20) if ta else (20, 37)
    b_shape = (45, 37) if tb else (37, 45)
    k = _op_kernel(lambda a, b: gc.matmul(a, b, transpose_a=ta, transpose_b=tb), a_shape, b_shape)
    module = ptx.compile_ptx([k])
    pk = module.kernels[0]
    assert pk.strategy == "tiled_matmul"
    (launch,) = pk.launches
    t = ptx.MATMUL_TILE
    assert launch.block == (t, t, 1) and launch.grid == (-(-45 // t), -(-20 // t), 1)
    assert ".shared" in module.ptx and "bar.sync" in module.ptx


def test_batched_matmuls_tile_each_batch_in_grid_z():
    batched = _op_kernel(lambda a, b: gc.matmul(a, b), (3, 4, 5), (3, 5, 6))
    broadcast = _op_kernel(lambda a, b: gc.matmul(a, b, transpose_b=True), (2, 1, 20, 17), (3, 25, 17))
    module = ptx.compile_ptx([batched, broadcast])
    assert [k.strategy for k in module.kernels] == ["tiled_matmul", "tiled_matmul"]
    assert module.kernels[0].launches[0].grid == (1, 1, 3)
    assert module.kernels[1].launches[0].grid == (2, 2, 6)


def test_other_matmuls_run_their_loop_ir():
    ints = _op_kernel(lambda a, b: gc.matmul(a, b), (4, 5), (5, 6), dtype=gc.int32)
    vector = _op_kernel(lambda a, b: gc.matmul(a, b), (40, 5), (5, 1))
    module = ptx.compile_ptx([ints, vector])
    assert [k.strategy for k in module.kernels] == ["parallel", "parallel"]
    assert module.kernels[0].launches[0].threads >= 4 * 6


@needs_ptxas
@pytest.mark.parametrize("arch", ARCHS)
def test_strategy_kernels_assemble(arch):
    kernels = [
        _op_kernel(lambda a: gc.reduce_sum(a), (512, 1024)),
        _op_kernel(lambda a: gc.reduce_max(a, axis=0), (70000, 3)),
        _op_kernel(lambda a: gc.reduce_max(a), (100003,)),
        _op_kernel(lambda a: gc.reduce_any(a > 0), (3, 70000)),
        _op_kernel(lambda a: gc.reduce_sum(a, axis=1), (64, 1500), dtype=gc.int32),
        _op_kernel(lambda a: gc.reduce_prod(a), (5000,), dtype=gc.float64),
        _op_kernel(lambda a: gc.reduce_sum(a, axis=1), (3, 70000)),
        _op_kernel(lambda a: gc.argmax(a, axis=0), (40000, 5)),
        _op_kernel(lambda a, b: gc.matmul(a, b), (33, 17), (17, 65)),
        _op_kernel(lambda a, b: gc.matmul(a, b, transpose_a=True, transpose_b=True), (17, 33), (65, 17)),
        _op_kernel(lambda a, b: gc.matmul(a, b), (3, 4, 5), (3, 5, 6)),
        _op_kernel(lambda a, b: gc.matmul(a, b, transpose_a=True), (2, 1, 17, 20), (3, 17, 25)),
        _op_kernel(lambda a, b: gc.matmul(a, b), (8, 5), (5, 6), dtype=gc.float64),
    ]
    module = ptx.compile_ptx(kernels, arch)
    _check_plan(module)
    assert {"block_reduce", "tiled_matmul", "parallel"} <= {k.strategy for k in module.kernels}
    ptx.check_with_ptxas(module.ptx, arch)
    split = ptx.compile_ptx(kernels[:4], arch, block_reductions=False)
    assert "split_reduction" in {k.strategy for k in split.kernels}
    ptx.check_with_ptxas(split.ptx, arch)


# ---------------------------------------------------------------------------
# Errors, configuration, dumps
# ---------------------------------------------------------------------------
def test_math_polynomials_use_fused_multiply_adds_like_the_cpu():
    module = ptx.compile_ptx([_op_kernel(lambda a: gc.exp(a), (100,))])
    assert "fma.rn.f32" in module.ptx


def test_ops_that_would_call_libm_are_refused_by_name(monkeypatch):
    monkeypatch.setattr(llvm_cpu, "USE_LLVM_MATH", False)
    g = gc.Graph()
    with g.as_default():
        y = gc.log1p(gc.placeholder(gc.float32, (8,)), name="my_log1p")
        z = gc.exp(gc.placeholder(gc.float32, (8,)), name="my_exp")
    with pytest.raises(CompileError, match="my_log1p"):
        ptx.compile_ptx([lower_op(y.op)])
    with pytest.raises(CompileError, match="my_exp"):
        ptx.compile_ptx([lower_op(z.op)])
    monkeypatch.setattr(llvm_cpu, "USE_LLVM_MATH", True)
    ptx.compile_ptx([lower_op(y.op), lower_op(z.op)])


def test_bad_architectures_are_compile_errors(monkeypatch):
    k = _op_kernel(lambda a: a + 1.0, (4,))
    with pytest.raises(CompileError, match="sm_XY"):
        ptx.compile_ptx([k], arch="compute_80")
    monkeypatch.setattr(ptx, "DEFAULT_ARCH", "sm_90")
    assert ".target sm_90" in ptx.compile_ptx([k]).ptx


@needs_ptxas
def test_ptxas_errors_are_compile_errors_with_its_message():
    k = _op_kernel(lambda a: a * 2.0, (64,))
    text = ptx.compile_ptx([k]).ptx.replace("ret;", "bogus.instruction;", 1)
    with pytest.raises(CompileError, match="bogus"):
        ptx.check_with_ptxas(text, "sm_80")


def test_the_ptx_text_goes_to_the_dump(tmp_path):
    k = _op_kernel(lambda a: gc.tanh(a), (100,))
    records = []
    log = CompileLog(records, directory=str(tmp_path))
    _active_logs.logs.append(log)
    try:
        module = ptx.compile_ptx([k], name="dumped")
    finally:
        _active_logs.logs.pop()
    assert (tmp_path / "dumped.ptx").read_text() == module.ptx
    assert "ptx: codegen" in log.timings


def test_the_ptx_backend_without_a_gpu_is_a_clear_error():
    from graphc.runtime import cuda
    previous = cuda.use_emulator(False)
    try:
        if cuda.available():
            pytest.skip("this machine has a usable GPU")
        with pytest.raises(CompileError, match="CUDA|GPU|driver"):
            gc.Session(config=gc.Config(backend="ptx"))
        with pytest.raises(cuda.CudaUnavailableError):
            cuda.get_context()
        assert cuda.unavailable_reason()
    finally:
        cuda.use_emulator(previous)
