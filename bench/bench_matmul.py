"""matmul benchmarks: ``mxfp4.matmul(a [M, K], W [N, K])`` for M = 1, 16, 256, 4096, every path and two baselines.

    pytest bench/bench_matmul.py --benchmark-only

GPU: W = 5760 x 2880 (gpt-oss gate_up) and 8192 x 8192. CPU: W = 576 x 2880 (small, for CI). Baselines: torch's
bf16 matmul on the same shape (``a @ W_bf16.T``) and the naive dequantize-then-matmul.
"""

import pytest
import torch
from benchutil import MXFP4_BYTES_PER_ELEMENT, PATHS, big, compile_policy, measure, random_bf16, random_mxfp4, require_path

import mxfp4
from mxfp4.bench import dequantize_naive

M_VALUES = (1, 16, 256, 4096)
SHAPES = big(((5760, 2880), (8192, 8192)), ((576, 2880),))
_WEIGHTS = {}


def weight(n, k):
    if (n, k) not in _WEIGHTS:
        q = random_mxfp4((n, k), seed=n + k)
        _WEIGHTS[(n, k)] = (q, mxfp4.dequantize(q, torch.bfloat16, backend="torch"))
    return _WEIGHTS[(n, k)]


def case(benchmark, m, n, k, fn, weight_bytes):
    benchmark.group = f"matmul M={m} N={n} K={k}"
    measure(benchmark, fn, bytes_moved=weight_bytes + 2 * m * k + 2 * m * n, flops=2 * m * n * k, m=m, n=n, k=k)


@pytest.mark.parametrize("m", M_VALUES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("path", PATHS)
def test_matmul(benchmark, monkeypatch, path, shape, m):
    backend = require_path(path)
    compile_policy(monkeypatch, path)
    n, k = shape
    q, _ = weight(n, k)
    a = random_bf16((m, k), seed=m)
    case(benchmark, m, n, k, lambda: mxfp4.matmul(a, q, backend=backend), n * k * MXFP4_BYTES_PER_ELEMENT)


@pytest.mark.parametrize("m", M_VALUES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("baseline", ["torch-bf16", "naive-dequantize-matmul"])
def test_matmul_baseline(benchmark, baseline, shape, m):
    n, k = shape
    q, dense = weight(n, k)
    a = random_bf16((m, k), seed=m)
    if baseline == "torch-bf16":
        case(benchmark, m, n, k, lambda: a @ dense.T, 2 * n * k)
    else:
        case(benchmark, m, n, k, lambda: a @ dequantize_naive(q.blocks, q.scales, torch.bfloat16).T,
             n * k * MXFP4_BYTES_PER_ELEMENT)
