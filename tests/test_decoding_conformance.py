"""Every strategy of tokenworks.decoding.STRATEGIES: deterministic under a seed, greedy at
temperature 0 (argmax of full forwards, no KV cache), and every sampler varies with the seed
and refuses to run without a generator."""
import functools

import pytest
import torch

from conftest import micro64
from tokenworks.decoding import STRATEGIES, decode, punctuation_ids

PROMPTS = ["def main():\n    ", "import os\n", "class A:\n"]
SAMPLERS = [s for s in STRATEGIES if s != "greedy"]  # every strategy but greedy draws tokens


@functools.cache
def prompt_ids(text):
    return micro64()[1](text)["input_ids"]


def run(strategy, prompt, seed=0, **kwargs):
    model, tok = micro64()
    args = dict(max_new_tokens=8, temperature=1.2, top_p=0.95, stop_ids=punctuation_ids(tok),
                generator=torch.Generator().manual_seed(seed))
    args.update(kwargs)
    return decode(model, prompt_ids(prompt), strategy, **args)


def argmax_reference(prompt, n):
    """Greedy decoding as argmax over full forwards of the whole sequence."""
    model, _ = micro64()
    ids = list(prompt_ids(prompt))
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt_ids(prompt)):]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_same_seed_same_tokens_trials_and_forwards(strategy):
    for prompt in PROMPTS[:2]:
        a, b = run(strategy, prompt, seed=3), run(strategy, prompt, seed=3)
        assert (a.tokens, a.trials, a.forwards) == (b.tokens, b.trials, b.forwards)
        assert len(a.tokens) == 8 and a.forwards >= len(a.tokens)


@pytest.mark.parametrize("strategy", SAMPLERS)
def test_samplers_differ_across_seeds(strategy):
    outputs = {tuple(run(strategy, prompt, seed=s).tokens) for prompt in PROMPTS[:1] for s in range(4)}
    assert len(outputs) > 1


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("prompt", PROMPTS)
def test_temperature_zero_is_argmax_decoding(strategy, prompt):
    out = run(strategy, prompt, temperature=0.0)
    assert out.tokens == argmax_reference(prompt, 8)
    assert set(out.trials) <= {1}  # no uncertainty, no CNTP trials


@pytest.mark.parametrize("strategy", SAMPLERS)
def test_samplers_refuse_a_missing_generator(strategy):
    with pytest.raises(ValueError, match="generator"):
        run(strategy, PROMPTS[0], generator=None)


def test_greedy_needs_no_generator_and_ignores_sampling_settings():
    assert run("greedy", PROMPTS[0], generator=None).tokens == argmax_reference(PROMPTS[0], 8)


def test_eos_means_the_same_in_decode_and_speculative_generate():
    """An int, a list and a set of EOS ids end decode's greedy output where they end
    speculative.generate's (issue 16: the two APIs disagreed on lists)."""
    from tokenworks.speculative import generate
    model, _ = micro64()
    prompt = prompt_ids(PROMPTS[0])
    saved = model.config.eos_token_id
    free = decode(model, prompt, "greedy", max_new_tokens=12, eos_token_id=[]).tokens
    stop = free[3]
    for eos in (stop, [model.config.vocab_size - 1, stop], {stop}, None):
        if eos is None:  # None: the model's config.eos_token_id, in both
            model.config.eos_token_id = [stop]
        ours = decode(model, prompt, "greedy", max_new_tokens=12, eos_token_id=eos).tokens
        assert ours == free[:free.index(stop) + 1]
        assert generate(model, prompt, max_new_tokens=12, eos_token_id=eos).tokens == ours
    model.config.eos_token_id = saved
    for bad in (10 ** 9, [-1]):  # out of the vocabulary: refused by both
        with pytest.raises(ValueError, match="outside the model's vocabulary"):
            decode(model, prompt, "greedy", max_new_tokens=4, eos_token_id=bad)
        with pytest.raises(ValueError, match="outside the model's vocabulary"):
            generate(model, prompt, max_new_tokens=4, eos_token_id=bad)


def test_cntp_stop_ids_are_checked():
    model, _ = micro64()
    for bad, error in ((set(), ValueError), ({"."}, TypeError), ({10 ** 9}, ValueError)):
        with pytest.raises(error, match="stop_ids"):
            run("cntp", PROMPTS[0], stop_ids=bad)
