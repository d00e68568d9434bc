"""The GPT-OSS wrapper against transformers on tiny MXFP4 checkpoints, plus cache, memory, streaming and bad input.

The tiny checkpoint (mxfp4.models.tiny) is written in the Hub layout and loaded twice from the same files: by
transformers (``Mxfp4Config(dequantize=True)``, float32, CPU: its quantizer dequantizes the experts itself when
no GPU / ``kernels`` package is present, no workaround needed) and by ``GptOss.from_pretrained``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import mxfp4  # noqa: E402
from mxfp4.models import tiny  # noqa: E402
from mxfp4.models.gpt_oss import (  # noqa: E402
    CheckpointError,
    GptOss,
    GptOssConfig,
    left_padding,
    rope_frequencies,
)
from mxfp4.spec import BLOCK_SIZE, BYTES_PER_BLOCK  # noqa: E402
from mxfp4.testing import assert_close_to_reference  # noqa: E402

HAS_CUDA = torch.cuda.is_available()
LOGITS_ATOL = 1e-3  # float32, same dequantized weights: only summation order differs
CACHE_ATOL = 1e-4  # our cached path vs our full forward: same kernels, different key sets / concatenation


# --- fixtures -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def one_cpu_thread():
    """Tiny tensors: a second intra-op thread only adds synchronization (tens of times slower on a busy 2-core CI)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def load_transformers(path, dtype=torch.float32):
    """transformers' own loader on our checkpoint; fails if it skipped or invented any tensor."""
    model, info = transformers.GptOssForCausalLM.from_pretrained(
        path, quantization_config=transformers.Mxfp4Config(dequantize=True), dtype=dtype, output_loading_info=True
    )
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    assert not problems, f"transformers did not load the checkpoint cleanly: {problems}"
    return model.eval()


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return tiny.build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", seed=0)


@pytest.fixture(scope="module")
def hf_model(tiny_path):
    return load_transformers(tiny_path)


@pytest.fixture(scope="module")
def model(tiny_path):
    return GptOss.from_pretrained(tiny_path, dtype=torch.float32, progress=False)


def random_ids(batch, length, seed, vocab=tiny.TINY["vocab_size"]):
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def left_pad_mask(batch, length, pads):
    mask = torch.ones(batch, length, dtype=torch.int64)
    for row, pad in enumerate(pads):
        mask[row, :pad] = 0
    return mask


def first_difference(got, expected) -> str:
    where = (got != expected).nonzero()
    if not len(where):
        return "no difference"
    row, col = where[0].tolist()
    return f"first at row {row}, column {col}: got {got[row, col].item()}, expected {expected[row, col].item()}"


# --- agreement with transformers ----------------------------------------------------------------------------------
def test_tiny_checkpoint_has_every_feature(model):
    config = model.config
    assert set(config.layer_types) == {"sliding_attention", "full_attention"}
    assert config.num_local_experts >= 8 and config.num_experts_per_tok == 4
    assert config.num_attention_heads > config.num_key_value_heads  # grouped-query attention
    assert config.sliding_window < 19  # the test sequences are longer than the window


def test_experts_dequantize_like_transformers(model, hf_model):
    """Layout check: our MXFP4 experts, dequantized and transposed, are transformers' [E, in, out] weights."""
    for i in (0, len(model.model.layers) - 1):
        ours, theirs = model.model.layers[i].mlp.experts, hf_model.model.layers[i].mlp.experts
        for name in ("gate_up_proj", "down_proj"):
            dense = getattr(ours, name).dequantize(torch.float32, backend="torch").transpose(1, 2)
            assert torch.equal(dense, getattr(theirs, name)), f"layer {i} {name} differs from transformers' dequantization"


def test_logits_match_transformers(model, hf_model):
    ids = random_ids(2, 19, seed=1)
    with torch.no_grad():
        expected = hf_model(ids).logits
    got = model(ids)
    assert got.shape == expected.shape == (2, 19, model.config.vocab_size)
    assert_close_to_reference(got, expected, rtol=0, atol=LOGITS_ATOL, what="logits vs transformers")


def test_logits_match_transformers_with_left_padding(model, hf_model):
    ids = random_ids(3, 17, seed=2)
    mask = left_pad_mask(3, 17, pads=[0, 4, 9])
    positions = (mask.cumsum(-1) - 1).clamp_min(0)  # what transformers' generate passes
    with torch.no_grad():
        expected = hf_model(ids, attention_mask=mask, position_ids=positions).logits
    got = model(ids, attention_mask=mask)
    real = mask.bool()
    assert_close_to_reference(got[real], expected[real], rtol=0, atol=LOGITS_ATOL, what="left-padded logits vs transformers")
    assert torch.isfinite(got).all(), "padding columns must stay finite (the sink absorbs their attention)"


def test_greedy_generation_matches_transformers(model, hf_model):
    ids = random_ids(2, 11, seed=3)
    mask = left_pad_mask(2, 11, pads=[0, 3])
    expected = hf_model.generate(ids, attention_mask=mask, max_new_tokens=32, do_sample=False, pad_token_id=0)
    got = model.generate(ids, 32, temperature=0, attention_mask=mask)
    assert got.shape == (2, 11 + 32)
    assert torch.equal(got, expected), f"greedy tokens differ from transformers: {first_difference(got, expected)}"


def test_rope_tables_match_transformers():
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.models.gpt_oss.modeling_gpt_oss import GptOssRotaryEmbedding

    cases = {
        "tiny": tiny.tiny_config(),
        "gpt-oss-20b": GptOssConfig.from_name("gpt-oss-20b"),
        "truncated ramp": tiny.tiny_config(rope_scaling={**tiny.tiny_config().rope_scaling, "truncate": True}),
        "head_dim 64, theta 10000": tiny.tiny_config(head_dim=64, rope_theta=10000.0),
        "plain rope": tiny.tiny_config(rope_scaling={"rope_type": "default"}),
    }
    for label, config in cases.items():
        theirs = transformers.GptOssConfig.from_dict(config.to_dict())
        kind = theirs.rope_parameters["rope_type"]
        init = ROPE_INIT_FUNCTIONS.get(kind) or GptOssRotaryEmbedding.compute_default_rope_parameters
        expected_freq, expected_scale = init(theirs)
        got_freq, got_scale = rope_frequencies(config)
        assert torch.equal(got_freq, expected_freq), f"{label}: inv_freq differs, max {(got_freq - expected_freq).abs().max()}"
        assert got_scale == expected_scale, f"{label}: attention scaling {got_scale} != {expected_scale}"


def test_bfloat16_model_tracks_float32(tiny_path, model):
    """The default dtype: bf16 weights and activations (norms float32, softmax float32) stay near the fp32 model."""
    ids = random_ids(2, 19, seed=12)
    expected = model(ids)
    got = GptOss.from_pretrained(tiny_path, progress=False)(ids)
    assert got.dtype == torch.bfloat16
    relative = ((got.float() - expected).norm() / expected.norm()).item()
    assert relative < 0.05, f"bf16 logits are {relative:.4f} (relative L2) from float32 (measured ~0.013)"


def test_triton_fp32_path_matches_torch_path(tiny_path, model, device):
    """The model on mxfp4.moe's Triton path (interpreted on CPU, compiled on a GPU): same logits in float32."""
    ids = random_ids(1, 7, seed=13)
    triton_model = GptOss.from_pretrained(tiny_path, device=device, dtype=torch.float32, backend="fp32", progress=False)
    got = triton_model(ids.to(device)).cpu()
    assert_close_to_reference(got, model(ids), rtol=0, atol=CACHE_ATOL, what="Triton fp32 path vs torch path")


def test_triton_decode_projections_match_torch_path(tiny_path, model, device, monkeypatch):
    """Chunks of <= GEMV_PROJECTION_TOKENS tokens on a Triton path take the dense GEMV for q/k/v and o (one launch
    each); the same chunks on the torch path take nn.Linear: same logits in float32."""
    from mxfp4.triton_kernels import dense_gemv

    calls = []
    real = dense_gemv.projections
    monkeypatch.setattr(dense_gemv, "projections", lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
    ids = random_ids(2, 9, seed=21)
    pad = torch.tensor([0, 3])
    triton_model = GptOss.from_pretrained(tiny_path, device=device, dtype=torch.float32, backend="fp32", progress=False)
    logits = {}
    for name, m in (("triton", triton_model), ("torch", model)):
        m.setup_cache(2, 12)
        m.forward_with_cache(ids[:, :6].to(m.device), 0, pad.to(m.device))  # 12 tokens: nn.Linear on both
        step = m.forward_with_cache(ids[:, 6:8].to(m.device), 6, pad.to(m.device))  # 4 tokens: the GEMV
        last = m.decode_step(ids[:, 8:9].to(m.device), torch.tensor([8], device=m.device), pad.to(m.device))
        logits[name] = (step.cpu(), last.cpu())
    layers = model.config.num_hidden_layers
    assert calls == [3, 1] * layers * 2, f"expected a q/k/v and an o launch per layer for both chunks, got {calls}"
    for got, want, what in zip(logits["triton"], logits["torch"], ("2-token chunk", "decode step")):
        assert_close_to_reference(got, want, rtol=0, atol=CACHE_ATOL, what=f"{what}: GEMV projections vs nn.Linear")


def test_triton_decode_attention_generates_like_torch_path(tiny_path, model, device, monkeypatch):
    """On a Triton path every one-token step runs RoPE, the cache write and the attention as one launch
    (``triton_kernels.decode_attention``) per layer; greedy decoding of a left-padded batch past the sliding
    window (ring wrap-around) gives the torch path's tokens, with logits within float32 summation-order noise."""
    from mxfp4.triton_kernels import decode_attention as module

    calls = []
    real = module.decode_attention
    monkeypatch.setattr(module, "decode_attention", lambda *a, **k: calls.append(k["ring"]) or real(*a, **k))
    ids = random_ids(2, 4, seed=31)
    mask = left_pad_mask(2, 4, [0, 2])
    steps = tiny.TINY["sliding_window"] + 2  # the sliding layers' ring wraps during the run
    triton_model = GptOss.from_pretrained(tiny_path, device=device, dtype=torch.float32, backend="fp32", progress=False)
    got = triton_model.generate(ids.to(device), steps, temperature=0, attention_mask=mask.to(device)).cpu()
    want = model.generate(ids, steps, temperature=0, attention_mask=mask)
    assert torch.equal(got, want), f"Triton decode attention changes greedy tokens: {first_difference(got, want)}"
    layer_types = [layer.self_attn.kv_cache.ring for layer in triton_model.model.layers]
    assert calls == layer_types * (steps - 1), f"one launch per layer per decode step expected, got {len(calls)}"
    # Logits of one more step through both paths, from the same cache state.
    pad = left_padding(mask, ids)
    for m in (triton_model, model):
        m.setup_cache(2, 16)
        m.forward_with_cache(got[:, :-1].to(m.device), 0, pad.to(m.device))
    column = torch.tensor([got.shape[1] - 1])
    fast = triton_model.decode_step(got[:, -1:].to(device), column.to(device), pad.to(device)).cpu()
    slow = model.decode_step(got[:, -1:], column, pad)
    assert_close_to_reference(fast, slow, rtol=0, atol=CACHE_ATOL, what="decode_attention step vs torch path")


def test_save_pretrained_round_trips_and_transformers_reads_it(tmp_path):
    """A random model from a config, saved in the Hub layout, reloads bit-identically; transformers agrees on it."""
    config = tiny.tiny_config()
    original = GptOss.from_config(config, dtype=torch.float32).init_random_(seed=4)
    path = original.save_pretrained(tmp_path / "saved", shards=2)
    reloaded = GptOss.from_pretrained(path, dtype=torch.float32, progress=False)
    for (name, a), b in zip(original.state_dict().items(), reloaded.state_dict().values()):
        assert torch.equal(a, b), f"{name} changed in the round trip"
    ids = random_ids(2, 12, seed=14)
    logits = reloaded(ids)
    assert torch.isfinite(logits).all()
    with torch.no_grad():
        expected = load_transformers(path)(ids).logits
    assert_close_to_reference(logits, expected, rtol=0, atol=LOGITS_ATOL, what="saved model vs transformers")


# --- the KV cache -------------------------------------------------------------------------------------------------
def test_cache_path_equals_full_forward_past_window_with_left_padding(model):
    """Prefill, decode steps and chunks (one longer than the window) give the full forward's logits."""
    window = model.config.sliding_window
    ids = random_ids(3, 26, seed=4)
    pads = [0, 2, 7]
    mask = left_pad_mask(3, 26, pads)
    expected = model(ids, attention_mask=mask)
    pad = left_padding(mask, ids)
    model.setup_cache(3, 30)
    chunks = [(0, 6), (6, 7), (7, 8), (8, 8 + window + 3), (16, 17), (17, 21), (21, 22), (22, 26)]
    got = []
    for start, end in chunks:
        if end - start == 1:
            got.append(model.decode_step(ids[:, start:end], torch.tensor([start]), pad)[:, None])
        else:
            got.append(model.forward_with_cache(ids[:, start:end], start, pad))
    got = torch.cat(got, dim=1)
    real = mask.bool()
    assert_close_to_reference(got[real], expected[real], rtol=0, atol=CACHE_ATOL, what="cached logits vs full forward")


def test_sliding_layers_keep_only_the_window(model):
    config = model.config
    model.setup_cache(2, 40)
    for kind, layer in zip(config.layer_types, model.model.layers):
        cache = layer.self_attn.kv_cache
        expected_slots = config.sliding_window if kind == "sliding_attention" else 40
        assert cache.keys.shape == (2, config.num_key_value_heads, expected_slots, config.head_dim), kind


def test_decode_step_is_static(model):
    """decode_step writes into the same buffers every step (the property CUDA-graph capture relies on)."""
    ids = random_ids(2, 9, seed=5)
    pad = torch.zeros(2, dtype=torch.int64)
    model.setup_cache(2, 16)
    model.forward_with_cache(ids, 0, pad)
    buffers = {name: t.data_ptr() for name, t in model.named_buffers()}
    column, token = torch.tensor([9]), ids[:, -1:].clone()
    for _ in range(3):
        logits = model.decode_step(token, column, pad)
        token.copy_(logits.argmax(-1, keepdim=True))
        column += 1
    assert {name: t.data_ptr() for name, t in model.named_buffers()} == buffers


# --- generation ---------------------------------------------------------------------------------------------------
def test_left_padded_batch_generates_like_each_row_alone(model):
    prompts = [random_ids(1, n, seed=10 + n)[0] for n in (9, 5, 12)]
    length = max(len(p) for p in prompts)
    ids = torch.zeros(3, length, dtype=torch.int64)
    for row, prompt in enumerate(prompts):
        ids[row, length - len(prompt):] = prompt
    mask = left_pad_mask(3, length, [length - len(p) for p in prompts])
    batch = model.generate(ids, 12, temperature=0, attention_mask=mask)
    for row, prompt in enumerate(prompts):
        alone = model.generate(prompt[None], 12, temperature=0)
        assert torch.equal(batch[row, length:], alone[0, len(prompt):]), f"row {row}: batched greedy differs from alone"


def test_sampling_is_seeded_and_filters_reduce_to_greedy(model):
    ids = random_ids(2, 7, seed=6)
    greedy = model.generate(ids, 8, temperature=0)
    first = model.generate(ids, 8, temperature=1.0, seed=123)
    assert torch.equal(first, model.generate(ids, 8, temperature=1.0, seed=123)), "same seed, different samples"
    assert not torch.equal(first, model.generate(ids, 8, temperature=1.0, seed=124)), "different seeds, same samples"
    assert torch.equal(model.generate(ids, 8, temperature=0.7, top_k=1, seed=1), greedy), "top_k=1 must be greedy"
    assert torch.equal(model.generate(ids, 8, temperature=0.7, top_p=1e-6, seed=1), greedy), "tiny top_p must be greedy"


def test_eos_ends_rows_and_stops_early(model):
    ids = random_ids(2, 7, seed=7)
    greedy = model.generate(ids, 10, temperature=0)
    eos = int(greedy[0, 7 + 2])  # row 0's third new token
    out = model.generate(ids, 10, temperature=0, eos_token_id=[eos, 10_000])
    row0 = out[0, 7:].tolist()
    stop = row0.index(eos)
    assert row0[stop:] == [eos] * (len(row0) - stop), f"row 0 must repeat eos after it: {row0}"
    assert torch.equal(out[0, : 7 + stop + 1], greedy[0, : 7 + stop + 1]), "row 0 must be greedy up to its eos"
    both_end = model.generate(ids, 10, temperature=0, eos_token_id=[int(greedy[0, 7]), int(greedy[1, 7])])
    assert both_end.shape == (2, 8), "generation must stop once every row has ended"


# --- round trip: a dense transformers state dict -> mxfp4.quantize -> mxfp4.save_file -> both loaders ---------------
def test_round_trip_quantized_transformers_state_dict(tmp_path):
    config = tiny.tiny_config()
    torch.manual_seed(0)
    dense = transformers.GptOssForCausalLM(transformers.GptOssConfig.from_dict(config.to_dict())).eval()
    with torch.no_grad():  # GPT-OSS-like magnitudes instead of init's 0.02 (non-zero biases, sinks, norms)
        for name, tensor in tiny.random_hub_tensors(config, seed=1, dtype=torch.float32).items():
            if isinstance(tensor, mxfp4.MXFP4Tensor):  # dense Gaussian experts (off the MXFP4 grid), [E, in, out]
                tensor = torch.randn(tensor.shape).transpose(1, 2) * tensor.dequantize(torch.float32).std()
            dense.get_parameter(name).copy_(tensor)
    dense = dense.to(torch.bfloat16)
    state = tiny.hub_tensors_from_transformers(dense.state_dict())
    experts = state["model.layers.0.mlp.experts.gate_up_proj"]
    assert experts.shape == (config.num_local_experts, 2 * config.intermediate_size, config.hidden_size)
    path = tiny.write_checkpoint(tmp_path / "roundtrip", config, state, shards=2, save=mxfp4.save_file)
    assert (path / "model.safetensors.index.json").is_file()

    ids = random_ids(2, 15, seed=8)
    with torch.no_grad():
        expected = load_transformers(path)(ids).logits
        unquantized = dense.float()(ids).logits
    got = GptOss.from_pretrained(path, dtype=torch.float32, progress=False)(ids)
    assert_close_to_reference(got, expected, rtol=0, atol=LOGITS_ATOL, what="round-trip logits vs transformers")
    # A layout mistake (transposed or de-interleaved experts) would still load on both sides; against the dense
    # model it shows: MXFP4 experts move logits by a fraction of their spread, a wrong layout by all of it.
    relative = (got - unquantized).norm() / unquantized.norm()
    assert relative < 0.6, f"round-trip logits are {relative:.3f} (relative L2) from the unquantized model's"


# --- memory ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, budget_gb", [("gpt-oss-20b", 16), ("gpt-oss-120b", 80)], ids=["20b-under-16GB", "120b-under-80GB"])
def test_memory_report_of_presets(name, budget_gb):
    config = GptOssConfig.from_name(name)
    model = GptOss.from_config(config, device="meta")
    report = model.memory_report(context_len=4096, batch=1)
    params_per_layer = config.num_local_experts * 3 * config.intermediate_size * config.hidden_size
    bytes_per_element = (BYTES_PER_BLOCK + 1) / BLOCK_SIZE  # 4.25 bits
    assert report["experts_mxfp4"] == config.num_hidden_layers * params_per_layer * bytes_per_element
    assert report["total"] == report["experts_mxfp4"] + report["other_weights"] + report["kv_cache"]
    assert report["total"] < budget_gb * 1e9, f"{name}: {report}"
    dense_experts = [n for n, t in model.state_dict().items()
                     if ".experts." in n and t.is_floating_point() and not n.endswith("_bias")]
    assert not dense_experts, f"float expert weights (a dense copy of the experts?): {dense_experts}"
    # KV: sliding layers stop at the window, full layers grow with the context.
    longer = model.memory_report(context_len=8192, batch=1)["kv_cache"] - report["kv_cache"]
    full_layers = config.num_hidden_layers - config.num_sliding_layers
    per_column = 2 * config.num_key_value_heads * config.head_dim * 2 + 8  # K and V in bf16, the slot's column id
    assert longer == full_layers * 4096 * per_column


def test_loaded_experts_stay_mxfp4(model):
    experts = model.model.layers[0].mlp.experts
    assert experts.gate_up_proj_blocks.dtype == torch.uint8 and experts.gate_up_proj_scales.dtype == torch.uint8
    dense_sizes = {experts.gate_up_proj.numel(), experts.down_proj.numel()}
    assert not [n for n, t in model.state_dict().items() if t.is_floating_point() and t.numel() in dense_sizes]


# --- config ---------------------------------------------------------------------------------------------------------
HUB_20B_CONFIG = {  # the fields of openai/gpt-oss-20b's config.json that define the architecture
    "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", "attention_bias": True, "eos_token_id": 200002,
    "experts_per_token": 4, "head_dim": 64, "hidden_size": 2880, "intermediate_size": 2880,
    "layer_types": ["sliding_attention", "full_attention"] * 12, "max_position_embeddings": 131072,
    "num_attention_heads": 64, "num_experts_per_tok": 4, "num_hidden_layers": 24, "num_key_value_heads": 8,
    "num_local_experts": 32, "pad_token_id": 199999, "rms_norm_eps": 1e-05, "rope_theta": 150000,
    "rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0, "original_max_position_embeddings": 4096,
                     "rope_type": "yarn", "truncate": False},
    "sliding_window": 128, "swiglu_limit": 7.0, "tie_word_embeddings": False, "vocab_size": 201088,
    "quantization_config": {"modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                                       "model.embed_tokens", "lm_head"], "quant_method": "mxfp4"},
}


def test_config_reads_the_hub_config_json():
    assert GptOssConfig.from_dict(HUB_20B_CONFIG) == GptOssConfig.from_name("gpt-oss-20b")


@pytest.mark.parametrize("name", ["gpt-oss-20b", "gpt-oss-120b", "tiny"])
def test_config_dict_round_trips_through_us_and_transformers(name):
    config = tiny.tiny_config() if name == "tiny" else GptOssConfig.from_name(name)
    assert GptOssConfig.from_dict(config.to_dict()) == config
    theirs = transformers.GptOssConfig.from_dict(config.to_dict())
    assert GptOssConfig.from_dict(theirs.to_dict()) == config, "transformers rewrote the config into something else"


def test_presets_agree_with_transformers_defaults():
    """transformers' GptOssConfig defaults are gpt-oss-120b; our 120b preset must read identically."""
    theirs = transformers.GptOssConfig()
    ours = GptOssConfig.from_name("gpt-oss-120b")
    for field in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                  "head_dim", "num_local_experts", "num_experts_per_tok", "vocab_size", "sliding_window",
                  "rms_norm_eps", "swiglu_alpha", "swiglu_limit", "max_position_embeddings"):
        assert getattr(ours, field) == getattr(theirs, field), field
    assert list(ours.layer_types) == list(theirs.layer_types)
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    assert torch.equal(rope_frequencies(ours)[0], ROPE_INIT_FUNCTIONS["yarn"](theirs)[0])


# --- streaming load -------------------------------------------------------------------------------------------------
STREAMING_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    from mxfp4.models.gpt_oss import GptOss, GptOssConfig, read_checkpoint_index

    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1]) * 1024

    path, dtype = sys.argv[1], getattr(torch, sys.argv[2])
    stored = read_checkpoint_index(__import__("pathlib").Path(path))
    GptOss.from_config(GptOssConfig.from_json(path + "/config.json"), device="meta")
    # ^ the first meta-device build imports torch's meta kernels (~150 MB of code): part of the baseline, not loading
    open("/proc/self/clear_refs", "w").write("5")  # resets VmHWM (the peak) to the current RSS
    before = status("VmRSS")
    model = GptOss.from_pretrained(path, dtype=dtype, progress=False)
    peak = status("VmHWM")
    model_bytes = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    largest = max(t.numel() * t.element_size() for t in model.state_dict().values())
    largest_stored = max(t.end - t.start for t in stored.values())
    print(json.dumps(dict(increase=peak - before, model=model_bytes, largest=max(largest, largest_stored))))
    """
)


@pytest.fixture(scope="module")
def big_checkpoint(tmp_path_factory):
    """~270 MB over 3 shards: a shard is ~90 MB, the largest tensor (embeddings) ~25 MB (49 MB in float32)."""
    config = tiny.tiny_config(hidden_size=1024, intermediate_size=1024, num_hidden_layers=12, num_attention_heads=16,
                              num_key_value_heads=4, head_dim=64, num_local_experts=8, vocab_size=12000)
    return tiny.write_checkpoint(tmp_path_factory.mktemp("big") / "ckpt", config, tiny.random_hub_tensors(config), shards=3)


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc to measure peak RSS")
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"], ids=["bf16-read-in-place", "fp32-converted"])
def test_streaming_load_peak_memory(big_checkpoint, dtype):
    result = subprocess.run([sys.executable, "-c", STREAMING_SCRIPT, str(big_checkpoint), dtype],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    slack = 24 * 2**20  # allocator / interpreter noise
    allowed = report["model"] + report["largest"] + slack
    shard = sum(f.stat().st_size for f in big_checkpoint.glob("*.safetensors")) / 3
    assert report["largest"] + slack < shard, "test set-up: a whole shard must not fit in the allowance"
    assert report["increase"] <= allowed, (
        f"loading raised peak RSS by {report['increase'] / 2**20:.1f} MiB; the model is {report['model'] / 2**20:.1f} MiB "
        f"and its largest tensor {report['largest'] / 2**20:.1f} MiB (allowed {allowed / 2**20:.1f} MiB)"
    )


# --- bad checkpoints --------------------------------------------------------------------------------------------------
# Each edit works on the Hub tensors (experts already split into *_blocks / *_scales) and the config dict.
def _drop(name):
    def edit(tensors, config):
        del tensors[name]
    return edit


def _shorten(name):
    def edit(tensors, config):
        tensors[name] = tensors[name][:-1]
    return edit


def _float_blocks(tensors, config):
    name = "model.layers.1.mlp.experts.down_proj_blocks"
    tensors[name] = tensors[name].to(torch.bfloat16)


def _extra(tensors, config):
    tensors["model.layers.0.self_attn.rotary.inv_freq"] = torch.ones(3)


def _dense_experts(tensors, config):
    tensors["model.layers.0.mlp.experts.gate_up_proj"] = torch.zeros(8, 96, 320)


def _not_gpt_oss(tensors, config):
    config["model_type"] = "llama"


def _not_mxfp4(tensors, config):
    config.pop("quantization_config")


BAD_CHECKPOINTS = {
    "missing-tensor": (_drop("model.layers.2.self_attn.sinks"), "missing 1 tensor(s): 'model.layers.2.self_attn.sinks'"),
    "missing-scales": (_drop("model.layers.0.mlp.experts.gate_up_proj_scales"), "'model.layers.0.mlp.experts.gate_up_proj_scales'"),
    "wrong-shape": (_shorten("model.layers.1.self_attn.k_proj.weight"), "'model.layers.1.self_attn.k_proj.weight' in model-"),
    "wrong-expert-shape": (_shorten("model.layers.2.mlp.experts.down_proj_blocks"), "'model.layers.2.mlp.experts.down_proj_blocks'"),
    "float-blocks": (_float_blocks, "'model.layers.1.mlp.experts.down_proj_blocks' in model-"),
    "unexpected-tensor": (_extra, "unexpected tensor(s): 'model.layers.0.self_attn.rotary.inv_freq'"),
    "dense-experts": (_dense_experts, "dense expert weights"),
    "not-gpt-oss-config": (_not_gpt_oss, "not a GPT-OSS config: model_type is 'llama'"),
    "not-mxfp4": (_not_mxfp4, "quant_method"),
}


@pytest.mark.parametrize("case", list(BAD_CHECKPOINTS), ids=list(BAD_CHECKPOINTS))
def test_bad_checkpoint_gives_one_clear_error(tmp_path, case):
    edit, expected_text = BAD_CHECKPOINTS[case]
    config = tiny.tiny_config()
    tensors, config_dict = tiny.split_mxfp4(tiny.random_hub_tensors(config, seed=2)), config.to_dict()
    edit(tensors, config_dict)
    path = tiny.write_checkpoint(tmp_path / case, config_dict, tensors, shards=2)
    with pytest.raises(CheckpointError, match=re.escape(expected_text)):
        GptOss.from_pretrained(path, progress=False)


@pytest.mark.parametrize("cut", ["inside-data", "inside-header"])
def test_truncated_shard_is_named(tmp_path, cut):
    path = tiny.build_tiny_checkpoint(tmp_path / "ckpt", seed=3, shards=2)
    shard = sorted(path.glob("model-*.safetensors"))[1]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 100] if cut == "inside-data" else data[:50])
    with pytest.raises(CheckpointError, match=f"{shard.name}.* truncated"):
        GptOss.from_pretrained(path, progress=False)


def test_missing_shard_and_config_are_named(tmp_path):
    path = tiny.build_tiny_checkpoint(tmp_path / "ckpt", seed=3, shards=2)
    shard = sorted(path.glob("model-*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(CheckpointError, match=f"{shard.name} does not exist"):
        GptOss.from_pretrained(path, progress=False)
    (path / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        GptOss.from_pretrained(path, progress=False)


# --- bad input ----------------------------------------------------------------------------------------------------
def test_cuda_graph_decoding_needs_a_gpu(model):
    with pytest.raises(ValueError, match="cuda_graph=True needs the model on a CUDA device"):
        model.generate(random_ids(1, 3, seed=1), 2, temperature=0, cuda_graph=True)
    with pytest.raises(ValueError, match="capture_decode needs the model on a CUDA device"):
        model.capture_decode(torch.zeros(1, 1, dtype=torch.int64), torch.tensor([3]), torch.zeros(1, dtype=torch.int64))


def test_right_padding_and_bad_generate_arguments_are_rejected(model):
    ids = random_ids(2, 6, seed=9)
    right_padded = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    with pytest.raises(ValueError, match="row 1 .* only left padding"):
        model(ids, attention_mask=right_padded)
    with pytest.raises(ValueError, match="row 0 .* only left padding"):
        model(ids, attention_mask=torch.zeros(2, 6, dtype=torch.int64))
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(ids, -1)
    with pytest.raises(ValueError, match="top_p"):
        model.generate(ids, 3, top_p=0.0)
    with pytest.raises(ValueError, match="setup_cache"):
        model.setup_cache(5, 8)
        model.forward_with_cache(ids, 0)


def test_config_rejects_inconsistent_values():
    with pytest.raises(ValueError, match="multiple of num_key_value_heads"):
        tiny.tiny_config(num_key_value_heads=4)
    with pytest.raises(ValueError, match="layer_types has 2 entries for 3 layers"):
        tiny.tiny_config(layer_types=["sliding_attention", "full_attention"])
    with pytest.raises(ValueError, match="not a GPT-OSS config"):
        GptOssConfig.from_dict({"model_type": "mixtral"})


# --- GPU ----------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_gpu_greedy_matches_cpu(tiny_path, model):
    """The float32 Triton path reproduces the CPU tokens; the default (bf16 tensor-core) path stays within bf16."""
    ids = random_ids(2, 11, seed=3)
    cpu_logits = model(ids)
    exact = GptOss.from_pretrained(tiny_path, device="cuda", dtype=torch.float32, backend="fp32", progress=False)
    assert_close_to_reference(exact(ids.cuda()).cpu(), cpu_logits, rtol=0, atol=LOGITS_ATOL, what="GPU fp32 logits vs CPU")
    got, expected = exact.generate(ids, 16, temperature=0).cpu(), model.generate(ids, 16, temperature=0)
    assert torch.equal(got, expected), f"GPU greedy differs from CPU: {first_difference(got, expected)}"
    fast = GptOss.from_pretrained(tiny_path, device="cuda", dtype=torch.bfloat16, progress=False)
    got = fast(ids.cuda()).float().cpu()
    relative = ((got - cpu_logits).norm() / cpu_logits.norm()).item()
    assert relative < 0.05, f"GPU bf16 logits are {relative:.4f} (relative L2) from the CPU float32 ones"


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_gpu_generate_through_a_cuda_graph_equals_eager(tiny_path):
    """generate's default on a GPU (one captured decode step, replayed per token) gives the tokens of launching
    each step eagerly: a left-padded batch, greedy and seeded sampling, an end token that stops one row early."""
    gpu = GptOss.from_pretrained(tiny_path, device="cuda", dtype=torch.bfloat16, progress=False)
    ids = random_ids(2, 7, seed=41).cuda()
    mask = left_pad_mask(2, 7, [0, 3]).cuda()
    for kwargs in (dict(temperature=0), dict(temperature=0.8, top_p=0.9, seed=5)):
        graphed = gpu.generate(ids, 12, attention_mask=mask, **kwargs)
        eager = gpu.generate(ids, 12, attention_mask=mask, cuda_graph=False, **kwargs)
        assert torch.equal(graphed, eager), f"{kwargs}: graph decoding differs: {first_difference(graphed, eager)}"
    eos = int(graphed[1, 9])  # a token row 1 produced: generation must stop there for that row
    graphed = gpu.generate(ids, 12, attention_mask=mask, eos_token_id=eos, temperature=0.8, top_p=0.9, seed=5)
    eager = gpu.generate(ids, 12, attention_mask=mask, eos_token_id=eos, temperature=0.8, top_p=0.9, seed=5,
                         cuda_graph=False)
    assert torch.equal(graphed, eager), f"with an end token: {first_difference(graphed, eager)}"


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_gpu_decode_step_replays_in_a_cuda_graph(tiny_path):
    """decode_step captured once (no host sync inside, or capture fails) replays like eager decoding."""
    gpu = GptOss.from_pretrained(tiny_path, device="cuda", dtype=torch.bfloat16, progress=False)
    ids = random_ids(1, 9, seed=11).cuda()
    pad = torch.zeros(1, dtype=torch.int64, device="cuda")
    gpu.setup_cache(1, 32)
    gpu.forward_with_cache(ids, 0, pad)
    token, column = ids[:, -1:].clone(), torch.tensor([9], device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up outside the graph (Triton compiles, allocator settles)
        gpu.decode_step(token, column, pad)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_logits = gpu.decode_step(token, column, pad)
    # The warm-up really wrote column 9; a sliding layer's ring would then show it twice to the first replay
    # (its old slot and the new entry). Clear the caches in place (the graph keeps their addresses) and prefill again.
    gpu.setup_cache(1, 32)
    gpu.forward_with_cache(ids, 0, pad)
    eager = GptOss.from_pretrained(tiny_path, device="cuda", dtype=torch.bfloat16, progress=False)
    eager.setup_cache(1, 32)
    eager.forward_with_cache(ids, 0, pad)
    eager_token, eager_column = ids[:, -1:].clone(), torch.tensor([9], device="cuda")
    for _ in range(6):
        graph.replay()
        expected = eager.decode_step(eager_token, eager_column, pad)
        assert_close_to_reference(static_logits.float().cpu(), expected.float().cpu(), rtol=0, atol=1e-2, what="graph vs eager")
        token.copy_(static_logits.argmax(-1, keepdim=True))
        eager_token.copy_(expected.argmax(-1, keepdim=True))
        column += 1
        eager_column += 1
