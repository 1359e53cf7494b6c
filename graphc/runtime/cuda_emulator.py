"""A CUDA driver emulated on the host CPU, for testing the ptx backend where
there is no GPU (CI, development machines).

It stands in for ``libcuda.so`` underneath :mod:`graphc.runtime.cuda`: the
runtime loads :class:`EmulatedLibrary` instead of the library (C function
pointers it calls through libcuda's own ctypes signatures), so its driver
wrapper, Context, Module, Function and buffer classes run unchanged and make
the same driver calls (argument marshalling for ``cuLaunchKernel``
included), which this module answers. Enable it with
``GRAPHC_CUDA_EMULATOR=1`` or :func:`graphc.runtime.cuda.use_emulator`.

What runs. The emulator cannot execute PTX. ``cuModuleLoadDataEx`` looks the
PTX text up among the modules :func:`graphc.codegen.ptx.compile_ptx` made in
this process and rebuilds the same entries for the host
(:func:`graphc.codegen.ptx.build_for_host`): the same loop IR through the
same emitter and the same launch plans, with thread indices read from a
per-thread state, barriers as ``pthread_barrier_wait`` and shared memory as
a per-block host buffer. So the backend's launch plans, scratch buffers,
grid/bounds arithmetic, tiled and block-level kernels (barriers included)
and device-resident variables are exercised for real; what is not is the
NVPTX instruction selection (``ptxas`` checks that offline) and the real
driver's JIT.

How a launch runs: an entry without barriers runs every thread of the grid
one after the other (in native code). An entry with barriers runs the
threads of a block as OS threads meeting at a real barrier, one block after
the other.

Memory: device buffers are host allocations with guard bytes on both sides.
Copies and launch arguments are checked to lie inside live allocations,
and after every launch the guards are checked, so a kernel writing out of
bounds fails the launch with ``CUDA_ERROR_ILLEGAL_ADDRESS`` instead of
corrupting the process silently (reads out of bounds are not caught).
Before a launch, every argument must cover the bytes the launch plan says
the kernel touches, so a short buffer is refused before anything runs.
"""
from __future__ import annotations

import bisect
import ctypes
import os
import threading
from typing import Any, Dict, List, Tuple

from . import cuda_emulator_fibers

import numpy as np

__all__ = ["EmulatedDriver", "DEVICE_NAME"]

DEVICE_NAME = "graphc CUDA emulator (host CPU)"
COMPUTE_CAPABILITY = (8, 0)
MAX_THREADS_PER_BLOCK = 1024
MAX_SHARED_BYTES = 48 << 10
TOTAL_MEMORY = 8 << 30
GUARD = 64
_GUARD_BYTE = 0xA5

# CUresult codes the emulator returns (the driver's values)
CUDA_SUCCESS = 0
CUDA_ERROR_INVALID_VALUE = 1
CUDA_ERROR_OUT_OF_MEMORY = 2
CUDA_ERROR_INVALID_IMAGE = 200
CUDA_ERROR_INVALID_HANDLE = 400
CUDA_ERROR_NOT_FOUND = 500
CUDA_ERROR_ILLEGAL_ADDRESS = 700
CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES = 701
CUDA_ERROR_INVALID_PTX = 218
CUDA_ERROR_UNKNOWN = 999
_NAMES = {CUDA_ERROR_INVALID_VALUE: "CUDA_ERROR_INVALID_VALUE", CUDA_ERROR_OUT_OF_MEMORY: "CUDA_ERROR_OUT_OF_MEMORY",
          CUDA_ERROR_INVALID_IMAGE: "CUDA_ERROR_INVALID_IMAGE", CUDA_ERROR_INVALID_HANDLE: "CUDA_ERROR_INVALID_HANDLE",
          CUDA_ERROR_NOT_FOUND: "CUDA_ERROR_NOT_FOUND", CUDA_ERROR_ILLEGAL_ADDRESS: "CUDA_ERROR_ILLEGAL_ADDRESS",
          CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES: "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES",
          CUDA_ERROR_INVALID_PTX: "CUDA_ERROR_INVALID_PTX", CUDA_ERROR_UNKNOWN: "CUDA_ERROR_UNKNOWN"}

_ENTRY = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)


class _Failure(Exception):
    def __init__(self, code: int, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def _store(address: int, ctype: Any, value: int) -> None:
    """``*(ctype *)address = value`` (an output argument of a driver call)."""
    if not address:
        raise _Failure(CUDA_ERROR_INVALID_VALUE, "a NULL output pointer")
    ctypes.cast(address, ctypes.POINTER(ctype))[0] = value


def _address(value: Any) -> int:
    return int(value or 0)      # a NULL pointer arrives as None


class EmulatedLibrary:
    """Stands in for the ``ctypes.CDLL`` of libcuda: for every entry point
    the runtime uses, a C function pointer (a ctypes callback taking the C
    arguments as plain integers: pointers as addresses) into the emulator.
    :class:`graphc.runtime.cuda._Driver` sets the real argument types on
    them and calls them like the library's own functions."""

    def __init__(self, emulator: "EmulatedDriver") -> None:
        from .cuda import _SIGNATURES
        self.emulator = emulator
        self._callbacks = []
        for name, argtypes in _SIGNATURES.items():
            raw = [ctypes.c_void_p if _is_pointer(t) else t for t in argtypes]
            prototype = ctypes.CFUNCTYPE(ctypes.c_int, *raw)
            callback = prototype(lambda *args, _name=name: emulator.dispatch(_name, *args))
            self._callbacks.append(callback)
            # a separate function-pointer object, so the runtime's argtypes do not touch the callback's
            setattr(self, name, prototype(ctypes.cast(callback, ctypes.c_void_p).value))

    @property
    def calls(self) -> Dict[str, int]:
        return self.emulator.calls


def _is_pointer(t: Any) -> bool:
    return t in (ctypes.c_void_p, ctypes.c_char_p) or (isinstance(t, type) and issubclass(t, ctypes._Pointer))


class _Allocation:
    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self.memory = np.empty(nbytes + 2 * GUARD, np.uint8)
        self.memory[:GUARD] = _GUARD_BYTE
        self.memory[GUARD + nbytes:] = _GUARD_BYTE
        self.ptr = self.memory.ctypes.data + GUARD

    def guards_intact(self) -> bool:
        return bool((self.memory[:GUARD] == _GUARD_BYTE).all() and
                    (self.memory[GUARD + self.nbytes:] == _GUARD_BYTE).all())


class _Barrier:
    """A pthread barrier for ``count`` threads (waited on from native code)."""

    def __init__(self, libc: ctypes.CDLL, count: int) -> None:
        self.libc = libc
        self.storage = ctypes.create_string_buffer(128)      # >= sizeof(pthread_barrier_t) everywhere
        if libc.pthread_barrier_init(self.storage, None, ctypes.c_uint(count)) != 0:
            raise _Failure(CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES, f"pthread_barrier_init({count}) failed")

    @property
    def ptr(self) -> int:
        return ctypes.addressof(self.storage)

    def wait(self) -> None:
        self.libc.pthread_barrier_wait(self.storage)

    def close(self) -> None:
        self.libc.pthread_barrier_destroy(self.storage)


class _Module:
    def __init__(self, build: Any) -> None:
        self.build = build
        self.functions: Dict[str, int] = {}


class _Function:
    def __init__(self, module: _Module, name: str) -> None:
        compiled = module.build.compiled
        self.module = module
        self.name = name
        self.nparams = module.build.nparams[name]
        self.barriers = name in module.build.barriers
        self.static_shared = module.build.shared_bytes[name]
        self.argument_bytes = module.build.argument_bytes(name)
        self.call_address = compiled.address(f"{name}.call")
        self.call = _ENTRY(self.call_address)
        self.grid = _ENTRY(compiled.address(f"{name}.grid"))


class EmulatedDriver:
    """The driver, answered on the host. :meth:`library` gives the object
    :mod:`graphc.runtime.cuda` loads in place of ``libcuda``: one C-callable
    function per driver entry point, called through the same ctypes
    signatures as the real ones (so the runtime's argument conversions run
    for real), each returning a ``CUresult``."""

    path = DEVICE_NAME

    def __init__(self) -> None:
        from ..codegen import jit
        from ..codegen.ptx.targets import EMU_BARRIER_SYMBOL
        import llvmlite.binding as llvm
        self.libc = ctypes.CDLL(None)
        for fn in ("pthread_barrier_init", "pthread_barrier_wait", "pthread_barrier_destroy"):
            getattr(self.libc, fn).restype = ctypes.c_int
        self.libc.pthread_barrier_init.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint]
        self.libc.pthread_barrier_wait.argtypes = [ctypes.c_void_p]
        self.libc.pthread_barrier_destroy.argtypes = [ctypes.c_void_p]
        jit.initialize()
        # barriers: fibers where ucontext is known, else OS threads at a pthread barrier
        self.fibers = None
        if cuda_emulator_fibers.supported() and os.environ.get("GRAPHC_CUDA_EMULATOR_THREADS", "") in ("", "0"):
            self.fibers = cuda_emulator_fibers.Fibers()
            llvm.add_symbol(EMU_BARRIER_SYMBOL, self.fibers.barrier_address)
        else:
            llvm.add_symbol(EMU_BARRIER_SYMBOL, ctypes.cast(self.libc.pthread_barrier_wait, ctypes.c_void_p).value)
        self._lock = threading.RLock()
        self._allocations: Dict[int, _Allocation] = {}
        self._starts: List[int] = []
        self._handles: Dict[int, Any] = {}
        self._next_handle = 0x1000
        self.launches = 0
        # driver calls made, by name (tests count copies with it)
        self.calls: Dict[str, int] = {}
        # what cuGetErrorString says about the last failure, per thread
        self._detail = threading.local()
        self._strings: Dict[bytes, Any] = {}

    def library(self) -> "EmulatedLibrary":
        return EmulatedLibrary(self)

    def dispatch(self, name: str, *args: Any) -> int:
        """Run the handler of ``name`` on the raw C arguments; its CUresult."""
        self.calls[name] = self.calls.get(name, 0) + 1
        handler = getattr(self, "_" + name)
        try:
            if name == "cuLaunchKernel":
                # not under the lock while kernels run: a garbage collection on a
                # worker thread may free a module or buffer (their __del__ calls the driver)
                handler(*args)
            else:
                with self._lock:
                    handler(*args)
        except _Failure as exc:
            self._detail.text = f"{exc.detail} (CUDA emulator)"
            return exc.code
        except Exception as exc:    # a bug here must not pass for success (ctypes would return 0)
            self._detail.text = f"CUDA emulator internal error in {name}: {exc!r}"
            return CUDA_ERROR_UNKNOWN
        return CUDA_SUCCESS

    def _static(self, text: str) -> int:
        """The address of a NUL-terminated copy of ``text`` that stays alive."""
        raw = text.encode(errors="replace")
        buf = self._strings.get(raw)
        if buf is None:
            if len(self._strings) > 1024:
                self._strings.clear()
            buf = self._strings[raw] = ctypes.create_string_buffer(raw)
        return ctypes.addressof(buf)

    # ---- errors ------------------------------------------------------------------------
    def _cuGetErrorName(self, code: int, out: int) -> None:
        _store(out, ctypes.c_void_p, self._static(_NAMES.get(code, f"CUresult {code}")))

    def _cuGetErrorString(self, code: int, out: int) -> None:
        text = getattr(self._detail, "text", None) or _NAMES.get(code, f"CUresult {code}")
        _store(out, ctypes.c_void_p, self._static(text))

    # ---- device and context ------------------------------------------------------------
    def _cuInit(self, flags: int) -> None:
        pass

    def _cuDriverGetVersion(self, out: int) -> None:
        _store(out, ctypes.c_int, 12000)

    def _cuDeviceGetCount(self, out: int) -> None:
        _store(out, ctypes.c_int, 1)

    def _cuDeviceGet(self, out: int, ordinal: int) -> None:
        if ordinal != 0:
            raise _Failure(CUDA_ERROR_INVALID_VALUE, f"no device {ordinal}")
        _store(out, ctypes.c_int, 0)

    def _cuDeviceGetName(self, buffer: int, size: int, device: int) -> None:
        name = DEVICE_NAME.encode()[:max(size - 1, 0)] + b"\0"
        ctypes.memmove(buffer, name, min(size, len(name)))

    def _cuDeviceGetAttribute(self, out: int, attr: int, device: int) -> None:
        from . import cuda
        values = {cuda.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: COMPUTE_CAPABILITY[0],
                  cuda.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: COMPUTE_CAPABILITY[1],
                  cuda.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: os.cpu_count() or 1,
                  cuda.CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: MAX_THREADS_PER_BLOCK}
        if attr not in values:
            raise _Failure(CUDA_ERROR_INVALID_VALUE, f"attribute {attr} is not emulated")
        _store(out, ctypes.c_int, values[attr])

    def _cuDeviceTotalMem_v2(self, out: int, device: int) -> None:
        _store(out, ctypes.c_size_t, TOTAL_MEMORY)

    def _cuDevicePrimaryCtxRetain(self, out: int, device: int) -> None:
        _store(out, ctypes.c_void_p, 0xC0DE)

    def _cuDevicePrimaryCtxRelease_v2(self, device: int) -> None:
        pass

    def _cuCtxSetCurrent(self, handle: Any) -> None:
        pass

    def _cuCtxSynchronize(self) -> None:
        pass        # launches and copies complete before their call returns

    # ---- modules -----------------------------------------------------------------------
    def _new_handle(self, obj: Any) -> int:
        self._next_handle += 16
        self._handles[self._next_handle] = obj
        return self._next_handle

    def _handle(self, value: Any, kind: type) -> Any:
        obj = self._handles.get(_address(value))
        if not isinstance(obj, kind):
            raise _Failure(CUDA_ERROR_INVALID_HANDLE, f"{_address(value):#x} is not a {kind.__name__[1:].lower()}")
        return obj

    def _cuModuleLoadDataEx(self, out: int, image: int, noptions: int, options: int, values: int) -> None:
        from ..codegen.ptx import build_for_host
        from ..errors import CompileError
        if not image:
            raise _Failure(CUDA_ERROR_INVALID_VALUE, "no image")
        text = ctypes.string_at(image).decode("ascii", errors="replace")
        try:
            build = build_for_host(text)
        except CompileError as exc:
            raise _Failure(CUDA_ERROR_INVALID_PTX, str(exc)) from None
        _store(out, ctypes.c_void_p, self._new_handle(_Module(build)))

    def _cuModuleUnload(self, handle: Any) -> None:
        self._handle(handle, _Module)
        del self._handles[_address(handle)]

    def _cuModuleGetFunction(self, out: int, module: int, name: int) -> None:
        mod = self._handle(module, _Module)
        entry = ctypes.string_at(name).decode(errors="replace")
        if entry not in mod.build.nparams:
            raise _Failure(CUDA_ERROR_NOT_FOUND, f"the module has no entry {entry!r}")
        _store(out, ctypes.c_void_p, self._new_handle(_Function(mod, entry)))

    # ---- memory ------------------------------------------------------------------------
    def _cuMemAlloc_v2(self, out: int, nbytes: int) -> None:
        if nbytes <= 0:
            raise _Failure(CUDA_ERROR_INVALID_VALUE, "cuMemAlloc of 0 bytes")
        try:
            a = _Allocation(int(nbytes))
        except MemoryError:
            raise _Failure(CUDA_ERROR_OUT_OF_MEMORY, f"{nbytes} bytes") from None
        self._allocations[a.ptr] = a
        bisect.insort(self._starts, a.ptr)
        _store(out, ctypes.c_uint64, a.ptr)

    def _cuMemFree_v2(self, ptr: int) -> None:
        a = self._allocations.pop(_address(ptr), None)
        if a is None:
            raise _Failure(CUDA_ERROR_INVALID_VALUE, f"{_address(ptr):#x} is not an allocation")
        self._starts.remove(a.ptr)
        if not a.guards_intact():
            raise _Failure(CUDA_ERROR_ILLEGAL_ADDRESS, f"memory around the buffer at {a.ptr:#x} was overwritten")

    def _owner(self, ptr: int, nbytes: int, what: str) -> _Allocation:
        i = bisect.bisect_right(self._starts, ptr) - 1
        if i >= 0:
            a = self._allocations[self._starts[i]]
            if a.ptr <= ptr and ptr + nbytes <= a.ptr + a.nbytes:
                return a
        raise _Failure(CUDA_ERROR_INVALID_VALUE, f"{what}: {nbytes} bytes at {ptr:#x} are not inside one device "
                                                 "allocation")

    def _cuMemcpyHtoD_v2(self, dst: int, src: Any, nbytes: int) -> None:
        self._owner(_address(dst), nbytes, "cuMemcpyHtoD destination")
        ctypes.memmove(_address(dst), _address(src), nbytes)

    def _cuMemcpyDtoH_v2(self, dst: Any, src: int, nbytes: int) -> None:
        self._owner(_address(src), nbytes, "cuMemcpyDtoH source")
        ctypes.memmove(_address(dst), _address(src), nbytes)

    def _cuMemcpyDtoD_v2(self, dst: int, src: int, nbytes: int) -> None:
        self._owner(_address(dst), nbytes, "cuMemcpyDtoD destination")
        self._owner(_address(src), nbytes, "cuMemcpyDtoD source")
        ctypes.memmove(_address(dst), _address(src), nbytes)

    def _cuMemsetD8_v2(self, dst: int, value: int, nbytes: int) -> None:
        self._owner(_address(dst), nbytes, "cuMemsetD8 destination")
        ctypes.memset(_address(dst), int(value), nbytes)

    # ---- launches ----------------------------------------------------------------------
    def _cuLaunchKernel(self, function: int, gx: int, gy: int, gz: int, bx: int, by: int, bz: int,
                        shared_bytes: int, stream: int, params: int, extra: int) -> None:
        with self._lock:
            fn = self._handle(function, _Function)
            argv = self._check_launch(fn, gx, gy, gz, bx, by, bz, shared_bytes, params)
        grid, block = (int(gx), int(gy), int(gz)), (int(bx), int(by), int(bz))
        shared_memory = np.zeros(max(fn.static_shared + int(shared_bytes), 16), np.uint8)
        if not fn.barriers:
            state = self._state(block, grid, shared_memory.ctypes.data, 0)
            fn.grid(ctypes.addressof(state), ctypes.addressof(argv))
        else:
            self._run_blocks(fn, grid, block, shared_memory, argv)
        with self._lock:
            bad = [a.ptr for a in self._allocations.values() if not a.guards_intact()]
        if bad:
            raise _Failure(CUDA_ERROR_ILLEGAL_ADDRESS, f"{fn.name} wrote outside the device buffer(s) at "
                                                       + ", ".join(f"{p:#x}" for p in bad))

    def _check_launch(self, fn: _Function, gx: int, gy: int, gz: int, bx: int, by: int, bz: int,
                      shared_bytes: int, params: Any) -> Any:
        """The launch's arguments (u64 array) once its configuration and
        arguments are valid."""
        grid, block = (int(gx), int(gy), int(gz)), (int(bx), int(by), int(bz))
        if min(grid) < 1 or min(block) < 1 or grid[0] >= 2 ** 31 or max(grid[1:]) > 65535 \
                or block[2] > 64 or max(block[:2]) > 1024:
            raise _Failure(CUDA_ERROR_INVALID_VALUE, f"{fn.name}: grid {grid} / block {block} out of range")
        threads = block[0] * block[1] * block[2]
        if threads > MAX_THREADS_PER_BLOCK:
            raise _Failure(CUDA_ERROR_INVALID_VALUE, f"{fn.name}: {threads} threads per block "
                                                     f"(at most {MAX_THREADS_PER_BLOCK})")
        shared = fn.static_shared + int(shared_bytes)
        if shared > MAX_SHARED_BYTES:
            raise _Failure(CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES, f"{fn.name}: {shared} bytes of shared memory")
        # the kernel's parameters: params[i] points at the i-th u64 argument
        argv = (ctypes.c_uint64 * max(fn.nparams, 1))()
        if fn.nparams and not params:
            raise _Failure(CUDA_ERROR_INVALID_VALUE, f"{fn.name}: no kernel parameters given")
        slots = ctypes.cast(params, ctypes.POINTER(ctypes.c_void_p))
        for i in range(fn.nparams):
            slot = slots[i]
            if not slot:
                raise _Failure(CUDA_ERROR_INVALID_VALUE, f"{fn.name}: parameter {i} is missing")
            argv[i] = ctypes.cast(slot, ctypes.POINTER(ctypes.c_uint64))[0]
            # the whole extent the kernel touches must be allocated: a kernel
            # given a short buffer would otherwise write over the host's heap
            self._owner(int(argv[i]), max(fn.argument_bytes[i], 1), f"{fn.name} parameter {i}")
        self.launches += 1
        return argv

    @staticmethod
    def _state(block: Tuple[int, int, int], grid: Tuple[int, int, int], shared: int, barrier: int) -> Any:
        from ..codegen.ptx.targets import EMU_BARRIER_OFFSET, EMU_SHARED_OFFSET, EMU_SREG_OFFSETS, EMU_STATE_BYTES
        state = ctypes.create_string_buffer(EMU_STATE_BYTES)
        i32 = np.frombuffer(state, np.int32, count=12)
        i32[EMU_SREG_OFFSETS["ntid"] // 4:EMU_SREG_OFFSETS["ntid"] // 4 + 3] = block
        i32[EMU_SREG_OFFSETS["nctaid"] // 4:EMU_SREG_OFFSETS["nctaid"] // 4 + 3] = grid
        ptrs = np.frombuffer(state, np.uint64, count=2, offset=EMU_SHARED_OFFSET)
        ptrs[0] = shared
        ptrs[(EMU_BARRIER_OFFSET - EMU_SHARED_OFFSET) // 8] = barrier
        return state

    def _run_blocks(self, fn: _Function, grid: Tuple[int, int, int], block: Tuple[int, int, int],
                    shared_memory: np.ndarray, argv: Any) -> None:
        if self.fibers is not None:
            self._run_fibers(fn, grid, block, shared_memory, argv)
        else:
            self._run_os_threads(fn, grid, block, shared_memory, argv)

    def _thread_states(self, grid: Tuple[int, int, int], block: Tuple[int, int, int], shared: int,
                       barrier: int) -> List[Any]:
        from ..codegen.ptx.targets import EMU_SREG_OFFSETS
        tid = EMU_SREG_OFFSETS["tid"] // 4
        states = []
        for t in range(block[0] * block[1] * block[2]):
            state = self._state(block, grid, shared, barrier)
            np.frombuffer(state, np.int32, count=12)[tid:tid + 3] = (
                t % block[0], t // block[0] % block[1], t // (block[0] * block[1]))
            states.append(state)
        return states

    def _run_fibers(self, fn: _Function, grid: Tuple[int, int, int], block: Tuple[int, int, int],
                    shared_memory: np.ndarray, argv: Any) -> None:
        """The threads of a block as fibers on this thread (cuda_emulator_fibers)."""
        states = self._thread_states(grid, block, shared_memory.ctypes.data, self.fibers.record_address)
        self.fibers.run(fn.call_address, ctypes.addressof(argv), [ctypes.addressof(s) for s in states], grid)

    def _run_os_threads(self, fn: _Function, grid: Tuple[int, int, int], block: Tuple[int, int, int],
                        shared_memory: np.ndarray, argv: Any) -> None:
        """The threads of one block as OS threads meeting at a real barrier
        (the kernel's, and one more between blocks so shared memory is not
        reused early), the blocks in order."""
        from ..codegen.ptx.targets import EMU_SREG_OFFSETS
        threads = block[0] * block[1] * block[2]
        barrier = _Barrier(self.libc, threads)
        states = [(state, np.frombuffer(state, np.int32, count=12))
                  for state in self._thread_states(grid, block, shared_memory.ctypes.data, barrier.ptr)]
        blocks = [(x, y, z) for z in range(grid[2]) for y in range(grid[1]) for x in range(grid[0])]
        errors: List[BaseException] = []
        ctaid = EMU_SREG_OFFSETS["ctaid"] // 4

        def worker(state: Any, i32: np.ndarray) -> None:
            try:
                for b in blocks:
                    i32[ctaid:ctaid + 3] = b
                    fn.call(ctypes.addressof(state), ctypes.addressof(argv))
                    barrier.wait()
            except BaseException as exc:     # pragma: no cover - a ctypes failure
                errors.append(exc)

        workers = [threading.Thread(target=worker, args=s, daemon=True) for s in states]
        previous = threading.stack_size()
        threading.stack_size(1 << 20)
        try:
            for w in workers:
                w.start()
        finally:
            threading.stack_size(previous)
        for w in workers:
            w.join()
        barrier.close()
        if errors:
            raise _Failure(CUDA_ERROR_ILLEGAL_ADDRESS, f"{fn.name}: {errors[0]!r}")
