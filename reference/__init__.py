"""The NumPy reference: the definition of truth for every MXFP4 kernel in this project.

Imports NumPy and ``mxfp4.spec`` only (no torch, no triton), favours clarity over speed, and computes in float64.
Every kernel in ``mxfp4.triton_kernels`` has a twin here with the same name.
"""

from .dense_gemv import projections
from .dequantize import dequantize
from .matmul import matmul
from .moe import moe
from .pack import pack, unpack
from .quantize import quantize, round_to_e2m1, shared_exponent
from .rms_norm import add_rms_norm

__all__ = ["quantize", "dequantize", "pack", "unpack", "matmul", "moe", "round_to_e2m1", "shared_exponent",
           "projections", "add_rms_norm"]
