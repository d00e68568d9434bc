"""Ahead-of-time build of every Triton kernel for every architecture its dispatch path serves. No GPU needed.

Each path must build where it is meant to run (users' first complaint about MXFP4 elsewhere is "not supported on
this GPU"), so CI compiles each kernel of each path to a cubin for that path's architectures (:data:`TARGETS`) with
``triton.compile(ASTSource(...), target=GPUTarget("cuda", capability, 32))``.

The contract every kernel module follows (``quantize``, ``dequantize``, ``pack``, ``matmul``, ``moe``, ``dense_gemv``)::

    def compile_specs(backend: Backend) -> list[dict]:
        # one dict per variant the module's launcher builds on that path:
        # {"name": str,                      unique within the module, e.g. "quantize_bf16_floor_k"
        #  "fn": <@triton.jit kernel>,
        #  "signature": {arg: "*fp32" | "*bf16" | "*fp16" | "*u8" | "i32" | "i64" | "fp32" | "constexpr", ...},
        #               every argument of the kernel, constexpr ones included
        #  "constexprs": {arg: value},       a value for every "constexpr" argument without a default in the kernel
        #  "num_warps": int, "num_stages": int,
        #  optional "divisible_by_16": [int arg, ...]  integer args the launcher sees as multiples of 16
        #                                              (pointer args are always taken as 16-byte aligned),
        #  optional "options": {...}}       further triton.compile options (e.g. "maxnreg")

Mirror what Triton's launcher specializes: an integer argument equal to 1 (a unit stride) becomes ``"constexpr"``
with value 1, a multiple of 16 is listed in ``divisible_by_16``; that way the cubin is the one the GPU runs.

Works with triton 3.6 and 3.9: both take ``ASTSource(fn, signature, constexprs, attrs)`` with the signature keyed by
argument name (constexprs included, as ``"constexpr"``), constexprs keyed by name, and attrs keyed by
``(argument index,)`` with ``[["tt.divisibility", 16]]``.

Kernels must be real ``JITFunction`` objects: run this without ``TRITON_INTERPRET`` (tests use
:func:`compile_in_subprocess`).

    python -m mxfp4.triton_kernels.aot                  # every module, every path: a table
    python -m mxfp4.triton_kernels.aot --backend fp32 --module quantize --json
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import time

from mxfp4.dispatch import Backend

KERNEL_MODULES = ("quantize", "dequantize", "pack", "matmul", "moe", "dense_gemv", "decode_attention",
                  "prefill_attention")
TARGETS = {"fp32": (75,), "bf16": (80, 86, 89), "hopper": (90,)}
"""Compute capabilities (as 10 * major + minor) each Triton path is built for: the GPUs it serves."""

WARP_SIZE = 32
_REQUIRED_KEYS = ("name", "fn", "signature", "constexprs", "num_warps", "num_stages")
_PACKAGE = "mxfp4.triton_kernels"

# PTX patterns: tensor-core MMA on bf16 operands (sm_80+ mma.sync, sm_90 wgmma), which the fp32 path must not use.
_BF16_MMA = re.compile(r"\bmma\.sync\.aligned\.[\w.]*bf16")
_WGMMA = re.compile(r"\bwgmma\.")
_FTZ = re.compile(r"\.ftz\b")


@dataclasses.dataclass
class BuildResult:
    """One kernel variant compiled for one architecture (``error`` set instead when it did not compile)."""

    backend: str
    capability: int
    module: str
    name: str
    cubin_bytes: int = 0
    shared_bytes: int | None = None
    registers: int | None = None
    local_bytes: int | None = None
    """Per-thread local memory (register spills and stack): 0 for a kernel that fits in registers."""
    num_warps: int | None = None
    num_stages: int | None = None
    bf16_mma: int = 0
    """bf16 tensor-core MMA instructions in the PTX (mma.sync ... bf16)."""
    wgmma: int = 0
    ftz: int = 0
    """Flush-to-zero float instructions in the PTX (the exact kernels must have none)."""
    seconds: float = 0.0
    error: str | None = None

    @property
    def id(self) -> str:
        return f"{self.backend}-sm{self.capability}-{self.module}-{self.name}"


class SpecError(ValueError):
    """A module's compile_specs() returned something that does not follow the contract above."""


def module_specs(module: str, backend: Backend | str) -> list[dict] | None:
    """``compile_specs(backend)`` of ``mxfp4.triton_kernels.<module>``; None if the module or the function is absent."""
    try:
        mod = importlib.import_module(f"{_PACKAGE}.{module}")
    except ModuleNotFoundError as exc:
        if exc.name == f"{_PACKAGE}.{module}":
            return None
        raise
    compile_specs = getattr(mod, "compile_specs", None)
    if compile_specs is None:
        return None
    specs = list(compile_specs(Backend(backend)))
    for spec in specs:
        _validate(module, spec)
    return specs


def _validate(module: str, spec: dict) -> None:
    where = f"{module}.compile_specs() entry {spec.get('name', '?')!r}"
    missing = [key for key in _REQUIRED_KEYS if key not in spec]
    if missing:
        raise SpecError(f"{where} lacks {missing}")
    fn = spec["fn"]
    arg_names = getattr(fn, "arg_names", None)
    if arg_names is None:
        raise SpecError(
            f"{where}: 'fn' is {type(fn).__name__}, not a compiled @triton.jit kernel; run without TRITON_INTERPRET "
            "(see compile_in_subprocess)"
        )
    signature, constexprs = spec["signature"], spec["constexprs"]
    if set(signature) != set(arg_names):
        raise SpecError(
            f"{where}: signature covers {sorted(signature)} but {fn.__name__} takes {list(arg_names)}: "
            "name every argument"
        )
    const_args = {name for name, ty in signature.items() if ty == "constexpr"}
    missing_values = const_args - set(constexprs) - set(_defaults(fn))
    if missing_values or set(constexprs) - const_args:
        raise SpecError(
            f"{where}: constexpr arguments {sorted(const_args)} but constexprs gives {sorted(constexprs)} "
            "(a constexpr argument needs a value unless the kernel gives it a default)"
        )
    for name in spec.get("divisible_by_16", ()):
        if name not in signature or not signature[name].startswith("i"):
            raise SpecError(f"{where}: divisible_by_16 names {name!r}, which is not an integer argument")


def _defaults(fn) -> dict:
    """Default values of the kernel's arguments (``def k(..., FLAG: tl.constexpr = False)``)."""
    params = getattr(fn, "params", None) or []
    return {p.name: p.default for p in params if getattr(p, "has_default", False)}


def _constexprs(spec: dict) -> dict:
    """The spec's constexpr values, completed with the kernel's defaults for those it leaves out."""
    defaults = _defaults(spec["fn"])
    values = {name: defaults[name] for name, ty in spec["signature"].items() if ty == "constexpr" and name in defaults}
    values.update(spec["constexprs"])
    return values


def _attrs(spec: dict) -> dict:
    """Triton's specialization attributes: pointers 16-byte aligned (torch allocations are), listed ints % 16 == 0."""
    divisible = set(spec.get("divisible_by_16", ()))
    attrs = {}
    for index, name in enumerate(spec["fn"].arg_names):
        ty = spec["signature"][name]
        if ty.startswith("*") or name in divisible:
            attrs[(index,)] = [["tt.divisibility", 16]]
    return attrs


def _cuobjdump() -> str | None:
    try:
        import triton.backends.nvidia as nvidia

        bundled = os.path.join(os.path.dirname(nvidia.__file__), "bin", "cuobjdump")
        if os.path.isfile(bundled) and os.access(bundled, os.X_OK):
            return bundled
    except ImportError:  # pragma: no cover - triton without the NVIDIA backend
        pass
    return shutil.which("cuobjdump")


def _resource_usage(cubin: bytes) -> tuple[int | None, int | None]:
    """(registers per thread, local bytes per thread) from ``cuobjdump -res-usage``; Nones if it is unavailable."""
    tool = _cuobjdump()
    if tool is None:
        return None, None
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        try:
            text = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True, timeout=60).stdout
        except (OSError, subprocess.SubprocessError):
            return None, None
    regs = re.search(r"REG:(\d+)", text)
    local = re.search(r"LOCAL:(\d+)", text)
    return (int(regs.group(1)) if regs else None), (int(local.group(1)) if local else None)


def compile_spec(spec: dict, capability: int) -> dict:
    """Compile one spec for ``sm_<capability>``.

    Returns:
        ``{"cubin": bytes, "ptx": str, "shared": int, "registers": int | None, "local": int | None}``.
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    src = ASTSource(fn=spec["fn"], signature=dict(spec["signature"]), constexprs=_constexprs(spec), attrs=_attrs(spec))
    options = {"num_warps": spec["num_warps"], "num_stages": spec["num_stages"], **spec.get("options", {})}
    kernel = triton.compile(src, target=GPUTarget("cuda", capability, WARP_SIZE), options=options)
    cubin = kernel.asm["cubin"]
    registers, local = _resource_usage(cubin)
    return {
        "cubin": cubin,
        "ptx": kernel.asm["ptx"],
        "shared": getattr(kernel.metadata, "shared", None),
        "registers": registers,
        "local": local,
    }


def _build_one(backend: str, module: str, capability: int, spec: dict) -> BuildResult:
    result = BuildResult(
        backend, capability, module, spec["name"], num_warps=spec["num_warps"], num_stages=spec["num_stages"]
    )
    start = time.perf_counter()
    try:
        built = compile_spec(spec, capability)
    except Exception as exc:  # noqa: BLE001 - reported per kernel, the rest still build
        result.error = f"{type(exc).__name__}: {exc}"[:2000]
    else:
        ptx = built["ptx"]
        result.cubin_bytes = len(built["cubin"])
        result.shared_bytes = built["shared"]
        result.registers = built["registers"]
        result.local_bytes = built["local"]
        result.bf16_mma = len(_BF16_MMA.findall(ptx))
        result.wgmma = len(_WGMMA.findall(ptx))
        result.ftz = len(_FTZ.findall(ptx))
    result.seconds = time.perf_counter() - start
    return result


_worker_specs: dict = {}


def _build_in_worker(backend: str, module: str, capability: int, name: str) -> BuildResult:
    """Process-pool task: specs hold kernel objects, which do not pickle, so each worker rebuilds its own."""
    key = (module, backend)
    if key not in _worker_specs:
        _worker_specs[key] = {spec["name"]: spec for spec in module_specs(module, backend)}
    return _build_one(backend, module, capability, _worker_specs[key][name])


def build(backends=None, modules=None, capabilities=None, progress=None, jobs: int = 1) -> list[BuildResult]:
    """Compile every spec of ``modules`` (default all) for every architecture of ``backends`` (default all paths).

    A module that does not exist yet, or has no ``compile_specs``, is skipped; a spec that fails to compile gives a
    result with ``error`` set (the others still build). ``jobs > 1`` compiles in that many worker processes.
    """
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # triton 3.9 warns when unset; 1 is 3.6's behaviour
    tasks, results = [], []
    for backend in backends or TARGETS:
        for module in modules or KERNEL_MODULES:
            try:
                specs = module_specs(module, backend)
            except Exception as exc:  # noqa: BLE001 - a broken module is reported, the others still build
                for capability in capabilities or TARGETS[backend]:
                    error = f"{type(exc).__name__}: {exc}"[:2000]
                    results.append(BuildResult(backend, capability, module, "compile_specs", error=error))
                continue
            if specs is None:
                continue
            for capability in capabilities or TARGETS[backend]:
                tasks.extend((backend, module, capability, spec) for spec in specs)
    if jobs <= 1:
        for backend, module, capability, spec in tasks:
            results.append(_build_one(backend, module, capability, spec))
            if progress is not None:
                progress(results[-1])
        return results
    import concurrent.futures
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # no fork of a process that holds Triton/LLVM state
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = [pool.submit(_build_in_worker, b, m, c, spec["name"]) for b, m, c, spec in tasks]
        for future in futures:
            results.append(future.result())
            if progress is not None:
                progress(results[-1])
    return results


def compile_in_subprocess(args=(), timeout: float = 1800) -> list[BuildResult]:
    """Run this module's CLI with ``--json`` in a fresh interpreter without ``TRITON_INTERPRET`` and parse it.

    For test sessions that run kernels interpreted: the interpreter replaces ``@triton.jit`` kernels at import time,
    so compiling needs a process that never set it.
    """
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-m", f"{_PACKAGE}.aot", "--json", *args],
        capture_output=True, text=True, env=env, timeout=timeout,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"aot build failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return [BuildResult(**row) for row in json.loads(proc.stdout)]


def format_table(results: list[BuildResult]) -> str:
    header = (
        "path", "arch", "module", "kernel", "cubin KiB", "smem B", "regs", "local B", "warps", "stages", "bf16 mma",
        "s", "status",
    )  # fmt: skip
    rows = [header]
    for r in results:
        na = lambda v: "?" if v is None else str(v)  # noqa: E731
        rows.append((
            r.backend, f"sm_{r.capability}", r.module, r.name, f"{r.cubin_bytes / 1024:.1f}", na(r.shared_bytes),
            na(r.registers), na(r.local_bytes), na(r.num_warps), na(r.num_stages), str(r.bf16_mma + r.wgmma),
            f"{r.seconds:.1f}", "ok" if r.error is None else "FAILED: " + r.error.splitlines()[0][:120],
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mxfp4.triton_kernels.aot", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", action="append", choices=sorted(TARGETS), help="path(s) to build (default: all)")
    parser.add_argument("--module", action="append", choices=KERNEL_MODULES, help="kernel module(s) (default: all)")
    parser.add_argument("--capability", action="append", type=int, help="override the path's architectures, e.g. 90")
    parser.add_argument("--json", action="store_true", help="print results as JSON instead of a table")
    parser.add_argument("--jobs", "-j", type=int, default=1, help="compile in this many processes (default 1)")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        parser.error("TRITON_INTERPRET is set: kernels are interpreted and cannot be compiled; unset it")

    def progress(result: BuildResult) -> None:
        print(f"  {result.id}: {'ok' if result.error is None else 'FAILED'}", file=sys.stderr)

    report = None if args.json else progress
    results = build(args.backend, args.module, args.capability, progress=report, jobs=args.jobs)
    if args.json:
        print(json.dumps([dataclasses.asdict(r) for r in results]))
    else:
        print(format_table(results))
        failed = [r for r in results if r.error]
        print(f"\n{len(results) - len(failed)} built, {len(failed)} failed")
    return 1 if any(r.error for r in results) and not args.json else 0


if __name__ == "__main__":
    sys.exit(main())
