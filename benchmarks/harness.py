"""Timing, verification and the records the report is written from.

An implementation of a workload is prepared once (its compile or tracing
happens there or on its first call), checked against the float64 NumPy
reference, and only then timed: a wrong fast result is reported as a
verification failure, never as a time.
"""
from __future__ import annotations

import gc as _pygc
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional

import numpy as np


@dataclass
class Prepared:
    """One implementation, ready to run.

    call: runs one iteration of the workload synchronously (results ready
        when it returns: peers block on their device futures inside it).
    outputs: the results of the most recent call as NumPy arrays keyed like
        the workload's reference (for a training step, what the first call
        implies: the loss and ``(old - new) / learning_rate`` per parameter).
    loop: optional ``loop(n)`` running ``call`` n times with no Python call
        layer between iterations, for workloads timed in microseconds.
    """
    call: Callable[[], Any]
    outputs: Callable[[], Dict[str, np.ndarray]]
    loop: Optional[Callable[[int], None]] = None
    note: str = ""


@dataclass
class Timing:
    """Per-call seconds over ``repeats`` samples of ``inner`` calls each."""
    median: float
    minimum: float
    repeats: int
    inner: int


@dataclass
class TimingPolicy:
    """How long to spend timing one implementation.

    budget_s: total wall time to aim for (after warm-up).
    min_repeats/max_repeats: bounds on the number of samples.
    min_sample_s: calls are batched so one sample lasts at least this long
        (timer and loop overhead stay negligible for microsecond calls).
    warmup: calls run before timing (after the verification call).
    """
    budget_s: float = 2.0
    min_repeats: int = 7
    max_repeats: int = 200
    min_sample_s: float = 2e-3
    warmup: int = 2

    @classmethod
    def full(cls) -> "TimingPolicy":
        return cls()

    @classmethod
    def quick(cls) -> "TimingPolicy":
        return cls(budget_s=0.15, min_repeats=3, max_repeats=20, min_sample_s=5e-4, warmup=1)


def measure(prepared: Prepared, policy: TimingPolicy) -> Timing:
    """Warm up, pick a batch size and a sample count from one timed call,
    then take the samples with Python's garbage collector paused (as
    ``timeit`` does). Returns the median and minimum per-call time."""
    loop = prepared.loop or _loop_of(prepared.call)
    for _ in range(policy.warmup):
        loop(1)
    single = _timed(loop, 1)
    inner = 1
    if single < policy.min_sample_s:
        # one more estimate over a batch: a single microsecond call is mostly timer noise
        probe = max(1, int(policy.min_sample_s / max(single, 1e-9)))
        single = _timed(loop, probe) / probe
        inner = max(1, math.ceil(policy.min_sample_s / max(single, 1e-9)))
    sample = single * inner
    repeats = int(policy.budget_s / max(sample, 1e-9))
    repeats = max(policy.min_repeats, min(policy.max_repeats, repeats))
    samples = []
    enabled = _pygc.isenabled()
    _pygc.disable()
    try:
        for _ in range(repeats):
            samples.append(_timed(loop, inner) / inner)
    finally:
        if enabled:
            _pygc.enable()
    return Timing(float(np.median(samples)), float(min(samples)), repeats, inner)


def _loop_of(call: Callable[[], Any]) -> Callable[[int], None]:
    def loop(n: int) -> None:
        for _ in range(n):
            call()
    return loop


def _timed(loop: Callable[[int], None], n: int) -> float:
    start = time.perf_counter()
    loop(n)
    return time.perf_counter() - start


# --------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------
@dataclass
class Check:
    """Outcome of comparing an implementation with the reference.

    error is the worst, over outputs, of max|got - ref| / max|ref| (the error
    relative to the output's scale, so one wrong element of a gradient shows
    as clearly as a wrong loss)."""
    ok: bool
    error: float
    worst: str
    message: str = ""


def verify(outputs: Mapping[str, Any], reference: Mapping[str, np.ndarray], rtol: float) -> Check:
    """Compare every reference output with the implementation's: same keys,
    same shape, a float32 result where float32 is expected, finite values,
    and a scaled error within ``rtol``."""
    worst, worst_name = 0.0, ""
    for name, ref in reference.items():
        if name not in outputs:
            return Check(False, math.inf, name, f"output {name!r} missing")
        got = np.asarray(outputs[name])
        ref = np.asarray(ref)
        if got.shape != ref.shape:
            return Check(False, math.inf, name, f"{name}: shape {got.shape}, expected {ref.shape}")
        if got.dtype != np.float32:
            return Check(False, math.inf, name, f"{name}: dtype {got.dtype}, expected float32")
        if not np.all(np.isfinite(got)):
            return Check(False, math.inf, name, f"{name}: non-finite values")
        error = scaled_error(got, ref)
        if error > worst or not worst_name:
            worst, worst_name = error, name
    ok = worst <= rtol
    message = "" if ok else f"{worst_name}: error {worst:.2e} exceeds {rtol:.0e}"
    return Check(ok, worst, worst_name, message)


def scaled_error(got: np.ndarray, ref: np.ndarray) -> float:
    ref64 = ref.astype(np.float64)
    scale = float(np.max(np.abs(ref64))) if ref64.size else 0.0
    if ref64.size == 0:
        return 0.0
    diff = float(np.max(np.abs(got.astype(np.float64) - ref64)))
    return diff / scale if scale > 0 else diff


# --------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------
GRAPHC, NUMPY, PEER = "graphc", "numpy", "peer"


@dataclass
class Row:
    """One implementation's line in a workload table."""
    name: str
    kind: str                       # GRAPHC, NUMPY or PEER
    timing: Optional[Timing] = None
    check: Optional[Check] = None
    status: str = "ok"              # ok | failed | unavailable | error | skipped
    detail: str = ""

    @property
    def timed(self) -> bool:
        return self.status == "ok" and self.timing is not None


@dataclass
class WorkloadResult:
    key: str
    title: str
    description: str
    sizes: str
    rows: List[Row] = field(default_factory=list)
    roofline_s: Optional[float] = None
    roofline_bytes: Optional[int] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    def graphc_row(self) -> Optional[Row]:
        for row in self.rows:
            if row.kind == GRAPHC and row.timed:
                return row
        return None

    def fastest_peer(self) -> Optional[Row]:
        peers = [r for r in self.rows if r.kind != GRAPHC and r.timed]
        return min(peers, key=lambda r: r.timing.median) if peers else None
