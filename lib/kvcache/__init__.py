"""KV-cache methods, kvpress's way: presses compress the cache at prefill
(``StreamingLLMPress``, ``EMSPress``, ``RazorAttentionPress``, and kvpress's own by name through ``method_press``);
``token_select`` selects entries at decode time and evicts nothing; ``gemfilter_generate``
selects input tokens at an early layer and runs the model on them only.

>>> with press_on(model, EMSPress(compression_ratio=0.9)):  # the harness's way
...     model(context_ids, past_key_values=cache)
>>> with EMSPress(compression_ratio=0.9)(model):  # kvpress's way, for our presses
...     model(context_ids, past_key_values=cache)
>>> with cache_positions(model), SnapKVPress(0.5)(model):  # kvpress's own presses (and pipeline)
...     model(context_ids, past_key_values=cache)

Methods: ``harness`` (running presses; one ``capture_prefill`` serves many), ``streamingllm``, ``ems``, ``tokenselect``, ``gemfilter``,
``razorattention`` (retrieval heads by a probe, ``head_scores`` and ``retrieval_heads``).
Experiments: ``tasks`` (the essay needle test, code needles, key-value retrieval, hub data sets, rows), ``plots``, ``verdicts`` (each notebook's claims, judged from its results).
"""
from tokenworks.kvcache.ems import EMSPress
from tokenworks.kvcache.gemfilter import gemfilter_generate
from tokenworks.kvcache.razorattention import (RazorAttentionPress, head_scores, held_entries,
                                               nonretrieval_budget, random_heads, retrieval_heads)
from tokenworks.kvcache.harness import (PRESSES, Prefill, attention_layers, cache_positions, capture_prefill,
                                        continuation_nll, greedy_after, kv_bytes, method_press, press_on, replayable,
                                        selecting)
from tokenworks.kvcache.streamingllm import StreamingLLMPress, recompute_nll, rerotate, stream_nll, stream_nlls
from tokenworks.kvcache.tasks import (answered, essay_items, first_token_seconds, gemfilter_rows, hub_items, kv_items,
                                      needle_items, needle_rows, perplexity_rows, selection_recall)


def __getattr__(name):  # TokenSelect imports Triton: loaded on first use
    if name in ("token_select", "TokenSelectState"):
        from tokenworks.kvcache import tokenselect
        return getattr(tokenselect, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["EMSPress", "StreamingLLMPress", "PRESSES", "Prefill", "attention_layers", "cache_positions",
           "capture_prefill", "continuation_nll", "replayable",
           "greedy_after", "kv_bytes", "method_press", "press_on", "selecting", "recompute_nll",
           "rerotate", "stream_nll", "stream_nlls", "answered", "essay_items", "hub_items", "kv_items", "needle_items",
           "needle_rows", "perplexity_rows", "token_select", "TokenSelectState", "gemfilter_generate", "gemfilter_rows",
           "selection_recall", "first_token_seconds", "RazorAttentionPress", "head_scores", "held_entries",
           "nonretrieval_budget", "random_heads", "retrieval_heads"]
