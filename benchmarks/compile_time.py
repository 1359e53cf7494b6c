"""W6 compile time: from a graph (or a Python function) to a callable W2
step, and to W1's value-and-gradient, each measured in a fresh process so no
in-memory cache helps.

Each child first initializes the system by compiling an unrelated one-op
function (imports, JAX's client, Dynamo/Inductor start-up, graphc's
backend), timed separately and excluded. The measurement is then ``setup +
first call - steady call``: setup is building the
graph or function object (graphc, PyTensor compile here), the first call is
where JAX and torch.compile trace and compile and where graphc compiles the
executable, and one steady-state call is subtracted so the figure is the
compile overhead alone. Where a system keeps an on-disk cache (PyTensor's
compiledir, TorchInductor's cache, graphc's GRAPHC_CACHE_DIR object cache),
a second process sharing the first one's cache directory gives the warm
figure. graphc's children also report how many modules they loaded from
its cache, so a warm figure that did not come from the cache is flagged.

Run as ``python -m benchmarks.compile_time IMPL WORKLOAD [--backend B]
[--scale S] [--steady N]``: the child prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
W6_WORKLOADS = ("W2", "W1")
W6_LABELS = {"W2": "W2 MLP training step", "W1": "W1 value and gradient"}
CHILD_TIMEOUT_S = 900
RESULT_PREFIX = "W6-RESULT "


class VerificationFailed(Exception):
    """The child's first result disagreed with the reference."""


@dataclass
class ColdSample:
    init_s: float
    setup_s: float
    first_s: float
    steady_s: float
    error: float
    cache_hits: Optional[int] = None    # graphc: modules loaded from its disk cache

    @property
    def compile_s(self) -> float:
        return max(0.0, self.setup_s + self.first_s - self.steady_s)


@dataclass
class CompileRow:
    impl: str
    workload: str
    cold: List[ColdSample] = field(default_factory=list)
    warm: List[ColdSample] = field(default_factory=list)
    status: str = "ok"          # ok | failed | unavailable | error | skipped
    detail: str = ""
    cache: str = ""             # how the warm figure was obtained, or why there is none

    def median(self, samples: Sequence[ColdSample]) -> Optional[float]:
        return float(np.median([s.compile_s for s in samples])) if samples else None


# --------------------------------------------------------------------------
# Child: one measurement
# --------------------------------------------------------------------------
def _builder(impl: str, workload: str):
    from .peers import PEERS
    from .workloads import WORKLOADS
    if impl == "graphc":
        return next(b for name, _, b in WORKLOADS[workload].impls if name == "graphc")
    for peer in PEERS:
        if peer.name == impl:
            return peer.builders[workload]
    raise SystemExit(f"unknown implementation {impl!r}")


def warm_runtime(impl: str, backend: str) -> float:
    """Import and initialize the system (JAX's client, Dynamo and Inductor,
    graphc's backend) by compiling an unrelated one-op function, so the
    measurement that follows is compile time rather than process start-up.
    Returns the seconds that took."""
    start = time.perf_counter()
    one = np.zeros(2, dtype=np.float32)
    if impl == "graphc":
        import graphc as gc
        gc.function(lambda a: a + 1.0, backend=backend)(one)
    elif impl == "JAX":
        import jax
        jax.block_until_ready(jax.jit(lambda a: a + 1)(one))
    elif impl == "torch.compile":
        import torch
        torch.compile(lambda a: a + 1)(torch.from_numpy(one))
    elif impl == "PyTensor":
        import pytensor
        import pytensor.tensor as pt
        from .peers import pytensor_mode
        x = pt.vector("x", dtype="float32")
        pytensor.function([x], x + 1, mode=pytensor_mode())(one)
    return time.perf_counter() - start


def child(impl: str, workload: str, backend: str, scale: float, steady: int) -> Dict[str, float]:
    from .harness import verify
    from .workloads import WORKLOADS, Context
    init = warm_runtime(impl, backend)
    wl = WORKLOADS[workload]
    data = wl.make_data(scale, np.random.default_rng(6))
    build = _builder(impl, workload)
    start = time.perf_counter()
    prepared = build(data, Context(backend=backend))
    setup = time.perf_counter() - start
    start = time.perf_counter()
    prepared.call()
    first = time.perf_counter() - start
    check = verify(prepared.outputs(), wl.reference(data), wl.rtol)
    times = []
    for _ in range(steady):
        start = time.perf_counter()
        prepared.call()
        times.append(time.perf_counter() - start)
    result = {"init": init, "setup": setup, "first": first, "steady": float(np.median(times)), "error": check.error,
              "ok": check.ok, "message": check.message}
    if impl == "graphc":
        from graphc.codegen import jit
        stats = jit.cache_stats()
        result["cache_hits"] = stats["hits"]
        result["cache_misses"] = stats["misses"]
    return result


# --------------------------------------------------------------------------
# Parent: spawn the children
# --------------------------------------------------------------------------
def graphc_cache_variable() -> Optional[str]:
    """The environment variable naming graphc's on-disk compile cache
    (graphc.codegen.jit.CACHE_ENV, i.e. GRAPHC_CACHE_DIR; for an older
    graphc, the first GRAPHC_*CACHE* name in its sources), or None."""
    import graphc
    try:
        from graphc.codegen.jit import CACHE_ENV
        return CACHE_ENV
    except ImportError:
        pass
    pattern = re.compile(r"GRAPHC_\w*CACHE\w*")
    for path in sorted(Path(graphc.__file__).parent.rglob("*.py")):
        try:
            match = pattern.search(path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
        if match:
            return match.group(0)
    return None


def _run_child(impl: str, workload: str, backend: str, scale: float, steady: int,
               env_extra: Dict[str, str]) -> ColdSample:
    env = dict(os.environ)
    env.update(env_extra)
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "benchmarks.compile_time", impl, workload, "--backend", backend,
           "--scale", repr(scale), "--steady", str(steady)]
    proc = subprocess.run(cmd, cwd=str(REPO_ROOT), env=env, capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT_S)
    lines = [ln[len(RESULT_PREFIX):] for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"child exited with {proc.returncode}: {tail}")
    result = json.loads(lines[-1])
    if not result["ok"]:
        raise VerificationFailed(f"verification failed: {result['message']}")
    return ColdSample(result["init"], result["setup"], result["first"], result["steady"], result["error"],
                      result.get("cache_hits"))


@dataclass
class CachePlan:
    """How a system's on-disk cache is pointed at a fresh directory."""
    env: Optional[Dict[str, str]]     # None: no on-disk cache to warm
    note: str


def _cache_plan(impl: str, directory: str) -> CachePlan:
    if impl == "graphc":
        var = graphc_cache_variable()
        if var is None:
            return CachePlan(None, "graphc has no on-disk compile cache yet")
        return CachePlan({var: directory}, f"{var} shared by two processes")
    if impl == "torch.compile":
        return CachePlan({"TORCHINDUCTOR_CACHE_DIR": directory}, "TORCHINDUCTOR_CACHE_DIR shared by two processes")
    if impl == "PyTensor":
        flags = os.environ.get("PYTENSOR_FLAGS", "")
        flags = (flags + "," if flags else "") + f"compiledir={directory}"
        return CachePlan({"PYTENSOR_FLAGS": flags}, "PyTensor compiledir shared by two processes")
    return CachePlan(None, "no on-disk cache by default")


def measure_compile(impl: str, workload: str, backend: str, scale: float, cold_runs: int, warm: bool,
                    steady: int) -> CompileRow:
    """``cold_runs`` fresh processes, each with an empty cache directory;
    then, if ``warm`` and the system has an on-disk cache, one more process
    reusing the last cold run's cache."""
    row = CompileRow(impl, workload)
    with tempfile.TemporaryDirectory(prefix="graphc-bench-w6-") as tmp:
        plan = _cache_plan(impl, tmp)
        try:
            for i in range(cold_runs):
                directory = os.path.join(tmp, f"cold{i}")
                env = _cache_plan(impl, directory).env or {}
                row.cold.append(_run_child(impl, workload, backend, scale, steady, env))
            if warm and plan.env is not None:
                env = _cache_plan(impl, os.path.join(tmp, f"cold{cold_runs - 1}")).env or {}
                row.warm.append(_run_child(impl, workload, backend, scale, steady, env))
                hits = row.warm[-1].cache_hits
                if hits == 0:
                    # not a warm-cache figure: report why instead of a time
                    row.warm.pop()
                    plan.note += "; no warm figure: the second process found nothing in the cache"
                elif hits is not None:
                    plan.note += f"; the warm process loaded {hits} compiled module(s) from it"
        except VerificationFailed as exc:
            row.status, row.detail = "failed", str(exc)
        except (RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
            row.status, row.detail = "error", str(exc)
        row.cache = plan.note
    return row


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compile_time",
                                     description="One W6 compile-time measurement (prints JSON).")
    parser.add_argument("impl")
    parser.add_argument("workload", choices=W6_WORKLOADS)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--steady", type=int, default=5)
    args = parser.parse_args(argv)
    result = child(args.impl, args.workload, args.backend, args.scale, args.steady)
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
