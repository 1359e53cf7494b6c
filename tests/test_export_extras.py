"""Export extras (issue 6, items 4-7): pickling compiled functions (graph
bytes, subprocess and multiprocessing round trips), ``graphc export`` on the
command line, the C example (examples/export_c, built with ``cc`` and run),
and the demo's final export. The export core is tested in test_export.py."""
import multiprocessing
import os
import pickle
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import graphc as gc
from graphc import cli
from graphc.serialize import graph_from_bytes, graph_to_bytes

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
EXAMPLE = os.path.join(ROOT, "examples", "export_c")
CC = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
needs_cc = pytest.mark.skipif(CC is None, reason="exporting links with a C compiler; none found")


def _env():
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _run_python(code, cwd):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=300)


def mlp_loss(w, b, x):
    """A scalar loss with a matmul, a reduction and a while_loop in it."""
    h = gc.tanh(x @ w + b)
    _, h = gc.while_loop(lambda i, h: i < 2, lambda i, h: [i + 1, gc.sin(h) * 1.5], [gc.constant(0), h])
    return gc.reduce_mean(h * h)


def make_args(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32),
            rng.normal(size=(4, 5)).astype(np.float32))


# ---- graph bytes ---------------------------------------------------------------------------
def test_graph_bytes_round_trip_keeps_ops_arrays_subgraphs_and_variables():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (None, 3), name="x")
        w = gc.Variable(np.arange(6, dtype=np.float32).reshape(3, 2), name="w")
        y = x @ w + np.array([0.5, -1.0], np.float32)
        _, z = gc.while_loop(lambda i, z: i < 3, lambda i, z: [i + 1, z * 2.0], [gc.constant(0), y])
        gc.identity(z, name="out")
    g2 = graph_from_bytes(graph_to_bytes(g))
    assert [op.name for op in g2.get_operations()] == [op.name for op in g.get_operations()]
    assert [v.op.name for v in gc.global_variables(g2)] == ["w"]
    feed = np.ones((2, 3), np.float32)
    results = []
    for graph in (g, g2):
        with gc.Session(graph=graph) as sess:
            sess.run(gc.variables_initializer(gc.global_variables(graph)))
            results.append(sess.run(graph.get_tensor_by_name("out:0"), {"x": feed}))
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], (feed @ np.arange(6, dtype=np.float32).reshape(3, 2) + [0.5, -1]) * 8)


def test_graph_bytes_refuses_other_data():
    for bad in (b"", b"not a zip", pickle.dumps({"a": 1})):
        with pytest.raises(gc.errors.GraphFormatError, match="not a graphc graph"):
            graph_from_bytes(bad)
    g = gc.Graph()
    with g.as_default():
        gc.constant(np.arange(4.0), name="c")
    data = bytearray(graph_to_bytes(g))
    data[-30:] = b"\0" * 30         # the zip directory at the end is broken
    with pytest.raises(gc.errors.GraphFormatError):
        graph_from_bytes(bytes(data))


# ---- pickling ----------------------------------------------------------------------------------
def test_pickled_gradient_gives_the_same_numbers_in_a_fresh_process(tmp_path):
    f = gc.value_and_grad(mlp_loss, argnums=(0, 1))
    args = make_args()
    value, (gw, gb) = f(*args)
    f(*(a.astype(np.float64) for a in args))            # a second traced signature travels too
    with open(tmp_path / "f.pkl", "wb") as fh:
        pickle.dump(f, fh)
    np.savez(tmp_path / "args.npz", *args)
    proc = _run_python(f"""
        import pickle, numpy as np
        with open({str(tmp_path / "f.pkl")!r}, "rb") as fh:
            f = pickle.load(fh)
        assert f.fn is None and f.__name__ == "mlp_loss"
        with np.load({str(tmp_path / "args.npz")!r}) as z:
            args = [z[f"arr_{{i}}"] for i in range(3)]
        value, (gw, gb) = f(*args)
        value2, _ = f(*args)                              # the cached fast path
        value64, _ = f(*(a.astype(np.float64) for a in args))
        np.savez({str(tmp_path / "out.npz")!r}, value=value, gw=gw, gb=gb, value2=value2, value64=value64)
        try:
            f(args[0][:2], args[1], args[2])
        except Exception as exc:
            print(type(exc).__name__, exc)
        """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    # nothing in the child imported the test's code: graphc alone rebuilt the function
    assert "InvalidArgumentError mlp_loss was unpickled without its Python function" in proc.stdout
    assert "(float32[5, 3], float32[3], float32[4, 5]); (float64[5, 3], float64[3], float64[4, 5])" in proc.stdout
    assert "called with (float32[2, 3], float32[3], float32[4, 5])" in proc.stdout
    with np.load(tmp_path / "out.npz") as out:
        np.testing.assert_allclose(out["value"], value, rtol=1e-6)
        np.testing.assert_allclose(out["value2"], value, rtol=1e-6)
        np.testing.assert_allclose(out["gw"], gw, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(out["gb"], gb, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(out["value64"], f(*(a.astype(np.float64) for a in args))[0], rtol=1e-12)
    assert abs(float(value)) > 1e-3 and np.abs(gw).max() > 1e-3


def test_pickled_gradient_runs_in_a_multiprocessing_spawn_worker():
    f = gc.value_and_grad(mlp_loss, argnums=0)
    args = make_args(1)
    value, grad = f(*args)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        # the pool pickles f and its arguments, as Dask or Ray would
        value2, grad2 = pool.apply(f, args)
    np.testing.assert_allclose(value2, value, rtol=1e-6)
    np.testing.assert_allclose(grad2, grad, rtol=1e-5, atol=1e-7)


def test_pickle_keeps_variable_values_and_the_input_signature():
    def counter(x):
        acc = gc.Variable(np.zeros(3, np.float32), name="acc")
        return acc.assign_add(x)
    f = gc.function(counter, input_signature=[gc.TensorSpec((3,))])
    one = np.ones(3, np.float32)
    f(one)
    f(one)
    g = pickle.loads(pickle.dumps(f))
    assert g.graph is not f.graph and [op.name for op in g.graph.get_operations()] == \
        [op.name for op in f.graph.get_operations()]
    np.testing.assert_array_equal(g(one), [3, 3, 3])       # continues from the pickled state
    np.testing.assert_array_equal(g(one), [4, 4, 4])
    np.testing.assert_array_equal(f(one), [3, 3, 3])       # the original is independent
    with pytest.raises(gc.errors.InvalidArgumentError, match="takes 1 arguments"):
        g(one, one)


def test_pickle_refusals_are_clear():
    untraced = gc.function(lambda x: x * 2.0)
    with pytest.raises(gc.errors.InvalidArgumentError, match="has not been traced yet"):
        pickle.dumps(untraced)

    @gc.custom_gradient
    def square(x):
        return x * x, lambda dy: dy * 2.0 * x
    f = gc.grad(lambda x: gc.reduce_sum(square(x)))
    np.testing.assert_array_equal(f(np.ones(2, np.float32)), [2, 2])
    with pytest.raises(gc.errors.ExportError, match="cannot pickle compiled function .*custom_gradient"):
        pickle.dumps(f)


def test_unpickled_function_can_still_be_exported(tmp_path):
    if CC is None:
        pytest.skip("no C compiler")
    # no while_loop here: its gradient does not compile to one native function (test_export.py)
    f = gc.grad(lambda w, b, x: gc.reduce_mean(gc.tanh(x @ w + b) ** 2), argnums=1)
    args = make_args(2)
    expected = f(*args)
    g = pickle.loads(pickle.dumps(f))
    lib = gc.load_library(g.export(str(tmp_path), "g").library)
    np.testing.assert_allclose(lib(*args), expected, rtol=1e-5, atol=1e-6)


# ---- graphc export (CLI) ----------------------------------------------------------------------
@pytest.fixture
def saved(tmp_path):
    """A saved graph: placeholder x (None, 4), label t (None,), variable w;
    tensors loss:0 and grad_w:0."""
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (None, 4), name="x")
        t = gc.placeholder(gc.float32, (None,), name="t")
        w = gc.Variable(np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3), name="w")
        err = gc.reduce_sum(gc.tanh(x @ w), axis=1) - t
        loss = gc.reduce_mean(err * err, name="loss")
        gc.identity(gc.gradients(loss, [w])[0], name="grad_w")
        gc.train.GradientDescentOptimizer(0.5).minimize(loss, name="train")
    path = str(tmp_path / "model.graph")
    gc.save_graph(g, path)
    return path, g


def _session_values(graph, feeds, values=None):
    with gc.Session(graph=graph) as sess:
        sess.run(gc.variables_initializer(gc.global_variables(graph)))
        if values is not None:
            sess.run(gc.global_variables(graph)[0].assign(values))
        return sess.run([graph.get_tensor_by_name("loss:0"), graph.get_tensor_by_name("grad_w:0")], feeds)


@needs_cc
def test_cli_export_matches_the_session(saved, tmp_path, capsys):
    path, g = saved
    out_dir = tmp_path / "lib"
    assert cli.main(["export", path, "--fetch", "loss", "--fetch", "grad_w:0", "--feed", "x:6x4:float32",
                     "--feed", "t:0:[6]:float32", "-o", str(out_dir), "--name", "loss_grad"]) == 0
    out = capsys.readouterr().out
    assert f"library  {out_dir / 'loss_grad.so'}" in out and f"header   {out_dir / 'loss_grad.h'}" in out
    assert re.search(r"in0\s+x\s+float32\[6, 4\]", out) and re.search(r"in1\s+t\s+float32\[6\]", out)
    assert re.search(r"out1\s+grad_w:0\s+float32\[4, 3\]", out)
    header = (out_dir / "loss_grad.h").read_text()
    assert "int loss_grad(const float* in0, const float* in1, float* out0, float* out1);" in header
    rng = np.random.default_rng(3)
    x, t = rng.normal(size=(6, 4)).astype(np.float32), rng.normal(size=6).astype(np.float32)
    loss, grad = gc.load_library(str(out_dir / "loss_grad.so"))(x, t)
    want_loss, want_grad = _session_values(g, {"x:0": x, "t:0": t})
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-6)


@needs_cc
def test_cli_export_freezes_checkpoint_values(saved, tmp_path, capsys):
    path, g = saved
    trained = np.full((4, 3), 0.25, np.float32)
    with gc.Session(graph=g) as sess:
        sess.run(gc.variables_initializer(gc.global_variables(g)))
        sess.run(gc.global_variables(g)[0].assign(trained))
        with g.as_default():
            prefix = gc.train.Saver().save(sess, str(tmp_path / "ckpt" / "model"))
    assert cli.main(["export", path, "--fetch", "loss:0", "--feed", "x:2x4:float32", "--feed", "t:2:float32",
                     "-o", str(tmp_path / "lib"), "--checkpoint", prefix]) == 0
    x, t = np.ones((2, 4), np.float32), np.zeros(2, np.float32)
    loss = gc.load_library(str(tmp_path / "lib" / "fn.so"))(x, t)
    np.testing.assert_allclose(loss, _session_values(g, {"x:0": x, "t:0": t}, trained)[0], rtol=1e-6)
    # the initial values give another loss: the checkpoint was really used
    assert abs(float(loss) - float(_session_values(g, {"x:0": x, "t:0": t})[0])) > 1e-3


@pytest.mark.parametrize("args, status, fragments", [
    (["--fetch", "los", "--feed", "x:2x4:float32"], 1, ["no tensor or op named 'los'", "did you mean loss"]),
    (["--fetch", "train", "--feed", "x:2x4:float32"], 1, ["--fetch train is an op without outputs"]),
    (["--fetch", "loss", "--feed", "x:2x5:float32", "--feed", "t:2:float32"], 1, ["placeholder x has shape [?, 4]"]),
    (["--fetch", "loss", "--feed", "x:2x4:float64", "--feed", "t:2:float32"], 1, ["x is float32, not float64"]),
    (["--fetch", "loss", "--feed", "w:4x3:float32"], 1, ["only placeholders", "variable op"]),
    (["--fetch", "loss", "--feed", "x:2x4:float32"], 1, ["must feed a value for placeholder 't'"]),
    (["--fetch", "loss", "--feed", "zz:2:float32"], 1, ["no placeholder named 'zz'"]),
    (["--fetch", "loss", "--feed", "x:2x4:float32", "--feed", "t:2:float32", "--name", "no-c"], 1,
     ["not a C identifier"]),
    (["--fetch", "loss", "--feed", "x:2x4"], 2, ["expected NAME:SHAPE:DTYPE"]),
    (["--fetch", "loss", "--feed", "x:2by4:float32"], 2, ["shape '2by4' is not like"]),
    (["--fetch", "loss", "--feed", "x:2x4:complex7"], 2, ["unknown dtype 'complex7'"]),
    (["--fetch", "loss", "--feed", "x:2x4:float32", "--feed", "x:0:2x4:float32"], 2, ["x is given twice"]),
    (["--fetch", "loss"], 2, ["--feed NAME:SHAPE:DTYPE"]),
])
def test_cli_export_errors_are_one_line_and_write_nothing(saved, tmp_path, capsys, args, status, fragments):
    path, _ = saved
    out_dir = tmp_path / "lib"
    assert cli.main(["export", path, *args, "-o", str(out_dir)]) == status
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("graphc: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], err
    assert not out_dir.exists() or not any(out_dir.iterdir())


def test_cli_export_missing_graph_file(tmp_path, capsys):
    assert cli.main(["export", str(tmp_path / "nope.graph"), "--fetch", "y", "--feed", "x:1:float32",
                     "-o", str(tmp_path)]) == 1
    assert "cannot read graph file" in capsys.readouterr().err


@needs_cc
def test_cli_export_as_a_command(saved, tmp_path):
    path, g = saved
    proc = subprocess.run([sys.executable, "-m", "graphc", "export", path, "--fetch", "grad_w", "--feed",
                           "x:1x4:float32", "--feed", "t:scalar:float32", "-o", "out"],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    # t is declared (None,): a scalar does not fit it
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "placeholder t has shape [?]; [] does not fit it" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "graphc", "export", path, "--fetch", "grad_w", "--feed",
                           "x:1x4:float32", "--feed", "t:1:float32", "-o", "out"],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    x, t = np.full((1, 4), 0.5, np.float32), np.array([0.2], np.float32)
    grad = gc.load_library(str(tmp_path / "out" / "fn.so"))(x, t)
    np.testing.assert_allclose(grad, _session_values(g, {"x:0": x, "t:0": t})[1], rtol=1e-5, atol=1e-6)


# ---- examples/export_c ------------------------------------------------------------------------
def _load_example():
    import importlib.util
    spec = importlib.util.spec_from_file_location("export_mlp", os.path.join(EXAMPLE, "export_mlp.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_cc
def test_c_example_sgd_matches_python(tmp_path):
    steps, lr = 12, 0.1
    build = tmp_path / "build"
    proc = subprocess.run([sys.executable, os.path.join(EXAMPLE, "export_mlp.py"), "-o", str(build),
                           "--steps", "2"], env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for name in ("mlp_grad.so", "mlp_grad.h", "mlp_data.bin"):
        assert (build / name).is_file()
    exe = build / "mlp_sgd"
    compile_cmd = [CC, "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-I", str(build),
                   os.path.join(EXAMPLE, "main.c"), "-L", str(build), "-l:mlp_grad.so",
                   f"-Wl,-rpath,{build}", "-o", str(exe)]
    built = subprocess.run(compile_cmd, capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    run = subprocess.run([str(exe), str(build / "mlp_data.bin"), str(steps), str(lr)], capture_output=True,
                         text=True, timeout=120, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "inputs: float32[8, 16] float32[16] float32[16, 3] float32[3] float32[64, 8] int32[64]"
    assert lines[1] == "outputs: float32[] float32[8, 16] float32[16] float32[16, 3] float32[3]"
    c_losses = [float(re.fullmatch(r"step (\d+) loss (\S+)", line).group(2)) for line in lines[2:]]
    assert len(c_losses) == steps

    example = _load_example()
    py_losses = example.sgd(example.compiled(), example.make_data(0), steps, lr)
    np.testing.assert_allclose(c_losses, py_losses, rtol=1e-4)
    # the run trains: SGD lowers the loss step after step
    assert all(b < a for a, b in zip(c_losses, c_losses[1:])) and c_losses[-1] < 0.8 * c_losses[0]
    # a data file of the wrong length is refused, not read past
    (build / "short.bin").write_bytes((build / "mlp_data.bin").read_bytes()[:-4])
    short = subprocess.run([str(exe), str(build / "short.bin"), "1"], capture_output=True, text=True, timeout=60)
    assert short.returncode == 1 and "too short while reading labels" in short.stderr


def test_c_example_data_file_layout(tmp_path):
    example = _load_example()
    data = example.make_data(0)
    example.write_data(str(tmp_path / "d.bin"), data)
    raw = (tmp_path / "d.bin").read_bytes()
    assert len(raw) == sum(a.nbytes for a in data)
    assert [a.shape for a in data] == [(8, 16), (16,), (16, 3), (3,), (64, 8), (64,)]
    assert [a.dtype for a in data] == [np.float32] * 5 + [np.int32]
    np.testing.assert_array_equal(np.frombuffer(raw[-data[5].nbytes:], np.int32), data[5])


# ---- the demo's export -------------------------------------------------------------------------
@needs_cc
def test_demo_ends_by_exporting_the_gradient(tmp_path, capsys):
    pytest.importorskip("sklearn")
    from graphc import demo
    demo.main(["--epochs", "1", "--backend", "interpreter", "--export-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert f"library {tmp_path / 'mlp_grad.so'}" in out and f"header  {tmp_path / 'mlp_grad.h'}" in out
    m = re.search(r"loss on 64 test images (\S+) through the library, (\S+) in the session", out)
    assert m and abs(float(m.group(1)) - float(m.group(2))) <= 1e-5 * abs(float(m.group(2))), out
    lib = gc.load_library(str(tmp_path / "mlp_grad.so"))
    assert lib.inputs == [(np.dtype(np.float32), (64, 64)), (np.dtype(np.int64), (64,))]
    assert [shape for _, shape in lib.outputs] == [(), (64, 128), (128,), (128, 10), (10,)]
    header = (tmp_path / "mlp_grad.h").read_text()
    assert "int mlp_grad(const float* in0, const int64_t* in1, float* out0" in header


def test_demo_no_export(tmp_path, capsys):
    pytest.importorskip("sklearn")
    from graphc import demo
    demo.main(["--epochs", "0", "--quiet", "--backend", "interpreter", "--no-export", "--export-dir",
               str(tmp_path / "x")])
    assert "export" not in capsys.readouterr().out and not (tmp_path / "x").exists()
