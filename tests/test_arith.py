"""The tw-arith problem generator: correct chains, deterministic, held-out test set."""
import random
import re

import pytest

import copy

from tokenworks.decoding.arith import (SPLIT_SIZES, chat_items, chat_messages, extract_answer, parse_answer,
                                       problem, problems, prompt, split, training_text)
from tokenworks.models import load


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


def test_difficulty_sets_the_number_of_steps_and_the_largest_value():
    for steps in [(1, 1), (1, 2), (3, 3)]:
        for p in problems(200, seed=5, steps=steps, max_value=60):
            assert steps[0] <= p["solution"].count("=") <= steps[1]
            assert all(int(v) <= 60 + 40 for v in re.findall(r"= (\d+)", p["solution"]))  # start <= 40
            assert extract_answer(p["solution"]) == p["answer"]
    assert problems(30, seed=5) == problems(30, seed=5, steps=(2, 4), max_value=200)  # the defaults
    with pytest.raises(ValueError, match="fewest"):
        problems(3, seed=1, steps=(2, 1))


@pytest.mark.parametrize("text, answer", [
    ("14 + 9 = 23. 23 - 6 = 17. The answer is 17.", 17), ("So #### 1,250 apples", 1250),
    ("12 * 3 = 36. 36 / 4 = 9", 9), ("He has 5 apples left", 5), ("The answer is: $42.", 42),
    ("#### 3. The answer is 4.", 3), ("7 + 1 = 8. The answer is 8, since 2 + 6 = 8", 8),
    ("the answer is 2.5", None), ("I do not know.", None), ("", None), ("= -3", -3)])
def test_parse_answer_finds_the_final_number(text, answer):
    assert parse_answer(text) == answer


def test_chat_messages_alternate_worked_shots_then_ask():
    shots, [test] = problems(2, seed=3), problems(1, seed=4)
    msgs = chat_messages(test, shots)
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant", "user"]
    assert msgs[-1]["content"] == test["question"]
    for shot, reply in zip(shots, msgs[1::2][:2]):
        assert "####" not in reply["content"] and parse_answer(reply["content"]) == shot["answer"]
        assert reply["content"].endswith(f"The answer is {shot['answer']}.")


def test_chat_items_use_the_template_and_refuse_a_tokenizer_without_one():
    _, tok = load("tw-micro", device="cpu")
    with pytest.raises(ValueError, match="no chat template"):
        chat_items(tok, problems(1, seed=4), [])
    chat = copy.deepcopy(tok)
    chat.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                          "{% if add_generation_prompt %}<assistant>{% endif %}")
    shots, tests = problems(1, seed=3), problems(2, seed=4)
    items = chat_items(chat, tests, shots)
    assert [it["target"] for it in items] == [p["answer"] for p in tests]
    for it, p in zip(items, tests):
        assert it["prompt"] == tok.decode(it["ids"]) and it["prompt"].endswith("<assistant>")
        assert it["prompt"].index(shots[0]["question"]) < it["prompt"].index(p["question"])
