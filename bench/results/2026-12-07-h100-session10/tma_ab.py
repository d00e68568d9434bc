"""Session 10, from the repository root: the TMA weight streams as merged (matmul's gemv_tma schedule for M=1
weights >= 32M elements, the MoE gate_up GEMV at <= 8 pairs on the hopper path) against the register-load GEMVs
they replace (switched off through the modules' tma_readable), in one process: matmul M=1 (CUDA graphs, weights
rotated past L2, torch bf16 F.linear alongside), the MoE layer at T=1 (E=32, top-4), and gpt-oss-20b batch-1
decode (400 steps, CUDA graph), rounds alternating."""
import sys

import torch

sys.path.insert(0, "bench")
from bench_moe import TOP_K, activations, gpt_oss_layer  # noqa: E402
from gpt_oss_gpu import time_decode  # noqa: E402
from tune import CALLS, copy_bandwidth_gbs, graph_us  # noqa: E402

import mxfp4  # noqa: E402
from mxfp4.dispatch import Backend  # noqa: E402
from mxfp4.models import gpt_oss  # noqa: E402
from mxfp4.triton_kernels import launch, matmul as mm, moe  # noqa: E402

READABLE = launch.tma_readable


def use_tma(on: bool) -> None:
    mm.tma_readable = moe.tma_readable = READABLE if on else (lambda blocks: False)
    mm._cached_plan.cache_clear()
    mm._LAUNCHES.clear()


print(f"copy bandwidth {copy_bandwidth_gbs():.0f} GB/s", flush=True)
for n, k in ((5760, 2880), (8192, 8192), (28672, 8192)):
    copies = max(2, int(120e6 // (n * k * 0.53)) + 1)
    ws = [mxfp4.quantize(torch.randn(n, k, device="cuda")) for _ in range(copies)]
    a = torch.randn(1, k, device="cuda").to(torch.bfloat16)
    dense = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for _ in range(max(2, int(120e6 // (n * k * 2)) + 1))]
    torch_us = graph_us([lambda w=w: torch.nn.functional.linear(a, w) for w in dense] * (CALLS // len(dense) + 1))
    del dense
    cells = []
    for on in (False, True):
        use_tma(on)
        us = graph_us([lambda w=w: mxfp4.matmul(a, w, backend="hopper") for w in ws] * (CALLS // copies + 1))
        plan = mm._cached_plan(Backend.HOPPER, 1, n, k, torch.bfloat16, 0, None, False, on)
        cells.append(f"{'tma' if on else 'registers'} {us:.1f} ({torch_us / us:.2f}x, {plan.kernel.__name__})")
    print(f"matmul M=1 {n}x{k}: torch bf16 {torch_us:.1f} | " + " | ".join(cells), flush=True)
    del ws

layers = [gpt_oss_layer.__wrapped__(32) for _ in range(3)]
xt = activations(1)
cells, outs = [], []
for on in (False, True):
    use_tma(on)
    outs.append(moe.moe(xt, *layers[0][:2], layers[0][2].blocks, layers[0][2].scales, layers[0][3], layers[0][4].blocks,
                        layers[0][4].scales, layers[0][5], TOP_K, 1.702, 7.0, "hopper"))
    us = graph_us([lambda l=l: moe.moe(xt, l[0], l[1], l[2].blocks, l[2].scales, l[3], l[4].blocks, l[4].scales, l[5],
                                       TOP_K, 1.702, 7.0, "hopper") for l in layers] * 4)
    cells.append(f"{'tma' if on else 'registers'} {us:.1f}")
same = torch.equal(outs[0], outs[1])
print(f"MoE T=1 E=32 layer: " + " | ".join(cells) + f" (outputs {'equal' if same else 'differ: max ' + str((outs[0].float() - outs[1].float()).abs().max().item())})", flush=True)
del layers

model = gpt_oss.GptOss.from_config(gpt_oss.GptOssConfig.from_name("gpt-oss-20b"), device="cuda").init_random_(0)
for rnd in range(int(sys.argv[1]) if len(sys.argv) > 1 else 2):
    cells = []
    for on in (False, True):
        use_tma(on)
        cells.append(f"{'tma' if on else 'registers'} {1 / time_decode(model, 1, 128, 400, graph=True):6.1f}")
    print(f"gpt-oss-20b batch-1 decode tok/s, CUDA graph, 400 steps, round {rnd}: " + "   ".join(cells), flush=True)
use_tma(True)
