"""Session 10, run from bench/ (the last device call, inline as ``python3 -c``): gpt-oss-20b batch-1 decode, CUDA
graph, 400 steps, three rounds, the MoE gate_up GEMV reading W1 by TMA (merged default) vs the register-load GEMV."""
import sys

sys.path.insert(0, ".")
from gpt_oss_gpu import time_decode  # noqa: E402

from mxfp4.models import gpt_oss  # noqa: E402
from mxfp4.triton_kernels import launch, moe  # noqa: E402

READABLE = launch.tma_readable
model = gpt_oss.GptOss.from_config(gpt_oss.GptOssConfig.from_name("gpt-oss-20b"), device="cuda").init_random_(0)
for rnd in range(3):
    cells = []
    for on in (True, False):
        moe.tma_readable = READABLE if on else (lambda blocks: False)
        cells.append(f"{'tma' if on else 'registers'} {1 / time_decode(model, 1, 128, 400, graph=True):.1f}")
    print("round", rnd + 1, " ".join(cells), flush=True)
