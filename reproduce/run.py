"""Run every notebook's reproduction parameter sets with papermill; summarise; redraw.

    python reproduce/run.py                    # everything in reproduce/config.yaml
    python reproduce/run.py tensorbleu         # one notebook
    python reproduce/run.py tensorbleu:smoke   # one run

Exits non-zero if any run failed (the others still run).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "reproduce"))
from figures import redraw  # noqa: E402

from tokenworks.models import ZOO, ZOO_DIR  # noqa: E402


def ensure_zoo() -> None:
    missing = [n for n in ZOO if not (ZOO_DIR / n / "model.safetensors").exists()]
    if missing:
        print(f"zoo: training missing models {missing} (make models)", flush=True)
        subprocess.run([sys.executable, str(ROOT / "reproduce/train_zoo.py"), "--models", *missing],
                       check=True)
    else:
        print(f"zoo: reusing the committed checkpoints ({', '.join(ZOO)})", flush=True)


def run_one(name: str, spec: dict, run: str, params: dict) -> tuple[bool, float, str]:
    notebook = ROOT / spec["notebook"]
    out = notebook if run == "smoke" else ROOT / "results" / name / f"{run}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(params, f)
    cmd = [sys.executable, "-m", "papermill", str(notebook), str(out), "-f", f.name,
           "-k", "python3", "--cwd", str(notebook.parent), "--no-progress-bar"]
    start = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=spec["timeout"])
        ok, note = proc.returncode == 0, proc.stderr.strip().splitlines()[-1:] if proc.returncode else []
    except subprocess.TimeoutExpired:
        ok, note = False, [f"timed out after {spec['timeout']} s"]
    return ok, time.time() - start, (note[0] if note else str(out.relative_to(ROOT)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("only", nargs="*", help="notebook or notebook:run names")
    args = ap.parse_args(argv)
    config = yaml.safe_load((ROOT / "reproduce/config.yaml").read_text())
    unknown = [o for o in args.only if o.split(":")[0] not in config]
    if unknown:
        ap.error(f"unknown notebook(s) {unknown}; choose from {list(config)}")
    jobs = [(n, r, p) for n, spec in config.items() for r, p in spec["runs"].items()
            if not args.only or n in args.only or f"{n}:{r}" in args.only]
    ensure_zoo()
    rows = []
    for i, (name, run, params) in enumerate(jobs, 1):
        print(f"[{i}/{len(jobs)}] {name}:{run} ...", flush=True)
        ok, seconds, note = run_one(name, config[name], run, params)
        print(f"[{i}/{len(jobs)}] {name}:{run} {'ok' if ok else 'FAILED'} in {seconds:.0f} s  {note}",
              flush=True)
        rows.append((f"{name}:{run}", "ok" if ok else "FAILED", f"{seconds:.0f} s", note))
    redraw()
    width = max(len(r[0]) for r in rows) if rows else 10
    print("\nrun".ljust(width + 1), "status  time    output")
    for r in rows:
        print(r[0].ljust(width), r[1].ljust(7), r[2].rjust(6), "", r[3])
    return 0 if all(r[1] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
