"""Every kernel of every Triton path builds a cubin for every architecture that path serves. No GPU needed.

fp32 -> sm_75 (T4), bf16 -> sm_80 / sm_86 / sm_89, hopper -> sm_90, through ``mxfp4.triton_kernels.aot``.
Compiling needs real ``@triton.jit`` kernels, and this test session may run them interpreted (TRITON_INTERPRET=1 is
set by conftest without a GPU), so one subprocess without it compiles everything once per session.
"""

from __future__ import annotations

import importlib
import os

import pytest

from mxfp4.triton_kernels import aot

CASES = [(path, cap, module) for path, caps in aot.TARGETS.items() for cap in caps for module in aot.KERNEL_MODULES]
EXACT_MODULES = ("quantize", "dequantize", "pack")
"""Kernels whose bit-exactness needs float32 subnormals kept: no flush-to-zero instruction may appear."""
BUILD_JOBS = max(1, min(4, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def builds() -> list[aot.BuildResult]:
    return aot.compile_in_subprocess(["--jobs", str(BUILD_JOBS)])


def _has_compile_specs(module: str) -> bool:
    try:
        return hasattr(importlib.import_module(f"mxfp4.triton_kernels.{module}"), "compile_specs")
    except ModuleNotFoundError as exc:
        if exc.name == f"mxfp4.triton_kernels.{module}":
            return False
        raise


@pytest.mark.parametrize("backend,capability,module", CASES, ids=[f"{b}-sm{c}-{m}" for b, c, m in CASES])
def test_kernel_builds(builds, backend, capability, module):
    if not _has_compile_specs(module):
        pytest.skip(f"mxfp4.triton_kernels.{module} does not exist yet or defines no compile_specs()")
    mine = [r for r in builds if (r.backend, r.capability, r.module) == (backend, capability, module)]
    assert mine, f"{module}.compile_specs({backend!r}) returned no kernels to build"
    failed = [r for r in mine if r.error is not None]
    assert not failed, "\n".join(f"{r.id} did not compile: {r.error}" for r in failed)
    for r in mine:
        assert r.cubin_bytes > 0, f"{r.id}: empty cubin"
        if capability < 90:
            assert r.wgmma == 0, f"{r.id}: wgmma in PTX for sm_{capability}, which has none"
        if backend == "fp32":
            assert r.bf16_mma == 0, f"{r.id}: {r.bf16_mma} bf16 tensor-core mma in the fp32 path (it must run on sm_75)"
        if module in EXACT_MODULES:
            assert r.ftz == 0, f"{r.id}: {r.ftz} flush-to-zero instructions would lose float32 subnormals"
            assert not r.local_bytes, f"{r.id}: {r.local_bytes} bytes of local memory per thread (register spills)"


# --- the harness itself (in-process, no compilation) -----------------------------------------------------------
class _FakeKernel:
    __name__ = "fake_kernel"
    arg_names = ["x_ptr", "n", "BLOCK"]


def _spec(**changes):
    spec = {
        "name": "fake",
        "fn": _FakeKernel(),
        "signature": {"x_ptr": "*fp32", "n": "i32", "BLOCK": "constexpr"},
        "constexprs": {"BLOCK": 128},
        "num_warps": 4,
        "num_stages": 1,
        "divisible_by_16": ["n"],
    }
    spec.update(changes)
    return spec


def test_spec_contract_is_checked():
    aot._validate("fake", _spec())
    with pytest.raises(aot.SpecError, match="lacks"):
        aot._validate("fake", {k: v for k, v in _spec().items() if k != "num_warps"})
    with pytest.raises(aot.SpecError, match="name every argument"):
        aot._validate("fake", _spec(signature={"x_ptr": "*fp32", "BLOCK": "constexpr"}))
    with pytest.raises(aot.SpecError, match="constexprs gives"):
        aot._validate("fake", _spec(constexprs={}))
    with pytest.raises(aot.SpecError, match="not an integer argument"):
        aot._validate("fake", _spec(divisible_by_16=["x_ptr"]))


def test_divisibility_attrs_follow_triton_launcher():
    """Pointers are 16-byte aligned (torch allocations), listed ints divisible by 16: Triton's own specialization."""
    assert aot._attrs(_spec()) == {(0,): [["tt.divisibility", 16]], (1,): [["tt.divisibility", 16]]}
    assert aot._attrs(_spec(divisible_by_16=[])) == {(0,): [["tt.divisibility", 16]]}


def test_cli_refuses_interpreted_kernels(monkeypatch, capsys):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(SystemExit):
        aot.main(["--module", "pack"])
    assert "TRITON_INTERPRET" in capsys.readouterr().err


def test_every_module_is_listed():
    assert set(aot.TARGETS) == {"fp32", "bf16", "hopper"}
    assert aot.KERNEL_MODULES == ("quantize", "dequantize", "pack", "matmul", "moe", "dense_gemv", "decode_attention",
                                   "prefill_attention")
