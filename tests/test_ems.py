"""EMS (tokenworks.kvcache.ems): the Global-Local score against eager attention weights, one scatter-add
against a per-head loop, masked padding, the full-cache invariant and bad input; on tw-micro."""
import pytest
import torch
from transformers import DynamicCache

from tokenworks.kvcache.ems import EMSPress, evict_then_merge, global_local_scores, keep_mask
from tokenworks.kvcache import continuation_nll, greedy_after, kv_bytes, press_on

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
    press = dict(compression_ratio=0.6, window_size=4, theta=theta, adaptive=True, alpha=0.0)
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
    with torch.no_grad(), press_on(model, EMSPress(compression_ratio=0.75, window_size=4, alpha=0.0)):
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
                                       (dict(window_size=0), "window_size"), (dict(alpha=1.5), "alpha"),
                                       (dict(parts="both"), "parts")])
def test_bad_settings_are_refused_at_once(bad, match):
    with pytest.raises(ValueError, match=match):
        EMSPress(**bad)


def test_eager_attention_is_refused_for_ragged_heads():
    model, _ = micro()
    model.set_attn_implementation("eager")
    try:
        with pytest.raises(ValueError, match="eager"):
            continuation_nll(model, ids(40), ids(4), press=EMSPress(compression_ratio=0.5, window_size=4, alpha=0.0))
        # the same budget for every head needs no masks, so eager attention can run it
        continuation_nll(model, ids(40), ids(4), press=EMSPress(compression_ratio=0.5, window_size=4, adaptive=False))
    finally:
        model.set_attn_implementation("sdpa")


@pytest.mark.parametrize("T,ratio", [(1, 0.5), (2, 0.6), (5, 0.9), (16, 0.5), (17, 0.5), (21, 0.4), (40, 0.9),
                                     (40, 0.5)])
def test_short_contexts_and_budgets_inside_the_window_never_empty_the_cache(T, ratio):
    """kvpress's contract (compute_n_kept; its test_compress_never_empties_cache_on_short_context):
    with the default 16-token window, a prefill of at most 16 tokens or a budget of at most 16
    keeps exactly max(1, int(T (1 - ratio))) entries per head: the window shrinks to the
    budget, so they are the last ones, equal to the full cache's."""
    from kvpress.utils import compute_n_kept
    model, _ = micro()
    context, n_kept = ids(T, seed=T), compute_n_kept(T, ratio)
    full, default, evicting = DynamicCache(), EMSPress(ratio), EMSPress(ratio, theta=2.0)  # theta > 1: no merging
    with torch.no_grad():
        model(torch.tensor([context]), past_key_values=full)
        for press in (default, evicting):
            cache = DynamicCache()
            with press_on(model, press):
                model(torch.tensor([context]), past_key_values=cache)
            kept = [counts["kept"] for counts in press.stats.values()]  # [layer][KV head]
            assert len(kept) == (0 if n_kept == T else model.config.num_hidden_layers)  # n_kept == T: nothing to evict
            assert all(sum(heads) == n_kept * len(heads) for heads in kept)
            assert n_kept > 16 or all(heads == [n_kept] * len(heads) for heads in kept)
    if n_kept <= 16:  # the shrunk window is all a head keeps: the last n_kept entries of the full cache
        for f, s in zip(full.layers, cache.layers):  # (to float32, in which EMS takes its weighted means)
            assert torch.allclose(s.keys, f.keys[:, :, T - n_kept:], rtol=1e-6, atol=1e-7)
            assert torch.allclose(s.values, f.values[:, :, T - n_kept:], rtol=1e-6, atol=1e-7)


def test_ems_works_the_kvpress_way_and_under_generate():
    """``with EMSPress(r)(model):`` (the module's usage; transformers 5.23 passes no
    cache_position) runs, and model.generate inside the context decodes as greedy_after does
    on the same compressed prefill."""
    model, _ = micro()
    context, question = ids(60, seed=11), ids(5, seed=12)
    press = EMSPress(0.6, window_size=4, alpha=0.0)
    cache = DynamicCache()
    with torch.no_grad(), press(model):
        model(torch.tensor([context]), past_key_values=cache)
    kept = [sum(layer["kept"]) for layer in press.stats.values()]
    assert kept == [model.config.num_key_value_heads * 24] * model.config.num_hidden_layers
    assert len({layer.keys.shape[2] for layer in cache.layers}) == 1  # padded for multi-token questions
    with torch.no_grad(), press(model):
        out = model.generate(torch.tensor([context + question]), max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert out[0, 65:].tolist() == greedy_after(model, context, question, press, max_new_tokens=5, query_aware=True)


def test_kvpress_pipeline_answers_a_multi_token_question_after_ragged_layers():
    """kvpress's pipeline prefills under ``with press(model):`` and then feeds the whole
    question at once: the layers EMS leaves at different lengths must be padded (masked) by
    then, and the answer is greedy_after's on the same ids."""
    import copy

    from kvpress.pipeline import KVPressTextGenerationPipeline
    model, tok = micro()
    tok = copy.deepcopy(tok)
    tok.bos_token = tok.eos_token  # the pipeline prefixes the context with it (tw-micro has none)
    pipe = KVPressTextGenerationPipeline(model=model, tokenizer=tok, device="cpu")
    context = "def add(a, b):\n    return a + b\n\n" * 6
    question = "def sub(a, b):"
    press = EMSPress(0.7, window_size=4, alpha=0.0)
    answer = pipe(context, question=question, press=press, max_new_tokens=6)["answer"]
    inputs = pipe.preprocess(context, [question], "", 10 ** 6)
    context_ids, question_ids = inputs["context_ids"][0].tolist(), inputs["questions_ids"][0][0].tolist()
    assert len(question_ids) > 1 and len({max(layer["kept"]) for layer in press.stats.values()}) > 1
    ref = greedy_after(model, context_ids, question_ids, EMSPress(0.7, window_size=4, alpha=0.0), max_new_tokens=6)
    ref = ref[:ref.index(tok.eos_token_id) + 1] if tok.eos_token_id in ref else ref
    assert answer == tok.decode(ref, skip_special_tokens=True)


def test_ems_is_reachable_from_the_harness():
    from tokenworks import kvcache
    assert kvcache.EMSPress is EMSPress


def test_a_ragged_ems_cache_scores_as_token_by_token_decoding():
    """Multi-token continuations go through the harness's layer padding on top of EMS's
    head padding; decoding one token at a time needs neither (only EMS's head masks)."""
    model, _ = micro()
    context, target = ids(90), ids(10, seed=6)
    press = dict(compression_ratio=0.7, window_size=4, alpha=0.0)
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
    ours, held = continuation_nll(model, context, target, press=EMSPress(0.6, window_size=4, theta=2.0, adaptive=False))
    ref, held_ref = continuation_nll(model, context, target, press=GlobalLocal(0.6))
    assert held == held_ref and torch.allclose(ours, ref, atol=1e-9)


def test_named_ems_keeps_the_budget_per_head_on_average():
    from tokenworks.kvcache import method_press
    model, _ = micro()
    press = method_press({"evict": "ems", "budget": 20, "window_size": 4}, 80)
    continuation_nll(model, ids(80), ids(4, seed=8), press=press)
    for layer in press.stats.values():
        assert sum(layer["kept"]) == model.config.num_key_value_heads * 20


@pytest.mark.parametrize("bad,error,match", [
    (dict(kernel_size=-3), ValueError, "kernel_size must be an integer >= 0"),
    (dict(kernel_size=4), ValueError, "kernel_size must be odd"),
    (dict(window_size=2.5), TypeError, "window_size must be an integer"),
    (dict(adaptive="no"), TypeError, "adaptive must be True or False"),
    (dict(theta=True), ValueError, "theta"), (dict(alpha=float("nan")), ValueError, "alpha"),
    (dict(compression_ratio=True), ValueError, "compression_ratio")])
def test_mistyped_settings_are_refused_not_reinterpreted(bad, error, match):
    """A negative kernel silently turned pooling off, an even one pooled off-centre, a string
    ``adaptive`` ran as True and ``theta=True`` as 1 (review of issue 16)."""
    with pytest.raises(error, match=match):
        EMSPress(**{"compression_ratio": 0.5, **bad})
