"""Exact next-byte probabilities from a token-level LM with a byte-level BPE tokenizer.

Phan et al., *Exact Byte-Level Probabilities from Tokenized Language Models for FIM-Tasks
and Model Ensembles*, ICLR 2025 (arXiv 2410.09303), the Byte-Token Representation Lemma.

Definitions (bytes ``x``, token sequences ``t``; ``bytes(t)`` their concatenated bytes):

* ``t`` is *valid* when the tokenizer itself produces it: ``encode(bytes(t)) == t``. A model
  trained on tokenized text only ever sees valid sequences, so the token-level distribution
  used here is the model's, renormalised over the valid next tokens (and EOS) at each step;
  everything below is exact with respect to that distribution.
* The *cover* of ``x``: valid ``t`` with ``bytes(t[:-1])`` a proper prefix of ``x`` and ``x`` a
  prefix of ``bytes(t)``. Every generation whose bytes start with ``x`` starts with exactly one
  cover element, so ``P(x) = sum_{t in cover(x)} P(t)`` (the lemma, eq. 3 of the paper).
* Next byte (eq. 5): ``P(x b) / P(x)``, where ``P(x b)`` takes the cover elements that
  overhang ``x`` with next byte ``b`` (*pass*) and, for every valid ``u`` with
  ``bytes(u) == x`` exactly, ``P(u)`` times the mass of the valid next tokens starting with
  ``b`` (*branch*); the end of text is ``P(u) P(EOS | u)``.

Deviations and limits: validity of ``t + (s,)`` re-encodes only the last pre-token chunk
of ``t`` and ``s`` (GPT-2's split regex; other byte-level tokenizers re-encode everything),
but it is still checked for every vocabulary entry at every new prefix; every model call is
a full forward of ``EOS + t`` (memoised per prefix), no KV-cache reuse yet; a sequence whose
bytes end inside a multi-byte UTF-8 character cannot be re-encoded and counts as invalid,
so a character that the tokenizer splits across tokens gets probability 0 wherever it
occurs (characters held by single tokens, and all ASCII, are exact). Probabilities stay in
log space.
"""
from __future__ import annotations

import functools
import json
import math

import torch

END = 256  # index of the end-of-text event in a next-byte distribution


def byte_decoder() -> dict[str, int]:
    """The byte-level alphabet (GPT-2's printable stand-ins for the 256 bytes) -> byte."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


class ByteLM:
    """``next_byte_logprobs(prefix)``: 257 log-probabilities (bytes 0-255, then the end)."""

    def __init__(self, model, tokenizer):
        spec = json.loads(tokenizer.backend_tokenizer.to_str())
        if (spec.get("decoder") or {}).get("type") != "ByteLevel":
            raise ValueError("ByteLM needs a byte-level BPE tokenizer (GPT-2 style: a ByteLevel "
                             f"decoder); {type(tokenizer).__name__} has decoder "
                             f"{(spec.get('decoder') or {}).get('type')!r}")
        self.model, self.tokenizer = model, tokenizer
        self.eos = tokenizer.eos_token_id
        alphabet = byte_decoder()
        special = set(tokenizer.all_special_ids)
        self.token_bytes: dict[int, bytes] = {}
        for i, piece in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
            if i not in special and all(c in alphabet for c in piece):
                self.token_bytes[i] = bytes(alphabet[c] for c in piece)
        first = torch.tensor([b[0] for b in self.token_bytes.values()])
        ids = torch.tensor(list(self.token_bytes))
        self._by_first_byte = {b: ids[first == b] for b in first.unique().tolist()}  # byte -> ids
        self.device = next(model.parameters()).device
        pre = spec.get("pre_tokenizer") or {}
        # the tail check below relies on GPT-2's split regex (chunks never look behind, and
        # only the last chunk of a string can change when bytes are appended)
        self._tail_check = (pre.get("type") == "ByteLevel" and pre.get("use_regex", True)
                            and not spec.get("normalizer"))
        self._valid = functools.lru_cache(maxsize=None)(self._valid_uncached)
        self._last_chunk = functools.lru_cache(maxsize=None)(self._last_chunk_uncached)
        self._logits: dict[tuple, torch.Tensor] = {}  # raw, per (context, token prefix)
        self._logp: dict[tuple, torch.Tensor] = {}  # renormalised over valid next tokens

    # --- token level ---------------------------------------------------------------------

    def _bytes(self, tokens) -> bytes:
        return b"".join(self.token_bytes[t] for t in tokens)

    def _encode(self, text: str) -> tuple[int, ...]:
        return tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _last_chunk_start(self, text: str) -> int:
        """Byte offset in ``text`` where its last pre-token chunk starts."""
        chunks = self.tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)
        return len(text[:chunks[-1][1][0]].encode("utf-8")) if chunks else 0

    def _valid_uncached(self, tokens: tuple[int, ...]) -> bool:
        try:
            text = self._bytes(tokens).decode("utf-8")
        except UnicodeDecodeError:
            return False
        return self._encode(text) == tokens

    def _last_chunk_uncached(self, tokens: tuple[int, ...]) -> tuple[int, bytes] | None:
        """(index of the first token of the last pre-token chunk, that chunk's bytes)."""
        data = self._bytes(tokens)
        try:
            start = self._last_chunk_start(data.decode("utf-8"))
        except UnicodeDecodeError:
            return None
        at = 0
        for j, t in enumerate(tokens):
            if at == start:
                return j, data[start:]
            at += len(self.token_bytes[t])
        return len(tokens), b""

    def valid_next(self, tokens: tuple[int, ...], s: int) -> bool:
        """Is ``tokens + (s,)`` valid, given that ``tokens`` is? With GPT-2's pre-tokenizer
        only the last chunk can change, so only it and ``s`` are re-encoded (the paper's
        incremental check); other byte-level tokenizers re-encode everything."""
        if not self._tail_check:
            return self._valid(tokens + (s,))
        last = self._last_chunk(tokens)
        if last is None:
            return False
        j, tail = last
        try:
            text = (tail + self.token_bytes[s]).decode("utf-8")
        except UnicodeDecodeError:
            return False
        return self._encode(text) == tokens[j:] + (s,)

    @torch.no_grad()
    def next_token_logprobs(self, tokens: tuple[int, ...], context: tuple[int, ...] = ()) -> torch.Tensor:
        """log P(s | context, tokens) over the vocabulary, renormalised over valid
        ``tokens + (s,)`` and EOS (``-inf`` elsewhere). [V] float64. ``context``: token ids
        the bytes are conditioned on (a prompt, FIM sentinels), not part of the byte string."""
        key = (context, tokens)
        if key not in self._logp:
            if key not in self._logits:
                x = torch.tensor([[self.eos, *context, *tokens]], device=self.device)
                logits = self.model(x).logits[0, len(context):].double().cpu()  # [len(tokens) + 1, V]
                # the forward gives every prefix's logits; keep the last ones, which the cover
                # search asks for next (older ones cost a new forward if ever needed)
                for k in range(max(0, len(tokens) - 32), len(tokens) + 1):
                    self._logits.setdefault((context, tokens[:k]), logits[k])
            self._logp[key] = self._renormalise(tokens, self._logits.pop(key))
        return self._logp[key]

    def _renormalise(self, tokens: tuple[int, ...], logits: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros_like(logits, dtype=torch.bool)
        mask[self.eos] = True
        for s in self.token_bytes:
            mask[s] = self.valid_next(tokens, s)
        return torch.log_softmax(logits.masked_fill(~mask, -math.inf), -1)

    def sequence_logprob(self, tokens: tuple[int, ...], context: tuple[int, ...] = (),
                         start: int = 0) -> float:
        """log P(tokens[start:] | context, tokens[:start]); ``start=0``: the whole sequence."""
        return sum(float(self.next_token_logprobs(tokens[:k], context)[tokens[k]])
                   for k in range(start, len(tokens)))

    # --- byte level ------------------------------------------------------------------------

    def _head(self, x: bytes) -> tuple[tuple[int, ...], int]:
        """The canonical tokens of ``x`` up to the start of its last pre-token chunk, and that
        start. Appending bytes changes only the last chunk (GPT-2's regex), so every cover
        element of ``x`` begins with these tokens: the cover search starts after them."""
        if not self._tail_check or not x:
            return (), 0
        k = len(x)
        while k and k > len(x) - 4:  # drop a character cut short at the end
            try:
                text = x[:k].decode("utf-8")
                break
            except UnicodeDecodeError:
                k -= 1
        else:
            return (), 0
        start = self._last_chunk_start(text)
        return self._encode(x[:start].decode("utf-8")), start

    def exact_encodings(self, prefix: bytes) -> list[tuple[int, ...]]:
        """Every valid token sequence whose bytes are exactly ``prefix``."""
        return [t for t, overhang in self._paths(prefix) if not overhang]

    def cover(self, prefix: bytes) -> list[tuple[int, ...]]:
        """The cover of ``prefix`` (see the module docstring); ``[()]`` for empty bytes."""
        return [t for t, _ in self._paths(prefix)] if prefix else [()]

    def _paths(self, x: bytes, head: tuple[tuple[int, ...], int] | None = None):
        """(t, overhangs) for valid t with bytes(t[:-1]) a proper prefix of x and x a prefix
        of bytes(t): t either ends exactly at len(x) or its last token runs past it. The
        search starts after ``head`` (``_head(x)`` unless given)."""
        out, stack = [], [head or self._head(x)]
        while stack:
            t, at = stack.pop()
            if at == len(x):
                out.append((t, False))
                continue
            rest = x[at:]
            for s, b in self.token_bytes.items():
                if b.startswith(rest) and len(b) > len(rest) and self.valid_next(t, s):
                    out.append((t + (s,), True))
                elif rest.startswith(b) and self.valid_next(t, s):
                    stack.append((t + (s,), at + len(b)))
        return out

    def prefix_logprob(self, prefix: bytes, context: tuple[int, ...] = ()) -> float:
        """log P(the generated bytes start with ``prefix`` | context) = log sum over its cover."""
        terms = [self.sequence_logprob(t, context) for t in self.cover(prefix)]
        return float(torch.logsumexp(torch.tensor(terms, dtype=torch.float64), 0)) if terms else -math.inf

    def next_byte_logprobs(self, prefix: bytes | str, context: tuple[int, ...] = ()) -> torch.Tensor:
        """log P(next byte | context, prefix) for bytes 0-255 and the end of text (index 256).

        Every cover element starts with the same head tokens (``_head``), whose probability
        cancels in P(x b) / P(x): only the tokens after the head are scored. [257]"""
        if isinstance(prefix, str):
            prefix = prefix.encode("utf-8")
        if not isinstance(prefix, bytes):
            raise TypeError(f"prefix must be bytes or str, got {type(prefix).__name__}")
        context = tuple(context)
        head = self._head(prefix)
        n, start = len(prefix), len(head[0])
        covers = self._paths(prefix, head) if prefix else [((), False)]
        if not covers:
            raise ValueError(f"no valid tokenization covers {prefix!r} (a character the tokenizer "
                             "splits across tokens? see the module docstring)")
        terms: list[list[torch.Tensor]] = [[] for _ in range(257)]  # log-masses per next byte
        scores = [torch.tensor(self.sequence_logprob(t, context, start), dtype=torch.float64)
                  for t, _ in covers]
        for (t, overhang), logp in zip(covers, scores):
            if overhang:  # pass: the last token already fixes the next byte
                terms[self._bytes(t)[n]].append(logp[None])
                continue
            nxt = self.next_token_logprobs(t, context)  # branch: next tokens by first byte
            for b, members in self._by_first_byte.items():
                terms[b].append(logp + nxt[members])
            terms[END].append((logp + nxt[self.eos])[None])
        total = torch.logsumexp(torch.stack(scores), 0)
        out = torch.full((257,), -math.inf, dtype=torch.float64)
        for b, parts in enumerate(terms):
            if parts:
                out[b] = torch.logsumexp(torch.cat(parts), 0)
        return out - total  # sums to 1 exactly when pass + branch account for P(x)

    def generate(self, prompt: bytes | str, max_new_bytes: int = 64, temperature: float = 0.0,
                 generator: torch.Generator | None = None) -> bytes:
        """Decode byte by byte from the exact next-byte distribution: greedy at temperature 0,
        else sampled at ``temperature`` with ``generator``. Stops at the end of text or after
        ``max_new_bytes``; returns the new bytes (possibly ending inside a character)."""
        if isinstance(prompt, str):
            prompt = prompt.encode("utf-8")
        if not isinstance(prompt, bytes):
            raise TypeError(f"prompt must be bytes or str, got {type(prompt).__name__}")
        if temperature < 0 or (temperature > 0 and generator is None):
            raise ValueError("temperature must be >= 0, and sampling (temperature > 0) needs "
                             "generator=torch.Generator().manual_seed(...)")
        out = b""
        for _ in range(max_new_bytes):
            logp = self.next_byte_logprobs(prompt + out)
            if temperature == 0:
                b = int(logp.argmax())
            else:
                b = int(torch.multinomial(torch.softmax(logp / temperature, 0).float(), 1,
                                          generator=generator))
            if b == END:
                break
            out += bytes([b])
        return out
