"""The speculative harness: draft trees, tree-masked verification, cache compaction, losslessness."""
import functools
import random
import re

import pytest
import torch

from tokenworks.models.corpus import stdlib_corpus
from tokenworks.models import load
from tokenworks.speculative import METHODS, DraftTree, generate, make_drafter
from tokenworks.speculative.engine import Greedy, _compact, run
from tokenworks.speculative.evaluate import hf_generate, run_suite, summarize
from tokenworks.speculative.suite import CATEGORIES, stdlib_suite
from tokenworks.speculative.token_recycling import TEMPLATE_80
from tokenworks.speculative.tree import additive_mask, check_parents, template_from_paths


@functools.cache
def model64(name):
    model, tok = load(name, device="cpu", dtype=torch.float64)
    return model, tok


@functools.cache
def suite(n=2):
    _, tok = model64("tw-code")
    return stdlib_suite(stdlib_corpus().texts("test"), tok, n=n, max_prompt_tokens=256)


# --- trees -------------------------------------------------------------------------------

def test_template_80_has_the_papers_shape():
    parents, ranks = template_from_paths(TEMPLATE_80)
    depths = DraftTree([0] * len(parents), parents).depths()
    assert len(parents) == 81
    assert [depths.count(d) for d in range(1, 7)] == [8, 21, 25, 15, 8, 3]


def test_ancestor_mask_and_accept():
    #        0
    #      1   2
    #     3     4 - 5
    tree = DraftTree([10, 11, 12, 13, 14, 15], [-1, 0, 0, 1, 2, 4])
    mask = tree.ancestor_mask()
    assert mask[5].tolist() == [True, False, True, False, True, True]
    assert mask.sum().item() == 1 + 2 + 2 + 3 + 3 + 4
    # argmax after node i; root predicts 12, node 2 predicts 14, node 4 predicts 99
    assert tree.accept_greedy([12, 0, 14, 0, 99, 0]) == [0, 2, 4]
    assert tree.accept_greedy([7, 0, 0, 0, 0, 0]) == [0]


def test_additive_mask_sees_cache_and_ancestors_only():
    tree = DraftTree([1, 2, 3], [-1, 0, 0])
    m = additive_mask(tree.ancestor_mask(), cache_len=4, dtype=torch.float32)[0, 0]
    assert m.shape == (3, 7) and (m[:, :4] == 0).all()
    assert (m[2, 4:] == 0).tolist() == [True, False, True]


@pytest.mark.parametrize("parents,message", [
    ([-1, 0, 3, 2], "cycle"), ([-1, 0, 5], "orphan"), ([-1, -5], "orphan"), ([0, 0], "root")])
def test_bad_trees_fail_clearly(parents, message):
    with pytest.raises(ValueError, match=message):
        check_parents(parents)
    with pytest.raises(ValueError, match=message):
        DraftTree([0] * len(parents), parents)


def test_bad_templates_fail_clearly():
    with pytest.raises(ValueError, match="orphan"):
        template_from_paths([[0], [1, 0, 0]])
    with pytest.raises(ValueError, match="twice"):
        template_from_paths([[0], [0]])
    with pytest.raises(ValueError, match="rank 9"):
        make_drafter("token_recycling", model64("tw-micro")[0], template=[[0], [9]])
    with pytest.raises(ValueError, match="cycle"):
        make_drafter("token_recycling", model64("tw-micro")[0], template=([-1, 2, 1], [-1, 0, 0]))


# --- verification in the model -----------------------------------------------------------

def test_tree_forward_equals_plain_forward_along_every_path():
    """Each tree node's logits equal a plain forward over prompt + its root path."""
    model, tok = model64("tw-micro")
    prompt = tok("def main(argv):\n    for arg in argv:\n")["input_ids"]
    rng = random.Random(0)
    T = 20
    tree = DraftTree([prompt[-1]] + [rng.randrange(100, 4000) for _ in range(T - 1)],
                     [-1] + [rng.randrange(i) for i in range(1, T)])
    with torch.no_grad():
        cache = model(torch.tensor([prompt[:-1]]), use_cache=True).past_key_values
        L = len(prompt) - 1
        logits = model(torch.tensor([tree.tokens]), past_key_values=cache,
                       position_ids=L + torch.tensor([tree.depths()]),
                       attention_mask=additive_mask(tree.ancestor_mask(), L, torch.float64)).logits[0]
        for i in range(T):
            path, node = [], i
            while node != -1:
                path.append(tree.tokens[node])
                node = tree.parents[node]
            plain = model(torch.tensor([prompt[:-1] + path[::-1]])).logits[0, -1]
            torch.testing.assert_close(logits[i], plain, atol=1e-9, rtol=1e-9)


def test_compacted_cache_equals_the_cache_of_the_accepted_text():
    """After a tree step and compaction, the cache is what a plain forward over the accepted
    path would have cached (keys carry RoPE at the path's positions)."""
    model, tok = model64("tw-micro")
    prompt = tok("for i in range(10):\n    print(i)\n")["input_ids"]
    tree = DraftTree([prompt[-1], 11, 12, 13, 14, 15], [-1, 0, 0, 2, 2, 3])
    path = [0, 2, 3, 5]
    L = len(prompt) - 1
    with torch.no_grad():
        cache = model(torch.tensor([prompt[:-1]]), use_cache=True).past_key_values
        model(torch.tensor([tree.tokens]), past_key_values=cache,
              position_ids=L + torch.tensor([tree.depths()]),
              attention_mask=additive_mask(tree.ancestor_mask(), L, torch.float64))
        _compact(cache, L, path)
        plain = model(torch.tensor([prompt[:-1] + [tree.tokens[i] for i in path]]),
                      use_cache=True).past_key_values
    assert cache.get_seq_length() == L + len(path)
    for ours, ref in zip(cache.layers, plain.layers):
        torch.testing.assert_close(ours.keys, ref.keys, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(ours.values, ref.values, atol=1e-10, rtol=1e-10)


# --- losslessness ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["tw-micro", "tw-code"])
def test_every_method_equals_greedy_and_hf_generate(name):
    """On suite prompts of every category, every method's tokens equal greedy decoding's and
    Hugging Face generate's, token for token (float64, so no rounding ties)."""
    model, tok = model64(name)
    prompts = suite()
    rows = run_suite(model, tok, prompts, ["greedy", "hf_greedy", "prompt_lookup",
                                           "token_recycling", "lookahead"], max_new_tokens=40)
    bad = [(r["prompt"], r["method"]) for r in rows if not r["identical"]]
    assert not bad, f"outputs differ from greedy: {bad}"
    assert {r["category"] for r in rows} == set(CATEGORIES)
    multi = [r for r in rows if r["method"] == "token_recycling" and max(r["accepted"]) > 1]
    assert multi, "Token Recycling never accepted a draft: the test would not test anything"
    table = summarize(rows)
    greedy_all = next(s for s in table if s["method"] == "greedy" and s["category"] == "all")
    assert greedy_all["mean_accepted"] == 1.0 and greedy_all["speedup"] == 1.0


def test_eos_stops_and_is_kept():
    model, tok = model64("tw-code")
    prompt = tok("x = 1\n")["input_ids"]
    free = generate(model, prompt, "greedy", max_new_tokens=12, eos_token_id=()).tokens
    eos = free[3]
    for method in METHODS:
        out = generate(model, prompt, method, max_new_tokens=12, eos_token_id=eos).tokens
        assert out == free[: free.index(eos) + 1]
        assert out == hf_generate(model, prompt, 12, eos)


def _cut(tokens: list[int], ends: set[int]) -> list[int]:
    """``tokens`` up to and including the first one in ``ends`` (all of them if none is)."""
    hits = [i for i, t in enumerate(tokens) if t in ends]
    return tokens[: hits[0] + 1] if hits else tokens


def test_eos_accepts_an_int_a_list_a_set_and_the_configs_list(monkeypatch):
    """Any id of a list or set ends the output (Llama-3 ends on <|end_of_text|> and on
    <|eot_id|>); without eos_token_id, every id of the config's list does."""
    model, tok = model64("tw-code")
    prompt = tok("x = 1\n")["input_ids"]
    free = generate(model, prompt, "greedy", max_new_tokens=12, eos_token_id=()).tokens
    unused = next(t for t in range(5, 4096) if t not in free)
    sooner, later = free[3], free[7]
    assert free.index(sooner) < free.index(later)
    for eos, ends in ((sooner, {sooner}), ([unused, sooner], {sooner}), ({later, sooner}, {sooner}),
                      ((later,), {later}), (frozenset(), set())):
        for method in METHODS:
            got = generate(model, prompt, method, max_new_tokens=12, eos_token_id=eos).tokens
            assert got == _cut(free, ends), (method, eos)
    monkeypatch.setattr(model.config, "eos_token_id", [unused, sooner])
    for method in METHODS:
        assert generate(model, prompt, method, max_new_tokens=12).tokens == _cut(free, {sooner}), method


def test_eos_ids_reads_ints_collections_and_the_config(monkeypatch):
    from tokenworks.ids import eos_ids

    model, _ = model64("tw-micro")
    assert eos_ids(3) == eos_ids([3]) == eos_ids({3}) == eos_ids((3,), model) == frozenset({3})
    assert eos_ids([3, 7, 3], model) == frozenset({3, 7})
    assert eos_ids([], model) == eos_ids(None) == frozenset()  # no EOS
    assert eos_ids(None, model) == frozenset({0})  # tw-micro's config
    monkeypatch.setattr(model.config, "eos_token_id", [2, 9])
    assert eos_ids(None, model) == frozenset({2, 9})
    monkeypatch.setattr(model.config, "eos_token_id", None)
    assert eos_ids(None, model) == frozenset()
    for bad in (2.0, "</s>", True, [1, 2.5], [False]):
        with pytest.raises(TypeError, match="eos_token_id"):
            eos_ids(bad, model)
    for bad in (-1, [3, 4096]):
        with pytest.raises(ValueError, match="vocabulary"):
            eos_ids(bad, model)


def test_max_new_tokens_is_respected_by_multi_token_steps():
    model, tok = model64("tw-micro")
    prompt = tok("aaaa bbbb aaaa bbbb aaaa bbbb aaaa")["input_ids"]
    for n in (1, 2, 5):
        for method in METHODS:
            assert len(generate(model, prompt, method, max_new_tokens=n, eos_token_id=()).tokens) == n


# --- bad input ---------------------------------------------------------------------------

def test_bad_input_fails_clearly():
    model, _ = model64("tw-micro")
    with pytest.raises(ValueError, match="empty"):
        generate(model, [], "greedy")
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, [1, 2], "greedy", max_new_tokens=0)
    with pytest.raises(ValueError, match="unknown method .* token_recycling"):
        generate(model, [1, 2], "medusa")
    with pytest.raises(ValueError, match="batch of 2"):
        generate(model, torch.ones(2, 3, dtype=torch.long), "greedy")
    with pytest.raises(ValueError, match=r"outside the model's vocabulary \[0, 4096\): \[4096, -1\]"):
        generate(model, [1, 4096, -1], "greedy")
    with pytest.raises(TypeError, match="integer token ids"):
        generate(model, torch.tensor([1.0, 2.0]), "greedy")
    with pytest.raises(TypeError, match="tokenize the text first"):
        generate(model, "def f(x):", "greedy")
    with pytest.raises(ValueError, match="KV cache"):
        generate(torch.nn.Linear(2, 2), [1, 2], "greedy")


def test_drafter_options_fail_clearly():
    """No model for Token Recycling, an unknown option, options or a method that disagree with
    a given drafter: each is refused at once, never dropped or defaulted."""
    model, _ = model64("tw-micro")
    with pytest.raises(ValueError, match="measures the model's step cost: pass the model"):
        make_drafter("token_recycling")
    with pytest.raises(ValueError, match="pass the model .* or vocab_size="):
        make_drafter("token_recycling", template="2.2.2")
    with pytest.raises(ValueError, match="pass cost=.*calibrate"):
        make_drafter("token_recycling", vocab_size=100, cost=None)
    with pytest.raises(ValueError, match="unknown template '2.2'"):
        make_drafter("token_recycling", model, template="2.2")
    with pytest.raises(ValueError, match="cost='fast'"):
        make_drafter("lookahead", model, cost="fast")
    assert make_drafter("token_recycling", vocab_size=100, device="cpu", template="2.2.2").A.shape == (100, 8)
    assert make_drafter("token_recycling", model).A.shape == (4096, 8)
    with pytest.raises(ValueError, match="vocab_size=10 .* 4096"):
        make_drafter("token_recycling", model, vocab_size=10)
    with pytest.raises(TypeError, match="unknown option 'num_drafts' for prompt_lookup: it takes "
                                        "max_ngram, num_draft"):
        make_drafter("prompt_lookup", num_drafts=4)
    with pytest.raises(TypeError, match="unknown options 'a', 'k' for greedy: it takes no options"):
        generate(model, [1, 2, 3], "greedy", k=3, a=1)
    drafter = make_drafter("prompt_lookup")
    with pytest.raises(ValueError, match="num_draft .* drafter="):
        generate(model, [1, 2, 3], drafter=drafter, num_draft=3)
    with pytest.raises(ValueError, match="method='lookahead' .* PromptLookup"):
        generate(model, [1, 2, 3], "lookahead", drafter=drafter)
    assert generate(model, [1, 2, 3], "prompt_lookup", max_new_tokens=2, drafter=drafter).tokens
    with pytest.raises(TypeError, match="start, draft and update of tokenworks.speculative.Drafter"):
        generate(model, [1, 2, 3], drafter=lambda context: [1])


def _sliding_model(kind: str):
    """A tiny randomly initialised model with sliding-window layers (no download): Gemma-3's
    hybrid pattern (sliding, then full) or Mistral's window on every layer."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    shape = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                 num_attention_heads=2, num_key_value_heads=1, head_dim=8, sliding_window=4)
    if kind == "gemma3":
        config = Gemma3TextConfig(**shape, layer_types=["sliding_attention", "full_attention"])
        return Gemma3ForCausalLM(config).eval()
    return MistralForCausalLM(MistralConfig(**shape)).eval()


@pytest.mark.parametrize("kind,layers", [("gemma3", r"\[0\]"), ("mistral", r"\[0, 1\]")])
def test_sliding_window_layers_are_refused_at_entry(kind, layers):
    """The cache compaction and the one tree mask for every layer hold for full-attention
    layers only; a sliding-window model is refused before any forward, naming the limitation."""
    model = _sliding_model(kind)
    for method in METHODS:
        with pytest.raises(ValueError, match=f"layers {layers} .*DynamicSlidingWindowLayer.*"
                                             "full-attention layers only"):
            generate(model, list(range(3, 13)), method, max_new_tokens=8)


def test_model_that_does_not_cache_fails_clearly():
    model, _ = model64("tw-micro")

    class NoCache(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner, self.config = model, model.config

        def get_input_embeddings(self):
            return self.inner.get_input_embeddings()

        def forward(self, *args, past_key_values=None, **kwargs):
            return self.inner(*args, **kwargs)  # drops the cache
    with pytest.raises(ValueError, match="KV cache"):
        run(NoCache(), [1, 2, 3], Greedy(), max_new_tokens=2)


def test_suite_is_deterministic_and_held_out(tmp_path):
    _, tok = model64("tw-code")
    texts = stdlib_corpus().texts("test")
    a = stdlib_suite(texts, tok, n=3, max_prompt_tokens=128, seed=1)
    b = stdlib_suite(texts, tok, n=3, max_prompt_tokens=128, seed=1)
    assert a == b and len(a) == 12
    assert all(len(tok(p["prompt"])["input_ids"]) <= 128 for p in a)
    copy = [p for p in a if p["category"] == "copy_edit"]
    assert all("renamed to" in p["prompt"] and p["prompt"].rstrip().endswith(":") for p in copy)
    with pytest.raises(ValueError, match="n >= 1"):
        stdlib_suite(texts, tok, n=0)


def test_spec_bench_question_file(tmp_path):
    """Spec-Bench's question.jsonl format loads through `datasets` (first turn, n per category)."""
    from tokenworks.speculative.suite import spec_bench
    import json
    rows = [{"question_id": i, "category": c, "turns": [f"question {i}", "follow-up"]}
            for i, c in enumerate(["mt_bench", "mt_bench", "translation", "qa"])]
    path = tmp_path / "question.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    _, tok = model64("tw-micro")
    out = spec_bench(str(path), tok, n=1)
    assert [(p["category"], p["prompt"]) for p in out] == [
        ("mt_bench", "question 0"), ("translation", "question 2"), ("qa", "question 3")]


# A small branching template (10 nodes, siblings at depths 1 to 3): cheap in the interpreter.
BRANCHING = [[0], [1], [2], [0, 0], [0, 1], [1, 0], [0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 0, 0, 0]]


def _tree_kernel_model(monkeypatch):
    """tw-micro in float32 with the Triton tree kernel as its attention (a fresh copy), and
    the list of tree sizes the kernel was handed (a spy on the attention function)."""
    from transformers import AttentionInterface

    from tokenworks.speculative.engine import TREE_KERNEL
    from tokenworks.speculative.kernel_attention import tree_attention_forward, use_tree_kernel

    model, tok = load("tw-micro", device="cpu", dtype=torch.float32)
    use_tree_kernel(model)
    sizes = []

    def spy(*args, tree_bits=None, **kwargs):
        if tree_bits is not None:
            sizes.append(tree_bits.shape[0])
        return tree_attention_forward(*args, tree_bits=tree_bits, **kwargs)
    monkeypatch.setitem(AttentionInterface._global_mapping, TREE_KERNEL, spy)
    return model, tok, sizes


def test_tree_kernel_steps_build_no_dense_mask(monkeypatch):
    """With the kernel on, tree steps hand it ancestor bits only: the dense [T, L + T] mask
    is never built, so the kernel's memory saving holds end to end."""
    from tokenworks.speculative import engine

    model, tok, sizes = _tree_kernel_model(monkeypatch)

    def no_dense_mask(*args, **kwargs):
        raise AssertionError("the dense tree mask was built although the kernel is on")
    monkeypatch.setattr(engine, "additive_mask", no_dense_mask)
    prompt = tok("def f(a, b):\n    return a + b\n\ndef g(a, b):\n    return")["input_ids"]
    out = generate(model, prompt, "prompt_lookup", max_new_tokens=4)
    assert sizes and max(out.drafted) > 0, "no tree step went through the kernel"


def test_tree_kernel_on_branching_drafts_equals_dense_mask_and_greedy(monkeypatch):
    """Token Recycling's branching trees through the kernel inside tw-micro: the same tokens
    and acceptances as the dense-mask path, and greedy decoding's tokens (float32). The
    matrix is warmed by a first query, so the second one accepts drafts from its trees."""
    dense, tok = load("tw-micro", device="cpu", dtype=torch.float32)
    kernel, _, sizes = _tree_kernel_model(monkeypatch)
    prompts = [tok(t)["input_ids"] for t in ("x = 1\ny = 2\nx = 1\ny = 2\n", "def f(x):\n    return")]
    runs = {}
    for name, model in (("dense", dense), ("kernel", kernel)):
        drafter = make_drafter("token_recycling", model, template=BRANCHING)
        runs[name] = [generate(model, p, max_new_tokens=16, drafter=drafter) for p in prompts]
    for d, k, p in zip(runs["dense"], runs["kernel"], prompts):
        assert k.tokens == d.tokens == generate(dense, p, "greedy", max_new_tokens=16).tokens
        assert k.accepted == d.accepted
    assert set(sizes) == {len(BRANCHING) + 1}, "the kernel did not see the branching trees"
    assert max(a for g in runs["kernel"] for a in g.accepted) > 1, "no draft was accepted"


@pytest.mark.parametrize("method", ["token_recycling", "lookahead"])
def test_long_runs_through_the_suite_harness_stay_lossless(method):
    """What the full reproductions check, as code rather than as their committed records:
    through run_suite, as the notebooks call it (one drafter kept across the prompts), 256-token
    generations on a prompt of every category equal greedy decoding token for token."""
    model, tok = model64("tw-micro")
    rows = run_suite(model, tok, suite(1), ["greedy", method], max_new_tokens=256, warmup=0)
    mine = [r for r in rows if r["method"] == method]
    assert len(mine) == len(CATEGORIES) and all(r["identical"] for r in mine)
    assert max(r["new_tokens"] for r in mine) == 256, "no run was long: EOS came first everywhere"
    assert max(a for r in mine for a in r["accepted"]) > 1, f"{method} never had a draft accepted"


def test_importing_the_harness_does_not_import_triton():
    """Notebooks set TRITON_INTERPRET after their imports: the harness must not pull triton in
    (transformers' attention registry does, so kernel_attention is imported only on request)."""
    import subprocess
    import sys
    code = ("import sys, tokenworks.speculative, tokenworks.speculative.evaluate, tokenworks.decoding; "
            "print('triton' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_counts_and_devices_are_checked():
    """``max_new_tokens=True`` generated one token before; a Token Recycling matrix on another
    device than the model's was accepted (review of issue 16)."""
    model, _ = load("tw-micro", dtype=torch.float64)
    with pytest.raises(TypeError, match="max_new_tokens must be an integer"):
        generate(model, [1, 2, 3], max_new_tokens=True)
    with pytest.raises(ValueError, match="differs from the model's"):
        make_drafter("token_recycling", model, device="meta")
    with pytest.raises(TypeError, match="vocab_size must be an integer"):
        make_drafter("token_recycling", model, vocab_size=5000.0)


# --- suites ------------------------------------------------------------------------------

def test_humaneval_suite_is_humanevals_prompts_plain():
    """HumanEval prompts go in as plain text (no chat template), a seeded choice, in task order."""
    from tokenworks.benchmarks import humaneval
    from tokenworks.speculative.suite import humaneval_suite
    _, tok = model64("tw-code")
    a = humaneval_suite(tok, n=5, max_prompt_tokens=4096, seed=3)
    assert a == humaneval_suite(tok, n=5, max_prompt_tokens=4096, seed=3)
    assert a != humaneval_suite(tok, n=5, max_prompt_tokens=4096, seed=4)
    problems = {p["task_id"]: p for p in humaneval()}
    assert [p["category"] for p in a] == ["humaneval"] * 5
    assert all(p["prompt"] == problems[p["source"]]["prompt"] for p in a)
    order = [int(p["source"].split("/")[1]) for p in a]
    assert order == sorted(order) and len(set(order)) == 5
    assert len(humaneval_suite(tok, n=164)) == 164
    for n in (0, 165):
        with pytest.raises(ValueError, match="1 to 164"):
            humaneval_suite(tok, n=n)


def test_prompt_suite_takes_names_or_a_list_of_them():
    from tokenworks.speculative.suite import prompt_suite
    _, tok = model64("tw-code")
    kw = dict(n_per_category=1, n_humaneval=2, max_prompt_tokens=128, seed=0)
    both = prompt_suite(["stdlib", "humaneval"], tok, **kw)
    stdlib, human = prompt_suite("stdlib", tok, **kw), prompt_suite("humaneval", tok, **kw)
    assert both == stdlib + human
    assert [p["suite"] for p in both] == ["stdlib"] * 4 + ["humaneval"] * 2
    assert {p["category"] for p in stdlib} == set(CATEGORIES)
    with pytest.raises(ValueError, match=r"unknown suite 'mbpp'.*'stdlib', 'humaneval'"):
        prompt_suite(["stdlib", "mbpp"], tok, **kw)
    with pytest.raises(ValueError, match="twice"):
        prompt_suite(["humaneval", "humaneval"], tok, **kw)
    with pytest.raises(ValueError, match="at least one"):
        prompt_suite([], tok, **kw)
    with pytest.raises(TypeError, match="a suite name or a list"):
        prompt_suite(3, tok, **kw)


# --- real models -------------------------------------------------------------------------

def test_gemma3_270m_is_refused_by_name_of_its_sliding_window_layers():
    """The packaged Gemma-3 interleaves sliding-window layers with global ones: every method
    refuses it at entry (before any forward), naming those layers and the limitation."""
    model, tok = load("gemma3-270m", device="cpu")
    sliding = [i for i, t in enumerate(model.config.layer_types) if t == "sliding_attention"]
    assert sliding and len(sliding) < model.config.num_hidden_layers
    listed = re.escape(str(sliding))
    for method in METHODS:
        with pytest.raises(ValueError, match=f"layers {listed} keep a DynamicSlidingWindowLayer.*"
                                             "full-attention layers only"):
            generate(model, tok("def f():")["input_ids"], method, max_new_tokens=4)


# --- losslessness report and the harness benchmark ---------------------------------------

def test_lossless_report_names_each_mismatch_and_its_first_differing_token(monkeypatch):
    """A drafter whose output differs from greedy is reported (prompt, method, first
    differing position) and check_lossless raises, naming it."""
    from tokenworks.speculative import evaluate
    model, tok = model64("tw-code")
    prompts = suite()[:2]
    good = run_suite(model, tok, prompts, ["greedy", "prompt_lookup"], max_new_tokens=12)
    report = evaluate.lossless_report(good)
    assert report == {"prompts": 2, "methods": ["greedy", "prompt_lookup"], "identical": 4,
                      "generations": 4, "mismatches": []}
    assert all(r["first_difference"] is None for r in good)
    evaluate.check_lossless(report)  # no error
    real = evaluate.generate

    def off_by_one(*args, **kwargs):  # prompt lookup's 6th token changed
        out = real(*args, **kwargs)
        if not isinstance(kwargs["drafter"], Greedy) and len(out.tokens) > 5:
            out.tokens[5] = (out.tokens[5] + 1) % 100
        return out
    monkeypatch.setattr(evaluate, "generate", off_by_one)
    bad = run_suite(model, tok, prompts, ["greedy", "prompt_lookup"], max_new_tokens=12)
    report = evaluate.lossless_report(bad)
    assert report["identical"] == 2 and [m["first_difference"] for m in report["mismatches"]] == [5, 5]
    assert [(m["prompt"], m["method"]) for m in report["mismatches"]] == [(0, "prompt_lookup"), (1, "prompt_lookup")]
    with pytest.raises(AssertionError, match=r"2 of 4 .*prompt 0 .*prompt_lookup.* token 5"):
        evaluate.check_lossless(report)


def test_greedy_vs_hf_compares_the_same_tokens(monkeypatch):
    """The benchmark runs both on every prompt, counts the same tokens for each, and refuses
    outputs that differ (a speed ratio of different outputs means nothing)."""
    from tokenworks.speculative import evaluate
    model, tok = model64("tw-code")
    prompts = suite()[:3]
    bench = evaluate.greedy_vs_hf(model, tok, prompts, max_new_tokens=10)
    expected = sum(len(hf_generate(model, tok(p["prompt"])["input_ids"], 10, tok.eos_token_id))
                   for p in prompts)
    assert bench["prompts"] == 3 and bench["tokens"] == expected
    assert bench["ours_tokens_per_s"] == pytest.approx(expected / bench["ours_seconds"])
    assert bench["hf_tokens_per_s"] == pytest.approx(expected / bench["hf_seconds"])
    assert bench["ratio"] == pytest.approx(bench["ours_tokens_per_s"] / bench["hf_tokens_per_s"])
    real = evaluate.hf_generate
    monkeypatch.setattr(evaluate, "hf_generate", lambda *a, **k: real(*a, **k)[:-1])
    with pytest.raises(AssertionError, match="prompt 0 differ"):
        evaluate.greedy_vs_hf(model, tok, prompts, max_new_tokens=10)
    with pytest.raises(ValueError, match="at least one prompt"):
        evaluate.greedy_vs_hf(model, tok, [], max_new_tokens=10)


def test_smollm2_float32_every_method_equals_greedy_on_humaneval():
    """On the packaged SmolLM2 in float32 (the full runs' setting), every method's output on
    HumanEval prompts equals greedy decoding and Hugging Face generate, token for token."""
    from tokenworks.speculative.evaluate import check_lossless, lossless_report
    from tokenworks.speculative.suite import humaneval_suite
    model, tok = load("smollm2-135m", device="cpu", dtype=torch.float32)
    rows = run_suite(model, tok, humaneval_suite(tok, n=1), ["greedy", "hf_greedy", "prompt_lookup",
                     "token_recycling", "lookahead"], max_new_tokens=16, warmup=0)
    check_lossless(lossless_report(rows))
    assert any(max(r["accepted"]) > 1 for r in rows if r["method"] == "token_recycling")


def test_prefill_computes_no_logits_for_the_prompt():
    """The prefill's logits are never read: the output head runs on one position at most
    there (on SmolLM2 the head over every prompt position is a fifth of the prefill's work,
    a cost Hugging Face generate does not pay)."""
    model, tok = model64("tw-micro")
    seen = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, i, o: seen.append(i[0].shape[-2]))
    try:
        generate(model, list(range(3, 23)), "greedy", max_new_tokens=3, eos_token_id=())
    finally:
        hook.remove()
    assert seen == [1, 1, 1, 1]  # prefill, then one position per step
