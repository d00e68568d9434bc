"""The ``mxfp4`` command line: conversions bit-exact with the library, Hub layout, directories, errors, memory."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import mxfp4
from mxfp4 import cli, reference
from mxfp4.testing import assert_bitwise_equal

EXPERTS_GATE_UP = "model.layers.0.mlp.experts.gate_up_proj"
EXPERTS_DOWN = "model.layers.0.mlp.experts.down_proj"


def run(*args: str) -> int:
    return cli.main([str(a) for a in args])


def random_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    """A GPT-OSS-like layer in transformers' bf16 layout (experts [E, in, out]) plus tensors that stay as they are."""
    g = torch.Generator().manual_seed(seed)
    return {
        EXPERTS_GATE_UP: torch.randn(3, 96, 320, generator=g).bfloat16(),
        EXPERTS_GATE_UP + "_bias": torch.randn(3, 320, generator=g).bfloat16(),
        EXPERTS_DOWN: torch.randn(3, 160, 96, generator=g).bfloat16(),
        "model.layers.0.self_attn.q_proj.weight": torch.randn(72, 100, generator=g).bfloat16(),  # K = 100: partial block
        "model.layers.0.self_attn.q_proj.bias": torch.randn(72, generator=g).float(),
        "model.embed_tokens.weight": torch.randn(211, 96, generator=g).bfloat16(),
        "step": torch.tensor([7], dtype=torch.int64),
    }


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    path = tmp_path / "in.safetensors"
    save_file(random_tensors(), str(path), metadata={"format": "pt", "note": "kept"})
    return path


def stored(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), "pt") as handle:
        return handle.metadata()


# --- quantize -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["floor", "ceil", "mse"])
def test_quantize_writes_hub_layout_bit_exact(checkpoint, tmp_path, mode):
    out = tmp_path / "q.safetensors"
    assert run("quantize", checkpoint, out, "--scale-mode", mode, "-q") == 0
    original, written = stored(checkpoint), stored(out)
    for name in (EXPERTS_GATE_UP, EXPERTS_DOWN):
        # transformers' [E, in, out] quantized along `in`: the Hub's [E, out, G, 16] bytes.
        expected_blocks, expected_scales = reference.quantize(original[name].float().numpy(), axis=1, scale_mode=mode)
        experts, features_in, features_out = original[name].shape
        assert written[name + "_blocks"].shape == (experts, features_out, features_in // 32, 16)
        np.testing.assert_array_equal(written[name + "_blocks"].numpy(), expected_blocks, err_msg=f"{name} blocks")
        np.testing.assert_array_equal(written[name + "_scales"].numpy(), expected_scales, err_msg=f"{name} scales")
        assert name not in written
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.embed_tokens.weight", "step", EXPERTS_GATE_UP + "_bias"):
        assert torch.equal(written[name], original[name]), f"{name} must pass through byte for byte"
    meta = metadata(out)
    assert meta["format"] == "pt" and meta["note"] == "kept"
    layout = json.loads(meta["mxfp4"])["tensors"]
    assert layout[EXPERTS_GATE_UP] == {"shape": [3, 96, 320], "axis": 1}


def test_quantize_include_regex_and_partial_blocks(checkpoint, tmp_path):
    out = tmp_path / "q.safetensors"
    assert run("quantize", checkpoint, out, "--include", r"proj\.weight$", "-q") == 0
    loaded = mxfp4.load_file(out)
    q = loaded["model.layers.0.self_attn.q_proj.weight"]
    assert isinstance(q, mxfp4.MXFP4Tensor) and tuple(q.shape) == (72, 100) and q.axis == 1
    assert isinstance(loaded[EXPERTS_GATE_UP], torch.Tensor), "experts do not match this --include"
    expected_blocks, expected_scales = reference.quantize(stored(checkpoint)["model.layers.0.self_attn.q_proj.weight"].float().numpy())
    np.testing.assert_array_equal(q.blocks.numpy(), expected_blocks)
    np.testing.assert_array_equal(q.scales.numpy(), expected_scales)
    assert isinstance(loaded["model.layers.0.self_attn.q_proj.bias"], torch.Tensor), "1-D tensors are never quantized"


# --- dequantize -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["bf16", "fp16", "fp32"])
def test_dequantize_inverts_quantize(checkpoint, tmp_path, dtype):
    quantized, restored = tmp_path / "q.safetensors", tmp_path / "d.safetensors"
    assert run("quantize", checkpoint, quantized, "--include", r"(experts\.\w+_proj|q_proj\.weight)$", "-q") == 0
    assert run("dequantize", quantized, restored, "--dtype", dtype, "-q") == 0
    original, back, q = stored(checkpoint), stored(restored), mxfp4.load_file(quantized)
    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    assert set(back) == set(original)
    for name in (EXPERTS_GATE_UP, EXPERTS_DOWN, "model.layers.0.self_attn.q_proj.weight"):
        assert back[name].shape == original[name].shape and back[name].dtype == torch_dtype
        assert_bitwise_equal(back[name].float(), q[name].dequantize(torch_dtype).float(), what=name)
        relative = (back[name].double() - original[name].double()).norm() / original[name].double().norm()
        assert relative < 0.13, f"{name}: relative error {relative:.3f} is beyond MXFP4's on Gaussian data"
    assert torch.equal(back["model.embed_tokens.weight"], original["model.embed_tokens.weight"])
    assert "mxfp4" not in metadata(restored)


def test_dequantize_hub_file_matches_transformers(tmp_path, rng):
    """A Hub shard (no mxfp4 metadata): experts come out as transformers' [E, in, out], bit for bit."""
    convert = pytest.importorskip("transformers.integrations.mxfp4").convert_moe_packed_tensors
    blocks = torch.from_numpy(rng.integers(0, 256, size=(4, 64, 3, 16), dtype=np.uint8))
    scales = torch.from_numpy(rng.integers(110, 140, size=(4, 64, 3), dtype=np.uint8))
    other = torch.from_numpy(rng.integers(0, 256, size=(8, 2, 16), dtype=np.uint8))
    path = tmp_path / "hub.safetensors"
    save_file({EXPERTS_DOWN + "_blocks": blocks, EXPERTS_DOWN + "_scales": scales, "lin_blocks": other,
               "lin_scales": torch.full((8, 2), 127, dtype=torch.uint8)}, str(path), metadata={"format": "pt"})
    out = tmp_path / "d.safetensors"
    assert run("dequantize", path, out, "-q") == 0
    back = stored(out)
    expected = convert(blocks, scales, dtype=torch.bfloat16)
    assert back[EXPERTS_DOWN].shape == (4, 96, 64)
    assert torch.equal(back[EXPERTS_DOWN].view(torch.int16), expected.view(torch.int16))
    assert back["lin"].shape == (8, 64), "non-expert pairs decode along their last axis"


# --- directories ----------------------------------------------------------------------------------------------------
def tiny_transformers_checkpoint(path: Path) -> Path:
    transformers = pytest.importorskip("transformers")
    config = transformers.GptOssConfig(
        hidden_size=96, intermediate_size=160, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
        head_dim=24, num_local_experts=4, num_experts_per_tok=2, vocab_size=211, sliding_window=5,
        layer_types=["sliding_attention", "full_attention"],
    )
    torch.manual_seed(0)
    model = transformers.GptOssForCausalLM(config).to(torch.bfloat16)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(std=0.05)
    model.save_pretrained(path, max_shard_size="200KB")
    return path


def test_sharded_directory_round_trip_loads_in_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    source = tiny_transformers_checkpoint(tmp_path / "bf16")
    assert len(list(source.glob("*.safetensors"))) > 1, "the fixture must be sharded"
    quantized = tmp_path / "mx"
    assert run("quantize", source, quantized, "-q") == 0

    index = json.loads((quantized / cli.INDEX_FILE).read_text())
    for name, shard in index["weight_map"].items():
        with safe_open(str(quantized / shard), "pt") as handle:
            assert name in handle.keys(), f"index puts {name} in {shard}, which lacks it"
    assert index["metadata"]["total_size"] == sum(
        t.numel() * t.element_size() for shard in set(index["weight_map"].values()) for t in stored(quantized / shard).values()
    )
    assert "model.layers.1.mlp.experts.down_proj_blocks" in index["weight_map"]
    assert json.loads((quantized / "config.json").read_text())["quantization_config"]["quant_method"] == "mxfp4"
    assert (quantized / "generation_config.json").is_file()

    # transformers loads the result (dequantizing the experts on CPU) with nothing missing or left over ...
    model, info = transformers.GptOssForCausalLM.from_pretrained(
        quantized, quantization_config=transformers.Mxfp4Config(dequantize=True), dtype=torch.bfloat16,
        output_loading_info=True,
    )
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    # ... to exactly the weights `mxfp4 dequantize` writes,
    restored = tmp_path / "back"
    assert run("dequantize", quantized, restored, "-q") == 0
    assert "quantization_config" not in json.loads((restored / "config.json").read_text())
    back = {}
    for shard in restored.glob("*.safetensors"):
        back.update(stored(shard))
    experts = model.model.layers[1].mlp.experts
    assert torch.equal(experts.gate_up_proj.data.view(torch.int16), back["model.layers.1.mlp.experts.gate_up_proj"].view(torch.int16))
    assert torch.equal(experts.down_proj.data.view(torch.int16), back["model.layers.1.mlp.experts.down_proj"].view(torch.int16))
    # ... and the restored bf16 directory loads as a plain transformers checkpoint.
    plain, info = transformers.GptOssForCausalLM.from_pretrained(restored, dtype=torch.bfloat16, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info


# --- inspect --------------------------------------------------------------------------------------------------------
def test_inspect_table_and_histogram(checkpoint, tmp_path, capsys):
    out = tmp_path / "q.safetensors"
    assert run("quantize", checkpoint, out, "-q") == 0
    capsys.readouterr()
    assert run("inspect", out) == 0
    text = capsys.readouterr().out
    gate_up = next(line for line in text.splitlines() if line.startswith(EXPERTS_GATE_UP + " "))
    assert "[3, 96, 320]" in gate_up and "MXFP4 axis 1" in gate_up and re.search(r"2\^-?\d+:\d+%", gate_up), gate_up
    assert "BF16" in next(line for line in text.splitlines() if line.startswith("model.embed_tokens.weight"))
    assert "4.25 bits/element" in text


def test_scale_histogram_reports_nan_blocks():
    line = cli.scale_histogram(torch.tensor([127, 127, 126, 255], dtype=torch.uint8))
    assert "2^0:50%" in line and "2^-1:25%" in line and "NaN blocks: 1" in line


# --- demo and entry points ------------------------------------------------------------------------------------------
def test_demo_runs_and_reports_every_mode(capsys):
    assert run("demo", "--rows", "64") == 0
    text = capsys.readouterr().out
    for mode in ("floor", "ceil", "mse"):
        assert re.search(rf"^{mode}\s+0\.1\d+", text, re.M), f"no error line for {mode}:\n{text}"
    assert "73.4%" in text and "4.25 bits per element" in text


def test_python_dash_m_and_console_script(checkpoint, tmp_path):
    result = subprocess.run([sys.executable, "-m", "mxfp4", "inspect", str(checkpoint)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and EXPERTS_GATE_UP in result.stdout, result.stderr
    script = shutil.which("mxfp4")
    if script is None:
        pytest.skip("the mxfp4 console script is not on PATH (package not installed with pip install -e .)")
    result = subprocess.run([script, "inspect", str(checkpoint)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and EXPERTS_GATE_UP in result.stdout, result.stderr


# --- errors: one line on stderr, exit status 2 ----------------------------------------------------------------------
def corrupt_files(tmp_path: Path, checkpoint: Path) -> dict[str, Path]:
    raw = checkpoint.read_bytes()
    files = {
        "garbage": b"this is not a safetensors file at all",
        "truncated": raw[: len(raw) // 2],
        "bad-json": raw[:8] + b"{" * (int.from_bytes(raw[:8], "little")) + raw[8 + int.from_bytes(raw[:8], "little"):],
        "empty": b"",
    }
    paths = {}
    for name, data in files.items():
        paths[name] = tmp_path / f"{name}.safetensors"
        paths[name].write_bytes(data)
    return paths


@pytest.mark.parametrize("command", ["quantize", "dequantize", "inspect"])
@pytest.mark.parametrize("kind", ["missing", "garbage", "truncated", "bad-json", "empty"])
def test_bad_input_is_one_line_and_exit_2(checkpoint, tmp_path, capsys, command, kind):
    path = tmp_path / "missing.safetensors" if kind == "missing" else corrupt_files(tmp_path, checkpoint)[kind]
    args = [command, path] + ([] if command == "inspect" else [tmp_path / "out.safetensors"])
    assert run(*args) == 2
    err = capsys.readouterr().err
    assert err.startswith("mxfp4: error: ") and err.count("\n") == 1 and str(path.name) in err, err
    assert not (tmp_path / "out.safetensors").exists(), "no output may be left behind"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["quantize", "{in}", "{out}", "--include", "nothing-matches"], "no tensor matches"),
        (["quantize", "{in}", "{out}", "--include", "(unclosed"], "not a valid regular expression"),
        (["quantize", "{in}", "{in}"], "refusing to write"),
        (["dequantize", "{in}", "{out}"], "no tensor matches an MXFP4 pair"),
        (["quantize", "{in}", "{tmp}/no/such/dir/out.safetensors"], "output directory does not exist"),
        (["demo", "--rows", "0"], "--rows must be positive"),
    ],
    ids=["no-match", "bad-regex", "overwrite-input", "nothing-to-dequantize", "missing-out-dir", "demo-rows"],
)
def test_user_errors(checkpoint, tmp_path, capsys, args, message):
    args = [a.format(**{"in": checkpoint, "out": tmp_path / "out.safetensors", "tmp": tmp_path}) for a in args]
    assert run(*args) == 2
    err = capsys.readouterr().err
    assert err.startswith("mxfp4: error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out.safetensors").exists()


def test_directory_without_safetensors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert run("quantize", tmp_path / "empty", tmp_path / "out") == 2
    assert "no .safetensors files" in capsys.readouterr().err


# --- memory: streamed, about one tensor at a time -------------------------------------------------------------------
MEASURE = textwrap.dedent(
    """
    import resource, sys
    from mxfp4.cli import main
    status = main(sys.argv[1:])
    print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    sys.exit(status)
    """
)


def peak_rss_bytes(*args, env=None) -> int:
    result = subprocess.run([sys.executable, "-c", MEASURE, *map(str, args)], capture_output=True, text=True,
                            timeout=600, env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stderr[-2000:]
    return int(re.search(r"MAXRSS_KB (\d+)", result.stdout).group(1)) * 1024


def test_peak_memory_is_about_one_tensor(tmp_path):
    """Quantize and dequantize a 256 MB checkpoint of four 64 MB tensors in a subprocess: the peak RSS above the
    same command on a tiny file stays under 2.5 tensors (loading the file whole would add 256 MB)."""
    tensor_bytes = 64 << 20
    rows, cols = 4096, tensor_bytes // 2 // 4096
    big, tiny = tmp_path / "big.safetensors", tmp_path / "tiny.safetensors"
    generator = torch.Generator().manual_seed(0)
    save_file({f"layers.{i}.weight": torch.randn(rows, cols, generator=generator).bfloat16() for i in range(4)},
              str(big), metadata={"format": "pt"})
    save_file({"layers.0.weight": torch.randn(64, 64).bfloat16()}, str(tiny), metadata={"format": "pt"})
    # The baseline loads what the big run loads (torch, and torch.compile's CPU backend, forced on for tiny input).
    always = {"MXFP4_TORCH_COMPILE": "always"}
    baseline = peak_rss_bytes("quantize", tiny, tmp_path / "t.q", "--include", "weight", "-q", env=always)
    quantize = peak_rss_bytes("quantize", big, tmp_path / "big.q", "--include", "weight", "-q")
    dequantize = peak_rss_bytes("dequantize", tmp_path / "big.q", tmp_path / "big.d", "-q")
    for name, peak in (("quantize", quantize), ("dequantize", dequantize)):
        extra = peak - baseline
        assert extra < 2.5 * tensor_bytes, (
            f"{name}: peak RSS {peak / 2**20:.0f} MiB is {extra / 2**20:.0f} MiB above the baseline "
            f"({baseline / 2**20:.0f} MiB); one tensor is {tensor_bytes / 2**20:.0f} MiB, the file 256 MiB"
        )
