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


@pytest.mark.parametrize("kwargs,match", [
    (dict(top_k=0), "top_k must be"), (dict(top_k=4, n_sink=-1), "n_sink must be"),
    (dict(top_k=4, n_local=2.5), "n_local must be"), (dict(top_k=4, threshold=1.5), "threshold must be"),
])
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        with token_select(micro()[0], **kwargs):
            pass


def test_a_model_without_hookable_attention_is_refused():
    with pytest.raises(ValueError, match="can't hook"):
        with token_select(torch.nn.Linear(2, 2), top_k=4):
            pass
