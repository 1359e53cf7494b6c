"""Backends turn a pruned graph into an executable.

A backend has ``name`` and ``compile(program, config)`` (a
:class:`graphc.passes.program.Program`, already optimized) returning an
executable with ``run(feed_values, store, rng) -> list of arrays``.
"""
from __future__ import annotations

from typing import Callable, Dict

from ..errors import CompileError

_BACKENDS: Dict[str, Callable[[], object]] = {}
# why a built-in backend is not registered on this machine (named in get_backend's error)
_UNAVAILABLE: Dict[str, str] = {}


def register_backend(name: str, factory: Callable[[], object]) -> None:
    _BACKENDS[name] = factory


def available_backends() -> list:
    return sorted(_BACKENDS)


def get_backend(name: str):
    if name == "auto":
        name = "cpu" if "cpu" in _BACKENDS else "interpreter"
    try:
        factory = _BACKENDS[name]
    except KeyError:
        raise CompileError(f"backend {name!r} is not available"
                           + (f" ({_UNAVAILABLE[name]})" if name in _UNAVAILABLE else "")
                           + f"; available backends: {', '.join(available_backends())}") from None
    return factory()


def _register_builtin() -> None:
    from .interpreter import InterpreterBackend
    register_backend("interpreter", InterpreterBackend)
    from . import cpu
    if cpu.available():
        register_backend("cpu", cpu.CpuBackend)
    # only with a usable CUDA driver and GPU, so "auto" and the test suites never pick it by accident
    from . import ptx
    if ptx.available():
        register_backend("ptx", ptx.PtxBackend)
    else:
        _UNAVAILABLE["ptx"] = ptx.unavailable_reason() or "no usable CUDA driver or GPU"


_register_builtin()
