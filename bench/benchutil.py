"""Shared pieces of the pytest-benchmark suites in bench/: device, paths, sizes, and recording throughput.

Paths benchmarked for every op: ``torch-compiled`` (the torch path with torch.compile's CPU kernels; CPU only),
``torch-eager`` (the torch path without a compiler: what runs without one, and the torch path on a GPU),
``hopper`` / ``bf16`` / ``fp32`` (the Triton paths; GPU only: on a CPU they would run under Triton's interpreter,
which is a correctness tool, not a timing), plus each op's baselines.
"""

from __future__ import annotations



import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if HAS_CUDA else "cpu")
TRITON_PATHS = ("hopper", "bf16", "fp32")
TORCH_PATHS = ("torch-compiled", "torch-eager")
PATHS = TORCH_PATHS + TRITON_PATHS
MXFP4_BYTES_PER_ELEMENT = 17 / 32


def require_path(path: str) -> str:
    """Skip (with the reason) a path that cannot be timed here; return the mxfp4 backend name to force."""
    if path in TRITON_PATHS:
        if not HAS_CUDA:
            pytest.skip(f"{path}: Triton kernels would run under the interpreter on a CPU, which is not a timing")
        from mxfp4.dispatch import Backend, BackendUnavailableError, check_backend

        try:
            check_backend(Backend(path), DEVICE)
        except BackendUnavailableError as error:
            pytest.skip(str(error))
        return path
    if path == "torch-compiled" and HAS_CUDA:
        pytest.skip("torch-compiled is the CPU path (torch.compile's C++ backend); on a GPU the torch path is eager")
    return "torch"


def compile_policy(monkeypatch, path: str) -> None:
    """Pin the torch path's compile policy for this benchmark (only the torch-* paths care)."""
    if path in TORCH_PATHS:
        monkeypatch.setenv("MXFP4_TORCH_COMPILE", "always" if path == "torch-compiled" else "never")


def synchronized(fn):
    """``fn`` followed by a device synchronize, so wall-clock timing sees the GPU work."""
    if not HAS_CUDA:
        return fn

    def run():
        out = fn()
        torch.cuda.synchronize()
        return out

    return run


def measure(benchmark, fn, *, bytes_moved: float, flops: float = 0.0, **info):
    """Benchmark ``fn`` (warmed up once, so a first compile is not timed) and record GB/s / TFLOP/s on the median."""
    fn = synchronized(fn)
    fn()
    result = benchmark(fn)
    benchmark.extra_info.update(info, device=str(DEVICE), bytes=bytes_moved)
    if benchmark.stats is None:  # --benchmark-disable: ran once, nothing timed
        return result
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(info, device=str(DEVICE), bytes=bytes_moved, gbps=bytes_moved / median / 1e9)
    if flops:
        benchmark.extra_info.update(flops=flops, tflops=flops / median / 1e12)
    return result


def random_bf16(shape, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator(device=DEVICE).manual_seed(seed)
    return (0.02 * torch.randn(shape, device=DEVICE, generator=generator)).to(torch.bfloat16)


def random_mxfp4(shape, seed: int = 0):
    from mxfp4.bench import random_mxfp4 as make

    return make(shape, DEVICE, seed)


def big(gpu, cpu):
    """GPU size or CPU size."""
    return gpu if HAS_CUDA else cpu


