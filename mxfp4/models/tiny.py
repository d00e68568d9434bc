"""Tiny GPT-OSS checkpoints in the Hugging Face Hub layout, for tests and quick GPU-vs-CPU checks.

    >>> path = build_tiny_checkpoint(tmp_path / "tiny", seed=0)        # config.json + model.safetensors
    >>> model = GptOss.from_pretrained(path, dtype=torch.float32)       # or transformers' GptOssForCausalLM

The tiny shape keeps every GPT-OSS feature: both layer types (sliding window 5, shorter than test sequences),
8 experts with top-4, grouped-query attention (6 query heads on 2 KV heads), a head_dim of 24 (YaRN's ramp falls
inside it), and sizes that are multiples of 32 without being powers of two (H = 96, I = 160, vocab 211).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch

from ..spec import BYTES_PER_BLOCK, E2M1_MAGNITUDES, E8M0_BIAS, num_blocks
from ..tensor import MXFP4Tensor
from .gpt_oss import MXFP4_QUANTIZATION_CONFIG, GptOssConfig, split_mxfp4, write_checkpoint  # noqa: F401

TINY = dict(
    hidden_size=96, intermediate_size=160, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2,
    head_dim=24, num_local_experts=8, num_experts_per_tok=4, vocab_size=211, sliding_window=5,
    quantization_config=MXFP4_QUANTIZATION_CONFIG,
)

# RMS of an E2M1 code drawn uniformly from all 16: sqrt(mean(magnitude^2)).
_E2M1_UNIFORM_RMS = math.sqrt(sum(m * m for m in E2M1_MAGNITUDES) / len(E2M1_MAGNITUDES))


def tiny_config(**overrides) -> GptOssConfig:
    """The tiny test configuration (see the module docstring), with any field overridden."""
    return GptOssConfig(**copy.deepcopy({**TINY, **overrides}))


def random_mxfp4(shape: tuple[int, ...], std: float, generator: torch.Generator) -> MXFP4Tensor:
    """Random MXFP4 bytes for a weight of logical ``shape`` (quantized along the last axis) with about ``std`` RMS.

    Codes are uniform over all 16; each block's scale is one of three powers of two around ``std / rms(code)``.
    """
    *rows, length = shape
    groups = num_blocks(length)
    blocks = torch.randint(0, 256, (*rows, groups, BYTES_PER_BLOCK), generator=generator, dtype=torch.int32)
    exponent = round(math.log2(std / _E2M1_UNIFORM_RMS))
    scales = E8M0_BIAS + exponent + torch.randint(-1, 2, (*rows, groups), generator=generator, dtype=torch.int32)
    return MXFP4Tensor.from_blocks(blocks.to(torch.uint8), scales.to(torch.uint8), shape, -1)


def random_hub_tensors(config: GptOssConfig, seed: int = 0, dtype=torch.bfloat16) -> dict[str, torch.Tensor | MXFP4Tensor]:
    """Random weights under the Hub's tensor names; experts as :class:`MXFP4Tensor` ``[E, out, in]``, the rest in dtype.

    Magnitudes keep activations O(1) through the layers and push some gate/up values past the SwiGLU clamp (7),
    so every branch of the math is exercised. Biases, sinks and norm weights are non-zero.
    """
    g = torch.Generator().manual_seed(seed)
    hidden, inter, experts = config.hidden_size, config.intermediate_size, config.num_local_experts
    heads, kv_heads, dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim

    def normal(*shape, std=1.0, mean=0.0):
        return (torch.randn(shape, generator=g) * std + mean).to(dtype)

    tensors = {"model.embed_tokens.weight": normal(config.vocab_size, hidden)}
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}."
        tensors[p + "input_layernorm.weight"] = normal(hidden, std=0.1, mean=1.0)
        tensors[p + "post_attention_layernorm.weight"] = normal(hidden, std=0.1, mean=1.0)
        for name, rows, cols in (("q_proj", heads * dim, hidden), ("k_proj", kv_heads * dim, hidden),
                                 ("v_proj", kv_heads * dim, hidden), ("o_proj", hidden, heads * dim)):
            tensors[p + f"self_attn.{name}.weight"] = normal(rows, cols, std=cols**-0.5)
            tensors[p + f"self_attn.{name}.bias"] = normal(rows, std=0.1)
        tensors[p + "self_attn.sinks"] = normal(heads)
        tensors[p + "mlp.router.weight"] = normal(experts, hidden, std=hidden**-0.5)
        tensors[p + "mlp.router.bias"] = normal(experts, std=0.1)
        tensors[p + "mlp.experts.gate_up_proj"] = random_mxfp4((experts, 2 * inter, hidden), 3 * hidden**-0.5, g)
        tensors[p + "mlp.experts.gate_up_proj_bias"] = normal(experts, 2 * inter, std=0.5)
        tensors[p + "mlp.experts.down_proj"] = random_mxfp4((experts, hidden, inter), 0.2 * inter**-0.5, g)
        tensors[p + "mlp.experts.down_proj_bias"] = normal(experts, hidden, std=0.1)
    tensors["model.norm.weight"] = normal(hidden, std=0.1, mean=1.0)
    tensors["lm_head.weight"] = normal(config.vocab_size, hidden, std=hidden**-0.5)
    return tensors


def hub_tensors_from_transformers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | MXFP4Tensor]:
    """A transformers ``GptOssForCausalLM`` state dict with dense experts -> Hub tensors with MXFP4 experts.

    transformers keeps dense experts as ``[E, in, out]`` (``x @ W``); the Hub stores ``[E, out, in]`` blocks
    quantized along ``in``. So each expert weight is transposed, then quantized (OCP floor rule), one at a time.
    """
    from ..ops import quantize

    out = {}
    for name, tensor in state_dict.items():
        if name.endswith(("experts.gate_up_proj", "experts.down_proj")):
            out[name] = quantize(tensor.transpose(1, 2), axis=-1)
        else:
            out[name] = tensor
    return out


def build_tiny_checkpoint(path, seed: int = 0, *, shards: int = 1, **overrides) -> Path:
    """Write a random tiny GPT-OSS checkpoint (Hub layout, MXFP4 experts, bf16 rest) to ``path``; returns it."""
    config = tiny_config(**overrides)
    return write_checkpoint(path, config, random_hub_tensors(config, seed), shards=shards)
