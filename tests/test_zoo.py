"""Zoo building blocks: FIM formats, the retrieval curriculum, training rows, bits per byte."""
import math
import random
import re

import pytest
import torch

from tokenworks.models import load
from tokenworks.models.zoo import (EOS, FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, bits_per_byte, fim_text,
                            repeat_spans, retrieval_probe, training_rows, with_constants)

TEXT = "def f(x):\n    return x + 1\n\nprint(f(2))\n"


@pytest.mark.parametrize("seed", range(20))
def test_fim_text_is_a_permutation_of_the_document(seed):
    out = fim_text(TEXT, random.Random(seed))
    assert out.startswith(FIM_PREFIX) and out.count(FIM_MIDDLE) == 1 and out.count(FIM_SUFFIX) == 1
    if out.startswith(FIM_PREFIX + FIM_SUFFIX):  # SPM: suffix, then prefix + middle
        suffix, rest = out[len(FIM_PREFIX + FIM_SUFFIX):].split(FIM_MIDDLE)
        assert rest + suffix == TEXT
    else:  # PSM: prefix, suffix, middle
        prefix, rest = out[len(FIM_PREFIX):].split(FIM_SUFFIX)
        suffix, middle = rest.split(FIM_MIDDLE)
        assert prefix + middle + suffix == TEXT


def test_both_fim_formats_occur():
    outs = [fim_text(TEXT, random.Random(s)) for s in range(50)]
    spm = sum(o.startswith(FIM_PREFIX + FIM_SUFFIX) for o in outs)
    assert 10 < spm < 40


def test_constants_are_defined_before_use():
    lines = [f"x{i} = {i}" for i in range(50)]
    out = with_constants(lines, 5, random.Random(0))
    assert [l for l in out if l.startswith("x")] == lines  # the code itself is untouched
    defs = {l.split(" = ")[0]: (i, l.split(" = ")[1].strip("'"))
            for i, l in enumerate(out) if not l.startswith("x") and " = '" in l}
    assert defs
    for name, (at, value) in defs.items():
        uses = [i for i, l in enumerate(out) if re.search(rf"\b{name}\b", l) and i != at]
        assert uses and all(i > at and value in out[i] for i in uses)


def test_long_range_uses_fall_in_the_last_tenth():
    lines = [f"x{i} = {i}" for i in range(100)]
    out = with_constants(lines, 6, random.Random(1), long_range=1.0)
    code_seen = 0
    for line in out:
        if line.startswith("x"):
            code_seen += 1
        elif " = '" not in line:  # a use: at least 90 of the 100 code lines come before it
            assert code_seen >= 90


@pytest.mark.parametrize("seed", range(10))
def test_repeat_spans_copies_earlier_tokens_later(seed):
    row = list(range(300))  # distinct tokens: any repeat is a copy
    out = repeat_spans(row, random.Random(seed))
    assert len(out) == len(row) and out != row
    changed = [i for i in range(len(row)) if out[i] != row[i]]
    assert all(out[i] < i for i in changed)  # every overwritten token comes from earlier
    assert any(out[i + 1] == out[i] + 1 for i in changed)  # copied as spans, in order
    assert repeat_spans(row, random.Random(seed)) == out


def test_retrieval_rows_keep_every_constant_use():
    _, tok = load("tw-micro", device="cpu")
    texts = [f"value_{i} = compute({i}, {i + 1})\n" * 40 for i in range(20)]
    ids = tok(texts)["input_ids"]
    rows = training_rows(ids, texts, tok, 256, random.Random(0), retrieval_rate=1.0)
    for _ in range(20):
        text = tok.decode(next(rows))
        names = re.findall(r"^([A-Z]+_\d+) = '", text, re.M)
        assert names
        for name in names:  # defined once, used at least once, inside the row
            assert len(re.findall(rf"\b{name}\b", text)) >= 2, (name, text[-300:])


def test_training_rows_are_deterministic_and_shaped():
    _, tok = load("tw-micro", device="cpu")
    texts = [TEXT * 5, "import os\n" * 30, "class A:\n    pass\n" * 10]
    ids = tok(texts)["input_ids"]
    rows = lambda: training_rows(ids, texts, tok, 64, random.Random(3), retrieval_rate=0.5,
                                 repeat_rate=0.5)
    a, b = rows(), rows()
    first = [next(a) for _ in range(12)]
    assert first == [next(b) for _ in range(12)]
    assert all(len(r) == 65 for r in first)
    assert any(tok.convert_tokens_to_ids(EOS) in r for r in first)


def test_bits_per_byte_of_a_uniform_model_is_log2_vocab_over_bytes_per_token():
    model, tok = load("tw-micro", device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()  # zero logits: uniform over the vocabulary
    res = bits_per_byte(model, tok, [TEXT * 20], seq_len=64)
    expected = res["tokens"] * math.log2(len(tok)) / res["bytes"]
    assert res["bits_per_byte"] == pytest.approx(expected, rel=1e-5)
    assert res["nats_per_token"] == pytest.approx(math.log(len(tok)), rel=1e-5)


def test_retrieval_probe_context_and_scoring():
    model, tok = load("tw-micro", device="cpu")
    texts = [TEXT * 30, "import os\nimport sys\n" * 40]
    res = retrieval_probe(model, tok, texts, distance=200, n_probes=3, seed=1)
    assert res["n"] == 3 and 0 <= res["accuracy"] <= 1
    for ex in res["examples"]:
        assert 180 < ex["context_tokens"] < 320
        assert ex["ok"] == ex["completion"].startswith(ex["expected"] + "'")
