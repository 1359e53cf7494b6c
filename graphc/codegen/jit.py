"""JIT for the host CPU: optimize an llvmlite module (new pass builder, loop
and SLP vectorizers on, O1 simplification: see SIMPLIFY_LEVEL) for the host
CPU and its features, and load it with MCJIT; optionally keep the machine
code in an on-disk cache.

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
from typing import Callable, Dict, Iterable, List, Optional, Set, Tuple, Union

import llvmlite
import llvmlite.binding as llvm
import llvmlite.ir as ir
from llvmlite.binding import ffi as _ffi

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
CODEGEN_VERSION = "graphc-jit-2"

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
        # how many parts it was compiled in, on as many threads (see _split_module)
        self.parts = 1

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
            # a module compiled in parts (see _split_module) has one text per part
            texts = self.optimized_ir.split(PART_SEPARATOR)
            self._assembly = (PART_SEPARATOR.join(host_target_machine().emit_assembly(llvm.parse_assembly(t))
                                                  for t in texts))
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
# Simplification level of the vectorizing pipeline (opt >= 2). LLVM's new
# pass builder runs the same module optimization pipeline (loop and SLP
# vectorizers, their clean-up) after the per-function simplification at any
# level; what O3 adds is in the simplification: GVN, jump threading,
# correlated value propagation, aggressive instcombine, loop unswitching...
# On graphc's kernels (counted loops over noalias buffers, already in the
# form the vectorizers want) those find nothing the vectorizers need:
# W2's module compiles to the same machine code up to register choice with
# O1 simplification and ~25% less optimize time (~100 -> ~78 ms), W1's
# loses ~6 ms; W1-W4 steady-state run times did not change beyond noise.
# GRAPHC_LLVM_SIMPLIFY=3 restores the O3 simplification (e.g. to compare).
SIMPLIFY_LEVEL = {"2": 2, "3": 3}.get(os.environ.get("GRAPHC_LLVM_SIMPLIFY", "").strip(), 1)

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
_ENTRY_MAGIC = b"GRAPHC-JIT-OBJ\x00\x02"
# magic, key (32 bytes), object list length (_pack_objects), compressed IR
# length, SHA-256 of both payloads
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
        f"opt {opt} vectorize {int(vectorize)} unroll {int(unroll)} simplify {SIMPLIFY_LEVEL}",
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


def _write_entry(directory: str, key: str, objects: List[bytes], optimized_ir: str) -> None:
    """Store an entry atomically: readers see the old file, no file, or the
    whole new one, never a partial write."""
    ir_blob = zlib.compress(optimized_ir.encode(), 1)
    obj = _pack_objects(objects)
    payload = obj + ir_blob
    header = _HEADER.pack(_ENTRY_MAGIC, bytes.fromhex(key), len(obj), len(ir_blob),
                          hashlib.sha256(payload).digest())
    try:
        os.makedirs(directory, exist_ok=True)
        atomic_write(_entry_path(directory, key), lambda f: (f.write(header), f.write(payload)), durable=False)
        _count("writes")
    except OSError as exc:
        _count("errors", exc)


def _pack_objects(objects: List[bytes]) -> bytes:
    """One entry's object payload: a count, the lengths, then the objects
    (a module compiled in parts has one object per part)."""
    return struct.pack(f"<I{len(objects)}Q", len(objects), *map(len, objects)) + b"".join(objects)


def _unpack_objects(blob: bytes) -> List[bytes]:
    (count,) = struct.unpack_from("<I", blob)
    sizes = struct.unpack_from(f"<{count}Q", blob, 4)
    offset, out = 4 + 8 * count, []
    for size in sizes:
        out.append(blob[offset:offset + size])
        offset += size
    if count == 0 or offset != len(blob) or not all(out):
        raise RuntimeError("malformed object list")
    return out


def _load_objects(objects: List[bytes]) -> "llvm.ExecutionEngine":
    """An engine holding the object code (linked together, symbols resolved)."""
    tm = host_target_machine()
    empty = llvm.parse_assembly("")
    empty.triple = tm.triple
    empty.data_layout = str(tm.target_data)
    engine = llvm.create_mcjit_compiler(empty, tm)
    for obj in objects:
        engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
    engine.finalize_object()
    return engine


def _load_object(blob: bytes) -> "llvm.ExecutionEngine":
    """An engine holding a cache entry's object code."""
    return _load_objects(_unpack_objects(blob))


def _inflate(blob: bytes) -> Callable[[], str]:
    return lambda: zlib.decompress(blob).decode()


# --------------------------------------------------------------------------
# Compiling a module in parts, on several threads
# --------------------------------------------------------------------------
# LLVM's optimization and code generation are most of a big module's
# compile time (W2's training step: ~80 + ~50 ms of ~230 ms cold) and use
# one core. A module whose functions are many is therefore split into
# parts, each function that other code calls (the entry point, the
# segment's core, every kernel) going to one part with the internal
# functions it uses (copied into each part that needs one), and the parts
# are parsed, optimized and compiled to objects at the same time, each on
# its own thread in its own LLVMContext (LLVM allows concurrent work on
# distinct contexts), then linked by one MCJIT engine. llvmlite serializes
# every LLVM call behind one process-wide lock; the two long calls (the pass
# pipeline and object emission) are made through the ctypes functions
# under its wrappers, which release the GIL and take no lock, on objects
# no other thread can see. A kernel in a part other than its caller's is
# no longer inlined there: one call per kernel per run (nanoseconds).
# Measured on W2 (2 cores): ~135 ms of LLVM time in one piece, ~80-90 ms wall
# in two parts.
PART_SEPARATOR = "\n; ---- graphc: next part of the module ----\n"
# Modules with fewer lines in function bodies than this compile in one
# piece (the argument checks of a small program, tests' tiny kernels): per
# part LLVM re-parses the declarations and builds its pipeline again.
_SPLIT_MIN_LINES = 400
_MAX_PARTS = 4
_LOOP_LINE_WEIGHT = 6
COMPILE_THREADS_ENV = "GRAPHC_COMPILE_THREADS"

_DEFINE_NAME = re.compile(r'^define\s+(?:(internal)\s+)?[^@]*@("(?:[^"\\]|\\.)*"|[-\w.$]+)\(')
# what llvmlite would print between ``define`` and the return type for a
# linkage, visibility or preemption other than internal/external
_OTHER_LINKAGE = re.compile(r'^define\s+(?:private|linkonce|linkonce_odr|weak|weak_odr|common|appending|'
                            r'extern_weak|available_externally|external|hidden|protected|dllexport|dllimport|'
                            r'dso_local|dso_preemptable)\b')
_SYMBOL_USE = re.compile(r'@("(?:[^"\\]|\\.)*"|[-\w.$]+)')
# global variable lines every part may hold a copy of: declarations, and
# internal constants (graphc's constant tables)
_SHAREABLE_GLOBAL = re.compile(r'^@\S+\s*=\s*(?:external\s+(?:\w+\s+)*global\b|'
                               r'(?:internal|private)\s+(?:unnamed_addr\s+)?constant\b)')
_raw_lock = threading.Lock()
_raw: Optional[Dict[str, Callable]] = None


def compile_threads() -> int:
    """Threads a module may be compiled on: ``GRAPHC_COMPILE_THREADS``, else
    the CPUs this process may run on, at most 4 (1 compiles in one piece)."""
    raw = os.environ.get(COMPILE_THREADS_ENV, "").strip()
    if raw:
        try:
            return max(1, min(_MAX_PARTS, int(raw)))
        except ValueError:
            return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(_MAX_PARTS, cpus))


def _raw_functions() -> Optional[Dict[str, Callable]]:
    """The ctypes functions under llvmlite's locked wrappers for the calls
    made without its lock, or None when this llvmlite has no such thing
    (then every module compiles in one piece)."""
    global _raw
    with _raw_lock:
        if _raw is None:
            try:
                _raw = {name: getattr(getattr(_ffi.lib, name), "_cfn")
                        for name in ("LLVMPY_RunNewModulePassManager", "LLVMPY_TargetMachineEmitToMemory")}
            except AttributeError:
                _raw = {}
        return _raw or None


def _split_module(text: str, parts: int, exported: List[str]) -> Optional[List[Tuple[str, List[str]]]]:
    """``text`` as at most ``parts`` module texts, each with the names it
    must keep external (exported, or called from another part); None when
    it is too small to be worth it, or holds something a split could
    change (a global other than a declaration or an internal constant,
    linkage other than external/internal)."""
    header: List[str] = []
    bodies: Dict[str, List[str]] = {}
    internal: Set[str] = set()
    current: Optional[List[str]] = None
    for line in text.splitlines():
        if current is not None:
            current.append(line)
            if line.startswith("}"):
                current = None
            continue
        if line.startswith("define"):
            match = _DEFINE_NAME.match(line)
            if match is None or _OTHER_LINKAGE.match(line):
                return None
            fname = match.group(2).strip('"')
            if fname in bodies or "\\" in fname:    # (an escaped name is not the one LLVM reports)
                return None
            current = bodies[fname] = [line]
            if match.group(1):
                internal.add(fname)
            continue
        if line.startswith("@") and not _SHAREABLE_GLOBAL.match(line):
            return None
        header.append(line)
    if current is not None or sum(map(len, bodies.values())) < _SPLIT_MIN_LINES:
        return None
    uses = {fname: {m.strip('"') for m in _SYMBOL_USE.findall("\n".join(body[1:]))} & bodies.keys() - {fname}
            for fname, body in bodies.items()}
    roots = [fname for fname in bodies if fname not in internal]
    if len(roots) < 2:
        return None

    def with_helpers(root: str) -> Set[str]:
        group, todo = {root}, [root]
        while todo:
            for used in uses[todo.pop()]:
                if used in internal and used not in group:
                    group.add(used)
                    todo.append(used)
        return group

    # LLVM's work per line: a loop is vectorized (a vector body, an epilogue,
    # a remainder) and costs ~5-8x a straight-line line such as the entry
    # point's argument checks (measured on W2's functions one by one)
    weight = {f: len(body) * (_LOOP_LINE_WEIGHT if _has_cycles("\n".join(body)) else 1)
              for f, body in bodies.items()}

    def size(group: Set[str]) -> int:
        return sum(weight[f] for f in group)

    # costliest groups first, each to the part with the least work so far
    bins: List[Tuple[Set[str], List[int]]] = [(set(), [0]) for _ in range(min(parts, len(roots)))]
    for group in sorted((with_helpers(r) for r in roots), key=size, reverse=True):
        members, load = min(bins, key=lambda b: b[1][0])
        members |= group
        load[0] += size(group)
    bins = [b for b in bins if b[0]]
    if len(bins) < 2:
        return None
    wanted = set(exported)
    out = []
    for i, (members, _) in enumerate(bins):
        called_elsewhere = set().union(*(uses[f] for j, (other, _) in enumerate(bins) if j != i for f in other))
        lines = list(header)
        for fname, body in bodies.items():
            if fname in members:
                lines.extend(body)
            elif fname not in internal:
                # defined in another part: declared here (the define line,
                # with its attributes, is a valid declaration)
                lines.append("declare" + body[0][len("define"):].rstrip().removesuffix("{"))
        keep = sorted(f for f in members if f not in internal and (f in wanted or f in called_elsewhere))
        out.append(("\n".join(lines) + "\n", keep))
    return out


def _pipeline_options(level: int, unroll: bool) -> "llvm.PipelineTuningOptions":
    # vectorizing pipelines simplify at SIMPLIFY_LEVEL (see there)
    pto = llvm.create_pipeline_tuning_options(speed_level=min(level, SIMPLIFY_LEVEL) if level >= 2 else level)
    pto.loop_vectorization = level >= 2
    pto.slp_vectorization = level >= 2
    pto.loop_unrolling = unroll
    return pto


def _compile_part(text: str, keep: List[str], opt: int, unroll: bool, name: str,
                  raw: Dict[str, Callable]) -> Tuple[bytes, str, float, float, float]:
    """One part, on the calling thread, in a context of its own: (object
    code, optimized IR, seconds to parse, optimize, emit)."""
    start = time.perf_counter()
    loops = _has_cycles(text)
    tm = host_target_machine(opt if loops else min(opt, _LOOP_FREE_CODEGEN_OPT))
    context = llvm.create_context()
    llmod = None
    try:
        try:
            llmod = llvm.parse_assembly(text, context=context)
            llmod.triple = tm.triple
            llmod.data_layout = str(tm.target_data)
            llmod.verify()
        except RuntimeError as exc:
            raise CompileError(f"module {name}: LLVM rejected the generated IR: {exc}") from exc
        _internalize(llmod, keep, name)
        parsed = time.perf_counter()
        level = opt if loops else min(opt, _LOOP_FREE_OPT)
        if level > 0:
            pb = llvm.create_pass_builder(tm, _pipeline_options(level, unroll))
            mpm = pb.getModulePassManager()
            raw["LLVMPY_RunNewModulePassManager"](mpm, llmod, pb)
            mpm.close()
            pb.close()
        optimized = str(llmod)
        optimized_at = time.perf_counter()
        with _ffi.OutputString() as err:
            buf = raw["LLVMPY_TargetMachineEmitToMemory"](tm, llmod, 1, err)
            if not buf:
                raise CompileError(f"module {name}: LLVM could not generate code: {err}")
        try:
            obj = ctypes.string_at(_ffi.lib.LLVMPY_GetBufferStart(buf), _ffi.lib.LLVMPY_GetBufferSize(buf))
        finally:
            _ffi.lib.LLVMPY_DisposeMemoryBuffer(buf)
        return obj, optimized, parsed - start, optimized_at - parsed, time.perf_counter() - optimized_at
    finally:
        if llmod is not None:
            llmod.close()
        context.close()


def _compile_parts(pieces: List[Tuple[str, List[str]]], opt: int, unroll: bool, name: str,
                   raw: Dict[str, Callable]) -> Tuple[List[bytes], str, Dict[str, float]]:
    """Compile the parts at the same time (the first on this thread): their
    objects, their optimized IR (joined by PART_SEPARATOR) and timings. The
    phase timings are wall-clock: parse+verify until every part was parsed,
    optimize until every part was optimized, codegen the rest."""
    start = time.perf_counter()
    results: List[Optional[Tuple[bytes, str, float, float, float]]] = [None] * len(pieces)
    errors: List[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = _compile_part(pieces[i][0], pieces[i][1], opt, unroll, name, raw)
        except BaseException as exc:   # noqa: BLE001 -- re-raised on the calling thread
            errors.append(exc)

    helpers = [threading.Thread(target=work, args=(i,), name=f"graphc-llvm-{i}", daemon=True)
               for i in range(1, len(pieces))]
    for t in helpers:
        t.start()
    work(0)
    for t in helpers:
        t.join()
    if errors:
        raise errors[0]
    done = [r for r in results if r is not None]
    wall = time.perf_counter() - start
    parse = max(r[2] for r in done)
    optimize = max(r[2] + r[3] for r in done) - parse
    timings = {"llvm: parse+verify": parse, "llvm: optimize": optimize, "llvm: codegen": wall - parse - optimize}
    return [r[0] for r in done], PART_SEPARATOR.join(r[1] for r in done), timings


# --------------------------------------------------------------------------
# Compilation
# --------------------------------------------------------------------------
def compile_module(module: Union[ir.Module, str], *, name: str = "graphc", opt: int = 3,
                   unroll: Optional[bool] = None,
                   exports: Optional[Iterable[str]] = None) -> CompiledModule:
    """Optimize ``module`` (llvmlite.ir module or IR text) at ``opt`` for the
    host CPU (from 2 on: loop and SLP vectorizers on after a simplification
    at SIMPLIFY_LEVEL; the unroller per ``unroll``, default UNROLL_LOOPS)
    and JIT-compile it. Phase timings go to the
    CompiledModule and, during a graph compilation, to its dump (as do the
    IR before and after optimization and the assembly).

    ``exports``: the only functions callers will look up; every other
    function defined with external linkage becomes internal, so LLVM drops
    the ones it inlined everywhere instead of optimizing and compiling a
    second copy. None keeps every function addressable.

    A module without any loop (no cycle in any function's control flow:
    argument checks, copies, tiny unrolled kernels) is optimized at O1: its
    code runs once per call, and this saves a few ms a module.

    A big module (``opt`` >= 2, ``exports`` given) is compiled in parts on
    up to ``compile_threads()`` threads at once and linked by one engine
    (see ``_split_module``); ``CompiledModule.parts`` says into how many.

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

    raw = _raw_functions() if opt >= 2 and exported is not None else None
    threads = compile_threads() if raw is not None else 1
    pieces = _split_module(text, threads, exported) if threads > 1 and exported is not None else None
    if pieces is not None and raw is not None:
        before = time.perf_counter() - start      # the IR text and the split, as in one piece
        objects, optimized, timings = _compile_parts(pieces, opt, do_unroll, name, raw)
        timings["llvm: parse+verify"] += before
        start = time.perf_counter()
        engine = _load_objects(objects)
        timings["llvm: codegen"] += time.perf_counter() - start
        if key is not None and directory is not None:
            start = time.perf_counter()
            _write_entry(directory, key, objects, optimized)
            timings["llvm: cache write"] = time.perf_counter() - start
        compiled = CompiledModule(name, engine, optimized, timings)
        compiled.cache_key = key
        compiled.parts = len(pieces)
        return _finish(compiled, text)

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
        pb = llvm.create_pass_builder(tm, _pipeline_options(level, do_unroll))
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
        _write_entry(directory, key, objects, optimized)
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
