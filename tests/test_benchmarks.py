"""The packaged benchmarks: the needle test's prompts and HumanEval through its harness."""
import pytest

from tokenworks import benchmarks
from tokenworks.models import load


@pytest.fixture(scope="module")
def tokenizers():
    return {"tw-micro": load("tw-micro", device="cpu")[1], "smollm2-135m": load("smollm2-135m", device="cpu")[1]}


def test_the_packages_hold_the_original_data():
    assert len(benchmarks.essays()) == 49 and sum(map(len, benchmarks.essays())) == 643_830
    problems = benchmarks.humaneval()
    assert len(problems) == 164 and problems[0]["task_id"] == "HumanEval/0"


@pytest.mark.parametrize("name", ["tw-micro", "smollm2-135m"])  # plain prompt; chat template
@pytest.mark.parametrize("length,depth", [(300, 0.0), (500, 0.5), (1000, 0.9), (1000, 1.0)])
def test_needle_prompt_has_the_length_and_the_needle_where_it_says(tokenizers, name, length, depth):
    tok = tokenizers[name]
    p = benchmarks.needle_prompt(tok, length, depth)
    assert len(p["ids"]) == length
    assert tok.decode(p["ids"][p["needle_start"]:p["needle_end"]]).strip() == benchmarks.NEEDLE
    assert benchmarks.QUESTION in tok.decode(p["ids"][p["needle_end"]:])
    head = benchmarks.needle_prompt(tok, length, 0.0)["needle_start"]  # the prompt before the essays
    tail = length - benchmarks.needle_prompt(tok, length, 1.0)["needle_end"]  # the question after them
    hay = length - head - tail - (p["needle_end"] - p["needle_start"])
    share = (p["needle_start"] - head) / hay
    assert share <= depth + 0.01 and (depth == 0 or share > depth - 0.15)  # backed up to a '.'
    if head < p["needle_start"] < head + hay:
        assert tok.decode(p["ids"][p["needle_start"] - 1]).rstrip().endswith(".")


def test_needle_prompt_refuses_bad_input(tokenizers):
    with pytest.raises(ValueError, match="depth"):
        benchmarks.needle_prompt(tokenizers["tw-micro"], 500, 1.5)
    with pytest.raises(ValueError, match="no room"):
        benchmarks.needle_prompt(tokenizers["smollm2-135m"], 40, 0.5)


def test_found_needle_needs_both_key_phrases():
    assert benchmarks.found_needle("Eat a Sandwich and sit in Dolores Park.")
    assert not benchmarks.found_needle("Eat a sandwich.")


def test_humaneval_harness_passes_canonical_and_fails_wrong_solutions():
    for problem in benchmarks.humaneval()[:3]:
        assert benchmarks.passes(problem, problem["canonical_solution"])
        assert not benchmarks.passes(problem, "    return None\n")
    assert not benchmarks.passes(benchmarks.humaneval()[0], "    while True:\n        pass\n", timeout=0.5)
