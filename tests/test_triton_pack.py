"""The Triton pack / unpack kernels against ``mxfp4.reference.pack`` / ``unpack``, on every Triton path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from conftest import HAS_CUDA, TRITON_BACKENDS, requires_cuda
from mxfp4 import reference
from mxfp4.dispatch import Backend, BackendUnavailableError
from mxfp4.spec import BLOCK_SIZE, BYTES_PER_BLOCK, NIBBLE_MASK
from mxfp4.triton_kernels import pack as pack_module
from mxfp4.triton_kernels import launch as launch_module
from mxfp4.triton_kernels.pack import pack, unpack

DEVICE = "cuda" if HAS_CUDA else "cpu"  # for hypothesis tests, which cannot take function-scoped fixtures


def assert_bytes_equal(got: torch.Tensor, expected: np.ndarray, what: str) -> None:
    got = got.cpu().numpy()
    assert got.shape == expected.shape, f"{what}: shape {got.shape} != expected {expected.shape}"
    differs = got != expected
    if differs.any():
        where = tuple(int(i) for i in np.unravel_index(int(np.flatnonzero(differs)[0]), got.shape))
        raise AssertionError(
            f"{what}: {int(differs.sum())} of {got.size} bytes differ; first at {where}: "
            f"got {got[where]}, expected {expected[where]}"
        )


def random_codes(rng, shape, device) -> torch.Tensor:
    return torch.from_numpy(rng.integers(0, NIBBLE_MASK + 1, shape, dtype=np.uint8)).to(device)


# --- golden ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", TRITON_BACKENDS)
def test_golden_nibble_order(backend, device):
    """Element 2i in the low nibble, 2i+1 in the high nibble (the GPT-OSS order, not GGUF's)."""
    codes = (torch.arange(BLOCK_SIZE, dtype=torch.uint8) % 16).to(device)
    blocks = pack(codes, Backend(backend))
    assert blocks.shape == (1, BYTES_PER_BLOCK)
    assert blocks[0, :4].tolist() == [0x10, 0x32, 0x54, 0x76], blocks[0, :4].tolist()
    assert blocks[0, 8:10].tolist() == [0x10, 0x32]  # codes 16, 17 wrapped to 0, 1
    assert unpack(blocks, Backend(backend)).tolist() == codes.tolist()


# --- random data, shapes ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape", [(32,), (7, 96), (3, 5, 64), (1, 2880), (129, 32), (2, 1, 11 * 32)], ids=lambda s: "x".join(map(str, s))
)
@pytest.mark.parametrize("backend", TRITON_BACKENDS)
def test_matches_reference(shape, backend, rng, device):
    codes = random_codes(rng, shape, device)
    blocks = pack(codes, Backend(backend))
    assert_bytes_equal(blocks, reference.pack(codes.cpu().numpy()), f"pack {shape}")
    codes_back = unpack(blocks, Backend(backend))
    assert_bytes_equal(codes_back, reference.unpack(blocks.cpu().numpy()), f"unpack {shape}")
    assert_bytes_equal(codes_back, codes.cpu().numpy(), f"round trip {shape}")


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
@pytest.mark.parametrize("backend", TRITON_BACKENDS)
def test_property_round_trip(backend, data):
    lead = data.draw(st.lists(st.integers(1, 5), max_size=2), label="lead")
    groups = data.draw(st.integers(1, 6), label="groups")
    blocks_np = data.draw(hnp.arrays(np.uint8, (*lead, groups, BYTES_PER_BLOCK)), label="blocks")
    codes = unpack(torch.from_numpy(blocks_np).to(DEVICE), Backend(backend))
    assert_bytes_equal(codes, reference.unpack(blocks_np), "unpack")
    assert_bytes_equal(pack(codes, Backend(backend)), blocks_np, "pack(unpack(blocks))")


@pytest.mark.parametrize("backend", TRITON_BACKENDS)
def test_non_contiguous_inputs(backend, rng, device):
    codes = random_codes(rng, (64, 10), device).t()  # [10, 64], K strided
    assert_bytes_equal(pack(codes, Backend(backend)), reference.pack(codes.cpu().numpy()), "pack of a transposed view")
    blocks = torch.from_numpy(rng.integers(0, 256, (6, 5, BYTES_PER_BLOCK), dtype=np.uint8)).to(device)[::2, 1:4]
    assert_bytes_equal(
        unpack(blocks, Backend(backend)), reference.unpack(blocks.cpu().numpy()), "unpack of a sliced view"
    )


# --- every byte written, nothing outside -----------------------------------------------------------------------
@pytest.mark.parametrize("poison", [0xFF, 0x00])
@pytest.mark.parametrize("backend", TRITON_BACKENDS)
def test_poisoned_outputs_and_tails(poison, backend, rng, device, monkeypatch):
    """Outputs are the head of a larger poisoned buffer; sizes that are not a multiple of the tile (small tiles
    forced so the interpreter sees several programs and a ragged last one): every byte written, none past the end."""
    monkeypatch.setattr(pack_module, "BYTES_PER_PROGRAM", 64)
    codes = random_codes(rng, (13, 3 * BLOCK_SIZE), device)  # 624 bytes: 9 full tiles and a partial one
    packed_buffer = torch.full((13 * 3 * BYTES_PER_BLOCK + 100,), poison, dtype=torch.uint8, device=device)
    blocks = packed_buffer[: 13 * 3 * BYTES_PER_BLOCK].view(13, 3, BYTES_PER_BLOCK)
    assert pack(codes, Backend(backend), out=blocks) is blocks
    assert_bytes_equal(blocks, reference.pack(codes.cpu().numpy()), f"pack into poison 0x{poison:02x}")
    assert (packed_buffer[13 * 3 * BYTES_PER_BLOCK :] == poison).all(), "pack wrote past the end of its output"

    codes_buffer = torch.full((codes.numel() + 100,), poison, dtype=torch.uint8, device=device)
    codes_out = codes_buffer[: codes.numel()].view(codes.shape)
    assert unpack(blocks, Backend(backend), out=codes_out) is codes_out
    assert_bytes_equal(codes_out, codes.cpu().numpy(), f"unpack into poison 0x{poison:02x}")
    assert (codes_buffer[codes.numel() :] == poison).all(), "unpack wrote past the end of its output"


# --- bad input -------------------------------------------------------------------------------------------------
def test_bad_input_raises_named_errors(device, monkeypatch):
    with pytest.raises(TypeError, match="uint8 codes"):
        pack(torch.zeros(32, dtype=torch.int32, device=device))
    with pytest.raises(ValueError, match="multiple of 32"):
        pack(torch.zeros(2, 33, dtype=torch.uint8, device=device))
    with pytest.raises(ValueError, match="4-bit codes"):
        pack(torch.full((32,), 16, dtype=torch.uint8, device=device))
    with pytest.raises(TypeError, match="uint8 blocks"):
        unpack(torch.zeros(2, 16, dtype=torch.float32, device=device))
    with pytest.raises(ValueError, match=r"\[\.\.\., G, 16\]"):
        unpack(torch.zeros(2, 15, dtype=torch.uint8, device=device))
    with pytest.raises(ValueError, match="out must be"):
        pack(
            torch.zeros(64, dtype=torch.uint8, device=device), out=torch.empty(3, 16, dtype=torch.uint8, device=device)
        )
    monkeypatch.setattr(launch_module, "triton_interpreter_enabled", lambda: False)  # the check pack shares
    with pytest.raises(BackendUnavailableError, match="TRITON_INTERPRET"):
        pack(torch.zeros(32, dtype=torch.uint8))


def test_empty(device):
    assert pack(torch.zeros(0, 64, dtype=torch.uint8, device=device)).shape == (0, 2, BYTES_PER_BLOCK)
    assert unpack(torch.zeros(3, 0, BYTES_PER_BLOCK, dtype=torch.uint8, device=device)).shape == (3, 0)


@requires_cuda("large tensors run compiled on a GPU; the interpreter on a CPU is too slow for them")
@pytest.mark.slow
def test_gpt_oss_sized(rng):
    codes = random_codes(rng, (5760, 2880), "cuda")
    expected = reference.pack(codes.cpu().numpy())
    for backend in TRITON_BACKENDS:
        blocks = pack(codes, Backend(backend))
        assert_bytes_equal(blocks, expected, f"{backend} pack 5760x2880")
        assert torch.equal(unpack(blocks, Backend(backend)), codes), f"{backend} unpack 5760x2880"
