"""Tokenizer transplantation without training (Goddard and Fernandes Neto, arXiv 2506.06607;
mergekit's ``mergekit-tokensurgeon``): give a *base* model a *donor*'s tokenizer.

1. Normalise both vocabularies (``vocab.vocab_keys``) and copy the base rows of shared tokens.
2. Every other donor token ``v`` gets a row built by one of ``METHODS``:
   ``omp`` (the paper's): express the donor's row ``e_d(v)`` as a ``k``-sparse combination of
   the shared tokens' donor rows by OMP, ``e_d(v) ~ sum_t c_t e_d(a_t)``, and apply the same
   coefficients to their base rows, ``e_b(v) = sum_t c_t e_b(a_t)``;
   ``zero``; ``mean`` (the mean base row); ``subword`` (the mean base row of the base
   tokenizer's pieces of ``v``'s text).
3. The input embedding and the output head are built separately, each from its own donor and
   base matrices (once, where both models tie them).
"""
from __future__ import annotations

import copy

import torch

from tokenworks.ids import check_count
from tokenworks.transplant.omp import batch_omp
from tokenworks.transplant.vocab import shared_tokens, vocab_keys


def _omp(base, donor, shared, new, k, **_):
    """The donor's coefficients over its anchor rows, applied to the base's anchor rows:
    sum_t c_t B_{j_t}, one pick at a time ([N, d] each; gathering all picks at once is
    [N, k, d], 32 GB for SmolLM2 given Gemma-3's 216k new tokens)."""
    anchors_d, anchors_b = list(shared), list(shared.values())
    idx, coef = batch_omp(donor[new].float(), donor[anchors_d].float(), k)  # [N, k'] each
    anchors = base[anchors_b].float()  # [A, d]
    rows = anchors.new_zeros(len(new), anchors.shape[1])  # [N, d]
    for t in range(idx.shape[1]):
        rows += coef[:, t, None] * anchors[idx[:, t]]
    return rows


def _zero(base, donor, shared, new, k, **_):
    return base.new_zeros(len(new), base.shape[1])


def _mean(base, donor, shared, new, k, **_):
    return base.float().mean(0).expand(len(new), -1)


def _subword(base, donor, shared, new, k, donor_tokenizer, base_tokenizer, **_):
    """The base tokenizer's pieces of each new token's text (a special role, or bytes that are no
    text alone: the mean base row)."""
    keys, mean = vocab_keys(donor_tokenizer), base.float().mean(0)
    rows = []
    for v in new:
        text = _text(*keys[v])
        pieces = [] if text is None else base_tokenizer(text, add_special_tokens=False)["input_ids"]
        pieces = [p for p in pieces if p < len(base)]
        rows.append(base[pieces].float().mean(0) if pieces else mean)
    return torch.stack(rows) if rows else base.new_zeros(0, base.shape[1])


def _text(kind: str, value) -> str | None:
    """A vocabulary key's text: its spelling, or its bytes decoded (None for a special role, whose
    key is its role's name, and for bytes that are no text)."""
    if kind == "special":
        return None
    if kind != "bytes":
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


METHODS = {"omp": _omp, "zero": _zero, "mean": _mean, "subword": _subword}


def transplant_rows(base: torch.Tensor, donor: torch.Tensor, shared: dict[int, int], method: str = "omp",
                    k: int = 64, **tokenizers) -> torch.Tensor:
    """A donor-vocabulary matrix in the base model's space: base [Vb, d_b], donor [Vd, d_d],
    ``shared`` donor id -> base id -> [Vd, d_b] in the base's dtype; shared rows are the base
    rows, bit for bit. ``subword`` needs ``donor_tokenizer`` and ``base_tokenizer``."""
    if method not in METHODS:
        raise ValueError(f"unknown transplant method {method!r}: choose from {', '.join(METHODS)}")
    check_count("k", k)
    if not shared:
        raise ValueError("the two vocabularies share no token: there are no anchors to transplant from")
    new = [v for v in range(len(donor)) if v not in shared]
    out = base.new_zeros(len(donor), base.shape[1])
    out[list(shared)] = base[list(shared.values())]
    if new:
        out[new] = METHODS[method](base, donor, shared, new, k, **tokenizers).to(base.dtype)
    return out


@torch.no_grad()
def transplant(base_model, base_tokenizer, donor_model, donor_tokenizer, method: str = "omp", k: int = 64):
    """A copy of ``base_model`` that speaks ``donor_tokenizer``: its input embedding and output
    head rebuilt over the donor's vocabulary (``transplant_rows``), its special token ids the
    donor's. Returns (model, report) with the counts of shared and new tokens."""
    if method not in METHODS:
        raise ValueError(f"unknown transplant method {method!r}: choose from {', '.join(METHODS)}")
    base_in, donor_in = base_model.get_input_embeddings().weight, donor_model.get_input_embeddings().weight
    shared = shared_tokens(base_tokenizer, donor_tokenizer, base_rows=len(base_in), donor_rows=len(donor_in))
    tokenizers = {"donor_tokenizer": donor_tokenizer, "base_tokenizer": base_tokenizer}
    rows = transplant_rows(base_in, donor_in, shared, method, k, **tokenizers)
    tied = base_model.config.get_text_config().tie_word_embeddings
    if not tied:
        donor_out = donor_model.get_output_embeddings().weight
        head = transplant_rows(base_model.get_output_embeddings().weight, donor_out, shared, method, k, **tokenizers)
    model = copy.deepcopy(base_model)
    model.resize_token_embeddings(len(rows), mean_resizing=False)
    model.get_input_embeddings().weight.copy_(rows)
    if not tied:
        model.get_output_embeddings().weight.copy_(head)
    for role in ("bos", "eos", "pad"):
        i = getattr(donor_tokenizer, f"{role}_token_id", None)
        for config in {id(c): c for c in (model.config, model.config.get_text_config(), model.generation_config)}.values():
            setattr(config, f"{role}_token_id", i)
    return model, {"method": method, "k": k, "shared": len(shared), "new": len(donor_in) - len(shared),
                   "donor_vocab": len(donor_in), "base_vocab": len(base_in), "tied": tied}
