"""Multi-step arithmetic word problems with a worked chain of thought, for the `tw-arith` model.

>>> p = problem(random.Random(0))
>>> p["question"]   # 'Mia has 14 marbles. She finds 9 more. ... How many marbles does Mia have now?'
>>> p["solution"]   # '14 + 9 = 23. 23 - 6 = 17. #### 17'

Each problem tracks one quantity through 2 to 4 operations (gain, loss, multiply, share);
the chain of thought writes one equation per step and the answer after ``####``. Train and
test sets come from different seeds, and the test set drops any question that also occurs
in the training set, so test problems are never seen in training.
"""
from __future__ import annotations

import random
import re

NAMES = ["Mia", "Leo", "Ava", "Noah", "Zoe", "Omar", "Ines", "Ken", "Lena", "Raj", "Sara", "Tom"]
ITEMS = ["apples", "marbles", "stamps", "coins", "books", "shells", "cards", "pencils"]
PRONOUN = {"Mia": "She", "Ava": "She", "Zoe": "She", "Ines": "She", "Lena": "She", "Sara": "She"}


def problem(rng: random.Random, steps: tuple[int, int] = (2, 4), max_value: int = 200) -> dict:
    """One problem: ``question``, ``solution`` (chain of thought and ``#### answer``), ``answer``."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    he = PRONOUN.get(name, "He")
    value = rng.randint(2, 40)
    sentences = [f"{name} has {value} {item}."]
    equations = []
    for _ in range(rng.randint(*steps)):
        kind = rng.choice(["gain", "lose", "times", "share"])
        if kind == "times" and value * 2 <= max_value:
            k = rng.randint(2, min(5, max_value // value))
            sentences.append(f"{he} ends up with {k} times as many.")
            new, eq = value * k, f"{value} * {k} = {value * k}"
        elif kind == "share" and value >= 4 and any(value % k == 0 for k in (2, 3, 4)):
            k = rng.choice([k for k in (2, 3, 4) if value % k == 0])
            part = {2: "half", 3: "third", 4: "quarter"}[k]
            sentences.append(f"{he} keeps one {part} of them and gives the rest away.")
            new, eq = value // k, f"{value} / {k} = {value // k}"
        elif kind == "lose" and value > 1:
            k = rng.randint(1, value - 1)
            sentences.append(f"{he} gives {k} to a friend.")
            new, eq = value - k, f"{value} - {k} = {value - k}"
        else:
            k = rng.randint(1, max(1, min(50, max_value - value)))
            sentences.append(f"{he} gets {k} more.")
            new, eq = value + k, f"{value} + {k} = {value + k}"
        value = new
        equations.append(eq)
    sentences.append(f"How many {item} does {name} have now?")
    return {"question": " ".join(sentences), "solution": ". ".join(equations) + f". #### {value}",
            "answer": value}


def problems(n: int, seed: int, exclude: set[str] | None = None, steps: tuple[int, int] = (2, 4),
             max_value: int = 200) -> list[dict]:
    """``n`` distinct problems from ``seed``, none of whose questions is in ``exclude``;
    ``steps`` (fewest, most operations) and ``max_value`` set the difficulty."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 1 <= steps[0] <= steps[1]:
        raise ValueError(f"steps must be (fewest, most) operations with 1 <= fewest <= most, got {steps}")
    rng, seen, out = random.Random(seed), set(exclude or ()), []
    for _ in range(100 * n):
        p = problem(rng, steps, max_value)
        if p["question"] not in seen:
            seen.add(p["question"])
            out.append(p)
            if len(out) == n:
                return out
    raise ValueError(f"could not draw {n} distinct problems from seed {seed}")


# the zoo's fixed splits: tw-arith is trained on fresh problems that skip every validation
# and test question, and stops when validation accuracy reaches its target
SPLIT_SEEDS = {"tokenizer": 100, "validation": 101, "test": 102}
SPLIT_SIZES = {"validation": 200, "test": 1000}


def split(name: str, n: int | None = None) -> list[dict]:
    """The first ``n`` problems of the zoo's ``validation`` or ``test`` split (all by default)."""
    if name not in SPLIT_SIZES:
        raise ValueError(f"unknown split {name!r}: choose one of {', '.join(SPLIT_SIZES)}")
    size = SPLIT_SIZES[name]
    if n is not None and not 1 <= n <= size:
        raise ValueError(f"the {name} split holds {size} problems; ask for 1 to {size}, got {n}")
    return problems(size, seed=SPLIT_SEEDS[name])[:n]


def prompt(p: dict) -> str:
    """What the model sees; it must continue with the solution."""
    return f"Q: {p['question']}\nA:"


def training_text(p: dict) -> str:
    return f"{prompt(p)} {p['solution']}\n"


def extract_answer(text: str) -> int | None:
    """The integer after the first ``####`` (``None`` if there is none)."""
    m = re.search(r"####\s*(-?\d+)", text)
    return int(m.group(1)) if m else None


def chat_messages(p: dict, shots: list[dict]) -> list[dict]:
    """Chat messages for an instruction-tuned model: each shot is a user question answered by
    its worked solution ending "The answer is N.", then ``p``'s question (few-shot as user and
    assistant turns, as chat evaluations of GSM8K prompt it)."""
    turns = []
    for s in shots:
        reply = s["solution"].replace(" #### ", " The answer is ") + "."
        turns += [{"role": "user", "content": s["question"]}, {"role": "assistant", "content": reply}]
    return turns + [{"role": "user", "content": p["question"]}]


_NUMBER = r"-?\d[\d,]*(?:\.\d+)?"


def parse_answer(text: str) -> int | None:
    """The final answer of a free-form reply: the number after the first ``####``, else after
    the last "answer is", else the result of the last equation (after its ``=``), else the
    last number. Thousands separators are dropped; a number that is not a whole one, or no
    number at all, gives ``None``."""
    for pattern in (rf"####\s*\$?({_NUMBER})", rf"answer is:?\s*\$?({_NUMBER})", rf"=\s*\$?({_NUMBER})",
                    rf"({_NUMBER})"):
        found = re.findall(pattern, text, flags=re.IGNORECASE)
        if found:
            number = (found[0] if pattern.startswith("####") else found[-1]).replace(",", "")
            value = float(number)
            return int(value) if value.is_integer() else None
    return None


def chat_items(tokenizer, tests: list[dict], shots: list[dict]) -> list[dict]:
    """Items for ``tasks.run``: each test problem's few-shot chat (:func:`chat_messages`)
    through the tokenizer's chat template, generation prompt added, as token ``ids``."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("this tokenizer has no chat template: the chat arm needs an instruction-tuned "
                         "model such as 'smollm2-135m'")
    items = []
    for p in tests:
        ids = tokenizer.apply_chat_template(chat_messages(p, shots), add_generation_prompt=True,
                                            tokenize=True, return_dict=True)["input_ids"]
        items.append({"ids": list(ids), "prompt": tokenizer.decode(ids), "target": p["answer"]})
    return items
