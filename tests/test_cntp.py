"""Decoding strategies (tokenworks.decoding): CNTP's trial rule, warping, determinism, bad input."""
import functools
import math

import pytest
import torch
from transformers.generation.logits_process import TopPLogitsWarper

from tokenworks.decoding import (entropy, generate, majority_vote, n_trials, punctuation_ids,
                                 warp)
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
    greedy = generate(model, prompt, "greedy", max_new_tokens=24).tokens
    for temperature, top_p in [(0.0, 1.0), (1.0, 0.01), (0.3, 0.02)]:
        out = generate(model, prompt, "cntp", max_new_tokens=24, temperature=temperature, top_p=top_p,
                       generator=torch.Generator().manual_seed(1), stop_ids=punctuation_ids(tok))
        assert out.tokens == greedy and set(out.trials) == {1}


def test_same_seed_same_output_and_trials_happen():
    model, tok = micro()
    prompt = tok("import os\n")["input_ids"]
    stops = punctuation_ids(tok)

    def run(strategy, seed):
        return generate(model, prompt, strategy, max_new_tokens=12, temperature=1.2, top_p=0.95,
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
        generate(model, [1, 2, 3], max_new_tokens=4, **args)
