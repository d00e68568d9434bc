"""The Triton dequantize kernel against ``mxfp4.reference.dequantize``: bit for bit, every path and output dtype.

Runs interpreted on the CPU (conftest sets TRITON_INTERPRET=1) and compiled on a GPU, unchanged. GPT-OSS-sized
shapes run only where CUDA is available.
"""

from __future__ import annotations

import pathlib

import ml_dtypes
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mxfp4
from conftest import HAS_CUDA, TRITON_BACKENDS, requires_cuda
from mxfp4 import MXFP4Tensor, reference
from mxfp4.dispatch import Backend, BackendUnavailableError
from mxfp4.spec import BLOCK_SIZE, BYTES_PER_BLOCK, E8M0_BIAS, E8M0_NAN, ScaleMode
from mxfp4.testing import assert_bitwise_equal, mx_blocks
from mxfp4.triton_kernels import dequantize as dequantize_module
from mxfp4.triton_kernels import launch as launch_module
from mxfp4.triton_kernels.dequantize import dequantize

DEVICE = "cuda" if HAS_CUDA else "cpu"  # for hypothesis tests, which cannot take function-scoped fixtures
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
NP_DTYPES = {"bf16": ml_dtypes.bfloat16, "fp16": np.float16, "fp32": np.float32}
VECTORS = pathlib.Path(__file__).parent / "data" / "mxfp4_vectors.npz"
# Interpreted Inf/NaN arithmetic warns in NumPy; the values are what the tests expect.
pytestmark = pytest.mark.filterwarnings("ignore:(overflow|invalid value) encountered:RuntimeWarning")


# --- helpers ---------------------------------------------------------------------------------------------------
def as_comparable(values) -> np.ndarray:
    """NumPy copy of a torch tensor or NumPy array; bfloat16 widened exactly to float32 (bits preserved)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        if values.dtype == torch.bfloat16:
            values = values.float()
        return values.numpy()
    values = np.asarray(values)
    return values.astype(np.float32) if values.dtype == ml_dtypes.bfloat16 else values


def expected_dequantize(blocks: torch.Tensor, scales: torch.Tensor, dtype_name: str, length: int) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return reference.dequantize(blocks.cpu().numpy(), scales.cpu().numpy(), NP_DTYPES[dtype_name], length)


def check_dequantize(blocks, scales, dtype_name: str, length: int, backend: str, what: str = "") -> torch.Tensor:
    out = dequantize(blocks, scales, DTYPES[dtype_name], length, Backend(backend))
    assert out.dtype == DTYPES[dtype_name] and out.shape == (*blocks.shape[:-2], length), (out.dtype, out.shape)
    assert_bitwise_equal(
        as_comparable(out),
        as_comparable(expected_dequantize(blocks, scales, dtype_name, length)),
        what=f"{what} {backend} {dtype_name} blocks {tuple(blocks.shape)} length {length}",
    )
    return out


def random_storage(rng, lead, groups, device, *, scale_bytes=None):
    """Random element bytes and scale bytes (0, 1, 127, 254, 255 and everything between)."""
    blocks = rng.integers(0, 256, (*lead, groups, BYTES_PER_BLOCK), dtype=np.uint8)
    if scale_bytes is None:
        scale_bytes = np.concatenate([[0, 1, E8M0_BIAS, 254, E8M0_NAN], rng.integers(0, 256, 27)])
    scales = rng.choice(np.asarray(scale_bytes, dtype=np.uint8), (*lead, groups))
    return torch.from_numpy(blocks).to(device), torch.from_numpy(scales).to(device)


# --- conformance vectors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("backend", TRITON_BACKENDS)
def test_conformance_decode_of_every_scale_byte(backend, dtype_name, device):
    """All 256 scale bytes (0 is 2**-127, 255 is NaN) with random codes, against the independent float64 values."""
    vectors = np.load(VECTORS)
    blocks = torch.from_numpy(vectors["decode_blocks"][:, None, :]).to(device)
    scales = torch.from_numpy(vectors["decode_scales"][:, None]).to(device)
    out = dequantize(blocks, scales, DTYPES[dtype_name], BLOCK_SIZE, Backend(backend))
    with np.errstate(over="ignore"):
        expected = vectors["decode_values"].astype(NP_DTYPES[dtype_name])
    assert_bitwise_equal(as_comparable(out), as_comparable(expected), what=f"decode vectors {backend} {dtype_name}")


# --- hand-written golden cases ---------------------------------------------------------------------------------
TWO_POW = 2.0
# (id, block byte (every byte of the block), scale byte, {dtype: expected value of element 0 (low nibble), element 1})
GOLDEN = [
    ("quarter_minus_eighth", 0x92, 125, {"fp32": (0.25, -0.125), "bf16": (0.25, -0.125), "fp16": (0.25, -0.125)}),
    (
        "scale0_is_2^-127",
        0x31,
        0,
        {
            "fp32": (TWO_POW**-128, 1.5 * TWO_POW**-127),
            "bf16": (TWO_POW**-128, 1.5 * TWO_POW**-127),
            "fp16": (0.0, 0.0),
        },
    ),  # fmt: skip
    ("negative_zero", 0x88, 127, {"fp32": (-0.0, -0.0), "bf16": (-0.0, -0.0), "fp16": (-0.0, -0.0)}),
    (
        "top_scale_overflows",
        0x37,
        254,
        {
            "fp32": (float("inf"), 1.5 * TWO_POW**127),
            "bf16": (float("inf"), 1.5 * TWO_POW**127),
            "fp16": (float("inf"), float("inf")),
        },
    ),  # fmt: skip
    ("fp16_overflow", 0x17, E8M0_BIAS + 16, {"fp32": (6 * 65536.0, 32768.0), "fp16": (float("inf"), 32768.0)}),
    # 2**-25 * {1.5, 0.5}: 0.75 * 2**-24 rounds up to the smallest fp16 subnormal; 0.25 * 2**-24 rounds to 0.
    (
        "fp16_subnormal_rounding",
        0x13,
        E8M0_BIAS - 25,
        {"fp32": (1.5 * TWO_POW**-25, 0.5 * TWO_POW**-25), "fp16": (TWO_POW**-24, 0.0)},
    ),
    ("fp16_tie_to_even", 0x22, E8M0_BIAS - 25, {"fp16": (0.0, 0.0)}),  # 2**-25: halfway between 0 and 2**-24
    (
        "nan_scale",
        0x00,
        E8M0_NAN,
        {"fp32": (float("nan"),) * 2, "bf16": (float("nan"),) * 2, "fp16": (float("nan"),) * 2},
    ),
]


@pytest.mark.parametrize("backend", TRITON_BACKENDS)
@pytest.mark.parametrize("case", GOLDEN, ids=lambda c: c[0])
def test_golden(case, backend, device):
    name, byte, scale, expected = case
    blocks = torch.full((1, 1, BYTES_PER_BLOCK), byte, dtype=torch.uint8, device=device)
    scales = torch.full((1, 1), scale, dtype=torch.uint8, device=device)
    for dtype_name, pair in expected.items():
        out = check_dequantize(blocks, scales, dtype_name, BLOCK_SIZE, backend, what=name)
        want = np.array(pair * (BLOCK_SIZE // 2), dtype=np.float64).astype(NP_DTYPES[dtype_name])
        assert_bitwise_equal(as_comparable(out[0]), as_comparable(want), what=f"{name} {dtype_name} golden values")


# --- fresh random bytes ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("backend", TRITON_BACKENDS)
def test_random_bytes(backend, dtype_name, rng, device):
    for lead, groups, length in (((37,), 9, 9 * 32), ((5, 3), 4, 100), ((2,), 1, 1), ((64,), 2, 63), ((), 5, 145)):
        blocks, scales = random_storage(rng, lead, groups, device)
        check_dequantize(blocks, scales, dtype_name, length, backend, what=f"lead {lead}")


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
@pytest.mark.parametrize("backend", TRITON_BACKENDS)
def test_property_matches_reference(backend, data):
    """Any bytes, any leading shape, any quantized axis and logical length, through the public API."""
    dtype_name = data.draw(st.sampled_from(list(DTYPES)), label="dtype")
    batch = data.draw(st.lists(st.integers(1, 4), min_size=0, max_size=2), label="batch")
    blocks, scales = data.draw(mx_blocks(batch_shape=batch, num_groups=st.integers(1, 4)), label="storage")
    groups = scales.shape[-1]
    length = data.draw(st.integers((groups - 1) * BLOCK_SIZE + 1, groups * BLOCK_SIZE), label="length")
    ndim = len(batch) + 1
    axis = data.draw(st.integers(0, ndim - 1), label="axis")
    shape = tuple(batch[:axis]) + (length,) + tuple(batch[axis:])
    q = MXFP4Tensor.from_blocks(torch.from_numpy(blocks).to(DEVICE), torch.from_numpy(scales).to(DEVICE), shape, axis)
    out = mxfp4.dequantize(q, DTYPES[dtype_name], backend=backend)
    expected = np.moveaxis(expected_dequantize(q.blocks, q.scales, dtype_name, length), -1, axis)
    assert_bitwise_equal(
        as_comparable(out), as_comparable(expected), what=f"{backend} {dtype_name} shape {shape} axis {axis}"
    )


# --- layouts, poison, masking ----------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", TRITON_BACKENDS)
def test_strided_and_permuted_inputs(backend, rng, device):
    blocks, scales = random_storage(rng, (6, 5), 7, device)
    cases = {
        "row_slice": (blocks[1:5:2], scales[1:5:2]),
        "group_slice": (blocks[:, :, 2:6], scales[:, :, 2:6]),
        "transposed_lead": (blocks.transpose(0, 1), scales.transpose(0, 1)),
        "permuted_3d_lead": (
            blocks[None].expand(3, 6, 5, 7, 16).permute(2, 0, 1, 3, 4),
            scales[None].expand(3, 6, 5, 7).permute(2, 0, 1, 3),
        ),
        "expanded": (blocks[:1].expand(4, 5, 7, 16), scales[:1].expand(4, 5, 7)),
    }
    for name, (b, s) in cases.items():
        groups = b.shape[-2]
        for dtype_name, length in (
            ("bf16", groups * BLOCK_SIZE),
            ("fp32", groups * BLOCK_SIZE - 13),
            ("fp16", groups * BLOCK_SIZE - 31),
        ):
            check_dequantize(b, s, dtype_name, length, backend, what=name)


@pytest.mark.parametrize("poison", [float("nan"), 7.0, -0.0])
@pytest.mark.parametrize("backend", TRITON_BACKENDS)
def test_poisoned_outputs(poison, backend, rng, device):
    """An output prefilled with a poison value: every element must equal the reference, whatever the poison."""
    blocks, scales = random_storage(rng, (23,), 4, device)
    for dtype_name, dtype in DTYPES.items():
        out = torch.full((23, 110), poison, dtype=dtype, device=device)
        got = dequantize(blocks, scales, dtype, 110, Backend(backend), out=out)
        assert got is out
        assert_bitwise_equal(
            as_comparable(out),
            as_comparable(expected_dequantize(blocks, scales, dtype_name, 110)),
            what=f"poison {poison} {dtype_name}",
        )


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("backend", TRITON_BACKENDS)
def test_masking_views_into_nan_buffers(backend, dtype_name, rng, device, monkeypatch):
    """Blocks and scales as views into buffers whose bytes past the last block and row decode to NaN (scale 0xFF);
    a partial last block (K = 200) whose padding codes are nonzero; the output a view into a larger buffer.
    Nothing past the logical extent may reach the output, and nothing outside the output view may be written.
    Small tiles are forced so that tiles are ragged in both rows and blocks."""
    monkeypatch.setattr(dequantize_module, "ELEMENTS_PER_PROGRAM", 256)
    monkeypatch.setattr(dequantize_module, "MAX_GROUP_TILE", 2)
    rows, groups, length = 19, 7, 200
    big_blocks = torch.from_numpy(rng.integers(0, 256, (rows + 4, groups + 3, BYTES_PER_BLOCK), dtype=np.uint8)).to(
        device
    )
    big_scales = torch.full((rows + 4, groups + 3), E8M0_NAN, dtype=torch.uint8, device=device)
    big_scales[:rows, :groups] = torch.from_numpy(rng.integers(100, 150, (rows, groups), dtype=np.uint8)).to(device)
    blocks, scales = big_blocks[:rows, :groups], big_scales[:rows, :groups]
    sentinel = -777.0
    big_out = torch.full((rows + 3, length + 50), sentinel, dtype=DTYPES[dtype_name], device=device)
    out = big_out[2 : rows + 2, 7 : 7 + length]
    dequantize(blocks, scales, DTYPES[dtype_name], length, Backend(backend), out=out)
    expected = expected_dequantize(blocks, scales, dtype_name, length)
    assert not np.isnan(as_comparable(expected)).any(), "the test's logical extent should hold no NaN scale"
    assert_bitwise_equal(as_comparable(out), as_comparable(expected), what="masked view")
    outside = torch.ones(big_out.shape, dtype=torch.bool, device=device)
    outside[2 : rows + 2, 7 : 7 + length] = False
    assert (big_out[outside] == sentinel).all(), (
        f"dequantize wrote {int((big_out[outside] != sentinel).sum())} elements outside its output view"
    )


# --- through the public API: quantize -> dequantize ------------------------------------------------------------
@pytest.mark.parametrize("backend", TRITON_BACKENDS)
def test_round_trip_public_api(backend, rng, device):
    x = torch.from_numpy(rng.standard_normal((6, 77, 5)).astype(np.float32)).to(device)
    for axis in range(3):
        for mode in ScaleMode:
            q = mxfp4.quantize(x, axis=axis, scale_mode=mode, backend=backend)
            blocks, scales = reference.quantize(x.cpu().numpy(), axis=axis, scale_mode=mode)
            for dtype_name, dtype in DTYPES.items():
                out = mxfp4.dequantize(q, dtype, backend=backend)
                expected = np.moveaxis(
                    reference.dequantize(blocks, scales, NP_DTYPES[dtype_name], x.shape[axis]), -1, axis
                )
                assert_bitwise_equal(
                    as_comparable(out),
                    as_comparable(expected),
                    what=f"round trip axis {axis} {mode.value} {dtype_name}",
                )


# --- bad input -------------------------------------------------------------------------------------------------
def test_bad_input_raises_named_errors(device, monkeypatch):
    blocks = torch.zeros(4, 2, BYTES_PER_BLOCK, dtype=torch.uint8, device=device)
    scales = torch.zeros(4, 2, dtype=torch.uint8, device=device)
    with pytest.raises(TypeError, match="blocks must be a uint8"):
        dequantize(blocks.to(torch.int16), scales, torch.float32, 64, Backend.FP32)
    with pytest.raises(TypeError, match="scales must be a uint8"):
        dequantize(blocks, scales.float(), torch.float32, 64, Backend.FP32)
    with pytest.raises(ValueError, match="do not match"):
        dequantize(blocks, scales[:, :1], torch.float32, 64, Backend.FP32)
    with pytest.raises(ValueError, match="do not match"):
        dequantize(blocks[..., :8], scales, torch.float32, 64, Backend.FP32)
    with pytest.raises(ValueError, match="length 65 does not fit"):
        dequantize(blocks, scales, torch.float32, 65, Backend.FP32)
    with pytest.raises(ValueError, match="length 32 does not fit"):
        dequantize(blocks, scales, torch.float32, 32, Backend.FP32)
    with pytest.raises(TypeError, match="bfloat16, float16 or float32"):
        dequantize(blocks, scales, torch.float64, 64, Backend.FP32)
    with pytest.raises(ValueError, match="not 'torch'"):
        dequantize(blocks, scales, torch.float32, 64, Backend.TORCH)
    with pytest.raises(ValueError, match="out must be"):
        dequantize(blocks, scales, torch.float32, 64, Backend.FP32, out=torch.empty(4, 63, device=device))
    monkeypatch.setattr(launch_module, "triton_interpreter_enabled", lambda: False)  # the check dequantize shares
    with pytest.raises(BackendUnavailableError, match="TRITON_INTERPRET"):
        dequantize(blocks.cpu(), scales.cpu(), torch.float32, 64, Backend.FP32)


def test_empty_leading_dims(device):
    out = dequantize(
        torch.zeros(0, 2, BYTES_PER_BLOCK, dtype=torch.uint8, device=device),
        torch.zeros(0, 2, dtype=torch.uint8, device=device),
        torch.bfloat16,
        50,
        Backend.BF16,
    )
    assert out.shape == (0, 50) and out.dtype == torch.bfloat16


# --- GPU-sized shapes ------------------------------------------------------------------------------------------
@requires_cuda("GPT-OSS-sized shapes run compiled on a GPU; the interpreter on a CPU is too slow for them")
@pytest.mark.slow
@pytest.mark.parametrize("rows,length", [(2880, 2880), (5760, 2880), (2880, 5760), (2881, 2881), (8192, 8192)], ids=str)
def test_gpt_oss_shapes(rows, length, rng):
    """Every path and output dtype against one reference computation per dtype."""
    groups = -(-length // BLOCK_SIZE)
    blocks, scales = random_storage(rng, (rows,), groups, "cuda", scale_bytes=np.arange(100, 150))
    for dtype_name, dtype in DTYPES.items():
        expected = as_comparable(expected_dequantize(blocks, scales, dtype_name, length))
        for backend in TRITON_BACKENDS:
            out = dequantize(blocks, scales, dtype, length, Backend(backend))
            assert_bitwise_equal(as_comparable(out), expected, what=f"{backend} {dtype_name} [{rows}, {length}]")
