"""Markdown report: the machine, a summary against the issue's targets, one
table per workload, the W6 compile times and how everything was measured."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from .compile_time import W6_LABELS, CompileRow
from .harness import GRAPHC, Row, WorkloadResult
from .targets import TARGETS, W5_ROW_TARGETS


@dataclass
class SuiteReport:
    date: str
    command: str
    backend: str
    backend_note: str
    quick: bool
    scale: float
    machine: List[Tuple[str, str]]
    bandwidth_bytes_per_s: Optional[float] = None
    bandwidth_method: str = ""
    workloads: List[WorkloadResult] = field(default_factory=list)
    compile_rows: List[CompileRow] = field(default_factory=list)
    unavailable: Dict[str, str] = field(default_factory=dict)
    wall_s: float = 0.0
    background_load: Optional[float] = None
    compile_background_load: Optional[float] = None


# above this share of the CPUs used by other processes, medians are suspect
BUSY_MACHINE = 0.10


def load_sentence(load: Optional[float], what: str) -> str:
    if load is None:
        return ""
    text = f"Other processes used {100 * load:.0f}% of the machine's CPU time while {what} ran"
    if load > BUSY_MACHINE:
        text += (" - enough to inflate medians of multi-threaded code on this 2-core machine "
                 "(a thread descheduled for another process stalls the rest); the min column is the better guide")
    return text + "."


def fmt_time(seconds: Optional[float]) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms" if seconds < 0.1 else f"{seconds * 1e3:.0f} ms"
    return f"{seconds * 1e6:.3g} us"


def fmt_ratio(value: Optional[float]) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.2f}x" if value < 100 else f"{value:.0f}x"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def render(report: SuiteReport) -> str:
    out: List[str] = ["# graphc benchmarks", ""]
    out += _intro(report)
    out += ["## Machine", ""] + _table(("", ""), report.machine) + [""]
    if report.bandwidth_bytes_per_s:
        out += [f"Measured memory bandwidth: **{report.bandwidth_bytes_per_s / 1e9:.1f} GB/s** "
                f"({report.bandwidth_method}).", ""]
    out += _summary(report)
    for result in report.workloads:
        out += _workload_section(result, report)
    if report.compile_rows:
        out += _compile_section(report)
    out += _method(report)
    return "\n".join(out).rstrip() + "\n"


def _intro(report: SuiteReport) -> List[str]:
    lines = [f"Generated on {report.date} by `{report.command}` "
             f"({'quick smoke run, ' if report.quick else ''}{report.wall_s:.0f} s). "
             "Regenerate with `python -m benchmarks` (or `graphc bench`); `--help` lists the options.", "",
             f"**graphc backend: `{report.backend}`.** {report.backend_note}", ""]
    if report.background_load is not None:
        lines += [load_sentence(report.background_load, "the suite"), ""]
    if report.scale != 1.0:
        lines += [f"**Sizes scaled by {report.scale:g}**: these are not the issue's workload sizes.", ""]
    return lines


def _graphc_median(result: WorkloadResult, name: Optional[str] = None) -> Optional[float]:
    for row in result.rows:
        if row.kind == GRAPHC and row.timed and (name is None or row.name == name):
            return row.timing.median
    return None


def _summary(report: SuiteReport) -> List[str]:
    rows = []
    for result in report.workloads:
        target = TARGETS.get(result.key)
        fastest = result.fastest_peer()
        fastest_s = fastest.timing.median if fastest else None
        graphc_rows = [r for r in result.rows if r.kind == GRAPHC]
        for row in graphc_rows:
            g = row.timing.median if row.timed else None
            label = result.title if len(graphc_rows) == 1 else f"{result.title}: {row.name}"
            rows.append((label, fmt_time(g) if g is not None else row.status,
                         f"{fastest.name} {fmt_time(fastest_s)}" if fastest else "-",
                         fmt_ratio(g / fastest_s) if g is not None and fastest_s else "-",
                         _row_target_text(result.key, row.name, target),
                         _met(result.key, row.name, g, fastest_s)))
    for key in ("W2", "W1"):
        crow = next((c for c in report.compile_rows if c.impl == "graphc" and c.workload == key), None)
        if crow is None:
            continue
        g = crow.median(crow.cold)
        peers = [(c.impl, c.median(c.cold)) for c in report.compile_rows
                 if c.impl != "graphc" and c.workload == key and c.cold]
        best = min(peers, key=lambda p: p[1]) if peers else None
        rows.append((f"W6 compile, {W6_LABELS[key]} (cold)", fmt_time(g) if g is not None else crow.status,
                     f"{best[0]} {fmt_time(best[1])}" if best else "-",
                     fmt_ratio(g / best[1]) if g is not None and best and best[1] else "-",
                     "< 0.1 s", "yes" if g is not None and g < 0.1 else ("no" if g is not None else "-")))
    if not rows:
        return []
    return ["## Summary against the targets of issue 5", "",
            "graphc's median next to the fastest peer measured in the same run (NumPy counts as a peer). "
            "`graphc / fastest` below 1 means graphc is faster.", ""] + _table(
        ("workload", f"graphc ({report.backend})", "fastest peer", "graphc / fastest", "target", "met"),
        rows) + [""]


def _row_target_text(key: str, row_name: str, target) -> str:
    if key == "W5" and row_name in W5_ROW_TARGETS:
        return f"< {fmt_time(W5_ROW_TARGETS[row_name])}"
    return target.text if target else "-"


def _met(key: str, row_name: str, graphc_s: Optional[float], fastest_s: Optional[float]) -> str:
    if graphc_s is None:
        return "-"
    if key == "W5":
        limit = W5_ROW_TARGETS.get(row_name)
        return "-" if limit is None else ("yes" if graphc_s < limit else "no")
    target = TARGETS.get(key)
    return "-" if target is None else ("yes" if target.met(graphc_s, fastest_s) else "no")


def _workload_section(result: WorkloadResult, report: SuiteReport) -> List[str]:
    lines = [f"## {result.title}", "", result.description, "", f"Sizes: {result.sizes}.", ""]
    graphc_s = _graphc_median(result)
    fastest = result.fastest_peer()
    fastest_s = fastest.timing.median if fastest else None
    table = []
    for row in result.rows:
        table.append(_row_cells(row, graphc_s, fastest_s))
    lines += _table(("implementation", "median", "min", "vs graphc", "vs fastest peer", "samples", "check"),
                    table) + [""]
    if result.roofline_s is not None:
        lines.append(f"Roofline: {result.roofline_bytes / 1e6:.1f} MB must move through memory, "
                     f"**{fmt_time(result.roofline_s)}** at the measured bandwidth"
                     + (f"; graphc is at {graphc_s / result.roofline_s:.1f}x the roofline"
                        if graphc_s else "") + ".")
        lines.append("")
    load = result.extra.get("background_load")
    if load is not None:
        lines += [load_sentence(load, "this workload"), ""]
    target = TARGETS.get(result.key)
    if target:
        lines += [f"Target (issue 5): {target.text}. Peers when the issue was written: {target.issue_peers}.", ""]
    return lines


def _row_cells(row: Row, graphc_s: Optional[float], fastest_s: Optional[float]) -> Tuple[str, ...]:
    name = f"**{row.name}**" if row.kind == GRAPHC else row.name
    if not row.timed:
        status = {"failed": "FAILED verification", "unavailable": "not available", "error": "error",
                  "skipped": "skipped"}.get(row.status, row.status)
        return (name, "-", "-", "-", "-", "-", f"{status}: {row.detail}" if row.detail else status)
    t = row.timing
    check = f"ok ({row.check.error:.1e})" if row.check else "ok"
    if row.detail:
        check += f"; {row.detail}"
    samples = f"{t.repeats} x {t.inner}" if t.inner > 1 else f"{t.repeats}"
    return (name, fmt_time(t.median), fmt_time(t.minimum),
            fmt_ratio(t.median / graphc_s) if graphc_s else "-",
            fmt_ratio(t.median / fastest_s) if fastest_s else "-", samples, check)


def _compile_section(report: SuiteReport) -> List[str]:
    lines = ["## W6 compile time", "",
             "From a graph (or Python function) to a callable step, in a fresh process per measurement so "
             "that no in-memory cache helps: setup (graph building, PyTensor's compile) + first call "
             "- one steady-state call. Each process first compiles an unrelated one-op function so that "
             "imports and runtime start-up (JAX's client, Dynamo/Inductor, graphc's backend) are not "
             "counted; that start-up is the `runtime init` column. Cold runs start with an empty on-disk "
             "cache directory; the warm figure is a second process reusing the cache of the last cold one. "
             "The last three columns are from the last cold run.", ""]
    table = []
    for c in report.compile_rows:
        if c.status != "ok" or not c.cold:
            table.append((f"**{c.impl}**" if c.impl == "graphc" else c.impl, W6_LABELS[c.workload],
                          "-", "-", "-", "-", "-", "-", "-", f"{c.status}: {c.detail}" if c.detail else c.status))
            continue
        cold = c.median(c.cold)
        last = c.cold[-1]
        warm = fmt_time(c.median(c.warm)) if c.warm else c.cache
        table.append((f"**{c.impl}**" if c.impl == "graphc" else c.impl, W6_LABELS[c.workload],
                      fmt_time(cold), fmt_time(min(s.compile_s for s in c.cold)), str(len(c.cold)),
                      fmt_time(last.init_s), fmt_time(last.setup_s), fmt_time(last.first_s - last.steady_s), fmt_time(last.steady_s),
                      warm))
    lines += _table(("implementation", "workload", "cold median", "cold min", "runs", "runtime init", "setup",
                     "first - steady", "steady call", "warm cache"), table) + [""]
    if report.compile_background_load is not None:
        lines += [load_sentence(report.compile_background_load, "W6"), ""]
    target = TARGETS["W6"]
    lines += [f"Target (issue 5): {target.text}. Peers when the issue was written: {target.issue_peers}.", ""]
    return lines


def _method(report: SuiteReport) -> List[str]:
    lines = ["## How this was measured", "",
             "- Every implementation runs in the same process, one after another, on the same float32 data "
             "(seeded). Peers are written as their users would: JAX `jax.jit(jax.value_and_grad(f))` with "
             "`block_until_ready`; PyTorch eager autograd and the same functions through `torch.compile` "
             "(CPU, Inductor); PyTensor `pytensor.function` of the value and its gradient (C backend, "
             "`linker=\"cvm\"`: its Numba backend needs a numba whose llvmlite pin conflicts with graphc's; a "
             "pip-installed PyTensor calls BLAS through NumPy's C API); NumPy hand-written forward and "
             "backward. Every library keeps its default thread count.",
             "- Before timing, each implementation's first result is compared with a float64 NumPy reference: "
             "every output must have the reference's shape, be float32 and finite, and its error "
             "max|got - ref| / max|ref| must be within the workload's tolerance (the `check` column shows "
             "it). A failure is reported instead of a time. For W2 the gradients are the ones implied by "
             "the first SGD update, (before - after) / learning rate, so the update itself is checked.",
             "- Timing: warm-up calls, then samples of one or more calls (batched so one sample lasts at "
             "least a few milliseconds) with Python's garbage collector paused; the sample count adapts to "
             "the call's duration within a time budget. Median and minimum are per call. "
             "`vs graphc` and `vs fastest peer` divide the row's median by graphc's and by the fastest "
             "non-graphc row's (above 1: slower).",
             "- Rooflines: the bytes the workload must move (inputs read once, outputs written once) divided "
             "by the measured memory bandwidth.",
             "- The machine is shared: the per-workload line on other processes' CPU use says how far to "
             "trust a median. On a busy machine, multi-threaded BLAS and thread pools stall whenever one of "
             "their threads is descheduled; `OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 GRAPHC_NUM_THREADS=1 "
             "python -m benchmarks` gives a single-threaded comparison (the machine table lists such "
             "settings when they are made).",
             ]
    lines += ["- Installing the peers (none is needed to run the suite; a missing one is reported as not "
              "available): `pip install jax jaxlib`; PyTorch as a CPU-only wheel (the default Linux wheel pulls "
              "gigabytes of CUDA packages); PyTensor with `pip install --no-deps pytensor cons etuples "
              "logical-unification miniKanren multipledispatch toolz` (its numba dependency would replace "
              "graphc's llvmlite with an older one)."]
    if report.unavailable:
        lines.append("- Peers not measured: " + "; ".join(f"{k} ({v})" for k, v in report.unavailable.items())
                     + ".")
    return lines + [""]
