"""Test set-up: offline hub, Triton in interpreter mode (set before triton is imported)."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


import functools  # noqa: E402


@functools.cache
def micro64():
    """tw-micro in float64 on the CPU (exact comparisons), with its tokenizer."""
    import torch

    from tokenworks.models import load
    return load("tw-micro", device="cpu", dtype=torch.float64)


def random_ids(n: int, seed: int = 0) -> list[int]:
    """``n`` random token ids of tw-micro's vocabulary (above its special tokens)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    return torch.randint(5, len(micro64()[1]), (n,), generator=g).tolist()


def token_by_token_nll(model, context: list[int], target: list[int], press):
    """Reference for multi-token continuations: prefill ``context`` under ``press`` (no
    harness padding), then score ``target`` one token at a time (a one-row query needs no
    attention mask). Returns (NLL [len(target)] float64, the cache's layer lengths)."""
    import torch
    from transformers import DynamicCache

    from tokenworks.kvcache import press_on
    cache = DynamicCache()
    with torch.no_grad(), press_on(model, press):
        logits = model(torch.tensor([context]), past_key_values=cache).logits[0, -1]
    lengths = [layer.keys.shape[2] for layer in cache.layers]
    nll = [-torch.log_softmax(logits.double(), -1)[target[0]]]
    with torch.no_grad():
        for i in range(len(target) - 1):
            logits = model(torch.tensor([[target[i]]]), past_key_values=cache,
                           position_ids=torch.tensor([[len(context) + i]])).logits[0, -1]
            nll.append(-torch.log_softmax(logits.double(), -1)[target[i + 1]])
    return torch.stack(nll), lengths
