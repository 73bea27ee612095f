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
keyword, which transformers stopped passing in 5.x: ``cache_positions`` supplies it from the
cache length (a forward pre-hook). Our presses install it in their ``__call__``
(``kvpress_way``), so ``with EMSPress(0.5)(model):``, kvpress's pipeline and ``model.generate``
inside the context work; kvpress's own presses and wrappers (``ComposedPress``) need
``with cache_positions(model):`` around them; ``press_on`` does both.
After compression the cache is shorter than the text, so the continuation must be given its
true positions (``position_ids``), as kvpress's pipeline does: without them RoPE would place
it right after the kept entries.
"""
from __future__ import annotations

import contextlib
import inspect
import numbers

import kvpress
import torch
from kvpress.presses.base_press import BasePress
from transformers import DynamicCache

from tokenworks.ids import as_ids, check_count, check_ratio
from tokenworks.models.loader import sliding_attention
from tokenworks.kvcache.ems import EMSPress
from tokenworks.kvcache.layers import attention_layers
from tokenworks.kvcache.razorattention import RazorAttentionPress
from tokenworks.kvcache.streamingllm import StreamingLLMPress


def _cache_position(module, args, kwargs):
    """Pre-hook: the ``cache_position`` keyword kvpress's forward hooks read, from the layer's
    cache length; and a clear error where head masks (``masked_key_indices``) point past the
    cache, which a press after a ragged one (EMS, AdaKV) in ``ComposedPress`` leaves."""
    cache, hidden = kwargs.get("past_key_values"), kwargs.get("hidden_states")
    if cache is None or hidden is None:
        return args, kwargs
    start = cache.get_seq_length(module.layer_idx)
    masked = getattr(module, "masked_key_indices", None)
    if masked is not None and masked[2].numel() and int(masked[2].max()) >= start > 0:
        raise ValueError(f"layer {module.layer_idx}'s head masks point past its {start}-entry cache: a "
                         "press shortened the cache after a ragged-head press (EMSPress, AdaKVPress) "
                         "had masked it; in ComposedPress put that press last, or use EMSPress(adaptive=False)")
    if "cache_position" not in kwargs:
        kwargs["cache_position"] = torch.arange(start, start + hidden.shape[1], device=hidden.device)
    return args, kwargs


def _full_attention_only(model) -> None:
    """Refuse a model with sliding-window layers (``layer_types`` other than full attention, or
    a ``sliding_window`` where the config has no layer types, as Mistral): kvpress's hooks
    compress every layer of a causal LM (they skip Gemma-3's sliding layers only in
    ``Gemma3ForConditionalGeneration``), and a sliding layer's mask indexes its cache by
    position, which a compressed cache no longer is."""
    sliding = sliding_attention(model)
    if sliding:
        raise ValueError(f"a press cannot compress sliding-window attention: {sliding}, and the press "
                         "would compress those layers too, whose masks index the cache by position. Use a "
                         "model whose layers all attend in full (e.g. smollm2-135m), or no press")


@contextlib.contextmanager
def cache_positions(model):
    """Supply the ``cache_position`` keyword that kvpress 0.5.5's hooks read and transformers
    5.x no longer passes to attention layers; refuse sliding-window models (``_full_attention_only``). Our presses do this themselves (their
    ``__call__``); wrap kvpress's own presses, wrappers (``ComposedPress``) and pipeline::

        with cache_positions(model), SnapKVPress(0.5)(model):
            model(ids, past_key_values=cache)
        with cache_positions(model):
            pipe(context, question=question, press=SnapKVPress(0.5))
    """
    _full_attention_only(model)
    hooks = [m.register_forward_pre_hook(_cache_position, with_kwargs=True) for m in attention_layers(model)]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


@contextlib.contextmanager
def kvpress_way(press, model, equal_lengths: bool = True):
    """``press(model)`` for our presses (their ``__call__``): kvpress's forward hooks, with
    ``cache_positions``, and, on leaving, every cache prefilled inside padded to equal layer
    lengths (``_equal_lengths``) so that kvpress's pipeline can feed a multi-token question.
    ``press_on`` passes ``equal_lengths=False``: the harness pads after counting ``kv_bytes``."""
    caches = {}

    def seen(module, args, kwargs):
        if kwargs.get("past_key_values") is not None:
            caches[id(kwargs["past_key_values"])] = kwargs["past_key_values"]
    hook = attention_layers(model)[0].register_forward_pre_hook(seen, with_kwargs=True)
    try:
        with cache_positions(model), BasePress.__call__(press, model):
            yield
    finally:
        hook.remove()
    if equal_lengths:
        for cache in caches.values():
            _equal_lengths(model, cache)


def _check_press(press) -> None:
    """Refuse at once what would fail later: a ratio set at construction (a ``compression_ratio``
    field) outside [0, 1), in ``press`` or a press it wraps (ratios a forward computes are not
    read: a property for DuoAttention, SimLayerKV, DMS; ``None`` until then for ComposedPress);
    an adaptive EMSPress before another press in ComposedPress (kvpress refuses AdaKV there)."""
    ratio = vars(press).get("compression_ratio")
    if ratio is not None:
        check_ratio(f"{type(press).__name__}'s compression_ratio", ratio)
    if isinstance(press, kvpress.ComposedPress) and any(
            isinstance(p, EMSPress) and p.adaptive for p in press.presses[:-1]):
        raise ValueError("ComposedPress: a press after an adaptive EMSPress would keep its zero padding as "
                         "real entries (its head masks then point past the cache): put EMSPress last, "
                         "or use EMSPress(adaptive=False)")
    wrapped = getattr(press, "presses", None) or [getattr(press, "press", None)]
    for p in wrapped:
        if p is not None:
            _check_press(p)


@contextlib.contextmanager
def press_on(model, press):
    """``press(model)`` with the ``cache_position`` keyword kvpress expects; ``None``: the
    full cache. Checks the press (``_check_press``) and that the attention can be hooked
    first. Our presses' layers are left as the press left them (``_prefill`` pads after
    counting the bytes)."""
    for attn in attention_layers(model):  # head masks and biases of an earlier press must not leak into this run
        attn.masked_key_indices = attn.key_bias = None
    if press is None:
        yield
        return
    _check_press(press)
    with contextlib.ExitStack() as stack:
        if isinstance(press, (EMSPress, StreamingLLMPress, RazorAttentionPress)):
            stack.enter_context(kvpress_way(press, model, equal_lengths=False))
        else:
            stack.enter_context(cache_positions(model))
            stack.enter_context(press(model))
        yield


class Prefill:
    """One full-cache prefill of ``ids`` as each attention layer saw it: its keyword inputs,
    its output, and the keys and values it cached (``capture_prefill``). kvpress compresses a
    layer's cache in a forward hook after that layer's attention (``BasePress.forward_hook``),
    so a press changes nothing in the prefill's own hidden states or logits; replaying the
    hooks on what was captured (``_prefill``) leaves the cache the press would have left, from
    one forward for every press. Not for presses that read the attention weights (H2O's
    ``ObservedAttentionPress``, under eager attention): the capture keeps none (at 8k tokens
    they would take gigabytes per layer)."""

    def __init__(self, ids: list[int], logits: torch.Tensor, layers: list[tuple]):
        self.ids, self.logits, self.layers = ids, logits, layers  # layers: (args, kwargs, output, keys, values)


@torch.no_grad()
def capture_prefill(model, ids: list[int]) -> Prefill:
    """Prefill ``ids`` with the full cache and keep what each attention layer saw (``Prefill``)."""
    ids = as_ids(ids, model, name="ids")
    seen = {}

    def record(module, args, kwargs, output):
        seen[module.layer_idx] = (args, {k: v for k, v in kwargs.items() if k != "past_key_values"},
                                  (output[0], None, *output[2:]))
    layers = attention_layers(model)
    hooks = [attn.register_forward_hook(record, with_kwargs=True) for attn in layers]
    cache = DynamicCache()
    try:
        logits = model(torch.tensor([ids], device=next(model.parameters()).device), past_key_values=cache).logits[0, -1]
    finally:
        for hook in hooks:
            hook.remove()
    return Prefill(ids, logits, [(*seen[attn.layer_idx], layer.keys, layer.values)
                                 for attn, layer in zip(layers, cache.layers)])


def _replay(model, prefill: Prefill, cache: DynamicCache) -> None:
    """Call every attention layer, hooks and all, with what it saw at ``prefill``, its forward
    replaced by the work it did then: caching the captured keys and values into ``cache``."""
    for attn, (args, kwargs, output, keys, values) in zip(attention_layers(model), prefill.layers):
        def forward(*_, past_key_values, **__):
            past_key_values.update(keys.clone(), values.clone(), attn.layer_idx)
            return output
        attn.forward = forward  # an instance attribute: nn.Module.__call__ runs the hooks around it
        try:
            attn(*args, **kwargs, past_key_values=cache)
        finally:
            del attn.forward


def _prefill(model, context: list[int], press, prefill: Prefill | None = None) -> tuple[DynamicCache, torch.Tensor, int]:
    """The cache of ``context`` compressed by ``press``, the logits after it [V], and the KV
    bytes the press left (before ``_equal_lengths``); from ``prefill`` (``capture_prefill``
    of the same ids) without a forward where one is given."""
    if prefill is not None and prefill.ids != list(context):
        raise ValueError(f"the captured prefill holds {len(prefill.ids)} other ids than the "
                         f"{len(context)}-token prefill asked for: capture_prefill those ids")
    if prefill is not None and _reads_attention(press):
        raise ValueError(f"{type(press).__name__} reads the attention weights, which a captured prefill "
                         "does not keep: run it without one")
    cache = DynamicCache()
    with press_on(model, press):
        if prefill is None:
            x = torch.tensor([context], device=next(model.parameters()).device)
            logits = model(x, past_key_values=cache).logits[0, -1]
        else:
            _replay(model, prefill, cache)
            logits = prefill.logits
    held = kv_bytes(cache)
    _equal_lengths(model, cache)
    return cache, logits, held


def _reads_attention(press) -> bool:
    """Whether ``press`` or a press it wraps is H2O's, which scores by attention weights."""
    if isinstance(press, kvpress.ObservedAttentionPress):
        return True
    return any(_reads_attention(p) for p in (getattr(press, "presses", None) or [getattr(press, "press", None)])
               if p is not None)


def _equal_lengths(model, cache: DynamicCache) -> None:
    """Pad layers that a press left shorter (PyramidKV, EMS) to the longest, with zero entries
    masked by kvpress's fake-key patch (``masked_key_indices``): transformers builds one
    attention mask for all layers, so a multi-token continuation needs equal lengths. The
    padding is the harness's, not the method's: ``_prefill`` takes ``kv_bytes`` before it;
    our presses pad on leaving ``with press(model):`` (``kvpress_way``), for kvpress's pipeline."""
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


def _forward(model, cache: DynamicCache, ids: list[int], start: int) -> torch.Tensor:
    """Logits [len(ids), V] of ``ids`` fed after ``cache`` at their true positions from
    ``start``: in one forward, or one token at a time where a press left masked entries
    (``masked_key_indices``: EMS's and AdaKV's ragged heads, ``_equal_lengths``'s padding).
    kvpress's fake-key patch needs one key per KV head that every query of the chunk misses,
    which a chunk of many queries may not have (kvpress: "Could not find fake keys"); for one
    token's queries it does. Both ways give the same scores."""
    device = next(model.parameters()).device
    masked = any(getattr(attn, "masked_key_indices", None) is not None for attn in attention_layers(model))
    step = 1 if masked else len(ids)
    logits = []
    for i in range(0, len(ids), step):
        chunk = ids[i:i + step]
        positions = torch.arange(start + i, start + i + len(chunk), device=device)[None]
        logits.append(model(torch.tensor([chunk], device=device), past_key_values=cache,
                            position_ids=positions).logits[0])
    return torch.cat(logits)


def kv_bytes(cache: DynamicCache) -> int:
    """Bytes of keys and values the cache holds, over all layers."""
    return sum(t.numel() * t.element_size() for layer in cache.layers
               for t in (layer.keys, layer.values) if t is not None)


@torch.no_grad()
def continuation_nll(model, context: list[int], target: list[int], press=None,
                     prefill: Prefill | None = None) -> tuple[torch.Tensor, int]:
    """Prefill ``context`` under ``press`` (or compress ``prefill``, a ``capture_prefill`` of
    ``context``), then score ``target`` (teacher forcing, one forward, at its true
    positions); ids as lists or tensors (``tokenworks.ids.as_ids``).
    Returns the negative log-likelihood of every target token [len(target)] (float64) and
    the KV bytes held after compression."""
    context, target = as_ids(context, model, name="context"), as_ids(target, model, name="target")
    device = next(model.parameters()).device
    cache, first, held = _prefill(model, context, press, prefill)
    logits = [first[None]]
    if len(target) > 1:
        logits.append(_forward(model, cache, target[:-1], len(context)))
    logp = torch.log_softmax(torch.cat(logits).double(), -1)
    return -logp.gather(1, torch.tensor(target, device=device)[:, None])[:, 0].cpu(), held


@torch.no_grad()
def greedy_after(model, context: list[int], question: list[int], press=None,
                 max_new_tokens: int = 8, query_aware: bool = False, prefill: Prefill | None = None) -> list[int]:
    """Prefill ``context`` under ``press`` (compressed), then feed ``question`` uncompressed
    and decode greedily, all at true positions (kvpress's pipeline). ``query_aware``: the
    question is prefilled and compressed with the context (SnapKV's and EMS's setting, where
    the observation window holds the question). ``prefill``: a ``capture_prefill`` of what is
    prefilled, compressed instead of a new forward. Ids as lists or tensors
    (``tokenworks.ids.as_ids``). Returns the new ids."""
    context, question = as_ids(context, model, name="context"), as_ids(question, model, name="question")
    check_count("max_new_tokens", max_new_tokens)
    if query_aware:
        cache, logits, _ = _prefill(model, context + question, press, prefill)
    else:
        cache, _, _ = _prefill(model, context, press, prefill)
        logits = _forward(model, cache, question, len(context))[-1]
    at, out = len(context) + len(question), [int(logits.argmax())]
    while len(out) < max_new_tokens:
        logits = _forward(model, cache, out[-1:], at)[-1]
        at += 1
        out.append(int(logits.argmax()))
    return out


# --- Running methods side by side ------------------------------------------------------------

# Press constructors by name, each taking the compression ratio and its own options
_PRESS_MAKERS = {"ems": EMSPress, "streaming": StreamingLLMPress, "razor": RazorAttentionPress,  # ours
                 "snapkv": kvpress.SnapKVPress, "pyramidkv": kvpress.PyramidKVPress,
                 "adakv": lambda compression_ratio, **kw: kvpress.AdaKVPress(kvpress.SnapKVPress(compression_ratio, **kw)),
                 "h2o": kvpress.ObservedAttentionPress, "tova": kvpress.TOVAPress, "knorm": kvpress.KnormPress}
PRESSES = tuple(_PRESS_MAKERS)
_ROUNDING = {"pyramidkv"}  # presses that keep round(T * (1 - ratio)) entries, not int(...)


def method_press(method: dict, context_len: int):
    """The press of a method spec for a context of ``context_len`` tokens. A spec is one of:

    - ``{}``: the full cache, no press (the only spec without a method's name, so that a
      mistyped key is an error, never the full cache);
    - ``{"evict": name, "budget": b, **options}``: press ``name`` (one of ``PRESSES``: ours
      ``ems`` and ``streaming``; kvpress's ``snapkv``, ``pyramidkv``, ``adakv`` (AdaKV over
      SnapKV), ``h2o`` (``ObservedAttentionPress``), ``tova``, ``knorm``) keeping ``b``
      entries per KV head (on average, for head- or layer-wise budgets), with the press's own
      options;
    - ``{"streaming": b, "n_sink": n}``: our StreamingLLM keeping ``b`` entries, sinks included;
    - ``{"press": p}``: any kvpress press;
    - ``{"select": token_select settings}``: TokenSelect (``selecting``), no press."""
    kind = _spec_kind(method)
    if kind is None or kind == "select":
        return None
    if kind == "press":
        return method["press"]
    if kind == "streaming":
        method = {"evict": "streaming", "budget": method["streaming"],
                  **{k: v for k, v in method.items() if k != "streaming"}}
    options = {k: v for k, v in method.items() if k not in ("evict", "budget")}
    budget = method.get("budget")
    if isinstance(budget, bool) or not isinstance(budget, numbers.Integral) or budget < 1:
        raise ValueError(f"a press needs a budget of at least 1 entry per head, got {budget!r}")
    if budget >= context_len:
        raise ValueError(f"a budget of {budget} entries is not smaller than the "
                         f"{context_len}-token context: nothing would be evicted")
    n_sink = options.get("n_sink", StreamingLLMPress.n_sink)
    if method["evict"] == "streaming" and budget <= n_sink:
        raise ValueError(f"a StreamingLLM budget of {budget} entries leaves no recent window beside "
                         f"its {n_sink} sinks: name a budget above n_sink")
    # kvpress keeps int(T * (1 - ratio)) entries: the half entry keeps exactly `budget`; PyramidKV
    # rounds T * (1 - ratio) instead, so it is given the budget itself
    half = 0.0 if method["evict"] in _ROUNDING else 0.5
    return _PRESS_MAKERS[method["evict"]](compression_ratio=1 - (budget + half) / context_len, **options)


def replayable(method: dict) -> bool:
    """Whether a method spec's cache can come from a shared ``capture_prefill``: the full cache,
    TokenSelect (its first prefill attends in full, through the same SDPA call) and the presses
    of ``PRESSES`` but H2O (which reads attention weights); not an arbitrary ``{"press": p}``."""
    kind = _spec_kind(method)
    return kind in (None, "streaming", "select") or (kind == "evict" and method["evict"] != "h2o")


# the method a spec names, by key, and the other keys each kind takes (an evict spec: also its press's options)
_SPEC_KEYS = {"evict": ("budget",), "streaming": ("n_sink",), "press": (), "select": ()}


def _spec_kind(method: dict) -> str | None:
    """Which method a spec names (None: ``{}``, the full cache), refusing any key its kind
    does not take."""
    if not isinstance(method, dict):
        raise TypeError(f"a method spec is a dict ({{}} for the full cache, or see method_press), "
                        f"got {type(method).__name__}")
    kinds = [k for k in method if k in _SPEC_KEYS]
    if "select" in kinds and len(kinds) > 1:
        raise ValueError("a method spec either selects (TokenSelect) or evicts (a press), not both")
    if len(kinds) > 1:
        raise ValueError(f"a method spec names one of 'evict', 'streaming', 'press', 'select'; got {kinds}")
    if not kinds:
        if method:
            raise ValueError(f"unknown key {next(iter(method))!r} in a method spec {method}: a spec names "
                             "one of 'evict', 'streaming', 'press', 'select', or is {} for the full cache")
        return None
    kind, takes = kinds[0], _SPEC_KEYS[kinds[0]]
    if kind == "evict":
        if method["evict"] not in _PRESS_MAKERS:
            raise ValueError(f"unknown press {method['evict']!r}: choose from {', '.join(PRESSES)}")
        options = inspect.signature(_PRESS_MAKERS[method["evict"]]).parameters
        if any(p.kind is p.VAR_KEYWORD for p in options.values()):  # adakv passes its options on to SnapKV
            return kind
        takes += tuple(name for name in options if name != "compression_ratio")  # the budget sets it
    unknown = [k for k in method if k != kind and k not in takes]
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} in a {method[kind] if kind == 'evict' else kind} spec: "
                         f"it takes {', '.join(repr(k) for k in (kind, *takes))}")
    if kind == "press" and not isinstance(method["press"], kvpress.BasePress):
        raise TypeError(f"{{'press': p}} needs a kvpress press, got {type(method['press']).__name__}: "
                        "name our presses or kvpress's with {'evict': name, 'budget': b}")
    if kind == "select" and not isinstance(method["select"], dict):
        raise TypeError(f'a select spec is {{"select": {{"top_k": k, ...}}}} (token_select\'s settings), '
                        f"got {method['select']!r}")
    return kind


@contextlib.contextmanager
def selecting(model, method: dict):
    """What a method needs around its run: TokenSelect when the spec is ``{"select":
    token_select settings}`` (yields its state, else None), eager attention for H2O (kvpress's
    ``ObservedAttentionPress`` reads the attention weights, which only eager returns)."""
    kind = _spec_kind(method)
    if kind == "select":
        from tokenworks.kvcache.tokenselect import token_select
        settings = list(inspect.signature(token_select).parameters)[1:]  # after the model
        unknown = [k for k in method["select"] if k not in settings]
        if unknown:
            raise ValueError(f"unknown TokenSelect setting {unknown[0]!r}: token_select takes "
                             f"{', '.join(repr(k) for k in settings)}")
        if "top_k" not in method["select"]:
            raise ValueError('a select spec needs top_k, the middle tokens each query attends to: '
                             '{"select": {"top_k": k, ...}}')
    h2o = method.get("evict") == "h2o" or isinstance(method.get("press"), kvpress.ObservedAttentionPress)
    eager = h2o and model.config._attn_implementation != "eager"
    if eager:
        previous = model.config._attn_implementation
        model.set_attn_implementation("eager")
    try:
        if kind == "select":
            with token_select(model, **method["select"]) as state:
                yield state
        else:
            yield None
    finally:
        if eager:
            model.set_attn_implementation(previous)
