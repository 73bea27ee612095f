"""Results are data: every run writes ``results/<method>/<config>.json`` with provenance.

Provenance says what made a record: the commit, device and packages (``provenance``), and
hashes of the code and models it depends on (``code_hashes``, ``model_hashes``), so that
``make figures`` and ``reproduce/run.py`` can tell a record that still describes the
repository from a stale one. Hashes are of file contents (sha256), never of mtimes or git
objects: a fresh clone, or a copy without ``.git``, gives the same hashes.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path

import yaml

from tokenworks.paths import repo_root

PACKAGES = ("torch", "transformers", "tokenizers", "triton", "nltk", "numpy")
# Code every record depends on besides its notebook and its family (lib/<family>/): the
# shared top-level modules, the models family (every notebook loads its model and held-out
# data through it) and the Triton kernels.
SHARED_CODE = {"lib/*.py": ("lib", "*.py"), "lib/models": ("lib/models", "**/*"),
               "kernels": ("kernels", "**/*")}  # part -> (folder, file pattern)
RUNNER_TAGS = {"injected-parameters", "run-banner"}  # cells papermill and reproduce/run.py write
OUTPUTS = ("results/", "figures/", "README.md")  # what runs write (README: its tables, by the runner), never read
# Files of a zoo model that loading reads (weights, architecture, generation settings, tokenizer).
ZOO_FILES = ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
             "tokenizer_config.json")


def out_dir(kind: str) -> Path:
    """``results`` or ``figures`` folder: the repo's, or under ``$TOKENWORKS_OUT`` when set
    (the tests run notebooks there so that they never rewrite committed results)."""
    root = os.environ.get("TOKENWORKS_OUT")
    return (Path(root) if root else repo_root()) / kind


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=repo_root(), capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    n = torch.get_num_threads()
    return f"CPU ({platform.processor() or platform.machine()}, {n} thread{'s' * (n != 1)})"


# --- which notebook and family a method is (reproduce/config.yaml) -------------------------

def config_path() -> Path:
    """The reproduction config: ``$TOKENWORKS_CONFIG`` when set (``run.py --config`` sets it
    for its notebooks), else ``reproduce/config.yaml``."""
    return Path(os.environ.get("TOKENWORKS_CONFIG") or repo_root() / "reproduce/config.yaml")


def families() -> list[str]:
    """The library's families: the subpackages of ``lib/``."""
    return sorted(p.name for p in (repo_root() / "lib").iterdir() if (p / "__init__.py").is_file())


def reproductions(path: Path | None = None) -> dict[str, dict]:
    """The config's notebooks, each checked to name an existing notebook (relative to the
    repository, or absolute), a family of ``lib/``, a timeout and its runs."""
    path = Path(path or config_path())
    config = yaml.safe_load(path.read_text()) or {}
    for name, spec in config.items():
        missing = [k for k in ("notebook", "family", "timeout", "runs") if k not in spec]
        if missing:
            raise ValueError(f"{path}: {name} lacks {missing}; every notebook needs notebook, "
                             "family, timeout and runs")
        if spec["family"] not in families():
            raise ValueError(f"{path}: {name} has family {spec['family']!r}; use one of {families()}")
        if not (repo_root() / spec["notebook"]).is_file():
            raise ValueError(f"{path}: {name}'s notebook {spec['notebook']} does not exist")
    return config


# --- hashes of file contents ---------------------------------------------------------------

def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tree_hash(root: Path, pattern: str = "**/*") -> str:
    """sha256 over the relative paths and contents of the files under ``root`` matching
    ``pattern`` (bytecode caches left out): the same for any copy of the tree."""
    h = hashlib.sha256()
    files = sorted(p for p in root.glob(pattern) if p.is_file() and "__pycache__" not in p.parts)
    for p in files:
        h.update(f"{p.relative_to(root).as_posix()}\0{file_sha256(p)}\n".encode())
    return h.hexdigest()


def _read_notebook(path: Path, attempts: int = 20) -> dict:
    """The notebook's JSON. A smoke run's notebook is papermill's output, which papermill
    rewrites (not atomically) while the run's save_result reads it: a torn read is retried."""
    for attempt in range(attempts):
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.1)


def notebook_hash(path: Path) -> str:
    """sha256 of a notebook's cells (type and source), without outputs, execution counts,
    metadata, papermill's injected-parameters cell or the runner's banner (``RUNNER_TAGS``):
    executing a notebook, which rewrites its outputs, leaves its hash unchanged."""
    h = hashlib.sha256()
    for cell in _read_notebook(Path(path))["cells"]:
        if RUNNER_TAGS & set(cell.get("metadata", {}).get("tags", [])):
            continue
        source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        h.update(json.dumps([cell["cell_type"], source]).encode() + b"\n")
    return h.hexdigest()


def code_hashes(method: str, config: Path | None = None) -> dict[str, str] | None:
    """{part: sha256} of the code a record of ``method`` depends on: its notebook, its family
    ``lib/<family>/`` and ``SHARED_CODE``. None for a method the config does not list (a
    benchmark script's record): nothing to compare it with."""
    spec = reproductions(config).get(method)
    if spec is None:
        return None
    return {"notebook": notebook_hash(repo_root() / spec["notebook"]),
            f"lib/{spec['family']}": tree_hash(repo_root() / "lib" / spec["family"]),
            **{part: tree_hash(repo_root() / folder, pattern) for part, (folder, pattern) in SHARED_CODE.items()}}


def model_hashes(parameters: dict) -> dict[str, dict]:
    """{model: identity} for every parameter whose key ends with ``model``: a zoo model's
    ``ZOO_FILES`` sha256s (None for a missing file), a packaged model's package versions and
    GGUF sha256 (``packaged.identity``), a hub id with its revision (parameter
    ``<key>_revision``, None when not given; the hub's files are not hashed)."""
    from tokenworks.models import PACKAGED, ZOO, zoo_dir
    from tokenworks.models.packaged import identity

    out = {}
    for key, name in parameters.items():
        if not key.endswith("model") or not isinstance(name, str) or not name:
            continue
        if name in ZOO:
            out[name] = {f: file_sha256(zoo_dir() / name / f) if (zoo_dir() / name / f).is_file() else None
                         for f in ZOO_FILES}
        elif name in PACKAGED:
            out[name] = identity(name)
        else:
            out[name] = {"hub_id": name, "revision": parameters.get(f"{key}_revision")}
    return out


def provenance() -> dict:
    """Git commit and dirty flag, device, package versions and time of this run. Dirty means
    tracked files other than ``OUTPUTS`` differ from the commit: runs side by side (``run.py
    -j``) rewrite each other's results and figures, which no run reads."""
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    # TOKENWORKS_COMMIT names the commit where the tree was copied without .git (a GPU lease)
    changed = [f for f in _git("diff", "--name-only", "HEAD").splitlines()  # tracked files changed
               if not f.startswith(OUTPUTS)]  # since HEAD, other runs' outputs left out
    # dirty_files says what differed: a smoke run rewrites its notebook's outputs before a full run
    return {"commit": _git("rev-parse", "HEAD") or os.environ.get("TOKENWORKS_COMMIT"),
            "dirty": bool(changed), "dirty_files": changed,
            "device": device_name(), "python": platform.python_version(),
            "packages": versions, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def save_result(method: str, config: str, metrics: dict, parameters: dict) -> Path:
    """Write ``results/<method>/<config>.json`` and return its path; its provenance holds the
    hashes of the code (``code``) and models (``models``) the run depended on. A ``summary``
    (the README row) is printed as well, so the executed notebook shows every number of its row."""
    path = out_dir("results") / method / f"{config}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"method": method, "config": config, "metrics": metrics, "parameters": parameters,
              "provenance": {**provenance(), "code": code_hashes(method),
                             "models": model_hashes(parameters)}}
    path.write_text(json.dumps(record, indent=1, default=float) + "\n")
    if "summary" in metrics:
        print(f"README row, this run: {metrics['summary']['ours']} | status: {metrics['summary']['status']}")
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
