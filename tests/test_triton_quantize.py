"""The Triton quantize kernel against ``mxfp4.reference.quantize``: bit for bit, on every Triton path and scale mode.

Runs interpreted on the CPU (conftest sets TRITON_INTERPRET=1) and compiled on a GPU, unchanged. GPT-OSS-sized
shapes run only where CUDA is available.
"""

from __future__ import annotations

import fractions

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mxfp4
from conftest import HAS_CUDA, TRITON_BACKENDS, requires_cuda
from mxfp4 import reference
from mxfp4.dispatch import Backend, BackendUnavailableError
from mxfp4.spec import (
    BLOCK_SIZE,
    BYTES_PER_BLOCK,
    E2M1_MAGNITUDES,
    E2M1_SIGN_BIT,
    E8M0_NAN,
    ScaleMode,
    num_blocks,
)
from mxfp4.testing import adversarial_arrays, assert_blocks_equal, mx_shapes
from mxfp4.triton_kernels import launch as launch_module
from mxfp4.triton_kernels import quantize as quantize_module
from mxfp4.triton_kernels.quantize import quantize

MODES = tuple(ScaleMode)
DEVICE = "cuda" if HAS_CUDA else "cpu"  # for hypothesis tests, which cannot take function-scoped fixtures
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
NP_DTYPES = {"fp32": np.float32, "fp16": np.float16}
VECTORS = __import__("pathlib").Path(__file__).parent / "data" / "mxfp4_vectors.npz"
# Interpreted NaN/Inf arithmetic warns in NumPy; the values are what the test expects.
pytestmark = pytest.mark.filterwarnings("ignore:(overflow|invalid value) encountered:RuntimeWarning")


# --- helpers ---------------------------------------------------------------------------------------------------
def expected_quantize(x: torch.Tensor, mode: ScaleMode, axis: int = -1):
    """The reference's bytes for x (bfloat16 widened exactly to float32 first)."""
    return reference.quantize(x.detach().cpu().float().numpy(), axis=axis, scale_mode=mode)


def check_quantize(x: torch.Tensor, mode: ScaleMode, backend: str, what: str = "") -> None:
    """Launcher on x (along the last axis) == reference, NaN blocks' element bytes included (both write zeros)."""
    blocks, scales = quantize(x, mode, Backend(backend))
    assert blocks.shape == (*x.shape[:-1], num_blocks(x.shape[-1]), BYTES_PER_BLOCK), blocks.shape
    assert_blocks_equal(
        blocks.cpu(),
        scales.cpu(),
        *expected_quantize(x, mode),
        compare_nan_blocks=True,
        what=f"{what} {backend} {mode.value} {x.dtype} {tuple(x.shape)}",
    )


def random_data(kind: str, shape, rng: np.random.Generator) -> np.ndarray:
    """Fresh float64 data of one kind (cast by the caller)."""
    if kind == "gaussian":
        return rng.standard_normal(shape) * 2.0 ** rng.integers(-20, 20)
    if kind == "heavy_tailed":  # Student-t with 1.5 degrees of freedom: a few huge values per block
        return rng.standard_t(1.5, shape) * 2.0 ** rng.integers(-10, 10, shape[:-1] + (1,))
    if kind == "ties":  # exact E2M1 midpoints and grid points times a per-block power of two
        pool = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, *E2M1_MAGNITUDES])
        values = rng.choice(pool, shape) * rng.choice([-1.0, 1.0], shape)
        values[..., 0] = rng.choice([4.0, 6.0, -6.0, 7.0, 5.0], shape[:-1])  # pin the scale (7: floor saturates)
        return np.ldexp(values, rng.integers(-120, 120, shape[:-1] + (1,)))
    if kind == "extreme_exponents":  # every exponent of float32, subnormals included, in the same rows
        bits = rng.integers(0, 2**31 - 2**23, shape, dtype=np.int64).astype(np.uint32)  # finite magnitudes only
        bits |= rng.integers(0, 2, shape, dtype=np.uint32) << 31
        return bits.view(np.float32).astype(np.float64)
    if kind == "nan_inf":
        values = rng.standard_normal(shape)
        flat = values.reshape(-1)
        spots = rng.choice(flat.size, size=max(1, flat.size // 50), replace=False)
        flat[spots] = rng.choice([np.nan, np.inf, -np.inf], spots.size)
        return values
    raise ValueError(kind)


def to_torch(values: np.ndarray, dtype_name: str, device: str) -> torch.Tensor:
    with np.errstate(over="ignore"):
        return torch.from_numpy(np.asarray(values, dtype=np.float32)).to(device=device, dtype=DTYPES[dtype_name])


# --- conformance vectors ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vectors():
    return dict(np.load(VECTORS))


@pytest.mark.parametrize("part", ["full", "partial"])
@pytest.mark.parametrize("mode", [ScaleMode.FLOOR, ScaleMode.CEIL], ids=lambda m: m.value)
@pytest.mark.parametrize("backend", TRITON_BACKENDS)
def test_conformance_vectors(vectors, backend, mode, part, device):
    """The independent implementation's bytes (ties, saturation, NaN/Inf, subnormals, 2**±127, partial blocks)."""
    suffix = "" if part == "full" else "_partial"
    x = torch.from_numpy(vectors["x" + suffix]).to(device)
    blocks, scales = quantize(x, mode, Backend(backend))
    assert_blocks_equal(
        blocks.cpu(),
        scales.cpu(),
        vectors[f"{mode.value}{suffix}_blocks"],
        vectors[f"{mode.value}{suffix}_scales"],
        compare_nan_blocks=True,
        what=f"conformance {part} {mode.value} {backend}",
    )


@pytest.mark.parametrize("backend", TRITON_BACKENDS)
def test_conformance_inputs_mse(vectors, backend, device):
    """mse has no independent vectors: the conformance inputs against the reference."""
    for key in ("x", "x_partial"):
        check_quantize(torch.from_numpy(vectors[key]).to(device), ScaleMode.MSE, backend, what=key)


# --- hand-written golden cases ---------------------------------------------------------------------------------
# (id, mode, input values (padded with +0 to 32), expected scale byte, expected codes of the first len(codes) elements)
GOLDEN = [
    ("one_and_minus_half", "floor", [1.0, -0.5], 125, [6, 12]),  # scale 2**-2: 4.0 and -2.0
    # amax 5 -> floor(log2 5) - 2 = 0: every midpoint, ties to even; -0.25 keeps its sign as -0 (code 8).
    ("ties_to_even", "floor", [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -0.25, -2.5], 127, [0, 2, 2, 4, 4, 6, 6, 8, 12]),
    ("floor_saturates", "floor", [7.5, -7.0, 6.5], 127, [7, 15, 7]),
    ("ceil_never_clips", "ceil", [7.5, -7.0, 6.5], 128, [6, 14, 5]),  # /2: 3.75 -> 4, 3.5 tie -> 4, 3.25 -> 3
    ("ceil_exact_six", "ceil", [6.0, 3.0], 127, [7, 5]),  # amax == 6 * 2**0 fits: no step up
    ("zeros", "floor", [0.0] * 32, 0, [0] * 32),
    ("negative_zeros", "floor", [-0.0] * 32, 0, [8] * 32),
    ("nan", "floor", [1.0, float("nan")], E8M0_NAN, [0, 0]),
    ("inf", "ceil", [float("inf"), 1.0], E8M0_NAN, [0, 0]),
    ("neg_inf", "mse", [2.0, float("-inf")], E8M0_NAN, [0, 0]),
    # Scale clamps at 2**-127: x * 2**127 is then 2, 0.5, 0.75 (tie -> 1.0), 0.125 (-> 0).
    ("smallest_normal_amax", "floor", [2.0**-126, 2.0**-128, 3 * 2.0**-129, 2.0**-130], 0, [4, 1, 2, 0]),
    ("subnormal_only", "ceil", [2.0**-140, -(2.0**-149)], 0, [0, 8]),
    # amax near 2**128: floor keeps 2**125 (6 * 2**125 = 1.5 * 2**127) and saturates; ceil steps to 2**126.
    ("top_floor", "floor", [1.75 * 2.0**127, 1.5 * 2.0**127], 252, [7, 7]),
    ("top_ceil", "ceil", [1.75 * 2.0**127, 1.5 * 2.0**127], 253, [6, 5]),  # 3.5 tie -> 4; 3.0
    ("float32_max_ceil", "ceil", [float(np.finfo(np.float32).max)], 253, [6]),
    # mse: all 7.9 -> floor gives 6 (error 1.9 each), floor + 1 gives 8 (error 0.1): picks floor + 1.
    ("mse_prefers_high", "mse", [7.9] * 32, 128, [6] * 32),
    # mse exact tie (5 -> 4 at 2**0 or 4 at 2**1, error 1 both ways): keeps floor.
    ("mse_tie_keeps_floor", "mse", [5.0] * 32, 127, [6] * 32),
    ("mse_small_block", "mse", [2.0**-126] * 3, 0, [4, 4, 4]),  # both candidates clamp to 2**-127
]


@pytest.mark.parametrize("backend", TRITON_BACKENDS)
@pytest.mark.parametrize("case", GOLDEN, ids=lambda c: c[0])
def test_golden(case, backend, device):
    name, mode, values, scale, codes = case
    x = torch.zeros(1, BLOCK_SIZE, dtype=torch.float32)
    x[0, : len(values)] = torch.tensor(values, dtype=torch.float32)
    blocks, scales = quantize(x.to(device), ScaleMode(mode), Backend(backend))
    got_codes = reference.unpack(blocks.cpu().numpy()).reshape(-1)
    assert int(scales[0, 0]) == scale, f"{name}: scale byte {int(scales[0, 0])}, expected {scale}"
    assert got_codes[: len(codes)].tolist() == codes, (
        f"{name}: codes {got_codes[: len(codes)].tolist()}, expected {codes}"
    )
    check_quantize(x.to(device), ScaleMode(mode), backend, what=name)  # and the rest of the block, vs the reference


# --- fresh random data of every kind ---------------------------------------------------------------------------
KINDS = ("gaussian", "heavy_tailed", "ties", "extreme_exponents", "nan_inf")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("backend", TRITON_BACKENDS)
def test_random_kinds(kind, mode, backend, rng, device):
    for dtype_name, shape in (("fp32", (9, 100)), ("bf16", (5, 63)), ("fp16", (4, 96))):
        values = random_data(kind, shape, rng)
        if dtype_name == "fp16" and kind in ("extreme_exponents", "ties"):
            values = np.ldexp(values, -np.maximum(0, np.frexp(np.nanmax(np.abs(values)))[1] - 15))  # keep fp16 finite
        check_quantize(to_torch(values, dtype_name, device), mode, backend, what=kind)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
@pytest.mark.parametrize("backend", TRITON_BACKENDS)
def test_property_matches_reference(backend, data):
    """Any shape and axis, partial blocks, every block kind of mxfp4.testing, through the public API."""
    dtype_name = data.draw(st.sampled_from(["fp32", "fp16", "bf16"]), label="dtype")
    mode = data.draw(st.sampled_from(MODES), label="mode")
    np_dtype = NP_DTYPES.get(dtype_name, np.float32)
    x_np, axis = data.draw(
        adversarial_arrays(shapes=mx_shapes(max_length=100), dtype=np_dtype, with_axis=True), label="x"
    )
    x = to_torch(x_np, dtype_name, DEVICE)
    q = mxfp4.quantize(x, axis=axis, scale_mode=mode, backend=backend)
    assert_blocks_equal(
        q.blocks.cpu(),
        q.scales.cpu(),
        *expected_quantize(x, mode, axis),
        compare_nan_blocks=True,
        what=f"{backend} {mode.value} {dtype_name} shape {tuple(x.shape)} axis {axis}",
    )


# --- layouts: any axis, leading shape, strides -----------------------------------------------------------------
def _layouts(device):
    base = torch.randn(6, 70, 5, device=device)
    wide = torch.randn(40, 200, device=device)
    return {
        "contiguous_3d": base,
        "transposed": wide.t(),  # K has stride 200
        "sliced_rows_and_k": wide[3:37:2, 5:180:3],
        "expanded_rows": torch.randn(1, 45, device=device).expand(7, 45),
        "permuted_4d": torch.randn(3, 4, 5, 66, device=device).permute(2, 0, 3, 1),  # leading dims do not collapse
        "single_row_long_k": torch.randn(1, 2000, device=device),
        "many_rows_k1": torch.randn(300, 1, device=device),
    }


@pytest.mark.parametrize("backend", TRITON_BACKENDS)
@pytest.mark.parametrize(
    "layout",
    [
        "contiguous_3d",
        "transposed",
        "sliced_rows_and_k",
        "expanded_rows",
        "permuted_4d",
        "single_row_long_k",
        "many_rows_k1",
    ],
)
def test_layouts_and_axes(layout, backend, device):
    x = _layouts(device)[layout]
    for axis in range(x.dim()):
        mode = MODES[axis % len(MODES)]
        q = mxfp4.quantize(x, axis=axis, scale_mode=mode, backend=backend)
        assert_blocks_equal(
            q.blocks.cpu(),
            q.scales.cpu(),
            *expected_quantize(x, mode, axis),
            compare_nan_blocks=True,
            what=f"{layout} axis {axis} {mode.value}",
        )
    check_quantize(x, ScaleMode.FLOOR, backend, what=f"{layout} launcher")


def test_rows_view_collapses_movedim_of_contiguous():
    """Any axis of a contiguous tensor needs no copy: the leading dims of the moved view collapse into two."""
    x = torch.empty(3, 4, 5, 6)
    for axis in range(4):
        moved = x.movedim(axis, -1)
        assert launch_module.rows_view(moved.shape[:-1], moved.stride()[:-1]) is not None, axis
    assert launch_module.rows_view((3, 4, 5), (1, 3, 12)) is None  # a 3-way interleave: the launcher copies


# --- every output byte is written, nothing outside -------------------------------------------------------------
@pytest.mark.parametrize("poison", [0xFF, 0x00, 0x5A])
@pytest.mark.parametrize("backend", TRITON_BACKENDS)
def test_poisoned_outputs(poison, backend, rng, device):
    """Outputs prefilled with a poison byte: every byte must match the reference, whatever the poison."""
    values = random_data("nan_inf", (37, 100), rng)
    x = to_torch(values, "fp32", device)
    blocks = torch.full((37, 4, BYTES_PER_BLOCK), poison, dtype=torch.uint8, device=device)
    scales = torch.full((37, 4), poison, dtype=torch.uint8, device=device)
    got = quantize(x, ScaleMode.FLOOR, Backend(backend), out=(blocks, scales))
    assert got[0] is blocks and got[1] is scales
    assert_blocks_equal(
        blocks.cpu(),
        scales.cpu(),
        *expected_quantize(x, ScaleMode.FLOOR),
        compare_nan_blocks=True,
        what=f"poison 0x{poison:02x}",
    )


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("backend", TRITON_BACKENDS)
def test_masking_views_into_nan_buffers(mode, backend, rng, device, monkeypatch):
    """Input: a view into a buffer that is NaN past the logical rows and K (a partial last block, K = 200), and
    NaN between strided elements. Outputs: views into larger buffers; nothing outside them may change. Small
    tiles are forced so that tiles are ragged in both rows and blocks."""
    monkeypatch.setattr(quantize_module, "ELEMENTS_PER_PROGRAM", 256)
    monkeypatch.setattr(quantize_module, "MAX_GROUP_TILE", 2)
    rows, length = 21, 200
    groups = -(-length // BLOCK_SIZE)
    data = torch.from_numpy(rng.standard_normal((rows, length)).astype(np.float32)).to(device)
    big = torch.full((rows + 5, 2 * (length + 40)), float("nan"), device=device)
    big[:rows, : 2 * length : 2] = data
    x = big[:rows, : 2 * length : 2]  # stride 2 along K, NaN in between and beyond
    out_blocks = torch.full((rows + 3, groups + 3, BYTES_PER_BLOCK), 0xAB, dtype=torch.uint8, device=device)
    out_scales = torch.full((rows + 3, groups + 3), 0xAB, dtype=torch.uint8, device=device)
    inside = (slice(1, rows + 1), slice(2, groups + 2))
    blocks, scales = out_blocks[inside], out_scales[inside]
    quantize(x, mode, Backend(backend), out=(blocks, scales))
    assert_blocks_equal(
        blocks.cpu(), scales.cpu(), *expected_quantize(data, mode), compare_nan_blocks=True, what="masked view"
    )
    for name, buffer in (("blocks", out_blocks), ("scales", out_scales)):
        outside = torch.ones(buffer.shape, dtype=torch.bool, device=device)
        outside[inside] = False
        written = int((buffer[outside] != 0xAB).sum())
        assert written == 0, f"quantize wrote {written} {name} bytes outside its output view"


# --- mse decides exactly ---------------------------------------------------------------------------------------
def _near_tie_blocks(rng, count: int):
    """Blocks where mse's two candidates' squared errors differ by +-2**-23 (relative) or tie exactly.

    In units of the floor scale: s1 = 1.5 + t1 (1.5 at the floor exponent, 2 at floor + 1) and s2 = 7 + t2 (6 and 8).
    err_floor - err_high = (t1 - 1/4) + 4 t2; with t2 = 1/16 - k 2**-19 and t1 = (64k + d) 2**-23 that is d 2**-23.
    Every value is a float32; the float64 sums of the reference are exact for these blocks, float32 sums are not.
    """
    blocks, decisions = [], []
    for _ in range(count):
        k = int(rng.integers(1, 64))
        d = int(rng.choice([-1, 0, 1]))
        t1 = (64 * k + d) * 2.0**-23
        t2 = 1 / 16 - k * 2.0**-19
        block = np.zeros(BLOCK_SIZE)
        i, j = rng.choice(BLOCK_SIZE, 2, replace=False)
        block[i], block[j] = 1.5 + t1, 7.0 + t2
        small = rng.choice(BLOCK_SIZE, 5, replace=False)  # |s| < 1/4 rounds to 0 both ways: adds nothing
        block[small[~np.isin(small, [i, j])]] = rng.integers(-15, 16, np.sum(~np.isin(small, [i, j]))) * 2.0**-6
        signs = rng.choice([-1.0, 1.0], BLOCK_SIZE)
        blocks.append(np.ldexp(block * signs, int(rng.integers(-100, 100))))
        decisions.append(d > 0)
    return np.stack(blocks).astype(np.float32), np.array(decisions)


def _exact_prefers_high(block: np.ndarray) -> bool:
    """The mse decision in exact rational arithmetic (independent of both implementations)."""
    exponent = int(np.frexp(np.max(np.abs(block.astype(np.float64))))[1]) - 1 - 2
    x = [fractions.Fraction(float(v)) for v in block]

    def error(e):
        scale = fractions.Fraction(2) ** e
        codes = reference.round_to_e2m1(np.array([float(v / scale) for v in x]))
        q = [fractions.Fraction(E2M1_MAGNITUDES[c & 7]) * (-1 if c & E2M1_SIGN_BIT else 1) * scale for c in codes]
        return sum((a - b) ** 2 for a, b in zip(x, q))

    return error(exponent + 1) < error(exponent)


@pytest.mark.parametrize("backend", TRITON_BACKENDS)
def test_mse_near_ties_are_decided_exactly(backend, rng, device):
    """The kernel compares the candidates' errors exactly (integers), so near-ties 2**-23 apart and exact ties are
    decided as in exact arithmetic, where the reference's float64 sums are exact too; float32 sums would not be."""
    x, prefers_high = _near_tie_blocks(rng, 48)
    assert [_exact_prefers_high(b) for b in x[:12]] == prefers_high[:12].tolist(), "the test's construction is off"
    blocks, scales = quantize(torch.from_numpy(x).to(device), ScaleMode.MSE, Backend(backend))
    assert_blocks_equal(
        blocks.cpu(), scales.cpu(), *reference.quantize(x, -1, ScaleMode.MSE), compare_nan_blocks=True, what="near ties"
    )
    floor_scales = reference.quantize(x, -1, ScaleMode.FLOOR)[1][:, 0]
    stepped_up = scales.cpu().numpy()[:, 0] == floor_scales + 1
    assert (stepped_up == prefers_high).all(), (
        f"mse stepped up at {np.flatnonzero(stepped_up != prefers_high)[:5]} against the exact decision"
    )

    # Why exactness matters here: float32 sums of float32 squared errors get these blocks wrong.
    low = np.frexp(np.max(np.abs(x), axis=1))[1] - 3
    errors = []
    for e in (low, low + 1):
        codes = reference.round_to_e2m1(np.ldexp(x.astype(np.float64), -e[:, None]))
        q = np.ldexp(np.where(codes & E2M1_SIGN_BIT, -1.0, 1.0) * np.asarray(E2M1_MAGNITUDES)[codes & 7], e[:, None])
        errors.append(np.sum(((x - q.astype(np.float32)) ** 2).astype(np.float32), axis=1, dtype=np.float32))
    assert ((errors[1] < errors[0]) != prefers_high).any(), (
        "float32 sums got every near tie right: the test is too easy"
    )


# --- bad input -------------------------------------------------------------------------------------------------
def test_bad_input_raises_named_errors(device, monkeypatch):
    x = torch.randn(4, 64, device=device)
    with pytest.raises(TypeError, match="float32, bfloat16 or float16"):
        quantize(x.double(), ScaleMode.FLOOR, Backend.FP32)
    with pytest.raises(TypeError, match="float32, bfloat16 or float16"):
        quantize(x.to(torch.int32), ScaleMode.FLOOR, Backend.FP32)
    with pytest.raises(ValueError, match="non-empty last axis"):
        quantize(x[:, :0], ScaleMode.FLOOR, Backend.FP32)
    with pytest.raises(ValueError, match="not 'torch'"):
        quantize(x, ScaleMode.FLOOR, Backend.TORCH)
    with pytest.raises(ValueError, match="unknown scale_mode"):
        quantize(x, "round", Backend.FP32)
    with pytest.raises(ValueError, match="out blocks has shape"):
        quantize(
            x,
            ScaleMode.FLOOR,
            Backend.FP32,
            out=(
                torch.empty(4, 3, 16, dtype=torch.uint8, device=device),
                torch.empty(4, 2, dtype=torch.uint8, device=device),
            ),
        )
    monkeypatch.setattr(launch_module, "triton_interpreter_enabled", lambda: False)
    with pytest.raises(BackendUnavailableError, match="TRITON_INTERPRET"):
        quantize(torch.randn(4, 64), ScaleMode.FLOOR, Backend.FP32)


def test_empty_leading_dims(device):
    blocks, scales = quantize(torch.randn(0, 3, 70, device=device), ScaleMode.CEIL, Backend.HOPPER)
    assert blocks.shape == (0, 3, 3, BYTES_PER_BLOCK) and scales.shape == (0, 3, 3)


# --- GPU-sized shapes ------------------------------------------------------------------------------------------
@requires_cuda("GPT-OSS-sized shapes run compiled on a GPU; the interpreter on a CPU is too slow for them")
@pytest.mark.slow
@pytest.mark.parametrize("shape", [(2880, 2880), (5760, 2880), (2881, 2881), (8192, 8192), (4, 32, 2880)], ids=str)
@pytest.mark.parametrize("dtype_name", ["bf16", "fp32"])
def test_gpt_oss_shapes(shape, dtype_name, rng):
    """Every path against one reference computation per mode (the float64 reference is the slow part here)."""
    x = to_torch(random_data("gaussian", shape, rng), dtype_name, "cuda")
    xt = x.transpose(-1, -2)  # quantized along a strided axis: the rows-contiguous tile
    for mode in MODES:
        expected = expected_quantize(x, mode)
        expected_t = expected_quantize(xt, mode) if mode is ScaleMode.FLOOR else None
        for backend in TRITON_BACKENDS:
            blocks, scales = quantize(x, mode, Backend(backend))
            what = f"{backend} {mode.value} {dtype_name} {shape}"
            assert_blocks_equal(blocks.cpu(), scales.cpu(), *expected, compare_nan_blocks=True, what=what)
            if expected_t is not None:
                q = mxfp4.quantize(xt, axis=-1, scale_mode=mode, backend=backend)
                assert_blocks_equal(
                    q.blocks.cpu(), q.scales.cpu(), *expected_t, compare_nan_blocks=True, what=what + " T"
                )
