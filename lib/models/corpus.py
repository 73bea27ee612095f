"""The zoo's corpus: the CPython standard library of the running Python.

Every ``.py`` file under the standard library (site-packages excluded, files over
``MAX_FILE_BYTES`` excluded: they are generated tables) is assigned to a split by a stable
hash of its path relative to the library root, so the split does not depend on the machine,
the file system order or the Python patch release (only the file contents do, and those are
pinned by the corpus hash).
"""
from __future__ import annotations

import ast
import hashlib
import json
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

MAX_FILE_BYTES = 200_000
SPLITS = ("train", "validation", "test")


def split_of(relpath: str) -> str:
    """``train`` (90%), ``validation`` (5%) or ``test`` (5%) by the SHA-256 of the path."""
    bucket = int(hashlib.sha256(relpath.encode()).hexdigest(), 16) % 100
    return "train" if bucket < 90 else "validation" if bucket < 95 else "test"


@dataclass
class Corpus:
    files: dict[str, list[tuple[str, str]]]  # split -> [(relative path, text)]
    sha256: str
    python: str

    def texts(self, split: str) -> list[str]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
        return [text for _, text in self.files[split]]

    def summary(self) -> dict:
        return {
            "python": self.python,
            "sha256": self.sha256,
            **{f"{s}_files": len(self.files[s]) for s in SPLITS},
            **{f"{s}_bytes": sum(len(t.encode()) for _, t in self.files[s]) for s in SPLITS},
        }


def stdlib_corpus(root: str | Path | None = None) -> Corpus:
    """Read the standard library under ``root`` (default: this interpreter's) into splits."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    files: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py"), key=lambda p: p.relative_to(root).as_posix()):
        rel = path.relative_to(root).as_posix()
        if "site-packages" in path.parts or path.stat().st_size > MAX_FILE_BYTES:
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        files[split_of(rel)].append((rel, text))
        digest.update(rel.encode() + b"\0" + text.encode() + b"\0")
    return Corpus(files, digest.hexdigest(), ".".join(map(str, sys.version_info[:3])))


def save_corpus(corpus: Corpus, path: str | Path) -> None:
    """Write the corpus as one JSON file (to carry it to a machine with another Python)."""
    Path(path).write_text(json.dumps({"files": corpus.files, "sha256": corpus.sha256,
                                      "python": corpus.python}))


def load_corpus(path: str | Path) -> Corpus:
    data = json.loads(Path(path).read_text())
    files = {s: [tuple(item) for item in data["files"][s]] for s in SPLITS}
    return Corpus(files, data["sha256"], data["python"])


def function_nodes(text: str) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    """Every function and method definition of a Python source, in ``ast.walk`` order (none
    if it does not parse)."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return []
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
