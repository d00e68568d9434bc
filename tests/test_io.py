"""safetensors I/O (``mxfp4.save_file`` / ``mxfp4.load_file``): round trips, Hub-style files, and bad files."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import save_file as raw_save_file

import mxfp4
from mxfp4 import MXFP4Tensor
from mxfp4.io import METADATA_KEY, MXFP4FormatError, read_metadata
from mxfp4.testing import assert_bitwise_equal


def randn(rng, *shape, dtype=torch.float32) -> torch.Tensor:
    return torch.from_numpy(rng.standard_normal(shape).astype(np.float32)).to(dtype)


def assert_same_mxfp4(got, expected: MXFP4Tensor) -> None:
    assert isinstance(got, MXFP4Tensor), type(got)
    assert got.shape == expected.shape and got.axis == expected.axis, (got, expected)
    assert torch.equal(got.blocks, expected.blocks.cpu()) and torch.equal(got.scales, expected.scales.cpu())


# --- round trips -----------------------------------------------------------------------------------------------
def test_round_trip_mixed_tensors(tmp_path, rng):
    tensors = {
        "experts.down_proj": mxfp4.quantize(randn(rng, 3, 7, 100), backend="torch"),  # partial last block
        "w_axis0": mxfp4.quantize(randn(rng, 45, 6), axis=0, scale_mode="ceil", backend="torch"),
        "vector": mxfp4.quantize(randn(rng, 1), backend="torch"),
        "bias": randn(rng, 7, dtype=torch.bfloat16),
        "norm": randn(rng, 5, 3, dtype=torch.float16),
        "ids": torch.arange(11, dtype=torch.int64),
        "raw_scales": torch.full((4,), 255, dtype=torch.uint8),  # a plain uint8 tensor whose name ends in _scales
    }
    path = tmp_path / "mixed.safetensors"
    mxfp4.save_file(tensors, path, metadata={"note": "hello"})
    loaded = mxfp4.load_file(path)
    assert set(loaded) == set(tensors)
    for name, expected in tensors.items():
        if isinstance(expected, MXFP4Tensor):
            assert_same_mxfp4(loaded[name], expected)
            assert_bitwise_equal(loaded[name].dequantize(torch.float32), expected.dequantize(torch.float32))
        else:
            assert loaded[name].dtype == expected.dtype and torch.equal(loaded[name], expected), name
    metadata = read_metadata(path)
    assert metadata["note"] == "hello" and metadata["format"] == "pt"
    assert json.loads(metadata[METADATA_KEY])["tensors"]["experts.down_proj"] == {"shape": [3, 7, 100], "axis": 2}


def test_file_uses_gpt_oss_names_and_bytes(tmp_path, rng):
    """What lands on disk is NAME_blocks uint8 [*, G, 16] and NAME_scales uint8 [*, G]: the Hub layout."""
    w = mxfp4.quantize(randn(rng, 4, 70), backend="torch")
    path = tmp_path / "w.safetensors"
    mxfp4.save_file({"mlp.down_proj": w}, str(path))
    from safetensors.torch import load_file as raw_load_file

    raw = raw_load_file(path)
    assert set(raw) == {"mlp.down_proj_blocks", "mlp.down_proj_scales"}
    assert raw["mlp.down_proj_blocks"].dtype == torch.uint8 and raw["mlp.down_proj_blocks"].shape == (4, 3, 16)
    assert torch.equal(raw["mlp.down_proj_blocks"], w.blocks) and torch.equal(raw["mlp.down_proj_scales"], w.scales)


def test_views_and_non_contiguous_storage(tmp_path, rng):
    """Views sharing storage (experts[0] beside experts) and non-contiguous blocks are saved as independent copies."""
    experts = mxfp4.quantize(randn(rng, 3, 4, 64), backend="torch")
    strided = MXFP4Tensor.from_blocks(experts.blocks[:, ::2], experts.scales[:, ::2], shape=(3, 2, 64))
    tensors = {"experts": experts, "first": experts[0], "strided": strided, "dense": randn(rng, 4, 6).t()}
    path = tmp_path / "views.safetensors"
    mxfp4.save_file(tensors, path)
    loaded = mxfp4.load_file(path)
    for name in ("experts", "first", "strided"):
        assert_same_mxfp4(loaded[name], tensors[name])
    assert torch.equal(loaded["dense"], tensors["dense"])


def test_load_to_device(tmp_path, rng):
    path = tmp_path / "d.safetensors"
    mxfp4.save_file({"w": mxfp4.quantize(randn(rng, 2, 40), backend="torch"), "b": randn(rng, 2)}, path)
    loaded = mxfp4.load_file(path, device="meta")
    assert loaded["w"].device.type == "meta" and loaded["b"].device.type == "meta"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            mxfp4.load_file(path, device="cuda")


def test_overwrite_is_atomic_and_leaves_no_temporary(tmp_path, rng):
    path = tmp_path / "w.safetensors"
    mxfp4.save_file({"a": randn(rng, 3)}, path)
    with pytest.raises(TypeError):
        mxfp4.save_file({"a": randn(rng, 3), "bad": [1, 2]}, path)
    assert set(mxfp4.load_file(path)) == {"a"}  # the old file is intact
    mxfp4.save_file({"b": randn(rng, 3)}, path)
    assert set(mxfp4.load_file(path)) == {"b"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]


def test_save_rejects_bad_input(tmp_path, rng):
    w = mxfp4.quantize(randn(rng, 2, 32), backend="torch")
    path = tmp_path / "x.safetensors"
    with pytest.raises(ValueError, match=r"'w' and 'w_blocks' would both be stored as 'w_blocks'"):
        mxfp4.save_file({"w_blocks": torch.zeros(2), "w": w}, path)
    with pytest.raises(TypeError, match="ndarray"):
        mxfp4.save_file({"x": np.zeros(3)}, path)
    with pytest.raises(TypeError, match="names must be non-empty str"):
        mxfp4.save_file({3: torch.zeros(3)}, path)
    with pytest.raises(TypeError, match="str to str"):
        mxfp4.save_file({"x": torch.zeros(3)}, path, metadata={"n": 3})
    with pytest.raises(ValueError, match="reserved"):
        mxfp4.save_file({"x": torch.zeros(3)}, path, metadata={METADATA_KEY: "{}"})
    assert not path.exists()


# --- Hub-style files (no mxfp4 metadata) ---------------------------------------------------------------------------
def hub_layer(rng, experts=2, hidden=64, intermediate=40):
    """A GPT-OSS-like MoE layer as the Hub stores it (no mxfp4 metadata): blocks/scales pairs beside bf16 tensors."""
    down = mxfp4.quantize(randn(rng, experts, hidden, intermediate), backend="torch")
    prefix = "model.layers.0.mlp.experts."
    tensors = {
        prefix + "down_proj_blocks": down.blocks,
        prefix + "down_proj_scales": down.scales,
        prefix + "down_proj_bias": randn(rng, experts, hidden, dtype=torch.bfloat16),
        "model.layers.0.mlp.router.weight": randn(rng, experts, hidden, dtype=torch.bfloat16),
    }
    return tensors, down


def test_hub_style_file_without_metadata(tmp_path, rng):
    tensors, down = hub_layer(rng)
    path = tmp_path / "model-00001-of-00001.safetensors"
    raw_save_file(tensors, path, metadata={"format": "pt"})
    loaded = mxfp4.load_file(path)
    assert set(loaded) == {
        "model.layers.0.mlp.experts.down_proj",
        "model.layers.0.mlp.experts.down_proj_bias",
        "model.layers.0.mlp.router.weight",
    }
    w = loaded["model.layers.0.mlp.experts.down_proj"]
    # Without metadata the length is G * 32 (here 64 for a logical 40: the padding decodes to zeros).
    assert w.shape == (2, 64, 64) and w.axis == 2
    assert torch.equal(w.blocks, down.blocks) and torch.equal(w.scales, down.scales)
    dense = w.dequantize(torch.float32)
    assert_bitwise_equal(dense[..., :40], down.dequantize(torch.float32))
    assert not dense[..., 40:].any()
    assert loaded["model.layers.0.mlp.experts.down_proj_bias"].dtype == torch.bfloat16
    raw_save_file(tensors, tmp_path / "bare.safetensors")  # no metadata at all
    assert_same_mxfp4(mxfp4.load_file(tmp_path / "bare.safetensors")["model.layers.0.mlp.experts.down_proj"], w)


def test_hub_bytes_decode_as_transformers_decodes(tmp_path, rng):
    """Our decode of a Hub-style pair equals transformers' GPT-OSS decode (after its [E, in, out] transpose)."""
    transformers_mxfp4 = pytest.importorskip("transformers.integrations.mxfp4")
    blocks = torch.from_numpy(rng.integers(0, 256, (3, 10, 4, 16), dtype=np.uint8))
    scales = torch.from_numpy(rng.integers(100, 150, (3, 10, 4), dtype=np.uint8))  # finite in bf16
    path = tmp_path / "hub.safetensors"
    raw_save_file({"experts.gate_up_proj_blocks": blocks, "experts.gate_up_proj_scales": scales}, path)
    w = mxfp4.load_file(path)["experts.gate_up_proj"]
    theirs = transformers_mxfp4.convert_moe_packed_tensors(blocks, scales, dtype=torch.bfloat16)  # [E, in, out]
    assert_bitwise_equal(w.dequantize(torch.bfloat16), theirs.transpose(1, 2))


# --- bad files ---------------------------------------------------------------------------------------------------
@pytest.fixture
def good_file(tmp_path, rng):
    path = tmp_path / "good.safetensors"
    mxfp4.save_file({"w": mxfp4.quantize(randn(rng, 4, 100), backend="torch"), "b": randn(rng, 4)}, path)
    return path


@pytest.mark.parametrize("cut", [0, 5, 8, 40, -1, -100], ids=lambda c: f"cut_at_{c}")
def test_truncated_file(tmp_path, good_file, cut):
    data = good_file.read_bytes()
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(data[:cut])
    with pytest.raises(MXFP4FormatError, match="truncated.safetensors"):
        mxfp4.load_file(bad)


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda d: d[:8] + b"x" * (len(d) - 8),  # header is not JSON
        lambda d: struct.pack("<Q", 2**40) + d[8:],  # header length past the end
        lambda d: d + b"trailing",  # bytes the header does not cover
        lambda d: b"\x00" * len(d),
    ],
    ids=["garbage_header", "huge_header_length", "trailing_bytes", "zeros"],
)
def test_corrupt_header(tmp_path, good_file, corrupt):
    bad = tmp_path / "corrupt.safetensors"
    bad.write_bytes(corrupt(good_file.read_bytes()))
    with pytest.raises(MXFP4FormatError, match="corrupt.safetensors"):
        mxfp4.load_file(bad)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        mxfp4.load_file(tmp_path / "nope.safetensors")


def test_missing_half_of_a_pair(tmp_path, rng):
    w = mxfp4.quantize(randn(rng, 4, 64), backend="torch")
    path = tmp_path / "half.safetensors"
    raw_save_file({"w_blocks": w.blocks, "b": randn(rng, 4)}, path)
    with pytest.raises(MXFP4FormatError, match=r"'w' is missing 'w_scales' \(only 'w_blocks' is in the file\)"):
        mxfp4.load_file(path)
    raw_save_file({"w_scales": w.scales}, path)
    with pytest.raises(MXFP4FormatError, match="missing 'w_blocks'"):
        mxfp4.load_file(path)
    layout = json.dumps({"version": 1, "tensors": {"v": {"shape": [4, 64], "axis": 1}}})
    raw_save_file({"b": randn(rng, 4)}, path, metadata={METADATA_KEY: layout})
    with pytest.raises(MXFP4FormatError, match="'v' is missing 'v_blocks'.*metadata"):
        mxfp4.load_file(path)


@pytest.mark.parametrize(
    "blocks, scales, message",
    [
        (
            torch.zeros(4, 2, 16, dtype=torch.uint8),
            torch.zeros(4, 3, dtype=torch.uint8),
            r"scales \(4, 3\) do not match blocks",
        ),
        (torch.zeros(4, 2, 8, dtype=torch.uint8), torch.zeros(4, 2, dtype=torch.uint8), r"\[\.\.\., G, 16\]"),
        (torch.zeros(4, 2, 16, dtype=torch.uint8), torch.zeros(4, 2, dtype=torch.float32), r"'w_scales' must be uint8"),
        (torch.zeros(4, 2, 16, dtype=torch.int8), torch.zeros(4, 2, dtype=torch.uint8), r"'w_blocks' must be uint8"),
        (torch.zeros(16, dtype=torch.uint8), torch.zeros(1, dtype=torch.uint8), r"\[\.\.\., G, 16\]"),
    ],
    ids=["scales_mismatch", "last_dim_8", "float_scales", "int8_blocks", "blocks_1d"],
)
def test_mismatched_shapes_and_dtypes(tmp_path, blocks, scales, message):
    path = tmp_path / "bad.safetensors"
    raw_save_file({"w_blocks": blocks, "w_scales": scales}, path)
    with pytest.raises(MXFP4FormatError, match=message):
        mxfp4.load_file(path)


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"shape": [4, 65], "axis": 1}, "cannot hold"),  # 3 blocks needed, 2 stored
        ({"shape": [5, 64], "axis": 1}, "cannot hold"),
        ({"shape": [4, 64], "axis": 2}, "out of range"),
        ({"shape": [4, 64, 1], "axis": 1}, "dims"),
        ({"shape": "4x64", "axis": 1}, "int list 'shape'"),
        ({"shape": [4, 64]}, "int 'axis'"),
    ],
    ids=["length_past_blocks", "batch_mismatch", "axis_out_of_range", "ndim_mismatch", "shape_not_list", "no_axis"],
)
def test_metadata_inconsistent_with_tensors(tmp_path, rng, entry, message):
    w = mxfp4.quantize(randn(rng, 4, 64), backend="torch")
    path = tmp_path / "meta.safetensors"
    layout = json.dumps({"version": 1, "tensors": {"w": entry}})
    raw_save_file({"w_blocks": w.blocks, "w_scales": w.scales}, path, metadata={METADATA_KEY: layout})
    with pytest.raises(MXFP4FormatError, match=message):
        mxfp4.load_file(path)


@pytest.mark.parametrize(
    "layout, message",
    [
        ("{not json", "not valid JSON"),
        ('{"version": 1}', "no 'tensors' table"),
        ('{"version": 99, "tensors": {}}', "version 99"),
    ],
    ids=["not_json", "no_tensors", "future_version"],
)
def test_corrupt_metadata(tmp_path, rng, layout, message):
    path = tmp_path / "meta.safetensors"
    raw_save_file({"b": randn(rng, 4)}, path, metadata={METADATA_KEY: layout})
    with pytest.raises(MXFP4FormatError, match=message):
        mxfp4.load_file(path)


def test_name_collision_in_file(tmp_path, rng):
    """A plain tensor 'w' beside a pair w_blocks/w_scales would load two things under one name."""
    w = mxfp4.quantize(randn(rng, 4, 64), backend="torch")
    path = tmp_path / "collide.safetensors"
    raw_save_file({"w": randn(rng, 4), "w_blocks": w.blocks, "w_scales": w.scales}, path)
    with pytest.raises(MXFP4FormatError, match="'w' is both a tensor and an MXFP4 pair"):
        mxfp4.load_file(path)


def test_format_error_is_a_value_error():
    assert issubclass(MXFP4FormatError, ValueError)
