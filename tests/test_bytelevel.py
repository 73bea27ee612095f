"""Exact byte-level probabilities (tokenworks.bytelevel) on tw-micro: the exactness checks."""
import functools
import math

import pytest
import torch
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from tokenworks.bytelevel import END, ByteLM, byte_decoder
from tokenworks.models import load


@functools.cache
def byte_lm():
    model, tok = load("tw-micro", device="cpu", dtype=torch.float64)
    return ByteLM(model, tok)


def test_byte_alphabet_is_a_bijection():
    table = byte_decoder()
    assert sorted(table.values()) == list(range(256)) and len(table) == 256


@pytest.mark.parametrize("prefix", [b"", b"d", b"de", b"def ma", b"import o", b"x = 1\n"])
def test_next_byte_probabilities_sum_to_one(prefix):
    logp = byte_lm().next_byte_logprobs(prefix)
    assert logp.shape == (257,)
    assert math.isclose(float(logp.exp().sum()), 1.0, abs_tol=1e-9)


def _all_valid_tokenizations(lm, y: bytes):
    """Every segmentation of y into vocabulary tokens that the tokenizer itself produces,
    by brute force (independent of ByteLM's cover search)."""
    out = []

    def walk(at, t):
        if at == len(y):
            if lm._valid_uncached(t):
                out.append(t)
            return
        for s, b in lm.token_bytes.items():
            if y.startswith(b, at):
                walk(at + len(b), t + (s,))
    walk(0, ())
    return out


def _check_chain_rule(y: bytes):
    """The byte chain rule (with the end of text) equals the brute-force sum over every valid
    tokenization of y of P(t) P(EOS | t)."""
    lm = byte_lm()
    chain = sum(float(lm.next_byte_logprobs(y[:i])[y[i]]) for i in range(len(y)))
    chain += float(lm.next_byte_logprobs(y)[END])
    encodings = _all_valid_tokenizations(lm, y)
    assert encodings and sorted(encodings) == sorted(lm.exact_encodings(y))
    brute = [lm.sequence_logprob(t) + float(lm.next_token_logprobs(t)[lm.eos]) for t in encodings]
    assert math.isfinite(chain)
    assert chain == pytest.approx(float(torch.logsumexp(torch.tensor(brute), 0)), abs=1e-6)


@pytest.mark.parametrize("y", [b"def f", b"a = b", b"if x:"])
def test_chain_rule_equals_the_sum_over_tokenizations(y):
    _check_chain_rule(y)


def test_prefix_probability_is_the_cover_sum_and_mid_token_prefixes_work():
    lm = byte_lm()
    # "de" ends inside the token "def": the cover holds overhanging tokens
    assert any(len(b"".join(lm.token_bytes[s] for s in t)) > 2 for t in lm.cover(b"de"))
    full = lm.prefix_logprob(b"def")
    step = lm.prefix_logprob(b"de") + float(lm.next_byte_logprobs(b"de")[ord("f")])
    assert full == pytest.approx(step, abs=1e-9)


def test_bad_input_fails_clearly():
    with pytest.raises(TypeError, match="bytes or str"):
        byte_lm().next_byte_logprobs(123)
    word = Tokenizer(models.WordLevel({"a": 0, "<eos>": 1}, unk_token="<eos>"))
    tok = PreTrainedTokenizerFast(tokenizer_object=word, eos_token="<eos>")
    with pytest.raises(ValueError, match="byte-level BPE"):
        ByteLM(byte_lm().model, tok)


@pytest.mark.parametrize("text", ["def f(x):\n    return x", "a  b", "x = 'it''s'  # done\n\n"])
def test_incremental_validity_equals_re_encoding_everything(text):
    lm = byte_lm()
    ids = tuple(lm.tokenizer(text, add_special_tokens=False)["input_ids"])
    for k in (0, 1, len(ids) // 2, len(ids)):
        t = ids[:k]
        fast = [lm.valid_next(t, s) for s in lm.token_bytes]
        slow = [lm._valid_uncached(t + (s,)) for s in lm.token_bytes]
        assert fast == slow and any(fast)


def test_greedy_byte_generation_follows_the_exact_distribution():
    lm = byte_lm()
    prompt = b"def f(x):\n    return "
    out = lm.generate(prompt, max_new_bytes=6)
    assert len(out) == 6
    for i in range(len(out)):  # each byte is the argmax of the exact distribution
        assert out[i] == int(lm.next_byte_logprobs(prompt + out[:i]).argmax())
    a = lm.generate(prompt, 6, temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert a == lm.generate(prompt, 6, temperature=1.0, generator=torch.Generator().manual_seed(0))
    with pytest.raises(TypeError, match="bytes or str"):
        lm.generate(["x"])
    with pytest.raises(ValueError, match="generator"):
        lm.generate(prompt, 4, temperature=1.0)


def test_a_token_context_equals_the_same_bytes_as_a_head():
    lm = byte_lm()
    head = "import os\n"
    context = tuple(lm.tokenizer(head, add_special_tokens=False)["input_ids"])
    for tail in (b"de", b"def f"):
        whole = lm.next_byte_logprobs(head.encode() + tail)
        conditioned = lm.next_byte_logprobs(tail, context=context)
        assert torch.allclose(whole.exp(), conditioned.exp(), atol=1e-12)
    assert lm._head(b"import os\nde") == (context, len(head))


@pytest.mark.parametrize("prefix", [b"x\n\n#", b"a = 1\n\n\n    de", b"if x:\n        \n    y"])
def test_head_is_the_canonical_tokens_before_the_last_chunk(prefix):
    """Runs of whitespace split differently at the end of a string ("\\n\\n" alone is one
    chunk, before "#" two): the head must come from the whole prefix's encoding."""
    lm = byte_lm()
    head, start = lm._head(prefix)
    assert lm._bytes(head) == prefix[:start]
    assert lm._encode(prefix.decode())[:len(head)] == head
    assert math.isclose(float(lm.next_byte_logprobs(prefix).exp().sum()), 1.0, abs_tol=1e-9)


@pytest.mark.parametrize("y", [b"x\n\n#", b"a\n\nb", b"f(x)\n\n\ny"])
def test_text_after_blank_lines_has_probability(y):
    """"x\\n\\n" alone is x|\\n\\n but "x\\n\\n#" is x|\\n|\\n|#: the model must be allowed to
    reach the second through a prefix that is not valid on its own (it was -inf before)."""
    _check_chain_rule(y)
