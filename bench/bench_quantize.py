"""quantize benchmarks: ``mxfp4.quantize`` of a bf16 weight, every scale mode, every path.

    pytest bench/bench_quantize.py --benchmark-only

CPU: bf16 [1024, 2880] (small, for CI), vs the obvious ml_dtypes path. GPU: bf16 [32768, 8192] (512 MiB), GB/s
counting bytes read + written (compare with the copy bandwidth from ``python -m mxfp4.bench``).
"""

import pytest
from benchutil import DEVICE, MXFP4_BYTES_PER_ELEMENT, PATHS, big, compile_policy, measure, random_bf16, require_path

import mxfp4
from mxfp4.bench import quantize_ml_dtypes

SHAPE = big((32768, 8192), (1024, 2880))
MODES = ("floor", "ceil", "mse")


@pytest.fixture(scope="module")
def weight():
    return random_bf16(SHAPE)


def bytes_moved(x) -> float:
    return x.numel() * (x.element_size() + MXFP4_BYTES_PER_ELEMENT)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("path", PATHS)
def test_quantize(benchmark, monkeypatch, weight, path, mode):
    backend = require_path(path)
    compile_policy(monkeypatch, path)
    benchmark.group = f"quantize {mode} bf16 {list(SHAPE)}"
    measure(benchmark, lambda: mxfp4.quantize(weight, scale_mode=mode, backend=backend), bytes_moved=bytes_moved(weight),
            elements=weight.numel())


@pytest.mark.parametrize("mode", MODES)
def test_quantize_baseline_ml_dtypes(benchmark, weight, mode):
    if DEVICE.type != "cpu":
        pytest.skip("the ml_dtypes baseline is NumPy on the CPU")
    benchmark.group = f"quantize {mode} bf16 {list(SHAPE)}"
    measure(benchmark, lambda: quantize_ml_dtypes(weight, mode), bytes_moved=bytes_moved(weight), elements=weight.numel())
