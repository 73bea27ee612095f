"""Adapter: kvpress 0.5.5's own tests against our presses, on tw-micro.

``make test`` unpacks kvpress's sdist (its ``tests/`` package; never committed) into
``build/kvpress-tests`` and copies this file there as the root ``conftest.py``. It

- swaps kvpress's hub test model (``MaxJeblick/llama2-0b-unit-test``) for tw-micro
  (``tokenworks.models.load``), with ``cache_positions`` installed for the session: kvpress
  0.5.5's hooks read the ``cache_position`` keyword that transformers 5.23 no longer passes;
- registers our presses in the lists kvpress's tests iterate over: ``default_presses``
  (``test_presses_run``: alone and in kvpress's wrappers) and ``SHORT_CONTEXT_CASES``
  (``test_compress_never_empties_cache_on_short_context``);
- leaves out, with the reason, the tests that cannot apply here (``EXCLUDED``, ``EXCLUDED_PRESSES``:
  hub or GitHub downloads, GPUs, the hub model's own sizes).
"""
import contextlib
import copy
import os
import types

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

import tests.default_presses  # noqa: E402  (kvpress's, from the sdist)
import tests.fixtures  # noqa: E402
from tokenworks.kvcache import EMSPress, StreamingLLMPress, cache_positions  # noqa: E402
from tokenworks.models import load  # noqa: E402

# path (file, or file::test) -> why it does not run here
EXCLUDED = {
    "tests/integration": "RULER from the hub, 8B models, GPU",
    "tests/presses/test_flash_attention.py": "flash-attention 2 on a GPU",
    "tests/test_evaluation_utils.py": "kvpress's evaluation scripts, not in the wheel",
    "tests/presses/test_qfilters_press.py": "QFilter weights from the hub",
    "tests/presses/test_key_rerotation_press_rope.py::test_rerotate_keys_is_matches_reference_implementation[full-yarn]":
        "its reference builds LlamaRotaryEmbedding(device=...), which transformers 5.23 no longer takes",
    "tests/presses/test_key_rerotation_press_rope.py::test_rerotate_keys_is_matches_reference_implementation[half-yarn]":
        "its reference builds LlamaRotaryEmbedding(device=...), which transformers 5.23 no longer takes",
    "tests/test_pipeline.py::test_pipeline_answer_is_correct": "h2o-danube3-500m from the hub",
    "tests/test_pipeline.py::test_pipeline_with_quantized_cache": "h2o-danube3-500m from the hub",
    "tests/test_pipeline.py::TestPipelineFA2": "Llama 3.2 with flash-attention 2 on a GPU",
    "tests/test_pipeline.py::test_pipeline": "asserts the hub model's tokenizer lengths (23 -> 13 tokens)",
    "tests/test_pipeline.py::test_pipeline_single_or_no_question": "asserts the hub model's tokenizer lengths",
    "tests/test_pipeline.py::test_pipeline_compresses_context": "asserts the hub model's tokenizer lengths",
    "tests/test_decoding_compression.py::test_decoding_press_equivalence[CAMPress]":
        "kvpress's CAMPress answers differently alone and inside PrefillDecodingPress on tw-micro "
        "(a kvpress press our presses do not touch; DecodingPress's equivalence passes)",
    "tests/test_generate.py": "compares the pipeline (bos_token + context compressed, then '\\n' fed uncompressed) "
                              "with model.generate (context + '\\n' compressed, no BOS from tw-micro's tokenizer): "
                              "different inputs here; tests/test_ems.py and test_streamingllm.py check generate",
    "tests/test_per_layer_compression_press.py": "asserts the hub model's head_dim (6; tw-micro's is 16)",
    "tests/presses/test_duo_attention_press.py": "downloads DuoAttention's patterns from GitHub",
    "tests/presses/test_ea_with_stats.py": "downloads ExpectedAttention's statistics from the hub",
}
# presses of default_presses that download what they need -> why; their parametrisations are left out
EXCLUDED_PRESSES = {"ExpectedAttentionStatsPress": "its statistics from the hub", "QFilterPress": "its filters from the hub"}

OUR_PRESSES = [  # as kvpress lists its presses: kwargs ordered easy to hard
    {"cls": EMSPress, "kwargs": [{"compression_ratio": 0.2}, {"compression_ratio": 0.8}]},
    {"cls": StreamingLLMPress, "kwargs": [{"compression_ratio": 0.2}, {"compression_ratio": 0.8}]},
]
tests.default_presses.default_presses.extend(OUR_PRESSES)

_session = contextlib.ExitStack()


def tw_micro(attn_implementation="sdpa"):
    """tw-micro (float32 on the CPU, as kvpress's tests load theirs) with cache_positions."""
    model, tokenizer = load("tw-micro", device="cpu")
    model.set_attn_implementation(attn_implementation)
    _session.enter_context(cache_positions(model))
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.bos_token = tokenizer.eos_token  # kvpress's pipeline prefixes contexts with it
    return model, tokenizer


@pytest.fixture(scope="session", name="unit_test_model")
def unit_test_model():
    return tw_micro()[0]


@pytest.fixture(scope="session", name="unit_test_model_output_attention")
def unit_test_model_output_attention():
    return tw_micro("eager")[0]


@pytest.fixture(scope="session", name="kv_press_unit_test_pipeline")
def kv_press_unit_test_pipeline():
    from kvpress.pipeline import KVPressTextGenerationPipeline
    model, tokenizer = tw_micro()
    return KVPressTextGenerationPipeline(model=model, tokenizer=tokenizer, device="cpu")


# the test modules import these from tests.fixtures after this file is loaded
tests.fixtures.unit_test_model = unit_test_model
tests.fixtures.unit_test_model_output_attention = unit_test_model_output_attention
tests.fixtures.kv_press_unit_test_pipeline = kv_press_unit_test_pipeline


def hub_pipeline(task, model, **kwargs):
    """transformers.pipeline as test_decoding_compression calls it for the hub test model."""
    from kvpress.pipeline import KVPressTextGenerationPipeline
    if task != "kv-press-text-generation" or model.lower() != "maxjeblick/llama2-0b-unit-test":
        raise ValueError(f"the adapter maps only kvpress's hub test model to tw-micro, not {model!r}")
    model, tokenizer = tw_micro()
    return KVPressTextGenerationPipeline(model=model, tokenizer=tokenizer, device="cpu")


import tests.test_decoding_compression  # noqa: E402  (pytest reuses the module when it collects it)

tests.test_decoding_compression.pipeline = hub_pipeline


class ShortContextEMS(EMSPress):
    """EMS on the short-context test's random tensors: that test passes no forward's kwargs,
    so the rotary embedding of a matching Llama attention is supplied (as kvpress's own Test*
    presses supply what a hub download would)."""

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        positions = torch.arange(keys.shape[2])[None]
        return super().compress(module, hidden_states, keys, values, attentions,
                                {**kwargs, "position_embeddings": module.rotary_emb(keys, positions)})


def _llama_attention(head_dim, num_key_value_heads):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaAttention, LlamaRotaryEmbedding
    config = LlamaConfig(hidden_size=head_dim * num_key_value_heads, num_attention_heads=num_key_value_heads,
                         num_key_value_heads=num_key_value_heads, head_dim=head_dim, attn_implementation="sdpa")
    module = LlamaAttention(config, layer_idx=0)
    module.rotary_emb = LlamaRotaryEmbedding(config)
    return module


def _our_short_context_cases(case_type):
    none = lambda *shape: None  # noqa: E731
    return [case_type("ours_ems", lambda r: ShortContextEMS(compression_ratio=r), _llama_attention, none),
            case_type("ours_streaming", lambda r: StreamingLLMPress(compression_ratio=r),
                      lambda d, h: types.SimpleNamespace(head_dim=d), none)]


# pytest imports this module under the same name when it collects it, and the parametrize
# mark of test_compress_never_empties_cache_on_short_context holds this very list
import tests.presses.test_scorer_press as scorer_tests  # noqa: E402

scorer_tests.SHORT_CONTEXT_CASES.extend(_our_short_context_cases(scorer_tests.ShortContextCase))


def pytest_ignore_collect(collection_path, config):
    """Files left out are not even imported (some import what the wheel lacks)."""
    return collection_path.relative_to(config.rootpath).as_posix() in EXCLUDED or None


def _excluded(item) -> bool:
    params = getattr(getattr(item, "callspec", None), "params", {})  # default_presses entries: {"cls": ...}
    presses = [p["cls"].__name__ for p in params.values() if isinstance(p, dict) and "cls" in p]
    return any(item.nodeid.startswith(path) for path in EXCLUDED) or any(p in EXCLUDED_PRESSES for p in presses)


def pytest_collection_modifyitems(config, items):
    excluded = [item for item in items if _excluded(item)]
    if excluded:
        config.hook.pytest_deselected(items=excluded)
        items[:] = [item for item in items if item not in excluded]


def pytest_report_header(config):
    return (["kvpress's tests on tw-micro with our presses; excluded:"] + [f"  {p}: {why}" for p, why in EXCLUDED.items()]
            + [f"  {name} in default_presses: {why}" for name, why in EXCLUDED_PRESSES.items()])


def pytest_unconfigure(config):
    _session.close()
