"""The fused decode attention (``mxfp4.triton_kernels.decode_attention``) against its float64 twin
(``mxfp4.reference.decode_attention``), interpreted on a CPU and compiled on a GPU.

What must hold: the output within one rounding of the cache dtype plus float32 sums (relative error in norm: fp32
1e-5, bf16 1e-2, fp16 5e-3, the bounds of the other kernels); the new key (rotated) and value stored in the right
slot bit for bit as the twin rounds them, with its column, and nothing else in the cache touched; every visibility
rule (causal, left padding, window, empty slots, a ring that has wrapped, stale entries of an earlier sequence);
several slot splits merged in the same bits run to run, their counters reset.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import HAS_CUDA, requires_cuda
from mxfp4.reference.decode_attention import decode_attention as reference
from mxfp4.triton_kernels import decode_attention as module
from mxfp4.triton_kernels.decode_attention import decode_attention

DEVICE = "cuda" if HAS_CUDA else "cpu"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 5e-3}


def make_case(rng, *, batch, heads, kv_heads, dim, slots, column, ring, window, dtype, pad=None, filled=None):
    """Random qkv / tables / sinks and a cache whose slots hold the columns a real decode would have written
    (``filled``: how many columns before ``column`` were decoded; default all), with junk in empty slots' K/V."""
    qkv = torch.from_numpy(rng.standard_normal((batch, (heads + 2 * kv_heads) * dim))).to(dtype)
    angle = rng.uniform(0, 2 * np.pi, (batch, dim // 2))
    cos, sin = torch.from_numpy(np.cos(angle) * 1.1).to(dtype), torch.from_numpy(np.sin(angle) * 1.1).to(dtype)
    keys = torch.from_numpy(rng.standard_normal((batch, kv_heads, slots, dim))).to(dtype)
    values = torch.from_numpy(rng.standard_normal((batch, kv_heads, slots, dim))).to(dtype)
    columns = torch.full((slots,), -1, dtype=torch.int64)
    first = 0 if filled is None else column - filled
    for c in range(max(first, 0), column):
        slot = c % slots if ring else c
        if slot < slots:
            columns[slot] = c
    sinks = torch.from_numpy(rng.standard_normal(heads)).to(dtype)
    pad = torch.zeros(batch, dtype=torch.int64) if pad is None else torch.tensor(pad, dtype=torch.int64)
    return dict(qkv=qkv, cos=cos, sin=sin, keys=keys, values=values, columns=columns,
                column=torch.tensor([column]), pad=pad, sinks=sinks, heads=heads,
                scale=dim**-0.5, ring=ring, window=window)


def split_qkv(qkv, heads, kv_heads):
    """q, k, v as column views of one projection output (row stride > width), as the model passes them."""
    dim = qkv.shape[1] // (heads + 2 * kv_heads)
    return qkv.split([heads * dim, kv_heads * dim, kv_heads * dim], dim=1)


def run_both(case, device=DEVICE, with_reference=True):
    """(kernel out, kernel cache, reference out, reference cache); the kernel updates copies of the cache."""
    dtype = case["qkv"].dtype
    on = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in case.items()}
    on["keys"], on["values"], on["columns"] = on["keys"].clone(), on["values"].clone(), on["columns"].clone()
    q, k, v = split_qkv(on["qkv"], case["heads"], on["keys"].shape[1])
    out = decode_attention(q, k, v, on["cos"], on["sin"], on["keys"], on["values"], on["columns"], on["column"],
                           on["pad"], on["sinks"], scale=case["scale"], ring=case["ring"], window=case["window"])
    if not with_reference:
        return out.cpu(), (on["keys"].cpu(), on["values"].cpu(), on["columns"].cpu()), None

    def round_stored(a):
        return torch.from_numpy(a).to(dtype).double().numpy()
    want = reference(case["qkv"].double().numpy(), case["cos"].double().numpy(), case["sin"].double().numpy(),
                     case["keys"].double().numpy(), case["values"].double().numpy(), case["columns"].numpy(),
                     int(case["column"]), case["pad"].numpy(), case["sinks"].double().numpy(), case["heads"],
                     case["scale"], case["ring"], case["window"], round_stored)
    return out.cpu(), (on["keys"].cpu(), on["values"].cpu(), on["columns"].cpu()), want


def check(case, what, device=DEVICE):
    out, (keys, values, columns), (want, want_keys, want_values, want_columns) = run_both(case, device)
    dtype = case["qkv"].dtype
    got = out.double().numpy()
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    assert np.isfinite(got).all(), f"{what}: non-finite output at {np.argwhere(~np.isfinite(got))[:3].tolist()}"
    rel = np.linalg.norm(got - want) / np.linalg.norm(want)
    if not rel <= TOLERANCE[dtype]:
        idx = np.unravel_index(np.argmax(np.abs(got - want)), got.shape)
        raise AssertionError(f"{what}: relative error {rel:.3g} > {TOLERANCE[dtype]}; worst at {idx}: got {got[idx]!r},"
                             f" expected {want[idx]!r}")
    # The new key is rotated in float32 by the kernel and in float64 by the twin before the one rounding to the
    # cache dtype: within one unit in the last place of that dtype. Everything else is bit for bit.
    slot = int(case["column"]) % keys.shape[2] if case["ring"] else int(case["column"])
    if slot < keys.shape[2]:
        ulp = torch.finfo(dtype).eps
        new_key, want_key = keys[:, :, slot].double().numpy(), want_keys[:, :, slot]
        off = np.abs(new_key - want_key) > 2 * ulp * np.abs(want_key).max()  # RoPE may cancel: ulps of the largest
        assert not off.any(), (f"{what}: new key off by more than 2 ulp at {np.argwhere(off)[0].tolist()}: got "
                               f"{new_key[off][0]!r}, expected {want_key[off][0]!r}")
        keys, want_keys = keys.clone(), want_keys.copy()
        keys[:, :, slot], want_keys[:, :, slot] = 0, 0
    for name, g, w in (("keys", keys, want_keys), ("values", values, want_values)):
        diff = g.double().numpy() != w
        if diff.any():
            idx = tuple(int(i) for i in np.argwhere(diff)[0])
            raise AssertionError(f"{what}: cache {name} differ at {idx} ({int(diff.sum())} elements): got "
                                 f"{g[idx].item()!r}, expected {w[idx]!r}")
    assert columns.tolist() == want_columns.tolist(), f"{what}: columns {columns.tolist()} != {want_columns.tolist()}"


# GPT-OSS's head layout (64 on 8 KV heads of 64) and the tiny test model's (6 on 2 of 24: padded group and D).
LAYOUTS = {"gpt_oss": (64, 8, 64), "tiny": (6, 2, 24), "mha": (4, 4, 16)}


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("ring", [False, True], ids=["full", "ring"])
def test_matches_reference(layout, ring, dtype_name, rng):
    heads, kv_heads, dim = LAYOUTS[layout]
    slots, window = (8, 8) if ring else (40, None)
    column = 21 if ring else 29  # the ring has wrapped
    case = make_case(rng, batch=2, heads=heads, kv_heads=kv_heads, dim=dim, slots=slots, column=column, ring=ring,
                     window=window, dtype=DTYPES[dtype_name], pad=[0, 3])
    check(case, f"{layout}/{'ring' if ring else 'full'}/{dtype_name}")


@pytest.mark.parametrize("case_name", ["window_shorter_than_ring", "stale_entries_past_column", "padding_hides_all",
                                       "first_column", "column_is_padding"])
def test_visibility_rules(case_name, rng):
    """Each rule of gpt_oss.visible_keys on its own, with K/V junk behind every slot that must stay unseen."""
    base = dict(batch=2, heads=4, kv_heads=2, dim=16, dtype=torch.float32)
    if case_name == "window_shorter_than_ring":  # a ring may hold more slots than the window lets a query see
        case = make_case(rng, slots=12, column=30, ring=True, window=5, **base)
    elif case_name == "stale_entries_past_column":  # a full cache reused without reset: columns > c are stale
        case = make_case(rng, slots=24, column=9, ring=False, window=None, **base)
        case["columns"][9:20] = torch.arange(9, 20)
    elif case_name == "padding_hides_all":  # row 1 is padding up to past its window: only the new key and the sink
        case = make_case(rng, slots=16, column=10, ring=False, window=None, pad=[2, 10], **base)
    elif case_name == "first_column":  # empty cache
        case = make_case(rng, slots=16, column=0, ring=False, window=None, **base)
    else:  # the new column itself is padding in row 1: nothing visible, the sink takes all mass, output 0
        case = make_case(rng, slots=16, column=4, ring=False, window=None, pad=[0, 6], **base)
    check(case, case_name)


@pytest.mark.parametrize("slots", [300, 700], ids=["2-splits", "3-splits"])
def test_slot_splits_merge_deterministically(slots, rng, monkeypatch):
    """A cache past SLOTS_PER_SPLIT spreads over several programs per (row, KV head); the merge is in split order
    (the same bits every run) and resets its counters. Shrunk split sizes keep the interpreter quick."""
    monkeypatch.setattr(module, "SLOTS_PER_SPLIT", 128)
    assert module.num_splits(slots) == -(-slots // 128)
    case = make_case(rng, batch=2, heads=4, kv_heads=2, dim=16, slots=slots, column=slots - 7, ring=False,
                     window=None, dtype=torch.float32, pad=[0, 40])
    check(case, f"{slots} slots")
    first, _, _ = run_both(case)
    for partials, counters in module._WORKSPACES.values():
        assert int(counters.abs().sum()) == 0, "decode_attention counters were not reset"
        partials.fill_(float("nan"))
    again, _, _ = run_both(case)
    assert torch.equal(again, first), "split merge is not deterministic"


def test_column_past_a_full_cache_gives_nan_and_writes_nothing(rng):
    case = make_case(rng, batch=1, heads=2, kv_heads=1, dim=8, slots=6, column=6, ring=False, window=None,
                     dtype=torch.float32)
    out, (keys, values, columns), _ = run_both(case, with_reference=False)
    assert torch.isnan(out).all(), "a column the cache cannot hold must not give a plausible output"
    assert torch.equal(keys, case["keys"]) and torch.equal(values, case["values"])
    assert torch.equal(columns, case["columns"])


def test_bad_input_is_named(rng):
    case = make_case(rng, batch=1, heads=4, kv_heads=2, dim=8, slots=6, column=2, ring=False, window=None,
                     dtype=torch.float32)
    q, k, v = split_qkv(case["qkv"].to(DEVICE), 4, 2)
    args = [q, k, v] + [case[k].to(DEVICE) for k in ("cos", "sin", "keys", "values", "columns", "column", "pad", "sinks")]
    kwargs = dict(scale=0.3, ring=False, window=None)
    with pytest.raises(ValueError, match="multiple of the cache's 2 KV heads"):
        decode_attention(q[:, :24], *args[1:], **kwargs)
    with pytest.raises(ValueError, match=r"k \(1, 8\) must be \[B, KV \* D\]"):
        decode_attention(q, k[:, :8], *args[2:], **kwargs)
    with pytest.raises(TypeError, match="q, k, v and the cache must share one dtype"):
        decode_attention(*args[:5], args[5].half(), *args[6:], **kwargs)
    with pytest.raises(ValueError, match="column must be int64 \\[1\\]"):
        decode_attention(*args[:8], torch.tensor([2, 3], device=DEVICE), *args[9:], **kwargs)
    with pytest.raises(ValueError, match="unit stride"):
        decode_attention(torch.stack([q, q], dim=-1)[..., 0], *args[1:], **kwargs)
    with pytest.raises(ValueError, match="window must be a positive int"):
        decode_attention(*args, **{**kwargs, "window": 0})


@requires_cuda("the GPT-OSS shapes run compiled on a GPU")
@pytest.mark.parametrize("slots,column", [(128, 700), (4096, 129), (4096, 4000)], ids=["ring", "full-short", "full-long"])
def test_gpt_oss_shapes_on_gpu(slots, column, rng):
    ring = slots == 128
    case = make_case(rng, batch=2, heads=64, kv_heads=8, dim=64, slots=slots, column=column, ring=ring,
                     window=128 if ring else None, dtype=torch.bfloat16, pad=[0, 5])
    check(case, f"gpt-oss {slots} slots at column {column}", device="cuda")


# --- hypothesis: layouts, cache sizes and states ---------------------------------------------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(kv_heads=st.integers(1, 3), group=st.integers(1, 5), dim=st.sampled_from([2, 8, 14, 24]),
       slots=st.integers(1, 70), column=st.integers(0, 90), ring=st.booleans(), window=st.integers(1, 12),
       filled=st.one_of(st.none(), st.integers(0, 30)), pad=st.integers(0, 12), batch=st.integers(1, 3),
       seed=st.integers(0, 2**32 - 1))
def test_property_any_cache(kv_heads, group, dim, slots, column, ring, window, filled, pad, batch, seed):
    """Any head layout and D, any cache size (split into 16-slot programs so that several splits merge), a ring that
    has wrapped any number of times or a full cache with gaps, any padding: output, stored key / value and column
    as the twin (float32)."""
    if not ring and column >= slots:
        column = slots - 1  # a full cache holds its columns (past it: the NaN case, tested above)
    rng = np.random.default_rng(seed)
    case = make_case(rng, batch=batch, heads=kv_heads * group, kv_heads=kv_heads, dim=dim, slots=slots,
                     column=column, ring=ring, window=window if ring else None, dtype=torch.float32,
                     pad=[min(pad * r, column) for r in range(batch)], filled=filled)
    saved, module.SLOTS_PER_SPLIT = module.SLOTS_PER_SPLIT, 16  # (hypothesis tests cannot take monkeypatch)
    try:
        check(case, f"kv={kv_heads} group={group} D={dim} S={slots} c={column} ring={ring} filled={filled}")
    finally:
        module.SLOTS_PER_SPLIT = saved
