"""The residual add + RMSNorm in front of each GPT-OSS sublayer, fused into the launch that consumes the normed rows.

Twin of ``mxfp4.reference.rms_norm.add_rms_norm``. Not a kernel: the argument bundle and the ``@triton.jit`` device
functions that the MoE router (``moe_routing``) and the q/k/v projection GEMV (``dense_gemv``) inline. A decode
step's norm reads and writes ~20 KB per token, yet as a launch of its own it costs ~3 us per sublayer on an H100
(two per layer, 48 per gpt-oss-20b token); the consumer already reads the row, so it can add, normalize and pass the
normed row on, and one of its programs stores the new residual (and, for the router, the normed rows the expert
GEMMs read next).

Numerics, those of ``mxfp4.models.gpt_oss.rms_norm`` after torch's add: ``s = residual + delta`` rounded to the
residual's dtype; ``normed = weight * (s * inv_rms)`` in float32, rounded once, with
``inv_rms = 1 / sqrt(mean(s**2) + eps)`` from float32 sums and correctly rounded division and square root (torch's
rsqrt may differ by an ulp, which moves a normed element by at most one rounding).
"""

from __future__ import annotations

import dataclasses

import torch
import triton
import triton.language as tl

from .moe_common import cast


@dataclasses.dataclass(frozen=True)
class AddNorm:
    """The residual add and RMSNorm a launch runs on its input first: the launch's ``x`` is the delta, and it
    consumes ``rms_norm(residual + x) * weight`` instead of x.

    residual: ``[T, H]`` of x's dtype, unit stride along H. weight: ``[H]`` float (GPT-OSS keeps it float32).
    eps: the norm's epsilon.
    """

    residual: torch.Tensor
    weight: torch.Tensor
    eps: float

    def operands(self, x: torch.Tensor):
        """``(residual, delta, weight, new residual [T, H] to fill, eps)``: unit stride along H, as the kernels
        index them; the new residual is a fresh tensor (the launch reads the old one while one program writes)."""
        residual = self.residual if self.residual.stride(-1) == 1 else self.residual.contiguous()
        delta = x if x.stride(-1) == 1 else x.contiguous()
        new_residual = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        return residual, delta, self.weight.contiguous(), new_residual, float(self.eps)


@triton.jit
def residual_sum(residual, delta, INTERPRETED: tl.constexpr):
    """float32 ``residual + delta`` (loaded values, any shape) rounded to the residual's dtype, as torch adds two
    tensors of that dtype."""
    return cast(residual.to(tl.float32) + delta.to(tl.float32), residual.dtype, INTERPRETED).to(tl.float32)


@triton.jit
def inverse_rms(sum_of_squares, count, eps):
    """``1 / sqrt(sum_of_squares / count + eps)`` in float32, each step correctly rounded."""
    ones = tl.full(sum_of_squares.shape, 1.0, tl.float32)
    mean = tl.div_rn(sum_of_squares, ones * count)
    return tl.div_rn(ones, tl.sqrt_rn(mean + eps))


@triton.jit
def normalize(s, weight, inv_rms, dtype: tl.constexpr, INTERPRETED: tl.constexpr):
    """``weight * (s * inv_rms)`` in float32 (``rms_norm``'s order), rounded once to ``dtype``."""
    return cast(weight.to(tl.float32) * (s * inv_rms), dtype, INTERPRETED)
