"""The TensorBLEU verdict: the paper's claims judged from the notebook's exactness checks and
speed benchmark (rows ``{length, batch, nltk_s, <counting>_s}``, ``<counting>`` from
``tokenworks.metrics.tensorbleu.COUNTING``)."""
from __future__ import annotations

from tokenworks.metrics.tensorbleu import COUNTING, SMOOTHING
from tokenworks.verdicts import Claim

TOLERANCE = 1e-6  # the paper's bound on |TensorBLEU - NLTK sentence_bleu| (its §4.1)
POINT = (1024, 256)  # the paper's headline point: 1,024 tokens x batch 256
T4_SPEEDUP = 11.6  # Table 1 (T4) at POINT; its largest T4 speed-up is 13.4x, at batch 128
A100_SPEEDUP = 40.2  # Table 2 (A100) at POINT
LABELS = {"sort": "ours (packed keys, sort)", "unique": "the paper's counting (unique + bincount)",
          "triton": "Triton kernel"}


def _check(bench: list[dict], device: str) -> None:
    if not bench:
        raise ValueError("the benchmark has no rows: time at least one point")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda' (torch.device.type), got {device!r}")
    for row in bench:
        missing = [k for k in ("length", "batch", "nltk_s", "sort_s", "unique_s") if k not in row]
        if missing:
            raise ValueError(f"benchmark row {row} lacks {missing}: time NLTK, ours (sort) and the paper's "
                             "counting (unique) at every point")


def _worst(exactness: dict[str, float], generation_diff: float) -> float:
    """The largest difference from NLTK over the smoothings compared and the generations."""
    unknown = sorted(set(exactness) - {f"method{m}" for m in set(SMOOTHING.values())})
    if not exactness or unknown:
        raise ValueError(f"exactness needs NLTK smoothing names method0-method7 (largest difference each); "
                         f"got {sorted(exactness)}")
    return max(*exactness.values(), generation_diff)


def _point(bench: list[dict]) -> dict | None:
    """The benchmark row at the paper's headline point, None where it was not run."""
    return next((r for r in bench if (r["length"], r["batch"]) == POINT), None)


def _shown(bench: list[dict]) -> dict:
    """The row the context and headline report: the headline point, else the largest point run."""
    return _point(bench) or max(bench, key=lambda r: (r["length"], r["batch"]))


def verdict(exactness: dict[str, float], generation_diff: float, bench: list[dict], device: str) -> list[Claim]:
    """The paper's two claims. **Equal to NLTK**: the largest |tensor_bleu - sentence_bleu|
    over the smoothings compared (``exactness``: NLTK name -> max difference) and the model's
    generations (``generation_diff``) is below the paper's ``TOLERANCE``. **Faster than the
    NLTK loop**: the paper's counting (``unique``) at its headline point (``POINT``) is at least
    Table 1's T4 speed-up, the smaller of its two GPUs. The paper times TensorBLEU on the GPU
    against NLTK on the host's CPU; on ``device`` "cpu" both run on the CPU, a proxy. Not
    measured (None) where the benchmark skipped ``POINT``."""
    worst = _worst(exactness, generation_diff)
    _check(bench, device)
    names = sorted(exactness)
    missing = sorted(f"method{m}" for m in set(SMOOTHING.values()) if f"method{m}" not in exactness)
    skipped = f"; {', '.join(missing)} not compared" if missing else ""
    head = _point(bench)
    speedup = head["nltk_s"] / head["unique_s"] if head else None
    where = ("TensorBLEU on this GPU, NLTK on its CPU, as the paper" if device == "cuda" else
             "both on this CPU (the paper: TensorBLEU on a T4 / A100 GPU, NLTK on the host's CPU)")
    bound = f"{TOLERANCE:.0e}".replace("e-0", "e-")
    return [
        Claim("Equal to NLTK's sentence_bleu on the same token ids, weights and smoothing",
              f"within {bound} (§4.1; unverified)",
              f"largest difference {worst:.1e} ({', '.join(names)}; greedy generations, floor smoothing){skipped}",
              f"largest absolute difference from NLTK over the smoothings compared and the generations below {bound}",
              worst < TOLERANCE),
        Claim(f"Faster than the NLTK loop at batch {POINT[1]} x {POINT[0]:,} tokens",
              f"{T4_SPEEDUP}x on a T4 (Table 1; up to 13.4x at batch 128), {A100_SPEEDUP}x on an A100 (Table 2); unverified",
              f"{speedup:.2f}x, {LABELS['unique']}" if head else f"not run at {POINT[1]} x {POINT[0]:,} tokens",
              f"NLTK loop's time over the paper's counting's at least {T4_SPEEDUP}x (the T4's, the smaller of the "
              f"paper's GPUs), {where}",
              speedup >= T4_SPEEDUP if head else None,
              proxy="" if device == "cuda" else "speed-up on a CPU in place of a GPU"),
    ]


def context(bench: list[dict], device: str) -> list[tuple[str, str, str]]:
    """Rows that inform without deciding: the other countings' speed-ups at the headline point
    (ours, and the Triton kernel on a GPU), and where it was not run, the largest point run."""
    _check(bench, device)
    head = _shown(bench)
    at = f"batch {head['batch']} x {head['length']:,} tokens, {'GPU' if device == 'cuda' else 'CPU'}"
    return [(f"{LABELS[c]}: speed-up over the NLTK loop", "-", f"{head['nltk_s'] / head[c + '_s']:.1f}x at {at}")
            for c in COUNTING if c + "_s" in head and (c != "unique" or not _point(bench))]


def headline(exactness: dict[str, float], generation_diff: float, bench: list[dict], device: str) -> str:
    """This run's numbers for the README: the largest difference from NLTK, and the speed-ups
    of ours and of the paper's counting at the headline point (else the largest point run)."""
    _check(bench, device)
    head, worst = _shown(bench), _worst(exactness, generation_diff)
    return (f"max diff {worst:.0e}; {head['nltk_s'] / head['sort_s']:.1f}x NLTK on {'GPU' if device == 'cuda' else 'CPU'} "
            f"at {head['batch']} x {head['length']} tokens (paper's counting {head['nltk_s'] / head['unique_s']:.2f}x)")
