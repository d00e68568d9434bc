"""Session 6 probe: the M=1 MXFP4 GEMV (matmul's "gemv" schedule) at several launch shapes, weights rotated past
L2, CUDA graph; prints us and the max error against float32 on the dequantized weight.

    python3 bench/results/2026-12-07-h100-session6/probe_matmul_gemv.py 64,4,4 64,8,4 ...   (BLOCK_N,BLOCK_G,warps)
"""
import sys

import torch

sys.path.insert(0, "bench")
from tune import CALLS, graph_us  # noqa: E402

import mxfp4  # noqa: E402
from mxfp4.dispatch import Backend  # noqa: E402
from mxfp4.triton_kernels import matmul as mm  # noqa: E402


def set_config(n, g, w):
    mm.GEMV_CONFIG = mm.GemvConfig(block_n=n, block_g=g, num_warps=w)
    mm._cached_plan.cache_clear()
    mm._LAUNCHES.clear()


configs = [tuple(map(int, c.split(","))) for c in sys.argv[1:]]
for n, k in ((2880, 2880), (5760, 2880), (8192, 8192), (28672, 8192)):
    copies = max(2, int(60e6 // (n * k * 0.53)) + 1)
    ws = [mxfp4.quantize(torch.randn(n, k, device="cuda")) for _ in range(copies)]
    ref_w = mxfp4.dequantize(ws[0], dtype=torch.float32)
    a = torch.randn(1, k, device="cuda").to(torch.bfloat16)
    ref = a.float() @ ref_w.T
    cells = []
    for cfg in configs:
        set_config(*cfg)
        run = lambda w: mm.matmul(a, w.blocks, w.scales, None, Backend.HOPPER, _schedule="gemv")  # noqa: E731
        err = ((run(ws[0]).float() - ref).abs().max() / ref.abs().max()).item()
        us = graph_us([lambda w=w: run(w) for w in ws] * (CALLS // copies + 1))
        cells.append(f"{cfg}: {us:.1f}us (err {err:.0e})")
    print(f"{n}x{k} M=1  " + "  ".join(cells))
