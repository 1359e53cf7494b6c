"""Load a library written by graphc's export (graphc/export.py) as a Python
callable on NumPy arrays.

Only NumPy and ctypes are used here, so a process that never builds a graph
can load exported functions (import this file on its own, or call
``gc.load_library``). Shapes and dtypes come from the library itself
(``<name>_describe``); arrays are checked (and made contiguous) before the
native call.
"""
from __future__ import annotations

import ctypes
import os
from typing import Any, List, Tuple

import numpy as np

_DTYPES = {0: np.dtype(np.float32), 1: np.dtype(np.float64), 2: np.dtype(np.int32), 3: np.dtype(np.int64),
           4: np.dtype(np.bool_)}
_ERRORS = {1: "a NULL pointer was passed", 2: "out of memory"}


class LoadedFunction:
    """``fn(*inputs) -> output`` (one array) or a tuple of outputs."""

    def __init__(self, path: str, name: str = None) -> None:
        self.path = os.path.abspath(path)
        self.name = name or os.path.splitext(os.path.basename(path))[0]
        self._lib = ctypes.CDLL(self.path)
        try:
            describe = getattr(self._lib, f"{self.name}_describe")
            self._fn = getattr(self._lib, self.name)
        except AttributeError:
            raise ValueError(f"{self.path} is not a graphc export named {self.name!r} "
                             f"(no {self.name} / {self.name}_describe symbols)") from None
        describe.restype = ctypes.c_int
        describe.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int),
                             ctypes.POINTER(ctypes.POINTER(ctypes.c_int64))]
        self.inputs = self._describe(describe, 0)
        self.outputs = self._describe(describe, 1)
        self._fn.restype = ctypes.c_int
        self._fn.argtypes = [ctypes.c_void_p] * (len(self.inputs) + len(self.outputs))

    @staticmethod
    def _describe(describe, is_output: int) -> List[Tuple[np.dtype, Tuple[int, ...]]]:
        specs = []
        dtype, ndim, shape = ctypes.c_int(), ctypes.c_int(), ctypes.POINTER(ctypes.c_int64)()
        while describe(is_output, len(specs), ctypes.byref(dtype), ctypes.byref(ndim), ctypes.byref(shape)) == 0:
            specs.append((_DTYPES[dtype.value], tuple(int(shape[i]) for i in range(ndim.value))))
        return specs

    def __call__(self, *args: Any) -> Any:
        if len(args) != len(self.inputs):
            raise TypeError(f"{self.name} takes {len(self.inputs)} arrays, got {len(args)}")
        arrays = []
        for i, (a, (dtype, shape)) in enumerate(zip(args, self.inputs)):
            arr = np.asarray(a)
            if arr.shape != shape:
                raise ValueError(f"{self.name}: input {i} must have shape {shape}, got {arr.shape}")
            if arr.dtype != dtype:
                if not np.can_cast(arr.dtype, dtype, "same_kind"):
                    raise TypeError(f"{self.name}: input {i} must be {dtype.name}, got {arr.dtype.name}")
                arr = arr.astype(dtype)
            arrays.append(np.ascontiguousarray(arr))
        outs = [np.empty(shape, dtype) for dtype, shape in self.outputs]
        # a zero-size array may have no buffer: give the library a real pointer anyway
        pointers = [a.ctypes.data if a.size else ctypes.addressof(_DUMMY) for a in arrays + outs]
        rc = self._fn(*pointers)
        if rc:
            raise RuntimeError(f"{self.name} failed: {_ERRORS.get(rc, f'error {rc}')}")
        return outs[0] if len(outs) == 1 else tuple(outs)

    def __repr__(self) -> str:
        fmt = lambda specs: ", ".join(f"{d.name}{list(s)}" for d, s in specs)
        return f"<graphc library {self.name}({fmt(self.inputs)}) -> ({fmt(self.outputs)})>"


_DUMMY = ctypes.c_int64(0)


def load_library(path: str, name: str = None) -> LoadedFunction:
    """A callable for the exported function in ``path`` (name: the file's stem)."""
    return LoadedFunction(path, name)
