"""Benchmark TokenSelect's decode attention over selected tokens against full decode attention.

    python reproduce/bench_tokenselect.py            # on a GPU: writes results/tokenselect/<device>.json
    TRITON_INTERPRET=1 python reproduce/bench_tokenselect.py --check-only   # CPU, small shapes

Correctness first: at every context the kernels are checked against their PyTorch references
(``gathered_decode_attention`` within 1e-3 in fp16, ``qk_scores`` within 1e-3 relative); a
failure stops the run before anything is timed. Then, side by side in one process, each call replayed
from a CUDA graph (``triton.testing.do_bench_cudagraph``, mean ms; a decode step at batch 1 is
a few microseconds of memory traffic, so without graphs the kernel-launch overhead of the
Python calls is what gets timed; those eager timings are kept as ``*_eager_ms``), for one
7B-like layer (32 query heads, 8 KV heads, head
dim 128, fp16, batch 1, one decode query):

- ``sdpa_ms``: full decode attention, PyTorch SDPA over the whole cache (the faster of
  ``enable_gqa=True`` and keys/values repeated to the query heads beforehand, untimed);
- ``kernel_full_ms``: our gathered kernel over every cached token (same kernel, all indices);
- ``kernel_selected_ms``: our gathered kernel over ``selected`` tokens (2048, the check in
  issue 3, at sorted random positions);
- ``select_ms``: TokenSelect's selection, ``qk_scores`` over the cache, per-head softmax, sum
  over heads (soft voting) and top-k, so that ``select_ms + kernel_selected_ms`` is the cost of
  a decode step's attention when the selection is not reused.
"""
from __future__ import annotations

import argparse
import re

import torch

from tokenworks.kernels.tokenselect import (gathered_decode_attention,
                                            gathered_decode_attention_reference, qk_scores,
                                            qk_scores_reference)
from tokenworks.kvcache.tokenselect import soft_vote

HQ, HKV, HD = 32, 8, 128


def check(q, k, v, idx) -> dict:
    out = gathered_decode_attention(q, k, v, idx)
    err = (out.float() - gathered_decode_attention_reference(q, k, v, idx).float()).abs().max().item()
    s, ref = qk_scores(q, k), qk_scores_reference(q, k)
    rel = ((s - ref).abs().max() / ref.abs().max()).item()
    if not (err < 1e-3 and rel < 1e-3):
        raise SystemExit(f"kernels differ from their references at context {k.shape[2]} "
                         f"(attention {err:.1e}, scores {rel:.1e} relative): no timing")
    return {"max_abs_err": err, "scores_rel_err": rel}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check-only", action="store_true", help="correctness at small shapes (CPU)")
    ap.add_argument("--selected", type=int, default=2048)
    args = ap.parse_args(argv)
    if args.check_only:
        dev, dtype, contexts, sel = torch.device("cpu"), torch.float32, (300, 1000), 100
    elif not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU (use --check-only on the CPU)")
    else:
        dev, dtype, contexts, sel = torch.device("cuda"), torch.float16, (4096, 8192, 16384, 32768, 65536, 131072), args.selected
    import triton.testing

    gen = torch.Generator(device=dev).manual_seed(0)
    rows = []
    for T in contexts:
        q = torch.randn(1, HQ, HD, device=dev, dtype=dtype, generator=gen)
        k = torch.randn(1, HKV, T, HD, device=dev, dtype=dtype, generator=gen)
        v = torch.randn(1, HKV, T, HD, device=dev, dtype=dtype, generator=gen)
        idx = torch.randperm(T, device=dev, generator=gen)[:sel].sort().values[None]
        row = {"context": T, "selected": sel, **check(q, k, v, idx)}
        if args.check_only:
            print(row)
            continue
        q4 = q[:, :, None]
        kr, vr = k.repeat_interleave(HQ // HKV, 1), v.repeat_interleave(HQ // HKV, 1)
        every = torch.arange(T, device=dev)[None]
        calls = {"sdpa": [lambda: torch.nn.functional.scaled_dot_product_attention(q4, k, v, enable_gqa=True),
                          lambda: torch.nn.functional.scaled_dot_product_attention(q4, kr, vr)],
                 "kernel_full": [lambda: gathered_decode_attention(q, k, v, every)],
                 "kernel_selected": [lambda: gathered_decode_attention(q, k, v, idx)],
                 "select": [lambda: soft_vote(q, k, sel)]}
        for name, fns in calls.items():
            row[f"{name}_ms"] = min(triton.testing.do_bench_cudagraph(f) for f in fns)
            row[f"{name}_eager_ms"] = min(triton.testing.do_bench(f) for f in fns)
        del kr, vr, calls
        row["speedup_attention"] = row["sdpa_ms"] / row["kernel_selected_ms"]
        row["speedup_with_selection"] = row["sdpa_ms"] / (row["kernel_selected_ms"] + row["select_ms"])
        rows.append(row)
        print(f"context {T:>6}: SDPA {row['sdpa_ms']:.3f} ms, kernel all {row['kernel_full_ms']:.3f} ms, "
              f"kernel {sel} selected {row['kernel_selected_ms']:.3f} ms ({row['speedup_attention']:.1f}x), "
              f"selection {row['select_ms']:.3f} ms ({row['speedup_with_selection']:.2f}x with it)", flush=True)
    if args.check_only:
        return
    from tokenworks.results import save_result

    name = re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name().lower()).strip("-")
    path = save_result("tokenselect", name, {"rows": rows},
                       {"heads": HQ, "kv_heads": HKV, "head_dim": HD, "selected": sel, "dtype": "float16",
                        "batch": 1, "device_name": torch.cuda.get_device_name()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
