"""Quick compiled check of the core kernels on a GPU: correctness vs the reference, then a few timings.

    python3 bench/smoke.py
Used for fast feedback before the full suite (bench/gpu.sh).
"""

import sys
import time

import numpy as np
import torch
import triton.testing

import mxfp4
import mxfp4.reference as ref


def check(name, ok, detail=""):
    print(f"{'PASS' if ok else 'FAIL'} {name} {detail}", flush=True)
    return ok


def main() -> int:
    torch.manual_seed(0)
    ok = True
    for backend in ("hopper", "bf16", "fp32"):
        for dtype in (torch.bfloat16, torch.float16, torch.float32):
            x = torch.randn(257, 2881, device="cuda").to(dtype)
            for mode in ("floor", "ceil", "mse"):
                t0 = time.time()
                try:
                    q = mxfp4.quantize(x, scale_mode=mode, backend=backend)
                    b, s = ref.quantize(x.float().cpu().numpy(), scale_mode=mode)
                    same = np.array_equal(q.blocks.cpu().numpy(), b) and np.array_equal(q.scales.cpu().numpy(), s)
                    ok &= check(f"quantize {backend} {dtype} {mode}", same, f"{time.time()-t0:.1f}s")
                    d = mxfp4.dequantize(q, dtype, backend=backend)
                    r = torch.from_numpy(ref.dequantize(b, s, np.float64, length=2881)).to(dtype)
                    ok &= check(f"dequantize {backend} {dtype}", torch.equal(d.cpu().view(torch.int16 if dtype != torch.float32 else torch.int32), r.view(torch.int16 if dtype != torch.float32 else torch.int32)))
                except Exception as e:  # keep going: we want the whole picture in one run
                    ok &= check(f"quantize/dequantize {backend} {dtype} {mode}", False, repr(e)[:300])
        for m, n, k in ((1, 5760, 2880), (16, 2880, 2880), (3, 67, 2881), (300, 200, 100), (2048, 512, 2880)):
            for dtype in (torch.bfloat16, torch.float32):
                try:
                    w = mxfp4.quantize(torch.randn(n, k, device="cuda"))
                    a = torch.randn(m, k, device="cuda").to(dtype)
                    bias = torch.randn(n, device="cuda")
                    t0 = time.time()
                    y = mxfp4.matmul(a, w, bias, backend=backend)
                    expect = ref.matmul(a.float().cpu().numpy(), w.blocks.cpu().numpy(), w.scales.cpu().numpy(), bias.cpu().numpy())
                    err = np.linalg.norm(y.double().cpu().numpy() - expect) / np.linalg.norm(expect)
                    tol = 1e-5 if dtype == torch.float32 else 1e-2
                    ok &= check(f"matmul {backend} {dtype} {m}x{n}x{k}", err <= tol, f"rel err {err:.2e} ({time.time()-t0:.1f}s)")
                except Exception as e:
                    ok &= check(f"matmul {backend} {dtype} {m}x{n}x{k}", False, repr(e)[:300])
    print("\n backend  M  N x K        us   torch-bf16 us  speed-up")
    for n, k in ((5760, 2880), (2880, 2880), (8192, 8192), (28672, 8192)):
        wf = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
        w = mxfp4.quantize(wf)
        for m in (1, 16, 4096):
            a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            base = triton.testing.do_bench(lambda: a @ wf.T, return_mode="median") * 1e3
            for backend in ("hopper",):
                try:
                    t = triton.testing.do_bench(lambda: mxfp4.matmul(a, w, backend=backend), return_mode="median") * 1e3
                    print(f" {backend:7s} {m:4d} {n}x{k} {t:9.1f} {base:12.1f} {base / t:8.2f}x", flush=True)
                except Exception as e:
                    print(f" {backend} {m} {n}x{k} ERROR {e!r}"[:300])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
