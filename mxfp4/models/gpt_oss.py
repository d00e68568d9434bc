"""GPT-OSS (gpt-oss-20b, gpt-oss-120b) with its experts kept in MXFP4, end to end: config, model, cache, loader.

Read top to bottom: the config (with the published presets), the pieces of one decoder layer (RMSNorm, YaRN RoPE,
a static KV cache, attention with sinks, the MoE on :func:`mxfp4.moe`), the model (``forward``, ``decode_step``,
``generate``, ``memory_report``), then the checkpoint reader (streamed) and writer (``save_pretrained``).

    >>> model = GptOss.from_pretrained("path/to/gpt-oss-20b", device="cuda")      # experts stay MXFP4
    >>> tokens = model.generate(input_ids, max_new_tokens=64, temperature=0)        # greedy
    >>> GptOss.from_config(GptOssConfig.from_name("gpt-oss-20b"), device="meta").memory_report(4096, 1)

The math follows the checkpoint's own definition (transformers' ``modeling_gpt_oss``): pre-norm decoder layers,
grouped-query attention with q/k/v/o biases, RoPE on the two halves of each head with YaRN frequencies, one learned
"sink" logit per head joined to the softmax and then dropped, a sliding window on ``sliding_attention`` layers, and
a top-k mixture of clamped-SwiGLU experts. Parameter names are the checkpoint's names, so ``state_dict()`` keys are
exactly the tensors of a Hugging Face GPT-OSS checkpoint (experts as ``*_blocks`` / ``*_scales`` bytes).

Positions. A batch is left-padded: row ``b`` has ``pad[b]`` padding columns, then its tokens. Every tensor index
along the sequence is a *column* (0, 1, ... shared by all rows); the RoPE position of column ``c`` in row ``b`` is
``c - pad[b]``. Key column ``s`` is visible from query column ``c`` when ``pad[b] <= s <= c`` (and
``s > c - sliding_window`` on sliding layers), as in transformers' masks.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
from pathlib import Path

import torch
from torch import nn

from ..dispatch import choose_backend
from ..moe_layer import moe
from ..torch_ops import compile_policy
from ..spec import BYTES_PER_BLOCK, E8M0_BIAS, num_blocks
from ..tensor import MXFP4Tensor

SLIDING = "sliding_attention"
FULL = "full_attention"
LAYER_TYPES = (SLIDING, FULL)
MODEL_TYPE = "gpt_oss"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: missing, unexpected, mis-shaped or truncated tensors, a bad config."""


# =================================================================================================================
# Config
# =================================================================================================================
def _default_rope_scaling() -> dict:
    # transformers' GptOssConfig default (used when config.json has no rope_parameters / rope_scaling); the
    # published checkpoints carry the same values.
    return {
        "rope_type": "yarn",
        "factor": 32.0,
        "beta_fast": 32.0,
        "beta_slow": 1.0,
        "truncate": False,
        "original_max_position_embeddings": 4096,
    }


@dataclasses.dataclass
class GptOssConfig:
    """The architecture of a GPT-OSS model, as read from a checkpoint's ``config.json``.

    Defaults are transformers' ``GptOssConfig`` defaults (the gpt-oss-120b shape), so a ``config.json`` means the
    same model here as in transformers. ``layer_types`` defaults to sliding / full alternating, starting with
    sliding. ``rope_scaling`` holds the RoPE scaling parameters (``rope_type`` "yarn" or "default", ``factor``,
    ``beta_fast``, ``beta_slow``, ``original_max_position_embeddings``, ``truncate``, optional
    ``attention_factor`` / ``mscale`` / ``mscale_all_dim``).

    >>> GptOssConfig.from_name("gpt-oss-20b").num_local_experts
    32
    """

    hidden_size: int = 2880
    intermediate_size: int = 2880
    num_hidden_layers: int = 36
    num_attention_heads: int = 64
    num_key_value_heads: int = 8
    head_dim: int = 64
    num_local_experts: int = 128
    num_experts_per_tok: int = 4
    vocab_size: int = 201088
    sliding_window: int | None = 128
    layer_types: tuple[str, ...] | None = None
    rms_norm_eps: float = 1e-5
    rope_theta: float = 150000.0
    rope_scaling: dict | None = dataclasses.field(default_factory=_default_rope_scaling)
    max_position_embeddings: int = 131072
    swiglu_alpha: float = 1.702
    swiglu_limit: float = 7.0
    attention_bias: bool = True
    tie_word_embeddings: bool = False
    eos_token_id: int | tuple[int, ...] | None = None
    pad_token_id: int | None = None
    quantization_config: dict | None = None

    def __post_init__(self):
        if self.layer_types is None:
            self.layer_types = tuple(SLIDING if i % 2 == 0 else FULL for i in range(self.num_hidden_layers))
        self.layer_types = tuple(self.layer_types)
        if isinstance(self.eos_token_id, list):
            self.eos_token_id = tuple(self.eos_token_id)
        self._validate()

    def _validate(self):
        for name in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "head_dim", "num_local_experts", "num_experts_per_tok", "vocab_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"GPT-OSS config: {name} must be a positive integer, got {value!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"GPT-OSS config: num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(f"GPT-OSS config: head_dim must be even (RoPE rotates pairs), got {self.head_dim}")
        if self.num_experts_per_tok > self.num_local_experts:
            raise ValueError(
                f"GPT-OSS config: num_experts_per_tok ({self.num_experts_per_tok}) exceeds num_local_experts "
                f"({self.num_local_experts})"
            )
        if len(self.layer_types) != self.num_hidden_layers:
            raise ValueError(
                f"GPT-OSS config: layer_types has {len(self.layer_types)} entries for {self.num_hidden_layers} layers"
            )
        unknown = sorted(set(self.layer_types) - set(LAYER_TYPES))
        if unknown:
            raise ValueError(f"GPT-OSS config: unknown layer_types {unknown}; expected {list(LAYER_TYPES)}")
        if SLIDING in self.layer_types and (not isinstance(self.sliding_window, int) or self.sliding_window <= 0):
            raise ValueError(f"GPT-OSS config: sliding_window must be a positive integer, got {self.sliding_window!r}")
        if self.tie_word_embeddings:
            raise ValueError("GPT-OSS config: tie_word_embeddings=True is not a GPT-OSS layout (lm_head is its own tensor)")
        rope_type = self.rope_type
        if rope_type not in ("yarn", "default"):
            raise ValueError(f"GPT-OSS config: rope type {rope_type!r} is not supported (expected 'yarn' or 'default')")

    @property
    def rope_type(self) -> str:
        scaling = self.rope_scaling or {}
        return scaling.get("rope_type", scaling.get("type", "default"))

    @property
    def num_sliding_layers(self) -> int:
        return sum(t == SLIDING for t in self.layer_types)

    # --- reading and writing config.json ----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, config: dict) -> "GptOssConfig":
        """Read a transformers ``config.json`` dict; raises ValueError if it is not a GPT-OSS config."""
        if not isinstance(config, dict):
            raise ValueError(f"a config must be a JSON object, got {type(config).__name__}")
        model_type = config.get("model_type")
        if model_type != MODEL_TYPE:
            raise ValueError(
                f"not a GPT-OSS config: model_type is {model_type!r} (architectures {config.get('architectures')}), "
                f"expected {MODEL_TYPE!r}"
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {key: value for key, value in config.items() if key in fields}
        if "num_experts" in config and "num_local_experts" not in config:
            kwargs["num_local_experts"] = config["num_experts"]  # transformers' attribute_map alias
        # transformers >= 5 writes `rope_parameters` (with rope_theta inside); older checkpoints, including the
        # published ones, write `rope_scaling` plus a top-level `rope_theta`.
        scaling = config.get("rope_parameters") or config.get("rope_scaling")
        if scaling is not None:
            scaling = dict(scaling)
            theta = scaling.pop("rope_theta", None)  # inside wins over top level, as in transformers
            kwargs["rope_theta"] = float(theta if theta is not None else config.get("rope_theta", cls.rope_theta))
            kwargs["rope_scaling"] = scaling
        elif "rope_theta" in config:
            kwargs["rope_theta"] = float(config["rope_theta"])
        if "head_dim" in kwargs and kwargs["head_dim"] is None:  # transformers derives a null head_dim
            hidden, heads = kwargs.get("hidden_size", cls.hidden_size), kwargs.get("num_attention_heads", cls.num_attention_heads)
            kwargs["head_dim"] = hidden // heads
        return cls(**kwargs)

    @classmethod
    def from_json(cls, path) -> "GptOssConfig":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise CheckpointError(f"no config.json at {path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise CheckpointError(f"{path} is not valid JSON: {error}") from None
        try:
            return cls.from_dict(data)
        except ValueError as error:
            raise CheckpointError(f"{path}: {error}") from None

    @classmethod
    def from_name(cls, name: str) -> "GptOssConfig":
        """A published configuration: ``"gpt-oss-20b"`` or ``"gpt-oss-120b"``."""
        if name not in PRESETS:
            raise ValueError(f"unknown GPT-OSS preset {name!r}; expected one of {sorted(PRESETS)}")
        return cls(**copy.deepcopy(PRESETS[name]))

    def to_dict(self) -> dict:
        """A ``config.json`` dict that both transformers and :meth:`from_dict` read as this config."""
        out = dataclasses.asdict(self)
        out["layer_types"] = list(self.layer_types)
        scaling = dict(out.pop("rope_scaling") or {"rope_type": "default"})
        scaling["rope_theta"] = out.pop("rope_theta")
        out["rope_parameters"] = scaling
        out["model_type"] = MODEL_TYPE
        out["architectures"] = ["GptOssForCausalLM"]
        if out["quantization_config"] is None:
            out.pop("quantization_config")
        return out


MXFP4_QUANTIZATION_CONFIG = {
    "quant_method": "mxfp4",
    "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"],
}

PRESETS = {
    "gpt-oss-20b": dict(num_hidden_layers=24, num_local_experts=32, eos_token_id=200002, pad_token_id=199999,
                        quantization_config=MXFP4_QUANTIZATION_CONFIG),
    "gpt-oss-120b": dict(num_hidden_layers=36, num_local_experts=128, eos_token_id=200002, pad_token_id=199999,
                         quantization_config=MXFP4_QUANTIZATION_CONFIG),
}
"""Differences from the defaults (which are the shared GPT-OSS values: H = I = 2880, 64 / 8 heads of 64, top-4,
vocab 201088, window 128 on alternate layers, YaRN x32 over 4096, theta 150000)."""


# =================================================================================================================
# Building blocks
# =================================================================================================================
def fused(fn):
    """``fn`` compiled by ``torch.compile`` when it runs on CUDA tensors, ``fn`` itself everywhere else.

    A batch-1 decode step is ~1500 small kernels in eager mode, most of them the elementwise pieces of norms, RoPE,
    masks and the sink softmax: a few microseconds each, several times the bandwidth floor of the whole step. The
    functions marked here are pure tensor code; inductor fuses each into one or two kernels, which a CUDA graph then
    captures like any other launch. On a CPU (the tests' reference path) they run as written, so results there
    match transformers op for op. ``MXFP4_TORCH_COMPILE=never`` turns compilation off everywhere.
    """
    compiled = None

    @functools.wraps(fn)
    def run(*args, **kwargs):
        nonlocal compiled
        if not args[0].is_cuda or compile_policy() == "never":
            return fn(*args, **kwargs)
        if compiled is None:
            # Symbolic shapes from the first call: prefill lengths, batch sizes and cache sizes then share one
            # graph per remaining variant (dtype, sliding window or not) instead of one per shape. Not fullgraph:
            # past torch's recompile limit a call runs eagerly rather than failing.
            compiled = torch.compile(fn, dynamic=True)
        return compiled(*args, **kwargs)

    run.eager = fn
    return run


@fused
def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``weight * x / rms(x)`` over the last axis, in float32, rounded once to x's dtype."""
    x32 = x.float()
    normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return (weight.float() * normed).to(x.dtype)


@fused
def add_rms_norm(x: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor, eps: float):
    """``(x + delta, rms_norm(x + delta))``: a residual add and the norm after it, one kernel when compiled."""
    x = x + delta
    return x, rms_norm.eager(x, weight, eps)


class RMSNorm(nn.Module):
    """``weight * x / rms(x)``, computed in float32 and rounded once to x's dtype.

    The weight stays float32 whatever the model dtype: transformers keeps GPT-OSS norms in float32
    (``_keep_in_fp32_modules``), and matching it keeps bf16 results comparable.
    """

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size, dtype=torch.float32), requires_grad=False)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)

    def add_and_norm(self, x: torch.Tensor, delta: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x + delta, norm(x + delta))`` (``delta`` None: ``(x, norm(x))``)."""
        if delta is None:
            return x, self(x)
        return add_rms_norm(x, delta, self.weight, self.eps)


def rope_frequencies(config: GptOssConfig) -> tuple[torch.Tensor, float]:
    """``(inv_freq float32 [head_dim / 2], attention_scaling)``: the RoPE frequencies, with YaRN if configured.

    YaRN keeps the fast-rotating dimensions (more than ``beta_fast`` turns over the original context) as they are,
    divides the slow ones (fewer than ``beta_slow`` turns) by ``factor``, blends linearly in between, and scales
    cos/sin by ``0.1 ln(factor) + 1``. Computed in float32 in the same order as transformers, so the tables are
    bit-identical to its ``_compute_yarn_parameters``.
    """
    dim, base = config.head_dim, config.rope_theta
    exponents = torch.arange(0, dim, 2, dtype=torch.int64).to(torch.float32) / dim
    if config.rope_type == "default":
        return 1.0 / (base ** exponents), 1.0
    params = config.rope_scaling
    factor = params["factor"]
    original_context = params["original_max_position_embeddings"]
    if factor is None:
        factor = config.max_position_embeddings / original_context
    scaling = params.get("attention_factor")
    if scaling is None:
        def mscale(scale, m=1.0):
            return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

        if params.get("mscale") and params.get("mscale_all_dim"):
            scaling = float(mscale(factor, params["mscale"]) / mscale(factor, params["mscale_all_dim"]))
        else:
            scaling = mscale(factor)
    beta_fast = params.get("beta_fast") or 32
    beta_slow = params.get("beta_slow") or 1

    def dim_of_turns(turns):  # the rotary dim that makes `turns` full turns over the original context
        return dim * math.log(original_context / (turns * 2 * math.pi)) / (2 * math.log(base))

    low, high = dim_of_turns(beta_fast), dim_of_turns(beta_slow)
    if params.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # a zero-width ramp would divide by zero
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    keep = 1 - ramp  # 1: extrapolate (unchanged frequency), 0: interpolate (frequency / factor)
    powers = base ** exponents
    inv_freq = (1.0 / (factor * powers)) * (1 - keep) + (1.0 / powers) * keep
    return inv_freq, scaling


class RotaryEmbedding(nn.Module):
    """cos/sin tables for RoPE positions: ``positions [B, T] -> (cos, sin) [B, T, head_dim / 2]`` in ``dtype``."""

    def __init__(self, config: GptOssConfig):
        super().__init__()
        self.config = config
        inv_freq, self.attention_scaling = rope_frequencies(config)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def reset_tables(self):
        """Recompute the frequencies after ``to_empty`` (meta -> real device), which leaves buffers uninitialized."""
        self.inv_freq.copy_(rope_frequencies(self.config)[0])

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        angles = positions[..., None].float() * self.inv_freq
        return (angles.cos() * self.attention_scaling).to(dtype), (angles.sin() * self.attention_scaling).to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x [B, heads, T, D]`` by ``cos/sin [B, 1, T, D / 2]``: pairs are (i, i + D/2), not adjacent elements."""
    first, second = x.chunk(2, dim=-1)
    return torch.cat((first * cos - second * sin, second * cos + first * sin), dim=-1)


@fused
def rope_qk(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """:func:`apply_rope` on the queries and the keys."""
    return apply_rope(q, cos, sin), apply_rope(k, cos, sin)


class KVCache(nn.Module):
    """Static K/V buffers of one layer, ``[B, kv_heads, slots, head_dim]``, plus the column held in each slot.

    Full-attention layers have one slot per column (``slots = max_seq_len``). Sliding-window layers keep a ring of
    ``min(sliding_window, max_seq_len)`` slots (column ``c`` lives in slot ``c % slots``), so their memory stops
    growing at the window. Buffers never change shape or address after construction: that is what lets a decode
    step be captured in a CUDA graph. Empty slots hold column -1 and zeros (zeros, not garbage: a masked slot
    still meets a 0 probability in ``probs @ values``, and 0 * NaN would be NaN).
    """

    def __init__(self, batch_size, kv_heads, head_dim, slots, *, ring: bool, dtype, device=None):
        super().__init__()
        shape = (batch_size, kv_heads, slots, head_dim)
        self.register_buffer("keys", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("values", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("columns", torch.full((slots,), -1, dtype=torch.int64, device=device), persistent=False)
        self.ring = ring

    @property
    def slots(self) -> int:
        return self.columns.shape[0]

    def reset(self):
        self.keys.zero_()
        self.values.zero_()
        self.columns.fill_(-1)

    def update(self, keys, values, columns):
        """Store ``keys/values [B, kv_heads, T, D]`` of ``columns [T]``; return what the new queries may see.

        Returns ``(keys, values, key_columns)`` over S slots. A full cache writes first and returns its buffers.
        A ring returns its old contents concatenated with the new entries and only then overwrites slots: with
        T > 1 the early queries of the chunk still need keys that the chunk's last entries will overwrite.
        """
        if not self.ring:
            self.keys.index_copy_(2, columns, keys)
            self.values.index_copy_(2, columns, values)
            self.columns.index_copy_(0, columns, columns)
            return self.keys, self.values, self.columns
        visible = (torch.cat((self.keys, keys), 2), torch.cat((self.values, values), 2), torch.cat((self.columns, columns)))
        kept = min(columns.shape[0], self.slots)  # static: only the newest `slots` entries survive
        slot = columns[-kept:] % self.slots
        self.keys.index_copy_(2, slot, keys[:, :, -kept:])
        self.values.index_copy_(2, slot, values[:, :, -kept:])
        self.columns.index_copy_(0, slot, columns[-kept:])
        return visible


@fused
def visible_keys(query_columns, key_columns, pad, window: int | None) -> torch.Tensor:
    """bool ``[B, 1, 1, T, S]``: may the query at ``query_columns [T]`` of row b see the key at ``key_columns [S]``?

    Causal, not padding (``key >= pad[b]``, which also hides empty cache slots at column -1), and inside the
    window on sliding layers (``key > query - window``, transformers' rule: the window counts the query itself).
    """
    query, key = query_columns[:, None], key_columns[None, :]
    allowed = key <= query
    if window is not None:
        allowed = allowed & (key > query - window)
    allowed = allowed[None] & (key_columns[None, None, :] >= pad[:, None, None])
    return allowed[:, None, None]


@fused
def attention_with_sinks(q, k, v, allowed, sinks, scale) -> torch.Tensor:
    """Grouped-query attention whose softmax also sees one learned logit per head (the sink), then drops it.

    Args:
        q: ``[B, H, T, D]``; k, v: ``[B, KV, S, D]`` (query head h reads KV head ``h // (H / KV)``).
        allowed: bool ``[B, 1, 1, T, S]`` from :func:`visible_keys`.
        sinks: ``[H]``; scale: the logit scale (``D ** -0.5``).

    Returns ``[B, H, T, D]`` in v's dtype. The sink takes probability mass without adding a value, so a query may
    attend "nowhere"; it also keeps a row with no visible key (a padding column) finite. Softmax in float32.
    """
    batch, heads, length, dim = q.shape
    kv_heads = k.shape[1]
    group = heads // kv_heads
    # [B, KV, group * T, D] @ [B, KV, D, S]: each KV head serves its group without copying K or V.
    scores = (q.reshape(batch, kv_heads, group * length, dim) @ k.transpose(-1, -2)) * scale
    scores = scores.view(batch, kv_heads, group, length, -1).masked_fill(~allowed, -math.inf)
    sink = sinks.view(1, kv_heads, group, 1, 1).expand(batch, kv_heads, group, length, 1)
    probs = torch.softmax(torch.cat((scores, sink.to(scores.dtype)), dim=-1).float(), dim=-1)[..., :-1]
    out = probs.to(v.dtype).view(batch, kv_heads, group * length, -1) @ v
    return out.view(batch, heads, length, dim)


#: Tokens per forward up to which the attention projections run as one weight-streaming GEMV launch for q/k/v and
#: one for o (``mxfp4.triton_kernels.dense_gemv``) on the Triton paths: decode, where those bf16 weights are a third
#: of the bytes each token reads and cuBLAS streams them at half the bandwidth. Each extra row re-reads the weights
#: from L2, so larger batches and prefill use cuBLAS (``nn.Linear``).
GEMV_PROJECTION_TOKENS = 4


class Attention(nn.Module):
    def __init__(self, config: GptOssConfig, layer_idx: int, dtype, backend=None):
        super().__init__()
        hidden, heads, kv_heads, dim = config.hidden_size, config.num_attention_heads, config.num_key_value_heads, config.head_dim
        bias = config.attention_bias
        self.q_proj = nn.Linear(hidden, heads * dim, bias=bias, dtype=dtype)
        self.k_proj = nn.Linear(hidden, kv_heads * dim, bias=bias, dtype=dtype)
        self.v_proj = nn.Linear(hidden, kv_heads * dim, bias=bias, dtype=dtype)
        self.o_proj = nn.Linear(heads * dim, hidden, bias=bias, dtype=dtype)
        self.sinks = nn.Parameter(torch.zeros(heads, dtype=dtype), requires_grad=False)
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim
        self.scale = dim**-0.5
        self.window = config.sliding_window if config.layer_types[layer_idx] == SLIDING else None
        self.kv_cache: KVCache | None = None
        self.backend = backend

    def forward(self, x, cos, sin, columns, pad, use_cache: bool) -> torch.Tensor:
        triton_path, gemv = self._paths(x)
        if gemv:
            q, k, v = project(x, (self.q_proj, self.k_proj, self.v_proj))
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        return self._attend(q, k, v, cos, sin, columns, pad, use_cache, triton_path, gemv)

    def add_norm_forward(self, x, delta, norm: RMSNorm, cos, sin, columns, pad, use_cache: bool):
        """``(x + delta, self(norm(x + delta)))``; where q/k/v run as one GEMV, the add and the norm run inside
        that launch (``dense_gemv.projections(add_norm=...)``): one launch fewer per layer."""
        triton_path, gemv = self._paths(x)
        if not gemv or delta is None:
            x, h = norm.add_and_norm(x, delta)
            return x, self(h, cos, sin, columns, pad, use_cache)
        x, (q, k, v) = project(delta, (self.q_proj, self.k_proj, self.v_proj), residual=x, norm=norm)
        return x, self._attend(q, k, v, cos, sin, columns, pad, use_cache, triton_path, gemv)

    def _paths(self, x) -> tuple[bool, bool]:
        """(Triton kernels run, the projections run as weight-streaming GEMVs) for input ``x [B, T, H]``."""
        batch, length, _ = x.shape
        triton_path = choose_backend(x.device, self.backend).uses_triton
        return triton_path, batch * length <= GEMV_PROJECTION_TOKENS and triton_path

    def _attend(self, q, k, v, cos, sin, columns, pad, use_cache: bool, triton_path: bool, gemv: bool):
        """The layer after its q/k/v projections ``[B, T, *]``: RoPE, the KV cache, attention with sinks, o."""
        batch, length, _ = q.shape
        if use_cache and length == 1 and triton_path:
            return self.decode(q, k, v, cos, sin, columns, pad, gemv)
        q = q.view(batch, length, self.heads, self.head_dim).transpose(1, 2)
        k = k.view(batch, length, self.kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(batch, length, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = rope_qk(q, k, cos, sin)
        key_columns = columns
        if use_cache:
            k, v, key_columns = self.kv_cache.update(k, v, columns)
        if triton_path:  # one flash-attention launch: no [T, S] scores in memory
            from ..triton_kernels.prefill_attention import prefill_attention

            out = prefill_attention(q, k, v, columns, key_columns, pad, self.sinks, scale=self.scale,
                                    window=self.window).view(batch, length, self.heads * self.head_dim)
        else:
            allowed = visible_keys(columns, key_columns, pad, self.window)
            out = attention_with_sinks(q, k, v, allowed, self.sinks, self.scale)
            out = out.transpose(1, 2).reshape(batch, length, self.heads * self.head_dim)
        return project(out, (self.o_proj,))[0] if gemv else self.o_proj(out)

    def decode(self, q, k, v, cos, sin, columns, pad, gemv: bool) -> torch.Tensor:
        """One new token per row on the Triton paths: RoPE, the cache write and the attention in one launch
        (``triton_kernels.decode_attention``), the same math as ``forward``'s torch ops."""
        from ..triton_kernels.decode_attention import decode_attention

        batch = q.shape[0]
        cache = self.kv_cache
        out = decode_attention(
            q.reshape(batch, -1), k.reshape(batch, -1), v.reshape(batch, -1), cos.reshape(batch, -1),
            sin.reshape(batch, -1), cache.keys, cache.values, cache.columns, columns, pad, self.sinks,
            scale=self.scale, ring=cache.ring, window=self.window,
        ).view(batch, 1, -1)
        return project(out, (self.o_proj,))[0] if gemv else self.o_proj(out)


def project(x: torch.Tensor, linears, residual: torch.Tensor | None = None, norm: RMSNorm | None = None):
    """``[linear(x) for linear in linears]`` (same input, bf16 / fp16 / fp32 ``nn.Linear`` modules) in one
    weight-streaming launch; each result ``[..., out_features]`` is a view of the launch's one output. With
    ``residual`` and ``norm``: ``(residual + x, [linear(norm(residual + x)) ...])``, the add and norm in the launch."""
    from ..triton_kernels.dense_gemv import projections
    from ..triton_kernels.rms_norm import AddNorm

    weights = [linear.weight for linear in linears]
    biases = None if linears[0].bias is None else [linear.bias for linear in linears]
    flat = x.reshape(-1, x.shape[-1])
    if residual is None:
        out = projections(flat, weights, biases)
    else:
        add_norm = AddNorm(residual.reshape(flat.shape), norm.weight, norm.eps)
        new_residual, out = projections(flat, weights, biases, add_norm=add_norm)
    parts = [part.view(*x.shape[:-1], part.shape[-1]) for part in out.split([w.shape[0] for w in weights], dim=-1)]
    return parts if residual is None else (new_residual.view(residual.shape), parts)


class Experts(nn.Module):
    """The experts' weights as stored in the checkpoint: MXFP4 bytes (buffers) and biases.

    ``gate_up_proj``: logical ``[E, 2I, H]`` quantized along H, rows gate / up interleaved; ``down_proj``:
    ``[E, H, I]`` quantized along I. Rows are output features (``nn.Linear`` layout), as on the Hub.
    """

    def __init__(self, config: GptOssConfig, dtype):
        super().__init__()
        experts, hidden, inter = config.num_local_experts, config.hidden_size, config.intermediate_size
        self.gate_up_shape = (experts, 2 * inter, hidden)
        self.down_shape = (experts, hidden, inter)
        for name, (e, rows, k) in (("gate_up_proj", self.gate_up_shape), ("down_proj", self.down_shape)):
            self.register_buffer(f"{name}_blocks", torch.zeros(e, rows, num_blocks(k), BYTES_PER_BLOCK, dtype=torch.uint8))
            self.register_buffer(f"{name}_scales", torch.zeros(e, rows, num_blocks(k), dtype=torch.uint8))
        self.gate_up_proj_bias = nn.Parameter(torch.zeros(experts, 2 * inter, dtype=dtype), requires_grad=False)
        self.down_proj_bias = nn.Parameter(torch.zeros(experts, hidden, dtype=dtype), requires_grad=False)

    @property
    def gate_up_proj(self) -> MXFP4Tensor:
        return MXFP4Tensor(self.gate_up_proj_blocks, self.gate_up_proj_scales, self.gate_up_shape, 2)

    @property
    def down_proj(self) -> MXFP4Tensor:
        return MXFP4Tensor(self.down_proj_blocks, self.down_proj_scales, self.down_shape, 2)


class MoE(nn.Module):
    """Router + experts, run by :func:`mxfp4.moe` straight from the MXFP4 bytes."""

    def __init__(self, config: GptOssConfig, dtype, backend=None):
        super().__init__()
        self.router = nn.Linear(config.hidden_size, config.num_local_experts, bias=True, dtype=dtype)
        self.experts = Experts(config, dtype)
        self.top_k = config.num_experts_per_tok
        self.swiglu_alpha, self.swiglu_limit = config.swiglu_alpha, config.swiglu_limit
        self.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = moe(
            x.reshape(-1, x.shape[-1]), self.router.weight, self.router.bias,
            self.experts.gate_up_proj, self.experts.gate_up_proj_bias,
            self.experts.down_proj, self.experts.down_proj_bias, self.top_k,
            swiglu_alpha=self.swiglu_alpha, swiglu_limit=self.swiglu_limit, backend=self.backend,
        )
        return out.view(x.shape)

    def add_norm_forward(self, x: torch.Tensor, delta: torch.Tensor, norm: RMSNorm) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x + delta, self(norm(x + delta)))``, the residual add and the norm run inside the router's launch on
        the Triton paths (``mxfp4.moe``'s ``residual=``): one launch fewer per layer. The torch path keeps the
        model's own (compiled on CUDA) norm."""
        if not choose_backend(x.device, self.backend).uses_triton:
            x, h = norm.add_and_norm(x, delta)
            return x, self(h)
        new_x, out = moe(
            delta.reshape(-1, delta.shape[-1]), self.router.weight, self.router.bias,
            self.experts.gate_up_proj, self.experts.gate_up_proj_bias,
            self.experts.down_proj, self.experts.down_proj_bias, self.top_k,
            swiglu_alpha=self.swiglu_alpha, swiglu_limit=self.swiglu_limit, backend=self.backend,
            residual=x.reshape(-1, x.shape[-1]), norm_weight=norm.weight, norm_eps=norm.eps,
        )
        return new_x.view(x.shape), out.view(delta.shape)


class DecoderLayer(nn.Module):
    def __init__(self, config: GptOssConfig, layer_idx: int, dtype, backend=None):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, layer_idx, dtype, backend)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MoE(config, dtype, backend)

    def forward(self, x, pending, cos, sin, columns, pad, use_cache: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``(residual stream, this layer's MoE output)``. The MoE output is not added here: the next norm adds
        ``pending`` (the previous layer's) to the stream, so each residual add shares a kernel with the norm after
        it. On the Triton paths that kernel is a consumer's own launch: the MoE router runs the norm after attention
        and, at decode, the q/k/v projection GEMV the norm before it -- no launch of their own (2 per layer before)."""
        x, attention = self.self_attn.add_norm_forward(x, pending, self.input_layernorm, cos, sin, columns, pad,
                                                       use_cache)
        return self.mlp.add_norm_forward(x, attention, self.post_attention_layernorm)


class GptOssModel(nn.Module):
    """Embeddings, decoder layers, final norm (named ``model.*`` in the checkpoint)."""

    def __init__(self, config: GptOssConfig, dtype, backend=None):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, dtype=dtype)
        self.layers = nn.ModuleList(DecoderLayer(config, i, dtype, backend) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


# =================================================================================================================
# The model
# =================================================================================================================
class GptOss(nn.Module):
    """A GPT-OSS causal LM whose experts are MXFP4 (:class:`MXFP4Tensor` bytes), everything else in ``dtype``.

    Build it with :meth:`from_pretrained` (a checkpoint) or :meth:`from_config` (empty or ``meta`` weights).

    Attributes:
        config: the :class:`GptOssConfig`.
        model: embeddings, layers, final norm; lm_head: ``[vocab, hidden]``. Names match the checkpoint.
    """

    def __init__(self, config: GptOssConfig, *, dtype=torch.bfloat16, backend=None):
        super().__init__()
        self.config = config
        self.model = GptOssModel(config, dtype, backend)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False, dtype=dtype)
        self.rope = RotaryEmbedding(config)
        self.requires_grad_(False)
        self._cache_len = 0

    # --- construction -----------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: GptOssConfig | str, *, device="cpu", dtype=torch.bfloat16, backend=None) -> "GptOss":
        """A model with uninitialized weights on ``device`` (``"meta"``: no memory at all, for sizing).

        ``config`` may be a preset name. Weights are allocated once, never initialized on the CPU first: load
        them (:meth:`load_checkpoint`) or fill them (:meth:`init_random_`).
        """
        if isinstance(config, str):
            config = GptOssConfig.from_name(config)
        with torch.device("meta"):
            model = cls(config, dtype=dtype, backend=backend)
        if torch.device(device).type != "meta":
            model.to_empty(device=device)
            model.rope.reset_tables()
            for module in model.modules():
                if isinstance(module, RMSNorm):
                    module.weight.fill_(1.0)
        return model

    @classmethod
    def from_pretrained(cls, path, *, device="cpu", dtype=torch.bfloat16, backend=None, progress: bool = True) -> "GptOss":
        """Load a Hugging Face GPT-OSS checkpoint directory (``config.json`` + ``model.safetensors`` or shards + index).

        Expert ``*_blocks`` / ``*_scales`` are read as bytes into the MXFP4 buffers (no float copy ever exists);
        every other tensor is converted to ``dtype`` (norms stay float32). Tensors are read one at a time, straight
        into the model's memory, so peak host memory is the model plus at most one tensor.

        Raises:
            CheckpointError: no config / not a GPT-OSS config / not MXFP4; a missing, unexpected, mis-shaped or
                wrongly typed tensor (named); a missing or truncated shard (named).
        """
        path = Path(path)
        config = GptOssConfig.from_json(path / "config.json")
        quant = config.quantization_config or {}
        if quant.get("quant_method") != "mxfp4":
            raise CheckpointError(
                f"{path / 'config.json'}: expected an MXFP4 checkpoint (quantization_config.quant_method = 'mxfp4'), "
                f"got quantization_config {config.quantization_config!r}"
            )
        model = cls.from_config(config, device=device, dtype=dtype, backend=backend)
        model.load_checkpoint(path, progress=progress)
        return model

    def load_checkpoint(self, path, *, progress: bool = True) -> None:
        """Read every weight from the checkpoint at ``path`` (see :meth:`from_pretrained`); checks all first."""
        expected = self.state_dict()
        stored = read_checkpoint_index(Path(path))
        check_checkpoint(stored, expected)
        load_tensors(stored, expected, progress=progress)

    def save_pretrained(self, path, *, shards: int = 1) -> Path:
        """Write ``config.json`` + safetensors (Hub layout, MXFP4 experts) that transformers and :meth:`from_pretrained` read."""
        config = dataclasses.replace(self.config, quantization_config=copy.deepcopy(MXFP4_QUANTIZATION_CONFIG))
        return write_checkpoint(path, config, self.state_dict(), shards=shards)

    @torch.no_grad()
    def init_random_(self, seed: int = 0) -> "GptOss":
        """Fill the weights with random values of GPT-OSS-like magnitudes (for tests and benchmarks).

        Expert bytes get uniformly random codes and scale bytes near 2^-7, so weights stay O(0.01-0.1).
        """
        generator = torch.Generator(device=self.device).manual_seed(seed)
        for name, tensor in self.state_dict().items():  # in place: no temporary the size of a weight
            if name.endswith("_blocks"):
                tensor.random_(0, 256, generator=generator)
            elif name.endswith("_scales"):
                tensor.random_(E8M0_BIAS - 8, E8M0_BIAS - 4, generator=generator)
            elif name.endswith("norm.weight"):
                tensor.fill_(1.0)
            else:
                tensor.normal_(0.0, 1.0 if name.endswith("embed_tokens.weight") else 0.02, generator=generator)
        return self

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    # --- forward ----------------------------------------------------------------------------------------------
    def _run(self, input_ids, columns, pad, *, use_cache: bool, last_only: bool = False) -> torch.Tensor:
        x = self.model.embed_tokens(input_ids)
        positions = (columns[None, :] - pad[:, None]).clamp_min(0)  # padding columns get position 0, as in HF
        cos, sin = self.rope(positions, x.dtype)
        cos, sin = cos[:, None], sin[:, None]  # broadcast over heads
        pending = None
        for layer in self.model.layers:
            x, pending = layer(x, pending, cos, sin, columns, pad, use_cache)
        if last_only:
            x, pending = x[:, -1:], None if pending is None else pending[:, -1:]
        return self.lm_head(self.model.norm.add_and_norm(x, pending)[1])

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[B, T, vocab]`` (model dtype) of a whole sequence, without the cache.

        Args:
            input_ids: int64 ``[B, T]``.
            attention_mask: optional ``[B, T]`` of 0/1, left padding only (zeros then ones in every row).
        """
        input_ids = self._check_ids(input_ids)
        pad = left_padding(attention_mask, input_ids)
        columns = torch.arange(input_ids.shape[1], device=input_ids.device)
        return self._run(input_ids, columns, pad, use_cache=False)

    # --- cached inference -------------------------------------------------------------------------------------
    def setup_cache(self, batch_size: int, max_seq_len: int) -> None:
        """Allocate (or reuse and clear) static KV caches for ``batch_size`` rows of up to ``max_seq_len`` columns."""
        first = self.model.layers[0].self_attn.kv_cache
        if first is not None and first.keys.shape[0] == batch_size and self._cache_len >= max_seq_len:
            for layer in self.model.layers:
                layer.self_attn.kv_cache.reset()
            return
        for layer in self.model.layers:
            layer.self_attn.kv_cache = None  # free the old buffers before allocating new ones
        for layer, cache in zip(self.model.layers, self._new_caches(batch_size, max_seq_len, self.device)):
            layer.self_attn.kv_cache = cache
        self._cache_len = max_seq_len

    def _new_caches(self, batch_size, max_seq_len, device) -> list[KVCache]:
        config, caches = self.config, []
        for kind in config.layer_types:
            slots = min(config.sliding_window, max_seq_len) if kind == SLIDING else max_seq_len
            caches.append(KVCache(batch_size, config.num_key_value_heads, config.head_dim, slots,
                                  ring=kind == SLIDING, dtype=self.dtype, device=device))
        return caches

    @torch.no_grad()
    def forward_with_cache(self, input_ids: torch.Tensor, start: int, pad: torch.Tensor | None = None,
                           *, last_only: bool = False) -> torch.Tensor:
        """Run ``input_ids [B, T]`` as columns ``start .. start+T-1`` on top of the cache; returns their logits.

        The cache (from :meth:`setup_cache`) must hold columns ``0 .. start-1`` of the same rows; ``pad [B]`` is
        each row's left padding (int64, default none). Used for prefill, chunked prefill and tests.
        """
        input_ids = self._check_ids(input_ids)
        batch, length = input_ids.shape
        cache = self.model.layers[0].self_attn.kv_cache
        if cache is None or cache.keys.shape[0] != batch:
            rows = None if cache is None else cache.keys.shape[0]
            raise ValueError(f"call setup_cache({batch}, max_seq_len) first (the cache has {rows} rows)")
        if start < 0 or start + length > self._cache_len:
            raise ValueError(f"columns {start}..{start + length - 1} do not fit a cache of {self._cache_len} columns")
        pad = torch.zeros(batch, dtype=torch.int64, device=self.device) if pad is None else pad.to(self.device)
        columns = torch.arange(start, start + length, device=self.device)
        return self._run(input_ids, columns, pad, use_cache=True, last_only=last_only)

    @torch.no_grad()
    def decode_step(self, input_ids: torch.Tensor, column: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """One token per row at ``column``: logits ``[B, vocab]``. Capturable in a CUDA graph.

        Args:
            input_ids: int64 ``[B, 1]`` on the model's device.
            column: int64 ``[1]`` on the device: the column being written (the cache holds the ones before it).
            pad: int64 ``[B]`` on the device: each row's left padding.

        Everything is a fixed-shape tensor op on static buffers: no host synchronization, no Python branching on
        values, no reallocation. Nothing is validated here (``generate`` checks before its loop); a column past
        the cache is an indexing error.
        """
        return self._run(input_ids, column, pad, use_cache=True)[:, -1]

    @torch.no_grad()
    def capture_decode(self, input_ids: torch.Tensor, column: torch.Tensor, pad: torch.Tensor):
        """Run :meth:`decode_step` once, then capture it in a CUDA graph on the same (static) input tensors.

        Returns ``(logits, graph, graph_logits)``: this step's logits ``[B, vocab]``, and a ``torch.cuda.CUDAGraph``
        whose ``replay()`` runs the step again on whatever ``input_ids``, ``column`` and ``pad`` hold by then, writing
        ``graph_logits``. The real step runs on a side stream first (it compiles the kernels and sizes their
        workspaces outside the capture); capturing runs nothing, so the cache holds exactly this one new column.
        """
        if input_ids.device.type != "cuda":
            raise ValueError(f"capture_decode needs the model on a CUDA device, not {input_ids.device}")
        stream = torch.cuda.Stream(device=input_ids.device)
        stream.wait_stream(torch.cuda.current_stream(input_ids.device))
        with torch.cuda.stream(stream):
            logits = self.decode_step(input_ids, column, pad)
        torch.cuda.current_stream(input_ids.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            graph_logits = self.decode_step(input_ids, column, pad)
        return logits, graph, graph_logits

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
                 top_k: int = 0, eos_token_id: int | list[int] | None = None, seed: int | None = None,
                 attention_mask: torch.Tensor | None = None, cuda_graph: bool | None = None) -> torch.Tensor:
        """Continue each row of ``input_ids [B, T]``; returns ``[B, T + n]`` (prompt and new tokens), ``n <= max_new_tokens``.

        Args:
            temperature: 0 is greedy (argmax); otherwise logits are divided by it and sampled.
            top_p: nucleus sampling: keep the fewest most likely tokens whose probability reaches top_p (1: off).
            top_k: keep the k most likely tokens (0: off).
            eos_token_id: id(s) that end a row; a finished row repeats its end token until all rows end, and
                generation stops early when they have.
            seed: seeds a private generator (reproducible sampling); None uses torch's global generator.
            attention_mask: ``[B, T]`` 0/1 for left-padded batches (zeros first).
            cuda_graph: decode through one CUDA graph of the step (:meth:`capture_decode`), replayed per token
                instead of ~200 launches per token from Python (gpt-oss-20b, batch 1, H100: 383 vs 48 tokens/s).
                None (default): on CUDA devices. The same kernels run either way.
        """
        input_ids = self._check_ids(input_ids)
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be a non-negative int, got {max_new_tokens!r}")
        if not temperature >= 0 or not 0 < top_p <= 1 or isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise ValueError(f"need temperature >= 0, 0 < top_p <= 1, integer top_k >= 0; got {temperature}, {top_p}, {top_k}")
        if cuda_graph is None:
            cuda_graph = self.device.type == "cuda"
        elif cuda_graph and self.device.type != "cuda":
            raise ValueError(f"cuda_graph=True needs the model on a CUDA device; it is on {self.device}")
        if max_new_tokens == 0:
            return input_ids
        batch, length = input_ids.shape
        pad = left_padding(attention_mask, input_ids)
        eos = None if eos_token_id is None else torch.tensor(eos_token_id, device=self.device).reshape(-1)
        generator = None if seed is None else torch.Generator(device=self.device).manual_seed(seed)

        self.setup_cache(batch, length + max_new_tokens)
        logits = self.forward_with_cache(input_ids, 0, pad, last_only=True)[:, -1]
        column = torch.tensor([length], device=self.device)
        finished = torch.zeros(batch, dtype=torch.bool, device=self.device)
        new_tokens = []
        graph = None
        step_ids = torch.empty((batch, 1), dtype=torch.int64, device=self.device)  # static: the graph reads it
        for step in range(max_new_tokens):
            token = sample(logits, temperature, top_p, top_k, generator)
            if eos is not None:
                token = torch.where(finished, eos[0], token)
                finished |= torch.isin(token, eos)
            new_tokens.append(token)
            if step == max_new_tokens - 1 or (eos is not None and bool(finished.all())):
                break
            step_ids.copy_(token[:, None])
            if not cuda_graph:
                logits = self.decode_step(step_ids, column, pad)
            elif graph is None:
                logits, graph, graph_logits = self.capture_decode(step_ids, column, pad)
            else:
                graph.replay()
                logits = graph_logits
            column += 1
        return torch.cat((input_ids, torch.stack(new_tokens, dim=1)), dim=1)

    def _check_ids(self, input_ids) -> torch.Tensor:
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"input_ids must be an int64 tensor [B, T], got {getattr(input_ids, 'shape', type(input_ids))}")
        if input_ids.numel() == 0:
            raise ValueError(f"input_ids is empty: {tuple(input_ids.shape)}")
        return input_ids.to(self.device, torch.int64)

    # --- memory ---------------------------------------------------------------------------------------------------
    def memory_report(self, context_len: int, batch: int = 1) -> dict[str, int]:
        """Bytes the model needs: from its own tensors (works on ``meta``) plus a KV cache of the given size.

        Returns a dict: ``experts_mxfp4`` (expert blocks + scales), ``other_weights`` (everything else, expert
        biases included), ``kv_cache`` (built the way :meth:`setup_cache` builds it, on ``meta``), ``total``.
        """
        experts = other = 0
        for name, tensor in self.state_dict().items():
            size = tensor.numel() * tensor.element_size()
            if name.endswith(("_blocks", "_scales")):
                experts += size
            else:
                other += size
        kv = sum(t.numel() * t.element_size() for cache in self._new_caches(batch, context_len, "meta") for t in cache.buffers())
        return {"experts_mxfp4": experts, "other_weights": other, "kv_cache": kv, "total": experts + other + kv}


def left_padding(attention_mask: torch.Tensor | None, input_ids: torch.Tensor) -> torch.Tensor:
    """Per-row count of leading padding columns (int64 ``[B]``) from a 0/1 ``attention_mask [B, T]``.

    Raises ValueError unless every row is zeros then ones with at least one 1 (left padding): right padding or
    holes would need a different position scheme.
    """
    batch, length = input_ids.shape
    if attention_mask is None:
        return torch.zeros(batch, dtype=torch.int64, device=input_ids.device)
    mask = attention_mask.to(input_ids.device)
    if tuple(mask.shape) != (batch, length):
        raise ValueError(f"attention_mask has shape {tuple(mask.shape)}, input_ids {(batch, length)}")
    mask = mask.to(torch.int64)
    pad = length - mask.sum(1)
    expected = (torch.arange(length, device=mask.device)[None, :] >= pad[:, None]).to(torch.int64)
    if not torch.equal(mask, expected) or bool((pad >= length).any()):
        bad = int(((mask != expected).any(1) | (pad >= length)).nonzero()[0])
        raise ValueError(
            f"attention_mask row {bad} is {mask[bad].tolist()}: only left padding is supported (zeros, then at "
            "least one 1)"
        )
    return pad


def sample(logits: torch.Tensor, temperature: float, top_p: float = 1.0, top_k: int = 0, generator=None) -> torch.Tensor:
    """Next token per row (int64 ``[B]``) from ``logits [B, V]``: argmax at temperature 0, else filtered sampling."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        mass_before = probs.cumsum(-1) - probs  # drop a token once the more likely ones already reach top_p
        sorted_logits = sorted_logits.masked_fill(mass_before >= top_p, -math.inf)
        logits = torch.full_like(logits, -math.inf).scatter(-1, order, sorted_logits)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


# =================================================================================================================
# Checkpoint loading: safetensors headers read by hand, data read straight into the model
# =================================================================================================================
# Why not safetensors.safe_open: it memory-maps the whole shard, and every page a tensor touches stays resident
# until the file is closed, so peak RSS grows by a shard (GBs on the Hub files), not by one tensor.
SAFETENSORS_DTYPES = {
    "BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64,
    "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16, "I32": torch.int32, "I64": torch.int64, "BOOL": torch.bool,
}
_HEADER_LENGTH_BYTES = 8  # a little-endian u64: the JSON header's length


@dataclasses.dataclass(frozen=True)
class StoredTensor:
    """Where one tensor lives: file, dtype (a torch dtype, or the safetensors name if unknown), shape, byte range."""

    name: str
    file: Path
    dtype: torch.dtype | str
    shape: tuple[int, ...]
    start: int
    end: int


def read_safetensors_header(file: Path) -> dict[str, StoredTensor]:
    """Parse one ``.safetensors`` file's header and check that every tensor's bytes are inside the file."""
    if not file.is_file():
        raise CheckpointError(f"checkpoint shard {file} does not exist")
    size = file.stat().st_size
    with open(file, "rb") as f:
        prefix = f.read(_HEADER_LENGTH_BYTES)
        if len(prefix) < _HEADER_LENGTH_BYTES:
            raise CheckpointError(f"{file} is truncated or not a safetensors file ({size} bytes)")
        header_len = int.from_bytes(prefix, "little")
        data_start = _HEADER_LENGTH_BYTES + header_len
        if data_start > size:
            raise CheckpointError(f"{file} is truncated: its header needs {data_start} bytes, the file has {size}")
        try:
            header = json.loads(f.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise CheckpointError(f"{file} has a corrupt safetensors header: {error}") from None
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, end = (int(offset) for offset in info["data_offsets"])
            dtype = SAFETENSORS_DTYPES.get(info["dtype"], info["dtype"])
            shape = tuple(int(side) for side in info["shape"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{file}: malformed header entry for tensor {name!r}: {info!r}") from None
        if data_start + end > size:
            raise CheckpointError(
                f"{file} is truncated: tensor {name!r} needs bytes up to {data_start + end}, the file has {size}"
            )
        if isinstance(dtype, torch.dtype) and end - begin != math.prod(shape) * dtype.itemsize:
            raise CheckpointError(f"{file}: tensor {name!r} {shape} {info['dtype']} has {end - begin} bytes of data")
        tensors[name] = StoredTensor(name, file, dtype, shape, data_start + begin, data_start + end)
    return tensors


def read_checkpoint_index(path: Path) -> dict[str, StoredTensor]:
    """Every tensor of the checkpoint directory: ``model.safetensors.index.json`` + shards, or ``model.safetensors``."""
    index_file = path / "model.safetensors.index.json"
    if index_file.is_file():
        try:
            weight_map = json.loads(index_file.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise CheckpointError(f"{index_file} is not a safetensors index (no weight_map): {error}") from None
        stored = {}
        for shard in sorted(set(weight_map.values())):
            for name, tensor in read_safetensors_header(path / shard).items():
                if name in stored:
                    raise CheckpointError(f"tensor {name!r} is in both {stored[name].file.name} and {shard}")
                stored[name] = tensor
        for name, shard in weight_map.items():
            if name not in stored or stored[name].file != path / shard:
                raise CheckpointError(f"{index_file.name} puts tensor {name!r} in {shard}, which does not contain it")
        return stored
    single = path / "model.safetensors"
    if single.is_file():
        return read_safetensors_header(single)
    raise CheckpointError(f"no model.safetensors or model.safetensors.index.json in {path}")


def check_checkpoint(stored: dict[str, StoredTensor], expected: dict[str, torch.Tensor]) -> None:
    """Raise :class:`CheckpointError` naming the problem unless ``stored`` has exactly the expected tensors."""
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    if missing:
        raise CheckpointError(f"checkpoint is missing {len(missing)} tensor(s): {_names(missing)}")
    if unexpected:
        hint = ""
        if any(name.endswith(("experts.gate_up_proj", "experts.down_proj")) for name in unexpected):
            hint = " (dense expert weights: this loader reads MXFP4 experts as *_blocks / *_scales)"
        raise CheckpointError(f"checkpoint has {len(unexpected)} unexpected tensor(s){hint}: {_names(unexpected)}")
    for name, target in expected.items():
        source = stored[name]
        if source.shape != tuple(target.shape):
            raise CheckpointError(
                f"tensor {name!r} in {source.file.name} has shape {list(source.shape)}, the config needs {list(target.shape)}"
            )
        wanted = "uint8" if target.dtype == torch.uint8 else "floating point"
        ok = source.dtype == torch.uint8 if target.dtype == torch.uint8 else (
            isinstance(source.dtype, torch.dtype) and source.dtype.is_floating_point)
        if not ok:
            raise CheckpointError(f"tensor {name!r} in {source.file.name} is {source.dtype}, expected {wanted}")


def _names(names: list[str], limit: int = 8) -> str:
    more = f" ... and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(repr(n) for n in names[:limit]) + more


@torch.no_grad()
def load_tensors(stored: dict[str, StoredTensor], targets: dict[str, torch.Tensor], *, progress: bool = True) -> None:
    """Read each stored tensor into its target, one at a time, file by file in byte order.

    A CPU target of the stored dtype is read into directly; otherwise through one staging tensor, which is the
    only extra memory (and the only place a dtype conversion happens).
    """
    order = sorted(stored.values(), key=lambda t: (str(t.file), t.start))
    bar = _progress_bar(len(order), enabled=progress)
    handle, handle_file = None, None
    try:
        for source in order:
            if source.file != handle_file:
                if handle is not None:
                    handle.close()
                handle, handle_file = open(source.file, "rb"), source.file
            target = targets[source.name]
            direct = target.device.type == "cpu" and target.dtype == source.dtype and target.is_contiguous()
            buffer = target if direct else torch.empty(source.shape, dtype=source.dtype)
            if buffer.numel():
                handle.seek(source.start)
                raw = buffer.view(-1).view(torch.uint8).numpy()
                if handle.readinto(memoryview(raw)) != source.end - source.start:
                    raise CheckpointError(f"{source.file} is truncated inside tensor {source.name!r}")
            if not direct:
                target.copy_(buffer)
            del buffer
            bar.update(1)
    finally:
        if handle is not None:
            handle.close()
        bar.close()


# =================================================================================================================
# Writing checkpoints in the same layout
# =================================================================================================================
def split_mxfp4(tensors: dict[str, torch.Tensor | MXFP4Tensor]) -> dict[str, torch.Tensor]:
    """Hub names for the bytes: an :class:`MXFP4Tensor` ``NAME`` becomes ``NAME_blocks`` and ``NAME_scales``."""
    out = {}
    for name, tensor in tensors.items():
        if isinstance(tensor, MXFP4Tensor):
            out[name + "_blocks"], out[name + "_scales"] = tensor.blocks, tensor.scales
        else:
            out[name] = tensor
    return out


def write_checkpoint(path, config: GptOssConfig | dict, tensors: dict[str, torch.Tensor | MXFP4Tensor], *,
                     shards: int = 1, save=None) -> Path:
    """Write ``config.json`` and the tensors as ``model.safetensors``, or as ``shards`` files plus the index.

    ``tensors`` may mix plain tensors and :class:`MXFP4Tensor` (written as ``NAME_blocks`` / ``NAME_scales``), on
    any device: one shard at a time is copied to the CPU. ``save(tensors, file, metadata)`` writes one file
    (default: safetensors' ``save_file``); pass ``mxfp4.save_file`` to write through the project's own writer.
    Tensors are dealt to shards in order, balanced by bytes.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config_dict = config.to_dict() if isinstance(config, GptOssConfig) else config
    (path / "config.json").write_text(json.dumps(config_dict, indent=2))
    if save is None:
        from safetensors.torch import save_file

        def save(group, file, metadata):
            cpu = {name: t.detach().to("cpu").contiguous() for name, t in split_mxfp4(group).items()}
            save_file(cpu, str(file), metadata=metadata)

    metadata = {"format": "pt"}  # transformers refuses safetensors files without it
    if shards == 1:
        save(tensors, path / "model.safetensors", metadata)
        return path

    def nbytes(t):
        return t.nbytes if isinstance(t, MXFP4Tensor) else t.numel() * t.element_size()

    total = sum(nbytes(t) for t in tensors.values())
    groups, size = [[]], 0
    for name, tensor in tensors.items():
        if size >= total * len(groups) / shards and len(groups) < shards:
            groups.append([])
        groups[-1].append(name)
        size += nbytes(tensor)
    weight_map = {}
    for i, names in enumerate(groups):
        file = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        save({n: tensors[n] for n in names}, path / file, metadata)
        for name in names:
            stored = (name + "_blocks", name + "_scales") if isinstance(tensors[name], MXFP4Tensor) else (name,)
            weight_map.update(dict.fromkeys(stored, file))
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return path


def _progress_bar(total: int, enabled: bool):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional: load silently without it
        enabled = False
    if not enabled:
        return _NoBar()
    return tqdm(total=total, desc="Loading GPT-OSS", unit="tensor")


class _NoBar:
    def update(self, n=1):
        pass

    def close(self):
        pass
