"""The paper authors' own implementation, mergekit's ``mergekit-tokensurgeon``, run as a peer on
the same base and donor: in its own virtual environment (its pins are not ours), on the same
converted checkpoints our loader reads. ``tokensurgeon`` writes its transplanted model to a folder;
``compare_rows`` sets its new rows beside ours."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from tokenworks.models import PACKAGED, ZOO, zoo_dir
from tokenworks.models.packaged import converted

PINS = ("torch==2.13.0", "mergekit==0.1.5")  # the CPU wheel of our torch, and the mergekit we ran


def model_dir(name: str) -> str:
    """The Hugging Face folder of a zoo or packaged model (a hub id is passed on as it is)."""
    if name in ZOO:
        return str(zoo_dir() / name)
    if name in PACKAGED:
        return str(converted(name))
    if "/" not in name:
        raise ValueError(f"unknown model {name!r}: a zoo model ({', '.join(ZOO)}), a packaged model "
                         f"({', '.join(PACKAGED)}) or a hub id")
    return name


def peer_env(venv: Path) -> Path:
    """``venv`` with ``PINS`` installed (made on first use, minutes; pip needs the package index);
    returns its ``mergekit-tokensurgeon``. What pip prints is kept back and shown only if it fails
    (its warnings name this machine's index, not the reader's)."""
    tool = venv / "bin" / "mergekit-tokensurgeon"
    if not tool.exists():
        print(f"installing {', '.join(PINS)} into its own environment ({venv.name}), once", flush=True)
        for step in ([sys.executable, "-m", "venv", str(venv)],
                     [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *PINS]):
            run = subprocess.run(step, capture_output=True, text=True)
            if run.returncode:
                raise RuntimeError(f"{' '.join(step[:4])} failed ({run.returncode}); the peer needs the package "
                                   f"index once:\n{(run.stdout + run.stderr)[-2000:]}")
    return tool


def tokensurgeon(base: str, donor: str, out: Path, venv: Path, k: int = 64, threads: int = 1) -> Path:
    """``base`` given ``donor``'s tokenizer by mergekit's OMP with ``k`` atoms, written to
    ``out`` (reused while its stamp names the same base, donor, k and pins). Prints what
    mergekit logged about the vocabularies (how it normalised their word-start markers)."""
    if k < 1:
        raise ValueError(f"k={k}: OMP needs at least one atom per token")
    stamp = {"base": base, "donor": donor, "k": k, "pins": list(PINS)}
    done = out / "tokenworks.json"
    kept = json.loads(done.read_text()) if done.exists() else {}
    if {key: value for key, value in kept.items() if key != "said"} != stamp:
        kept = {**stamp, "said": _run(peer_env(venv), base, donor, out, k, threads)}
        done.write_text(json.dumps(kept))
    print("".join(f"mergekit said: {line}\n" for line in kept["said"]), end="")  # how it read the vocabularies
    return out


def _run(tool: Path, base: str, donor: str, out: Path, k: int, threads: int) -> list[str]:
    """Run ``tool``; return the warnings it logged."""
    run = subprocess.run([str(tool), model_dir(base), model_dir(donor), str(out), "-k", str(k), "-a", "omp",
                          "-j", str(threads), "--quiet", "--no-write-model-card"],
                         capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if run.returncode:
        raise RuntimeError(f"mergekit-tokensurgeon failed ({run.returncode}):\n{run.stderr[-2000:]}")
    return [line.split(":", 2)[-1] for line in run.stderr.splitlines() if line.startswith("WARNING:mergekit")]


def compare_rows(ours: torch.Tensor, theirs: torch.Tensor, ids: list[int]) -> dict:
    """Our rows against the peer's, for the token ids ``ids`` (rows of the same donor vocabulary):
    cosine similarity and the norm of the difference relative to ours, as quantiles."""
    if ours.shape[1] != theirs.shape[1] or max(ids) >= min(len(ours), len(theirs)):
        raise ValueError(f"rows {tuple(ours.shape)} and {tuple(theirs.shape)} do not cover ids up to {max(ids)}")
    a, b = ours[ids].double(), theirs[ids].double()
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1)
    rel = (a - b).norm(dim=1) / a.norm(dim=1).clamp_min(1e-12)
    q = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    return {"tokens": len(ids), "cosine": dict(zip(("p10", "median", "p90"), torch.quantile(cos, q).tolist())),
            "relative_difference": dict(zip(("p10", "median", "p90"), torch.quantile(rel, q).tolist())),
            "identical": int((a == b).all(dim=1).sum())}
