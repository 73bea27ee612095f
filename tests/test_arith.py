"""The tw-arith problem generator: correct chains, deterministic, held-out test set."""
import random
import re

import pytest

from tokenworks.decoding.arith import (SPLIT_SIZES, extract_answer, problem, problems, prompt, split,
                              training_text)


def test_every_equation_is_right_and_chains_to_the_answer():
    rng = random.Random(0)
    for _ in range(500):
        p = problem(rng)
        equations = re.findall(r"(\d+) ([-+*/]) (\d+) = (\d+)", p["solution"])
        assert 2 <= len(equations) <= 4
        value = int(re.search(r"has (\d+)", p["question"]).group(1))
        for a, op, b, c in equations:
            assert int(a) == value
            value = {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b),
                     "/": int(a) // int(b)}[op]
            assert value == int(c) and (op != "/" or int(a) % int(b) == 0) and value > 0
        assert value == p["answer"] == extract_answer(training_text(p))


def test_deterministic_and_held_out():
    train = problems(2000, seed=1)
    assert train == problems(2000, seed=1)
    test = problems(300, seed=2, exclude={p["question"] for p in train})
    assert not {p["question"] for p in test} & {p["question"] for p in train}
    assert prompt(test[0]).endswith("\nA:") and extract_answer("no answer") is None
    with pytest.raises(ValueError, match="n must be"):
        problems(0, seed=1)


def test_zoo_splits_are_fixed_and_checked():
    assert len(split("test")) == SPLIT_SIZES["test"] and split("test", 5) == split("test")[:5]
    assert not {p["question"] for p in split("test")} & {p["question"] for p in split("validation")}
    with pytest.raises(ValueError, match="unknown split"):
        split("train")
    with pytest.raises(ValueError, match="ask for 1 to"):
        split("validation", 10_000)
