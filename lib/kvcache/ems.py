"""EMS: adaptive Evict-then-Merge for head-wise KV cache compression with a Global-Local score.

Li, Li, Meng, Ma, Geng, Xia, Wang, *Adaptive Evict-then-Merge Strategy for Head-wise KV Cache
Compression Based on Global-Local Importance*, arXiv 2412.08521 (2024). The authors released no
code; the paper is vague on constants, so this is our reconstruction (unverified against the
paper's constants; ``references/ems.md``) and every choice below is a parameter:

1. **Global-Local score** (§3.1 of the paper). Accumulated attention over all prefill queries
   favours early keys (they are seen by more rows), attention from the last ``window`` queries
   favours recent ones. Per KV head (query heads averaged over their group, as kvpress does)::

       glo_j = (1 / (T - j)) sum_{i >= j} A_ij      loc_j = sum_{i >= T - window} A_ij
       score_j = max(glo_j * mean(loc) / mean(glo), loc_j)

   The ``1 / (T - j)`` normalisation is kvpress ``ObservedAttentionPress``'s; the mean alignment
   is the reconstruction's. ``A`` is recomputed block by block from the layer's queries and
   cached keys, so any attention implementation can run the prefill.
2. **Head-wise budgets.** The layer keeps ``H_kv * n_kept`` entries: the top scores across
   all its KV heads, each head keeping at least ``alpha * n_kept`` (AdaKV's safeguard; Feng et
   al., arXiv 2407.11550) and always its last ``window`` tokens.
3. **Evict-then-merge** (§3.2). Kept tokens are merge centres. Each other token joins the
   centre it is most similar to, ``relu(cos(k, k_c)) * relu(cos(v, v_c))`` (clamped so that
   anti-similar pairs do not count as redundant, a reviewer's objection), when that similarity
   is at least ``theta``; otherwise it joins the zero class 0 and is evicted. One
   ``scatter_add`` over ``[B, H_kv, 1 + n_max, D]`` then merges every head at once: a centre
   becomes the score-weighted mean of itself and its members; class 0 is dropped. Two
   simplifications of the notes' version: there is no separate "irrelevant" group ranked by
   score (any unkept token similar enough merges, the rest are evicted), and post-RoPE keys
   merge at any distance (no positional limit, no re-rotation).
4. **Ragged heads.** Heads keep different counts; the cache is padded to the layer's largest
   count ``n_max`` and the padding is masked at decode by kvpress's fake-key attention patch
   (``module.masked_key_indices``). The padding is memory held: ``kv_bytes`` counts it.

Compression happens once, after the prefill, as in the paper and kvpress.
"""
from __future__ import annotations

import contextlib
import math
import numbers
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from kvpress.presses.base_press import BasePress
from kvpress.utils import compute_n_kept, get_prerope_query_states
from transformers.models.llama.modeling_llama import repeat_kv, rotate_half

from tokenworks.ids import check_count, check_ratio

PARTS = ("global-local", "global", "local")  # which score: both (EMS) or one alone (ablations)


@torch.no_grad()
def global_local_scores(module, hidden_states: torch.Tensor, keys: torch.Tensor, position_embeddings,
                        window: int, kernel: int = 0, parts: str = "global-local", block: int = 512) -> torch.Tensor:
    """Eq. (Global-Local) for one layer's prefill. hidden_states [B, T, d], keys [B, Hkv, T, D]
    (after RoPE) -> score [B, Hkv, T] (float32). The attention rows are recomputed ``block``
    queries at a time: memory O(B * H * block * T). ``parts``: "global" or "local" alone, for
    ablations."""
    if parts not in PARTS:
        raise ValueError(f"parts must be one of {PARTS}, got {parts!r}")
    B, Hkv, T, D = keys.shape
    if not 0 < window < T:
        raise ValueError(f"the local window ({window}) must be shorter than the {T}-token prefill")
    G = module.config.num_attention_heads // Hkv
    cos, sin = position_embeddings  # [B, T, D] each
    q = get_prerope_query_states(module, hidden_states)  # [B, Hq, T, D]
    q = q * cos[:, None] + rotate_half(q) * sin[:, None]
    k = repeat_kv(keys, G).float()
    glo = keys.new_zeros(B, Hkv * G, T, dtype=torch.float32)
    loc = torch.zeros_like(glo)
    for lo in range(0, T, block):
        rows = torch.arange(lo, min(lo + block, T), device=keys.device)
        logits = q[:, :, rows].float() @ k.transpose(2, 3) * module.scaling  # [B, Hq, rows, T]
        logits.masked_fill_(rows[:, None] < torch.arange(T, device=keys.device), -math.inf)
        attn = logits.softmax(-1)
        glo += attn.sum(2)
        loc += attn[:, :, rows >= T - window].sum(2)
    glo /= torch.arange(T, 0, -1, device=keys.device)  # queries that see key j: T - j
    glo, loc = glo.view(B, Hkv, G, T).mean(2), loc.view(B, Hkv, G, T).mean(2)
    scale = loc.mean(-1, keepdim=True) / glo.mean(-1, keepdim=True)
    score = glo if parts == "global" else loc if parts == "local" else torch.maximum(glo * scale, loc)
    if kernel > 1:  # SnapKV's pooling: a token's neighbours share its importance
        score = F.avg_pool1d(score, kernel, stride=1, padding=kernel // 2, count_include_pad=False)[..., :T]
    return score


def keep_mask(scores: torch.Tensor, n_kept: int, window: int, adaptive: bool = True,
              alpha: float = 0.2) -> torch.Tensor:
    """Which entries each head keeps: scores [B, Hkv, T] -> bool [B, Hkv, T]. Every head keeps
    its last ``window`` tokens (all it keeps when ``window == n_kept``); ``adaptive``: the layer keeps its ``Hkv * n_kept`` best scores
    across heads with at least ``alpha * n_kept`` per head, else ``n_kept`` per head."""
    B, Hkv, T = scores.shape
    if not 1 <= window <= n_kept <= T:
        raise ValueError(f"a budget of {n_kept} entries per head must hold the {window}-token "
                         f"local window (at least 1) and fit the {T}-token context")
    s = scores.clone()
    s[..., T - window:] = math.inf
    if adaptive:
        n_safe = max(window, int(alpha * n_kept))
        s.scatter_(-1, s.topk(n_safe, -1).indices, math.inf)
        top = s.reshape(B, Hkv * T).topk(Hkv * n_kept, -1).indices
        keep = torch.zeros(B, Hkv * T, dtype=torch.bool, device=s.device)
        return keep.scatter_(-1, top, True).view(B, Hkv, T)
    return torch.zeros_like(s, dtype=torch.bool).scatter_(-1, s.topk(n_kept, -1).indices, True)


def evict_then_merge(keys: torch.Tensor, values: torch.Tensor, weights: torch.Tensor,
                     keep: torch.Tensor, theta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Merge every head's unkept tokens into their most similar kept token (centre), or evict
    them into the zero class when the similarity is below ``theta`` (> 1: pure eviction).

    keys, values [B, Hkv, T, D]; weights [B, Hkv, T] >= 0 (the tokens' scores); keep bool
    [B, Hkv, T]. Returns keys and values [B, Hkv, n_max, D] (each head's centres in position
    order, zero-padded to the largest count ``n_max``), ``valid`` bool [B, Hkv, n_max] (real
    entries), and ``assign`` [B, Hkv, T] (each token's class: 1 + its centre's slot, or 0)."""
    B, Hkv, T, D = keys.shape
    counts = keep.sum(-1)  # [B, Hkv]
    n_max = int(counts.max())
    slot = keep.cumsum(-1) * keep  # kept token -> 1..n_h, others 0
    centre_pos = torch.argsort((~keep).to(torch.int8), dim=-1, stable=True)[..., :n_max]  # [B, Hkv, n_max]
    valid = torch.arange(n_max, device=keys.device) < counts[..., None]
    assign = slot
    if theta <= 1:
        def cos_to_centres(x):  # [B, Hkv, T, n_max]
            x = F.normalize(x.float(), dim=-1)
            return (x @ x.gather(2, centre_pos[..., None].expand(-1, -1, -1, D)).transpose(2, 3)).clamp(min=0)
        sim = (cos_to_centres(keys) * cos_to_centres(values)).masked_fill(~valid[:, :, None], -1)
        best, centre = sim.max(-1)
        assign = torch.where(keep, slot, torch.where(best >= theta, centre + 1, 0))
    w = weights.float().clamp(min=1e-12)
    index = assign[..., None].expand(-1, -1, -1, D)
    norm = w.new_zeros(B, Hkv, 1 + n_max).scatter_add_(2, assign, w).clamp(min=1e-30)[..., None]  # class weights

    def merged(x):  # score-weighted mean of each class: [B, Hkv, 1 + n_max, D] -> drop class 0
        total = x.new_zeros(B, Hkv, 1 + n_max, D, dtype=torch.float32).scatter_add_(2, index, w[..., None] * x.float())
        return (total / norm)[:, :, 1:].to(x.dtype)
    return merged(keys), merged(values), valid, assign


@dataclass
class EMSPress(BasePress):
    """EMS as a kvpress press: ``with EMSPress(0.9)(model): model(ids, past_key_values=cache)``
    keeps ``max(1, int(T * (1 - compression_ratio)))`` entries per KV head on average, after the
    Global-Local score, head-wise budgets and evict-then-merge (module docstring).

    window_size: last prefill tokens always kept, also the local score's queries (shrunk to the
    budget when the budget or the prefill is no longer: kvpress's contract); kernel_size: score
    pooling (SnapKV's; 0 or 1: none). parts: "global" or "local" alone (ablations). theta: merge
    threshold on ``relu(cos k) * relu(cos v)`` (> 1: evict without merging). adaptive:
    head-wise budgets (False: the same count per head). alpha: each head's minimum share.
    After a prefill, ``stats[layer]`` holds each KV head's kept and merged token counts."""

    compression_ratio: float = 0.0
    window_size: int = 16
    kernel_size: int = 5
    parts: str = "global-local"
    theta: float = 0.5
    adaptive: bool = True
    alpha: float = 0.2
    stats: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        check_ratio("compression_ratio", self.compression_ratio)
        if self.parts not in PARTS:
            raise ValueError(f"parts must be one of {PARTS}, got {self.parts!r}")
        check_count("window_size", self.window_size, 1)
        if check_count("kernel_size", self.kernel_size, 0) > 1 and self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (centred pooling) or 0/1 (none), got {self.kernel_size}")
        for name, value, ok in (("alpha", self.alpha, lambda v: 0 <= v <= 1), ("theta", self.theta, lambda v: v >= 0)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not ok(value):
                raise ValueError(f"need alpha in [0, 1] and theta >= 0; got {name}={value!r}")
        if not isinstance(self.adaptive, bool):
            raise TypeError(f"adaptive must be True or False, got {self.adaptive!r}")

    @contextlib.contextmanager
    def __call__(self, model):
        """kvpress's ``with press(model):``, with the ``cache_position`` keyword transformers 5.x
        no longer passes, and layers padded to equal lengths on leaving, for kvpress's
        pipeline (``harness.kvpress_way``)."""
        from tokenworks.kvcache.harness import kvpress_way  # the harness imports this module
        with kvpress_way(self, model):
            yield

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        """keys, values [B, Hkv, T, D] -> [B, Hkv, n_max, D]; sets ``module.masked_key_indices``.
        kvpress's contract: at least one entry stays (``compute_n_kept``), and a budget (or a
        prefill) of at most ``window_size`` tokens shrinks the window to the budget, so the head
        keeps its last ``n_kept`` tokens."""
        T = keys.shape[2]
        n_kept = compute_n_kept(T, self.compression_ratio)
        if self.compression_ratio == 0 or n_kept >= T:
            return keys, values
        window = min(self.window_size, n_kept)
        scores = global_local_scores(module, hidden_states, keys, kwargs["position_embeddings"], window,
                                     self.kernel_size, self.parts)
        keep = keep_mask(scores, n_kept, window, self.adaptive, self.alpha)
        keys, values, valid, assign = evict_then_merge(keys, values, scores, keep, self.theta)
        self.stats[module.layer_idx] = {"kept": keep.sum(-1)[0].tolist(),
                                        "merged": ((assign > 0) & ~keep).sum(-1)[0].tolist()}
        pad = (~valid).nonzero(as_tuple=True)
        if pad[0].numel() and module.config._attn_implementation == "eager":
            raise ValueError("EMSPress masks ragged heads through kvpress's attention patch, which eager "
                             "attention bypasses: load the model with attn_implementation='sdpa' (or adaptive=False)")
        module.masked_key_indices = pad if pad[0].numel() else None
        return keys.contiguous(), values.contiguous()
