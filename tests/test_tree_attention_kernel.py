"""The tree-attention kernel equals SDPA with the dense 4D mask (Triton interpreter on the CPU)."""
import random

import pytest
import torch

from tokenworks.kernels.tree_attention import (ancestor_bits, tree_attention,
                                               tree_attention_reference)
from tokenworks.speculative.tree import DraftTree


def random_tree(T: int, rng: random.Random) -> DraftTree:
    return DraftTree([0] * T, [-1] + [rng.randrange(i) for i in range(1, T)])


@pytest.mark.parametrize("T,L,Hq,Hkv,D", [
    (1, 0, 4, 4, 32),      # a lone root, empty cache
    (1, 37, 8, 2, 64),     # single-token decode, GQA 4
    (7, 100, 8, 1, 16),    # GQA 8, short head
    (33, 5, 4, 4, 48),     # head dim not a power of two
    (65, 129, 8, 2, 32),   # two bit words
    (81, 250, 8, 1, 64),   # Token Recycling's tree
    (128, 63, 4, 1, 32),   # the largest tree
])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 1e-3)])
def test_matches_sdpa(T, L, Hq, Hkv, D, dtype, tol):
    rng = random.Random(T * 1000 + L)
    torch.manual_seed(T + L)
    tree = random_tree(T, rng)
    q = torch.randn(2, Hq, T, D, dtype=dtype)
    k = torch.randn(2, Hkv, L + T, D, dtype=dtype)
    v = torch.randn(2, Hkv, L + T, D, dtype=dtype)
    anc = tree.ancestor_mask()
    ref = tree_attention_reference(q.float(), k.float(), v.float(), anc)
    out = tree_attention(q, k, v, ancestor_bits(anc))
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), ref, atol=tol, rtol=tol)


def test_chain_is_causal_attention():
    """A chain tree is ordinary causal attention over cache + chain."""
    T, L = 9, 20
    q, k, v = torch.randn(1, 2, T, 16), torch.randn(1, 2, L + T, 16), torch.randn(1, 2, L + T, 16)
    anc = DraftTree.chain(0, [0] * (T - 1)).ancestor_mask()
    causal = torch.ones(T, L + T, dtype=torch.bool).tril(L)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=causal)
    torch.testing.assert_close(tree_attention(q, k, v, ancestor_bits(anc)), ref, atol=1e-5, rtol=1e-5)


def test_bits_round_trip():
    rng = random.Random(0)
    anc = random_tree(130, rng).ancestor_mask()
    bits = ancestor_bits(anc)
    assert bits.shape == (130, 3)
    back = ((bits[:, :, None] >> torch.arange(64)) & 1).flatten(1)[:, :130].bool()
    assert torch.equal(back, anc)


def test_bad_shapes():
    q, k = torch.randn(1, 3, 4, 16), torch.randn(1, 2, 10, 16)
    with pytest.raises(ValueError, match="multiple"):
        tree_attention(q, k, k, torch.zeros(4, 1, dtype=torch.int64))


def test_float32_dots_ask_for_ieee_precision(monkeypatch):
    """``tl.dot`` defaults to TF32 for float32 on NVIDIA GPUs (a 10-bit mantissa), which would
    break the exact equality with greedy decoding that float32 runs promise; the kernel asks
    for IEEE, as kernels/tokenselect.py does. The interpreter computes every dot in full
    precision whatever is asked, so the test reads the precision each dot asks for."""
    from triton.runtime import interpreter

    asked = []
    create_dot = interpreter.interpreter_builder.create_dot

    def spy(a, b, acc, input_precision, max_num_imprecise_acc):
        asked.append(input_precision.name)
        return create_dot(a, b, acc, input_precision, max_num_imprecise_acc)
    monkeypatch.setattr(interpreter.interpreter_builder, "create_dot", spy)
    T, L = 20, 40
    anc = random_tree(T, random.Random(1)).ancestor_mask()
    q, k = torch.randn(1, 2, T, 16), torch.randn(1, 2, L + T, 16)
    tree_attention(q, k, k, ancestor_bits(anc))
    assert asked and set(asked) == {"IEEE"}, asked
