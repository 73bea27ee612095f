"""Long-context tasks for the KV-cache harness, generated offline and
deterministically: the original needle test on Paul Graham's essays (``essay_items``), needles
in held-out code (``needle_items``), key-value retrieval and threads (``kv_items``), and any
data set in kvpress's long-context format (``hub_items``, online). Each item is ``{"context",
"question", "answer" (or "answers"), "depth", ...}`` for ``tokenworks.kvcache.needle_rows``;
``answered`` scores a decoded answer."""
from __future__ import annotations

import random
import statistics
import time

from tqdm import tqdm

from tokenworks.benchmarks import found_needle, needle_prompt
from tokenworks.kvcache.gemfilter import full_layers, gemfilter_generate, layer_scores, top_tokens
from tokenworks.kvcache.harness import (capture_prefill, continuation_nll, greedy_after, method_press, replayable,
                                        selecting)
from tokenworks.models.zoo import filler_lines


ESSAY_ANSWER_TOKENS = 24  # a short greedy answer, enough for the needle's sentence


def essay_items(tokenizer, contexts: list[int], depths: list[float]) -> list[dict]:
    """The original Needle-in-a-Haystack test (Kamradt, 2023) for ``needle_rows``: one item per
    (context length, depth), in that order, from ``tokenworks.benchmarks.needle_prompt`` (its
    prompt of exactly ``context`` tokens, the needle sentence in the essays at ``depth``). The
    prompt is split where the question begins: ``context`` (instructions, essays and needle) is
    what a press compresses, ``question`` (the question and, for chat models, the assistant's
    turn) is fed after it uncompressed, as kvpress's pipeline treats the question. Answers are
    ``ESSAY_ANSWER_TOKENS`` greedy tokens, scored by ``found_needle`` (``answered``)."""
    if not contexts or not depths:
        raise ValueError(f"need at least one context length and one depth; got contexts {contexts}, depths {depths}")
    items = []
    for n in contexts:
        # the question is the same at every depth: at depth 1 it starts right after the needle
        question_start = needle_prompt(tokenizer, n, 1.0)["needle_end"]
        for depth in depths:
            prompt = needle_prompt(tokenizer, n, depth)
            ids = prompt["ids"]
            items.append({"task": "essay", "depth": depth, "context_tokens": n, "context": ids[:question_start],
                          "question": ids[question_start:], "needle_start": prompt["needle_start"],
                          "needle_end": prompt["needle_end"], "max_new_tokens": ESSAY_ANSWER_TOKENS})
    return items


def needle_items(texts: list[str], tokenizer, context_tokens: int, depths: list[float],
                 n: int, seed: int = 0) -> list[dict]:
    """Needle in a haystack on code: ``KEY_<k> = '<6 digits>'`` at fraction ``depth`` of
    about ``context_tokens`` tokens of held-out code (the zoo's retrieval-probe format);
    the question ``assert KEY_<k> == '`` follows the context; the answer is the digits and
    the quote. ``n`` items per depth; ``ids`` start with EOS, as the zoo was trained."""
    if not all(0 <= d <= 1 for d in depths) or n < 1 or context_tokens < 32:
        raise ValueError(f"need depths in [0, 1], n >= 1 and context_tokens >= 32; got "
                         f"{depths}, {n}, {context_tokens}")
    rng, items = random.Random(seed), []
    for depth in depths:
        for _ in range(n):
            key, value = rng.randrange(100), f"{rng.randrange(10**6):06d}"
            lines = filler_lines(texts, tokenizer, context_tokens - 16, rng)
            lines.insert(round(depth * len(lines)), f"KEY_{key} = '{value}'")
            context = [tokenizer.eos_token_id] + tokenizer("\n".join(lines) + "\n", add_special_tokens=False)["input_ids"]
            items.append({"depth": depth, "context": context, "answer": f"{value}'",
                          "context_tokens": context_tokens,
                          "question": tokenizer(f"assert KEY_{key} == '", add_special_tokens=False)["input_ids"]})
    return items


def kv_items(texts: list[str], tokenizer, context_tokens: int, hops: int, n: int, n_keys: int = 8,
             seed: int = 0) -> list[dict]:
    """Key-value retrieval and thread following on code (task c; after RULER's multi-key NIAH
    and variable tracking, and Needle Threading's threads, arXiv 2411.05000), ``n`` items.

    ``n_keys`` constants ``KEY_<k> = '<6 digits>'`` at random places in about
    ``context_tokens`` tokens of held-out code, all with the same stem (distractors for one
    another). ``hops = 0``: the question asks for one of them (key-value retrieval).
    ``hops = h > 0``: the asked key is the end of a thread ``KEY_a = KEY_b``, ``KEY_b =
    KEY_c``, ..., ``h`` links after the constant it resolves to, each link later in the code
    than the one it names (as Python needs); the model must follow it back. ``depth``: where
    the value is, as a fraction of the context."""
    if hops < 0 or n < 1 or n_keys < 1 or context_tokens < 32:
        raise ValueError(f"need hops >= 0, n >= 1, n_keys >= 1 and context_tokens >= 32; got "
                         f"{hops}, {n}, {n_keys}, {context_tokens}")
    rng, items = random.Random(seed), []
    for _ in range(n):
        keys = rng.sample(range(100), n_keys + hops)
        values = [f"{rng.randrange(10**6):06d}" for _ in range(n_keys)]
        lines = filler_lines(texts, tokenizer, context_tokens - 12 * (n_keys + hops) - 4, rng)
        slots = sorted(rng.sample(range(len(lines) + 1), n_keys + hops))
        constants = [f"KEY_{k} = '{v}'" for k, v in zip(keys, values)]
        # a thread: the value (constant 0), then its links in order, each naming the one before
        links = [f"KEY_{keys[n_keys + i]} = KEY_{keys[n_keys + i - 1] if i else keys[0]}" for i in range(hops)]
        asked = rng.randrange(n_keys) if hops == 0 else 0
        ordered = set(rng.sample(range(n_keys + hops), hops + 1)) if hops else set()  # the thread's slots
        rest = constants[1:] if hops else constants[:]
        rng.shuffle(rest)
        thread, rest = iter(constants[:1] + links), iter(rest)
        placed = [next(thread) if j in ordered else next(rest) for j in range(n_keys + hops)]
        for slot, line in sorted(zip(slots, placed), reverse=True):
            lines.insert(slot, line)
        depth = lines.index(constants[asked]) / len(lines)
        key = keys[n_keys + hops - 1] if hops else keys[asked]
        context = [tokenizer.eos_token_id] + tokenizer("\n".join(lines) + "\n", add_special_tokens=False)["input_ids"]
        items.append({"depth": depth, "hops": hops, "context": context, "answer": f"{values[asked]}'",
                      "context_tokens": context_tokens,
                      "question": tokenizer(f"assert KEY_{key} == '", add_special_tokens=False)["input_ids"]})
    return items


def answered(text: str, item: dict) -> bool:
    """Essay items: the output holds the needle's key phrases (``found_needle``). Our code items:
    the output starts with the answer. Hub items (``answers``): every reference occurs in the
    output, ignoring case (RULER's ``string_match_all``, as kvpress scores it)."""
    if item.get("task") == "essay":
        return found_needle(text)
    if "answers" in item:
        return all(a.lower() in text.lower() for a in item["answers"])
    return text.startswith(item["answer"])


def hub_items(source, tokenizer, n: int, config: str | None = None, split: str = "test",
              max_context_tokens: int | None = None) -> list[dict]:
    """Items for ``needle_rows`` from a data set in kvpress's long-context format (columns
    ``context``, ``question``, ``answer`` (a string or a list), optional ``answer_prefix`` and
    ``max_new_tokens``), e.g. ``simonjegou/ruler`` (config ``"4096"``): ``source`` is a hub id
    (loaded with ``datasets``, online) or a ``datasets.Dataset``. The first ``n`` rows whose
    context fits ``max_context_tokens``."""
    if isinstance(source, str):
        from datasets import load_dataset
        try:
            source = load_dataset(source, config, split=split)
        except Exception as e:  # offline, unknown id, wrong config or split
            raise ValueError(f"could not load data set {source!r} (config {config!r}, split {split!r}): {e}. "
                             "Offline, use the generated tasks (needle_items, kv_items).") from e
    missing = {"context", "question", "answer"} - set(source.column_names)
    if missing:
        raise ValueError(f"a long-context data set needs columns context, question, answer; missing {sorted(missing)}")
    items = []
    for row in source:
        context = tokenizer(row["context"])["input_ids"]
        if max_context_tokens and len(context) > max_context_tokens:
            continue
        answers = row["answer"] if isinstance(row["answer"], list) else [row["answer"]]
        question = tokenizer(row["question"] + (row.get("answer_prefix") or ""), add_special_tokens=False)["input_ids"]
        items.append({"context": context, "question": question, "answers": answers, "answer": answers[0],
                      "depth": None, "context_tokens": len(context), "max_new_tokens": row.get("max_new_tokens") or
                      max(len(tokenizer(a)["input_ids"]) for a in answers) + 8})
        if len(items) == n:
            break
    return items


def _selection(state) -> dict:
    """The share of the visible cache read, and of selections reused, by TokenSelect queries."""
    if state is None:
        return {"read": None, "reused": None}
    looked = state.selected + state.reused
    if not state.visible:  # no query ran after the prefill (a one-token target)
        return {"read": None, "reused": None}
    return {"read": state.attended / state.visible, "reused": state.reused / looked if looked else 0.0}


def needle_rows(model, tokenizer, items: list[dict], methods: dict[str, dict],
                query_aware: bool = False) -> list[dict]:
    """Greedy answers to ``essay_items``, ``needle_items``, ``kv_items`` or ``hub_items`` under
    every method spec (see ``method_press``, ``selecting``); one row per (item, method) with ``ok`` and, for TokenSelect, the share of
    the visible cache that the question's and answer's queries read and of their selections
    that were reused (``_selection``). One full-cache prefill per item serves every
    ``replayable`` method (``capture_prefill``)."""
    rows = []
    for i, item in enumerate(tqdm(items, desc="needles", mininterval=10)):
        n_new = item.get("max_new_tokens") or len(tokenizer(item["answer"])["input_ids"]) + 1
        prefilled = item["context"] + (item["question"] if query_aware else [])
        shared = _shared(model, prefilled, methods)
        for name, method in methods.items():
            with selecting(model, method) as state:
                out = greedy_after(model, item["context"], item["question"], max_new_tokens=n_new,
                                   press=method_press(method, len(prefilled)), query_aware=query_aware,
                                   prefill=shared if replayable(method) else None)
            rows.append({"item": i, "method": name, "context": len(item["context"]),
                         "context_target": item.get("context_tokens"), "depth": item["depth"],
                         "ok": answered(tokenizer.decode(out), item), **_selection(state)})
    return rows


def perplexity_rows(model, streams: list[tuple[list[int], list[int]]], methods: dict[str, dict]) -> list[dict]:
    """NLL of each (context, target) stream's target under every method spec, with the KV
    bytes held after the prefill and TokenSelect's ``_selection`` shares; one full-cache
    prefill per stream for every ``replayable`` method."""
    rows = []
    for i, (context, target) in enumerate(tqdm(streams, desc="perplexity", mininterval=10)):
        shared = _shared(model, context, methods)
        for name, method in methods.items():
            with selecting(model, method) as state:
                nll, held = continuation_nll(model, context, target, press=method_press(method, len(context)),
                                             prefill=shared if replayable(method) else None)
            rows.append({"stream": i, "method": name, "nll": nll.mean().item(), "tokens": len(target),
                         "kv_bytes": held, **_selection(state)})
    return rows


def _shared(model, ids: list[int], methods: dict[str, dict]):
    """A ``capture_prefill`` of ``ids`` where two or more methods can share it, else None."""
    return capture_prefill(model, ids) if sum(map(replayable, methods.values())) > 1 else None


def gemfilter_rows(model, tokenizer, items: list[dict], k: int, layer: int, name: str | None = None) -> list[dict]:
    """GemFilter's greedy answers to needle items, rows as ``needle_rows``'s (method ``name``,
    default ``"gemfilter k=<k>"``). GemFilter reads the question: its last query ranks the
    prompt, so it selects from ``context + question``; ``needle_kept`` is the share of an essay
    needle's tokens among those kept."""
    name = name or f"gemfilter k={k}"
    rows = []
    for i, item in enumerate(tqdm(items, desc=name, mininterval=10)):
        n_new = item.get("max_new_tokens") or len(tokenizer(item["answer"])["input_ids"]) + 1
        out = gemfilter_generate(model, item["context"] + item["question"], k, layer, max_new_tokens=n_new)
        rows.append({"item": i, "method": name, "context": len(item["context"]),
                     "context_target": item.get("context_tokens"), "depth": item["depth"],
                     "ok": answered(tokenizer.decode(out["tokens"]), item),
                     "needle_kept": _needle_kept(item, set(out["selected"]))})
    return rows


def _needle_kept(item: dict, kept: set[int]) -> float | None:
    if "needle_start" not in item:
        return None
    span = range(item["needle_start"], item["needle_end"])
    return sum(i in kept for i in span) / len(span)


def selection_recall(model, items: list[dict], k: int, layers: list[int] | None = None) -> list[dict]:
    """For essay needle items: at every layer (default: all but sliding-window ones), the share of the needle's tokens
    that GemFilter's top-``k`` at that layer keeps, from one forward per item (the paper's
    per-layer view, used to choose the selection layer). Rows ``{item, layer, context_target,
    depth, recall}``."""
    layers = full_layers(model) if layers is None else layers
    rows = []
    for i, item in enumerate(tqdm(items, desc="layers", mininterval=10)):
        scores = layer_scores(model, item["context"] + item["question"], layers)
        for r in layers:
            rows.append({"item": i, "layer": r, "context_target": item.get("context_tokens"), "depth": item["depth"],
                         "recall": _needle_kept(item, set(top_tokens(scores[r], k)))})
    return rows


def first_token_seconds(model, items: list[dict], methods: dict, repeats: int = 3) -> list[dict]:
    """Time to first token, side by side: for each item, every method in turn, ``repeats``
    times (medians). ``methods``: name -> ``{"gemfilter": (k, layer)}`` or a ``needle_rows``
    spec, prefilled query-aware (the question with the context, one greedy token), as
    GemFilter reads it. Rows ``{item, method, context_target, seconds}``."""
    rows = []
    for i, item in enumerate(tqdm(items, desc="time to first token", mininterval=10)):
        prompt = item["context"] + item["question"]
        times = {name: [] for name in methods}
        for _ in range(repeats):
            for name, spec in methods.items():
                t0 = time.perf_counter()
                if "gemfilter" in spec:
                    gemfilter_generate(model, prompt, *spec["gemfilter"], max_new_tokens=1)
                else:
                    with selecting(model, spec):
                        greedy_after(model, item["context"], item["question"], press=method_press(spec, len(prompt)),
                                     max_new_tokens=1, query_aware=True)
                times[name].append(time.perf_counter() - t0)
        rows += [{"item": i, "method": name, "context_target": item.get("context_tokens"),
                  "seconds": statistics.median(ts)} for name, ts in times.items()]
    return rows
