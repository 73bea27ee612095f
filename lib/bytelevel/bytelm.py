"""Exact next-byte probabilities from a token-level LM with a byte-level BPE tokenizer
(GPT-2, Llama-3, SmolLM2, the zoo's) or a SentencePiece byte-fallback BPE one (Gemma-3:
``▁`` for a space, ``<0xNN>`` byte tokens; a token's bytes come from ``piece_bytes``).

Phan et al., *Exact Byte-Level Probabilities from Tokenized Language Models for FIM-Tasks
and Model Ensembles*, ICLR 2025 (arXiv 2410.09303), the Byte-Token Representation Lemma.

Definitions (bytes ``x``, token sequences ``t``; ``bytes(t)`` their concatenated bytes):

* ``t`` is *valid* when the tokenizer itself produces it: ``encode(bytes(t)) == t``; a
  *valid prefix* when it starts some valid sequence (GPT-2's regex splits a trailing run of
  whitespace differently once a non-space follows, so a valid prefix need not be valid). A
  model trained on tokenized text only ever sees valid sequences, so the token-level
  distribution used here is the model's, renormalised at each step over the next tokens
  that keep a valid prefix, and EOS where the sequence so far is valid; everything below is
  exact with respect to that distribution.
* The *cover* of ``x``: valid prefixes ``t`` with ``bytes(t[:-1])`` a proper prefix of ``x``
  and ``x`` a prefix of ``bytes(t)``. Every generation whose bytes start with ``x`` starts
  with exactly one cover element, so ``P(x) = sum_{t in cover(x)} P(t)`` (the lemma, eq. 3
  of the paper).
* Next byte (eq. 5): ``P(x b) / P(x)``, where ``P(x b)`` takes the cover elements that
  overhang ``x`` with next byte ``b`` (*pass*) and, for every cover element ``u`` with
  ``bytes(u) == x`` exactly, ``P(u)`` times the mass of its next tokens starting with ``b``
  (*branch*); the end of text is ``P(u) P(EOS | u)``.

Deviations and limits: the check of ``t + (s,)`` re-encodes only the last pre-token chunk
of ``t`` and ``s`` (GPT-2's split regex; for Gemma-3, whose vocabulary never mixes newlines
with other bytes, the last run of newlines or of other text, since BPE never merges across
that switch; other tokenizers re-encode everything),
but it is still made for every vocabulary entry at every new prefix (one batched call of
the Rust tokenizer); a valid prefix ending in whitespace is recognised by appending one of
``PROBES``, which covers every non-space that does not merge with a preceding space; keys and values of ``start + context + head`` (``start``: the BOS the tokenizer prepends,
Gemma-3's ``<bos>``, else EOS; the cache has no config, so Gemma-3's sliding-window layers
keep every key and are masked to their window by the model) (the canonical tokens
before the last pre-token chunk, shared by every cover element) are cached, so a model
call runs only the few tokens after the head, and a byte step never re-runs the prefix
(``calls`` counts model calls, ``positions`` the token positions they run); a sequence whose
bytes end inside a multi-byte UTF-8 character cannot be re-encoded and counts as invalid,
so a character that the tokenizer splits across tokens gets probability 0 wherever it
occurs (characters held by single tokens, and all ASCII, are exact). Probabilities stay in
log space.
"""
from __future__ import annotations

import functools
import json
import math
import re

import torch
from transformers import DynamicCache

END = 256  # index of the end-of-text event in a next-byte distribution
PROBES = ("a", "0", "#", "(")  # non-space characters that end a run of whitespace


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


def tokenizer_kind(spec: dict) -> str:
    """"byte-level" (a ByteLevel decoder: GPT-2, Llama-3, SmolLM2, the zoo's) or
    "byte-fallback" (SentencePiece-style BPE: ``▁`` for a space, ``<0xNN>`` byte tokens, as
    in Gemma and Llama-2) from a ``tokenizers`` spec; anything else is refused."""
    decoder = spec.get("decoder") or {}
    if decoder.get("type") == "ByteLevel":
        return "byte-level"
    steps = decoder.get("decoders") or []
    replaces = [d for d in steps if d.get("type") == "Replace"]
    if (spec.get("model") or {}).get("byte_fallback") and any(d.get("type") == "ByteFallback" for d in steps) \
            and all(d["pattern"].get("String") == "\u2581" and d["content"] == " " for d in replaces) \
            and not any(d.get("type") in ("Strip", "Metaspace") for d in steps):
        return "byte-fallback"
    raise ValueError("ByteLM supports byte-level BPE tokenizers (a ByteLevel decoder: GPT-2, "
                     "Llama-3, SmolLM2, the zoo's) and SentencePiece byte-fallback BPE without a "
                     "dummy prefix (Gemma-3); WordPiece, Unigram and prefix-stripping tokenizers "
                     f"are not supported, and this one has decoder {decoder.get('type')!r}")


FALLBACK = re.compile(r"<0x([0-9A-F]{2})>")


def piece_bytes(piece: str, kind: str) -> bytes | None:
    """The bytes a vocabulary piece stands for: byte-level pieces map each character through
    ``byte_decoder``; byte-fallback pieces are ``<0xNN>`` (that byte) or text with ``▁`` for a
    space. None for a piece outside the alphabet."""
    if kind == "byte-level":
        alphabet = _alphabet()
        return bytes(alphabet[c] for c in piece) if all(c in alphabet for c in piece) else None
    byte = FALLBACK.fullmatch(piece)
    return bytes([int(byte[1], 16)]) if byte else piece.replace("\u2581", " ").encode("utf-8")


@functools.cache
def _alphabet() -> dict[str, int]:
    return byte_decoder()


def as_bytes(x: bytes | str, name: str) -> bytes:
    """``x`` as bytes (a str is UTF-8 encoded); anything else is a clear error."""
    if isinstance(x, str):
        return x.encode("utf-8")
    if not isinstance(x, bytes):
        raise TypeError(f"{name} must be bytes or str, got {type(x).__name__}")
    return x


class ByteLM:
    """``next_byte_logprobs(prefix)``: 257 log-probabilities (bytes 0-255, then the end)."""

    def __init__(self, model, tokenizer, start: int | None = None):
        spec = json.loads(tokenizer.backend_tokenizer.to_str())
        kind = tokenizer_kind(spec)
        self.model, self.tokenizer = model, tokenizer
        self.eos = tokenizer.eos_token_id
        # every sequence starts from ``start``: the BOS the tokenizer prepends (Gemma), else EOS
        # (the zoo's and SmolLM2's documents are separated by it)
        self.start = self.eos if start is None else start
        if start is None and tokenizer.bos_token_id is not None and \
                tokenizer("", add_special_tokens=True)["input_ids"][:1] == [tokenizer.bos_token_id]:
            self.start = tokenizer.bos_token_id
        special = set(tokenizer.all_special_ids) | {a["id"] for a in spec.get("added_tokens", ())
                                                     if a["special"]}
        pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        self.token_bytes: dict[int, bytes] = {}
        for i, piece in enumerate(pieces):
            b = None if i in special else piece_bytes(piece, kind)
            if b:
                self.token_bytes[i] = b
        self._first_bytes = torch.tensor([b[0] for b in self.token_bytes.values()])  # [tokens]
        self._ids = torch.tensor(list(self.token_bytes))  # [tokens]
        self._by_first_byte = {b: self._ids[self._first_bytes == b]  # byte -> ids
                               for b in self._first_bytes.unique().tolist()}
        self._starting_with = {b: v.tolist() for b, v in self._by_first_byte.items()}
        self.device = next(model.parameters()).device
        pre = spec.get("pre_tokenizer") or {}
        # where a string can be cut so that appending bytes changes only the part after the
        # cut: "regex", GPT-2's split regex (chunks never look behind); "lines", a
        # SentencePiece vocabulary with no token mixing newlines and other bytes, so every
        # switch between a newline run and other text is a token boundary that BPE never
        # crosses; None: re-encode everything
        if kind == "byte-level":
            regex = pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not spec.get("normalizer")
            self._split = "regex" if regex else None
        else:
            mixed = any(b"\n" in b and b.strip(b"\n") for b in self.token_bytes.values())
            self._split = None if mixed else "lines"
        self._valid = functools.lru_cache(maxsize=None)(self._valid_uncached)
        self._last_chunk = functools.lru_cache(maxsize=None)(self._last_chunk_uncached)
        self._logits: dict[tuple, torch.Tensor] = {}  # raw, per (context, token prefix)
        self._logp: dict[tuple, torch.Tensor] = {}  # renormalised over valid next tokens
        self._cached: tuple[int, ...] = ()  # model input whose keys and values self._kv holds
        # no config: every layer keeps all its keys and values, so crop() works on the
        # sliding-window layers of Gemma-3 too (the model masks them to their window)
        self._kv = DynamicCache()
        self.calls = self.positions = 0  # model calls and token positions run (cost)

    # --- token level ---------------------------------------------------------------------

    def _bytes(self, tokens) -> bytes:
        return b"".join(self.token_bytes[t] for t in tokens)

    def _encode(self, text: str) -> tuple[int, ...]:
        return tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _last_chunk_start(self, text: str) -> int:
        """Byte offset in ``text`` where its last pre-token chunk starts ("lines": its last run
        of newlines or of other characters)."""
        if self._split == "lines":
            if not text:
                return 0
            cut = len(text)
            while cut and (text[cut - 1] == "\n") == (text[-1] == "\n"):
                cut -= 1
            return len(text[:cut].encode("utf-8"))
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
        """Is ``tokens + (s,)`` a prefix of a valid sequence, given that ``tokens`` is?"""
        return bool(self.valid_next_ids(tokens, [s]))

    @torch.no_grad()
    def next_token_logprobs(self, tokens: tuple[int, ...], context: tuple[int, ...] = ()) -> torch.Tensor:
        """log P(s | context, tokens) over the vocabulary, renormalised over valid
        ``tokens + (s,)`` and EOS (``-inf`` elsewhere). [V] float64. ``context``: token ids
        the bytes are conditioned on (a prompt, FIM sentinels), not part of the byte string."""
        key = (context, tokens)
        if key not in self._logp:
            if key not in self._logits:
                seq = (self.start, *context, *tokens)
                done = self._cached if seq[:len(self._cached)] == self._cached and \
                    len(seq) > len(self._cached) else ()
                # the call gives the logits of every prefix it ran; keep the last ones, which
                # the cover search asks for next (older ones cost a new call if ever needed)
                first = len(done) - len(context)  # token-prefix length of the first position run
                low = max(0, first, len(tokens) - 32)
                logits = self._run(seq[len(done):], done, len(tokens) + 1 - low)  # [rows, V]
                for k in range(low, len(tokens) + 1):
                    self._logits.setdefault((context, tokens[:k]), logits[k - low])
            self._logp[key] = self._renormalise(tokens, self._logits.pop(key))
        return self._logp[key]

    def _run(self, new: tuple[int, ...], done: tuple[int, ...], rows: int) -> torch.Tensor:
        """Logits [rows, V] (float64, CPU) of ``done + new`` at the last ``rows`` positions of
        ``new`` (a 262,144-token vocabulary makes every row 2 MiB); ``done`` is ``()`` or the
        cached input, whose cache is left as it was."""
        self.calls, self.positions = self.calls + 1, self.positions + len(new)
        x = torch.tensor([new], device=self.device)
        if not done:
            return self.model(x, logits_to_keep=rows).logits[0].double().cpu()
        out = self.model(x, past_key_values=self._kv, use_cache=True,
                         logits_to_keep=rows).logits[0].double().cpu()
        self._kv.crop(-len(new))  # transformers 5: the number of tokens to remove
        return out

    def _cache_input(self, ids: tuple[int, ...]) -> None:
        """Hold the keys and values of ``ids[:-1]``: every later call whose input starts with
        ``ids`` runs only the rest. Memos of sequences that do not start with ``ids`` go."""
        keep = ids[:-1]
        if keep == self._cached:
            return
        if keep[:len(self._cached)] != self._cached:
            self._kv, self._cached = DynamicCache(), ()
        if len(keep) > len(self._cached):
            self.calls, self.positions = self.calls + 1, self.positions + len(keep) - len(self._cached)
            x = torch.tensor([keep[len(self._cached):]], device=self.device)
            self.model(x, past_key_values=self._kv, use_cache=True, logits_to_keep=1)
        self._cached = keep
        start = ids[1:]  # context + head, as a prefix of (context + tokens)
        for memo in (self._logits, self._logp):
            for key in [k for k in memo if (k[0] + k[1])[:len(start)] != start]:
                del memo[key]

    def _renormalise(self, tokens: tuple[int, ...], logits: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros_like(logits, dtype=torch.bool)
        mask[self.eos] = self._valid(tokens)  # the text may end only on a valid sequence
        mask[self.valid_next_ids(tokens)] = True
        return torch.log_softmax(logits.masked_fill(~mask, -math.inf), -1)

    def valid_next_ids(self, tokens: tuple[int, ...], candidates=None) -> list[int]:
        """Every ``s`` (of ``candidates``, default the vocabulary) with ``tokens + (s,)`` a
        prefix of a valid sequence, given that ``tokens`` is. With GPT-2's pre-tokenizer only
        the last chunk can change, so only it and ``s`` are re-encoded (the paper's incremental
        check; other byte-level tokenizers re-encode everything), in one batched call of the
        Rust tokenizer. A prefix need not be valid itself: a run of whitespace splits
        differently once a non-space follows (``x\\n\\n`` is ``x|\\n\\n``, ``x\\n\\n#`` is
        ``x|\\n|\\n|#``), so a candidate that ends in whitespace also passes when it is a prefix
        of the encoding with one of ``PROBES`` appended."""
        last = self._last_chunk(tokens) if self._split else (0, self._bytes(tokens))
        if last is None:
            return []
        j, tail = last
        ids, texts = [], []
        for s in self.token_bytes if candidates is None else candidates:
            try:
                texts.append((tail + self.token_bytes[s]).decode("utf-8"))
                ids.append(s)
            except UnicodeDecodeError:
                pass
        encode = self.tokenizer.backend_tokenizer.encode_batch
        want = list(tokens[j:])
        ok = {s for s, e in zip(ids, encode(texts, add_special_tokens=False)) if e.ids == want + [s]}
        redo = [(s, t) for s, t in zip(ids, texts) if s not in ok and t[-1:].isspace()]
        if redo:
            probed = encode([t + p for _, t in redo for p in PROBES], add_special_tokens=False)
            for k, (s, _) in enumerate(redo):
                if any(e.ids[:len(want) + 1] == want + [s] for e in probed[k * len(PROBES):(k + 1) * len(PROBES)]):
                    ok.add(s)
        return [s for s in ids if s in ok]

    def sequence_logprob(self, tokens: tuple[int, ...], context: tuple[int, ...] = (),
                         start: int = 0) -> float:
        """log P(tokens[start:] | context, tokens[:start]); ``start=0``: the whole sequence."""
        return sum(float(self.next_token_logprobs(tokens[:k], context)[tokens[k]])
                   for k in range(start, len(tokens)))

    # --- byte level ------------------------------------------------------------------------

    def _head(self, x: bytes) -> tuple[tuple[int, ...], int]:
        """The canonical tokens of ``x`` before its last pre-token chunk, and where that chunk
        starts. Appending bytes changes only the last chunk (GPT-2's regex), so every cover
        element of ``x`` begins with these tokens: the cover search starts after them."""
        if not self._split or not x:
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
        start, head, at = self._last_chunk_start(text), [], 0
        # the tokens of the whole text before that start (tokens never cross a chunk); not
        # encode(x[:start]), which can split a trailing run of whitespace differently
        for t in self._encode(text):
            if at >= start:
                break
            head.append(t)
            at += len(self.token_bytes[t])
        return tuple(head), start

    def exact_encodings(self, prefix: bytes) -> list[tuple[int, ...]]:
        """Every valid token sequence whose bytes are exactly ``prefix``."""
        return [t for t, last in self._paths(prefix) if last is None and self._valid(t)]

    def cover(self, prefix: bytes) -> list[tuple[int, ...]]:
        """The cover of ``prefix`` (see the module docstring); ``[()]`` for empty bytes."""
        return [t for t, _ in self._paths(prefix)] if prefix else [()]

    def _paths(self, x: bytes, head: tuple[tuple[int, ...], int] | None = None):
        """(t, last) for valid t with bytes(t[:-1]) a proper prefix of x and x a prefix of
        bytes(t): t either ends exactly at len(x) (``last`` is None) or its last token, which
        starts at byte ``last`` of x, runs past it. The search starts after ``head``
        (``_head(x)`` unless given); each node checks its candidates in one batch."""
        out, stack = [], [head or self._head(x)]
        while stack:
            t, at = stack.pop()
            if at == len(x):
                out.append((t, None))
                continue
            rest = x[at:]
            over = [s for s in self._starting_with.get(rest[0], ())
                    if len(self.token_bytes[s]) > len(rest) and self.token_bytes[s].startswith(rest)]
            inside = [s for s in self._starting_with.get(rest[0], ())
                      if len(self.token_bytes[s]) <= len(rest) and rest.startswith(self.token_bytes[s])]
            ok = set(self.valid_next_ids(t, over + inside)) if over or inside else set()
            out += [(t + (s,), at) for s in over if s in ok]
            stack += [(t + (s,), at + len(self.token_bytes[s])) for s in inside if s in ok]
        return out

    def prefix_logprob(self, prefix: bytes, context: tuple[int, ...] = ()) -> float:
        """log P(the generated bytes start with ``prefix`` | context) = log sum over its cover."""
        terms = [self.sequence_logprob(t, context) for t in self.cover(prefix)]
        return float(torch.logsumexp(torch.tensor(terms, dtype=torch.float64), 0)) if terms else -math.inf

    def next_byte_logprobs(self, prefix: bytes | str, context: tuple[int, ...] = ()) -> torch.Tensor:
        """log P(next byte | context, prefix) for bytes 0-255 and the end of text (index 256).

        Every cover element starts with the same head tokens (``_head``), whose probability
        cancels in P(x b) / P(x): only the tokens after the head are scored. [257]"""
        prefix = as_bytes(prefix, "prefix")
        context = tuple(context)
        head = self._head(prefix)
        n, start = len(prefix), len(head[0])
        self._cache_input((self.start, *context, *head[0]))
        covers = self._paths(prefix, head) if prefix else [((), None)]
        if not covers:
            raise ValueError(f"no valid tokenization covers {prefix!r} (a character the tokenizer "
                             "splits across tokens? see the module docstring)")
        terms: list[torch.Tensor] = []  # log-masses, with their next bytes in ``events``
        events: list[torch.Tensor] = []
        passing: dict[tuple, list[int]] = {}  # (tokens before the last, where it starts) -> last tokens
        for t, last in covers:
            if last is None:  # branch: next tokens by first byte, and the end of text
                logp = self.sequence_logprob(t, context, start)
                nxt = self.next_token_logprobs(t, context)
                terms += [logp + nxt[self._ids], logp + nxt[self.eos][None]]
                events += [self._first_bytes, torch.tensor([END])]
            else:
                passing.setdefault((t[:-1], last), []).append(t[-1])
        for (parent, last), ss in passing.items():  # pass: the last token fixes the next byte
            # one parent often has thousands (every token starting with a space): score them at once
            logp = self.sequence_logprob(parent, context, start)
            terms.append(logp + self.next_token_logprobs(parent, context)[torch.tensor(ss)])
            events.append(torch.tensor([self.token_bytes[s][n - last] for s in ss]))
        terms_, events_ = torch.cat(terms), torch.cat(events)
        total = torch.logsumexp(terms_, 0)  # log P(x): every cover element's mass, once
        out = torch.full((257,), -math.inf, dtype=torch.float64)
        for b in events_.unique().tolist():
            out[b] = torch.logsumexp(terms_[events_ == b], 0)
        return out - total  # sums to 1 exactly when pass + branch account for P(x)

    def generate(self, prompt: bytes | str, max_new_bytes: int = 64, temperature: float = 0.0,
                 generator: torch.Generator | None = None, context: tuple[int, ...] = ()) -> bytes:
        """Byte-level decoding from the exact next-byte distribution given ``context`` tokens
        (see ``decode_bytes``); returns the new bytes."""
        return decode_bytes(lambda x: self.next_byte_logprobs(x, context), prompt, max_new_bytes,
                            temperature, generator)


def decode_bytes(next_byte_logprobs, prompt: bytes | str, max_new_bytes: int = 64,
                 temperature: float = 0.0, generator: torch.Generator | None = None) -> bytes:
    """Decode byte by byte from ``next_byte_logprobs(bytes) -> [257]``: greedy at temperature
    0, else sampled at ``temperature`` (applied to log-probabilities) with ``generator``. Stops
    at the end of text or after ``max_new_bytes``; returns the new bytes (possibly ending
    inside a character)."""
    prompt = as_bytes(prompt, "prompt")
    if temperature < 0 or (temperature > 0 and generator is None):
        raise ValueError("temperature must be >= 0, and sampling (temperature > 0) needs "
                         "generator=torch.Generator().manual_seed(...)")
    out = b""
    for _ in range(max_new_bytes):
        logp = next_byte_logprobs(prompt + out)
        if temperature == 0:
            b = int(logp.argmax())
        else:
            b = int(torch.multinomial(torch.softmax(logp / temperature, 0).float(), 1,
                                      generator=generator))
        if b == END:
            break
        out += bytes([b])
    return out
