"""oneDNN pre-packed linears: the same function as nn.Linear, rows independent of how many
are computed together (what float32 losslessness needs), refused where they do not apply."""
import pytest
import torch

from tokenworks.models import load
from tokenworks.speculative import generate
from tokenworks.speculative.packed import PackedLinear, pack_linears


def test_packed_linear_matches_and_rows_do_not_depend_on_the_batch():
    g = torch.Generator().manual_seed(0)
    for n_in, n_out, bias in [(64, 176, False), (576, 1536, True), (33, 7, True)]:
        lin = torch.nn.Linear(n_in, n_out, bias=bias)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(n_out, n_in, generator=g))
        packed = PackedLinear(lin)
        x = torch.randn(1, 9, n_in, generator=g)
        with torch.no_grad():
            assert torch.allclose(packed(x), lin(x), atol=1e-4, rtol=1e-4)
            together = packed(x)
            for i in range(9):  # one row at a time, as a decoding step computes it
                assert torch.equal(packed(x[:, i:i + 1]), together[:, i:i + 1])


def test_packed_model_decodes_like_the_plain_one():
    plain, tok = load("tw-micro", device="cpu", dtype=torch.float32)
    packed, _ = load("tw-micro", device="cpu", dtype=torch.float32)
    assert pack_linears(packed) == 2 * 7 + 1  # 7 per layer, and the LM head
    ids = tok("def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n")["input_ids"]
    want = generate(plain, ids, "greedy", max_new_tokens=24).tokens
    assert generate(packed, ids, "greedy", max_new_tokens=24).tokens == want
    for method in ("token_recycling", "lookahead", "prompt_lookup"):
        assert generate(packed, ids, method, max_new_tokens=24).tokens == want


def test_packing_refuses_other_dtypes():
    model, _ = load("tw-micro", device="cpu", dtype=torch.float64)
    with pytest.raises(ValueError, match="packs float32 weights on the CPU"):
        pack_linears(model)
