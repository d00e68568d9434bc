"""``mxfp4.moe`` (defined here, in ``mxfp4.moe_layer``, so the function never shares a name with a module): the GPT-OSS mixture-of-experts layer with MXFP4 expert weights, never materialized as bf16.

Validation and dispatch live here; the kernels (``mxfp4.triton_kernels.moe``) trust what this module checked.
The math is ``mxfp4.reference.moe`` (transformers' ``GptOssMLP``): router logits, top-k (equal logits go to the
lowest expert index first), softmax over the k selected logits, per expert ``x @ W1.T + b1`` with gate/up
interleaved (gate = even rows of W1, up = odd rows), the clamped SwiGLU, ``@ W2.T + b2``, and the weighted sum
over the k experts of each token.
"""

from __future__ import annotations

import math
import numbers

import torch

from .dispatch import Backend, choose_backend
from .reference.moe_gate_up import SWIGLU_ALPHA, SWIGLU_LIMIT  # GPT-OSS's constants, defined once
from .tensor import MXFP4Tensor

_ACTIVATION_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def moe(
    x: torch.Tensor,
    router_w: torch.Tensor,
    router_b: torch.Tensor,
    w1: MXFP4Tensor,
    b1: torch.Tensor,
    w2: MXFP4Tensor,
    b2: torch.Tensor,
    top_k: int,
    *,
    swiglu_alpha: float = SWIGLU_ALPHA,
    swiglu_limit: float = SWIGLU_LIMIT,
    backend=None,
    residual: torch.Tensor | None = None,
    norm_weight: torch.Tensor | None = None,
    norm_eps: float = 1e-5,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The GPT-OSS MoE layer: route each token to ``top_k`` experts and sum their weighted SwiGLU MLPs.

    Args:
        x: ``[T, H]`` bfloat16, float16 or float32 activations (float64 too on the torch path). T may be 0.
        router_w: ``[E, H]`` router weight (any float dtype); router_b: ``[E]``.
        w1: :class:`MXFP4Tensor` of logical shape ``[E, 2I, H]`` quantized along H (axis 2): the checkpoint's
            ``gate_up_proj_blocks/scales``. Row ``2j`` is gate feature j, row ``2j+1`` is up feature j.
        b1: ``[E, 2I]`` gate_up bias (interleaved like w1's rows).
        w2: :class:`MXFP4Tensor` of logical shape ``[E, H, I]`` quantized along I: ``down_proj_blocks/scales``.
        b2: ``[E, H]`` down bias.
        top_k: experts per token, ``1 <= top_k <= E``.
        swiglu_alpha, swiglu_limit: the clamped SwiGLU's constants (GPT-OSS: 1.702 and 7.0).
        backend: ``None``/``"auto"``, ``"hopper"``, ``"bf16"``, ``"fp32"`` or ``"torch"`` (see :mod:`mxfp4.dispatch`).
        residual, norm_weight, norm_eps: the pre-norm block in front of the MoE, fused into it. With ``residual``
            (``[T, H]``, x's dtype and device) and ``norm_weight`` (``[H]``, any float dtype; GPT-OSS keeps it
            float32), x is the sublayer output to add: the MoE runs on ``rms_norm(residual + x) * norm_weight``
            (the sum rounded to x's dtype, the norm in float32 and rounded once) and the result is the pair
            ``(residual + x, MoE output)``. The Triton paths do the add and the norm inside the router's launch.

    Returns:
        ``[T, H]`` in ``x.dtype`` on ``x.device`` (with ``residual``: ``(new residual, output)``, both so).

    Numerics: routing (router GEMM, top-k, softmax) is computed in float32 on every path. The torch path
    dequantizes one expert at a time to float32 (float64 for float64 input). The ``hopper``/``bf16`` paths feed
    bfloat16 operands to the tensor cores (activations rounded to bf16; MXFP4 weights are exact in bf16) with
    float32 accumulation; the ``fp32`` path keeps everything in float32. Every path is deterministic (bitwise
    run to run, no atomics): the Triton paths sum a token's k contributions in slot order, the torch path in
    expert order.

    Raises:
        TypeError: an argument has the wrong type or dtype.
        ValueError: shapes disagree (the message names both), tensors are on different devices, top_k is out of
            range.
        BackendUnavailableError: a forced backend cannot run here.

    >>> E, H, I = 4, 64, 32
    >>> w1 = mxfp4.quantize(torch.randn(E, 2 * I, H))
    >>> w2 = mxfp4.quantize(torch.randn(E, H, I))
    >>> y = mxfp4.moe(torch.randn(3, H), torch.randn(E, H), torch.zeros(E), w1, torch.zeros(E, 2 * I), w2,
    ...               torch.zeros(E, H), top_k=2)                       # [3, 64] float32
    """
    num_experts, hidden, intermediate = _validate(x, router_w, router_b, w1, b1, w2, b2, top_k, swiglu_alpha, swiglu_limit)
    fused_norm = _validate_add_norm(x, residual, norm_weight, norm_eps)
    path = choose_backend(x.device, backend)
    if path is not Backend.TORCH and x.dtype == torch.float64:
        raise TypeError(f"the {path.value!r} path takes bfloat16, float16 or float32 activations, got float64 (use backend='torch')")
    tokens = x.shape[0]
    if tokens == 0:
        return (residual + x, x.new_empty((0, hidden))) if fused_norm else x.new_empty((0, hidden))
    alpha, limit = float(swiglu_alpha), float(swiglu_limit)
    if path is Backend.TORCH:
        if not fused_norm:
            return _moe_torch(x, router_w, router_b, w1, b1, w2, b2, top_k, alpha, limit)
        new_residual, normed = add_rms_norm_torch(residual, x, norm_weight, float(norm_eps))
        return new_residual, _moe_torch(normed, router_w, router_b, w1, b1, w2, b2, top_k, alpha, limit)
    from .triton_kernels.moe import moe as moe_kernels
    from .triton_kernels.rms_norm import AddNorm

    return moe_kernels(
        x, router_w, router_b, w1.blocks, w1.scales, b1, w2.blocks, w2.scales, b2, top_k, alpha, limit, path,
        add_norm=AddNorm(residual, norm_weight, float(norm_eps)) if fused_norm else None,
    )


# --- validation -------------------------------------------------------------------------------------------------
def _validate(x, router_w, router_b, w1, b1, w2, b2, top_k, alpha, limit) -> tuple[int, int, int]:
    for name, t in (("x", x), ("router_w", router_w), ("router_b", router_b), ("b1", b1), ("b2", b2)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"moe: {name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"moe: {name} must be floating point, got {t.dtype}")
    for name, w in (("w1", w1), ("w2", w2)):
        if not isinstance(w, MXFP4Tensor):
            raise TypeError(f"moe: {name} must be an MXFP4Tensor (expert weights in MXFP4), got {type(w).__name__}")
    if x.dtype not in _ACTIVATION_DTYPES + (torch.float64,):
        raise TypeError(f"moe: x must be bfloat16, float16 or float32, got {x.dtype}")
    if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral):
        raise TypeError(f"moe: top_k must be an int, got {type(top_k).__name__}")
    for name, value in (("swiglu_alpha", alpha), ("swiglu_limit", limit)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"moe: {name} must be a finite real number, got {value!r}")
    if x.dim() != 2:
        raise ValueError(f"moe: x must be [T, H] (flatten batch and sequence first), got shape {tuple(x.shape)}")
    tokens, hidden = x.shape
    if hidden == 0:
        raise ValueError("moe: x has H = 0 features")
    if router_w.dim() != 2 or router_w.shape[1] != hidden:
        raise ValueError(f"moe: router_w must be [E, H] = [E, {hidden}] to match x {tuple(x.shape)}, got {tuple(router_w.shape)}")
    num_experts = router_w.shape[0]
    if num_experts == 0:
        raise ValueError("moe: router_w has E = 0 experts")
    if tuple(router_b.shape) != (num_experts,):
        raise ValueError(f"moe: router_b must be [E] = [{num_experts}] to match router_w {tuple(router_w.shape)}, got {tuple(router_b.shape)}")
    if w1.ndim != 3 or w1.axis != 2:
        raise ValueError(f"moe: w1 must be [E, 2I, H] quantized along H (axis 2), got shape {tuple(w1.shape)} quantized along axis {w1.axis}")
    if w2.ndim != 3 or w2.axis != 2:
        raise ValueError(f"moe: w2 must be [E, H, I] quantized along I (axis 2), got shape {tuple(w2.shape)} quantized along axis {w2.axis}")
    if w1.shape[0] != num_experts or w1.shape[2] != hidden:
        raise ValueError(
            f"moe: w1 {tuple(w1.shape)} must be [E, 2I, H] with E = {num_experts} (router_w) and H = {hidden} (x)"
        )
    if w1.shape[1] == 0 or w1.shape[1] % 2:
        raise ValueError(f"moe: w1 {tuple(w1.shape)} must have an even, non-zero 2I rows (gate/up interleaved)")
    intermediate = w1.shape[1] // 2
    if tuple(w2.shape) != (num_experts, hidden, intermediate):
        raise ValueError(
            f"moe: w2 {tuple(w2.shape)} must be [E, H, I] = {(num_experts, hidden, intermediate)} "
            f"(E from router_w, H from x, I = w1 rows / 2 with w1 {tuple(w1.shape)})"
        )
    if tuple(b1.shape) != (num_experts, 2 * intermediate):
        raise ValueError(f"moe: b1 must be [E, 2I] = {(num_experts, 2 * intermediate)} to match w1 {tuple(w1.shape)}, got {tuple(b1.shape)}")
    if tuple(b2.shape) != (num_experts, hidden):
        raise ValueError(f"moe: b2 must be [E, H] = {(num_experts, hidden)} to match w2 {tuple(w2.shape)}, got {tuple(b2.shape)}")
    if not 1 <= top_k <= num_experts:
        raise ValueError(f"moe: top_k = {top_k} must be in [1, E] = [1, {num_experts}]")
    for name, device in (("router_w", router_w.device), ("router_b", router_b.device), ("w1", w1.device),
                         ("b1", b1.device), ("w2", w2.device), ("b2", b2.device)):
        if device != x.device:
            raise ValueError(f"moe: {name} is on {device} but x is on {x.device}; move every argument to one device")
    return num_experts, hidden, intermediate


def _validate_add_norm(x, residual, norm_weight, eps) -> bool:
    """Whether the fused pre-norm is asked for; when it is, its arguments are checked against x (named errors)."""
    if residual is None and norm_weight is None:
        return False
    if residual is None or norm_weight is None:
        raise ValueError("moe: the fused add + RMSNorm needs both residual and norm_weight (or neither)")
    if not isinstance(residual, torch.Tensor) or not isinstance(norm_weight, torch.Tensor):
        raise TypeError(f"moe: residual and norm_weight must be torch.Tensors, got {type(residual).__name__} and "
                        f"{type(norm_weight).__name__}")
    if residual.shape != x.shape or residual.dtype != x.dtype or residual.device != x.device:
        raise ValueError(f"moe: residual must match x ({tuple(x.shape)} {x.dtype} on {x.device}), got "
                         f"{tuple(residual.shape)} {residual.dtype} on {residual.device}")
    if tuple(norm_weight.shape) != (x.shape[1],) or not norm_weight.is_floating_point():
        raise ValueError(f"moe: norm_weight must be a float [H] = [{x.shape[1]}] tensor, got "
                         f"{tuple(norm_weight.shape)} {norm_weight.dtype}")
    if norm_weight.device != x.device:
        raise ValueError(f"moe: norm_weight is on {norm_weight.device} but x is on {x.device}")
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not math.isfinite(eps) or eps < 0:
        raise ValueError(f"moe: norm_eps must be a finite real number >= 0, got {eps!r}")
    return True


# --- the torch path ---------------------------------------------------------------------------------------------
def add_rms_norm_torch(residual: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor, eps: float):
    """``(residual + delta, rms_norm(residual + delta) * weight)``: the sum in the inputs' dtype, the norm in
    float32 (float64 for float64) rounded once, as ``mxfp4.models.gpt_oss.rms_norm``."""
    new_residual = residual + delta
    compute = torch.float64 if new_residual.dtype == torch.float64 else torch.float32
    s = new_residual.to(compute)
    normed = s * torch.rsqrt(s.pow(2).mean(-1, keepdim=True) + eps)
    return new_residual, (weight.to(compute) * normed).to(new_residual.dtype)


def route_torch(x: torch.Tensor, router_w: torch.Tensor, router_b: torch.Tensor, top_k: int, compute=torch.float32):
    """``(expert_ids int64 [T, k], weights [T, k] in compute)``: top-k of ``x @ Wr.T + br``, softmax over the k.

    Equal logits go to the lowest expert index first (stable descending sort); NaN logits rank as -inf.
    """
    logits = x.to(compute) @ router_w.to(compute).T + router_b.to(compute)
    key = torch.where(torch.isnan(logits), torch.full_like(logits, -math.inf), logits)
    ids = torch.sort(key, dim=-1, descending=True, stable=True).indices[:, :top_k]
    weights = torch.softmax(torch.gather(logits, 1, ids), dim=-1)
    return ids, weights


def swiglu_torch(gate_up: torch.Tensor, alpha: float, limit: float) -> torch.Tensor:
    """GPT-OSS clamped SwiGLU of interleaved ``gate_up [rows, 2I]`` -> ``[rows, I]`` (same dtype)."""
    gate = gate_up[:, 0::2].clamp(max=limit)
    up = gate_up[:, 1::2].clamp(min=-limit, max=limit)
    return (up + 1) * (gate * torch.sigmoid(alpha * gate))


def _moe_torch(x, router_w, router_b, w1, b1, w2, b2, top_k, alpha, limit) -> torch.Tensor:
    """Loop over the experts that received tokens; one expert's weights dequantized at a time, in float32."""
    from . import torch_ops

    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    ids, weights = route_torch(x, router_w, router_b, top_k, compute)
    xc = x.to(compute)
    out = torch.zeros(x.shape, dtype=compute, device=x.device)
    hidden, intermediate = x.shape[1], w2.shape[2]
    for expert in torch.unique(ids).tolist():
        token_idx, slot = torch.nonzero(ids == expert, as_tuple=True)
        gate_up_w = torch_ops.dequantize(w1.blocks[expert], w1.scales[expert], compute, hidden)  # [2I, H]
        act = swiglu_torch(xc[token_idx] @ gate_up_w.T + b1[expert].to(compute), alpha, limit)
        del gate_up_w
        down_w = torch_ops.dequantize(w2.blocks[expert], w2.scales[expert], compute, intermediate)  # [H, I]
        y = act @ down_w.T + b2[expert].to(compute)
        del down_w
        out.index_add_(0, token_idx, y * weights[token_idx, slot, None])
    return out.to(x.dtype)
