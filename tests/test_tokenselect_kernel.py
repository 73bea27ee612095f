"""TokenSelect's kernels equal their PyTorch references (Triton interpreter on the CPU)."""
import pytest
import torch

from tokenworks.kernels.tokenselect import (gathered_decode_attention,
                                            gathered_decode_attention_reference, qk_scores,
                                            qk_scores_reference)

DTYPES = [(torch.float32, 1e-5), (torch.float16, 1e-3)]
# (batch, query heads, KV heads, head dim, cache length): GQA 1, 4 and 8, a head dim that is
# not a power of two, lengths that are not multiples of any block
SHAPES = [(1, 4, 4, 32, 1), (2, 8, 2, 32, 37), (1, 8, 1, 16, 130), (2, 4, 4, 24, 67),
          (1, 16, 2, 64, 200)]


@pytest.mark.parametrize("B,Hq,Hkv,D,T", SHAPES)
@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_qk_scores_match_the_reference(B, Hq, Hkv, D, T, dtype, tol):
    torch.manual_seed(T + D)
    q = torch.randn(B, Hq, D, dtype=dtype)
    k = torch.randn(B, Hkv, T, D, dtype=dtype)
    out = qk_scores(q, k, scale=0.5)
    assert out.dtype == torch.float32 and out.shape == (B, Hq, T)
    ref = qk_scores_reference(q, k, scale=0.5)
    torch.testing.assert_close(out, ref, atol=tol * D ** 0.5, rtol=tol)  # sums of D products


def test_qk_scores_pair_query_head_h_with_kv_head_h_over_g():
    """Hugging Face's GQA (repeat_kv): query heads 0-3 read KV head 0, 4-7 KV head 1. The
    TokenSelect release's h % Hkv would pair head 1 with KV head 1."""
    q = torch.ones(1, 8, 16)
    k = torch.stack([torch.full((5, 16), 1.0), torch.full((5, 16), 2.0)])[None]  # [1, 2, 5, 16]
    out = qk_scores(q, k)
    assert torch.equal(out[0, :, 0], torch.tensor([16.0] * 4 + [32.0] * 4))


def test_qk_scores_of_a_cache_slice():
    """A strided view of the cache (its middle, as TokenSelect scores) needs no copy."""
    torch.manual_seed(0)
    q, k = torch.randn(2, 8, 32), torch.randn(2, 2, 90, 32)
    middle = k[:, :, 10:70]
    torch.testing.assert_close(qk_scores(q, middle), qk_scores_reference(q, middle), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("B,Hq,Hkv,D,T", SHAPES)
@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("n_sel,splits", [(1, None), (23, 1), (23, 4), (60, 7)])
def test_gathered_decode_attention_matches_the_reference(B, Hq, Hkv, D, T, dtype, tol, n_sel, splits):
    gen = torch.Generator().manual_seed(T * 100 + n_sel)
    q = torch.randn(B, Hq, D, dtype=dtype, generator=gen)
    k = torch.randn(B, Hkv, T, D, dtype=dtype, generator=gen)
    v = torch.randn(B, Hkv, T, D, dtype=dtype, generator=gen)
    idx = torch.randint(0, T, (B, n_sel), generator=gen)  # repeats allowed, any order
    out = gathered_decode_attention(q, k, v, idx, splits=splits)
    assert out.dtype == dtype and out.shape == (B, Hq, D)
    ref = gathered_decode_attention_reference(q, k, v, idx)
    torch.testing.assert_close(out.float(), ref.float(), atol=tol, rtol=tol)


def test_more_splits_than_tokens_leave_empty_splits_without_weight():
    torch.manual_seed(1)
    q, k, v = torch.randn(1, 4, 32), torch.randn(1, 1, 50, 32), torch.randn(1, 1, 50, 32)
    idx = torch.tensor([[3, 9, 41]])
    ref = gathered_decode_attention_reference(q, k, v, idx)
    torch.testing.assert_close(gathered_decode_attention(q, k, v, idx, splits=8), ref, atol=1e-5, rtol=1e-5)


def test_all_indices_equal_full_attention():
    torch.manual_seed(2)
    q, k, v = torch.randn(2, 8, 32), torch.randn(2, 2, 77, 32), torch.randn(2, 2, 77, 32)
    full = torch.nn.functional.scaled_dot_product_attention(
        q[:, :, None], k.repeat_interleave(4, 1), v.repeat_interleave(4, 1))[:, :, 0]
    out = gathered_decode_attention(q, k, v, torch.arange(77).expand(2, 77))
    torch.testing.assert_close(out, full, atol=1e-5, rtol=1e-5)


def test_bad_input_is_refused():
    q, k = torch.randn(1, 6, 32), torch.randn(1, 4, 10, 32)
    with pytest.raises(ValueError, match="not a multiple"):
        qk_scores(q, k)
    q = torch.randn(1, 8, 32)
    with pytest.raises(ValueError, match="integer idx"):
        gathered_decode_attention(q, k, k, torch.zeros(1, 3))
    with pytest.raises(ValueError, match="integer idx"):
        gathered_decode_attention(q, k, k, torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="integer idx"):  # a mask is not a list of rows
        gathered_decode_attention(q, k, k, torch.ones(1, 10, dtype=torch.bool))
    with pytest.raises(ValueError, match="need v like k"):
        gathered_decode_attention(q, k, k[:, :, :5], torch.zeros(1, 3, dtype=torch.long))


@pytest.mark.parametrize("bad", [[[0, 10]], [[-1, 3]]])
def test_indices_outside_the_cache_are_refused_on_the_cpu(bad):
    """On the CPU (the interpreter) the check is free; on CUDA it would cost a sync per call,
    and TokenSelect builds its indices in range (tests/test_tokenselect.py)."""
    q, k = torch.randn(1, 8, 32), torch.randn(1, 4, 10, 32)
    with pytest.raises(ValueError, match=r"outside the cache \[0, 10\)"):
        gathered_decode_attention(q, k, k, torch.tensor(bad))
