"""Backend dispatch (``mxfp4.dispatch``): automatic choice by architecture, forced paths, ``$MXFP4_BACKEND``.

A forced path that cannot run must raise BackendUnavailableError saying what to do; only ``auto`` falls back.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from mxfp4 import dispatch
from mxfp4.dispatch import Backend, BackendUnavailableError, auto_backend, check_backend, choose_backend

TRITON_PATHS = [Backend.HOPPER, Backend.BF16, Backend.FP32]


@pytest.fixture(autouse=True)
def no_backend_env(monkeypatch):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)


@pytest.fixture
def interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


@pytest.fixture
def no_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


def test_auto_on_cpu_is_torch(interpreter):
    assert choose_backend("cpu") is Backend.TORCH
    assert choose_backend(torch.device("cpu"), "auto") is Backend.TORCH
    assert choose_backend("cpu", "AUTO") is Backend.TORCH


def test_backend_enum():
    assert [b.value for b in Backend] == ["hopper", "bf16", "fp32", "torch"]
    assert all(b.uses_triton for b in TRITON_PATHS) and not Backend.TORCH.uses_triton


@pytest.mark.parametrize("name", ["hopper", "bf16", "fp32", "torch", "FP32", Backend.BF16], ids=str)
def test_forced_name_on_cpu_with_interpreter(interpreter, name):
    assert choose_backend("cpu", name) is Backend(str(getattr(name, "value", name)).lower())


@pytest.mark.parametrize("name", ["hopper", "bf16", "fp32"])
def test_forced_triton_path_on_cpu_without_interpreter(no_interpreter, name):
    with pytest.raises(BackendUnavailableError, match="TRITON_INTERPRET=1"):
        choose_backend("cpu", name)
    assert choose_backend("cpu", "torch") is Backend.TORCH


@pytest.mark.parametrize("name", ["hopper", "fp32"])
def test_forced_triton_path_on_other_devices(interpreter, name):
    with pytest.raises(BackendUnavailableError, match="cannot run on device meta"):
        choose_backend("meta", name)
    assert choose_backend("meta") is Backend.TORCH


@pytest.mark.parametrize("bad", ["cuda", "triton", "", "fp16"])
def test_unknown_name(bad):
    with pytest.raises(
        ValueError, match=f"unknown MXFP4 backend {bad!r}.*expected one of auto, hopper, bf16, fp32, torch"
    ):
        choose_backend("cpu", bad)


def test_environment_variable(monkeypatch, interpreter):
    monkeypatch.setenv(dispatch.ENV_VAR, "fp32")
    assert choose_backend("cpu") is Backend.FP32
    assert choose_backend("cpu", "torch") is Backend.TORCH  # an explicit argument wins over the environment
    monkeypatch.setenv(dispatch.ENV_VAR, "auto")
    assert choose_backend("cpu") is Backend.TORCH
    monkeypatch.setenv(dispatch.ENV_VAR, "")
    assert choose_backend("cpu") is Backend.TORCH
    monkeypatch.setenv(dispatch.ENV_VAR, "blackwell")
    with pytest.raises(ValueError, match=r"'blackwell' \(from argument or \$MXFP4_BACKEND\)"):
        choose_backend("cpu")


def test_environment_variable_reaches_the_public_api(monkeypatch, no_interpreter):
    monkeypatch.setenv(dispatch.ENV_VAR, "hopper")
    import mxfp4

    with pytest.raises(BackendUnavailableError):
        mxfp4.quantize(torch.randn(64))
    monkeypatch.setenv(dispatch.ENV_VAR, "torch")
    assert mxfp4.quantize(torch.randn(64)).shape == (64,)


@pytest.mark.parametrize(
    "capability, expected",
    [((7, 0), Backend.TORCH), ((7, 5), Backend.FP32), ((8, 0), Backend.BF16), ((8, 6), Backend.BF16),
     ((8, 9), Backend.BF16), ((9, 0), Backend.HOPPER), ((10, 0), Backend.HOPPER), ((12, 0), Backend.HOPPER)],
    ids=lambda v: f"sm_{v[0]}{v[1]}" if isinstance(v, tuple) else v.value,
)  # fmt: skip
def test_auto_by_capability(monkeypatch, capability, expected):
    monkeypatch.setattr(dispatch, "_capability", lambda device: capability)
    assert auto_backend("cuda") is expected
    assert choose_backend("cuda:0") is expected


def test_forced_path_below_its_capability(monkeypatch):
    monkeypatch.setattr(dispatch, "_capability", lambda device: (8, 6))
    with pytest.raises(BackendUnavailableError, match=r"'hopper' needs compute capability >= 9.0, but cuda is sm_86"):
        choose_backend("cuda", "hopper")
    assert choose_backend("cuda", "bf16") is Backend.BF16
    assert choose_backend("cuda", "fp32") is Backend.FP32  # older paths run on newer GPUs
    monkeypatch.setattr(dispatch, "_capability", lambda device: (7, 5))
    with pytest.raises(BackendUnavailableError, match="sm_75"):
        check_backend(Backend.BF16, "cuda")


def test_without_triton(monkeypatch, interpreter):
    monkeypatch.setattr(dispatch, "triton_installed", lambda: False)
    monkeypatch.setattr(dispatch, "_capability", lambda device: (9, 0))
    assert auto_backend("cuda") is Backend.TORCH
    with pytest.raises(BackendUnavailableError, match="needs Triton, which is not installed"):
        choose_backend("cpu", "fp32")


def test_triton_path_without_interpreter_in_a_fresh_process(tmp_path):
    """In a process that never had TRITON_INTERPRET set, a forced Triton path on CPU tensors raises
    BackendUnavailableError from the public API (never a crash or a silent fallback); auto and torch work."""
    script = textwrap.dedent(
        """
        import torch, mxfp4
        from mxfp4.dispatch import BackendUnavailableError
        x = torch.randn(3, 70)
        w = mxfp4.quantize(torch.randn(5, 70))
        calls = {
            "quantize": lambda b: mxfp4.quantize(x, backend=b),
            "dequantize": lambda b: mxfp4.dequantize(w, backend=b),
            "matmul": lambda b: mxfp4.matmul(x, w, backend=b),
        }
        for name, call in calls.items():
            for backend in ("hopper", "bf16", "fp32"):
                try:
                    call(backend)
                except BackendUnavailableError as error:
                    assert "TRITON_INTERPRET=1" in str(error), error
                else:
                    raise AssertionError(f"{name} with backend={backend!r} ran on the CPU without the interpreter")
            call("torch"), call(None)
        print("OK")
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", dispatch.ENV_VAR)}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and "OK" in result.stdout, result.stdout + result.stderr
