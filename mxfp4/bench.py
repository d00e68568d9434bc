"""The benchmark report: ``python -m mxfp4.bench`` (also ``mxfp4 bench``).

It measures the device's ceilings first, then every case against them and against a named baseline:

* ceilings: copy bandwidth (``dst.copy_(src)`` on a buffer far bigger than the caches, bytes read + written) and
  matmul peak (bf16 ``8192^3`` on a GPU; fp32 and bf16 ``2048^3`` on a CPU, the faster one is the CPU's roof);
* ``quantize``: ``mxfp4.quantize`` of a bf16 weight in every scale mode (>= 256 MiB on a GPU). Baseline on a
  CPU: the obvious NumPy path (scale by the block exponent, round with ``ml_dtypes.float4_e2m1fn``, pack); on a
  GPU: the torch path;
* ``dequantize``: GPT-OSS expert tensors ``[E, N, G, 16]`` -> bf16. Baselines: transformers'
  ``convert_moe_packed_tensors`` (which also transposes to ``[E, in, out]``; on a CPU a ``+ transpose`` row does
  that too), and on a GPU the torch path;
* ``matmul``: ``mxfp4.matmul`` for M in (1, 16, 256, [2048,] 4096) on GPT-OSS and Llama-70B-like shapes, for every
  path that can run; baselines: torch's bf16 matmul on the same shape and the naive dequantize-then-matmul.

Every case prints one row: op, shape, path, time, achieved GB/s (bytes read + written) and TFLOP/s, the percentage
of the roofline (``min(peak, intensity * bandwidth)``), and the speed-up over the baselines. ``--json`` writes
everything (with the machine and the command), ``--png`` draws the roofline. GPU times are medians of
``triton.testing.do_bench`` (CUDA events, L2 flushed between runs); CPU times are medians of wall-clock runs after
warm-up, with each case's baseline and competitors alternating run by run so that they share the machine's load
(best runs are kept in the JSON too; the one-time ``torch.compile`` cost is reported separately). Triton paths
never run on a CPU here: interpreted kernels are not timings.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

MATMUL_M = (1, 16, 256, 2048, 4096)
MATMUL_SHAPES = ((5760, 2880), (2880, 2880), (8192, 8192), (28672, 8192))
"""(N, K) of each weight: GPT-OSS gate_up and down/attention, Llama-70B-like square and MLP."""
SCALE_MODES = ("floor", "ceil", "mse")
TRITON_PATHS = ("hopper", "bf16", "fp32")
MXFP4_BYTES_PER_ELEMENT = 17 / 32
"""16 bytes of codes + 1 scale byte per block of 32."""


@dataclasses.dataclass
class Row:
    op: str
    shape: str
    path: str
    seconds: float
    bytes: float
    flops: float = 0.0
    baseline: bool = False
    speedups: dict = dataclasses.field(default_factory=dict)
    percent_of_roof: float | None = None
    note: str = ""
    best_seconds: float | None = None
    speedups_best: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.best_seconds is None:
            self.best_seconds = float(getattr(self.seconds, "best", self.seconds))
        self.seconds = float(self.seconds)

    def compare(self, name: str, baseline: "Row") -> None:
        """Record the speed-up over ``baseline``: of the medians (the table) and of the best runs."""
        self.speedups[name] = baseline.seconds / self.seconds
        self.speedups_best[name] = baseline.best_seconds / self.best_seconds

    @property
    def gbps(self) -> float:
        return self.bytes / self.seconds / 1e9

    @property
    def tflops(self) -> float:
        return self.flops / self.seconds / 1e12

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.update(gbps=self.gbps, tflops=self.tflops, intensity=self.flops / self.bytes if self.bytes else 0.0)
        return out


# =================================================================================================================
# timing
# =================================================================================================================
class Timing(float):
    """A median time in seconds that also carries the best (minimum) run as ``.best``."""

    best: float

    def __new__(cls, median: float, best: float):
        timing = super().__new__(cls, median)
        timing.best = best
        return timing


def time_cpu(fn, *, min_seconds: float = 1.0, min_runs: int = 3, max_runs: int = 50) -> Timing:
    """Median (and best) wall time of ``fn()`` after two warm-up calls; runs until ``min_seconds`` or ``max_runs``.

    The median is what the table reports; the best run is kept too, since on a shared machine other processes
    only ever add time.
    """
    fn()
    fn()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < min_runs or (time.perf_counter() - started < min_seconds and len(times) < max_runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return Timing(statistics.median(times), min(times))


def time_gpu(fn) -> float:
    """Median seconds of ``fn()`` on the current CUDA stream (triton's do_bench: CUDA events, L2 flushed)."""
    from triton.testing import do_bench

    return do_bench(fn, warmup=25, rep=100, return_mode="median") / 1e3


def time_cpu_group(fns: dict, *, min_seconds: float = 1.0, min_runs: int = 3, max_runs: int = 50) -> dict:
    """Like :func:`time_cpu` for several functions measured in alternation (one run of each per round).

    On a shared machine the load drifts; interleaving gives a baseline and its competitors the same conditions, so
    their ratio is fair even when absolute times are not.
    """
    for fn in fns.values():
        fn()
        fn()
    times: dict = {name: [] for name in fns}
    started = time.perf_counter()
    while True:
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        rounds = len(next(iter(times.values())))
        if rounds >= max_runs or (rounds >= min_runs and time.perf_counter() - started >= min_seconds * len(fns)):
            break
    return {name: Timing(statistics.median(t), min(t)) for name, t in times.items()}


class Timer:
    """Times functions on ``device``: CUDA events (do_bench) on a GPU, interleaved wall-clock runs on a CPU."""

    def __init__(self, device: torch.device, quick: bool, tiny: bool = False):
        self.gpu = device.type == "cuda"
        self.options = {"min_seconds": 0.0, "min_runs": 1} if tiny else {"min_seconds": 0.2 if quick else 1.0}

    def __call__(self, fn) -> float:
        return time_gpu(fn) if self.gpu else time_cpu(fn, **self.options)

    def group(self, fns: dict) -> dict:
        if self.gpu:
            return {name: time_gpu(fn) for name, fn in fns.items()}
        return time_cpu_group(fns, **self.options)


# =================================================================================================================
# ceilings
# =================================================================================================================
def measure_ceilings(device: torch.device, quick: bool, tiny: bool = False) -> dict:
    """Copy bandwidth (GB/s, read + write) and matmul peak (TFLOP/s) of ``device``, on buffers beyond the caches."""
    measure = Timer(device, quick, tiny)
    copy_bytes = (16 << 20) if tiny else (256 << 20) if device.type == "cpu" or quick else (1 << 30)
    src = torch.empty(copy_bytes, dtype=torch.uint8, device=device).random_()
    dst = torch.empty_like(src)
    copy_seconds = measure(functools.partial(dst.copy_, src))
    del src, dst
    ceilings = {"copy_gbps": 2 * copy_bytes / copy_seconds / 1e9, "copy_buffer_bytes": copy_bytes}
    if device.type == "cuda":
        size = 4096 if quick else 8192
        dtypes = (torch.bfloat16,)
    else:
        size = 256 if tiny else 1024 if quick else 2048
        dtypes = (torch.float32, torch.bfloat16)
    generator = torch.Generator(device=device).manual_seed(0)
    for dtype in dtypes:
        a = torch.randn(size, size, device=device, generator=generator).to(dtype)
        b = torch.randn(size, size, device=device, generator=generator).to(dtype)
        seconds = measure(lambda: a @ b)
        ceilings[f"matmul_{_dtype_name(dtype)}_tflops"] = 2 * size**3 / seconds / 1e12
    ceilings["matmul_shape"] = f"{size}^3"
    best = max(dtypes, key=lambda d: ceilings[f"matmul_{_dtype_name(d)}_tflops"])
    ceilings["peak_tflops"] = ceilings[f"matmul_{_dtype_name(best)}_tflops"]
    ceilings["peak_dtype"] = _dtype_name(best)
    return ceilings


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}[dtype]


def roof_tflops(intensity: float, ceilings: dict) -> float:
    """The roofline: ``min(peak, intensity * bandwidth)`` in TFLOP/s for ``intensity`` flop/byte."""
    return min(ceilings["peak_tflops"], intensity * ceilings["copy_gbps"] / 1e3)


def attach_roof(rows: list[Row], ceilings: dict) -> None:
    for row in rows:
        if row.flops:
            row.percent_of_roof = 100 * row.tflops / roof_tflops(row.flops / row.bytes, ceilings)
        else:  # conversions: bytes moved, against the copy bandwidth
            row.percent_of_roof = 100 * row.gbps / ceilings["copy_gbps"]


# =================================================================================================================
# baselines
# =================================================================================================================
def quantize_ml_dtypes(x: torch.Tensor, mode: str):
    """The obvious CPU quantizer: per block, the exponent by the mode's rule, scale, round with ml_dtypes, pack."""
    import ml_dtypes
    import numpy as np

    from .spec import E2M1_EMAX, E2M1_MAX, E8M0_BIAS

    blocks = x.float().numpy().reshape(*x.shape[:-1], -1, 32)
    amax = np.abs(blocks).max(-1)
    exponent = np.floor(np.log2(np.where(amax > 0, amax, 1.0))) - E2M1_EMAX
    if mode == "ceil":
        exponent = np.ceil(np.log2(np.where(amax > 0, amax, 1.0) / E2M1_MAX))

    def rounded(k):
        return np.ldexp(blocks, -k[..., None].astype(np.int32)).astype(ml_dtypes.float4_e2m1fn)

    codes = rounded(exponent)
    if mode == "mse":
        high = rounded(exponent + 1)
        error_low = ((blocks - np.ldexp(codes.astype(np.float32), exponent[..., None].astype(np.int32))) ** 2).sum(-1)
        error_high = ((blocks - np.ldexp(high.astype(np.float32), exponent[..., None].astype(np.int32) + 1)) ** 2).sum(-1)
        take_high = error_high < error_low
        codes = np.where(take_high[..., None], high, codes)
        exponent = exponent + take_high
    codes = codes.view(np.uint8) & 0xF
    packed = codes[..., 0::2] | (codes[..., 1::2] << 4)
    return packed, (exponent + E8M0_BIAS).astype(np.uint8)


def dequantize_naive(blocks: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The naive decode: a 16-entry table per nibble, interleave, multiply by 2**(scale - 127). [N, G, 16] -> [N, K]."""
    from .spec import E2M1_VALUES, E8M0_BIAS

    table = torch.tensor(E2M1_VALUES, dtype=dtype, device=blocks.device)
    values = torch.stack((table[(blocks & 0xF).long()], table[(blocks >> 4).long()]), dim=-1).flatten(-2)
    values = torch.ldexp(values, (scales.to(torch.int32) - E8M0_BIAS)[..., None])
    return values.flatten(-2)


# =================================================================================================================
# cases
# =================================================================================================================
def random_bf16(shape, device, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator(device=device).manual_seed(seed)
    return (0.02 * torch.randn(shape, device=device, generator=generator)).to(torch.bfloat16)


def random_mxfp4(shape, device, seed: int = 0):
    """Random MXFP4 bytes for a weight ``[*batch, K]`` quantized along K, with GPT-OSS-like scales 2^-9 .. 2^-5."""
    from .tensor import MXFP4Tensor

    *batch, length = shape
    groups = -(-length // 32)
    generator = torch.Generator(device=device).manual_seed(seed)
    blocks = torch.randint(0, 256, (*batch, groups, 16), device=device, generator=generator, dtype=torch.uint8)
    scales = torch.randint(118, 123, (*batch, groups), device=device, generator=generator, dtype=torch.uint8)
    return MXFP4Tensor.from_blocks(blocks, scales, shape, len(shape) - 1)


def _with_compile_policy(policy: str, fn):
    def run():
        previous = os.environ.get("MXFP4_TORCH_COMPILE")
        os.environ["MXFP4_TORCH_COMPILE"] = policy
        try:
            return fn()
        finally:
            if previous is None:
                os.environ.pop("MXFP4_TORCH_COMPILE", None)
            else:
                os.environ["MXFP4_TORCH_COMPILE"] = previous
    return run


def _first_call_seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def quantize_cases(device, args, measure) -> list[Row]:
    import numpy as np

    import mxfp4

    if args.tiny:
        shape = (64, 2880)
    elif device.type == "cuda":
        shape = (16384, 8192) if args.quick else (32768, 8192)  # 256 / 512 MiB of bf16
    else:
        shape = (5760, 2880)
    x = random_bf16(shape, device)
    numel = x.numel()
    moved = numel * 2 + numel * MXFP4_BYTES_PER_ELEMENT
    label = f"bf16 [{shape[0]}, {shape[1]}]"
    rows = []
    for mode in SCALE_MODES:
        if mode not in args.modes:
            continue
        mode_rows = []
        if not args.triton:
            baseline_fn = lambda: quantize_ml_dtypes(x, mode)  # noqa: E731
            compiled = _with_compile_policy("always", lambda: mxfp4.quantize(x, scale_mode=mode, backend="torch"))
            eager = _with_compile_policy("never", lambda: mxfp4.quantize(x, scale_mode=mode, backend="torch"))
            first = _first_call_seconds(compiled)
            times = measure.group({"baseline": baseline_fn, "compiled": compiled, "eager": eager})
            base = Row("quantize", label, f"ml_dtypes ({mode})", times["baseline"], moved, baseline=True)
            row = Row("quantize", label, f"torch compiled ({mode})", times["compiled"], moved,
                      note=f"first call {first:.1f} s (compile)")
            q = compiled()
            if mode != "mse":  # the obvious path and ours must produce the same bytes (MSE: float32 sums may tie-break)
                expected_blocks, expected_scales = baseline_fn()
                same = np.array_equal(q.blocks.numpy(), expected_blocks) and np.array_equal(q.scales.numpy(), expected_scales)
                row.note += "; bytes == baseline" if same else "; BYTES DIFFER FROM BASELINE"
            mode_rows = [base, row, Row("quantize", label, f"torch eager ({mode})", times["eager"], moved)]
            for row in mode_rows[1:]:
                row.compare("ml_dtypes", base)
        else:  # the torch path (eager on a GPU) is the baseline the Triton paths are compared with
            torch_fn = lambda: mxfp4.quantize(x, scale_mode=mode, backend="torch")  # noqa: E731
            base = Row("quantize", label, f"torch ({mode})", measure(torch_fn), moved, baseline=True, note=args.note)
            mode_rows.append(base)
            for path in _gpu_paths(args, device):
                fn = lambda path=path: mxfp4.quantize(x, scale_mode=mode, backend=path)  # noqa: E731
                row = Row("quantize", label, f"{path} ({mode})", measure(fn), moved, note=args.note)
                row.compare("torch path", base)
                mode_rows.append(row)
        rows += mode_rows
    return rows


def dequantize_cases(device, args, measure) -> list[Row]:
    import mxfp4

    from .spec import BLOCK_SIZE

    experts = 1 if args.quick else 8
    rows_per_expert, groups = 5760, 90  # gpt-oss gate_up_proj: [E, 2I = 5760, H/32 = 90, 16]
    if args.tiny:
        experts, rows_per_expert = 1, 64
    elif device.type == "cuda":
        experts = 16 if args.quick else 32  # 32 experts: 1 GiB of bf16 output
    q = random_mxfp4((experts, rows_per_expert, groups * BLOCK_SIZE), device)
    numel = q.numel()
    moved = numel * MXFP4_BYTES_PER_ELEMENT + numel * 2
    label = f"experts [{experts}, {rows_per_expert}, {groups}, 16] -> bf16"
    rows = []
    if not args.triton:
        from transformers.integrations.mxfp4 import convert_moe_packed_tensors

        baseline_fn = lambda: convert_moe_packed_tensors(q.blocks, q.scales, dtype=torch.bfloat16)  # noqa: E731
        compiled = _with_compile_policy("always", lambda: mxfp4.dequantize(q, torch.bfloat16, backend="torch"))
        transposed = lambda: compiled().transpose(1, 2).contiguous()  # noqa: E731
        eager = _with_compile_policy("never", lambda: mxfp4.dequantize(q, torch.bfloat16, backend="torch"))
        first = _first_call_seconds(compiled)
        times = measure.group({"baseline": baseline_fn, "compiled": compiled, "transposed": transposed, "eager": eager})
        base = Row("dequantize", label, "transformers convert_moe_packed_tensors", times["baseline"], moved,
                   baseline=True, note="output [E, in, out] (transposed)")
        row = Row("dequantize", label, "torch compiled", times["compiled"], moved, note=f"first call {first:.1f} s (compile)")
        same = torch.equal(compiled().view(torch.int16), baseline_fn().transpose(1, 2).view(torch.int16))
        row.note += "; bits == transformers" if same else "; BITS DIFFER FROM TRANSFORMERS"
        rows += [base, row,
                 Row("dequantize", label, "torch compiled + transpose to [E, in, out]", times["transposed"], moved,
                     note="same output layout as the baseline"),
                 Row("dequantize", label, "torch eager", times["eager"], moved)]
        for row in rows[1:]:
            row.compare("transformers", base)
    else:
        baselines = []
        try:  # transformers decodes on the GPU too (and transposes to [E, in, out])
            from transformers.integrations.mxfp4 import convert_moe_packed_tensors
        except ImportError:
            convert_moe_packed_tensors = None
        if convert_moe_packed_tensors is not None and not args.interpreted:
            baseline_fn = lambda: convert_moe_packed_tensors(q.blocks, q.scales, dtype=torch.bfloat16)  # noqa: E731
            baselines.append(("transformers", Row("dequantize", label, "transformers convert_moe_packed_tensors",
                                                  measure(baseline_fn), moved, baseline=True,
                                                  note="output [E, in, out] (transposed)")))
        torch_fn = lambda: mxfp4.dequantize(q, torch.bfloat16, backend="torch")  # noqa: E731
        baselines.append(("torch path", Row("dequantize", label, "torch", measure(torch_fn), moved, baseline=True, note=args.note)))
        rows += [row for _, row in baselines]
        for path in _gpu_paths(args, device):
            fn = lambda path=path: mxfp4.dequantize(q, torch.bfloat16, backend=path)  # noqa: E731
            row = Row("dequantize", label, path, measure(fn), moved, note=args.note)
            for name, base in baselines:
                row.compare(name, base)
            rows.append(row)
    return rows


def matmul_cases(device, args, measure) -> list[Row]:
    import mxfp4

    rows = []
    for n, k in args.shapes:
        w = random_mxfp4((n, k), device, seed=n + k)
        w_bf16 = mxfp4.dequantize(w, torch.bfloat16, backend="torch")
        for m in args.m:
            a = random_bf16((m, k), device, seed=m)
            label = f"M={m} N={n} K={k}"
            flops = 2 * m * n * k
            io = 2 * m * k + 2 * m * n
            fns = {"torch bf16 matmul": lambda: a @ w_bf16.T,
                   "naive dequantize + matmul": lambda: a @ dequantize_naive(w.blocks, w.scales, torch.bfloat16).T}
            paths = _gpu_paths(args, device) + ["torch"] if args.triton else ["torch"]
            for path in paths:
                fns[path] = lambda path=path: mxfp4.matmul(a, w, backend=path)  # noqa: E731
            times = measure.group(fns)
            base = Row("matmul", label, "torch bf16 matmul", times["torch bf16 matmul"], io + 2 * n * k, flops, baseline=True)
            naive = Row("matmul", label, "naive dequantize + matmul", times["naive dequantize + matmul"],
                        io + n * k * MXFP4_BYTES_PER_ELEMENT, flops, baseline=True)
            case_rows = [base, naive]
            for path in paths:
                row = Row("matmul", label, path, times[path], io + n * k * MXFP4_BYTES_PER_ELEMENT, flops, note=args.note)
                row.compare("torch bf16", base)
                row.compare("naive", naive)
                case_rows.append(row)
            rows += case_rows
    return rows


def _gpu_paths(args, device) -> list[str]:
    """The Triton paths this GPU can run (forced paths that cannot run are reported, not silently skipped).

    On a CPU they run only with ``--interpreted`` (the tests' plumbing check), never as timings.
    """
    from .dispatch import Backend, BackendUnavailableError, check_backend

    paths = []
    for path in args.paths:
        if path == "torch":
            continue
        try:
            check_backend(Backend(path), device)
        except BackendUnavailableError as error:
            print(f"# skipping path {path}: {error}", file=sys.stderr)
            continue
        paths.append(path)
    return paths


# =================================================================================================================
# report
# =================================================================================================================
def format_table(rows: list[Row], ceilings: dict) -> str:
    lines = [
        f"ceilings: copy {ceilings['copy_gbps']:.1f} GB/s (read + write, {ceilings['copy_buffer_bytes'] >> 20} MiB buffer); "
        + ", ".join(f"{k.split('_')[1]} matmul {v:.3f} TFLOP/s" for k, v in ceilings.items() if k.startswith("matmul_") and k.endswith("tflops"))
        + f" ({ceilings['matmul_shape']})",
        f"{'op':<10} {'shape':<42} {'path':<44} {'time':>10} {'GB/s':>8} {'TFLOP/s':>8} {'% roof':>7}  speed-up",
    ]
    for row in rows:
        speed = ", ".join(f"x{v:.2f} (best x{row.speedups_best.get(k, v):.2f}) vs {k}" for k, v in row.speedups.items())
        speed = speed or ("(baseline)" if row.baseline else "")
        tflops = f"{row.tflops:8.3f}" if row.flops else f"{'':>8}"
        lines.append(f"{row.op:<10} {row.shape:<42} {row.path:<44} {_format_time(row.seconds):>10} {row.gbps:8.2f} "
                     f"{tflops} {row.percent_of_roof:6.1f}%  {speed}" + (f"  [{row.note}]" if row.note else ""))
    return "\n".join(lines)


def format_markdown(report: dict) -> str:
    """The report as a markdown section (for bench/RESULTS.md): machine, command, ceilings, one table."""
    rows = rows_from_report(report)
    ceilings = report["ceilings"]
    machine_info = report["machine"]
    lines = [
        f"- date: {report['date']}",
        f"- device: {machine_info['device']}; torch {machine_info['torch']}, triton {machine_info.get('triton', '-')}, "
        f"{machine_info['torch_threads']} torch threads, load average {machine_info.get('load_average_1m', '-')} at the start",
        f"- command: `{report['command']}`",
        f"- ceilings: copy {ceilings['copy_gbps']:.1f} GB/s (read + write); "
        + ", ".join(f"{k.split('_')[1]} matmul {v:.3f} TFLOP/s" for k, v in ceilings.items() if k.startswith("matmul_") and k.endswith("tflops"))
        + f" ({ceilings['matmul_shape']})",
        "",
        "| op | shape | path | median time | GB/s | TFLOP/s | % of roof | speed-up: medians (best runs) | note |",
        "|---|---|---|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        speed = ", ".join(f"**{v:.1f}x** (best {row.speedups_best.get(k, v):.1f}x) vs {k}" for k, v in row.speedups.items())
        speed = speed or ("baseline" if row.baseline else "")
        tflops = f"{row.tflops:.3f}" if row.flops else ""
        lines.append(f"| {row.op} | {row.shape} | {row.path} | {_format_time(row.seconds)} | {row.gbps:.2f} | {tflops} | "
                     f"{row.percent_of_roof:.1f} | {speed} | {row.note} |")
    return "\n".join(lines) + "\n"


def _format_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.3f} s"


def machine(device: torch.device) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:  # pragma: no cover
        pass
    if hasattr(os, "getloadavg"):  # other processes on the machine skew CPU timings: record how busy it was
        info["load_average_1m"] = round(os.getloadavg()[0], 2)
    if device.type == "cuda":
        info["device"] = torch.cuda.get_device_name(device)
        info["capability"] = list(torch.cuda.get_device_capability(device))
    else:
        info["device"] = _cpu_name()
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores visible)"
    except OSError:  # pragma: no cover
        pass
    return f"{platform.processor() or 'CPU'} ({os.cpu_count()} cores visible)"


def rows_from_report(report: dict) -> list[Row]:
    """The rows of a JSON report written by ``--json`` (e.g. to redraw its roofline in a notebook)."""
    fields = {f.name for f in dataclasses.fields(Row)}
    return [Row(**{k: v for k, v in result.items() if k in fields}) for result in report["results"]]


def plot_roofline(rows: list[Row], ceilings: dict, title: str, path: Path | None = None):
    """Matmul rows on the roofline (TFLOP/s vs flop/byte); conversions as % of copy bandwidth beside it.

    Saves a PNG to ``path`` (and closes the figure) or returns the figure (notebooks).
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conversions = [r for r in rows if not r.flops]
    if conversions:
        fig, (roof, bars) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 2]})
    else:  # a matmul-only run (--ops matmul): no empty panel beside the roofline
        fig, roof = plt.subplots(1, 1, figsize=(8, 5))
    matmuls = [r for r in rows if r.flops]
    intensities = [r.flops / r.bytes for r in matmuls] or [1.0]
    x = [10 ** (e / 20) for e in range(int(20 * math.log10(max(min(intensities) / 4, 1e-2))),
                                       int(20 * math.log10(max(intensities) * 4)) + 1)]
    roof.plot(x, [roof_tflops(i, ceilings) for i in x], color="black", label="roofline (copy BW, matmul peak)")
    by_path: dict[str, list[Row]] = {}
    for row in matmuls:
        by_path.setdefault(row.path, []).append(row)
    for index, (path_name, path_rows) in enumerate(by_path.items()):
        roof.scatter([r.flops / r.bytes for r in path_rows], [r.tflops for r in path_rows], label=path_name,
                     marker="osD^v<>ph*"[index % 10], color=f"C{index % 10}", s=28)
    roof.set_xscale("log")
    roof.set_yscale("log")
    roof.set_xlabel("arithmetic intensity (flop / byte moved)")
    roof.set_ylabel("TFLOP/s")
    roof.set_title(f"matmul: {title}")
    roof.grid(True, which="both", alpha=0.3)
    if matmuls:
        roof.legend(fontsize=7, loc="lower right")
    if conversions:
        labels = [f"{r.op} {r.path}" for r in conversions]
        bars.barh(range(len(conversions)), [r.percent_of_roof for r in conversions], color="tab:blue")
        bars.set_yticks(range(len(conversions)), labels, fontsize=7)
        bars.invert_yaxis()
        bars.axvline(100, color="black", lw=1)
        bars.set_xlabel("% of copy bandwidth (bytes read + written)")
        bars.set_title("quantize / dequantize")
    fig.tight_layout()
    if path is None:
        return fig
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


# =================================================================================================================
# entry point
# =================================================================================================================
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mxfp4.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--ops", default="quantize,dequantize,matmul", help="comma-separated subset of quantize,dequantize,matmul")
    parser.add_argument("--modes", default=",".join(SCALE_MODES), help="scale modes for quantize (default: all)")
    parser.add_argument("--paths", default=",".join(TRITON_PATHS + ("torch",)), help="GPU paths to force (default: all that can run)")
    parser.add_argument("--m", default=None, help="comma-separated M values for matmul")
    parser.add_argument("--shapes", default=None, help="comma-separated NxK weight shapes for matmul, e.g. 5760x2880,8192x8192")
    parser.add_argument("--quick", action="store_true", help="smaller tensors, fewer cases, shorter timing (a smoke run)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--png", type=Path, help="draw the roofline plot here")
    parser.add_argument("--markdown", type=Path, help="write the table as markdown here (for bench/RESULTS.md)")
    # For the project's own tests: tiny tensors, and the GPU case list run under Triton's interpreter on a CPU
    # (TRITON_INTERPRET=1). Such rows say INTERPRETED and are plumbing checks, never timings.
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--interpreted", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.device = torch.device(args.device)
    args.ops = [op.strip() for op in args.ops.split(",") if op.strip()]
    unknown = set(args.ops) - {"quantize", "dequantize", "matmul"}
    if unknown:
        parser.error(f"unknown ops {sorted(unknown)}")
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    args.paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    on_gpu = args.device.type == "cuda"
    if args.m:
        args.m = [int(v) for v in args.m.split(",")]
    else:
        args.m = ([1, 16] if args.quick else list(MATMUL_M)) if on_gpu else ([1, 16] if args.quick else [1, 16, 256, 4096])
    if args.shapes:
        try:
            args.shapes = [tuple(int(v) for v in s.lower().split("x")) for s in args.shapes.split(",")]
        except ValueError:
            parser.error(f"--shapes {args.shapes!r}: expected NxK[,NxK...]")
    else:
        args.shapes = ([MATMUL_SHAPES[0], MATMUL_SHAPES[2]] if args.quick else list(MATMUL_SHAPES)) if on_gpu else [MATMUL_SHAPES[0]]
    if args.device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.interpreted and args.device.type == "cuda":
        parser.error("--interpreted is for CPU plumbing checks")
    args.triton = args.device.type == "cuda" or args.interpreted
    args.note = "INTERPRETED: not a timing" if args.interpreted else ""
    if args.tiny:
        args.quick = True
        args.m, args.shapes = [1, 3], [(64, 96)]
    return args


def run(args: argparse.Namespace) -> dict:
    device = args.device
    measure = Timer(device, args.quick, args.tiny)
    started = time.time()
    ceilings = measure_ceilings(device, args.quick, args.tiny)
    rows: list[Row] = []
    cases = {"quantize": quantize_cases, "dequantize": dequantize_cases, "matmul": matmul_cases}
    for op in args.ops:
        rows += cases[op](device, args, measure)
    attach_roof(rows, ceilings)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(device),
        "ceilings": ceilings,
        "results": [row.as_dict() for row in rows],
        "wall_seconds": time.time() - started,
        "_rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    rows = report.pop("_rows")
    report["command"] = " ".join(["python -m mxfp4.bench", *(sys.argv[1:] if argv is None else argv)])
    print(f"# {report['machine']['device']}, torch {report['machine']['torch']}, {report['date']}")
    print(format_table(rows, report["ceilings"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"# wrote {args.json}")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(format_markdown(report))
        print(f"# wrote {args.markdown}")
    if args.png:
        args.png.parent.mkdir(parents=True, exist_ok=True)
        plot_roofline(rows, report["ceilings"], report["machine"]["device"], args.png)
        print(f"# wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
