"""Run every notebook's reproduction parameter sets with papermill; summarise; redraw.

    python reproduce/run.py                    # everything in reproduce/config.yaml
    python reproduce/run.py tensorbleu         # one notebook
    python reproduce/run.py tensorbleu:smoke   # one run
    python reproduce/run.py -j 2               # two runs side by side, each on half the cores
    python reproduce/run.py --ray HOST:PORT    # every run a task on a Ray cluster

Full runs go first, smoke runs last: a smoke run rewrites notebooks/<name>.ipynb, which a
full run after it would record as dirty. A run whose results record has its parameters and
the current hashes of its code and models (tokenworks.results) is skipped as up to date,
unless --force. Each run that succeeds leaves its wall time in results/run_times.json (with
the commit, the runs side by side and the cores), which the README's time for `make
reproduce` is taken from. Figures and README tables are redrawn for the repository's own config.
Exits 2 for unknown notebook or run names, 1 if any run failed (the others still run).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import yaml

from tokenworks.models import ZOO, ZOO_DIR
from tokenworks.results import code_hashes, model_hashes, out_dir, provenance, reproductions

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "reproduce/config.yaml"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")  # torch reads the first two
# third-party warnings that would print the venv's path into committed notebooks: tqdm's
# fallback from widgets to text, genlm-bytes' use of torch's sparse tensors
QUIET = ("IProgress not found", "Sparse invariant checks", "Sparse CSR tensor support")
PASSED_ON = ("TOKENWORKS_OUT", "TOKENWORKS_ROOT", "TOKENWORKS_COMMIT", "HF_HUB_OFFLINE", "TOKENIZERS_PARALLELISM")


def ensure_zoo() -> None:
    missing = [n for n in ZOO if not (ZOO_DIR / n / "model.safetensors").exists()]
    if missing:
        print(f"zoo: training missing models {missing} (make models)", flush=True)
        subprocess.run([sys.executable, str(ROOT / "reproduce/train_zoo.py"), "--models", *missing],
                       check=True)
    else:
        print(f"zoo: reusing the committed checkpoints ({', '.join(ZOO)})", flush=True)


def plan(config: dict, only: list[str]) -> list[tuple[str, str, dict]]:
    """(notebook, run, parameters) of the selected runs, full runs before smoke runs."""
    jobs = [(n, r, p) for n, spec in config.items() for r, p in spec["runs"].items()
            if not only or n in only or f"{n}:{r}" in only]
    return sorted(jobs, key=lambda job: job[1] == "smoke")  # stable: config order otherwise


def up_to_date(name: str, run: str, params: dict, config_path: Path) -> bool:
    """Whether the run's record has its parameters and the current code and model hashes."""
    path = out_dir("results") / name / f"{params.get('config', run)}.json"
    if not path.exists():
        return False
    record = json.loads(path.read_text())
    prov, recorded = record["provenance"], {**record["parameters"], "config": record["config"]}
    return (all(k in recorded and recorded[k] == v for k, v in params.items())
            and prov.get("code") == code_hashes(name, config_path)
            and prov.get("models") == model_hashes(record["parameters"]))


def child_env(threads: int, config_path: Path) -> dict[str, str]:
    """What a run's papermill process needs besides the worker's environment: its thread
    count, the config, the caller's output folder and offline settings, and ``QUIET``."""
    env = {k: os.environ[k] for k in PASSED_ON if k in os.environ}
    return {**env, **{k: str(threads) for k in THREAD_VARS}, "TOKENWORKS_CONFIG": str(config_path),
            "PYTHONWARNINGS": ",".join(f"ignore:{message}" for message in QUIET)}


def execute(python: str, notebook: str, out: str, params: dict, timeout: float,
            env: dict[str, str], cwd: str, cpus: list[int] | None = None,
            banner: str | None = None) -> tuple[bool, float, str]:
    """Run ``notebook`` with papermill into ``out`` from ``cwd`` (paths relative to it stay
    relative in the executed notebook's metadata), on the cores ``cpus`` if given, then
    ``tidy`` it with ``banner``; (ok, seconds, error note). Self-contained but for ``tidy``:
    it is also the body of a Ray task."""
    (Path(cwd) / out).parent.mkdir(parents=True, exist_ok=True)
    cmd = [python, "-m", "papermill", notebook, out, "-y", yaml.safe_dump(params),
           "-k", "python3", "--cwd", str(Path(notebook).parent), "--no-progress-bar"]
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    start = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                              env={**os.environ, **env}, preexec_fn=pin)
        ok, note = proc.returncode == 0, (proc.stderr.strip().splitlines() or [""])[-1]
        if ok:
            tidy(Path(cwd) / out, banner)
    except subprocess.TimeoutExpired:
        ok, note = False, f"timed out after {timeout} s"
    return ok, time.time() - start, "" if ok else note or "papermill failed"


def tidy(path: Path, banner: str | None = None) -> None:
    """An executed notebook as a reader should see it: consecutive stream outputs merged and
    each progress bar reduced to its last frame (nbconvert's ``CoalesceStreamsPreprocessor``),
    lines that bars cleared dropped; the runner's banner (a markdown cell tagged ``run-banner``)
    replaced by ``banner``, or removed where there is none."""
    import nbformat
    from nbconvert.preprocessors import CoalesceStreamsPreprocessor

    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells if "run-banner" not in c.metadata.get("tags", [])]
    nb, _ = CoalesceStreamsPreprocessor().preprocess(nb, {})
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for out in cell.outputs:
            if out.output_type == "stream":
                lines = (line.rstrip("\r").rsplit("\r", 1)[-1] for line in out.text.split("\n"))
                out.text = "\n".join(line for line in lines if line.strip()) + "\n" * out.text.endswith("\n")
        cell.outputs = [o for o in cell.outputs if o.output_type != "stream" or o.text.strip()]
    if banner:
        cell = nbformat.v4.new_markdown_cell(banner)
        cell.metadata["tags"] = ["run-banner"]
        nb.cells.insert(0, cell)
    nbformat.write(nb, path)


def smoke_banner(name: str, spec: dict) -> str:
    """The one-line banner of a committed smoke notebook: what it is, and where the full run is."""
    full = {run: p for run, p in spec["runs"].items() if run != "smoke"}
    where = ", ".join(
        f"[{p.get('config', run)}](../results/{name}/{p.get('config', run)}.ipynb) ("
        + (", ".join(f"{k} {v}" for k, v in p.items() if k != "config") or "its defaults") + ")"
        for run, p in full.items())
    return (f"> **Smoke run**: these outputs come from the notebook's small default parameters; they check "
            f"that it runs and judge nothing. The full run{'s' * (len(full) > 1)}, whose numbers the README "
            f"reports, with {'their' if len(full) > 1 else 'its'} parameters: {where}.")


def with_threads(notebook: str, params: dict, threads: int) -> dict:
    """``params`` with ``threads`` set to the run's share of the cores when the notebook has a
    ``threads`` parameter the run leaves unset: the notebooks call ``torch.set_num_threads``
    with it, which would override the thread variables of ``child_env``."""
    import nbformat

    cell = next((c for c in nbformat.read(notebook, as_version=4).cells
                 if "parameters" in c.metadata.get("tags", [])), None)
    declared = cell is not None and any(line.startswith("threads:") for line in cell.source.splitlines())
    return {**params, "threads": threads} if declared and "threads" not in params else params


def record_time(run: str, seconds: float, jobs: int, ray: bool) -> None:
    """Keep the wall time of a run that succeeded in ``results/run_times.json``."""
    path = out_dir("results") / "run_times.json"
    times = json.loads(path.read_text()) if path.exists() else {}
    prov = provenance()
    times[run] = {"seconds": round(seconds), "side_by_side": jobs, "ray": ray, "cpus": len(os.sched_getaffinity(0)),
                  "commit": prov["commit"], "time": prov["time"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(sorted(times.items())), indent=1) + "\n")


def output_path(name: str, spec: dict, run: str) -> Path:
    """A smoke run writes its outputs back into the notebook; others beside their results."""
    return ROOT / spec["notebook"] if run == "smoke" else out_dir("results") / name / f"{run}.ipynb"


def banner(name: str, spec: dict, run: str) -> str | None:
    """The banner of a run's executed notebook: ``smoke_banner`` for a smoke run, none otherwise."""
    return smoke_banner(name, spec) if run == "smoke" else None


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def run_local(phase: list, config: dict, config_path: Path, jobs: int):
    """Yield (job, (ok, seconds, note)) as runs finish, ``jobs`` at a time on this machine,
    each pinned to its own share of the cores this process may use (so that side-by-side
    runs do not time each other's threads)."""
    cores = sorted(os.sched_getaffinity(0))
    threads = max(1, len(cores) // jobs)
    env = child_env(threads, config_path)
    free = queue.SimpleQueue()  # core sets not in use; shared cores when runs outnumber cores
    for k in range(jobs):
        free.put(cores[k * threads % len(cores):][:threads])

    def start(i, name, run, params):
        print(f"[{i}] {name}:{run} ... ({threads} thread{'s' * (threads != 1)})\n", end="", flush=True)  # one write: runs start from worker threads
        spec, notebook = config[name], config[name]["notebook"]
        cpus = free.get()
        try:
            return execute(sys.executable, shown(ROOT / notebook), shown(output_path(name, spec, run)),
                           with_threads(str(ROOT / notebook), params, threads), spec["timeout"], env,
                           str(ROOT), cpus if jobs > 1 else None, banner(name, spec, run))
        finally:
            free.put(cpus)

    with ThreadPoolExecutor(jobs) as pool:
        futures = {pool.submit(start, *job): job for job in phase}
        for future in as_completed(futures):
            yield futures[future], future.result()


def run_ray(phase: list, config: dict, config_path: Path, jobs: int):
    """Yield (job, (ok, seconds, note)) as Ray tasks finish (``ray.init`` done by the caller):
    a run on ``device: cuda`` asks for one GPU, any other for its share of the cluster's CPUs
    (at most one node's). The nodes must see this checkout and its .venv at the same paths
    (one machine, or a shared file system): the notebooks write their results there."""
    import ray

    total = ray.cluster_resources()
    per_node = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]), default=0)
    share = max(1, min(int(total.get("CPU", 0)) // jobs, int(per_node)))
    task, futures = ray.remote(execute), {}
    for job in phase:
        i, name, run, params = job
        gpu = str(params.get("device", "")).startswith("cuda")
        if gpu and not total.get("GPU"):
            yield job, (False, 0.0, "asks for device cuda; the Ray cluster has no GPU")
            continue
        resources = {"num_gpus": 1, "num_cpus": 1} if gpu else {"num_cpus": share}
        print(f"[{i}] {name}:{run} ... (Ray task, {resources})", flush=True)
        spec, notebook = config[name], str(ROOT / config[name]["notebook"])
        futures[task.options(**resources).remote(
            sys.executable, shown(ROOT / spec["notebook"]), shown(output_path(name, spec, run)),
            with_threads(notebook, params, resources["num_cpus"]), spec["timeout"],
            child_env(resources["num_cpus"], config_path), str(ROOT), None, banner(name, spec, run))] = job
    while futures:
        done, _ = ray.wait(list(futures), num_returns=1)
        yield futures.pop(done[0]), ray.get(done[0])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("only", nargs="*", help="notebook or notebook:run names")
    ap.add_argument("-j", "--jobs", type=int, default=1, help="runs side by side (default 1)")
    ap.add_argument("--force", action="store_true", help="re-run runs whose records are up to date")
    ap.add_argument("--ray", metavar="ADDRESS", help="run each run as a task on this Ray cluster")
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="default: reproduce/config.yaml")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error(f"-j {args.jobs}: give at least 1 run at a time")
    config_path = args.config.resolve()
    try:
        config = reproductions(config_path)
    except (OSError, ValueError) as e:
        ap.error(str(e))
    runs = {f"{n}:{r}" for n, spec in config.items() for r in spec["runs"]}
    unknown = [o for o in args.only if o not in config and o not in runs]
    if unknown:
        ap.error(f"unknown notebook(s) or run(s) {unknown}; choose from {list(config)} or {sorted(runs)}")
    os.environ["TOKENWORKS_CONFIG"] = str(config_path)  # what save_result hashes, here and in the runs
    ensure_zoo()
    jobs = plan(config, args.only)
    rows, todo = [], []
    for i, (name, run, params) in enumerate(jobs, 1):
        if not args.force and up_to_date(name, run, params, config_path):
            print(f"[{i}/{len(jobs)}] {name}:{run} skipped (up to date)", flush=True)
            rows.append((f"{name}:{run}", "skipped", "", "up to date"))
        else:
            todo.append((f"{i}/{len(jobs)}", name, run, params))
    if args.ray and todo:
        import ray

        ray.init(address=args.ray, logging_level=logging.WARNING, log_to_driver=False)
    try:
        # every full run finishes before the first smoke run rewrites a notebook
        for phase in ([j for j in todo if j[2] != "smoke"], [j for j in todo if j[2] == "smoke"]):
            runner = run_ray if args.ray else run_local
            for (i, name, run, _), (ok, seconds, note) in runner(phase, config, config_path, args.jobs):
                note = note or shown(output_path(name, config[name], run))
                print(f"[{i}] {name}:{run} {'ok' if ok else 'FAILED'} in {seconds:.0f} s  {note}\n", end="", flush=True)
                rows.append((f"{name}:{run}", "ok" if ok else "FAILED", f"{seconds:.0f} s", note))
                if ok:
                    record_time(f"{name}:{run}", seconds, args.jobs, bool(args.ray))
    finally:
        if args.ray and todo:
            ray.shutdown()
    if config_path == DEFAULT_CONFIG.resolve():
        sys.path.insert(0, str(ROOT / "reproduce"))
        from figures import redraw  # the plotting stack, only for the repository's own results

        redraw()
    width = max(len(r[0]) for r in rows) if rows else 10
    print("\nrun".ljust(width + 1), "status  time    output")
    for r in rows:
        print(r[0].ljust(width), r[1].ljust(7), r[2].rjust(6), "", r[3])
    return 0 if all(r[1] != "FAILED" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
