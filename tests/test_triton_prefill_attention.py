"""The flash-style prefill attention (``mxfp4.triton_kernels.prefill_attention``) against its float64 twin
(``mxfp4.reference.prefill_attention``), interpreted on a CPU and compiled on a GPU.

What must hold: the output within the rounding of the model dtype (relative error in norm: fp32 1e-5; bf16 1e-2 and
fp16 5e-3, with q, k, v and the probabilities rounded to that dtype on the tensor cores, as the torch path rounds
them); every visibility rule from the keys' columns (causal, left padding, window, empty slots, a ring's out-of-order
columns, stale columns past the queries); query rows that see nothing give 0; odd T, S and D (block tails, padded
head dims); a transposed view of q.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import HAS_CUDA, requires_cuda
from mxfp4.reference.prefill_attention import prefill_attention as reference
from mxfp4.triton_kernels.prefill_attention import prefill_attention

DEVICE = "cuda" if HAS_CUDA else "cpu"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 5e-3}


def make_case(rng, *, batch, heads, kv_heads, dim, length, key_columns, query_start, dtype, pad=None, window=None):
    """q as a transposed view of a [B, T, H, D] projection output (as the model passes it); random K/V everywhere,
    also behind keys that must stay unseen."""
    q = torch.from_numpy(rng.standard_normal((batch, length, heads, dim))).to(dtype).transpose(1, 2)
    slots = len(key_columns)
    k = torch.from_numpy(rng.standard_normal((batch, kv_heads, slots, dim))).to(dtype)
    v = torch.from_numpy(rng.standard_normal((batch, kv_heads, slots, dim))).to(dtype)
    return dict(q=q, k=k, v=v, query_columns=torch.arange(query_start, query_start + length),
                key_columns=torch.tensor(key_columns, dtype=torch.int64),
                pad=torch.zeros(batch, dtype=torch.int64) if pad is None else torch.tensor(pad, dtype=torch.int64),
                sinks=torch.from_numpy(rng.standard_normal(heads)).to(dtype), scale=dim**-0.5, window=window)


def check(case, what, device=DEVICE):
    on = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in case.items()}
    got = prefill_attention(on["q"], on["k"], on["v"], on["query_columns"], on["key_columns"], on["pad"],
                            on["sinks"], scale=case["scale"], window=case["window"]).cpu().double().numpy()
    want = reference(*(case[n].double().numpy() if case[n].is_floating_point() else case[n].numpy()
                       for n in ("q", "k", "v", "query_columns", "key_columns", "pad", "sinks")),
                     case["scale"], case["window"])
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    assert np.isfinite(got).all(), f"{what}: non-finite output at {np.argwhere(~np.isfinite(got))[:3].tolist()}"
    dtype = case["q"].dtype
    rel = np.linalg.norm(got - want) / np.linalg.norm(want)
    if not rel <= TOLERANCE[dtype]:
        idx = np.unravel_index(np.argmax(np.abs(got - want)), got.shape)
        raise AssertionError(f"{what}: relative error {rel:.3g} > {TOLERANCE[dtype]}; worst at {idx} (b, t, h, d): "
                             f"got {got[idx]!r}, expected {want[idx]!r}")
    return got


# GPT-OSS's head layout (64 on 8 KV heads of 64) and the tiny test model's (6 on 2 KV heads of 24: D padded to 32).
LAYOUTS = {"gpt_oss": (64, 8, 64), "tiny": (6, 2, 24)}


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("cache", ["no_cache", "full_cache", "ring"])
def test_matches_reference(cache, layout, dtype_name, rng):
    heads, kv_heads, dim = LAYOUTS[layout]
    if cache == "no_cache":  # model.forward: the new keys alone, columns 0..T-1, with left padding in row 1
        length, start, key_columns, window = 70, 0, list(range(70)), None
    elif cache == "full_cache":  # a chunk at columns 40..56 over a 100-slot cache (empty past 56)
        length, start, window = 17, 40, None
        key_columns = list(range(57)) + [-1] * 43
    else:  # a ring of 8 slots holding columns 32..39 out of order, then the chunk's own 17 keys, window 8
        length, start, window = 17, 40, 8
        key_columns = [(c if c % 8 < 5 else c - 8) for c in range(35, 43)] + list(range(40, 57))
    if layout == "gpt_oss" and cache == "no_cache":
        length, key_columns = 33, list(range(33))  # keep the interpreter quick at 64 heads
    case = make_case(rng, batch=2, heads=heads, kv_heads=kv_heads, dim=dim, length=length, key_columns=key_columns,
                     query_start=start, dtype=DTYPES[dtype_name], pad=[0, 5], window=window)
    check(case, f"{cache}/{layout}/{dtype_name}")


def test_rows_that_see_nothing_are_zero(rng):
    """Row 1 is padding past every query column: only the sinks, so 0 (not NaN); row 0 is ordinary."""
    case = make_case(rng, batch=2, heads=2, kv_heads=1, dim=16, length=9, key_columns=list(range(9)), query_start=0,
                     dtype=torch.float32, pad=[0, 20])
    got = check(case, "all padding")
    assert (got[1] == 0).all(), "a query that sees no key must return exactly 0"


def test_stale_and_out_of_order_key_columns(rng):
    """Columns past the queries (a reused cache) and a shuffled order: visibility comes from the columns alone."""
    columns = list(range(60))
    order = np.random.default_rng(3).permutation(60)
    case = make_case(rng, batch=1, heads=4, kv_heads=2, dim=8, length=11, key_columns=[columns[i] for i in order],
                     query_start=30, dtype=torch.float32, window=13)
    check(case, "shuffled columns with a window")


def test_bad_input_is_named(rng):
    case = make_case(rng, batch=1, heads=4, kv_heads=2, dim=8, length=3, key_columns=[0, 1, 2], query_start=0,
                     dtype=torch.float32)
    args = [case[n].to(DEVICE) for n in ("q", "k", "v", "query_columns", "key_columns", "pad", "sinks")]
    kwargs = dict(scale=0.3, window=None)
    with pytest.raises(ValueError, match="KV dividing the 4 query heads"):
        prefill_attention(args[0], args[1][:, :1].expand(1, 3, 3, 8), args[2][:, :1].expand(1, 3, 3, 8), *args[3:],
                          **kwargs)
    with pytest.raises(TypeError, match="must share one of"):
        prefill_attention(args[0], args[1].half(), *args[2:], **kwargs)
    with pytest.raises(ValueError, match=r"key_columns must be int64 \[S\] = \[3\]"):
        prefill_attention(*args[:4], args[4][:2], *args[5:], **kwargs)
    with pytest.raises(ValueError, match="window must be a positive int"):
        prefill_attention(*args, scale=0.3, window=-1)


@requires_cuda("GPT-OSS-sized prefill runs compiled on a GPU")
@pytest.mark.parametrize("window", [None, 128], ids=["full", "sliding"])
def test_gpt_oss_prefill_on_gpu(window, rng):
    length = 700
    case = make_case(rng, batch=1, heads=64, kv_heads=8, dim=64, length=length,
                     key_columns=list(range(length)) + [-1] * 324, query_start=0, dtype=torch.bfloat16, window=window)
    check(case, f"gpt-oss prefill {length} tokens, window {window}", device="cuda")


# --- hypothesis: layouts, lengths, cache contents --------------------------------------------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(kv_heads=st.integers(1, 3), group=st.integers(1, 3), dim=st.sampled_from([2, 8, 14, 24]),
       length=st.integers(1, 40), extra_slots=st.integers(0, 30), start=st.integers(0, 20),
       window=st.one_of(st.none(), st.integers(1, 12)), pad=st.integers(0, 30), shuffle=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_property_any_layout(kv_heads, group, dim, length, extra_slots, start, window, pad, shuffle, seed):
    """Any head layout and D, any T, keys that are the queries' own columns plus older, empty or stale slots in any
    order, any window and padding: the kernel agrees with the twin (float32, 1e-5)."""
    rng = np.random.default_rng(seed)
    key_columns = list(range(start + length)) + [-1] * (extra_slots // 2) + list(range(60, 60 + extra_slots - extra_slots // 2))
    if shuffle:
        key_columns = [key_columns[i] for i in rng.permutation(len(key_columns))]
    case = make_case(rng, batch=2, heads=kv_heads * group, kv_heads=kv_heads, dim=dim, length=length,
                     key_columns=key_columns, query_start=start, dtype=torch.float32, pad=[0, pad], window=window)
    check(case, f"kv={kv_heads} group={group} D={dim} T={length} start={start} window={window} pad={pad}")
