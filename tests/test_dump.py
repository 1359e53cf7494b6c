"""Graph dumps (graphc/dump.py): text, DOT and HTML forms, stage selection,
GRAPHC_DUMP_DIR, and docs/passes.md staying in sync with the pass registry."""
import importlib.util
import inspect
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import graphc as gc
from graphc.dump import (CompileLog, add_artifact, add_timing, dot_available, format_dot, format_html, format_text,
                         render_svg, stage_file_stem, stage_number, stage_records)
from graphc.errors import CompileError, InvalidArgumentError
from graphc.passes import Rewriter, StageRecord, extract, pipeline
from graphc.session import Config, compile_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.basename(__file__)


def _line() -> int:
    """The caller's line number (to find this file's source lines in dumps)."""
    return inspect.currentframe().f_back.f_lineno


# --------------------------------------------------------------------------
# A small DOT parser: enough of the grammar to check what dumps emit
# --------------------------------------------------------------------------
_TOKEN = re.compile(r'\s*(?:(->)|("(?:[^"\\]|\\.)*")|([A-Za-z_][\w.]*|-?\d+(?:\.\d+)?)|([{}\[\];=,]))')


def _tokens(text):
    pos, out = 0, []
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        assert m, f"DOT syntax error at {text[pos:pos + 40]!r}"
        out.append(next(g for g in m.groups() if g is not None))
        pos = m.end()
    return out


def parse_dot(text):
    """Parse a digraph; return {"nodes": {id: attrs}, "edges": [(a, b, attrs)],
    "clusters": {name: set of node ids (nested included)}}."""
    toks = _tokens(text)
    i = 0
    result = {"nodes": {}, "edges": [], "clusters": {}}

    def expect(tok):
        nonlocal i
        assert toks[i] == tok, f"expected {tok!r}, got {toks[i]!r} at token {i}"
        i += 1

    def attr_list():
        nonlocal i
        attrs = {}
        expect("[")
        while toks[i] != "]":
            key = toks[i]
            expect_eq = toks[i + 1]
            assert expect_eq == "=", f"bad attribute at {toks[i:i + 3]}"
            attrs[key] = toks[i + 2].strip('"')
            i += 3
            if toks[i] in (",", ";"):
                i += 1
        expect("]")
        return attrs

    def stmts(stack):
        nonlocal i
        expect("{")
        while toks[i] != "}":
            tok = toks[i]
            if tok == "subgraph":
                name = toks[i + 1]
                i += 2
                result["clusters"].setdefault(name, set())
                stmts(stack + [name])
            elif tok in ("graph", "node", "edge") and toks[i + 1] == "[":
                i += 1
                attr_list()
            elif toks[i + 1] == "=":
                i += 3
            elif toks[i + 1] == "->":
                a, b = tok, toks[i + 2]
                i += 3
                attrs = attr_list() if toks[i] == "[" else {}
                result["edges"].append((a, b, attrs))
            else:
                i += 1
                result["nodes"][tok] = attr_list() if toks[i] == "[" else {}
                for name in stack:
                    result["clusters"][name].add(tok)
            if toks[i] == ";":
                i += 1
        expect("}")

    try:
        expect("digraph")
        i += 1 if toks[i] != "{" else 0
        stmts([])
    except IndexError:
        raise AssertionError("DOT text ends early") from None
    assert i == len(toks), "text after the closing brace"
    for a, b, _ in result["edges"]:
        assert a in result["nodes"] and b in result["nodes"], f"edge {a} -> {b} names an undeclared node"
    return result


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------
def _small_graph():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (None, 3), name="x")
        w = gc.constant(np.arange(6, dtype=np.float32).reshape(3, 2), name="w")
        line = _line() + 1
        y = gc.matmul(x, w, name="proj")
        loss = gc.reduce_sum(gc.tanh(y), name="loss")
        (grad,) = gc.gradients(loss, [x])
    return g, x, loss, grad, line


def _program(feed_shape=(4, 3)):
    g, x, loss, grad, line = _small_graph()
    return extract(g, [loss, grad], [], [x], [feed_shape]), line


class _Plan:
    def summary(self):
        return "3 buffers, 96 bytes peak\nproj reuses x"


def _synthetic_records():
    """input -> a rewrite that replaces tanh by sigmoid and notes it -> final."""
    program, _ = _program()
    rw = Rewriter(program)
    for op in program.ops():
        if rw.is_copied(op):
            continue
        if op.type == "tanh":
            with rw.graph.as_default():
                rw.replace(op.outputs[0], gc.sigmoid(rw[op.inputs[0]], name="swapped"))
        else:
            rw.copy(op)
    after = rw.finish()
    after.analyses["memory_plan"] = _Plan()
    n0, n1 = program.num_ops(), after.num_ops()
    return [StageRecord(0, "input", program, n0, n0, 0.0, False),
            StageRecord(1, "swap", after, n0, n1, 0.002, True, ["swapped tanh for sigmoid in 1 place"]),
            StageRecord(2, "final", after, n1, n1, 0.0, False)]


# --------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------
def test_text_has_names_types_attrs_sources_and_gradient_links():
    g, x, loss, grad, line = _small_graph()
    text = gc.dump(g, stage="input")
    assert "proj: f32[?,2] = matmul(x, w) transpose_a=False transpose_b=False" in text
    assert f"# {HERE}:{line}" in text
    assert "loss: f32[] = reduce_sum(" in text
    assert "x: f32[?,3] = placeholder()" in text
    assert re.search(r"= matmul\(.*\).*grad of proj", text), "gradient ops name their forward op"
    header = text.splitlines()[:5]
    assert header[0].startswith("# graphc dump: stage 0 input")
    assert any(h.startswith("# feeds: x: f32[?,3]") for h in header)
    assert any(h.startswith("# fetches:") and "loss: f32[]" in h for h in header)


def test_text_full_paths_and_short_constants():
    g, *_ = _small_graph()
    text = gc.dump(g, full_paths=True)
    assert os.path.abspath(__file__) in text
    with g.as_default():
        big = gc.constant(np.zeros((64, 128), np.float32), name="zeros")
        gc.add(big, 1.0, name="plus")
    text = gc.dump(g, stage="input")
    assert "zeros: f32[64,128] = const() value=f32[64,128]{all 0.0}" in text
    assert "value=[[0.0,1.0],[2.0,3.0],[4.0,5.0]]" in text
    assert max(len(line) for line in text.splitlines()) < 400


def test_text_shows_subgraph_bodies_indented_with_captures():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (3,), name="x")
        y = gc.cond(gc.reduce_sum(x) > 0, lambda: gc.exp(x), lambda: x * 2.0, name="branch")
        _, z = gc.while_loop(lambda i, v: i < 3, lambda i, v: [i + 1, v * 0.5], [gc.constant(0), y], name="loop")
    text = gc.dump(g, fetches=[z])
    lines = text.splitlines()
    cond_line = next(i for i, l in enumerate(lines) if l.startswith("branch: f32[3] = cond("))
    assert lines[cond_line + 1].startswith("    true_branch = ")
    assert "# captures: capture <- x" in lines[cond_line + 2]
    assert any(l.startswith("        exp: f32[3] = exp(") for l in lines)
    assert any(l.strip() == "return exp" for l in lines)
    assert any(l.startswith("loop: (i32[], f32[3], i32[]) = while_loop(") for l in lines)
    assert any(l.startswith("    body = ") for l in lines)


def test_text_header_has_notes_and_memory_plan():
    records = _synthetic_records()
    text = format_text(records[1])
    assert "# graphc dump: stage 1 after_swap (changed, 2.00 ms)" in text
    assert "#   swapped tanh for sigmoid in 1 place" in text
    assert "# memory plan:\n#   3 buffers, 96 bytes peak\n#   proj reuses x" in text
    assert "swapped: f32[4,2] = sigmoid(proj)" in text
    assert "ms" not in format_text(records[1], show_timing=False).splitlines()[0]


def test_text_shows_buffer_assignments_of_a_memory_plan():
    from types import SimpleNamespace as NS
    program, _ = _program()
    ops = {op.type: op for op in program.ops() if not op.name.startswith("gradients/")}
    mm, tanh = ops["matmul"].outputs[0], ops["tanh"].outputs[0]
    program.analyses["memory_plan"] = NS(
        tensors={mm: NS(buffer=0, base=None), tanh: NS(buffer=0, base=None),
                 ops["reduce_sum"].outputs[0]: NS(buffer=None, base=mm)},
        in_place=[NS(op=tanh.op.name, input=mm.name, output=tanh.name)],
        summary=lambda: "1 buffer")
    text = format_text(program)
    assert re.search(r"^proj: .*# test_dump.py:\d+, buf 0$", text, re.M)
    assert re.search(rf"^{tanh.op.name}: .*, buf 0 in place over proj$", text, re.M)
    assert re.search(r"^loss: .*, view of proj$", text, re.M)
    assert "# memory plan:\n#   1 buffer" in text


def test_control_inputs_are_marked():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (2,), name="x")
        a = gc.exp(x, name="first")
        with gc.control_dependencies([a]):
            b = gc.log(x, name="second")
    text = gc.dump(g, stage="input")
    assert "second: f32[2] = log(x, ^first)" in text


# --------------------------------------------------------------------------
# Stages and objects
# --------------------------------------------------------------------------
def test_unknown_stage_and_format_are_clear_errors():
    g, *_ = _small_graph()
    with pytest.raises(InvalidArgumentError) as info:
        gc.dump(g, stage="no_such_pass")
    message = str(info.value)
    assert "no_such_pass" in message and "input" in message and "final" in message
    for p in pipeline():
        assert p.name in message
    with pytest.raises(InvalidArgumentError, match="text, dot, html"):
        gc.dump(g, format="pdf")
    with pytest.raises(InvalidArgumentError, match="cannot dump a int"):
        gc.dump(3)
    assert isinstance(info.value, gc.errors.GraphcError)


def test_every_stage_by_name_index_and_after_alias():
    g, *_ = _small_graph()
    records, log = stage_records(g)
    assert [r.name for r in records] == ["input"] + [p.name for p in pipeline()] + ["final"]
    assert log.timings["passes"] >= 0
    for i, r in enumerate(records):
        by_name = gc.dump(records, stage=r.name)
        assert by_name == gc.dump(records, stage=i)
        assert by_name.startswith(f"# graphc dump: stage {i} ")
        if r.name not in ("input", "final"):
            assert gc.dump(records, stage=f"after_{r.name}") == by_name


def test_disabled_pass_is_named_in_the_error(monkeypatch):
    names = [p.name for p in pipeline()]
    if not names:
        pytest.skip("no pass is registered")
    monkeypatch.setenv("GRAPHC_DISABLE_PASSES", names[0])
    g, *_ = _small_graph()
    with pytest.raises(InvalidArgumentError, match="disabled"):
        gc.dump(g, stage=names[0])


def test_dump_session_executable_and_session():
    g, x, loss, grad, _ = _small_graph()
    with gc.Session(graph=g, config=gc.Config(backend="interpreter")) as sess:
        with pytest.raises(InvalidArgumentError, match="compiled nothing"):
            gc.dump(sess)
        sess.run([loss, grad], {x: np.ones((5, 3), np.float32)})
        executable = list(sess._cache.values())[-1]
        text = gc.dump(executable)
        assert gc.dump(sess) == text
        assert "x: f32[5,3] = placeholder()" in text   # specialized on the fed shape
        assert gc.dump(executable, stage="input").startswith("# graphc dump: stage 0 input")
        assert executable.compile_log.timings["backend compile (interpreter)"] >= 0


def test_dump_unoptimized_executable_has_input_and_final():
    g, x, loss, grad, _ = _small_graph()
    with gc.Session(graph=g, config=gc.Config(backend="interpreter", optimize=False)) as sess:
        sess.run(loss, {x: np.ones((2, 3), np.float32)})
        records, _ = stage_records(sess)
        assert [r.name for r in records] == ["input", "final"]
        assert "x: f32[?,3] = placeholder()" in gc.dump(sess)


def test_dump_compiled_function_called_and_from_signature():
    def f(a, b):
        return gc.reduce_sum(gc.exp(a) * b, name="total")

    fn = gc.function(f, backend="interpreter")
    with pytest.raises(InvalidArgumentError, match="not been traced"):
        gc.dump(fn)
    fn(np.ones(3, np.float32), np.ones(3, np.float32))
    text = gc.dump(fn)
    assert "total: f32[] = reduce_sum(" in text and "arg0: f32[3] = placeholder()" in text
    sig = gc.function(f, input_signature=[gc.TensorSpec((None,)), gc.TensorSpec((None,))], backend="interpreter")
    assert "arg0: f32[?] = placeholder()" in gc.dump(sig)
    grad_fn = gc.grad(lambda a: gc.reduce_sum(a * a), backend="interpreter")
    grad_fn(np.ones(2))
    assert "grad of" in gc.dump(grad_fn, stage="input")
    assert "<!DOCTYPE html>" in gc.dump(fn, format="html")


def test_dump_graph_fetches_sinks_and_targets():
    g = gc.Graph()
    with g.as_default():
        v = gc.Variable(np.zeros(2, np.float32), name="v")
        x = gc.placeholder(gc.float32, (2,), name="x")
        gc.group(v.assign_add(x, name="bump"), name="step")
        gc.reduce_max(x, name="peak")
    text = gc.dump(g, stage="input")
    assert "# targets:" in text and "step" in text.split("# targets:")[1].splitlines()[0]
    assert "peak" in text.split("# fetches:")[1].splitlines()[0]
    only = gc.dump(g, stage="input", fetches=["peak:0"])
    assert "bump" not in only and "peak: f32[] = reduce_max(x)" in only
    with pytest.raises(InvalidArgumentError, match="no ops"):
        gc.dump(gc.Graph())


# --------------------------------------------------------------------------
# DOT
# --------------------------------------------------------------------------
def test_dot_is_a_digraph_with_typed_edges_control_edges_and_clusters():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (2, 3), name="x")
        y = gc.cond(gc.reduce_sum(x) > 0, lambda: x * 2.0, lambda: x, name="branch")
        first = gc.identity(y, name="first")
        with gc.control_dependencies([first]):
            gc.exp(x, name="after")
    dot = gc.dump(g, format="dot")
    parsed = parse_dot(dot)
    labels = {nid: a.get("label", "") for nid, a in parsed["nodes"].items()}
    by_name = {label.split("\\n")[0]: nid for nid, label in labels.items()}
    assert "f32[2,3]" in labels[by_name["x"]] and "placeholder" in labels[by_name["x"]]
    assert any(a == by_name["x"] and attrs.get("label") == "f32[2,3]" for a, _, attrs in parsed["edges"])
    control = [(a, b) for a, b, attrs in parsed["edges"] if attrs.get("style") == "dashed"]
    assert (by_name["first"], by_name["after"]) in control
    assert parsed["clusters"], "the cond's branches are clusters"
    clustered = set().union(*parsed["clusters"].values())
    assert by_name["branch"] in clustered
    assert len(parsed["nodes"]) > 8   # branch bodies are drawn


def test_dot_fused_kernels_are_clusters():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (4, 8), name="x")
        y = gc.reduce_sum(gc.tanh(x * 2.0 + 1.0) * x, axis=1)
    records, _ = stage_records(g, fetches=[y])
    final = records[-1].program
    fused = [op for op in final.ops() if op.opdef.lowering == "fused"]
    if not fused:
        pytest.skip("the fusion pass made no fused kernel of an elementwise chain")
    parsed = parse_dot(format_dot(records[-1]))
    labels = {nid: a.get("label", "") for nid, a in parsed["nodes"].items()}
    for op in fused:
        nid = next(n for n, label in labels.items() if label.split("\\n")[0] == op.name)
        holding = [name for name, members in parsed["clusters"].items() if nid in members]
        assert holding, f"fused kernel {op.name} is not drawn as a cluster"
        assert len(parsed["clusters"][holding[0]]) > 1, "the cluster shows the kernel's body"
    text = gc.dump(records)
    assert any(line.startswith("    ") for line in text.splitlines()), "fused bodies are indented in text"


def test_parse_dot_rejects_broken_input():
    with pytest.raises(AssertionError):
        parse_dot('digraph "g" { a -> b [label="x"]; ')
    with pytest.raises(AssertionError):
        parse_dot('digraph "g" { a; a -> b; }')


@pytest.mark.skipif(not dot_available(), reason="Graphviz `dot` is not installed")
def test_dot_renders_to_svg_with_graphviz():
    g, *_ = _small_graph()
    svg = gc.dump(g, format="svg")
    assert "<svg" in svg and "proj" in svg


def test_svg_without_graphviz_is_a_clear_error(monkeypatch):
    module = sys.modules["graphc.dump"]   # gc.dump is the function
    monkeypatch.setattr(module.shutil, "which", lambda name: None)
    assert not dot_available()
    with pytest.raises(InvalidArgumentError, match="Graphviz"):
        render_svg("digraph { a }")
    g, *_ = _small_graph()
    assert "<svg" not in gc.dump(g, format="html")   # the report leaves the picture out


# --------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------
def _assert_self_contained(page):
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    lowered = page.lower()
    for marker in ("http://", "https://", "src=", "<link", "<script", "url(", "@import", "<iframe"):
        assert marker not in lowered, f"HTML report references something outside itself: {marker}"
    for href in re.findall(r'href="([^"]*)"', page):
        assert href.startswith("#"), f"non-local link {href}"
    for anchor in re.findall(r'href="#([^"]*)"', page):
        assert f'id="{anchor}"' in page


def test_html_is_one_file_with_every_stage_timings_and_changes():
    records = _synthetic_records()
    log = CompileLog(records, {"extract": 0.001, "passes": 0.003, "backend compile (x)": 0.0005})
    page = format_html(records, log)
    _assert_self_contained(page)
    for r in records:
        assert f'id="stage-{r.index}"' in page
    assert "after_swap" in page
    assert re.search(r"Removed 1 op\(s\):</p><ul><li class=\"removed\"><code>[^<]*</code> \(tanh\)", page)
    assert "Added 1 op(s)" in page and "<code>swapped</code> (sigmoid)" in page
    assert "swapped tanh for sigmoid in 1 place" in page
    assert "3 buffers, 96 bytes peak" in page
    assert "extract (prune, specialize shapes)" in page and "backend compile (x)" in page
    assert "pass swap" in page and "2.00" in page
    assert "pass manager" in page          # 3 ms of pipeline minus 2 ms of passes
    assert "<th>total</th><th class=num>4.50</th>" in page   # 1 + 2 + 1 + 0.5 ms
    assert page.count("<details") >= len(records)


def test_html_of_a_real_pipeline_escapes_and_covers_every_pass():
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (2,), name="x<y>&z")
        gc.exp(x * 2.0, name="e")
    page = gc.dump(g, format="html")
    _assert_self_contained(page)
    assert "x&lt;y&gt;&amp;z" in page and "x<y>" not in page
    for p in pipeline():
        assert f"after_{p.name}" in page and p.description.split(".")[0][:30] in page


# --------------------------------------------------------------------------
# GRAPHC_DUMP_DIR
# --------------------------------------------------------------------------
def _run_small(config=None, shape=(4, 3)):
    g, x, loss, grad, _ = _small_graph()
    with gc.Session(graph=g, config=config or gc.Config(backend="interpreter")) as sess:
        sess.run([loss, grad], {x: np.ones(shape, np.float32)})
        return list(sess._cache.values())[-1]


def test_dump_dir_writes_numbered_stage_files(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_DUMP_DIR", str(tmp_path))
    executable = _run_small()
    exec_dir = tmp_path / "exec_0001"
    assert executable.compile_log.directory == str(exec_dir)
    files = sorted(os.listdir(exec_dir))
    n = len(pipeline())
    expected = ["0000.input", *(f"{i:04d}.after_{p.name}" for i, p in enumerate(pipeline(), 1)), f"{n + 1:04d}.final"]
    for stem in expected:
        assert f"{stem}.txt" in files and f"{stem}.dot" in files
    assert "pipeline.html" in files and "summary.txt" in files
    final = (exec_dir / f"{n + 1:04d}.final.txt").read_text()
    assert os.path.abspath(__file__) in final   # dump files carry full paths
    parse_dot((exec_dir / "0000.input.dot").read_text())
    _assert_self_contained((exec_dir / "pipeline.html").read_text())
    summary = (exec_dir / "summary.txt").read_text()
    assert "0000.input" in summary and "backend compile (interpreter)" in summary and "total" in summary
    _run_small(shape=(7, 3))   # another executable: the next directory
    top = (tmp_path / "summary.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in top] == ["exec_0001", "exec_0002"]
    assert "runs loss" in top[0]
    assert "x: f32[7,3]" in (tmp_path / "exec_0002" / "0000.input.txt").read_text()


def test_stage_numbers_stay_put_when_a_pass_is_disabled(tmp_path):
    names = [p.name for p in pipeline()]
    if len(names) < 2:
        pytest.skip("needs two registered passes")
    _run_small(gc.Config(backend="interpreter", dump_dir=str(tmp_path), disabled_passes=(names[0],)))
    files = os.listdir(tmp_path / "exec_0001")
    assert f"0002.after_{names[1]}.txt" in files
    assert not any(f.startswith(f"0001.") for f in files)


def test_config_dump_dir_and_no_dump_by_default(tmp_path, monkeypatch):
    monkeypatch.delenv("GRAPHC_DUMP_DIR", raising=False)
    executable = _run_small()
    assert executable.compile_log.directory is None
    assert add_artifact("x.ll", "; nothing", executable=executable) is None
    _run_small(gc.Config(backend="interpreter", dump_dir=str(tmp_path / "d")))
    assert os.path.isdir(tmp_path / "d" / "exec_0001")


class _ArtifactBackend:
    """A backend that adds an artifact and a timing while it compiles."""
    name = "artifact"

    def __init__(self, fail=False):
        from graphc.backends.interpreter import InterpreterBackend
        self.inner = InterpreterBackend()
        self.fail = fail

    def compile(self, program, config=None):
        add_artifact("module.ll", "define void @kernel() { ret void }\n")
        add_timing("llvm: optimize", 0.25)
        if self.fail:
            raise CompileError("no code for you")
        return self.inner.compile(program, config)


def test_backends_add_artifacts_and_timings(tmp_path):
    g, x, loss, grad, _ = _small_graph()
    config = Config(backend="interpreter", dump_dir=str(tmp_path))
    executable = compile_run(g, [loss], [], [x], [(2, 3)], config, _ArtifactBackend())
    exec_dir = tmp_path / "exec_0001"
    assert (exec_dir / "module.ll").read_text().startswith("define void")
    assert executable.compile_log.artifacts == [("module.ll", 35)]
    assert executable.compile_log.timings["llvm: optimize"] == 0.25
    page = (exec_dir / "pipeline.html").read_text()
    assert "module.ll" in page and "llvm: optimize" in page and "backend compile (artifact)" in page
    path = add_artifact("later.s", b"\x90", executable=executable)
    assert path == str(exec_dir / "later.s") and (exec_dir / "later.s").read_bytes() == b"\x90"
    with pytest.raises(InvalidArgumentError):
        add_artifact("..", "x", executable=executable)


def test_failed_compilation_still_leaves_its_dumps(tmp_path):
    g, x, loss, grad, _ = _small_graph()
    config = Config(backend="interpreter", dump_dir=str(tmp_path))
    with pytest.raises(CompileError):
        compile_run(g, [loss], [], [x], [(2, 3)], config, _ArtifactBackend(fail=True))
    exec_dir = tmp_path / "exec_0001"
    assert (exec_dir / "0000.input.txt").exists()
    assert "Compilation failed: CompileError: no code for you" in (exec_dir / "pipeline.html").read_text()
    assert "[FAILED]" in (tmp_path / "summary.txt").read_text()
    assert add_artifact("stray.ll", "x") is None     # no compilation is active any more


def test_stage_file_stems_follow_the_pipeline_order():
    records = stage_records(_small_graph()[0])[0]
    assert stage_file_stem(records[0]) == "0000.input"
    assert stage_file_stem(records[-1]) == f"{len(pipeline()) + 1:04d}.final"
    for r in records[1:-1]:
        assert stage_file_stem(r) == f"{stage_number(r):04d}.after_{r.name}"


# --------------------------------------------------------------------------
# docs/passes.md
# --------------------------------------------------------------------------
def _doc_generator():
    spec = importlib.util.spec_from_file_location("gen_passes_doc", os.path.join(ROOT, "scripts", "gen_passes_doc.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module     # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_docs_passes_md_is_up_to_date():
    env = {k: v for k, v in os.environ.items() if k not in ("GRAPHC_DISABLE_PASSES", "GRAPHC_DUMP_DIR")}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gen_passes_doc.py"), "--stdout"],
                          cwd=ROOT, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, f"python3 scripts/gen_passes_doc.py --stdout failed:\n{proc.stderr}"
    path = os.path.join(ROOT, "docs", "passes.md")
    current = open(path, encoding="utf-8").read() if os.path.exists(path) else ""
    assert current == proc.stdout, "docs/passes.md is out of date: run `python3 scripts/gen_passes_doc.py`"


def test_every_pass_has_a_doc_example_and_a_missing_one_fails():
    gen = _doc_generator()
    for p in pipeline():
        assert p.name in gen.EXAMPLES, f"pass {p.name} has no example in scripts/gen_passes_doc.py"
    with pytest.raises(gen.DocError, match="no example"):
        gen.pass_section("no_such_pass", "does nothing", False)


def test_a_failing_pass_still_dumps_the_stages_before_it(tmp_path):
    from graphc.passes import manager

    def boom(program):
        raise RuntimeError("boom")
    manager.register_pass("boom_for_test", "always fails")(boom)
    try:
        x = gc.placeholder(gc.float32, (2,), name="x")
        with pytest.raises(RuntimeError, match="boom"):
            with gc.Session(config=gc.Config(backend="interpreter", dump_dir=str(tmp_path))) as sess:
                sess.run(x * 2.0, {x: [1.0, 2.0]})
    finally:
        del manager._PASSES["boom_for_test"]
        manager._ORDER.remove("boom_for_test")
    written = sorted(p.name for p in tmp_path.glob("exec_*/*.txt"))
    assert "0000.input.txt" in written and any("after_dce" in name for name in written)
