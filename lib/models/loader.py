"""Load a model of the zoo, a packaged real model, or any Hugging Face hub model, the same way.

>>> model, tokenizer = load("tw-code")             # committed checkpoint under zoo/
>>> model, tokenizer = load("smollm2-135m")        # a GGUF from the package index (packaged.py)
>>> model, tokenizer = load("Qwen/Qwen2.5-0.5B")   # from the hub (online readers)
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import torch

from tokenworks.models.packaged import PACKAGED, converted
from tokenworks.paths import repo_root


def zoo_dir() -> Path:
    """The committed zoo: ``zoo/`` of the checkout (``tokenworks.paths``)."""
    return repo_root() / "zoo"


def __getattr__(name):  # ZOO_DIR is found on first use: importing the package needs no checkout
    if name == "ZOO_DIR":
        return zoo_dir()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

# Architecture of each zoo model (LlamaConfig fields); training settings live in
# reproduce/train_zoo.py. `tokenizer` names the tokenizer folder under zoo/.
ZOO: dict[str, dict] = {
    "tw-micro": dict(tokenizer="tokenizer-v1", hidden_size=64, intermediate_size=176,
                     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
    "tw-code-draft": dict(tokenizer="tokenizer-v1", hidden_size=128, intermediate_size=352,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
    "tw-code": dict(tokenizer="tokenizer-v1", hidden_size=256, intermediate_size=688,
                    num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2),
    "tw-code-v2": dict(tokenizer="tokenizer-v2", hidden_size=192, intermediate_size=512,
                       num_hidden_layers=4, num_attention_heads=6, num_key_value_heads=2),
    "tw-arith": dict(tokenizer="tokenizer-arith", hidden_size=128, intermediate_size=352,
                     num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2),
}
# tokenizer folder -> vocabulary size; tokenizer-arith splits digits and is trained on
# arithmetic problems, the others on the standard library
TOKENIZERS = {"tokenizer-v1": 4096, "tokenizer-v2": 2560, "tokenizer-arith": 384}
CONTEXT = 2048


def zoo_config(name: str, tokenizer):
    """The ``LlamaConfig`` of zoo model ``name`` with ``tokenizer``'s vocabulary."""
    from transformers import LlamaConfig

    arch = {k: v for k, v in ZOO[name].items() if k != "tokenizer"}
    return LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=CONTEXT,
                       rope_theta=10000.0, tie_word_embeddings=True, bos_token_id=None,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
                       **arch)


def load_weights(name: str, path: str | Path, tokenizer):
    """Zoo model ``name`` (float32, CPU) with the weights of a bare ``model.safetensors``, as
    training writes them on another machine; fails if they are not that model's."""
    from safetensors.torch import load_file
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM(zoo_config(name, tokenizer))
    missing, unexpected = model.load_state_dict(load_file(path), strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:  # the head is tied to the embedding
        raise ValueError(f"{path} does not hold a {name} checkpoint: missing {missing}, "
                         f"unexpected {unexpected}")
    model.tie_weights()
    return model


def _available() -> str:
    return ", ".join(["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())])


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; ``cpu`` and ``cuda[:N]`` must exist here."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device) if isinstance(device, (str, torch.device)) else None
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}: use 'auto', 'cpu' or 'cuda[:N]' "
                         f"(available: {_available()})")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available on this machine; pass "
                         f"device='cpu' or device='auto' (available: {_available()})")
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}: there are {torch.cuda.device_count()} CUDA devices "
                         f"(available: {_available()})")
    return dev


def sliding_attention(model) -> str | None:
    """What makes ``model`` attend through a sliding window, or None when every layer attends in
    full: ``layer_types`` other than full attention (Gemma-3), or a ``sliding_window`` where the
    config has no layer types (Mistral)."""
    config = model.config
    types = getattr(config, "layer_types", None)
    window = getattr(config, "sliding_window", None)
    other = sorted({t for t in types if t != "full_attention"}) if types else []
    if other or (not types and window is not None):
        return f"{type(model).__name__} has sliding_window={window}, layer types {other or 'unset'}"
    return None


def _is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


@contextmanager
def _no_loading_bars():
    """transformers' "Loading weights" bar off (a second's work here; in a notebook it leaves
    frames in the outputs), then back as it was."""
    from transformers.utils import logging

    active = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if active:
            logging.enable_progress_bar()


def load(name: str, device: str = "auto", dtype: torch.dtype | None = None):
    """Return ``(model, tokenizer)`` for a zoo name or a hub id, in eval mode on ``device``.

    Zoo checkpoints are stored in float16; they load as float32 on the CPU (``dtype``
    overrides). A hub id needs the network unless it is in the local cache; with
    ``HF_HUB_OFFLINE=1`` an unknown name fails at once with the list of zoo models.
    Packaged models (``PACKAGED``) are converted from their GGUF on first use and cached; they
    load as float32 on the CPU and bfloat16 on CUDA unless ``dtype`` says otherwise.
    The tokenizer encodes texts of any length (``model_max_length`` unbounded): callers cut
    their own windows to the model's positions.
    """
    from transformers.tokenization_utils_base import VERY_LARGE_INTEGER

    dev = resolve_device(device)
    with _no_loading_bars():
        model, tokenizer = _load(name, dev, dtype)
    tokenizer.model_max_length = VERY_LARGE_INTEGER
    return model.to(dev).eval(), tokenizer


def _load(name: str, dev: torch.device, dtype: torch.dtype | None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name in ZOO:
        path = zoo_dir() / name
        if not (path / "model.safetensors").exists():
            raise FileNotFoundError(
                f"zoo model {name!r} has no checkpoint at {path}; run `make models` to train it")
        dtype = dtype or (torch.float32 if dev.type == "cpu" else torch.float16)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(path)
    elif name in PACKAGED:
        path = converted(name)
        dtype = dtype or (torch.float32 if dev.type == "cpu" else torch.bfloat16)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(path)
    else:
        zoo = ", ".join(ZOO)
        if "/" not in name:
            raise ValueError(f"unknown model {name!r}: pass a zoo model ({zoo}), a packaged "
                             f"model ({', '.join(PACKAGED)}) or a hub id such as 'Qwen/Qwen2.5-0.5B'")
        try:
            tokenizer = AutoTokenizer.from_pretrained(name)
            model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype or "auto")
        except OSError as e:
            hint = (" HF_HUB_OFFLINE=1 is set and it is not in the local cache."
                    if _is_offline() else "")
            raise ValueError(f"could not load hub model {name!r}.{hint} "
                             f"Offline, use a zoo model ({zoo}) or a packaged model ({', '.join(PACKAGED)}).") from e
    return model, tokenizer
