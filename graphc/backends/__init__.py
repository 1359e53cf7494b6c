"""Backends turn a pruned graph into an executable.

A backend has ``name`` and ``compile(program, config)`` (a
:class:`graphc.passes.program.Program`, already optimized) returning an
executable with ``run(feed_values, store, rng) -> list of arrays``.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

from ..errors import CompileError

_BACKENDS: Dict[str, Callable[[], object]] = {}
# why a built-in backend is not registered on this machine (named in get_backend's error)
_UNAVAILABLE: Dict[str, str] = {}


def register_backend(name: str, factory: Callable[[], object]) -> None:
    _BACKENDS[name] = factory


# backends that exist only while a condition holds (ptx: a usable CUDA driver,
# or the emulator switched on): name -> (available, why not, factory)
_CONDITIONAL: Dict[str, Tuple[Callable[[], bool], Callable[[], Optional[str]], Callable[[], object]]] = {}


def available_backends() -> list:
    return sorted(set(_BACKENDS) | {name for name, (ok, _, _) in _CONDITIONAL.items() if ok()})


def get_backend(name: str):
    if name == "auto":
        name = "cpu" if "cpu" in _BACKENDS else "interpreter"
    factory = _BACKENDS.get(name)
    if factory is None and name in _CONDITIONAL:
        ok, why, make = _CONDITIONAL[name]
        if ok():
            factory = make
        else:
            _UNAVAILABLE[name] = why() or "unavailable on this machine"
    if factory is None:
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
    # only with a usable CUDA driver and GPU (or the emulator), so "auto" never picks it;
    # checked when asked, so switching the emulator on (tests) makes it appear
    from . import ptx
    _CONDITIONAL["ptx"] = (ptx.available, ptx.unavailable_reason, ptx.PtxBackend)


_register_builtin()
