"""What a reader opens is clean: every committed notebook (the smoke runs in notebooks/, the
executed full runs in results/) shows no warning, no leftover progress frame and no absolute path
of the machine that ran it (papermill's metadata included), and no notebook or text for readers
points at the team's issues or notes or at files outside the repository."""
import json
import re
from pathlib import Path

import pytest

from records import is_current, published

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(ROOT.glob("notebooks/*.ipynb")) + sorted(ROOT.glob("results/*/*.ipynb"))
TEXTS = [ROOT / "README.md", ROOT / "lib/README.md", *sorted(ROOT.glob("zoo/**/README.md")), *sorted(ROOT.glob("references/*.md"))]
# a path of the machine that ran the notebook (a reader's machine has none of these)
ABSOLUTE = re.compile(r"(?<![\w.])/(?:work|root|home|tmp|check|usr/local|opt)/[\w./+-]*")
WARNING = re.compile(r"\b\w*Warning\b|IProgress not found|will result in indexing errors|^warn", re.M)
OUTSIDE = re.compile(r"\bshared/|methods-[\w-]+\.md|\bthe issue\b|\bissue \d+|\bissues?'s\b", re.I)


def _outputs(nb: dict):
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            yield out


def _text(out: dict) -> str:
    if out["output_type"] == "stream":
        return "".join(out["text"])
    if out["output_type"] == "error":
        return "\n".join(out["traceback"])
    return "".join("".join(v) if isinstance(v, list) else v for k, v in out.get("data", {}).items()
                   if k.startswith("text/"))


def problems(path: Path) -> list[str]:
    raw = path.read_text()
    nb = json.loads(raw)
    found = [f"absolute path {m.group()!r}" for m in ABSOLUTE.finditer(raw)]
    for out in _outputs(nb):
        text = _text(out)
        if out["output_type"] == "error":
            found.append(f"an error output: {text[:200]!r}")
        found += [f"warning {m.group()!r} in {text[max(0, m.start() - 80):m.end() + 80]!r}" for m in WARNING.finditer(text)]
        if "\r" in text:
            found.append(f"progress frames (carriage returns) in {text[:120]!r}")
    for cell in nb["cells"]:
        found += [f"points outside: {m.group()!r}" for m in OUTSIDE.finditer("".join(cell["source"]))]
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_notebook_is_clean(path):
    assert not problems(path), "\n".join(problems(path))


@pytest.mark.parametrize("path", TEXTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_reader_text_points_nowhere_outside(path):
    text = path.read_text()
    found = [m.group() for m in OUTSIDE.finditer(text)] + [m.group() for m in ABSOLUTE.finditer(text)]
    assert not found, found


def test_the_checks_catch_what_they_name(tmp_path):
    nb = {"cells": [{"cell_type": "code", "source": ["# see the issue\n"], "metadata": {}, "outputs": [
        {"output_type": "stream", "name": "stderr", "text": ["x UserWarning: y\n", "10%\r20%\n"]}]}],
        "metadata": {"papermill": {"input_path": "/work/main/notebooks/x.ipynb"}}}
    (tmp_path / "x.ipynb").write_text(json.dumps(nb))
    found = " ".join(problems(tmp_path / "x.ipynb"))
    assert all(s in found for s in ("absolute path", "UserWarning", "carriage returns", "the issue")), found


def test_every_current_readme_row_is_shown_by_its_executed_notebook():
    """A README row whose record is current (not marked stale) has its executed full-run
    notebook beside the record, and that notebook prints the row's numbers (``save_result``)."""
    missing = {}
    for method, record in published():
        if not is_current(method, record):
            continue
        executed = ROOT / "results" / method / "full.ipynb"
        s = record["metrics"]["summary"]
        line = f"README row, this run: {s['ours']} | status: {s['status']}"
        shown = executed.exists() and any(line in _text(out) for out in _outputs(json.loads(executed.read_text())))
        if not shown:
            missing[method] = "no results/<stem>/full.ipynb" if not executed.exists() else "its row is not printed"
    assert not missing, missing
