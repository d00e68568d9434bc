"""The NumPy MoE reference against transformers' GptOssMLP, plus hand-checked routing and SwiGLU cases."""

from __future__ import annotations

import numpy as np
import pytest

from mxfp4.reference import dequantize, quantize
from mxfp4.reference.moe import moe, route, swiglu

torch = pytest.importorskip("torch")
modeling = pytest.importorskip("transformers.models.gpt_oss.modeling_gpt_oss")
from transformers import GptOssConfig  # noqa: E402


def make_layer(rng, tokens, hidden, intermediate, experts, *, bias_scale=0.1):
    """Random GPT-OSS-like layer: MXFP4 expert weights (checkpoint layout) and float biases."""
    w1b, w1s = quantize(rng.standard_normal((experts, 2 * intermediate, hidden)) * 0.2)
    w2b, w2s = quantize(rng.standard_normal((experts, hidden, intermediate)) * 0.2)
    return dict(
        x=rng.standard_normal((tokens, hidden)),
        router_w=rng.standard_normal((experts, hidden)) * 0.3,
        router_b=rng.standard_normal(experts) * bias_scale,
        w1_blocks=w1b,
        w1_scales=w1s,
        b1=rng.standard_normal((experts, 2 * intermediate)) * bias_scale,
        w2_blocks=w2b,
        w2_scales=w2s,
        b2=rng.standard_normal((experts, hidden)) * bias_scale,
    )


def transformers_mlp(layer, top_k, dtype, alpha=1.702, limit=7.0):
    """transformers' GptOssMLP holding the dequantized weights, transposed to its [E, in, out] layout."""
    experts, hidden = layer["router_w"].shape
    intermediate = layer["b1"].shape[1] // 2
    config = GptOssConfig(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_local_experts=experts,
        num_experts_per_tok=top_k,
        swiglu_limit=limit,
    )
    config.swiglu_alpha = alpha
    mlp = modeling.GptOssMLP(config)
    w1 = dequantize(layer["w1_blocks"], layer["w1_scales"], np.float64, hidden)  # [E, 2I, H]
    w2 = dequantize(layer["w2_blocks"], layer["w2_scales"], np.float64, intermediate)  # [E, H, I]
    with torch.no_grad():
        mlp.router.weight.data = torch.from_numpy(layer["router_w"])
        mlp.router.bias.data = torch.from_numpy(layer["router_b"])
        mlp.experts.gate_up_proj.data = torch.from_numpy(w1.transpose(0, 2, 1).copy())
        mlp.experts.gate_up_proj_bias.data = torch.from_numpy(layer["b1"])
        mlp.experts.down_proj.data = torch.from_numpy(w2.transpose(0, 2, 1).copy())
        mlp.experts.down_proj_bias.data = torch.from_numpy(layer["b2"])
    return mlp.to(dtype)


def run_transformers(layer, top_k, dtype, **kw):
    mlp = transformers_mlp(layer, top_k, dtype, **kw)
    with torch.no_grad():
        out, _ = mlp(torch.from_numpy(layer["x"]).to(dtype)[None])
    return out[0].double().numpy()


def assert_close(got, expected, rtol, atol, what):
    got, expected = np.asarray(got), np.asarray(expected)
    bad = ~np.isclose(got, expected, rtol=rtol, atol=atol)
    if bad.any():
        idx = tuple(np.argwhere(bad)[0])
        raise AssertionError(
            f"{what}: {bad.sum()} of {bad.size} elements differ (rtol={rtol}, atol={atol}); first at {idx}: "
            f"got {got[idx]!r}, expected {expected[idx]!r}; max abs diff {np.abs(got - expected).max():.3g}"
        )


SHAPES = [  # (tokens, hidden, intermediate, experts, top_k)
    pytest.param(7, 64, 32, 4, 2, id="T7-H64-I32-E4-k2"),
    pytest.param(13, 96, 64, 5, 3, id="T13-H96-I64-E5-k3"),
    pytest.param(1, 64, 96, 3, 1, id="T1-k1"),
    pytest.param(9, 64, 32, 6, 6, id="k-equals-E6"),
    pytest.param(20, 32, 32, 7, 4, id="T20-E7-k4"),
]


@pytest.mark.parametrize("tokens,hidden,intermediate,experts,top_k", SHAPES)
def test_reference_matches_transformers_float64(rng, tokens, hidden, intermediate, experts, top_k):
    layer = make_layer(rng, tokens, hidden, intermediate, experts)
    expected = run_transformers(layer, top_k, torch.float64)
    got = moe(**layer, top_k=top_k)
    assert got.dtype == np.float64 and got.shape == (tokens, hidden)
    assert_close(got, expected, rtol=1e-10, atol=1e-12, what="reference vs transformers GptOssMLP (float64)")


@pytest.mark.parametrize("tokens,hidden,intermediate,experts,top_k", SHAPES[:2])
def test_reference_matches_transformers_float32(rng, tokens, hidden, intermediate, experts, top_k):
    layer = make_layer(rng, tokens, hidden, intermediate, experts)
    expected = run_transformers(layer, top_k, torch.float32)
    got = moe(**layer, top_k=top_k)
    scale = np.abs(expected).max()
    assert_close(got, expected, rtol=1e-5, atol=1e-5 * scale, what="reference vs transformers GptOssMLP (float32)")


def test_reference_matches_transformers_with_clamping(rng):
    """Large activations so the gate and up clamps (limit 7) are active on many features."""
    layer = make_layer(rng, 11, 64, 32, 4)
    layer["x"] = layer["x"] * 20
    w1 = dequantize(layer["w1_blocks"], layer["w1_scales"], np.float64, 64)
    gate_up = layer["x"] @ w1[0].T + layer["b1"][0]
    assert (gate_up[:, 0::2] > 7).any() and (gate_up[:, 1::2] < -7).any(), "test data must exercise both clamps"
    expected = run_transformers(layer, 2, torch.float64)
    assert_close(moe(**layer, top_k=2), expected, rtol=1e-10, atol=1e-10, what="clamped SwiGLU vs transformers")


def test_reference_custom_swiglu_constants_match_transformers(rng):
    layer = make_layer(rng, 6, 64, 32, 4)
    layer["x"] = layer["x"] * 5
    expected = run_transformers(layer, 2, torch.float64, alpha=1.0, limit=2.5)
    got = moe(**layer, top_k=2, swiglu_alpha=1.0, swiglu_limit=2.5)
    assert_close(got, expected, rtol=1e-10, atol=1e-12, what="alpha=1, limit=2.5 vs transformers")


def test_route_ties_go_to_lowest_expert_index():
    # Every logit equal: the first k expert indices win, in index order, with equal weights.
    ids, weights = route(np.ones((2, 8)), np.zeros((5, 8)), np.zeros(5), 3)
    assert ids.tolist() == [[0, 1, 2], [0, 1, 2]]
    np.testing.assert_allclose(weights, np.full((2, 3), 1 / 3))
    # A tie for the second slot between experts 3 and 1: expert 1 first.
    ids, _ = route(np.ones((1, 1)), np.zeros((5, 1)), np.array([0.0, 2.0, 5.0, 2.0, -1.0]), 3)
    assert ids.tolist() == [[2, 1, 3]]


def test_route_softmax_over_selected_logits_only():
    ids, weights = route(np.zeros((1, 4)), np.zeros((4, 4)), np.log(np.array([1.0, 2.0, 3.0, 6.0])), 2)
    assert ids.tolist() == [[3, 2]]
    np.testing.assert_allclose(weights, [[6 / 9, 3 / 9]], rtol=1e-15)


def test_route_nan_logit_never_selects_out_of_range():
    ids, weights = route(np.ones((1, 2)), np.zeros((4, 2)), np.array([0.0, np.nan, 1.0, 2.0]), 4)
    assert sorted(ids[0].tolist()) == [0, 1, 2, 3] and ids[0, -1] == 1
    assert np.isnan(weights).all()


def test_swiglu_golden_values():
    # gate 10 -> clamped to 7; up -9 -> clamped to -7: (-7 + 1) * 7 * sigmoid(1.702 * 7)
    # gate -3 (no lower clamp) and up 0.5: 1.5 * -3 * sigmoid(-5.106)
    got = swiglu(np.array([[10.0, -9.0, -3.0, 0.5]]))
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    np.testing.assert_allclose(got, [[-6 * 7 * sig(1.702 * 7), 1.5 * -3 * sig(-1.702 * 3)]], rtol=1e-15)


def test_reference_hand_computed_single_expert():
    """E=1, top_k=1: weight 1, so y = SwiGLU(x W1^T + b1) W2^T + b2 with exactly representable weights."""
    hidden, intermediate = 32, 32
    w1 = np.zeros((1, 2 * intermediate, hidden))
    w1[0, 0, 0] = 1.0  # gate feature 0 reads x[0]
    w1[0, 1, 1] = 0.5  # up feature 0 reads x[1] / 2
    w2 = np.zeros((1, hidden, intermediate))
    w2[0, 3, 0] = 2.0  # output 3 = 2 * act[0]
    w1b, w1s = quantize(w1)
    w2b, w2s = quantize(w2)
    x = np.zeros((1, hidden))
    x[0, 0], x[0, 1] = 1.5, 4.0
    b2 = np.zeros((1, hidden))
    b2[0, 5] = -0.25
    out = moe(x, np.zeros((1, hidden)), np.zeros(1), w1b, w1s, np.zeros((1, 64)), w2b, w2s, b2, 1)
    expected = np.zeros((1, hidden))
    expected[0, 3] = 2 * (2.0 + 1) * 1.5 / (1 + np.exp(-1.702 * 1.5))
    expected[0, 5] = -0.25
    np.testing.assert_allclose(out, expected, rtol=1e-15, atol=0)


def test_reference_empty_batch():
    layer = make_layer(np.random.default_rng(0), 0, 64, 32, 3)
    assert moe(**layer, top_k=2).shape == (0, 64)


def test_reference_top_k_out_of_range():
    layer = make_layer(np.random.default_rng(1), 2, 64, 32, 3)
    with pytest.raises(ValueError, match="top_k"):
        moe(**layer, top_k=4)
    with pytest.raises(ValueError, match="top_k"):
        moe(**layer, top_k=0)


@pytest.mark.parametrize("tokens,hidden,intermediate,experts,top_k", SHAPES)
def test_kernel_twins_compose_to_reference(rng, tokens, hidden, intermediate, experts, top_k):
    """route -> sort_by_expert -> gate_up_swiglu -> down -> combine (the kernels' decomposition) == reference.moe."""
    from mxfp4.reference.moe_combine import combine
    from mxfp4.reference.moe_down import down
    from mxfp4.reference.moe_gate_up import gate_up_swiglu
    from mxfp4.reference.moe_sort import sort_by_expert

    layer = make_layer(rng, tokens, hidden, intermediate, experts)
    ids, weights = route(layer["x"], layer["router_w"], layer["router_b"], top_k)
    counts, sorted_pairs = sort_by_expert(ids, experts)
    act = gate_up_swiglu(layer["x"], sorted_pairs, counts, top_k, layer["w1_blocks"], layer["w1_scales"], layer["b1"])
    contributions = down(act, sorted_pairs, counts, weights, layer["w2_blocks"], layer["w2_scales"], layer["b2"])
    got = combine(contributions, top_k)
    assert_close(got, moe(**layer, top_k=top_k), rtol=1e-12, atol=1e-13, what="composed twins vs reference.moe")


def test_sort_by_expert_is_stable_with_empty_experts():
    from mxfp4.reference.moe_sort import sort_by_expert

    counts, order = sort_by_expert(np.array([[3, 1], [1, 3], [3, 0]]), 5)
    assert counts.tolist() == [1, 2, 0, 3, 0]
    assert order.tolist() == [5, 1, 2, 0, 3, 4]  # expert 0: pair 5; expert 1: pairs 1, 2; expert 3: pairs 0, 3, 4
