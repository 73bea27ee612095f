"""The zoo loads offline through tokenworks.models.load; bad names fail at once and clearly."""
import json
import time

import pytest
import torch

from tokenworks.models import ZOO, ZOO_DIR, load, resolve_device


def test_every_zoo_model_has_a_checkpoint_and_card():
    for name in ZOO:
        card = json.loads((ZOO_DIR / name / "model_card.json").read_text())
        assert card["name"] == name and card["parameters"] > 0
        assert 0 < card["test"]["bits_per_byte"] < 8
        assert (ZOO_DIR / name / "model.safetensors").stat().st_size < 32e6


def test_zoo_fits_the_size_budget():
    total = sum(p.stat().st_size for p in ZOO_DIR.rglob("*.safetensors"))
    assert total <= 64e6


def test_load_micro_matches_its_tokenizer_and_is_deterministic():
    model, tok = load("tw-micro", device="cpu")
    assert model.config.vocab_size == len(tok)
    ids = tok("def add(a, b):\n    return", return_tensors="pt")["input_ids"]
    assert tok.decode(ids[0]) == "def add(a, b):\n    return"
    with torch.no_grad():
        a, b = model(ids).logits, model(ids).logits
    assert torch.equal(a, b) and a.dtype == torch.float32


def test_kv_cache_forward_equals_full_forward():
    model, tok = load("tw-micro", device="cpu")
    ids = tok("import os\nprint(os.getcwd())\n", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        full = model(ids).logits
        first = model(ids[:, :-3], use_cache=True)
        rest = model(ids[:, -3:], past_key_values=first.past_key_values).logits
    assert torch.allclose(full[:, -3:], rest, atol=1e-5)


def test_fim_tokens_are_single_special_tokens():
    _, tok = load("tw-micro", device="cpu")
    for t in ("<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|endoftext|>"):
        assert len(tok(t)["input_ids"]) == 1


@pytest.mark.parametrize("name", ["gpt-17", "tw-codex"])
def test_unknown_name_lists_the_zoo(name):
    start = time.time()
    with pytest.raises(ValueError, match="tw-code") as err:
        load(name)
    assert "hub id" in str(err.value) and time.time() - start < 5


def test_hub_id_offline_fails_fast_and_clearly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.time()
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE=1"):
        load("no-such-org/no-such-model")
    assert time.time() - start < 30


def test_bad_device():
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu9")


def _no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda")])
def test_cuda_without_cuda_says_what_to_pass(monkeypatch, device):
    _no_cuda(monkeypatch)
    with pytest.raises(ValueError, match="CUDA is not available") as err:
        load("tw-micro", device=device)
    assert "device='cpu'" in str(err.value) and "available: cpu" in str(err.value)
    assert resolve_device("auto") == torch.device("cpu")


def test_a_cuda_index_past_the_devices_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ValueError, match="cuda:3.*available: cpu, cuda:0, cuda:1"):
        resolve_device("cuda:3")


@pytest.mark.parametrize("device", ["gpu", "mps", "meta", "xla", "", 3.5, None])
def test_unknown_devices_are_refused(device):
    with pytest.raises(ValueError, match="unknown device"):
        load("tw-micro", device=device)
