"""One small run of every kernel on every forced Triton path, for `compute-sanitizer --tool memcheck`.

Odd shapes and partial last blocks, so any load or store past an extent shows up as an invalid access.
Run by bench/gpu.sh:  compute-sanitizer --tool memcheck --error-exitcode 9 python3 bench/sanitize.py
[--only-moe | --only-attention]
(matmul: every schedule, the TMA GEMV forced on hopper; MoE: T = 70 tokens take the tiled schedule, T = 1 and 9
the GEMV decode schedule (T = 1 on hopper: gate_up by TMA); the dense projection GEMV
of the model's decode at odd shapes; the decode and prefill attention kernels.)
"""

import sys

import torch

import mxfp4

BACKENDS = ("hopper", "bf16", "fp32")
ACTIVATION_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def run_dense(backend: str) -> None:
    gen = torch.Generator(device="cuda").manual_seed(0)
    for shape, axis in (((63, 100), -1), ((5, 7, 33), 1), ((3, 2881), -1)):
        for dtype in ACTIVATION_DTYPES:
            x = torch.randn(shape, generator=gen, device="cuda").to(dtype)
            for mode in ("floor", "ceil", "mse"):
                q = mxfp4.quantize(x, axis, scale_mode=mode, backend=backend)
                mxfp4.dequantize(q, dtype, backend=backend)
    for m, n, k in ((1, 63, 100), (16, 67, 2881), (300, 129, 200), (2048, 96, 64)):
        w = mxfp4.quantize(torch.randn(n, k, generator=gen, device="cuda"), backend=backend)
        bias = torch.randn(n, generator=gen, device="cuda")
        for dtype in ACTIVATION_DTYPES:
            a = torch.randn(m, k, generator=gen, device="cuda").to(dtype)
            mxfp4.matmul(a, w, bias, backend=backend)
            if m >= 300:  # a bias of a's dtype: the dequantize + cuBLAS schedule from DEQUANT_GEMM_MIN_M rows
                mxfp4.matmul(torch.randn(600, k, generator=gen, device="cuda").to(dtype), w, bias.to(dtype),
                             backend=backend)
    if backend == "hopper":  # the TMA GEMV, chosen automatically only from 32M weight elements: forced here
        from mxfp4.dispatch import Backend
        from mxfp4.triton_kernels.matmul import matmul as launch_matmul

        for n, k in ((63, 100), (67, 2881)):
            w = mxfp4.quantize(torch.randn(n, k, generator=gen, device="cuda"), backend=backend)
            bias = torch.randn(n, generator=gen, device="cuda")
            for dtype in ACTIVATION_DTYPES:
                a = torch.randn(3 if dtype == torch.float32 else 1, k, generator=gen, device="cuda").to(dtype)
                launch_matmul(a, w.blocks, w.scales, bias, Backend.HOPPER, _schedule="gemv_tma")
    # The model's decode projections (one launch for three weights; odd widths and K, split K).
    from mxfp4.triton_kernels.dense_gemv import projections

    for dtype in ACTIVATION_DTYPES:
        x = torch.randn(2, 333, generator=gen, device="cuda").to(dtype)
        ws = [torch.randn(n, 333, generator=gen, device="cuda").to(dtype) for n in (70, 9, 17)]
        projections(x, ws, [torch.randn(w.shape[0], generator=gen, device="cuda").to(dtype) for w in ws])
        projections(x, ws[:1])


def run_decode_attention() -> None:
    """The fused decode attention: a padded head layout (6 on 2 KV heads of 24), a wrapped ring and a full cache
    split over two programs per head, with left padding."""
    from mxfp4.triton_kernels.decode_attention import decode_attention

    gen = torch.Generator(device="cuda").manual_seed(2)
    heads, kv_heads, dim = 6, 2, 24
    for dtype in ACTIVATION_DTYPES:
        for slots, column, ring in ((5, 13, True), (300, 290, False)):
            def rand(*shape):
                return torch.randn(*shape, generator=gen, device="cuda").to(dtype)

            keys, values = rand(2, kv_heads, slots, dim), rand(2, kv_heads, slots, dim)
            columns = torch.arange(slots, device="cuda") + (column - slots if ring else 0)
            decode_attention(rand(2, heads * dim), rand(2, kv_heads * dim), rand(2, kv_heads * dim),
                             rand(2, dim // 2), rand(2, dim // 2), keys, values, columns,
                             torch.tensor([column], device="cuda"), torch.tensor([0, 3], device="cuda"),
                             rand(heads), scale=dim**-0.5, ring=ring, window=4 if ring else None)


def run_prefill_attention() -> None:
    """The prefill attention: a padded head dim (24 -> 32), block tails in T and S, a ring-like key order with a
    window, left padding, empty slots."""
    from mxfp4.triton_kernels.prefill_attention import prefill_attention

    gen = torch.Generator(device="cuda").manual_seed(3)
    heads, kv_heads, dim, length = 6, 2, 24, 70
    for dtype in ACTIVATION_DTYPES:
        for slots, window in ((101, None), (78, 5)):
            def rand(*shape):
                return torch.randn(*shape, generator=gen, device="cuda").to(dtype)

            key_columns = torch.arange(slots, device="cuda") - (slots - length)
            key_columns[:3] = -1
            prefill_attention(rand(2, length, heads, dim).transpose(1, 2), rand(2, kv_heads, slots, dim),
                              rand(2, kv_heads, slots, dim), torch.arange(length, device="cuda"), key_columns,
                              torch.tensor([0, 9], device="cuda"), rand(heads), scale=dim**-0.5, window=window)


def run_moe(backend: str) -> None:
    gen = torch.Generator(device="cuda").manual_seed(1)
    e, h, i, t, top_k = 5, 96, 67, 9, 2
    w1 = mxfp4.quantize(torch.randn(e, 2 * i, h, generator=gen, device="cuda"), backend=backend)
    w2 = mxfp4.quantize(torch.randn(e, h, i, generator=gen, device="cuda"), backend=backend)
    for dtype, tokens in ((torch.bfloat16, t), (torch.float16, 1), (torch.float32, 70)):
        x = torch.randn(tokens, h, generator=gen, device="cuda").to(dtype)
        router_w = torch.randn(e, h, generator=gen, device="cuda").to(dtype)
        mxfp4.moe(
            x, router_w, torch.randn(e, generator=gen, device="cuda").to(dtype), w1,
            torch.randn(e, 2 * i, generator=gen, device="cuda").to(dtype), w2,
            torch.randn(e, h, generator=gen, device="cuda").to(dtype), top_k, backend=backend,
        )


def main() -> int:
    if sys.argv[1:] == ["--only-attention"]:
        run_decode_attention()
        run_prefill_attention()
        torch.cuda.synchronize()
        print("sanitize: attention kernels ran", flush=True)
        return 0
    only_moe = sys.argv[1:] == ["--only-moe"]
    for backend in BACKENDS:
        if not only_moe:
            run_dense(backend)
            if backend == "hopper":
                run_decode_attention()
                run_prefill_attention()
        run_moe(backend)
        torch.cuda.synchronize()
        print(f"sanitize: {backend} path ran", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
