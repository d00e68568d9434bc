"""``mxfp4.moe`` on every path against the NumPy reference (and transformers' GptOssMLP), plus input validation.

CPU: the torch path runs natively; the Triton paths (hopper / bf16 / fp32) run interpreted at small sizes.
GPU: the same tests compiled, plus GPT-OSS sizes (E = 32 and 128, top-4, H = I = 2880).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import mxfp4
from mxfp4 import reference
from mxfp4.dispatch import BackendUnavailableError
from mxfp4.tensor import MXFP4Tensor

# Not `from conftest import ...`: with bench/ collected in the same run, "conftest" may name bench/conftest.py.
# tests/conftest.py has already set TRITON_INTERPRET (no GPU) by the time this module imports the kernels.
HAS_CUDA = torch.cuda.is_available()
TRITON_BACKENDS = ("hopper", "bf16", "fp32")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from mxfp4.triton_kernels.mx import e2m1_high, e2m1_low, scale_factor, sign_extend  # noqa: E402
from mxfp4.triton_kernels.mx import decode_mxfp4, unpack_high, unpack_low  # noqa: E402

ALL_BACKENDS = ("torch",) + TRITON_BACKENDS


# --- data --------------------------------------------------------------------------------------------------------
class Layer:
    """A random GPT-OSS-like MoE layer: NumPy truth plus the torch arguments of ``mxfp4.moe``."""

    def __init__(self, rng, tokens, hidden, intermediate, experts, *, router_b=None, x_scale=1.0, weight_scale=0.2):
        w1b, w1s = reference.quantize(rng.standard_normal((experts, 2 * intermediate, hidden)) * weight_scale)
        w2b, w2s = reference.quantize(rng.standard_normal((experts, hidden, intermediate)) * weight_scale)
        self.np = dict(
            x=rng.standard_normal((tokens, hidden)) * x_scale,
            router_w=rng.standard_normal((experts, hidden)) * 0.3,
            router_b=rng.standard_normal(experts) * 0.1 if router_b is None else np.asarray(router_b, np.float64),
            w1_blocks=w1b,
            w1_scales=w1s,
            b1=rng.standard_normal((experts, 2 * intermediate)) * 0.1,
            w2_blocks=w2b,
            w2_scales=w2s,
            b2=rng.standard_normal((experts, hidden)) * 0.1,
        )
        self.shape = (tokens, hidden, intermediate, experts)

    def args(self, device, dtype=torch.float32, weight_dtype=torch.float32):
        n = self.np
        t = lambda a, dt: torch.from_numpy(np.asarray(a)).to(device=device, dtype=dt)  # noqa: E731
        _, hidden, intermediate, experts = self.shape
        w1 = MXFP4Tensor.from_blocks(
            torch.from_numpy(n["w1_blocks"]).to(device), torch.from_numpy(n["w1_scales"]).to(device),
            (experts, 2 * intermediate, hidden), axis=2,
        )
        w2 = MXFP4Tensor.from_blocks(
            torch.from_numpy(n["w2_blocks"]).to(device), torch.from_numpy(n["w2_scales"]).to(device),
            (experts, hidden, intermediate), axis=2,
        )
        return (
            t(n["x"], dtype), t(n["router_w"], weight_dtype), t(n["router_b"], weight_dtype),
            w1, t(n["b1"], weight_dtype), w2, t(n["b2"], weight_dtype),
        )

    def rounded_to(self, dtype, weight_dtype=torch.float32):
        """The NumPy arguments after the same rounding to ``dtype`` that the torch arguments went through."""
        out = dict(self.np)
        r = lambda a, dt: torch.from_numpy(np.asarray(a)).to(dt).double().numpy()  # noqa: E731
        out["x"] = r(out["x"], dtype)
        for key in ("router_w", "router_b", "b1", "b2"):
            out[key] = r(out[key], weight_dtype)
        return out

    def reference(self, top_k, dtype=torch.float32, weight_dtype=torch.float32, **kw):
        return reference.moe(**self.rounded_to(dtype, weight_dtype), top_k=top_k, **kw)

    def routing_margin(self, top_k, dtype=torch.float32, weight_dtype=torch.float32):
        """Smallest gap between the k-th and (k+1)-th logit over tokens (inf when k = E): routing is stable if large."""
        n = self.rounded_to(dtype, weight_dtype)
        logits = n["x"] @ n["router_w"].T + n["router_b"]
        if top_k == logits.shape[1] or logits.shape[0] == 0:
            return np.inf
        ordered = -np.sort(-logits, axis=1)
        return float((ordered[:, top_k - 1] - ordered[:, top_k]).min())


def assert_close(got: torch.Tensor, expected: np.ndarray, rtol, atol, what):
    got = got.detach().double().cpu().numpy()
    bad = ~np.isclose(got, expected, rtol=rtol, atol=atol)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise AssertionError(
            f"{what}: {bad.sum()} of {bad.size} elements differ (rtol={rtol}, atol={atol:.3g}); first at {idx}: "
            f"got {got[idx]!r}, expected {expected[idx]!r}; max abs diff {np.nanmax(np.abs(got - expected)):.3g}"
        )


def tolerance(backend, dtype, expected):
    """Bounds per path: float32 compute (torch / fp32) vs bf16 tensor-core operands (hopper / bf16)."""
    scale = float(np.abs(expected).max()) if expected.size else 1.0
    if dtype == torch.bfloat16:
        return 2e-2, 2e-2 * scale  # output rounded to bf16 (8 bits), operands rounded to bf16
    if backend in ("hopper", "bf16"):
        return 1e-2, 1e-2 * scale  # activations rounded to bf16 before the tensor cores
    if dtype == torch.float16:
        return 2e-3, 2e-3 * scale
    return 1e-5, 1e-5 * scale


def skip_unless_runnable(backend, device):
    if backend != "torch" and device == "cpu":
        from mxfp4.dispatch import triton_interpreter_enabled

        if not triton_interpreter_enabled():
            pytest.skip("Triton paths on the CPU need TRITON_INTERPRET=1 (set by conftest when no GPU is present)")


# --- the torch path ----------------------------------------------------------------------------------------------
SMALL_SHAPES = [  # (tokens, hidden, intermediate, experts, top_k)
    pytest.param(7, 64, 32, 4, 2, id="T7-H64-I32-E4-k2"),
    pytest.param(5, 100, 63, 5, 3, id="T5-H100-I63-E5-k3-partial-blocks"),
    pytest.param(1, 64, 32, 3, 1, id="T1-k1"),
    pytest.param(6, 32, 32, 6, 6, id="k-equals-E6"),
]


@pytest.mark.parametrize("tokens,hidden,intermediate,experts,top_k", SMALL_SHAPES)
def test_torch_path_matches_reference(rng, tokens, hidden, intermediate, experts, top_k):
    layer = Layer(rng, tokens, hidden, intermediate, experts)
    got = mxfp4.moe(*layer.args("cpu"), top_k, backend="torch")
    assert got.dtype == torch.float32 and got.shape == (tokens, hidden)
    expected = layer.reference(top_k)
    assert_close(got, expected, *tolerance("torch", torch.float32, expected), what="torch path vs reference")


def test_torch_path_float64_is_reference_exact(rng):
    layer = Layer(rng, 9, 96, 64, 5)
    got = mxfp4.moe(*layer.args("cpu", torch.float64, torch.float64), 3, backend="torch")
    assert_close(got, layer.reference(3, torch.float64, torch.float64), 1e-12, 1e-13, "float64 torch path")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_torch_path_low_precision_inputs(rng, dtype):
    layer = Layer(rng, 8, 64, 32, 4)
    got = mxfp4.moe(*layer.args("cpu", dtype, dtype), 2, backend="torch")
    assert got.dtype == dtype
    expected = layer.reference(2, dtype, dtype)
    assert_close(got, expected, *tolerance("torch", dtype, expected), what=f"torch path {dtype}")


def test_torch_path_matches_transformers(rng):
    """mxfp4.moe against transformers' GptOssMLP holding the same (dequantized) weights, float32 both."""
    from test_reference_moe import run_transformers

    layer = Layer(rng, 10, 64, 32, 5)
    expected = run_transformers(layer.np, 2, torch.float32)
    got = mxfp4.moe(*layer.args("cpu"), 2, backend="torch")
    scale = float(np.abs(expected).max())
    assert_close(got, expected, 1e-5, 1e-5 * scale, "mxfp4.moe (torch) vs transformers GptOssMLP")


def test_torch_path_never_dequantizes_all_experts(rng, monkeypatch):
    """The torch path decodes one expert's matrix at a time, and only experts that received tokens."""
    from mxfp4 import torch_ops

    layer = Layer(rng, 3, 64, 32, 8, router_b=[0, 0, 0, 9, 0, 0, 8, 0])
    seen = []
    original = torch_ops.dequantize

    def spy(blocks, scales, dtype, length):
        seen.append(tuple(blocks.shape))
        return original(blocks, scales, dtype, length)

    monkeypatch.setattr(torch_ops, "dequantize", spy)
    mxfp4.moe(*layer.args("cpu"), 2, backend="torch")
    assert all(len(shape) == 3 for shape in seen), f"dequantized more than one expert at once: {seen}"
    assert len(seen) == 4, f"expected 2 experts x (w1, w2) decoded, got {seen}"


# --- every path: edge cases ---------------------------------------------------------------------------------------
def run_and_check(layer, top_k, backend, device, dtype=torch.float32, *, what=""):
    skip_unless_runnable(backend, device)
    got = mxfp4.moe(*layer.args(device, dtype), top_k, backend=backend)
    assert got.dtype == dtype and got.shape == layer.shape[:2] and got.device.type == device
    expected = layer.reference(top_k, dtype)
    assert_close(got, expected, *tolerance(backend, dtype, expected), what=f"{backend} {what}")
    return got


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_empty_batch(device, backend):
    skip_unless_runnable(backend, device)
    layer = Layer(np.random.default_rng(0), 0, 64, 32, 3)
    out = mxfp4.moe(*layer.args(device), 2, backend=backend)
    assert out.shape == (0, 64) and out.dtype == torch.float32


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_all_tokens_to_one_expert(rng, device, backend):
    layer = Layer(rng, 9, 64, 32, 5, router_b=[0, 0, 50, 0, 0])
    run_and_check(layer, 1, backend, device, what="all tokens to expert 2 (others empty)")


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_top_k_equals_num_experts_not_power_of_two(rng, device, backend):
    layer = Layer(rng, 5, 64, 32, 3)
    run_and_check(layer, 3, backend, device, what="top_k = E = 3")


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_single_token(rng, device, backend):
    layer = Layer(rng, 1, 96, 64, 7)
    run_and_check(layer, 2, backend, device, what="1 token")


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_equal_logits_route_to_lowest_experts(rng, device, backend):
    """Router weight zero, equal biases: every token picks experts 0..k-1 with equal weights."""
    layer = Layer(rng, 4, 64, 32, 5, router_b=np.zeros(5))
    layer.np["router_w"] = np.zeros_like(layer.np["router_w"])
    run_and_check(layer, 3, backend, device, what="ties")


# --- the kernels one by one, against their reference twins ------------------------------------------------------
TRITON_ONLY = pytest.mark.skipif(
    not HAS_CUDA and __import__("os").environ.get("TRITON_INTERPRET", "0") in ("", "0"),
    reason="Triton kernels on the CPU need TRITON_INTERPRET=1 (set by conftest when no GPU is present)",
)


@pytest.fixture
def poison(monkeypatch):
    """torch.empty returns NaN-filled float tensors (and int tensors full of a huge index): unwritten outputs show."""
    real_empty = torch.empty

    def poisoned(*args, **kwargs):
        t = real_empty(*args, **kwargs)
        if t.is_floating_point():
            t.fill_(float("nan"))
        elif t.dtype == torch.int32:
            t.fill_(2**30)
        return t

    monkeypatch.setattr(torch, "empty", poisoned)


def separated_router(rng, experts, hidden, gap=0.05):
    """Router with well separated logits for random x: distinct biases `gap` apart, small weights."""
    router_w = rng.standard_normal((experts, hidden)) * (gap / (20 * np.sqrt(hidden)))
    router_b = rng.permutation(experts) * gap
    return router_w, router_b


@triton.jit
def both_decodes_kernel(out_ptr):
    """Test kernel: the GEMMs' lean decode and mx.decode_mxfp4 on every (byte, scale byte) pair."""
    byte = tl.arange(0, 256)[:, None]
    scale = tl.arange(0, 256)[None, :]
    offsets = byte * 256 + scale
    tl.store(out_ptr + offsets, decode_mxfp4(unpack_low(byte), scale))
    tl.store(out_ptr + 65536 + offsets, decode_mxfp4(unpack_high(byte), scale))
    # The GEMMs' hot-loop decode: from the sign-extended byte, scale applied afterwards (as the tiles do).
    byte_i32 = sign_extend(byte.to(tl.uint8))
    tl.store(out_ptr + 2 * 65536 + offsets, e2m1_low(byte_i32) * scale_factor(scale))
    tl.store(out_ptr + 3 * 65536 + offsets, e2m1_high(byte_i32) * scale_factor(scale))


@TRITON_ONLY
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # mx.decode_mxfp4 on scale 255
def test_lean_decode_is_bit_identical_to_mx_decode(device):
    """e2m1_low/high of the sign-extended byte times scale_factor (the MoE GEMMs' decode) equal mx.decode_mxfp4 on
    all 256 bytes x 256 scale bytes, bitwise."""
    out = torch.empty(4, 256, 256, dtype=torch.float32, device=device)
    both_decodes_kernel[(1,)](out)
    reference_decode, lean = out[:2].cpu(), out[2:].cpu()
    name = "e2m1_low/high(sign_extend)"
    same = (lean.view(torch.int32) == reference_decode.view(torch.int32)) | (lean.isnan() & reference_decode.isnan())
    if not same.all():
        nibble, byte, scale = same.logical_not().nonzero()[0].tolist()
        raise AssertionError(f"{name}: byte {byte:#04x} ({'high' if nibble else 'low'} nibble), scale {scale}: "
                             f"{lean[nibble, byte, scale].item()!r} != mx.decode_mxfp4 "
                             f"{reference_decode[nibble, byte, scale].item()!r}")
    assert lean[:, :, 255].isnan().all() and not lean[:, :, :255].isnan().any(), name


@TRITON_ONLY
@pytest.mark.parametrize("tokens,experts,top_k", [(1, 3, 1), (19, 5, 2), (33, 17, 4), (20, 130, 7), (4, 6, 6)],
                         ids=lambda v: str(v))
def test_route_kernel_matches_twin(rng, device, poison, tokens, experts, top_k):
    from mxfp4.reference.moe_routing import route as route_twin
    from mxfp4.triton_kernels.moe_routing import route

    hidden = 100
    x = rng.standard_normal((tokens, hidden))
    router_w, router_b = separated_router(rng, experts, hidden)
    ids, weights = route(*(torch.from_numpy(a).float().to(device) for a in (x, router_w, router_b)), top_k)
    x32, w32, b32 = (torch.from_numpy(a).float().double().numpy() for a in (x, router_w, router_b))
    expected_ids, expected_weights = route_twin(x32, w32, b32, top_k)
    assert ids.dtype == torch.int32 and weights.dtype == torch.float32
    np.testing.assert_array_equal(ids.cpu().numpy(), expected_ids, err_msg="expert ids (slot order) differ")
    assert_close(weights, expected_weights, 1e-6, 1e-7, "routing weights")


@TRITON_ONLY
@pytest.mark.parametrize("tokens,experts,top_k", [(1, 3, 1), (8, 32, 4), (16, 5, 5), (16, 130, 3), (7, 6, 2)],
                         ids=lambda v: str(v))
def test_route_kernel_fused_sort_matches_twins(rng, device, poison, tokens, experts, top_k):
    """The decode variant (one program routes and sorts) gives exactly the separate kernels' answer."""
    from mxfp4.reference.moe_routing import route as route_twin
    from mxfp4.reference.moe_sort import sort_by_expert as sort_twin
    from mxfp4.triton_kernels.moe_routing import route

    x = rng.standard_normal((tokens, 64))
    router_w, router_b = separated_router(rng, experts, 64)
    if experts > 4:
        router_b[experts // 2] += 100.0  # one expert chosen by every token, some never chosen
    ids, weights, counts, sorted_pairs = route(
        *(torch.from_numpy(a).float().to(device) for a in (x, router_w, router_b)), top_k, sort=True)
    expected_ids, _ = route_twin(*(torch.from_numpy(a).float().double().numpy() for a in (x, router_w, router_b)),
                                 top_k)
    expected_counts, expected_sorted = sort_twin(expected_ids, experts)
    np.testing.assert_array_equal(ids.cpu().numpy(), expected_ids, err_msg="expert ids")
    np.testing.assert_array_equal(counts.cpu().numpy(), expected_counts, err_msg="per-expert counts")
    np.testing.assert_array_equal(sorted_pairs.cpu().numpy(), expected_sorted, err_msg="sorted pairs")


@TRITON_ONLY
@pytest.mark.parametrize("tokens,experts", [(1, 32), (5, 128), (16, 7), (40, 32)], ids=lambda v: str(v))
def test_route_kernel_16bit_inputs_and_repeat_calls(rng, device, poison, tokens, experts):
    """bf16 activations and router (the GPT-OSS case): the decode kernel (T <= 16) and the prefill kernel (its
    tensor-core dot on a GPU) pick what the twin picks from the same bf16 values; calling again gives the same
    bits, and the decode kernel leaves its arrival counter at 0 for the next launch."""
    from mxfp4.reference.moe_routing import route as route_twin
    from mxfp4.triton_kernels import moe_routing

    x = torch.from_numpy(rng.standard_normal((tokens, 2880))).to(torch.bfloat16)
    router_w, router_b = (torch.from_numpy(a).to(torch.bfloat16) for a in separated_router(rng, experts, 2880))
    expected_ids, expected_weights = route_twin(*(t.double().numpy() for t in (x, router_w, router_b)), 4)
    first = moe_routing.route(x.to(device), router_w.to(device), router_b.to(device), 4)
    again = moe_routing.route(x.to(device), router_w.to(device), router_b.to(device), 4)
    np.testing.assert_array_equal(first[0].cpu().numpy(), expected_ids, err_msg="expert ids (slot order) differ")
    assert_close(first[1], expected_weights, 1e-5, 1e-6, "routing weights")
    for name, a, b in (("ids", first[0], again[0]), ("weights", first[1], again[1])):
        assert torch.equal(a, b), f"a second call changed the {name}"
    for _, counters in moe_routing._WORKSPACES.values():
        assert int(counters.abs().sum()) == 0, f"arrival counters not reset: {counters.tolist()}"


ADD_NORM_CASES = [  # (tokens, hidden, experts, top_k, sort): the decode kernel for T <= 16, the prefill kernel above
    pytest.param(1, 2880, 32, 4, False, id="T1-H2880-E32-decode"),
    pytest.param(1, 5000, 7, 2, True, id="T1-H5000-two-K-steps-sort"),
    pytest.param(3, 300, 130, 4, True, id="T3-H300-E130-sort"),
    pytest.param(16, 300, 5, 2, False, id="T16-H300-masked-K-tail"),
    pytest.param(17, 300, 32, 4, False, id="T17-H300-prefill-kernel"),
    pytest.param(40, 63, 6, 3, False, id="T40-H63-prefill-two-programs"),
]


@TRITON_ONLY
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("tokens,hidden,experts,top_k,sort", ADD_NORM_CASES)
def test_route_kernel_fused_add_norm(rng, device, poison, dtype, tokens, hidden, experts, top_k, sort):
    """``route(add_norm=...)``: the new residual is torch's add bit for bit; each normed element is within one
    rounding (plus float32 summation) of the float64 twin's norm of that residual; the routing equals the unfused
    kernel's on the normed rows the launch stored, bit for bit (so routing saw exactly the rows the experts see)."""
    from mxfp4.reference.rms_norm import add_rms_norm as add_rms_norm_twin
    from mxfp4.triton_kernels.moe_routing import route
    from mxfp4.triton_kernels.rms_norm import AddNorm

    residual = torch.from_numpy(rng.standard_normal((tokens, hidden)) * 4).to(dtype).to(device)
    delta = torch.from_numpy(rng.standard_normal((tokens, hidden))).to(dtype).to(device)
    norm_w = torch.from_numpy(1 + 0.1 * rng.standard_normal(hidden)).float().to(device)
    router_w, router_b = (torch.from_numpy(a).to(dtype).to(device) for a in separated_router(rng, experts, hidden))
    *routing, new_residual, normed = route(delta, router_w, router_b, top_k, sort=sort,
                                           add_norm=AddNorm(residual, norm_w, 1e-5))

    expected_residual = residual + delta
    differs = (new_residual != expected_residual).nonzero()
    assert differs.numel() == 0, (f"new residual differs from torch's add at {len(differs)} elements, first "
                                  f"{differs[0].tolist()}")
    _, expected_normed = add_rms_norm_twin(expected_residual.double().cpu().numpy(), 0.0,
                                           norm_w.double().cpu().numpy(), 1e-5)
    assert normed.dtype == dtype and normed.shape == (tokens, hidden)
    rtol = 2.0**-8 if dtype == torch.bfloat16 else 2e-6  # one bf16 ulp; float32: a few ulps of summation
    assert_close(normed, expected_normed, rtol, 1e-30, f"normed rows ({dtype})")
    unfused = route(normed, router_w, router_b, top_k, sort=sort)
    for name, got, want in zip(("expert ids", "routing weights", "counts", "sorted pairs"), routing, unfused):
        assert torch.equal(got, want), f"{name} differ from routing the stored normed rows: {got} vs {want}"


@TRITON_ONLY
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tokens=st.integers(1, 40), hidden=st.integers(1, 300), experts=st.integers(1, 40), data=st.data())
def test_route_kernel_fused_add_norm_property(device, tokens, hidden, experts, data):
    """Any T (decode kernel to 16, prefill kernel past it), H (1, odd, past one step) and E: the new residual is
    torch's add, and the routing equals the unfused router's on the normed rows the launch stored, bit for bit."""
    from mxfp4.triton_kernels.moe_routing import ROUTE_BLOCK_T, route
    from mxfp4.triton_kernels.rms_norm import AddNorm

    top_k = data.draw(st.integers(1, experts), label="top_k")
    sort = data.draw(st.booleans(), label="sort") and tokens <= ROUTE_BLOCK_T
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    residual, delta = (torch.from_numpy(rng.standard_normal((tokens, hidden)) * s).to(torch.bfloat16).to(device)
                       for s in (3, 1))
    norm_w = torch.from_numpy(1 + 0.1 * rng.standard_normal(hidden)).float().to(device)
    router_w, router_b = (torch.from_numpy(a).to(torch.bfloat16).to(device)
                          for a in separated_router(rng, experts, hidden))
    *routing, new_residual, normed = route(delta, router_w, router_b, top_k, sort=sort,
                                           add_norm=AddNorm(residual, norm_w, 1e-5))
    assert torch.equal(new_residual, residual + delta), "new residual differs from torch's add"
    for name, got, want in zip(("ids", "weights", "counts", "sorted pairs"), routing,
                               route(normed, router_w, router_b, top_k, sort=sort)):
        assert torch.equal(got, want), f"{name} differ from routing the stored normed rows"


@TRITON_ONLY
def test_route_kernel_ties_and_nan(device):
    from mxfp4.triton_kernels.moe_routing import route

    x = torch.ones((3, 32), device=device)
    router_w = torch.zeros((6, 32), device=device)
    router_b = torch.tensor([0.0, 2.0, 5.0, 2.0, -1.0, float("nan")], device=device)
    ids, weights = route(x, router_w, router_b, 6)
    assert ids.cpu().tolist() == [[2, 1, 3, 0, 4, 5]] * 3, "ties must go to the lowest index; NaN last"
    assert torch.isnan(weights).all(), "a NaN logit makes the softmax NaN, as in the reference"
    ids, weights = route(x, router_w, torch.zeros(6, device=device), 3)
    assert ids.cpu().tolist() == [[0, 1, 2]] * 3
    assert torch.equal(weights.cpu(), torch.full((3, 3), 1 / 3))


@TRITON_ONLY
@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_sort_kernel_matches_twin(device, poison, data):
    from mxfp4.reference.moe_sort import sort_by_expert as sort_twin
    from mxfp4.triton_kernels.moe_sort import sort_by_expert

    experts = data.draw(st.sampled_from([1, 3, 16, 17, 33, 130]), label="experts")
    top_k = data.draw(st.integers(1, min(experts, 5)), label="top_k")
    tokens = data.draw(st.integers(1, 70), label="tokens")
    hot = data.draw(st.integers(0, experts - 1), label="hot expert")
    skew = data.draw(st.sampled_from(["uniform", "one expert", "two experts"]), label="skew")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    if skew == "uniform":
        ids = np.stack([rng.choice(experts, top_k, replace=False) for _ in range(tokens)])
    else:
        others = [e for e in range(experts) if e != hot]
        first = np.full((tokens, 1), hot)
        rest = np.stack([rng.choice(others, top_k - 1, replace=False) for _ in range(tokens)]) if top_k > 1 else None
        ids = first if rest is None else np.concatenate([first, rest] if skew == "two experts" else [rest, first], 1)
    counts, sorted_pairs = sort_by_expert(torch.from_numpy(ids.astype(np.int32)).to(device), experts)
    expected_counts, expected_sorted = sort_twin(ids, experts)
    np.testing.assert_array_equal(counts.cpu().numpy(), expected_counts, err_msg="per-expert counts")
    np.testing.assert_array_equal(sorted_pairs.cpu().numpy(), expected_sorted, err_msg="stable sorted pair order")


def _sorted_inputs(rng, tokens, experts, top_k, device):
    from mxfp4.reference.moe_sort import sort_by_expert as sort_twin

    ids = np.stack([rng.choice(experts, top_k, replace=False) for _ in range(tokens)])
    counts, sorted_pairs = sort_twin(ids, experts)
    as_i32 = lambda a: torch.from_numpy(a.astype(np.int32)).to(device)  # noqa: E731
    return ids, counts, sorted_pairs, as_i32(counts), as_i32(sorted_pairs)


GEMM_CASES = [  # (tokens, hidden, intermediate, experts, top_k): decode (P <= 64) and prefill schedules
    pytest.param(3, 64, 32, 4, 2, id="decode-T3-E4-k2"),
    pytest.param(5, 100, 63, 6, 3, id="decode-H100-I63-partial-blocks"),
    pytest.param(40, 96, 40, 5, 2, id="prefill-T40-I40"),
    pytest.param(40, 300, 260, 3, 2, id="prefill-H300-I260-whole-K-steps-and-tail"),
]


@TRITON_ONLY
@pytest.mark.parametrize("backend", TRITON_BACKENDS)
@pytest.mark.parametrize("tokens,hidden,intermediate,experts,top_k", GEMM_CASES)
def test_gate_up_kernel_matches_twin(rng, device, poison, backend, tokens, hidden, intermediate, experts, top_k):
    from mxfp4.dispatch import Backend
    from mxfp4.reference.moe_gate_up import gate_up_swiglu as twin
    from mxfp4.triton_kernels.moe import gemm_configs
    from mxfp4.triton_kernels.moe_gate_up import gate_up_swiglu

    layer = Layer(rng, tokens, hidden, intermediate, experts, x_scale=3.0)  # large enough to hit the clamps
    _, counts, sorted_pairs, counts_t, sorted_t = _sorted_inputs(rng, tokens, experts, top_k, device)
    x, _, _, w1, b1, _, _ = layer.args(device)
    config, _ = gemm_configs(Backend(backend), tokens * top_k, experts)
    act_dtype = torch.float32 if backend == "fp32" else torch.bfloat16
    got = gate_up_swiglu(x, sorted_t, counts_t, top_k, w1.blocks, w1.scales, b1, 1.702, 7.0, config, act_dtype)
    assert got.dtype == act_dtype and got.shape == (tokens * top_k, intermediate)
    n = layer.rounded_to(torch.float32 if backend == "fp32" else torch.bfloat16)
    expected = twin(n["x"], sorted_pairs, counts, top_k, n["w1_blocks"], n["w1_scales"], n["b1"])
    assert_close(got, expected, *tolerance(backend, torch.float32, expected), what=f"gate_up+SwiGLU {backend}")


@TRITON_ONLY
@pytest.mark.parametrize("backend", TRITON_BACKENDS)
@pytest.mark.parametrize("tokens,hidden,intermediate,experts,top_k", GEMM_CASES)
def test_down_kernel_matches_twin(rng, device, poison, backend, tokens, hidden, intermediate, experts, top_k):
    from mxfp4.dispatch import Backend
    from mxfp4.reference.moe_down import down as twin
    from mxfp4.triton_kernels.moe import gemm_configs
    from mxfp4.triton_kernels.moe_down import down

    layer = Layer(rng, tokens, hidden, intermediate, experts)
    _, counts, sorted_pairs, counts_t, sorted_t = _sorted_inputs(rng, tokens, experts, top_k, device)
    act_dtype = torch.float32 if backend == "fp32" else torch.bfloat16
    act = torch.from_numpy(rng.standard_normal((tokens * top_k, intermediate))).to(device=device, dtype=act_dtype)
    weights = torch.from_numpy(rng.random((tokens, top_k))).float().to(device)
    _, _, _, _, _, w2, b2 = layer.args(device)
    _, config = gemm_configs(Backend(backend), tokens * top_k, experts)
    got = down(act, sorted_t, counts_t, weights, w2.blocks, w2.scales, b2, config)
    assert got.dtype == torch.float32 and got.shape == (tokens * top_k, hidden)
    expected = twin(act.double().cpu().numpy(), sorted_pairs, counts, weights.double().cpu().numpy(),
                    layer.np["w2_blocks"], layer.np["w2_scales"], b2.double().cpu().numpy())
    # The activations are already bf16 on the tensor-core paths, so only accumulation order differs: tight bound.
    scale = float(np.abs(expected).max())
    assert_close(got, expected, 1e-5, 1e-5 * scale, what=f"down x weight {backend}")


GEMV_CASES = [  # (tokens, hidden, intermediate, experts, top_k, block_g): whole steps + a partial tail step
    pytest.param(1, 160, 96, 4, 4, 2, id="T1-E4-k4-H160-I96-G2"),
    pytest.param(3, 100, 63, 5, 3, 2, id="T3-k3-H100-I63-partial-blocks-G2"),
    pytest.param(2, 64, 40, 3, 3, 16, id="T2-k3-tail-only-G16"),
    pytest.param(5, 96, 70, 6, 1, 2, id="T5-k1-one-program-per-feature-block"),
]


def _pair_experts(rng, tokens, experts, top_k):
    """Random routing [T, k] (distinct experts per token) and its stable sort by expert (counts, sorted pairs)."""
    ids = np.stack([rng.choice(experts, top_k, replace=False) for _ in range(tokens)])
    counts = np.bincount(ids.reshape(-1), minlength=experts)
    sorted_pairs = np.argsort(ids.reshape(-1), kind="stable")
    return ids, counts, sorted_pairs


@TRITON_ONLY
@pytest.mark.parametrize("tma", [False, True], ids=["registers", "tma"])
@pytest.mark.parametrize("tokens,hidden,intermediate,experts,top_k,block_g", GEMV_CASES)
def test_gate_up_gemv_matches_twin(rng, device, poison, tokens, hidden, intermediate, experts, top_k, block_g, tma):
    """The decode GEMV: float32 FMAs on every path, rows in pair order (t * k + slot). ``tma``: W1 read by TMA
    (the hopper path's kernel), bit for bit what the register-load kernel computes at the same launch shape."""
    from mxfp4.reference.moe_gate_up import gate_up_swiglu as twin
    from mxfp4.triton_kernels.moe import GemvConfig
    from mxfp4.triton_kernels.launch import tma_readable
    from mxfp4.triton_kernels.moe_gate_up_gemv import gate_up_swiglu_gemv

    layer = Layer(rng, tokens, hidden, intermediate, experts, x_scale=3.0)  # large enough to hit the clamps
    ids, counts, sorted_pairs = _pair_experts(rng, tokens, experts, top_k)
    x, _, _, w1, b1, _, _ = layer.args(device)
    config = GemvConfig(block_n=4, block_g=block_g, num_warps=4, num_stages=2 if tma else 1)
    ids_t = torch.from_numpy(ids.astype(np.int32)).to(device)
    if tma:
        if device != "cpu" and torch.cuda.get_device_capability()[0] < 9:
            pytest.skip("TMA needs sm_90")
        assert tma_readable(w1.blocks), "a fresh torch tensor is 16-byte aligned"
    got = gate_up_swiglu_gemv(x, ids_t, w1.blocks, w1.scales, b1, 1.702, 7.0, config, torch.float32, tma)
    assert got.dtype == torch.float32 and got.shape == (tokens * top_k, intermediate)
    if tma:
        registers = gate_up_swiglu_gemv(x, ids_t, w1.blocks, w1.scales, b1, 1.702, 7.0, config, torch.float32)
        assert_close(got, registers.double().cpu().numpy(), 0, 0, what="TMA gate_up GEMV vs the register-load kernel")
    n = layer.np
    expected_sorted = twin(n["x"], sorted_pairs, counts, top_k, n["w1_blocks"], n["w1_scales"], n["b1"])
    expected = np.empty_like(expected_sorted)
    expected[sorted_pairs] = expected_sorted  # sorted row r holds pair sorted_pairs[r]
    scale = float(np.abs(expected).max())
    assert_close(got, expected, 1e-5, 1e-5 * scale, what="gate_up GEMV + SwiGLU")


@TRITON_ONLY
@pytest.mark.parametrize("tma", [False, True], ids=["registers", "tma"])
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("tokens,hidden,intermediate,experts,top_k,block_g", GEMV_CASES)
def test_down_combine_gemv_matches_twins(rng, device, poison, out_dtype, tokens, hidden, intermediate, experts,
                                         top_k, block_g, tma):
    """The decode GEMV with the combine fused: down, routing weight and the slot-order sum, one rounding. ``tma``:
    W2 read by TMA (the hopper path's kernel), bit for bit what the register-load kernel computes."""
    from mxfp4.reference.moe_combine import combine as combine_twin
    from mxfp4.reference.moe_down import down as down_twin
    from mxfp4.triton_kernels.launch import tma_readable
    from mxfp4.triton_kernels.moe import GemvConfig
    from mxfp4.triton_kernels.moe_down_gemv import down_combine_gemv

    layer = Layer(rng, tokens, hidden, intermediate, experts)
    ids, counts, sorted_pairs = _pair_experts(rng, tokens, experts, top_k)
    act = torch.from_numpy(rng.standard_normal((tokens * top_k, intermediate))).to(device=device, dtype=torch.bfloat16)
    weights = torch.from_numpy(rng.random((tokens, top_k))).float().to(device)
    _, _, _, _, _, w2, b2 = layer.args(device)
    config = GemvConfig(block_n=4, block_g=block_g, num_warps=4, num_stages=2 if tma else 1)
    ids_t = torch.from_numpy(ids.astype(np.int32)).to(device)
    if tma:
        if device != "cpu" and torch.cuda.get_device_capability()[0] < 9:
            pytest.skip("TMA needs sm_90")
        assert tma_readable(w2.blocks), "a fresh torch tensor is 16-byte aligned"
    got = down_combine_gemv(act, ids_t, weights, w2.blocks, w2.scales, b2, config, out_dtype, tma)
    assert got.dtype == out_dtype and got.shape == (tokens, hidden)
    if tma:
        registers = down_combine_gemv(act, ids_t, weights, w2.blocks, w2.scales, b2, config, out_dtype)
        assert_close(got, registers.double().cpu().numpy(), 0, 0, what="TMA down GEMV vs the register-load kernel")
    contributions = down_twin(act.double().cpu().numpy()[sorted_pairs], sorted_pairs, counts,
                              weights.double().cpu().numpy(), layer.np["w2_blocks"], layer.np["w2_scales"],
                              b2.double().cpu().numpy())
    expected = combine_twin(contributions, top_k)
    scale = float(np.abs(expected).max())
    rtol = 1e-5 if out_dtype == torch.float32 else 1e-2
    assert_close(got, expected, rtol, rtol * scale, what=f"down GEMV + combine -> {out_dtype}")


@TRITON_ONLY
@pytest.mark.parametrize("tokens", [1, 2], ids=["T1", "T2"])
def test_decode_layer_with_tma_down_is_bit_identical(rng, device, monkeypatch, tokens):
    """``moe.TMA_DOWN_ON`` (the hopper path's W2 read by TMA at <= 8 pairs) changes which kernel reads the words,
    not the sums: the layer's output is bitwise what the register-load down GEMV gives."""
    from mxfp4.triton_kernels import moe

    skip_unless_runnable("hopper", device)
    if device != "cpu" and torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("TMA needs sm_90")
    layer = Layer(rng, tokens, 96, 70, 6)
    assert moe.uses_gemv(tokens * 4, 6)
    outputs = []
    for on in (False, True):
        monkeypatch.setattr(moe, "TMA_DOWN_ON", on)
        outputs.append(mxfp4.moe(*layer.args(device, torch.bfloat16), 4, backend="hopper"))
    assert_close(outputs[1], outputs[0].double().cpu().numpy(), 0, 0, what="layer with TMA down vs without")


@TRITON_ONLY
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("tokens,hidden,top_k", [(1, 7, 1), (21, 300, 3)], ids=["T1-H7-k1", "T21-H300-k3"])
def test_combine_kernel_bit_exact(rng, device, poison, dtype, tokens, hidden, top_k):
    """float32 adds in slot order, rounded once to the output dtype (nearest even): bit-for-bit."""
    from mxfp4.triton_kernels.moe_combine import combine

    contributions = torch.from_numpy(rng.standard_normal((tokens * top_k, hidden)) * 10).float()
    got = combine(contributions.to(device), top_k, dtype).cpu()
    total = contributions.view(tokens, top_k, hidden)[:, 0].clone()
    for slot in range(1, top_k):
        total += contributions.view(tokens, top_k, hidden)[:, slot]
    expected = total.to(dtype)
    mismatch = (got.view(torch.int16 if dtype != torch.float32 else torch.int32)
                != expected.view(torch.int16 if dtype != torch.float32 else torch.int32))
    if mismatch.any():
        idx = tuple(mismatch.nonzero()[0].tolist())
        raise AssertionError(f"combine differs at {idx}: got {got[idx].item()!r}, expected {expected[idx].item()!r}")


# --- end to end on every Triton path -------------------------------------------------------------------------------
@TRITON_ONLY
@pytest.mark.parametrize("backend", TRITON_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("tokens,hidden,intermediate,experts,top_k", SMALL_SHAPES[:2] + [
    pytest.param(40, 64, 32, 33, 4, id="prefill-T40-E33-k4"),
])
def test_triton_paths_match_reference(rng, device, poison, backend, dtype, tokens, hidden, intermediate, experts, top_k):
    layer = Layer(rng, tokens, hidden, intermediate, experts)
    router_w, router_b = separated_router(rng, experts, hidden)
    layer.np.update(router_w=router_w, router_b=router_b)
    run_and_check(layer, top_k, backend, device, dtype, what=f"{dtype} {layer.shape} k={top_k}")


@TRITON_ONLY
@pytest.mark.parametrize("backend", TRITON_BACKENDS)
def test_deterministic(rng, device, backend):
    layer = Layer(rng, 30, 64, 32, 5)
    args = layer.args(device)
    first = mxfp4.moe(*args, 3, backend=backend)
    second = mxfp4.moe(*args, 3, backend=backend)
    assert torch.equal(first.view(torch.int32), second.view(torch.int32)), "two runs differ bitwise"


@TRITON_ONLY
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_nan_bytes_past_the_logical_extent(rng, device, backend):
    """Every tensor is a view into a larger buffer whose extra bytes are NaN (floats) or 0xFF (scale NaN, codes -6);
    H and I end inside a block whose padding codes are non-zero. None of it may leak into the result."""
    skip_unless_runnable(backend, device)
    tokens, hidden, intermediate, experts, top_k = 6, 70, 45, 4, 2
    layer = Layer(rng, tokens, hidden, intermediate, experts)
    n = layer.np
    for key in ("w1_blocks", "w2_blocks"):
        n[key] = n[key].copy()
        n[key][..., -1, 8:] |= 0x77  # padding nibbles past H / I (element 70 onward, 45 onward) become +-6

    def framed(a, fill, pad_axes):
        big = np.full(tuple(s + (3 if i in pad_axes else 0) for i, s in enumerate(a.shape)), fill, dtype=a.dtype)
        big[tuple(slice(0, s) for s in a.shape)] = a
        return torch.from_numpy(big).to(device)[tuple(slice(0, s) for s in a.shape)]

    x = framed(n["x"].astype(np.float32), np.nan, (0, 1))
    assert not x.is_contiguous()
    w1 = MXFP4Tensor.from_blocks(framed(n["w1_blocks"], 0xFF, (1, 2)), framed(n["w1_scales"], 0xFF, (1, 2)),
                                 (experts, 2 * intermediate, hidden), axis=2)
    w2 = MXFP4Tensor.from_blocks(framed(n["w2_blocks"], 0xFF, (1, 2)), framed(n["w2_scales"], 0xFF, (1, 2)),
                                 (experts, hidden, intermediate), axis=2)
    f32 = lambda a: torch.from_numpy(a).float().to(device)  # noqa: E731
    got = mxfp4.moe(x, f32(n["router_w"]), f32(n["router_b"]), w1, f32(n["b1"]), w2, f32(n["b2"]), top_k,
                    backend=backend)
    assert torch.isfinite(got).all(), "NaN leaked from bytes past the logical extent"
    expected = layer.reference(top_k)
    assert_close(got, expected, *tolerance(backend, torch.float32, expected), what=f"{backend} framed views")


@TRITON_ONLY
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the interpreter decoding scale 255
@pytest.mark.parametrize("backend", TRITON_BACKENDS)
def test_nan_scale_inside_extent_propagates(rng, device, backend):
    """A scale byte 255 inside the logical extent is NaN, as in the reference: it must not be masked away."""
    layer = Layer(rng, 4, 64, 32, 1)
    layer.np["w2_scales"] = layer.np["w2_scales"].copy()
    layer.np["w2_scales"][0, 5, 0] = 0xFF  # output feature 5 of the only expert
    got = mxfp4.moe(*layer.args(device), 1, backend=backend).cpu()
    assert torch.isnan(got[:, 5]).all() and torch.isfinite(got[:, :5]).all() and torch.isfinite(got[:, 6:]).all()


SKEWS = ["random", "one expert", "two experts", "half the experts empty"]


@TRITON_ONLY
@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_hypothesis_triton_paths_vs_reference(device, data):
    backend = data.draw(st.sampled_from(TRITON_BACKENDS), label="backend")
    experts = data.draw(st.integers(1, 9), label="experts")
    top_k = data.draw(st.integers(1, experts), label="top_k")
    tokens = data.draw(st.integers(0, 40), label="tokens")
    hidden = data.draw(st.sampled_from([32, 48, 64, 100]), label="hidden")
    intermediate = data.draw(st.sampled_from([16, 32, 40, 63]), label="intermediate")
    skew = data.draw(st.sampled_from(SKEWS), label="skew")
    dtype = data.draw(st.sampled_from([torch.float32, torch.bfloat16]), label="dtype")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    router_b = rng.permutation(experts) * 0.5
    if skew == "one expert":
        router_b[rng.integers(experts)] += 100.0
    elif skew == "two experts":
        router_b[rng.choice(experts, min(2, experts), replace=False)] += 100.0
    elif skew == "half the experts empty":
        router_b[: experts // 2] -= 100.0
    layer = Layer(rng, tokens, hidden, intermediate, experts, router_b=router_b)
    assume(layer.routing_margin(top_k, dtype) > 1e-3)  # no near-ties: float32 and float64 routing agree
    got = mxfp4.moe(*layer.args(device, dtype), top_k, backend=backend)
    assert got.shape == (tokens, hidden) and got.dtype == dtype
    expected = layer.reference(top_k, dtype)
    assert_close(got, expected, *tolerance(backend, dtype, expected),
                 what=f"{backend} T={tokens} H={hidden} I={intermediate} E={experts} k={top_k} {skew} {dtype}")


@pytest.mark.parametrize("backend", TRITON_BACKENDS)
@pytest.mark.parametrize("tokens", [1, 5, 20], ids=["T1-gemv", "T5-decode-tiles", "T20-prefill"])
def test_fused_add_norm_matches_torch_path(rng, device, poison, backend, tokens):
    """``mxfp4.moe(..., residual=, norm_weight=)``: every path returns torch's residual add bit for bit and the MoE
    of the normed rows within the path's tolerance of the torch path's, in bf16 (the model's dtype)."""
    skip_unless_runnable(backend, device)
    layer = Layer(rng, tokens, 64, 32, 6)
    router_w, router_b = separated_router(rng, 6, 64)
    layer.np.update(router_w=router_w, router_b=router_b)
    delta, *args = layer.args(device, torch.bfloat16)
    residual = torch.from_numpy(rng.standard_normal((tokens, 64)) * 3).to(torch.bfloat16).to(device)
    norm_w = torch.from_numpy(1 + 0.1 * rng.standard_normal(64)).float().to(device)
    new_residual, out = mxfp4.moe(delta, *args, 3, backend=backend, residual=residual, norm_weight=norm_w)
    delta_cpu, *args_cpu = layer.args("cpu", torch.bfloat16)  # the same values; MXFP4Tensor weights included
    want_residual, want_out = mxfp4.moe(delta_cpu, *args_cpu, 3, backend="torch", residual=residual.cpu(),
                                        norm_weight=norm_w.cpu())
    assert torch.equal(new_residual.cpu(), want_residual), "the new residual must be torch's add, bit for bit"
    expected = want_out.double().numpy()
    assert_close(out, expected, *tolerance(backend, torch.bfloat16, expected), what=f"{backend} T={tokens} fused norm")


def test_fused_add_norm_validation(rng):
    layer = Layer(rng, 2, 64, 32, 4)
    x, *args = layer.args("cpu")
    w = torch.ones(64)
    with pytest.raises(ValueError, match="needs both residual and norm_weight"):
        mxfp4.moe(x, *args, 2, residual=x)
    with pytest.raises(ValueError, match=r"residual must match x \(\(2, 64\)"):
        mxfp4.moe(x, *args, 2, residual=x[:1], norm_weight=w)
    with pytest.raises(ValueError, match=r"residual must match x"):
        mxfp4.moe(x, *args, 2, residual=x.double(), norm_weight=w)
    with pytest.raises(ValueError, match=r"norm_weight must be a float \[H\] = \[64\]"):
        mxfp4.moe(x, *args, 2, residual=x, norm_weight=torch.ones(63))
    with pytest.raises(ValueError, match="norm_eps must be a finite real number >= 0"):
        mxfp4.moe(x, *args, 2, residual=x, norm_weight=w, norm_eps=float("nan"))
    with pytest.raises(TypeError, match="must be torch.Tensors"):
        mxfp4.moe(x, *args, 2, residual=x.numpy(), norm_weight=w)


# --- GPU: GPT-OSS sizes, CUDA graphs --------------------------------------------------------------------------------
def gpt_oss_layer_cuda(experts, tokens, seed=0, hidden=2880, intermediate=2880):
    """A GPT-OSS-size layer built on the GPU from random MXFP4 bytes (quantizing 128 experts in NumPy would need
    ~17 GB): scales 2**-9..2**-5, bf16 router and biases, separated router logits."""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    groups_h, groups_i = -(-hidden // 32), -(-intermediate // 32)

    def mx(rows, groups, shape):
        blocks = torch.randint(0, 256, (experts, rows, groups, 16), dtype=torch.uint8, generator=gen, device="cuda")
        scales = torch.randint(118, 123, (experts, rows, groups), dtype=torch.uint8, generator=gen, device="cuda")
        return MXFP4Tensor.from_blocks(blocks, scales, shape, axis=2)

    bf16 = lambda t: t.to(torch.bfloat16)  # noqa: E731
    x = bf16(torch.randn(tokens, hidden, generator=gen, device="cuda"))
    router_w = bf16(torch.randn(experts, hidden, generator=gen, device="cuda") * (0.05 / (20 * hidden**0.5)))
    router_b = bf16(torch.randperm(experts, generator=gen, device="cuda").float() * 0.05)
    w1 = mx(2 * intermediate, groups_h, (experts, 2 * intermediate, hidden))
    b1 = bf16(torch.randn(experts, 2 * intermediate, generator=gen, device="cuda") * 0.1)
    w2 = mx(hidden, groups_i, (experts, hidden, intermediate))
    b2 = bf16(torch.randn(experts, hidden, generator=gen, device="cuda") * 0.1)
    return x, router_w, router_b, w1, b1, w2, b2


@pytest.mark.skipif(not HAS_CUDA, reason="GPT-OSS sizes (H = I = 2880) need a CUDA GPU")
@pytest.mark.slow
@pytest.mark.parametrize("backend", TRITON_BACKENDS + ("torch",))
@pytest.mark.parametrize("experts", [32, 128], ids=["gpt-oss-20b-E32", "gpt-oss-120b-E128"])
@pytest.mark.parametrize("tokens", [1, 8, 300], ids=["T1", "T8", "T300"])
def test_gpt_oss_sizes(backend, experts, tokens):
    """Every path at GPT-OSS sizes against the float64 torch path (itself checked against the NumPy reference to
    1e-12 above), on the same bf16 inputs."""
    from mxfp4.dispatch import check_backend

    try:
        check_backend(mxfp4.Backend(backend), "cuda")
    except BackendUnavailableError as e:
        pytest.skip(str(e))
    args = gpt_oss_layer_cuda(experts, tokens, seed=experts + tokens)
    got = mxfp4.moe(*args, 4, backend=backend)
    assert got.dtype == torch.bfloat16 and got.shape == (tokens, 2880)
    as64 = [a.double() if isinstance(a, torch.Tensor) else a for a in args]
    expected = mxfp4.moe(*as64, 4, backend="torch").cpu().numpy()
    assert_close(got, expected, *tolerance(backend, torch.bfloat16, expected), what=f"{backend} E={experts} T={tokens}")


@pytest.mark.skipif(not HAS_CUDA, reason="CUDA graph capture needs a CUDA GPU")
@pytest.mark.parametrize("backend", TRITON_BACKENDS)
def test_cuda_graph_capture(rng, backend):
    """The Triton path never syncs with the host: a decode step captures in a CUDA graph and replays correctly."""
    from mxfp4.dispatch import check_backend

    try:
        check_backend(mxfp4.Backend(backend), "cuda")
    except BackendUnavailableError as e:
        pytest.skip(str(e))
    layer = Layer(rng, 4, 256, 128, 8)
    args = list(layer.args("cuda", torch.bfloat16))
    expected = mxfp4.moe(*args, 2, backend=backend)  # compiles outside the capture
    static_x = args[0].clone()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = mxfp4.moe(static_x, *args[1:], 2, backend=backend)
    static_x.copy_(args[0])
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, expected)


# --- cubins for every architecture -----------------------------------------------------------------------------------
COMPILE_SCRIPT = """
import sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from mxfp4.dispatch import Backend
from mxfp4.triton_kernels.moe import compile_specs
backend, capability = sys.argv[1], int(sys.argv[2])
for spec in compile_specs(Backend(backend), num_experts=(32,)):
    names = list(spec["fn"].arg_names)
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in spec.get("divisible_by_16", ())}
    source = ASTSource(fn=spec["fn"], signature=spec["signature"], constexprs=spec["constexprs"], attrs=attrs)
    options = {"num_warps": spec["num_warps"], "num_stages": spec["num_stages"]}
    kernel = triton.compile(source, target=GPUTarget("cuda", capability, 32), options=options)
    assert kernel.asm["cubin"], spec["name"]
    print(spec["name"], len(kernel.asm["cubin"]))
"""


@pytest.mark.parametrize("backend,capability", [
    pytest.param("fp32", 75, id="fp32-sm75-T4"),
    pytest.param("bf16", 80, id="bf16-sm80-A100"),
    pytest.param("bf16", 86, id="bf16-sm86-RTX3090", marks=pytest.mark.slow),
    pytest.param("bf16", 89, id="bf16-sm89-L4", marks=pytest.mark.slow),
    pytest.param("hopper", 90, id="hopper-sm90-H100"),
])
def test_compile_specs_build_cubins(backend, capability):
    """Every kernel spec compiles to a cubin for its architectures (no GPU needed; run without the interpreter)."""
    import os
    import subprocess
    import sys

    from mxfp4.dispatch import Backend
    from mxfp4.triton_kernels.moe import compile_specs

    specs = compile_specs(Backend(backend))
    names = [s["name"] for s in specs]
    assert len(names) == len(set(names)), f"duplicate spec names: {names}"
    for spec in specs:
        assert {"name", "fn", "signature", "constexprs", "num_warps", "num_stages"} <= set(spec), spec["name"]
        assert set(spec.get("divisible_by_16", ())) <= {k for k, v in spec["signature"].items() if v == "i32"}
        assert set(spec["constexprs"]) <= set(spec["signature"]), spec["name"]
        assert list(spec["signature"]) == list(spec["fn"].arg_names), f"{spec['name']}: signature order != arguments"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    result = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT, backend, str(capability)], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"compiling for sm_{capability} failed:\n{result.stderr[-3000:]}"
    assert result.stdout.count("\n") == len(compile_specs(Backend(backend), num_experts=(32,)))


def test_compile_specs_torch_is_empty():
    from mxfp4.dispatch import Backend
    from mxfp4.triton_kernels.moe import compile_specs

    assert compile_specs(Backend.TORCH) == []


# --- validation ---------------------------------------------------------------------------------------------------
@pytest.fixture
def good_args(rng):
    return list(Layer(rng, 3, 64, 32, 4).args("cpu")) + [2]


def call(args, **kw):
    return mxfp4.moe(*args, backend=kw.pop("backend", "torch"), **kw)


@pytest.mark.parametrize(
    "index,value,error,match",
    [
        pytest.param(0, torch.randn(3, 4, 64), ValueError, r"x must be \[T, H\]", id="x-3d"),
        pytest.param(0, torch.randn(3, 65), ValueError, r"router_w must be \[E, H\]", id="x-wrong-H"),
        pytest.param(0, torch.ones(3, 64, dtype=torch.int32), TypeError, "x must be floating point", id="x-int"),
        pytest.param(0, np.ones((3, 64)), TypeError, "x must be a torch.Tensor", id="x-numpy"),
        pytest.param(1, torch.randn(4, 63), ValueError, r"router_w must be \[E, H\]", id="router_w-wrong-H"),
        pytest.param(2, torch.randn(5), ValueError, r"router_b must be \[E\]", id="router_b-wrong-E"),
        pytest.param(3, torch.randn(4, 64, 64), TypeError, "w1 must be an MXFP4Tensor", id="w1-dense"),
        pytest.param(4, torch.randn(4, 63), ValueError, r"b1 must be \[E, 2I\]", id="b1-wrong"),
        pytest.param(6, torch.randn(4, 65), ValueError, r"b2 must be \[E, H\]", id="b2-wrong"),
        pytest.param(7, 0, ValueError, "top_k = 0", id="top_k-0"),
        pytest.param(7, 5, ValueError, r"top_k = 5 must be in \[1, E\] = \[1, 4\]", id="top_k-gt-E"),
        pytest.param(7, 2.0, TypeError, "top_k must be an int", id="top_k-float"),
        pytest.param(7, True, TypeError, "top_k must be an int", id="top_k-bool"),
    ],
)
def test_validation_errors(good_args, index, value, error, match):
    args = list(good_args)
    args[index] = value
    with pytest.raises(error, match=match):
        call(args)


def test_validation_w1_w2_shapes(good_args):
    args = list(good_args)
    w1, w2 = args[3], args[5]
    with pytest.raises(ValueError, match=r"w2 .* must be \[E, H, I\]"):
        call(args[:5] + [MXFP4Tensor(w2.blocks[:, :, :1], w2.scales[:, :, :1], (4, 64, 16), 2)] + args[6:])
    with pytest.raises(ValueError, match=r"w1 .* must be \[E, 2I, H\] with E = 4"):
        call(args[:3] + [w1[:3]] + args[4:])
    with pytest.raises(ValueError, match="even"):
        call(args[:3] + [MXFP4Tensor(w1.blocks[:, :63], w1.scales[:, :63], (4, 63, 64), 2)] + args[4:])
    with pytest.raises(ValueError, match="quantized along H"):
        call(args[:3] + [MXFP4Tensor(w1.blocks, w1.scales, (4, 64, 64), 1)] + args[4:])


def test_validation_swiglu_constants(good_args):
    with pytest.raises(ValueError, match="swiglu_limit"):
        call(good_args, swiglu_limit=float("nan"))
    with pytest.raises(ValueError, match="swiglu_alpha"):
        call(good_args, swiglu_alpha="1.7")


def test_validation_devices(good_args):
    args = list(good_args)
    args[2] = args[2].to("meta")
    with pytest.raises(ValueError, match="router_b is on meta but x is on cpu"):
        call(args)


def test_validation_float64_on_triton_path(good_args):
    args = list(good_args)
    args[0] = args[0].double()
    with pytest.raises((TypeError, BackendUnavailableError), match="float64|TRITON_INTERPRET|cannot run"):
        call(args, backend="fp32")


def test_unknown_backend(good_args):
    with pytest.raises(ValueError, match="unknown MXFP4 backend"):
        call(good_args, backend="tpu")


def test_mxfp4_moe_stays_callable_after_submodule_import(rng):
    """The layer's module is ``mxfp4.moe_layer``: importing it never rebinds the function ``mxfp4.moe``."""
    import importlib

    importlib.import_module("mxfp4.moe_layer")
    from mxfp4.moe_layer import route_torch

    assert callable(route_torch)
    assert callable(mxfp4.moe) and not isinstance(mxfp4.moe, type(importlib))

    layer = Layer(rng, 2, 64, 32, 3)
    assert mxfp4.moe(*layer.args("cpu"), 2, backend="torch").shape == (2, 64)


@pytest.mark.parametrize("pairs,experts,gemv", [(4, 32, True), (8, 32, True), (12, 32, False), (32, 32, False),
                                                (16, 128, True), (32, 128, True), (36, 128, False), (64, 128, False)],
                         ids=lambda v: str(v))
def test_decode_dispatch_follows_the_measured_crossover(pairs, experts, gemv):
    """GEMVs up to 8 pairs, and up to 32 while experts outnumber pairs 4 to 1 (moe.py: session-5 H100 crossover)."""
    from mxfp4.triton_kernels import moe

    assert moe.uses_gemv(pairs, experts) is gemv, f"{pairs} pairs over {experts} experts"
