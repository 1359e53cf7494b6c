"""Compiling one module in parts on several threads (codegen/jit.py,
_split_module and _compile_parts): the split itself, the linked result, the
disk cache holding several objects, and an executable compiled both ways."""
from __future__ import annotations

import ctypes
import uuid

import numpy as np
import pytest

import graphc as gc
from graphc.codegen import jit

# Three exported loops (one calls another across parts), an internal helper
# two of them use, an internal constant table and a declared global: what
# graphc's modules hold. The tag makes the text (and its cache key) unique.
_IR = """\
; tag {tag}
@"graphc_num_threads" = external global i32
@"table" = internal unnamed_addr constant [4 x float] [float 1.0, float 2.0, float 3.0, float 4.0], align 64

define internal float @"helper"(float %v) alwaysinline nounwind
{{
entry:
  %r = fmul float %v, 2.0
  ret float %r
}}

define void @"double_all"(ptr noalias %x, i64 %n) nounwind
{{
entry:
  %empty = icmp sle i64 %n, 0
  br i1 %empty, label %done, label %body
body:
  %i = phi i64 [0, %entry], [%next, %body]
  %p = getelementptr inbounds float, ptr %x, i64 %i
  %v = load float, ptr %p
  %d = call float @"helper"(float %v)
  store float %d, ptr %p
  %next = add i64 %i, 1
  %more = icmp slt i64 %next, %n
  br i1 %more, label %body, label %done
done:
  ret void
}}

define void @"add_table"(ptr noalias %x, i64 %n) nounwind
{{
entry:
  %empty = icmp sle i64 %n, 0
  br i1 %empty, label %done, label %body
body:
  %i = phi i64 [0, %entry], [%next, %body]
  %k = and i64 %i, 3
  %pt = getelementptr inbounds [4 x float], ptr @"table", i64 0, i64 %k
  %t = load float, ptr %pt
  %p = getelementptr inbounds float, ptr %x, i64 %i
  %v = load float, ptr %p
  %h = call float @"helper"(float %t)
  %s = fadd float %v, %h
  store float %s, ptr %p
  %next = add i64 %i, 1
  %more = icmp slt i64 %next, %n
  br i1 %more, label %body, label %done
done:
  ret void
}}

define i32 @"entry"(ptr %x, i64 %n) nounwind
{{
entry:
  call void @"double_all"(ptr %x, i64 %n)
  call void @"add_table"(ptr %x, i64 %n)
  ret i32 7
}}
"""


def _text() -> str:
    return _IR.format(tag=uuid.uuid4().hex)


@pytest.fixture
def split_small(monkeypatch):
    """Split even this small module, on two threads."""
    monkeypatch.setattr(jit, "_SPLIT_MIN_LINES", 0)
    monkeypatch.setenv(jit.COMPILE_THREADS_ENV, "2")
    monkeypatch.delenv(jit.CACHE_ENV, raising=False)


def _run(compiled: jit.CompiledModule) -> np.ndarray:
    x = np.arange(10, dtype=np.float32)
    fn = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_int64)(compiled.address("entry"))
    assert fn(x.ctypes.data, x.size) == 7
    return x


def _expected() -> np.ndarray:
    x = np.arange(10, dtype=np.float32) * 2
    return x + 2 * np.array([1, 2, 3, 4], np.float32)[np.arange(10) % 4]


def test_split_keeps_helpers_with_their_callers(split_small):
    pieces = jit._split_module(_text(), 3, ["entry"])
    assert pieces is not None and len(pieces) == 3
    kept = sorted(name for _, keep in pieces for name in keep)
    # every root stays external: entry is exported, the loops are called from its part
    assert kept == ["add_table", "double_all", "entry"]
    for text, keep in pieces:
        uses_helper = 'call float @"helper"' in text
        assert uses_helper == ('define internal float @"helper"' in text)
        assert '@"table" = internal' in text and '@"graphc_num_threads" = external global' in text


def test_split_refuses_what_it_could_change(split_small):
    text = _text()
    assert jit._split_module(text, 1, ["entry"]) is None                  # one thread: one piece
    assert jit._split_module(text.replace("internal unnamed_addr constant", "internal global"), 2,
                             ["entry"]) is None                           # a mutable global
    assert jit._split_module(text.replace('define void @"add_table"', 'define linkonce_odr void @"add_table"'),
                             2, ["entry"]) is None                        # another linkage


def test_module_compiled_in_parts_runs(split_small):
    compiled = jit.compile_module(_text(), name="parts", exports=["entry"])
    assert compiled.parts == 2
    np.testing.assert_array_equal(_run(compiled), _expected())
    assert set(compiled.timings) >= {"llvm: parse+verify", "llvm: optimize", "llvm: codegen"}
    # one optimized text and one assembly listing per part
    assert compiled.optimized_ir.count(jit.PART_SEPARATOR) == 1
    assert compiled.assembly().count(jit.PART_SEPARATOR) == 1
    with pytest.raises(gc.errors.CompileError):
        compiled.address("helper")                 # internal: not addressable


def test_one_thread_compiles_in_one_piece(split_small, monkeypatch):
    monkeypatch.setenv(jit.COMPILE_THREADS_ENV, "1")
    compiled = jit.compile_module(_text(), name="one", exports=["entry"])
    assert compiled.parts == 1
    np.testing.assert_array_equal(_run(compiled), _expected())


def test_cache_holds_every_part(split_small, monkeypatch, tmp_path):
    monkeypatch.setenv(jit.CACHE_ENV, str(tmp_path))
    text = _text()
    first = jit.compile_module(text, name="cached", exports=["entry"])
    assert first.parts == 2 and not first.from_cache and first.cache_key
    second = jit.compile_module(text, name="cached", exports=["entry"])
    assert second.from_cache
    np.testing.assert_array_equal(_run(second), _expected())
    assert second.optimized_ir == first.optimized_ir
    loaded = jit.load_cached_module(first.cache_key)
    assert loaded is not None
    np.testing.assert_array_equal(_run(loaded), _expected())


def test_executable_same_results_in_parts_or_one_piece(monkeypatch):
    """An MLP-like step (matmuls, fused kernels, a reduction, variable
    updates) gives the same results whether its module was split (up to
    float32 rounding: a kernel not inlined into the segment's core may be
    vectorized differently, so a reduction may sum in another order)."""
    monkeypatch.delenv(jit.CACHE_ENV, raising=False)
    monkeypatch.setattr(jit, "_SPLIT_MIN_LINES", 0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 12), dtype=np.float32)
    w0 = rng.standard_normal((12, 8), dtype=np.float32)

    def run(threads: str):
        monkeypatch.setenv(jit.COMPILE_THREADS_ENV, threads)
        graph = gc.Graph()
        with graph.as_default():
            xs = gc.placeholder(gc.float32, (16, 12), name="x")
            w = gc.Variable(w0.copy(), name="w")
            h = gc.tanh(gc.matmul(xs, w))
            loss = gc.reduce_mean(gc.exp(-h * h) + gc.sigmoid(h))
            train = gc.train.GradientDescentOptimizer(0.1).minimize(loss)
            init = gc.global_variables_initializer()
        sess = gc.Session(graph=graph, config=gc.Config(backend="cpu"))
        sess.run(init)
        values = [sess.run([loss, train], {xs: x})[0] for _ in range(3)]
        modules = [ex.module for ex in sess._cache.values() if getattr(ex, "module", None) is not None]
        return values, sess.run(w), max(m.parts for m in modules)

    one, w_one, parts_one = run("1")
    two, w_two, parts_two = run("2")
    assert parts_one == 1
    assert parts_two == 2
    np.testing.assert_allclose(np.array(one), np.array(two), rtol=1e-6)
    np.testing.assert_allclose(w_one, w_two, rtol=1e-6, atol=1e-7)
