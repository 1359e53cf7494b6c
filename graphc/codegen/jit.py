"""JIT for the host CPU: optimize an llvmlite module at O3 (new pass builder,
loop and SLP vectorizers on) for the host CPU and its features, and load it
with MCJIT.

One TargetMachine per engine (MCJIT takes ownership of it; sharing one
aborts the process), and a separate one, made on demand, for assembly
dumps. Code compiled here uses the host CPU's features (AVX-512 on the
development machine) and must never be exported as is.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, Optional, Union

import llvmlite
import llvmlite.binding as llvm
import llvmlite.ir as ir

from ..dump import _log_of, add_artifact, add_timing
from ..errors import CompileError

__all__ = ["CompiledModule", "UNROLL_LOOPS", "compile_module", "host_target_machine", "initialize"]

llvmlite.ir_layer_typed_pointers_enabled = False

_init_lock = threading.Lock()
_initialized = False


def initialize() -> None:
    """Initialize LLVM's native target once per process, and make libm's
    symbols (log1pf, erf...) resolvable from JIT-compiled code."""
    global _initialized
    with _init_lock:
        if _initialized:
            return
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        libm = ctypes.util.find_library("m")
        if libm:
            llvm.load_library_permanently(libm)
        _initialized = True


def host_target_machine(opt: int = 3) -> "llvm.TargetMachine":
    """A new TargetMachine for this CPU (name and features of the host)."""
    initialize()
    target = llvm.Target.from_default_triple()
    return target.create_target_machine(cpu=llvm.get_host_cpu_name(),
                                        features=llvm.get_host_cpu_features().flatten(),
                                        opt=opt, jit=True)


@dataclass
class CompiledModule:
    """One JIT-compiled module: function addresses, the optimized IR text,
    the assembly on demand, and how long each compile phase took (seconds)."""
    name: str
    engine: "llvm.ExecutionEngine"
    optimized_ir: str
    timings: Dict[str, float] = field(default_factory=dict)
    _assembly: Optional[str] = None

    def address(self, function_name: str) -> int:
        addr = self.engine.get_function_address(function_name)
        if not addr:
            raise CompileError(f"module {self.name}: no function {function_name!r} after JIT compilation")
        return addr

    def assembly(self) -> str:
        """Host assembly of the optimized module (made on first request with
        its own TargetMachine: the engine's belongs to MCJIT)."""
        if self._assembly is None:
            tm = host_target_machine()
            mod = llvm.parse_assembly(self.optimized_ir)
            self._assembly = tm.emit_assembly(mod)
        return self._assembly


def _dumping() -> bool:
    # only build the assembly text when a dump directory will receive it
    log = _log_of(None)
    return log is not None and log.directory is not None


# LLVM's loop unroller is off by default (GRAPHC_LLVM_UNROLL=1 turns it on):
# measured on graphc kernels it changed no run time beyond noise but doubled
# compile time (it fully unrolls short inner loops, then the vectorizers
# work on gathers); graphc's codegen unrolls loops of <= 4 iterations itself.
UNROLL_LOOPS = os.environ.get("GRAPHC_LLVM_UNROLL", "0") not in ("0", "")


def compile_module(module: Union[ir.Module, str], *, name: str = "graphc", opt: int = 3,
                   unroll: Optional[bool] = None) -> CompiledModule:
    """Optimize ``module`` (llvmlite.ir module or IR text) at ``opt`` for the
    host CPU (loop and SLP vectorizers on; the unroller per ``unroll``,
    default UNROLL_LOOPS) and JIT-compile it. Phase timings go to the
    CompiledModule and, during a graph compilation, to its dump (as do the
    IR before and after optimization and the assembly)."""
    timings: Dict[str, float] = {}
    start = time.perf_counter()
    text = str(module)
    tm = host_target_machine(opt)
    try:
        llmod = llvm.parse_assembly(text)
        llmod.triple = tm.triple
        llmod.data_layout = str(tm.target_data)
        llmod.verify()
    except RuntimeError as exc:
        raise CompileError(f"module {name}: LLVM rejected the generated IR: {exc}") from exc
    timings["llvm: parse+verify"] = time.perf_counter() - start

    start = time.perf_counter()
    pto = llvm.create_pipeline_tuning_options(speed_level=opt)
    pto.loop_vectorization = opt >= 2
    pto.slp_vectorization = opt >= 2
    pto.loop_unrolling = UNROLL_LOOPS if unroll is None else unroll
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(llmod, pb)
    optimized = str(llmod)
    timings["llvm: optimize"] = time.perf_counter() - start

    start = time.perf_counter()
    engine = llvm.create_mcjit_compiler(llmod, tm)
    engine.finalize_object()
    timings["llvm: codegen"] = time.perf_counter() - start

    compiled = CompiledModule(name, engine, optimized, timings)
    for label, seconds in timings.items():
        add_timing(label, seconds)
    if _dumping():
        add_artifact(f"{name}.ll", text)
        add_artifact(f"{name}.opt.ll", optimized)
        add_artifact(f"{name}.s", compiled.assembly())
    return compiled
