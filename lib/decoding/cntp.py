"""Cautious Next Token Prediction (CNTP; Wang et al. 2025, arXiv 2507.03038,
github.com/wyzjack/CNTP), per step (§3 of the paper; ``_sample_reflect_perplexity`` in the
reference code):

1. warp the next-token distribution (temperature, then top-p) and take its entropy ``H`` in nats;
2. ``N = int(1 + (N_max - 1) * clamp((H - H_low) / (H_high - H_low), 0, 1))`` trials
   (defaults ``H_low = 0.01``, ``H_high = 1.5``, ``N_max = 10``);
3. ``N == 1``: sample one token as usual. Otherwise sample ``N`` independent continuations,
   each until a punctuation token or EOS, and keep the one with the lowest perplexity
   ``exp(-mean log p)`` under the warped distribution.

Trials run one after another on a copy of the KV cache, as in the reference code. The
decoding loop is ``tokenworks.decoding.decode(..., strategy="cntp")``.
"""
from __future__ import annotations

import math
import numbers

import torch

PUNCTUATION = (".", ",", "\n", "?", "!", ":", ";", ")", "]", "}")


def entropy(probs: torch.Tensor) -> float:
    """Entropy in nats of a probability vector."""
    p = probs[probs > 0]
    return float(-(p * p.log()).sum())


def check_trials(h_low: float, h_high: float, n_max: int) -> None:
    """Refuse CNTP settings step 2 cannot use: finite ``h_low < h_high``, an integer ``n_max >= 1``."""
    for name, h in (("h_low", h_low), ("h_high", h_high)):
        if isinstance(h, bool) or not isinstance(h, numbers.Real) or not math.isfinite(h):
            raise ValueError(f"{name} must be a finite entropy in nats, got {h!r}")
    if h_low >= h_high:
        raise ValueError(f"need h_low < h_high (the entropy range scaled to 1..n_max trials), "
                         f"got h_low={h_low}, h_high={h_high}")
    if isinstance(n_max, bool) or not isinstance(n_max, numbers.Integral) or n_max < 1:
        raise ValueError(f"n_max must be an integer >= 1 (1: no trials), got {n_max!r}")


def n_trials(h: float, h_low: float = 0.01, h_high: float = 1.5, n_max: int = 10) -> int:
    """CNTP's trial count: ``int(1 + (n_max - 1) * clamp((h - h_low) / (h_high - h_low), 0, 1))``."""
    check_trials(h_low, h_high, n_max)
    u = min(1.0, max(0.0, (h - h_low) / (h_high - h_low)))
    return int(1 + (n_max - 1) * u)


def cautious_step(lm, probs: torch.Tensor, n: int, generator: torch.Generator, stop_ids: set[int],
                  done, temperature: float, top_p: float):
    """Step 3 with ``n > 1``: ``n`` independent trials from ``lm`` (a ``strategies._LM``), each
    to the next token in ``stop_ids`` or until ``done(span)``; returns the span of lowest
    perplexity and the forked model state that produced it."""
    from tokenworks.decoding.strategies import _draw, warp
    best = None
    for _ in range(n):
        trial, span, logp = lm.fork(), [], 0.0
        p = probs
        while True:
            token = _draw(p, generator)
            span.append(token)
            logp += math.log(float(p[token]))
            if token in stop_ids or done(span):
                break
            trial.push([token])
            p = warp(trial.logits, temperature, top_p)
        ppl = math.exp(-logp / len(span))
        if best is None or ppl < best[0]:
            best = (ppl, span, trial)
    return best[1], best[2]


def punctuation_ids(tokenizer, marks=PUNCTUATION) -> set[int]:
    """Token ids that end a CNTP trial: the first id of each punctuation mark, as in the
    reference code (merged tokens such as ``'.\\n'`` do not stop a trial)."""
    return {tokenizer(m, add_special_tokens=False)["input_ids"][0] for m in marks}
