"""Session 7 probe for the next device session, from the repository root: gpt-oss-20b (random MXFP4 experts) batch-1
decode through the CUDA-graph-captured step, tok/s, rounds alternating between three decoder-layer variants in one
process: both residual add + RMSNorms fused (before attention into the q/k/v GEMV, after it into the MoE router;
the default), only the one after attention fused, and the unfused layer of session 6 (two norm kernels per layer).
"""
import sys

sys.path.insert(0, "bench")
from gpt_oss_gpu import time_decode  # noqa: E402

from mxfp4.models import gpt_oss  # noqa: E402

fused_forward = gpt_oss.DecoderLayer.forward


def router_fused_forward(self, x, pending, cos, sin, columns, pad, use_cache):
    x, h = self.input_layernorm.add_and_norm(x, pending)
    return self.mlp.add_norm_forward(x, self.self_attn(h, cos, sin, columns, pad, use_cache),
                                     self.post_attention_layernorm)


def unfused_forward(self, x, pending, cos, sin, columns, pad, use_cache):  # session 6's layer
    x, h = self.input_layernorm.add_and_norm(x, pending)
    x, h = self.post_attention_layernorm.add_and_norm(x, self.self_attn(h, cos, sin, columns, pad, use_cache))
    return x, self.mlp(h)


VARIANTS = {"both-norms-fused": fused_forward, "router-norm-fused": router_fused_forward, "unfused": unfused_forward}
model = gpt_oss.GptOss.from_config(gpt_oss.GptOssConfig.from_name("gpt-oss-20b"), device="cuda").init_random_(0)
for rnd in range(3):
    cells = []
    for name, forward in VARIANTS.items():
        gpt_oss.DecoderLayer.forward = forward
        cells.append(f"{name} {1 / time_decode(model, 1, 128, 400, graph=True):6.1f}")
    print(f"gpt-oss-20b batch-1 decode tok/s, CUDA graph, 400 steps, round {rnd}: " + "   ".join(cells), flush=True)
gpt_oss.DecoderLayer.forward = fused_forward
