"""gc.save_graph / gc.load_graph: round trips keep every op, name, attr,
shape, source line, gradient link, variable and collection, and the loaded
graph runs (and trains) exactly like the original, in this process and in
another one; bad files are refused with GraphFormatError."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import graphc as gc
from graphc import serialize
from graphc.errors import ExportError, GraphFormatError
from graphc.graph import FuncGraph

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
INTERP = gc.Config(backend="interpreter")


# ---- helpers -------------------------------------------------------------------------------------
def roundtrip(graph, tmp_path, name="g.graph"):
    path = str(tmp_path / name)
    assert gc.save_graph(graph, path) == path
    return gc.load_graph(path)


def assert_same_value(a, b, where, captures=True):
    if isinstance(a, FuncGraph):
        assert isinstance(b, FuncGraph), where
        assert a.name == b.name, where
        assert_same_graph(a, b, where, captures)
        assert [t.name for t in a.inputs] == [t.name for t in b.inputs], where
        assert [t.name for t in a.outputs] == [t.name for t in b.outputs], where
        if captures:
            assert [(o.name, i.name) for o, i in a.captures] == [(o.name, i.name) for o, i in b.captures], where
        return
    assert type(a) is type(b), f"{where}: {type(a).__name__} became {type(b).__name__}"
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_value(x, y, f"{where}[{i}]", captures)
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            assert_same_value(a[k], b[k], f"{where}.{k}", captures)
    elif isinstance(a, (float, np.floating)) and np.isnan(a):
        assert np.isnan(b), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_graph(g1, g2, where="graph", captures=True):
    ops1, ops2 = g1.get_operations(), g2.get_operations()
    assert [op.name for op in ops1] == [op.name for op in ops2], where
    for a, b in zip(ops1, ops2):
        at = f"{where}/{a.name}"
        assert a.type == b.type, at
        assert [t.name for t in a.inputs] == [t.name for t in b.inputs], at
        assert [c.name for c in a.control_inputs] == [c.name for c in b.control_inputs], at
        assert [(t.shape, t.dtype) for t in a.outputs] == [(t.shape, t.dtype) for t in b.outputs], at
        assert tuple(a.source) == tuple(b.source), at
        assert (a.gradient_of is None) == (b.gradient_of is None), at
        if a.gradient_of is not None:
            assert a.gradient_of.name == b.gradient_of.name and b.gradient_of.graph is not None, at
        assert_same_value(a.attrs, b.attrs, at, captures)


def build_mlp():
    """An MLP with an Adam training op (gradients, slots, global step)."""
    rng = np.random.default_rng(0)
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (None, 5), name="x")
        labels = gc.placeholder(gc.int64, (None,), name="labels")
        with gc.name_scope("hidden"):
            w1 = gc.Variable(rng.normal(size=(5, 8)).astype(np.float32), name="w")
            b1 = gc.Variable(np.zeros(8, np.float32), name="b")
        with gc.name_scope("logits"):
            w2 = gc.Variable(rng.normal(size=(8, 3)).astype(np.float32), name="w")
            b2 = gc.Variable(np.zeros(3, np.float32), name="b")
        h = gc.nn.relu(x @ w1 + b1)
        logits = h @ w2 + b2
        loss = gc.reduce_mean(gc.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits),
                              name="loss")
        step = gc.train.get_or_create_global_step()
        train = gc.train.AdamOptimizer(0.05).minimize(loss, global_step=step, name="train")
        gc.global_variables_initializer()
    return g, {"x": x, "labels": labels, "loss": loss, "train": train}


def mlp_feed():
    rng = np.random.default_rng(1)
    return {"x:0": rng.normal(size=(6, 5)).astype(np.float32), "labels:0": np.arange(6) % 3}


def train_steps(graph, steps=3):
    """Initialize, run ``steps`` training steps; the losses and final variables."""
    feed = mlp_feed()
    with gc.Session(graph=graph, config=INTERP) as sess:
        sess.run("init")
        losses = [sess.run(["loss:0", "train"], feed)[0] for _ in range(steps)]
        values = {v.name: sess.run(v) for v in gc.global_variables(graph)}
    return losses, values


# ---- round trips that run ------------------------------------------------------------------------
def test_mlp_with_adam_round_trips_and_trains_identically(tmp_path):
    g, m = build_mlp()
    g2 = roundtrip(g, tmp_path)
    assert_same_graph(g, g2)
    losses, values = train_steps(g)
    losses2, values2 = train_steps(g2)
    assert np.array_equal(losses, losses2)
    assert values.keys() == values2.keys()
    for name in values:
        np.testing.assert_array_equal(values[name], values2[name], err_msg=name)


def test_variables_and_collections_are_restored(tmp_path):
    g, _ = build_mlp()
    g2 = roundtrip(g, tmp_path)
    assert [v.name for v in gc.global_variables(g2)] == [v.name for v in gc.global_variables(g)]
    assert [v.name for v in gc.trainable_variables(g2)] == ["hidden/w:0", "hidden/b:0", "logits/w:0", "logits/b:0"]
    for v, v2 in zip(gc.global_variables(g), gc.global_variables(g2)):
        assert isinstance(v2, gc.Variable) and v2.graph is g2
        assert (v2.shape, v2.dtype, v2.trainable) == (v.shape, v.dtype, v.trainable)
        assert v2.initializer.name == v.initializer.name and v2.initial_value.name == v.initial_value.name
    step = gc.train.get_global_step(g2)
    assert step is not None and step.name == "global_step:0" and not step.trainable


def test_loaded_variables_work_with_saver_both_ways(tmp_path):
    g, _ = build_mlp()
    g2 = roundtrip(g, tmp_path)
    _, trained = train_steps(g2, steps=2)
    feed = mlp_feed()
    with gc.Session(graph=g2, config=INTERP) as sess:
        sess.run("init")
        sess.run("train", feed)
        sess.run("train", feed)
        prefix = gc.train.Saver().save(sess, str(tmp_path / "ckpt" / "model"))
    with gc.Session(graph=g, config=INTERP) as sess:     # restore into the original graph
        gc.train.Saver().restore(sess, prefix)
        for v in gc.global_variables(g):
            np.testing.assert_array_equal(sess.run(v), trained[v.name], err_msg=v.name)


def test_loaded_graph_can_be_extended_without_name_clashes(tmp_path):
    g, m = build_mlp()
    g2 = roundtrip(g, tmp_path)
    with g2.as_default():
        loss = g2.get_tensor_by_name("loss:0")
        grads = gc.gradients(loss, gc.trainable_variables(g2))
        with gc.name_scope("hidden"):
            extra = gc.Variable(np.ones(2, np.float32), name="w")
        more = gc.gradients(loss, gc.trainable_variables(g2)[:1])
    assert extra.name == "hidden_1/w:0"
    assert grads[0].name.startswith("gradients_") and more[0].op.name.split("/")[0] != grads[0].op.name.split("/")[0]
    names = [op.name for op in g2.get_operations()]
    assert len(names) == len(set(names))
    with gc.Session(graph=g2, config=INTERP) as sess:
        sess.run(gc.variables_initializer(gc.global_variables(g2)))
        loaded = sess.run(grads, mlp_feed())
    with gc.Session(graph=g, config=INTERP) as sess:
        sess.run("init")
        with g.as_default():
            original = sess.run(gc.gradients(m["loss"], gc.trainable_variables(g)), mlp_feed())
    for a, b in zip(original, loaded):
        np.testing.assert_array_equal(a, b)


def build_control_flow():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float64, (3,), name="x")
        v = gc.Variable(np.array([1.0, 2.0, 3.0]), name="v")

        def body(i, acc):
            # a cond nested in a loop body, capturing x from two levels up
            acc = gc.cond(gc.reduce_sum(acc) > 0, lambda: acc * 0.5 + x, lambda: acc - x * v)
            return i + 1, acc

        n, out = gc.while_loop(lambda i, acc: i < 4, body, [gc.constant(0), x * 2.0], maximum_iterations=10)
        picked = gc.cond(n > 2, lambda: gc.reduce_sum(out), lambda: gc.constant(0.0, gc.float64), name="pick")
        loss = gc.reduce_sum(out * out, name="loss") + picked
        gx, gv = gc.gradients(loss, [x, v])
        gc.global_variables_initializer()
    return g, [loss, gx, gv, n]


def test_control_flow_and_its_gradients_round_trip(tmp_path):
    g, fetches = build_control_flow()
    g2 = roundtrip(g, tmp_path)
    assert_same_graph(g, g2)
    feed = {"x:0": np.array([0.3, -1.2, 0.7])}
    results = []
    for graph in (g, g2):
        with gc.Session(graph=graph, config=INTERP) as sess:
            sess.run("init")
            results.append(sess.run([t.name for t in fetches], feed))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_subgraphs_shared_by_several_ops_stay_shared(tmp_path):
    g, _ = build_control_flow()

    def subgraphs(graph, out):
        for op in graph.get_operations():
            for fg in op.subgraphs():
                out.append(fg)
                subgraphs(fg, out)
        return out

    before, after = subgraphs(g, []), subgraphs(roundtrip(g, tmp_path), [])
    assert len(before) == len(after)
    assert len({id(f) for f in before}) == len({id(f) for f in after}) < len(before)
    for fg in after:
        assert fg.outer is not None and all(t.op.type == "arg" for t in fg.inputs)


def test_second_derivatives_of_a_loaded_graph(tmp_path):
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float64, (2,), name="x")
        y = gc.reduce_sum(gc.sin(x) * x, name="y")
    g2 = roundtrip(g, tmp_path)
    with g2.as_default():
        h, = gc.hessians(g2.get_tensor_by_name("y:0"), [g2.get_tensor_by_name("x:0")])
    xv = np.array([0.4, 1.1])
    with gc.Session(graph=g2, config=INTERP) as sess:
        got = sess.run(h, {"x:0": xv})
    np.testing.assert_allclose(got, np.diag(2 * np.cos(xv) - xv * np.sin(xv)), rtol=1e-12)


def build_random():
    g = gc.Graph()
    with g.as_default():
        draws = {"normal": gc.random_normal((2, 3), seed=7),
                 "uniform": gc.random_uniform((4,), minval=-1.0, maxval=2.0, seed=8),
                 "ints": gc.random_uniform((5,), minval=0, maxval=10, dtype=gc.int64, seed=9),
                 "truncated": gc.truncated_normal((3,), dtype=gc.float64, seed=10),
                 "shuffle": gc.random_shuffle(gc.constant(np.arange(6)), seed=11),
                 "unseeded": gc.random_normal((2,))}      # from the Session's generator
        for name, t in draws.items():
            gc.identity(t, name=name)
    return g


RANDOM_FETCHES = ["normal:0", "uniform:0", "ints:0", "truncated:0", "shuffle:0", "unseeded:0"]


def random_draws(graph):
    with gc.Session(graph=graph, config=gc.Config(backend="interpreter", seed=3)) as sess:
        return [sess.run(RANDOM_FETCHES) for _ in range(2)]


def test_random_ops_with_seeds_draw_the_same_values(tmp_path):
    g = build_random()
    g2 = roundtrip(g, tmp_path)
    first, second = random_draws(g), random_draws(g2)
    for run_a, run_b in zip(first, second):
        for a, b in zip(run_a, run_b):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0][0], first[1][0])     # successive runs still differ


def test_load_in_a_subprocess_gives_the_same_results(tmp_path):
    g, fetches = build_control_flow()
    path = str(tmp_path / "cf.graph")
    gc.save_graph(g, path)
    gc.save_graph(build_random(), str(tmp_path / "random.graph"))
    feed = np.array([0.3, -1.2, 0.7])
    with gc.Session(graph=g, config=INTERP) as sess:
        sess.run("init")
        expected = sess.run([t.name for t in fetches], {"x:0": feed})
    script = f"""
import sys, numpy as np, graphc as gc
g = gc.load_graph({path!r})
with gc.Session(graph=g, config=gc.Config(backend="interpreter")) as sess:
    sess.run("init")
    out = sess.run({[t.name for t in fetches]!r}, {{"x:0": np.array({feed.tolist()!r})}})
r = gc.load_graph({str(tmp_path / "random.graph")!r})
with gc.Session(graph=r, config=gc.Config(backend="interpreter", seed=3)) as sess:
    draws = [sess.run({RANDOM_FETCHES!r}) for _ in range(2)]
np.savez({str(tmp_path / "out.npz")!r}, *out, *[a for run in draws for a in run])
"""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", script], cwd=str(tmp_path), env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    with np.load(str(tmp_path / "out.npz")) as got:
        arrays = [got[f"arr_{i}"] for i in range(len(got.files))]
    for a, b in zip(expected, arrays[:len(expected)]):
        np.testing.assert_array_equal(a, b)
    draws = [a for run in random_draws(build_random()) for a in run]
    for a, b in zip(draws, arrays[len(expected):]):
        np.testing.assert_array_equal(a, b)


def test_a_pipeline_program_graph_round_trips(tmp_path):
    # Extracted programs share the user's subgraphs, whose enclosing graph is
    # not part of the saved graph: they load enclosed by the loaded graph.
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float64, (3,), name="x")
        y = gc.cond(gc.reduce_sum(x) > 0, lambda: gc.exp(x), lambda: x * x)
    program = gc.passes.extract(g, [y], [], [x], [(3,)])
    doc, _ = serialize.to_document(program.graph)
    assert [f["outer"] for f in doc["functions"]] == [None, None]
    g2 = roundtrip(program.graph, tmp_path)
    assert_same_graph(program.graph, g2, captures=False)
    for xv in (np.array([0.3, -1.2, 0.7]), np.array([-0.3, -1.2, 0.7])):
        with gc.Session(graph=g, config=INTERP) as s1, gc.Session(graph=g2, config=INTERP) as s2:
            np.testing.assert_array_equal(s1.run(y, {x: xv}), s2.run(y.name, {"x:0": xv}))


# ---- every kind of attribute -----------------------------------------------------------------------
@pytest.fixture
def attrs_op():
    """A throwaway op type that accepts any attrs (removed again so the op
    table stays as shipped)."""
    from graphc.ops import registry
    name = "test_serialize_attrs"
    registry.register(registry.OpDef(name=name, compute=lambda x, **attrs: x, lowering=registry.ELEMENTWISE,
                                     attrs=tuple(ODD_ATTRS), infer=lambda x, **attrs: (x.shape, x.dtype)))
    try:
        yield name
    finally:
        del registry._REGISTRY[name]


ODD_ATTRS = {
    "int": 7, "big_int": 2 ** 70, "neg": -3, "float": 0.1, "neg_zero": -0.0, "nan": float("nan"),
    "inf": float("inf"), "minus_inf": float("-inf"), "bool": True, "false": False, "str": "SAME",
    "unicode": "größe ∂", "none": None, "empty_tuple": (), "shape": (None, 3, 0),
    "nested": ((0, 0), (1, 2), [None, "s", (1.5, False)]), "list": [1, [2, (3,)]],
    "dtypes": (np.dtype("float32"), np.dtype("int64"), np.dtype("bool"), np.dtype("uint8"), np.dtype(">f8")),
    "np_scalars": (np.float32(1.25), np.int64(-9), np.bool_(True), np.uint16(7), np.float64(np.nan)),
    "complex_scalar": np.complex64(1 + 2j),
    "arrays": (np.arange(6, dtype=np.int32).reshape(2, 3), np.array(2.5), np.zeros((0, 3), np.float16),
               np.array([True, False]), np.array([[1 + 1j]], np.complex128), np.arange(8.0)[::2]),
    "dict": {"a": 1, 2: (3, 4), "nested": {"x": np.dtype("float64")}},
}


def test_every_attr_kind_round_trips_exactly(tmp_path, attrs_op):
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, None, name="x")
        op = g.create_op(attrs_op, [x], dict(ODD_ATTRS), name="odd")
    g2 = roundtrip(g, tmp_path)
    assert_same_value(op.attrs, g2.get_operation_by_name("odd").attrs, "odd")
    assert g2.get_tensor_by_name("x:0").shape is None


def test_attrs_of_the_registered_ops_round_trip(tmp_path):
    g = gc.Graph()
    with g.as_default():
        img = gc.placeholder(gc.float32, (None, 6, 6, 2), name="img")
        k = gc.constant(np.ones((3, 3, 2, 4), np.float32))
        conv = gc.nn.conv2d(img, k, strides=[1, 1, 1, 1], padding=[[0, 0], [1, 1], [2, 0], [0, 0]])
        gc.nn.max_pool2d(conv, ksize=2, strides=2, padding="SAME")
        gc.nn.avg_pool2d(conv, ksize=2, strides=1)
        x = gc.placeholder(gc.float64, (None, 4), name="x")
        idx = gc.placeholder(gc.int32, (None,), name="idx")
        parts = [x[1:, None, ..., ::2], x[-1], gc.argmax(x), gc.argmin(x, axis=1, output_type=gc.int32),
                 gc.one_hot(idx, 5, on_value=2.5, off_value=-1.0, dtype=gc.float64),
                 gc.pad(x, [[1, 0], [0, 2]], constant_values=float("nan")),
                 gc.gather(x, idx, axis=0), gc.cast(x, gc.int64), gc.transpose(x),
                 gc.reduce_logsumexp(x, axis=-1, keepdims=True), gc.split(x, [1, 3], axis=1)[1],
                 gc.tile(x, [2, 1]), gc.squeeze(gc.expand_dims(x, 0), axis=0), gc.shape_of(x, out_type=gc.int64)]
        loss = gc.reduce_sum(conv) + gc.reduce_sum(parts[0]) + gc.reduce_sum(parts[4])
        gc.gradients(loss, [img, x])
    g2 = roundtrip(g, tmp_path)
    assert_same_graph(g, g2)
    feed = {"img:0": np.random.default_rng(0).normal(size=(2, 6, 6, 2)).astype(np.float32),
            "x:0": np.arange(12.0).reshape(3, 4), "idx:0": np.array([2, 0], np.int32)}
    sinks = [t.name for op in g.get_operations() for t in op.outputs if not t.consumers()]
    with gc.Session(graph=g, config=INTERP) as s1, gc.Session(graph=g2, config=INTERP) as s2:
        for a, b in zip(s1.run(sinks, feed), s2.run(sinks, feed)):
            np.testing.assert_array_equal(a, b)


def test_names_scopes_sources_and_gradient_links_are_kept(tmp_path):
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (2,), name="Input")
        a = gc.identity(x, name="input")                 # differs only in case
        with gc.name_scope("block"):
            y = gc.exp(a, name="Exp")
        with gc.control_dependencies([y]):
            z = gc.identity(y * 2.0, name="after")
        gz, = gc.gradients(gc.reduce_sum(z), [x])
    g2 = roundtrip(g, tmp_path)
    assert_same_graph(g, g2)
    assert g2.get_operation_by_name("after").control_inputs[0].name == "block/Exp"
    grad_ops = [op for op in g2.get_operations() if op.gradient_of is not None]
    assert grad_ops and all(op.gradient_of.graph is g2 for op in grad_ops)
    assert "gradient of exp op 'block/Exp'" in g2.get_operation_by_name(
        [op.name for op in grad_ops if op.gradient_of.name == "block/Exp"][0]).describe()
    assert g2.get_operation_by_name("block/Exp").source.file == y.op.source.file == __file__


# ---- file layout -------------------------------------------------------------------------------------
def test_file_is_versioned_json_with_an_npz_for_arrays(tmp_path):
    g, _ = build_mlp()
    path = str(tmp_path / "m.graph")
    gc.save_graph(g, path)
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    assert doc["format"] == "graphc.graph" and doc["version"] == serialize.VERSION == 1
    assert doc["arrays"]["count"] > 0 and os.path.exists(path + ".npz")
    with np.load(path + ".npz", allow_pickle=False) as arrays:
        assert len(arrays.files) == doc["arrays"]["count"]
    ops = {op["name"]: op for op in doc["graph"]["ops"]}
    assert ops["hidden/w"]["type"] == "variable" and ops["MatMul"]["inputs"] == ["x:0", "hidden/w:0"]
    assert ops["MatMul"]["source"][0] == __file__


def test_graph_without_arrays_writes_no_archive(tmp_path):
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (None,), name="x")
        gc.reduce_sum(x * x)
    path = str(tmp_path / "plain.graph")
    gc.save_graph(g, path)
    assert os.listdir(tmp_path) == ["plain.graph"]
    assert_same_graph(g, gc.load_graph(path))


def test_save_accepts_objects_with_a_graph_and_refuses_subgraphs(tmp_path):
    g, fetches = build_control_flow()
    with gc.Session(graph=g, config=INTERP) as sess:
        assert_same_graph(g, gc.load_graph(gc.save_graph(sess, str(tmp_path / "s.graph"))))
    body = next(op for op in g.get_operations() if op.type == "while_loop").attrs["body"]
    with pytest.raises(ExportError, match="body of a cond/while"):
        gc.save_graph(body, str(tmp_path / "body.graph"))
    with pytest.raises(ExportError, match="takes a gc.Graph"):
        gc.save_graph("not a graph", str(tmp_path / "x.graph"))


# ---- refusals ------------------------------------------------------------------------------------------
def test_custom_gradient_ops_cannot_be_saved(tmp_path):
    @gc.custom_gradient
    def clipped(x):
        return gc.identity(x), lambda dy: gc.clip_by_value(dy, -1.0, 1.0)

    g = gc.Graph()
    with g.as_default():
        clipped(gc.placeholder(gc.float32, (3,), name="x"))
    path = tmp_path / "custom.graph"
    expected = r"custom_gradient op 'clipped'.*test_serialize\.py.*'grad_fn'.*Python function"
    with pytest.raises(ExportError, match=expected):
        gc.save_graph(g, str(path))
    assert not os.path.exists(path) and not os.path.exists(str(path) + ".npz")


def test_unknown_op_types_are_refused(tmp_path, attrs_op):
    g = gc.Graph()
    with g.as_default():
        g.create_op(attrs_op, [gc.placeholder(gc.float32, (1,))], {}, name="mine")
    path = str(tmp_path / "custom_op.graph")
    gc.save_graph(g, path)
    from graphc.ops import registry
    saved = registry._REGISTRY.pop(attrs_op)
    try:
        with pytest.raises(GraphFormatError, match=r"'mine'.*'test_serialize_attrs'.*does not define"):
            gc.load_graph(path)
    finally:
        registry._REGISTRY[attrs_op] = saved


def small_doc():
    g, _ = build_control_flow()
    doc, arrays = serialize.to_document(g)
    return json.loads(json.dumps(doc)), arrays


def _op(doc, name, graph="graph"):
    ops = doc["graph"]["ops"] if graph == "graph" else doc["functions"][graph]["ops"]
    return next(op for op in ops if op["name"] == name)


def _first_with_type(doc, op_type):
    return next(op for op in doc["graph"]["ops"] if op["type"] == op_type)


MALFORMED = {
    "not a dict": (lambda d: [1, 2], "no 'format' field"),
    "other format": (lambda d: dict(d, format="tf.GraphDef"), "format is 'tf.GraphDef'"),
    "newer version": (lambda d: dict(d, version=2), "version 2 is not supported.*newer graphc"),
    "version zero": (lambda d: dict(d, version=0), "version 0 is not supported"),
    "version as string": (lambda d: dict(d, version="1"), "'version' field must be an integer"),
    "no graph": (lambda d: {k: v for k, v in d.items() if k != "graph"}, "has no 'graph' field"),
    "no functions": (lambda d: {k: v for k, v in d.items() if k != "functions"}, "has no 'functions' field"),
    "op without type": (lambda d: _op(d, "x").pop("type"), "op 'x' of the root graph has no 'type' field"),
    "unknown input": (lambda d: _op(d, "loss").update(inputs=["nope:0"]), "'nope:0'.*not an earlier op"),
    "bad tensor name": (lambda d: _op(d, "loss").update(inputs=["loss"]), "'loss', which is not an earlier"),
    "output index too big": (lambda d: _op(d, "loss").update(inputs=["x:5"]), "'x:5'"),
    "forward reference": (lambda d: _op(d, "x").update(inputs=["loss:0"]), "not an earlier op"),
    "duplicate names": (lambda d: _op(d, "loss").update(name="x"), "two ops named 'x'"),
    "unknown control input": (lambda d: _op(d, "loss").update(control_inputs=["ghost"]), "op 'ghost'"),
    "unknown tag": (lambda d: _first_with_type(d, "placeholder")["attrs"].update(dtype={"$bogus": 1}),
                    "unknown or malformed encoded value"),
    "two tags": (lambda d: _first_with_type(d, "placeholder")["attrs"].update(
        dtype={"$dtype": "float64", "$tuple": []}), "exactly one"),
    "object dtype": (lambda d: _first_with_type(d, "placeholder")["attrs"].update(dtype={"$dtype": "O"}),
                     "not allowed"),
    "unknown dtype": (lambda d: _first_with_type(d, "placeholder")["attrs"].update(dtype={"$dtype": "float7"}),
                      "unknown dtype 'float7'"),
    "missing array": (lambda d: _first_with_type(d, "const")["attrs"].update(value={"$array": "a999"}),
                      "array 'a999'"),
    "bad function index": (lambda d: _first_with_type(d, "while_loop")["attrs"].update(body={"$func": 99}),
                           "subgraph 99"),
    "function contains itself": (lambda d: d["functions"][0]["ops"].append(
        {"name": "again", "type": "cond", "inputs": [], "control_inputs": [], "outputs": [],
         "attrs": {"true_branch": {"$func": 0}, "false_branch": {"$func": 0}}, "source": ["f.py", 1, "f"]}),
        "subgraph f0 contains itself"),
    "bad source": (lambda d: _op(d, "loss").update(source="here"), "'source' must be"),
    "changed output shape": (lambda d: _op(d, "x")["outputs"][0].update(shape=[4]), "saved as \\(4,\\)"),
    "wrong attr for the op": (lambda d: _op(d, "loss")["attrs"].update(keepdims="yes"),
                              "'loss'.*saved as \\(\\) float64 but is \\(1,\\)"),
    "attr of the wrong kind": (lambda d: _op(d, "loss")["attrs"].update(axis={"$dtype": "int8"}),
                               "'loss'.*cannot be re-created"),
    "unknown attr": (lambda d: _op(d, "loss")["attrs"].update(colour=1), "reduce_sum op has no attr\\(s\\) 'colour'"),
    "missing attr": (lambda d: _op(d, "loss")["attrs"].pop("axis"), "'loss'.*cannot be re-created.*'axis'"),
    "variable op wrong": (lambda d: d["variables"][0].update(op="x"), "is not a variable"),
    "unknown collection variable": (lambda d: d["collections"]["variables"].append({"variable": "ghost"}),
                                    "variable 'ghost'"),
    "bad collection item": (lambda d: d["collections"]["variables"].append(3), "bad item 3"),
    "function input not an arg": (lambda d: d["functions"][0]["inputs"].__setitem__(
        0, d["functions"][0]["outputs"][0]), "is not an argument"),
    "bad gradient link": (lambda d: next(op for op in d["graph"]["ops"] if "gradient_of" in op).update(
        gradient_of={"graph": "f77", "op": "x"}), "gradient_of names graph 'f77'"),
}


# cases whose function returns a replacement document instead of editing it
NEW_DOCUMENT = {"not a dict", "other format", "newer version", "version zero", "version as string", "no graph",
                "no functions"}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_documents_are_refused_clearly(case):
    mutate, message = MALFORMED[case]
    doc, arrays = small_doc()
    result = mutate(doc)          # in-place edits return None (or the removed value)
    if case in NEW_DOCUMENT:
        doc = result
    with pytest.raises(GraphFormatError, match=message):
        serialize.from_document(doc, arrays)


def _paths(value, prefix=()):
    """Every (container, key) path in a JSON document."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield prefix + (i,)
            yield from _paths(v, prefix + (i,))


def test_damaging_any_field_gives_graph_format_error_or_a_valid_graph():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (None, 2), name="x")
        v = gc.Variable(np.ones(2, np.float32), name="v")
        y = gc.cond(gc.reduce_sum(x) > 0, lambda: x * v, lambda: x - 1.0)
        gc.gradients(gc.reduce_sum(y), [x])
    doc, arrays = serialize.to_document(g)
    doc = json.loads(json.dumps(doc))
    paths = list(_paths(doc))
    assert len(paths) > 200
    damages = ("delete", 12345, "junk", None, [], {})
    for i, path in enumerate(paths):
        for damage in (damages[i % 6],):
            broken = json.loads(json.dumps(doc))
            parent = broken
            for key in path[:-1]:
                parent = parent[key]
            if damage == "delete":
                del parent[path[-1]]
            else:
                parent[path[-1]] = damage
            try:
                serialize.from_document(broken, arrays)
            except GraphFormatError as exc:
                # every damage is caught where the field is read, not by the safety net
                assert "malformed graph file (" not in str(exc), (path, damage, str(exc))


def test_files_that_are_not_graphs_are_refused(tmp_path):
    g, _ = build_mlp()
    path = str(tmp_path / "m.graph")
    gc.save_graph(g, path)
    with pytest.raises(GraphFormatError, match="array archive; pass the JSON file"):
        gc.load_graph(path + ".npz")
    with pytest.raises(GraphFormatError, match="cannot read graph file"):
        gc.load_graph(str(tmp_path / "missing.graph"))
    garbage = tmp_path / "garbage.graph"
    garbage.write_bytes(b"\x00\xffnot json")
    with pytest.raises(GraphFormatError, match="not JSON"):
        gc.load_graph(str(garbage))
    deep = tmp_path / "deep.graph"
    deep.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(GraphFormatError):
        gc.load_graph(str(deep))


def test_archive_problems_are_refused(tmp_path):
    g, _ = build_mlp()
    path = str(tmp_path / "m.graph")
    gc.save_graph(g, path)
    other = gc.Graph()
    with other.as_default():
        gc.constant([1.0, 2.0])
    gc.save_graph(other, str(tmp_path / "other.graph"))
    os.replace(str(tmp_path / "other.graph.npz"), path + ".npz")
    with pytest.raises(GraphFormatError, match="does not belong to.*checksum"):
        gc.load_graph(path)
    os.remove(path + ".npz")
    with pytest.raises(GraphFormatError, match="keeps its arrays in .*m.graph.npz"):
        gc.load_graph(path)
    # a pickled object array is never loaded, even with a matching checksum
    import hashlib
    import io
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        with zf.open("a0.npy", "w") as member:
            np.lib.format.write_array(member, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    data = buf.getvalue()
    with open(path + ".npz", "wb") as f:
        f.write(data)
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    doc["arrays"]["sha256"] = hashlib.sha256(data).hexdigest()
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f)
    with pytest.raises(GraphFormatError):
        gc.load_graph(path)
