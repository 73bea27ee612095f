"""The Triton clipped-count kernel equals its PyTorch reference (interpreter mode on the CPU)."""
import pytest
import torch

from tokenworks.kernels.tensorbleu import clipped_counts_triton
from tokenworks.metrics import tensor_bleu
from tokenworks.metrics.tensorbleu import clipped_counts_reference as reference


def naive(kc, kr):
    """Python loops, for the reference itself."""
    out = []
    for b in range(kc.shape[0]):
        cand = [k for k in kc[b].tolist() if k >= 0]
        total = 0
        for key in set(cand):
            best = max(kr[b, r].tolist().count(key) for r in range(kr.shape[1]))
            total += min(cand.count(key), best)
        out.append(total)
    return torch.tensor(out)


SHAPES = [(1, 1, 1, 2), (2, 7, 1, 3), (3, 33, 2, 5), (4, 64, 3, 4), (2, 100, 1, 50), (5, 129, 2, 9)]


@pytest.mark.parametrize("b, length, refs, vocab", SHAPES)
def test_kernel_matches_reference(b, length, refs, vocab):
    g = torch.Generator().manual_seed(length)
    kc = torch.randint(0, vocab, (b, length), generator=g)
    kr = torch.randint(0, vocab, (b, refs, length), generator=g)
    kc[torch.rand(b, length, generator=g) < 0.2] = -1  # not an n-gram (padding, sequence end)
    kr[torch.rand(b, refs, length, generator=g) < 0.2] = -2
    expected = reference(kc, kr)
    assert torch.equal(expected, naive(kc, kr))
    assert torch.equal(clipped_counts_triton(kc, kr), expected)


@pytest.mark.parametrize("block_i, block_j", [(16, 16), (32, 64), (64, 32)])
def test_kernel_block_sizes(block_i, block_j):
    g = torch.Generator().manual_seed(0)
    kc, kr = torch.randint(0, 6, (3, 77), generator=g), torch.randint(0, 6, (3, 2, 77), generator=g)
    assert torch.equal(clipped_counts_triton(kc, kr, block_i, block_j), reference(kc, kr))


def test_tensor_bleu_with_triton_counting():
    g = torch.Generator().manual_seed(3)
    ref = torch.randint(0, 30, (4, 2, 40), generator=g)
    cand = torch.where(torch.rand(4, 40, generator=g) < 0.6, ref[:, 0], 7)
    for smoothing in ("none", "floor", "exp"):
        assert torch.equal(tensor_bleu(cand, ref, smoothing=smoothing, counting="triton"),
                           tensor_bleu(cand, ref, smoothing=smoothing))
