"""Where the repository's data lives (``zoo/``, ``results/``, ``figures/``), found without
assuming an editable install: ``$TOKENWORKS_ROOT`` when set, else the checkout this package
was installed from (editable install), else the nearest folder above the working directory
that holds ``zoo/`` and ``reproduce/`` (a notebook or script run inside a checkout)."""
from __future__ import annotations

import functools
import os
from pathlib import Path


def _is_root(path: Path) -> bool:
    return (path / "zoo").is_dir() and (path / "reproduce").is_dir()


@functools.cache
def repo_root() -> Path:
    """The repository root; a clear error when none can be found."""
    if os.environ.get("TOKENWORKS_ROOT"):
        root = Path(os.environ["TOKENWORKS_ROOT"]).expanduser().resolve()
        if not _is_root(root):
            raise FileNotFoundError(f"TOKENWORKS_ROOT={root} holds no zoo/ and reproduce/: point it "
                                    "at a tokenworks checkout")
        return root
    here = Path(__file__).resolve().parent.parent
    for candidate in (here, Path.cwd().resolve(), *Path.cwd().resolve().parents):
        if _is_root(candidate):
            return candidate
    raise FileNotFoundError("no tokenworks checkout found (a folder holding zoo/ and reproduce/): "
                            "run inside one, or set TOKENWORKS_ROOT to its path")



def __getattr__(name):  # REPO is found on first use: importing the package needs no checkout
    if name == "REPO":
        return repo_root()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
