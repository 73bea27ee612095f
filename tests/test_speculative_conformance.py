"""Conformance of every registered drafter (``tokenworks.speculative.METHODS``): it satisfies
the drafter protocol, and its output equals plain greedy decoding token for token, on two
models with different tokenizers and shapes, random and real prompts of several lengths,
with and without EOS hits, and with its state carried from one call to the next. A drafter
added to ``METHODS`` is covered without touching this file. Float64: no rounding ties."""
import functools
import inspect

import pytest
import torch
from transformers import DynamicCache

from tokenworks.ids import vocab_size
from tokenworks.models import load
from tokenworks.speculative import METHODS, Drafter, generate, make_drafter

MODELS = ("tw-micro", "tw-code-v2")  # tokenizer v1 / v2, 2 / 4 layers, 4 / 6 query heads
CODE = ("x = 1\n",
        "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return",
        "import os\nimport sys\n\n\ndef main(argv):\n    for arg in argv:\n        print(arg)\n"
        "    for arg in argv:\n")
RANDOM_LENGTHS = (1, 6, 48)  # 1: no prefill, the prompt is the first root
NEW = 24


@functools.cache
def model64(name):
    return load(name, device="cpu", dtype=torch.float64)


@functools.cache
def prompts(name) -> tuple[tuple[int, ...], ...]:
    model, tok = model64(name)
    g = torch.Generator().manual_seed(0)
    rand = [torch.randint(5, vocab_size(model), (n,), generator=g).tolist() for n in RANDOM_LENGTHS]
    return tuple(tuple(p) for p in rand + [tok(t)["input_ids"] for t in CODE])


@functools.cache
@torch.no_grad()
def greedy(name, prompt: tuple[int, ...], n: int = NEW) -> list[int]:
    """The oracle: plain greedy decoding, one token per forward over a KV cache, no EOS."""
    model, _ = model64(name)
    cache = DynamicCache()
    logits = model(torch.tensor([prompt]), past_key_values=cache).logits[0, -1]
    out = [int(logits.argmax())]
    while len(out) < n:
        logits = model(torch.tensor([out[-1:]]), past_key_values=cache).logits[0, -1]
        out.append(int(logits.argmax()))
    return out


def cut(tokens: list[int], ends: set[int]) -> list[int]:
    """``tokens`` up to and including the first one in ``ends``."""
    hits = [i for i, t in enumerate(tokens) if t in ends]
    return tokens[: hits[0] + 1] if hits else tokens


@pytest.mark.parametrize("method", METHODS)
def test_registered_drafter_satisfies_the_protocol(method):
    drafter = make_drafter(method, model64("tw-micro")[0])
    assert isinstance(drafter, METHODS[method]) and isinstance(drafter, Drafter)
    for name in ("start", "draft", "update"):
        want = list(inspect.signature(getattr(Drafter, name)).parameters)[1:]
        assert list(inspect.signature(getattr(drafter, name)).parameters) == want, name


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("method", METHODS)
def test_output_equals_greedy_decoding(method, name):
    """Every prompt without EOS, then with a set of EOS ids that one token of the greedy
    output hits (and one that never comes), with a fresh drafter per call."""
    model, _ = model64(name)
    steps = []
    for prompt in prompts(name):
        want = greedy(name, prompt)
        out = generate(model, list(prompt), method, max_new_tokens=NEW, eos_token_id=[])
        assert out.tokens == want, (prompt, out.accepted)
        steps += out.accepted
        never = next(t for t in range(5, vocab_size(model)) if t not in want)
        ends = {want[NEW // 2], never}
        got = generate(model, list(prompt), method, max_new_tokens=NEW, eos_token_id=ends).tokens
        assert got == cut(want, ends) and len(got) <= NEW // 2 + 1, prompt
    assert sum(steps) >= NEW * len(prompts(name))  # every step emits at least one token
    if method != "greedy":
        assert max(steps) > 1, f"{method} never had a draft accepted: the test tested nothing"


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("method", METHODS)
def test_state_carried_across_calls_stays_lossless(method, name):
    """One drafter for two queries in a row (Token Recycling's matrix, Lookahead's output
    trie carry over into the second): both outputs are greedy decoding's."""
    model, _ = model64(name)
    first, second = prompts(name)[-1], prompts(name)[-2]
    drafter = make_drafter(method, model)
    for prompt in (first, second):
        assert generate(model, list(prompt), max_new_tokens=NEW, drafter=drafter,
                        eos_token_id=[]).tokens == greedy(name, prompt)
