"""Vocabularies made comparable: every token as what it stands for, so that two tokenizers'
shared tokens can be found (the paper's step 1; mergekit's ``tokenizer/normalization.py``
does it with word-start markers, here with bytes).

A token's key is ``("bytes", b)`` for the bytes it decodes to (``Ġ`` of byte-level BPE and
``▁`` of SentencePiece both become a space; ``<0xNN>`` byte-fallback pieces that byte),
``("special", role)`` for the BOS, EOS, PAD and UNK tokens, ``("added", text)`` for other
special tokens (chat markers: shared only when spelled alike), ``("piece", text)`` for a
piece outside the byte alphabet.
"""
from __future__ import annotations

import json

from tokenworks.bytelevel.bytelm import FALLBACK, piece_bytes, tokenizer_kind

ROLES = ("bos", "eos", "pad", "unk")


def vocab_keys(tokenizer) -> dict[int, tuple]:
    """Token id -> key (module docstring) for every id of ``tokenizer``'s vocabulary. Where two
    ids stand for the same bytes (a byte-fallback piece and a text piece), the text piece
    keeps the bytes key and the fallback piece is keyed by its spelling."""
    backend = tokenizer.backend_tokenizer  # its decoder and model's flag: all tokenizer_kind reads, without the merges
    kind = tokenizer_kind({"decoder": json.loads(backend.decoder.__getstate__()),
                           "model": {"byte_fallback": getattr(backend.model, "byte_fallback", False)}})
    roles = {}
    for role in ROLES:
        i = getattr(tokenizer, f"{role}_token_id", None)
        if i is not None and int(i) not in roles:
            roles[int(i)] = ("special", role)
    added = {int(i) for i in tokenizer.all_special_ids} | {
        i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    pieces = {i: piece for piece, i in tokenizer.get_vocab().items()}
    keys, by_bytes = {}, {}
    for i in sorted(pieces):
        if i in roles:
            keys[i] = roles[i]
        elif i in added:
            keys[i] = ("added", pieces[i])
        else:
            b = piece_bytes(pieces[i], kind)
            keys[i] = ("piece", pieces[i]) if b is None else ("bytes", b)
    for i, key in keys.items():  # text pieces win over byte-fallback pieces of the same bytes
        if key[0] == "bytes":
            other = by_bytes.get(key[1])
            if other is None or (FALLBACK.fullmatch(pieces[other]) and not FALLBACK.fullmatch(pieces[i])):
                by_bytes[key[1]] = i
    for i, key in keys.items():
        if key[0] == "bytes" and by_bytes[key[1]] != i:
            keys[i] = ("piece", pieces[i])
    return keys


def shared_tokens(base_tokenizer, donor_tokenizer, base_rows: int | None = None,
                  donor_rows: int | None = None) -> dict[int, int]:
    """Donor id -> base id for every token both vocabularies hold (the same key). Ids at or past
    a model's embedding rows (``*_rows``: tokenizers may name more ids than a model has rows)
    are left out."""
    base = {key: i for i, key in vocab_keys(base_tokenizer).items() if base_rows is None or i < base_rows}
    return {i: base[key] for i, key in vocab_keys(donor_tokenizer).items()
            if key in base and (donor_rows is None or i < donor_rows)}
