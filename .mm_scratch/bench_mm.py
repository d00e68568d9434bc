"""Scratch H100 sweep for triton_kernels/matmul.py (not part of the project)."""
import json, os, sys, time, itertools, dataclasses
import torch, triton
import triton.testing
from mxfp4.triton_kernels import matmul as mm
from mxfp4.dispatch import Backend
import mxfp4

dev = "cuda"
OUT = os.environ.get("OUT", "/tmp")
results = []
def log(**kw):
    results.append(kw); print(json.dumps(kw), flush=True)

def rand_weight(N, K, copies=1, seed=0):
    g = torch.Generator(device=dev).manual_seed(seed)
    G = (K + 31) // 32
    bl = torch.randint(0, 256, (copies, N, G, 16), dtype=torch.uint8, device=dev, generator=g)
    sc = torch.randint(118, 128, (copies, N, G), dtype=torch.uint8, device=dev, generator=g)
    return bl, sc

def reference(a, bl, sc, bias):
    w = mxfp4.dequantize(mxfp4.MXFP4Tensor.from_blocks(bl, sc, (bl.shape[0], a.shape[1]), 1), torch.float32, backend="torch")
    y = a.double() @ w.double().T
    if bias is not None: y = y + bias.double()
    return y

def check(M, N, K, dtype, backend, schedule=None, bias=True):
    worst, fin = 0.0, True
    for rep in range(2):  # the second call of a shape takes the cached fast launch
        bl, sc = rand_weight(N, K, seed=M * 7 + N + rep)
        a = torch.randn(M, K, device=dev, dtype=dtype)
        b = torch.randn(N, device=dev, dtype=dtype) if bias else None
        y = mm.matmul(a, bl[0], sc[0], b, Backend(backend), _schedule=schedule)
        r = reference(a, bl[0], sc[0], b)
        worst = max(worst, ((y.double() - r).norm() / r.norm()).item()); fin = fin and bool(torch.isfinite(y).all())
    return worst, fin

def time_graph(fn, reps=20):
    """Pure GPU time per call: a CUDA graph of `reps` calls, replayed."""
    s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for i in range(3): fn(i)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(reps): fn(i)
    g.replay(); torch.cuda.synchronize()
    ts = []
    for _ in range(15):
        st, en = torch.cuda.Event(True), torch.cuda.Event(True)
        st.record(); g.replay(); en.record(); en.synchronize()
        ts.append(st.elapsed_time(en) * 1000 / reps)
    ts.sort(); return ts[len(ts) // 2]

def time_eager(fn, reps=200):
    """Per call with ordinary launches back to back (host overhead shows when it exceeds the GPU time)."""
    for i in range(10): fn(i)
    torch.cuda.synchronize()
    ts = []
    for _ in range(5):
        st, en = torch.cuda.Event(True), torch.cuda.Event(True)
        st.record()
        for i in range(reps): fn(i)
        en.record(); en.synchronize(); ts.append(st.elapsed_time(en) * 1000 / reps)
    ts.sort(); return ts[len(ts) // 2]

def copies_for(nbytes):  # rotate so that the working set is >= 200 MB (L2 is 50 MB)
    return max(2, min(64, int(200e6 // max(nbytes, 1)) + 1))

def bench_mm(M, N, K, dtype=torch.bfloat16, backend="hopper", schedule=None, eager=True):
    nbytes = N * K // 2 + N * K // 32
    c = copies_for(nbytes)
    bl, sc = rand_weight(N, K, c)
    a = torch.randn(c, M, K, device=dev, dtype=dtype)
    be = Backend(backend)
    fn = lambda i: mm.matmul(a[i % c], bl[i % c], sc[i % c], None, be, _schedule=schedule)
    t = time_graph(fn)
    te = time_eager(fn) if eager else None
    return t, te

def bench_torch(M, N, K, dtype=torch.bfloat16, eager=True):
    c = copies_for(N * K * 2)
    w = torch.randn(c, N, K, device=dev, dtype=dtype)
    a = torch.randn(c, M, K, device=dev, dtype=dtype)
    fn = lambda i: torch.nn.functional.linear(a[i % c], w[i % c])
    return time_graph(fn), (time_eager(fn) if eager else None)

def set_cfg(gemv=None, tiles=None, pps=None, min_steps=None):
    if min_steps is not None: mm.MIN_STEPS_PER_SPLIT = min_steps
    if gemv is not None: mm.GEMV_CONFIG = gemv
    if tiles is not None: mm.TILE_CONFIGS.update(tiles)
    if pps is not None: mm.PROGRAMS_PER_SM = pps
    mm._cached_plan.cache_clear()

what = sys.argv[1:] or ["check", "decode", "small", "large"]
print(torch.__version__, triton.__version__, torch.cuda.get_device_name())
base_gemv, base_tiles, base_pps = mm.GEMV_CONFIG, dict(mm.TILE_CONFIGS), mm.PROGRAMS_PER_SM

if "check" in what:
    for backend in ("hopper", "bf16", "fp32"):
        for dtype in (torch.bfloat16, torch.float16, torch.float32):
            for (M, N, K) in [(1, 2880, 2880), (3, 1000, 2881), (16, 5760, 2880), (17, 300, 100), (100, 2881, 1000), (2048, 2880, 2880)]:
                for sched in (None, "gemv", "tiled"):
                    if sched == "gemv" and M > 16: continue
                    t0 = time.time()
                    err, fin = check(M, N, K, dtype, backend, sched)
                    tol = 1e-5 if dtype == torch.float32 else 1e-2
                    log(kind="check", backend=backend, dtype=str(dtype), M=M, N=N, K=K, sched=sched, err=err, ok=err < tol and fin, s=round(time.time()-t0, 2))

SHAPES = [(2880, 2880), (5760, 2880), (8192, 8192), (28672, 8192)]
if "host" in what:
    N, K = 2880, 2880
    bl, sc = rand_weight(N, K)
    a = torch.randn(1, K, device=dev, dtype=torch.bfloat16)
    w = mxfp4.MXFP4Tensor.from_blocks(bl[0], sc[0])
    wt = torch.randn(N, K, device=dev, dtype=torch.bfloat16)
    be = Backend.HOPPER
    out = mm.matmul(a, bl[0], sc[0], None, be)
    def host(name, fn, n=3000):
        for _ in range(50): fn()
        torch.cuda.synchronize(); t0 = time.perf_counter()
        for _ in range(n): fn()
        t1 = time.perf_counter(); torch.cuda.synchronize()
        log(kind="host", what=name, us=(t1 - t0) / n * 1e6)
    host("torch.empty", lambda: torch.empty((1, N), dtype=torch.bfloat16, device=dev))
    host("raw_stream", lambda: mm._current_stream(0))
    host("mm.matmul", lambda: mm.matmul(a, bl[0], sc[0], None, be))
    host("mxfp4.matmul", lambda: mxfp4.matmul(a, w, backend="hopper"))
    host("mxfp4.matmul auto", lambda: mxfp4.matmul(a, w))
    host("F.linear", lambda: torch.nn.functional.linear(a, wt))

if "gemv2" in what:
    variants = [mm.GemvConfig(64, 4, 4), mm.GemvConfig(64, 8, 4), mm.GemvConfig(32, 8, 4), mm.GemvConfig(64, 8, 8),
                mm.GemvConfig(32, 4, 4), mm.GemvConfig(128, 4, 8), mm.GemvConfig(64, 2, 4)]
    for cfg in variants:
        for pps, ms in ((4, 2), (8, 1), (16, 1)):
            set_cfg(gemv=cfg, pps=pps, min_steps=ms)
            for (N, K) in SHAPES:
                t, te = bench_mm(1, N, K, schedule="gemv", eager=False)
                log(kind="gemv2", cfg=dataclasses.astuple(cfg)[:4], pps=pps, ms=ms, M=1, N=N, K=K, graph_us=t, plan=str(mm._cached_plan(Backend.HOPPER, 1, N, K, torch.bfloat16, 0, "gemv", False).grid))
    set_cfg(gemv=base_gemv, pps=base_pps, min_steps=2)

if "decode" in what:
    for (N, K) in SHAPES:
        for M in (1, 16):
            tt, te = bench_torch(M, N, K)
            log(kind="torch", M=M, N=N, K=K, graph_us=tt, eager_us=te)
    gemv_variants = [mm.GemvConfig(64, 8, 4), mm.GemvConfig(32, 8, 4), mm.GemvConfig(64, 4, 4), mm.GemvConfig(128, 8, 8),
                     mm.GemvConfig(64, 16, 4), mm.GemvConfig(32, 16, 4), mm.GemvConfig(128, 4, 4), mm.GemvConfig(64, 8, 8)]
    for cfg, pps in itertools.chain(((c, 4) for c in gemv_variants), ((gemv_variants[0], p) for p in (2, 8, 16))):
        set_cfg(gemv=cfg, pps=pps)
        for (N, K) in SHAPES:
            t, te = bench_mm(1, N, K, schedule="gemv", eager=(cfg == gemv_variants[0] and pps == 4))
            log(kind="gemv", cfg=dataclasses.astuple(cfg)[:3], pps=pps, M=1, N=N, K=K, graph_us=t, eager_us=te, plan=str(mm._cached_plan(Backend.HOPPER, 1, N, K, torch.bfloat16, 0, "gemv", False).grid))
    set_cfg(gemv=base_gemv, pps=base_pps)

if "small" in what:
    small_variants = [mm.TileConfig(16, 64, 128, 4, 3, 1), mm.TileConfig(16, 128, 128, 4, 3, 1), mm.TileConfig(16, 64, 256, 4, 3, 1),
                      mm.TileConfig(16, 32, 128, 4, 4, 1), mm.TileConfig(16, 128, 256, 8, 3, 1), mm.TileConfig(16, 64, 64, 4, 4, 1)]
    for cfg, pps, ms in itertools.chain(((c, 4, 2) for c in small_variants), ((small_variants[0], p, m) for p, m in ((8, 1), (8, 2), (16, 1)))):
        set_cfg(tiles={"small_m": cfg}, pps=pps, min_steps=ms)
        for (N, K) in SHAPES:
            for M in ((2, 4, 8, 16) if (cfg == small_variants[0] and pps == 4) else (16,)):
                t, te = bench_mm(M, N, K, schedule="tiled", eager=False)
                log(kind="small", cfg=dataclasses.astuple(cfg)[:6], pps=pps, ms=ms, M=M, N=N, K=K, graph_us=t)
    set_cfg(tiles=base_tiles, pps=base_pps, min_steps=2)
    for (N, K) in SHAPES:
        for M in (2, 4):
            t, te = bench_mm(M, N, K, schedule="gemv", eager=False)
            log(kind="gemv_rows", M=M, N=N, K=K, graph_us=t)

if "large" in what:
    large_variants = [mm.TileConfig(128, 128, 64, 8, 4), mm.TileConfig(128, 256, 64, 8, 3), mm.TileConfig(128, 128, 128, 8, 3),
                      mm.TileConfig(128, 128, 64, 4, 4), mm.TileConfig(256, 128, 64, 8, 3), mm.TileConfig(64, 128, 64, 4, 4)]
    for (M, N, K) in [(4096, 8192, 8192), (4096, 5760, 2880), (2048, 2880, 2880)]:
        tt, _ = bench_torch(M, N, K, eager=False)
        log(kind="torch_large", M=M, N=N, K=K, graph_us=tt, tflops=2 * M * N * K / tt / 1e6)
        for cfg in large_variants:
            set_cfg(tiles={"large_m_hopper": cfg})
            try:
                t, _ = bench_mm(M, N, K, eager=False)
                log(kind="large", cfg=dataclasses.astuple(cfg)[:6], M=M, N=N, K=K, graph_us=t, tflops=2 * M * N * K / t / 1e6, vs_torch=tt / t)
            except Exception as e:
                log(kind="large", cfg=dataclasses.astuple(cfg)[:6], M=M, N=N, K=K, error=str(e)[:200])
    set_cfg(tiles=base_tiles)
    for backend, dtype in (("bf16", torch.bfloat16), ("fp32", torch.bfloat16), ("hopper", torch.float32)):
        t, _ = bench_mm(4096, 8192, 8192, dtype=dtype, backend=backend, eager=False)
        log(kind="large_path", backend=backend, dtype=str(dtype), M=4096, N=8192, K=8192, graph_us=t, tflops=2 * 4096 * 8192 * 8192 / t / 1e6)

json.dump(results, open(os.path.join(OUT, "bench_mm.json"), "w"))

if "large2" in what:
    res2 = []
    large_variants = [mm.TileConfig(128, 128, 64, 8, 4), mm.TileConfig(128, 128, 64, 8, 4, swap_ab=True),
                      mm.TileConfig(128, 128, 64, 8, 3, swap_ab=True), mm.TileConfig(256, 128, 64, 8, 3, swap_ab=True),
                      mm.TileConfig(128, 128, 128, 8, 3, swap_ab=True), mm.TileConfig(64, 128, 64, 4, 4, swap_ab=True)]
    for (M, N, K) in [(4096, 8192, 8192), (4096, 5760, 2880), (2048, 2880, 2880)]:
        tt, _ = bench_torch(M, N, K, eager=False)
        log(kind="torch_large", M=M, N=N, K=K, graph_us=tt, tflops=2 * M * N * K / tt / 1e6)
        for cfg in large_variants:
            set_cfg(tiles={"large_m_hopper": cfg})
            try:
                t, _ = bench_mm(M, N, K, eager=False)
                log(kind="large2", cfg=dataclasses.astuple(cfg)[:7], M=M, N=N, K=K, graph_us=t, tflops=2 * M * N * K / t / 1e6, vs_torch=tt / t)
            except Exception as e:
                log(kind="large2", cfg=dataclasses.astuple(cfg)[:7], M=M, N=N, K=K, error=str(e)[-300:])
    set_cfg(tiles=base_tiles)
    small_variants = [mm.TileConfig(16, 64, 128, 4, 3, 1), mm.TileConfig(16, 64, 128, 4, 3, 1, swap_ab=True),
                      mm.TileConfig(16, 128, 128, 4, 3, 1, swap_ab=True), mm.TileConfig(16, 64, 256, 4, 3, 1, swap_ab=True),
                      mm.TileConfig(16, 128, 64, 4, 4, 1, swap_ab=True)]
    for cfg in small_variants:
        set_cfg(tiles={"small_m": cfg})
        for (N, K) in SHAPES:
            for M in (4, 16):
                try:
                    t, te = bench_mm(M, N, K, schedule="tiled", eager=False)
                    log(kind="small2", cfg=dataclasses.astuple(cfg)[:7], M=M, N=N, K=K, graph_us=t)
                except Exception as e:
                    log(kind="small2", cfg=dataclasses.astuple(cfg)[:7], M=M, N=N, K=K, error=str(e)[-300:])
    set_cfg(tiles=base_tiles)

if "ncu_target" in what:  # one GEMV launch (and one large tile launch) for ncu to profile
    bl, sc = rand_weight(8192, 8192)
    a = torch.randn(1, 8192, device=dev, dtype=torch.bfloat16)
    for _ in range(2): mm.matmul(a, bl[0], sc[0], None, Backend.HOPPER)
    a2 = torch.randn(4096, 8192, device=dev, dtype=torch.bfloat16)
    for _ in range(2): mm.matmul(a2, bl[0], sc[0], None, Backend.HOPPER)
    torch.cuda.synchronize()
