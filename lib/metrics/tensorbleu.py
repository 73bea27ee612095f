"""TensorBLEU: per-sentence BLEU on token-id tensors, vectorised over the batch.

Filipek, "TensorBLEU: Vectorized GPU-based BLEU Score Implementation for Per-Sentence
In-Training Evaluation", arXiv 2510.05485 (2025). BLEU itself: Papineni et al. 2002.
Smoothing: Chen & Cherry, "A Systematic Comparison of Smoothing Techniques for
Sentence-Level BLEU", WMT 2014, as implemented in NLTK's ``SmoothingFunction``.

For each order n the modified precision is (paper Eq. 1, Papineni Eq. 1)

    p_n = sum_g min(count_cand(g), max_r count_ref_r(g)) / max(1, #n-grams of the candidate)

and BLEU = BP * exp(sum_n w_n log p_n), BP = exp(1 - r/c) if c <= r (closest reference
length r, ties to the shorter one, as NLTK), 1 otherwise, 0 for an empty candidate.

How the counts are taken (``counting``):

* ``"sort"`` (default, ours): every n-gram is packed exactly into one int64 key
  (``key_n = key_{n-1} * base + token``; when that would overflow, the (n-1)-gram keys are
  first renumbered densely with ``torch.unique``). Keys are sorted per row, and counts come
  from ``searchsorted`` of the candidate's sorted keys into itself and into each sorted
  reference. Memory O(B * R * L); no batch-wide ``[B, U]`` count table. Fast on CPU and GPU.
* ``"unique"`` (the paper's formulation): ``torch.unique(dim=0)`` over all n-gram rows of the
  batch gives compact ids; an offset ``bincount`` gives ``[B, U]`` count tables.
* ``"triton"``: the packed keys are counted by the Triton kernel in
  ``tokenworks.kernels.tensorbleu`` (pairwise comparison per sentence; no sort).

Deviations from the paper's code (rxlm ``tensor_sentence_bleu``), all to match NLTK exactly:
padding is trailing only (a real token equal to ``pad_id`` inside a sequence is kept, not
dropped); an all-pad reference is an empty reference (NLTK's ``[]``: its length 0 counts
for the brevity penalty), not a missing one; closest-reference ties go to the shorter reference; smoothing names are NLTK's
``method0``-``method7``, with the paper's names as aliases: ``floor`` = method1,
``add-k`` = method2 (NLTK's add-one on n >= 2) and ``exp`` = method3 (Chen & Cherry's
geometric decay; rxlm's per-sentence 'exp', 1e-12 for zero precisions, matches no NLTK
method and is not offered). A zero unigram match gives 0 whatever the smoothing, as NLTK.
"""
from __future__ import annotations

import numbers
import sys
from typing import Sequence

import torch

from tokenworks.ids import as_ids, check_count

SMOOTHING = {"none": 0, "method0": 0, "floor": 1, "method1": 1, "add-k": 2, "method2": 2,
             "exp": 3, "method3": 3, "method4": 4, "method5": 5, "method6": 6, "method7": 7}
COUNTING = ("sort", "unique", "triton")
_MAX_KEY = 2**62


# --- inputs --------------------------------------------------------------------------------

def _check_integer(x: torch.Tensor, what: str) -> None:
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"{what}: token ids must be integers, got a {x.dtype} tensor: pass an "
                        "integer tensor (cast exact ids with .long())")


def _as_batch(seqs, pad_id, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows [B, L] (int64) and lengths [B] from a padded tensor or a list of sequences;
    trailing ``pad_id`` padding is not counted in either form."""
    if isinstance(seqs, torch.Tensor):
        if seqs.dim() != 2:
            raise ValueError(f"{what}: expected a [batch, length] tensor, got shape {tuple(seqs.shape)}")
        _check_integer(seqs, what)
        rows = seqs.long()
        full = torch.full((rows.shape[0],), rows.shape[1], dtype=torch.long, device=rows.device)
    else:
        seqs = [as_ids(s, name=f"{what}[{i}]", allow_empty=True) for i, s in enumerate(seqs)]
        rows = torch.full((len(seqs), max(map(len, seqs), default=0)), 0 if pad_id is None else pad_id, dtype=torch.long)
        for i, s in enumerate(seqs):
            rows[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        full = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    if pad_id is None or rows.shape[1] == 0:
        return rows, full
    pos = torch.arange(1, rows.shape[1] + 1, device=rows.device)
    return rows, ((rows != pad_id) * pos).amax(1)  # 1 + index of the last non-pad token


def _reference_list(refs) -> list:
    """One candidate's references as a list of sequences: a sequence of ints or a 1-D tensor
    is one reference, a 2-D tensor one reference per row, anything else a list of them."""
    if isinstance(refs, torch.Tensor):
        return [refs] if refs.dim() == 1 else list(refs)
    refs = list(refs)
    return [refs] if refs and isinstance(refs[0], numbers.Number) else refs


def _references(references, batch: int, pad_id, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """References as [B, R, L] tokens, [B, R] lengths and [B, R] 'slot is used' flags.

    Accepts a [B, L] tensor (one reference each), a [B, R, L] tensor (R references each; an
    all-pad slot is an empty reference, as NLTK counts ``[]``), or a list (per candidate) of
    one reference or a list of references (candidates may have different numbers).
    """
    if isinstance(references, torch.Tensor):
        if references.dim() == 2:
            references = references[:, None]
        if references.dim() != 3 or references.shape[0] != batch:
            raise ValueError(f"references: expected [batch={batch}, (refs,) length], "
                             f"got shape {tuple(references.shape)}")
        b, r, l = references.shape
        rows, lengths = _as_batch(references.reshape(b * r, l), pad_id, "references")
        used = torch.ones((b, r), dtype=torch.bool, device=device)
        return rows.view(b, r, -1).to(device), lengths.view(b, r).to(device), used
    if len(references) != batch:
        raise ValueError(f"references: {len(references)} entries for {batch} candidates")
    references = [_reference_list(refs) for refs in references]
    n_refs = [len(refs) for refs in references]
    if min(n_refs, default=1) == 0:
        raise ValueError("every candidate needs at least one reference")
    flat = [ref for refs in references for ref in refs]
    rows, lengths = _as_batch(flat, pad_id, "references")
    r_max, width = max(n_refs), rows.shape[1]
    out = torch.zeros((batch, r_max, width), dtype=torch.long)
    out_len = torch.zeros((batch, r_max), dtype=torch.long)
    used = torch.zeros((batch, r_max), dtype=torch.bool)
    k = 0
    for b, n in enumerate(n_refs):
        out[b, :n], out_len[b, :n], used[b, :n] = rows[k:k + n], lengths[k:k + n], True
        k += n
    return out.to(device), out_len.to(device), used.to(device)


def _weight_sets(weights, max_n: int) -> tuple[torch.Tensor, bool]:
    """Weights as [W, max_n] float64 and whether one set was given. As NLTK, ``weights`` is
    one tuple, or a list of tuples (one score each; a shorter tuple weighs the higher orders 0)."""
    if weights is None:
        return torch.full((1, max_n), 1 / max_n, dtype=torch.float64), True
    try:
        sets, single = [[float(w) for w in weights]], True
    except TypeError:
        sets, single = [[float(w) for w in s] for s in weights], False
    if single and len(sets[0]) != max_n:
        raise ValueError(f"weights has {len(sets[0])} entries but max_n is {max_n}")
    if not single:
        longest = max(map(len, sets), default=0)
        if longest != max_n or min(map(len, sets)) == 0:
            raise ValueError(f"the longest weight tuple has {longest} entries but max_n is {max_n}: "
                             f"pass max_n={longest} (and no empty tuple)")
        sets = [s + [0.0] * (max_n - len(s)) for s in sets]
    return torch.tensor(sets, dtype=torch.float64), single


# --- n-gram keys ---------------------------------------------------------------------------

def ngram_keys(cand: torch.Tensor, refs: torch.Tensor, max_n: int):
    """Yield, for n = 1..max_n, exact int64 keys of every n-gram start position:
    candidate keys [B, Lc - n + 1] and reference keys [B, R, Lr - n + 1].

    Equal keys <=> equal n-grams (within one order n). Rows must be at least max_n wide.
    """
    base = int(max(cand.max().item() if cand.numel() else 0,
                   refs.max().item() if refs.numel() else 0)) + 1
    kc, kr = cand, refs  # 1-gram keys are the tokens
    for n in range(1, max_n + 1):
        if n > 1:
            top = max(kc.max().item() if kc.numel() else 0, kr.max().item() if kr.numel() else 0)
            if (top + 1) * base >= _MAX_KEY:  # renumber (n-1)-gram keys densely first
                both = torch.cat([kc.flatten(), kr.flatten()])
                _, inv = torch.unique(both, return_inverse=True)
                kc, kr = inv[:kc.numel()].view_as(kc), inv[kc.numel():].view_as(kr)
            kc = kc[:, :-1] * base + cand[:, n - 1:]
            kr = kr[..., :-1] * base + refs[..., n - 1:]
        yield n, kc, kr


def _valid(lengths: torch.Tensor, width: int, n: int) -> torch.Tensor:
    """[..., width] mask of n-gram start positions inside the sequence."""
    pos = torch.arange(width, device=lengths.device)
    return pos < (lengths[..., None] - n + 1)


# --- clipped counts --------------------------------------------------------------------------

def _run_counts(keys, source, ok, r: int):
    """Clipped matches per row [B] from keys sorted per row.

    keys [B, M]: a row holds a candidate's and its references' n-gram keys, sorted, so each
    run of equal keys is one distinct n-gram; source [B, M]: 0 for the candidate, 1..r for
    reference r; ok [B, M]: the element is an n-gram of this order. Counts per run come from
    cumulative sums read at the run ends (no table, no sort).
    """
    ends = torch.ones_like(keys, dtype=torch.bool)
    ends[:, :-1] = keys[:, 1:] != keys[:, :-1]  # the last column always ends a run
    flat_ends = ends.flatten()
    counts = []
    for s in range(r + 1):  # occurrences of each run's n-gram in source s
        cum = ((source == s) & ok).flatten().cumsum(0)[flat_ends]
        counts.append(torch.diff(cum, prepend=cum.new_zeros(1)))
    clipped = torch.minimum(counts[0], torch.stack(counts[1:]).amax(0))
    row = torch.repeat_interleave(torch.arange(keys.shape[0], device=keys.device), ends.sum(1))
    return torch.zeros(keys.shape[0], dtype=torch.long, device=keys.device).index_add_(0, row, clipped)


def clipped_counts_reference(kc: torch.Tensor, kr: torch.Tensor) -> torch.Tensor:
    """The PyTorch reference of ``tokenworks.kernels.tensorbleu.clipped_counts_triton``:
    clipped matches per row [B] from n-gram keys, kc [B, Lc] (-1: no n-gram) and kr
    [B, R, Lr] (-2: no n-gram), by one sort of each row's keys and their run counts."""
    b, r, lr = kr.shape
    keys, order = torch.cat([kc, kr.flatten(1)], 1).sort(dim=1)
    source = torch.cat([torch.zeros(kc.shape[1], dtype=torch.long, device=kc.device),
                        torch.arange(1, r + 1, device=kc.device).repeat_interleave(lr)])
    return _run_counts(keys, source.expand(b, -1).gather(1, order), keys >= 0, r)


def _clipped_sort(cand, cand_len, refs, ref_len, max_n: int):
    """Clipped matches [B, max_n], sorting each row of candidate + reference n-grams.

    Fast path: shifted tokens (id + 1, 0 past the end) of the ``max_n``-token window at each
    position pack into one int64 key whose sorted order is lexicographic, so one sort
    serves every order: the n-gram key is the key's first n digits (integer division).
    When the window does not fit in 62 bits, each order is packed and sorted on its own.
    Candidates and references come padded to one width w.
    """
    b, r, w = refs.shape
    dev = cand.device

    def sources(width):  # [B, (1 + r) * width]: 0 for the candidate, 1..r for the references
        return torch.arange(r + 1, device=dev).repeat_interleave(width).expand(b, -1)

    pos = torch.arange(w, device=dev)
    room = torch.cat([cand_len[:, None, None], ref_len[..., None]], 1) - pos  # [B, 1 + r, w]
    tokens = torch.cat([cand[:, None], refs], 1)  # [B, 1 + r, w]
    top = int(tokens.max()) + 2
    if top ** max_n >= _MAX_KEY:  # renumber the ids present densely: fewer digits
        tokens = torch.unique(tokens, return_inverse=True)[1]
        top = int(tokens.max()) + 2
    if top ** max_n >= _MAX_KEY:  # still too wide: one packing and sort per order
        nums = []
        for n, kc, kr in ngram_keys(cand, refs, max_n):
            keys, order = torch.cat([kc[:, None], kr], 1).flatten(1).sort(dim=1)
            ok = (room[..., :kc.shape[1]] >= n).flatten(1)
            nums.append(_run_counts(keys, sources(kc.shape[1]).gather(1, order), ok.gather(1, order), r))
        return torch.stack(nums, 1)
    # Horner packing of the window [t_i, ..., t_{i + max_n - 1}] of shifted tokens
    shifted = torch.nn.functional.pad(torch.where(room > 0, tokens + 1, 0), (0, max_n - 1))
    keys = shifted[..., :w].clone()
    for j in range(1, max_n):
        keys = keys * top + shifted[..., j:j + w]
    keys, order = keys.flatten(1).sort(dim=1)
    src, room = sources(w).gather(1, order), room.flatten(1).gather(1, order)
    return torch.stack([_run_counts(torch.div(keys, top ** (max_n - n), rounding_mode="floor"),
                                    src, room >= n, r) for n in range(1, max_n + 1)], 1)


def _clipped_unique(cand, refs, valid_c, valid_r, n):
    """The paper's formulation: torch.unique over n-gram rows, offset bincount."""
    b, r = refs.shape[:2]
    grams_c = cand.unfold(1, n, 1)  # [B, Lc', n]
    grams_r = refs.unfold(2, n, 1)  # [B, R, Lr', n]
    sel_c, sel_r = grams_c[valid_c], grams_r[valid_r]
    uniq, inv = torch.unique(torch.cat([sel_c, sel_r]), dim=0, return_inverse=True)
    u = max(1, uniq.shape[0])
    inv_c, inv_r = inv[:sel_c.shape[0]], inv[sel_c.shape[0]:]
    sent_c = torch.arange(b, device=cand.device)[:, None].expand_as(valid_c)[valid_c]
    slot_r = torch.arange(b * r, device=cand.device).view(b, r, 1).expand_as(valid_r)[valid_r]
    counts_c = torch.bincount(inv_c + sent_c * u, minlength=b * u).view(b, u)
    counts_r = torch.bincount(inv_r + slot_r * u, minlength=b * r * u).view(b, r, u).amax(1)
    return torch.minimum(counts_c, counts_r).sum(1)


def clipped_counts(cand, cand_len, refs, ref_len, ref_used, max_n: int, counting: str = "sort"):
    """Numerators [B, max_n] (clipped matches) and denominators [B, max_n] (n-gram counts)."""
    width = max(max_n, cand.shape[1], refs.shape[2])
    # tokens past each length become 0, so padding never enters a key
    cand = torch.where(_valid(cand_len, cand.shape[1], 1), cand, 0)
    refs = torch.where(_valid(ref_len, refs.shape[2], 1), refs, 0)
    if (cand.numel() and cand.min() < 0) or (refs.numel() and refs.min() < 0):
        raise ValueError("token ids must be >= 0 (pass pad_id for a negative padding id)")
    cand = torch.nn.functional.pad(cand, (0, width - cand.shape[1]))
    refs = torch.nn.functional.pad(refs, (0, width - refs.shape[2]))
    ref_len = torch.where(ref_used, ref_len, 0)
    dens = torch.stack([(cand_len - n + 1).clamp(min=0) for n in range(1, max_n + 1)], 1)
    if counting == "sort":
        return _clipped_sort(cand, cand_len, refs, ref_len, max_n), dens
    nums = []
    for n, kc, kr in ngram_keys(cand, refs, max_n):
        valid_c = _valid(cand_len, kc.shape[1], n)
        valid_r = _valid(ref_len, kr.shape[2], n)
        if counting == "unique":
            nums.append(_clipped_unique(cand, refs, valid_c, valid_r, n))
        else:
            from tokenworks.kernels.tensorbleu import clipped_counts_triton
            nums.append(clipped_counts_triton(torch.where(valid_c, kc, -1),
                                              torch.where(valid_r, kr, -2)))
    return torch.stack(nums, 1), dens


# --- BLEU from counts ----------------------------------------------------------------------

def closest_ref_length(cand_len, ref_len, ref_used):
    """Reference length closest to the candidate's, ties to the shorter (as NLTK)."""
    dist = (ref_len - cand_len[:, None]).abs()
    # lexicographic (distance, length) minimum via one integer key
    key = torch.where(ref_used, dist * (ref_len.max() + 1) + ref_len, torch.iinfo(torch.long).max)
    return ref_len.gather(1, key.argmin(1, keepdim=True))[:, 0]


def brevity_penalty(c: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """BP = 1 if c > r, 0 if c = 0, else exp(1 - r / c) (float64)."""
    c, r = c.double(), r.double()
    bp = torch.exp(1 - r / c.clamp(min=1))
    return torch.where(c > r, 1.0, torch.where(c == 0, 0.0, bp))


def smooth(num, den, method: int, hyp_len, *, epsilon=0.1, k=5, alpha=5, p5=None):
    """Smoothed precisions [B, N] (float64) exactly as NLTK's SmoothingFunction.methodK.

    ``hyp_len`` [B]: hypothesis length (corpus: total length); ``p5`` [B]: the 5-gram
    precision that NLTK's method5 always appends, whatever the order.
    """
    num, den = num.double(), den.double()
    p = num / den
    zero = num == 0
    rank = zero.cumsum(1).double()  # NLTK's `incvnt`: 1 for the first zero, 2 for the next...
    hl = hyp_len.double()[:, None]
    if method == 0:
        return torch.where(zero, sys.float_info.min, p)
    if method == 1:
        return torch.where(zero, epsilon / den, p)
    if method == 2:
        out = (num + 1) / (den + 1)
        out[:, 0] = p[:, 0]
        return out
    if method == 3:
        return torch.where(zero, 1 / (2**rank * den), p)
    if method in (4, 7):
        # NLTK: numerator = 1 / (2**incvnt * k / log(hyp_len)); skipped when hyp_len <= 1
        incr = 1 / (2**rank * k / torch.log(hl.clamp(min=2))) / den
        p = torch.where(zero & (hl > 1), incr, p)
        if method == 4:
            return p
    if method in (5, 7):
        nxt = torch.cat([p[:, 1:], p5[:, None].double()], 1)
        out, prev = torch.empty_like(p), p[:, 0] + 1
        for i in range(p.shape[1]):
            out[:, i] = prev = (prev + p[:, i] + nxt[:, i]) / 3
        return out
    if method == 6:
        out = p.clone()
        for i in range(2, p.shape[1]):
            pi0 = torch.where(out[:, i - 2] == 0, 0.0, out[:, i - 1] ** 2 / out[:, i - 2].clamp(min=1e-300))
            l = (hl[:, 0] - i).clamp(min=0)
            out[:, i] = (num[:, i] + alpha * pi0) / (l + alpha)
        return out
    raise AssertionError(method)


def _geometric_mean(p, weights, bp, unigram_matches):
    """BP * exp(sum_n w_n log p_n) per weight set: p [B, N], weights [W, N] -> [B, W]; terms
    with p_n <= 0 are skipped (NLTK), no unigram match -> 0."""
    p = p[:, None]  # [B, 1, N]
    logs = torch.where(p > 0, weights * torch.log(p.clamp(min=sys.float_info.min)), 0.0)
    return torch.where(unigram_matches[:, None] == 0, 0.0, bp[:, None] * torch.exp(logs.sum(-1)))


def tensor_bleu(candidates, references, *, max_n: int = 4,
                weights: Sequence[float] | Sequence[Sequence[float]] | None = None,
                smoothing: str = "none", per_sentence: bool = True, pad_id: int | None = None,
                counting: str = "sort", epsilon: float = 0.1, k: float = 5, alpha: float = 5):
    """BLEU of token-id candidates against references; equal to NLTK within float64 rounding.

    Args:
        candidates: ``[B, Lc]`` int tensor or a list of B id sequences (lists, 1-D int
            tensors), trailing ``pad_id`` padding in either. Float or bool ids are refused.
        references: ``[B, Lr]`` (one reference each) or ``[B, R, Lr]`` int tensor (R each; an
            all-pad slot is an empty reference, as NLTK counts ``[]``), or a list with, per
            candidate, one reference (a sequence of ints) or a list of references (their
            number may vary; an empty entry is refused, having no reference).
        max_n: highest n-gram order (BLEU-4 by default).
        weights: ``max_n`` weights, uniform by default; or, as NLTK, a list of weight tuples,
            the longest of ``max_n`` entries: one score per tuple (a last dimension W).
        smoothing: ``none``/``method0``-``method7`` (NLTK), or the paper's ``floor``
            (= method1, ``epsilon``), ``add-k`` (= method2) or ``exp`` (= method3).
        per_sentence: ``[B]`` float64 scores (sentence_bleu); ``False``: one corpus score
            (corpus_bleu, summed counts; methods 5-7 are per-sentence only).
        pad_id: trailing padding id of tensor and list inputs (``None``: every position is a
            token).
        counting: ``sort`` (default), ``unique`` (the paper's) or ``triton`` (kernel).
    """
    if smoothing not in SMOOTHING:
        raise ValueError(f"unknown smoothing {smoothing!r}; choose one of {sorted(SMOOTHING)}")
    if counting not in COUNTING:
        raise ValueError(f"unknown counting {counting!r}; choose one of {COUNTING}")
    check_count("max_n", max_n)
    w, single = _weight_sets(weights, max_n)
    method = SMOOTHING[smoothing]
    if method >= 5 and not per_sentence:
        raise ValueError(f"smoothing {smoothing!r} is per-sentence only: NLTK's corpus_bleu applies "
                         "it to the last sentence's references, which is not a corpus statistic")
    cand, cand_len = _as_batch(candidates, pad_id, "candidates")
    refs, ref_len, used = _references(references, cand.shape[0], pad_id, cand.device)
    orders = max(max_n, 5) if method in (5, 7) else max_n
    num, den = clipped_counts(cand, cand_len, refs, ref_len, used, orders, counting)
    p5 = (num[:, 4].double() / den[:, 4].clamp(min=1)) if method in (5, 7) else None
    num, den = num[:, :max_n], den[:, :max_n].clamp(min=1)
    r = closest_ref_length(cand_len, ref_len, used)
    w = w.to(cand.device)
    if per_sentence:
        if method == 6:
            _check_method6(num, max_n)
        p = smooth(num, den, method, cand_len, epsilon=epsilon, k=k, alpha=alpha, p5=p5)
        out = _geometric_mean(p, w, brevity_penalty(cand_len, r), num[:, 0])
    else:
        num, den = num.sum(0, keepdim=True), den.sum(0, keepdim=True)
        c, r = cand_len.sum().view(1), r.sum().view(1)
        p = smooth(num, den, method, c, epsilon=epsilon, k=k, alpha=alpha)
        out = _geometric_mean(p, w, brevity_penalty(c, r), num[:, 0])[0]
    return out[..., 0] if single else out


def _check_method6(num: torch.Tensor, max_n: int) -> None:
    """NLTK's method6 needs the trigram precision (it asserts p_3 > 0); a candidate without
    a unigram match scores 0 before smoothing, whatever max_n."""
    matched = num[:, 0] > 0
    if max_n < 3 and bool(matched.any()):
        bad = torch.nonzero(matched)[:, 0].tolist()
        raise ValueError(f"smoothing method6 needs max_n >= 3 (it interpolates from the trigram "
                         f"precision; NLTK fails too); candidates {bad[:10]} have matches: use "
                         "another method or a larger max_n")
    if max_n >= 3 and bool((matched & (num[:, 2] == 0)).any()):
        bad = torch.nonzero(matched & (num[:, 2] == 0))[:, 0].tolist()
        raise ValueError(f"smoothing method6 needs a trigram match (as NLTK asserts); "
                         f"candidates {bad[:10]} have none: use another method")
