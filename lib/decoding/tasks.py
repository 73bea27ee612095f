"""The CNTP experiment: decoding strategies side by side on held-out tasks, with bootstrap CIs.

Its arms (``ARMS``; the method itself is ``tokenworks.decoding.cntp``):

* ``greedy``: one chain, argmax.
* ``sample``: temperature + top-p, ``k`` chains with different seeds; accuracy is the mean
  over chains (the expected accuracy of one sampled answer), as the paper's mean over seeds.
* ``cntp``: Cautious Next Token Prediction, ``k`` chains likewise.
* ``sc``: self-consistency, the majority answer of the ``k`` sampled chains.
* ``cntp_sc``: the majority answer of the ``k`` CNTP chains (the paper's CNTP + SC).

The voting strategies reuse the single-chain runs, so every chain is generated once. Cost is
counted in model forward passes per answer (CNTP's trials included; a vote costs all its
chains) and generated tokens per answer.
"""
from __future__ import annotations

import random
import statistics

import torch
from tqdm import tqdm

from tokenworks.decoding.cntp import punctuation_ids
from tokenworks.decoding.strategies import decode, majority_vote
from tokenworks.stats import bootstrap

ARMS = ("greedy", "sample", "cntp", "sc", "cntp_sc")


def newline_ids(tokenizer) -> set[int]:
    """Ids of every token whose text holds a newline, and EOS: they end a one-line answer."""
    ids = {i for i in range(len(tokenizer)) if "\n" in tokenizer.decode([i])}
    return ids | {tokenizer.eos_token_id}


def run(model, tokenizer, items: list[dict], answer, *, k: int = 8, temperature: float = 1.2,
        top_p: float = 0.9, max_new_tokens: int = 64, seed: int = 0, desc: str = "cntp",
        ends: set[int] | None = None) -> list[dict]:
    """Decode every item with greedy and ``k`` chains each of sampling and CNTP.

    ``items``: dicts with ``prompt`` (text, or token ``ids``) and ``target``; ``answer(text)`` extracts the
    comparable answer from a completion (``None`` if there is none). ``ends``: the ids that
    end an answer (default :func:`newline_ids`, one-line answers; a chat model's end of turn
    for multi-line replies). Chain ``j`` of item
    ``i`` uses the generator seed ``(seed, i, j)``, the same for sampling and CNTP.
    Returns one dict per item with, per single-chain strategy, its chains' answers,
    correctness, forwards and tokens.
    """
    if k < 1:
        raise ValueError(f"k (chains per strategy) must be >= 1, got {k}")
    ends, stops = newline_ids(tokenizer) if ends is None else ends, punctuation_ids(tokenizer)
    rows = []
    for i, item in enumerate(tqdm(items, desc=desc, mininterval=10)):
        ids = item.get("ids") or tokenizer(item["prompt"])["input_ids"]
        row = {"target": item["target"]}
        for strategy in ("greedy", "sample", "cntp"):
            chains = []
            for j in range(1 if strategy == "greedy" else k):
                gen = torch.Generator().manual_seed((seed * 1_000_003 + i) * 1_009 + j)
                out = decode(model, ids, strategy, max_new_tokens=max_new_tokens,
                               temperature=temperature, top_p=top_p, generator=gen,
                               eos_token_id=ends, stop_ids=stops)
                a = answer(tokenizer.decode(out.tokens, skip_special_tokens=True))
                chains.append({"answer": a, "correct": a == item["target"],
                               "forwards": out.forwards, "tokens": len(out.tokens)})
            row[strategy] = chains
        rows.append(row)
    return rows


def code_line_items(texts: list[str], tokenizer, n: int, seed: int = 0, max_prompt_tokens: int = 384,
                    predict: int = 4) -> list[dict]:
    """``n`` line completions from held-out files: the prompt is the file's tokens up to the
    last ``predict`` tokens of a line, the target those tokens' text (the end of the line).

    Cutting at a token boundary of the file's own tokenization keeps the prompt canonical
    (no token-healing problem); the answer ends at the next line break. Lines shorter than
    ``predict + 2`` tokens, or whose end is under 4 visible characters, are skipped.
    """
    rng, items = random.Random(seed), []
    docs = [tokenizer(t)["input_ids"] for t in texts]
    breaks = [[i for i, t in enumerate(ids) if "\n" in tokenizer.decode([t])] for ids in docs]
    for _ in range(100 * n):
        d = rng.randrange(len(docs))
        if len(breaks[d]) < 12:
            continue
        j = rng.randrange(10, len(breaks[d]) - 1)
        start, end = breaks[d][j], breaks[d][j + 1]  # this line: ids[start:end]
        cut = end - predict
        target = tokenizer.decode(docs[d][cut:end]).rstrip()
        if cut < start + 2 or len(target.strip()) < 4:
            continue
        ids = docs[d][max(0, cut - max_prompt_tokens):cut]
        items.append({"ids": ids, "prompt": tokenizer.decode(ids), "target": target})
        if len(items) == n:
            return items
    raise ValueError(f"could not find {n} completable lines in {len(texts)} files; lower n")


def first_line(text: str) -> str:
    """The answer of a one-line completion: the text up to the first line break."""
    return text.split("\n")[0].rstrip()


def scores(rows: list[dict]) -> dict[str, list[float]]:
    """Per-item score of each strategy (a chain mean for ``sample``/``cntp``, 0/1 otherwise)."""
    out = {s: [] for s in ARMS}
    for r in rows:
        out["greedy"].append(float(r["greedy"][0]["correct"]))
        for s in ("sample", "cntp"):
            out[s].append(statistics.fmean(c["correct"] for c in r[s]))
        for s, chains in (("sc", r["sample"]), ("cntp_sc", r["cntp"])):
            out[s].append(float(majority_vote([c["answer"] for c in chains]) == r["target"]))
    return out


def summarize(rows: list[dict]) -> list[dict]:
    """Accuracy with its 95% bootstrap interval, and cost, per strategy."""
    sc = scores(rows)
    k = len(rows[0]["sample"])
    out = []
    for s in ARMS:
        chains = {"greedy": "greedy", "sample": "sample", "cntp": "cntp", "sc": "sample",
                  "cntp_sc": "cntp"}[s]
        per_answer = k if s in ("sc", "cntp_sc") else 1  # a vote pays for all its chains
        fw = statistics.fmean(c["forwards"] for r in rows for c in r[chains]) * per_answer
        tok = statistics.fmean(c["tokens"] for r in rows for c in r[chains]) * per_answer
        lo, hi = bootstrap(sc[s])
        entry = {"strategy": s, "accuracy": statistics.fmean(sc[s]), "ci_low": lo, "ci_high": hi,
                 "forwards_per_answer": fw, "tokens_per_answer": tok, "chains": per_answer}
        if s in ("sample", "cntp") and k > 1:  # spread over seeds, as the paper's +-
            by_seed = [statistics.fmean(r[s][j]["correct"] for r in rows) for j in range(k)]
            entry["seed_std"] = statistics.stdev(by_seed)
        out.append(entry)
    return out


def differences(rows: list[dict]) -> dict[str, dict]:
    """Paired differences the paper claims are positive, with 95% bootstrap intervals."""
    sc = scores(rows)
    out = {}
    for a, b in (("cntp", "sample"), ("cntp", "greedy"), ("cntp_sc", "sc")):
        lo, hi = bootstrap(sc[a], sc[b])
        out[f"{a} - {b}"] = {"mean": statistics.fmean(sc[a]) - statistics.fmean(sc[b]),
                             "ci_low": lo, "ci_high": hi}
    return out


def verdict(diffs: dict[str, dict]) -> str:
    """The paper's claim on one task, from :func:`differences`: ``reproduced`` when CNTP beats
    sampling and greedy (paired intervals above 0) and CNTP + SC is not below SC (interval's
    low end >= 0); ``partly reproduced`` when CNTP's mean beats both; else ``not reproduced``."""
    gain, over_greedy, vote = diffs["cntp - sample"], diffs["cntp - greedy"], diffs["cntp_sc - sc"]
    if gain["ci_low"] > 0 and over_greedy["ci_low"] > 0 and vote["ci_low"] >= 0:
        return "reproduced"
    return "partly reproduced" if gain["mean"] > 0 and over_greedy["mean"] > 0 else "not reproduced"


def overall_verdict(verdicts: list[str]) -> str:
    """One verdict over the arithmetic tasks: theirs when they agree, else ``partly reproduced``."""
    if not verdicts:
        raise ValueError("no task verdicts to combine: run at least the arithmetic task")
    return verdicts[0] if len(set(verdicts)) == 1 else "partly reproduced"
