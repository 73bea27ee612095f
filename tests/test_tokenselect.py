"""TokenSelect on a Hugging Face model: what each query attends to, and the invariants around it."""
import functools
from types import SimpleNamespace

import pytest
import torch
from transformers import DynamicCache

from tokenworks.kvcache import continuation_nll, token_select
from tokenworks.models import load
from tokenworks.kvcache.tokenselect import TokenSelectState, _attention


@functools.lru_cache(maxsize=None)
def micro():
    return load("tw-micro")


def ids(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(5, len(micro()[1]), (n,), generator=g).tolist()


def plain_nll(model, context, target):
    logp = torch.log_softmax(model(torch.tensor([context + target])).logits[0].double(), -1)
    return -logp[len(context) - 1:-1].gather(1, torch.tensor(target)[:, None])[:, 0]


def test_a_budget_covering_the_cache_is_the_plain_model():
    model, _ = micro()
    context, target = ids(60), ids(10, seed=1)
    with token_select(model, top_k=100) as state:
        nll, _ = continuation_nll(model, context, target)
    assert torch.equal(nll, continuation_nll(model, context, target)[0])  # bit for bit
    torch.testing.assert_close(nll, plain_nll(model, context, target).detach(), atol=1e-6, rtol=0)
    assert state.attended == state.visible > 0 and state.selected == 0


def test_a_small_budget_changes_the_output_and_reads_less():
    model, _ = micro()
    context, target = ids(120), ids(10, seed=1)
    with token_select(model, top_k=8, n_sink=2, n_local=8) as state:
        nll, _ = continuation_nll(model, context, target)
    assert not torch.allclose(nll, plain_nll(model, context, target), atol=1e-3)
    rows = len(target) - 1  # the first target token is scored from the prefill's logits
    layers = model.config.num_hidden_layers
    assert state.selected == rows * layers and state.attended == rows * layers * 18
    assert state.attended < state.visible / 5


def test_a_chunk_after_the_prefill_equals_feeding_it_one_token_at_a_time():
    model, _ = micro()
    context, chunk = ids(90), ids(12, seed=2)
    outs = []
    for step in (len(chunk), 1):
        with token_select(model, top_k=10, n_sink=3, n_local=6):
            cache = DynamicCache()
            model(torch.tensor([context]), past_key_values=cache)
            logits = []
            for i in range(0, len(chunk), step):
                pos = torch.arange(len(context) + i, len(context) + i + step)[None]
                logits.append(model(torch.tensor([chunk[i:i + step]]), past_key_values=cache,
                                    position_ids=pos).logits[0])
            outs.append(torch.cat(logits))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)


def fake_layer(state):
    return SimpleNamespace(layer_idx=0, _token_select=state, num_key_value_groups=4, is_causal=True)


def test_each_row_attends_to_init_top_k_and_local_tokens_only():
    """The attention output of one decode row equals SDPA over exactly the tokens that soft
    voting picks: the first n_sink, the top_k middle tokens, the last n_local."""
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 8, 1, 16), torch.randn(1, 2, 50, 16), torch.randn(1, 2, 50, 16)
    state = TokenSelectState(top_k=5, n_sink=2, n_local=4, threshold=None)
    out, _ = _attention(fake_layer(state), q, k, v, None, scaling=0.25)
    scores = torch.einsum("bkgd,bktd->bkgt", q[:, :, 0].view(1, 2, 4, 16), k[:, :, 2:46]).reshape(1, 8, 44)
    top = torch.softmax(scores, -1).sum(1).topk(5).indices[0] + 2
    keep = torch.cat([torch.arange(2), top.sort().values, torch.arange(46, 50)])
    ref = torch.nn.functional.scaled_dot_product_attention(
        q, k[:, :, keep].repeat_interleave(4, 1), v[:, :, keep].repeat_interleave(4, 1), scale=0.25)
    torch.testing.assert_close(out, ref.transpose(1, 2), atol=1e-6, rtol=1e-6)


def test_a_key_aligned_with_every_head_is_selected():
    torch.manual_seed(1)
    q = torch.randn(1, 8, 1, 16)
    k = torch.randn(1, 2, 80, 16) * 0.1
    k[:, 0, 37], k[:, 1, 37] = q[0, :4, 0].sum(0) * 3, q[0, 4:, 0].sum(0) * 3
    state = TokenSelectState(top_k=1, n_sink=1, n_local=1, threshold=None)
    assert state.indices(0, q[:, :, 0], k).tolist() == [[0, 37, 79]]


def test_the_selection_cache_reuses_the_top_k_while_queries_stay_similar():
    torch.manual_seed(2)
    q, k = torch.randn(1, 8, 16), torch.randn(1, 2, 60, 16)
    never = TokenSelectState(top_k=4, n_sink=1, n_local=2, threshold=None)
    cached = TokenSelectState(top_k=4, n_sink=1, n_local=2, threshold=0.9)
    for state in (never, cached):
        first = state.indices(0, q, k)
        again = state.indices(0, q + 0.01 * torch.randn_like(q), torch.cat([k, torch.randn(1, 2, 1, 16)], 2))
        other = state.indices(0, torch.randn(1, 8, 16), k)
        assert first[0, -2:].tolist() == [58, 59] and again[0, -2:].tolist() == [59, 60]
    assert (never.selected, never.reused) == (3, 0)
    assert (cached.selected, cached.reused) == (2, 1)
    assert torch.equal(first[0, 1:5], again[0, 1:5])  # the cached state reused its top-k


def test_the_model_is_restored_afterwards():
    model, _ = micro()
    before = model.config._attn_implementation
    with token_select(model, top_k=4):
        assert model.config._attn_implementation == "tokenselect"
    assert model.config._attn_implementation == before
    assert not any(hasattr(layer.self_attn, "_token_select") for layer in model.model.layers)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(top_k=0), ValueError, "top_k must be an integer >= 1"), (dict(top_k=True), TypeError, "top_k must be an integer"),
    (dict(top_k=4.0), TypeError, "top_k must be an integer"), (dict(top_k=4, n_sink=-1), ValueError, "n_sink must be an integer >= 0"),
    (dict(top_k=4, n_sink=True), TypeError, "n_sink must be an integer"),
    (dict(top_k=4, n_local=2.5), TypeError, "n_local must be an integer"),
    (dict(top_k=4, n_local=False), TypeError, "n_local must be an integer"),
    (dict(top_k=4, n_local=-3), ValueError, "n_local must be an integer >= 0"),
    (dict(top_k=4, threshold=1.5), ValueError, "threshold must be in"),
    (dict(top_k=4, threshold=0), ValueError, "threshold must be in"),
    (dict(top_k=4, threshold=float("nan")), ValueError, "threshold must be in"),
    (dict(top_k=4, threshold=True), TypeError, "threshold must be a number"),
    (dict(top_k=4, threshold="0.9"), TypeError, "threshold must be a number"),
])
def test_bad_settings_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        with token_select(micro()[0], **kwargs):
            pass


def test_a_model_without_hookable_attention_is_refused():
    with pytest.raises(ValueError, match="can't hook"):
        with token_select(torch.nn.Linear(2, 2), top_k=4):
            pass


@pytest.mark.parametrize("second_len", [60, 120])
def test_a_new_prompt_in_the_same_block_selects_as_in_a_fresh_block(second_len):
    """The selection cache belongs to one sequence: a prompt after another inside one block
    (shorter: the old top-k would index past its cache; as long: it would silently reuse the
    old top-k) gives what it gives in a block of its own. The second prompt starts its
    continuation with the first one's last tokens and the threshold is low, so that its first
    queries are close to the first prompt's last ones."""
    model, _ = micro()
    first, target = ids(120), ids(6, seed=4)
    second, second_target = ids(second_len, seed=5), target[-2:] + target
    settings = dict(top_k=8, n_sink=2, n_local=8, threshold=0.5)
    with token_select(model, **settings) as shared:
        continuation_nll(model, first, target)
        before = (shared.selected, shared.reused, shared.attended, shared.visible)
        nll = continuation_nll(model, second, second_target)[0]
    with token_select(model, **settings) as fresh:
        alone = continuation_nll(model, second, second_target)[0]
    assert torch.equal(nll, alone)
    after = (shared.selected, shared.reused, shared.attended, shared.visible)
    assert tuple(a - b for a, b in zip(after, before)) == (fresh.selected, fresh.reused, fresh.attended, fresh.visible)


def test_a_shrunk_cache_never_reuses_indices_beyond_it():
    """A selection is reused only while the cache has not shrunk since (a cropped cache,
    another sequence without a prefill): reused indices always lie inside the middle."""
    torch.manual_seed(3)
    q, k = torch.randn(1, 8, 16), torch.randn(1, 2, 90, 16)
    state = TokenSelectState(top_k=4, n_sink=1, n_local=2, threshold=0.5)
    state.indices(0, q, k)
    short = state.indices(0, q, k[:, :, :30])  # the same query: cosine 1
    assert (state.selected, state.reused) == (2, 0)
    assert short.max() < 30 and short[0, -2:].tolist() == [28, 29]


def test_a_padded_attention_mask_is_refused_where_tokens_are_selected():
    """Selection reads the whole cache, so padding would be attended: refused, while the
    prefill (full attention, SDPA with the mask) and the causal mask of a chunk are fine."""
    model, _ = micro()
    context = ids(60)
    mask = torch.ones(1, 61, dtype=torch.long)
    mask[0, :3] = 0  # three pad tokens on the left
    with token_select(model, top_k=8, n_sink=2, n_local=8):
        cache = DynamicCache()
        model(torch.tensor([context]), attention_mask=mask[:, :60], past_key_values=cache)
        with pytest.raises(ValueError, match="padding"):
            model(torch.tensor([[7]]), attention_mask=mask, past_key_values=cache)


def tiny(kind, **options):
    """A randomly initialised two-layer ``kind`` (Mistral, Gemma2, Gemma3) model (no download)."""
    import transformers
    config = getattr(transformers, f"{kind}TextConfig" if kind == "Gemma3" else f"{kind}Config")(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, **options)
    torch.manual_seed(0)
    return getattr(transformers, f"{kind}ForCausalLM")(config).eval()


@pytest.mark.parametrize("kind,options,match", [
    ("Mistral", dict(sliding_window=16), "sliding-window"),
    ("Gemma3", dict(sliding_window=16), "sliding-window"),  # five sliding layers in six
    ("Gemma2", dict(layer_types=["full_attention"] * 2, attn_logit_softcapping=50.0), "softcapping"),
])
def test_attention_it_cannot_honour_is_refused_at_entry(kind, options, match):
    with pytest.raises(ValueError, match=match):
        with token_select(tiny(kind, **options), top_k=4):
            pass


def test_a_model_without_sliding_windows_runs_on_another_architecture():
    """Mistral without a window: a budget covering the cache is the plain model, a small one selects."""
    model = tiny("Mistral", sliding_window=None)
    g = torch.Generator().manual_seed(0)
    context, target = torch.randint(0, 64, (50,), generator=g).tolist(), torch.randint(0, 64, (6,), generator=g).tolist()
    with torch.no_grad():
        plain = continuation_nll(model, context, target)[0]
        with token_select(model, top_k=100):
            covered = continuation_nll(model, context, target)[0]
        with token_select(model, top_k=4, n_sink=2, n_local=4) as state:
            selected = continuation_nll(model, context, target)[0]
    assert torch.equal(covered, plain) and torch.isfinite(selected).all()
    assert state.selected == 5 * 2 and not torch.equal(selected, plain)


@pytest.mark.parametrize("option", [dict(sliding_window=8), dict(softcap=50.0)])
def test_a_sliding_window_or_softcap_passed_at_call_time_is_refused(option):
    """What the attention module passes is the ground truth, whatever its config calls it."""
    q, k = torch.randn(1, 8, 1, 16), torch.randn(1, 2, 50, 16)
    state = TokenSelectState(top_k=5, n_sink=2, n_local=4, threshold=None)
    with pytest.raises(ValueError, match="sliding_window|softcap"):
        _attention(fake_layer(state), q, k, k, None, scaling=0.25, **option)


def test_a_one_token_target_reads_nothing_and_says_so():
    """A one-token target runs no query after the prefill: the shares read are None, not a
    division by zero (review of issue 16)."""
    from tokenworks.kvcache import perplexity_rows
    model, _ = micro()
    rows = perplexity_rows(model, [(ids(40), ids(1, seed=2))], {"ts": {"select": {"top_k": 4}}})
    assert rows[0]["read"] is None and rows[0]["reused"] is None and rows[0]["tokens"] == 1
