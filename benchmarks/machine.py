"""The machine the numbers were taken on, and its measured memory bandwidth
(the denominator of the rooflines)."""
from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> List[str]:
    """The SIMD extensions that matter for vectorized float32 code."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f") if f in flags]
    except OSError:
        pass
    return []


def memory_gib() -> float:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def describe(backend: str, peer_versions: Dict[str, str]) -> List[Tuple[str, str]]:
    """(label, value) pairs for the report's machine table."""
    import llvmlite
    import graphc
    flags = cpu_flags()
    rows = [
        ("CPU", cpu_model() + (f" ({', '.join(flags)})" if flags else "")),
        ("cores", f"{usable_cores()} usable ({os.cpu_count()} online)"),
        ("memory", f"{memory_gib():.1f} GiB"),
        ("OS", platform.platform()),
        ("Python", sys.version.split()[0]),
        ("NumPy", np.__version__),
        ("llvmlite", llvmlite.__version__),
        ("graphc", f"{graphc.__version__}, backend `{backend}`"),
    ]
    rows += [(name, version) for name, version in peer_versions.items()]
    for var in THREAD_VARIABLES:
        if os.environ.get(var):
            rows.append((var, os.environ[var]))
    return rows


# environment variables that set the thread counts of graphc and the peers
THREAD_VARIABLES = ("GRAPHC_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "XLA_FLAGS")


@dataclass
class Bandwidth:
    bytes_per_s: float
    method: str


def measure_bandwidth(quick: bool = False) -> Bandwidth:
    """Sustained memory bandwidth: graphc's own measurement when the CPU
    backend provides one (graphc.codegen.parallel.measure_bandwidth, bytes
    per second), else the best of several NumPy copies of an array far
    larger than the caches, counting the bytes read plus the bytes written."""
    try:
        from graphc.codegen.parallel import measure_bandwidth as graphc_bandwidth  # type: ignore
    except Exception:
        graphc_bandwidth = None
    if graphc_bandwidth is not None:
        try:
            value = float(graphc_bandwidth())
            if value > 0:
                # a figure in GB/s rather than bytes/s is recognisable by its size
                return Bandwidth(value * 1e9 if value < 1e5 else value,
                                 "graphc.codegen.parallel.measure_bandwidth()")
        except Exception:
            pass
    n = (32 if quick else 256) * 2**20 // 4
    src = np.ones(n, dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)   # fault the pages in before timing
    best = float("inf")
    for _ in range(3 if quick else 7):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    mib = n * 4 // 2**20
    return Bandwidth(2 * src.nbytes / best, f"best of NumPy copies of a {mib} MiB float32 array "
                                            "(bytes read + bytes written, single thread)")


class LoadMeter:
    """CPU time that other processes used while a measurement ran, as a
    fraction of the machine's capacity (all CPUs x wall time): the whole
    machine's busy time from /proc/stat minus this process's own (and its
    waited-for children's). Benchmarks on a shared 2-core machine are only
    as good as this number is small."""

    def __init__(self) -> None:
        self._start = self._sample()

    @staticmethod
    def _sample():
        t = os.times()
        own = t.user + t.system + t.children_user + t.children_system
        busy = None
        try:
            with open("/proc/stat", encoding="utf-8") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
            idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
            busy = (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            pass
        return time.perf_counter(), own, busy

    def fraction(self) -> float | None:
        """Other processes' share of the CPUs since construction (None where
        /proc/stat cannot be read)."""
        wall0, own0, busy0 = self._start
        wall1, own1, busy1 = self._sample()
        if busy0 is None or busy1 is None or wall1 <= wall0:
            return None
        others = (busy1 - busy0) - (own1 - own0)
        return max(0.0, min(1.0, others / ((wall1 - wall0) * (os.cpu_count() or 1))))
