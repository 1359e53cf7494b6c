"""Graph dumps: what the compiler did to a graph, in three forms.

* **text** (like a jaxpr or HLO text): a header (stage, op count, feeds,
  fetches, pass notes, memory plan) and one line per op::

      hidden/MatMul: f32[32,128] = matmul(x, hidden/w) transpose_a=False transpose_b=False  # mlp.py:44

  with subgraph bodies (fused kernels, cond branches, loop bodies) indented
  below their op, the user's ``file:line`` and, for adjoint ops, the forward
  op they differentiate (``grad of hidden/MatMul``). An input is named by its
  op when it is output 0 (``x``), else ``op:index``; ``^op`` is a control input.
* **dot**: Graphviz source; subgraph bodies are clusters, control edges dashed.
  :func:`render_svg` turns it into SVG when Graphviz's ``dot`` is installed.
* **html**: one self-contained file for the whole pipeline: stage table,
  per-pass and total compile timings, what each pass changed, every stage's
  text dump (collapsible).

``gc.dump(obj, stage="final", format="text")`` dumps a Graph, a compiled
function, a Session (its latest executable), a Session executable or a list
of StageRecords. With ``GRAPHC_DUMP_DIR=dir`` (or ``Config(dump_dir=dir)``)
every compilation writes ``dir/exec_NNNN/`` holding ``NNNN.<stage>.txt`` and
``.dot`` per stage (numbered by the pass's place in the full pipeline, so a
pass keeps its number when others are disabled), ``pipeline.html``,
``summary.txt`` and whatever backends add with :func:`add_artifact`
(LLVM IR, PTX); ``dir/summary.txt`` gets one line per compilation.
"""
from __future__ import annotations

import contextlib
import html
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import shapes as _shapes
from .errors import GraphcError, InvalidArgumentError
from .graph import FuncGraph, Graph, Operation, Tensor
from .ops.registry import FUSED
from .passes.manager import StageRecord, pipeline, run_pipeline
from .passes.program import Program, extract

FORMATS = ("text", "dot", "html", "svg")
INPUT = "input"
FINAL = "final"

__all__ = ["CompileLog", "FORMATS", "StageDiff", "add_artifact", "add_timing", "compiling", "diff_stages",
           "dot_available", "dump", "format_dot", "format_html", "format_text", "op_line", "render_svg",
           "stage_file_stem", "stage_label", "stage_number", "stage_records", "summary_text", "type_str"]


# --------------------------------------------------------------------------
# Compile log: timings and artifacts of one compilation (and its dump dir)
# --------------------------------------------------------------------------
@dataclass
class CompileLog:
    """What one ``compile_run`` did: its stage records, phase timings
    (seconds, in the order they happened) and, when dumping, the directory
    it writes and the artifacts written there."""
    records: List[StageRecord]
    timings: Dict[str, float] = field(default_factory=dict)
    directory: Optional[str] = None
    artifacts: List[Tuple[str, int]] = field(default_factory=list)   # (file name, bytes)
    error: Optional[str] = None

    def add_timing(self, label: str, seconds: float) -> None:
        self.timings[label] = self.timings.get(label, 0.0) + seconds

    def add_artifact(self, name: str, content: Union[str, bytes]) -> Optional[str]:
        if self.directory is None:
            return None
        base = os.path.basename(name)
        if not base or base in (".", ".."):
            raise InvalidArgumentError(f"artifact name {name!r} is not a file name")
        data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
        path = os.path.join(self.directory, base)
        with open(path, "wb") as f:
            f.write(data)
        self.artifacts = [a for a in self.artifacts if a[0] != base] + [(base, len(data))]
        return path

    @property
    def total_seconds(self) -> float:
        return sum(self.timings.values())


class _Active(threading.local):
    def __init__(self) -> None:
        self.logs: List[CompileLog] = []


_active = _Active()
_exec_counters: Dict[str, int] = {}
_exec_lock = threading.Lock()


def add_artifact(name: str, content: Union[str, bytes], executable: Any = None) -> Optional[str]:
    """Write a compilation artifact (LLVM IR, PTX, assembly...) next to the
    graph dumps of ``executable``, or of the executable being compiled on
    this thread when ``executable`` is None. Returns the file's path, or None
    when dumping is off. Call it from a backend's ``compile``."""
    log = _log_of(executable)
    return log.add_artifact(name, content) if log is not None else None


def add_timing(label: str, seconds: float, executable: Any = None) -> None:
    """Record a compile phase's time (e.g. ``"llvm: optimize"``) for the
    dumps' timing tables; a no-op outside a compilation."""
    log = _log_of(executable)
    if log is not None:
        log.add_timing(label, seconds)


def _log_of(executable: Any) -> Optional[CompileLog]:
    if executable is not None:
        return getattr(executable, "compile_log", None)
    return _active.logs[-1] if _active.logs else None


def _dump_root(configured: Optional[str]) -> Optional[str]:
    return configured or os.environ.get("GRAPHC_DUMP_DIR") or None


def _new_exec_dir(root: str) -> str:
    """``root/exec_NNNN``, the next free number (safe against other processes
    writing the same root: mkdir either creates or fails)."""
    os.makedirs(root, exist_ok=True)
    key = os.path.abspath(root)
    with _exec_lock:
        n = _exec_counters.get(key, 0)
        while True:
            n += 1
            path = os.path.join(root, f"exec_{n:04d}")
            try:
                os.mkdir(path)
            except FileExistsError:
                continue
            _exec_counters[key] = n
            return path


@contextlib.contextmanager
def compiling(program: Program, stages: Sequence[StageRecord], timings: Dict[str, float],
              dump_dir: Optional[str] = None) -> Iterator[CompileLog]:
    """Context of one backend compilation (used by ``compile_run``): makes
    :func:`add_artifact`/:func:`add_timing` reach this compilation and, when
    a dump directory is configured, writes the stage dumps before the backend
    runs (so they exist even if it fails) and the report after."""
    records = list(stages) if stages else _unoptimized_records(program)
    log = CompileLog(records, dict(timings))
    root = _dump_root(dump_dir)
    if root is not None:
        log.directory = _new_exec_dir(root)
        _write_stage_files(log)
    _active.logs.append(log)
    try:
        yield log
    except BaseException as exc:
        log.error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        _active.logs.pop()
        if log.directory is not None:
            _write_reports(log, root)


def _unoptimized_records(program: Program) -> List[StageRecord]:
    n = program.num_ops()
    return [StageRecord(0, INPUT, program, n, n, 0.0, False), StageRecord(1, FINAL, program, n, n, 0.0, False)]


# --------------------------------------------------------------------------
# Resolving what to dump
# --------------------------------------------------------------------------
def stage_records(obj: Any, fetches: Optional[Sequence[Any]] = None,
                  feeds: Optional[Sequence[Any]] = None) -> Tuple[List[StageRecord], Optional[CompileLog]]:
    """The pipeline stages of ``obj`` (see :func:`dump`) and its compile log."""
    from .function import CompiledFunction
    from .session import Session
    if isinstance(obj, StageRecord):
        return [obj], None
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(r, StageRecord) for r in obj):
        return list(obj), None
    if isinstance(obj, Graph):
        return _records_for_graph(obj, fetches, feeds)
    if isinstance(obj, Program):
        return _records_for_program(obj)
    if isinstance(obj, CompiledFunction):
        return _records_for_function(obj)
    if isinstance(obj, Session):
        if not obj._cache:
            raise InvalidArgumentError("this Session has compiled nothing yet: run something first, "
                                       "or dump its graph (gc.dump(sess.graph))")
        return _records_for_executable(list(obj._cache.values())[-1])
    if hasattr(obj, "stages"):
        return _records_for_executable(obj)
    raise InvalidArgumentError(f"gc.dump cannot dump a {type(obj).__name__}: give a Graph, a compiled function "
                               "(gc.function), a Session, a Session executable or a list of StageRecords")


def _records_for_executable(executable: Any) -> Tuple[List[StageRecord], Optional[CompileLog]]:
    log = getattr(executable, "compile_log", None)
    if executable.stages:
        return list(executable.stages), log
    if log is not None:
        return list(log.records), log
    program = getattr(executable, "program", None)
    if program is None:
        raise InvalidArgumentError(f"{type(executable).__name__} records no pipeline stages and no program")
    return _unoptimized_records(program), None


def _records_for_function(fn: Any) -> Tuple[List[StageRecord], Optional[CompileLog]]:
    trace = fn._last
    if trace is None:
        raise InvalidArgumentError(f"{fn.__name__} has not been traced yet: call it once or give input_signature")
    if trace.session._cache:
        return _records_for_executable(list(trace.session._cache.values())[-1])
    # traced from its signature but never called: compile what a call would
    return _records_for_graph(trace.graph, trace.outputs, trace.inputs)


def _records_for_program(program: Program) -> Tuple[List[StageRecord], Optional[CompileLog]]:
    start = time.perf_counter()
    _, records = run_pipeline(program)
    return records, CompileLog(records, {"passes": time.perf_counter() - start})


def _records_for_graph(graph: Graph, fetches: Optional[Sequence[Any]],
                       feeds: Optional[Sequence[Any]]) -> Tuple[List[StageRecord], Optional[CompileLog]]:
    if fetches is None:
        tensors, targets = _sinks(graph)
    else:
        elements = [graph.as_graph_element(f) for f in fetches]
        tensors = [e for e in elements if isinstance(e, Tensor)]
        targets = [e for e in elements if isinstance(e, Operation)]
    if not tensors and not targets:
        raise InvalidArgumentError(f"{graph!r} has nothing to dump: it has no ops")
    if feeds is None:
        feed_tensors = [op.outputs[0] for op in graph.get_operations() if op.type == "placeholder"]
    else:
        feed_tensors = []
        for f in feeds:
            e = graph.as_graph_element(f)
            feed_tensors.append(e.outputs[0] if isinstance(e, Operation) else e)
    start = time.perf_counter()
    program = extract(graph, tensors, targets, feed_tensors)
    extracted = time.perf_counter()
    _, records = run_pipeline(program)
    timings = {"extract": extracted - start, "passes": time.perf_counter() - extracted}
    return records, CompileLog(records, timings)


def _sinks(graph: Graph) -> Tuple[List[Tensor], List[Operation]]:
    """Every tensor nothing consumes, and every output-less op that is no
    other op's control input: the graph's results."""
    ops = graph.get_operations()
    consumed = {t for op in ops for t in op.inputs}
    controlling = {c for op in ops for c in op.control_inputs}
    tensors = [t for op in ops for t in op.outputs if t not in consumed]
    targets = [op for op in ops if not op.outputs and op not in controlling]
    return tensors, targets


def _select(records: Sequence[StageRecord], stage: Union[str, int]) -> StageRecord:
    names = [r.name for r in records]
    if isinstance(stage, (int, np.integer)) and not isinstance(stage, bool):
        if 0 <= int(stage) < len(records):
            return records[int(stage)]
    elif isinstance(stage, str):
        wanted = stage[len("after_"):] if stage.startswith("after_") else stage
        for r in records:
            if r.name == wanted or r.name == stage:
                return r
    hint = ""
    registered = [p.name for p in pipeline()]
    if isinstance(stage, str) and stage.removeprefix("after_") in registered:
        hint = f" (pass {stage.removeprefix('after_')!r} did not run in this compilation: disabled)"
    raise InvalidArgumentError(f"unknown dump stage {stage!r}{hint}; valid stages: {', '.join(names)} "
                               f"(or their indices 0-{len(records) - 1})")


def dump(obj: Any, stage: Union[str, int] = FINAL, format: str = "text", *, fetches: Optional[Sequence[Any]] = None,
         feeds: Optional[Sequence[Any]] = None, full_paths: bool = False) -> str:
    """Dump ``obj`` at pipeline ``stage`` ("input", a pass name, "final", or
    a stage index) as ``format`` "text", "dot", "html" (the whole pipeline;
    ``stage`` is ignored) or "svg" (needs Graphviz).

    ``obj``: a Graph (its every unconsumed tensor and output-less op is
    fetched, or ``fetches``; every placeholder is fed, or ``feeds``; the
    pipeline runs on it), a compiled function (its latest executable), a
    Session (its latest executable), a Session executable or a list of
    StageRecords. ``full_paths`` prints whole source paths, not basenames.
    """
    if format not in FORMATS:
        raise InvalidArgumentError(f"unknown dump format {format!r}; formats are {', '.join(FORMATS)}")
    records, log = stage_records(obj, fetches, feeds)
    if format == "html":
        return format_html(records, log, full_paths=full_paths)
    record = _select(records, stage)
    if format == "text":
        return format_text(record, full_paths=full_paths)
    dot = format_dot(record)
    return dot if format == "dot" else render_svg(dot)


# --------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------
_DTYPE_SHORT = {"float16": "f16", "float32": "f32", "float64": "f64", "int8": "i8", "int16": "i16",
                "int32": "i32", "int64": "i64", "uint8": "u8", "uint16": "u16", "uint32": "u32",
                "uint64": "u64", "bool": "bool", "complex64": "c64", "complex128": "c128"}


def type_str(shape: _shapes.Shape, dtype: Any) -> str:
    """``f32[32,128]``: ``?`` for an unknown dim, ``[..]`` for unknown rank."""
    d = _DTYPE_SHORT.get(np.dtype(dtype).name, np.dtype(dtype).name)
    if shape is None:
        return f"{d}[..]"
    return d + "[" + ",".join("?" if s is None else str(s) for s in shape) + "]"


def tensor_ref(t: Tensor) -> str:
    return t.op.name if t.value_index == 0 else t.name


def _outputs_str(op: Operation) -> str:
    types = [type_str(t.shape, t.dtype) for t in op.outputs]
    return types[0] if len(types) == 1 else "(" + ", ".join(types) + ")"


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def attr_str(value: Any) -> str:
    """A short, one-line rendering of an attribute value."""
    if isinstance(value, FuncGraph):
        return f"<{value.name}>"
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        return np.dtype(value).name
    if isinstance(value, np.ndarray):
        if value.size <= 8:
            return _short(repr(value.tolist()).replace(" ", ""), 64)
        flat = value.reshape(-1)
        uniform = flat.size and bool(np.all(flat == flat[0]))
        return type_str(value.shape, value.dtype) + (f"{{all {flat[0].item()!r}}}" if uniform else "{...}")
    if isinstance(value, np.generic):
        return repr(value.item())
    if isinstance(value, str):
        return _short(value)
    return _short(repr(value))


def _shown_attrs(op: Operation) -> List[Tuple[str, Any]]:
    """Attributes worth a look: drop what the output type already says and
    the subgraphs (printed as bodies)."""
    shown = []
    single = op.outputs[0] if len(op.outputs) == 1 else None
    fused = _is_fused(op)
    for key, value in op.attrs.items():
        if isinstance(value, FuncGraph) or (fused and key in _FUSED_NOTE_ATTRS):
            continue
        if single is not None:
            if key == "dtype" and _same_dtype(value, single.dtype):
                continue
            if key == "shape" and _shapes_equal(value, single.shape):
                continue
        if key == "var" and value == op.name:
            continue
        shown.append((key, value))
    return shown


# A fused kernel's source list goes in the line's comment, its refusals on
# lines of their own.
_FUSED_NOTE_ATTRS = ("sources", "refusals")


def _is_fused(op: Operation) -> bool:
    return op.opdef.lowering == FUSED or op.type == "fused_kernel"


def _same_dtype(value: Any, dtype: np.dtype) -> bool:
    try:
        return np.dtype(value) == dtype
    except TypeError:
        return False


def _shapes_equal(value: Any, shape: _shapes.Shape) -> bool:
    try:
        return _shapes.as_shape(value) == shape
    except (GraphcError, TypeError):
        return False


def source_str(op: Operation, full_paths: bool = False) -> str:
    src = op.source
    path = src.file if full_paths else os.path.basename(src.file)
    return f"{path}:{src.line}"


def _body_sources(op: Operation, full_paths: bool) -> List[str]:
    """Every distinct user line a fused kernel's body came from, in order."""
    seen: List[str] = []
    for sub in op.subgraphs():
        for inner in sub.get_operations():
            if inner.type == "arg":
                continue
            s = source_str(inner, full_paths)
            if s not in seen:
                seen.append(s)
    return seen


def op_line(op: Operation, full_paths: bool = False, memory: str = "") -> str:
    """One op as a line of text (no indentation, no body); ``memory`` is
    its buffer assignment, when a memory plan gave one."""
    args = [tensor_ref(t) for t in op.inputs] + [f"^{c.name}" for c in op.control_inputs]
    head = f"{op.name}: {_outputs_str(op)} = " if op.outputs else f"{op.name} = "
    text = f"{head}{op.type}({', '.join(args)})"
    attrs = " ".join(f"{k}={attr_str(v)}" for k, v in _shown_attrs(op))
    if attrs:
        text += " " + attrs
    comment = [source_str(op, full_paths)]
    if _is_fused(op):
        sources = _body_sources(op, full_paths)
        if sources and sources != comment:
            comment = ["sources " + ", ".join(sources)]
    if op.gradient_of is not None:
        comment.append(f"grad of {op.gradient_of.name}")
    if memory:
        comment.append(memory)
    return f"{text}  # {', '.join(comment)}"


def _short_name(tensor_name: str) -> str:
    return tensor_name[:-2] if tensor_name.endswith(":0") else tensor_name


def _memory_annotations(program: Program) -> Dict[Operation, str]:
    """``buf 3``, ``buf 3 in place over x``, ``view of x`` per op, from the
    memory plan (read defensively: it is an analysis result, not an API)."""
    plan = program.analyses.get("memory_plan")
    lives = getattr(plan, "tensors", None)
    if not isinstance(lives, dict):
        return {}
    over = {getattr(ip, "output", None): getattr(ip, "input", None) for ip in getattr(plan, "in_place", ()) or ()}
    notes: Dict[Operation, str] = {}
    for op in program.ops():
        parts = []
        for t in op.outputs:
            life = lives.get(t)
            buffer, base = getattr(life, "buffer", None), getattr(life, "base", None)
            if buffer is not None:
                label = f"buf {buffer}"
                if over.get(t.name):
                    label += f" in place over {_short_name(over[t.name])}"
            elif isinstance(base, Tensor):
                label = f"view of {tensor_ref(base)}"
            else:
                continue
            parts.append(label if len(op.outputs) == 1 else f"{label} (out {t.value_index})")
        if parts:
            notes[op] = ", ".join(parts)
    return notes


def _graph_lines(ops: Sequence[Operation], indent: str, full_paths: bool, out: List[str],
                 memory: Optional[Dict[Operation, str]] = None) -> None:
    memory = memory or {}
    for op in ops:
        out.append(indent + op_line(op, full_paths, memory.get(op, "")))
        if _is_fused(op):
            out.extend(f"{indent}    # not fused: {r}" for r in op.attrs.get("refusals", ()))
        for key, value in op.attrs.items():
            if isinstance(value, FuncGraph):
                _body_lines(key, value, indent + "    ", full_paths, out)


def _body_lines(key: str, body: FuncGraph, indent: str, full_paths: bool, out: List[str]) -> None:
    args = ", ".join(f"{tensor_ref(t)}: {type_str(t.shape, t.dtype)}" for t in body.inputs)
    out.append(f"{indent}{key} = {body.name}({args}) {{")
    if body.captures:
        captured = ", ".join(f"{tensor_ref(inner)} <- {tensor_ref(outer)}" for outer, inner in body.captures)
        out.append(f"{indent}    # captures: {captured}")
    _graph_lines([op for op in body.get_operations() if op.type != "arg"], indent + "    ", full_paths, out)
    out.append(f"{indent}    return {', '.join(tensor_ref(t) for t in body.outputs)}")
    out.append(f"{indent}}}")


def stage_label(record: StageRecord) -> str:
    return record.name if record.name in (INPUT, FINAL) else f"after_{record.name}"


def stage_number(record: StageRecord) -> int:
    """The stage's place in the full pipeline: 0 input, pass i at i, final
    last; stable when other passes are disabled."""
    order = [p.name for p in pipeline()]
    if record.name == INPUT:
        return 0
    if record.name == FINAL:
        return len(order) + 1
    return order.index(record.name) + 1 if record.name in order else record.index


def stage_file_stem(record: StageRecord) -> str:
    """``0002.after_cse``: the file name of a stage's dumps, without suffix."""
    return f"{stage_number(record):04d}.{stage_label(record)}"


def _memory_summary(program: Program) -> Optional[str]:
    plan = program.analyses.get("memory_plan")
    summary = getattr(plan, "summary", None)
    if callable(summary):
        return str(summary())
    return None


def header_lines(record: StageRecord, show_timing: bool = True) -> List[str]:
    program = record.program
    status = "changed" if record.changed else "unchanged"
    if record.name in (INPUT, FINAL):
        status = "pipeline " + ("input" if record.name == INPUT else "output")
    if show_timing:
        status += f", {record.seconds * 1e3:.2f} ms"
    lines = [f"# graphc dump: stage {record.index} {stage_label(record)} ({status})"]
    if program is None:
        lines.append("# (this stage's program was not kept)")
        return lines
    delta = "" if record.ops_before == record.ops_after else f" (was {record.ops_before})"
    lines.append(f"# ops: {program.num_ops()}{delta}")
    feeds = ", ".join(f"{tensor_ref(t)}: {type_str(t.shape, t.dtype)}" for t in program.feeds)
    lines.append(f"# feeds: {feeds or '(none)'}")
    fetches = ", ".join(f"{tensor_ref(t)}: {type_str(t.shape, t.dtype)}" for t in program.fetches)
    lines.append(f"# fetches: {fetches or '(none)'}")
    if program.targets:
        lines.append(f"# targets: {', '.join(op.name for op in program.targets)}")
    if record.notes:
        lines.append("# notes:")
        lines.extend(f"#   {line}" for note in record.notes for line in str(note).splitlines())
    memory = _memory_summary(program)
    if memory:
        lines.append("# memory plan:")
        lines.extend(f"#   {line}" for line in memory.splitlines())
    return lines


def format_text(record: Union[StageRecord, Program], full_paths: bool = False, show_timing: bool = True) -> str:
    """The text dump of one stage (or of a bare Program); ``show_timing``
    False leaves out the pass's time (for reproducible output)."""
    if isinstance(record, Program):
        n = record.num_ops()
        record = StageRecord(0, FINAL, record, n, n, 0.0, False)
    lines = header_lines(record, show_timing)
    if record.program is not None:
        lines.append("")
        _graph_lines(record.program.ops(), "", full_paths, lines, _memory_annotations(record.program))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# Graphviz DOT
# --------------------------------------------------------------------------
_FILL = {"elementwise": "#dbeafe", "reduction": "#fde68a", "layout": "#f3f4f6", "library": "#fecaca",
         "control_flow": "#e9d5ff", "state": "#bbf7d0", "source": "#e5e7eb", "random": "#fbcfe8",
         "fused": "#fed7aa"}


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class _DotWriter:
    def __init__(self, fetched: Sequence[Tensor]) -> None:
        self.lines: List[str] = []
        self.fetched = set(fetched)
        self.ids: Dict[Operation, str] = {}
        self.clusters = 0

    def node_id(self, op: Operation) -> str:
        if op not in self.ids:
            self.ids[op] = f"n{len(self.ids)}"
        return self.ids[op]

    def graph(self, ops: Sequence[Operation], indent: str, results: Sequence[Tensor] = ()) -> None:
        for op in ops:
            if op.subgraphs():
                self.cluster(op, indent)
            else:
                self.node(op, indent, emphasize=any(t in self.fetched or t in results for t in op.outputs))
        for op in ops:
            self.edges(op, indent)

    def node(self, op: Operation, indent: str, emphasize: bool = False) -> None:
        types = ", ".join(type_str(t.shape, t.dtype) for t in op.outputs) or "()"
        label = f"{op.name}\n{types}" if op.name == op.type else f"{op.name}\n{op.type}\n{types}"
        attrs = [f"label={_dot_quote(label)}", f'fillcolor="{_FILL.get(op.opdef.lowering, "#ffffff")}"',
                 f"tooltip={_dot_quote(op_line(op))}"]
        if op.type in ("placeholder", "arg"):
            attrs.append("shape=ellipse")
        if emphasize:
            attrs.append("penwidth=2.5")
        self.lines.append(f"{indent}{self.node_id(op)} [{', '.join(attrs)}];")

    def cluster(self, op: Operation, indent: str) -> None:
        self.clusters += 1
        kind = "fused kernel" if _is_fused(op) else op.type
        self.lines.append(f"{indent}subgraph cluster_{self.clusters} {{")
        inner = indent + "  "
        self.lines.append(f"{inner}label={_dot_quote(f'{op.name} ({kind})')}; style=\"rounded,filled\"; "
                          f"fillcolor=\"{'#fff7ed' if kind == 'fused kernel' else '#faf5ff'}\";")
        self.node(op, inner, emphasize=any(t in self.fetched for t in op.outputs))
        for key, body in ((k, v) for k, v in op.attrs.items() if isinstance(v, FuncGraph)):
            self.clusters += 1
            self.lines.append(f"{inner}subgraph cluster_{self.clusters} {{")
            self.lines.append(f"{inner}  label={_dot_quote(f'{key}: {body.name}')}; style=dashed;")
            self.graph(body.get_operations(), inner + "  ", body.outputs)
            self.lines.append(f"{inner}}}")
            for arg in body.inputs:
                self.lines.append(f"{inner}{self.node_id(op)} -> {self.node_id(arg.op)} "
                                  f"[style=dotted, arrowhead=none];")
        self.lines.append(f"{indent}}}")

    def edges(self, op: Operation, indent: str) -> None:
        target = self.node_id(op)
        for t in op.inputs:
            self.lines.append(f"{indent}{self.node_id(t.op)} -> {target} "
                              f"[label={_dot_quote(type_str(t.shape, t.dtype))}];")
        for c in op.control_inputs:
            self.lines.append(f"{indent}{self.node_id(c)} -> {target} [style=dashed, color=\"#6b7280\"];")


def format_dot(record: Union[StageRecord, Program]) -> str:
    """Graphviz source of one stage: nodes show name, op type and output
    types; edges the tensor's type; control edges are dashed; subgraph
    bodies (fused kernels, branches, loop bodies) are clusters."""
    if isinstance(record, Program):
        n = record.num_ops()
        record = StageRecord(0, FINAL, record, n, n, 0.0, False)
    title = f"graphc {stage_label(record)}"
    lines = [f"digraph {_dot_quote(title)} {{",
             f"  graph [label={_dot_quote(title + f' ({record.ops_after} ops)')}, labelloc=t, fontname=Helvetica];",
             '  node [shape=box, style="rounded,filled", fontname=Helvetica, fontsize=10];',
             "  edge [fontname=Helvetica, fontsize=8];"]
    if record.program is not None:
        writer = _DotWriter(record.program.fetches)
        writer.graph(record.program.ops(), "  ")
        lines += writer.lines
    lines.append("}")
    return "\n".join(lines) + "\n"


def dot_available() -> bool:
    """Whether Graphviz's ``dot`` program is installed."""
    return shutil.which("dot") is not None


def render_svg(dot_source: str, timeout: float = 60.0) -> str:
    """SVG from DOT source with Graphviz's ``dot``; a clear error when it is
    not installed."""
    exe = shutil.which("dot")
    if exe is None:
        raise InvalidArgumentError("rendering SVG needs Graphviz's `dot` program, which is not installed "
                                   "(e.g. `apt-get install graphviz`); dump format='dot' and render it elsewhere")
    proc = subprocess.run([exe, "-Tsvg"], input=dot_source, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise GraphcError(f"dot failed (exit {proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


# --------------------------------------------------------------------------
# What a pass changed
# --------------------------------------------------------------------------
@dataclass
class StageDiff:
    added: List[Operation]
    removed: List[Operation]
    retyped: List[Tuple[Operation, Operation]]    # (before, after), same name
    rewired: List[Operation]                       # same name and type, other inputs


def _input_names(op: Operation) -> Tuple[str, ...]:
    return tuple(t.name for t in op.inputs) + tuple("^" + c.name for c in op.control_inputs)


def diff_stages(before: Program, after: Program) -> StageDiff:
    """Ops added, removed, re-typed or re-wired, matched by name (rewrites
    keep the names of the ops they copy)."""
    old = {op.name: op for op in before.ops()}
    new = {op.name: op for op in after.ops()}
    added = [op for name, op in new.items() if name not in old]
    removed = [op for name, op in old.items() if name not in new]
    retyped, rewired = [], []
    for name, op in new.items():
        prev = old.get(name)
        if prev is None:
            continue
        if prev.type != op.type:
            retyped.append((prev, op))
        elif _input_names(prev) != _input_names(op):
            rewired.append(op)
    return StageDiff(added, removed, retyped, rewired)


# --------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.5em;color:#111}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #d1d5db;padding:3px 8px;text-align:left}
th{background:#f3f4f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.changed td:first-child{border-left:4px solid #f59e0b}
pre{background:#f9fafb;border:1px solid #e5e7eb;padding:.6em;overflow:auto;font-size:12px;line-height:1.35}
details{margin:.4em 0}summary{cursor:pointer;font-weight:600}
.added{color:#166534}.removed{color:#991b1b}.muted{color:#6b7280}
section.stage{border-top:1px solid #e5e7eb;padding-top:.3em}
""".strip()

_LIST_LIMIT = 60


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def _op_items(ops: Sequence[Operation], css: str) -> str:
    items = [f'<li class="{css}"><code>{_esc(op.name)}</code> ({_esc(op.type)})</li>' for op in ops[:_LIST_LIMIT]]
    if len(ops) > _LIST_LIMIT:
        items.append(f'<li class="muted">... and {len(ops) - _LIST_LIMIT} more</li>')
    return "<ul>" + "".join(items) + "</ul>"


def _diff_html(diff: StageDiff) -> str:
    parts = []
    if diff.removed:
        parts.append(f"<p>Removed {len(diff.removed)} op(s):</p>" + _op_items(diff.removed, "removed"))
    if diff.added:
        parts.append(f"<p>Added {len(diff.added)} op(s):</p>" + _op_items(diff.added, "added"))
    if diff.retyped:
        items = "".join(f"<li><code>{_esc(a.name)}</code>: {_esc(b.type)} &rarr; {_esc(a.type)}</li>"
                        for b, a in diff.retyped[:_LIST_LIMIT])
        parts.append(f"<p>Changed op type of {len(diff.retyped)} op(s):</p><ul>{items}</ul>")
    if diff.rewired:
        parts.append(f"<p>Rewired the inputs of {len(diff.rewired)} op(s):</p>" + _op_items(diff.rewired, ""))
    return "".join(parts) or '<p class="muted">No ops added, removed or rewired.</p>'


def _description(name: str) -> str:
    for p in pipeline():
        if p.name == name:
            return p.description
    return {INPUT: "the extracted program (pruned to the fetches, shapes specialized)",
            FINAL: "what the backend compiles"}.get(name, "")


def _timing_rows(records: Sequence[StageRecord], log: Optional[CompileLog]) -> Tuple[List[Tuple[str, float]], float]:
    rows: List[Tuple[str, float]] = []
    timings = dict(log.timings) if log is not None else {}
    if "extract" in timings:
        rows.append(("extract (prune, specialize shapes)", timings.pop("extract")))
    for r in records:
        if r.name not in (INPUT, FINAL):
            rows.append((f"pass {r.name}", r.seconds))
    pass_total = sum(r.seconds for r in records)
    if "passes" in timings:
        # the pipeline's own overhead (verification, bookkeeping) beyond the passes
        overhead = timings.pop("passes") - pass_total
        if overhead > 0:
            rows.append(("pass manager (verification, bookkeeping)", overhead))
    rows += list(timings.items())
    return rows, sum(s for _, s in rows)


def _svg_for(record: StageRecord, limit: int = 400) -> Optional[str]:
    """Inline SVG of the final graph when Graphviz is here and the graph is
    small enough to be worth looking at; prolog and DOCTYPE stripped so the
    page references nothing outside itself."""
    if not dot_available() or record.program is None or record.program.num_ops() > limit:
        return None
    try:
        svg = render_svg(format_dot(record))
    except (GraphcError, subprocess.TimeoutExpired, OSError):
        return None
    start = svg.find("<svg")
    if start < 0:
        return None
    # inline SVG in HTML needs no namespace declarations; without them the
    # page holds no URL at all
    return re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg[start:])


def format_html(records: Sequence[StageRecord], log: Optional[CompileLog] = None, full_paths: bool = False,
                title: Optional[str] = None, svg: bool = True) -> str:
    """One self-contained HTML page for the whole pipeline."""
    records = list(records)
    final = records[-1]
    program = final.program
    title = title or "graphc pipeline report"
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>", f"<h1>{_esc(title)}</h1>"]
    if program is not None:
        fetches = ", ".join(f"{tensor_ref(t)}: {type_str(t.shape, t.dtype)}" for t in program.fetches) or "(none)"
        feeds = ", ".join(f"{tensor_ref(t)}: {type_str(t.shape, t.dtype)}" for t in program.feeds) or "(none)"
        out.append(f"<p>Fetches: <code>{_esc(fetches)}</code><br>Feeds: <code>{_esc(feeds)}</code>")
        if program.targets:
            out.append(f"<br>Targets: <code>{_esc(', '.join(op.name for op in program.targets))}</code>")
        out.append("</p>")
    if log is not None and log.error:
        out.append(f'<p class="removed">Compilation failed: {_esc(log.error)}</p>')
    rows, total = _timing_rows(records, log)
    out.append(f"<p>{records[0].ops_after} ops in, {final.ops_after} ops out; compile time "
               f"{_ms(total)} ms.</p>")

    out.append("<h2>Stages</h2><table><tr><th>#</th><th>stage</th><th>what it does</th><th>ops before</th>"
               "<th>ops after</th><th>time (ms)</th><th>changed</th><th>notes</th></tr>")
    for r in records:
        cls = ' class="changed"' if r.changed else ""
        out.append(f"<tr{cls}><td class=num>{r.index}</td><td><a href=\"#stage-{r.index}\">"
                   f"{_esc(stage_label(r))}</a></td><td>{_esc(_description(r.name))}</td>"
                   f"<td class=num>{r.ops_before}</td><td class=num>{r.ops_after}</td>"
                   f"<td class=num>{_ms(r.seconds)}</td><td>{'yes' if r.changed else 'no'}</td>"
                   f"<td class=num>{len(r.notes)}</td></tr>")
    out.append("</table>")

    out.append("<h2>Compile time</h2><table><tr><th>phase</th><th>time (ms)</th><th>share</th></tr>")
    for label, seconds in rows:
        share = f"{100 * seconds / total:.1f}%" if total > 0 else "-"
        out.append(f"<tr><td>{_esc(label)}</td><td class=num>{_ms(seconds)}</td><td class=num>{share}</td></tr>")
    out.append(f"<tr><th>total</th><th class=num>{_ms(total)}</th><th></th></tr></table>")

    out.append("<h2>Stage by stage</h2>")
    previous: Optional[StageRecord] = None
    for r in records:
        out.append(f'<section class="stage" id="stage-{r.index}"><h3>{r.index}. {_esc(stage_label(r))}'
                   f' <span class="muted">({r.ops_after} ops, {_ms(r.seconds)} ms, '
                   f"{'changed' if r.changed else 'unchanged'})</span></h3>")
        description = _description(r.name)
        if description:
            out.append(f"<p>{_esc(description)}</p>")
        if r.notes:
            out.append("<p>Notes:</p><ul>" + "".join(f"<li><pre>{_esc(n)}</pre></li>" for n in r.notes) + "</ul>")
        if previous is not None and r.changed and previous.program is not None and r.program is not None:
            out.append(_diff_html(diff_stages(previous.program, r.program)))
        if r.program is not None:
            memory = _memory_summary(r.program)
            if memory and r.name not in (FINAL,):
                out.append(f"<p>Memory plan:</p><pre>{_esc(memory)}</pre>")
            open_attr = " open" if r.name == FINAL else ""
            out.append(f"<details{open_attr}><summary>graph ({r.program.num_ops()} ops, text)</summary>"
                       f"<pre>{_esc(format_text(r, full_paths=full_paths))}</pre></details>")
        out.append("</section>")
        if r.program is not None:
            previous = r
    if svg:
        picture = _svg_for(final)
        if picture is not None:
            out.append(f"<h2>Final graph</h2><details><summary>diagram</summary>{picture}</details>")
    if log is not None and log.artifacts:
        out.append("<h2>Artifacts</h2><ul>" + "".join(
            f"<li><code>{_esc(name)}</code> ({size} bytes)</li>" for name, size in log.artifacts) + "</ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------
# Dump directory
# --------------------------------------------------------------------------
def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _write_stage_files(log: CompileLog) -> None:
    for r in log.records:
        if r.program is None:
            continue
        stem = os.path.join(log.directory, stage_file_stem(r))
        _write(stem + ".txt", format_text(r, full_paths=True))
        _write(stem + ".dot", format_dot(r))


def summary_text(records: Sequence[StageRecord], log: Optional[CompileLog]) -> str:
    """Per-pass timing table of one compilation (``summary.txt``)."""
    rows, total = _timing_rows(records, log)
    width = max([len(label) for label, _ in rows] + [5])
    lines = [f"graphc compilation: {records[0].ops_after} ops in, {records[-1].ops_after} ops out",
             "", f"{'stage':<24} {'ops before':>10} {'ops after':>10} {'ms':>9}  changed"]
    for r in records:
        lines.append(f"{stage_file_stem(r):<24} {r.ops_before:>10} {r.ops_after:>10} {_ms(r.seconds):>9}  "
                     f"{'yes' if r.changed else 'no'}")
    lines += ["", f"{'phase':<{width}} {'ms':>9}"]
    lines += [f"{label:<{width}} {_ms(seconds):>9}" for label, seconds in rows]
    lines.append(f"{'total':<{width}} {_ms(total):>9}")
    if log is not None and log.error:
        lines += ["", f"compilation failed: {log.error}"]
    return "\n".join(lines) + "\n"


def _write_reports(log: CompileLog, root: str) -> None:
    name = os.path.basename(log.directory)
    _write(os.path.join(log.directory, "summary.txt"), summary_text(log.records, log))
    _write(os.path.join(log.directory, "pipeline.html"),
           format_html(log.records, log, full_paths=True, title=f"graphc pipeline report: {name}"))
    rows, total = _timing_rows(log.records, log)
    runs = ""
    final = log.records[-1].program
    if final is not None:
        runs = ", ".join([tensor_ref(t) for t in final.fetches] + [op.name for op in final.targets])
    phases = ", ".join(f"{label} {_ms(s)}" for label, s in rows)
    line = (f"{name}: {log.records[0].ops_after} -> {log.records[-1].ops_after} ops, total {_ms(total)} ms "
            f"({phases}); runs {runs or '(nothing)'}" + (" [FAILED]" if log.error else "") + "\n")
    with _exec_lock, open(os.path.join(root, "summary.txt"), "a", encoding="utf-8") as f:
        f.write(line)
