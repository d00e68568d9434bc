"""The public torch API (``mxfp4.quantize / dequantize / matmul``, ``MXFP4Tensor``) on the torch path.

The torch path must be bit-identical to ``mxfp4.reference`` for quantize and dequantize (every mode, dtype, axis,
leading shape, stride); matmul accumulates in float32 and is checked against the float64 reference with a stated
bound. Bad input must raise TypeError/ValueError naming the problem.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import mxfp4
from mxfp4 import MXFP4Tensor, reference
from mxfp4.spec import BYTES_PER_BLOCK, ScaleMode
from mxfp4.testing import (
    adversarial_arrays,
    assert_bitwise_equal,
    assert_blocks_equal,
    assert_close_to_reference,
    assert_quantize_matches_reference,
    mx_shapes,
)

MODES = [mode.value for mode in ScaleMode]
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32, "fp64": torch.float64}
ACTIVATION_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
# (logical shape, quantized axis): odd lengths, partial blocks, leading dims, quantized axis not last.
SHAPES = {
    "63": ((63,), 0),
    "1x1": ((1, 1), -1),
    "5x100": ((5, 100), -1),
    "100x5_axis0": ((100, 5), 0),
    "2x33x3_axis1": ((2, 33, 3), 1),
    "3x2x2881": ((3, 2, 2881), -1),
    "7x64": ((7, 64), 1),
}


def as_numpy(x: torch.Tensor) -> np.ndarray:
    """Exact NumPy copy of a CPU tensor (bfloat16 as float32, which holds every bfloat16 value)."""
    return (x.float() if x.dtype == torch.bfloat16 else x).numpy()


def reference_decode(blocks, scales, dtype: torch.dtype, length: int, axis: int) -> np.ndarray:
    """mxfp4.reference.dequantize rounded once to ``dtype`` (bfloat16 by ml_dtypes, independent of torch)."""
    exact = reference.dequantize(blocks, scales, dtype=np.float64, length=length)
    with np.errstate(over="ignore"):
        if dtype == torch.bfloat16:
            rounded = exact.astype(ml_dtypes.bfloat16).astype(np.float32)
        else:
            rounded = exact.astype(
                {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}[dtype]
            )
    return np.moveaxis(rounded, -1, axis)


def spiky_randn(rng, shape, dtype: torch.dtype) -> torch.Tensor:
    """N(0, 1) data with exact ties, a NaN, an Inf, -0 and huge/tiny values sprinkled in (fresh per test)."""
    x = rng.standard_normal(shape).astype(np.float32)
    flat = x.reshape(-1)
    specials = [0.75, -2.5, 5.0, -0.0, 1e-30, 3e4, math.nan, -math.inf]
    positions = rng.choice(flat.size, size=min(flat.size, len(specials)), replace=False)
    flat[positions] = specials[: positions.size]
    return torch.from_numpy(x).to(dtype)


# --- quantize / dequantize: bit for bit with the reference -----------------------------------------------------
@pytest.mark.parametrize("shape_axis", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("mode", MODES)
def test_quantize_equals_reference(mode, dtype, shape_axis, rng):
    shape, axis = shape_axis
    x = spiky_randn(rng, shape, dtype)
    q = mxfp4.quantize(x, axis=axis, scale_mode=mode, backend="torch")
    expected_blocks, expected_scales = reference.quantize(as_numpy(x), axis=axis, scale_mode=mode)
    assert q.blocks.dtype == torch.uint8 and q.scales.dtype == torch.uint8
    assert q.shape == x.shape and q.axis == axis % x.dim()
    assert_blocks_equal(q.blocks, q.scales, expected_blocks, expected_scales, compare_nan_blocks=True)


@pytest.mark.parametrize("shape_axis", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("out_dtype", DTYPES.values(), ids=DTYPES.keys())
def test_dequantize_equals_reference(out_dtype, shape_axis, rng):
    shape, axis = shape_axis
    q = mxfp4.quantize(spiky_randn(rng, shape, torch.float32), axis=axis, backend="torch")
    out = mxfp4.dequantize(q, out_dtype, backend="torch")
    assert out.dtype == out_dtype and out.shape == q.shape
    expected = reference_decode(q.blocks.numpy(), q.scales.numpy(), out_dtype, q.length, q.axis)
    assert_bitwise_equal(as_numpy(out), expected, what=f"dequantize to {out_dtype}")


def test_dequantize_random_bytes_every_scale(rng):
    """Arbitrary stored bytes (every scale byte, NaN included) decode exactly as the reference decodes them."""
    blocks = torch.from_numpy(rng.integers(0, 256, (256, 3, BYTES_PER_BLOCK), dtype=np.uint8))
    scales = torch.from_numpy(np.stack([np.arange(256, dtype=np.uint8)] * 3, axis=1))
    w = MXFP4Tensor.from_blocks(blocks, scales, shape=(256, 70))
    for out_dtype in DTYPES.values():
        expected = reference_decode(blocks.numpy(), scales.numpy(), out_dtype, 70, 1)
        assert_bitwise_equal(as_numpy(w.dequantize(out_dtype, backend="torch")), expected, what=str(out_dtype))


@pytest.mark.parametrize("mode", MODES)
def test_non_contiguous_input(mode, rng):
    base = spiky_randn(rng, (70, 90), torch.float32)
    for name, x in {"transposed": base.t(), "strided": base[:, ::3], "sliced": base[5:41, 7:]}.items():
        assert not x.is_contiguous(), name
        for axis in (0, 1):
            q = mxfp4.quantize(x, axis=axis, scale_mode=mode, backend="torch")
            assert_quantize_matches_reference(as_numpy(x.contiguous()), q.blocks, q.scales, axis=axis, scale_mode=mode)


@pytest.mark.parametrize("mode", MODES)
@given(data=adversarial_arrays(mx_shapes(), with_axis=True), dtype=st.sampled_from(list(DTYPES.values())))
def test_quantize_equals_reference_on_adversarial_input(mode, data, dtype):
    x_np, axis = data
    x = torch.from_numpy(x_np).to(dtype)
    q = mxfp4.quantize(x, axis=axis, scale_mode=mode, backend="torch")
    assert_quantize_matches_reference(as_numpy(x), q.blocks, q.scales, axis=axis, scale_mode=mode)
    out = q.dequantize(torch.float32, backend="torch")
    assert_bitwise_equal(
        out.numpy(), reference_decode(q.blocks.numpy(), q.scales.numpy(), torch.float32, q.length, q.axis)
    )


def test_quantize_preserves_device_and_default_mode(rng):
    x = spiky_randn(rng, (4, 40), torch.bfloat16)
    assert mxfp4.quantize(x).device == x.device
    floor = mxfp4.quantize(x, backend="torch")
    explicit = mxfp4.quantize(x, scale_mode=ScaleMode.FLOOR, backend="torch")
    assert torch.equal(floor.scales, explicit.scales) and torch.equal(floor.blocks, explicit.blocks)
    assert torch.equal(
        mxfp4.quantize(x, scale_mode="CEIL", backend="torch").scales,
        mxfp4.quantize(x, scale_mode="ceil", backend="torch").scales,
    )


# --- matmul ----------------------------------------------------------------------------------------------------
UNIT_ROUNDOFF = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8, torch.float32: 2.0**-24}
TINY = {torch.float16: 2.0**-24, torch.bfloat16: 2.0**-133, torch.float32: 2.0**-149}


def matmul_bound(a64: np.ndarray, w64: np.ndarray, bias64: np.ndarray | None, reference_out: np.ndarray, out_dtype):
    """|got - ref| bound for float32 accumulation of K products and a bias, then one rounding to ``out_dtype``:
    (K + 2) u32 * (|a| @ |W|^T + |bias|) + u_out * (|ref| + that) + the smallest subnormal of out_dtype."""
    k = a64.shape[-1]
    magnitude = np.abs(a64) @ np.abs(w64).T + (0 if bias64 is None else np.abs(bias64))
    accumulate = (k + 2) * 2.0**-24 * magnitude
    return accumulate + UNIT_ROUNDOFF[out_dtype] * (np.abs(reference_out) + accumulate) + TINY[out_dtype]


@pytest.mark.parametrize("with_bias", [False, True], ids=["no_bias", "bias"])
@pytest.mark.parametrize("lead", [(1,), (3,), (2, 5)], ids=["M1", "M3", "2x5"])
@pytest.mark.parametrize("dtype", ACTIVATION_DTYPES.values(), ids=ACTIVATION_DTYPES.keys())
@pytest.mark.parametrize("mode", MODES)
def test_matmul_matches_reference(mode, dtype, lead, with_bias, rng):
    n, k = 37, 100
    w = mxfp4.quantize(
        torch.from_numpy(rng.standard_normal((n, k)).astype(np.float32)), scale_mode=mode, backend="torch"
    )
    a = torch.from_numpy(rng.standard_normal((*lead, k)).astype(np.float32)).to(dtype)
    bias = torch.from_numpy(rng.standard_normal(n).astype(np.float32)).to(dtype) if with_bias else None
    out = mxfp4.matmul(a, w, bias, backend="torch")
    assert out.dtype == dtype and out.shape == (*lead, n)
    a64 = as_numpy(a).astype(np.float64)
    bias64 = None if bias is None else as_numpy(bias).astype(np.float64)
    expected = reference.matmul(a64, w.blocks.numpy(), w.scales.numpy(), bias64)
    w64 = reference.dequantize(w.blocks.numpy(), w.scales.numpy(), np.float64, length=k)
    bound = matmul_bound(a64.reshape(-1, k), w64, bias64, expected.reshape(-1, n), dtype).reshape(expected.shape)
    error = np.abs(as_numpy(out).astype(np.float64) - expected)
    worst = np.unravel_index(np.argmax(error - bound), error.shape)
    assert np.all(error <= bound), (
        f"at {worst}: got {as_numpy(out)[worst]}, expected {expected[worst]}, "
        f"error {error[worst]:.3g} > {bound[worst]:.3g}"
    )


def test_matmul_is_nn_linear_convention(rng):
    """y = a @ W.T with W [N, K] quantized along K: matches torch.nn.functional.linear on the decoded weight."""
    w_dense = torch.from_numpy(rng.standard_normal((5, 64)).astype(np.float32))
    w = mxfp4.quantize(w_dense, backend="torch")
    a = torch.from_numpy(rng.standard_normal((3, 64)).astype(np.float32))
    expected = torch.nn.functional.linear(a.double(), w.dequantize(torch.float64, backend="torch"))
    assert_close_to_reference(mxfp4.matmul(a, w, backend="torch"), expected, rtol=1e-5, atol=1e-5)


def test_matmul_nan_block_propagates(rng):
    """A NaN-scaled weight block makes exactly the rows (output features) that use it NaN."""
    w_dense = rng.standard_normal((4, 64)).astype(np.float32)
    w_dense[2, 40] = math.nan
    w = mxfp4.quantize(torch.from_numpy(w_dense), backend="torch")
    out = mxfp4.matmul(torch.ones(3, 64), w, backend="torch")
    assert torch.isnan(out[:, 2]).all() and not torch.isnan(out[:, [0, 1, 3]]).any()


# --- MXFP4Tensor -----------------------------------------------------------------------------------------------
def test_from_blocks_defaults_and_explicit_shape():
    blocks = torch.zeros(4, 3, BYTES_PER_BLOCK, dtype=torch.uint8)
    scales = torch.full((4, 3), 127, dtype=torch.uint8)
    w = MXFP4Tensor.from_blocks(blocks, scales)
    assert w.shape == (4, 96) and w.axis == 1 and w.length == 96 and w.num_blocks == 3 and w.ndim == 2
    assert MXFP4Tensor.from_blocks(blocks, scales, shape=(4, 70)).shape == (4, 70)
    # quantized along axis 0 of the logical tensor: storage [batch..., G, 16] has that axis moved last
    w0 = MXFP4Tensor.from_blocks(blocks, scales, shape=(65, 4), axis=0)
    assert w0.shape == (65, 4) and w0.axis == 0
    assert MXFP4Tensor.from_blocks(blocks, scales, axis=0).shape == (96, 4)


def u8(*shape, device="cpu") -> torch.Tensor:
    return torch.zeros(*shape, dtype=torch.uint8, device=device)


FROM_BLOCKS_ERRORS = {
    "int8_blocks": (torch.zeros(4, 3, 16, dtype=torch.int8), u8(4, 3), {}, TypeError, "blocks must be uint8"),
    "float_scales": (u8(4, 3, 16), torch.zeros(4, 3), {}, TypeError, "scales must be uint8"),
    "numpy_blocks": (np.zeros((4, 3, 16), np.uint8), u8(4, 3), {}, TypeError, "torch.Tensor"),
    "last_dim_32": (u8(4, 3, 32), u8(4, 3), {}, ValueError, r"\[\.\.\., G, 16\]"),
    "blocks_1d": (u8(16), u8(1), {}, ValueError, r"\[\.\.\., G, 16\]"),
    "scales_mismatch": (u8(4, 3, 16), u8(4, 2), {}, ValueError, r"scales \(4, 2\) do not match blocks"),
    "length_too_long": (u8(4, 3, 16), u8(4, 3), {"shape": (4, 97)}, ValueError, "cannot hold"),
    "length_too_short": (u8(4, 3, 16), u8(4, 3), {"shape": (4, 64)}, ValueError, "cannot hold"),
    "batch_mismatch": (u8(4, 3, 16), u8(4, 3), {"shape": (5, 96)}, ValueError, "cannot hold"),
    "empty_axis": (u8(4, 3, 16), u8(4, 3), {"shape": (4, 0)}, ValueError, "cannot hold"),
    "shape_ndim": (u8(4, 3, 16), u8(4, 3), {"shape": (4, 3, 32)}, ValueError, "dims"),
    "axis_range": (u8(4, 3, 16), u8(4, 3), {"axis": 2}, ValueError, "axis 2 is out of range"),
    "devices_differ": (u8(4, 3, 16), u8(4, 3, device="meta"), {}, ValueError, "meta"),
}


@pytest.mark.parametrize("blocks, scales, kwargs, error, message", FROM_BLOCKS_ERRORS.values(), ids=FROM_BLOCKS_ERRORS)
def test_from_blocks_validation(blocks, scales, kwargs, error, message):
    with pytest.raises(error, match=message):
        MXFP4Tensor.from_blocks(blocks, scales, **kwargs)


def test_properties_nbytes_repr(rng):
    q = mxfp4.quantize(spiky_randn(rng, (6, 100), torch.float32), backend="torch")
    assert q.blocks.shape == (6, 4, 16) and q.scales.shape == (6, 4)
    assert q.nbytes == 6 * 4 * 16 + 6 * 4
    assert q.numel() == 600 and len(q) == 6 and q.device == torch.device("cpu")
    text = repr(q)
    for part in ("MXFP4Tensor", "shape=(6, 100)", "axis=1", "blocks=(6, 4, 16)", "device=cpu", "nbytes=408"):
        assert part in text, text


def test_to_device(rng):
    q = mxfp4.quantize(spiky_randn(rng, (6, 100), torch.float32), backend="torch")
    assert q.to("cpu") is q and q.cpu() is q
    meta = q.to("meta")
    assert meta.device.type == "meta" and meta.blocks.device.type == "meta" and meta.scales.device.type == "meta"
    assert meta.shape == q.shape and meta.axis == q.axis and q.device.type == "cpu"


def test_indexing_leading_dims(rng):
    experts = mxfp4.quantize(spiky_randn(rng, (3, 5, 70), torch.float32), backend="torch")
    dense = experts.dequantize(torch.float32, backend="torch")
    one = experts[1]
    assert isinstance(one, MXFP4Tensor) and one.shape == (5, 70) and one.axis == 1
    assert torch.equal(one.blocks, experts.blocks[1]) and torch.equal(one.scales, experts.scales[1])
    assert_bitwise_equal(one.dequantize(torch.float32, backend="torch"), dense[1])
    assert experts[0:2].shape == (2, 5, 70)
    assert_bitwise_equal(experts[1, 2].dequantize(torch.float32, backend="torch"), dense[1, 2])
    assert experts[None].shape == (1, 3, 5, 70)
    with pytest.raises(IndexError, match="quantized axis"):
        experts[..., 0]


def test_indexing_never_reaches_into_the_blocks_axis(rng):
    """q[:, 0] of a [2, 64] tensor (G == 2 == N) must not return the first block of each row as a 64-vector.

    Bug in MXFP4Tensor.__getitem__: the index is applied to blocks [N, G, 16] as a whole, and the shape check
    passes whenever the indexed batch size happens to equal G. Expected IndexError (like experts[..., 0]).
    """
    q = mxfp4.quantize(spiky_randn(rng, (2, 64), torch.float32), backend="torch")
    with pytest.raises(IndexError, match="quantized axis"):
        q[:, 0]


def test_indexing_requires_last_axis():
    q = mxfp4.quantize(torch.randn(64, 3), axis=0, backend="torch")
    with pytest.raises(NotImplementedError, match="last axis"):
        q[0]


# --- bad input names the problem -------------------------------------------------------------------------------
def test_quantize_bad_input():
    with pytest.raises(TypeError, match="int64"):
        mxfp4.quantize(torch.arange(64), backend="torch")
    with pytest.raises(TypeError, match="uint8"):
        mxfp4.quantize(torch.zeros(64, dtype=torch.uint8), backend="torch")
    with pytest.raises(TypeError, match="torch.Tensor"):
        mxfp4.quantize(np.zeros(64, np.float32))
    with pytest.raises(ValueError, match="unknown scale_mode 'nearest'"):
        mxfp4.quantize(torch.randn(64), scale_mode="nearest")
    with pytest.raises(ValueError, match="empty axis"):
        mxfp4.quantize(torch.zeros(4, 0))
    with pytest.raises(ValueError, match="scalar"):
        mxfp4.quantize(torch.tensor(1.0))
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        mxfp4.quantize(torch.randn(4, 64), axis=2)


def test_dequantize_bad_input():
    q = mxfp4.quantize(torch.randn(4, 64), backend="torch")
    with pytest.raises(TypeError, match="MXFP4Tensor"):
        mxfp4.dequantize(torch.randn(4, 64))
    with pytest.raises(TypeError, match="int32"):
        mxfp4.dequantize(q, torch.int32)


def test_matmul_bad_input():
    w = mxfp4.quantize(torch.randn(8, 100), backend="torch")
    with pytest.raises(ValueError, match=r"K = 99.*K = 100"):
        mxfp4.matmul(torch.randn(2, 99), w)
    with pytest.raises(ValueError, match=r"K = 128"):
        mxfp4.matmul(torch.randn(2, 128), w)  # same number of blocks, different logical K
    with pytest.raises(TypeError, match="int64"):
        mxfp4.matmul(torch.ones(2, 100, dtype=torch.int64), w)
    with pytest.raises(TypeError, match="MXFP4Tensor"):
        mxfp4.matmul(torch.randn(2, 100), torch.randn(8, 100))
    with pytest.raises(ValueError, match=r"bias must be a tensor of shape \[8\]"):
        mxfp4.matmul(torch.randn(2, 100), w, torch.randn(7))
    with pytest.raises(ValueError, match="quantized along K"):
        mxfp4.matmul(torch.randn(2, 8), mxfp4.quantize(torch.randn(8, 100), axis=0, backend="torch"))
    with pytest.raises(ValueError, match="quantized along K"):
        mxfp4.matmul(torch.randn(2, 100), mxfp4.quantize(torch.randn(2, 8, 100), backend="torch"))


def test_wrong_device():
    w = mxfp4.quantize(torch.randn(8, 100), backend="torch")
    with pytest.raises(ValueError, match="activations are on cpu but the weight is on meta"):
        mxfp4.matmul(torch.randn(2, 100), w.to("meta"))
    with pytest.raises(ValueError, match="bias is on meta"):
        mxfp4.matmul(torch.randn(2, 100), w, torch.randn(8, device="meta"))
