"""RazorAttention (``tokenworks.kvcache.razorattention``): retrieval heads keep the full cache,
the others sinks, a window and a compensation token whose logit carries ln N_d."""
import math
import types

import pytest
import torch
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from tokenworks.kvcache import (RazorAttentionPress, continuation_nll, greedy_after, head_scores, held_entries,
                                method_press, nonretrieval_budget, random_heads, retrieval_heads)
from tokenworks.kvcache.razorattention import echo_induction, probe_ids, razor_compress

from conftest import micro64 as micro
from conftest import random_ids as ids
from conftest import token_by_token_nll


def heads_of(model, fill: bool) -> torch.Tensor:
    return torch.full((model.config.num_hidden_layers, model.config.num_key_value_heads), fill)


def test_every_head_a_retrieval_head_is_the_full_cache_exactly():
    model, _ = micro()
    context, target = ids(120, seed=1), ids(10, seed=2)
    press = RazorAttentionPress(0.8, heads=heads_of(model, True))
    full, held_full = continuation_nll(model, context, target)
    same, held = continuation_nll(model, context, target, press)
    assert torch.equal(same, full) and held == held_full
    assert greedy_after(model, context, target[:3], press, max_new_tokens=6) == greedy_after(
        model, context, target[:3], max_new_tokens=6)


def _attend(q, k, v, bias, groups):
    """The patched sdpa attention of one decoding query over a compressed cache."""
    module = types.SimpleNamespace(key_bias=bias, num_key_value_groups=groups, is_causal=True, layer_idx=0,
                                   masked_key_indices=None)
    return ALL_ATTENTION_FUNCTIONS["sdpa"](module, q, k, v, None, 0.0, scaling=q.shape[-1] ** -0.5)[0]


@pytest.mark.parametrize("T,n_kept,n_sink,groups", [(40, 9, 4, 2), (33, 2, 4, 1), (64, 20, 0, 3)])
def test_the_compensation_token_is_the_dropped_keys_collapsed_to_one_with_multiplicity(T, n_kept, n_sink, groups):
    """sdpa on the compressed cache with ln N_d on the compensation token's logit equals the
    explicit softmax in which the dropped keys are replaced by their mean, counted N_d times
    (Algorithm 1's o), and equals duplicating that mean key N_d times."""
    g = torch.Generator().manual_seed(T)
    B, Hkv, D = 1, 2, 8
    keys, values = (torch.randn(B, Hkv, T, D, generator=g, dtype=torch.float64) for _ in range(2))
    q = torch.randn(B, Hkv * groups, 1, D, generator=g, dtype=torch.float64)
    k_c, v_c, bias, valid = razor_compress(keys, values, torch.zeros(Hkv, dtype=torch.bool), n_kept, n_sink)
    assert k_c.shape == (B, Hkv, n_kept, D) and valid.all()
    out = _attend(q, k_c, v_c, bias, groups)  # [B, 1, Hq, D]
    sinks = min(n_sink, n_kept - 1)
    recent = n_kept - 1 - sinks
    kept = list(range(sinks)) + list(range(T - recent, T))
    dropped = [j for j in range(T) if j not in kept]
    for h in range(Hkv * groups):
        kv = h // groups
        qh = q[0, h, 0] * D ** -0.5
        k_hat, v_hat = keys[0, kv, dropped].mean(0), values[0, kv, dropped].mean(0)
        w = torch.exp(keys[0, kv, kept] @ qh)
        n_d = len(dropped)
        explicit = (n_d * torch.exp(k_hat @ qh) * v_hat + w @ values[0, kv, kept]) / (n_d * torch.exp(k_hat @ qh) + w.sum())
        torch.testing.assert_close(out[0, 0, h], explicit, rtol=1e-10, atol=1e-12)
        many_k = torch.cat([keys[0, kv, kept], k_hat.expand(n_d, D)])
        many_v = torch.cat([values[0, kv, kept], v_hat.expand(n_d, D)])
        torch.testing.assert_close(out[0, 0, h], torch.softmax(many_k @ qh, 0) @ many_v, rtol=1e-10, atol=1e-12)
    assert bias[0, 0, sinks] == pytest.approx(math.log(len(dropped)))


def test_the_layout_keeps_sinks_mean_recent_and_pads_only_beside_retrieval_heads():
    g = torch.Generator().manual_seed(0)
    keys, values = (torch.randn(1, 3, 30, 4, generator=g) for _ in range(2))
    retrieval = torch.tensor([False, True, False])
    k, v, bias, valid = razor_compress(keys, values, retrieval, 8, n_sink=2)
    assert k.shape == (1, 3, 30, 4)  # the retrieval head sets the layer's length
    assert torch.equal(k[0, 1], keys[0, 1]) and torch.equal(v[0, 1], values[0, 1]) and valid[0, 1].all()
    for h in (0, 2):
        assert torch.equal(k[0, h, :2], keys[0, h, :2])  # sinks
        torch.testing.assert_close(k[0, h, 2], keys[0, h, 2:25].mean(0))  # the 23 dropped, collapsed
        assert torch.equal(k[0, h, 3:8], keys[0, h, 25:])  # the recent window
        assert valid[0, h].tolist() == [True] * 8 + [False] * 22
        assert bias[0, h].nonzero().flatten().tolist() == [2] and bias[0, h, 2] == pytest.approx(math.log(23))
    k, _, bias, valid = razor_compress(keys, values, torch.zeros(3, dtype=torch.bool), 8, n_sink=2, compensate=False)
    assert k.shape == (1, 3, 8, 4) and not bias.any() and torch.equal(k[0, 0, 2:], keys[0, 0, 24:])


def test_a_multi_token_continuation_equals_one_token_at_a_time():
    """The bias mask also holds causality for a chunk of queries (no layer padded here, so the
    harness feeds the target in one forward) and for the padded, one-token path."""
    model, _ = micro()
    context, target = ids(90, seed=3), ids(12, seed=4)
    for heads in (heads_of(model, False), torch.tensor([[True, False], [False, False]])):
        press = RazorAttentionPress(0.7, heads=heads)
        chunked, _ = continuation_nll(model, context, target, press)
        single, _ = token_by_token_nll(model, context, target, press)
        torch.testing.assert_close(chunked, single, rtol=1e-9, atol=1e-9)


def test_the_compensation_token_changes_the_scores_and_a_later_run_forgets_it():
    model, _ = micro()
    context, target = ids(90, seed=5), ids(6, seed=6)
    heads = heads_of(model, False)
    with_c, _ = continuation_nll(model, context, target, RazorAttentionPress(0.7, heads=heads))
    without, _ = continuation_nll(model, context, target, RazorAttentionPress(0.7, heads=heads, compensate=False))
    assert not torch.allclose(with_c, without)
    full, _ = continuation_nll(model, context, target)
    again, _ = continuation_nll(model, context, target)
    assert torch.equal(full, again)  # no bias left behind on the layers


def _toy(n: int, T: int, start: int, D: int = 64):
    """Hand-built queries and keys over a probe of ``n`` tokens repeated: head 0 an induction
    head (its key at j is the embedding of the token before j, its query the current token's),
    head 1 an echo head (key and query: the current token), head 2 a sink head (every query
    matches BOS only), head 3 uniform (all zero)."""
    g = torch.Generator().manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(n + 1, D, generator=g), dim=-1)  # row n: BOS
    token = torch.tensor([n] * start + list(range(n)) * ((T - start) // n))
    prev = torch.cat([token[:1], token[:-1]])
    scale = 60.0
    q = torch.stack([emb[token] * scale, emb[token] * scale, emb[n].expand(T, D) * scale, torch.zeros(T, D)])
    k = torch.stack([emb[prev], emb[token], emb[token], torch.zeros(T, D)])
    return q, k


def test_head_scores_find_a_hand_built_induction_head_and_echo_head():
    n, start, repeats = 50, 1, 4
    q, k = _toy(n, start + n * repeats, start)
    echo, induction = echo_induction(q, k, 1.0, n, start)
    assert induction[0] == pytest.approx(1, abs=1e-3) and echo[0] < 1e-3  # the induction head
    # the echo head: a query in repeat r splits its attention over r copies of its token, itself among them
    assert echo[1] == pytest.approx(sum((r - 1) / r for r in range(2, repeats + 1)) / (repeats - 1), abs=1e-3)
    assert induction[1] < 1e-3
    assert max(echo[2], induction[2]) < 1e-3 and max(echo[3], induction[3]) < 0.05  # sink, uniform
    heads = retrieval_heads({"echo": echo[None], "induction": induction[None]}, kv_heads=4,
                            induction_share=0.25, echo_share=0.25)
    assert heads.tolist() == [[True, True, False, False]]
    heads = retrieval_heads({"echo": echo[None], "induction": induction[None]}, kv_heads=2,
                            induction_share=0.5, echo_share=0.5)  # max over each group of two
    assert heads.tolist() == [[True, False]]


def test_head_scores_of_a_model_match_its_eager_attention():
    model, _ = micro()
    n, repeats = 30, 3
    scores = head_scores(model, n=n, repeats=repeats, seed=4)
    probe = torch.tensor([probe_ids(model, n, repeats, seed=4)])
    start = probe.shape[1] - n * repeats
    model.set_attn_implementation("eager")
    try:
        attn = model(probe, output_attentions=True).attentions  # L x [1, Hq, T, T]
    finally:
        model.set_attn_implementation("sdpa")
    T = probe.shape[1]
    rows = range(start + n, T)
    for layer, a in enumerate(attn):
        echo = sum(a[0, :, i, j] for i in rows for j in range(i - n, start - 1, -n)) / len(rows)
        induction = sum(a[0, :, i, j + 1] for i in rows for j in range(i - n, start - 1, -n)) / len(rows)
        torch.testing.assert_close(scores["echo"][layer], echo.float(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(scores["induction"][layer], induction.float(), rtol=1e-5, atol=1e-6)


def test_the_probe_is_distinct_tokens_repeated_and_seeded():
    model, _ = micro()
    a, b = probe_ids(model, 40, 4, seed=1), probe_ids(model, 40, 4, seed=2)
    assert a == probe_ids(model, 40, 4, seed=1) and a != b
    start = len(a) - 160
    block = a[start:start + 40]
    assert len(set(block)) == 40 and a[start:] == block * 4
    assert model.config.bos_token_id not in block and model.config.eos_token_id not in block


def test_budgets_and_held_entries():
    heads = torch.tensor([[True, False, False], [False, False, False]])
    assert held_entries(heads, 100, 10) == 100 + 5 * 10
    b = nonretrieval_budget(heads, 100, mean_entries=30)  # 180 entries in all: 100 + 5 x 16
    assert b == 16 and held_entries(heads, 100, b) <= 180 < held_entries(heads, 100, b + 1)
    with pytest.raises(ValueError, match="retrieval heads of 6 alone hold"):
        nonretrieval_budget(heads, 100, mean_entries=16)
    with pytest.raises(ValueError, match="every head is a retrieval head"):
        nonretrieval_budget(torch.ones(2, 2, dtype=torch.bool), 100, 50)
    r = random_heads(heads, seed=3)
    assert r.shape == heads.shape and int(r.sum()) == 1 and torch.equal(r, random_heads(heads, seed=3))


def test_a_named_budget_is_what_each_other_head_keeps():
    model, _ = micro()
    heads = torch.tensor([[True, False], [False, False]])
    press = method_press({"evict": "razor", "budget": 20, "heads": heads}, 80)
    cache_held = continuation_nll(model, ids(80, seed=7), ids(2, seed=8), press)[1]
    D, layers = model.config.head_dim, model.config.num_hidden_layers
    bytes_per_entry = 2 * D * 8  # keys and values, float64
    # layer 0 holds its retrieval head's 80 entries and pads the other to 80; layer 1 holds 20 per head
    assert cache_held == bytes_per_entry * (2 * 80 + 2 * 20) and layers == 2


@pytest.mark.parametrize("share", [0, 1.5, -0.1, True, "0.14"])
def test_a_retrieval_share_outside_zero_one_is_refused(share):
    scores = {"echo": torch.rand(2, 4), "induction": torch.rand(2, 4)}
    with pytest.raises(ValueError, match=r"share of the KV heads in \(0, 1\]"):
        retrieval_heads(scores, 2, induction_share=share)
    with pytest.raises(ValueError, match=r"share of the KV heads in \(0, 1\]"):
        retrieval_heads(scores, 2, echo_share=share)


def test_bad_input_is_refused_clearly():
    model, _ = micro()
    with pytest.raises(ValueError, match="needs its retrieval heads"):
        RazorAttentionPress(0.5)
    with pytest.raises(TypeError, match="bool tensor"):
        RazorAttentionPress(0.5, heads=torch.ones(2, 2))
    with pytest.raises(ValueError, match=r"heads is \(3, 2\), this model has \(2, 2\)"):
        continuation_nll(model, ids(40), ids(2), RazorAttentionPress(0.5, heads=torch.ones(3, 2, dtype=torch.bool)))
    with pytest.raises(ValueError, match="kv_heads must divide"):
        retrieval_heads({"echo": torch.rand(2, 4), "induction": torch.rand(2, 4)}, 3)
    with pytest.raises(ValueError, match="exceeds the model's 2048 positions"):
        head_scores(model, n=1000, repeats=3)
    with pytest.raises(ValueError, match="distinct tokens"):
        probe_ids(model, 10 ** 6)
    with pytest.raises(ValueError, match="keeps 1 to 9"):
        razor_compress(torch.zeros(1, 1, 10, 2), torch.zeros(1, 1, 10, 2), torch.zeros(1, dtype=torch.bool), 10)
    model.set_attn_implementation("eager")
    try:
        with pytest.raises(ValueError, match="attn_implementation='sdpa'"):
            continuation_nll(model, ids(40), ids(2), RazorAttentionPress(0.5, heads=heads_of(model, False)))
    finally:
        model.set_attn_implementation("sdpa")
