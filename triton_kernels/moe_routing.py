"""MoE routing: router logits, top-k and the softmax over the k selected logits.

Twin of ``mxfp4.reference.moe_routing.route``. Routing decisions flip on tiny logit differences, so the router GEMM
``x @ Wr.T + br`` is exact products accumulated in float32 on every path: the router never sees activations rounded
below their own precision. Then k rounds of "largest remaining logit, lowest expert index among equals" pick the
experts, and the softmax runs over the k picked logits. Fixed grids, no host synchronization: CUDA-graph capturable.

Two kernels, by the number of tokens:

* Decode (``T <= ROUTE_BLOCK_T``): the router weight (E x H, 184 KB bf16 for gpt-oss-20b) is the only real traffic,
  and one program reading it alone takes ~100 us (a single SM's loads in flight). So program ``e`` computes expert
  ``e``'s logits for all tokens (its router row, one contiguous 5.8 KB stream, float32 FMAs), publishes them to a
  small workspace and bumps a counter; the last program to arrive picks the experts for every token -- and, when
  asked, also sorts the (token, slot) pairs by expert, replacing the ``moe_sort`` launch. One launch either way.
* Prefill: one program per ``ROUTE_BLOCK_T`` tokens runs the router GEMM as ``tl.dot`` over H. When activations
  and router weight are the same 16-bit type, the tensor cores take them as they are (their products are exact in
  float32, accumulated in float32); otherwise (float32, or mixed types) an IEEE float32 dot.

Both kernels can also run the transformer block's residual add and RMSNorm in front of the router (``add_norm``):
a GPT-OSS block routes ``rms_norm(residual + attention output)``, and the norm of a few tokens is a launch of its
own otherwise (~3 us per layer at batch 1, for ~20 KB of traffic). Each program then reads the residual and the
delta rows it routes, computes the sum (rounded to the residual's dtype, as torch's add), its RMS and the normed
rows (float32, rounded once, as ``mxfp4.models.gpt_oss.rms_norm``), and routes those; the programs that own the
rows (program 0 of the decode kernel, each prefill program for its tokens) also store the new residual and the
normed rows, which the expert GEMMs then read.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mxfp4.dispatch import triton_interpreter_enabled

from .launch import current_stream, reduction_workspace
from .moe_common import next_power_of_2_at_least
from .rms_norm import AddNorm, inverse_rms, normalize, residual_sum

#: Tokens per program of the prefill kernel (tensor-core dots need every dim >= 16), and the most tokens the
#: decode kernel routes (its last program holds all of them).
ROUTE_BLOCK_T = 16
ROUTE_BLOCK_H = 64
#: Prefill kernel with ``add_norm``: columns per step of the RMS pass (its loads are not pipelined like the dot's,
#: so each step is an L2 round trip: 12 for H = 2880 instead of 45 at ROUTE_BLOCK_H).
ROUTE_NORM_BLOCK_H = 256
ROUTE_NUM_WARPS = 4
#: Decode kernel: elements of the [tokens, H] activation tile per K step (4 warps: 32 per thread).
DECODE_TILE_ELEMENTS = 4096

_WORKSPACES: dict = {}


def route(x: torch.Tensor, router_w: torch.Tensor, router_b: torch.Tensor, top_k: int, *, sort: bool = False,
          add_norm: AddNorm | None = None):
    """``(expert_ids int32 [T, k], weights float32 [T, k])`` of ``x [T, H]`` for router ``[E, H]`` + ``[E]``.

    Slots come in decreasing logit order; equal logits go to the lowest expert index first; NaN logits rank as
    -inf (never an out-of-range expert) while the softmax still sees them.

    With ``sort=True`` and ``T <= ROUTE_BLOCK_T`` (a decode step) the kernel also sorts the pairs by expert,
    saving the ``moe_sort`` launch, and returns ``(ids, weights, counts int32 [E], sorted_pairs int32 [P])``
    exactly as ``moe_sort.sort_by_expert`` would.

    With ``add_norm`` (:class:`AddNorm`), x is the delta added to ``add_norm.residual``; the tokens routed are
    ``normed = rms_norm(residual + x) * weight``, and two more tensors end the tuple: the new residual
    ``residual + x`` and ``normed``, both ``[T, H]`` in x's dtype.

    >>> ids, w = route(torch.randn(3, 64), torch.randn(8, 64), torch.zeros(8), 2)    # [3, 2] int32, [3, 2] fp32
    >>> ids, w, new_residual, normed = route(attn_out, rw, rb, 4, add_norm=AddNorm(residual, norm_w, 1e-5))
    """
    tokens, hidden = x.shape
    num_experts = router_w.shape[0]
    decode = tokens <= ROUTE_BLOCK_T
    if sort and not decode:
        raise ValueError(f"route(sort=True) sorts in one program: at most {ROUTE_BLOCK_T} tokens, got {tokens}")
    ids = torch.empty((tokens, top_k), dtype=torch.int32, device=x.device)
    weights = torch.empty((tokens, top_k), dtype=torch.float32, device=x.device)
    if sort:
        counts = torch.empty((num_experts,), dtype=torch.int32, device=x.device)
        sorted_pairs = torch.empty((tokens * top_k,), dtype=torch.int32, device=x.device)
    else:  # never touched (FUSED_SORT is a constexpr); any valid int32 pointer will do
        counts = sorted_pairs = ids
    router_w = router_w.contiguous()
    router_b = router_b.contiguous()
    block_e = route_block_e(num_experts)
    if add_norm is not None:
        residual, delta, norm_weight, new_residual, eps = add_norm.operands(x)
        normed = torch.empty((tokens, hidden), dtype=x.dtype, device=x.device)
        # The kernels read the residual through x's arguments and the delta through their own.
        x, stride_dt = residual, delta.stride(0)
    else:  # never touched (ADD_NORM is a constexpr)
        delta = norm_weight = new_residual = normed = x
        stride_dt, eps = 0, 0.0
    norm_args = (delta, norm_weight, new_residual, normed, eps)
    if decode:
        block_t = triton.next_power_of_2(tokens)
        logits, counters = reduction_workspace(_WORKSPACES, x.device, current_stream(x.get_device()),
                                               ROUTE_BLOCK_T * block_e, 1)
        route_decode_kernel[(num_experts,)](
            x, router_w, router_b, ids, weights, counts, sorted_pairs, logits, counters, *norm_args,
            tokens, hidden, num_experts, top_k, x.stride(0), x.stride(1), stride_dt,
            BLOCK_T=block_t, BLOCK_H=decode_block_h(block_t, hidden), BLOCK_E=block_e, FUSED_SORT=sort,
            ADD_NORM=add_norm is not None, INTERPRETED=triton_interpreter_enabled(), num_warps=ROUTE_NUM_WARPS,
        )
    else:
        route_topk_softmax_kernel[(triton.cdiv(tokens, ROUTE_BLOCK_T),)](
            x, router_w, router_b, ids, weights, counts, sorted_pairs, *norm_args,
            tokens, hidden, num_experts, top_k, x.stride(0), x.stride(1), stride_dt,
            BLOCK_T=ROUTE_BLOCK_T, BLOCK_H=ROUTE_BLOCK_H, BLOCK_E=block_e,
            NATIVE_DOT=native_dot(x.dtype, router_w.dtype), ADD_NORM=add_norm is not None,
            NORM_BLOCK_H=ROUTE_NORM_BLOCK_H if add_norm is not None else 1, INTERPRETED=triton_interpreter_enabled(),
            num_warps=ROUTE_NUM_WARPS,
        )
    result = (ids, weights, counts, sorted_pairs) if sort else (ids, weights)
    return result + (new_residual, normed) if add_norm is not None else result


def route_block_e(num_experts: int) -> int:
    """Experts held in one register tile: a power of two, at least 16 (the dot's minimum N)."""
    return next_power_of_2_at_least(num_experts, 16)


def decode_block_h(block_t: int, hidden: int) -> int:
    """The decode kernel's K step: ``DECODE_TILE_ELEMENTS / block_t`` columns, no more than H needs."""
    return min(DECODE_TILE_ELEMENTS // block_t, triton.next_power_of_2(hidden))


def native_dot(activation: torch.dtype, weight: torch.dtype) -> bool:
    """Whether the prefill router GEMM may feed its operands to the tensor cores as they are: both the same
    16-bit type (a product of two bf16 / two fp16 values is exact in float32) and not under the interpreter
    (whose 16-bit dot is not a float dot)."""
    return activation == weight and activation in (torch.bfloat16, torch.float16) and not triton_interpreter_enabled()


#: As Triton's launcher specializes them for contiguous GPT-OSS activations (H = 2880, E = 32 / 128).
GPT_OSS_DIVISIBLE_BY_16 = ["hidden", "num_experts", "stride_xt", "stride_dt"]


def compile_specs(activation: str, num_experts: int) -> list[dict]:
    """Cubin specs (see ``mxfp4.triton_kernels.moe.compile_specs``) for activations and router of Triton type
    ``activation`` at H = 2880: the decode kernel (1 and 16 tokens, with and without the fused sort, with and
    without the fused add + norm) and the prefill kernel (with and without add + norm). Contiguous activations:
    the launcher sees ``stride_xh == 1`` and specializes it."""
    common = {
        "x_ptr": f"*{activation}", "router_w_ptr": f"*{activation}", "router_b_ptr": f"*{activation}",
        "ids_ptr": "*i32", "weights_ptr": "*fp32", "counts_ptr": "*i32", "sorted_pairs_ptr": "*i32",
    }
    norm = {"delta_ptr": f"*{activation}", "norm_w_ptr": "*fp32", "new_residual_ptr": f"*{activation}",
            "normed_ptr": f"*{activation}", "eps": "fp32"}
    scalars = {"tokens": "i32", "hidden": "i32", "num_experts": "i32", "top_k": "i32",
               "stride_xt": "i32", "stride_xh": "constexpr", "stride_dt": "i32"}
    flags = {"ADD_NORM": "constexpr", "INTERPRETED": "constexpr"}
    block_e = route_block_e(num_experts)
    specs = []
    for block_t in (1, ROUTE_BLOCK_T):
        for fused in (False, True):
            for add_norm in (False, True):
                specs.append({
                    "name": (f"moe_route_decode{'_sort' if fused else ''}{'_addnorm' if add_norm else ''}"
                             f"_t{block_t}_{activation}_e{num_experts}"),
                    "fn": route_decode_kernel,
                    "signature": {**common, "logits_ptr": "*fp32", "counters_ptr": "*i32", **norm, **scalars,
                                  "BLOCK_T": "constexpr", "BLOCK_H": "constexpr", "BLOCK_E": "constexpr",
                                  "FUSED_SORT": "constexpr", **flags},
                    "constexprs": {"stride_xh": 1, "BLOCK_T": block_t, "BLOCK_H": decode_block_h(block_t, 2880),
                                   "BLOCK_E": block_e, "FUSED_SORT": fused, "ADD_NORM": add_norm,
                                   "INTERPRETED": False},
                    "divisible_by_16": GPT_OSS_DIVISIBLE_BY_16,
                    "num_warps": ROUTE_NUM_WARPS,
                    "num_stages": 1,
                })
    native = activation in ("bf16", "fp16")
    for add_norm in (False, True):
        specs.append({
            "name": f"moe_route_topk_softmax{'_addnorm' if add_norm else ''}_{activation}_e{num_experts}",
            "fn": route_topk_softmax_kernel,
            "signature": {**common, **norm, **scalars, "BLOCK_T": "constexpr", "BLOCK_H": "constexpr",
                          "BLOCK_E": "constexpr", "NATIVE_DOT": "constexpr", "ADD_NORM": "constexpr",
                          "NORM_BLOCK_H": "constexpr", "INTERPRETED": "constexpr"},
            "constexprs": {"stride_xh": 1, "BLOCK_T": ROUTE_BLOCK_T, "BLOCK_H": ROUTE_BLOCK_H, "BLOCK_E": block_e,
                           "NATIVE_DOT": native, "ADD_NORM": add_norm,
                           "NORM_BLOCK_H": ROUTE_NORM_BLOCK_H if add_norm else 1, "INTERPRETED": False},
            "divisible_by_16": GPT_OSS_DIVISIBLE_BY_16,
            "num_warps": ROUTE_NUM_WARPS,
            "num_stages": 3,
        })
    return specs


@triton.jit
def load_activations(x_ptr, token, token_ok, h0, hidden, stride_xt, stride_xh, BLOCK_H: tl.constexpr):
    """``x[token, h0 : h0 + BLOCK_H]`` as loaded (zeros past T and H): ``[len(token), BLOCK_H]``."""
    h = h0 + tl.arange(0, BLOCK_H)
    return tl.load(x_ptr + token[:, None] * stride_xt + h[None, :] * stride_xh,
                   mask=token_ok[:, None] & (h < hidden)[None, :], other=0.0)


@triton.jit
def added_rows(x_ptr, delta_ptr, token, token_ok, h0, hidden, stride_xt, stride_xh, stride_dt,
               BLOCK_H: tl.constexpr, INTERPRETED: tl.constexpr):
    """float32 ``[len(token), BLOCK_H]``: ``x + delta`` at columns ``h0 : h0 + BLOCK_H`` rounded to x's dtype
    (``rms_norm.residual_sum``), zeros past T and H."""
    x = load_activations(x_ptr, token, token_ok, h0, hidden, stride_xt, stride_xh, BLOCK_H)
    delta = load_activations(delta_ptr, token, token_ok, h0, hidden, stride_dt, 1, BLOCK_H)
    return residual_sum(x, delta, INTERPRETED)


@triton.jit
def rows_inverse_rms(x_ptr, delta_ptr, token, token_ok, hidden, eps, stride_xt, stride_xh, stride_dt,
                     BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr, INTERPRETED: tl.constexpr):
    """float32 ``[BLOCK_T]``: ``1 / sqrt(mean((x + delta)**2) + eps)`` per token, over the H columns."""
    squares = tl.zeros((BLOCK_T, BLOCK_H), dtype=tl.float32)
    for h0 in range(0, hidden, BLOCK_H):
        s = added_rows(x_ptr, delta_ptr, token, token_ok, h0, hidden, stride_xt, stride_xh, stride_dt, BLOCK_H,
                       INTERPRETED)
        squares += s * s
    return inverse_rms(tl.sum(squares, axis=1), hidden, eps)


@triton.jit
def add_norm_rows(x_ptr, delta_ptr, norm_w_ptr, new_residual_ptr, normed_ptr, inv_rms, token, token_ok, store_ok,
                  h0, hidden, stride_xt, stride_xh, stride_dt, BLOCK_H: tl.constexpr, INTERPRETED: tl.constexpr):
    """The normed rows at columns ``h0 : h0 + BLOCK_H`` in x's dtype (``rms_norm.normalize``). Where ``store_ok``
    (``[len(token)]``), also stores them and the new residual ``x + delta`` (both contiguous ``[T, H]``)."""
    s = added_rows(x_ptr, delta_ptr, token, token_ok, h0, hidden, stride_xt, stride_xh, stride_dt, BLOCK_H,
                   INTERPRETED)
    h = h0 + tl.arange(0, BLOCK_H)
    weight = tl.load(norm_w_ptr + h, mask=h < hidden, other=0.0)
    normed = normalize(s, weight[None, :], inv_rms[:, None], x_ptr.dtype.element_ty, INTERPRETED)
    offsets = token[:, None] * hidden + h[None, :]
    mask = store_ok[:, None] & (h < hidden)[None, :]
    tl.store(new_residual_ptr + offsets, s.to(x_ptr.dtype.element_ty), mask=mask)  # exact: s is already rounded
    tl.store(normed_ptr + offsets, normed, mask=mask)
    return normed


@triton.jit
def pick_experts(logits, token, token_ok, expert, expert_ok, ids_ptr, weights_ptr, counts_ptr, sorted_pairs_ptr,
                 top_k, BLOCK_T: tl.constexpr, BLOCK_E: tl.constexpr, FUSED_SORT: tl.constexpr):
    """Top-k of float32 ``logits [BLOCK_T, BLOCK_E]`` (bias included), the softmax over the picked ones, stored
    as ids / weights ``[T, k]``; with ``FUSED_SORT`` (all tokens in this program) also the pairs sorted by expert."""
    # Selection key: NaN ranks as -inf. Padded experts are excluded by `available`, not by a value, so a row of
    # -inf logits still picks real experts (lowest index first).
    key = tl.where(logits != logits, float("-inf"), logits)
    available = tl.broadcast_to(expert_ok[None, :], (BLOCK_T, BLOCK_E))
    rank = tl.full((BLOCK_T, BLOCK_E), -1, dtype=tl.int32)
    for slot in range(0, top_k):
        best = tl.max(tl.where(available, key, float("-inf")), axis=1)
        is_best = available & (key == best[:, None])
        chosen = tl.min(tl.where(is_best, expert[None, :], BLOCK_E), axis=1)
        picked = expert[None, :] == chosen[:, None]
        rank = tl.where(picked, slot, rank)
        available = available & ~picked

    # Softmax over the picked logits only; the slot-0 logit is their maximum.
    top = tl.sum(tl.where(rank == 0, logits, 0.0), axis=1)
    numerators = tl.where(rank >= 0, tl.exp(logits - top[:, None]), 0.0)
    probs = numerators / tl.sum(numerators, axis=1)[:, None]
    for slot in range(0, top_k):
        in_slot = rank == slot
        slot_expert = tl.sum(tl.where(in_slot, expert[None, :], 0), axis=1)
        slot_weight = tl.sum(tl.where(in_slot, probs, 0.0), axis=1)
        tl.store(ids_ptr + token * top_k + slot, slot_expert, mask=token_ok)
        tl.store(weights_ptr + token * top_k + slot, slot_weight, mask=token_ok)

    if FUSED_SORT:
        # All tokens are in this one program, so the sort by expert needs no second pass over memory. A token
        # picks an expert at most once, so within expert e the stable (token-major) order is the token order:
        # pair (t, slot) lands at offset[e] + (tokens before t that picked e).
        chose = ((rank >= 0) & token_ok[:, None]).to(tl.int32)
        counts = tl.sum(chose, axis=0)
        tl.store(counts_ptr + expert, counts, mask=expert_ok)
        sorted_row = (tl.cumsum(counts, axis=0) - counts)[None, :] + tl.cumsum(chose, axis=0) - chose
        pair = token[:, None] * top_k + rank
        tl.store(sorted_pairs_ptr + sorted_row, pair, mask=chose != 0)


@triton.jit
def route_decode_kernel(
    x_ptr, router_w_ptr, router_b_ptr, ids_ptr, weights_ptr, counts_ptr, sorted_pairs_ptr, logits_ptr, counters_ptr,
    delta_ptr, norm_w_ptr, new_residual_ptr, normed_ptr, eps,
    tokens, hidden, num_experts, top_k,
    stride_xt, stride_xh, stride_dt,
    BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_E: tl.constexpr, FUSED_SORT: tl.constexpr,
    ADD_NORM: tl.constexpr = False, INTERPRETED: tl.constexpr = False,
):
    """Grid ``(E,)``: program e computes ``x @ Wr[e] + br[e]`` for all (<= BLOCK_T) tokens; the last program to
    finish picks the experts (``pick_experts``) from the logits they published. ``ADD_NORM``: x is the residual,
    the rows routed are ``rms_norm(x + delta) * norm_w``, and program 0 stores them and the new residual."""
    e = tl.program_id(0)
    token = tl.arange(0, BLOCK_T)
    token_ok = token < tokens
    if ADD_NORM:
        inv_rms = rows_inverse_rms(x_ptr, delta_ptr, token, token_ok, hidden, eps, stride_xt, stride_xh,
                                   stride_dt, BLOCK_T, BLOCK_H, INTERPRETED)
    # Products in float32 (exact for 16-bit inputs), summed per column across K steps, then across columns.
    acc = tl.zeros((BLOCK_T, BLOCK_H), dtype=tl.float32)
    for h0 in range(0, hidden, BLOCK_H):
        if ADD_NORM:
            x = add_norm_rows(x_ptr, delta_ptr, norm_w_ptr, new_residual_ptr, normed_ptr, inv_rms, token, token_ok,
                              # program 0 stores every token's rows (a bound, not `token_ok & (e == 0)`: the
                              # interpreter rejects a tensor mask anded with a scalar)
                              token < tl.where(e == 0, tokens, 0), h0, hidden, stride_xt, stride_xh, stride_dt,
                              BLOCK_H, INTERPRETED).to(tl.float32)
        else:
            x = load_activations(x_ptr, token, token_ok, h0, hidden, stride_xt, stride_xh, BLOCK_H).to(tl.float32)
        h = h0 + tl.arange(0, BLOCK_H)
        w = tl.load(router_w_ptr + e.to(tl.int64) * hidden + h, mask=h < hidden, other=0.0).to(tl.float32)
        acc += x * w[None, :]
    logit = tl.sum(acc, axis=1) + tl.load(router_b_ptr + e).to(tl.float32)
    tl.store(logits_ptr + token * BLOCK_E + e, logit, mask=token_ok)

    # Every thread's logits must be written before the counter says so; acq_rel at gpu scope publishes them to the
    # program that arrives last and makes that program see all the others.
    tl.debug_barrier()
    arrived = tl.atomic_add(counters_ptr, 1, sem="acq_rel", scope="gpu")
    if arrived == num_experts - 1:
        expert = tl.arange(0, BLOCK_E)
        expert_ok = expert < num_experts
        logits = tl.load(logits_ptr + token[:, None] * BLOCK_E + expert[None, :],
                         mask=token_ok[:, None] & expert_ok[None, :], other=0.0, cache_modifier=".cg")
        tl.atomic_xchg(counters_ptr, 0)  # ready for the next launch: no memset between calls
        pick_experts(logits, token, token_ok, expert, expert_ok, ids_ptr, weights_ptr, counts_ptr, sorted_pairs_ptr,
                     top_k, BLOCK_T, BLOCK_E, FUSED_SORT)


@triton.jit
def route_topk_softmax_kernel(
    x_ptr, router_w_ptr, router_b_ptr, ids_ptr, weights_ptr, counts_ptr, sorted_pairs_ptr,
    delta_ptr, norm_w_ptr, new_residual_ptr, normed_ptr, eps,
    tokens, hidden, num_experts, top_k,
    stride_xt, stride_xh, stride_dt,
    BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_E: tl.constexpr, NATIVE_DOT: tl.constexpr,
    ADD_NORM: tl.constexpr = False, NORM_BLOCK_H: tl.constexpr = 1, INTERPRETED: tl.constexpr = False,
):
    """Grid ``(cdiv(T, BLOCK_T),)``: the router GEMM of BLOCK_T tokens as dots over H, then ``pick_experts``.
    ``ADD_NORM``: x is the residual, the rows routed are ``rms_norm(x + delta) * norm_w``, stored with the new
    residual by the program that owns them."""
    pid = tl.program_id(0)
    token = pid * BLOCK_T + tl.arange(0, BLOCK_T)
    token_ok = token < tokens
    expert = tl.arange(0, BLOCK_E)
    expert_ok = expert < num_experts
    if ADD_NORM:
        inv_rms = rows_inverse_rms(x_ptr, delta_ptr, token, token_ok, hidden, eps, stride_xt, stride_xh,
                                   stride_dt, BLOCK_T, NORM_BLOCK_H, INTERPRETED)

    logits = tl.zeros((BLOCK_T, BLOCK_E), dtype=tl.float32)
    for h0 in range(0, hidden, BLOCK_H):
        if ADD_NORM:
            x = add_norm_rows(x_ptr, delta_ptr, norm_w_ptr, new_residual_ptr, normed_ptr, inv_rms, token, token_ok,
                              token_ok, h0, hidden, stride_xt, stride_xh, stride_dt, BLOCK_H, INTERPRETED)
        else:
            x = load_activations(x_ptr, token, token_ok, h0, hidden, stride_xt, stride_xh, BLOCK_H)
        h = h0 + tl.arange(0, BLOCK_H)
        w_t = tl.load(router_w_ptr + expert[None, :] * hidden + h[:, None],
                      mask=expert_ok[None, :] & (h < hidden)[:, None], other=0.0)
        if NATIVE_DOT:
            logits = tl.dot(x, w_t, logits)
        else:
            logits = tl.dot(x.to(tl.float32), w_t.to(tl.float32), logits, input_precision="ieee")
    logits += tl.load(router_b_ptr + expert, mask=expert_ok, other=0.0).to(tl.float32)[None, :]
    pick_experts(logits, token, token_ok, expert, expert_ok, ids_ptr, weights_ptr, counts_ptr, sorted_pairs_ptr,
                 top_k, BLOCK_T, BLOCK_E, False)
