"""KV-cache compression harness: a press compresses the cache while a context is prefilled,
then a continuation is scored, or a question answered, against the compressed cache. Three
tasks (``perplexity_rows``; ``needle_items`` and ``kv_items`` through ``needle_rows``; hub data
sets through ``hub_items``), methods named by ``method_press`` and ``selecting``.

Presses follow kvpress's interface (NVIDIA, Apache-2.0, https://github.com/NVIDIA/kvpress):
``with press(model): model(ids, past_key_values=cache)`` compresses every attention layer's
cache in a forward hook during prefill. kvpress's own presses (SnapKV, StreamingLLM, H2O as
``ObservedAttentionPress``, TOVA, PyramidKV, AdaKV, Knorm, ...) are the baselines.

kvpress 0.5.5 declares ``transformers<5.3``; we pin 5.23 and install it with ``--no-deps``
(``requirements-nodeps.txt``). Its hooks read the attention layers' ``cache_position``
keyword, which transformers stopped passing in 5.x: ``press_on`` supplies it from the cache
length, and ``tests/test_kvcache.py`` checks that kvpress's presses then keep what they say.
After compression the cache is shorter than the text, so the continuation must be given its
true positions (``position_ids``), as kvpress's pipeline does: without them RoPE would place
it right after the kept entries.
"""
from __future__ import annotations

import contextlib
import numbers
from dataclasses import dataclass

import kvpress
import torch
from kvpress.presses.base_press import BasePress
from tqdm import tqdm
from transformers import DynamicCache
from transformers.models.llama.modeling_llama import rotate_half

from tokenworks.ems import EMSPress
from tokenworks.kvtasks import answered, hub_items, kv_items, needle_items  # noqa: F401 (the harness's tasks)


def __getattr__(name):  # token_select lives in tokenworks.tokenselect (imported on use: Triton)
    if name in ("token_select", "TokenSelectState"):
        from tokenworks import tokenselect
        return getattr(tokenselect, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def attention_layers(model) -> list:
    """The attention modules a press hooks (``model.model.layers[i].self_attn``)."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not layers or not all(hasattr(layer, "self_attn") for layer in layers):
        raise ValueError(f"a press can't hook {type(model).__name__}'s attention: kvpress needs "
                         "model.model.layers[i].self_attn (Llama, Mistral, Qwen, Gemma, Phi-3 "
                         "style decoder-only models)")
    return [layer.self_attn for layer in layers]


def _cache_position(module, args, kwargs):
    cache, hidden = kwargs.get("past_key_values"), kwargs.get("hidden_states")
    if "cache_position" not in kwargs and cache is not None and hidden is not None:
        start = cache.get_seq_length(module.layer_idx)
        kwargs["cache_position"] = torch.arange(start, start + hidden.shape[1], device=hidden.device)
    return args, kwargs


@contextlib.contextmanager
def press_on(model, press):
    """``press(model)`` with the ``cache_position`` keyword kvpress expects; ``None``: the
    full cache. Checks the compression ratio and that the attention can be hooked first."""
    for attn in attention_layers(model):  # head masks of an earlier press must not leak into this run
        attn.masked_key_indices = None
    if press is None:
        yield
        return
    ratio = getattr(press, "compression_ratio", 0.0)
    if not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
        raise ValueError(f"compression_ratio must be in [0, 1) (the fraction of the cache "
                         f"removed), got {ratio!r}")
    hooks = [m.register_forward_pre_hook(_cache_position, with_kwargs=True)
             for m in attention_layers(model)]
    try:
        with press(model):
            yield
    finally:
        for hook in hooks:
            hook.remove()


def _prefill(model, context: list[int], press) -> tuple[DynamicCache, torch.Tensor, int]:
    """The cache of ``context`` compressed by ``press``, the logits after it [V], and the KV
    bytes the press left (before ``_equal_lengths``)."""
    cache = DynamicCache()
    with press_on(model, press):
        x = torch.tensor([context], device=next(model.parameters()).device)
        logits = model(x, past_key_values=cache).logits[0, -1]
    held = kv_bytes(cache)
    _equal_lengths(model, cache)
    return cache, logits, held


def _equal_lengths(model, cache: DynamicCache) -> None:
    """Pad layers that a press left shorter (PyramidKV, EMS) to the longest, with zero entries
    masked by kvpress's fake-key patch (``masked_key_indices``): transformers builds one
    attention mask for all layers, so a multi-token continuation needs equal lengths. The
    padding is the harness's, not the method's: ``kv_bytes`` is taken before it."""
    longest = max(layer.keys.shape[2] for layer in cache.layers)
    if model.config._attn_implementation == "eager" and any(l.keys.shape[2] < longest for l in cache.layers):
        raise ValueError("this press leaves layers of different lengths, which only kvpress's "
                         "attention patch can mask, and eager attention bypasses it: use sdpa")
    for layer, attn in zip(cache.layers, attention_layers(model)):
        B, H, n, D = layer.keys.shape
        if n == longest:
            continue
        pad = layer.keys.new_zeros(B, H, longest - n, D)
        layer.keys, layer.values = torch.cat([layer.keys, pad], 2), torch.cat([layer.values, pad], 2)
        b, h, s = (i.flatten().to(pad.device) for i in torch.meshgrid(
            torch.arange(B), torch.arange(H), torch.arange(n, longest), indexing="ij"))
        old = getattr(attn, "masked_key_indices", None)
        attn.masked_key_indices = (b, h, s) if old is None else tuple(torch.cat(p) for p in zip(old, (b, h, s)))


def kv_bytes(cache: DynamicCache) -> int:
    """Bytes of keys and values the cache holds, over all layers."""
    return sum(t.numel() * t.element_size() for layer in cache.layers
               for t in (layer.keys, layer.values) if t is not None)


@torch.no_grad()
def continuation_nll(model, context: list[int], target: list[int], press=None) -> tuple[torch.Tensor, int]:
    """Prefill ``context`` under ``press``, then score ``target`` (teacher forcing, one
    forward, at its true positions). Returns the negative log-likelihood of every target
    token [len(target)] (float64) and the KV bytes held after compression."""
    if not context or not target:
        raise ValueError("context and target must both hold at least one token")
    device = next(model.parameters()).device
    cache, first, held = _prefill(model, context, press)
    logits = [first[None]]
    if len(target) > 1:
        positions = torch.arange(len(context), len(context) + len(target) - 1, device=device)[None]
        logits.append(model(torch.tensor([target[:-1]], device=device), past_key_values=cache,
                            position_ids=positions).logits[0])
    logp = torch.log_softmax(torch.cat(logits).double(), -1)
    return -logp.gather(1, torch.tensor(target, device=device)[:, None])[:, 0].cpu(), held


@torch.no_grad()
def greedy_after(model, context: list[int], question: list[int], press=None,
                 max_new_tokens: int = 8, query_aware: bool = False) -> list[int]:
    """Prefill ``context`` under ``press`` (compressed), then feed ``question`` uncompressed
    and decode greedily, all at true positions (kvpress's pipeline). ``query_aware``: the
    question is prefilled and compressed with the context (SnapKV's and EMS's setting, where
    the observation window holds the question). Returns the new ids."""
    if not context or not question:
        raise ValueError("context and question must both hold at least one token")
    device = next(model.parameters()).device
    if query_aware:
        cache, logits, _ = _prefill(model, context + question, press)
        feed, at = [int(logits.argmax())], len(context) + len(question)
        out = feed[:]
    else:
        cache, _, _ = _prefill(model, context, press)
        feed, at, out = question, len(context), []
    while len(out) < max_new_tokens:
        positions = torch.arange(at, at + len(feed), device=device)[None]
        logits = model(torch.tensor([feed], device=device), past_key_values=cache,
                       position_ids=positions).logits[0, -1]
        at += len(feed)
        feed = [int(logits.argmax())]
        out += feed
    return out


# --- StreamingLLM (Xiao et al., ICLR 2024, arXiv 2309.17453) -------------------------------

@dataclass
class StreamingLLMPress(BasePress):
    """Attention sinks: keep the first ``n_sink`` tokens and the most recent ones (§3.2 of
    the paper), as a kvpress press that compresses the cache once, at prefill. It keeps as
    many entries as kvpress's presses do (``int(T * (1 - compression_ratio))``), in position
    order. ``stream_nll`` is the paper's streaming setting (evict every step, positions
    inside the cache)."""

    compression_ratio: float = 0.0
    n_sink: int = 4

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        """keys, values [B, Hkv, T, D] -> [B, Hkv, kept, D]."""
        length = keys.shape[2]
        kept = int(length * (1 - self.compression_ratio))
        if kept <= self.n_sink:
            raise ValueError(f"a budget of {kept} entries (ratio {self.compression_ratio} of "
                             f"{length}) leaves no recent window beside {self.n_sink} sinks; "
                             "lower compression_ratio or n_sink")
        index = torch.cat([torch.arange(self.n_sink), torch.arange(length - (kept - self.n_sink), length)])
        return keys[:, :, index.to(keys.device)], values[:, :, index.to(keys.device)]


def rerotate(model, keys: torch.Tensor, shift: int) -> torch.Tensor:
    """Keys [B, Hkv, T, D] that RoPE rotated at positions p, rotated to p + ``shift``
    (rotations compose: R(p + s) = R(s) R(p))."""
    position = torch.full((1, keys.shape[2]), shift, device=keys.device)
    cos, sin = model.model.rotary_emb(keys, position)  # [1, T, D] each
    return keys * cos[:, None] + rotate_half(keys) * sin[:, None]


@torch.no_grad()
def stream_nll(model, ids: list[int], n_sink: int, window: int, desc: str = "stream") -> torch.Tensor:
    """Negative log-likelihood of ``ids[1:]`` fed one token at a time through a cache of at
    most ``n_sink + window`` entries: the first ``n_sink`` tokens and the last ones, with
    positions assigned inside the cache (the paper's position shift: when an entry leaves,
    the later keys are re-rotated one position back). ``n_sink=0`` is window attention.
    ``window >= len(ids)`` is the full cache. [len(ids) - 1] float64."""
    if n_sink < 0 or window < 1:
        raise ValueError(f"need n_sink >= 0 and window >= 1, got n_sink={n_sink}, window={window}")
    device = next(model.parameters()).device
    cache, out = DynamicCache(), []
    for i in tqdm(range(len(ids) - 1), desc=desc, mininterval=10, leave=False):
        position = cache.get_seq_length()
        logits = model(torch.tensor([[ids[i]]], device=device), past_key_values=cache,
                       position_ids=torch.tensor([[position]], device=device)).logits[0, -1]
        out.append(-torch.log_softmax(logits.double(), -1)[ids[i + 1]])
        if position + 1 == n_sink + window:  # full: the oldest entry after the sinks leaves
            for layer in cache.layers:
                layer.keys = torch.cat([layer.keys[:, :, :n_sink],
                                        rerotate(model, layer.keys[:, :, n_sink + 1:], -1)], 2)
                layer.values = torch.cat([layer.values[:, :, :n_sink], layer.values[:, :, n_sink + 1:]], 2)
    return torch.stack(out).cpu()


# --- Running methods side by side ------------------------------------------------------------

# Press constructors by name, each taking the compression ratio and its own options
_PRESS_MAKERS = {"ems": EMSPress, "streaming": StreamingLLMPress,  # ours
                 "snapkv": kvpress.SnapKVPress, "pyramidkv": kvpress.PyramidKVPress,
                 "adakv": lambda compression_ratio, **kw: kvpress.AdaKVPress(kvpress.SnapKVPress(compression_ratio, **kw)),
                 "h2o": kvpress.ObservedAttentionPress, "tova": kvpress.TOVAPress, "knorm": kvpress.KnormPress}
PRESSES = tuple(_PRESS_MAKERS)


def method_press(method: dict, context_len: int):
    """The press of a method spec for a context of ``context_len`` tokens:

    - ``{"evict": name, "budget": b, **options}``: press ``name`` (one of ``PRESSES``: ours
      ``ems`` and ``streaming``; kvpress's ``snapkv``, ``pyramidkv``, ``adakv`` (AdaKV over
      SnapKV), ``h2o`` (``ObservedAttentionPress``), ``tova``, ``knorm``) keeping ``b``
      entries per KV head (on average, for head- or layer-wise budgets);
    - ``{"streaming": b, "n_sink": n}``: our StreamingLLM keeping ``b`` entries, sinks included;
    - ``{"press": p}``: any kvpress press; otherwise none (the full cache is kept)."""
    if "streaming" in method:
        method = {"evict": "streaming", "budget": method["streaming"], "n_sink": method.get("n_sink", 4)}
    if "evict" not in method:
        return method.get("press")
    options = {k: v for k, v in method.items() if k not in ("evict", "budget")}
    budget = method.get("budget")
    if method["evict"] not in _PRESS_MAKERS:
        raise ValueError(f"unknown press {method['evict']!r}: choose from {', '.join(PRESSES)}")
    if not isinstance(budget, numbers.Integral) or budget < 1:
        raise ValueError(f"a press needs a budget of at least 1 entry per head, got {budget!r}")
    if budget >= context_len:
        raise ValueError(f"a budget of {budget} entries is not smaller than the "
                         f"{context_len}-token context: nothing would be evicted")
    # kvpress keeps int(T * (1 - ratio)) entries: the half entry keeps exactly `budget`
    return _PRESS_MAKERS[method["evict"]](compression_ratio=1 - (budget + 0.5) / context_len, **options)


@contextlib.contextmanager
def selecting(model, method: dict):
    """What a method needs around its run: TokenSelect when the spec has ``{"select":
    token_select kwargs}`` (yields its state, else None), eager attention for H2O (kvpress's
    ``ObservedAttentionPress`` reads the attention weights, which only eager returns)."""
    if method.get("select") and (method.get("evict") or method.get("press") or method.get("streaming")):
        raise ValueError("a method spec either selects (TokenSelect) or evicts (a press), not both")
    h2o = method.get("evict") == "h2o" or isinstance(method.get("press"), kvpress.ObservedAttentionPress)
    eager = h2o and model.config._attn_implementation != "eager"
    if eager:
        previous = model.config._attn_implementation
        model.set_attn_implementation("eager")
    try:
        if method.get("select"):
            from tokenworks.tokenselect import token_select
            with token_select(model, **method["select"]) as state:
                yield state
        else:
            yield None
    finally:
        if eager:
            model.set_attn_implementation(previous)


def _selection(state) -> dict:
    """The share of the visible cache read, and of selections reused, by TokenSelect queries."""
    if state is None:
        return {"read": None, "reused": None}
    looked = state.selected + state.reused
    return {"read": state.attended / state.visible, "reused": state.reused / looked if looked else 0.0}


def needle_rows(model, tokenizer, items: list[dict], methods: dict[str, dict],
                query_aware: bool = False) -> list[dict]:
    """Greedy answers to ``needle_items`` under every method spec (see ``method_press``,
    ``selecting``); one row per (item, method) with ``ok`` and, for TokenSelect, the share of
    the visible cache that the question's and answer's queries read and of their selections
    that were reused (``_selection``)."""
    rows = []
    for i, item in enumerate(tqdm(items, desc="needles", mininterval=10)):
        n_new = item.get("max_new_tokens") or len(tokenizer(item["answer"])["input_ids"]) + 1
        prefill = len(item["context"]) + (len(item["question"]) if query_aware else 0)
        for name, method in methods.items():
            with selecting(model, method) as state:
                out = greedy_after(model, item["context"], item["question"], max_new_tokens=n_new,
                                   press=method_press(method, prefill), query_aware=query_aware)
            rows.append({"item": i, "method": name, "context": len(item["context"]),
                         "context_target": item.get("context_tokens"), "depth": item["depth"],
                         "ok": answered(tokenizer.decode(out), item), **_selection(state)})
    return rows


def perplexity_rows(model, streams: list[tuple[list[int], list[int]]], methods: dict[str, dict]) -> list[dict]:
    """NLL of each (context, target) stream's target under every method spec, with the KV
    bytes held after the prefill and TokenSelect's ``_selection`` shares."""
    rows = []
    for i, (context, target) in enumerate(tqdm(streams, desc="perplexity", mininterval=10)):
        for name, method in methods.items():
            with selecting(model, method) as state:
                nll, held = continuation_nll(model, context, target, press=method_press(method, len(context)))
            rows.append({"stream": i, "method": name, "nll": nll.mean().item(), "tokens": len(target),
                         "kv_bytes": held, **_selection(state)})
    return rows


@torch.no_grad()
def recompute_nll(model, ids: list[int], window: int, batch: int = 32) -> torch.Tensor:
    """Sliding window with re-computation (the StreamingLLM paper's quality baseline): token
    ``i + 1`` is predicted from a fresh forward over the last ``window`` tokens ``ids[i+1-window:
    i+1]``, at positions ``0..window-1``, with no cache. Windows run ``batch`` at a time (the
    same math as one at a time; time it with ``batch=1``). [len(ids) - 1] float64."""
    if window < 1 or batch < 1:
        raise ValueError(f"need window >= 1 and batch >= 1, got window={window}, batch={batch}")
    device = next(model.parameters()).device
    out = []
    for lo in tqdm(range(0, len(ids) - 1, batch), desc="recompute", mininterval=10, leave=False):
        ends = range(lo, min(lo + batch, len(ids) - 1))  # predict ids[e + 1] from ids[..e]
        rows = [ids[max(0, e + 1 - window):e + 1] for e in ends]
        width = max(map(len, rows))
        # left-pad short rows (the first window - 1 tokens) with their own first token and mask it out
        x = torch.tensor([[r[0]] * (width - len(r)) + r for r in rows], device=device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        logits = model(x, attention_mask=mask, position_ids=pos).logits[:, -1]
        targets = torch.tensor([ids[e + 1] for e in ends], device=device)
        out.append(-torch.log_softmax(logits.double(), -1).gather(1, targets[:, None])[:, 0])
    return torch.cat(out).cpu()
