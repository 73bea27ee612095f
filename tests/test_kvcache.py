"""The KV-cache harness (tokenworks.kvcache) with kvpress on transformers 5.23, on tw-micro."""
import pytest
import torch
from kvpress import KnormPress, SnapKVPress, StreamingLLMPress
from transformers import DynamicCache

from tokenworks.models.corpus import stdlib_corpus
from tokenworks.kvcache import (PRESSES, EMSPress, attention_layers, capture_prefill, continuation_nll, greedy_after,
                                kv_bytes, method_press, needle_items, needle_rows, perplexity_rows, press_on, replayable,
                                selecting)
from tokenworks.kvcache.harness import _prefill

from conftest import micro64 as micro
from conftest import random_ids as ids
from conftest import token_by_token_nll


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


def test_greedy_after_a_full_cache_is_plain_greedy():
    model, _ = micro()
    context, question = ids(30, seed=7), ids(4, seed=8)
    ours = greedy_after(model, context, question, press=None, max_new_tokens=6)
    x = torch.tensor([context + question])
    plain = model.generate(x, max_new_tokens=6, do_sample=False, pad_token_id=0)[0, x.shape[1]:].tolist()
    assert ours == plain


def test_needle_items_put_the_needle_at_its_depth():
    _, tok = micro()
    texts = stdlib_corpus().texts("test")
    items = needle_items(texts, tok, 300, [0.0, 0.5, 1.0], n=2, seed=1)
    assert items == needle_items(texts, tok, 300, [0.0, 0.5, 1.0], n=2, seed=1)
    for it in items:
        text = tok.decode(it["context"][1:])
        key = tok.decode(it["question"]).split()[1]
        needle = f"{key} = '{it['answer']}"
        lines = text.splitlines()
        at = lines.index(needle)
        assert abs(at / len(lines) - it["depth"]) < 0.1
        assert 250 <= len(it["context"]) <= 300 and it["context"][0] == tok.eos_token_id
    with pytest.raises(ValueError, match="depths"):
        needle_items(texts, tok, 300, [1.5], n=1)


def test_method_specs_side_by_side():
    model, tok = micro()
    context, target = ids(80), ids(6, seed=3)
    methods = {"full": {}, "streaming": {"streaming": 20, "n_sink": 4},
               "tokenselect": {"select": {"top_k": 8, "n_sink": 4, "n_local": 8}}}
    rows = {r["method"]: r for r in perplexity_rows(model, [(context, target)], methods)}
    assert rows["full"]["nll"] == pytest.approx(continuation_nll(model, context, target)[0].mean().item())
    assert rows["streaming"]["kv_bytes"] == rows["full"]["kv_bytes"] * 20 // 80
    assert rows["tokenselect"]["kv_bytes"] == rows["full"]["kv_bytes"]  # selection evicts nothing
    assert rows["tokenselect"]["read"] < 0.5 and rows["full"]["read"] is None
    with pytest.raises(ValueError, match="not smaller than the 80-token context"):
        method_press({"streaming": 80}, 80)


def test_layers_of_different_lengths_score_as_token_by_token_decoding():
    """PyramidKV leaves shorter caches in later layers; the harness pads them (masked) so a
    multi-token continuation runs, and it must equal decoding one token at a time, which
    needs no mask and no padding."""
    from kvpress import PyramidKVPress
    model, _ = micro()
    context, target = ids(80), ids(10, seed=3)
    press = PyramidKVPress(compression_ratio=0.5, window_size=8)
    nll, held = continuation_nll(model, context, target, press=press)
    ref, lengths = token_by_token_nll(model, context, target, press)
    assert len(set(lengths)) > 1
    assert torch.allclose(nll, ref, atol=1e-9)
    per_entry = 2 * model.config.num_key_value_heads * model.config.head_dim * 8  # K and V, float64
    assert held == sum(lengths) * per_entry  # bytes the press left, not the harness's padding


@pytest.mark.parametrize("name", ["ems", "streaming", "snapkv", "pyramidkv", "adakv", "h2o", "tova", "knorm"])
def test_every_named_press_holds_exactly_its_bytes_and_h2o_gets_eager_attention(name):
    """The bytes a press leaves, exactly: 20 entries per KV head for uniform presses; EMS
    holds each layer's largest head count (its head padding); PyramidKV its layer budgets;
    AdaKV masks and keeps the whole cache."""
    model, _ = micro()
    context, target = ids(80), ids(6, seed=5)
    window = {"ems": {"window_size": 4}, "snapkv": {"window_size": 4}, "pyramidkv": {"window_size": 4},
              "adakv": {"window_size": 4}}.get(name, {})
    spec = {"evict": name, "budget": 20, **window}
    full, held_full = continuation_nll(model, context, target)
    press = method_press(spec, 80)
    with selecting(model, spec):
        nll, held = continuation_nll(model, context, target, press)
    Hkv, L = model.config.num_key_value_heads, model.config.num_hidden_layers
    per_entry = held_full // (L * Hkv * 80)  # one token of one KV head: K and V
    if name == "ems":  # each layer's cache length per KV head
        lengths = [max(layer["kept"]) for layer in press.stats.values()]
    elif name == "pyramidkv":
        lengths = [press.get_layer_budget(attn, 80) for attn in attention_layers(model)]
    else:
        lengths = [80 if name == "adakv" else 20] * L
    assert held == sum(lengths) * Hkv * per_entry
    if name == "ems":
        assert all(sum(layer["kept"]) == 20 * Hkv for layer in press.stats.values())
    if name == "pyramidkv":
        assert sum(lengths) == 20 * L
    assert not torch.equal(nll, full) and model.config._attn_implementation == "sdpa"


def test_bad_press_specs_are_refused():
    with pytest.raises(ValueError, match="unknown press 'snap'"):
        method_press({"evict": "snap", "budget": 8}, 80)
    with pytest.raises(ValueError, match="budget of at least 1"):
        method_press({"evict": "snapkv", "budget": 0}, 80)
    with pytest.raises(ValueError, match="not smaller than the 80-token context"):
        method_press({"evict": "ems", "budget": 80}, 80)


@pytest.mark.parametrize("hops", [0, 1, 3])
def test_kv_items_hold_one_answer_and_a_thread_in_code_order(hops):
    from tokenworks.kvcache import kv_items
    _, tok = micro()
    texts = stdlib_corpus().texts("test")
    for item in kv_items(texts, tok, 300, hops, n=3, n_keys=4, seed=hops):
        lines = tok.decode(item["context"][1:]).splitlines()
        key = tok.decode(item["question"]).split()[1]
        value = item["answer"][:-1]
        assert sum(line.startswith("KEY_") for line in lines) == 4 + hops
        for _ in range(hops):  # walk the thread back: each link names a key defined earlier
            at = next(i for i, line in enumerate(lines) if line.startswith(f"{key} = KEY_"))
            key = lines[at].split(" = ")[1]
            assert any(line.startswith(f"{key} = ") for line in lines[:at])
        assert f"{key} = '{value}'" in lines
        assert abs(lines.index(f"{key} = '{value}'") / len(lines) - item["depth"]) < 0.01
    with pytest.raises(ValueError, match="hops"):
        kv_items(texts, tok, 300, -1, n=1)


def test_hub_items_score_every_reference_and_fail_clearly_offline():
    from datasets import Dataset

    from tokenworks.kvcache import answered, hub_items
    model, tok = micro()
    rows = Dataset.from_dict({"context": ["a b c " * 30, "x " * 500], "question": [" q?", " r?"],
                              "answer": [["B", "c"], ["zz"]], "answer_prefix": [" A:", ""],
                              "max_new_tokens": [3, 2]})
    items = hub_items(rows, tok, n=5, max_context_tokens=200)
    assert len(items) == 1 and items[0]["max_new_tokens"] == 3  # the second context is too long
    assert items[0]["question"] == tok(" q? A:")["input_ids"]
    assert answered("then b and C", items[0]) and not answered("then b", items[0])
    out = needle_rows(model, tok, items, {"full": {}})
    assert [r["method"] for r in out] == ["full"] and isinstance(out[0]["ok"], bool)
    with pytest.raises(ValueError, match="missing \\['answer'\\]"):
        hub_items(Dataset.from_dict({"context": ["a"], "question": ["b"]}), tok, n=1)
    with pytest.raises(ValueError, match="Offline, use the generated tasks"):
        hub_items("no-such-user/no-such-dataset", tok, n=1)


def test_query_aware_decoding_without_a_press_is_plain_greedy_decoding():
    model, _ = micro()
    context, question = ids(30, seed=9), ids(5, seed=10)
    out = greedy_after(model, context, question, max_new_tokens=6, query_aware=True)
    seq = context + question
    for _ in range(6):
        seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
    assert out == seq[-6:]
    assert greedy_after(model, context, question, max_new_tokens=6) == out  # full cache: same either way


def test_a_spec_cannot_both_select_and_evict():
    from tokenworks.kvcache import selecting
    model, _ = micro()
    with pytest.raises(ValueError, match="not both"):
        with selecting(model, {"select": {"top_k": 4}, "evict": "snapkv", "budget": 8}):
            pass


def test_a_named_budget_keeps_exactly_that_many_entries():
    from kvpress.utils import compute_n_kept
    for T in (97, 1000, 2901, 4096, 9000):
        for budget in (17, 64, 128, 255, 512):
            if budget < T:
                ratio = method_press({"evict": "snapkv", "budget": budget}, T).compression_ratio
                assert compute_n_kept(T, ratio) == budget == int(T * (1 - ratio)), (T, budget)


def test_full_cache_specs_are_explicit():
    """``{}`` is the full cache; a TokenSelect spec holds no press; every other spec names one."""
    assert method_press({}, 80) is None
    assert method_press({"select": {"top_k": 4}}, 80) is None
    press = SnapKVPress(compression_ratio=0.5)
    assert method_press({"press": press}, 80) is press


@pytest.mark.parametrize("spec,error,match", [
    ({"evcit": "snapkv", "budget": 20}, ValueError, r"unknown key 'evcit'.*'evict'.*'select'"),
    ({"budget": 20}, ValueError, r"unknown key 'budget'"),
    ({"evict": "snapkv", "budget": 20, "windw_size": 4}, ValueError, r"unknown key 'windw_size' in a snapkv spec: it takes 'evict', 'budget', 'window_size'"),
    ({"evict": "snapkv"}, ValueError, "budget of at least 1"),
    ({"evict": "snapkv", "budget": True}, ValueError, "budget of at least 1"),
    ({"evict": "snap", "budget": 8}, ValueError, "unknown press 'snap'"),
    ({"streaming": 20, "n_snk": 4}, ValueError, r"unknown key 'n_snk' in a streaming spec.*'n_sink'"),
    ({"press": SnapKVPress(compression_ratio=0.5), "budget": 8}, ValueError, r"unknown key 'budget' in a press spec"),
    ({"press": "snapkv"}, TypeError, "a kvpress press"),
    ({"select": {"top_k": 4}, "budget": 8}, ValueError, r"unknown key 'budget' in a select spec"),
    ({"select": {"top_k": 4}, "evict": "snapkv", "budget": 8}, ValueError, "not both"),
    ({"streaming": 20, "evict": "snapkv", "budget": 8}, ValueError, "one of"),
    ("snapkv", TypeError, "a method spec is a dict"),
])
def test_method_press_refuses_bad_specs(spec, error, match):
    with pytest.raises(error, match=match):
        method_press(spec, 80)


@pytest.mark.parametrize("spec,error,match", [
    ({"evcit": "snapkv", "budget": 20}, ValueError, r"unknown key 'evcit'"),
    ({"select": {}}, ValueError, r"needs top_k"),
    ({"select": {"top_k": 4, "n_init": 4}}, ValueError, r"unknown TokenSelect setting 'n_init'.*'n_sink'"),
    ({"select": 4}, TypeError, r"\{\"select\": \{\"top_k\": k, \.\.\.\}\}"),
    ({"select": {"top_k": 4}, "evict": "snapkv", "budget": 8}, ValueError, "not both"),
    ({"evict": "h2o", "budget": 8, "window_size": 4}, ValueError, r"unknown key 'window_size' in a h2o spec"),
])
def test_selecting_refuses_bad_specs(spec, error, match):
    model, _ = micro()
    with pytest.raises(error, match=match):
        with selecting(model, spec):
            pass
    assert model.config._attn_implementation == "sdpa"


def test_ids_may_be_tensors():
    model, _ = micro()
    context, target = ids(40), ids(5, seed=1)
    nll, held = continuation_nll(model, context, target)
    for c, t in ((torch.tensor(context), torch.tensor(target)), (torch.tensor([context]), torch.tensor([target]))):
        same, same_held = continuation_nll(model, c, t)
        assert torch.equal(same, nll) and same_held == held
    out = greedy_after(model, context, target, max_new_tokens=4)
    assert greedy_after(model, torch.tensor(context), torch.tensor([target]), max_new_tokens=4) == out


@pytest.mark.parametrize("call,error,match", [
    (lambda m: continuation_nll(m, [], ids(2)), ValueError, "context is empty"),
    (lambda m: continuation_nll(m, ids(10), torch.tensor([1.0, 2.0])), TypeError, "target must hold integer"),
    (lambda m: continuation_nll(m, ids(10), [3, 10 ** 6]), ValueError, r"target holds ids outside the model's vocabulary"),
    (lambda m: continuation_nll(m, torch.tensor([ids(10), ids(10)]), ids(2)), ValueError, "context: one sequence"),
])
def test_continuation_nll_refuses_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call(micro()[0])


@pytest.mark.parametrize("call,error,match", [
    (lambda m: greedy_after(m, ids(10), []), ValueError, "question is empty"),
    (lambda m: greedy_after(m, torch.tensor([-1, 4]), ids(2)), ValueError, r"context holds ids outside"),
    (lambda m: greedy_after(m, ids(10), torch.tensor([True])), TypeError, "question must hold integer"),
    (lambda m: greedy_after(m, ids(10), ids(2), max_new_tokens=0), ValueError, "max_new_tokens must be"),
    (lambda m: greedy_after(m, ids(10), ids(2), max_new_tokens=True), TypeError, "max_new_tokens must be"),
])
def test_greedy_after_refuses_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call(micro()[0])


def duo_attention(head_compression_ratio):
    """kvpress's DuoAttention with a random head pattern (kvpress's tests do the same)."""
    from kvpress import DuoAttentionPress

    class Duo(DuoAttentionPress):
        @staticmethod
        def load_attention_pattern(model):
            g = torch.Generator().manual_seed(0)
            shape = (model.config.num_hidden_layers, model.config.num_key_value_heads)
            return 2, 2, torch.rand(shape, generator=g).numpy()
    return Duo(head_compression_ratio=head_compression_ratio)


@pytest.mark.parametrize("make", ["composed", "duo", "simlayerkv", "dms"])
def test_presses_whose_ratio_a_forward_computes_run_through_method_press(make):
    """ComposedPress's ratio is None, DuoAttention's, SimLayerKV's and DMS's raise until a
    forward: press_on must not read them up front."""
    from kvpress import ComposedPress, DMSPress, SimLayerKVPress
    press = {"composed": lambda: ComposedPress([KnormPress(0.5)]), "duo": lambda: duo_attention(0.5),
             "simlayerkv": lambda: SimLayerKVPress(lazy_threshold=0.2, n_initial=1, n_recent=1, n_last=1),
             "dms": lambda: DMSPress(press=KnormPress(), threshold=0.0, sliding_window_size=4)}[make]()
    model, _ = micro()
    context, target = ids(80), ids(6, seed=5)
    full, held_full = continuation_nll(model, context, target)
    nll, held = continuation_nll(model, context, target, method_press({"press": press}, 80))
    assert torch.isfinite(nll).all() and 0 <= press.compression_ratio < 1
    if make == "composed":
        assert held == held_full // 2 and press.compression_ratio == pytest.approx(0.5)


def test_a_press_after_adaptive_ems_in_composed_press_is_refused_clearly():
    """Knorm would keep EMS's zero padding as real keys and EMS's head masks would point past
    the shorter cache (IndexError at decode): refused at once by press_on, and at the first
    decode step when run outside the harness (cache_positions)."""
    from kvpress import ComposedPress

    from tokenworks.kvcache import cache_positions
    model, _ = micro()
    composed = ComposedPress([EMSPress(0.5, window_size=4, alpha=0.0), KnormPress(0.5)])
    with pytest.raises(ValueError, match="put EMSPress last"):
        continuation_nll(model, ids(80), ids(4), composed)
    cache = DynamicCache()
    with torch.no_grad(), cache_positions(model):
        with composed(model):
            model(torch.tensor([ids(80)]), past_key_values=cache)
        with pytest.raises(ValueError, match="point past"):
            model(torch.tensor([[7]]), past_key_values=cache, position_ids=torch.tensor([[80]]))
    # EMS last is sound: the masks index EMS's own output
    nll, _ = continuation_nll(model, ids(80), ids(4), ComposedPress([KnormPress(0.5), EMSPress(0.5, window_size=4)]))
    assert torch.isfinite(nll).all()


def test_kvpress_presses_run_the_kvpress_way_with_cache_positions():
    """kvpress's own presses need the cache_position keyword: cache_positions supplies it
    around ``with press(model):`` and leaves no hook behind."""
    from tokenworks.kvcache import cache_positions
    model, _ = micro()
    context, press = ids(60), SnapKVPress(compression_ratio=0.5, window_size=4)
    hooks = [(len(a._forward_pre_hooks), len(a._forward_hooks)) for a in attention_layers(model)]
    with torch.no_grad(), pytest.raises(KeyError, match="cache_position"), press(model):
        model(torch.tensor([context]), past_key_values=DynamicCache())
    kvpress_way, harness = DynamicCache(), DynamicCache()
    with torch.no_grad(), cache_positions(model), press(model):
        model(torch.tensor([context]), past_key_values=kvpress_way)
    with torch.no_grad(), press_on(model, press):
        model(torch.tensor([context]), past_key_values=harness)
    config = model.config  # 30 entries per KV head of every layer, K and V, float64
    assert kv_bytes(kvpress_way) == kv_bytes(harness) == config.num_hidden_layers * config.num_key_value_heads * 30 * 2 * config.head_dim * 8
    assert all(torch.equal(a.keys, b.keys) for a, b in zip(kvpress_way.layers, harness.layers))
    assert [(len(a._forward_pre_hooks), len(a._forward_hooks)) for a in attention_layers(model)] == hooks


def tiny_gemma3():
    """A randomly initialised six-layer Gemma3ForCausalLM (five sliding-window layers of 16, then
    a global one, as load("gemma3-270m") interleaves them), no download."""
    import transformers
    config = transformers.Gemma3TextConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=6,
                                           num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=16)
    torch.manual_seed(0)
    return transformers.Gemma3ForCausalLM(config).eval()


@pytest.mark.parametrize("name", ["ems", "streaming", "snapkv", "knorm"])
def test_a_press_on_sliding_window_layers_is_refused(name):
    """kvpress hooks every layer of a Gemma3ForCausalLM (it skips sliding layers only for
    Gemma3ForConditionalGeneration); a sliding layer's mask indexes its cache by position, which a
    press breaks, and EMS and Knorm ran silently on it. Every way of running a press says so."""
    model = tiny_gemma3()
    g = torch.Generator().manual_seed(0)
    context, target = torch.randint(0, 64, (60,), generator=g).tolist(), torch.randint(0, 64, (6,), generator=g).tolist()
    press = method_press({"evict": name, "budget": 40}, 60)
    with pytest.raises(ValueError, match="sliding-window"):
        continuation_nll(model, context, target, press=press)
    if name in ("ems", "streaming"):  # our presses, kvpress's way
        with pytest.raises(ValueError, match="sliding-window"), press(model):
            pass
    assert torch.isfinite(continuation_nll(model, context, target)[0]).all()  # no press: the plain model runs


def test_essay_items_split_the_original_prompt_at_the_question():
    """The needle test on the essays: context + question is needle_prompt's prompt exactly,
    the needle inside the context (compressed), the question after it (not compressed, as
    kvpress's pipeline treats it); scored by found_needle."""
    from tokenworks import benchmarks
    from tokenworks.kvcache import answered, essay_items
    _, tok = micro()
    items = essay_items(tok, [300, 500], [0.0, 0.5, 1.0])
    assert [(it["context_tokens"], it["depth"]) for it in items] == [(c, d) for c in (300, 500) for d in (0.0, 0.5, 1.0)]
    for it in items:
        prompt = benchmarks.needle_prompt(tok, it["context_tokens"], it["depth"])
        assert it["context"] + it["question"] == prompt["ids"]
        assert it["needle_end"] == prompt["needle_end"] <= len(it["context"])
        assert benchmarks.QUESTION in tok.decode(it["question"]) and benchmarks.QUESTION not in tok.decode(it["context"])
        assert it["max_new_tokens"] == 24
    assert answered("Eat a sandwich in Dolores Park.", items[0]) and not answered("a sandwich", items[0])
    with pytest.raises(ValueError, match="depth"):
        essay_items(tok, [300], [1.5])
    with pytest.raises(ValueError, match="context"):
        essay_items(tok, [], [0.5])


def test_essay_needle_rows_score_the_answer_with_found_needle(monkeypatch):
    """needle_rows on essay items: the question is fed after the compressed context, and a row's
    ok is found_needle of the decoded answer (here forced to the needle's key phrases)."""
    from tokenworks.kvcache import essay_items, tasks
    model, tok = micro()
    items = essay_items(tok, [200], [0.5])
    seen = []

    def fake_greedy(model, context, question, max_new_tokens, press, query_aware, prefill):
        seen.append((len(context), len(question), max_new_tokens, query_aware, prefill.ids == items[0]["context"]))
        return tok("sandwich, dolores park", add_special_tokens=False)["input_ids"]
    monkeypatch.setattr(tasks, "greedy_after", fake_greedy)
    rows = needle_rows(model, tok, items, {"full": {}, "knorm 8": {"evict": "knorm", "budget": 8}})
    assert [r["ok"] for r in rows] == [True, True] and rows[1]["context_target"] == 200
    assert seen == [(len(items[0]["context"]), len(items[0]["question"]), 24, False, True)] * 2  # one shared prefill



@pytest.mark.parametrize("name", ["ems", "adakv"])
def test_a_long_chunk_after_ragged_heads_scores_as_token_by_token_decoding(name):
    """kvpress masks a ragged press's (EMS's, AdaKV's) evicted entries with one fake key per KV
    head that every query of the chunk must miss; for a chunk of many queries (here the essay
    test's question, fed after the compressed context) none may exist, and kvpress raised
    'Could not find fake keys'. The harness feeds such chunks one token at a time: the scores
    of token-by-token decoding."""
    from tokenworks.kvcache import essay_items
    model, tok = micro()
    item = essay_items(tok, [512], [0.5])[0]
    context, question, n = item["context"], item["question"], len(item["context"])
    press = lambda: method_press({"evict": name, "budget": 40, "window_size": 16}, n)
    nll, _ = continuation_nll(model, context, question, press=press())
    ref, _ = token_by_token_nll(model, context, question, press())
    assert torch.allclose(nll, ref, atol=1e-9)
    out = greedy_after(model, context, question, press=press(), max_new_tokens=3)
    cache, expect = DynamicCache(), []  # reference: prefill under the press, then one token at a time
    with torch.no_grad():
        with press_on(model, press()):
            model(torch.tensor([context]), past_key_values=cache)
        for i in range(len(question) + 2):
            t = question[i] if i < len(question) else expect[-1]
            logits = model(torch.tensor([[t]]), past_key_values=cache, position_ids=torch.tensor([[n + i]])).logits[0, -1]
            if i >= len(question) - 1:
                expect.append(int(logits.argmax()))
    assert out == expect


REPLAYED = [{}, {"streaming": 20, "n_sink": 4}] + [
    {"evict": n, "budget": 20, **({"window_size": 4} if n in ("ems", "snapkv", "pyramidkv", "adakv") else {}),
     **({"heads": torch.tensor([[True, False], [False, False]])} if n == "razor" else {})}  # tw-micro: 2 x 2 KV heads
    for n in PRESSES if n != "h2o"]


@pytest.mark.parametrize("spec", REPLAYED, ids=lambda s: s.get("evict") or ("streaming" if s else "full"))
def test_a_press_on_a_captured_prefill_leaves_exactly_the_cache_of_its_own_prefill(spec):
    """One full-cache prefill serves every press (capture_prefill): the kept keys, values,
    head masks, bytes and logits are those of a prefill run under the press, bit for bit."""
    model, _ = micro()
    context = ids(80)
    prefill = capture_prefill(model, context)
    results = []
    for shared in (None, prefill):
        press = method_press(spec, 80)
        cache, logits, held = _prefill(model, context, press, shared)
        masks = [(getattr(attn, "masked_key_indices", None), getattr(attn, "key_bias", None))
                 for attn in attention_layers(model)]
        results.append((cache, logits, held, masks))
    (direct, logits, held, masks), (replayed, logits_r, held_r, masks_r) = results
    assert held == held_r and torch.equal(logits, logits_r)
    for a, b in zip(direct.layers, replayed.layers):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
    for (m, bias), (m_r, bias_r) in zip(masks, masks_r):
        assert (m is None and m_r is None) or all(torch.equal(x, y) for x, y in zip(m, m_r))
        assert (bias is None and bias_r is None) or torch.equal(bias, bias_r)  # RazorAttention's ln N_d
    full = sum(k.numel() + v.numel() for *_, k, v in prefill.layers) * 8  # float64
    assert (held < full) == bool(spec) or spec.get("evict") == "adakv"  # a press really evicted (AdaKV masks)


def test_needle_and_perplexity_rows_share_one_prefill_with_the_same_answers():
    """Rows of several methods sharing a captured prefill are the rows of each method alone
    (which prefills for itself), TokenSelect's read and reuse shares included; H2O (attention
    weights) always prefills for itself."""
    model, tok = micro()
    items = needle_items(stdlib_corpus().texts("test"), tok, 120, [0.3], 1, seed=2)
    methods = {"full": {}, "snapkv": {"evict": "snapkv", "budget": 24, "window_size": 4},
               "ems": {"evict": "ems", "budget": 24, "window_size": 4}, "h2o": {"evict": "h2o", "budget": 24},
               "select": {"select": {"top_k": 8, "n_sink": 2, "n_local": 4}},
               "select+cache": {"select": {"top_k": 8, "n_sink": 2, "n_local": 4, "threshold": 0.5}}}
    together = needle_rows(model, tok, items, methods, query_aware=True)
    alone = [r for name, m in methods.items() for r in needle_rows(model, tok, items, {name: m}, query_aware=True)]
    key = lambda r: r["method"]
    assert sorted(together, key=key) == sorted(alone, key=key)
    streams = [(ids(60), ids(8, seed=3))]
    assert (sorted(perplexity_rows(model, streams, methods), key=key)
            == sorted([r for n, m in methods.items() for r in perplexity_rows(model, streams, {n: m})], key=key))


def test_a_captured_prefill_is_refused_for_other_ids_or_attention_weights():
    model, _ = micro()
    prefill = capture_prefill(model, ids(40))
    with pytest.raises(ValueError, match="other ids"):
        continuation_nll(model, ids(41), ids(4), press=None, prefill=prefill)
    with pytest.raises(ValueError, match="reads the attention weights"):
        continuation_nll(model, ids(40), ids(4), press=method_press({"evict": "h2o", "budget": 8}, 40), prefill=prefill)
    assert not replayable({"evict": "h2o", "budget": 8}) and not replayable({"press": SnapKVPress(0.5)})
    assert replayable({}) and replayable({"evict": "snapkv", "budget": 8}) and replayable({"select": {"top_k": 4}})
