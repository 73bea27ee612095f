"""Choose between zoo checkpoints trained elsewhere, on held-out *validation* files.

    python reproduce/select_checkpoint.py tw-code DIR_A DIR_B ...   # each DIR/<model>/model.safetensors

For each candidate: retrieval probes at ~1,000 and ~1,900 tokens on the validation files
(seed 1; the model card's probes use the test files, seed 0) and validation bits per byte.
The kept candidate has the best mean retrieval, ties broken by bits per byte; install it
with ``train_zoo.py --models <model> --install DIR``. Nothing is written: the choice is a
step of training, and the card of the installed model holds the measured numbers.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import AutoTokenizer

from tokenworks.models.corpus import stdlib_corpus
from tokenworks.models import ZOO, ZOO_DIR, load_weights
from tokenworks.models.zoo import bits_per_byte, retrieval_probe


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", choices=[n for n in ZOO if n != "tw-arith"])
    ap.add_argument("candidates", nargs="+", type=Path)
    ap.add_argument("--probes", type=int, default=20, help="probes per distance")
    args = ap.parse_args(argv)
    tok = AutoTokenizer.from_pretrained(ZOO_DIR / ZOO[args.model]["tokenizer"])
    texts = stdlib_corpus().texts("validation")
    scored = []
    for folder in args.candidates:
        model = load_weights(args.model, folder / args.model / "model.safetensors", tok).eval()
        probes = {d: retrieval_probe(model, tok, texts, d, n_probes=args.probes, seed=1)["accuracy"]
                  for d in (1000, 1900)}
        bpb = bits_per_byte(model, tok, texts, 512)["bits_per_byte"]
        scored.append((sum(probes.values()) / len(probes), -bpb, folder))
        print(f"{folder}: retrieval {probes}, validation {bpb:.4f} bits/byte", flush=True)
    best = max(scored, key=lambda s: s[:2])
    print(f"keep {best[2]}")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
