"""Decoding strategies for one prompt: greedy, temperature + top-p sampling, Cautious Next
Token Prediction (CNTP; Wang et al. 2025, arXiv 2507.03038, github.com/wyzjack/CNTP), and
self-consistency (majority vote over samples; Wang et al. 2023, arXiv 2203.11171).

CNTP, per step (§3 of the paper; ``_sample_reflect_perplexity`` in the reference code):

1. warp the next-token distribution (temperature, then top-p) and take its entropy ``H`` in nats;
2. ``N = int(1 + (N_max - 1) * clamp((H - H_low) / (H_high - H_low), 0, 1))`` trials
   (defaults ``H_low = 0.01``, ``H_high = 1.5``, ``N_max = 10``);
3. ``N == 1``: sample one token as usual. Otherwise sample ``N`` independent continuations,
   each until a punctuation token or EOS, and keep the one with the lowest perplexity
   ``exp(-mean log p)`` under the warped distribution.

Every sampler takes an explicit ``torch.Generator``: a fixed seed gives the same output.
Trials run one after another on a copy of the KV cache, as in the reference code.
"""
from __future__ import annotations

import copy
import math
from collections import Counter
from dataclasses import dataclass, field

import torch

STRATEGIES = ("greedy", "sample", "cntp")
PUNCTUATION = (".", ",", "\n", "?", "!", ":", ";", ")", "]", "}")


def check_sampling(temperature: float, top_p: float) -> None:
    if not isinstance(temperature, (int, float)) or temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 means greedy), got {temperature!r}")
    if not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")


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


def entropy(probs: torch.Tensor) -> float:
    """Entropy in nats of a probability vector."""
    p = probs[probs > 0]
    return float(-(p * p.log()).sum())


def n_trials(h: float, h_low: float = 0.01, h_high: float = 1.5, n_max: int = 10) -> int:
    """CNTP's trial count: ``int(1 + (n_max - 1) * clamp((h - h_low) / (h_high - h_low), 0, 1))``."""
    u = min(1.0, max(0.0, (h - h_low) / (h_high - h_low)))
    return int(1 + (n_max - 1) * u)


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


def generate(model, prompt: list[int], strategy: str = "greedy", max_new_tokens: int = 256,
             temperature: float = 1.0, top_p: float = 1.0, generator: torch.Generator | None = None,
             eos_token_id: int | set[int] | None = None, stop_ids: set[int] | None = None,
             h_low: float = 0.01, h_high: float = 1.5, n_max: int = 10) -> Decoded:
    """Decode ``prompt`` (token ids) with ``strategy`` in ``STRATEGIES``.

    ``eos_token_id``: one id or a set of ids that end the output (e.g. every token holding a
    newline, for one-line answers). ``stop_ids``: tokens that end a CNTP trial
    (punctuation; see :func:`punctuation_ids`).
    ``generator`` is required for ``sample`` and ``cntp``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}: choose one of {', '.join(STRATEGIES)} "
                         "(self-consistency: majority_vote over sampled answers)")
    check_sampling(temperature, top_p)
    if not prompt:
        raise ValueError("the prompt is empty: pass at least one token id")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if strategy != "greedy" and generator is None:
        raise ValueError(f"{strategy} samples: pass generator=torch.Generator().manual_seed(...)")
    if strategy == "cntp" and stop_ids is None:
        raise ValueError("cntp needs stop_ids, the punctuation tokens that end a trial "
                         "(tokenworks.decoding.punctuation_ids(tokenizer))")
    ends = {eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id or ())
    counter = Counter()
    lm = _LM(model, list(prompt), counter)
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
        best = None
        for _ in range(n):  # independent trials, each to the next punctuation token
            trial, span, logp = lm.fork(), [], 0.0
            p = probs
            while True:
                token = _draw(p, generator)
                span.append(token)
                logp += math.log(float(p[token]))
                if token in stop_ids or done(out.tokens + span):
                    break
                trial.push([token])
                p = warp(trial.logits, temperature, top_p)
            ppl = math.exp(-logp / len(span))
            if best is None or ppl < best[0]:
                best = (ppl, span, trial)
        _, span, lm = best  # adopt the chosen trial's cache
        out.tokens += span
        if not done(out.tokens):
            lm.push([span[-1]])
    out.forwards = counter["forwards"]
    out.tokens = out.tokens[:max_new_tokens]
    return out


def punctuation_ids(tokenizer, marks=PUNCTUATION) -> set[int]:
    """Token ids that end a CNTP trial: the first id of each punctuation mark, as in the
    reference code (merged tokens such as ``'.\\n'`` do not stop a trial)."""
    return {tokenizer(m, add_special_tokens=False)["input_ids"][0] for m in marks}


def majority_vote(answers: list) -> object:
    """Self-consistency: the most common answer (``None`` answers ignored; ties go to the
    answer seen first)."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    top = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == top)
