"""Build the reproductions' site: a static HTML book of the committed executed full-run notebooks
(``results/<method>/<config>.ipynb``), with the reproductions table as its index.

    python reproduce/book.py [--out build/site]      # then open build/site/html/index.html

Sphinx with MyST-NB renders the notebooks as they were executed (nothing is re-run), the Furo
theme lays them out, and sphinx-mathjax-offline serves MathJax from the build, so that equations
render without a network. Publish by copying ``html/`` to any static host (GitHub Pages, say).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "reproduce"))
from figures import FIGURES, staleness  # noqa: E402  (the README's table, from the same records)

from tokenworks.verdicts import STATUSES  # noqa: E402

CONF = '''project = "tokenworks"
html_title = "tokenworks: reproductions"
extensions = ["myst_nb", "sphinx-mathjax-offline"]  # the package imports under its hyphenated name
myst_enable_extensions = ["dollarmath", "amsmath"]
nb_execution_mode = "off"          # the notebooks are shown as their full runs executed them
nb_merge_streams = True
html_theme = "furo"
exclude_patterns = ["_build"]
suppress_warnings = ["myst.header", "mystnb.unknown_mime_type", "misc.highlighting_failure"]
'''


def executed() -> list[Path]:
    """The committed executed full-run notebooks, by method and configuration."""
    return sorted(p for p in ROOT.glob("results/*/*.ipynb") if p.parent.name in FIGURES or p.parent.name == "model_cards")


def index(pages: list[Path]) -> str:
    """The index page: the reproductions table (from ``results/<method>/full.json``), the status
    legend, and the table of contents."""
    rows = ["| paper | notebook | headline claim | this run | status |", "|---|---|---|---|---|"]
    shown = {p.parent.name for p in pages}
    for method in FIGURES:
        path = ROOT / "results" / method / "full.json"
        if not path.exists():
            continue
        record = json.loads(path.read_text())
        s, stale = record["metrics"]["summary"], staleness(method, record)
        link = f"[{method}]({method}/full.ipynb)" if method in shown else f"{method} (full run not yet committed)"
        rows.append(f"| {s['paper']} | {link} | {s['claim']} | {s['ours']} | {s['status']}"
                    + (f" ({stale})" if stale else "") + " |")
    legend = [f"- **{label}**: {meaning}." for label, meaning in STATUSES.items()]
    toc = [toc_entry(p, pages) for p in pages]
    return "\n".join(["# tokenworks: reproductions of token-level inference papers", "",
                      "Each page is a notebook as its full run executed it, on the real models; the "
                      "numbers in the table come from the same runs (`results/`).", "", *rows, "",
                      "Status:", "", *legend, "", "```{toctree}", ":maxdepth: 1", ":caption: Full runs", "",
                      *toc, "```", ""])


def toc_entry(page: Path, pages: list[Path]) -> str:
    """A page in the contents: its document, titled with its notebook's title and the run's name
    where one notebook has several full runs (one model card per model), which would read alike."""
    doc = f"{page.parent.name}/{page.stem}"
    if sum(p.parent == page.parent for p in pages) == 1:
        return doc
    cells = json.loads(page.read_text())["cells"]
    title = next(line[2:] for c in cells if c["cell_type"] == "markdown"
                 for line in "".join(c["source"]).splitlines() if line.startswith("# "))
    return f"{title} ({page.stem}) <{doc}>"


def build(out: Path) -> Path:
    """Write the book's sources under ``out/src`` and its HTML under ``out/html``; returns the latter."""
    src, html = out / "src", out / "html"
    shutil.rmtree(out, ignore_errors=True)
    src.mkdir(parents=True)
    pages = executed()
    for page in pages:
        (src / page.parent.name).mkdir(exist_ok=True)
        shutil.copy(page, src / page.parent.name / page.name)
    (src / "conf.py").write_text(CONF)
    (src / "index.md").write_text(index(pages))
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-q", str(src), str(html)],
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"sphinx-build failed:\n{proc.stderr}")
    return html


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "build/site", help="default: build/site")
    html = build(ap.parse_args(argv).out.resolve())
    print(f"site: {html / 'index.html'} ({len(executed())} notebooks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
