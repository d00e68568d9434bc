"""``x @ cat(W_0, W_1, W_2).T (+ cat(b_0, b_1, b_2))``: decode-sized projections of one input through up to three
dense (bf16 / fp16 / fp32) weights in one launch. Twin of ``mxfp4.reference.dense_gemv``.

The non-expert weights of GPT-OSS (attention q / k / v / o) stay in bf16, and at batch-1 decode they are ~1.3 GB
of the ~3.7 GB a token reads. cuBLAS runs these [1, 2880] x [2880, N] products at 0.9-1.5 TB/s on an H100 (four
launches plus split-K reduce kernels per layer); they are weight streams, bound by bytes alone (2 bytes and ~3
instructions per element), so this kernel streams them at copy bandwidth: program ``(n, s, m)`` owns ``BLOCK_N``
weight rows and the ``s``-th slice of K for activation row ``m``, reads the rows as 16-byte vectors, multiplies in
float32 and keeps a ``[BLOCK_N, BLOCK_K]`` float32 accumulator (one reduction per program, at the end). The slices
are reduced in the same launch, deterministically (``splitk.finish_tile``). q, k and v share ``x``, so one launch
covers all three: the programs of the first ``cdiv(N_0, BLOCK_N)`` tiles read ``W_0``, the next ``W_1``, the rest
``W_2``, and each writes its own columns of the one output; the weights need not be one tensor (no copy, no
change to the checkpoint's modules).

Numerics: float32 products and accumulation, bias added in float32, one rounding to ``x.dtype`` -- what
``torch.nn.functional.linear`` computes on CUDA, summed in a different order.

With ``add_norm`` (``rms_norm.AddNorm``) the launch also runs the residual add and RMSNorm in front of q/k/v: x is
the delta, every program first sums the squares of its activation row ``residual + delta`` over all of K (whatever
K slice it multiplies; the row is ~6 KB, read from L2 by all but the first) and then multiplies its weights by the
normed activations, built per step from the residual, delta and norm weight; the programs of the first tile and
slice store the new residual. One launch fewer per layer (the norm's own costs ~3 us at batch 1).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from mxfp4.dispatch import Backend

from .launch import TRITON_TYPES, check_launchable, current_stream, reduction_workspace, sm_count
from .rms_norm import AddNorm, inverse_rms, normalize, residual_sum
from .splitk import SplitPolicy, finish_tile, split_k, split_range

__all__ = ["projections", "compile_specs", "MAX_WEIGHTS", "DenseGemvConfig"]

#: Weights one launch can read (GPT-OSS's q / k / v).
MAX_WEIGHTS = 3
_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
_GRID_Z_LIMIT = 65535  # CUDA's limit on gridDim.z, which counts activation rows


@dataclass(frozen=True)
class DenseGemvConfig:
    """Launch shape: ``block_n`` weight rows per program, ``block_k`` elements per row per step."""

    block_n: int
    block_k: int
    num_warps: int
    why: str = ""
    #: With ``add_norm``: elements of the activation row per step of the RMS pass. One step for GPT-OSS's rows
    #: (2880 / 4096): the pass is a chain of dependent L2 round trips in front of the weight stream, one per step.
    row_block: int = 4096


# 8 rows x 512 bf16 = 8 KB per step per program, each thread two 16-byte pieces of W and the matching x; ~4
# programs per SM. From bench/tune.py dense-gemv on an H100 (M = 1, weights rotated past L2; bench/RESULTS.md):
# q/k/v 13.0 us (78% of copy; torch F.linear per weight 25.1, on concatenated weights 13.6), o 12.6 us (torch
# 14.0), 8192^2 51.9 us (89%; torch 48.7). 54 shapes tried (8/16/32 rows x 128/256/512 x 4/8 warps x 4/8/16
# programs per SM); 16 x 256 at 8 per SM: 15.9 / 13.1 / 50.1 us.
CONFIG = DenseGemvConfig(block_n=8, block_k=512, num_warps=4, why="H100 sweep, q/k/v and o of GPT-OSS")
SPLIT = SplitPolicy(programs_per_sm=4, min_steps=2)
# Under TRITON_INTERPRET=1: small tiles so CI shapes still take several steps, split K and mask a tail.
INTERPRETER_CONFIG = DenseGemvConfig(block_n=8, block_k=32, num_warps=4, why="interpreter", row_block=64)


def projections(x: torch.Tensor, weights, biases=None, *, add_norm: AddNorm | None = None):
    """``[M, N_0 + N_1 + ...]``: ``x @ W_i.T + b_i`` for each weight, side by side, in ``x.dtype``.

    Args:
        x: ``[M, K]`` bfloat16 / float16 / float32 on a CUDA device (or the CPU under ``TRITON_INTERPRET=1``).
        weights: 1 to 3 tensors ``[N_i, K]`` of x's dtype and device (``nn.Linear.weight`` layout).
        biases: None, or one entry per weight: None or ``[N_i]`` of x's dtype (all None or all tensors).
        add_norm: a :class:`mxfp4.triton_kernels.rms_norm.AddNorm` (residual ``[M, K]`` of x's dtype, weight
            ``[K]``): x is then the delta, and the projections are of ``rms_norm(residual + x) * weight``.

    Returns:
        ``[M, sum N_i]`` in ``x.dtype``; columns ``N_0 + ... + N_{i-1}`` onward hold projection i. With
        ``add_norm``: ``(residual + x, that output)``.

    >>> qkv = projections(x, (q_proj.weight, k_proj.weight, v_proj.weight), (q_proj.bias, k_proj.bias, v_proj.bias))
    >>> q, k, v = qkv.split([4096, 512, 512], dim=-1)
    >>> new_residual, qkv = projections(pending, (q_proj.weight, k_proj.weight, v_proj.weight),
    ...                                 add_norm=AddNorm(residual, input_layernorm.weight, 1e-5))
    """
    weights, biases = _check(x, weights, biases)
    if add_norm is not None:
        _check_add_norm(x, add_norm)
        residual, x, norm_weight, new_residual, eps = add_norm.operands(x)
        # The kernel reads the residual through x's arguments and the delta through its own.
        x, delta, stride_dm = residual, x, x.stride(0)
    if x.stride(1) != 1:
        x = x.contiguous()
    M, K = x.shape
    widths = [w.shape[0] for w in weights]
    out = torch.empty((M, sum(widths)), dtype=x.dtype, device=x.device)
    if M == 0 or out.shape[1] == 0 or K == 0:
        if K == 0:  # an empty row (normalized or not): only the biases are left
            out.copy_(torch.cat(biases)[None, :].expand_as(out)) if biases else out.zero_()
        return out if add_norm is None else (new_residual.copy_(x + delta), out)
    if add_norm is None:  # never touched (ADD_NORM is a constexpr)
        delta = norm_weight = new_residual = x
        stride_dm, eps = 0, 0.0
    interpreted = not x.is_cuda
    device_index = -1 if interpreted else x.get_device()
    cfg, grid, k_per_split = _plan(M, tuple(widths), K, device_index, interpreted)
    stream = 0 if interpreted else current_stream(device_index)
    tiles = grid[0] * M if grid[1] > 1 else 0
    partials, counters = reduction_workspace(_WORKSPACES, x.device, stream, tiles * cfg.block_n * grid[1], tiles)
    padded = list(weights) + [weights[0]] * (MAX_WEIGHTS - len(weights))
    padded_bias = (list(biases) + [biases[0]] * (MAX_WEIGHTS - len(biases))) if biases else [out] * MAX_WEIGHTS
    padded_widths = widths + [0] * (MAX_WEIGHTS - len(widths))
    projection_gemv_kernel[grid](
        x, *padded, *padded_bias, out, partials, counters, delta, norm_weight, new_residual, eps,
        M, K, *padded_widths, k_per_split,
        x.stride(0), *(w.stride(0) for w in padded), out.stride(0), stride_dm,
        BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, HAS_BIAS=bool(biases), ADD_NORM=add_norm is not None,
        ROW_BLOCK=row_block(cfg, K) if add_norm is not None else 1, INTERPRETED=interpreted,
        num_warps=cfg.num_warps,
    )
    return out if add_norm is None else (new_residual, out)


def _check(x, weights, biases):
    """Validate the launch's inputs (named errors, before any kernel runs); weights made unit-stride along K."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError(f"projections: x must be a 2-D tensor [M, K], got {getattr(x, 'shape', type(x))}")
    if x.dtype not in _DTYPES:
        raise TypeError(f"projections: x must be bfloat16, float16 or float32, got {x.dtype}")
    check_launchable(x, "projections")
    if isinstance(weights, torch.Tensor):
        weights = (weights,)
    weights = tuple(weights)
    if not 1 <= len(weights) <= MAX_WEIGHTS:
        raise ValueError(f"projections takes 1 to {MAX_WEIGHTS} weights, got {len(weights)}")
    K = x.shape[1]
    checked = []
    for i, w in enumerate(weights):
        if not isinstance(w, torch.Tensor) or w.dim() != 2 or w.shape[1] != K:
            raise ValueError(f"projections: weight {i} must be [N, {K}] to match x {tuple(x.shape)}, "
                             f"got {tuple(getattr(w, 'shape', ()))}")
        if w.dtype != x.dtype or w.device != x.device:
            raise TypeError(f"projections: weight {i} is {w.dtype} on {w.device}, x is {x.dtype} on {x.device}; "
                            "they must match")
        checked.append(w if w.stride(1) == 1 else w.contiguous())
    if biases is None or all(b is None for b in biases):
        return tuple(checked), ()
    biases = tuple(biases)
    if len(biases) != len(weights) or any(b is None for b in biases):
        raise ValueError(f"projections: give a bias for every weight or none ({len(weights)} weights, biases "
                         f"{[None if b is None else tuple(b.shape) for b in biases]})")
    for i, (b, w) in enumerate(zip(biases, checked)):
        if b.shape != (w.shape[0],) or b.dtype != x.dtype or b.device != x.device:
            raise ValueError(f"projections: bias {i} must be [{w.shape[0]}] {x.dtype} on {x.device}, got "
                             f"{tuple(b.shape)} {b.dtype} on {b.device}")
    return tuple(checked), tuple(b.contiguous() for b in biases)


def row_block(cfg: DenseGemvConfig, K: int) -> int:
    """The RMS pass's step for rows of K elements: the whole row (a power of two) up to ``cfg.row_block``."""
    return min(triton.next_power_of_2(K), cfg.row_block)


def _check_add_norm(x, add_norm: AddNorm) -> None:
    residual, weight = add_norm.residual, add_norm.weight
    if not isinstance(residual, torch.Tensor) or residual.shape != x.shape or residual.dtype != x.dtype \
            or residual.device != x.device:
        raise ValueError(f"projections: add_norm.residual must match x ({tuple(x.shape)} {x.dtype} on {x.device}), "
                         f"got {getattr(residual, 'shape', type(residual))}")
    if not isinstance(weight, torch.Tensor) or tuple(weight.shape) != (x.shape[1],) or not weight.is_floating_point() \
            or weight.device != x.device:
        raise ValueError(f"projections: add_norm.weight must be a float [K] = [{x.shape[1]}] tensor on {x.device}, "
                         f"got {getattr(weight, 'shape', type(weight))}")


_WORKSPACES: dict = {}


@functools.lru_cache(maxsize=1024)
def _plan(M: int, widths: tuple, K: int, device_index: int, interpreted: bool):
    """(config, grid, k_per_split) for one shape; K split so that every SM gets ~SPLIT.programs_per_sm programs."""
    if M > _GRID_Z_LIMIT:
        raise ValueError(f"projections is a decode-sized GEMV: M = {M} rows is more than {_GRID_Z_LIMIT}; use a "
                         "GEMM (torch.nn.functional.linear)")
    cfg = INTERPRETER_CONFIG if interpreted else CONFIG
    num_sms = 2 if interpreted else sm_count(device_index)
    n_tiles = sum(triton.cdiv(n, cfg.block_n) for n in widths)
    splits, k_per_split = split_k(n_tiles * M, K, cfg.block_k, num_sms, SPLIT)
    return cfg, (n_tiles, splits, M), k_per_split


@triton.jit
def projection_gemv_kernel(
    x_ptr, w0_ptr, w1_ptr, w2_ptr, b0_ptr, b1_ptr, b2_ptr, out_ptr, partials_ptr, counters_ptr,
    delta_ptr, norm_w_ptr, new_residual_ptr, eps,
    M, K, n0, n1, n2, k_per_split,
    stride_xm, stride_w0, stride_w1, stride_w2, stride_om, stride_dm,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, HAS_BIAS: tl.constexpr, ADD_NORM: tl.constexpr = False,
    ROW_BLOCK: tl.constexpr = 1, INTERPRETED: tl.constexpr = False,
):
    """out[m, c_i + n] = sum_k x[m, k] * W_i[n, k] (+ b_i[n]) with c_i = n_0 + ... + n_{i-1}; grid
    (tiles of all weights, K slices, M). ``ADD_NORM``: x is the residual, the activations are
    ``rms_norm(x + delta) * norm_w``, and the programs of tile 0, slice 0 store ``x + delta``."""
    pid_n = tl.program_id(0)
    split = tl.program_id(1)
    row = tl.program_id(2)
    tiles0 = tl.cdiv(n0, BLOCK_N)
    tiles01 = tiles0 + tl.cdiv(n1, BLOCK_N)
    if pid_n < tiles0:
        w_ptr, b_ptr, n, stride_w, first_col, first_tile = w0_ptr, b0_ptr, n0, stride_w0, 0, 0
    elif pid_n < tiles01:
        w_ptr, b_ptr, n, stride_w, first_col, first_tile = w1_ptr, b1_ptr, n1, stride_w1, n0, tiles0
    else:
        w_ptr, b_ptr, n, stride_w, first_col, first_tile = w2_ptr, b2_ptr, n2, stride_w2, n0 + n1, tiles01
    offs_n = (pid_n - first_tile) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    # Clamped rows keep every load in bounds without a row mask (so loads stay 16-byte vectors); never stored.
    w_rows = tl.minimum(offs_n, n - 1).to(tl.int64)
    w_ptrs = w_ptr + w_rows[:, None] * stride_w + offs_k[None, :]
    # x is read as a [BLOCK_N, BLOCK_K] tile with a zero row stride, in the weight tile's layout: each thread loads
    # the activations it multiplies (L1 hits after the first), and no shared-memory exchange is needed per step.
    in_row = offs_k[None, :] + tl.zeros([BLOCK_N, 1], dtype=tl.int32)
    x_ptrs = x_ptr + row.to(tl.int64) * stride_xm + in_row
    if ADD_NORM:
        delta_ptrs = delta_ptr + row.to(tl.int64) * stride_dm + in_row
        norm_w_ptrs = norm_w_ptr + in_row
        inv_rms = _row_inverse_rms(x_ptr, delta_ptr, new_residual_ptr, row, K, eps, stride_xm, stride_dm,
                                   (pid_n == 0) & (split == 0), ROW_BLOCK, INTERPRETED)

    begin, end, full_end = split_range(split, k_per_split, K, K, BLOCK_K)
    acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    for k0 in range(begin, full_end, BLOCK_K):
        if ADD_NORM:
            s = residual_sum(tl.load(x_ptrs + k0), tl.load(delta_ptrs + k0), INTERPRETED)
            x = normalize(s, tl.load(norm_w_ptrs + k0), inv_rms, x_ptr.dtype.element_ty, INTERPRETED)
        else:
            x = tl.load(x_ptrs + k0)
        acc += tl.load(w_ptrs + k0).to(tl.float32) * x.to(tl.float32)
    if full_end < end:  # at most one step: the slice's remainder (the last slice's may end at K)
        live = (full_end + offs_k < end)[None, :]
        w = tl.load(w_ptrs + full_end, mask=live, other=0.0).to(tl.float32)
        if ADD_NORM:  # past the end: s = 0 and weight 0, so the activation is 0
            s = residual_sum(tl.load(x_ptrs + full_end, mask=live, other=0.0),
                             tl.load(delta_ptrs + full_end, mask=live, other=0.0), INTERPRETED)
            x = normalize(s, tl.load(norm_w_ptrs + full_end, mask=live, other=0.0), inv_rms,
                          x_ptr.dtype.element_ty, INTERPRETED)
        else:
            x = tl.load(x_ptrs + full_end, mask=live, other=0.0)
        acc += w * x.to(tl.float32)
    tile = row * tl.num_programs(0) + pid_n
    offs_m = row + tl.arange(0, 1)
    finish_tile(tl.sum(acc, axis=1)[None, :], out_ptr + first_col, b_ptr, partials_ptr, counters_ptr, tile, split,
                tl.num_programs(1), offs_m, offs_n, M, n, stride_om, 1, HAS_BIAS, 1, BLOCK_N, INTERPRETED)


@triton.jit
def _row_inverse_rms(x_ptr, delta_ptr, new_residual_ptr, row, K, eps, stride_xm, stride_dm, store,
                     ROW_BLOCK: tl.constexpr, INTERPRETED: tl.constexpr):
    """``1 / rms(x + delta)`` of activation row ``row`` over all K (a scalar), ``ROW_BLOCK`` elements per step;
    where ``store``, also writes the row ``x + delta`` to ``new_residual`` (contiguous ``[M, K]``)."""
    offs = tl.arange(0, ROW_BLOCK)
    # Written as a bound on k, not `live & store`: the interpreter rejects a mask of a tensor and a scalar anded.
    stored_k = tl.where(store, K, 0)
    squares = tl.zeros([ROW_BLOCK], dtype=tl.float32)
    for k0 in range(0, K, ROW_BLOCK):
        k = k0 + offs
        live = k < K
        s = residual_sum(tl.load(x_ptr + row.to(tl.int64) * stride_xm + k, mask=live, other=0.0),
                         tl.load(delta_ptr + row.to(tl.int64) * stride_dm + k, mask=live, other=0.0), INTERPRETED)
        squares += s * s
        tl.store(new_residual_ptr + row.to(tl.int64) * K + k, s.to(x_ptr.dtype.element_ty), mask=k < stored_k)
    return inverse_rms(tl.sum(squares, axis=0), K, eps)


# --- ahead-of-time compile list -------------------------------------------------------------------------------------
def compile_specs(backend) -> list[dict]:
    """The variants the model's decode launches, per activation dtype the path serves (``aot.py``'s contract)."""
    dtypes = (torch.float16, torch.float32) if Backend(backend) is Backend.FP32 else _DTYPES
    specs = []
    for dtype in dtypes:
        t = TRITON_TYPES[dtype]
        for has_bias, add_norm in ((True, False), (False, False), (True, True)):  # q/k/v of GPT-OSS: bias, norm
            signature = {
                "x_ptr": f"*{t}", "w0_ptr": f"*{t}", "w1_ptr": f"*{t}", "w2_ptr": f"*{t}",
                "b0_ptr": f"*{t}", "b1_ptr": f"*{t}", "b2_ptr": f"*{t}", "out_ptr": f"*{t}",
                "partials_ptr": "*fp32", "counters_ptr": "*i32",
                "delta_ptr": f"*{t}", "norm_w_ptr": "*fp32", "new_residual_ptr": f"*{t}", "eps": "fp32",
                "M": "i32", "K": "i32", "n0": "i32", "n1": "i32", "n2": "i32", "k_per_split": "i32",
                "stride_xm": "i32", "stride_w0": "i32", "stride_w1": "i32", "stride_w2": "i32", "stride_om": "i32",
                "stride_dm": "i32",
                "BLOCK_N": "constexpr", "BLOCK_K": "constexpr", "HAS_BIAS": "constexpr", "ADD_NORM": "constexpr",
                "ROW_BLOCK": "constexpr", "INTERPRETED": "constexpr",
            }
            specs.append({
                "name": (f"projection_gemv_{t}_{'bias' if has_bias else 'nobias'}{'_addnorm' if add_norm else ''}"
                         f"_n{CONFIG.block_n}_k{CONFIG.block_k}"),
                "fn": projection_gemv_kernel, "signature": signature,
                "constexprs": {"BLOCK_N": CONFIG.block_n, "BLOCK_K": CONFIG.block_k, "HAS_BIAS": has_bias,
                               "ADD_NORM": add_norm, "ROW_BLOCK": row_block(CONFIG, 2880) if add_norm else 1,
                               "INTERPRETED": False},
                "num_warps": CONFIG.num_warps, "num_stages": 1,
                # GPT-OSS: K = 2880 / 4096, N = 4096 / 512 / 2880, row strides the same: all multiples of 16.
                "divisible_by_16": ["K", "n0", "n1", "n2", "k_per_split", "stride_xm", "stride_w0", "stride_w1",
                                    "stride_w2", "stride_om", "stride_dm"],
            })
    return specs
