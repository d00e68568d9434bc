"""The NumPy reference (``mxfp4.reference``) against hand-written bytes, the conformance vectors and properties.

Everything here needs NumPy and hypothesis only: the reference is the definition of truth, so it is checked
against expectations derived by hand from the OCP MX v1.0 rules, not against another implementation of them.
"""

from __future__ import annotations

import ast
import inspect
import math
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import mxfp4.spec as spec
from mxfp4 import reference
from mxfp4.spec import BLOCK_SIZE, E8M0_BIAS, E8M0_NAN, ScaleMode
from mxfp4.testing import (
    adversarial_arrays,
    assert_close_to_reference,
    assert_bitwise_equal,
    assert_blocks_equal,
    assert_within_format_bound,
    canonical_mx_blocks,
    is_canonical,
    mx_blocks,
    mx_shapes,
)

MODES = [mode.value for mode in ScaleMode]
VECTORS = Path(__file__).parent / "data" / "mxfp4_vectors.npz"
F32_MAX = float(np.finfo(np.float32).max)


def row(*values: float, length: int = BLOCK_SIZE) -> np.ndarray:
    """float32 [1, length]: ``values`` followed by +0.0."""
    out = np.zeros((1, length), np.float32)
    out[0, : len(values)] = values
    return out


def packed(*byte_values: int) -> np.ndarray:
    """uint8 [16]: the given block bytes followed by zeros."""
    out = np.zeros(spec.BYTES_PER_BLOCK, np.uint8)
    out[: len(byte_values)] = byte_values
    return out


# --- golden cases: expected bytes derived by hand --------------------------------------------------------------
# Byte = code(element 2i) | code(element 2i+1) << 4. Codes: 0..7 = 0, 0.5, 1, 1.5, 2, 3, 4, 6; +8 negates.

# All seven E2M1 midpoints, both signs, plus exact grid values, with amax 6 pinning the scale at 2**0 in every
# mode. Ties go to the even code: 0.25->0 (0), 0.75->1.0 (2), 1.25->1.0 (2), 1.75->2 (4), 2.5->2 (4), 3.5->4 (6),
# 5->4 (6). mse: the errors at 2**0 (3.5) and 2**1 (4.25) differ, so mse keeps 2**0.
TIES = (6.0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0,
        -0.25, -0.75, -1.25, -1.75, -2.5, -3.5, -5.0, 1.5,
        0.5, -6.0, 3.0, -0.5, 4.0, -3.0, 2.0, -1.0,
        0.0, -0.0)  # fmt: skip
TIES_BYTES = packed(0x07, 0x22, 0x44, 0x66, 0xA8, 0xCA, 0xEC, 0x3E, 0xF1, 0x95, 0xD6, 0xA4, 0x80)


@dataclass
class Golden:
    x: np.ndarray  # float32 [1, K]
    scales: dict  # mode -> list of scale bytes (one per block)
    blocks: dict  # mode -> list of 16-byte blocks

    @classmethod
    def same_for_all_modes(cls, x, scales, blocks):
        return cls(x, {m: scales for m in MODES}, {m: blocks for m in MODES})


GOLDEN = {
    "ties_at_scale_1": Golden.same_for_all_modes(row(*TIES), [127], [TIES_BYTES]),
    # amax 7.5: floor keeps 2**0 and saturates 7.5, 6.5, 7.0, -7.75 to +-6 (codes 7, 7, 7, 15). ceil needs 2**1:
    # 3.75->4 (6), 3.25->3 (5), 3.5 tie->4 (6), -3.875->-4 (14). mse: squared error 6.5625 at 2**0 vs 1.5625 at 2**1.
    "saturation": Golden(
        row(7.5, 6.5, 7.0, -7.75),
        {"floor": [127], "ceil": [128], "mse": [128]},
        {"floor": [packed(0x77, 0xF7)], "ceil": [packed(0x56, 0xE6)], "mse": [packed(0x56, 0xE6)]},
    ),
    "all_zero": Golden.same_for_all_modes(row(), [0], [packed()]),
    "all_negative_zero": Golden.same_for_all_modes(row(*[-0.0] * 32), [0], [packed(*[0x88] * 16)]),
    # -0.0 and a negative value that rounds to zero keep the sign bit (code 8); amax 2 -> 2**-1 in every mode.
    "negative_zero": Golden.same_for_all_modes(row(-0.0, 2.0, -0.0, -0.1), [126], [packed(0x68, 0x88)]),
    # NaN/Inf in the first block: scale 255 and zero codes there; the second block is untouched.
    "nan_block": Golden.same_for_all_modes(
        row(*[1.0] * 31, math.nan, *TIES, length=64), [255, 127], [packed(), TIES_BYTES]
    ),
    "inf_block": Golden.same_for_all_modes(row(3.0, math.inf, length=64), [255, 0], [packed(), packed()]),
    "neg_inf_block": Golden.same_for_all_modes(row(*[0.0] * 40, -math.inf, length=64), [0, 255], [packed(), packed()]),
    # float32 subnormals beside 1.0 (scale 2**-2): 2**-140 -> 0, -2**-149 -> -0 (8), 2**-127 -> 0.
    "subnormal_inputs": Golden.same_for_all_modes(
        row(1.0, 2.0**-140, -(2.0**-149), 2.0**-127), [125], [packed(0x06, 0x08)]
    ),
    # amax 3 * 2**-127: floor(log2) - 2 = -128 is clamped to -127 (byte 0); elements / 2**-127: 3 (5), 1 (2), -0.5 (9),
    # 0.75 tie -> 1 (2), 2**-22 -> 0.
    "amax_3x2^-127_clamped": Golden.same_for_all_modes(
        row(1.5 * 2.0**-126, 2.0**-127, -(2.0**-128), 0.75 * 2.0**-127, 2.0**-149), [0], [packed(0x25, 0x29)]
    ),
    # amax 2**-128 (below 2**-127): byte 0; elements / 2**-127: 0.5 (1), -3/64 -> -0 (8), 2**-22 -> 0,
    # -0.25 tie -> -0 (8).
    "amax_below_2^-127": Golden.same_for_all_modes(
        row(2.0**-128, -3 * 2.0**-133, 2.0**-149, -(2.0**-129)), [0], [packed(0x81, 0x80)]
    ),
    # float32 max = (2 - 2**-23) * 2**127: floor gives 2**125 and saturates it (7), -2**127 -> -4 (14); ceil/mse need
    # 2**126: 3.9999995 -> 4 (6), -2 (12). +-2**100 round to +-0 (0, 8) in both.
    "amax_float32_max": Golden(
        row(F32_MAX, -(2.0**127), 2.0**100, -(2.0**100)),
        {"floor": [252], "ceil": [253], "mse": [253]},
        {"floor": [packed(0xE7, 0x80)], "ceil": [packed(0xC6, 0x80)], "mse": [packed(0xC6, 0x80)]},
    ),
    # amax 6 * 2**125 is exactly representable at scale 2**125 in every mode (mse: a tie with 2**126 keeps floor).
    "amax_6x2^125": Golden.same_for_all_modes(row(6.0 * 2.0**125), [252], [packed(0x07)]),
    # One value, itself a tie: -5 -> -4 (14) at 2**0; mse sees equal errors at 2**0 and 2**1 (-2.5 -> -2) and
    # keeps floor.
    "one_hot_tie": Golden.same_for_all_modes(row(0, 0, 0, 0, 0, -5.0), [127], [packed(0x00, 0x00, 0xE0)]),
    # K = 37: a full block of 1.0 (2**-2, code 6) and a partial block 6, -0.5, 0.25, 1.5, 3 padded with +0 (code 0).
    "partial_last_block": Golden.same_for_all_modes(
        row(*[1.0] * 32, 6.0, -0.5, 0.25, 1.5, 3.0, length=37),
        [125, 127],
        [packed(*[0x66] * 16), packed(0x97, 0x30, 0x05)],
    ),
    # K = 1: -3 -> 2**-1, -6 (15).
    "single_element": Golden.same_for_all_modes(row(-3.0, length=1), [126], [packed(0x0F)]),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", list(GOLDEN), ids=str)
def test_golden_bytes(case, mode):
    golden = GOLDEN[case]
    blocks, scales = reference.quantize(golden.x, scale_mode=mode)
    expected_scales = np.array([golden.scales[mode]], np.uint8)
    expected_blocks = np.stack(golden.blocks[mode])[None]
    assert_blocks_equal(
        blocks, scales, expected_blocks, expected_scales, compare_nan_blocks=True, what=f"{case}/{mode}"
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("k", [-127, -126, -100, -1, 1, 100, 125], ids=lambda k: f"2^{k}")
def test_ties_at_every_scale(k, mode):
    """The TIES block times 2**k gives the same codes with scale byte 127 + k (its smallest values are float32
    subnormals for k = -127: 0.25 * 2**-127 = 2**-129)."""
    x = np.ldexp(row(*TIES).astype(np.float64), k).astype(np.float32)
    assert np.all(np.ldexp(x.astype(np.float64), -k) == row(*TIES)), "test input is not exact in float32"
    blocks, scales = reference.quantize(x, scale_mode=mode)
    assert_blocks_equal(blocks, scales, TIES_BYTES[None, None], np.array([[127 + k]], np.uint8), what=f"2^{k}/{mode}")


def test_padding_is_positive_zero_and_not_part_of_amax():
    """Padding of a partial block is +0 (code 0): a block of negatives must not get -0 codes past K."""
    blocks, scales = reference.quantize(row(*[-1.0] * 5, length=5))
    assert_blocks_equal(blocks, scales, packed(0xEE, 0xEE, 0x0E)[None, None], np.array([[125]], np.uint8))


def test_rounding_thresholds_table():
    assert spec.E2M1_ROUNDING_THRESHOLDS == (
        (0.25, False), (0.75, True), (1.25, False), (1.75, True), (2.5, False), (3.5, True), (5.0, False),
    )  # fmt: skip


def test_round_to_e2m1_every_tie_and_neighbour():
    """Midpoints go to the even code; one ulp either side goes to the nearer value; beyond 6 saturates."""
    mids = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
    expected_at = np.array([0, 2, 2, 4, 4, 6, 6])
    assert reference.round_to_e2m1(mids).tolist() == expected_at.tolist()
    assert reference.round_to_e2m1(-mids).tolist() == (expected_at | 8).tolist()
    assert reference.round_to_e2m1(np.nextafter(mids, 0)).tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert reference.round_to_e2m1(np.nextafter(mids, 10)).tolist() == [1, 2, 3, 4, 5, 6, 7]
    assert reference.round_to_e2m1(np.array([6.0, 7.0, 1e30, -1e30])).tolist() == [7, 7, 7, 15]


# --- decoding --------------------------------------------------------------------------------------------------
def test_all_256_scale_bytes_decode():
    """Byte b decodes to 2**(b-127): byte 0 is 2**-127 (not zero), 254 is 2**127, 255 is NaN (not Inf)."""
    scales = np.arange(256, dtype=np.uint8)[:, None]  # 256 rows of one block
    ones = np.full((256, 1, 16), 0x22, np.uint8)  # codes 2, 2: value 1.0
    values = reference.dequantize(ones, scales, dtype=np.float64)
    assert values.shape == (256, 32)
    for byte in range(255):
        assert np.all(values[byte] == 2.0 ** (byte - 127)), (byte, values[byte, 0])
    assert values[0, 0] == 2.0**-127 and values[0, 0] != 0
    assert values[254, 0] == 2.0**127
    assert np.all(np.isnan(values[255]))
    # In float32, 2**-127 is a subnormal (not flushed to zero) and 2**127 is finite.
    as_f32 = reference.dequantize(ones, scales, dtype=np.float32)
    assert as_f32[0, 0] == np.float32(2.0**-127) and as_f32[254, 0] == np.float32(2.0**127)


def test_nan_scale_decodes_every_code_to_nan():
    blocks = np.arange(16, dtype=np.uint8)[None] * 17  # codes 0..15 twice each, -0 included
    assert np.all(np.isnan(reference.dequantize(blocks, np.array([E8M0_NAN], np.uint8), dtype=np.float64)))


def test_e2m1_code_table_and_negative_zero():
    blocks = reference.pack(np.arange(32, dtype=np.uint8)[None] % 16)
    values = reference.dequantize(blocks, np.array([[E8M0_BIAS]], np.uint8), dtype=np.float64)[0]
    expected = [0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6] * 2
    assert values.tolist() == expected
    assert np.signbit(values[8]) and not np.signbit(values[0])


def test_dequantize_overflow_to_dtype_is_inf():
    """6 * 2**127 is finite in float64 but past float32's range: the single rounding gives +-Inf."""
    blocks = packed(0xF7)[None]  # codes 7 (6.0), 15 (-6.0)
    scale = np.array([254], np.uint8)
    assert reference.dequantize(blocks, scale, np.float64)[:2].tolist() == [6 * 2.0**127, -6 * 2.0**127]
    assert reference.dequantize(blocks, scale, np.float32)[:2].tolist() == [math.inf, -math.inf]


def test_dequantize_length_trims_padding():
    blocks, scales = reference.quantize(row(*range(37), length=37))
    assert reference.dequantize(blocks, scales, length=37).shape == (1, 37)
    for bad in (0, 31, 65):
        with pytest.raises(ValueError, match="length"):
            reference.dequantize(blocks, scales, length=bad)


# --- conformance vectors (an independent implementation) -------------------------------------------------------
@pytest.fixture(scope="module")
def vectors():
    return np.load(VECTORS)


@pytest.mark.parametrize("mode", ["floor", "ceil"])
@pytest.mark.parametrize("which", ["", "partial_"], ids=["K128", "K100"])
def test_conformance_vectors(vectors, mode, which):
    x = vectors["x_partial" if which else "x"]
    blocks, scales = reference.quantize(x, scale_mode=mode)
    # NaN blocks' element bytes are unspecified by the format (the vectors hold zeros, as we do).
    assert_blocks_equal(
        blocks, scales, vectors[f"{mode}_{which}blocks"], vectors[f"{mode}_{which}scales"], what=f"{mode} {x.shape}"
    )


def test_conformance_decode(vectors):
    values = reference.dequantize(
        vectors["decode_blocks"][:, None], vectors["decode_scales"][:, None], dtype=np.float64
    )
    assert_bitwise_equal(values, vectors["decode_values"], what="decode of all 256 scale bytes")


def test_conformance_vectors_cover_the_hard_cases(vectors):
    """The vectors are only useful if they hold what they claim: NaN blocks, clamped and saturating scales."""
    scales = vectors["floor_scales"]
    assert (scales == E8M0_NAN).any() and (scales == 0).any() and (scales >= 252).any()


# --- properties ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@given(data=adversarial_arrays(mx_shapes(), with_axis=True))
def test_quantize_error_within_format_bound(mode, data):
    """Per block: non-saturated elements are within half a grid step of x at the block's scale; saturated ones
    (floor, mse) decode to +-6 * scale with |x| < 8 * scale; the scale follows the mode's rule."""
    x, axis = data
    blocks, scales = reference.quantize(x, axis=axis, scale_mode=mode)
    assert blocks.shape == (*np.moveaxis(x, axis, -1).shape[:-1], spec.num_blocks(x.shape[axis]), 16)
    assert_within_format_bound(x, blocks, scales, axis=axis, scale_mode=mode)


# float64 blocks beyond 2**511 overflow the mse candidates' squared errors to Inf (both candidates are clamped to
# 2**127 there, so the choice is unaffected); the reference does not silence that warning.
@pytest.mark.filterwarnings("ignore:overflow encountered in square:RuntimeWarning")
@pytest.mark.parametrize("dtype", [np.float16, np.float64], ids=["float16", "float64"])
@given(data=st.data())
def test_quantize_error_within_format_bound_other_dtypes(dtype, data):
    x = data.draw(adversarial_arrays(dtype=dtype))
    for mode in MODES:
        blocks, scales = reference.quantize(x, scale_mode=mode)
        assert_within_format_bound(x, blocks, scales, scale_mode=mode)


@given(x=adversarial_arrays())
def test_mse_is_never_worse_than_floor(x):
    x = np.where(np.isfinite(x), x, 0.0).astype(np.float32)
    errors = {}
    for mode in ("floor", "mse"):
        blocks, scales = reference.quantize(x, scale_mode=mode)
        padded = np.zeros((x.shape[0], scales.shape[1] * BLOCK_SIZE))
        padded[:, : x.shape[1]] = x
        q = reference.dequantize(blocks, scales, dtype=np.float64)
        errors[mode] = ((padded - q) ** 2).reshape(*scales.shape, BLOCK_SIZE).sum(-1)
    assert np.all(errors["mse"] <= errors["floor"]), np.argwhere(errors["mse"] > errors["floor"])[0]


@pytest.mark.parametrize("mode", MODES)
@given(q=canonical_mx_blocks(batch_shape=st.lists(st.integers(1, 3), max_size=2)))
def test_quantize_dequantize_is_identity_on_canonical_blocks(mode, q):
    """quantize(dequantize(q)) == q for every canonical q (see mxfp4.testing.is_canonical; decoded in float64,
    where every MXFP4 value is exact), element bytes of NaN blocks included."""
    blocks, scales = q
    x = reference.dequantize(blocks, scales, dtype=np.float64)
    again_blocks, again_scales = reference.quantize(x, scale_mode=mode)
    assert_blocks_equal(again_blocks, again_scales, blocks, scales, compare_nan_blocks=True, what=mode)


@pytest.mark.parametrize("mode", MODES)
@given(q=mx_blocks(batch_shape=(4,)))
def test_canonical_is_exactly_the_fixed_points(mode, q):
    """The definition is tight: an arbitrary q round-trips iff is_canonical(q)."""
    blocks, scales = q
    again_blocks, again_scales = reference.quantize(
        reference.dequantize(blocks, scales, dtype=np.float64), scale_mode=mode
    )
    round_trips = np.all(again_blocks == blocks, axis=-1) & (again_scales == scales)
    canonical = is_canonical(blocks, scales)
    assert np.array_equal(round_trips, canonical), (
        f"block {np.argwhere(round_trips != canonical)[0]}: round trips {round_trips}, canonical {canonical}"
    )


@pytest.mark.parametrize("mode", MODES)
@given(q=canonical_mx_blocks(allow_nan_scale=False))
def test_idempotent_through_float32_where_finite(mode, q):
    """Through a float32 decode (exact unless 6 * 2**127 overflows), canonical blocks also round-trip."""
    blocks, scales = q
    with np.errstate(over="ignore"):
        x = reference.dequantize(blocks, scales, dtype=np.float32)
    finite = np.all(np.isfinite(x.reshape(*scales.shape, BLOCK_SIZE)), axis=-1)
    again_blocks, again_scales = reference.quantize(x, scale_mode=mode)
    assert_blocks_equal(again_blocks[finite], again_scales[finite], blocks[finite], scales[finite], what=mode)


@given(codes=st.integers(1, 4).flatmap(lambda g: st.lists(st.integers(0, 15), min_size=32 * g, max_size=32 * g)))
def test_pack_unpack_round_trip(codes):
    codes = np.array(codes, np.uint8)[None]
    blocks = reference.pack(codes)
    assert blocks.shape == (1, codes.shape[1] // 32, 16)
    assert np.array_equal(reference.unpack(blocks), codes)
    assert np.array_equal(reference.pack(reference.unpack(blocks)), blocks)
    # element 2i is the low nibble of byte i
    assert np.array_equal(blocks.reshape(-1) & 0xF, codes[0, 0::2]) and np.array_equal(
        blocks.reshape(-1) >> 4, codes[0, 1::2]
    )


def test_pack_rejects_bad_codes():
    with pytest.raises(TypeError, match="uint8"):
        reference.pack(np.zeros(32, np.int32))
    with pytest.raises(ValueError, match="multiple of 32"):
        reference.pack(np.zeros(33, np.uint8))
    with pytest.raises(ValueError, match="4-bit"):
        reference.pack(np.full(32, 16, np.uint8))


def test_reference_bad_input():
    with pytest.raises(TypeError, match="floating-point"):
        reference.quantize(np.arange(32))
    with pytest.raises(ValueError, match="empty"):
        reference.quantize(np.zeros((3, 0), np.float32))
    with pytest.raises(ValueError, match="scale_mode"):
        reference.quantize(np.zeros(32, np.float32), scale_mode="round")
    with pytest.raises(ValueError, match="do not match"):
        reference.dequantize(np.zeros((2, 16), np.uint8), np.zeros(3, np.uint8))


def test_reference_matmul_is_float64_a_times_w_transposed(rng):
    a = rng.standard_normal((3, 100)).astype(np.float32)
    w = rng.standard_normal((7, 100)).astype(np.float32)
    bias = rng.standard_normal(7)
    blocks, scales = reference.quantize(w)
    got = reference.matmul(a, blocks, scales, bias)
    expected = a.astype(np.float64) @ reference.dequantize(blocks, scales, np.float64, length=100).T + bias
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="K = 60"):
        reference.matmul(a[:, :60], blocks, scales)


# --- error on Gaussian data, as documented in ScaleMode ----------------------------------------------------------
def documented_rms_errors() -> dict[str, float]:
    """The 'Relative RMS error on N(0, 1) data: ~X' figure of each ScaleMode member's docstring in spec.py."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(ScaleMode)))
    body = tree.body[0].body
    figures = {}
    for statement, following in zip(body, body[1:]):
        if (
            isinstance(statement, ast.Assign)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
        ):
            match = re.search(r"Relative RMS error on N\(0, 1\) data: ~([0-9]+\.[0-9]+)", following.value.value)
            if match:
                figures[statement.value.value] = float(match.group(1))
    return figures


RMS_TOLERANCE = 0.001
"""Absolute: the figures were measured on 2**24 samples; 2**20 samples vary by about +-0.0003 between seeds."""


def test_documented_rms_error_per_mode(rng):
    figures = documented_rms_errors()
    assert set(figures) == set(MODES), f"ScaleMode docstrings document {sorted(figures)}"
    x = rng.standard_normal((1024, 1024)).astype(np.float32)
    measured = {}
    for mode in MODES:
        blocks, scales = reference.quantize(x, scale_mode=mode)
        error = reference.dequantize(blocks, scales, dtype=np.float64) - x
        measured[mode] = float(np.sqrt(np.mean(error**2) / np.mean(x.astype(np.float64) ** 2)))
    for mode in MODES:
        assert abs(measured[mode] - figures[mode]) <= RMS_TOLERANCE, (
            f"{mode}: measured {measured[mode]:.4f}, documented {figures[mode]}"
        )
    assert measured["mse"] < min(measured["floor"], measured["ceil"]), measured


# --- the reference needs NumPy alone -----------------------------------------------------------------------------
def test_reference_and_testing_do_not_import_torch_or_triton(tmp_path):
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        import mxfp4.reference as ref
        import mxfp4.spec, mxfp4.testing
        x = np.random.default_rng(0).standard_normal((4, 100)).astype(np.float32)
        for mode in ("floor", "ceil", "mse"):
            blocks, scales = ref.quantize(x, scale_mode=mode)
            ref.matmul(x, blocks, scales)
        ref.dequantize(blocks, scales, length=100)
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "triton"))
        print("HEAVY", heavy)
        assert not heavy, heavy
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "HEAVY []" in result.stdout


# --- mxfp4.testing's own assertions say where and how things differ ---------------------------------------------
def test_assert_blocks_equal_names_the_first_difference():
    blocks, scales = reference.quantize(row(*TIES, length=64))
    assert_blocks_equal(blocks, scales, blocks.copy(), scales.copy())
    bad = blocks.copy()
    bad[0, 1, 3] ^= 0x10
    with pytest.raises(
        AssertionError, match=r"1 of 32 element bytes differ; first at block \(0, 1\), byte 3 \(elements 6 and 7\)"
    ):
        assert_blocks_equal(bad, scales, blocks, scales)
    bad_scales = scales.copy()
    bad_scales[0, 0] = 255
    with pytest.raises(AssertionError, match=r"first at block \(0, 0\): got 255 \(NaN\), expected 127 \(2\*\*0\)"):
        assert_blocks_equal(blocks, bad_scales, blocks, scales)
    with pytest.raises(AssertionError, match="shape"):
        assert_blocks_equal(blocks[:, :1], scales[:, :1], blocks, scales)


def test_assert_bitwise_equal_distinguishes_signed_zero_and_matches_nan():
    assert_bitwise_equal(np.array([np.nan, 1.0]), np.array([np.nan, 1.0]))
    with pytest.raises(AssertionError, match=r"first at \(1,\): got -0.0, expected 0.0"):
        assert_bitwise_equal(np.array([1.0, -0.0]), np.array([1.0, 0.0]))


def test_assert_close_to_reference_reports_the_worst_element():
    expected = np.array([1.0, 2.0, 3.0])
    assert_close_to_reference(expected * (1 + 1e-4), expected, rtol=1e-3)
    with pytest.raises(AssertionError, match=r"1 of 3 elements exceed .*worst at \(2,\): got 3.1"):
        assert_close_to_reference(np.array([1.0, 2.0, 3.1]), expected, rtol=1e-3)
    with pytest.raises(AssertionError, match="NaN"):
        assert_close_to_reference(np.array([1.0, np.nan, 3.0]), expected, rtol=1.0)


def test_assert_within_format_bound_catches_a_wrong_code():
    x = row(*TIES)
    blocks, scales = reference.quantize(x)
    off_by_one = blocks.copy()
    off_by_one[0, 0, 1] = 0x32  # element 3 (1.25) decoded as 1.5: still within half a step (a tie)...
    assert_within_format_bound(x, off_by_one, scales)
    off_by_one[0, 0, 1] = 0x42  # ...but 2.0 is not
    with pytest.raises(AssertionError, match=r"element 3: x 1.25 decoded as 2.0"):
        assert_within_format_bound(x, off_by_one, scales)
    saturating = GOLDEN["saturation"].x
    ceil_blocks, ceil_scales = reference.quantize(saturating, scale_mode="ceil")
    assert_within_format_bound(saturating, ceil_blocks, ceil_scales, scale_mode="ceil")
    with pytest.raises(AssertionError, match=r"'floor' rule; first at block \(0, 0\): amax 7.75, scale byte 128"):
        assert_within_format_bound(saturating, ceil_blocks, ceil_scales, scale_mode="floor")


def test_mse_exact_tie_goes_to_floor():
    """A block whose two MSE candidates tie exactly (checked with rationals) must keep FLOOR: byte 127.

    The tiny element 1.5 * 2^-26 is absorbed differently by two separately rounded float64 sums of squares, which
    would turn the tie into a win for FLOOR + 1; the reference decides on the exact difference instead.
    """
    from fractions import Fraction

    from mxfp4.spec import E2M1_VALUES

    block = [7.5, 7.0, 4.0, -1.0, -2.0, 0.5, 0.75, 0.5, 1.25, 1.75, -1.25, -1.25, -0.75, 0.5, 0.75, -0.5, -7.0, -1.75,
             1.5 * 2.0**-26, 0.5, -0.5, 5.0, -0.5, -1.5, 3.0, -2.0, -3.0, 1.25, -0.75, -1.0, 1.25, 3.5]

    def exact_error(exponent):
        codes = reference.round_to_e2m1(np.ldexp(np.array(block), -exponent))
        return sum((Fraction(v) - Fraction(E2M1_VALUES[c]) * Fraction(2) ** exponent) ** 2 for v, c in zip(block, codes))

    assert exact_error(0) == exact_error(1), "the golden block must be an exact tie"
    _, scales = reference.quantize(np.array([block], dtype=np.float32), scale_mode="mse")
    assert scales.tolist() == [[127]], f"an exact tie must keep the FLOOR exponent (byte 127), got {scales.tolist()}"
