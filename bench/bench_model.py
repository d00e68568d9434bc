"""GPT-OSS decode-step benchmarks: one token per row through the whole model, every dispatch path.

    pytest bench/bench_model.py --benchmark-only

CPU: a tiny GPT-OSS (mxfp4.models.tiny) on the torch path. GPU: the gpt-oss-20b shape with random MXFP4 experts,
``decode_step`` captured in a CUDA graph (as generation runs it), batch 1 and 32; the bytes a batch-1 step must
read (bench/gpt_oss_gpu.py's count) give the achieved GB/s. bench/gpt_oss_gpu.py has the full report (memory,
prefill, the bf16-experts baseline).
"""

import pytest
import torch
from benchutil import DEVICE, HAS_CUDA, PATHS, require_path

from mxfp4.models.gpt_oss import GptOss, GptOssConfig
from mxfp4.models.tiny import tiny_config

CONTEXT = 128
BATCHES = (1, 32) if HAS_CUDA else (1, 4)


@pytest.fixture(scope="module")
def config() -> GptOssConfig:
    return GptOssConfig.from_name("gpt-oss-20b") if HAS_CUDA else tiny_config()


@pytest.fixture(scope="module")
def model(config):
    return GptOss.from_config(config, device=DEVICE).init_random_(0)


def decode_step_runner(model: GptOss, batch: int):
    """A function running one decode step at column CONTEXT (a CUDA-graph replay on a GPU)."""
    model.setup_cache(batch, CONTEXT + 8)
    prompt = torch.randint(0, model.config.vocab_size, (batch, CONTEXT), device=DEVICE)
    model.forward_with_cache(prompt, 0, last_only=True)
    ids = torch.randint(0, model.config.vocab_size, (batch, 1), device=DEVICE)
    column = torch.tensor([CONTEXT], device=DEVICE)
    pad = torch.zeros(batch, dtype=torch.int64, device=DEVICE)
    if not HAS_CUDA:
        return lambda: model.decode_step(ids, column, pad)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):  # compile and allocate outside the capture
            model.decode_step(ids, column, pad)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        model.decode_step(ids, column, pad)

    def replay():
        graph.replay()
        torch.cuda.synchronize()

    return replay


@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: f"batch{b}")
@pytest.mark.parametrize("path", [p for p in PATHS if p != "torch-compiled"])
def test_decode_step(benchmark, model, path, batch):
    backend = require_path(path)
    for layer in model.model.layers:
        layer.mlp.backend = backend
    step = decode_step_runner(model, batch)
    step()
    benchmark.group = f"decode step, {'gpt-oss-20b' if HAS_CUDA else 'tiny gpt-oss'}, context {CONTEXT}"
    benchmark(step)
    if benchmark.stats is not None:
        benchmark.extra_info.update(backend=backend, batch=batch, tokens_per_s=batch / benchmark.stats.stats.median)
