"""Session 11: one launch each of the decode kernels for ncu (cache flushed per kernel by ncu): the TMA matmul GEMV
at 8192^2, the register GEMV at 5760x2880 (M=1), the MoE T=1 gate_up (TMA) and down GEMVs (E=32, top-4,
H=I=2880), and quantize of a bf16 [16384, 8192]."""
import sys

import torch

sys.path.insert(0, "bench")
from bench_moe import TOP_K, activations, gpt_oss_layer  # noqa: E402

import mxfp4  # noqa: E402
from mxfp4.triton_kernels import moe  # noqa: E402

w_big = mxfp4.quantize(torch.randn(8192, 8192, device="cuda"))
w_small = mxfp4.quantize(torch.randn(5760, 2880, device="cuda"))
layer = gpt_oss_layer.__wrapped__(32)
xt = activations(1)
big = torch.randn(16384, 8192, device="cuda").to(torch.bfloat16)
torch.cuda.synchronize()
mxfp4.matmul(torch.randn(1, 8192, device="cuda").to(torch.bfloat16), w_big, backend="hopper")
mxfp4.matmul(torch.randn(1, 2880, device="cuda").to(torch.bfloat16), w_small, backend="hopper")
moe.moe(xt, layer[0], layer[1], layer[2].blocks, layer[2].scales, layer[3], layer[4].blocks, layer[4].scales, layer[5],
        TOP_K, 1.702, 7.0, "hopper")
mxfp4.quantize(big)
torch.cuda.synchronize()
