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
