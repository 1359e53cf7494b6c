"""The JIT's on-disk object cache (GRAPHC_CACHE_DIR), its pipeline choices
(loop-free modules, exports) and the direct loading of SciPy's cython_blas."""
from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest

from graphc.codegen import jit
from graphc.errors import CompileError

REPO_ROOT = Path(__file__).resolve().parent.parent

# saxpy-like loop (y[i] = a * x[i] + y[i]) plus a loop-free helper; the
# comment line makes every call's text (hence its cache key) unique.
_LOOP_IR = """\
; tag {tag}
define void @axpy(float %a, ptr noalias %x, ptr noalias %y, i64 %n) {{
entry:
  %empty = icmp sle i64 %n, 0
  br i1 %empty, label %done, label %body
body:
  %i = phi i64 [0, %entry], [%next, %body]
  %px = getelementptr inbounds float, ptr %x, i64 %i
  %py = getelementptr inbounds float, ptr %y, i64 %i
  %vx = load float, ptr %px
  %vy = load float, ptr %py
  %m = fmul float %a, %vx
  %s = fadd float %m, %vy
  store float %s, ptr %py
  %next = add i64 %i, 1
  %more = icmp slt i64 %next, %n
  br i1 %more, label %body, label %done
done:
  ret void
}}

define i64 @scale(i64 %v) {{
  %r = mul i64 %v, {factor}
  ret i64 %r
}}
"""

_LOOP_FREE_IR = """\
; tag {tag}
define i64 @pick(i64 %v) {{
entry:
  %neg = icmp slt i64 %v, 0
  br i1 %neg, label %low, label %high
high:
  %h = mul i64 %v, 3
  br label %join
low:
  %l = sub i64 0, %v
  br label %join
join:
  %r = phi i64 [%h, %high], [%l, %low]
  ret i64 %r
}}
"""

_AXPY = ctypes.CFUNCTYPE(None, ctypes.c_float, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
_I64_FN = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64)


def _loop_ir(factor: int = 7) -> str:
    return _LOOP_IR.format(tag=uuid.uuid4().hex, factor=factor)


def _run_axpy(compiled: jit.CompiledModule) -> np.ndarray:
    rng = np.random.default_rng(3)
    x = rng.standard_normal(1000).astype(np.float32)
    y = rng.standard_normal(1000).astype(np.float32)
    _AXPY(compiled.address("axpy"))(np.float32(1.5), x.ctypes.data, y.ctypes.data, x.size)
    return y


def _entries(directory: Path) -> list:
    return sorted((directory / "llvm-cpu").glob("*.gco")) if (directory / "llvm-cpu").exists() else []


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(jit.CACHE_ENV, str(tmp_path))
    return tmp_path


def _delta(before: dict, after: dict) -> dict:
    return {k: after[k] - before[k] for k in ("hits", "misses", "writes", "bad_entries", "errors")}


def test_cache_hit_gives_identical_working_code(cache_dir):
    text = _loop_ir()
    before = jit.cache_stats()
    first = jit.compile_module(text, name="axpy_test")
    assert not first.from_cache
    assert "llvm: cache write" in first.timings
    assert len(_entries(cache_dir)) == 1
    second = jit.compile_module(text, name="axpy_test")
    assert second.from_cache
    assert set(second.timings) == {"llvm: cache hit"}
    assert _delta(before, jit.cache_stats()) == {"hits": 1, "misses": 1, "writes": 1, "bad_entries": 0,
                                                 "errors": 0}
    expected = _run_axpy(first)
    got = _run_axpy(second)
    np.testing.assert_array_equal(got, expected)
    rng = np.random.default_rng(3)
    x = rng.standard_normal(1000).astype(np.float32)
    y = rng.standard_normal(1000).astype(np.float32)
    np.testing.assert_allclose(got, np.float32(1.5) * x + y, rtol=1e-6)
    assert _I64_FN(second.address("scale"))(6) == 42
    # the stored optimized IR comes back (lazily) for dumps
    assert second.optimized_ir == first.optimized_ir
    assert "@axpy" in second.optimized_ir
    with pytest.raises(CompileError):
        second.address("no_such_function")


def test_key_depends_on_ir_text_and_settings(cache_dir):
    a, b = _loop_ir(factor=7), _loop_ir(factor=9)
    assert jit.cache_key(a) != jit.cache_key(b)
    assert jit.cache_key(a) == jit.cache_key(a)
    assert jit.cache_key(a, opt=2) != jit.cache_key(a)
    assert jit.cache_key(a, unroll=True) != jit.cache_key(a)
    assert jit.cache_key(a, exports=["axpy"]) != jit.cache_key(a)
    ma = jit.compile_module(a)
    mb = jit.compile_module(b)
    assert not mb.from_cache            # a different text never hits another's entry
    assert len(_entries(cache_dir)) == 2
    assert _I64_FN(ma.address("scale"))(2) == 14
    assert _I64_FN(mb.address("scale"))(2) == 18


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "garbage"])
def test_corrupt_entry_is_ignored_and_rewritten(cache_dir, damage):
    text = _loop_ir()
    expected = _run_axpy(jit.compile_module(text))
    (entry,) = _entries(cache_dir)
    data = entry.read_bytes()
    if damage == "truncate":
        entry.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        pos = len(data) - 100
        entry.write_bytes(data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1:])
    elif damage == "empty":
        entry.write_bytes(b"")
    else:
        entry.write_bytes(os.urandom(len(data)))
    before = jit.cache_stats()
    again = jit.compile_module(text)
    assert not again.from_cache
    np.testing.assert_array_equal(_run_axpy(again), expected)
    assert _delta(before, jit.cache_stats())["bad_entries"] == 1
    assert jit._read_entry(str(entry.parent), entry.stem) is not None
    # rewritten: the next compile hits
    third = jit.compile_module(text)
    assert third.from_cache
    np.testing.assert_array_equal(_run_axpy(third), expected)


def test_entry_of_another_key_is_not_used(cache_dir):
    # a valid entry copied under a wrong name must not be loaded
    a, b = _loop_ir(factor=3), _loop_ir(factor=5)
    jit.compile_module(a)
    (entry,) = _entries(cache_dir)
    wrong = entry.parent / (jit.cache_key(b) + ".gco")
    wrong.write_bytes(entry.read_bytes())
    mb = jit.compile_module(b)
    assert not mb.from_cache
    assert _I64_FN(mb.address("scale"))(1) == 5


def test_disabled_without_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(jit.CACHE_ENV, raising=False)
    assert jit.cache_directory() is None
    monkeypatch.chdir(tmp_path)
    text = _loop_ir()
    before = jit.cache_stats()
    first = jit.compile_module(text)
    second = jit.compile_module(text)
    assert not first.from_cache and not second.from_cache
    assert _delta(before, jit.cache_stats()) == {"hits": 0, "misses": 0, "writes": 0, "bad_entries": 0,
                                                 "errors": 0}
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv(jit.CACHE_ENV, "")
    assert jit.cache_directory() is None


def test_unusable_cache_directory_never_fails_a_compile(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(jit.CACHE_ENV, str(blocker))
    before = jit.cache_stats()
    compiled = jit.compile_module(_loop_ir())
    assert _I64_FN(compiled.address("scale"))(3) == 21
    delta = _delta(before, jit.cache_stats())
    assert delta["errors"] >= 1 and delta["writes"] == 0
    assert jit.cache_stats()["last_error"]


def test_no_temporary_files_left(cache_dir):
    for factor in (2, 3, 4):
        jit.compile_module(_loop_ir(factor))
    names = [p.name for p in (cache_dir / "llvm-cpu").iterdir()]
    assert len(names) == 3 and all(n.endswith(".gco") for n in names)


def test_second_process_hits_the_cache(cache_dir):
    text = _loop_ir(factor=11)
    expected = _run_axpy(jit.compile_module(text))
    script = textwrap.dedent("""
        import ctypes, json, sys
        import numpy as np
        from graphc.codegen import jit
        compiled = jit.compile_module(sys.stdin.read(), name="child")
        rng = np.random.default_rng(3)
        x = rng.standard_normal(1000).astype(np.float32)
        y = rng.standard_normal(1000).astype(np.float32)
        f = ctypes.CFUNCTYPE(None, ctypes.c_float, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
        f(compiled.address("axpy"))(np.float32(1.5), x.ctypes.data, y.ctypes.data, x.size)
        stats = jit.cache_stats()
        print(json.dumps({"hits": stats["hits"], "from_cache": compiled.from_cache, "stats": stats,
                          "directory": jit.cache_directory(),
                          "timings": sorted(compiled.timings), "y": y.tolist()}))
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", script], input=text, capture_output=True, text=True,
                          env=env, cwd=str(REPO_ROOT), timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["hits"] == 1 and result["from_cache"], (result["stats"], result["directory"],
                                                          _entries(cache_dir), jit.cache_key(text))
    assert result["timings"] == ["llvm: cache hit"]
    np.testing.assert_array_equal(np.array(result["y"], dtype=np.float32), expected)


def test_session_executable_uses_the_cache(cache_dir):
    import graphc as gc

    def run() -> np.ndarray:
        gc.reset_default_graph()
        x = gc.placeholder(gc.float32, [64, 32], name="x")
        w = gc.constant(np.linspace(-1, 1, 32 * 8, dtype=np.float32).reshape(32, 8))
        y = gc.reduce_sum(gc.tanh(gc.matmul(x, w)) * 2.0, axis=1)
        feed = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
        with gc.Session(config=gc.Config(backend="cpu")) as sess:
            return sess.run(y, {x: feed})

    before = jit.cache_stats()
    first = run()
    written = _delta(before, jit.cache_stats())["writes"]
    assert written >= 1
    middle = jit.cache_stats()
    second = run()
    assert _delta(middle, jit.cache_stats())["hits"] >= 1
    np.testing.assert_array_equal(second, first)


# --------------------------------------------------------------------------
# Pipeline choices
# --------------------------------------------------------------------------
def test_loop_detection():
    assert jit._has_cycles(_loop_ir())
    assert not jit._has_cycles(_LOOP_FREE_IR.format(tag="x"))
    # a backward branch in layout order that is no loop (graphc's argument
    # checks are laid out like this)
    backward = textwrap.dedent("""\
        define void @f(i1 %c) {
        entry:
          br i1 %c, label %b, label %join
        join:
          ret void
        b:
          br label %join
        }
        """)
    assert not jit._has_cycles(backward)
    self_loop = 'define void @g() {\n  br label %"x y"\n"x y":\n  br label %"x y"\n}\n'
    assert jit._has_cycles(self_loop)
    # an unnamed entry block (LLVM's own printing) taking part in no cycle
    assert not jit._has_cycles("define void @h() {\n  br label %1\n1:\n  ret void\n}\n")
    # a loop in the second function only
    assert jit._has_cycles(_LOOP_FREE_IR.format(tag="y") + _loop_ir())


def test_loop_free_module_compiles_and_runs(monkeypatch):
    monkeypatch.delenv(jit.CACHE_ENV, raising=False)
    compiled = jit.compile_module(_LOOP_FREE_IR.format(tag=uuid.uuid4().hex), name="loop_free")
    fn = _I64_FN(compiled.address("pick"))
    assert [fn(v) for v in (-4, 0, 5)] == [4, 0, 15]


def test_exports_internalize_the_rest(monkeypatch):
    monkeypatch.delenv(jit.CACHE_ENV, raising=False)
    text = _loop_ir(factor=4)
    compiled = jit.compile_module(text, exports=["scale"])
    assert _I64_FN(compiled.address("scale"))(5) == 20
    with pytest.raises(CompileError):
        compiled.address("axpy")        # internal and unused: removed
    with pytest.raises(CompileError, match="not defined"):
        jit.compile_module(text, exports=["missing"])


# --------------------------------------------------------------------------
# BLAS: cython_blas loaded without importing scipy.linalg
# --------------------------------------------------------------------------
def test_cython_blas_direct_load_is_transparent():
    script = textwrap.dedent("""
        import json, sys
        from graphc.codegen import blas
        s = blas.gemm_address("float32")
        d = blas.gemm_address("float64")
        skipped = "scipy.linalg" not in sys.modules
        import scipy.linalg.cython_blas
        import scipy.linalg
        from scipy.linalg import cython_blas
        mod = scipy.linalg.cython_blas
        same = cython_blas is mod and blas._cython_blas() is mod
        capi = mod.__pyx_capi__
        a = scipy.linalg.blas.sgemm(1.0, [[1.0, 2.0], [3.0, 4.0]], [[1.0], [1.0]])
        print(json.dumps({"skipped": skipped, "same": same,
                          "s": s == blas._capsule_pointer(capi["sgemm"]),
                          "d": d == blas._capsule_pointer(capi["dgemm"]),
                          "gemm": a.ravel().tolist()}))
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          cwd=str(REPO_ROOT), timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"skipped": True, "same": True, "s": True, "d": True, "gemm": [3.0, 7.0]}
