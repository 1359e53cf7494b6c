"""Exported libraries: C drivers compiled against the generated header agree
with in-process results; libraries load without graphc; bad exports fail
before writing anything."""
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import graphc as gc
from graphc.errors import ExportError

CC = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler")
_C_TYPES = {"float32": "float", "float64": "double", "int32": "int32_t", "int64": "int64_t", "bool": "uint8_t"}


def _driver(exported, workdir):
    """A C program: read each input from in<k>.bin, call the function, write
    out<k>.bin; exit code = the function's return code."""
    name = exported.name
    up = name.upper()
    lines = ["#include <stdio.h>", "#include <stdlib.h>", f'#include "{name}.h"', "",
             "static void* load(const char* path, size_t bytes) {",
             "  void* p = malloc(bytes ? bytes : 1); FILE* f = fopen(path, \"rb\");",
             "  if (!f || fread(p, 1, bytes, f) != bytes) { fprintf(stderr, \"cannot read %s\\n\", path); exit(90); }",
             "  fclose(f); return p; }", "",
             "int main(void) {"]
    args = []
    for k, (_, dt, _) in enumerate(exported.inputs):
        ct = _C_TYPES[dt.name]
        lines.append(f'  {ct}* in{k} = load("in{k}.bin", sizeof({ct}) * {up}_IN{k}_SIZE);')
        args.append(f"in{k}")
    for k, (_, dt, _) in enumerate(exported.outputs):
        ct = _C_TYPES[dt.name]
        lines.append(f"  {ct}* out{k} = malloc(sizeof({ct}) * ({up}_OUT{k}_SIZE ? {up}_OUT{k}_SIZE : 1));")
        args.append(f"out{k}")
    lines.append(f"  int rc = {name}({', '.join(args)});")
    lines.append("  if (rc) return rc;")
    lines.append("  int dtype, ndim; const int64_t* shape;")
    lines.append(f"  if ({name}_describe(1, 0, &dtype, &ndim, &shape) != 0) return 91;")
    lines.append(f"  if ({name}_describe(0, {up}_NUM_INPUTS, &dtype, &ndim, &shape) != -1) return 92;")
    for k, (_, dt, _) in enumerate(exported.outputs):
        ct = _C_TYPES[dt.name]
        lines.append(f'  {{ FILE* f = fopen("out{k}.bin", "wb"); '
                     f'fwrite(out{k}, sizeof({ct}), {up}_OUT{k}_SIZE, f); fclose(f); }}')
    lines += ["  return 0;", "}"]
    src = os.path.join(workdir, "driver.c")
    with open(src, "w") as f:
        f.write("\n".join(lines) + "\n")
    exe = os.path.join(workdir, "driver")
    lib_dir = os.path.dirname(exported.library)
    subprocess.run([CC, "-std=c99", "-Wall", "-Werror", "-o", exe, src, f"-I{lib_dir}", exported.library,
                    f"-Wl,-rpath,{lib_dir}"], check=True, capture_output=True)
    return exe


def _run_driver(exported, inputs, workdir):
    exe = _driver(exported, workdir)
    for k, (arr, (_, dt, shape)) in enumerate(zip(inputs, exported.inputs)):
        np.ascontiguousarray(arr, dtype=dt).tofile(os.path.join(workdir, f"in{k}.bin"))
    proc = subprocess.run([exe], cwd=workdir, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return [np.fromfile(os.path.join(workdir, f"out{k}.bin"), dtype=dt).reshape(shape)
            for k, (_, dt, shape) in enumerate(exported.outputs)]


def _mlp_loss(w1, b1, w2, x, labels):
    h = gc.nn.relu(gc.matmul(x, w1) + b1)
    return gc.reduce_mean(gc.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=gc.matmul(h, w2)))


def _mlp_args(rng):
    return [rng.standard_normal((6, 16)).astype(np.float32) * 0.5, np.zeros(16, np.float32),
            rng.standard_normal((16, 3)).astype(np.float32) * 0.5, rng.standard_normal((10, 6)).astype(np.float32),
            rng.integers(0, 3, 10).astype(np.int32)]


@needs_cc
def test_forward_function_from_c(tmp_path):
    f = gc.function(lambda x, y: (gc.tanh(x) * y + 1.0, gc.reduce_max(x, axis=1)),
                    input_signature=[gc.TensorSpec([3, 4]), gc.TensorSpec([4])])
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    exported = f.export(str(tmp_path / "lib"), "forward")
    got = _run_driver(exported, [x, y], str(tmp_path))
    for a, b in zip(got, f(x, y)):
        np.testing.assert_allclose(a, b, rtol=1e-6)


@needs_cc
def test_gradient_of_an_mlp_loss_from_c(tmp_path):
    vg = gc.value_and_grad(_mlp_loss, argnums=(0, 1, 2))
    args = _mlp_args(np.random.default_rng(1))
    loss, grads = vg(*args)
    exported = vg.export(str(tmp_path / "lib"), "mlp_grad")
    assert [s for _, _, s in exported.outputs] == [(), (6, 16), (16,), (16, 3)]
    got = _run_driver(exported, args, str(tmp_path))
    np.testing.assert_allclose(got[0], loss, rtol=1e-5)
    for a, b in zip(got[1:], grads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@needs_cc
def test_while_loop_function_from_c(tmp_path):
    def newton_sqrt(a):
        i, x = gc.while_loop(lambda i, x: gc.logical_and(i < 50, gc.reduce_max(gc.abs(x * x - a)) > 1e-12),
                             lambda i, x: (i + 1, 0.5 * (x + a / x)), [gc.constant(0), a + 1.0])
        return x, i
    f = gc.function(newton_sqrt, input_signature=[gc.TensorSpec([5], gc.float64)])
    a = np.array([1.0, 2.0, 9.0, 0.25, 100.0])
    got = _run_driver(f.export(str(tmp_path / "lib"), "newton"), [a], str(tmp_path))
    expected = f(a)
    np.testing.assert_allclose(got[0], np.sqrt(a), rtol=1e-12)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-12)


@needs_cc
def test_session_export_freezes_variables(tmp_path):
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, [2, 3], name="x")
        w = gc.Variable(np.arange(12, dtype=np.float32).reshape(3, 4), name="w")
        y = gc.matmul(x, w) * 2.0
        with gc.Session(g) as sess:
            sess.run(gc.global_variables_initializer())
            exported = gc.export(y, [x], str(tmp_path / "lib"), "frozen", session=sess)
            xv = np.ones((2, 3), np.float32)
            expected = sess.run(y, {x: xv})
    lib = gc.load_library(exported.library)
    np.testing.assert_allclose(lib(xv), expected)
    np.testing.assert_allclose(_run_driver(exported, [xv], str(tmp_path))[0], expected)


@needs_cc
def test_a_fresh_process_loads_the_library_without_graphc(tmp_path):
    vg = gc.value_and_grad(_mlp_loss, argnums=(0, 2))
    args = _mlp_args(np.random.default_rng(2))
    loss, (g1, g2) = vg(*args)
    exported = vg.export(str(tmp_path / "lib"), "fresh")
    np.savez(tmp_path / "args.npz", *args)
    library_py = os.path.join(os.path.dirname(gc.__file__), "library.py")
    script = textwrap.dedent(f"""
        import importlib.util, sys
        import numpy as np
        spec = importlib.util.spec_from_file_location("graphc_library", {library_py!r})
        mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
        fn = mod.load_library({exported.library!r})
        data = np.load({str(tmp_path / "args.npz")!r})
        out = fn(*[data[f"arr_{{i}}"] for i in range(5)])
        assert not any(m == "graphc" or m.startswith("graphc.") or m == "llvmlite" for m in sys.modules), \\
            sorted(m for m in sys.modules if "graphc" in m or "llvm" in m)
        np.savez({str(tmp_path / "out.npz")!r}, *out)
    """)
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    out = np.load(tmp_path / "out.npz")
    np.testing.assert_allclose(out["arr_0"], loss, rtol=1e-5)
    np.testing.assert_allclose(out["arr_1"], g1, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out["arr_2"], g2, rtol=1e-4, atol=1e-6)


@needs_cc
def test_load_library_checks_arguments(tmp_path):
    f = gc.function(lambda x: x * 3.0, input_signature=[gc.TensorSpec([4])])
    lib = gc.load_library(f.export(str(tmp_path), "triple").library)
    np.testing.assert_array_equal(lib(np.arange(8, dtype=np.float32)[::2]), np.arange(0, 8, 2) * 3.0)
    np.testing.assert_array_equal(lib([1, 2, 3, 4]), [3, 6, 9, 12])
    with pytest.raises(ValueError, match="shape"):
        lib(np.zeros(5, np.float32))
    with pytest.raises(TypeError, match="takes 1"):
        lib()
    assert "triple(float32[4])" in repr(lib)


def test_unknown_dims_fail_before_writing(tmp_path):
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, [None, 3])
        y = x * 2.0
    target = tmp_path / "out"
    with pytest.raises(ExportError, match="unknown dims"):
        gc.export(y, [x], str(target), "f")
    assert not target.exists()
    if CC is not None:
        exported = gc.export(y, [x], str(target), "f", shapes=[(2, 3)])
        assert os.path.exists(exported.library)


def test_unexportable_ops_fail_before_writing(tmp_path):
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, [3])
        y = x + gc.random_uniform([3], seed=1)
    with pytest.raises(ExportError, match="random_uniform"):
        gc.export(y, [x], str(tmp_path / "out"), "f")
    assert not (tmp_path / "out").exists()


def test_missing_compiler_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    f = gc.function(lambda x: x + 1.0, input_signature=[gc.TensorSpec([2])])
    with pytest.raises(ExportError, match="C compiler"):
        f.export(str(tmp_path / "out"), "f")
    assert not (tmp_path / "out").exists()


def test_export_names_must_be_c_identifiers(tmp_path):
    f = gc.function(lambda x: x + 1.0, input_signature=[gc.TensorSpec([2])])
    with pytest.raises(ExportError, match="C identifier"):
        f.export(str(tmp_path), "not-a-name")


@needs_cc
def test_variables_can_be_inputs_of_the_exported_function(tmp_path):
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, [2, 3], name="x")
        w = gc.Variable(np.ones((3, 4), np.float32), name="w")
        b = gc.Variable(np.zeros(4, np.float32), name="b")
        y = gc.matmul(x, w) + b
        with gc.Session(g) as sess:
            sess.run(gc.global_variables_initializer())
            exported = gc.export(y, [x], str(tmp_path / "lib"), "params", session=sess, variables_as="inputs")
    assert [n for n, _, _ in exported.inputs] == ["x", "variable b", "variable w"]
    header = open(exported.header).read()
    assert "variable b, float32[4]" in header and "PARAMS_NUM_INPUTS 3" in header
    rng = np.random.default_rng(0)
    xv, bv, wv = (rng.standard_normal(s).astype(np.float32) for s in [(2, 3), (4,), (3, 4)])
    lib = gc.load_library(exported.library)
    np.testing.assert_allclose(lib(xv, bv, wv), xv @ wv + bv, rtol=1e-6)
    np.testing.assert_allclose(_run_driver(exported, [xv, bv, wv], str(tmp_path))[0], xv @ wv + bv, rtol=1e-6)


def test_variables_as_must_be_known(tmp_path):
    f = gc.function(lambda x: x + 1.0, input_signature=[gc.TensorSpec([2])])
    with pytest.raises(ExportError, match="variables_as"):
        f.export(str(tmp_path), "f", variables_as="frozen")


def test_cross_compiling_writes_an_object_file(tmp_path):
    f = gc.function(lambda x: gc.exp(x) * 2.0, input_signature=[gc.TensorSpec([8])])
    exported = f.export(str(tmp_path), "arm", triple="aarch64-unknown-linux-gnu")
    assert exported.library.endswith("arm.o") and os.path.exists(exported.header)
    with open(exported.library, "rb") as fh:
        elf = fh.read(20)
    assert elf[:4] == b"\x7fELF" and int.from_bytes(elf[18:20], "little") == 183     # EM_AARCH64
    assert not (tmp_path / "arm.so").exists()
