"""Conformance of every press in the registry ``tokenworks.kvcache.PRESSES`` (ours and
kvpress's baselines; a press added there is covered here without a new test): at
compression ratio 0 it is the full cache, exactly; at a named budget it keeps exactly that
many entries per KV head on average. On tw-micro (float64)."""
import pytest
import torch
from transformers import DynamicCache

from tokenworks.kvcache import PRESSES, attention_layers, continuation_nll, method_press, press_on, selecting
from tokenworks.kvcache.harness import _PRESS_MAKERS

from conftest import micro64 as micro
from conftest import random_ids as ids


@pytest.mark.parametrize("name", PRESSES)
def test_ratio_zero_is_the_full_cache_exactly(name):
    model, _ = micro()
    context, target = ids(80, seed=21), ids(8, seed=22)
    with selecting(model, {"evict": name}):  # H2O's eager attention, for both runs
        full, held_full = continuation_nll(model, context, target)
        same, held = continuation_nll(model, context, target, _PRESS_MAKERS[name](compression_ratio=0.0))
    assert torch.equal(same, full) and held == held_full


@pytest.mark.parametrize("name,budget", [
    (name, budget) for name in PRESSES for budget in (1, 20, 57)])
def test_a_named_budget_keeps_that_many_entries_per_head_on_average(name, budget):
    """Entries held: each layer's cache length per KV head, less the slots its head masks
    (``masked_key_indices``: EMS's padding, AdaKV's evictions) hide from attention."""
    model, _ = micro()
    spec = {"evict": name, "budget": budget}
    if name == "streaming":  # a named StreamingLLM budget must leave a recent window beside the sinks
        spec["n_sink"] = min(4, budget - 1)
    if name == "razor":  # without retrieval heads every head keeps the budget (they keep the full cache)
        spec["heads"] = torch.zeros(model.config.num_hidden_layers, model.config.num_key_value_heads, dtype=torch.bool)
    cache = DynamicCache()
    with torch.no_grad(), selecting(model, spec), press_on(model, method_press(spec, 80)):
        model(torch.tensor([ids(80, seed=23)]), past_key_values=cache)
    Hkv = model.config.num_key_value_heads
    held = 0
    for layer, attn in zip(cache.layers, attention_layers(model)):
        masked = attn.masked_key_indices
        held += Hkv * layer.keys.shape[2] - (0 if masked is None else masked[0].numel())
    assert held == budget * Hkv * len(cache.layers)
