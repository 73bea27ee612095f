"""StreamingLLM (tokenworks.kvcache.streamingllm): the press (exact eviction, kvpress's way
and contract), the streaming setting with re-rotation, recomputation; on tw-micro."""
import pytest
import torch
from kvpress import StreamingLLMPress
from kvpress.utils import compute_n_kept
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from tokenworks.kvcache import StreamingLLMPress as OurStreamingLLM
from tokenworks.kvcache import (continuation_nll, greedy_after, kv_bytes, method_press, press_on, recompute_nll,
                                rerotate, stream_nll, stream_nlls)

from conftest import micro64 as micro
from conftest import random_ids as ids


def prefill(model, context, press=None, kvpress_way=False):
    cache = DynamicCache()
    with torch.no_grad(), (press(model) if kvpress_way else press_on(model, press)):
        model(torch.tensor([context]), past_key_values=cache)
    return cache


@pytest.mark.parametrize("T,ratio,n_sink", [(64, 0.25, 4), (64, 0.5, 4), (70, 0.8, 4), (40, 0.5, 0),
                                            (30, 0.9, 4), (12, 0.9, 4), (3, 0.6, 4), (1, 0.5, 4)])
def test_the_press_keeps_exactly_the_sinks_and_the_recent_window_of_the_full_cache(T, ratio, n_sink):
    """Which positions stay, and that they are the full cache's entries (the press evicts
    after each layer's prefill, so every layer's kept entries are the full cache's)."""
    model, _ = micro()
    context = ids(T, seed=T)
    full, short = prefill(model, context), prefill(model, context, OurStreamingLLM(ratio, n_sink=n_sink))
    kept = compute_n_kept(T, ratio)  # kvpress's contract: at least one entry stays
    sinks = min(n_sink, kept)  # a budget inside the sinks keeps the first `kept` tokens
    positions = list(range(sinks)) + list(range(T - (kept - sinks), T))
    assert len(positions) == kept >= 1
    for f, s in zip(full.layers, short.layers):
        assert torch.equal(s.keys, f.keys[:, :, positions]) and torch.equal(s.values, f.values[:, :, positions])


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.8])
def test_our_streaming_llm_keeps_what_kvpress_keeps(ratio):
    model, _ = micro()
    context, target = ids(70), ids(10, seed=3)
    ours, held = continuation_nll(model, context, target, OurStreamingLLM(compression_ratio=ratio))
    theirs, held_kvpress = continuation_nll(model, context, target, StreamingLLMPress(compression_ratio=ratio))
    assert held == held_kvpress
    assert torch.allclose(ours, theirs, atol=1e-9)  # far inside the 1% perplexity tolerance a reproduction would allow


def test_the_press_works_the_kvpress_way_and_under_generate():
    """``with press(model):`` (kvpress's usage; transformers 5.23 passes no cache_position)
    leaves the cache press_on leaves, and model.generate inside the context decodes as
    greedy_after does on the same compressed prefill."""
    model, _ = micro()
    context, question = ids(50, seed=1), ids(4, seed=2)
    press = OurStreamingLLM(0.6)
    hooks = [(len(layer.self_attn._forward_pre_hooks), len(layer.self_attn._forward_hooks)) for layer in model.model.layers]
    ours, harness = prefill(model, context, press, kvpress_way=True), prefill(model, context, press)
    assert all(torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
               for a, b in zip(ours.layers, harness.layers))
    assert kv_bytes(ours) == kv_bytes(prefill(model, context)) * compute_n_kept(50, 0.6) // 50
    with torch.no_grad(), press(model):
        out = model.generate(torch.tensor([context + question]), max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert out[0, 54:].tolist() == greedy_after(model, context, question, press, max_new_tokens=5, query_aware=True)
    # every hook the press added left with the context
    assert [(len(layer.self_attn._forward_pre_hooks), len(layer.self_attn._forward_hooks))
            for layer in model.model.layers] == hooks


@pytest.mark.parametrize("bad,error,match", [(dict(compression_ratio=1.0), ValueError, "compression_ratio"),
                                             (dict(compression_ratio=-0.2), ValueError, "compression_ratio"),
                                             (dict(compression_ratio=True), ValueError, "compression_ratio"),
                                             (dict(n_sink=-1), ValueError, "n_sink"),
                                             (dict(n_sink=2.5), TypeError, "n_sink"),
                                             (dict(n_sink=True), TypeError, "n_sink")])
def test_bad_settings_are_refused_at_once(bad, error, match):
    with pytest.raises(error, match=match):
        OurStreamingLLM(**bad)


def test_a_named_budget_inside_the_sinks_is_refused():
    """kvpress's ratios may shrink the sinks (its contract), but a budget we name must leave a
    recent window: {"streaming": 2, "n_sink": 4} would keep only the first tokens."""
    with pytest.raises(ValueError, match="no recent window"):
        method_press({"streaming": 2, "n_sink": 4}, 80)
    assert method_press({"streaming": 5, "n_sink": 4}, 80).n_sink == 4


def test_stream_with_room_for_everything_is_a_plain_forward():
    model, _ = micro()
    stream = ids(50, seed=4)
    nll = stream_nll(model, stream, n_sink=4, window=60)
    logp = torch.log_softmax(model(torch.tensor([stream])).logits[0].double(), -1)
    plain = -logp[:-1].gather(1, torch.tensor(stream[1:])[:, None])[:, 0]
    assert torch.allclose(nll, plain, atol=1e-9, rtol=0)


def first_layer_keys(model, tokens, start=0):
    cache = DynamicCache()
    with torch.no_grad():
        model(torch.tensor([tokens]), past_key_values=cache,
              position_ids=torch.arange(start, start + len(tokens))[None])
    return cache.layers[0].keys, cache.layers[0].values


def test_rerotation_moves_keys_to_new_positions():
    """First-layer keys depend only on the token and its position: keys computed at p and
    re-rotated by s equal keys computed at p + s."""
    model, _ = micro()
    tokens = ids(12, seed=5)
    keys = [first_layer_keys(model, tokens, start)[0] for start in (0, 7)]
    # RoPE angles are computed in float32 (the model does so too): agree to float32 precision
    assert torch.allclose(rerotate(model, keys[0], 7), keys[1], atol=1e-5)
    assert torch.allclose(rerotate(model, keys[1], -7), keys[0], atol=1e-5)
    assert not torch.allclose(keys[0], keys[1], atol=1e-2)


@pytest.mark.parametrize("rope", [{"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
                                  {"rope_type": "dynamic", "factor": 2.0}])
def test_rerotation_divides_out_the_rope_attention_scaling(rope):
    """YaRN's cos and sin carry attention_scaling != 1; re-rotated keys must not carry it twice."""
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         rope_parameters={"rope_theta": 10000.0, **rope})
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).double().eval()
    if rope["rope_type"] == "yarn":
        assert model.model.rotary_emb.attention_scaling != 1
    tokens = torch.randint(0, 64, (10,)).tolist()
    keys = [first_layer_keys(model, tokens, start)[0] for start in (0, 9)]
    assert torch.allclose(rerotate(model, keys[0], 9), keys[1], atol=1e-5)


def test_rerotation_refuses_a_model_without_a_rotary_embedding():
    with pytest.raises(ValueError, match="rotary_emb"):
        rerotate(torch.nn.Linear(2, 2), torch.zeros(1, 1, 2, 4), 1)


def test_streaming_cache_keeps_exactly_the_sinks_and_the_last_window():
    """The cache after the stream holds the first n_sink tokens and the last window - 1
    at positions inside the cache: its first layer (keys depend only on the token and the
    position there) equals a fresh forward over those tokens at positions 0..n-1."""
    model, _ = micro()
    stream, n_sink, window = ids(40, seed=6), 4, 12
    caches = []
    grab = model.register_forward_pre_hook(lambda m, a, kw: caches.append(kw["past_key_values"]), with_kwargs=True)
    try:
        nll = stream_nll(model, stream, n_sink=n_sink, window=window)
    finally:
        grab.remove()
    assert nll.shape == (39,) and all(c is caches[0] for c in caches)
    kept = stream[:n_sink] + stream[39 - (window - 1):39]  # the stream feeds stream[:39]
    keys, values = first_layer_keys(model, kept)
    layer = caches[0].layers[0]
    assert layer.keys.shape[2] == n_sink + window - 1
    assert torch.allclose(layer.keys, keys, atol=1e-5) and torch.allclose(layer.values, values, atol=1e-12)
    # before the first eviction the stream is the full forward
    logp = torch.log_softmax(model(torch.tensor([stream])).logits[0].double(), -1)
    plain = -logp[:-1].gather(1, torch.tensor(stream[1:])[:, None])[:, 0]
    assert torch.allclose(nll[:n_sink + window], plain[:n_sink + window], atol=1e-9)
    with pytest.raises(ValueError, match="window must be an integer >= 1"):
        stream_nll(model, stream, n_sink=4, window=0)
    with pytest.raises(TypeError, match="n_sink must be an integer"):
        stream_nll(model, stream, n_sink=True, window=8)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        stream_nll(model, stream[:1], n_sink=4, window=8)


def test_recomputation_equals_a_fresh_forward_over_each_window():
    model, _ = micro()
    seq = ids(30, seed=4)
    nll = recompute_nll(model, seq, window=8, batch=5)
    for i in (0, 3, 7, 20, 28):  # predicting seq[i + 1] from the last 8 tokens up to seq[i]
        ctx = seq[max(0, i - 7):i + 1]
        logp = torch.log_softmax(model(torch.tensor([ctx])).logits[0, -1].double(), -1)
        assert nll[i].item() == pytest.approx(-logp[seq[i + 1]].item(), abs=1e-5)
    # a window covering everything is the plain forward
    logp = torch.log_softmax(model(torch.tensor([seq])).logits[0].double(), -1)
    plain = -logp[:-1].gather(1, torch.tensor(seq[1:])[:, None])[:, 0]
    torch.testing.assert_close(recompute_nll(model, seq, window=30, batch=7), plain.detach(), atol=1e-5, rtol=0)


def test_stream_prefill_in_chunks_equals_one_token_at_a_time():
    """Until the first eviction the stream is a prefill: in chunks or token by token, the
    same NLL (float32 summation order aside), and the same after the evictions."""
    model, _ = micro()
    stream = ids(60, seed=7)
    one = stream_nll(model, stream, n_sink=2, window=30, chunk=1)
    for chunk in (5, 32, 256):
        torch.testing.assert_close(stream_nll(model, stream, n_sink=2, window=30, chunk=chunk), one,
                                   atol=1e-5, rtol=0)
    assert not torch.allclose(stream_nll(model, stream, n_sink=0, window=30), one, atol=1e-3)


def test_recomputation_subsample_scores_every_stride_th_token():
    model, _ = micro()
    seq = ids(30, seed=4)
    every = recompute_nll(model, seq, window=8, batch=5)
    third = recompute_nll(model, seq, window=8, batch=4, stride=3)
    assert torch.isnan(third).tolist() == [i % 3 != 0 for i in range(29)]
    torch.testing.assert_close(third[::3], every[::3], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="stride"):
        recompute_nll(model, seq, window=8, stride=0)


def test_sink_counts_side_by_side_score_as_each_stream_alone():
    """stream_nlls batches sink counts of one capacity: each row is stream_nll with that
    many sinks (float64: the batch changes no more than the summation order)."""
    model, _ = micro()
    stream, capacity = ids(70, seed=8), 24
    rows = stream_nlls(model, stream, [0, 1, 4], capacity, chunk=16)
    assert rows.shape == (3, 69)
    for row, n in zip(rows, [0, 1, 4]):
        torch.testing.assert_close(row, stream_nll(model, stream, n_sink=n, window=capacity - n, chunk=16),
                                   atol=1e-10, rtol=0)
    assert not torch.allclose(rows[0], rows[2], atol=1e-3)  # the sinks change the scores
    with pytest.raises(ValueError, match="no recent window"):
        stream_nlls(model, stream, [0, 24], capacity)
    with pytest.raises(ValueError, match="at least one sink count"):
        stream_nlls(model, stream, [], capacity)


def test_recomputation_from_start_scores_only_the_later_tokens():
    model, _ = micro()
    seq = ids(30, seed=9)
    whole, later = recompute_nll(model, seq, window=8, batch=4), recompute_nll(model, seq, window=8, batch=4, start=12)
    assert later[:12].isnan().all() and torch.allclose(later[12:], whole[12:], atol=1e-10)
    with pytest.raises(ValueError, match="start"):
        recompute_nll(model, seq, window=8, start=29)
