"""The benchmark tooling works end to end (tiny sizes; the numbers themselves are never asserted: benchmarks, not tests)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mxfp4 import bench, cli, reference

REPO = Path(__file__).resolve().parents[1]
HAS_CUDA = torch.cuda.is_available()
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_cpu_report_json_and_roofline(tmp_path):
    out_json, out_png = tmp_path / "bench.json", tmp_path / "roofline.png"
    assert bench.main(["--device", "cpu", "--tiny", "--json", str(out_json), "--png", str(out_png)]) == 0
    report = json.loads(out_json.read_text())
    assert {"date", "command", "machine", "ceilings", "results"} <= set(report)
    assert report["command"].startswith("python -m mxfp4.bench --device cpu --tiny")
    ceilings = report["ceilings"]
    assert ceilings["copy_gbps"] > 0 and ceilings["matmul_fp32_tflops"] > 0 and ceilings["peak_tflops"] > 0
    rows = report["results"]
    by_op = {op: [r for r in rows if r["op"] == op] for op in ("quantize", "dequantize", "matmul")}
    assert all(by_op.values()), "every op has rows"
    for row in rows:
        assert row["seconds"] > 0 and math.isfinite(row["percent_of_roof"]) and row["gbps"] > 0, row
    quantize_paths = {r["path"] for r in by_op["quantize"]}
    assert {"ml_dtypes (floor)", "torch compiled (floor)", "torch eager (mse)"} <= quantize_paths
    for row in by_op["quantize"]:
        assert row["baseline"] or "ml_dtypes" in row["speedups"], row
        if row["path"] in ("torch compiled (floor)", "torch compiled (ceil)"):
            assert "bytes == baseline" in row["note"], row["note"]
    compiled = next(r for r in by_op["dequantize"] if r["path"] == "torch compiled")
    assert "transformers" in compiled["speedups"] and "bits == transformers" in compiled["note"]
    for row in by_op["matmul"]:
        assert row["flops"] > 0 and (row["baseline"] or {"torch bf16", "naive"} <= set(row["speedups"])), row
    assert out_png.read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.skipif(HAS_CUDA, reason="the interpreted plumbing check is for CPUs; a GPU runs the real suite")
def test_gpu_case_list_runs_interpreted_and_says_so(tmp_path):
    """The GPU branch (forced Triton paths) runs under the interpreter on a CPU; every such row is labelled."""
    out_json = tmp_path / "interpreted.json"
    argv = ["--device", "cpu", "--tiny", "--interpreted", "--ops", "dequantize,matmul", "--paths", "fp32", "--json", str(out_json)]
    assert bench.main(argv) == 0
    rows = json.loads(out_json.read_text())["results"]
    paths = {r["path"] for r in rows}
    assert {"fp32", "torch", "torch bf16 matmul", "naive dequantize + matmul"} <= paths, paths
    for row in rows:
        if not row["baseline"]:
            assert row["note"] == "INTERPRETED: not a timing", row


def test_mxfp4_bench_via_cli(tmp_path, capsys):
    out_json = tmp_path / "cli.json"
    assert cli.main(["bench", "--device", "cpu", "--tiny", "--ops", "matmul", "--json", str(out_json)]) == 0
    assert "matmul" in capsys.readouterr().out
    assert {r["op"] for r in json.loads(out_json.read_text())["results"]} == {"matmul"}


@pytest.mark.parametrize("argv", [["--ops", "transpose"], ["--shapes", "12by4"], ["--device", "cuda", "--interpreted"]])
def test_bad_options_exit_2(argv):
    if argv[:2] == ["--device", "cuda"] and HAS_CUDA:
        pytest.skip("with a GPU, --device cuda is valid; only --interpreted is refused")
    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args(argv)
    assert exit_info.value.code == 2


@pytest.mark.parametrize("mode", ["floor", "ceil"])
def test_ml_dtypes_baseline_is_the_same_quantizer(mode, rng):
    """The CPU baseline does the same work: on Gaussian data (no zero/NaN blocks) its bytes equal the reference's."""
    x = torch.from_numpy(rng.standard_normal((37, 2880)) * 0.02).to(torch.bfloat16)
    blocks, scales = bench.quantize_ml_dtypes(x, mode)
    expected_blocks, expected_scales = reference.quantize(x.float().numpy(), scale_mode=mode)
    np.testing.assert_array_equal(scales, expected_scales)
    np.testing.assert_array_equal(blocks, expected_blocks)


def test_naive_dequantize_baseline_is_exact(rng):
    blocks = rng.integers(0, 256, size=(9, 4, 16), dtype=np.uint8)
    scales = rng.integers(100, 150, size=(9, 4), dtype=np.uint8)
    got = bench.dequantize_naive(torch.from_numpy(blocks), torch.from_numpy(scales), torch.float32)
    np.testing.assert_array_equal(got.numpy(), reference.dequantize(blocks, scales, np.float32))


@pytest.mark.skipif(HAS_CUDA, reason="on a GPU, bench/ runs at full size in bench/gpu.sh")
def test_pytest_benchmarks_collect_and_skip_triton_on_cpu():
    """``pytest bench/`` collects the bench_*.py files; on a CPU the Triton paths are skipped with a reason."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "bench/bench_dequantize.py", "bench/bench_quantize.py", "--benchmark-disable",
         "-q", "-rs", "-p", "no:cacheprovider", "-k", "dequantize or floor"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for path in ("hopper", "bf16", "fp32"):
        assert f"{path}: Triton kernels would run under the interpreter on a CPU" in result.stdout, result.stdout[-3000:]
    collected = subprocess.run([sys.executable, "-m", "pytest", "bench/", "--collect-only", "-q", "-p", "no:cacheprovider"],
                               cwd=REPO, capture_output=True, text=True, timeout=300)
    for name in ("bench_quantize.py", "bench_dequantize.py", "bench_matmul.py"):
        assert name in collected.stdout, collected.stdout[-2000:]
