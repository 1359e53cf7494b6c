"""The CUDA driver API through ctypes: enough to load PTX and run it.

``libcuda.so.1`` (the driver, installed with the NVIDIA kernel module; no
CUDA toolkit is needed) is loaded on first use, never at import.
:func:`available` says whether a usable GPU is there (and never raises);
everything else raises :class:`CudaUnavailableError` (a CompileError: the
``ptx`` backend cannot compile for a GPU it does not have) when the driver
or a device is missing, and :class:`CudaError` (an ExecutionError) when a
driver call fails, with the driver's own error name and text.

Objects: :class:`Context` (the primary context of one device, made current
on the calling thread before every call), :class:`Module` (PTX loaded by
the driver's JIT, with its error log on failure), :class:`Function`
(``launch``), :class:`DeviceBuffer` (``cuMemAlloc``; freed when collected)
and :class:`DeviceArray` (a buffer with a dtype and shape, copied from and
to NumPy arrays). All launches go to the default stream; ``synchronize``
waits for them.
"""
from __future__ import annotations

import ctypes
import os
import threading
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from ..errors import CompileError, ExecutionError

__all__ = ["CudaError", "CudaUnavailableError", "Context", "DeviceArray", "DeviceBuffer", "Function", "Module",
           "available", "emulated", "get_context", "unavailable_reason", "use_emulator"]

LIBRARY_NAMES = ("libcuda.so.1", "libcuda.so", "nvcuda.dll")

CUDA_SUCCESS = 0
CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK = 1
CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16
CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76
CU_JIT_INFO_LOG_BUFFER = 3
CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES = 4
CU_JIT_ERROR_LOG_BUFFER = 5
CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6
_LOG_BYTES = 16 << 10

_c_int_p = ctypes.POINTER(ctypes.c_int)
_c_u64_p = ctypes.POINTER(ctypes.c_uint64)
_c_void_pp = ctypes.POINTER(ctypes.c_void_p)
_c_char_pp = ctypes.POINTER(ctypes.c_char_p)

# name: argtypes (every function returns CUresult, an int). Versioned names
# (_v2) are the ones the driver exports for 64-bit device pointers.
_SIGNATURES: Dict[str, Tuple[Any, ...]] = {
    "cuInit": (ctypes.c_uint,),
    "cuDriverGetVersion": (_c_int_p,),
    "cuDeviceGetCount": (_c_int_p,),
    "cuDeviceGet": (_c_int_p, ctypes.c_int),
    "cuDeviceGetName": (ctypes.c_char_p, ctypes.c_int, ctypes.c_int),
    "cuDeviceGetAttribute": (_c_int_p, ctypes.c_int, ctypes.c_int),
    "cuDeviceTotalMem_v2": (ctypes.POINTER(ctypes.c_size_t), ctypes.c_int),
    "cuDevicePrimaryCtxRetain": (_c_void_pp, ctypes.c_int),
    "cuDevicePrimaryCtxRelease_v2": (ctypes.c_int,),
    "cuCtxSetCurrent": (ctypes.c_void_p,),
    "cuCtxSynchronize": (),
    "cuModuleLoadDataEx": (_c_void_pp, ctypes.c_void_p, ctypes.c_uint, _c_int_p, _c_void_pp),
    "cuModuleUnload": (ctypes.c_void_p,),
    "cuModuleGetFunction": (_c_void_pp, ctypes.c_void_p, ctypes.c_char_p),
    "cuMemAlloc_v2": (_c_u64_p, ctypes.c_size_t),
    "cuMemFree_v2": (ctypes.c_uint64,),
    "cuMemcpyHtoD_v2": (ctypes.c_uint64, ctypes.c_void_p, ctypes.c_size_t),
    "cuMemcpyDtoH_v2": (ctypes.c_void_p, ctypes.c_uint64, ctypes.c_size_t),
    "cuMemcpyDtoD_v2": (ctypes.c_uint64, ctypes.c_uint64, ctypes.c_size_t),
    "cuMemsetD8_v2": (ctypes.c_uint64, ctypes.c_ubyte, ctypes.c_size_t),
    "cuLaunchKernel": (ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint,
                       ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, _c_void_pp, _c_void_pp),
    "cuGetErrorName": (ctypes.c_int, _c_char_pp),
    "cuGetErrorString": (ctypes.c_int, _c_char_pp),
}


class CudaUnavailableError(CompileError):
    """No CUDA driver, or no usable GPU, in this process."""


class CudaError(ExecutionError):
    """A CUDA driver call failed: ``code`` is its CUresult."""

    def __init__(self, message: str, code: int = -1) -> None:
        super().__init__(message)
        self.code = code


class _Driver:
    """The loaded library with typed entry points."""

    def __init__(self, lib: Any, path: str) -> None:     # a ctypes.CDLL, or the emulator's stand-in
        self.lib = lib
        self.path = path
        self.fns: Dict[str, Any] = {}
        missing = []
        for name, argtypes in _SIGNATURES.items():
            try:
                fn = getattr(lib, name)
            except AttributeError:
                missing.append(name)
                continue
            fn.argtypes = list(argtypes)
            fn.restype = ctypes.c_int
            self.fns[name] = fn
        if missing:
            raise CudaUnavailableError(f"the CUDA driver {path} lacks {', '.join(missing)} (too old?)")

    def error_text(self, code: int) -> str:
        name, text = ctypes.c_char_p(), ctypes.c_char_p()
        parts = []
        if self.fns["cuGetErrorName"](code, ctypes.byref(name)) == CUDA_SUCCESS and name.value:
            parts.append(name.value.decode(errors="replace"))
        if self.fns["cuGetErrorString"](code, ctypes.byref(text)) == CUDA_SUCCESS and text.value:
            parts.append(text.value.decode(errors="replace"))
        return ": ".join(parts) or f"CUresult {code}"

    def call(self, name: str, *args: Any) -> None:
        rc = self.fns[name](*args)
        if rc != CUDA_SUCCESS:
            raise CudaError(f"{name} failed: {self.error_text(rc)} (CUresult {rc})", rc)


_lock = threading.RLock()
_driver: Optional[_Driver] = None
_failure: Optional[str] = None
_contexts: Dict[int, "Context"] = {}


def _load() -> _Driver:
    """The initialized driver, loaded once per process; CudaUnavailableError
    (with the reason, remembered) when it cannot be."""
    global _driver, _failure
    with _lock:
        if _driver is not None:
            return _driver
        if _failure is not None:
            raise CudaUnavailableError(_failure)
        emulate = _emulating()
        names = [os.environ["GRAPHC_LIBCUDA"]] if os.environ.get("GRAPHC_LIBCUDA") else list(LIBRARY_NAMES)
        if emulate:
            from .cuda_emulator import DEVICE_NAME
            names = [DEVICE_NAME]
        errors = []
        for name in names:
            try:
                if emulate:
                    from .cuda_emulator import EmulatedDriver
                    lib = EmulatedDriver().library()
                else:
                    lib = ctypes.CDLL(name)
            except OSError as exc:
                errors.append(f"{name}: {exc}")
                continue
            try:
                drv = _Driver(lib, name)
                rc = drv.fns["cuInit"](0)
                if rc != CUDA_SUCCESS:
                    raise CudaUnavailableError(f"cuInit failed: {drv.error_text(rc)} (no usable GPU or driver)")
                count = ctypes.c_int(0)
                drv.call("cuDeviceGetCount", ctypes.byref(count))
                if count.value < 1:
                    raise CudaUnavailableError(f"the CUDA driver ({name}) found no GPU")
            except (CudaUnavailableError, CudaError) as exc:
                _failure = f"CUDA is not usable: {exc}"
                raise CudaUnavailableError(_failure) from None
            _driver = drv
            return drv
        _failure = ("no CUDA driver: libcuda could not be loaded (" + "; ".join(errors)
                    + "); the ptx backend needs an NVIDIA GPU with its driver installed")
        raise CudaUnavailableError(_failure)


_emulator_choice: Optional[bool] = None


def _emulating() -> bool:
    if _emulator_choice is not None:
        return _emulator_choice
    return os.environ.get("GRAPHC_CUDA_EMULATOR", "").lower() in ("1", "true", "yes", "on")


def use_emulator(enabled: Optional[bool] = True) -> Optional[bool]:
    """Run on :mod:`graphc.runtime.cuda_emulator` (the host CPU standing in
    for a GPU, for tests) instead of ``libcuda``; ``False`` forces the real
    driver, ``None`` goes back to ``GRAPHC_CUDA_EMULATOR``. Returns the
    previous setting (to restore it). Forgets the loaded driver and its
    contexts when the setting changes: earlier device objects must not be
    used afterwards."""
    global _emulator_choice, _driver, _failure
    with _lock:
        previous = _emulator_choice
        if enabled == previous:
            return previous
        _emulator_choice = enabled
        _driver = None
        _failure = None
        _contexts.clear()
        return previous


def emulated() -> bool:
    """True when the driver in use is the host emulator."""
    if not available():
        return False
    from .cuda_emulator import EmulatedLibrary
    return isinstance(getattr(_driver, "lib", None), EmulatedLibrary)


def available() -> bool:
    """True when the CUDA driver loads and sees at least one GPU (never raises)."""
    try:
        _load()
        return True
    except CudaUnavailableError:
        return False


def unavailable_reason() -> Optional[str]:
    """Why :func:`available` is False (None when it is True)."""
    try:
        _load()
        return None
    except CudaUnavailableError as exc:
        return str(exc)


def get_context(ordinal: int = 0) -> "Context":
    """The primary context of device ``ordinal`` (one per process and device)."""
    drv = _load()
    with _lock:
        ctx = _contexts.get(ordinal)
        if ctx is None:
            ctx = Context(drv, ordinal)
            _contexts[ordinal] = ctx
        return ctx


class Context:
    """A device's primary context. Every method makes it current on the
    calling thread first (the driver's current context is per thread)."""

    def __init__(self, driver: _Driver, ordinal: int) -> None:
        self.driver = driver
        count = ctypes.c_int(0)
        driver.call("cuDeviceGetCount", ctypes.byref(count))
        if not 0 <= ordinal < count.value:
            raise CudaUnavailableError(f"there is no CUDA device {ordinal} ({count.value} device(s))")
        dev = ctypes.c_int(0)
        driver.call("cuDeviceGet", ctypes.byref(dev), ordinal)
        self.device = dev.value
        self.ordinal = ordinal
        name = ctypes.create_string_buffer(256)
        driver.call("cuDeviceGetName", name, 256, self.device)
        self.name = name.value.decode(errors="replace")
        self.compute_capability = (self.attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
                                   self.attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR))
        self.multiprocessors = self.attribute(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        self.max_threads_per_block = self.attribute(CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK)
        total = ctypes.c_size_t(0)
        driver.call("cuDeviceTotalMem_v2", ctypes.byref(total), self.device)
        self.total_memory = total.value
        handle = ctypes.c_void_p()
        driver.call("cuDevicePrimaryCtxRetain", ctypes.byref(handle), self.device)
        self.handle = handle
        self._current = threading.local()

    def attribute(self, attr: int) -> int:
        value = ctypes.c_int(0)
        self.driver.call("cuDeviceGetAttribute", ctypes.byref(value), attr, self.device)
        return value.value

    @property
    def arch(self) -> str:
        """The device's PTX target name, e.g. ``sm_90``."""
        return f"sm_{self.compute_capability[0]}{self.compute_capability[1]}"

    def __repr__(self) -> str:
        return f"<cuda.Context device {self.ordinal}: {self.name} ({self.arch})>"

    def make_current(self) -> None:
        if not getattr(self._current, "set", False):
            self.driver.call("cuCtxSetCurrent", self.handle)
            self._current.set = True

    def call(self, name: str, *args: Any) -> None:
        self.make_current()
        self.driver.call(name, *args)

    def synchronize(self) -> None:
        """Wait for every launch and copy; a kernel fault surfaces here."""
        self.call("cuCtxSynchronize")

    def load_module(self, ptx: str) -> "Module":
        return Module(self, ptx)

    def alloc(self, nbytes: int) -> "DeviceBuffer":
        return DeviceBuffer(self, nbytes)

    def to_device(self, array: np.ndarray) -> "DeviceArray":
        return DeviceArray.from_host(self, array)

    def empty(self, shape: Sequence[int], dtype: Any) -> "DeviceArray":
        return DeviceArray(self, tuple(int(d) for d in shape), np.dtype(dtype))


class Module:
    """PTX loaded through the driver's JIT compiler."""

    def __init__(self, ctx: Context, ptx: str) -> None:
        self.ctx = ctx
        self.handle = ctypes.c_void_p()
        self._functions: Dict[str, Function] = {}
        image = ctypes.create_string_buffer(ptx.encode("ascii", errors="replace"))   # NUL-terminated
        error_log = ctypes.create_string_buffer(_LOG_BYTES)
        info_log = ctypes.create_string_buffer(_LOG_BYTES)
        options = (ctypes.c_int * 4)(CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
                                     CU_JIT_INFO_LOG_BUFFER, CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES)
        values = (ctypes.c_void_p * 4)(ctypes.cast(error_log, ctypes.c_void_p).value, _LOG_BYTES,
                                       ctypes.cast(info_log, ctypes.c_void_p).value, _LOG_BYTES)
        try:
            ctx.call("cuModuleLoadDataEx", ctypes.byref(self.handle), ctypes.cast(image, ctypes.c_void_p), 4,
                     options, values)
        except CudaError as exc:
            log = error_log.value.decode(errors="replace").strip()
            raise CudaError(f"the CUDA driver could not load the PTX module: {exc}"
                            + (f"\n{log}" if log else ""), exc.code) from None
        self.info_log = info_log.value.decode(errors="replace").strip()

    def function(self, name: str) -> "Function":
        fn = self._functions.get(name)
        if fn is None:
            handle = ctypes.c_void_p()
            self.ctx.call("cuModuleGetFunction", ctypes.byref(handle), self.handle, name.encode())
            fn = Function(self, name, handle)
            self._functions[name] = fn
        return fn

    def __del__(self) -> None:
        handle = getattr(self, "handle", None)
        if handle is not None and handle.value:
            try:
                self.ctx.call("cuModuleUnload", handle)
            except Exception:      # interpreter shutdown, or a context already gone
                pass


class Function:
    """A ``__global__`` entry of a loaded module; its parameters are device
    pointers (``u64``), as every graphc entry takes."""

    def __init__(self, module: Module, name: str, handle: ctypes.c_void_p) -> None:
        self.module = module
        self.name = name
        self.handle = handle

    def launch(self, grid: Sequence[int], block: Sequence[int], pointers: Sequence[int],
               shared_bytes: int = 0) -> None:
        """Launch on the default stream (asynchronous: synchronize to wait)."""
        n = len(pointers)
        values = (ctypes.c_uint64 * max(n, 1))(*[int(p) for p in pointers])
        params = (ctypes.c_void_p * max(n, 1))(*[ctypes.addressof(values) + 8 * i for i in range(n)])
        gx, gy, gz = (int(v) for v in grid)
        bx, by, bz = (int(v) for v in block)
        self.module.ctx.call("cuLaunchKernel", self.handle, gx, gy, gz, bx, by, bz, int(shared_bytes), None,
                             params, None)


class DeviceBuffer:
    """``nbytes`` of device memory (at least one byte is allocated, so an
    empty tensor still has a valid pointer); freed when collected."""

    def __init__(self, ctx: Context, nbytes: int) -> None:
        self.ctx = ctx
        self.nbytes = int(nbytes)
        ptr = ctypes.c_uint64(0)
        ctx.call("cuMemAlloc_v2", ctypes.byref(ptr), max(self.nbytes, 1))
        self.ptr = ptr.value

    def copy_from_host(self, array: np.ndarray) -> None:
        a = np.asarray(array, order="C")
        if a.nbytes != self.nbytes:
            raise CudaError(f"copy of {a.nbytes} bytes into a device buffer of {self.nbytes}")
        if a.nbytes:
            self.ctx.call("cuMemcpyHtoD_v2", self.ptr, ctypes.c_void_p(a.ctypes.data), a.nbytes)

    def copy_to_host(self, out: np.ndarray) -> np.ndarray:
        if not out.flags.c_contiguous or out.nbytes != self.nbytes:
            raise CudaError(f"copy of a device buffer of {self.nbytes} bytes into an array of {out.nbytes}")
        if out.nbytes:
            self.ctx.call("cuMemcpyDtoH_v2", ctypes.c_void_p(out.ctypes.data), self.ptr, out.nbytes)
        return out

    def copy_from_device(self, other: "DeviceBuffer", nbytes: Optional[int] = None) -> None:
        """Copy the first ``nbytes`` (default: all) of ``other`` here."""
        n = self.nbytes if nbytes is None else int(nbytes)
        if nbytes is None and other.nbytes != self.nbytes or n > self.nbytes or n > other.nbytes:
            raise CudaError(f"device copy of {n if nbytes is not None else other.nbytes} bytes from a buffer of "
                            f"{other.nbytes} into one of {self.nbytes}")
        if n:
            self.ctx.call("cuMemcpyDtoD_v2", self.ptr, other.ptr, n)

    def free(self) -> None:
        ptr, self.ptr = getattr(self, "ptr", 0), 0
        if ptr:
            try:
                self.ctx.call("cuMemFree_v2", ptr)
            except Exception:      # interpreter shutdown, or a context already gone
                pass

    def __del__(self) -> None:
        self.free()


class DeviceArray:
    """A C-contiguous array in device memory: the first ``nbytes`` of its
    buffer (which may be larger: buffers are shared between tensors whose
    lifetimes do not overlap)."""

    def __init__(self, ctx: Context, shape: Tuple[int, ...], dtype: np.dtype,
                 buffer: Optional[DeviceBuffer] = None) -> None:
        self.ctx = ctx
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        self.buffer = buffer if buffer is not None else DeviceBuffer(ctx, self.nbytes)
        if self.buffer.nbytes < self.nbytes:
            raise CudaError(f"a {self.dtype.name}{list(self.shape)} array needs {self.nbytes} bytes, "
                            f"its buffer has {self.buffer.nbytes}")

    @property
    def ptr(self) -> int:
        return self.buffer.ptr

    @classmethod
    def from_host(cls, ctx: Context, array: Any) -> "DeviceArray":
        a = np.asarray(array, order="C")      # (ascontiguousarray would make a 0-d array 1-d)
        d = cls(ctx, a.shape, a.dtype)
        d.buffer.copy_from_host(a)
        return d

    def to_host(self) -> np.ndarray:
        out = np.empty(self.shape, self.dtype)
        if self.nbytes:
            self.ctx.call("cuMemcpyDtoH_v2", ctypes.c_void_p(out.ctypes.data), self.ptr, self.nbytes)
        return out

    def reshape(self, shape: Sequence[int]) -> "DeviceArray":
        """The same memory with another shape of the same size (no copy)."""
        return DeviceArray(self.ctx, tuple(int(d) for d in shape), self.dtype, self.buffer)

    def __repr__(self) -> str:
        return f"<DeviceArray {self.dtype.name}{list(self.shape)} at 0x{self.ptr:x}>"
