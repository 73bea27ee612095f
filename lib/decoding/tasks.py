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
from tokenworks.verdicts import Claim

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


# Accuracy (%) of Llama-3.1-8B-Instruct, GSM8K / MATH / StrategyQA, from a second-hand summary
# of the paper's tables (unverified; single chains are means over 5 seeds, votes over 40 chains).
PAPER = {"greedy": "79.8 / 41.5 / 72.9", "sample": "79.4 ± 0.8 / 41.5 ± 1.2 / 72.0 ± 0.7",
         "cntp": "81.6 ± 0.6 / 47.1 ± 1.7 / 73.2 ± 0.2", "sc": "84.8 / 56.0 / 76.2",
         "cntp_sc": "85.2 / 57.5 / 76.3"}
NAMES = {"greedy": "greedy", "sample": "sampling", "cntp": "CNTP", "sc": "SC", "cntp_sc": "CNTP+SC"}
CLAIMED = ("chat", "arith")  # the word-problem tasks the claims are judged on, the paper's own setting first
# (difference, its low end must exceed / reach 0, what the paper claims)
COMPARISONS = (("cntp - sample", "above", "CNTP beats temperature + top-p sampling"),
               ("cntp - greedy", "above", "CNTP beats greedy decoding"),
               ("cntp_sc - sc", "at or above", "CNTP + self-consistency improves on self-consistency"))


def _accuracy(task: dict, strategy: str) -> str:
    s = next(x for x in task["summary"] if x["strategy"] == strategy)
    return f"{100 * s['accuracy']:.1f}% ({100 * s['ci_low']:.1f}-{100 * s['ci_high']:.1f})"


def _difference(d: dict) -> str:
    return f"{100 * d['mean']:+.1f} pts ({100 * d['ci_low']:+.1f} to {100 * d['ci_high']:+.1f})"


def _paper(a: str, b: str) -> str:
    """The paper's accuracies of strategies ``a`` and ``b`` side by side, per benchmark."""
    pairs = zip(("GSM8K", "MATH", "StrategyQA"), PAPER[a].split(" / "), PAPER[b].split(" / "))
    return (f"{NAMES[a]} vs. {NAMES[b]}: " + "; ".join(f"{bench} {x} vs. {y}" for bench, x, y in pairs)
            + " (Llama-3.1-8B-Instruct; unverified)")


def _check(tasks: dict[str, dict]) -> list[str]:
    """The claimed tasks present in ``tasks``, after checking each has what the verdict reads."""
    claimed = [t for t in CLAIMED if t in tasks]
    if not claimed:
        raise ValueError(f"the verdict needs an arithmetic task ({' or '.join(CLAIMED)}); got {sorted(tasks)}: "
                         "run at least the arithmetic task")
    for t in [*claimed, *(["code"] if "code" in tasks else [])]:
        missing = [k for k in ("model", "n", "summary", "differences") if k not in tasks[t]]
        missing += [d for d, _, _ in COMPARISONS if d not in tasks[t].get("differences", {})]
        missing += [s for s in ARMS if s not in {x["strategy"] for x in tasks[t].get("summary", [])}]
        if missing:
            raise ValueError(f"task {t!r} lacks {missing}: give each task summarize(rows) and differences(rows) "
                             "with its model and n")
    return claimed


def verdict(tasks: dict[str, dict]) -> list[Claim]:
    """The paper's three claims on each word-problem task (``CLAIMED``: the chat model first,
    the closest to the paper's instruction-tuned model on GSM8K, then ``tw-arith``), from
    ``tasks`` (task -> ``{model, n, summary, differences}``, :func:`summarize` and
    :func:`differences`). CNTP beats sampling and beats greedy when the paired 95% bootstrap
    interval of the difference lies above 0; CNTP + SC improves on SC when that interval's low
    end is at or above 0. The code task is no claim of the paper (:func:`context`)."""
    claims = []
    for t in _check(tasks):
        task = tasks[t]
        for name, side, claim in COMPARISONS:
            a, b = name.split(" - ")
            d = task["differences"][name]
            held = d["ci_low"] > 0 if side == "above" else d["ci_low"] >= 0
            claims.append(Claim(
                f"{t} ({task['model']}): {claim}",
                _paper(a, b),
                f"{NAMES[a]} {_accuracy(task, a)} vs. {NAMES[b]} {_accuracy(task, b)}: {_difference(d)}, {task['n']} problems",
                f"paired 95% bootstrap interval of {NAMES[a]} - {NAMES[b]} accuracy over the {task['n']} problems "
                f"{'lies above 0' if side == 'above' else 'starts at or above 0'}", held))
    return claims


def context(tasks: dict[str, dict]) -> list[tuple[str, str, str]]:
    """Rows that inform the verdict without deciding it: CNTP's cost per claimed task, and the
    code task, whose one-line completions are no task of the paper (it evaluates GSM8K, MATH,
    StrategyQA, TruthfulQA and two multimodal benchmarks)."""
    rows = []
    for t in _check(tasks):
        s = {x["strategy"]: x for x in tasks[t]["summary"]}
        rows.append((f"{t} ({tasks[t]['model']}): CNTP's cost", "more trials only where the model is unsure",
                     f"{s['cntp']['forwards_per_answer'] / s['sample']['forwards_per_answer']:.1f}x the model forwards "
                     "of one sampled chain"))
    if "code" in tasks:
        code, d = tasks["code"], tasks["code"]["differences"]
        rows.append((f"code ({code['model']}), next-line completion: CNTP vs. greedy and sampling",
                     "no code task in the paper",
                     f"CNTP {_accuracy(code, 'cntp')} vs. greedy {_accuracy(code, 'greedy')}: {_difference(d['cntp - greedy'])}; "
                     f"vs. sampling {_accuracy(code, 'sample')}: {_difference(d['cntp - sample'])}, {code['n']} lines"))
    return rows


def headline(tasks: dict[str, dict]) -> str:
    """This run's numbers for the README: accuracy of every strategy on each claimed task, then
    the code task's CNTP and greedy (context: no code task in the paper)."""
    def pct(task, s):
        return _accuracy(task, s).replace("%", "")

    def votes(task):
        return next(x["chains"] for x in task["summary"] if x["strategy"] == "sc")
    parts = [f"{tasks[t]['model']} ({t}), {tasks[t]['n']} problems, accuracy % (95% interval): "
             f"CNTP {pct(tasks[t], 'cntp')} vs sampling {pct(tasks[t], 'sample')}, greedy {pct(tasks[t], 'greedy')}; "
             f"CNTP+SC({votes(tasks[t])}) {pct(tasks[t], 'cntp_sc')} vs SC({votes(tasks[t])}) {pct(tasks[t], 'sc')}"
             for t in _check(tasks)]
    if "code" in tasks:
        code = tasks["code"]
        parts.append(f"code ({code['model']}, {code['n']} lines; no code task in the paper): CNTP {pct(code, 'cntp')} "
                     f"vs greedy {pct(code, 'greedy')}")
    return "; ".join(parts)
