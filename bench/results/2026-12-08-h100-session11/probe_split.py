"""Session 11, from the repository root: matmul M=1 under split-K policies (programs per SM, least K steps per
slice), register and TMA GEMVs, CUDA graphs, weights rotated past L2, torch bf16 F.linear alongside. Argument: a
label for the code state (gpu_b.sh runs it on the tree, then with unroll.patch applied)."""
import sys

import torch

sys.path.insert(0, "bench")
from tune import CALLS, graph_us  # noqa: E402

import mxfp4  # noqa: E402
from mxfp4.dispatch import Backend  # noqa: E402
from mxfp4.triton_kernels import launch, matmul as mm  # noqa: E402
from mxfp4.triton_kernels.splitk import SplitPolicy  # noqa: E402

READABLE = launch.tma_readable
label = sys.argv[1]
policies = [tuple(int(v) for v in p.split("x")) for p in sys.argv[2].split(",")]


def configure(tma: bool, policy) -> None:
    mm.tma_readable = READABLE if tma else (lambda blocks: False)
    mm.GEMV_SPLIT = SplitPolicy(*policy)
    mm._cached_plan.cache_clear()
    mm._LAUNCHES.clear()


for n, k in ((2880, 2880), (5760, 2880), (8192, 8192), (28672, 8192)):
    copies = max(2, int(120e6 // (n * k * 0.53)) + 1)
    ws = [mxfp4.quantize(torch.randn(n, k, device="cuda")) for _ in range(copies)]
    a = torch.randn(1, k, device="cuda").to(torch.bfloat16)
    dense = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for _ in range(max(2, int(120e6 // (n * k * 2)) + 1))]
    torch_us = graph_us([lambda w=w: torch.nn.functional.linear(a, w) for w in dense] * (CALLS // len(dense) + 1))
    del dense
    ref = None
    cells = []
    for tma in ((False, True) if n * k >= mm.TMA_GEMV_MIN_ELEMENTS else (False,)):
        for policy in policies:
            configure(tma, policy)
            out = mxfp4.matmul(a, ws[0], backend="hopper")
            ref = out if ref is None else ref
            close = torch.allclose(out.float(), ref.float(), rtol=1e-2, atol=1e-2)
            us = graph_us([lambda w=w: mxfp4.matmul(a, w, backend="hopper") for w in ws] * (CALLS // copies + 1))
            plan = mm._cached_plan(Backend.HOPPER, 1, n, k, torch.bfloat16, 0, None, False, tma)
            cells.append(f"{'tma' if tma else 'reg'} {policy[0]}x{policy[1]} {us:.2f} ({torch_us / us:.2f}x, "
                         f"{plan.grid[1]} splits{'' if close else ', DIFFERS'})")
    print(f"[{label}] M=1 {n}x{k}: torch bf16 {torch_us:.2f} | " + " | ".join(cells), flush=True)
    del ws
configure(True, (16, 1))
