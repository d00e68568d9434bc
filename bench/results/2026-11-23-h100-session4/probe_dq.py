"""Probe: large-M matmul as fused tiles vs dequantize-to-bf16 + cuBLAS (session 4)."""
import torch, triton
from mxfp4.dispatch import Backend
from mxfp4.triton_kernels.matmul import matmul
from mxfp4.triton_kernels.dequantize import dequantize
import mxfp4
torch.manual_seed(0)
for N, K in ((8192, 8192), (28672, 8192), (5760, 2880)):
    w = mxfp4.quantize(torch.randn(N, K, device="cuda", dtype=torch.bfloat16))
    wd = torch.randn(N, K, device="cuda", dtype=torch.bfloat16)
    for M in (256, 512, 1024, 2048, 4096):
        a = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
        flops = 2 * M * N * K
        t_bf = triton.testing.do_bench(lambda: a @ wd.T, rep=100)
        t_fu = triton.testing.do_bench(lambda: matmul(a, w.blocks, w.scales, None, Backend.HOPPER), rep=100)
        t_dq = triton.testing.do_bench(lambda: dequantize(w.blocks, w.scales, torch.bfloat16, K, Backend.HOPPER), rep=100)
        buf = torch.empty(N, K, device="cuda", dtype=torch.bfloat16)
        t_dm = triton.testing.do_bench(lambda: a @ dequantize(w.blocks, w.scales, torch.bfloat16, K, Backend.HOPPER, out=buf).T, rep=100)
        print(f"N={N} K={K} M={M}: bf16 {t_bf*1e3:.1f}us {flops/t_bf/1e9:.0f}TF | fused {t_fu*1e3:.1f} {flops/t_fu/1e9:.0f}TF "
              f"({t_bf/t_fu:.0%}) | dq {t_dq*1e3:.1f} | dq+mm {t_dm*1e3:.1f} {flops/t_dm/1e9:.0f}TF ({t_bf/t_dm:.0%})", flush=True)
