"""mxfp4: MXFP4 (OCP Microscaling v1.0) numerics and GPU kernels.

    >>> import torch, mxfp4
    >>> w = mxfp4.quantize(torch.randn(256, 2880))     # MXFP4Tensor [256, 2880], quantized along the last axis
    >>> y = mxfp4.matmul(torch.randn(4, 2880), w)       # [4, 256] = x @ W.T

Kept light: attributes load on first use, so ``import mxfp4.reference`` and ``mxfp4.spec`` need NumPy alone.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "MXFP4Tensor": "mxfp4.tensor",
    "quantize": "mxfp4.ops",
    "dequantize": "mxfp4.ops",
    "matmul": "mxfp4.ops",
    "moe": "mxfp4.moe_layer",
    "save_file": "mxfp4.io",
    "load_file": "mxfp4.io",
    "MXFP4FormatError": "mxfp4.io",
    "Backend": "mxfp4.dispatch",
    "ScaleMode": "mxfp4.spec",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mxfp4' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
