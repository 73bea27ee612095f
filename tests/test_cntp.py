"""Decoding strategies (tokenworks.decoding): CNTP's trial rule, warping, determinism, bad input."""
import functools
import math

import pytest
import torch
from transformers.generation.logits_process import TopPLogitsWarper

from tokenworks.decoding import (decode, entropy, majority_vote, n_trials, punctuation_ids,
                                 warp)
from tokenworks.decoding import tasks as cntp
from tokenworks.models import load


@functools.cache
def micro():
    return load("tw-micro", device="cpu")


def test_trial_count_at_its_boundaries():
    step = 1.49 / 9  # entropy per extra trial
    assert n_trials(0.0) == 1 and n_trials(0.01) == 1
    assert n_trials(0.01 + step - 1e-9) == 1 and n_trials(0.01 + step + 1e-9) == 2
    assert n_trials(1.5) == 10 and n_trials(7.0) == 10
    assert n_trials(1.5 - 1e-9) == 9  # int() truncates, as in the reference code


@pytest.mark.parametrize("top_p", [0.05, 0.5, 0.9, 1.0])
def test_warp_matches_transformers_top_p(top_p):
    torch.manual_seed(0)
    logits = torch.randn(500) * 3
    ours = warp(logits, temperature=0.7, top_p=top_p)
    theirs = TopPLogitsWarper(top_p)(None, (logits / 0.7)[None])[0]
    assert torch.equal(ours > 0, torch.isfinite(theirs))
    assert math.isclose(float(ours.sum()), 1.0, rel_tol=1e-12)


def test_warp_edges_and_entropy():
    logits = torch.tensor([1.0, 3.0, 2.0])
    assert warp(logits, 0, 1.0).tolist() == [0.0, 1.0, 0.0]  # temperature 0: greedy
    assert entropy(warp(torch.zeros(64), 1.0, 1.0)) == pytest.approx(math.log(64))
    assert entropy(warp(logits, 1.0, 0.01)) == 0.0


def test_cntp_on_a_near_zero_entropy_distribution_is_greedy():
    model, tok = micro()
    prompt = tok("def main():\n    ")["input_ids"]
    greedy = decode(model, prompt, "greedy", max_new_tokens=24).tokens
    for temperature, top_p in [(0.0, 1.0), (1.0, 0.01), (0.3, 0.02)]:
        out = decode(model, prompt, "cntp", max_new_tokens=24, temperature=temperature, top_p=top_p,
                       generator=torch.Generator().manual_seed(1), stop_ids=punctuation_ids(tok))
        assert out.tokens == greedy and set(out.trials) == {1}


def test_same_seed_same_output_and_trials_happen():
    model, tok = micro()
    prompt = tok("import os\n")["input_ids"]
    stops = punctuation_ids(tok)

    def run(strategy, seed):
        return decode(model, prompt, strategy, max_new_tokens=12, temperature=1.2, top_p=0.95,
                        generator=torch.Generator().manual_seed(seed), stop_ids=stops)
    for strategy in ("sample", "cntp"):
        a, b = run(strategy, 0), run(strategy, 0)
        assert a.tokens == b.tokens and a.trials == b.trials
        assert a.tokens != run(strategy, 1).tokens
    cntp = run("cntp", 0)
    assert max(cntp.trials) > 1, "no uncertain step: the test would not test CNTP"
    assert cntp.forwards > len(cntp.tokens)  # trials cost extra forwards
    assert len(cntp.tokens) == 12


def test_punctuation_ids_and_majority_vote():
    _, tok = micro()
    ids = punctuation_ids(tok)
    assert tok(".")["input_ids"][0] in ids and len(ids) == 10
    assert majority_vote([3, None, 5, 3, 5, 5]) == 5
    assert majority_vote([4, 3, 3, 4]) == 4  # ties: first seen
    assert majority_vote([None, None]) is None


@pytest.mark.parametrize("kwargs,message", [
    (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"), (dict(temperature=-0.1), "temperature"),
    (dict(strategy="beam"), "unknown strategy"), (dict(strategy="sample", generator=None), "generator"),
    (dict(strategy="cntp", stop_ids=None), "stop_ids")])
def test_bad_input_fails_clearly(kwargs, message):
    model, _ = micro()
    args = dict(strategy="sample", temperature=1.0, top_p=0.9, generator=torch.Generator(), stop_ids={1})
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        decode(model, [1, 2, 3], max_new_tokens=4, **args)


# --- the experiment (tokenworks.decoding.tasks) ---------------------------------------------------------

def _chain(answer, target, forwards=10):
    return {"answer": answer, "correct": answer == target, "forwards": forwards, "tokens": forwards}


def test_scores_vote_and_average_chains():
    rows = [{"target": 7, "greedy": [_chain(7, 7)], "sample": [_chain(7, 7), _chain(1, 7), _chain(7, 7)],
             "cntp": [_chain(2, 7), _chain(2, 7), _chain(7, 7, 30)]},
            {"target": 3, "greedy": [_chain(4, 3)], "sample": [_chain(None, 3)] * 3,
             "cntp": [_chain(3, 3)] * 3}]
    s = cntp.scores(rows)
    assert s["greedy"] == [1.0, 0.0] and s["sample"] == [pytest.approx(2 / 3), 0.0]
    assert s["sc"] == [1.0, 0.0] and s["cntp_sc"] == [0.0, 1.0]
    table = {t["strategy"]: t for t in cntp.summarize(rows)}
    assert table["cntp_sc"]["forwards_per_answer"] == pytest.approx(3 * (10 * 5 + 30) / 6)
    for t in table.values():
        assert t["ci_low"] <= t["accuracy"] <= t["ci_high"]
    d = cntp.differences(rows)["cntp_sc - sc"]
    assert d["mean"] == 0.0 and d["ci_low"] <= 0.0 <= d["ci_high"]


def test_bootstrap_interval_is_exact_for_a_constant_and_paired():
    assert cntp.bootstrap([1.0] * 30) == (1.0, 1.0)
    a = [float(i % 2) for i in range(40)]
    assert cntp.bootstrap(a, a) == (0.0, 0.0)  # paired: identical strategies never differ


def test_code_line_items_cut_the_files_own_tokens():
    _, tok = micro()
    texts = ["def f(x):\n    return x + 1\n" * 40, "import os\nprint(os.getcwd())\n" * 40]
    items = cntp.code_line_items(texts, tok, 6, seed=0)
    ids = [tok(t)["input_ids"] for t in texts]
    for it in items:
        whole = next(d for d in ids if any(d[i:i + len(it["ids"])] == it["ids"] for i in range(len(d))))
        assert tok.decode(it["ids"]) + it["target"] in tok.decode(whole)
        assert "\n" not in it["target"] and len(it["target"].strip()) >= 4
    assert items == cntp.code_line_items(texts, tok, 6, seed=0)
    assert cntp.first_line(" x + 1\n    y") == " x + 1"


def test_run_is_deterministic_and_one_line():
    model, tok = micro()
    items = [{"prompt": "def f(x):\n    return", "target": " x"}, {"prompt": "import", "target": " os"}]
    a = cntp.run(model, tok, items, cntp.first_line, k=2, max_new_tokens=8)
    assert a == cntp.run(model, tok, items, cntp.first_line, k=2, max_new_tokens=8)
    assert [len(r["sample"]) for r in a] == [2, 2] and [len(r["greedy"]) for r in a] == [1, 1]
    with pytest.raises(ValueError, match=r"k \(chains per strategy\)"):
        cntp.run(model, tok, items, cntp.first_line, k=0)


def test_a_set_of_end_ids_stops_generation():
    model, tok = micro()
    prompt = tok("def main():\n")["input_ids"]
    free = decode(model, prompt, "greedy", max_new_tokens=20).tokens
    stop = free[3]
    out = decode(model, prompt, "greedy", max_new_tokens=20, eos_token_id={stop, model.config.vocab_size - 1}).tokens
    assert out == free[:free.index(stop) + 1]
    assert decode(model, prompt, "greedy", max_new_tokens=20, eos_token_id=stop).tokens == out
    lines = decode(model, prompt, "greedy", max_new_tokens=20, eos_token_id=cntp.newline_ids(tok)).tokens
    assert "\n" not in tok.decode(lines[:-1]) and (len(lines) == 20 or "\n" in tok.decode(lines[-1:]))


# --- input checks ------------------------------------------------------------------------

def test_prompt_as_a_tensor_equals_the_list():
    model, tok = micro()
    prompt = tok("def main():\n")["input_ids"]
    expected = decode(model, prompt, "greedy", max_new_tokens=5).tokens
    for ids in (torch.tensor(prompt), torch.tensor([prompt]), tuple(prompt)):
        assert decode(model, ids, "greedy", max_new_tokens=5).tokens == expected


@pytest.mark.parametrize("prompt, error, message", [
    ([1, 10**6], ValueError, "vocabulary"), ([-1, 2], ValueError, "vocabulary"),
    ([], ValueError, "empty"), (torch.tensor([], dtype=torch.long), ValueError, "empty"),
    (torch.tensor([[1, 2], [3, 4]]), ValueError, "batch"), (torch.tensor([1.0, 2.0]), TypeError, "integer"),
    ("def f", TypeError, "tokenize")])
def test_bad_prompts_fail_clearly(prompt, error, message):
    model, _ = micro()
    with pytest.raises(error, match=message):
        decode(model, prompt, "greedy", max_new_tokens=2)


@pytest.mark.parametrize("kwargs,message", [
    (dict(max_new_tokens=True), "max_new_tokens"), (dict(max_new_tokens=2.5), "max_new_tokens"),
    (dict(max_new_tokens=0), "max_new_tokens"), (dict(temperature=True), "temperature"),
    (dict(temperature=float("nan")), "temperature"), (dict(temperature="1"), "temperature"),
    (dict(top_p=float("nan")), "top_p"), (dict(top_p=True), "top_p"),
    (dict(n_max=0), "n_max"), (dict(n_max=2.5), "n_max"), (dict(n_max=True), "n_max"),
    (dict(h_low=1.0, h_high=0.5), "h_low"), (dict(h_low=1.0, h_high=1.0), "h_low"),
    (dict(h_high=float("inf")), "h_high"), (dict(generator=0), "generator")])
@pytest.mark.parametrize("strategy", ["greedy", "cntp"])
def test_bad_parameters_fail_clearly(kwargs, message, strategy):
    model, _ = micro()
    args = dict(strategy=strategy, generator=torch.Generator(), stop_ids={1}, max_new_tokens=2)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=message):
        decode(model, [1, 2, 3], **args)


def test_n_trials_refuses_an_empty_entropy_range():
    with pytest.raises(ValueError, match="h_low"):
        n_trials(0.5, h_low=1.0, h_high=1.0)


def test_run_ends_answers_at_the_given_ids():
    model, tok = micro()
    items = [{"prompt": "def f(x):\n", "target": "    return x"}]
    free = decode(model, tok(items[0]["prompt"])["input_ids"], "greedy", max_new_tokens=16, eos_token_id=[])
    stop = free.tokens[3]
    none = cntp.run(model, tok, items, lambda t: t, k=1, max_new_tokens=16, ends=set())
    cut = cntp.run(model, tok, items, lambda t: t, k=1, max_new_tokens=16, ends={stop})
    assert none[0]["greedy"][0]["tokens"] == 16
    assert cut[0]["greedy"][0]["tokens"] == free.tokens.index(stop) + 1
    assert cut[0]["greedy"][0]["answer"] == tok.decode(free.tokens[:free.tokens.index(stop) + 1])
