"""An offline task suite in the spirit of Spec-Bench (Xia et al. 2024), from held-out stdlib code.

Four categories, ``n`` prompts each, drawn deterministically from the test split:

* ``function``: the code before a function plus its ``def`` line; write the function.
* ``continuation``: a window of a file ending at a line break; continue the file.
* ``copy_edit``: a whole function, then a comment asking for it again with one identifier
  renamed, then the renamed ``def`` line (copy-heavy, where lookup drafts shine).
* ``docstring``: a ``def`` line and its docstring; write the body.

Online, ``spec_bench(path_or_url)`` reads Spec-Bench's ``question.jsonl`` through ``datasets``.
"""
from __future__ import annotations

import ast
import random
import re

from tokenworks.models.corpus import function_nodes

CATEGORIES = ("function", "continuation", "copy_edit", "docstring")


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
