"""Decoding strategies (greedy, top-p sampling, CNTP) and self-consistency.

>>> out = decode(model, prompt_ids, "cntp", temperature=1.2, top_p=0.9,
...              generator=torch.Generator().manual_seed(0), stop_ids=punctuation_ids(tokenizer))

Methods: ``strategies`` (the loop and ``STRATEGIES``), ``cntp``. Experiments: ``arith`` (the
arithmetic word problems), ``tasks`` (CNTP's comparison), ``plots``.
"""
from tokenworks.decoding.cntp import PUNCTUATION, entropy, n_trials, punctuation_ids
from tokenworks.decoding.strategies import STRATEGIES, Decoded, check_sampling, decode, majority_vote, warp

__all__ = ["decode", "Decoded", "STRATEGIES", "majority_vote", "warp", "check_sampling", "entropy",
           "n_trials", "punctuation_ids", "PUNCTUATION"]
