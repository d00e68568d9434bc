"""Session 11, from the repository root: the MoE decode GEMVs with W2 read by TMA (moe_down_gemv's TMA kernel),
E=32, top-4, T=1 and T=2 (4 / 8 pairs), 3 layers rotated past L2, CUDA graphs: the register down GEMV (the table's
shape) against TMA launch shapes (block_n x block_g x warps x stages), outputs compared bitwise at equal shape and
within 1e-2 otherwise; then the whole layer with moe.TMA_DOWN_ON off / on (at moe.TMA_DOWN)."""
import itertools
import sys

import torch

sys.path.insert(0, "bench")
from bench_moe import HIDDEN, TOP_K, gpt_oss_layer  # noqa: E402
from tune import CALLS, graph_us  # noqa: E402

from mxfp4.triton_kernels import moe, moe_down_gemv, moe_gate_up_gemv, moe_routing  # noqa: E402

layers = [gpt_oss_layer.__wrapped__(32) for _ in range(3)]


def per_layer(make):
    return [make(i) for i in range(len(layers))] * (CALLS // len(layers) + 1)


for tokens in (1, 2):
    pairs = tokens * TOP_K
    x = torch.randn(tokens, HIDDEN, device="cuda").to(torch.bfloat16)
    routed = [moe_routing.route(x, rw, rb, TOP_K) for rw, rb, *_ in layers]
    acts = [moe_gate_up_gemv.gate_up_swiglu_gemv(x, ids, w1.blocks, w1.scales, b1, 1.702, 7.0, moe.TMA_GATE_UP,
                                                 torch.bfloat16, True)
            for (ids, _), (_, _, w1, b1, _, _) in zip(routed, layers)]

    def down(config, tma):
        return per_layer(lambda i: lambda: moe_down_gemv.down_combine_gemv(
            acts[i], routed[i][0], routed[i][1], layers[i][4].blocks, layers[i][4].scales, layers[i][5], config,
            torch.bfloat16, tma))

    table = moe.gemv_schedule(pairs)[1]
    want = down(table, False)[0]()
    cells = [f"registers {table.block_n}x{table.block_g}x{table.num_warps} {graph_us(down(table, False)):.2f}"]
    for block_n, block_g, warps, stages in itertools.chain(
            itertools.product((8, 16, 32), (8, 16), (4,), (3,)), [(16, 8, 4, 4), (16, 8, 8, 3), (8, 16, 4, 4)]):
        config = moe.GemvConfig(block_n, block_g, warps, stages)
        try:
            got = down(config, True)[0]()
            same = torch.equal(got, down(moe.GemvConfig(block_n, block_g, warps), False)[0]())
            close = torch.allclose(got.float(), want.float(), rtol=1e-2, atol=1e-2 * want.float().abs().max().item())
            cells.append(f"tma {block_n}x{block_g}x{warps}x{stages} {graph_us(down(config, True)):.2f}"
                         + ("" if same and close else " DIFFERS"))
        except Exception as e:  # a shape that does not compile is a result too
            cells.append(f"tma {block_n}x{block_g}x{warps}x{stages} {type(e).__name__}")
    print(f"MoE down GEMV T={tokens} (us): " + " | ".join(cells), flush=True)

x = torch.randn(1, HIDDEN, device="cuda").to(torch.bfloat16)
cells = []
for label, down_on in (("tma gate_up only", False), ("tma gate_up + down", True)):
    moe.TMA_DOWN_ON = down_on
    us = graph_us(per_layer(lambda i: lambda: moe.moe(
        x, layers[i][0], layers[i][1], layers[i][2].blocks, layers[i][2].scales, layers[i][3], layers[i][4].blocks,
        layers[i][4].scales, layers[i][5], TOP_K, 1.702, 7.0, "hopper")))
    cells.append(f"{label} {us:.1f}")
moe.TMA_DOWN_ON = False
print("MoE T=1 E=32 whole layer (us): " + " | ".join(cells), flush=True)
