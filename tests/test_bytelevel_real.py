"""ByteLM on the real tokenizers: SmolLM2's byte-level BPE and Gemma-3's SentencePiece
byte-fallback BPE (``▁`` for a space, ``<0xNN>`` byte tokens, newline runs as added tokens).
The exactness checks run a tiny random Gemma-3 (two layers, a sliding window of 4) on Gemma-3's
real tokenizer: the invariants hold for any model, and its forward is cheap."""
import functools
import json
import math

import pytest
import torch
from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

from tokenworks.bytelevel import END, ByteLM
from tokenworks.bytelevel.bytelm import piece_bytes, tokenizer_kind
from tokenworks.models.packaged import converted

TEXTS = ["def foo(x):\n    return  x+1\n\n\n# é 日本", "\U0001F9EC\u0F8C z\t\n  <b>ok</b>", "  \n\n"]


@functools.cache
def tokenizer(name):
    return AutoTokenizer.from_pretrained(converted(name))


@functools.cache
def tiny_gemma():
    """A random Gemma-3 with a sliding window of 4 tokens on layer 0, over Gemma-3's vocabulary."""
    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=len(tokenizer("gemma3-270m")), hidden_size=16,
                              intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                              num_key_value_heads=1, head_dim=8, sliding_window=4,
                              layer_types=["sliding_attention", "full_attention"])
    return Gemma3ForCausalLM(config).double().eval()


@functools.cache
def gemma_lm(split=True):
    lm = ByteLM(tiny_gemma(), tokenizer("gemma3-270m"))
    if not split:
        lm._split = None  # the reference: every check re-encodes everything, nothing cached
    return lm


@pytest.mark.parametrize("name", ["gemma3-270m", "smollm2-135m"])
@pytest.mark.parametrize("text", TEXTS)
def test_token_bytes_spell_the_text(name, text):
    """The bytes of a text's tokens are the text's bytes (Gemma-3: spaces as ``▁``, a
    character outside the vocabulary as ``<0xNN>`` byte tokens)."""
    tok = tokenizer(name)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    kind = "byte-fallback" if name.startswith("gemma") else "byte-level"
    assert b"".join(piece_bytes(p, kind) for p in tok.convert_ids_to_tokens(ids)) == text.encode()


def test_gemma_vocabulary_bytes_and_start():
    lm, tok = gemma_lm(), tokenizer("gemma3-270m")
    assert lm.token_bytes[tok.convert_tokens_to_ids("<0xE0>")] == b"\xe0"
    assert lm.token_bytes[tok.convert_tokens_to_ids("▁▁")] == b"  "
    assert lm.token_bytes[tok.convert_tokens_to_ids("\n\n")] == b"\n\n"  # an added token
    for special in ("<bos>", "<eos>", "<pad>", "<start_of_turn>", "<unused4>"):
        assert tok.convert_tokens_to_ids(special) not in lm.token_bytes
    assert (lm.start, lm.eos, lm._split) == (tok.bos_token_id, tok.eos_token_id, "lines")


@pytest.mark.parametrize("prefix", [b"", b"de", b"x = 1\n\n  re"])
def test_gemma_next_byte_probabilities_sum_to_one(prefix):
    logp = gemma_lm().next_byte_logprobs(prefix)
    assert math.isclose(float(logp.exp().sum()), 1.0, abs_tol=1e-9)


def test_gemma_chain_rule_equals_the_sum_over_tokenizations():
    """P(y, end) by the byte chain rule equals the sum over every valid tokenization of y
    (enumerated over the whole vocabulary) of P(t) P(EOS | t)."""
    lm, y = gemma_lm(), b"a b"
    chain = sum(float(lm.next_byte_logprobs(y[:i])[y[i]]) for i in range(len(y)))
    chain += float(lm.next_byte_logprobs(y)[END])
    encodings = []

    def walk(at, t):
        if at == len(y):
            encodings.append(t) if lm._valid_uncached(t) else None
            return
        for s, b in lm.token_bytes.items():
            if y.startswith(b, at):
                walk(at + len(b), t + (s,))
    walk(0, ())
    assert encodings and sorted(encodings) == sorted(lm.exact_encodings(y))
    brute = [lm.sequence_logprob(t) + float(lm.next_token_logprobs(t)[lm.eos]) for t in encodings]
    assert chain == pytest.approx(float(torch.logsumexp(torch.tensor(brute, dtype=torch.float64), 0)), abs=1e-9)


def test_gemma_line_cut_and_sliding_window_cache_equal_re_encoding_everything():
    """Splitting at newline runs (and caching the head's keys and values, past the sliding
    window of 4) gives the distributions of re-encoding everything with full forwards."""
    tok = tokenizer("gemma3-270m")
    context = tuple(tok("import os\nimport sys\n\n\ndef main(argv):", add_special_tokens=False)["input_ids"])
    assert len(context) > 2 * 4
    prefix = b"\n    x = 1\n    re"  # a newline run, a line, then a cut inside a token
    fast = gemma_lm().next_byte_logprobs(prefix, context)
    slow = gemma_lm(split=False).next_byte_logprobs(prefix, context)
    assert torch.allclose(fast.exp(), slow.exp(), atol=1e-12)
    assert gemma_lm()._head(b"\n    x = 1\n    re")[1] == len(b"\n    x = 1\n")


def test_a_dummy_prefix_tokenizer_is_refused():
    """Llama-2's decoder strips the dummy-prefix space (a ``Strip`` step): refused, not
    silently mis-spelled."""
    llama2 = {"model": {"type": "BPE", "byte_fallback": True},
              "decoder": {"type": "Sequence", "decoders": [
                  {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
                  {"type": "ByteFallback"}, {"type": "Fuse"},
                  {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}}
    with pytest.raises(ValueError, match="dummy prefix"):
        tokenizer_kind(llama2)
    assert tokenizer_kind(json.loads(tokenizer("gemma3-270m").backend_tokenizer.to_str())) == "byte-fallback"
