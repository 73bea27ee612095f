"""Benchmark the tree-attention kernel against SDPA with a dense mask (on a GPU).

    python reproduce/bench_tree_attention.py        # writes results/tree_attention/<device>.json

Correctness first: every shape is checked against ``tree_attention_reference`` (fp16 within
1e-3) before it is timed; a shape that fails stops the run. Timings are the means that
``triton.testing.do_bench`` returns, both methods side by side in one process. SDPA gets the keys
repeated to the query heads (what a model without GQA-aware attention does) and the dense
``[T, L + T]`` boolean mask; the kernel reads the grouped keys and the ancestor bit words.
Shapes: Token Recycling's 80-node tree plus the root, a 7B-like layer (32 query heads, 8 KV
heads, head dim 128), caches from 512 to 32k tokens.
"""
from __future__ import annotations

import re

import torch
import triton.testing

from tokenworks.kernels.tree_attention import ancestor_bits, tree_attention, tree_attention_reference
from tokenworks.results import save_result
from tokenworks.speculative.token_recycling import TEMPLATE_80
from tokenworks.speculative.tree import DraftTree, template_from_paths


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU (the kernel's CPU interpreter is for tests)")
    dev, dtype = torch.device("cuda"), torch.float16
    parents, _ = template_from_paths(TEMPLATE_80)
    tree = DraftTree([0] * len(parents), parents)
    anc = tree.ancestor_mask(dev)
    bits = ancestor_bits(anc)
    hq, hkv, hd, T = 32, 8, 128, len(tree)
    gen = torch.Generator(device=dev).manual_seed(0)
    rows = []
    for L in (512, 2048, 8192, 32768):
        q = torch.randn(1, hq, T, hd, device=dev, dtype=dtype, generator=gen)
        k = torch.randn(1, hkv, L + T, hd, device=dev, dtype=dtype, generator=gen)
        v = torch.randn(1, hkv, L + T, hd, device=dev, dtype=dtype, generator=gen)
        err = (tree_attention(q, k, v, bits).float()
               - tree_attention_reference(q.float(), k.float(), v.float(), anc)).abs().max().item()
        if not err < 1e-3:
            raise SystemExit(f"kernel differs from the reference by {err} at cache {L}: no timing")
        visible = torch.ones(T, L + T, dtype=torch.bool, device=dev)
        visible[:, L:] = anc
        kr, vr = k.repeat_interleave(hq // hkv, 1), v.repeat_interleave(hq // hkv, 1)
        sdpa = triton.testing.do_bench(
            lambda: torch.nn.functional.scaled_dot_product_attention(q, kr, vr, attn_mask=visible))
        kernel = triton.testing.do_bench(lambda: tree_attention(q, k, v, bits))
        rows.append({"cache": L, "tree": T, "max_abs_err": err, "sdpa_ms": sdpa, "kernel_ms": kernel,
                     "speedup": sdpa / kernel})
        print(f"cache {L:>6}: SDPA {sdpa:.3f} ms, kernel {kernel:.3f} ms, {sdpa / kernel:.2f}x, "
              f"max error {err:.1e}", flush=True)
    name = re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name().lower()).strip("-")
    path = save_result("tree_attention", name, {"rows": rows},
                       {"heads": hq, "kv_heads": hkv, "head_dim": hd, "tree": T, "dtype": "float16"})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
