"""The ``graphc`` command line: ``dump`` (saved graphs, every format, to
stdout or a file), ``passes``, ``demo``; errors are one line and a non-zero
exit status, never a traceback. Run both in-process (``main(argv)``) and as
``python -m graphc`` in a subprocess."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import graphc as gc
from graphc import cli

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))


def graphc_cmd(*args, cwd=None, env_extra=None):
    """``python -m graphc ARGS`` in a subprocess (the repository on the path)."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("GRAPHC_DUMP_DIR", None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "graphc", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def saved(tmp_path):
    """A small trained-model graph saved to disk: (path, graph)."""
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (None, 4), name="x")
        w = gc.Variable(np.ones((4, 3), np.float32), name="w")
        loss = gc.reduce_sum(gc.tanh(x @ w) * 2.0 + 1.0, name="loss")
        gc.train.GradientDescentOptimizer(0.1).minimize(loss, name="train")
    path = str(tmp_path / "model.graph")
    gc.save_graph(g, path)
    return path, g


def assert_one_line_error(proc_or_err, *fragments):
    err = proc_or_err if isinstance(proc_or_err, str) else proc_or_err.stderr
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("graphc: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], err


# ---- dump ------------------------------------------------------------------------------------------
def test_dump_text_to_stdout_matches_gc_dump(saved, capsys):
    path, _ = saved
    assert cli.main(["dump", path, "--fetch", "loss:0", "--stage", "input"]) == 0
    out = capsys.readouterr().out
    g = gc.load_graph(path)
    assert out == gc.dump(g, stage="input", format="text", fetches=[g.get_tensor_by_name("loss:0")])
    assert "loss" in out and "MatMul" in out and "train" not in out


def test_dump_defaults_to_the_final_stage_of_everything(saved, capsys):
    path, _ = saved
    assert cli.main(["dump", path]) == 0
    out = capsys.readouterr().out
    assert out == gc.dump(gc.load_graph(path), stage="final", format="text")
    assert "GradientDescent" in out or "train" in out


def test_dump_stage_by_index_and_several_fetches(saved, capsys):
    path, _ = saved
    assert cli.main(["dump", path, "--fetch", "loss:0,train", "--stage", "0"]) == 0
    out = capsys.readouterr().out
    g = gc.load_graph(path)
    assert out == gc.dump(g, stage=0, fetches=[g.get_tensor_by_name("loss:0"), g.get_operation_by_name("train")])


@pytest.mark.parametrize("fmt, marker", [("text", "loss"), ("dot", "digraph"), ("html", "<html")])
def test_dump_formats_to_a_file(saved, tmp_path, capsys, fmt, marker):
    path, _ = saved
    out_file = tmp_path / "out" / f"dump.{fmt}"
    assert cli.main(["dump", path, "--format", fmt, "-o", str(out_file)]) == 0
    assert capsys.readouterr().out == ""
    text = out_file.read_text(encoding="utf-8")
    assert marker in text.lower() if fmt == "html" else marker in text
    assert "loss" in text


def test_dump_dot_to_a_file_via_python_m(saved, tmp_path):
    path, _ = saved
    proc = graphc_cmd("dump", path, "--format", "dot", "--fetch", "loss:0", "-o", "g.dot", cwd=str(tmp_path))
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    text = (tmp_path / "g.dot").read_text(encoding="utf-8")
    assert text.lstrip().startswith("digraph") and "loss" in text


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_dump_svg_with_graphviz(saved, capsys):
    path, _ = saved
    assert cli.main(["dump", path, "--format", "svg", "--fetch", "loss:0"]) == 0
    assert "<svg" in capsys.readouterr().out


def test_dump_svg_without_graphviz_is_a_clear_error(saved, tmp_path):
    path, _ = saved
    empty = tmp_path / "no_tools"
    empty.mkdir()
    proc = graphc_cmd("dump", path, "--format", "svg", env_extra={"PATH": str(empty)})
    assert proc.returncode == 1
    assert_one_line_error(proc, "dot")
    assert proc.stdout == ""


# ---- passes ------------------------------------------------------------------------------------------
def test_passes_lists_the_pipeline_in_order(capsys):
    assert cli.main(["passes"]) == 0
    out = capsys.readouterr().out
    passes = gc.passes.pipeline()
    positions = [out.index(f" {p.name} ") for p in passes]
    assert positions == sorted(positions)
    for p in passes:
        assert p.description in out
    assert "GRAPHC_DISABLE_PASSES" in out



# ---- demo ---------------------------------------------------------------------------------------------
def test_demo_runs_with_a_few_epochs(capsys):
    pytest.importorskip("sklearn")
    assert cli.main(["demo", "--epochs", "1", "--backend", "interpreter", "--no-export"]) == 0
    out = capsys.readouterr().out
    assert "epoch 1/1 [" in out and "final test accuracy" in out


def test_demo_help_and_bad_options(capsys):
    assert cli.main(["demo", "--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: graphc demo" in out and "--epochs" in out
    assert cli.main(["demo", "--epochs", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--epochs" in err and "Traceback" not in err


def test_demo_with_an_unknown_backend_is_a_one_line_error(capsys):
    pytest.importorskip("sklearn")
    assert cli.main(["demo", "--epochs", "1", "--quiet", "--backend", "no-such-backend"]) == 1
    assert_one_line_error(capsys.readouterr().err, "no-such-backend")


# ---- errors and help ------------------------------------------------------------------------------------
def test_missing_graph_file(tmp_path, capsys):
    assert cli.main(["dump", str(tmp_path / "missing.graph")]) == 1
    assert_one_line_error(capsys.readouterr().err, "missing.graph")


def test_malformed_graph_file(tmp_path, capsys):
    bad = tmp_path / "bad.graph"
    bad.write_text('{"format": "graphc.graph", "version": 99}')
    assert cli.main(["dump", str(bad)]) == 1
    assert_one_line_error(capsys.readouterr().err, "version 99")


def test_unknown_fetch_suggests_names(saved, capsys):
    path, _ = saved
    assert cli.main(["dump", path, "--fetch", "los"]) == 1
    assert_one_line_error(capsys.readouterr().err, "'los'", "did you mean loss")
    assert cli.main(["dump", path, "--fetch", " , "]) == 2
    assert "--fetch needs a tensor or op name" in capsys.readouterr().err


def test_unknown_stage(saved, capsys):
    path, _ = saved
    assert cli.main(["dump", path, "--stage", "no_such_pass"]) == 1
    assert_one_line_error(capsys.readouterr().err, "no_such_pass")


def test_unwritable_output(saved, tmp_path, capsys):
    path, _ = saved
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli.main(["dump", path, "-o", str(blocker / "sub" / "out.txt")]) == 1
    assert_one_line_error(capsys.readouterr().err, "cannot write")


def test_errors_exit_non_zero_via_python_m(tmp_path):
    (tmp_path / "junk.graph").write_bytes(b"\x89PNG garbage")
    proc = graphc_cmd("dump", str(tmp_path / "junk.graph"))
    assert proc.returncode == 1
    assert_one_line_error(proc, "junk.graph", "not JSON")
    proc = graphc_cmd("dump")
    assert proc.returncode == 2 and "usage: graphc dump" in proc.stderr


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["dump"], ["dump", "g", "--format", "png"]])
def test_usage_errors_exit_2(argv, capsys):
    if not argv:
        assert cli.main(argv) == 2
        assert "usage: graphc" in capsys.readouterr().err
        return
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2


def test_help_and_version(capsys):
    for argv in (["--help"], ["dump", "--help"], ["passes", "--help"], ["--version"]):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 0
    out = capsys.readouterr().out
    for text in ("dump", "passes", "demo", "--fetch", "--format", "--stage", f"graphc {gc.__version__}"):
        assert text in out


@pytest.mark.skipif(shutil.which("graphc") is None, reason="the graphc console script is not installed")
def test_console_script(saved):
    path, _ = saved
    proc = subprocess.run(["graphc", "dump", path, "--fetch", "loss:0"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "loss" in proc.stdout


def test_ptx_prints_the_module_and_its_launches_without_a_gpu(saved, tmp_path, capsys):
    from graphc.codegen import ptx
    path, _ = saved
    assert cli.main(["ptx", path, "--fetch", "loss", "--feed", "x:5000x4:float32", "--arch", "sm_90"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("//") and ".target sm_90" in out and ".entry graphc_k" in out
    assert "graphc_ptx for sm_90:" in err and "loss" in err and "blocks of" in err
    target = tmp_path / "loss.ptx"
    args = ["ptx", path, "--fetch", "loss:0", "--feed", "x:8x4:float32", "-o", str(target)]
    if ptx.ptxas_available():
        args.append("--check")
    assert cli.main(args) == 0
    out, err = capsys.readouterr()
    assert out == "" and target.read_text().startswith("//") and f"wrote {target}" in err
    assert ("ptxas -arch=sm_80 accepts it" in err) == ptx.ptxas_available()


def test_ptx_errors_are_one_line(saved, capsys):
    path, _ = saved
    assert cli.main(["ptx", path, "--fetch", "loss", "--feed", "x:8x5:float32"]) == 1
    assert_one_line_error(capsys.readouterr().err, "x", "does not fit")
    assert cli.main(["ptx", path, "--fetch", "loss", "--feed", "x:8x4:float32", "--arch", "gfx90a"]) == 1
    assert_one_line_error(capsys.readouterr().err, "gfx90a", "sm_XY")
