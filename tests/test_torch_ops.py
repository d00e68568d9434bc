"""The torch path (mxfp4/torch_ops.py) against the NumPy reference, bit for bit, eager and compiled.

Every test that exercises the bit-level kernels runs under both compile policies: ``never`` (the eager functions,
which are also what runs on a GPU's torch path) and ``always`` (torch.compile's CPU backend even for small tensors,
so that CI checks exactly the code that converts real checkpoints). Speed is measured in bench/, never here.
"""

from __future__ import annotations

import warnings
from fractions import Fraction
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mxfp4 import reference, torch_ops
from mxfp4.spec import BLOCK_SIZE, E2M1_VALUES, E8M0_BIAS, E8M0_NAN, ScaleMode
from mxfp4.testing import adversarial_arrays, assert_bitwise_equal, assert_quantize_matches_reference

VECTORS = Path(__file__).parent / "data" / "mxfp4_vectors.npz"
MODES = [m.value for m in ScaleMode]
BIT_DTYPES = [torch.bfloat16, torch.float16, torch.float32]
ALL_DTYPES = BIT_DTYPES + [torch.float64]
NUMPY_DTYPE = {torch.bfloat16: ml_dtypes.bfloat16, torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}
POLICIES = ["never", "always"]


def dtype_id(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@pytest.fixture(params=POLICIES, ids=[f"compile={p}" for p in POLICIES])
def policy(request, monkeypatch):
    monkeypatch.setenv(torch_ops.COMPILE_ENV, request.param)
    return request.param


def reference_input(x: torch.Tensor) -> np.ndarray:
    """The tensor's exact values as NumPy (bfloat16 widened to float32, which is exact)."""
    return (x.float() if x.dtype == torch.bfloat16 else x).numpy()


def assert_dequantize_matches(blocks: np.ndarray, scales: np.ndarray, dtype: torch.dtype, length: int, got: torch.Tensor):
    expected = reference.dequantize(blocks, scales, NUMPY_DTYPE[dtype], length)
    if dtype == torch.bfloat16:
        expected, got = expected.astype(np.float32), got.float()
    assert got.dtype == {torch.bfloat16: torch.float32}.get(dtype, dtype)
    assert_bitwise_equal(got, expected, what=f"dequantize to {dtype_id(dtype)}")


# --- quantize -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["floor", "ceil"])
def test_quantize_conformance_vectors(policy, mode):
    data = np.load(VECTORS)
    for key, x in (("", data["x"]), ("_partial", data["x_partial"])):
        blocks, scales = torch_ops.quantize(torch.from_numpy(x), mode)
        expected_scales = data[f"{mode}{key}_scales"]
        np.testing.assert_array_equal(scales.numpy(), expected_scales, err_msg=f"{mode}{key} scales")
        finite = expected_scales != E8M0_NAN
        np.testing.assert_array_equal(blocks.numpy()[finite], data[f"{mode}{key}_blocks"][finite], err_msg=f"{mode}{key} blocks")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("shape", [(63, 100), (3, 7, 2881), (31,)], ids=lambda s: "x".join(map(str, s)))
def test_quantize_random_matches_reference(policy, mode, dtype, shape, rng):
    # Gaussian rows at scales from 2^-40 to 2^40 (float16: its own range), with a few heavy-tailed outliers.
    spread = 10 if dtype == torch.float16 else 40
    values = rng.standard_normal(shape) * np.exp2(rng.integers(-spread, spread, size=shape[:-1] + (1,)))
    values *= np.where(rng.random(shape) < 0.02, 50.0, 1.0)
    x = torch.from_numpy(values).to(dtype)
    blocks, scales = torch_ops.quantize(x, mode)
    assert blocks.shape == (*shape[:-1], -(-shape[-1] // BLOCK_SIZE), 16) and blocks.dtype == torch.uint8
    assert_quantize_matches_reference(reference_input(x), blocks, scales, scale_mode=mode)


def special_rows(dtype: torch.dtype) -> torch.Tensor:
    """Blocks that break naive bit tricks: NaN/Inf, -0, zeros, subnormals, the dtype's extremes, exact ties."""
    info = torch.finfo(dtype)
    rows = torch.zeros(10, 2 * BLOCK_SIZE, dtype=torch.float64)
    rows[0, 3] = float("nan")
    rows[1, 40] = float("-inf")
    rows[2, 5] = -0.0  # an all-zero block with a -0: scale byte 0, code 8 for the -0
    rows[3, :32] = torch.linspace(-1, 1, 32) * info.smallest_normal / 4  # subnormals only
    rows[3, 32:] = torch.linspace(-3, 3, 32) * info.smallest_normal
    rows[4, :32] = info.max
    rows[4, 32:] = -info.max * torch.linspace(0, 1, 32)
    rows[5, :32] = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0] * 4) * torch.tensor([1.0, -1.0]).repeat(16)
    rows[5, 32:] = torch.tensor([7.0, 6.5, 3.0, 1.5, 0.125, -0.25, -2.75, 5.5] * 4)  # saturation + ties, amax 7
    rows[6, :32] = 6.0 * 2.0**-3  # amax exactly 6 * 2^k: CEIL keeps k
    rows[6, 32:] = 1.5 * 2.0**-3 + (info.eps * 2.0**-3)  # mantissa just above 1.5: CEIL goes up
    rows[7, :] = torch.linspace(-1e-30, 1e-30, 64) if dtype != torch.float16 else torch.linspace(-1e-7, 1e-7, 64)
    rows[8, :32] = info.tiny  # smallest normal
    rows[9, :] = torch.tensor([2.0**e for e in range(-8, 8)] * 4)
    return rows.to(dtype)


@pytest.mark.filterwarnings("ignore:overflow encountered in square:RuntimeWarning")  # the reference, at float64 max
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=dtype_id)
def test_quantize_special_values(policy, mode, dtype):
    x = special_rows(dtype)
    blocks, scales = torch_ops.quantize(x, mode)
    assert_quantize_matches_reference(reference_input(x), blocks, scales, scale_mode=mode)
    assert scales[0, 0] == E8M0_NAN and scales[1, 1] == E8M0_NAN and (blocks[0, 0] == 0).all()
    assert scales[2, 0] == 0 and blocks[2, 0, 2] == 0x80, "-0 in a zero block: scale byte 0, code 8 in the high nibble"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float16], ids=dtype_id)
@given(data=st.data())
def test_quantize_adversarial_blocks(mode, dtype, data):
    # Hypothesis draws in float16/float32 (the strategies' dtypes); bfloat16 input is the float32 draw rounded.
    source = np.float16 if dtype == torch.float16 else np.float32
    x_np = data.draw(adversarial_arrays(dtype=source))
    x = torch.from_numpy(x_np).to(dtype)
    for policy in POLICIES:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(torch_ops.COMPILE_ENV, policy)
            blocks, scales = torch_ops.quantize(x, mode)
        assert_quantize_matches_reference(reference_input(x), blocks, scales, scale_mode=mode)


@pytest.mark.parametrize("mode", MODES)
def test_quantize_non_contiguous_and_chunked(policy, mode, rng, monkeypatch):
    # A moved axis (what ops.quantize passes for axis != -1), a transposed 3-D view that does not flatten, and row
    # chunks of a few rows: every chunk must land in its place.
    monkeypatch.setattr(torch_ops, "CHUNK_ELEMENTS", 3 * 96)
    base = torch.from_numpy(rng.standard_normal((4, 90, 7))).to(torch.bfloat16)
    x = base.permute(2, 0, 1)  # [7, 4, 90], strides that no view flattens
    assert not x.is_contiguous()
    blocks, scales = torch_ops.quantize(x, mode)
    assert blocks.shape == (7, 4, 3, 16)
    assert_quantize_matches_reference(reference_input(x.contiguous()), blocks, scales, scale_mode=mode)


def test_mse_decides_exact_ties_by_the_definition():
    """An exact tie between the two MSE candidates: the definition says FLOOR.

    The reference sums squared errors in float64, where the tiny element (1.5 * 2^-26) is absorbed differently in
    the two sums and the tie becomes a win for FLOOR + 1 (byte 128). The torch path computes the difference exactly.
    """
    block = [7.5, 7.0, 4.0, -1.0, -2.0, 0.5, 0.75, 0.5, 1.25, 1.75, -1.25, -1.25, -0.75, 0.5, 0.75, -0.5, -7.0, -1.75,
             1.5 * 2.0**-26, 0.5, -0.5, 5.0, -0.5, -1.5, 3.0, -2.0, -3.0, 1.25, -0.75, -1.0, 1.25, 3.5]
    x = torch.tensor([block], dtype=torch.bfloat16)

    def exact_error(exponent: int) -> Fraction:
        codes = reference.round_to_e2m1(np.ldexp(np.array(block), -exponent))
        return sum((Fraction(v) - Fraction(E2M1_VALUES[c]) * Fraction(2) ** exponent) ** 2 for v, c in zip(block, codes))

    assert exact_error(0) == exact_error(1), "the golden block must be an exact tie"
    for policy in POLICIES:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(torch_ops.COMPILE_ENV, policy)
            _, scales = torch_ops.quantize(x, "mse")
        assert scales.item() == E8M0_BIAS, f"compile={policy}: tie must pick FLOOR (byte 127), got {scales.item()}"


# --- dequantize ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("length", [512, 500], ids=["full", "partial"])
def test_dequantize_every_scale_and_byte(policy, dtype, length):
    # All 256 scale bytes x all 256 element bytes: the whole decode table, including 2^-127 (a bfloat16/float32
    # subnormal, 0 in float16), values past float16's range (Inf) and scale 255 (NaN).
    blocks = np.tile(np.arange(256, dtype=np.uint8).reshape(16, 16), (256, 1, 1))
    scales = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 16, axis=1)
    got = torch_ops.dequantize(torch.from_numpy(blocks), torch.from_numpy(scales), dtype, length)
    assert got.shape == (256, length) and got.dtype == dtype and got.is_contiguous()
    assert_dequantize_matches(blocks, scales, dtype, length, got)
    assert torch.isnan(got[E8M0_NAN]).all(), "scale byte 255 must decode to NaN everywhere"


def test_dequantize_conformance_vectors(policy):
    data = np.load(VECTORS)
    blocks, scales = torch.from_numpy(data["decode_blocks"]), torch.from_numpy(data["decode_scales"])
    got = torch_ops.dequantize(blocks[:, None], scales[:, None], torch.float64, BLOCK_SIZE)
    assert_bitwise_equal(got.reshape(256, 32), data["decode_values"], what="decode_values")


@pytest.mark.parametrize("dtype", BIT_DTYPES, ids=dtype_id)
def test_dequantize_random_batched(policy, dtype, rng, monkeypatch):
    monkeypatch.setattr(torch_ops, "CHUNK_ELEMENTS", 5 * 96)  # several chunks, the last one partial
    blocks = rng.integers(0, 256, size=(3, 37, 3, 16), dtype=np.uint8)
    scales = rng.integers(100, 150, size=(3, 37, 3), dtype=np.uint8)
    got = torch_ops.dequantize(torch.from_numpy(blocks), torch.from_numpy(scales), dtype, 90)
    assert got.shape == (3, 37, 90)
    assert_dequantize_matches(blocks, scales, dtype, 90, got)


def test_dequantize_matches_transformers(policy, rng):
    """GPT-OSS expert tensors: the same bf16 values as transformers' convert_moe_packed_tensors, bit for bit.

    transformers returns [E, in, out] (transposed for its forward pass); it decodes scale byte 255 as a finite
    power of two, where the format says NaN, so that byte is excluded from the comparison (USERS.md item 7).
    """
    convert = pytest.importorskip("transformers.integrations.mxfp4").convert_moe_packed_tensors
    experts, rows, groups = 3, 64, 5
    blocks = torch.from_numpy(rng.integers(0, 256, size=(experts, rows, groups, 16), dtype=np.uint8))
    scales = torch.from_numpy(rng.integers(0, 255, size=(experts, rows, groups), dtype=np.uint8))
    scales[0, 0, :] = torch.tensor([0, 1, 127, 253, 254], dtype=torch.uint8)
    ours = torch_ops.dequantize(blocks, scales, torch.bfloat16, groups * BLOCK_SIZE)
    theirs = convert(blocks, scales, dtype=torch.bfloat16).transpose(1, 2)
    assert_bitwise_equal(ours.float(), theirs.float(), what="dequantize vs convert_moe_packed_tensors")
    assert torch.equal(ours.view(torch.int16), theirs.contiguous().view(torch.int16)), "signed zeros must agree too"


# --- compile plumbing ---------------------------------------------------------------------------------------------
def test_compile_failure_falls_back_to_eager(monkeypatch, rng):
    def broken(*args):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setenv(torch_ops.COMPILE_ENV, "always")
    monkeypatch.setattr(torch_ops, "_compiled_quantize", lambda mode: broken)
    monkeypatch.setattr(torch_ops, "_compiler_broken", None)
    x = torch.from_numpy(rng.standard_normal((9, 70))).to(torch.bfloat16)
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        blocks, scales = torch_ops.quantize(x, "floor")
    assert_quantize_matches_reference(reference_input(x), blocks, scales, scale_mode="floor")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch_ops.quantize(x, "floor")  # once broken, eager without another warning
    assert torch_ops._use_compiled(torch.device("cpu"), 1 << 30) is False


@pytest.mark.parametrize(("value", "expected"), [("", "auto"), ("ALWAYS", "always"), ("0", "never"), ("1", "always")])
def test_compile_policy_parsing(monkeypatch, value, expected):
    monkeypatch.setenv(torch_ops.COMPILE_ENV, value)
    assert torch_ops.compile_policy() == expected


def test_compile_policy_rejects_unknown(monkeypatch):
    monkeypatch.setenv(torch_ops.COMPILE_ENV, "sometimes")
    with pytest.raises(ValueError, match="MXFP4_TORCH_COMPILE"):
        torch_ops.compile_policy()


def test_auto_policy_compiles_only_large_cpu_tensors(monkeypatch):
    monkeypatch.setenv(torch_ops.COMPILE_ENV, "auto")
    monkeypatch.setattr(torch_ops, "_compiler_broken", None)
    cpu = torch.device("cpu")
    assert not torch_ops._use_compiled(cpu, torch_ops.COMPILE_MIN_ELEMENTS - 1)
    assert torch_ops._use_compiled(cpu, torch_ops.COMPILE_MIN_ELEMENTS)
    assert not torch_ops._use_compiled(torch.device("meta"), 1 << 30), "only the CPU compiles; other devices run eager"


# --- the torch path on the test device (a GPU when there is one) -------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_round_trip_on_device(device, mode, rng):
    x = torch.from_numpy(rng.standard_normal((33, 2881))).to(torch.bfloat16)
    blocks, scales = torch_ops.quantize(x.to(device), mode)
    assert_quantize_matches_reference(reference_input(x), blocks.cpu(), scales.cpu(), scale_mode=mode)
    got = torch_ops.dequantize(blocks, scales, torch.bfloat16, 2881)
    assert got.device.type == torch.device(device).type
    assert_dequantize_matches(blocks.cpu().numpy(), scales.cpu().numpy(), torch.bfloat16, 2881, got.cpu())
