"""Session 8 probe, from the repository root: gpt-oss-20b (random MXFP4 experts) batch-1 decode, CUDA graph, 400
steps, tok/s, rounds alternating in one process between: both residual add + RMSNorms fused (the default), the
same with the MoE GEMVs prefetching PF steps into L2 (argv[1], default 4), that plus the dense projection GEMVs
(q/k/v with the norm, o, lm_head) prefetching 2 steps, and session 6's unfused layer. argv[2]: rounds (default 2)."""
import dataclasses
import sys

sys.path.insert(0, "bench")
from gpt_oss_gpu import time_decode  # noqa: E402

from mxfp4.models import gpt_oss  # noqa: E402
from mxfp4.triton_kernels import dense_gemv, moe  # noqa: E402

PF = int(sys.argv[1]) if len(sys.argv) > 1 else 4
fused_forward = gpt_oss.DecoderLayer.forward
TABLES = moe.GEMV_SCHEDULES
PREFETCH_TABLES = tuple((p, dataclasses.replace(g, prefetch=PF), dataclasses.replace(d, prefetch=PF))
                        for p, g, d in TABLES)


def unfused_forward(self, x, pending, cos, sin, columns, pad, use_cache):  # session 6's layer
    x, h = self.input_layernorm.add_and_norm(x, pending)
    x, h = self.post_attention_layernorm.add_and_norm(x, self.self_attn(h, cos, sin, columns, pad, use_cache))
    return x, self.mlp(h)


DENSE = dense_gemv.CONFIG
DENSE_PREFETCH = dataclasses.replace(DENSE, prefetch=2)
VARIANTS = {"fused": (fused_forward, TABLES, DENSE), f"fused+pf{PF}": (fused_forward, PREFETCH_TABLES, DENSE),
            f"fused+pf{PF}+dense2": (fused_forward, PREFETCH_TABLES, DENSE_PREFETCH),
            "unfused": (unfused_forward, TABLES, DENSE)}
model = gpt_oss.GptOss.from_config(gpt_oss.GptOssConfig.from_name("gpt-oss-20b"), device="cuda").init_random_(0)
for rnd in range(int(sys.argv[2]) if len(sys.argv) > 2 else 2):
    cells = []
    for name, (forward, tables, dense) in VARIANTS.items():
        gpt_oss.DecoderLayer.forward, moe.GEMV_SCHEDULES, dense_gemv.CONFIG = forward, tables, dense
        dense_gemv._plan.cache_clear()
        cells.append(f"{name} {1 / time_decode(model, 1, 128, 400, graph=True):6.1f}")
    print(f"gpt-oss-20b batch-1 decode tok/s, CUDA graph, 400 steps, round {rnd}: " + "   ".join(cells), flush=True)
gpt_oss.DecoderLayer.forward, moe.GEMV_SCHEDULES, dense_gemv.CONFIG = fused_forward, TABLES, DENSE
