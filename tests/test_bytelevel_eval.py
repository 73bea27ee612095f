"""The byte-level experiments' pieces (tokenworks.bytelevel.tasks) and ByteLM's KV cache and
ensemble, on tw-micro."""
import copy
import functools
import math
import warnings

import pytest
import torch

from tokenworks.bytelevel import tasks as ev
from tokenworks.bytelevel import END, ByteEnsemble, ByteLM, decode_bytes
from tokenworks.models.corpus import stdlib_corpus
from tokenworks.models import load

PROMPT = b"import os\n\n\ndef join(a, b):\n    return os.path.join(a, b)\n\n\nclass Path:\n    def __init__(self, p"


@functools.cache
def micro():
    return load("tw-micro", device="cpu", dtype=torch.float64)


@functools.cache
def held_out_texts():
    return stdlib_corpus().texts("test")


def test_cached_head_gives_the_same_distributions_as_full_forwards():
    cached, plain = ByteLM(*micro()), ByteLM(*micro())
    plain._cache_input = lambda ids: None  # every model call runs the whole sequence
    for i in range(len(PROMPT) - 12, len(PROMPT) + 1):
        a, b = cached.next_byte_logprobs(PROMPT[:i]), plain.next_byte_logprobs(PROMPT[:i])
        assert torch.allclose(a.exp(), b.exp(), atol=1e-9)
    assert cached.positions < plain.positions / 5


def test_a_byte_step_does_not_rerun_the_prompt():
    lm = ByteLM(*micro())
    lm.next_byte_logprobs(PROMPT)
    before = lm.positions
    out = lm.generate(PROMPT, max_new_bytes=12)
    prompt_tokens = len(lm.tokenizer(PROMPT.decode())["input_ids"])
    assert len(out) == 12 and lm.positions - before < prompt_tokens


@functools.cache
def code_members():
    """tw-code (tokenizer-v1) and tw-code-v2 (tokenizer-v2): two tokenizers, two models."""
    return [ByteLM(*load(name, device="cpu", dtype=torch.float64)) for name in ("tw-code", "tw-code-v2")]


@pytest.mark.parametrize("prefix", [b"def f(x):\n    re", b"import o", b""])
def test_ensemble_of_two_tokenizers_is_the_weighted_mixture(prefix):
    a, b = code_members()
    assert a.tokenizer.get_vocab() != b.tokenizer.get_vocab()
    ens = ByteEnsemble([a, b], weights=[3, 1])
    p = ens.next_byte_logprobs(prefix).exp()
    pa, pb = a.next_byte_logprobs(prefix).exp(), b.next_byte_logprobs(prefix).exp()
    assert torch.allclose(p, 0.75 * pa + 0.25 * pb, atol=1e-12, rtol=0)
    assert math.isclose(float(p.sum()), 1.0, abs_tol=1e-9)
    assert (p - pa).abs().max() > 1e-3 and (p - pb).abs().max() > 1e-3  # neither member alone


def test_ensemble_bad_input():
    a = ByteLM(*micro())
    with pytest.raises(ValueError, match="at least two"):
        ByteEnsemble([a])
    with pytest.raises(ValueError, match="positive"):
        ByteEnsemble([a, a], weights=[1, 0])
    other = copy.copy(a)
    other._by_first_byte = {b: v for b, v in a._by_first_byte.items() if b >= 128}
    disjoint = copy.copy(a)
    disjoint._by_first_byte = {b: v for b, v in a._by_first_byte.items() if b < 128}
    with pytest.raises(ValueError, match="share no byte"):
        ByteEnsemble([other, disjoint])
    with pytest.raises(ValueError, match="one context per member"):
        ByteEnsemble([a, a]).next_byte_logprobs(b"x", contexts=[()])


def test_sampling_is_deterministic_under_a_seed():
    lm = ByteLM(*micro())
    draw = lambda seed: decode_bytes(lm.next_byte_logprobs, b"def ", 10, 1.0,  # noqa: E731
                                     torch.Generator().manual_seed(seed))
    assert draw(3) == draw(3)
    assert len({draw(s) for s in range(4)}) > 1


def test_fim_items_cut_inside_tokens():
    tok = micro()[1]
    items = ev.fim_items(held_out_texts(), tok, 8, seed=1, span=(3, 20))
    assert items == ev.fim_items(held_out_texts(), tok, 8, seed=1, span=(3, 20))
    for it in items:
        src = it["prefix"] + it["middle"] + it["suffix"]
        ends = {e for _, e in tok(src, return_offsets_mapping=True)["offset_mapping"]}
        a, b = len(it["prefix"]), len(it["prefix"]) + len(it["middle"])
        assert a not in ends and b not in ends and 3 <= b - a <= 20 and it["middle"].strip()
        assert ev.compiles(src) and "\n" in it["prefix"]


def test_fim_prompt_formats_and_bad_input():
    tok = micro()[1]
    item = {"prefix": "def f(x):\n    ret", "middle": "urn x", "suffix": " + 1\n"}
    psm, psm_bytes = ev.fim_prompt(tok, item, "psm")
    spm, spm_bytes = ev.fim_prompt(tok, item, "spm")
    ids = tok.convert_tokens_to_ids(["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"])
    assert psm[0] == ids[0] and psm[-1] == ids[2] and psm_bytes == b""
    assert spm[:2] == (ids[0], ids[1]) and spm[-1] == ids[2] and spm_bytes == item["prefix"].encode()
    with pytest.raises(ValueError, match="format"):
        ev.fim_prompt(tok, item, "pms")
    with pytest.raises(ValueError, match="sentinel"):
        ev.fim_prompt(tok, item, "psm", sentinels=("<PRE>", "<SUF>", "<MID>"))


def test_token_healing_extends_the_removed_bytes():
    lm = ByteLM(*micro())
    item = {"prefix": "def f(x):\n    ret", "middle": "urn x", "suffix": " + 1\n"}
    context, prompt = ev.fim_prompt(lm.tokenizer, item, "spm")
    removed = lm.token_bytes[lm.tokenizer(prompt.decode())["input_ids"][-1]]
    healed, calls = ev._token_fill(lm, context, prompt, heal=True, max_new_bytes=5)
    assert len(healed) <= 5 and calls >= 1
    row = ev.fill("healing", item, "spm", [lm])
    assert row["middle"].encode() == healed and row["bytes"] == len(healed)
    assert len(removed) >= 1  # the prompt really ends on a token that healing backs up over


def test_edit_similarity():
    assert ev.edit_similarity("kitten", "sitting") == pytest.approx(1 - 3 / 7)
    assert ev.edit_similarity("", "") == 1.0 and ev.edit_similarity("abc", "") == 0.0
    assert ev.edit_similarity("same", "same") == 1.0


def test_fim_summary_and_paired_difference():
    rows = [{"item": i, "format": "spm", "method": m, "edit_similarity": s, "exact": s == 1,
             "compiles": True, "ended": False, "bytes": 4, "calls": 4, "seconds": 0.1}
            for i in range(5) for m, s in (("token", 0.2), ("byte", 0.5))]
    summary = {r["method"]: r for r in ev.summarize_fim(rows)}
    assert summary["byte"]["edit_similarity"] == pytest.approx(0.5)
    assert summary["token"]["calls_per_byte"] == pytest.approx(1.0)
    d = ev.fim_difference(rows, ("spm", "byte"), ("spm", "token"))
    assert d["mean"] == pytest.approx(0.3) and d["ci_low"] == pytest.approx(0.3)


def test_byte_logprobs_chain_equals_the_prefix_probability():
    lm = ByteLM(*micro())
    data = b"x = 1\n\n#"
    chain = sum(ev.byte_logprobs(lm.next_byte_logprobs, data))
    assert chain == pytest.approx(lm.prefix_logprob(data), abs=1e-6)


def test_genlm_peer_distributions_are_normalised():
    lm = ByteLM(*micro())
    res = ev.compare_with_genlm(lm, b"def f(x):\n", K=4)
    assert 0 <= res["mean_tv"] <= res["max_tv"] <= 1 and 0 <= res["argmax_agree"] <= 1
    assert math.isfinite(res["bpb_ours"]) and math.isfinite(res["bpb_genlm"])
    theirs, _ = ev.genlm_next_byte_logprobs(lm.model, lm.tokenizer, b"de", K=4)
    assert len(theirs) == 3 and all(abs(float(t.exp().sum()) - 1) < 1e-6 for t in theirs)


def test_humaneval_items_end_inside_a_token_and_the_canonical_rest_passes():
    from tokenworks.benchmarks import humaneval, passes
    _, tok = micro()
    items = ev.humaneval_items(humaneval()[:20], tok, n=3, seed=1)
    assert items == ev.humaneval_items(humaneval()[:20], tok, n=3, seed=1)
    for item in items:
        p = item["problem"]
        assert item["prompt"] + item["target"] == p["prompt"] + p["canonical_solution"]
        ends = {e for _, e in tok(item["prompt"] + item["target"], add_special_tokens=False,
                                  return_offsets_mapping=True)["offset_mapping"]}
        assert len(item["prompt"]) not in ends and len(item["prompt"]) > len(p["prompt"])
    assert passes(items[0]["problem"], items[0]["prompt"][len(items[0]["problem"]["prompt"]):] + items[0]["target"])
    with pytest.raises(ValueError, match="n >= 1"):
        ev.humaneval_items(humaneval(), tok, n=0)


def test_humaneval_completion_scores_and_function_end():
    from tokenworks.benchmarks import humaneval
    lm = ByteLM(*micro())
    item = ev.humaneval_items(humaneval()[:20], lm.tokenizer, n=1, seed=0)[0]
    rows = []
    for method in ("token", "healing", "byte"):
        row = ev.complete_humaneval(method, item, lm, max_new_bytes=8)
        assert row["bytes"] <= 8 and isinstance(row["passed"], bool) and 0 <= row["edit_similarity"] <= 1
        rows.append({"method": method, **row})
    summary = ev.summarize_humaneval(rows + [{**rows[0], "passed": True, "edit_similarity": 1.0}])
    assert [r["method"] for r in summary] == ["token", "healing", "byte"]
    assert summary[0]["n"] == 2 and summary[0]["pass_at_1"] == (1 + rows[0]["passed"]) / 2
    assert summary[0]["edit_similarity"] == pytest.approx((1 + rows[0]["edit_similarity"]) / 2)
    assert ev.function_end("  x\n  y\nprint(1)\n") == "  x\n  y\n"
    with pytest.raises(ValueError, match="unknown method"):
        ev.complete_humaneval("fim", item, lm)


def test_humaneval_fim_items_remove_a_span_of_the_canonical_solution():
    from tokenworks.benchmarks import humaneval
    _, tok = micro()
    items = ev.humaneval_fim_items(humaneval()[:30], tok, n=3, seed=2)
    assert items == ev.humaneval_fim_items(humaneval()[:30], tok, n=3, seed=2)
    for item in items:
        p = item["problem"]
        assert item["prefix"] + item["middle"] + item["suffix"] == p["prompt"] + p["canonical_solution"]
        assert len(item["prefix"]) > len(p["prompt"]) and 4 <= len(item["middle"]) <= 40
        ends = {e for _, e in tok(p["prompt"] + p["canonical_solution"], add_special_tokens=False,
                                  return_offsets_mapping=True)["offset_mapping"]}
        assert len(item["prefix"]) not in ends and len(item["prefix"]) + len(item["middle"]) not in ends
    lm = code_members()[0]
    rows = [{"item": 0, "format": "psm", "method": "token", **ev.fill("token", items[0], "psm", [lm])}]
    assert isinstance(rows[0]["passed"], bool)
    assert ev.summarize_fim(rows)[0]["pass_at_1"] == float(rows[0]["passed"])


def test_compiles_keeps_a_completions_syntax_warnings_out_of_the_output():
    """A completion such as ``1if y else 2`` compiles with a SyntaxWarning about the model's
    text, which must not reach the notebook's output; a real syntax error still fails."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ev.compiles("y = [1]\nx = 1if y else 2\n")
    assert not ev.compiles("def f(:\n")
