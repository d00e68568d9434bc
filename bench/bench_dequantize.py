"""dequantize benchmarks: GPT-OSS expert tensors ``[E, 5760, 90, 16]`` -> bf16, every path.

    pytest bench/bench_dequantize.py --benchmark-only

CPU: E = 2 (small, for CI), vs transformers' convert_moe_packed_tensors (which also transposes to [E, in, out]).
GPU: E = 32 (1 GiB of bf16 output), GB/s counting bytes read + written.
"""

import pytest
import torch
from benchutil import MXFP4_BYTES_PER_ELEMENT, PATHS, big, compile_policy, measure, random_mxfp4, require_path

import mxfp4

EXPERTS = big(32, 2)
SHAPE = (EXPERTS, 5760, 2880)  # logical [E, 2I, H] of gpt-oss gate_up_proj, quantized along H


@pytest.fixture(scope="module")
def experts():
    return random_mxfp4(SHAPE)


def bytes_moved(q) -> float:
    return q.numel() * (MXFP4_BYTES_PER_ELEMENT + 2)


@pytest.mark.parametrize("path", PATHS)
def test_dequantize(benchmark, monkeypatch, experts, path):
    backend = require_path(path)
    compile_policy(monkeypatch, path)
    benchmark.group = f"dequantize experts {list(experts.blocks.shape)} -> bf16"
    measure(benchmark, lambda: mxfp4.dequantize(experts, torch.bfloat16, backend=backend), bytes_moved=bytes_moved(experts),
            elements=experts.numel())


def test_dequantize_baseline_transformers(benchmark, experts):
    convert = pytest.importorskip("transformers.integrations.mxfp4").convert_moe_packed_tensors
    benchmark.group = f"dequantize experts {list(experts.blocks.shape)} -> bf16"
    measure(benchmark, lambda: convert(experts.blocks, experts.scales, dtype=torch.bfloat16), bytes_moved=bytes_moved(experts),
            elements=experts.numel(), note="includes transformers' transpose to [E, in, out]")
