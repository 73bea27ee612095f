"""TensorBLEU equals NLTK's sentence_bleu / corpus_bleu (tokenworks.metrics.tensor_bleu)."""
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu, sentence_bleu

from tokenworks.metrics import tensor_bleu

warnings.filterwarnings("ignore", module="nltk")
TOL = 1e-9
seq = lambda vocab, max_len: st.lists(st.integers(0, vocab - 1), min_size=0, max_size=max_len)


@st.composite
def batches(draw, max_vocab=2**17):
    vocab = draw(st.sampled_from([2, 3, 7, 50, max_vocab]))
    b = draw(st.integers(1, 6))
    cands = [draw(seq(vocab, 14)) for _ in range(b)]
    refs = [[draw(seq(vocab, 14)) for _ in range(draw(st.integers(1, 3)))] for _ in range(b)]
    return cands, refs


def nltk_sentence(cands, refs, method, weights=(0.25,) * 4):
    sf = getattr(SmoothingFunction(), f"method{method}")
    return [sentence_bleu(r, c, weights=weights, smoothing_function=sf) for c, r in zip(cands, refs)]


@pytest.mark.parametrize("method", [0, 1, 2, 3, 4, 5, 7])
@pytest.mark.parametrize("counting", ["sort", "unique"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=batches())
def test_sentence_bleu_equals_nltk(data, method, counting):
    cands, refs = data
    ours = tensor_bleu(cands, refs, smoothing=f"method{method}", counting=counting)
    assert ours.dtype == torch.float64 and ours.shape == (len(cands),)
    assert torch.allclose(ours, torch.tensor(nltk_sentence(cands, refs, method), dtype=torch.float64),
                          atol=TOL, rtol=0)


@pytest.mark.parametrize("method", [0, 1, 2, 3, 4])
@settings(max_examples=60, deadline=None)
@given(data=batches())
def test_corpus_bleu_equals_nltk(data, method):
    cands, refs = data
    sf = getattr(SmoothingFunction(), f"method{method}")
    expected = corpus_bleu(refs, cands, smoothing_function=sf)
    ours = tensor_bleu(cands, refs, smoothing=f"method{method}", per_sentence=False)
    assert abs(ours.item() - expected) <= TOL


@settings(max_examples=60, deadline=None)
@given(data=batches(), n=st.integers(1, 6))
def test_other_orders_and_weights(data, n):
    cands, refs = data
    w = tuple(torch.rand(n, generator=torch.Generator().manual_seed(n)).tolist())
    ours = tensor_bleu(cands, refs, max_n=n, weights=w, smoothing="floor")
    assert torch.allclose(ours, torch.tensor(nltk_sentence(cands, refs, 1, w), dtype=torch.float64),
                          atol=TOL, rtol=0)


def test_method6_on_sentences_with_trigram_matches():
    g = torch.Generator().manual_seed(0)
    ref = torch.randint(0, 20, (8, 30), generator=g)
    cand = ref.clone()
    cand[:, ::4] = torch.randint(0, 20, (8, 8), generator=g)  # keeps trigram matches
    cands, refs = cand.tolist(), [[r] for r in ref.tolist()]
    ours = tensor_bleu(cand, ref, smoothing="method6")
    assert torch.allclose(ours, torch.tensor(nltk_sentence(cands, refs, 6), dtype=torch.float64),
                          atol=TOL, rtol=0)
    with pytest.raises(ValueError, match="trigram"):
        tensor_bleu([[1, 2, 3, 4]], [[[1, 2, 9, 4]]], smoothing="method6")


@pytest.mark.parametrize("paper, nltk", [("floor", 1), ("add-k", 2), ("exp", 3)])
def test_paper_smoothing_names(paper, nltk):
    cands, refs = [[1, 2, 3, 5, 6], [4, 4, 4]], [[[1, 2, 3, 4, 5, 6]], [[4, 4], [1, 4, 4, 4]]]
    ours = tensor_bleu(cands, refs, smoothing=paper)
    assert torch.allclose(ours, torch.tensor(nltk_sentence(cands, refs, nltk), dtype=torch.float64),
                          atol=TOL, rtol=0)


def test_padded_tensors_equal_lists():
    """[B, R, L] padded references, pad id inside the vocabulary; an all-pad slot is an empty
    reference, as ``[]`` in the lists."""
    pad = 0
    cands = [[5, 6, 7, 8, 5, 6], [9, 9], [3]]
    refs = [[[5, 6, 7, 8, 9], []], [[9, 9, 9], [1, 9]], [[3, 4, 5, 6], []]]
    c = torch.full((3, 8), pad)
    r = torch.full((3, 2, 6), pad)
    for i, x in enumerate(cands):
        c[i, :len(x)] = torch.tensor(x)
        for j, y in enumerate(refs[i]):
            r[i, j, :len(y)] = torch.tensor(y)
    padded = tensor_bleu(c, r, pad_id=pad, smoothing="floor")
    listed = tensor_bleu(cands, refs, smoothing="floor")
    assert torch.equal(padded, listed)
    assert torch.allclose(listed, torch.tensor(nltk_sentence(cands, refs, 1), dtype=torch.float64),
                          atol=TOL, rtol=0)


def test_adversarial_cases():
    cands = [[], [1], [1] * 40, [1, 2] * 20, list(range(40))]
    refs = [[[1, 2, 3]], [[1]], [[1] * 3, [1] * 50], [[2, 1] * 5, [1, 2]], [list(range(40))[::-1], []]]
    for m in (0, 1, 2, 3, 4):
        ours = tensor_bleu(cands, refs, smoothing=f"method{m}")
        assert torch.allclose(ours, torch.tensor(nltk_sentence(cands, refs, m), dtype=torch.float64),
                              atol=TOL, rtol=0)
    assert tensor_bleu([[7, 8, 9, 10]], [[[7, 8, 9, 10]]]).item() == pytest.approx(1.0, abs=1e-15)


def test_wide_vocab_falls_back_to_per_order_keys():
    """2^17 distinct ids at max_n=6 overflow one int64 window: the per-order path must agree."""
    g = torch.Generator().manual_seed(1)
    ref = torch.randperm(2**17, generator=g)[:3000].view(3, 1000)
    cand = torch.where(torch.rand(3, 1000, generator=g) < 0.8, ref, 5)
    ours = tensor_bleu(cand, ref, max_n=6, smoothing="floor")
    unique = tensor_bleu(cand, ref, max_n=6, smoothing="floor", counting="unique")
    expected = nltk_sentence(cand.tolist(), [[r] for r in ref.tolist()], 1, (1 / 6,) * 6)
    assert torch.allclose(ours, torch.tensor(expected, dtype=torch.float64), atol=TOL, rtol=0)
    assert torch.equal(ours, unique)


def test_batch_rows_are_independent():
    g = torch.Generator().manual_seed(2)
    c, r = torch.randint(0, 9, (6, 25), generator=g), torch.randint(0, 9, (6, 2, 25), generator=g)
    whole = tensor_bleu(c, r, smoothing="exp")
    one_by_one = torch.cat([tensor_bleu(c[i:i + 1], r[i:i + 1], smoothing="exp") for i in range(6)])
    assert torch.equal(whole, one_by_one)


@pytest.mark.parametrize("kwargs, match", [
    (dict(smoothing="laplace"), "unknown smoothing"),
    (dict(counting="hash"), "unknown counting"),
    (dict(max_n=0), "max_n"),
    (dict(weights=(0.5, 0.5)), "weights has 2"),
    (dict(smoothing="method5", per_sentence=False), "per-sentence only"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tensor_bleu([[1, 2]], [[[1, 2]]], **kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match="at least one reference"):
        tensor_bleu([[1, 2]], [[]])
    with pytest.raises(ValueError, match="2 entries for 1"):
        tensor_bleu([[1, 2]], [[[1]], [[2]]])
    with pytest.raises(TypeError, match="integers"):
        tensor_bleu(torch.rand(2, 3), torch.rand(2, 3))
    with pytest.raises(ValueError, match=">= 0"):
        tensor_bleu([[1, -5]], [[[1, 2]]])


# --- input forms and NLTK edges ---------------------------------------------------

def test_pad_id_strips_trailing_padding_of_lists_too():
    cands, refs = [[5, 6, 7, 8, 0, 0], [9, 9, 3]], [[[5, 6, 7, 8, 0]], [[9, 9, 3, 0], [1, 0, 0]]]
    stripped = tensor_bleu([[5, 6, 7, 8], [9, 9, 3]], [[[5, 6, 7, 8]], [[9, 9, 3], [1]]], smoothing="floor")
    assert torch.equal(tensor_bleu(cands, refs, pad_id=0, smoothing="floor"), stripped)
    assert stripped[0].item() == pytest.approx(1.0, abs=1e-15)
    # a pad id inside a sequence is a token (trailing padding only), as for tensors
    assert torch.equal(tensor_bleu([[0, 5, 0]], [[[0, 5]]], pad_id=0), tensor_bleu([[0, 5]], [[[0, 5]]]))


def test_flat_reference_lists_are_one_reference_each():
    """``references[b]`` a sequence of ints (or a 1-D tensor) is candidate b's one reference;
    a sequence of sequences is its list of references; an empty entry has no reference."""
    cands, refs = [[1, 2, 3, 4], [7, 7, 8]], [[1, 2, 3, 5], [7, 8]]
    nested = tensor_bleu(cands, [[r] for r in refs], smoothing="floor")
    assert torch.equal(tensor_bleu(cands, refs, smoothing="floor"), nested)
    assert torch.equal(tensor_bleu(cands, [torch.tensor(r) for r in refs], smoothing="floor"), nested)
    assert torch.equal(tensor_bleu(cands, [refs[0], [refs[1], [8]]], smoothing="floor"),
                       tensor_bleu(cands, [[refs[0]], [refs[1], [8]]], smoothing="floor"))


@pytest.mark.parametrize("cands, refs", [
    ([torch.tensor([5.7, 6.0, 7.0])], [[torch.tensor([5, 6, 7])]]),
    ([[5.7, 6, 7]], [[[5, 6, 7]]]),
    ([[5, 6, 7]], [[[5.0, 6, 7]]]),
    ([[5, 6, 7]], [[5, 6.5, 7]]),
    ([torch.tensor([True, False])], [[[1, 0]]]),
    (torch.tensor([[1, 0]]).bool(), torch.tensor([[1, 0]])),
    (torch.tensor([[1, 2]]), torch.tensor([[1.0, 2.0]])),
])
def test_non_integer_ids_are_refused_not_truncated(cands, refs):
    with pytest.raises(TypeError, match="integer"):
        tensor_bleu(cands, refs)


def test_method6_below_trigrams_follows_nltk():
    """NLTK's method6 returns 0.0 without a unigram match (whatever max_n) and cannot score a
    match below trigrams (it indexes the trigram precision)."""
    sf = SmoothingFunction().method6
    for n in (1, 2):
        w = (1 / n,) * n
        assert sentence_bleu([[1, 2]], [3], weights=w, smoothing_function=sf) == 0
        assert tensor_bleu([[3]], [[[1, 2]]], max_n=n, smoothing="method6").tolist() == [0.0]
        with pytest.raises(IndexError):
            sentence_bleu([[1, 2]], [1, 2], weights=w, smoothing_function=sf)
        with pytest.raises(ValueError, match="max_n >= 3"):
            tensor_bleu([[3], [1, 2]], [[[1, 2]], [[1, 2]]], max_n=n, smoothing="method6")


@pytest.mark.parametrize("method", [0, 1, 2, 3, 4, 5, 7])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=batches())
def test_a_list_of_weight_tuples_gives_one_score_each_as_nltk(data, method):
    cands, refs = data
    weights = [(0.5, 0.5), (1 / 3,) * 3, (0.1, 0.2, 0.3, 0.4)]
    sf = getattr(SmoothingFunction(), f"method{method}")
    ours = tensor_bleu(cands, refs, weights=weights, smoothing=f"method{method}")
    theirs = [sentence_bleu(r, c, weights=weights, smoothing_function=sf) for c, r in zip(cands, refs)]
    theirs = [t if isinstance(t, list) else [t] * 3 for t in theirs]  # NLTK: 0 for no unigram match
    assert ours.shape == (len(cands), 3)
    assert torch.allclose(ours, torch.tensor(theirs, dtype=torch.float64), atol=TOL, rtol=0)
    if method <= 4:
        corpus = corpus_bleu(refs, cands, weights=weights, smoothing_function=sf)
        corpus = corpus if isinstance(corpus, list) else [corpus] * 3
        ours = tensor_bleu(cands, refs, weights=weights, smoothing=f"method{method}", per_sentence=False)
        assert ours.shape == (3,)
        assert torch.allclose(ours, torch.tensor(corpus, dtype=torch.float64), atol=TOL, rtol=0)


def test_weight_tuples_must_fit_max_n():
    with pytest.raises(ValueError, match="max_n=3"):
        tensor_bleu([[1, 2]], [[[1, 2]]], max_n=4, weights=[(0.5, 0.5), (1 / 3,) * 3])
    with pytest.raises(ValueError, match="weights"):
        tensor_bleu([[1, 2]], [[[1, 2]]], weights=[])


@pytest.mark.parametrize("max_n", [1, 4])
def test_an_all_padding_reference_slot_is_an_empty_reference(max_n):
    """As NLTK (and list input) count ``[]`` among the references: its length 0 enters the
    closest-reference length, here making the brevity penalty 1."""
    w = (1 / max_n,) * max_n
    expected = sentence_bleu([[], [1, 2, 3]], [1], weights=w)
    listed = tensor_bleu([[1]], [[[], [1, 2, 3]]], max_n=max_n)
    padded = tensor_bleu(torch.tensor([[1, 0]]), torch.tensor([[[0, 0, 0], [1, 2, 3]]]), pad_id=0, max_n=max_n)
    assert listed.item() == pytest.approx(expected, abs=1e-15, rel=1e-12)
    assert torch.equal(padded, listed)


@pytest.mark.parametrize("max_n,error", [(True, TypeError), (2.0, TypeError), (0, ValueError)])
def test_max_n_must_be_a_count(max_n, error):
    """``max_n=True`` scored as BLEU-1 before (a bool is an int)."""
    with pytest.raises(error, match="max_n must be an integer"):
        tensor_bleu([[1, 2, 3]], [[[1, 2, 3]]], max_n=max_n)
