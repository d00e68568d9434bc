"""Session 4 probe: gpt-oss-20b prefill (2k tokens) with the fused residual add + RMSNorm and with the two apart,
medians of 5 in one process; then the prefill's GPU kernels by time."""
import torch
import sys
sys.path.insert(0, "bench")
from gpt_oss_gpu import time_prefill
from mxfp4.models.gpt_oss import GptOss, GptOssConfig, RMSNorm

model = GptOss.from_config(GptOssConfig.from_name("gpt-oss-20b"), device="cuda").init_random_(0)
fused = RMSNorm.add_and_norm


def apart(self, x, delta):
    if delta is not None:
        x = x + delta
    return x, self(x)


for name, fn in (("fused add+norm", fused), ("add, then norm", apart), ("fused add+norm again", fused)):
    RMSNorm.add_and_norm = fn
    print(f"{name}: {2048 / time_prefill(model, 2048):.0f} tok/s", flush=True)
RMSNorm.add_and_norm = fused
from torch.profiler import ProfilerActivity, profile
prompt = torch.randint(0, model.config.vocab_size, (1, 2048), device="cuda")
with profile(activities=[ProfilerActivity.CUDA]) as prof:
    model.forward_with_cache(prompt, 0, last_only=True)
    torch.cuda.synchronize()
by = {}
for e in prof.events():
    if e.device_type.name == "CUDA":
        c, t = by.get(e.name, (0, 0.0))
        by[e.name] = (c + 1, t + e.device_time)
print(f"prefill kernels: {sum(c for c, _ in by.values())}, {sum(t for _, t in by.values()):.0f} us")
for n, (c, t) in sorted(by.items(), key=lambda kv: -kv[1][1])[:14]:
    print(f"  {t:9.1f} us {c:5d}x  {n[:100]}")
