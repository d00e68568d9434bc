"""Device functions shared by the attention kernels (``decode_attention``, ``prefill_attention``). Not a kernel.

Both run GPT-OSS's softmax with a sink: an online softmax over key blocks (float32 running max ``m``, sum ``l`` and
weighted values), then the head's sink logit joins the denominator -- it takes probability mass and adds no value.
"""

import torch
import triton
import triton.language as tl

from .moe_common import cast

#: The model dtypes the attention kernels take (q, k, v and the cache share one).
ATTENTION_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
#: The smallest dimension ``tl.dot`` takes: query rows and head dims are padded up to it (and to powers of two).
DOT_MIN = 16


@triton.jit
def dot_operand(x, DOT_DTYPE: tl.constexpr, INTERPRETED: tl.constexpr):
    """A tensor-core dot operand in the model dtype (rounded to nearest even). Under the interpreter it is widened
    back to float32 after the rounding: the same values, since Triton 3.9's interpreter multiplies bf16 dot operands
    as their raw bits."""
    x = cast(x, DOT_DTYPE, INTERPRETED)
    if INTERPRETED:
        x = x.to(tl.float32)
    return x


@triton.jit
def online_softmax_step(m, l, scores):
    """Fold ``scores [rows, keys]`` (-inf where masked) into the running max ``m`` and sum ``l`` of each row.

    Returns ``(m_new, alpha, p, l_new)``: the weighted values so far are to be scaled by ``alpha`` and ``p`` (the
    block's unnormalized probabilities) times its values added. A row with nothing seen yet keeps ``m = -inf``, sums
    0 and gets no NaN (its exponents are taken against 0 instead of -inf).
    """
    m_new = tl.maximum(m, tl.max(scores, axis=1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp(m - m_safe)
    p = tl.exp(scores - m_safe[:, None])
    return m_new, alpha, p, l * alpha + tl.sum(p, axis=1)


@triton.jit
def sink_weight(m, l, sink):
    """Per row, the factor that turns the running weighted values into the output: ``exp(m - top) / (l exp(m - top) +
    exp(sink - top))`` with ``top = max(m, sink)``; 0 for a row that saw no key (the sink took all the mass)."""
    top = tl.maximum(m, sink)
    keys_w = tl.exp(m - top)
    return keys_w / (l * keys_w + tl.exp(sink - top))
