"""One loop for every lossless speculative method: draft a tree, verify it, keep the accepted path.

Each step (batch 1, greedy):

1. the drafter proposes a :class:`~tokenworks.speculative.tree.DraftTree` whose root is the
   last committed token ``cur`` (not yet in the KV cache, which holds ``L`` tokens);
2. one forward runs the ``T`` tree tokens at positions ``L + depth`` with the ancestor mask
   (cache fully visible), appending ``T`` keys and values; with the Triton tree kernel
   (:func:`~tokenworks.speculative.kernel_attention.use_tree_kernel`) the mask travels as
   ancestor bits and the dense ``[T, L + T]`` mask is never built;
3. greedy verification keeps the longest path whose tokens equal their parents' argmax,
   and emits the path's drafted tokens plus the bonus token (argmax after its last node);
4. the cache is compacted so that only the path's keys and values stay (``L + len(path)``);
5. the drafter sees the logits of every node (Token Recycling learns from all of them).

Greedy decoding is the special case of a one-node tree. The output is token for token the
greedy output of the model, up to floating-point differences between a ``T``-token and a
one-token forward (nil in float64; the paper's fp16 runs note rare divergences).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from tokenworks.ids import as_ids, check_count, eos_ids
from tokenworks.speculative.drafter import Drafter
from tokenworks.speculative.tree import DraftTree, additive_mask

# The attention implementation name under which kernel_attention.use_tree_kernel registers
# the Triton kernel. Kept here so that importing the engine imports neither transformers'
# attention registry nor triton (notebooks set TRITON_INTERPRET after their imports).
TREE_KERNEL = "tokenworks_tree"


# The phases of one step, as Generation.profile times them
PHASES = ("draft", "mask", "forward", "verify", "compact", "update")


@dataclass
class Generation:
    """Tokens generated (prompt excluded) and what each step did."""

    tokens: list[int]
    accepted: list[int] = field(default_factory=list)  # tokens emitted per step, bonus included
    drafted: list[int] = field(default_factory=list)  # tree size per step, root excluded
    seconds: float = 0.0
    draft_seconds: float = 0.0  # time spent in the drafter (drafting and updating)
    # seconds per phase of the steps: PHASES; the prefill is in seconds only
    profile: dict = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))

    @property
    def steps(self) -> int:
        return len(self.accepted)

    @property
    def mean_accepted(self) -> float:
        """Mean accepted tokens per step, counting the bonus token (1.0 for greedy). As in
        Spec-Bench, the last step counts every token it accepted, also those cut off by
        ``max_new_tokens`` or after EOS."""
        return sum(self.accepted) / max(1, self.steps)


def full_attention_cache(model) -> DynamicCache:
    """An empty KV cache for ``model``; refuses a model whose cache layers are not all full
    attention (a sliding window keeps only its last positions, so the absolute positions
    :func:`_compact` indexes are wrong there, and one tree mask serves every layer)."""
    cache = DynamicCache(config=model.config)
    other = {i: type(layer).__name__ for i, layer in enumerate(cache.layers)
             if type(layer) is not DynamicLayer}
    if other:
        raise ValueError(
            f"{type(model).__name__}'s layers {sorted(other)} keep a "
            f"{'/'.join(sorted(set(other.values())))} cache (a sliding window or another "
            "partial cache): speculative decoding here masks every layer alike and compacts "
            "the cache by absolute position, which holds for full-attention layers only. Use a "
            "model whose layers all attend to the whole context (or, for a Mistral-style config "
            "whose sequences stay within the window, sliding_window=None)")
    return cache


def last_occurrences(tokens: list[int]) -> list[int]:
    """The position of each distinct token's last occurrence in ``tokens``, ascending."""
    return sorted({t: i for i, t in enumerate(tokens)}.values())


def crop_to(cache: DynamicCache, length: int) -> None:
    """Keep the first ``length`` positions of every layer (views, no copy)."""
    cache.crop(length - cache.get_seq_length())  # transformers 5: minus the tokens to remove


def _compact(cache: DynamicCache, cache_len: int, path: list[int]) -> None:
    """Keep the first ``cache_len`` positions and the tree nodes on ``path``; drop the rest.

    Only the path's entries move (in place, to just after the cache), then the tail is cut:
    the cost grows with the path, not with the cache (an ``index_select`` of every kept
    position copied all ``L`` cached keys and values of every layer each step)."""
    n = len(path)
    if path != list(range(n)):  # a path down the tree's first branch is already in place
        src = cache_len + torch.tensor(path, device=cache.layers[0].keys.device)
        for layer in cache.layers:
            layer.keys[..., cache_len: cache_len + n, :] = layer.keys.index_select(-2, src)
            layer.values[..., cache_len: cache_len + n, :] = layer.values.index_select(-2, src)
    crop_to(cache, cache_len + n)


@torch.no_grad()
def run(model, input_ids, drafter, max_new_tokens: int, eos_token_id=None) -> Generation:
    """Generate up to ``max_new_tokens`` tokens greedily, drafting with ``drafter``.

    ``drafter`` satisfies :class:`~tokenworks.speculative.drafter.Drafter`: ``start(prompt)``,
    ``draft(context) -> DraftTree`` and ``update(tree, logits, path, context)``. Stops after
    the first EOS token (kept in the output): ``eos_token_id`` is one id or a collection of
    ids (``None``: the model's config's, all of them; see :func:`tokenworks.ids.eos_ids`).
    Models with sliding-window (or other partial-cache) layers are refused.
    """
    check_count("max_new_tokens", max_new_tokens)
    if not isinstance(drafter, Drafter):
        raise TypeError(f"drafter must have the methods start, draft and update of "
                        f"tokenworks.speculative.Drafter; got a {type(drafter).__name__}")
    prompt = as_ids(input_ids, model)
    ends = eos_ids(eos_token_id, model)
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    cache = full_attention_cache(model)
    t0 = time.perf_counter()
    reads_prompt = bool(getattr(drafter, "reads_prompt", False)) and len(prompt) > 1
    if len(prompt) > 1:  # prefill all but the last token, which becomes the first root
        # the output head runs on one position, or on each prompt token's last occurrence
        # for a drafter that reads the prompt's logits
        keep = last_occurrences(prompt[:-1]) if reads_prompt else 1
        out = model(torch.tensor([prompt[:-1]], device=device), past_key_values=cache, use_cache=True,
                    logits_to_keep=torch.tensor(keep, device=device) if reads_prompt else keep)
        if out.past_key_values is None or cache.get_seq_length() != len(prompt) - 1:
            raise ValueError(f"{type(model).__name__} did not fill a KV cache; speculative "
                             "decoding needs a causal LM that returns past_key_values")
    td = time.perf_counter()
    drafter.start(prompt)
    if reads_prompt:
        drafter.prompt_logits([prompt[i] for i in keep], out.logits[0])
    gen = Generation(tokens=[])
    gen.draft_seconds += time.perf_counter() - td
    context = list(prompt)
    kernel = getattr(model.config, "_attn_implementation", None) == TREE_KERNEL
    if kernel:
        from tokenworks.kernels.tree_attention import ancestor_bits
    clock = _Clock(gen.profile, device)
    while len(gen.tokens) < max_new_tokens:
        clock.start()
        tree = drafter.draft(context)
        clock.lap("draft")
        if tree.tokens[0] != context[-1]:
            raise RuntimeError(f"{type(drafter).__name__} drafted a tree whose root is not the last token")
        L, T = len(context) - 1, len(tree)
        ids = torch.tensor([tree.tokens], device=device)
        depth = torch.tensor([tree.depths()], device=device)
        mask, extra = None, {}
        if T > 1:  # the kernel reads ancestor bits; only SDPA needs the dense mask
            ancestors = tree.ancestor_mask(device)  # [T, T]
            if kernel:
                extra = {"tree_bits": ancestor_bits(ancestors)}  # [T, ceil(T / 64)]
            else:
                mask = additive_mask(ancestors, L, dtype)  # [1, 1, T, L + T]
        clock.lap("mask")
        out = model(ids, position_ids=L + depth, attention_mask=mask, past_key_values=cache,
                    use_cache=True, **extra)
        clock.lap("forward")
        if cache.get_seq_length() != L + T:
            raise ValueError(f"{type(model).__name__} did not extend its KV cache; speculative "
                             "decoding needs a causal LM that returns past_key_values")
        logits = out.logits[0]  # [T, vocab]
        path = tree.accept_greedy(logits.argmax(-1).tolist())
        new = [tree.tokens[i] for i in path[1:]] + [int(logits[path[-1]].argmax())]
        clock.lap("verify")
        if T > 1:
            _compact(cache, L, path)
        clock.lap("compact")
        context += new
        drafter.update(tree, logits, path, context)
        clock.lap("update")
        gen.accepted.append(len(new))
        gen.drafted.append(T - 1)
        gen.tokens += new
        stop = next((i for i, t in enumerate(new) if t in ends), None)
        if stop is not None:  # keep the first EOS, drop what follows it
            gen.tokens = gen.tokens[: len(gen.tokens) - len(new) + stop + 1]
            break
    gen.draft_seconds += gen.profile["draft"] + gen.profile["update"]
    gen.tokens = gen.tokens[:max_new_tokens]
    if device.type == "cuda":
        torch.cuda.synchronize()
    gen.seconds = time.perf_counter() - t0
    return gen


class _Clock:
    """Adds the seconds since the last lap to ``profile[phase]``; on a GPU it synchronises
    first, so that each phase is charged its own kernels (a small cost, paid by every method)."""

    def __init__(self, profile: dict, device: torch.device):
        self.profile = profile
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def start(self) -> None:
        self.t = time.perf_counter()

    def lap(self, phase: str) -> None:
        self.sync()
        now = time.perf_counter()
        self.profile[phase] += now - self.t
        self.t = now


class Greedy:
    """The reference: a one-node tree every step (plain autoregressive greedy decoding)."""

    def start(self, prompt: list[int]) -> None:
        pass

    def draft(self, context: list[int]) -> DraftTree:
        return DraftTree([context[-1]], [-1])

    def update(self, tree, logits, path, context) -> None:
        pass
