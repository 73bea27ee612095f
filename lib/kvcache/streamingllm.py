"""StreamingLLM (Xiao et al., ICLR 2024, arXiv 2309.17453): attention sinks.

``StreamingLLMPress`` compresses a prefilled cache once (kvpress's interface); ``stream_nll``
is the paper's streaming setting (evict at every step, positions inside the cache), and
``stream_nlls`` runs several sink counts of one capacity side by side;
``recompute_nll`` is its sliding-window-with-re-computation baseline.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from kvpress.presses.base_press import BasePress
from kvpress.utils import compute_n_kept
from tqdm import tqdm
from transformers import DynamicCache
from transformers.models.llama.modeling_llama import rotate_half

from tokenworks.ids import as_ids, check_count, check_ratio


@dataclass
class StreamingLLMPress(BasePress):
    """Attention sinks: keep the first ``n_sink`` tokens and the most recent ones (§3.2 of
    the paper), as a kvpress press that compresses the cache once, at prefill. It keeps as
    many entries as kvpress's presses do (``int(T * (1 - compression_ratio))``), in position
    order. ``stream_nll`` is the paper's streaming setting (evict every step, positions
    inside the cache)."""

    compression_ratio: float = 0.0
    n_sink: int = 4

    def __post_init__(self):
        check_ratio("compression_ratio", self.compression_ratio)
        check_count("n_sink", self.n_sink, 0)

    @contextlib.contextmanager
    def __call__(self, model):
        """kvpress's ``with press(model):``, with the ``cache_position`` keyword transformers 5.x
        no longer passes (``harness.kvpress_way``)."""
        from tokenworks.kvcache.harness import kvpress_way  # the harness imports this module
        with kvpress_way(self, model):
            yield

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        """keys, values [B, Hkv, T, D] -> [B, Hkv, kept, D]. kvpress's contract: at least one
        entry stays (``compute_n_kept``); a budget of at most ``n_sink`` keeps the first
        ``kept`` tokens (the sinks shrink to the budget, as kvpress's StreamingLLMPress does)."""
        length = keys.shape[2]
        kept = compute_n_kept(length, self.compression_ratio)
        sinks = min(self.n_sink, kept)
        index = torch.cat([torch.arange(sinks), torch.arange(length - (kept - sinks), length)]).to(keys.device)
        return keys[:, :, index], values[:, :, index]


def rerotate(model, keys: torch.Tensor, shift: int) -> torch.Tensor:
    """Keys [B, Hkv, T, D] that RoPE rotated at positions p, rotated to p + ``shift``
    (rotations compose: R(p + s) = R(s) R(p)). For rotate-half RoPE (Llama, Mistral, Qwen,
    Gemma, Phi-3: the models kvpress supports); the rotary embedding's cos and sin carry its
    ``attention_scaling`` (not 1 for YaRN and LongRoPE), which the keys already hold once, so
    it is divided out."""
    rope = getattr(getattr(model, "model", None), "rotary_emb", None)
    if rope is None:
        raise ValueError(f"rerotate needs the rotary embedding at model.model.rotary_emb, which "
                         f"{type(model).__name__} lacks")
    position = torch.full((1, keys.shape[2]), shift, device=keys.device)
    cos, sin = (t / rope.attention_scaling for t in rope(keys, position))  # [1, T, D] each
    return keys * cos[:, None] + rotate_half(keys) * sin[:, None]


def stream_nll(model, ids: list[int], n_sink: int, window: int, desc: str = "stream",
               chunk: int = 256) -> torch.Tensor:
    """Negative log-likelihood of ``ids[1:]`` fed one token at a time through a cache of at
    most ``n_sink + window`` entries: the first ``n_sink`` tokens and the last ones, with
    positions assigned inside the cache (the paper's position shift: when an entry leaves,
    the later keys are re-rotated one position back). ``n_sink=0`` is window attention.
    ``window >= len(ids)`` is the full cache. Until the cache is first full nothing leaves, so
    those tokens go through as a prefill, ``chunk`` at a time (the same math, in another
    summation order). [len(ids) - 1] float64."""
    check_count("n_sink", n_sink, 0), check_count("window", window, 1)
    return stream_nlls(model, ids, [n_sink], n_sink + window, desc, chunk)[0]


@torch.no_grad()
def stream_nlls(model, ids: list[int], sinks: list[int], capacity: int, desc: str = "stream",
                chunk: int = 256) -> torch.Tensor:
    """``stream_nll`` of one stream under several sink counts at one cache ``capacity`` (sinks
    included), side by side as the rows of one batch: every row holds ``capacity`` entries,
    so one forward per token serves them all (decoding a small model is bound by reading its
    weights, which a batch shares). The rows are the same until the cache is first full: that
    part is one prefill, ``chunk`` tokens at a time, copied to every row.
    [len(sinks), len(ids) - 1] float64."""
    ids = as_ids(ids, model, name="ids")
    check_count("capacity", capacity, 1), check_count("chunk", chunk, 1)
    if not sinks:
        raise ValueError("sinks: give at least one sink count")
    for n in sinks:
        check_count("a sink count", n, 0)
        if n >= capacity:
            raise ValueError(f"{n} sinks leave no recent window in a {capacity}-entry cache: "
                             "give sink counts below the capacity")
    if len(ids) < 2:
        raise ValueError(f"a stream needs at least 2 tokens (one to predict), got {len(ids)}")
    device = next(model.parameters()).device
    cache, out, rows = DynamicCache(), [], len(sinks)
    target = torch.tensor(ids[1:], device=device)
    fill = min(capacity, len(ids) - 1)
    for lo in range(0, fill, chunk):  # prefill: positions 0..fill-1, one row
        hi = min(lo + chunk, fill)
        logits = model(torch.tensor([ids[lo:hi]], device=device), past_key_values=cache,
                       position_ids=torch.arange(lo, hi, device=device)[None]).logits[0]
        out.append(-torch.log_softmax(logits.double(), -1).gather(1, target[lo:hi, None])[:, 0].expand(rows, -1))
    for layer in cache.layers:  # [1, Hkv, fill, D] -> [rows, Hkv, fill, D]
        layer.keys, layer.values = layer.keys.repeat(rows, 1, 1, 1), layer.values.repeat(rows, 1, 1, 1)
    for i in tqdm(range(fill, len(ids) - 1), desc=desc, mininterval=10, leave=False):
        _evict_when_full(model, cache, sinks, capacity)
        position = torch.full((rows, 1), cache.get_seq_length(), device=device)
        logits = model(torch.full((rows, 1), ids[i], device=device), past_key_values=cache,
                       position_ids=position).logits[:, -1]
        out.append(-torch.log_softmax(logits.double(), -1)[:, ids[i + 1]][:, None])
    _evict_when_full(model, cache, sinks, capacity)  # the cache ends with room for one more
    return torch.cat(out, 1).cpu()


def _evict_when_full(model, cache: DynamicCache, sinks: list[int], capacity: int) -> None:
    """A full cache drops, in each row, its oldest entry after that row's sinks; the later keys
    move one position back."""
    if cache.get_seq_length() < capacity:
        return
    for layer in cache.layers:
        keys = [torch.cat([k[:, :n], rerotate(model, k[None, :, n + 1:], -1)[0]], 1) for k, n in zip(layer.keys, sinks)]
        values = [torch.cat([v[:, :n], v[:, n + 1:]], 1) for v, n in zip(layer.values, sinks)]
        layer.keys, layer.values = torch.stack(keys), torch.stack(values)


@torch.no_grad()
def recompute_nll(model, ids: list[int], window: int, batch: int = 32, stride: int = 1,
                  start: int = 0) -> torch.Tensor:
    """Sliding window with re-computation (the StreamingLLM paper's quality baseline): token
    ``i + 1`` is predicted from a fresh forward over the last ``window`` tokens ``ids[i+1-window:
    i+1]``, at positions ``0..window-1``, with no cache. Windows run ``batch`` at a time (the
    same math as one at a time; time it with ``batch=1``). It costs ``window`` token-forwards per
    token: ``stride > 1`` scores only every ``stride``-th token (a subsample of the positions,
    NaN elsewhere), and ``start`` none before ``ids[start + 1]`` (to time full windows only).
    [len(ids) - 1] float64."""
    if window < 1 or batch < 1 or stride < 1 or not 0 <= start < len(ids) - 1:
        raise ValueError(f"need window, batch and stride >= 1 and 0 <= start < len(ids) - 1, got "
                         f"window={window}, batch={batch}, stride={stride}, start={start}")
    device = next(model.parameters()).device
    scored = list(range(start, len(ids) - 1, stride))
    out = torch.full((len(ids) - 1,), float("nan"), dtype=torch.float64)
    for lo in tqdm(range(0, len(scored), batch), desc="recompute", mininterval=10, leave=False):
        ends = scored[lo:lo + batch]  # predict ids[e + 1] from ids[..e]
        rows = [ids[max(0, e + 1 - window):e + 1] for e in ends]
        width = max(map(len, rows))
        # left-pad short rows (the first window - 1 tokens) with their own first token and mask it out
        x = torch.tensor([[r[0]] * (width - len(r)) + r for r in rows], device=device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        logits = model(x, attention_mask=mask, position_ids=pos).logits[:, -1]
        targets = torch.tensor([ids[e + 1] for e in ends], device=device)
        out[ends] = -torch.log_softmax(logits.double(), -1).gather(1, targets[:, None])[:, 0].cpu()
    return out
