"""Fuzz your own MXFP4 kernels against ``mxfp4.reference``: hypothesis strategies and assert helpers.

NumPy and hypothesis only (torch is never imported here; torch tensors passed to the helpers are read through
``.detach().cpu()``), so a kernel written for any framework can be checked::

    from hypothesis import given
    import mxfp4.reference as ref
    from mxfp4.testing import adversarial_arrays, assert_quantize_matches_reference

    @given(adversarial_arrays())
    def test_my_quantize(x):                                   # x: float32 [rows, K], K often odd
        blocks, scales = my_quantize(x)                        # uint8 [rows, G, 16], uint8 [rows, G]
        assert_quantize_matches_reference(x, blocks, scales, scale_mode="floor")

Strategies:
    :func:`scale_bytes`, :func:`mx_blocks` (any bytes), :func:`canonical_mx_blocks` (the bytes that every scale mode
    reproduces: ``quantize(dequantize(q)) == q``; see :func:`is_canonical`), :func:`adversarial_blocks` (one float
    block of 32: ties at every scale, saturation, NaN/Inf, zeros, subnormals, extreme exponents, -0, one-hot),
    :func:`adversarial_arrays` (arrays of such blocks, any shape and quantized axis, partial last blocks),
    :func:`mx_shapes`.

Assertions (each names the first place that differs, with got vs expected, and how many differ):
    :func:`assert_blocks_equal`, :func:`assert_quantize_matches_reference`, :func:`assert_bitwise_equal`,
    :func:`assert_close_to_reference`, :func:`assert_within_format_bound`.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mxfp4 import reference
from mxfp4.spec import (
    BLOCK_SIZE,
    BYTES_PER_BLOCK,
    E2M1_MAGNITUDE_MASK,
    E2M1_MAGNITUDES,
    E2M1_MAX,
    E2M1_ROUNDING_THRESHOLDS,
    E2M1_SIGN_BIT,
    E8M0_BIAS,
    E8M0_MAX_EXPONENT,
    E8M0_MIN_EXPONENT,
    E8M0_NAN,
    NIBBLE_BITS,
    NIBBLE_MASK,
    ScaleMode,
    num_blocks,
)

__all__ = [
    "scale_bytes",
    "mx_blocks",
    "canonical_mx_blocks",
    "is_canonical",
    "adversarial_blocks",
    "adversarial_arrays",
    "mx_shapes",
    "assert_blocks_equal",
    "assert_quantize_matches_reference",
    "assert_bitwise_equal",
    "assert_close_to_reference",
    "assert_within_format_bound",
]

SUPPORTED_DTYPES = (np.float16, np.float32, np.float64)

# A block whose largest magnitude code is one of these is reproduced by every scale rule at its own scale: amax is
# 4 * 2**e or 6 * 2**e, so floor(log2 amax) - 2 == e and 6 * 2**(e-1) < amax <= 6 * 2**e.
CANONICAL_TOP_MAGNITUDES = (4.0, E2M1_MAX)
_CANONICAL_TOP_CODES = tuple(E2M1_MAGNITUDES.index(m) for m in CANONICAL_TOP_MAGNITUDES)
_MIDPOINTS = tuple(mid for mid, _ in E2M1_ROUNDING_THRESHOLDS)
# Scaled magnitudes in (6, 8): what the floor rule saturates. 7 sits where the grid's next point (8) would tie.
_DEFAULT_GROUPS = st.integers(1, 6)
"""Blocks per row that the byte strategies draw by default."""
_SATURATING = (6.0 + 2.0**-20, 6.25, 6.5, 7.0, 7.5, 8.0 - 2.0**-20)


# --- strategies: raw MX bytes ----------------------------------------------------------------------------------
def scale_bytes(*, allow_nan: bool = True) -> st.SearchStrategy[int]:
    """E8M0 scale bytes: 0..254 (2**-127 .. 2**127), plus 255 (NaN) when ``allow_nan``; the ends drawn often."""
    top = E8M0_NAN if allow_nan else E8M0_NAN - 1
    specials = [0, 1, E8M0_BIAS, top - 1, top]
    return st.one_of(st.sampled_from(specials), st.integers(0, top))


def _as_strategy(value) -> st.SearchStrategy:
    return value if isinstance(value, st.SearchStrategy) else st.just(value)


@st.composite
def mx_blocks(draw, *, batch_shape=(), num_groups=_DEFAULT_GROUPS, allow_nan_scale: bool = True):
    """Arbitrary MXFP4 storage: ``(blocks uint8 [*batch, G, 16], scales uint8 [*batch, G])``.

    Every byte pattern is a valid encoding (each nibble is an E2M1 code, each scale byte an E8M0 value; 255 is a
    NaN block). ``batch_shape`` and ``num_groups`` may be values or strategies.
    """
    batch = tuple(draw(_as_strategy(batch_shape)))
    groups = draw(_as_strategy(num_groups))
    blocks = draw(hnp.arrays(np.uint8, (*batch, groups, BYTES_PER_BLOCK)))
    scales = draw(hnp.arrays(np.uint8, (*batch, groups), elements=scale_bytes(allow_nan=allow_nan_scale)))
    return blocks, scales


def is_canonical(blocks, scales) -> np.ndarray:
    """Per block (bool ``[*batch, G]``): is ``(blocks, scales)`` what quantize returns for its own decoded values?

    The same set for every :class:`~mxfp4.spec.ScaleMode`, when decoding exactly (float64):

    * scale 255 (NaN) with all codes 0 (the reference writes zero codes into NaN blocks);
    * scale 0 (2**-127) with any codes: every rule's exponent is clamped up to -127 there;
    * scale 1..254 with largest magnitude 4 or 6 (codes 6, 7, 14, 15): amax = 4·2^e or 6·2^e, where floor
      gives ``floor(log2 amax) - 2 = e``, ceil gives the smallest k with ``amax <= 6·2^k`` = e, and mse
      keeps e (zero error there; a tie goes to the floor candidate).

    A block with a smaller largest magnitude is re-encoded with a smaller exponent; the signs of zero codes
    (0 vs 8) are kept, as -0.0 decodes to -0.0 and quantizes back to code 8.
    """
    blocks, scales = np.asarray(blocks), np.asarray(scales)
    codes = reference.unpack(blocks).reshape(*scales.shape, BLOCK_SIZE)
    top_code = np.max(codes & E2M1_MAGNITUDE_MASK, axis=-1)
    finite_ok = (scales == 0) | ((scales != E8M0_NAN) & np.isin(top_code, _CANONICAL_TOP_CODES))
    nan_ok = (scales == E8M0_NAN) & np.all(codes == 0, axis=-1)
    return finite_ok | nan_ok


@st.composite
def canonical_mx_blocks(draw, *, batch_shape=(), num_groups=_DEFAULT_GROUPS, allow_nan_scale: bool = True):
    """MXFP4 storage that every scale mode reproduces: ``quantize(dequantize(q, float64), mode) == q``.

    Returns ``(blocks uint8 [*batch, G, 16], scales uint8 [*batch, G])`` with every block canonical
    (see :func:`is_canonical`): random codes; where the scale is 1..254 and no element has magnitude 4 or 6, one
    element is set to ±4 or ±6; all codes cleared where the scale is 255.
    """
    blocks, scales = draw(mx_blocks(batch_shape=batch_shape, num_groups=num_groups, allow_nan_scale=allow_nan_scale))
    codes = reference.unpack(blocks).reshape(*scales.shape, BLOCK_SIZE).copy()
    flat_codes, flat_scales = codes.reshape(-1, BLOCK_SIZE), scales.reshape(-1)
    for i in range(flat_scales.size):
        if flat_scales[i] == E8M0_NAN:
            flat_codes[i] = 0
        elif flat_scales[i] != 0 and np.max(flat_codes[i] & E2M1_MAGNITUDE_MASK) < min(_CANONICAL_TOP_CODES):
            position = draw(st.integers(0, BLOCK_SIZE - 1))
            top = draw(st.sampled_from(_CANONICAL_TOP_CODES))
            flat_codes[i, position] = (flat_codes[i, position] & E2M1_SIGN_BIT) | top
    codes = flat_codes.reshape(*scales.shape[:-1], scales.shape[-1] * BLOCK_SIZE)
    return reference.pack(codes.astype(np.uint8)), scales


# --- strategies: float input -----------------------------------------------------------------------------------
def _exponent_range(dtype) -> tuple[int, int]:
    """Block exponents k for which the values m * 2**k (m in 0.25..6) are exact and finite in ``dtype``."""
    info = np.finfo(dtype)
    lowest = math.ceil(math.log2(float(info.smallest_subnormal))) + 2  # 0.25 * 2**k still representable
    highest = math.floor(math.log2(float(info.max) / E2M1_MAX))
    return max(lowest, E8M0_MIN_EXPONENT), min(highest, E8M0_MAX_EXPONENT)


def _signed(draw, magnitudes) -> np.ndarray:
    signs = draw(st.lists(st.booleans(), min_size=len(magnitudes), max_size=len(magnitudes)))
    return np.where(signs, -1.0, 1.0) * np.asarray(magnitudes, dtype=np.float64)


@st.composite
def _tie_block(draw, dtype):
    """Exact E2M1 midpoints (and grid points) times 2**k, with one ±4 or ±6 pinning the block's scale at 2**k."""
    low, high = _exponent_range(dtype)
    k = draw(st.one_of(st.sampled_from([low, -1, 0, 1, high]), st.integers(low, high)))
    pool = _MIDPOINTS + E2M1_MAGNITUDES
    magnitudes = draw(st.lists(st.sampled_from(pool), min_size=BLOCK_SIZE, max_size=BLOCK_SIZE))
    magnitudes[draw(st.integers(0, BLOCK_SIZE - 1))] = draw(st.sampled_from(CANONICAL_TOP_MAGNITUDES))
    return np.ldexp(_signed(draw, magnitudes), k)


@st.composite
def _saturating_block(draw, dtype):
    """amax in (6, 8) * 2**k: the floor rule clips it to 6; others spread over [-8, 8) * 2**k."""
    low, high = _exponent_range(dtype)
    k = draw(st.integers(low, high - 1))
    rest = draw(st.lists(st.floats(0, 7.75, width=16), min_size=BLOCK_SIZE, max_size=BLOCK_SIZE))
    rest[draw(st.integers(0, BLOCK_SIZE - 1))] = draw(st.sampled_from(_SATURATING))
    return np.ldexp(_signed(draw, rest), k)


@st.composite
def _special_block(draw, dtype):
    """Ordinary values with NaN, +Inf or -Inf at one or more places: the block's scale must be 255 (NaN)."""
    values = draw(hnp.arrays(np.float64, BLOCK_SIZE, elements=st.floats(-1e4, 1e4)))
    specials = draw(st.lists(st.sampled_from([math.nan, math.inf, -math.inf]), min_size=1, max_size=3))
    for special in specials:
        values[draw(st.integers(0, BLOCK_SIZE - 1))] = special
    return values


@st.composite
def _zero_block(draw, dtype):
    """All +0.0 / -0.0: scale byte 0, codes 0 and 8 by sign."""
    return _signed(draw, [0.0] * BLOCK_SIZE)


@st.composite
def _subnormal_block(draw, dtype):
    """Subnormals of ``dtype`` (and zeros): amax below the smallest normal, often below 2**-127."""
    info = np.finfo(dtype)
    steps = int(round(float(info.smallest_normal) / float(info.smallest_subnormal)))
    multiples = draw(st.lists(st.integers(0, steps - 1), min_size=BLOCK_SIZE, max_size=BLOCK_SIZE))
    return _signed(draw, [m * float(info.smallest_subnormal) for m in multiples])


@st.composite
def _extreme_block(draw, dtype):
    """amax near the top of ``dtype`` (2**127 and up for float32) or just around 2**-127 (clamped scales)."""
    info = np.finfo(dtype)
    top_exp = min(math.frexp(float(info.max))[1] - 1, E8M0_MAX_EXPONENT + 1)
    if draw(st.booleans()):
        amax = draw(st.sampled_from([float(info.max), 2.0**top_exp, 1.5 * 2.0**top_exp, 2.0**top_exp * (2 - 2.0**-10)]))
        amax = min(amax, float(info.max))
    else:
        amax = draw(st.sampled_from([2.0**-126, 1.5 * 2.0**-126, 2.0**-127, 0.75 * 2.0**-127, 2.0**-130]))
        amax = max(amax, float(info.smallest_subnormal))
    fractions = draw(st.lists(st.floats(0, 1), min_size=BLOCK_SIZE, max_size=BLOCK_SIZE))
    fractions[draw(st.integers(0, BLOCK_SIZE - 1))] = 1.0
    return _signed(draw, [f * amax for f in fractions])


@st.composite
def _one_hot_block(draw, dtype):
    """One nonzero value (any finite magnitude of ``dtype``), the rest ±0."""
    values = _signed(draw, [0.0] * BLOCK_SIZE)
    width = np.finfo(dtype).bits
    values[draw(st.integers(0, BLOCK_SIZE - 1))] = draw(st.floats(allow_nan=False, allow_infinity=False, width=width))
    return values


@st.composite
def _wide_block(draw, dtype):
    """Any finite values of ``dtype``: exponents spread over the whole range within one block."""
    width = np.finfo(dtype).bits
    return draw(
        hnp.arrays(np.float64, BLOCK_SIZE, elements=st.floats(allow_nan=False, allow_infinity=False, width=width))
    )


@st.composite
def _gaussian_block(draw, dtype):
    """N(0, 1) values times 2**k (seeded by hypothesis): the data the error figures describe."""
    low, high = _exponent_range(dtype)
    seed = draw(st.integers(0, 2**32 - 1))
    k = draw(st.integers(max(low + 8, -40), min(high - 4, 40)))
    return np.ldexp(np.random.default_rng(seed).standard_normal(BLOCK_SIZE), k)


_BLOCK_KINDS = (
    _tie_block,
    _saturating_block,
    _special_block,
    _zero_block,
    _subnormal_block,
    _extreme_block,
    _one_hot_block,
    _wide_block,
    _gaussian_block,
)


def _check_dtype(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype.type not in SUPPORTED_DTYPES:
        raise TypeError(f"mxfp4.testing draws float16, float32 or float64 values, not {dtype} (cast bfloat16 yourself)")
    return dtype


def adversarial_blocks(dtype=np.float32, *, allow_nonfinite: bool = True) -> st.SearchStrategy[np.ndarray]:
    """One block: ``dtype [32]`` of values that break careless quantizers.

    Kinds: exact E2M1 midpoints times 2**k at every exponent k the dtype allows (ties to even at every scale);
    amax in (6, 8)·2**k (floor saturation); NaN/±Inf (skipped when ``not allow_nonfinite``); all ±0; subnormals of
    ``dtype``; amax at the dtype's top (float32: ~2**128) or around 2**-127; one-hot; any finite values; Gaussian.
    Every value is exactly representable in ``dtype``.
    """
    dtype = _check_dtype(dtype)
    kinds = [kind(dtype) for kind in _BLOCK_KINDS if allow_nonfinite or kind is not _special_block]
    with np.errstate(over="ignore"):
        return st.one_of(kinds).map(lambda values: values.astype(dtype))


@st.composite
def mx_shapes(draw, *, max_dims: int = 3, max_side: int = 4, max_length: int = 130):
    """``(shape, axis)``: a tensor shape and the axis to quantize; its length is often not a multiple of 32."""
    ndim = draw(st.integers(1, max_dims))
    axis = draw(st.integers(0, ndim - 1))
    shape = [draw(st.integers(1, max_side)) for _ in range(ndim)]
    special_lengths = [1, 31, 32, 33, 63, 100]
    shape[axis] = draw(
        st.one_of(st.sampled_from([n for n in special_lengths if n <= max_length]), st.integers(1, max_length))
    )
    return tuple(shape), axis


@st.composite
def adversarial_arrays(draw, shapes=None, dtype=np.float32, *, allow_nonfinite: bool = True, with_axis: bool = False):
    """An array of adversarial blocks laid along the quantized axis.

    Args:
        shapes: a strategy of ``(shape, axis)`` (default :func:`mx_shapes` with 2-D shapes, axis -1:
            ``[rows, K]`` with K in 1..130) or a fixed ``(shape, axis)``.
        dtype: float16, float32 or float64.
        with_axis: return ``(x, axis)`` instead of ``x``.

    Each run of 32 along the axis is one :func:`adversarial_blocks` block; the last one is cut to the axis length
    (a partial block). Returns ``dtype`` array of the drawn shape.
    """
    dtype = _check_dtype(dtype)
    if shapes is None:
        shape, axis = draw(st.tuples(st.integers(1, 4), st.integers(1, 130))), 1
    else:
        shape, axis = draw(_as_strategy(shapes))
    shape = tuple(shape)
    axis = axis % len(shape)
    length = shape[axis]
    rows = int(np.prod(shape[:axis] + shape[axis + 1 :], dtype=np.int64))
    groups = num_blocks(length)
    block = adversarial_blocks(dtype, allow_nonfinite=allow_nonfinite)
    drawn = draw(st.lists(block, min_size=rows * groups, max_size=rows * groups))
    flat = np.stack(drawn).reshape(rows, groups * BLOCK_SIZE)[:, :length]
    moved = flat.reshape(*shape[:axis], *shape[axis + 1 :], length)
    x = np.ascontiguousarray(np.moveaxis(moved, -1, axis))
    return (x, axis) if with_axis else x


# --- assertions ------------------------------------------------------------------------------------------------
def _numpy(value, name: str) -> np.ndarray:
    """A NumPy view of a NumPy array or a torch tensor (any device; bfloat16 widened exactly to float32)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    value = np.asarray(value)
    if value.dtype == object:
        raise TypeError(f"{name}: cannot compare values of type {type(value).__name__}")
    return value


def _index(flat_index: int, shape) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(flat_index, shape)) if shape else ()


def _check_shapes(got: np.ndarray, expected: np.ndarray, what: str) -> None:
    if got.shape != expected.shape:
        raise AssertionError(f"{what}: shape {got.shape} != expected {expected.shape}")


def assert_blocks_equal(
    blocks, scales, expected_blocks, expected_scales, *, compare_nan_blocks: bool = False, what: str = ""
) -> None:
    """Assert MXFP4 storage equals the expected bytes; on failure say where (block index, byte, element) and how.

    Args:
        blocks, scales: what your kernel wrote, ``uint8 [..., G, 16]`` and ``uint8 [..., G]`` (NumPy or torch).
        expected_blocks, expected_scales: the truth (e.g. ``mxfp4.reference.quantize``).
        compare_nan_blocks: also compare element bytes of blocks whose scale is 255; the format leaves them
            unspecified (the reference writes zeros), so by default only their scale is compared.
    """
    prefix = f"{what}: " if what else ""
    blocks, scales = _numpy(blocks, "blocks"), _numpy(scales, "scales")
    expected_blocks, expected_scales = (
        _numpy(expected_blocks, "expected_blocks"),
        _numpy(expected_scales, "expected_scales"),
    )
    for name, got in (("blocks", blocks), ("scales", scales)):
        if got.dtype != np.uint8:
            raise AssertionError(f"{prefix}{name} dtype {got.dtype} != uint8")
    _check_shapes(scales, expected_scales, f"{prefix}scales")
    _check_shapes(blocks, expected_blocks, f"{prefix}blocks")
    scale_differs = scales != expected_scales
    if scale_differs.any():
        first = int(np.flatnonzero(scale_differs)[0])
        where = _index(first, scales.shape)
        got_s, want_s = int(scales.flat[first]), int(expected_scales.flat[first])
        raise AssertionError(
            f"{prefix}{int(scale_differs.sum())} of {scales.size} scale bytes differ; first at block {where}: "
            f"got {got_s} ({_describe_scale(got_s)}), expected {want_s} ({_describe_scale(want_s)})"
        )
    byte_differs = blocks != expected_blocks
    if not compare_nan_blocks:
        byte_differs &= (expected_scales != E8M0_NAN)[..., None]
    if byte_differs.any():
        first = int(np.flatnonzero(byte_differs)[0])
        where = _index(first, blocks.shape)
        got_b, want_b = int(blocks.flat[first]), int(expected_blocks.flat[first])
        element = where[-1] * 2
        raise AssertionError(
            f"{prefix}{int(byte_differs.sum())} of {blocks.size} element bytes differ; "
            f"first at block {where[:-1]}, byte "
            f"{where[-1]} (elements {element} and {element + 1}): got 0x{got_b:02x} (codes {_describe_byte(got_b)}), "
            f"expected 0x{want_b:02x} (codes {_describe_byte(want_b)}); "
            f"block scale byte {int(expected_scales[where[:-1]])}"
        )


def _describe_scale(byte: int) -> str:
    return "NaN" if byte == E8M0_NAN else f"2**{byte - E8M0_BIAS}"


def _describe_byte(byte: int) -> str:
    low, high = byte & NIBBLE_MASK, byte >> NIBBLE_BITS
    values = reference.dequantize(np.array([[byte] * BYTES_PER_BLOCK], np.uint8), np.array([E8M0_BIAS], np.uint8))[:2]
    return f"{low}={values[0]:g}, {high}={values[1]:g}"


def assert_quantize_matches_reference(
    x, blocks, scales, *, axis: int = -1, scale_mode: ScaleMode | str = "floor"
) -> None:
    """Assert ``(blocks, scales)`` is bit for bit ``mxfp4.reference.quantize(x, axis, scale_mode)``.

    ``x`` may be a NumPy array or torch tensor (bfloat16 allowed); blocks/scales as your kernel returns them
    (``[..., G, 16]`` / ``[..., G]`` with ``axis`` moved last). The message also prints the input block that differs.
    """
    x_np = _numpy(x, "x")
    mode = ScaleMode.parse(scale_mode)
    expected_blocks, expected_scales = reference.quantize(x_np, axis=axis, scale_mode=mode)
    try:
        assert_blocks_equal(
            blocks, scales, expected_blocks, expected_scales, what=f"quantize(scale_mode={mode.value!r})"
        )
    except AssertionError as error:
        got_blocks, got_scales = _numpy(blocks, "blocks"), _numpy(scales, "scales")
        if got_blocks.shape != expected_blocks.shape or got_scales.shape != expected_scales.shape:
            raise
        block_differs = (got_scales != expected_scales) | (
            np.any(got_blocks != expected_blocks, axis=-1) & (expected_scales != E8M0_NAN)
        )
        where = _index(int(np.flatnonzero(block_differs)[0]), expected_scales.shape)
        start = where[-1] * BLOCK_SIZE
        values = np.moveaxis(x_np, axis, -1)[where[:-1]][start : start + BLOCK_SIZE]
        raise AssertionError(f"{error}\ninput block {where} (axis {axis} moved last): {values.tolist()}") from None


def _bits(values: np.ndarray) -> np.ndarray:
    widths = {2: np.uint16, 4: np.uint32, 8: np.uint64}
    if values.dtype.kind != "f":
        return values
    return values.view(widths[values.dtype.itemsize])


def assert_bitwise_equal(got, expected, *, what: str = "values") -> None:
    """Assert two float arrays are identical bit for bit (NaN equals NaN, +0 differs from -0), same dtype and shape.

    Use it for dequantize, whose every output is exact before one rounding to the output dtype.
    """
    got_np, expected_np = _numpy(got, what), _numpy(expected, "expected")
    _check_shapes(got_np, expected_np, what)
    if got_np.dtype != expected_np.dtype:
        raise AssertionError(f"{what}: dtype {got_np.dtype} != expected {expected_np.dtype}")
    both_nan = np.isnan(got_np) & np.isnan(expected_np) if got_np.dtype.kind == "f" else np.zeros(got_np.shape, bool)
    differs = (_bits(got_np) != _bits(expected_np)) & ~both_nan
    if differs.any():
        first = int(np.flatnonzero(differs)[0])
        raise AssertionError(
            f"{what}: {int(differs.sum())} of {differs.size} differ bitwise; first at {_index(first, differs.shape)}: "
            f"got {got_np.flat[first].item()!r}, expected {expected_np.flat[first].item()!r}"
        )


def assert_close_to_reference(got, expected, *, rtol: float, atol: float = 0.0, what: str = "output") -> None:
    """Assert ``|got - expected| <= atol + rtol * |expected|`` everywhere, NaN exactly where expected is NaN.

    On failure: how many elements break the bound, and the worst one (index, got, expected, error, bound).
    """
    got_np = _numpy(got, what).astype(np.float64)
    expected_np = _numpy(expected, "expected").astype(np.float64)
    _check_shapes(got_np, expected_np, what)
    nan_mismatch = np.isnan(got_np) != np.isnan(expected_np)
    if nan_mismatch.any():
        first = int(np.flatnonzero(nan_mismatch)[0])
        raise AssertionError(
            f"{what}: NaN at {int(nan_mismatch.sum())} places where the reference has none (or the reverse); first at "
            f"{_index(first, got_np.shape)}: got {got_np.flat[first].item()!r}, "
            f"expected {expected_np.flat[first].item()!r}"
        )
    with np.errstate(invalid="ignore"):
        same = (got_np == expected_np) | np.isnan(expected_np)  # equal infinities, NaNs
        error = np.where(same, 0.0, np.abs(got_np - expected_np))
        bound = atol + rtol * np.abs(expected_np)
        excess = np.where(same, -np.inf, error - bound)
    if (excess > 0).any():
        worst = int(np.argmax(excess))
        raise AssertionError(
            f"{what}: {int((excess > 0).sum())} of {excess.size} elements exceed "
            f"atol={atol:g} + rtol={rtol:g}*|expected|; worst at {_index(worst, got_np.shape)}: "
            f"got {got_np.flat[worst].item()!r}, expected {expected_np.flat[worst].item()!r}, "
            f"|error| {error.flat[worst]:.6g} > bound {bound.flat[worst]:.6g}"
        )


def assert_within_format_bound(x, blocks, scales, *, axis: int = -1, scale_mode: ScaleMode | str | None = None) -> None:
    """Assert that ``(blocks, scales)`` is a faithful MXFP4 encoding of ``x`` (any kernel, any scale rule).

    Per block of 32 along ``axis`` with scale ``s = 2**e``:

    * scale 255 (NaN) exactly for blocks holding a NaN or ±Inf;
    * every element with ``|x| <= 6·s`` decodes to a nearest E2M1 value: ``|x - q| <=`` half the grid step around
      ``|x|/s`` (0.25·s up to 2·s, 0.5·s up to 4·s, 1·s up to 6·s);
    * every element with ``|x| > 6·s`` (saturated) decodes to ±6·s, and ``|x| < 8·s`` unless s is the clamp 2**127:
      the saturation bound, ``|x - q| < 2·s``;
    * with ``scale_mode`` given, the exponent follows the rule: floor ``amax/s`` in [4, 8), ceil in (3, 6], mse
      e in {floor e, floor e + 1}, each unless clamped to [-127, 127] (amax = 0 gives e = -127).
    """
    x_np = np.moveaxis(_numpy(x, "x").astype(np.float64), axis, -1)
    blocks_np, scales_np = _numpy(blocks, "blocks"), _numpy(scales, "scales")
    length = x_np.shape[-1]
    groups = num_blocks(length)
    if scales_np.shape != (*x_np.shape[:-1], groups):
        raise AssertionError(
            f"scales {scales_np.shape} do not fit x {x_np.shape} (axis {axis} moved last): "
            f"expected {(*x_np.shape[:-1], groups)}"
        )
    padded = np.zeros((*x_np.shape[:-1], groups * BLOCK_SIZE))
    padded[..., :length] = x_np
    xb = padded.reshape(*scales_np.shape, BLOCK_SIZE)
    with np.errstate(invalid="ignore", over="ignore"):
        qb = reference.dequantize(blocks_np, scales_np, dtype=np.float64).reshape(xb.shape)
    finite = np.all(np.isfinite(xb), axis=-1)
    nan_scale = scales_np == E8M0_NAN
    wrong_nan = finite == nan_scale
    if wrong_nan.any():
        first = _index(int(np.flatnonzero(wrong_nan)[0]), scales_np.shape)
        raise AssertionError(
            f"{int(wrong_nan.sum())} blocks have scale 255 (NaN) iff they are finite; first at block {first}: "
            f"scale byte {int(scales_np[first])}, input {xb[first].tolist()}"
        )
    scale = np.ldexp(1.0, np.where(nan_scale, E8M0_BIAS, scales_np).astype(np.int64) - E8M0_BIAS)[..., None]
    xf, qf = np.where(finite[..., None], xb, 0.0), np.where(finite[..., None], qb, 0.0)
    scaled = np.abs(xf) / scale
    half_step = np.where(scaled <= 2, 0.25, np.where(scaled <= 4, 0.5, 1.0)) * scale
    saturated = scaled > E2M1_MAX
    error = np.abs(xf - qf)
    at_top_clamp = (scales_np == E8M0_BIAS + E8M0_MAX_EXPONENT)[..., None]
    bad = np.where(
        saturated,
        (np.abs(qf) != E2M1_MAX * scale) | (np.sign(qf) != np.sign(xf)) | ((scaled >= 8) & ~at_top_clamp),
        error > half_step,
    )
    if bad.any():
        first = _index(int(np.flatnonzero(bad)[0]), bad.shape)
        block, element = first[:-1], first[-1]
        allowed = "saturation to 6*scale" if saturated[first] else f"{half_step[first]:.6g}"
        raise AssertionError(
            f"{int(bad.sum())} elements break the MXFP4 rounding bound; first at block {block}, element {element}: "
            f"x {xb[first].item()!r} decoded as {qb[first].item()!r} "
            f"with scale {_describe_scale(int(scales_np[block]))} (error {error[first]:.6g}, allowed {allowed})"
        )
    if scale_mode is not None:
        _assert_scale_rule(xf, scales_np, finite, ScaleMode.parse(scale_mode))


def _assert_scale_rule(xb: np.ndarray, scales: np.ndarray, finite: np.ndarray, mode: ScaleMode) -> None:
    amax = np.max(np.abs(xb), axis=-1)
    exponent = scales.astype(np.int64) - E8M0_BIAS
    floor_rule = np.frexp(np.where(amax > 0, amax, 1.0))[1].astype(np.int64) - 1 - 2
    clamp = lambda e: np.clip(e, E8M0_MIN_EXPONENT, E8M0_MAX_EXPONENT)  # noqa: E731
    if mode is ScaleMode.FLOOR:
        ok = exponent == clamp(floor_rule)
    elif mode is ScaleMode.CEIL:
        fits = amax <= np.ldexp(E2M1_MAX, exponent)
        fits_lower = amax <= np.ldexp(E2M1_MAX, exponent - 1)
        ok = (exponent == E8M0_MAX_EXPONENT) | (fits & ((exponent == E8M0_MIN_EXPONENT) | ~fits_lower))
    else:
        ok = (exponent == clamp(floor_rule)) | (exponent == clamp(floor_rule + 1))
    ok = np.where(amax > 0, ok, exponent == E8M0_MIN_EXPONENT) | ~finite
    if not ok.all():
        first = _index(int(np.flatnonzero(~ok)[0]), scales.shape)
        raise AssertionError(
            f"{int((~ok).sum())} scales break the {mode.value!r} rule; "
            f"first at block {first}: amax {amax[first].item()!r}, "
            f"scale byte {int(scales[first])} (2**{int(exponent[first])})"
        )
