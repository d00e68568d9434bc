"""Test set-up: on a machine without a CUDA GPU, Triton kernels run under the interpreter.

``TRITON_INTERPRET`` is read when ``@triton.jit`` decorates a function, i.e. when the kernel modules are imported,
so it is set here, before any test module imports ``mxfp4.triton_kernels``.
"""

import os
import zlib

import numpy as np
import pytest

try:
    import torch

    HAS_CUDA = torch.cuda.is_available()
except ImportError:  # the reference tests run with NumPy alone
    torch = None
    HAS_CUDA = False

if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

from hypothesis import settings  # noqa: E402

# CI runs on 2 CPU cores with kernels interpreted: keep examples few there, more on a GPU.
settings.register_profile("ci", max_examples=25, deadline=None, derandomize=False, print_blob=True)
settings.register_profile("gpu", max_examples=100, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "gpu" if HAS_CUDA else "ci"))

TRITON_BACKENDS = ("hopper", "bf16", "fp32")


@pytest.fixture
def device():
    """The device kernels run on: the GPU if there is one, else the CPU (kernels interpreted)."""
    return "cuda" if HAS_CUDA else "cpu"


@pytest.fixture
def rng(request):
    """A NumPy generator seeded from the test's id: fresh data per test, reproducible per test."""
    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)


def requires_cuda(reason: str = "needs a CUDA GPU"):
    return pytest.mark.skipif(not HAS_CUDA, reason=reason)
