"""Building blocks of the model zoo: tokenizer, training rows, evaluation and capability probes.

* Tokenizer: byte-level BPE (``tokenizers``) with EOS and fill-in-the-middle special tokens.
* Fill-in-the-middle: SantaCoder/StarCoder character-level FIM (Bavarian et al. 2022,
  arXiv 2207.14255; Allal et al. 2023, arXiv 2301.03988), PSM and SPM formats.
* Retrieval curriculum (ours, documented in every model card): some rows get synthetic
  constants defined early and used later, so that in-context retrieval is rewarded often
  enough for a small model to learn it on a CPU budget.
* Span repetition (ours): some plain rows get 1-4 spans of 8-64 of their own tokens copied
  to a later position. Copying is then rewarded in every batch, which makes an induction
  mechanism (Olsson et al. 2022, arXiv 2209.11895) form early; without it tw-code settled
  in a basin with none and fine-tuning did not get it out.
* Probes: a constant defined ``distance`` tokens before the end of held-out code, among
  distractor constants, must be completed greedily after ``assert NAME == '``; and the
  NLL of the second copy of a repeated span against the first (``copy_probe``).
"""
from __future__ import annotations

import math
import random

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

EOS, FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX = (
    "<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>")
SPECIAL_TOKENS = [EOS, FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX]


def train_tokenizer(texts: list[str], vocab_size: int, split_digits: bool = False
                    ) -> PreTrainedTokenizerFast:
    """Byte-level BPE over ``texts`` with the special tokens first (ids 0-3).

    ``split_digits`` makes every digit its own pre-token (for arithmetic: numbers are then
    read digit by digit, as in Llama and PaLM, instead of as arbitrary merged chunks).
    """
    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                  byte_level]) if split_digits else byte_level)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, pad_token=EOS, bos_token=None, unk_token=None,
        additional_special_tokens=[FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX], model_max_length=2048)


# --- fill-in-the-middle --------------------------------------------------------------------

def fim_text(text: str, rng: random.Random, spm_rate: float = 0.5) -> str:
    """Cut ``text`` at two uniform character positions and reorder it (PSM or SPM).

    PSM: ``<pre> prefix <suf> suffix <mid> middle``; SPM (SantaCoder's variant):
    ``<pre> <suf> suffix <mid> prefix middle``. The model learns to write ``middle``
    followed by EOS, which the caller appends.
    """
    i, j = sorted(rng.randrange(len(text) + 1) for _ in range(2))
    prefix, middle, suffix = text[:i], text[i:j], text[j:]
    if rng.random() < spm_rate:
        return f"{FIM_PREFIX}{FIM_SUFFIX}{suffix}{FIM_MIDDLE}{prefix}{middle}"
    return f"{FIM_PREFIX}{prefix}{FIM_SUFFIX}{suffix}{FIM_MIDDLE}{middle}"


# --- retrieval curriculum ------------------------------------------------------------------

_NAME_STEMS = ["KEY", "VALUE", "TOKEN", "SECRET", "CONST", "ID", "CODE", "PORT", "MAGIC",
               "LIMIT", "FLAG", "SEED", "HASH", "SERIAL", "PIN", "REF", "TAG", "ZONE"]


def random_constant(rng: random.Random, stem: str | None = None) -> tuple[str, str]:
    """A fresh (name, value) pair such as ``('PORT_41', '80213')``; ``stem`` fixes the name's
    stem (``PORT``), leaving the numeric suffix to tell constants apart."""
    name = f"{stem or rng.choice(_NAME_STEMS)}_{rng.randrange(100)}"
    kind = rng.random()
    if kind < 0.6:
        value = "".join(rng.choice("0123456789") for _ in range(rng.randint(4, 8)))
    elif kind < 0.8:
        value = "".join(rng.choice("0123456789abcdef") for _ in range(rng.randint(4, 8)))
    else:
        value = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(4, 8)))
    return name, value


_USES = ["assert {n} == '{v}'", "self.assertEqual({n}, '{v}')", "if {n} != '{v}':",
         "print({n})  # '{v}'", "check({n}, '{v}')"]


def with_constants(lines: list[str], n_constants: int, rng: random.Random,
                   long_range: float = 0.5, early: float = 0.0, same_stem: float = 0.0
                   ) -> list[str]:
    """Insert ``n_constants`` definitions ``NAME = 'value'`` into the first 60% of ``lines``
    and one or two later uses of each (``assert NAME == 'value'`` and similar); a use falls
    in the last tenth of the lines with probability ``long_range``, else anywhere after.

    With probability ``early`` a definition goes in the first 5% of the lines instead, so that
    with a last-tenth use it spans nearly the whole row; with probability ``same_stem`` all the
    row's constants share one stem (``KEY_3``, ``KEY_71``), as in ``retrieval_probe``."""
    out = list(lines)
    inserts: list[tuple[int, int, str]] = []  # (line index, order, text)
    names = set()
    # (no draws for options that are off: older rows stay as they were)
    stem = rng.choice(_NAME_STEMS) if same_stem and rng.random() < same_stem else None
    for k in range(n_constants):
        name, value = random_constant(rng, stem)
        if name in names:
            continue
        names.add(name)
        head = 0.05 if early and rng.random() < early else 0.6
        at = rng.randrange(max(1, int(head * len(lines))))
        inserts.append((at, 0, f"{name} = '{value}'"))
        for _ in range(rng.randint(1, 2)):
            # half of the uses go to the last tenth of the row: long-range retrieval
            lo = max(at + 1, int(0.9 * len(lines))) if rng.random() < long_range else at + 1
            use = rng.randrange(lo, len(lines) + 1)
            inserts.append((use, 1, rng.choice(_USES).format(n=name, v=value)))
    for at, _, text in sorted(inserts, key=lambda x: (x[0], x[1]), reverse=True):
        out.insert(at, text)
    return out


def repeat_spans(row: list[int], rng: random.Random, n_spans: tuple[int, int] = (1, 4),
                 length: tuple[int, int] = (8, 64)) -> list[int]:
    """Copy 1-4 spans of 8-64 tokens of ``row`` over later positions of the same row.

    Each span ``row[a:a+L]`` overwrites ``row[b:b+L]`` with ``b >= a + L``: the second copy is
    predictable from the first (a later span may overwrite part of an earlier one).
    """
    out = list(row)
    for _ in range(rng.randint(*n_spans)):
        span = rng.randint(*length)
        if len(out) < 2 * span + 1:
            break
        a = rng.randrange(0, len(out) - 2 * span + 1)
        b = rng.randrange(a + span, len(out) - span + 1)
        out[b:b + span] = out[a:a + span]
    return out


CONSTANT_LINE_TOKENS = 16  # tokens a definition or use line of with_constants takes at most


def training_rows(ids_by_doc: list[list[int]], texts: list[str], tokenizer, seq_len: int,
                  rng: random.Random, fim_rate: float = 0.5, retrieval_rate: float = 0.25,
                  repeat_rate: float = 0.0, early: float = 0.0, same_stem: float = 0.0):
    """Endless iterator of ``seq_len + 1`` token rows.

    Plain rows are documents (FIM-transformed with probability ``fim_rate``) packed end to
    end with EOS, and with probability ``repeat_rate`` given repeated spans
    (``repeat_spans``); retrieval rows (probability ``retrieval_rate``) are concatenated
    documents with synthetic constants (``with_constants``, given ``early`` and
    ``same_stem``).
    """
    eos = tokenizer.eos_token_id
    buffer: list[int] = []
    order: list[int] = []
    while True:
        if rng.random() < retrieval_rate:
            # whole lines of random files up to the row's length in tokens, less room for the
            # constant lines, so that the uses near the end survive the cut at seq_len + 1
            n_constants = min(rng.randint(1, 8), max(1, seq_len // (6 * CONSTANT_LINE_TOKENS)))
            budget, keep = seq_len + 1 - CONSTANT_LINE_TOKENS * 3 * n_constants, []
            while budget > 0 or not keep:
                for line in texts[rng.randrange(len(texts))].splitlines():
                    budget -= len(tokenizer(line + "\n")["input_ids"])
                    if budget < 0 and keep:
                        break
                    keep.append(line)
            text = "\n".join(with_constants(keep, n_constants, rng, early=early, same_stem=same_stem))
            row = tokenizer(text)["input_ids"][: seq_len + 1]
            row += [eos] * (seq_len + 1 - len(row))
            yield row
            continue
        while len(buffer) < seq_len + 1:
            if not order:
                order = list(range(len(ids_by_doc)))
                rng.shuffle(order)
            d = order.pop()
            if rng.random() < fim_rate and texts[d]:
                buffer += tokenizer(fim_text(texts[d], rng))["input_ids"] + [eos]
            else:
                buffer += ids_by_doc[d] + [eos]
        row, buffer = buffer[: seq_len + 1], buffer[seq_len + 1:]
        yield repeat_spans(row, rng) if repeat_rate and rng.random() < repeat_rate else row


def arith_rows(tokenizer, seq_len: int, rng: random.Random, exclude: set[str]):
    """Endless iterator of ``seq_len + 1`` token rows of fresh arithmetic problems
    (``tokenworks.decoding.arith``) packed with EOS, skipping every question in ``exclude``."""
    from tokenworks.decoding.arith import problem, training_text

    eos, buffer = tokenizer.eos_token_id, []
    while True:
        while len(buffer) < seq_len + 1:
            p = problem(rng)
            if p["question"] not in exclude:
                buffer += tokenizer(training_text(p))["input_ids"] + [eos]
        yield buffer[: seq_len + 1]
        buffer = buffer[seq_len + 1:]


# --- evaluation ----------------------------------------------------------------------------

@torch.no_grad()
def bits_per_byte(model, tokenizer, texts: list[str], seq_len: int, max_bytes: int | None = None,
                  batch_size: int = 4) -> dict:
    """Bits per UTF-8 byte of ``texts`` packed with EOS into non-overlapping ``seq_len`` windows.

    Every token after the first of each window is scored; the byte count is that of the
    scored tokens' decoded text, so bits/byte is independent of the tokenizer.
    """
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for t in texts:
        ids += tokenizer(t)["input_ids"] + [eos]
        if max_bytes and len(ids) * 3 > max_bytes:
            break
    windows = [ids[i:i + seq_len] for i in range(0, len(ids) - 1, seq_len)]
    windows = [w for w in windows if len(w) > 1]
    nll, n_bytes, n_tokens = 0.0, 0, 0
    device = next(model.parameters()).device
    for b in range(0, len(windows), batch_size):
        batch = windows[b:b + batch_size]
        width = max(len(w) for w in batch)
        x = torch.full((len(batch), width), eos, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.bool)
        for r, w in enumerate(batch):
            x[r, :len(w)] = torch.tensor(w)
            mask[r, 1:len(w)] = True
        logits = model(x.to(device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, x[:, 1:, None].to(device))[..., 0]
        nll -= logp[mask[:, 1:].to(device)].sum().item()
        n_tokens += int(mask.sum())
        for r, w in enumerate(batch):
            n_bytes += len(tokenizer.decode(w[1:]).encode("utf-8"))
    return {"bits_per_byte": nll / math.log(2) / n_bytes, "nats_per_token": nll / n_tokens,
            "tokens": n_tokens, "bytes": n_bytes}


def filler_lines(texts: list[str], tokenizer, n_tokens: int, rng: random.Random) -> list[str]:
    """Whole lines of held-out code, from a random place, as many as stay within ``n_tokens``
    tokens (tokenized together, as the model sees them; found by bisection)."""
    lines: list[str] = []
    while len(lines) < 4 * (n_tokens + 10):
        lines += texts[rng.randrange(len(texts))].splitlines()
    start = rng.randrange(len(lines))
    lines = lines[start:] + lines[:start]
    lo, hi = 0, len(lines)  # more than `n_tokens` tokens in all
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(tokenizer("\n".join(lines[:mid]))["input_ids"]) <= n_tokens:
            lo = mid
        else:
            hi = mid - 1
    return lines[:lo]


# Names for the shifted probe: two-part names the curriculum never used (its names are one
# stem of _NAME_STEMS and a number), each constant with its own.
_SHIFTED_NAMES = ["RETRY_TOKEN", "max_depth", "BufferLimit", "session_tag", "HOST_ALIAS",
                  "cache_seed", "UploadKey", "worker_label", "DEFAULT_REALM", "queueName"]


def retrieval_probe(model, tokenizer, texts: list[str], distance: int, n_probes: int = 20,
                    distractors: int = 3, seed: int = 0, shifted: bool = False) -> dict:
    """Retrieve a constant defined about ``distance`` tokens before the end of the context.

    Each probe: held-out code, ``KEY_<i> = '<6 digits>'`` about ``distance`` tokens before
    the end, ``distractors`` other ``KEY_<j>`` constants at random places in between, and
    ``assert KEY_<i> == '`` as the last line. Success: greedy decoding continues with the
    value and the closing quote. ``shifted``: the same test in a format the zoo's curriculum
    never showed (``_SHIFTED_NAMES`` with a number, e.g. ``RETRY_TOKEN_41``, one per constant,
    six-character letter-and-digit values): retrieval that holds only in the zoo format was
    learned from the format, not from the context.
    """
    rng = random.Random(seed)
    device = next(model.parameters()).device
    hits, examples = 0, []
    for p in range(n_probes):
        if shifted:
            names = [f"{n}_{rng.randrange(10, 100)}" for n in rng.sample(_SHIFTED_NAMES, distractors + 1)]
            values = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(6))
                      for _ in names]
        else:
            names = [f"KEY_{k}" for k in rng.sample(range(100), distractors + 1)]
            values = [f"{rng.randrange(10**6):06d}" for _ in names]
        target = f"{names[0]} = '{values[0]}'\n"
        query = f"assert {names[0]} == '"
        after = filler_lines(texts, tokenizer, distance - 10, rng)  # after the definition
        for k, v in zip(names[1:], values[1:]):
            after.insert(rng.randrange(len(after) + 1), f"{k} = '{v}'")
        prompt = target + "\n".join(after) + "\n" + query
        ids = torch.tensor([tokenizer(prompt)["input_ids"]], device=device)
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=8, do_sample=False,
                                 pad_token_id=tokenizer.eos_token_id)
        completion = tokenizer.decode(out[0, ids.shape[1]:])
        ok = completion.startswith(values[0] + "'")
        hits += ok
        examples.append({"expected": values[0], "completion": completion, "ok": ok,
                         "context_tokens": ids.shape[1]})
    return {"distance": distance, "format": "shifted" if shifted else "card", "accuracy": hits / n_probes,
            "n": n_probes, "distractors": distractors, "examples": examples[:5]}


@torch.no_grad()
def copy_probe(model, tokenizer, texts: list[str], span: int = 40, gap: int = 400,
               n: int = 16, seed: int = 0) -> dict:
    """Mean NLL (nats/token) of the first and the second copy of a repeated span.

    Each row: ``span`` tokens, ``gap`` tokens of other held-out code, the same ``span``
    tokens again. Spans are held-out code (``code``) or uniformly random ids (``random``).
    A model that copies from context predicts the second copy far better than the first;
    one without an induction mechanism scores both alike. The first token of each copy is
    not scored (it is unpredictable either way).
    """
    rng = random.Random(seed)
    ids = [i for t in texts for i in tokenizer(t)["input_ids"] + [tokenizer.eos_token_id]]
    device = next(model.parameters()).device
    out = {}
    for kind in ("code", "random"):
        rows = []
        for _ in range(n):
            if kind == "code":
                s = rng.randrange(len(ids) - span)
                first = ids[s:s + span]
            else:
                first = [rng.randrange(len(SPECIAL_TOKENS), len(tokenizer)) for _ in range(span)]
            g = rng.randrange(len(ids) - gap)
            rows.append(first + ids[g:g + gap] + first)
        x = torch.tensor(rows, device=device)  # [n, 2 * span + gap]
        logp = torch.log_softmax(model(x).logits[:, :-1].float(), -1)
        nll = -logp.gather(-1, x[:, 1:, None])[..., 0]  # nll[:, t] scores token t + 1
        second = span + gap
        out[kind] = {"first_copy": round(nll[:, :span - 1].mean().item(), 3),
                     "second_copy": round(nll[:, second:].mean().item(), 3)}
    return {"span": span, "gap": gap, "n": n, **out}


@torch.no_grad()
def arith_accuracy(model, tokenizer, problems: list[dict], batch_size: int = 100,
                   max_new_tokens: int = 64) -> dict:
    """Greedy accuracy on arithmetic problems (the integer after ``####`` must be right)."""
    device = next(model.parameters()).device
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        hits, examples = _arith_batches(model, tokenizer, problems, batch_size, max_new_tokens, device)
    finally:
        tokenizer.padding_side = side
    return {"accuracy": hits / len(problems), "n": len(problems), "examples": examples}


def _arith_batches(model, tokenizer, problems, batch_size, max_new_tokens, device):
    from tokenworks.decoding.arith import extract_answer, prompt

    hits, examples = 0, []
    for b in range(0, len(problems), batch_size):
        batch = problems[b:b + batch_size]
        enc = tokenizer([prompt(p) for p in batch], return_tensors="pt", padding=True).to(device)
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.eos_token_id)
        for p, row in zip(batch, out[:, enc["input_ids"].shape[1]:]):
            text = tokenizer.decode(row, skip_special_tokens=True)
            ok = extract_answer(text) == p["answer"]
            hits += ok
            if len(examples) < 5:
                examples.append({"prompt": prompt(p), "completion": text.split("\n")[0], "ok": ok})
    return hits, examples
