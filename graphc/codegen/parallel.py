"""Multi-core runtime for JIT-compiled code: a persistent thread pool
(GNU OpenMP's libgomp C ABI) and an IR emitter for a parallel-for.

Design (see docs/cpu_runtime.md for measurements):

- The pool is libgomp's: ``GOMP_parallel(fn, data, num_threads, flags)``
  runs ``fn(data)`` on ``num_threads`` threads (the caller is thread 0) and
  returns when all are done.  libgomp keeps its worker threads alive between
  regions, so no thread is created per call.  It is found with
  ``ctypes.util.find_library``, the usual system paths, or the copy bundled
  in scikit-learn's / scipy's wheel ``.libs`` folder.  Without it every
  parallel-for is emitted as a plain serial call (``parallel_runtime()``
  says ``"serial"``).  ``GRAPHC_LIBGOMP`` overrides the search: a path, or
  ``none`` to force the serial runtime.
- The thread count is not baked into code: compiled code loads the external
  global ``graphc_num_threads`` (an ``int32`` owned by this module and
  registered with ``llvmlite.binding.add_symbol``), initialised from
  ``GRAPHC_NUM_THREADS`` (default ``os.cpu_count()``) and changed at run time
  with ``set_num_threads``.  Cached code therefore follows the setting.
- A parallel loop body is an outlined ``void body(ptr ctx, i64 begin,
  i64 end)``.  ``emit_parallel_for`` writes the call site: it picks
  ``min(num_threads, extent // min_chunk)`` threads, runs the body inline
  when that is 1 (small extents, one thread, or no libgomp) and otherwise
  calls ``GOMP_parallel`` with an outlined trampoline that splits
  ``[0, extent)`` into one contiguous range per thread (static schedule)
  or into a few ranges per thread claimed with an atomic counter (dynamic).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import threading
import time
from contextlib import contextmanager
from typing import Iterator, Optional, Union

import llvmlite
import llvmlite.binding as llvm
import llvmlite.ir as ir

# LLVM 22 only parses opaque pointers; without this, llvmlite prints typed
# pointers (``i32*``) for allocas (see LLVMLITE_NOTES.md).
llvmlite.ir_layer_typed_pointers_enabled = False

__all__ = [
    "NUM_THREADS_ENV", "LIBGOMP_ENV", "NUM_THREADS_SYMBOL", "DYNAMIC_CHUNKS_PER_THREAD",
    "parallel_runtime", "libgomp_path", "ensure_runtime",
    "num_threads", "set_num_threads",
    "emit_parallel_for", "emit_thread_id", "emit_num_threads",
    "emit_for_range", "entry_alloca", "body_function_type",
    "jit_compile", "JitModule", "measure_bandwidth",
]

NUM_THREADS_ENV = "GRAPHC_NUM_THREADS"
LIBGOMP_ENV = "GRAPHC_LIBGOMP"
NUM_THREADS_SYMBOL = "graphc_num_threads"

_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_PTR = ir.PointerType()
_VOID = ir.VoidType()
# What GOMP_parallel hands each thread: {ptr ctx, i64 extent, i64 next}
# (next: the dynamic schedule's shared counter of claimed ranges).
_DATA_TYPE = ir.LiteralStructType([_PTR, _I64, _I64])
# Ranges per thread under schedule="dynamic".
DYNAMIC_CHUNKS_PER_THREAD = 8

# The GOMP entry points the emitted IR calls by these (real) names, so an
# exported object can also be linked with ``-lgomp``.
_GOMP_SYMBOLS = ("GOMP_parallel", "omp_get_thread_num", "omp_get_num_threads")

_lock = threading.Lock()
_state: dict = {}
# The run-time thread count read by compiled code (see module docstring).
_num_threads_cell = ctypes.c_int32(1)
# the thread count set by the user (GRAPHC_NUM_THREADS / set_num_threads);
# the cell above may hold less for one call (ThreadChooser)
_configured = [1]


# ---------------------------------------------------------------- discovery
def _candidate_paths() -> list[str]:
    """Places libgomp may be, most standard first."""
    found = ctypes.util.find_library("gomp")
    paths = [found] if found else []
    for pattern in ("/usr/lib/x86_64-linux-gnu/libgomp.so*",
                    "/usr/lib/aarch64-linux-gnu/libgomp.so*",
                    "/usr/lib64/libgomp.so*", "/usr/lib/libgomp.so*",
                    "/usr/local/lib/libgomp.so*"):
        paths.extend(sorted(glob.glob(pattern)))
    paths.extend(_wheel_copies())
    return paths


def _wheel_copies() -> list[str]:
    """libgomp copies bundled in installed wheels (found without importing
    the packages, which would be slow)."""
    import importlib.util
    out = []
    for pkg, libs in (("sklearn", "scikit_learn.libs"), ("scipy", "scipy.libs")):
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            continue
        site = os.path.dirname(list(spec.submodule_search_locations)[0])
        out.extend(sorted(glob.glob(os.path.join(site, libs, "libgomp*.so*"))))
    return out


def _load_gomp() -> tuple[Optional[str], Optional[ctypes.CDLL]]:
    override = os.environ.get(LIBGOMP_ENV, "").strip()
    if override.lower() in ("none", "0", "off"):
        return None, None
    candidates = [override] if override else _candidate_paths()
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
            for name in _GOMP_SYMBOLS:
                getattr(lib, name)
        except (OSError, AttributeError):
            continue
        return path, lib
    return None, None


def _threads_from_env() -> int:
    raw = os.environ.get(NUM_THREADS_ENV, "").strip()
    if not raw:
        # The CPUs this process may run on (os.cpu_count() ignores affinity).
        if hasattr(os, "sched_getaffinity"):
            return max(1, len(os.sched_getaffinity(0)))
        return max(1, os.cpu_count() or 1)
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{NUM_THREADS_ENV}={raw!r} is not an integer") from None
    if value < 1:
        raise ValueError(f"{NUM_THREADS_ENV}={raw!r} must be >= 1")
    return value


_codegen = threading.local()


@contextmanager
def serial_codegen() -> Iterator[None]:
    """Emit code that never calls the thread runtime (parallel-for bodies run
    inline on the calling thread): for exported libraries, which must not
    depend on libgomp's symbols or on graphc's thread-count variable."""
    previous = getattr(_codegen, "serial", False)
    _codegen.serial = True
    try:
        yield
    finally:
        _codegen.serial = previous


def _emit_serial_only() -> bool:
    return getattr(_codegen, "serial", False) or ensure_runtime() == "serial"


def ensure_runtime() -> str:
    """Load libgomp (once) and register every symbol compiled code may
    reference: ``graphc_num_threads`` always, the GOMP entry points when
    libgomp was found.  Idempotent and thread-safe; must run before an
    engine holding parallel code is finalized (the emitters call it).
    Returns ``parallel_runtime()``."""
    with _lock:
        if not _state:
            path, lib = _load_gomp()
            if lib is not None:
                # Keep it loaded for the life of the process (code we JIT
                # holds raw pointers into it), and make the names resolve to
                # this copy even if another libgomp is loaded too.
                llvm.load_library_permanently(path)
                for name in _GOMP_SYMBOLS:
                    addr = ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
                    llvm.add_symbol(name, addr)
                if hasattr(os, "register_at_fork"):
                    os.register_at_fork(after_in_child=_after_fork_in_child)
            _num_threads_cell.value = _threads_from_env()
            _configured[0] = _num_threads_cell.value
            llvm.add_symbol(NUM_THREADS_SYMBOL, ctypes.addressof(_num_threads_cell))
            _state.update(path=path, lib=lib)
    return "gomp" if _state["lib"] is not None else "serial"


def _after_fork_in_child() -> None:
    """libgomp's pool does not survive fork(): a region in the child waits
    forever for the parent's workers (checked).  Compiled code in a forked
    child therefore stays on one thread, which never enters libgomp."""
    _state["forked"] = True
    _num_threads_cell.value = 1


def parallel_runtime() -> str:
    """``"gomp"`` when parallel-for regions run on libgomp's pool,
    ``"serial"`` when libgomp was not found (or ``GRAPHC_LIBGOMP=none``)."""
    return ensure_runtime()


def libgomp_path() -> Optional[str]:
    """The libgomp actually loaded, or None."""
    ensure_runtime()
    return _state["path"]


def num_threads() -> int:
    """Threads a parallel region may use (1 with the serial runtime)."""
    ensure_runtime()
    return _configured_threads()


class ThreadChooser:
    """Chooses, for one compiled program, between the configured thread
    count and a single thread, from the wall time of its own calls.

    On an idle machine parallel regions pay off (2 threads ~1.97x on the
    development machine). When another process holds a core, every region
    waits for a worker the OS has not scheduled, about one scheduler slice
    each: issue 5's W4 (6 parallel kernels) took 28 ms on 2 threads against
    4.2 ms on one while another process was busy. So each program times its
    calls under both settings (one call in ``PROBE_EVERY`` tries the other
    one) and runs with the faster, following the machine as its load
    changes. Used around calls of executables that contain parallel regions."""

    PROBE_EVERY = 16
    SMOOTHING = 0.3

    def __init__(self) -> None:
        self.calls = 0
        self.seconds: dict = {}          # threads -> smoothed wall time of a call

    def begin(self) -> int:
        """Set the thread count for the next call; returns it."""
        configured = _configured_threads()
        if configured <= 1:
            return configured
        self.calls += 1
        timed = self.seconds
        if configured not in timed:
            choice = configured
        elif 1 not in timed:
            choice = 1
        else:
            best = configured if timed[configured] <= timed[1] else 1
            other = 1 if best == configured else configured
            choice = other if self.calls % self.PROBE_EVERY == 0 else best
        _num_threads_cell.value = choice
        return choice

    def end(self, threads: int, seconds: float) -> None:
        """Record a call's wall time and restore the configured count."""
        configured = _configured_threads()
        if configured <= 1:
            return
        if threads not in (1, configured):     # the configuration changed meanwhile
            self.seconds.clear()
        else:
            old = self.seconds.get(threads)
            self.seconds[threads] = seconds if old is None else old + self.SMOOTHING * (seconds - old)
        _num_threads_cell.value = configured


def _configured_threads() -> int:
    if _state.get("lib") is None or _state.get("forked"):
        return 1
    return _configured[0]


def set_num_threads(n: Optional[int] = None) -> int:
    """Set the thread count compiled code uses from now on (no recompile);
    ``None`` re-reads ``GRAPHC_NUM_THREADS``.  Returns the new value, which
    is always 1 in a process forked from one that loaded libgomp."""
    ensure_runtime()
    value = _threads_from_env() if n is None else int(n)
    if value < 1:
        raise ValueError(f"thread count must be >= 1, got {value}")
    if _state.get("forked"):
        value = 1
    _num_threads_cell.value = value
    _configured[0] = value
    return value


# ------------------------------------------------------------ IR utilities
def _declare(module: ir.Module, name: str, fnty: ir.FunctionType) -> ir.Function:
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    return ir.Function(module, fnty, name=name)


def _as_i64(builder: ir.IRBuilder, value: Union[int, ir.Value]) -> ir.Value:
    if isinstance(value, int):
        return ir.Constant(_I64, value)
    width = value.type.width
    if width == 64:
        return value
    return builder.sext(value, _I64) if width < 64 else builder.trunc(value, _I64)


def entry_alloca(builder: ir.IRBuilder, typ: ir.Type, name: str = "") -> ir.Value:
    """An ``alloca`` in the current function's entry block, so a call site
    inside a loop does not grow the stack each iteration.  The result has
    the opaque ``ptr`` type (llvmlite's own ``alloca`` returns a typed
    pointer, on which ``gep(..., source_etype=...)`` computes a wrong result
    type), so use it like any other pointer: ``gep``/``load`` with explicit
    element types.  When ``builder`` is in another block the alloca goes
    first in the entry block (another IRBuilder left positioned inside the
    entry block would not see that insertion, so do not keep one there)."""
    entry_bb = builder.block.function.entry_basic_block
    if builder.block is entry_bb:
        slot = builder.alloca(typ, name=name)
    else:
        entry = ir.IRBuilder(entry_bb)
        if entry_bb.instructions:
            entry.position_before(entry_bb.instructions[0])
        slot = entry.alloca(typ, name=name)
    slot.type = _PTR
    return slot


@contextmanager
def emit_for_range(builder: ir.IRBuilder, stop: Union[int, ir.Value],
                   start: Union[int, ir.Value] = 0,
                   name: str = "i") -> Iterator[ir.Value]:
    """``for (i64 i = start; i < stop; ++i) { <with-body> }``; the builder
    is left after the loop."""
    start = _as_i64(builder, start)
    stop = _as_i64(builder, stop)
    pre = builder.block
    header = builder.append_basic_block(f"{name}.head")
    body = builder.append_basic_block(f"{name}.body")
    done = builder.append_basic_block(f"{name}.done")
    builder.branch(header)
    builder.position_at_end(header)
    idx = builder.phi(_I64, name=name)
    idx.add_incoming(start, pre)
    builder.cbranch(builder.icmp_signed("<", idx, stop), body, done)
    builder.position_at_end(body)
    yield idx
    nxt = builder.add(idx, ir.Constant(_I64, 1), name=f"{name}.next", flags=("nsw",))
    idx.add_incoming(nxt, builder.block)
    builder.branch(header)
    builder.position_at_end(done)


def body_function_type() -> ir.FunctionType:
    """The type a parallel-for body must have: ``void (ptr ctx, i64 begin,
    i64 end)``."""
    return ir.FunctionType(_VOID, [_PTR, _I64, _I64])


def _num_threads_global(module: ir.Module) -> ir.GlobalVariable:
    existing = module.globals.get(NUM_THREADS_SYMBOL)
    if existing is not None:
        return existing
    return ir.GlobalVariable(module, _I32, NUM_THREADS_SYMBOL)


def emit_num_threads(builder: ir.IRBuilder) -> ir.Value:
    """i32: the current thread setting (1 under the serial runtime).  Use
    it to size per-thread scratch (e.g. partial sums)."""
    if _emit_serial_only():
        return ir.Constant(_I32, 1)
    return builder.load(_num_threads_global(builder.module), typ=_I32, name="nthreads")


def emit_thread_id(builder: ir.IRBuilder) -> ir.Value:
    """i32: this thread's number inside a parallel region (0 outside one,
    and always 0 under the serial runtime)."""
    if _emit_serial_only():
        return ir.Constant(_I32, 0)
    fn = _declare(builder.module, "omp_get_thread_num", ir.FunctionType(_I32, []))
    return builder.call(fn, [], name="tid")


def _round_up(b: ir.IRBuilder, v: ir.Value, multiple: int) -> ir.Value:
    if multiple <= 1:
        return v
    m = ir.Constant(_I64, multiple)
    return b.mul(b.sdiv(b.add(v, ir.Constant(_I64, multiple - 1)), m), m)


def _ceil_div(b: ir.IRBuilder, a: ir.Value, d: ir.Value) -> ir.Value:
    return b.sdiv(b.sub(b.add(a, d), ir.Constant(_I64, 1)), d)


def _trampoline(module: ir.Module, body_fn: ir.Function, grain: int, schedule: str,
                min_chunk: int) -> ir.Function:
    """``void tramp(ptr data)``, data = {ptr ctx, i64 extent, i64 next}.

    static: thread t of T runs body on the t-th contiguous range of
    ceil(extent / T) iterations (rounded up to ``grain``).
    dynamic: ranges of about extent / (T * DYNAMIC_CHUNKS_PER_THREAD)
    iterations (at least ``min_chunk``, a multiple of ``grain``) are claimed
    in order with an atomic counter, so a thread whose core is busy with
    something else does less of the work.
    Both use the thread count libgomp actually granted, so they are
    correct when it grants fewer threads than asked (nested regions)."""
    name = f"{body_fn.name}.gomp_{schedule}.g{grain}.c{min_chunk}"
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    fn = ir.Function(module, ir.FunctionType(_VOID, [_PTR]), name=name)
    fn.linkage = "internal"
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    data = fn.args[0]

    def field(i):
        return b.gep(data, [ir.Constant(_I32, 0), ir.Constant(_I32, i)],
                     inbounds=True, source_etype=_DATA_TYPE)
    ctx = b.load(field(0), typ=_PTR, name="ctx")
    extent = b.load(field(1), typ=_I64, name="extent")
    tid = b.sext(b.call(_declare(module, "omp_get_thread_num",
                                 ir.FunctionType(_I32, [])), []), _I64)
    nth = b.sext(b.call(_declare(module, "omp_get_num_threads",
                                 ir.FunctionType(_I32, [])), []), _I64)
    out = fn.append_basic_block("out")
    if schedule == "static":
        chunk = _round_up(b, _ceil_div(b, extent, nth), grain)
        begin = b.mul(tid, chunk)
        begin = b.select(b.icmp_signed("<", begin, extent), begin, extent)
        end = b.add(begin, chunk)
        end = b.select(b.icmp_signed("<", end, extent), end, extent, name="end")
        run = fn.append_basic_block("run")
        b.cbranch(b.icmp_signed("<", begin, end), run, out)
        b.position_at_end(run)
        b.call(body_fn, [ctx, begin, end])
        b.branch(out)
    else:
        pieces = b.mul(nth, ir.Constant(_I64, DYNAMIC_CHUNKS_PER_THREAD))
        chunk = _ceil_div(b, extent, pieces)
        floor = ir.Constant(_I64, min_chunk)
        chunk = _round_up(b, b.select(b.icmp_signed("<", chunk, floor), floor, chunk), grain)
        claim = fn.append_basic_block("claim")
        run = fn.append_basic_block("run")
        b.branch(claim)
        b.position_at_end(claim)
        piece = b.atomic_rmw("add", field(2), ir.Constant(_I64, 1), "monotonic")
        begin = b.mul(piece, chunk)
        b.cbranch(b.icmp_signed("<", begin, extent), run, out)
        b.position_at_end(run)
        end = b.add(begin, chunk)
        end = b.select(b.icmp_signed("<", end, extent), end, extent, name="end")
        b.call(body_fn, [ctx, begin, end])
        b.branch(claim)
    b.position_at_end(out)
    b.ret_void()
    return fn


def emit_parallel_for(builder: ir.IRBuilder, body_fn: ir.Function,
                      ctx_ptr: ir.Value, extent: Union[int, ir.Value], *,
                      min_chunk: int = 1, grain: int = 1,
                      max_threads: Union[None, int, ir.Value] = None,
                      schedule: str = "static") -> None:
    """Run ``body_fn(ctx_ptr, begin, end)`` over ``[0, extent)`` split into
    contiguous ranges run by the pool's threads; returns when all are done.

    - ``body_fn``: ``void (ptr, i64, i64)`` (see ``body_function_type``), in
      the builder's module; it must only write disjoint data per range.
    - ``extent``: i64 (or any int IR value / Python int); <= 0 runs nothing.
    - ``min_chunk``: the fewest iterations worth giving one thread; the
      region uses ``min(threads, extent // min_chunk)`` threads and runs the
      body inline (no runtime call) when that is <= 1.  Choose it from the
      work per iteration and the measured region overhead
      (docs/cpu_runtime.md): a region pays off above ~20 us of serial work.
    - ``grain``: range boundaries are multiples of it (e.g. 16 floats = one
      cache line, so two threads never write the same line).
    - ``max_threads``: cap below the run-time setting (None: no cap).
    - ``schedule``: ``"static"`` -- one range per thread, thread t gets the
      t-th (so thread-indexed scratch is deterministic for a given thread
      count); ``"dynamic"`` -- about DYNAMIC_CHUNKS_PER_THREAD ranges per
      thread, claimed in order by whichever thread is free (robust when a
      core is shared with other work; use range-indexed scratch).

    Under the serial runtime this is exactly ``body_fn(ctx, 0, extent)``.
    Calls from inside another region run on one thread (libgomp does not
    nest by default) -- still correct.
    """
    if min_chunk < 1 or grain < 1:
        raise ValueError("min_chunk and grain must be >= 1")
    if schedule not in ("static", "dynamic"):
        raise ValueError(f"schedule must be 'static' or 'dynamic', got {schedule!r}")
    module = builder.module
    extent = _as_i64(builder, extent)
    if _emit_serial_only():
        _emit_serial(builder, body_fn, ctx_ptr, extent)
        return
    nth = builder.sext(emit_num_threads(builder), _I64)
    if max_threads is not None:
        cap = _as_i64(builder, max_threads)
        nth = builder.select(builder.icmp_signed("<", cap, nth), cap, nth)
    by_work = builder.sdiv(extent, ir.Constant(_I64, min_chunk)) if min_chunk > 1 else extent
    use = builder.select(builder.icmp_signed("<", by_work, nth), by_work, nth, name="use_threads")
    par_bb = builder.append_basic_block("pfor.parallel")
    ser_bb = builder.append_basic_block("pfor.serial")
    done_bb = builder.append_basic_block("pfor.done")
    builder.cbranch(builder.icmp_signed(">", use, ir.Constant(_I64, 1)), par_bb, ser_bb)

    builder.position_at_end(ser_bb)
    _emit_serial(builder, body_fn, ctx_ptr, extent)
    builder.branch(done_bb)

    builder.position_at_end(par_bb)
    data = entry_alloca(builder, _DATA_TYPE, name="pfor.data")
    zero = ir.Constant(_I32, 0)
    for i, v in enumerate((ctx_ptr, extent, ir.Constant(_I64, 0))):
        builder.store(v, builder.gep(data, [zero, ir.Constant(_I32, i)], inbounds=True,
                                     source_etype=_DATA_TYPE))
    gomp = _declare(module, "GOMP_parallel",
                    ir.FunctionType(_VOID, [_PTR, _PTR, _I32, _I32]))
    tramp = _trampoline(module, body_fn, grain, schedule, min_chunk)
    builder.call(gomp, [tramp, data, builder.trunc(use, _I32), zero])
    builder.branch(done_bb)
    builder.position_at_end(done_bb)


def _emit_serial(builder: ir.IRBuilder, body_fn: ir.Function, ctx: ir.Value,
                 extent: ir.Value) -> None:
    run_bb = builder.append_basic_block("pfor.inline")
    done_bb = builder.append_basic_block("pfor.inline_done")
    builder.cbranch(builder.icmp_signed(">", extent, ir.Constant(_I64, 0)), run_bb, done_bb)
    builder.position_at_end(run_bb)
    builder.call(body_fn, [ctx, ir.Constant(_I64, 0), extent])
    builder.branch(done_bb)
    builder.position_at_end(done_bb)


# ------------------------------------------------------------ minimal JIT
_llvm_ready = False


def _init_llvm() -> None:
    global _llvm_ready
    if not _llvm_ready:
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        _llvm_ready = True


class JitModule:
    """A finalized MCJIT engine (kept alive with its code) and the optimized
    IR text (for tests that look for vector types)."""

    def __init__(self, engine: "llvm.ExecutionEngine", optimized_ir: str) -> None:
        self.engine = engine
        self.optimized_ir = optimized_ir

    def address(self, name: str) -> int:
        addr = self.engine.get_function_address(name)
        if not addr:
            raise KeyError(f"no function {name!r} in the JIT module")
        return addr

    def ctypes_function(self, name: str, restype, *argtypes):
        return ctypes.CFUNCTYPE(restype, *argtypes)(self.address(name))


def jit_compile(module: Union[ir.Module, str], opt: int = 3) -> JitModule:
    """Optimize (new pass builder, vectorizers on) and JIT-compile a module
    for the host CPU.  A small standalone JIT for this package's own
    measurements and tests; the CPU backend has its own."""
    _init_llvm()
    ensure_runtime()
    from graphc.codegen import blas  # registers the BLAS symbols too
    blas.register_blas_symbols()
    target = llvm.Target.from_default_triple()
    tm = target.create_target_machine(cpu=llvm.get_host_cpu_name(),
                                      features=llvm.get_host_cpu_features().flatten(),
                                      opt=3, jit=True)
    llmod = llvm.parse_assembly(str(module))
    llmod.triple = target.triple
    llmod.data_layout = str(tm.target_data)
    llmod.verify()
    pto = llvm.create_pipeline_tuning_options(speed_level=opt)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(llmod, pb)
    text = str(llmod)
    engine = llvm.create_mcjit_compiler(llmod, tm)
    engine.finalize_object()
    return JitModule(engine, text)


# ------------------------------------------------------------ bandwidth
def _triad_module() -> ir.Module:
    """``triad(a, b, c, s, n)``: a[i] = b[i] + s * c[i] (f64, parallel),
    and ``copy(a, b, n)``: a[i] = b[i] (parallel); each entry point has a
    ctx {a, b, c, s} and an outlined body."""
    f64 = ir.DoubleType()
    mod = ir.Module(name="graphc_bandwidth")
    ctx_t = ir.LiteralStructType([_PTR, _PTR, _PTR, f64])
    for kind in ("triad", "copy"):
        body = ir.Function(mod, body_function_type(), name=f"{kind}.body")
        body.linkage = "internal"
        b = ir.IRBuilder(body.append_basic_block("entry"))
        ctx, begin, end = body.args
        z = ir.Constant(_I32, 0)
        fields = [b.load(b.gep(ctx, [z, ir.Constant(_I32, f)], inbounds=True,
                                source_etype=ctx_t), typ=ctx_t.elements[f]) for f in range(4)]
        a, bb_, c, s = fields
        with emit_for_range(b, end, begin) as i:
            x = b.load(b.gep(bb_, [i], inbounds=True, source_etype=f64), typ=f64)
            if kind == "triad":
                y = b.load(b.gep(c, [i], inbounds=True, source_etype=f64), typ=f64)
                x = b.fadd(x, b.fmul(s, y))
            b.store(x, b.gep(a, [i], inbounds=True, source_etype=f64))
        b.ret_void()
        fn = ir.Function(mod, ir.FunctionType(_VOID, [_PTR, _PTR, _PTR, f64, _I64]), name=kind)
        for arg in fn.args[:3]:
            arg.add_attribute("noalias")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        ctx = entry_alloca(b, ctx_t)
        for f in range(4):
            b.store(fn.args[f], b.gep(ctx, [z, ir.Constant(_I32, f)], inbounds=True,
                                      source_etype=ctx_t))
        emit_parallel_for(b, body, ctx, fn.args[4], min_chunk=1 << 16, grain=64)
        b.ret_void()
    return mod


_bandwidth_cache: dict = {}


def measure_bandwidth(n_bytes: int = 64 << 20, repeats: int = 7,
                      kernel: str = "triad", refresh: bool = False) -> float:
    """Sustained memory bandwidth in bytes/s: the best of ``repeats`` runs of
    a JIT-compiled, all-threads STREAM ``triad`` (a = b + s*c) or ``copy``
    over f64 arrays of ``n_bytes`` each (default 64 MiB, twice the L3 of the
    dev machine).  Bytes counted STREAM-style: 3 arrays (triad) or 2 (copy)
    per pass, write-allocate traffic not counted.  Cached per arguments
    and thread setting."""
    import numpy as np
    key = (n_bytes, repeats, kernel, num_threads())
    if key in _bandwidth_cache and not refresh:
        return _bandwidth_cache[key]
    if "jit" not in _bandwidth_cache:
        _bandwidth_cache["jit"] = jit_compile(_triad_module())
    jit = _bandwidth_cache["jit"]
    if kernel not in ("triad", "copy"):
        raise ValueError(f"kernel must be 'triad' or 'copy', got {kernel!r}")
    fn = jit.ctypes_function(kernel, None, ctypes.c_void_p, ctypes.c_void_p,
                             ctypes.c_void_p, ctypes.c_double, ctypes.c_int64)
    n = max(1, n_bytes // 8)
    a = np.empty(n)
    b = np.ones(n)
    c = np.full(n, 2.0)
    a[:] = 0.0  # touch pages before timing
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(a.ctypes.data, b.ctypes.data, c.ctypes.data, 3.0, n)
        best = min(best, time.perf_counter() - t0)
    expected = 7.0 if kernel == "triad" else 1.0
    if a[0] != expected or a[-1] != expected:
        raise RuntimeError("bandwidth kernel produced wrong values")
    arrays = 3 if kernel == "triad" else 2
    result = arrays * 8 * n / best
    _bandwidth_cache[key] = result
    return result
