"""The public MXFP4 ops: ``quantize``, ``dequantize``, ``matmul``. Validation happens here; kernels trust it."""

from __future__ import annotations

import torch

from .dispatch import Backend, choose_backend
from .spec import ScaleMode
from .tensor import MXFP4Tensor

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_ACTIVATION_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_OUTPUT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def quantize(x: torch.Tensor, axis: int = -1, *, scale_mode: ScaleMode | str = "floor", backend=None) -> MXFP4Tensor:
    """Quantize ``x`` to MXFP4 along ``axis`` (blocks of 32 consecutive elements share one E8M0 scale).

    Args:
        x: float16 / bfloat16 / float32 (float64 on the torch path) tensor of any shape, any strides, any device.
        axis: the axis blocks run along; for an ``nn.Linear`` weight ``[N, K]`` that is K (``-1``).
        scale_mode: ``"floor"`` (OCP MX v1.0, default), ``"ceil"`` (never clips) or ``"mse"``;
            see :class:`mxfp4.spec.ScaleMode` for each rule and its error.
        backend: ``None``/``"auto"``, ``"hopper"``, ``"bf16"``, ``"fp32"`` or ``"torch"`` (see :mod:`mxfp4.dispatch`).

    Returns:
        An :class:`MXFP4Tensor` of ``x``'s shape, bit-identical to ``mxfp4.reference.quantize`` on every path.

    >>> q = quantize(torch.randn(64, 100))
    >>> q.blocks.shape, q.scales.shape
    (torch.Size([64, 4, 16]), torch.Size([64, 4]))
    """
    mode = ScaleMode.parse(scale_mode)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"quantize expects a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"quantize expects a floating-point tensor (float16, bfloat16, float32, float64), got {x.dtype}")
    if x.dim() == 0:
        raise ValueError("quantize expects a tensor with at least one dim, got a scalar")
    if not -x.dim() <= axis < x.dim():
        raise ValueError(f"axis {axis} is out of range for a tensor of shape {tuple(x.shape)}")
    axis = axis % x.dim()
    if x.shape[axis] == 0:
        raise ValueError(f"quantize got an empty axis {axis} (shape {tuple(x.shape)}): nothing to quantize")
    path = choose_backend(x.device, backend)
    moved = x.movedim(axis, -1)
    if path is Backend.TORCH:
        from . import torch_ops

        blocks, scales = torch_ops.quantize(moved, mode)
    else:
        if x.dtype == torch.float64:
            raise TypeError(f"the {path.value!r} path quantizes float16/bfloat16/float32; got float64 (use backend='torch')")
        from .triton_kernels.quantize import quantize as quantize_kernel

        blocks, scales = quantize_kernel(moved, mode, path)
    return MXFP4Tensor(blocks, scales, x.shape, axis)


def dequantize(q: MXFP4Tensor, dtype: torch.dtype = torch.bfloat16, *, backend=None) -> torch.Tensor:
    """Decode an :class:`MXFP4Tensor` to a dense tensor of its logical shape.

    Args:
        q: the MXFP4 tensor.
        dtype: bfloat16 (default), float16, float32 (float64 on the torch path). Values beyond the dtype's range
            become +-Inf (float16 overflows above 65504); blocks with scale byte 255 decode to NaN.
        backend: as for :func:`quantize`.

    Returns:
        ``dtype`` tensor of shape ``q.shape`` on ``q.device``, bit-identical to ``mxfp4.reference.dequantize``.
    """
    if not isinstance(q, MXFP4Tensor):
        raise TypeError(f"dequantize expects an MXFP4Tensor, got {type(q).__name__}")
    if dtype not in _OUTPUT_DTYPES:
        raise TypeError(f"dequantize produces float16, bfloat16, float32 or float64, not {dtype}")
    path = choose_backend(q.device, backend)
    if path is Backend.TORCH:
        from . import torch_ops

        out = torch_ops.dequantize(q.blocks, q.scales, dtype, q.length)
    else:
        if dtype == torch.float64:
            raise TypeError(f"the {path.value!r} path decodes to float16/bfloat16/float32; got float64 (use backend='torch')")
        from .triton_kernels.dequantize import dequantize as dequantize_kernel

        out = dequantize_kernel(q.blocks, q.scales, dtype, q.length, path)
    return out.movedim(-1, q.axis)


def matmul(a: torch.Tensor, w: MXFP4Tensor, bias: torch.Tensor | None = None, *, backend=None) -> torch.Tensor:
    """``a @ W.T + bias`` with an MXFP4 weight, accumulated in float32, returned in ``a.dtype``.

    Args:
        a: ``[..., K]`` bfloat16, float16 or float32 activations.
        w: :class:`MXFP4Tensor` of logical shape ``[N, K]`` quantized along K (``axis=1``): an ``nn.Linear`` weight,
            e.g. one expert of a GPT-OSS checkpoint.
        bias: optional ``[N]`` tensor (any float dtype; added in float32).
        backend: as for :func:`quantize`.

    Returns:
        ``[..., N]`` in ``a.dtype`` on ``a.device``.

    On the GPU paths, from 512 rows of bf16/fp16 activations (with no bias or one of a's dtype) the weight is
    decoded once to a's dtype and multiplied by cuBLAS, which then decides the reduction (see
    ``mxfp4.triton_kernels.matmul``); smaller M streams the MXFP4 bytes through fused kernels.

    >>> w = mxfp4.quantize(torch.randn(5760, 2880, dtype=torch.bfloat16))
    >>> y = mxfp4.matmul(torch.randn(1, 2880, dtype=torch.bfloat16), w)    # [1, 5760] bf16
    """
    if not isinstance(w, MXFP4Tensor):
        raise TypeError(f"matmul expects the weight as an MXFP4Tensor (use mxfp4.quantize), got {type(w).__name__}")
    if not isinstance(a, torch.Tensor):
        raise TypeError(f"matmul expects activations as a torch.Tensor, got {type(a).__name__}")
    if a.dtype not in _ACTIVATION_DTYPES:
        raise TypeError(f"matmul expects bfloat16, float16 or float32 activations, got {a.dtype}")
    if w.ndim != 2 or w.axis != 1:
        raise ValueError(
            f"matmul expects a weight of logical shape [N, K] quantized along K (axis 1), got shape {tuple(w.shape)} "
            f"quantized along axis {w.axis}"
        )
    if a.dim() == 0 or a.shape[-1] != w.shape[1]:
        raise ValueError(f"matmul: activations {tuple(a.shape)} have K = {a.shape[-1] if a.dim() else None}, weight {tuple(w.shape)} has K = {w.shape[1]}")
    if a.device != w.device:
        raise ValueError(f"activations are on {a.device} but the weight is on {w.device}; move one with .to()")
    n = w.shape[0]
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or bias.shape != (n,):
            raise ValueError(f"bias must be a tensor of shape [{n}], got {getattr(bias, 'shape', type(bias).__name__)}")
        if bias.device != a.device:
            raise ValueError(f"bias is on {bias.device} but activations are on {a.device}")
        if not bias.is_floating_point():
            raise TypeError(f"bias must be floating point, got {bias.dtype}")
    path = choose_backend(a.device, backend)
    lead = a.shape[:-1]
    a2 = a.reshape(-1, a.shape[-1])
    if path is Backend.TORCH:
        out = _matmul_torch(a2, w, bias)
    else:
        from .triton_kernels.matmul import matmul as matmul_kernel

        out = matmul_kernel(a2, w.blocks, w.scales, bias, path)
    return out.reshape(*lead, n)


def _matmul_torch(a: torch.Tensor, w: MXFP4Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Dequantize (one weight at a time) and multiply; float32 compute where a's dtype would lose range/accuracy."""
    compute = torch.float32 if a.device.type == "cpu" or a.dtype == torch.float16 else a.dtype
    weight = dequantize(w, compute, backend=Backend.TORCH)
    out = a.to(compute) @ weight.T
    if bias is not None:
        out = out + bias.to(compute)
    return out.to(a.dtype)
