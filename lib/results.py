"""Results are data: every run writes ``results/<method>/<config>.json`` with provenance."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path

from tokenworks.paths import REPO
PACKAGES = ("torch", "transformers", "tokenizers", "triton", "nltk", "numpy")


def out_dir(kind: str) -> Path:
    """``results`` or ``figures`` folder: the repo's, or under ``$TOKENWORKS_OUT`` when set
    (the tests run notebooks there so that they never rewrite committed results)."""
    root = os.environ.get("TOKENWORKS_OUT")
    return (Path(root) if root else REPO) / kind
def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    n = torch.get_num_threads()
    return f"CPU ({platform.processor() or platform.machine()}, {n} thread{'s' * (n != 1)})"


def provenance() -> dict:
    """Git commit and dirty flag, device, package versions and time of this run."""
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    # TOKENWORKS_COMMIT names the commit where the tree was copied without .git (a GPU lease)
    changed = _git("diff", "--name-only", "HEAD").splitlines()  # tracked files changed since HEAD
    # dirty_files says what differed: a smoke run rewrites its notebook's outputs before a full run
    return {"commit": _git("rev-parse", "HEAD") or os.environ.get("TOKENWORKS_COMMIT"),
            "dirty": bool(changed), "dirty_files": changed,
            "device": device_name(), "python": platform.python_version(),
            "packages": versions, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def save_result(method: str, config: str, metrics: dict, parameters: dict) -> Path:
    """Write ``results/<method>/<config>.json`` and return its path."""
    path = out_dir("results") / method / f"{config}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"method": method, "config": config, "metrics": metrics,
              "parameters": parameters, "provenance": provenance()}
    path.write_text(json.dumps(record, indent=1, default=float) + "\n")
    return path


def load_result(method: str, config: str) -> dict:
    path = out_dir("results") / method / f"{config}.json"
    if not path.exists():
        raise FileNotFoundError(f"no results at {path}: run the {method} notebook "
                                f"(make reproduce) first")
    return json.loads(path.read_text())


def figure_path(method: str, name: str, config: str) -> Path:
    """``figures/<method>_<name>.png`` for the ``full`` reproduction, else with the config
    appended (smoke runs never overwrite the published figures)."""
    suffix = "" if config == "full" else f"_{config}"
    path = out_dir("figures") / f"{method}_{name}{suffix}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
