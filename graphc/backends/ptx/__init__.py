"""The ptx backend: the CPU backend's loop-IR kernels compiled to PTX
(graphc.codegen.ptx) and run on an NVIDIA GPU through the CUDA driver API
(graphc.runtime.cuda). See docs/ptx.md."""
from __future__ import annotations

from typing import Any, Optional

from ...runtime import cuda
from .executable import DevicePlan, PtxExecutable, device_arch, plan_device

__all__ = ["DevicePlan", "PtxBackend", "PtxExecutable", "available", "device_arch", "plan_device",
           "unavailable_reason"]


def available() -> bool:
    """True when the CUDA driver loads and sees a GPU (never raises)."""
    return cuda.available()


def unavailable_reason() -> Optional[str]:
    return cuda.unavailable_reason()


class PtxBackend:
    name = "ptx"

    def __init__(self) -> None:
        # fails here, with the driver's reason, when there is no usable GPU
        self.context = cuda.get_context()

    def compile(self, program: Any, config: Optional[Any] = None) -> PtxExecutable:
        return PtxExecutable(program, config)
