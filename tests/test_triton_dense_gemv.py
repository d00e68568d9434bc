"""The dense projection GEMV (``mxfp4.triton_kernels.dense_gemv``) against its float64 reference twin.

On a CPU the kernel runs under the Triton interpreter (small tiles: several K steps, split K, a masked tail); on a
GPU the same tests run compiled, plus GPT-OSS's q / k / v and o shapes against ``torch.nn.functional.linear``.

Numerical quality: each output element within ``ATOL_FACTOR * eps32 * K * sum|x w|`` (float32 accumulation of
exact-or-rounded products, any order) plus half an ulp of the output dtype of the result; golden cases whose every
partial sum is exact in float32 must match bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import HAS_CUDA, requires_cuda
from mxfp4 import reference
from mxfp4.dispatch import BackendUnavailableError
from mxfp4.triton_kernels.dense_gemv import MAX_WEIGHTS, projections

DEVICE = "cuda" if HAS_CUDA else "cpu"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
EPS32 = 2.0**-24
ULP = {torch.float32: 2.0**-24, torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}  # half an ulp, relative


def make(rng, m, k, widths, dtype, bias=True):
    x = torch.from_numpy(rng.standard_normal((m, k))).to(dtype).to(DEVICE)
    ws = [torch.from_numpy(rng.standard_normal((n, k)) / np.sqrt(k)).to(dtype).to(DEVICE) for n in widths]
    bs = [torch.from_numpy(rng.standard_normal(n)).to(dtype).to(DEVICE) for n in widths] if bias else None
    return x, ws, bs


def want(x, ws, bs):
    np_ = lambda t: t.double().cpu().numpy()  # noqa: E731
    return reference.projections(np_(x), [np_(w) for w in ws], None if bs is None else [np_(b) for b in bs])


def assert_within_bound(got: torch.Tensor, x, ws, bs, what: str, input_rounding: float = 0.0) -> None:
    """Each element within the float32-accumulation bound plus half an ulp of the output dtype (plus
    ``input_rounding`` times sum |x w|, for activations the kernel computed itself); names the worst."""
    expected = want(x, ws, bs)
    got_np = got.double().cpu().numpy()
    assert got_np.shape == expected.shape, f"{what}: shape {got_np.shape}, expected {expected.shape}"
    magnitude = np.abs(x.double().cpu().numpy()) @ np.abs(np.concatenate([w.double().cpu().numpy() for w in ws])).T
    if bs is not None:
        magnitude += np.abs(np.concatenate([b.double().cpu().numpy() for b in bs]))
    k = x.shape[1]
    bound = (2 * EPS32 * (k + 2) + input_rounding) * magnitude + ULP[got.dtype] * np.abs(expected) + 1e-30
    excess = np.abs(got_np - expected) / bound
    worst = np.unravel_index(np.argmax(excess), excess.shape)
    assert excess[worst] <= 1, (f"{what}: element {tuple(int(i) for i in worst)} is {got_np[worst]!r}, reference "
                                f"{expected[worst]!r}, error {abs(got_np[worst] - expected[worst]):.3g} > bound "
                                f"{bound[worst]:.3g}")


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("m,k,widths", [
    (1, 300, (40, 9, 17)),   # q / k / v-like: three weights, odd widths, K not a multiple of the step
    (3, 63, (17,)),          # one weight, several rows, K shorter than two steps
    (2, 129, (8, 1)),        # two weights, a one-row weight
], ids=["qkv-like-M1-K300", "single-M3-K63", "pair-M2-K129"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_projections_match_reference(dtype, m, k, widths, bias):
    x, ws, bs = make(np.random.default_rng(m * 1000 + k), m, k, widths, dtype, bias)
    assert_within_bound(projections(x, ws, bs), x, ws, bs, f"{dtype} M={m} K={k} widths={widths}")


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("m,k,widths", [
    pytest.param(1, 100, (40, 24, 24), id="M1-K100-qkv-split-and-tail"),
    pytest.param(3, 63, (17,), id="M3-K63-one-weight"),
    pytest.param(2, 2880, (64, 8, 8), id="M2-K2880-gpt-oss-width"),
])
def test_add_norm_matches_twin(rng, dtype, m, k, widths):
    """``add_norm``: the new residual is torch's add bit for bit; the projections are those of the twin's
    RMSNorm of that residual (float64, rounded to the dtype), within the accumulation bound plus one rounding of
    each activation (the kernel's float32 norm may round an activation the other way)."""
    from mxfp4.reference.rms_norm import add_rms_norm as add_rms_norm_twin
    from mxfp4.triton_kernels.rms_norm import AddNorm

    delta, ws, bs = make(rng, m, k, widths, dtype)
    residual = torch.from_numpy(rng.standard_normal((m, k)) * 3).to(dtype).to(DEVICE)
    norm_w = torch.from_numpy(1 + 0.1 * rng.standard_normal(k)).float().to(DEVICE)
    new_residual, got = projections(delta, ws, bs, add_norm=AddNorm(residual, norm_w, 1e-5))
    expected_residual = residual + delta
    assert torch.equal(new_residual, expected_residual), (
        f"new residual differs from torch's add at {(new_residual != expected_residual).sum().item()} elements")
    _, normed = add_rms_norm_twin(expected_residual.double().cpu().numpy(), 0.0, norm_w.double().cpu().numpy(), 1e-5)
    normed = torch.from_numpy(normed).to(dtype).to(DEVICE)
    assert_within_bound(got, normed, ws, bs, f"add_norm {dtype} M={m} K={k}", input_rounding=2 * ULP[dtype])


@settings(max_examples=8, deadline=None)
@given(m=st.integers(1, 3), k=st.integers(1, 200), widths=st.lists(st.integers(1, 20), min_size=1,
       max_size=MAX_WEIGHTS), seed=st.integers(0, 2**16), dtype=st.sampled_from(list(DTYPES.values())))
def test_add_norm_property(m, k, widths, seed, dtype):
    """Any shape (K = 1, K past one RMS step, partial tiles) and dtype: the fused add + norm obeys the same two
    checks as ``test_add_norm_matches_twin``."""
    from mxfp4.reference.rms_norm import add_rms_norm as add_rms_norm_twin
    from mxfp4.triton_kernels.rms_norm import AddNorm

    rng = np.random.default_rng(seed)
    delta, ws, bs = make(rng, m, k, widths, dtype)
    residual = torch.from_numpy(rng.standard_normal((m, k)) * 3).to(dtype).to(DEVICE)
    norm_w = torch.from_numpy(1 + 0.1 * rng.standard_normal(k)).float().to(DEVICE)
    new_residual, got = projections(delta, ws, bs, add_norm=AddNorm(residual, norm_w, 1e-5))
    assert torch.equal(new_residual, residual + delta), "new residual differs from torch's add"
    _, normed = add_rms_norm_twin((residual + delta).double().cpu().numpy(), 0.0, norm_w.double().cpu().numpy(), 1e-5)
    assert_within_bound(got, torch.from_numpy(normed).to(dtype).to(DEVICE), ws, bs, f"add_norm {dtype} M={m} K={k}",
                        input_rounding=2 * ULP[dtype])


def test_add_norm_bad_inputs_raise_named_errors(rng):
    from mxfp4.triton_kernels.rms_norm import AddNorm

    x, ws, _ = make(rng, 2, 64, (8,), torch.float32)
    with pytest.raises(ValueError, match="add_norm.residual must match x"):
        projections(x, ws, add_norm=AddNorm(x[:1], torch.ones(64, device=DEVICE), 1e-5))
    with pytest.raises(ValueError, match=r"add_norm.weight must be a float \[K\] = \[64\]"):
        projections(x, ws, add_norm=AddNorm(x, torch.ones(32, device=DEVICE), 1e-5))


def test_golden_exact_sums_and_column_placement():
    """Small integers: every partial sum is exact in float32, so the result is exact; each weight's columns land
    after the previous weights' (q | k | v), bias included."""
    k = 70
    x = torch.arange(k, dtype=torch.float32, device=DEVICE).remainder(5).sub(2)[None, :]  # -2..2
    w0 = torch.arange(3 * k, dtype=torch.float32, device=DEVICE).remainder(7).sub(3).view(3, k)
    w1 = torch.ones(2, k, device=DEVICE)
    w1[1] = -1
    w2 = torch.eye(1, k, device=DEVICE) * 4  # picks 4 * x[0] = -8
    b = [torch.tensor([1.0, 2.0, 3.0], device=DEVICE), torch.tensor([0.5, -0.5], device=DEVICE),
         torch.tensor([100.0], device=DEVICE)]
    got = projections(x, (w0, w1, w2), b).cpu()
    exact = torch.cat([x.cpu() @ w.cpu().T + bb.cpu() for w, bb in zip((w0, w1, w2), b)], dim=1)
    assert exact[0, -1].item() == 92.0
    assert torch.equal(got, exact), f"got {got.tolist()}, expected {exact.tolist()}"


def test_deterministic_and_counters_reset_between_calls():
    """Split-K partials are summed in a fixed order and the counters reset: repeated calls give identical bits."""
    x, ws, bs = make(np.random.default_rng(5), 2, 513, (33, 8), torch.float32)
    first = projections(x, ws, bs)
    for _ in range(3):
        again = projections(x, ws, bs)
        assert torch.equal(first, again), f"repeat differs at {(first != again).nonzero()[:3].tolist()}"


@settings(max_examples=8, deadline=None)
@given(m=st.integers(1, 3), k=st.integers(1, 200), widths=st.lists(st.integers(1, 20), min_size=1,
       max_size=MAX_WEIGHTS), seed=st.integers(0, 2**16), bias=st.booleans())
def test_projections_property(m, k, widths, seed, bias):
    x, ws, bs = make(np.random.default_rng(seed), m, k, tuple(widths), torch.float32, bias)
    assert_within_bound(projections(x, ws, bs), x, ws, bs, f"M={m} K={k} widths={widths}")


def test_strided_inputs_are_read_in_place_or_copied():
    """x with a row stride, a weight that is a column slice (K stride 1, row stride > K): same values."""
    rng = np.random.default_rng(7)
    big = torch.from_numpy(rng.standard_normal((2, 90))).float().to(DEVICE)
    x = big[:, 10:75]
    wide = torch.from_numpy(rng.standard_normal((12, 100))).float().to(DEVICE)
    w = wide[:, 5:70]
    xt = torch.from_numpy(rng.standard_normal((65, 2))).float().to(DEVICE).T  # K stride 2: copied
    assert_within_bound(projections(x, [w]), x, [w], None, "sliced x and weight")
    assert_within_bound(projections(xt, [w]), xt, [w], None, "transposed x")


def test_bad_inputs_raise_named_errors():
    x = torch.zeros(1, 8, device=DEVICE)
    w = torch.zeros(4, 8, device=DEVICE)
    with pytest.raises(ValueError, match=r"weight 0 must be \[N, 8\]"):
        projections(x, [torch.zeros(4, 9, device=DEVICE)])
    with pytest.raises(TypeError, match="weight 0 is torch.float16"):
        projections(x, [w.half()])
    with pytest.raises(ValueError, match="1 to 3 weights"):
        projections(x, [w] * 4)
    with pytest.raises(ValueError, match="a bias for every weight or none"):
        projections(x, [w, w], [torch.zeros(4, device=DEVICE), None])
    with pytest.raises(ValueError, match=r"bias 0 must be \[4\]"):
        projections(x, [w], [torch.zeros(5, device=DEVICE)])
    with pytest.raises(ValueError, match="2-D tensor"):
        projections(x[None], [w])
    with pytest.raises(TypeError, match="bfloat16, float16 or float32"):
        projections(x.double(), [w.double()])


def test_empty_shapes():
    w = torch.ones(3, 0, device=DEVICE)
    b = torch.arange(3.0, device=DEVICE)
    assert torch.equal(projections(torch.zeros(2, 0, device=DEVICE), [w], [b]).cpu(), b.cpu().expand(2, 3))
    assert projections(torch.zeros(0, 5, device=DEVICE), [torch.ones(3, 5, device=DEVICE)]).shape == (0, 3)


@pytest.mark.skipif(HAS_CUDA, reason="the CPU refusal is only observable without a GPU")
def test_cpu_without_interpreter_is_refused(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(BackendUnavailableError, match="TRITON_INTERPRET=1"):
        projections(torch.zeros(1, 4), [torch.zeros(2, 4)])


@requires_cuda()
@pytest.mark.parametrize("m", [1, 4])
@pytest.mark.parametrize("k,widths", [(2880, (4096, 512, 512)), (4096, (2880,)), (8192, (8192,))],
                         ids=["gpt-oss-qkv", "gpt-oss-o", "8192"])
def test_gpt_oss_shapes_match_linear(m, k, widths):
    """Compiled, at the model's shapes, bf16: within bf16 rounding of F.linear computed in float32."""
    x, ws, bs = make(np.random.default_rng(k), m, k, widths, torch.bfloat16)
    got = projections(x, ws, bs).float()
    ref = torch.cat([torch.nn.functional.linear(x.float(), w.float(), b.float()) for w, b in zip(ws, bs)], dim=1)
    err = ((got - ref).norm() / ref.norm()).item()
    assert err < 4e-3, f"relative error {err:.2e} vs float32 F.linear (bf16 output rounding is ~2e-3)"
