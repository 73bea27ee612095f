"""Experiments of the transplant notebook (``tokenworks.transplant.tasks``): start tokens follow
each model's training convention, bits per byte after a BOS scores every token and equals the
sum of log-probabilities, equations are sampled reproducibly, and the verdict reads the criteria
it states."""
import math

import pytest
import torch

from tokenworks.models import load
from tokenworks.transplant.tasks import (bits_per_byte, equation_items, pad_id, start_token, transplanted_start,
                                         verdict)
from tokenworks.verdicts import judge
from test_omp_transplant import tokenizer


def test_start_tokens_follow_each_models_convention():
    gemma, smollm = tokenizer("gemma3-270m"), tokenizer("smollm2-135m")
    assert start_token(gemma) == gemma.bos_token_id == 2  # Gemma-3 is trained after <bos>
    assert start_token(smollm) is None                    # SmolLM2 with none
    assert transplanted_start(gemma, smollm) == smollm.bos_token_id  # Gemma speaking SmolLM2 keeps a BOS
    assert transplanted_start(smollm, gemma) is None


def test_a_base_with_a_bos_needs_a_donor_with_one():
    class NoBos:
        bos_token_id = None
    with pytest.raises(ValueError, match="bos_token"):
        transplanted_start(tokenizer("gemma3-270m"), NoBos())


def test_generation_pads_with_pad_id_0_and_else_with_eos():
    class Tok:
        eos_token_id = 7
    tok = Tok()
    tok.pad_token_id = 0
    assert pad_id(tok) == 0
    tok.pad_token_id = None
    assert pad_id(tok) == 7


@torch.no_grad()
def test_bits_per_byte_after_a_bos_scores_every_token():
    model, tok = load("tw-micro", device="cpu")
    text = "def f(x):\n    return x + 1\n"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    out = bits_per_byte(model, tok, [text], seq_len=64, bos=0)
    logp = torch.log_softmax(model(torch.tensor([[0] + ids])).logits[0, :-1], -1)
    nll = -logp.gather(1, torch.tensor(ids)[:, None]).sum().item()
    assert out["tokens"] == len(ids) and out["bytes"] == len(tok.decode(ids).encode())
    assert out["bits_per_byte"] == pytest.approx(nll / math.log(2) / out["bytes"], rel=1e-5)
    plain = bits_per_byte(model, tok, [text], seq_len=64)  # no BOS: the first token is context only
    assert plain["tokens"] == len(ids) - 1


def test_equation_items_are_seeded_and_well_formed():
    a, b = equation_items(5, shots=3, seed=1), equation_items(5, shots=3, seed=1)
    assert a == b and a != equation_items(5, shots=3, seed=2)
    for item in a:
        lines = item["prompt"].split("\n")
        assert len(lines) == 4 and all("=" in l for l in lines) and lines[-1].endswith(" =")
        assert item["answer"] and "=" not in item["answer"]
    with pytest.raises(ValueError, match="equations"):
        equation_items(10**6)


def rows(omp, mean):
    return [{"model": m, "corpus": c, "bits_per_byte": v} for m, vals in (("base", (0.9, 1.9)), ("omp", omp), ("mean", mean))
            for c, v in zip(("code", "essays"), vals)]


def eq(base, omp):
    return {"base": {"accuracy": base, "n": 40}, "omp": {"accuracy": omp, "n": 40}}


def held(claims):
    return [c.held for c in claims]


def test_verdict_reads_its_criteria():
    assert judge(verdict(rows((1.0, 2.0), (1.1, 2.1)), eq(0.5, 0.45), "base", ["omp", "mean"], True)) == "reproduced"
    worse_on_one = verdict(rows((1.0, 2.2), (1.1, 2.1)), eq(0.5, 0.45), "base", ["omp", "mean"], True)
    assert held(worse_on_one) == [False, True] and judge(worse_on_one) == "partly reproduced"
    assert "essays: OMP 2.200 bits/byte vs. mean 2.100 (base 1.900)" in worse_on_one[0].ours
    assert worse_on_one[0].proxy and worse_on_one[1].proxy  # both metrics stand in for the paper's benchmarks
    lost = verdict(rows((1.0, 2.2), (1.1, 2.1)), eq(0.5, 0.2), "base", ["omp", "mean"], True)
    assert judge(lost) == "not reproduced"
    # the tolerance's edge: 10 points lost still counts as kept
    assert held(verdict(rows((1.0, 2.0), (1.1, 2.1)), eq(0.5, 0.4), "base", ["omp", "mean"], True)) == [True, True]
    # digit schemes differ: the paper predicts the loss
    assert judge(verdict(rows((1.0, 2.0), (1.1, 2.1)), eq(0.5, 0.2), "base", ["omp", "mean"], False)) == "reproduced"
    # a base that solves nothing has nothing to lose: the claim is not measured
    unmeasured = verdict(rows((1.0, 2.0), (1.1, 2.1)), eq(0.05, 0.0), "base", ["omp", "mean"], True)
    assert held(unmeasured) == [True, None] and judge(unmeasured) == "reproduced"
    with pytest.raises(ValueError, match="compares omp"):
        verdict(rows((1.0, 2.0), (1.1, 2.1)), eq(0.5, 0.5), "base", ["mean"], True)
