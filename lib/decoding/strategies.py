"""Decoding strategies for one prompt, registered in ``STRATEGIES``: greedy, temperature +
top-p sampling, and Cautious Next Token Prediction (``tokenworks.decoding.cntp``); and
self-consistency over sampled answers (``majority_vote``; Wang et al. 2023, arXiv 2203.11171).

Every sampler takes an explicit ``torch.Generator``: a fixed seed gives the same output.
"""
from __future__ import annotations

import copy
import math
import numbers
from collections import Counter
from dataclasses import dataclass, field

import torch

from tokenworks.decoding.cntp import cautious_step, check_trials, entropy, n_trials
from tokenworks.ids import as_ids, check_count, eos_ids

STRATEGIES = ("greedy", "sample", "cntp")


def _real(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def check_sampling(temperature: float, top_p: float) -> None:
    """Refuse a temperature that is not a finite number >= 0, or a top_p outside (0, 1]."""
    if not _real(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a number >= 0 (0 means greedy), got {temperature!r}")
    if not _real(top_p) or not 0 < top_p <= 1:
        raise ValueError(f"top_p must be a number in (0, 1], got {top_p!r}")


def warp(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Probabilities after temperature and nucleus (top-p) truncation, renormalised. [V] -> [V].

    The smallest set of most probable tokens whose mass reaches ``top_p`` is kept (the
    token that crosses the threshold included), as in Hugging Face's ``TopPLogitsWarper``.
    """
    if temperature == 0:
        probs = torch.zeros_like(logits, dtype=torch.float64)
        probs[logits.argmax()] = 1.0
        return probs
    probs = torch.softmax(logits.double() / temperature, -1)
    if top_p < 1:
        sorted_p, order = probs.sort(descending=True)
        before = sorted_p.cumsum(0) - sorted_p  # mass of the tokens ranked above
        sorted_p[before >= top_p] = 0
        probs = torch.zeros_like(probs).scatter(0, order, sorted_p)
        probs /= probs.sum()
    return probs


@dataclass
class Decoded:
    tokens: list[int]
    trials: list[int] = field(default_factory=list)  # CNTP trials per decision (1: plain step)
    forwards: int = 0  # model forward passes, trials included: the cost


class _LM:
    """A model with its KV cache: ``push(tokens)`` feeds tokens, ``logits`` is the next-token
    distribution's logits after them, ``fork()`` copies the state for a trial."""

    def __init__(self, model, prompt: list[int], counter: Counter):
        self.model, self.cache, self.counter = model, None, counter  # counter: shared by forks
        self.device = next(model.parameters()).device
        self.push(prompt)

    @torch.no_grad()
    def push(self, tokens: list[int]) -> None:
        out = self.model(torch.tensor([tokens], device=self.device), past_key_values=self.cache,
                         use_cache=True)
        self.cache, self.logits = out.past_key_values, out.logits[0, -1].float()
        self.counter["forwards"] += 1

    def fork(self) -> "_LM":
        twin = copy.copy(self)
        twin.cache = copy.deepcopy(self.cache)
        return twin


def _draw(probs: torch.Tensor, generator: torch.Generator) -> int:
    return int(torch.multinomial(probs.float().cpu(), 1, generator=generator))


def decode(model, prompt, strategy: str = "greedy", max_new_tokens: int = 256,
           temperature: float = 1.0, top_p: float = 1.0, generator: torch.Generator | None = None,
           eos_token_id: int | list[int] | set[int] | None = None, stop_ids: set[int] | None = None,
           h_low: float = 0.01, h_high: float = 1.5, n_max: int = 10) -> Decoded:
    """Decode ``prompt`` (token ids: a list, a 1-D or ``[1, n]`` integer tensor, checked
    against the model's vocabulary) with ``strategy`` in ``STRATEGIES``.

    ``eos_token_id``: one id, or a list or set of ids, that end the output (e.g. every token
    holding a newline, for one-line answers); ``None``: the model's ``config.eos_token_id``,
    all of them; ``[]``: none (``tokenworks.ids.eos_ids``, as in ``speculative.generate``). ``stop_ids``: tokens that end a CNTP trial
    (punctuation; see :func:`punctuation_ids`).
    ``generator`` is required for ``sample`` and ``cntp``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}: choose one of {', '.join(STRATEGIES)} "
                         "(self-consistency: majority_vote over sampled answers)")
    prompt = as_ids(prompt, model, name="prompt")
    check_sampling(temperature, top_p)
    check_trials(h_low, h_high, n_max)
    check_count("max_new_tokens", max_new_tokens)
    if strategy != "greedy" and generator is None:
        raise ValueError(f"{strategy} samples: pass generator=torch.Generator().manual_seed(...)")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}: "
                        "pass generator=torch.Generator().manual_seed(seed)")
    if strategy == "cntp" and not stop_ids:
        raise ValueError("cntp needs stop_ids, the punctuation tokens that end a trial "
                         "(tokenworks.decoding.punctuation_ids(tokenizer))")
    if stop_ids is not None:
        stop_ids = set(as_ids(list(stop_ids), model, name="stop_ids", allow_empty=True))
    ends = eos_ids(eos_token_id, model)
    counter = Counter()
    lm = _LM(model, prompt, counter)
    out = Decoded(tokens=[])

    def done(tokens):
        return len(tokens) >= max_new_tokens or bool(tokens and tokens[-1] in ends)

    while not done(out.tokens):
        if strategy == "greedy":
            token = int(lm.logits.argmax())
            out.tokens.append(token)
            lm.push([token])
            continue
        probs = warp(lm.logits, temperature, top_p)
        n = n_trials(entropy(probs), h_low, h_high, n_max) if strategy == "cntp" else 1
        out.trials.append(n)
        if n == 1:
            token = _draw(probs, generator)
            out.tokens.append(token)
            lm.push([token])
            continue
        span, lm = cautious_step(lm, probs, n, generator, stop_ids, lambda span: done(out.tokens + span),
                                 temperature, top_p)
        out.tokens += span
        if not done(out.tokens):
            lm.push([span[-1]])
    out.forwards = counter["forwards"]
    out.tokens = out.tokens[:max_new_tokens]
    return out


def majority_vote(answers: list) -> object:
    """Self-consistency: the most common answer (``None`` answers ignored; ties go to the
    answer seen first)."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    top = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == top)
