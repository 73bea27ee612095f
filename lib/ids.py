"""Input checks shared by every family's entry points: counts, ratios, EOS ids, and token ids: a list or tuple of
ints, a 1-D integer tensor, or a ``[1, n]`` integer tensor, every id inside the model's
vocabulary. Anything else (a batch, float ids, an empty prompt, an id the embedding does not
hold) is refused with a message that says what to pass."""
from __future__ import annotations

import numbers

import torch


def vocab_size(model) -> int:
    """Rows of the model's input embedding: the ids it can read."""
    return model.get_input_embeddings().weight.shape[0]


def check_ratio(name: str, value) -> float:
    """A compression ratio: a real number in [0, 1), the fraction of the cache removed."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1) (the fraction of the cache removed), got {value!r}")
    return float(value)


def check_count(name: str, value, least: int = 1) -> int:
    """``value`` as an int of at least ``least`` (a number of tokens, entries, steps): bools and
    non-integers are refused (TypeError), values below ``least`` too (ValueError)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {least}, got {value!r} ({type(value).__name__})")
    if value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {value}")
    return int(value)


def as_ids(ids, model=None, name: str = "input_ids", allow_empty: bool = False) -> list[int]:
    """``ids`` as a list of ints, checked against ``model``'s vocabulary when given."""
    if isinstance(ids, torch.Tensor):
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer token ids, got a {ids.dtype} tensor: "
                            "tokenize the text, or cast exact ids with .long()")
        if ids.dim() == 2:
            if ids.shape[0] != 1:
                raise ValueError(f"{name}: one sequence expected, got a batch of {ids.shape[0]}: "
                                 "call once per sequence")
            ids = ids[0]
        if ids.dim() != 1:
            raise ValueError(f"{name} must be 1-D or [1, n], got shape {tuple(ids.shape)}")
        ids = ids.tolist()
    elif isinstance(ids, (str, bytes)) or not hasattr(ids, "__iter__"):
        raise TypeError(f"{name} must be token ids (a list of ints or an integer tensor), got "
                        f"{type(ids).__name__}: tokenize the text first")
    out = []
    for t in ids:
        if isinstance(t, bool) or not isinstance(t, numbers.Integral):
            raise TypeError(f"{name} must hold integer token ids, got {t!r} ({type(t).__name__})")
        out.append(int(t))
    if not out and not allow_empty:
        raise ValueError(f"{name} is empty: pass at least one token id")
    if model is not None and out:
        n = vocab_size(model)
        bad = [t for t in out if not 0 <= t < n]
        if bad:
            raise ValueError(f"{name} holds ids outside the model's vocabulary [0, {n}): {bad[:5]}; "
                             "encode with this model's own tokenizer")
    return out


def eos_ids(eos_token_id=None, model=None) -> frozenset[int]:
    """The ids that end a generation: one id, or a list, tuple or set of ids (Llama-3 ends on
    ``<|end_of_text|>`` and on ``<|eot_id|>``); an empty collection for none. ``None`` reads
    ``model.config.eos_token_id`` in full (an int, a list, or none at all). Every id is
    checked like :func:`as_ids` (against ``model``'s vocabulary when given)."""
    name = "eos_token_id"
    if eos_token_id is None:
        eos_token_id = getattr(getattr(model, "config", None), "eos_token_id", None)
        name = "the model's config.eos_token_id"
        if eos_token_id is None:
            return frozenset()
    if isinstance(eos_token_id, numbers.Integral):  # a bool too: as_ids refuses it
        eos_token_id = [eos_token_id]
    return frozenset(as_ids(eos_token_id, model, name=name, allow_empty=True))
