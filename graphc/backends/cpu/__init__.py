"""The native CPU backend: the optimized program becomes LLVM code through
llvmlite (loop-IR kernels, BLAS matmuls, variable updates), JIT-compiled
for this CPU, one entry point per segment of natively lowered ops.

Layout: ``segments`` splits the schedule and places every value, ``entry``
emits a segment's entry point, ``abi`` is how that entry point reads NumPy
arrays, ``executable`` runs it all per ``Session.run``.
"""
from __future__ import annotations

from typing import Any, Optional

from .executable import CpuExecutable

__all__ = ["CpuBackend", "CpuExecutable", "available"]


def available() -> bool:
    """True when entry points can read this process's NumPy arrays."""
    from .abi import layout_ok
    return layout_ok()


class CpuBackend:
    name = "cpu"

    def compile(self, program: Any, config: Optional[Any] = None) -> CpuExecutable:
        return CpuExecutable(program, config)

    # the executable cache, consulted before the passes (graphc/session.py compile_run)
    def cache_key(self, program: Any, config: Any) -> Optional[str]:
        from . import cache
        return cache.program_key(program, config)

    def cached(self, key: str, program: Any) -> Optional[CpuExecutable]:
        from . import cache
        return cache.load(key, program)

    def remember(self, key: str, executable: CpuExecutable) -> None:
        from . import cache
        cache.store(key, executable)
