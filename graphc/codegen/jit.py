"""JIT for the host CPU: optimize an llvmlite module at O3 (new pass builder,
loop and SLP vectorizers on) for the host CPU and its features, and load it
with MCJIT; optionally keep the machine code in an on-disk cache.

One TargetMachine per engine (MCJIT takes ownership of it; sharing one
aborts the process), and a separate one, made on demand, for assembly
dumps. Code compiled here uses the host CPU's features (AVX-512 on the
development machine) and must never be exported as is.

On-disk cache: with ``GRAPHC_CACHE_DIR`` set to a directory,
``compile_module`` stores the object code MCJIT produced (and the optimized
IR, for dumps) under ``<dir>/llvm-cpu/<key>.gco``, the key being a SHA-256
of the IR text and of everything else that changes the machine code
(``cache_key``). A later compile of the same IR, in this process or another,
loads that object straight into a fresh engine: no optimization, no code
generation. External symbols (BLAS, libgomp, libm) are resolved when the
object is loaded, so an entry holds no process-specific address. A missing,
short or corrupt entry is a miss and gets rewritten; writes are atomic
(temporary file + rename) and a cache that cannot be read or written never
fails a compilation.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
import re
import struct
import threading
import time
import zlib
from typing import Callable, Dict, Iterable, Optional, Tuple, Union

import llvmlite
import llvmlite.binding as llvm
import llvmlite.ir as ir

from ..dump import _log_of, add_artifact, add_timing
from ..files import atomic_write
from ..errors import CompileError

__all__ = ["CACHE_ENV", "load_cached_module", "optimize_module", "CODEGEN_VERSION", "CompiledModule", "UNROLL_LOOPS", "cache_directory", "cache_key",
           "cache_stats", "compile_module", "host_target_machine", "initialize"]

llvmlite.ir_layer_typed_pointers_enabled = False

# Environment variable naming the on-disk cache directory (unset or empty:
# no disk cache).
CACHE_ENV = "GRAPHC_CACHE_DIR"
# Part of every cache key. Bump it whenever this file changes how IR text
# becomes machine code in a way the key does not already capture (pipeline
# choice, codegen level rules, entry format), so old entries stop matching.
CODEGEN_VERSION = "graphc-jit-1"

_init_lock = threading.Lock()
_initialized = False
_host: Optional[Tuple[str, str, str]] = None


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


def _host_description() -> Tuple[str, str, str]:
    """(triple, CPU name, CPU features) of this machine, asked once per
    process: they cannot change while it runs."""
    global _host
    if _host is None:
        initialize()
        _host = (llvm.get_default_triple(), llvm.get_host_cpu_name(),
                 llvm.get_host_cpu_features().flatten())
    return _host


def host_target_machine(opt: int = 3) -> "llvm.TargetMachine":
    """A new TargetMachine for this CPU (name and features of the host)."""
    triple, cpu, features = _host_description()
    target = llvm.Target.from_triple(triple)
    return target.create_target_machine(cpu=cpu, features=features, opt=opt, jit=True)


class CompiledModule:
    """One JIT-compiled module: function addresses, the optimized IR text,
    the assembly on demand, and how long each compile phase took (seconds).
    ``from_cache`` says whether the machine code came from the disk cache."""

    def __init__(self, name: str, engine: "llvm.ExecutionEngine",
                 optimized_ir: Union[str, Callable[[], str]],
                 timings: Optional[Dict[str, float]] = None, from_cache: bool = False) -> None:
        self.name = name
        self.engine = engine
        # a cache hit defers decompressing the stored IR until someone reads it
        self._optimized_ir: Optional[str] = optimized_ir if isinstance(optimized_ir, str) else None
        self._ir_loader: Optional[Callable[[], str]] = None if isinstance(optimized_ir, str) else optimized_ir
        self.timings: Dict[str, float] = dict(timings or {})
        self.from_cache = from_cache
        self._assembly: Optional[str] = None
        # the disk-cache key of its machine code (None when the cache is off)
        self.cache_key: Optional[str] = None

    @property
    def optimized_ir(self) -> str:
        if self._optimized_ir is None:
            assert self._ir_loader is not None
            self._optimized_ir = self._ir_loader()
            self._ir_loader = None
        return self._optimized_ir

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

    def __repr__(self) -> str:
        return f"CompiledModule({self.name!r}{', from cache' if self.from_cache else ''})"


def _dumping() -> bool:
    # only build the assembly text when a dump directory will receive it
    log = _log_of(None)
    return log is not None and log.directory is not None


# LLVM's loop unroller is off by default (GRAPHC_LLVM_UNROLL=1 turns it on):
# measured on graphc kernels it changed no run time beyond noise but doubled
# compile time (it fully unrolls short inner loops, then the vectorizers
# work on gathers); graphc's codegen unrolls loops of <= 4 iterations itself.
UNROLL_LOOPS = os.environ.get("GRAPHC_LLVM_UNROLL", "0") not in ("0", "")


# --------------------------------------------------------------------------
# Pipeline choice
# --------------------------------------------------------------------------
# Pipeline for modules without loops: IR optimization level (O1 saves
# ~3-4 ms a small module against O3) and codegen (TargetMachine) level.
# Codegen level 0 (LLVM's fast instruction selector and register
# allocator) would save another ~4 ms, but W5's per-call dispatch (whose
# argument checks are such a module) measured ~1% (~20 ns) slower with it.
_LOOP_FREE_OPT = 1
_LOOP_FREE_CODEGEN_OPT = 3

_DEFINE = re.compile(r"^define\b")
_LABEL_DEF = re.compile(r'^("(?:[^"\\]|\\.)*"|[-\w.$]+):')
_LABEL_USE = re.compile(r'label %("(?:[^"\\]|\\.)*"|[-\w.$]+)')


def _has_cycles(text: str) -> bool:
    """Whether some function of the IR text has a cycle in its control-flow
    graph (a loop). Optimization never adds one, and inlining only brings
    in bodies that are in this text too, so a module without cycles here
    has none after optimization either. Successors are read from every
    ``label %x`` operand of a block (br, switch, indirectbr, invoke...)."""
    succ: Dict[str, list] = {}
    current: Optional[str] = None
    in_function = False
    for line in text.splitlines():
        if _DEFINE.match(line):
            if in_function and _cyclic(succ):
                return True
            in_function, succ, current = True, {}, "<entry>"
            succ[current] = []
            continue
        if not in_function:
            continue
        if line.startswith("}"):
            if _cyclic(succ):
                return True
            in_function = False
            continue
        label = _LABEL_DEF.match(line)
        if label:
            if current == "<entry>" and not succ[current]:
                succ.pop(current)         # the entry block's own label line
            current = label.group(1).strip('"')
            succ.setdefault(current, [])
            continue
        if "label %" in line and current is not None:
            succ[current].extend(t.strip('"') for t in _LABEL_USE.findall(line))
    return in_function and _cyclic(succ)


def _cyclic(succ: Dict[str, list]) -> bool:
    """Depth-first search for a back edge (iterative: blocks can be many)."""
    state: Dict[str, int] = {}        # 1: on the current path, 2: finished
    for root in succ:
        if root in state:
            continue
        state[root] = 1
        stack = [(root, iter(succ[root]))]
        while stack:
            node, children = stack[-1]
            for child in children:
                s = state.get(child)
                if s == 1:
                    return True
                if s is None:
                    state[child] = 1
                    stack.append((child, iter(succ.get(child, ()))))
                    break
            else:
                state[node] = 2
                stack.pop()
    return False


# --------------------------------------------------------------------------
# On-disk object cache
# --------------------------------------------------------------------------
_ENTRY_MAGIC = b"GRAPHC-JIT-OBJ\x00\x01"
# magic, key (32 bytes), object length, compressed IR length, SHA-256 of both payloads
_HEADER = struct.Struct("<16s32sQQ32s")
_CACHE_SUBDIR = "llvm-cpu"

_stats_lock = threading.Lock()
_stats: Dict[str, int] = {"hits": 0, "misses": 0, "writes": 0, "bad_entries": 0, "errors": 0}
_last_error: Optional[str] = None


def cache_directory() -> Optional[str]:
    """Where compiled objects are cached: ``$GRAPHC_CACHE_DIR/llvm-cpu``, or
    None when the variable is unset or empty (read at every compile, so a
    process can turn the cache on or off)."""
    root = os.environ.get(CACHE_ENV, "")
    return os.path.join(os.path.abspath(os.path.expanduser(root)), _CACHE_SUBDIR) if root else None


def cache_stats() -> Dict[str, object]:
    """Counters of this process's disk-cache use: hits, misses, writes,
    bad_entries (short, corrupt or mismatched files found and ignored),
    errors (reads or writes the file system refused), and last_error."""
    with _stats_lock:
        out: Dict[str, object] = dict(_stats)
    out["last_error"] = _last_error
    return out


def _count(what: str, error: Optional[BaseException] = None) -> None:
    global _last_error
    with _stats_lock:
        _stats[what] += 1
        if error is not None:
            _last_error = f"{type(error).__name__}: {error}"


def cache_key(text: str, *, opt: int = 3, vectorize: bool = True, unroll: bool = False,
              exports: Optional[Iterable[str]] = None) -> str:
    """Hex SHA-256 naming the machine code ``text`` compiles to here: the IR
    text, the pipeline settings, the exported names, the host (triple, CPU
    name and features), the llvmlite and LLVM versions and CODEGEN_VERSION."""
    triple, cpu, features = _host_description()
    settings = "\n".join([
        CODEGEN_VERSION, f"llvmlite {llvmlite.__version__}",
        "llvm " + ".".join(map(str, llvm.llvm_version_info)),
        f"triple {triple}", f"cpu {cpu}", f"features {features}",
        f"opt {opt} vectorize {int(vectorize)} unroll {int(unroll)}",
        f"loop-free opt {_LOOP_FREE_OPT} codegen {_LOOP_FREE_CODEGEN_OPT}",
        "exports " + ("*" if exports is None else ",".join(sorted(exports))),
    ])
    h = hashlib.sha256(settings.encode())
    h.update(b"\x00")
    h.update(text.encode())
    return h.hexdigest()


def _entry_path(directory: str, key: str) -> str:
    return os.path.join(directory, key + ".gco")


def _read_entry(directory: str, key: str) -> Optional[Tuple[bytes, bytes]]:
    """(object code, compressed optimized IR) of a valid entry, else None."""
    path = _entry_path(directory, key)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        _count("errors", exc)
        return None
    size = _HEADER.size
    if len(data) >= size:
        magic, stored_key, n_obj, n_ir, digest = _HEADER.unpack_from(data)
        payload = memoryview(data)[size:]
        if (magic == _ENTRY_MAGIC and stored_key == bytes.fromhex(key) and n_obj > 0
                and len(payload) == n_obj + n_ir and hashlib.sha256(payload).digest() == digest):
            return bytes(payload[:n_obj]), bytes(payload[n_obj:])
    _count("bad_entries")
    return None


def _write_entry(directory: str, key: str, obj: bytes, optimized_ir: str) -> None:
    """Store an entry atomically: readers see the old file, no file, or the
    whole new one, never a partial write."""
    ir_blob = zlib.compress(optimized_ir.encode(), 1)
    payload = obj + ir_blob
    header = _HEADER.pack(_ENTRY_MAGIC, bytes.fromhex(key), len(obj), len(ir_blob),
                          hashlib.sha256(payload).digest())
    try:
        os.makedirs(directory, exist_ok=True)
        atomic_write(_entry_path(directory, key), lambda f: (f.write(header), f.write(payload)), durable=False)
        _count("writes")
    except OSError as exc:
        _count("errors", exc)


def _load_object(obj: bytes) -> "llvm.ExecutionEngine":
    """An engine holding the cached object code (linked, symbols resolved)."""
    tm = host_target_machine()
    empty = llvm.parse_assembly("")
    empty.triple = tm.triple
    empty.data_layout = str(tm.target_data)
    engine = llvm.create_mcjit_compiler(empty, tm)
    engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
    engine.finalize_object()
    return engine


def _inflate(blob: bytes) -> Callable[[], str]:
    return lambda: zlib.decompress(blob).decode()


# --------------------------------------------------------------------------
# Compilation
# --------------------------------------------------------------------------
def compile_module(module: Union[ir.Module, str], *, name: str = "graphc", opt: int = 3,
                   unroll: Optional[bool] = None,
                   exports: Optional[Iterable[str]] = None) -> CompiledModule:
    """Optimize ``module`` (llvmlite.ir module or IR text) at ``opt`` for the
    host CPU (loop and SLP vectorizers on; the unroller per ``unroll``,
    default UNROLL_LOOPS) and JIT-compile it. Phase timings go to the
    CompiledModule and, during a graph compilation, to its dump (as do the
    IR before and after optimization and the assembly).

    ``exports``: the only functions callers will look up; every other
    function defined with external linkage becomes internal, so LLVM drops
    the ones it inlined everywhere instead of optimizing and compiling a
    second copy. None keeps every function addressable.

    A module without any loop (no cycle in any function's control flow:
    argument checks, copies, tiny unrolled kernels) is optimized at O1: its
    code runs once per call, and this saves a few ms a module.

    With ``GRAPHC_CACHE_DIR`` set, the machine code is looked up in and
    saved to the disk cache (see the module docstring)."""
    timings: Dict[str, float] = {}
    start = time.perf_counter()
    text = str(module)
    exported = None if exports is None else sorted(set(exports))
    do_unroll = UNROLL_LOOPS if unroll is None else bool(unroll)
    directory = cache_directory()
    key = None
    if directory is not None:
        key = cache_key(text, opt=opt, vectorize=opt >= 2, unroll=do_unroll, exports=exported)
        entry = _read_entry(directory, key)
        if entry is not None:
            try:
                engine = _load_object(entry[0])
            except RuntimeError as exc:   # e.g. llvmlite rejecting the object
                _count("bad_entries", exc)
            else:
                _count("hits")
                timings["llvm: cache hit"] = time.perf_counter() - start
                compiled = CompiledModule(name, engine, _inflate(entry[1]), timings, from_cache=True)
                compiled.cache_key = key
                return _finish(compiled, text)
        _count("misses")

    loops = _has_cycles(text)
    tm = host_target_machine(opt if loops else min(opt, _LOOP_FREE_CODEGEN_OPT))
    try:
        llmod = llvm.parse_assembly(text)
        llmod.triple = tm.triple
        llmod.data_layout = str(tm.target_data)
        llmod.verify()
    except RuntimeError as exc:
        raise CompileError(f"module {name}: LLVM rejected the generated IR: {exc}") from exc
    if exported is not None:
        _internalize(llmod, exported, name)
    timings["llvm: parse+verify"] = time.perf_counter() - start

    start = time.perf_counter()
    level = opt if loops else min(opt, _LOOP_FREE_OPT)
    if level > 0:
        pto = llvm.create_pipeline_tuning_options(speed_level=level)
        pto.loop_vectorization = level >= 2
        pto.slp_vectorization = level >= 2
        pto.loop_unrolling = do_unroll
        pb = llvm.create_pass_builder(tm, pto)
        pb.getModulePassManager().run(llmod, pb)
    optimized = str(llmod)
    timings["llvm: optimize"] = time.perf_counter() - start

    start = time.perf_counter()
    engine = llvm.create_mcjit_compiler(llmod, tm)
    objects = []
    if key is not None:
        # MCJIT hands the object it generated to this hook before linking it
        engine.set_object_cache(lambda _module, buf: objects.append(buf), None)
    engine.finalize_object()
    timings["llvm: codegen"] = time.perf_counter() - start
    if key is not None and directory is not None and len(objects) == 1:
        start = time.perf_counter()
        _write_entry(directory, key, objects[0], optimized)
        timings["llvm: cache write"] = time.perf_counter() - start
    compiled = CompiledModule(name, engine, optimized, timings)
    compiled.cache_key = key if len(objects) == 1 else None
    return _finish(compiled, text)


def optimize_module(module: Union[ir.Module, str], tm: "llvm.TargetMachine", *, name: str, opt: int = 3,
                    vectorize: bool = True, unroll: bool = False) -> "llvm.ModuleRef":
    """Parse ``module`` for ``tm``'s target, verify it and run the new pass
    manager's pipeline at ``opt`` (loop and SLP vectorizers per
    ``vectorize``): the part every backend (JIT, export, PTX) shares."""
    try:
        llmod = llvm.parse_assembly(str(module))
        llmod.triple = tm.triple
        llmod.data_layout = str(tm.target_data)
        llmod.verify()
    except RuntimeError as exc:
        raise CompileError(f"module {name}: LLVM rejected the generated IR: {exc}") from exc
    if opt > 0:
        pto = llvm.create_pipeline_tuning_options(speed_level=opt)
        pto.loop_vectorization = vectorize
        pto.slp_vectorization = vectorize
        pto.loop_unrolling = unroll
        pb = llvm.create_pass_builder(tm, pto)
        pb.getModulePassManager().run(llmod, pb)
    return llmod


def load_cached_module(key: str, name: str = "graphc") -> Optional[CompiledModule]:
    """The module whose machine code the disk cache holds under ``key`` (a
    ``CompiledModule.cache_key`` of an earlier compile), loaded without its
    IR; None when the cache is off or has no valid entry. Callers register
    the runtime symbols the code needs (thread pool, BLAS) first."""
    directory = cache_directory()
    if directory is None or not re.fullmatch(r"[0-9a-f]{64}", key or ""):
        return None
    start = time.perf_counter()
    entry = _read_entry(directory, key)
    if entry is None:
        return None
    try:
        engine = _load_object(entry[0])
    except RuntimeError as exc:
        _count("bad_entries", exc)
        return None
    _count("hits")
    compiled = CompiledModule(name, engine, _inflate(entry[1]), {"llvm: cache hit": time.perf_counter() - start},
                              from_cache=True)
    compiled.cache_key = key
    for label, seconds in compiled.timings.items():
        add_timing(label, seconds)
    return compiled


def _internalize(llmod: "llvm.ModuleRef", exported: Iterable[str], name: str) -> None:
    keep = set(exported)
    defined = set()
    for fn in llmod.functions:
        if fn.is_declaration:
            continue
        defined.add(fn.name)
        if fn.name not in keep and fn.linkage == llvm.Linkage.external:
            fn.linkage = llvm.Linkage.internal
    missing = keep - defined
    if missing:
        raise CompileError(f"module {name}: exported function(s) {sorted(missing)} are not defined")


def _finish(compiled: CompiledModule, text: str) -> CompiledModule:
    for label, seconds in compiled.timings.items():
        add_timing(label, seconds)
    if _dumping():
        add_artifact(f"{compiled.name}.ll", text)
        add_artifact(f"{compiled.name}.opt.ll", compiled.optimized_ir)
        add_artifact(f"{compiled.name}.s", compiled.assembly())
    return compiled
