"""EMS (tokenworks.kvcache.ems): the Global-Local score against eager attention weights, one scatter-add
against a per-head loop, masked padding, the full-cache invariant and bad input; on tw-micro."""
import pytest
import torch
from transformers import DynamicCache

from tokenworks.kvcache.ems import EMSPress, evict_then_merge, global_local_scores, keep_mask
from tokenworks.kvcache import continuation_nll, kv_bytes, press_on

from conftest import micro64 as micro
from conftest import random_ids as ids
from conftest import token_by_token_nll


@pytest.mark.parametrize("window,parts,kernel", [(1, "global-local", 0), (8, "global-local", 0), (8, "global", 0),
                                                 (8, "local", 0), (8, "global-local", 5)])
def test_global_local_score_matches_eager_attention_weights(window, parts, kernel):
    model, _ = micro()
    x = torch.tensor([ids(50)])
    seen = {}

    def grab(module, args, kwargs, output):
        keys = kwargs["past_key_values"].layers[module.layer_idx].keys
        seen[module.layer_idx] = global_local_scores(module, kwargs["hidden_states"], keys,
                                                     kwargs["position_embeddings"], window, kernel, parts, block=7)
    hooks = [layer.self_attn.register_forward_hook(grab, with_kwargs=True) for layer in model.model.layers]
    with torch.no_grad():
        model(x, past_key_values=DynamicCache())
    for h in hooks:
        h.remove()
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            attentions = model(x, output_attentions=True).attentions  # per layer [1, Hq, T, T]
    finally:
        model.set_attn_implementation("sdpa")
    T, G = 50, model.config.num_attention_heads // model.config.num_key_value_heads
    for layer, a in enumerate(attentions):
        glo = (a.sum(2) / torch.arange(T, 0, -1)).view(1, -1, G, T).mean(2)
        loc = a[:, :, -window:].sum(2).view(1, -1, G, T).mean(2)
        expect = {"global-local": torch.maximum(glo * loc.mean(-1, keepdim=True) / glo.mean(-1, keepdim=True), loc),
                  "global": glo, "local": loc}[parts]
        if kernel:
            expect = torch.nn.functional.avg_pool1d(expect, kernel, 1, kernel // 2, count_include_pad=False)
        assert torch.allclose(seen[layer].double(), expect, atol=1e-6)


def loop_reference(keys, values, weights, keep, theta):
    """Per head, per token, as the paper describes it."""
    B, H, T, D = keys.shape
    n_max = int(keep.sum(-1).max())
    out_k, out_v = torch.zeros(B, H, n_max, D), torch.zeros(B, H, n_max, D)
    for b in range(B):
        for h in range(H):
            centres = keep[b, h].nonzero()[:, 0].tolist()
            members = {c: [c] for c in centres}
            for t in range(T):
                if keep[b, h, t] or theta > 1:
                    continue
                sims = [max(float(torch.cosine_similarity(keys[b, h, t], keys[b, h, c], 0)), 0)
                        * max(float(torch.cosine_similarity(values[b, h, t], values[b, h, c], 0)), 0) for c in centres]
                best = max(range(len(centres)), key=lambda i: (sims[i], -i))
                if sims[best] >= theta:
                    members[centres[best]].append(t)
            for i, c in enumerate(centres):
                w = weights[b, h, members[c]]
                out_k[b, h, i] = (w[:, None] * keys[b, h, members[c]]).sum(0) / w.sum()
                out_v[b, h, i] = (w[:, None] * values[b, h, members[c]]).sum(0) / w.sum()
    return out_k, out_v


@pytest.mark.parametrize("seed,shape,theta", [(0, (1, 2, 12, 4), 0.0), (1, (2, 3, 17, 5), 0.2),
                                              (2, (1, 4, 30, 3), 0.5), (3, (1, 2, 9, 6), 2.0)])
def test_one_scatter_add_equals_the_per_head_loop(seed, shape, theta):
    g = torch.Generator().manual_seed(seed)
    keys, values = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    keys[..., 1, :], values[..., 1, :] = keys[..., 0, :], values[..., 0, :]  # a duplicate token
    weights = torch.rand(shape[:3], generator=g)
    keep = torch.rand(shape[:3], generator=g) < 0.4
    keep[..., -1] = True  # each head keeps something; counts differ per head
    k, v, valid, assign = evict_then_merge(keys, values, weights, keep, theta)
    ref_k, ref_v = loop_reference(keys, values, weights, keep, theta)
    assert torch.equal(valid, torch.arange(k.shape[2]) < keep.sum(-1)[..., None])
    assert torch.allclose(k, ref_k, atol=1e-5) and torch.allclose(v, ref_v, atol=1e-5)
    assert torch.all(k[~valid] == 0) and torch.all(assign[keep] > 0)


def test_pure_eviction_keeps_the_top_scores_per_head_and_the_window():
    scores = torch.tensor([[[5., 1, 4, 0, 3, 2, 0, 0], [0, 9, 8, 7, 0, 0, 0, 0]]])
    uniform = keep_mask(scores, 4, window=2, adaptive=False)
    assert uniform[0, 0].nonzero()[:, 0].tolist() == [0, 2, 6, 7]
    assert uniform[0, 1].nonzero()[:, 0].tolist() == [1, 2, 6, 7]
    # head-wise: 8 entries over both heads, head 1's three large scores win over head 0's 3 and 2
    adaptive = keep_mask(scores, 4, window=2, adaptive=True, alpha=0.0)
    assert adaptive[0, 0].nonzero()[:, 0].tolist() == [0, 6, 7]
    assert adaptive[0, 1].nonzero()[:, 0].tolist() == [1, 2, 3, 6, 7]


def test_a_press_that_removes_nothing_is_the_full_cache():
    model, _ = micro()
    context, target = ids(40), ids(10, seed=1)
    full, held = continuation_nll(model, context, target)
    same, held0 = continuation_nll(model, context, target, press=EMSPress(compression_ratio=0.0))
    assert torch.equal(full, same) and held == held0


class PaddedEMS(EMSPress):
    """EMS with ``extra`` more padded (masked) slots per head: must change nothing."""
    extra = 3

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        keys, values = super().compress(module, hidden_states, keys, values, attentions, kwargs)
        B, H, n, D = keys.shape
        pad = keys.new_zeros(B, H, self.extra, D)
        old = module.masked_key_indices or (torch.zeros(0, dtype=torch.long),) * 3
        b, h, s = torch.meshgrid(torch.arange(B), torch.arange(H), torch.arange(n, n + self.extra), indexing="ij")
        module.masked_key_indices = tuple(torch.cat([o, x.flatten()]) for o, x in zip(old, (b, h, s)))
        return torch.cat([keys, pad], 2), torch.cat([values, pad], 2)


@pytest.mark.parametrize("theta", [0.3, 2.0])
def test_padding_of_ragged_heads_is_masked(theta):
    model, _ = micro()
    context, target = ids(64), ids(12, seed=2)
    press = dict(compression_ratio=0.6, window=4, theta=theta, adaptive=True, alpha=0.0)
    nll, held = continuation_nll(model, context, target, press=EMSPress(**press))
    padded, held_padded = continuation_nll(model, context, target, press=PaddedEMS(**press))
    assert held_padded > held and torch.allclose(nll, padded, atol=1e-9)
    # the mask matters: zero keys left unmasked get attention and move the likelihood
    PaddedEMS.extra, unmasked = 3, PaddedEMS(**press)
    unmasked_compress = unmasked.compress

    def no_mask(module, *a):
        out = unmasked_compress(module, *a)
        module.masked_key_indices = None
        return out
    unmasked.compress = no_mask
    moved, _ = continuation_nll(model, context, target, press=unmasked)
    assert not torch.allclose(nll, moved, atol=1e-6)


def test_heads_keep_different_counts_and_the_cache_holds_the_largest():
    model, _ = micro()
    cache = DynamicCache()
    with torch.no_grad(), press_on(model, EMSPress(compression_ratio=0.75, window=4, alpha=0.0)):
        model(torch.tensor([ids(80)]), past_key_values=cache)
    counts = []
    for layer, attn in zip(cache.layers, model.model.layers):
        n_max = layer.keys.shape[2]
        masked = attn.self_attn.masked_key_indices
        per_head = [n_max - int((masked[1] == h).sum()) if masked else n_max for h in range(layer.keys.shape[1])]
        assert sum(per_head) == layer.keys.shape[1] * 20  # H_kv * int(80 * 0.25) entries in all
        counts += per_head
        for h, n in enumerate(per_head):  # the masked slots are exactly each head's zero tail
            slots = masked[2][masked[1] == h] if masked else torch.tensor([], dtype=torch.long)
            assert sorted(slots.tolist()) == list(range(n, n_max))
            assert torch.all(layer.keys[0, h, n:] == 0) and torch.all(layer.keys[0, h, :n].abs().sum(-1) > 0)
    assert len(set(counts)) > 1
    assert kv_bytes(cache) >= 2 * model.config.num_hidden_layers * 2 * 20 * model.config.head_dim * 8


@pytest.mark.parametrize("bad,match", [(dict(compression_ratio=1.0), "compression_ratio"),
                                       (dict(compression_ratio=-0.1), "compression_ratio"),
                                       (dict(window=0), "window"), (dict(alpha=1.5), "alpha"),
                                       (dict(parts="both"), "parts")])
def test_bad_settings_are_refused_at_once(bad, match):
    with pytest.raises(ValueError, match=match):
        EMSPress(**bad)


def test_a_budget_inside_the_window_and_eager_attention_are_refused():
    model, _ = micro()
    with pytest.raises(ValueError, match="must exceed the 16-token"):
        continuation_nll(model, ids(40), ids(4), press=EMSPress(compression_ratio=0.9, window=16))
    model.set_attn_implementation("eager")
    try:
        with pytest.raises(ValueError, match="eager"):
            continuation_nll(model, ids(40), ids(4), press=EMSPress(compression_ratio=0.5, window=4, alpha=0.0))
        # the same budget for every head needs no masks, so eager attention can run it
        continuation_nll(model, ids(40), ids(4), press=EMSPress(compression_ratio=0.5, window=4, adaptive=False))
    finally:
        model.set_attn_implementation("sdpa")


def test_ems_is_reachable_from_the_harness():
    from tokenworks import kvcache
    assert kvcache.EMSPress is EMSPress


def test_a_ragged_ems_cache_scores_as_token_by_token_decoding():
    """Multi-token continuations go through the harness's layer padding on top of EMS's
    head padding; decoding one token at a time needs neither (only EMS's head masks)."""
    model, _ = micro()
    context, target = ids(90), ids(10, seed=6)
    press = dict(compression_ratio=0.7, window=4, alpha=0.0)
    nll, _ = continuation_nll(model, context, target, press=EMSPress(**press))
    ref, lengths = token_by_token_nll(model, context, target, EMSPress(**press))
    assert len(set(lengths)) > 1  # the harness has padding to add
    assert torch.allclose(nll, ref, atol=1e-9)


def test_uniform_eviction_equals_a_scorer_press_on_the_same_score():
    """EMS without head budgets and merging is top-k of its score: kvpress's ScorerPress on
    global_local_scores (window forced in) must leave the same cache, up to order."""
    from kvpress.presses.scorer_press import ScorerPress

    class GlobalLocal(ScorerPress):
        def score(self, module, hidden_states, keys, values, attentions, kwargs):
            s = global_local_scores(module, hidden_states, keys, kwargs["position_embeddings"], 4, 5)
            s[..., -4:] = float("inf")
            return s
    model, _ = micro()
    context, target = ids(70), ids(8, seed=7)
    ours, held = continuation_nll(model, context, target, press=EMSPress(0.6, window=4, theta=2.0, adaptive=False))
    ref, held_ref = continuation_nll(model, context, target, press=GlobalLocal(0.6))
    assert held == held_ref and torch.allclose(ours, ref, atol=1e-9)


def test_named_ems_keeps_the_budget_per_head_on_average():
    from tokenworks.kvcache import method_press
    model, _ = micro()
    press = method_press({"evict": "ems", "budget": 20, "window": 4}, 80)
    continuation_nll(model, ids(80), ids(4, seed=8), press=press)
    for layer in press.stats.values():
        assert sum(layer["kept"]) == model.config.num_key_value_heads * 20
