"""The Triton MXFP4 matmul (``mxfp4.triton_kernels.matmul``) against the float64 reference, on every Triton path.

On a CPU the kernels run under the Triton interpreter (conftest sets ``TRITON_INTERPRET=1``) with small shapes; with
a CUDA GPU the same tests run compiled, plus GPT-OSS-sized shapes. Both schedules (GEMV / split-K for decode-sized M,
tiled tensor-core for the rest) are exercised at small sizes by forcing them with the launcher's private
``_schedule`` argument, and through ``mxfp4.matmul`` with the automatic choice.

Numerical quality: relative error in norm against ``mxfp4.reference.matmul`` (float64) within a bound set by a's
dtype (fp32 1e-5: fp32 accumulation of exact products; bf16 1e-2 and fp16 5e-3: one rounding of the output plus
fp32 accumulation). The decode helpers are checked bit for bit against ``mx.decode_mxfp4`` for every byte.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import triton
import triton.language as tl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mxfp4
from conftest import HAS_CUDA, TRITON_BACKENDS, requires_cuda
from mxfp4 import MXFP4Tensor, reference
from mxfp4.reference.dequantize import decode_scales
from mxfp4.dispatch import Backend
from mxfp4.spec import BLOCK_SIZE, BYTES_PER_BLOCK, E2M1_VALUES, E8M0_BIAS, E8M0_NAN, num_blocks
from mxfp4.triton_kernels import matmul as matmul_module
from mxfp4.triton_kernels.matmul import matmul
from mxfp4.triton_kernels import mx
from mxfp4.triton_kernels.mx import decode_mxfp4

DEVICE = "cuda" if HAS_CUDA else "cpu"  # for hypothesis tests, which cannot take function-scoped fixtures
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Relative error in norm vs the float64 reference: fp32 results round once per accumulation (products are exact);
# 16-bit results add one rounding of the output (bf16: 2**-9, fp16: 2**-11 relative per element).
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 5e-3}
SCHEDULES = ("gemv", "tiled")
# (path, schedule) pairs: both schedules on every path, and the TMA GEMV (sm_90: the hopper path's only).
BACKEND_SCHEDULES = [(b, s) for b in TRITON_BACKENDS for s in SCHEDULES] + [("hopper", "gemv_tma")]
BACKEND_SCHEDULE_IDS = [f"{b}-{s}" for b, s in BACKEND_SCHEDULES]
# Scale bytes of ordinary weights: 2**-9 .. 2**4, so that sums stay far from fp16's and bf16's range limits.
SCALE_LO, SCALE_HI = E8M0_BIAS - 9, E8M0_BIAS + 4


# --- helpers ---------------------------------------------------------------------------------------------------------
def random_weight(rng, n: int, k: int, scale_lo: int = SCALE_LO, scale_hi: int = SCALE_HI):
    """Random MXFP4 storage for W [n, k]: any codes, scale bytes in [scale_lo, scale_hi]; padding codes past k zero."""
    groups = num_blocks(k)
    blocks = rng.integers(0, 256, (n, groups, BYTES_PER_BLOCK), dtype=np.uint8)
    scales = rng.integers(scale_lo, scale_hi + 1, (n, groups), dtype=np.uint8)
    _zero_padding(blocks, k)
    return blocks, scales


def _zero_padding(blocks: np.ndarray, k: int) -> None:
    """What quantize writes past K in the last block: code 0 (the kernels must not rely on it)."""
    flat = blocks.reshape(blocks.shape[0], -1)
    for element in range(k, blocks.shape[1] * BLOCK_SIZE):
        byte, high = divmod(element, 2)
        flat[:, byte] &= 0x0F if high else 0xF0


def random_activations(rng, m: int, k: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(rng.standard_normal((m, k))).to(dtype)


def expected(a: torch.Tensor, blocks: np.ndarray, scales: np.ndarray, bias: torch.Tensor | None) -> np.ndarray:
    bias_np = None if bias is None else bias.double().cpu().numpy()
    return reference.matmul(a.double().cpu().numpy(), blocks, scales, bias_np)


def assert_close(got: torch.Tensor, want: np.ndarray, dtype: torch.dtype, what: str) -> None:
    """Relative error in norm within TOLERANCE[dtype]; NaN exactly where the reference has NaN; names the worst."""
    got_np = got.detach().double().cpu().numpy()
    assert got_np.shape == want.shape, f"{what}: shape {got_np.shape}, expected {want.shape}"
    nan_got, nan_want = np.isnan(got_np), np.isnan(want)
    if not np.array_equal(nan_got, nan_want):
        idx = tuple(int(i) for i in np.argwhere(nan_got != nan_want)[0])
        raise AssertionError(f"{what}: NaN pattern differs; first at {idx}: got {got_np[idx]!r}, expected {want[idx]!r} "
                             f"({int((nan_got != nan_want).sum())} elements differ)")
    live = ~nan_want
    diff = np.abs(got_np[live] - want[live])
    if not np.isfinite(diff).all():
        idx = tuple(int(i) for i in np.argwhere(live & ~np.isfinite(got_np - want))[0])
        raise AssertionError(f"{what}: non-finite at {idx}: got {got_np[idx]!r}, expected {want[idx]!r}")
    norm = np.linalg.norm(want[live])
    rel = np.linalg.norm(diff) / norm if norm > 0 else np.linalg.norm(diff)
    tol = TOLERANCE[dtype]
    if not rel <= tol:
        worst = np.abs(np.where(live, got_np - want, 0.0))
        idx = tuple(int(i) for i in np.unravel_index(np.argmax(worst), worst.shape))
        raise AssertionError(f"{what}: relative error {rel:.3g} > {tol:g}; worst element at {idx}: got {got_np[idx]!r}, "
                             f"expected {want[idx]!r}")


def assert_same(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    """Bitwise equal (NaN == NaN)."""
    g, w = got.detach().cpu(), want.detach().cpu()
    same = (g == w) | (torch.isnan(g) & torch.isnan(w))
    if not bool(same.all()):
        idx = tuple(int(i) for i in torch.nonzero(~same)[0])
        raise AssertionError(f"{what}: {int((~same).sum())} elements differ; first at {idx}: got {g[idx].item()!r}, "
                             f"expected {w[idx].item()!r}")


def run(a, blocks, scales, bias, backend, schedule, device, *, poison=True):
    """The launcher on ``device`` with a NaN-poisoned output (every element must be written)."""
    a = a.to(device)
    blocks = torch.from_numpy(blocks).to(device)
    if schedule == "gemv_tma":
        blocks = blocks.clone()  # a fresh torch allocation: 16-byte aligned, as TMA needs (numpy's need not be)
    out = torch.full((a.shape[0], blocks.shape[0]), float("nan"), dtype=a.dtype, device=device) if poison else None
    y = matmul(a, blocks, torch.from_numpy(scales).to(device),
               None if bias is None else bias.to(device), Backend(backend), _schedule=schedule, _out=out)
    assert y.dtype == a.dtype and tuple(y.shape) == (a.shape[0], blocks.shape[0])
    return y


# --- the decode helpers, bit for bit ---------------------------------------------------------------------------------
@triton.jit
def _decode_all_bytes(low_ptr, high_ptr, ref_low_ptr, ref_high_ptr, scale_ptr, ref_scale_ptr):
    byte = tl.arange(0, 256)
    packed = byte.to(tl.int8).to(tl.int32)  # sign-extended, as the kernels read packed bytes
    tl.store(low_ptr + byte, mx.e2m1_low(packed))
    tl.store(high_ptr + byte, mx.e2m1_high(packed))
    unit = tl.full([256], 127, tl.int32)  # scale 2**0: the E2M1 value itself
    tl.store(ref_low_ptr + byte, decode_mxfp4(byte & 15, unit))
    tl.store(ref_high_ptr + byte, decode_mxfp4(byte >> 4, unit))
    tl.store(scale_ptr + byte, mx.scale_factor(byte))
    tl.store(ref_scale_ptr + byte, decode_mxfp4(tl.full([256], 2, tl.int32), byte))


def test_bit_decode_matches_mx_decode_for_every_byte(device):
    bufs = [torch.empty(256, dtype=torch.float32, device=device) for _ in range(6)]
    _decode_all_bytes[(1,)](*bufs)
    low, high, ref_low, ref_high, scale, ref_scale = (b.cpu() for b in bufs)
    for name, got, want in (("low nibble", low, ref_low), ("high nibble", high, ref_high), ("scale", scale, ref_scale)):
        bits_got, bits_want = got.view(torch.int32), want.view(torch.int32)  # -0.0 and NaN compared as bits
        if not torch.equal(bits_got, bits_want):
            byte = int(torch.nonzero(bits_got != bits_want)[0])
            raise AssertionError(f"{name} of byte {byte:#04x}: got {got[byte].item()!r}, mx.decode_mxfp4 gives "
                                 f"{want[byte].item()!r}")
    want_scales = decode_scales(np.arange(256, dtype=np.uint8)).astype(np.float32)
    np.testing.assert_array_equal(scale.numpy(), want_scales)  # byte 0 is 2**-127 (not 0), byte 255 is NaN


# --- the tensor-core table decode (mx.decode_tile_bf16): its PTX program emulated, its scale and tile compiled ---
def _prmt(a: int, b: int, selector: int) -> int:
    """PTX prmt.b32 (default mode): byte i of the result is byte (nibble i & 7) of b:a, or that byte's top bit
    replicated when nibble i has bit 3 set."""
    pool = (b << 32) | a
    out = 0
    for i in range(4):
        nibble = (selector >> (4 * i)) & 0xF
        byte = (pool >> (8 * (nibble & 7))) & 0xFF
        if nibble & 8:
            byte = 0xFF if byte & 0x80 else 0
        out |= byte << (8 * i)
    return out


def _bf16_value(bits: int) -> float:
    return float(np.array([bits << 16], dtype=np.uint32).view(np.float32)[0])


def _bf16_bits(value: float) -> int:
    return int(torch.tensor([value], dtype=torch.float64).to(torch.bfloat16).view(torch.int16).item()) & 0xFFFF


def _fma_bf16x2(a: int, b: int, c: int) -> int:
    """fma.rn.bf16x2: per 16-bit half, a * b + c rounded once (exact here: E2M1 values times powers of two)."""
    halves = [_bf16_bits(_bf16_value((a >> s) & 0xFFFF) * _bf16_value((b >> s) & 0xFFFF)
                         + _bf16_value((c >> s) & 0xFFFF)) for s in (0, 16)]
    return halves[0] | (halves[1] << 16)


_EMULATED = {
    "and": lambda a, b: a & b,
    "shr": lambda a, b: a >> b,
    "shl": lambda a, b: (a << b) & 0xFFFFFFFF,
    "prmt": _prmt,
    "or_and": lambda a, b, c: a | (b & c),
    "fma_bf16x2": _fma_bf16x2,
}


def _run_program(packed4: int, scale_pairs: list[int]) -> list[int]:
    regs = {"$4": packed4, **{f"${5 + i}": pair for i, pair in enumerate(scale_pairs)},
            "negzero": mx.BF16X2_NEGATIVE_ZERO}
    for op, dst, *srcs in mx.E2M1_BF16_PROGRAM:
        regs[dst] = _EMULATED[op](*(regs[s] if isinstance(s, str) else s for s in srcs))
    return [regs[f"${i}"] for i in range(4)]


def _scale_pair(byte: int) -> int:
    """What mx.scale_pair_bf16 computes (checked against the kernel by test_scale_pair_bf16_for_every_byte)."""
    bits = (byte << 7) | (0x40 if byte in (0, E8M0_NAN) else 0)
    return bits | (bits << 16)


@pytest.mark.parametrize("scale_byte", [0, 1, 100, E8M0_BIAS, 200, 254, E8M0_NAN])
def test_table_decode_program_for_every_byte(scale_byte):
    """mx.E2M1_BF16_PROGRAM, run by an emulator of its PTX instructions, equals the bf16 rounding of the float64
    reference value of both elements of every packed byte, under scale bytes across the range (2**-127, NaN)."""
    factor = float(decode_scales(np.array([scale_byte], dtype=np.uint8))[0])
    for first in range(0, 256, 4):
        packed4 = first | (first + 1) << 8 | (first + 2) << 16 | (first + 3) << 24
        got = _run_program(packed4, [_scale_pair(scale_byte)] * 4)
        for i, pair in enumerate(got):
            byte = first + i
            for half, code in ((0, byte & 15), (1, byte >> 4)):
                want = E2M1_VALUES[code] * factor
                bits = (pair >> (16 * half)) & 0xFFFF
                value = _bf16_value(bits)
                if np.isnan(want):
                    assert np.isnan(value), f"byte {byte:#04x} half {half} scale {scale_byte}: {value} is not NaN"
                else:
                    assert bits == _bf16_bits(want), (f"byte {byte:#04x} element {half} (code {code}) scale byte "
                                                     f"{scale_byte}: bf16 {bits:#06x} = {value!r}, want {want!r}")


@triton.jit
def _scale_pairs_kernel(out_ptr):
    byte = tl.arange(0, 256)
    tl.store(out_ptr + byte, mx.scale_pair_bf16(byte))


def test_scale_pair_bf16_for_every_byte(device):
    out = torch.empty(256, dtype=torch.int32, device=device)
    _scale_pairs_kernel[(1,)](out)
    got = [int(v) & 0xFFFFFFFF for v in out.cpu()]
    want = [_scale_pair(b) for b in range(256)]
    assert got == want, next(f"byte {b}: {g:#010x}, want {w:#010x}"
                             for b, (g, w) in enumerate(zip(got, want)) if g != w)
    values = [_bf16_value(v & 0xFFFF) for v in got]
    reference_values = decode_scales(np.arange(256, dtype=np.uint8))
    for b, (v, r) in enumerate(zip(values, reference_values)):
        assert (np.isnan(v) and np.isnan(r)) or v == r, f"scale byte {b}: bf16 {v!r}, reference {r!r}"


@triton.jit
def _table_decode_kernel(packed_ptr, scale_ptr, out_ptr, ROWS: tl.constexpr, COLS: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    packed = tl.load(packed_ptr + rows[:, None] * (COLS // 2) + tl.arange(0, COLS // 2)[None, :])
    scale = tl.load(scale_ptr + rows[:, None] * (COLS // 32) + tl.arange(0, COLS // 32)[None, :])
    w = mx.decode_tile_bf16(packed, scale, ROWS, COLS)
    tl.store(out_ptr + rows[:, None] * COLS + tl.arange(0, COLS)[None, :], w)


@requires_cuda("the table decode is inline PTX: it runs compiled only")
def test_table_decode_compiled_bit_for_bit():
    """The compiled decode_tile_bf16 (inline PTX) on every byte under every scale byte, against the reference
    dequantize rounded to bf16; scale bytes whose values leave bf16's normal range may flush (documented)."""
    rows, cols, rows_per_program = 256, 512, 16  # row r: all 256 bytes, every block under scale byte r
    packed = torch.arange(256, dtype=torch.int32).to(torch.uint8)[None, :].repeat(rows, 1)
    scales = torch.arange(256, dtype=torch.int32).to(torch.uint8)[:, None].repeat(1, cols // 32)
    out = torch.empty(rows, cols, dtype=torch.bfloat16, device="cuda")
    _table_decode_kernel[(rows // rows_per_program,)](packed.cuda(), scales.cuda(), out, rows_per_program, cols)
    blocks = packed.reshape(rows, cols // 32, BYTES_PER_BLOCK).numpy()
    want = torch.from_numpy(reference.dequantize(blocks, scales.numpy(), np.float64)).to(torch.bfloat16)
    got = out.cpu()
    normal = (want.float().abs() >= 2.0 ** -126) | (want == 0) | want.isnan() | want.isinf()
    same = (got.view(torch.int16) == want.view(torch.int16)) | (got.isnan() & want.isnan())
    bad = ~same & normal
    if bad.any():
        r, c = (int(i) for i in torch.nonzero(bad)[0])
        raise AssertionError(f"row (scale byte) {r} column {c}: got {got[r, c].item()!r}, want {want[r, c].item()!r}"
                             f" ({int(bad.sum())} elements differ)")


# --- every path, both schedules, odd shapes --------------------------------------------------------------------------
SHAPES = [  # (M, N, K): odd sizes, partial last blocks, K below one block, several K steps
    (1, 17, 63),
    (3, 40, 100),
    (1, 33, 32),
    (2, 9, 7),
    (16, 24, 130),
    (17, 50, 200),
]


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("backend,schedule", BACKEND_SCHEDULES, ids=BACKEND_SCHEDULE_IDS)
@pytest.mark.parametrize("m,n,k", SHAPES, ids=[f"{m}x{n}x{k}" for m, n, k in SHAPES])
def test_matches_reference(backend, dtype_name, schedule, m, n, k, rng, device):
    dtype = DTYPES[dtype_name]
    blocks, scales = random_weight(rng, n, k)
    a = random_activations(rng, m, k, dtype)
    bias = torch.from_numpy(rng.standard_normal(n)).to(dtype) if m % 2 else None  # both with and without bias
    y = run(a, blocks, scales, bias, backend, schedule, device)
    assert_close(y, expected(a, blocks, scales, bias), dtype, f"{backend}/{dtype_name}/{schedule} {m}x{n}x{k}")


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("backend", TRITON_BACKENDS)
def test_public_matmul_auto_schedule(backend, dtype_name, rng, device):
    """Through ``mxfp4.matmul`` (MXFP4Tensor weight, leading dims, fp32 bias) with the schedule it picks itself."""
    dtype = DTYPES[dtype_name]
    n, k = 36, 95
    blocks, scales = random_weight(rng, n, k)
    w = MXFP4Tensor.from_blocks(torch.from_numpy(blocks).to(device), torch.from_numpy(scales).to(device), (n, k), 1)
    bias = torch.from_numpy(rng.standard_normal(n)).float()
    for lead in ((1,), (2, 3), (20,)):  # decode-sized and tiled M
        a = torch.from_numpy(rng.standard_normal((*lead, k))).to(dtype)
        y = mxfp4.matmul(a.to(device), w, bias.to(device), backend=backend)
        assert y.shape == (*lead, n) and y.dtype == dtype
        want = expected(a.reshape(-1, k), blocks, scales, bias).reshape(*lead, n)
        assert_close(y, want, dtype, f"mxfp4.matmul {backend}/{dtype_name} a{tuple(a.shape)}")


@pytest.mark.parametrize("backend,schedule", BACKEND_SCHEDULES, ids=BACKEND_SCHEDULE_IDS)
def test_bias_in_other_dtype(backend, schedule, rng, device):
    """bf16 activations with an fp32 bias and with an fp16 bias (converted to fp32): bias added in fp32."""
    blocks, scales = random_weight(rng, 20, 70)
    a = random_activations(rng, 2, 70, torch.bfloat16)
    for bias in (torch.from_numpy(rng.standard_normal(20)).float(), torch.from_numpy(rng.standard_normal(20)).half()):
        y = run(a, blocks, scales, bias, backend, schedule, device)
        assert_close(y, expected(a, blocks, scales, bias), torch.bfloat16, f"{backend}/{schedule} bias {bias.dtype}")


# --- tails: nothing past the logical extent may leak in --------------------------------------------------------------
@pytest.mark.parametrize("dtype_name", ["fp32", "bf16"])
@pytest.mark.parametrize("backend,schedule", BACKEND_SCHEDULES, ids=BACKEND_SCHEDULE_IDS)
def test_views_into_poisoned_buffers(backend, dtype_name, schedule, rng, device):
    """Weights, scales and activations as views into larger buffers whose bytes beyond the logical extent decode to
    NaN (scale 0xFF, NaN activations) or to the largest code (padding nibbles past K): output finite and equal,
    bit for bit, to the result from clean contiguous copies."""
    dtype = DTYPES[dtype_name]
    m, n, k = 3, 19, 77  # K = 2 blocks + 13: a partial last block
    groups = num_blocks(k)
    blocks, scales = random_weight(rng, n, k)
    a = random_activations(rng, m, k, dtype)
    clean = run(a, blocks, scales, None, backend, schedule, device)

    big_blocks = np.full((n + 3, groups + 2, BYTES_PER_BLOCK), 0x77, dtype=np.uint8)  # +-6 everywhere outside
    big_blocks[:n, :groups] = blocks
    flat = big_blocks[:n, :groups].reshape(n, -1)
    for element in range(k, groups * BLOCK_SIZE):  # padding nibbles of the partial block: code 7 (6.0)
        byte, high = divmod(element, 2)
        flat[:, byte] |= 0x70 if high else 0x07
    big_blocks[:n, :groups] = flat.reshape(n, groups, BYTES_PER_BLOCK)
    big_scales = np.full((n + 5, groups + 3), E8M0_NAN, dtype=np.uint8)
    big_scales[:n, :groups] = scales
    big_a = torch.full((m + 2, k + 37), float("nan"), dtype=dtype)
    big_a[:m, :k] = a

    blocks_view = torch.from_numpy(big_blocks).to(device)[:n, :groups]
    scales_view = torch.from_numpy(big_scales).to(device)[:n, :groups]
    a_view = big_a.to(device)[:m, :k]
    assert not blocks_view.is_contiguous() and not scales_view.is_contiguous() and not a_view.is_contiguous()
    out = torch.full((m, n), float("nan"), dtype=dtype, device=device)
    y = matmul(a_view, blocks_view, scales_view, None, Backend(backend), _schedule=schedule, _out=out)
    assert bool(torch.isfinite(y).all()), f"{backend}/{schedule}: non-finite output from poisoned tails:\n{y}"
    assert_same(y, clean, f"{backend}/{dtype_name}/{schedule} views vs clean copies")


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("offset", [1, 2, 3], ids=["byte1", "byte2", "byte3"])
def test_blocks_not_word_aligned(offset, schedule, rng, device):
    """The GEMV reads the packed bytes as int32 words: blocks starting 1-3 bytes past a word boundary (a view into
    a byte buffer) are copied, never read misaligned; same bits as the aligned tensor."""
    m, n, k = 1, 13, 70
    blocks, scales = random_weight(rng, n, k)
    a = random_activations(rng, m, k, torch.float32)
    clean = run(a, blocks, scales, None, "fp32", schedule, device)
    buffer = torch.zeros(blocks.size + 16, dtype=torch.uint8, device=device)
    shifted = buffer[offset:offset + blocks.size].view(blocks.shape)
    shifted.copy_(torch.from_numpy(blocks))
    assert shifted.data_ptr() % 4 == offset % 4
    y = matmul(a.to(device), shifted, torch.from_numpy(scales).to(device), None, Backend.FP32, _schedule=schedule)
    assert_same(y, clean, f"blocks at byte offset {offset} vs aligned ({schedule})")


def test_word_aligned_copies_only_misaligned_blocks():
    """launch.word_aligned (the GEMVs' guard, also in moe_gate_up_gemv's launcher): an aligned tensor comes back
    as is; a view 1-3 bytes off a word boundary, or with an outer stride that is not a multiple of 4, comes back
    as an aligned copy holding the same bytes."""
    from mxfp4.triton_kernels.launch import word_aligned

    buffer = torch.arange(4 * 3 * 2 * 16 + 8, dtype=torch.int64).remainder(251).to(torch.uint8)
    aligned = buffer[:96].view(3, 2, 16)
    assert word_aligned(aligned) is aligned
    for offset in (1, 2, 3):
        view = buffer[offset:offset + 96].view(3, 2, 16)
        fixed = word_aligned(view)
        assert fixed.data_ptr() % 4 == 0 and torch.equal(fixed, view), f"offset {offset}"
    sliced = buffer[:4 * 3 * 2 * 16].view(4, 3, 2, 16)[:, :2]  # not contiguous, but every stride a multiple of 4
    strided = torch.as_strided(buffer, (3, 2, 16), (34, 16, 1))  # row stride 34: not a multiple of 4
    fixed = word_aligned(strided)
    assert all(stride % 4 == 0 for stride in fixed.stride()[:-2]) and torch.equal(fixed, strided)
    assert word_aligned(sliced) is sliced


@pytest.mark.parametrize("backend,schedule", BACKEND_SCHEDULES, ids=BACKEND_SCHEDULE_IDS)
def test_non_contiguous_activations(backend, schedule, rng, device):
    m, n, k = 3, 21, 45
    blocks, scales = random_weight(rng, n, k)
    base = random_activations(rng, k, 2 * m, torch.float32)
    a = base.to(device).T[::2]  # [m, k] with strides (2, 2m): neither dim contiguous
    assert a.stride(1) != 1
    y = run(a, blocks, scales, None, backend, schedule, device)
    assert_close(y, expected(a, blocks, scales, None), torch.float32, f"{backend}/{schedule} strided a")


# --- special scale bytes -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend,schedule", BACKEND_SCHEDULES + [(b, "dequant") for b in TRITON_BACKENDS],
                         ids=BACKEND_SCHEDULE_IDS + [f"{b}-dequant" for b in TRITON_BACKENDS])
def test_special_scales(backend, schedule, rng, device):
    """A NaN scale (0xFF) inside K makes exactly its row NaN; scale byte 0 is 2**-127 (not 0); huge scales work.

    fp32 activations: exact products on every path (a 16-bit dot would round 2**-128 to a subnormal)."""
    m, n, k = 2, 12, 96
    blocks, scales = random_weight(rng, n, k)
    scales[3, 1] = E8M0_NAN
    scales[5, :] = 0  # the whole row at 2**-127: its output is ~1e-37, wrong by 100% if byte 0 were read as 0
    a = random_activations(rng, m, k, torch.float32)
    y = run(a, blocks, scales, None, backend, schedule, device)
    want = expected(a, blocks, scales, None)
    assert np.isnan(y[:, 3].double().cpu().numpy()).all(), "a NaN scale must make its row NaN"
    assert_close(y, want, torch.float32, f"{backend}/{schedule} NaN and zero scales")
    assert_close(y[:, 5:6], want[:, 5:6], torch.float32, f"{backend}/{schedule} the 2**-127 row alone")

    scales[3, 1] = scales[5, 0]
    # The GEMV applies the scale to block sums: 2**127 works. The tiled schedule decodes each weight with its
    # scale applied, so it is limited to bytes whose 6 * 2**(s-127) is finite (<= 252; the module docstring says so).
    scales[7, 2] = 254 if schedule == "gemv" else 252
    scales[7, :2] = 200
    a = a * 1e-30
    y = run(a, blocks, scales, None, backend, schedule, device)
    want = expected(a, blocks, scales, None)
    assert_close(y[:, 7:8], want[:, 7:8], torch.float32, f"{backend}/{schedule} the row with scale byte {scales[7, 2]}")


# --- large M: the weight dequantized once, multiplied by torch's GEMM --------------------------------------------------
DEQUANT_SHAPES = [(3, 33, 95), (5, 70, 64), (2, 1, 31), (4, 40, 2881 // 20)]


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("backend", TRITON_BACKENDS)
@pytest.mark.parametrize("m,n,k", DEQUANT_SHAPES, ids=[f"{m}x{n}x{k}" for m, n, k in DEQUANT_SHAPES])
def test_dequant_schedule_matches_reference(backend, dtype_name, m, n, k, rng, device):
    """Forced at small M so that it runs everywhere; with and without a bias of a's dtype; every output written."""
    dtype = DTYPES[dtype_name]
    blocks, scales = random_weight(rng, n, k)
    a = random_activations(rng, m, k, dtype)
    for bias in (None, torch.from_numpy(rng.standard_normal(n)).to(dtype)):
        y = run(a, blocks, scales, bias, backend, "dequant", device)
        assert_close(y, expected(a, blocks, scales, bias), dtype,
                     f"dequant {backend}/{dtype_name} {m}x{n}x{k} bias={bias is not None}")


def test_dequant_schedule_in_row_chunks(rng, device, monkeypatch):
    """A weight larger than the chunk budget is decoded and multiplied in row chunks (here 6 rows: 6 full chunks and
    a partial one of 4); each writes only its own output columns, with its own slice of the bias."""
    n, k = 40, 70
    monkeypatch.setattr(matmul_module, "DEQUANT_CHUNK_BYTES", 6 * k * 2)
    blocks, scales = random_weight(rng, n, k)
    a = random_activations(rng, 3, k, torch.bfloat16)
    bias = torch.from_numpy(rng.standard_normal(n)).to(torch.bfloat16)
    y = run(a, blocks, scales, bias, "hopper", "dequant", device)
    assert_close(y, expected(a, blocks, scales, bias), torch.bfloat16, "dequant in 7 row chunks")


def test_dequant_schedule_is_the_automatic_choice_at_large_m(rng, device):
    """From DEQUANT_GEMM_MIN_M rows of 16-bit activations on the tensor-core paths, with no bias or one of a's
    dtype; never on the fp32 path, for fp32 activations or for a bias the GEMM could not add before its rounding."""
    big = matmul_module.DEQUANT_GEMM_MIN_M
    bf16_bias, fp32_bias = torch.zeros(4, dtype=torch.bfloat16), torch.zeros(4)
    choose = matmul_module.uses_dequant_gemm
    assert choose(Backend.HOPPER, big, torch.bfloat16, None) and choose(Backend.BF16, big, torch.float16, None)
    assert choose(Backend.HOPPER, big, torch.bfloat16, bf16_bias)
    assert not choose(Backend.HOPPER, big - 1, torch.bfloat16, None), "below the threshold the fused kernels run"
    assert not choose(Backend.FP32, big, torch.bfloat16, None), "the fp32 path keeps its fp32 dots"
    assert not choose(Backend.HOPPER, big, torch.float32, None)
    assert not choose(Backend.HOPPER, big, torch.bfloat16, fp32_bias)
    # End to end through mxfp4.matmul at the threshold (small N and K keep the interpreter quick).
    n, k = 6, 40
    blocks, scales = random_weight(rng, n, k)
    w = MXFP4Tensor.from_blocks(torch.from_numpy(blocks).to(device), torch.from_numpy(scales).to(device), (n, k), 1)
    a = random_activations(rng, big, k, torch.bfloat16)
    y = mxfp4.matmul(a.to(device), w, backend="hopper")
    assert_close(y, expected(a, blocks, scales, None), torch.bfloat16, f"mxfp4.matmul M={big}")


def test_dequant_schedule_rejects_a_bias_of_another_dtype(rng, device):
    blocks, scales = random_weight(rng, 4, 32)
    a = random_activations(rng, 2, 32, torch.bfloat16).to(device)
    with pytest.raises(ValueError, match="bias of a's dtype"):
        matmul(a, torch.from_numpy(blocks).to(device), torch.from_numpy(scales).to(device),
               torch.zeros(4, device=device), Backend.HOPPER, _schedule="dequant")


# --- split-K: determinism, workspace reuse, counters -------------------------------------------------------------------
@pytest.mark.parametrize("schedule", SCHEDULES + ("gemv_tma",))
def test_split_k_is_deterministic_and_resets_its_counters(schedule, rng, device):
    """The last slice reduces all partials in a fixed order: same bits every run, whatever the arrival order; its
    counters are back at zero after every launch, and stale partials from a larger earlier call do not leak."""
    m, n, k = 2, 40, 32 * 24
    blocks, scales = random_weight(rng, n, k)
    a = random_activations(rng, m, k, torch.float32)
    plan = matmul_module.choose_plan(Backend.HOPPER, m, n, k, torch.float32,
                                     2 if device == "cpu" else torch.cuda.get_device_properties(0).multi_processor_count,
                                     schedule, interpreted=device == "cpu", tma=True)
    assert plan.grid[1] > 1, f"shape chosen to split K, got plan {plan}"
    first = run(a, blocks, scales, None, "hopper", schedule, device)
    for partials, counters in matmul_module._WORKSPACES.values():
        partials.fill_(float("nan"))  # poison what previous slices left behind
        assert int(counters.abs().sum()) == 0, "split-K counters were not reset"
    again = run(a, blocks, scales, None, "hopper", schedule, device)
    assert_same(again, first, f"{schedule}: second run")
    assert_close(first, expected(a, blocks, scales, None), torch.float32, f"{schedule} split-K")


# --- hypothesis: shapes and data -----------------------------------------------------------------------------------------
@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    m=st.integers(1, 3),
    n=st.integers(1, 40),
    k=st.integers(1, 140),
    backend_schedule=st.sampled_from(BACKEND_SCHEDULES),
    dtype_name=st.sampled_from(list(DTYPES)),
    has_bias=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_any_shape(m, n, k, backend_schedule, dtype_name, has_bias, seed):
    backend, schedule = backend_schedule
    rng = np.random.default_rng(seed)
    dtype = DTYPES[dtype_name]
    blocks, scales = random_weight(rng, n, k)
    a = random_activations(rng, m, k, dtype)
    bias = torch.from_numpy(rng.standard_normal(n)).to(dtype) if has_bias else None
    y = run(a, blocks, scales, bias, backend, schedule, DEVICE)
    assert_close(y, expected(a, blocks, scales, bias), dtype, f"{backend}/{dtype_name}/{schedule} {m}x{n}x{k}")


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None, max_examples=10)
@given(m=st.integers(4, 40), n=st.integers(1, 70), k=st.integers(1, 300), seed=st.integers(0, 2**32 - 1),
       dtype_name=st.sampled_from(list(DTYPES)))
def test_property_tiled_larger_m(m, n, k, seed, dtype_name):
    rng = np.random.default_rng(seed)
    dtype = DTYPES[dtype_name]
    blocks, scales = random_weight(rng, n, k)
    a = random_activations(rng, m, k, dtype)
    y = run(a, blocks, scales, None, "hopper", "tiled", DEVICE)
    assert_close(y, expected(a, blocks, scales, None), dtype, f"tiled/{dtype_name} {m}x{n}x{k}")


# --- bad input -----------------------------------------------------------------------------------------------------------
def test_launcher_rejects_mismatched_weight(device):
    a = torch.zeros(2, 64, device=device)
    blocks = torch.zeros(5, 3, BYTES_PER_BLOCK, dtype=torch.uint8, device=device)  # 3 blocks cannot hold K = 64
    scales = torch.zeros(5, 3, dtype=torch.uint8, device=device)
    with pytest.raises(ValueError, match="do not hold a weight"):
        matmul(a, blocks, scales, None, Backend.HOPPER)
    with pytest.raises(ValueError, match="_out must be"):
        matmul(a, blocks[:, :2], scales[:, :2], None, Backend.HOPPER, _out=torch.empty(3, 5, device=device))
    with pytest.raises(ValueError, match="unknown schedule"):
        matmul(a, blocks[:, :2], scales[:, :2], None, Backend.HOPPER, _schedule="bogus")


def test_tma_gemv_needs_the_hopper_path_and_a_readable_weight(rng, device):
    """The TMA GEMV (forced) raises off the hopper path and for a weight TMA cannot read (a base 4 bytes past a
    16-byte boundary); launch.tma_readable tells the two weights apart, and the automatic choice still computes the
    product for the second."""
    from mxfp4.triton_kernels.launch import tma_readable

    blocks, scales = random_weight(rng, 8, 64)
    a = random_activations(rng, 1, 64, torch.float32).to(device)
    aligned, sc = torch.from_numpy(blocks).to(device).clone(), torch.from_numpy(scales).to(device)
    for backend in (Backend.BF16, Backend.FP32):
        with pytest.raises(ValueError, match="gemv_tma schedule needs the hopper path"):
            matmul(a, aligned, sc, None, backend, _schedule="gemv_tma")
    buffer = torch.zeros(aligned.numel() + 16, dtype=torch.uint8, device=device)
    shifted = buffer[4:4 + aligned.numel()].view(aligned.shape)
    shifted.copy_(aligned)
    assert tma_readable(aligned) and not tma_readable(shifted)
    with pytest.raises(ValueError, match="a weight TMA can read"):
        matmul(a, shifted, sc, None, Backend.HOPPER, _schedule="gemv_tma")
    # (Not bit for bit against the aligned weight: compiled, the JIT specializes pointers on 16-byte alignment, and
    # the code it emits for the shifted one may round fp32 sums differently, by an ulp.)
    assert_close(matmul(a, shifted, sc, None, Backend.HOPPER), expected(a, blocks, scales, None), torch.float32,
                 "automatic choice with a weight TMA cannot read")


# --- the ahead-of-time compile list ------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", TRITON_BACKENDS)
def test_compile_specs_cover_every_dispatched_config(backend):
    specs = matmul_module.compile_specs(Backend(backend))
    names = [s["name"] for s in specs]
    assert len(names) == len(set(names)), "spec names must be unique"
    for spec in specs:
        assert set(spec["signature"]) == set(spec["fn"].arg_names), spec["name"]
    listed = {(s["fn"].__name__,) + tuple(sorted((k, str(v)) for k, v in s["constexprs"].items()
                                                  if k not in ("HAS_BIAS", "stride_ak", "stride_sg", "stride_on")))
              for s in specs}
    for dtype in DTYPES.values():
        for m in (1, 2, 16, 17, 100, 4096):
            plan = matmul_module.choose_plan(Backend(backend), m, 2880, 2880, dtype, 132)
            key = (plan.kernel.__name__,) + tuple(sorted((k, str(v)) for k, v in plan.constexprs))
            assert key in listed, f"{backend}: the plan for M={m} {dtype} ({key}) is not in compile_specs"
        plan = matmul_module.choose_plan(Backend(backend), 1, 8192, 8192, dtype, 132, tma=True)
        key = (plan.kernel.__name__,) + tuple(sorted((k, str(v)) for k, v in plan.constexprs))
        assert key in listed, f"{backend}: the plan for M=1 8192^2 {dtype} ({key}) is not in compile_specs"
        assert (plan.tma_block is not None) == (backend == "hopper"), f"{backend}: TMA GEMV at 8192^2: {plan}"
    if backend == "fp32":  # the fp32 path never uses a 16-bit dot
        assert all("DOT_DTYPE" not in s["constexprs"] or s["constexprs"]["DOT_DTYPE"] == tl.float32 for s in specs)


# --- GPU: GPT-OSS-sized shapes, compiled -------------------------------------------------------------------------------
# 1 x 8192^2 (and 5 rows of fp32 activations) take the TMA GEMV on the hopper path.
GPU_SHAPES = [(1, 2880, 2880), (1, 5760, 2880), (16, 2880, 2880), (7, 5760, 2880), (300, 2880, 2880),
              (1, 8192, 8192), (5, 8192, 8192), (64, 8192, 8192), (2048, 2880, 2880)]


@requires_cuda("GPT-OSS-sized shapes run compiled on a GPU")
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("backend", TRITON_BACKENDS)
@pytest.mark.parametrize("m,n,k", GPU_SHAPES, ids=[f"{m}x{n}x{k}" for m, n, k in GPU_SHAPES])
def test_gpt_oss_shapes_on_gpu(backend, dtype_name, m, n, k, rng):
    if backend == "fp32" and m * n * k > 2**33:
        pytest.skip("the fp32 FMA path at this size takes seconds; covered at the smaller shapes")
    dtype = DTYPES[dtype_name]
    blocks, scales = random_weight(rng, n, k)
    a = random_activations(rng, m, k, dtype)
    bias = torch.from_numpy(rng.standard_normal(n)).to(dtype)
    want = expected(a, blocks, scales, bias)
    for call in range(2):  # the second call takes the cached launch
        y = run(a, blocks, scales, bias, backend, None, "cuda")
        assert_close(y, want, dtype, f"{backend}/{dtype_name} {m}x{n}x{k} call {call}")


@requires_cuda("stream-safety of the split-K workspace needs CUDA streams")
def test_split_k_on_two_streams(rng):
    """Each stream gets its own counters: launches in flight on two streams do not mix their partials."""
    n, k = 5760, 2880
    blocks, scales = random_weight(rng, n, k)
    bl, sc = torch.from_numpy(blocks).cuda(), torch.from_numpy(scales).cuda()
    xs = [random_activations(rng, 1, k, torch.bfloat16).cuda() for _ in range(2)]
    want = [matmul(x, bl, sc, None, Backend.HOPPER) for x in xs]
    torch.cuda.synchronize()
    streams = [torch.cuda.Stream() for _ in range(2)]
    outs = [[], []]
    for _ in range(20):
        for i, s in enumerate(streams):
            with torch.cuda.stream(s):
                outs[i].append(matmul(xs[i], bl, sc, None, Backend.HOPPER))
    torch.cuda.synchronize()
    for i in range(2):
        for y in outs[i]:
            assert_same(y, want[i], f"stream {i}")
