"""The KV-cache harness (tokenworks.kvcache) with kvpress on transformers 5.23, on tw-micro."""
import functools

import pytest
import torch
from kvpress import KnormPress, SnapKVPress, StreamingLLMPress
from transformers import DynamicCache

from tokenworks.kvcache import attention_layers, continuation_nll, press_on
from tokenworks.models import load


@functools.cache
def micro():
    return load("tw-micro", device="cpu", dtype=torch.float64)


def ids(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(5, len(micro()[1]), (n,), generator=g).tolist()


def test_full_cache_equals_a_plain_forward():
    model, _ = micro()
    context, target = ids(40), ids(12, seed=1)
    nll, held = continuation_nll(model, context, target, press=None)
    logp = torch.log_softmax(model(torch.tensor([context + target])).logits[0].double(), -1)
    plain = -logp[len(context) - 1:-1].gather(1, torch.tensor(target)[:, None])[:, 0]
    assert torch.allclose(nll, plain, atol=1e-10, rtol=0)
    # a press that removes nothing is the full cache too
    same, held0 = continuation_nll(model, context, target, press=StreamingLLMPress(compression_ratio=0.0))
    assert torch.allclose(same, plain, atol=1e-10, rtol=0) and held0 == held


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_kvpress_streaming_llm_keeps_sinks_and_the_recent_window(ratio):
    """kvpress's hooks need cache_position, which transformers 5.23 no longer passes:
    press_on supplies it, and the press keeps exactly 4 sinks + the most recent keys."""
    model, _ = micro()
    context = ids(64)

    caches = []
    for press in (None, StreamingLLMPress(compression_ratio=ratio, n_sink=4)):
        cache = DynamicCache()
        with torch.no_grad(), press_on(model, press):
            model(torch.tensor([context]), past_key_values=cache)
        caches.append(cache)
    keep = int(64 * (1 - ratio))
    expect = set(range(4)) | set(range(64 - (keep - 4), 64))
    for full_layer, short_layer in zip(caches[0].layers, caches[1].layers):
        for h in range(full_layer.keys.shape[1]):  # which positions were kept, per head
            dist = torch.cdist(short_layer.keys[0, h], full_layer.keys[0, h])  # [kept, 64]
            assert dist.min(1).values.max() < 1e-6  # every kept key is one of the originals
            assert set(dist.argmin(1).tolist()) == expect


def test_compression_lowers_the_bytes_held_and_needs_true_positions():
    model, _ = micro()
    context, target = ids(80), ids(8, seed=2)
    full, held_full = continuation_nll(model, context, target)
    for press in (SnapKVPress(compression_ratio=0.5), KnormPress(compression_ratio=0.5)):
        nll, held = continuation_nll(model, context, target, press)
        assert held == pytest.approx(held_full / 2, rel=0.05) and torch.isfinite(nll).all()
        assert not torch.allclose(nll, full)  # it really evicted something


def test_bad_input():
    model, _ = micro()
    press = StreamingLLMPress(compression_ratio=0.5)
    press.compression_ratio = 1.0  # kvpress checks at construction only
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        continuation_nll(model, ids(10), ids(2), press)
    with pytest.raises(ValueError, match="can't hook"):
        attention_layers(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="at least one token"):
        continuation_nll(model, [], ids(2))
