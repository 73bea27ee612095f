"""Run decoding methods side by side over a prompt suite: identity with greedy, acceptance, speed.

Speed follows Spec-Bench: per prompt, tokens per second with the prefill included; a
method's speed-up is the mean of its tokens per second over the mean of the baseline's,
measured in the same run with the methods interleaved prompt by prompt (this machine's
speed drifts, so sequential blocks per method would bias the ratio).

Losslessness is checked on every prompt: :func:`lossless_report` lists each output that
differs from the reference with its first differing token, :func:`check_lossless` raises.
:func:`greedy_vs_hf` asks whether the harness itself costs speed: our greedy loop against
Hugging Face ``generate(do_sample=False)`` on the same prompts and the same tokens.
"""
from __future__ import annotations

import time

import torch
from tqdm import tqdm

from tokenworks.speculative import generate, make_drafter
from tokenworks.speculative.engine import PHASES


def hf_generate(model, ids: list[int], max_new_tokens: int, eos_token_id: int, **kwargs) -> list[int]:
    """Hugging Face ``generate``, greedy (``kwargs`` such as ``prompt_lookup_num_tokens``)."""
    x = torch.tensor([ids], device=next(model.parameters()).device)
    out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens,
                         do_sample=False, eos_token_id=eos_token_id, pad_token_id=eos_token_id, **kwargs)
    return out[0, len(ids):].tolist()


def first_difference(a: list[int], b: list[int]) -> int | None:
    """The first position where ``a`` and ``b`` differ (a length difference counts), or None."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y),
                None if len(a) == len(b) else min(len(a), len(b)))


def _timed(fn, cuda: bool):
    """``(fn(), seconds)``, synchronising a GPU before reading the clock."""
    t0 = time.perf_counter()
    out = fn()
    if cuda:
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def repeated_ngram_share(prompt: list[int], output: list[int], n: int = 4) -> float:
    """Share of the output's tokens that complete an ``n``-gram already seen earlier in the
    prompt or output: how much room copying drafts (lookup, tries) have."""
    seq, seen, hits = prompt + output, set(), 0
    for j in range(n, len(seq) + 1):
        gram = tuple(seq[j - n:j])
        if j > len(prompt):
            hits += gram in seen
        seen.add(gram)
    return hits / max(1, len(output))


def method_runners(model, methods: list[str], options: dict | None = None) -> dict:
    """``name -> fn(ids, max_new_tokens, eos) -> Generation or tokens``.

    Ours: a method of ``METHODS``, or ``method:label`` for a variant (options under the
    full name, e.g. ``"token_recycling:2.2.2": {"template": "2.2.2", "cost": None}``); one
    drafter per name, kept across prompts as in the papers. Peers: ``hf_greedy`` and
    ``hf_prompt_lookup`` (``generate(prompt_lookup_num_tokens=10)``).
    """
    options = options or {}
    unknown = sorted(set(options) - set(methods))
    if unknown:
        raise ValueError(f"options for {unknown}, which are not among the methods {methods}")
    runners = {}
    for name in methods:
        if name == "hf_greedy":
            runners[name] = lambda ids, n, eos: hf_generate(model, ids, n, eos)
        elif name == "hf_prompt_lookup":
            runners[name] = lambda ids, n, eos: hf_generate(model, ids, n, eos, prompt_lookup_num_tokens=10)
        else:
            drafter = make_drafter(name.split(":")[0], model, **options.get(name, {}))
            runners[name] = lambda ids, n, eos, drafter=drafter: generate(
                model, ids, max_new_tokens=n, drafter=drafter, eos_token_id=eos)
    return runners


def run_suite(model, tokenizer, prompts: list[dict], methods: list[str], max_new_tokens: int,
              options: dict | None = None, reference: str = "greedy", warmup: int = 1) -> list[dict]:
    """One row per (prompt, method): tokens, identical-to-reference flag and first differing
    token (``first_difference``, None when identical), seconds, acceptance, and for ours the
    drafted nodes per step and the seconds per phase of the steps (``profile``)."""
    if reference not in methods:
        raise ValueError(f"the reference method {reference!r} must be among {methods}")
    runners = method_runners(model, methods, options)
    eos = tokenizer.eos_token_id
    encoded = [tokenizer(p["prompt"])["input_ids"] for p in prompts]
    for ids in encoded[:warmup]:
        for fn in runners.values():
            fn(ids, 8, eos)
    cuda = next(model.parameters()).device.type == "cuda"
    rows = []
    for i, (p, ids) in enumerate(zip(prompts, tqdm(encoded, desc="prompts", mininterval=5))):
        outputs = {}
        for name, fn in runners.items():
            out, seconds = _timed(lambda: fn(ids, max_new_tokens, eos), cuda)
            ours = not isinstance(out, list)
            outputs[name] = out.tokens if ours else out
            rows.append({"prompt": i, "category": p["category"], "method": name,
                         "prompt_tokens": len(ids), "new_tokens": len(outputs[name]), "seconds": seconds,
                         "steps": out.steps if ours else None, "accepted": out.accepted if ours else None,
                         "tree_nodes": sum(out.drafted) / max(1, out.steps) if ours else None,
                         "draft_seconds": out.draft_seconds if ours else 0.0,
                         "profile": out.profile if ours else None})
        repeated = repeated_ngram_share(ids, outputs[reference])
        for r in rows[-len(runners):]:
            r["identical"] = outputs[r["method"]] == outputs[reference]
            r["first_difference"] = first_difference(outputs[r["method"]], outputs[reference])
            r["repeated_4grams"] = repeated
    return rows


def lossless_report(rows: list[dict]) -> dict:
    """How many of :func:`run_suite`'s generations equal the reference's, and each that does
    not: prompt, category, method and first differing token."""
    return {"prompts": len({r["prompt"] for r in rows}),
            "methods": list(dict.fromkeys(r["method"] for r in rows)),
            "identical": sum(r["identical"] for r in rows), "generations": len(rows),
            "mismatches": [{k: r[k] for k in ("prompt", "category", "method", "first_difference")}
                           for r in rows if not r["identical"]]}


def check_lossless(report: dict) -> None:
    """Raise (AssertionError) if :func:`lossless_report` found any output that differs from
    the reference: a lossless method must emit the greedy tokens on every prompt."""
    bad = report["mismatches"]
    if bad:
        listed = "; ".join(f"prompt {m['prompt']} ({m['category']}) {m['method']} from token "
                           f"{m['first_difference']}" for m in bad)
        raise AssertionError(f"{len(bad)} of {report['generations']} outputs differ from greedy "
                             f"decoding: {listed}. A lossless method must match on every prompt")


@torch.no_grad()
def greedy_vs_hf(model, tokenizer, prompts: list[dict], max_new_tokens: int, warmup: int = 1) -> dict:
    """Our greedy loop (``generate(method="greedy")``) against Hugging Face
    ``generate(do_sample=False)``, side by side: on each prompt both run, the first of them
    alternating from prompt to prompt (drift and cache warmth hit both alike), and their
    tokens must be equal. Tokens per second are total tokens over total seconds, prefill
    included; ``ratio`` is ours over Hugging Face's (1.0: the harness costs nothing)."""
    if not prompts:
        raise ValueError("greedy_vs_hf needs at least one prompt")
    eos = tokenizer.eos_token_id
    encoded = [tokenizer(p["prompt"])["input_ids"] for p in prompts]
    cuda = next(model.parameters()).device.type == "cuda"
    runners = {"ours": lambda ids, n: generate(model, ids, "greedy", max_new_tokens=n, eos_token_id=eos).tokens,
               "hf": lambda ids, n: hf_generate(model, ids, n, eos)}
    for ids in encoded[:warmup]:
        for fn in runners.values():
            fn(ids, 8)
    seconds, tokens = {"ours": 0.0, "hf": 0.0}, 0
    for i, ids in enumerate(encoded):
        outputs = {}
        for name in (["ours", "hf"] if i % 2 == 0 else ["hf", "ours"]):
            outputs[name], s = _timed(lambda: runners[name](ids, max_new_tokens), cuda)
            seconds[name] += s
        if outputs["ours"] != outputs["hf"]:
            raise AssertionError(f"greedy outputs on prompt {i} differ from Hugging Face generate's from "
                                 f"token {first_difference(outputs['ours'], outputs['hf'])}: the speeds "
                                 "would not compare the same work")
        tokens += len(outputs["ours"])
    ours, hf = tokens / seconds["ours"], tokens / seconds["hf"]
    return {"prompts": len(prompts), "tokens": tokens, "max_new_tokens": max_new_tokens,
            "ours_seconds": seconds["ours"], "hf_seconds": seconds["hf"],
            "ours_tokens_per_s": ours, "hf_tokens_per_s": hf, "ratio": ours / hf}


def summarize(rows: list[dict], baseline: str = "greedy") -> list[dict]:
    """Per method and category (and ``all``): identical outputs, mean accepted tokens per step
    (bonus included), tokens per second, speed-up over ``baseline``, and the share of the
    greedy output's tokens that repeat an earlier 4-gram."""
    def tps(rs):
        return sum(r["new_tokens"] / r["seconds"] for r in rs) / len(rs)

    cats = sorted({r["category"] for r in rows}) + ["all"]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    out = []
    for m in methods:
        for c in cats:
            rs = [r for r in rows if r["method"] == m and c in ("all", r["category"])]
            base = [r for r in rows if r["method"] == baseline and c in ("all", r["category"])]
            acc = [a for r in rs for a in (r["accepted"] or [])]
            out.append({"method": m, "category": c, "prompts": len(rs),
                        "identical": sum(r["identical"] for r in rs),
                        "mean_accepted": sum(acc) / len(acc) if acc else None,
                        "tokens_per_s": tps(rs), "speedup": tps(rs) / tps(base),
                        "repeated_4grams": sum(r["repeated_4grams"] for r in rs) / len(rs),
                        "draft_share": sum(r["draft_seconds"] for r in rs) / sum(r["seconds"] for r in rs),
                        "tree_nodes": (sum(r["tree_nodes"] * r["steps"] for r in rs) / sum(r["steps"] for r in rs)
                                       if rs[0]["steps"] else None)})
    return out


def step_profile(rows: list[dict]) -> dict:
    """Per method of ours: milliseconds per step in each phase of :data:`engine.PHASES`, summed
    over the suite, and ``other`` (prefill and the loop itself: wall clock minus the phases)."""
    out = {}
    for m in dict.fromkeys(r["method"] for r in rows if r["profile"]):
        rs = [r for r in rows if r["method"] == m]
        steps = sum(r["steps"] for r in rs)
        phases = {k: 1e3 * sum(r["profile"][k] for r in rs) / steps for k in PHASES}
        phases["other"] = 1e3 * sum(r["seconds"] for r in rs) / steps - sum(phases.values())
        out[m] = phases
    return out


def profile_markdown(profile: dict) -> str:
    """:func:`step_profile` as a markdown table (milliseconds per step)."""
    phases = list(next(iter(profile.values())))
    lines = ["| method | " + " | ".join(phases) + " | total |", "|---" * (len(phases) + 2) + "|"]
    for m, p in profile.items():
        lines.append(f"| {m} | " + " | ".join(f"{p[k]:.1f}" for k in phases) + f" | {sum(p.values()):.1f} |")
    return "\n".join(lines)


def cost_markdown(table: dict) -> str:
    """A :func:`~tokenworks.speculative.cost.measure_cost` table: ``c(T, L)`` and the one-token step."""
    lines = ["| cache L | one step (ms) | " + " | ".join(f"T={t}" for t in table["sizes"][1:]) + " |",
             "|---" * (len(table["sizes"]) + 1) + "|"]
    for L, s, c in zip(table["cache_lens"], table["seconds"], table["relative"]):
        lines.append(f"| {L} | {1e3 * s[0]:.1f} | " + " | ".join(f"{x:.2f}" for x in c[1:]) + " |")
    return "\n".join(lines)
