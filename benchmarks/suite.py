"""Runs the workloads and writes the report (``python -m benchmarks``)."""
from __future__ import annotations

import argparse
import datetime as _dt
import gc as _pygc
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import compile_time as _ct
from .harness import PEER, Row, TimingPolicy, WorkloadResult, measure, verify
from .machine import LoadMeter, describe, measure_bandwidth
from .peers import Peer, peer_versions, select_peers
from .report import SuiteReport, render
from .workloads import WORKLOADS, Builder, Context, Workload

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO_ROOT / "docs" / "benchmarks.md"
ALL_KEYS = tuple(WORKLOADS) + ("W6",)
Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def resolve_backend(choice: str) -> Tuple[str, str]:
    """The graphc backend name that ``choice`` (auto|interpreter|cpu|...)
    selects, and a sentence for the report saying what it is."""
    from graphc.backends import available_backends, get_backend
    name = getattr(get_backend(choice), "name", choice)
    if name == "interpreter":
        why = ("the native CPU backend is not registered in this graphc yet"
               if "cpu" not in available_backends() else "it was asked for with --backend interpreter")
        note = (f"graphc ran on its interpreter backend (the NumPy reference backend: one NumPy call per op, "
                f"no native code) because {why}. These graphc figures measure the interpreter, not compiled "
                "code; `--backend auto` picks the native `cpu` backend as soon as it is registered.")
    else:
        note = f"graphc ran on its `{name}` backend (available backends: {', '.join(available_backends())})."
        if name == "ptx":
            from graphc.runtime import cuda
            if cuda.emulated():
                note += (" That backend ran on the CUDA emulator (GRAPHC_CUDA_EMULATOR: the host CPU standing "
                         "in for a GPU), so the graphc results were verified but its times say nothing about "
                         "a GPU.")
            else:
                note += f" The GPU: {cuda.get_context().name} ({cuda.get_context().arch})."
    return name, note


def run_workload(wl: Workload, ctx: Context, policy: TimingPolicy, peers: Sequence[Peer], scale: float,
                 extra: Sequence[Tuple[str, str, Builder]] = (), log: Log = _stderr) -> WorkloadResult:
    meter = LoadMeter()
    data = wl.make_data(scale, np.random.default_rng(int(wl.key[1:])))
    reference = wl.reference(data)
    result = WorkloadResult(wl.key, wl.title, wl.description, wl.sizes(data))
    if wl.roofline_bytes is not None:
        result.roofline_bytes = wl.roofline_bytes(data)
    entries: List[Tuple[str, str, Optional[Builder], str]] = [(n, k, b, "") for n, k, b in wl.impls]
    for peer in peers:
        if wl.key not in peer.builders:
            continue
        ok, why = peer.availability()
        entries.append((peer.name, PEER, peer.builders[wl.key] if ok else None, "" if ok else why))
    entries += [(n, k, b, "") for n, k, b in extra]
    for name, kind, build, why in entries:
        if build is None:
            row = Row(name, kind, status="unavailable", detail=why)
        else:
            row = run_one(name, kind, build, data, reference, wl.rtol, ctx, policy)
        result.rows.append(row)
        log(f"  {wl.key} {name:<32} {_progress(row)}")
        _pygc.collect()
    result.extra["background_load"] = meter.fraction()
    return result


def run_one(name: str, kind: str, build: Builder, data: Dict, reference: Dict, rtol: float, ctx: Context,
            policy: TimingPolicy) -> Row:
    """Build, check the first result against the reference, then time."""
    row = Row(name, kind)
    try:
        prepared = build(data, ctx)
        prepared.call()
        row.check = verify(prepared.outputs(), reference, rtol)
        if not row.check.ok:
            row.status, row.detail = "failed", row.check.message
            return row
        row.timing = measure(prepared, policy)
        row.detail = prepared.note
    except Exception as exc:   # a peer or graphc failing must not stop the suite
        row.status = "error"
        row.detail = f"{type(exc).__name__}: {_first_line(str(exc))}"
    return row


def _first_line(text: str, limit: int = 200) -> str:
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _progress(row: Row) -> str:
    from .report import fmt_time
    if row.timed:
        return f"median {fmt_time(row.timing.median):>10}  min {fmt_time(row.timing.minimum):>10}"
    return f"{row.status}: {row.detail}"


def run_compile_times(backend: str, peers: Sequence[Peer], quick: bool, scale: float,
                      log: Log = _stderr) -> List[_ct.CompileRow]:
    """W6: graphc and every peer that compiles (not eager PyTorch, not
    NumPy). JAX compiles fast and has no default disk cache; torch.compile
    and PyTensor take tens of seconds cold, so they get one cold run (and
    none under --quick) plus a warm-cache run."""
    from .report import fmt_time
    plan: List[Tuple[str, int, bool, str]] = [("graphc", 1 if quick else 3, not quick, "")]
    for peer in peers:
        if peer.key == "torch":
            continue
        ok, why = peer.availability()
        if peer.key == "jax":
            plan.append((peer.name, 1 if quick else 3, False, "" if ok else why))
        else:
            plan.append((peer.name, 0 if quick else 1, not quick, "" if ok else why))
    rows = []
    for workload in _ct.W6_WORKLOADS:
        for impl, runs, warm, unavailable in plan:
            if unavailable:
                row = _ct.CompileRow(impl, workload, status="unavailable", detail=unavailable)
            elif runs == 0:
                row = _ct.CompileRow(impl, workload, status="skipped",
                                     detail="cold compiles take tens of seconds; skipped in --quick")
            else:
                row = _ct.measure_compile(impl, workload, backend, scale, runs, warm, 2 if quick else 5)
            rows.append(row)
            if row.status == "ok" and row.cold:
                done = f"cold {fmt_time(row.median(row.cold))}"
                done += f"  warm {fmt_time(row.median(row.warm))}" if row.warm else ""
            else:
                done = f"{row.status}: {row.detail}"
            log(f"  W6 {workload} {impl:<29} {done}")
    return rows


def run_suite(only: Optional[Sequence[str]] = None, quick: bool = False, backend: str = "auto",
              scale: float = 1.0, peers: str = "all",
              extra_impls: Optional[Dict[str, Sequence[Tuple[str, str, Builder]]]] = None,
              command: str = "python -m benchmarks", log: Log = _stderr) -> SuiteReport:
    """Run the selected workloads (default: all, W1-W6) and return the report."""
    start = time.perf_counter()
    meter = LoadMeter()
    keys = list(only) if only else list(ALL_KEYS)
    backend_name, backend_note = resolve_backend(backend)
    selected = select_peers(peers)
    versions = peer_versions() if selected else {}
    report = SuiteReport(date=_dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"), command=command,
                         backend=backend_name, backend_note=backend_note, quick=quick, scale=scale,
                         machine=describe(backend_name, versions))
    report.unavailable = {p.name: p.availability()[1] for p in selected if not p.availability()[0]}
    policy = TimingPolicy.quick() if quick else TimingPolicy.full()
    ctx = Context(backend=backend_name)
    log(f"graphc benchmarks: backend {backend_name}, workloads {', '.join(keys)}"
        + (", quick" if quick else "") + (f", size scale {scale:g}" if scale != 1.0 else ""))
    if any(WORKLOADS[k].roofline_bytes for k in keys if k in WORKLOADS):
        bw = measure_bandwidth(quick)
        report.bandwidth_bytes_per_s, report.bandwidth_method = bw.bytes_per_s, bw.method
        log(f"  memory bandwidth {bw.bytes_per_s / 1e9:.1f} GB/s")
    for key in keys:
        if key == "W6":
            w6_meter = LoadMeter()
            report.compile_rows = run_compile_times(backend_name, selected, quick, scale, log)
            report.compile_background_load = w6_meter.fraction()
            continue
        wl = WORKLOADS[key]
        result = run_workload(wl, ctx, policy, selected, scale, (extra_impls or {}).get(key, ()), log)
        if result.roofline_bytes is not None and report.bandwidth_bytes_per_s:
            result.roofline_s = result.roofline_bytes / report.bandwidth_bytes_per_s
        report.workloads.append(result)
    report.wall_s = time.perf_counter() - start
    report.background_load = meter.fraction()
    return report


def _parse_only(text: Optional[str]) -> Optional[List[str]]:
    if not text:
        return None
    keys = [k.strip().upper() for k in text.split(",") if k.strip()]
    unknown = [k for k in keys if k not in ALL_KEYS]
    if unknown:
        raise ValueError(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(ALL_KEYS)}")
    return [k for k in ALL_KEYS if k in keys]


def build_parser(prog: str = "python -m benchmarks") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Run graphc's float32 benchmark workloads (issue 5: W1-W6) side by side with "
                               "NumPy and, where installed, JAX, PyTorch (eager and torch.compile) and PyTensor; "
                               "write a Markdown report.")
    parser.add_argument("--quick", action="store_true",
                        help="fast smoke run: few samples, one cold compile, slow peer compiles skipped")
    parser.add_argument("--only", metavar="W1,W3", help=f"comma list of workloads ({', '.join(ALL_KEYS)})")
    parser.add_argument("--backend", default="auto", metavar="auto|interpreter|cpu|ptx",
                        help="graphc backend (default auto: the native CPU backend when registered; ptx: "
                             "an NVIDIA GPU)")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT), metavar="PATH",
                        help="where to write the Markdown report ('-' for stdout; default docs/benchmarks.md)")
    parser.add_argument("--size-scale", type=float, default=1.0, metavar="S",
                        help="multiply the large dimensions of W1, W3, W4 (and W6's W1) by S (default 1)")
    parser.add_argument("--peers", default="all", metavar="all|none|LIST",
                        help="peers to compare with: all (default), none, or a comma list of "
                             "jax, torch, torch.compile, pytensor")
    return parser


def main(argv: Optional[Sequence[str]] = None, prog: str = "python -m benchmarks") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        only = _parse_only(args.only)
        select_peers(args.peers)
    except ValueError as exc:
        parser.error(str(exc))
    if not args.size_scale > 0:
        parser.error("--size-scale must be positive")
    from graphc.errors import CompileError
    try:
        resolve_backend(args.backend)
    except CompileError as exc:
        parser.error(str(exc))
    command = " ".join([prog] + list(sys.argv[1:] if argv is None else argv))
    report = run_suite(only, args.quick, args.backend, args.size_scale, args.peers, command=command)
    text = render(report)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        path = Path(args.output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        _stderr(f"wrote {path}")
    return 0
