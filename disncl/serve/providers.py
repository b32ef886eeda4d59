"""Pick ONNX Runtime execution providers that will really run, without noisy failed attempts.

``onnxruntime.get_available_providers()`` lists what the installed wheel was *compiled* with:
``onnxruntime-gpu`` reports ``CUDAExecutionProvider`` on machines without any GPU, and asking for
it there makes ONNX Runtime print library-load errors before falling back. So CUDA is only chosen
when the wheel has it *and* the CUDA driver reports at least one device.
"""

from __future__ import annotations

import ctypes
import functools
import sys

import onnxruntime as ort

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
CHOICES = ("auto", "cpu", "cuda")


def choose_providers(prefer: str = "auto") -> list[str]:
    """Execution providers for an ``InferenceSession``, best first, always ending with CPU.

    ``prefer``: ``"auto"`` uses CUDA when it is usable, ``"cpu"`` forces the CPU, ``"cuda"``
    requires CUDA and raises :class:`RuntimeError` explaining why it cannot be used.
    """
    if prefer not in CHOICES:
        raise ValueError(f"unknown provider preference {prefer!r}; choose one of {list(CHOICES)}")
    if prefer == "cpu":
        return [CPU]
    problem = cuda_problem()
    if problem is None:
        return [CUDA, CPU]
    if prefer == "cuda":
        raise RuntimeError(f"CUDA was requested but cannot be used: {problem}; use prefer='cpu' or 'auto'")
    return [CPU]


@functools.lru_cache(maxsize=1)
def cuda_problem() -> str | None:
    """Why CUDA cannot be used here, or ``None`` when it can; computed once per process."""
    if CUDA not in ort.get_available_providers():
        return "this onnxruntime build has no CUDAExecutionProvider (install onnxruntime-gpu on Linux x86_64)"
    count = _cuda_device_count()
    if count is None:
        return "no CUDA driver library was found"
    if count == 0:
        return "the CUDA driver reports no usable device (check CUDA_VISIBLE_DEVICES and nvidia-smi)"
    return None


def _cuda_device_count() -> int | None:
    """Devices the CUDA driver sees (honours ``CUDA_VISIBLE_DEVICES``); ``None`` without a driver.

    The driver API is queried directly because it is cheap, silent, and needs neither torch nor
    a throw-away ONNX Runtime session.
    """
    names = ("nvcuda.dll",) if sys.platform == "win32" else ("libcuda.so.1", "libcuda.so")
    for name in names:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        if lib.cuInit(0) != 0:
            return 0
        count = ctypes.c_int(0)
        if lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return count.value
    return None
