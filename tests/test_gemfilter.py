"""GemFilter: the layer-r score is the last query's pre-softmax logits summed over heads (checked
against eager attention's probabilities), the selection pass stops after layer r, the kept
indices are sorted, unique and inside the prompt, keeping every token is the full model, and
bad input is refused. On tw-micro (float64) and a tiny random Gemma-3 (sliding layers)."""
import pytest
import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

from tokenworks.kvcache import attention_layers
from tokenworks.kvcache.gemfilter import full_layers, gemfilter_generate, layer_scores, select, top_tokens

from conftest import micro64 as micro
from conftest import random_ids as ids


@pytest.mark.parametrize("layer", [0, 1])
def test_score_is_the_last_querys_logits_summed_over_heads(layer):
    """log softmax(q.k / sqrt(d)) per head is the logit up to a per-head constant, so
    s_j - sqrt(d) * sum_h log a_hj must not depend on j."""
    model, _ = micro()
    prompt = ids(40, seed=3)
    s = layer_scores(model, prompt, [layer])[layer]
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            att = model(torch.tensor([prompt]), output_attentions=True).attentions[layer][0, :, -1]  # [Hq, n]
    finally:
        model.set_attn_implementation(previous)
    d = attention_layers(model)[layer].head_dim
    rest = s.double() - d ** 0.5 * att.log().sum(0)
    assert s.shape == (40,) and torch.allclose(rest, rest[0].expand_as(rest), atol=1e-5)


def test_the_selection_pass_stops_after_layer_r():
    model, _ = micro()
    ran = []
    hooks = [a.register_forward_hook(lambda m, i, o, n=n: ran.append(n)) for n, a in enumerate(attention_layers(model))]
    try:
        select(model, ids(30, seed=4), 8, layer=0)
    finally:
        for h in hooks:
            h.remove()
    assert ran == []  # layer 0's attention itself is not needed: its queries and keys are enough


@pytest.mark.parametrize("k", [1, 5, 17, 29])
def test_selected_indices_are_sorted_unique_and_inside_the_prompt(k):
    model, _ = micro()
    kept = select(model, ids(30, seed=5), k, layer=1)
    assert len(kept) == k and kept == sorted(set(kept)) and 0 <= kept[0] and kept[-1] < 30


def test_top_tokens_pool_then_keep_the_best_in_order():
    s = torch.tensor([0., 0, 10, 0, 0, 0, 0, 0, 0, 3])
    assert top_tokens(s, 1, pool=1) == [2] and top_tokens(s, 2, pool=1) == [2, 9]
    # width-5 average (zero padded): the peak's neighbours inherit 10 / 5
    assert top_tokens(s, 5, pool=5) == [0, 1, 2, 3, 4]
    assert top_tokens(s, 50) == list(range(10))


def test_keeping_every_token_is_the_full_models_greedy_output():
    model, _ = micro()
    prompt = ids(50, seed=6)
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(12):  # greedy by full forwards, no cache
            seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
    want = seq[50:]
    for k in (50, 80):
        out = gemfilter_generate(model, prompt, k, layer=1, max_new_tokens=12)
        assert out["selected"] == list(range(50)) and out["tokens"] == want
    fewer = gemfilter_generate(model, prompt, 10, layer=0, max_new_tokens=12)
    assert len(fewer["selected"]) == 10 and len(fewer["tokens"]) == 12


def tiny_gemma():
    config = Gemma3TextConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=8,
                              layer_types=["sliding_attention", "full_attention", "sliding_attention"])
    torch.manual_seed(0)
    return Gemma3ForCausalLM(config).eval()


def test_gemma_scores_at_a_full_layer_and_refuses_a_sliding_one():
    model = tiny_gemma()
    assert full_layers(model) == [1] and full_layers(micro()[0]) == [0, 1]
    kept = select(model, list(range(1, 40)), 6, layer=1)  # q_norm / k_norm and RoPE of Gemma-3
    assert len(kept) == 6 and kept == sorted(set(kept))
    with pytest.raises(ValueError, match=r"layer 0 is a sliding_attention layer.*full-attention layer: \[1\]"):
        select(model, list(range(1, 40)), 6, layer=0)


@pytest.mark.parametrize("call,match", [
    (lambda m: select(m, ids(20), 4, layer=2), r"an int in \[0, 1\]"),
    (lambda m: select(m, ids(20), 4, layer=-1), r"an int in \[0, 1\]"),
    (lambda m: select(m, ids(20), 4, layer=True), r"an int in \[0, 1\]"),
    (lambda m: select(m, ids(20), 0, layer=1), "k must be"),
    (lambda m: select(m, ids(20), 4, layer=1, pool=4), "pool must be an odd int"),
    (lambda m: layer_scores(m, ids(20), []), "at least one layer"),
    (lambda m: gemfilter_generate(m, ids(20), 4, layer=1, max_new_tokens=0), "max_new_tokens must be"),
])
def test_bad_input_is_refused(call, match):
    model, _ = micro()
    with pytest.raises(ValueError, match=match):
        call(model)
