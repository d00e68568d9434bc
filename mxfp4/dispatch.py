"""Which implementation runs an MXFP4 op: chosen by GPU architecture, in this one place, and forceable.

Paths:
    hopper  sm_90+: bf16 tensor-core tiles (wgmma) with the MXFP4 operand upcast in registers.
    bf16    sm_80..sm_89 (Ampere, Ada): the same schedule with bf16 ``tl.dot`` (mma.sync).
    fp32    sm_75 (T4) and any GPU without bf16: upcast to float32, float32 dot and accumulation; no fp16
            anywhere, since GPT-OSS activations overflow fp16.
    torch   CPU or no Triton: dequantize + ``torch.matmul``; the correctness fallback.

The automatic choice follows ``torch.cuda.get_device_capability``. A path is forced with the ``backend=`` argument
of the public functions or the ``MXFP4_BACKEND`` environment variable; a forced path that cannot run raises
:class:`BackendUnavailableError` (only the automatic choice falls back). On a CPU with ``TRITON_INTERPRET=1`` every
Triton path runs under the Triton interpreter: that is how CI tests them.
"""

from __future__ import annotations

import enum
import functools
import importlib.util
import os

ENV_VAR = "MXFP4_BACKEND"

#: Minimum compute capability of each Triton path (what it is compiled for in CI).
MIN_CAPABILITY = {"hopper": (9, 0), "bf16": (8, 0), "fp32": (7, 5)}


class Backend(str, enum.Enum):
    """An implementation path for the MXFP4 ops (see the module docstring)."""

    HOPPER = "hopper"
    BF16 = "bf16"
    FP32 = "fp32"
    TORCH = "torch"

    @property
    def uses_triton(self) -> bool:
        return self is not Backend.TORCH


class BackendUnavailableError(RuntimeError):
    """A path was asked for by name but cannot run on this device / installation."""


def triton_interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.lru_cache(maxsize=None)
def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def _parse(backend) -> Backend | None:
    if backend is None:
        backend = os.environ.get(ENV_VAR) or "auto"
    if isinstance(backend, Backend):
        return backend
    name = str(backend).lower()
    if name == "auto":
        return None
    try:
        return Backend(name)
    except ValueError:
        names = ", ".join(["auto"] + [b.value for b in Backend])
        raise ValueError(f"unknown MXFP4 backend {backend!r} (from argument or ${ENV_VAR}); expected one of {names}") from None


@functools.lru_cache(maxsize=None)
def _capability_of_index(index: int) -> tuple[int, int]:
    import torch

    return torch.cuda.get_device_capability(index)


def _capability(device) -> tuple[int, int]:
    """Compute capability of a CUDA device, queried once per device (the ops call this on every launch)."""
    import torch

    return _capability_of_index(device.index if device.index is not None else torch.cuda.current_device())


def auto_backend(device) -> Backend:
    """The path the automatic choice takes for tensors on ``device``."""
    import torch

    device = device if isinstance(device, torch.device) else torch.device(device)
    if device.type != "cuda" or not triton_installed():
        return Backend.TORCH
    capability = _capability(device)
    for backend in (Backend.HOPPER, Backend.BF16, Backend.FP32):
        if capability >= MIN_CAPABILITY[backend.value]:
            return backend
    return Backend.TORCH  # pre-Turing GPUs: no Triton support worth having


def check_backend(backend: Backend, device) -> None:
    """Raise :class:`BackendUnavailableError` (saying what to do) if ``backend`` cannot run on ``device``."""
    import torch

    device = device if isinstance(device, torch.device) else torch.device(device)
    if backend is Backend.TORCH:
        return
    if not triton_installed():
        raise BackendUnavailableError(f"backend {backend.value!r} needs Triton, which is not installed; use backend='torch'")
    if device.type == "cuda":
        capability = _capability(device)
        needed = MIN_CAPABILITY[backend.value]
        if capability < needed:
            raise BackendUnavailableError(
                f"backend {backend.value!r} needs compute capability >= {needed[0]}.{needed[1]}, but {device} is "
                f"sm_{capability[0]}{capability[1]}; use backend='auto' or one of the paths for older GPUs"
            )
    elif device.type == "cpu":
        if not triton_interpreter_enabled():
            raise BackendUnavailableError(
                f"backend {backend.value!r} runs Triton kernels, and these tensors are on the CPU: set TRITON_INTERPRET=1 "
                "before importing mxfp4 to run them interpreted, or use backend='torch'"
            )
    else:
        raise BackendUnavailableError(f"backend {backend.value!r} cannot run on device {device}; use backend='torch'")


def choose_backend(device, backend=None) -> Backend:
    """The path to run on ``device``: ``backend`` if given (else ``$MXFP4_BACKEND``), checked; else automatic."""
    requested = _parse(backend)
    if requested is None:
        return auto_backend(device)
    check_backend(requested, device)
    return requested
