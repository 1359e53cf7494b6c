"""The examples run and the MLP demo reaches its accuracy target.

The full default run (15 epochs) takes about a second on the interpreter, so
the test runs it in full and asserts the README's claim: >= 95% test
accuracy."""
import importlib.util
import os
import runpy

import pytest

EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "examples")


def load_example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", os.path.join(EXAMPLES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_basic_example_runs(capsys):
    runpy.run_path(os.path.join(EXAMPLES, "basic.py"), run_name="__main__")
    assert "matches NumPy" in capsys.readouterr().out


def test_train_mlp_reaches_95_percent(capsys):
    pytest.importorskip("sklearn")
    demo = load_example("train_mlp")
    accuracy = demo.main(["--backend", "interpreter"])
    out = capsys.readouterr().out
    assert accuracy >= 0.95, out
    assert out.count("test accuracy") == 16          # 15 epochs + the final line
    assert "epoch 15/15 [" in out


def test_train_mlp_is_deterministic(capsys):
    pytest.importorskip("sklearn")
    demo = load_example("train_mlp")
    first = demo.main(["--epochs", "2", "--quiet", "--backend", "interpreter"])
    second = demo.main(["--epochs", "2", "--quiet", "--backend", "interpreter"])
    assert first == second
    assert capsys.readouterr().out.count("final test accuracy") == 2
