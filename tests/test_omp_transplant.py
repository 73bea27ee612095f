"""Tokenizer transplantation (``tokenworks.transplant``): OMP's reconstruction, shared rows kept
bit for bit, the identity on a model's own tokenizer, and the vocabularies of SmolLM2 (byte-level
BPE, ``Ġ``) and Gemma-3 (SentencePiece, ``▁``, ``<0xNN>``) normalised to the same keys. Every
method of the registry ``METHODS`` is checked; the models are tiny random ones over the real
vocabularies, so the invariants are tested, not the quality."""
import functools

import pytest
import torch
from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

from tokenworks.models.packaged import converted
from tokenworks.transplant import METHODS, batch_omp, shared_tokens, transplant, transplant_rows, vocab_keys


@functools.cache
def tokenizer(name):
    return AutoTokenizer.from_pretrained(converted(name))


@functools.cache
def tiny(name):
    """A random two-layer model over ``name``'s vocabulary: Gemma-3's architecture for Gemma-3
    (tied embeddings), Llama's untied for SmolLM2 (so that both code paths run)."""
    torch.manual_seed(0)
    n = len(tokenizer(name))
    if name == "gemma3-270m":
        config = Gemma3TextConfig(vocab_size=n, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, num_key_value_heads=1, head_dim=8, sliding_window=4,
                                  layer_types=["sliding_attention", "full_attention"])
        return Gemma3ForCausalLM(config).eval()
    config = LlamaConfig(vocab_size=n, hidden_size=24, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False)
    return LlamaForCausalLM(config).eval()


def test_omp_is_exact_with_k_at_least_the_anchors_and_a_target_in_their_span():
    g = torch.Generator().manual_seed(0)
    atoms = torch.randn(30, 16, generator=g, dtype=torch.float64)  # 30 atoms spanning 16 dimensions
    targets = torch.randn(7, 30, generator=g, dtype=torch.float64) @ atoms
    idx, coef = batch_omp(targets, atoms, k=64, batch=3)
    assert idx.shape == (7, 30) and coef.shape == (7, 30)  # k clamped to the 30 atoms
    torch.testing.assert_close(torch.einsum("nk,nkd->nd", coef, atoms[idx]), targets, rtol=0, atol=1e-10)


def test_omp_finds_the_support_of_a_sparse_target():
    """With incoherent atoms (random, 64 dimensions) a 3-sparse target is recovered exactly
    from 3 steps: the support and the coefficients."""
    g = torch.Generator().manual_seed(1)
    atoms = torch.randn(200, 64, generator=g, dtype=torch.float64)
    support = torch.stack([torch.randperm(200, generator=g)[:3] for _ in range(10)])
    coef = torch.randn(10, 3, generator=g, dtype=torch.float64).sign() * (1 + torch.rand(10, 3, generator=g, dtype=torch.float64))
    targets = torch.einsum("nk,nkd->nd", coef, atoms[support])
    idx, found = batch_omp(targets, atoms, k=3)
    order, expect = idx.argsort(-1), support.argsort(-1)
    assert torch.equal(idx.gather(1, order), support.gather(1, expect))
    torch.testing.assert_close(found.gather(1, order), coef.gather(1, expect), rtol=1e-10, atol=1e-10)


def _greedy_picks(y: torch.Tensor, atoms: torch.Tensor, k: int) -> torch.Tensor:
    """The reference: OMP's atom choices with every correlation in float64, one target at a time."""
    y, atoms, picks = y.double(), atoms.double(), []
    for target in y:
        chosen, r = [], target
        for _ in range(k):
            corr = (atoms @ r).abs()
            corr[chosen] = -1
            chosen.append(int(corr.argmax()))
            D = atoms[chosen].T
            r = target - D @ torch.linalg.lstsq(D, target[:, None]).solution[:, 0]
        picks.append(chosen)
    return torch.tensor(picks)


@pytest.mark.parametrize("spread", [0.0, 3.0])
def test_omp_picks_the_exact_argmax_despite_its_bfloat16_first_pass(spread):
    """The shortlist from bfloat16 correlations holds the float64 argmax at every step, on
    random atoms and on atoms sharing a common direction (as embedding rows do), which crowds
    the correlations together."""
    g = torch.Generator().manual_seed(2)
    atoms = torch.randn(3000, 64, generator=g) + spread * torch.randn(64, generator=g)
    targets = torch.randn(40, 64, generator=g) + spread * atoms.mean(0)
    idx, _ = batch_omp(targets, atoms, k=24, batch=16)
    assert torch.equal(idx, _greedy_picks(targets, atoms, 24))


def test_omp_rows_apply_the_donors_coefficients_to_the_bases_anchors():
    """A new token that is an exact combination of the donor's anchor rows gets the same
    combination of the base's anchor rows (in the base's own width)."""
    g = torch.Generator().manual_seed(3)
    donor_anchors, base_anchors = torch.randn(6, 8, generator=g), torch.randn(6, 5, generator=g)
    coef = torch.randn(3, 6, generator=g) * (torch.rand(3, 6, generator=g) < 0.5)
    donor = torch.cat([donor_anchors, coef @ donor_anchors]).double()
    shared = {d: d for d in range(6)}  # donor row -> base row
    rows = transplant_rows(base_anchors.double(), donor, shared, "omp", k=6)
    torch.testing.assert_close(rows[6:], (coef @ base_anchors).double(), atol=1e-5, rtol=1e-5)


def test_omp_refuses_bad_input():
    with pytest.raises(ValueError, match="must be an integer >= 1"):
        batch_omp(torch.zeros(2, 4), torch.zeros(3, 4), k=0)
    with pytest.raises(ValueError, match="must share d"):
        batch_omp(torch.zeros(2, 4), torch.zeros(3, 5), k=2)
    with pytest.raises(ValueError, match="no atoms"):
        batch_omp(torch.zeros(2, 4), torch.zeros(0, 4), k=2)


def test_both_word_start_markers_and_byte_fallback_pieces_normalise_to_bytes():
    smol, gemma = vocab_keys(tokenizer("smollm2-135m")), vocab_keys(tokenizer("gemma3-270m"))
    the_s, the_g = tokenizer("smollm2-135m").convert_tokens_to_ids(["Ġthe", "▁the"])[0], \
        tokenizer("gemma3-270m").convert_tokens_to_ids("▁the")
    assert smol[the_s] == gemma[the_g] == ("bytes", b" the")
    byte_a, text_a = tokenizer("gemma3-270m").convert_tokens_to_ids(["<0x41>", "A"])
    assert gemma[text_a] == ("bytes", b"A") and gemma[byte_a] == ("piece", "<0x41>")  # the text piece keeps the bytes
    newline = tokenizer("gemma3-270m").convert_tokens_to_ids("<0x0A>")
    assert gemma[newline][0] in ("bytes", "piece")
    eos_s, eos_g = tokenizer("smollm2-135m").eos_token_id, tokenizer("gemma3-270m").eos_token_id
    assert smol[eos_s] == gemma[eos_g] == ("special", "eos")
    keys = [k for k in gemma.values() if k[0] == "bytes"]
    assert len(keys) == len(set(keys))  # one id per byte string


def test_shared_tokens_map_equal_keys_and_skip_ids_past_the_rows():
    base, donor = tokenizer("gemma3-270m"), tokenizer("smollm2-135m")
    shared = shared_tokens(base, donor)
    kb, kd = vocab_keys(base), vocab_keys(donor)
    assert len(shared) > 0.9 * len(donor) and all(kd[d] == kb[b] for d, b in shared.items())
    assert all(d < 1000 for d in shared_tokens(base, donor, donor_rows=1000))
    assert all(b < 500 for b in shared_tokens(base, donor, base_rows=500).values())


@pytest.mark.parametrize("method", METHODS)
def test_shared_tokens_keep_their_rows_bit_for_bit(method):
    """Gemma-3 (tied) given SmolLM2's tokenizer: every shared token's row is the base's row."""
    base, donor = tiny("gemma3-270m"), tiny("smollm2-135m")
    model, report = transplant(base, tokenizer("gemma3-270m"), donor, tokenizer("smollm2-135m"), method=method, k=4)
    shared = shared_tokens(tokenizer("gemma3-270m"), tokenizer("smollm2-135m"))
    rows = model.get_input_embeddings().weight
    donor_ids, base_ids = list(shared), list(shared.values())
    assert torch.equal(rows[donor_ids], base.get_input_embeddings().weight[base_ids])
    assert rows.shape == (len(tokenizer("smollm2-135m")), 16) and report["new"] == len(rows) - len(shared) > 0
    assert model.get_output_embeddings().weight.data_ptr() == rows.data_ptr()  # still tied
    assert model.config.eos_token_id == tokenizer("smollm2-135m").eos_token_id
    assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()


@pytest.mark.parametrize("method", METHODS)
def test_a_transplant_to_the_models_own_tokenizer_is_the_identity(method):
    for name in ("smollm2-135m", "gemma3-270m"):
        base = tiny(name)
        model, report = transplant(base, tokenizer(name), base, tokenizer(name), method=method)
        assert report["new"] == 0
        for (key, a), b in zip(model.state_dict().items(), base.state_dict().values()):
            assert torch.equal(a, b), key
        ids = torch.tensor([tokenizer(name)("def f(x): return x")["input_ids"]])
        assert torch.equal(model(ids).logits, base(ids).logits)


def test_an_untied_head_is_transplanted_from_the_donors_head():
    """SmolLM2's tiny stand-in (untied) given Gemma-3's tokenizer, by the mean baseline (cheap
    over 216k new tokens): its head's shared rows are its own head's, the new ones the mean of
    its head (not of its embedding)."""
    base, donor = tiny("smollm2-135m"), tiny("gemma3-270m")
    model, _ = transplant(base, tokenizer("smollm2-135m"), donor, tokenizer("gemma3-270m"), method="mean")
    shared = shared_tokens(tokenizer("smollm2-135m"), tokenizer("gemma3-270m"))
    head, base_head = model.get_output_embeddings().weight, base.get_output_embeddings().weight
    assert torch.equal(head[list(shared)], base_head[list(shared.values())])
    new = next(v for v in range(len(head)) if v not in shared)
    torch.testing.assert_close(head[new], base_head.mean(0))
    assert not torch.equal(head, model.get_input_embeddings().weight)


def test_the_subword_baseline_is_the_mean_of_the_base_pieces():
    """Gemma-3's "▁understanding" in SmolLM2's space: the mean of the rows of SmolLM2's pieces
    of " understanding" (every other donor id shared here, so that it is the only new one)."""
    base_tok, donor_tok = tokenizer("smollm2-135m"), tokenizer("gemma3-270m")
    base = tiny("smollm2-135m").get_input_embeddings().weight
    word = donor_tok.convert_tokens_to_ids("▁understanding")
    shared = {v: v % len(base) for v in range(word)}
    rows = transplant_rows(base, torch.zeros(word + 1, 4), shared, "subword", donor_tokenizer=donor_tok,
                           base_tokenizer=base_tok)
    pieces = base_tok(" understanding", add_special_tokens=False)["input_ids"]
    torch.testing.assert_close(rows[word], base[pieces].mean(0))


def test_the_subword_baseline_gives_a_new_special_role_token_the_mean_row():
    """Gemma-3's <unk> (key ("special", "unk")) has no text: the mean base row, never the base
    pieces of the word "unk"."""
    base_tok, donor_tok = tokenizer("smollm2-135m"), tokenizer("gemma3-270m")
    base = tiny("smollm2-135m").get_input_embeddings().weight
    unk = donor_tok.unk_token_id
    shared = {v: v % len(base) for v in range(unk)}
    rows = transplant_rows(base, torch.zeros(unk + 1, 4), shared, "subword", donor_tokenizer=donor_tok,
                           base_tokenizer=base_tok)
    assert vocab_keys(donor_tok)[unk] == ("special", "unk")
    torch.testing.assert_close(rows[unk], base.float().mean(0))


def test_bad_input_is_refused_clearly():
    base = torch.randn(5, 3)
    with pytest.raises(ValueError, match="share no token"):
        transplant_rows(base, torch.randn(4, 2), {}, "omp")
    with pytest.raises(ValueError, match="unknown transplant method 'ompp'"):
        transplant_rows(base, torch.randn(4, 2), {0: 0}, "ompp")
    with pytest.raises(ValueError, match="must be an integer >= 1"):
        transplant_rows(base, torch.randn(4, 2), {0: 0}, "omp", k=0)
    model = tiny("gemma3-270m")
    with pytest.raises(ValueError, match="unknown transplant method"):
        transplant(model, tokenizer("gemma3-270m"), model, tokenizer("gemma3-270m"), method="svd")
