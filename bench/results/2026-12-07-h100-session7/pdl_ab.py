"""Session 7 probe, from the repository root: programmatic dependent launch (PDL) on / off in one process, rounds
alternating so that clock and thermal drift hit both sides alike. Run as R1 (``--moe --sweep --model``, the model
part then comparing PDL on / off only) on the tree with PDL, which was then removed: ``pdl_variant.diff`` puts it
back. Kept as the record of R1; ``norm_ab.py`` is the probe for the fused norms.

  1. ``--moe``: the MoE decode layer (router + gate_up GEMV + down GEMV), T = 1 and 8, E = 32, gpt-oss sizes: 9 layers per
     CUDA graph over 3 weight copies (past L2), us per layer;
  2. ``--sweep``: the down GEMV's launch shapes at T = 1 with BLOCK_N = 4 (never swept before) next to the table's;
  3. ``--model``: gpt-oss-20b (random MXFP4 experts) batch-1 decode through the CUDA-graph-captured step, tok/s,
     for three variants: both norms fused (into the q/k/v GEMV and the router) without PDL / with PDL; the
     unfused layer of session 6 without PDL.
"""
import os
import sys
import time

import torch

sys.path.insert(0, "bench")
from bench_moe import TOP_K, activations, gpt_oss_layer  # noqa: E402
from tune import graph_us  # noqa: E402

from mxfp4.triton_kernels import moe, moe_down_gemv, moe_gate_up_gemv, moe_routing  # noqa: E402


def set_pdl(on: bool) -> None:
    os.environ["MXFP4_PDL"] = "1" if on else "0"


layers = [gpt_oss_layer.__wrapped__(32) for _ in range(3)]
for tokens in (1, 8) if "--moe" in sys.argv else ():
    xt = activations(tokens)
    fns = [lambda l=l: moe.moe(xt, l[0], l[1], l[2].blocks, l[2].scales, l[3], l[4].blocks, l[4].scales, l[5], TOP_K,
                               1.702, 7.0, "hopper") for l in layers] * 3
    for rnd in range(3):
        cells = []
        for on in (True, False):
            set_pdl(on)
            cells.append(f"pdl={int(on)} {graph_us(fns):6.2f}")
        print(f"MoE layer T={tokens} E=32 round {rnd}: " + "   ".join(cells) + "  us/layer", flush=True)

if "--sweep" in sys.argv:
    set_pdl(False)
    xt = activations(1)
    routed = [moe_routing.route(xt, rw, rb, TOP_K) for rw, rb, *_ in layers]
    g_cfg, d_cfg = moe.gemv_schedule(TOP_K)
    acts = [moe_gate_up_gemv.gate_up_swiglu_gemv(xt, ids, l[2].blocks, l[2].scales, l[3], 1.702, 7.0, g_cfg,
                                                 torch.bfloat16) for (ids, _), l in zip(routed, layers)]
    cells = []
    for n, g, w in [(d_cfg.block_n, d_cfg.block_g, d_cfg.num_warps), (4, 8, 4), (4, 16, 4), (4, 32, 4), (4, 8, 2),
                    (4, 16, 2), (4, 32, 2), (8, 16, 4), (8, 32, 4)]:
        cfg = moe.GemvConfig(n, g, w)
        us = graph_us([lambda l=l, r=r, a=a: moe_down_gemv.down_combine_gemv(
            a, r[0], r[1], l[4].blocks, l[4].scales, l[5], cfg, torch.bfloat16)
            for l, r, a in zip(layers, routed, acts)] * 3)
        cells.append(f"{n}x{g}x{w} {us:.1f}")
    print("down GEMV T=1 (us): " + "  ".join(cells), flush=True)
    cells = []
    for n, g, w in [(g_cfg.block_n, g_cfg.block_g, g_cfg.num_warps), (4, 16, 4), (4, 32, 4), (4, 32, 2), (8, 32, 4)]:
        cfg = moe.GemvConfig(n, g, w)
        us = graph_us([lambda l=l, r=r: moe_gate_up_gemv.gate_up_swiglu_gemv(
            xt, r[0], l[2].blocks, l[2].scales, l[3], 1.702, 7.0, cfg, torch.bfloat16)
            for l, r in zip(layers, routed)] * 3)
        cells.append(f"{n}x{g}x{w} {us:.1f}")
    print("gate_up GEMV T=1 (us): " + "  ".join(cells), flush=True)

del layers
torch.cuda.empty_cache()

if "--model" in sys.argv:
    from gpt_oss_gpu import time_decode

    from mxfp4.models import gpt_oss
    from mxfp4.triton_kernels import decode_attention, dense_gemv

    fused_forward = gpt_oss.DecoderLayer.forward
    pdl_everywhere = dense_gemv.programmatic_dependent_launch

    def unfused_forward(self, x, pending, cos, sin, columns, pad, use_cache):  # the layer before this session
        x, h = self.input_layernorm.add_and_norm(x, pending)
        x, h = self.post_attention_layernorm.add_and_norm(x, self.self_attn(h, cos, sin, columns, pad, use_cache))
        return x, self.mlp(h)

    VARIANTS = {  # name: (layer forward, PDL, PDL on the MoE kernels only)
        "both-norms-fused": (fused_forward, False, False),
        "both+pdl": (fused_forward, True, False),
        "unfused": (unfused_forward, False, False),
    }

    def variant(name):
        forward, pdl, moe_only = VARIANTS[name]
        gpt_oss.DecoderLayer.forward = forward
        set_pdl(pdl)
        attention_pdl = (lambda device: False) if moe_only else pdl_everywhere
        dense_gemv.programmatic_dependent_launch = decode_attention.programmatic_dependent_launch = attention_pdl

    model = gpt_oss.GptOss.from_config(gpt_oss.GptOssConfig.from_name("gpt-oss-20b"), device="cuda").init_random_(0)
    for rnd in range(3):
        cells = []
        for name in VARIANTS:
            variant(name)
            cells.append(f"{name} {1 / time_decode(model, 1, 128, 400, graph=True):6.1f}")
        print(f"gpt-oss-20b batch-1 decode tok/s, CUDA graph, round {rnd}: " + "   ".join(cells), flush=True)
    variant("both-norms-fused")
