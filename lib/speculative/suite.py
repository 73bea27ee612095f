"""Prompt suites for the speculative notebooks: held-out stdlib code, HumanEval, Spec-Bench.

:func:`prompt_suite` builds the suites a notebook names (``"stdlib"``, ``"humaneval"``, a
path of Spec-Bench's ``question.jsonl``, or a list of them), each prompt tagged with its suite.

``stdlib``: an offline task suite in the spirit of Spec-Bench (Xia et al. 2024), from
held-out stdlib code. Four categories, ``n`` prompts each, drawn deterministically from the test split:

* ``function``: the code before a function plus its ``def`` line; write the function.
* ``continuation``: a window of a file ending at a line break; continue the file.
* ``copy_edit``: a whole function, then a comment asking for it again with one identifier
  renamed, then the renamed ``def`` line (copy-heavy, where lookup drafts shine).
* ``docstring``: a ``def`` line and its docstring; write the body.

``humaneval``: HumanEval's problem prompts (Chen et al. 2021; signature and docstring), one
category, as plain text: no chat template, also for instruct models (SmolLM2-Instruct
continues a code prompt as code).

Online, ``spec_bench(path_or_url)`` reads Spec-Bench's ``question.jsonl`` through ``datasets``.
"""
from __future__ import annotations

import ast
import random
import re

from tokenworks.benchmarks import humaneval
from tokenworks.models.corpus import function_nodes, stdlib_corpus

CATEGORIES = ("function", "continuation", "copy_edit", "docstring")
SUITES = ("stdlib", "humaneval")


def _functions(text: str):
    """(start line, body start line, end line, name, docstring?) of every function, 0-based."""
    found = []
    for node in function_nodes(text):
        if node.body:
            start = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
            has_doc = ast.get_docstring(node) is not None
            body = node.body[1] if has_doc and len(node.body) > 1 else node.body[0]
            found.append((start, node.lineno - 1, body.lineno - 1, node.end_lineno, node.name, has_doc))
    return found


def _tail(tokenizer, text: str, max_tokens: int) -> str:
    """The end of ``text`` that fits in ``max_tokens`` tokens, cut at a line break."""
    ids = tokenizer(text)["input_ids"]
    if len(ids) <= max_tokens:
        return text
    cut = tokenizer.decode(ids[-max_tokens:])
    return cut[cut.find("\n") + 1:] if "\n" in cut[:-1] else cut


def stdlib_suite(texts: list[str], tokenizer, n: int = 80, max_prompt_tokens: int = 768,
                 seed: int = 0) -> list[dict]:
    """``n`` prompts per category from ``texts`` (held-out files): dicts with ``category``,
    ``prompt`` (text) and ``source`` (file index and line)."""
    if n < 1 or max_prompt_tokens < 16:
        raise ValueError(f"need n >= 1 and max_prompt_tokens >= 16, got {n}, {max_prompt_tokens}")
    rng = random.Random(seed)
    funcs = [(d, f) for d, t in enumerate(texts) for f in _functions(t)]
    rng.shuffle(funcs)
    prompts = {c: [] for c in CATEGORIES}
    lines_of = [t.splitlines(keepends=True) for t in texts]

    def add(category, prompt, source):
        if len(prompts[category]) < n and prompt.strip():
            prompts[category].append({"category": category, "source": source,
                                      "prompt": _tail(tokenizer, prompt, max_prompt_tokens)})

    for d, (start, def_line, body, end, name, has_doc) in funcs:
        lines = lines_of[d]
        if not has_doc:
            add("function", "".join(lines[:body]), (d, def_line))
        else:
            add("docstring", "".join(lines[max(0, start - 20):body]), (d, def_line))
        source = "".join(lines[start:end])
        if 3 <= end - start <= 40 and len(name) > 2:
            new = name + "_v2"
            head = re.sub(rf"\b{re.escape(name)}\b", new, lines[def_line].rstrip("\n")) + "\n"
            add("copy_edit", f"{source}\n\n# The same function, with `{name}` renamed to `{new}`:\n{head}", (d, def_line))
    order = list(range(len(texts)))
    rng.shuffle(order)
    while len(prompts["continuation"]) < n:
        for d in order:
            lines = lines_of[d]
            if len(lines) < 40:
                continue
            cut = rng.randrange(20, len(lines) - 10)
            add("continuation", "".join(lines[:cut]), (d, cut))
        if not any(len(lines_of[d]) >= 40 for d in order):
            raise ValueError("no held-out file is long enough for the continuation category")
    short = [c for c in CATEGORIES if len(prompts[c]) < n]
    if short:
        raise ValueError(f"the held-out files give fewer than {n} prompts for {short}; lower n")
    return [p for c in CATEGORIES for p in prompts[c]]


def spec_bench(path_or_url: str, tokenizer, n: int | None = None) -> list[dict]:
    """Spec-Bench's ``question.jsonl`` (first turn of each question), with the tokenizer's
    chat template when it has one. Needs the file locally or the network."""
    from datasets import load_dataset

    rows = load_dataset("json", data_files=path_or_url, split="train")
    out, per_cat = [], {}
    for row in rows:
        cat = row["category"]
        if n and per_cat.get(cat, 0) >= n:
            continue
        per_cat[cat] = per_cat.get(cat, 0) + 1
        text = row["turns"][0]
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                                 tokenize=False, add_generation_prompt=True)
        out.append({"category": cat, "prompt": text, "source": row.get("question_id")})
    return out


def humaneval_suite(tokenizer, n: int, max_prompt_tokens: int = 768, seed: int = 0) -> list[dict]:
    """``n`` HumanEval problems drawn with ``seed``, in task order: dicts with ``category``
    (``"humaneval"``), ``prompt`` (the problem's prompt, plain text) and ``source`` (task id)."""
    problems = humaneval()
    if not 1 <= n <= len(problems):
        raise ValueError(f"n_humaneval must be 1 to {len(problems)} (HumanEval's problems), got {n}")
    chosen = sorted(random.Random(seed).sample(range(len(problems)), n))
    return [{"category": "humaneval", "source": problems[i]["task_id"],
             "prompt": _tail(tokenizer, problems[i]["prompt"], max_prompt_tokens)} for i in chosen]


def prompt_suite(suite, tokenizer, n_per_category: int, n_humaneval: int,
                 max_prompt_tokens: int, seed: int = 0) -> list[dict]:
    """The prompts of ``suite``: one name or a list of names, each ``"stdlib"``
    (``n_per_category`` per category), ``"humaneval"`` (``n_humaneval`` problems) or a path/URL
    of Spec-Bench's ``question.jsonl`` (``n_per_category`` per category); suites in the order
    given, every prompt dict with a ``suite`` key."""
    if isinstance(suite, str):
        names = [suite]
    elif isinstance(suite, (list, tuple)) and all(isinstance(s, str) for s in suite):
        names = list(suite)
    else:
        raise TypeError(f"suite must be a suite name or a list of them ({', '.join(map(repr, SUITES))}), "
                        f"got {suite!r}")
    if not names:
        raise ValueError(f"suite needs at least one of {', '.join(map(repr, SUITES))}")
    twice = sorted({s for s in names if names.count(s) > 1})
    if twice:
        raise ValueError(f"suite names {twice} twice: each suite runs once")
    prompts = []
    for name in names:
        if name == "stdlib":
            part = stdlib_suite(stdlib_corpus().texts("test"), tokenizer, n=n_per_category,
                                max_prompt_tokens=max_prompt_tokens, seed=seed)
        elif name == "humaneval":
            part = humaneval_suite(tokenizer, n_humaneval, max_prompt_tokens, seed)
        elif name.endswith(".jsonl"):
            part = spec_bench(name, tokenizer, n=n_per_category)
        else:
            raise ValueError(f"unknown suite {name!r}: choose {', '.join(map(repr, SUITES))}, a list of "
                             "them, or a path/URL of Spec-Bench's question.jsonl")
        prompts += [{**p, "suite": name} for p in part]
    return prompts
