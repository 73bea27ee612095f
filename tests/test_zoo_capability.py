"""The committed zoo does what its model cards say: the probes re-run to the same numbers."""
import json

import pytest

from tokenworks.models.corpus import stdlib_corpus
from tokenworks.models import ZOO_DIR, load
from tokenworks.decoding.arith import split
from tokenworks.models.zoo import arith_accuracy, bits_per_byte, copy_probe, retrieval_probe

CARD = json.loads((ZOO_DIR / "tw-code" / "model_card.json").read_text())


@pytest.fixture(scope="module")
def tw_code():
    return load("tw-code", device="cpu")


@pytest.fixture(scope="module")
def test_texts():
    return stdlib_corpus().texts("test")


@pytest.mark.parametrize("probe", CARD["retrieval_probes"], ids=lambda p: f"{p['format']}-distance{p['distance']}")
def test_retrieval_probe_matches_the_card(tw_code, test_texts, probe):
    model, tok = tw_code
    res = retrieval_probe(model, tok, test_texts, probe["distance"], n_probes=probe["n"],
                          distractors=probe["distractors"], shifted=probe["format"] == "shifted")
    # greedy argmax may flip on a near-tie under another thread count: allow one probe
    assert abs(res["accuracy"] - probe["accuracy"]) <= 1 / probe["n"] + 1e-9
    assert all(abs(e["context_tokens"] - probe["distance"]) < 120 for e in res["examples"])


def test_test_split_bits_per_byte_matches_the_card(tw_code, test_texts):
    model, tok = tw_code
    res = bits_per_byte(model, tok, test_texts, 512)
    assert res["bits_per_byte"] == pytest.approx(CARD["test"]["bits_per_byte"], rel=1e-4)


def test_copy_probe_matches_the_card(tw_code, test_texts):
    model, tok = tw_code
    res = copy_probe(model, tok, test_texts)
    for kind in ("code", "random"):
        for copy in ("first_copy", "second_copy"):
            assert res[kind][copy] == pytest.approx(CARD["copy_probe"][kind][copy], abs=0.01)


def test_tw_code_meets_the_retrieval_target():
    """Issue 2's bar: at least 90% of probes at about 1,000 and about 1,900 tokens, in the
    curriculum's format; the card also holds the shifted format at both distances (0% there:
    the README says what that means)."""
    formats = {f: {p["distance"]: p for p in CARD["retrieval_probes"] if p["format"] == f} for f in ("card", "shifted")}
    assert set(formats["card"]) == set(formats["shifted"]) == {1000, 1900}
    assert all(p["accuracy"] >= 0.9 and p["n"] >= 20 for p in formats["card"].values())


def test_tw_arith_is_right_often_but_not_always():
    model, tok = load("tw-arith", device="cpu")
    card = json.loads((ZOO_DIR / "tw-arith" / "model_card.json").read_text())["arith_accuracy"]
    res = arith_accuracy(model, tok, split("validation"))
    assert abs(res["accuracy"] - card["validation"]["accuracy"]) <= 1 / res["n"] + 1e-9
    assert 0.4 <= card["test"]["accuracy"] <= 0.8 and card["test"]["n"] >= 500
