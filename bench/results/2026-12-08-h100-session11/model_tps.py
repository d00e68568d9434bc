"""gpt-oss-20b batch-1 decode tok/s (CUDA graph, 400 steps) in this process's code state, the MoE down GEMV's TMA
read off / on (moe.TMA_DOWN_ON), 3 alternating rounds."""
import sys

sys.path.insert(0, "bench")
from gpt_oss_gpu import time_decode  # noqa: E402

from mxfp4.models import gpt_oss  # noqa: E402
from mxfp4.triton_kernels import moe  # noqa: E402

config = gpt_oss.GptOssConfig.from_name("gpt-oss-20b")
model = gpt_oss.GptOss.from_config(config, device="cuda").init_random_(0)
rates = {False: [], True: []}
for _ in range(3):
    for down_on in (False, True):
        moe.TMA_DOWN_ON = down_on
        rates[down_on].append(1 / time_decode(model, 1, 128, 400, graph=True))
moe.TMA_DOWN_ON = False
for down_on, r in rates.items():
    print(f"[{sys.argv[1]}] gpt-oss-20b batch-1 tok/s, TMA down {'on ' if down_on else 'off'}: "
          + " ".join(f"{v:.1f}" for v in r), flush=True)
