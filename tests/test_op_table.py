"""docs/ops.md is generated from the op registry and must not drift."""
import importlib.util
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _generator():
    spec = importlib.util.spec_from_file_location("gen_op_table", os.path.join(ROOT, "scripts", "gen_op_table.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_ops_md_is_up_to_date():
    gen = _generator()
    # A fresh interpreter: ops that tests register (or modules they import)
    # must not leak into the comparison.
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gen_op_table.py"), "--stdout"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, f"{gen.COMMAND} --stdout failed:\n{proc.stderr}"
    expected = proc.stdout
    path = os.path.join(ROOT, "docs", "ops.md")
    current = open(path, encoding="utf-8").read() if os.path.exists(path) else ""
    assert current == expected, f"docs/ops.md is out of date: run `{gen.COMMAND}` and commit the result"


def test_rendering_is_deterministic_and_lists_every_op():
    import graphc as gc
    gen = _generator()
    text = gen.render()
    assert text == gen.render()
    for name, opdef in gc.ops.registry.all_ops().items():
        row = next((line for line in text.splitlines() if line.startswith(f"| `{name}` |")), None)
        assert row is not None, f"op {name} has no row"
        assert f" {opdef.lowering} " in row
        assert gen.gradient_status(opdef) in row


def test_gradient_column_and_composites():
    import graphc as gc
    gen = _generator()
    reg = gc.ops.registry
    assert gen.gradient_status(reg.get("exp")) == "yes"
    assert gen.gradient_status(reg.get("less")) == "not differentiable"
    composites, helpers = gen.classify(gc, reg)
    assert "gc.clip_by_value" in composites and {"maximum", "minimum"} <= set(composites["gc.clip_by_value"])
    assert composites["gc.constant"] == ["const"]
    assert "gc.exp" not in composites and "gc.sub" not in composites
    assert "gc.global_variables" in helpers
