"""reproduce/run.py on a temporary config of two tiny notebooks: parallel runs give the same
records as serial ones, up-to-date runs are skipped, a changed parameter or notebook re-runs
only its own runs, --force re-runs, --ray runs them on a local Ray instance, full runs go
before smoke runs; and the hashes behind it depend on file contents only."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

import tokenworks.models
from tokenworks.results import model_hashes, notebook_hash, tree_hash

ROOT = Path(__file__).resolve().parent.parent
CORES = len(os.sched_getaffinity(0))
BODY = """import os
from tokenworks.results import save_result
import torch
torch.set_num_threads(threads)  # as the real notebooks do: the runner must pass its share
save_result({name!r}, config, {{"total": n * (n + 1) // 2, "threads": torch.get_num_threads(),
                                 "cores": len(os.sched_getaffinity(0))}},
            {{"n": n, "model": model}})"""


def write_notebook(path: Path, name: str, extra: str = "") -> None:
    params = nbformat.v4.new_code_cell('config: str = "smoke"  # results/<name>/<config>.json\n'
                                       'n: int = 2  # numbers summed\n'
                                       'model: str = "tw-micro"  # zoo model (hashed, not loaded)\n'
                                       'threads: int = 7  # torch threads (the runner sets its share)')
    params.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[params, nbformat.v4.new_code_cell(BODY.format(name=name) + extra)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def write_config(folder: Path, beta_n: int = 4) -> Path:
    config = {"alpha": {"notebook": str(folder / "alpha.ipynb"), "family": "metrics", "timeout": 300,
                        "runs": {"smoke": {}, "full": {"config": "full", "n": 3}}},
              "beta": {"notebook": str(folder / "beta.ipynb"), "family": "kvcache", "timeout": 300,
                       "runs": {"full": {"config": "full", "n": beta_n}}}}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    write_notebook(folder / "alpha.ipynb", "alpha")
    write_notebook(folder / "beta.ipynb", "beta")
    return folder, write_config(folder)


def run(config: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TOKENWORKS_OUT": str(out), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(ROOT / "reproduce/run.py"), "--config", str(config), *args],
                          capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)


def records(out: Path) -> dict[str, dict]:
    return {p.relative_to(out).as_posix(): json.loads(p.read_text()) for p in sorted(out.glob("results/*/*.json"))}


def comparable(record: dict) -> dict:
    """What must not depend on how the runs were scheduled (time and threads may)."""
    prov = record["provenance"]
    return {"method": record["method"], "config": record["config"], "parameters": record["parameters"],
            "total": record["metrics"]["total"], "code": prov["code"], "models": prov["models"]}


def statuses(proc: subprocess.CompletedProcess) -> dict[str, str]:
    """run name -> 'ok' / 'FAILED' / 'skipped' from the runner's progress lines."""
    found = re.findall(r"^\[\d+/\d+\] (\S+) (ok|FAILED|skipped)", proc.stdout, re.M)
    return dict(found)


@pytest.fixture(scope="module")
def serial(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial")
    proc = run(tiny[1], out, "-j", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc


def test_full_runs_go_before_smoke_runs(serial):
    started = re.findall(r"^\[\d+/\d+\] (\S+) \.\.\.", serial[1].stdout, re.M)
    assert started == ["alpha:full", "beta:full", "alpha:smoke"]


def test_each_run_that_succeeds_leaves_its_wall_time(serial):
    times = json.loads((serial[0] / "results/run_times.json").read_text())
    assert sorted(times) == ["alpha:full", "alpha:smoke", "beta:full"]
    assert all(t["seconds"] > 0 and t["side_by_side"] == 1 and t["cpus"] == CORES for t in times.values())


def test_parallel_runs_write_the_same_records_each_pinned_to_its_share_of_the_cores(tiny, serial, tmp_path):
    proc = run(tiny[1], tmp_path, "-j", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    one, two = records(serial[0]), records(tmp_path)
    assert sorted(one) == sorted(two) == ["results/alpha/full.json", "results/alpha/smoke.json",
                                          "results/beta/full.json"]
    assert {k: comparable(r) for k, r in one.items()} == {k: comparable(r) for k, r in two.items()}
    assert one["results/alpha/full.json"]["metrics"]["total"] == 6  # n = 3 from the config
    assert one["results/alpha/smoke.json"]["metrics"]["total"] == 3  # the notebook's default n = 2
    assert {r["metrics"]["threads"] for r in one.values()} == {CORES}
    assert {r["metrics"]["threads"] for r in two.values()} == {max(1, CORES // 2)}
    assert {r["metrics"]["cores"] for r in one.values()} == {CORES}  # pinned to its half, side by side
    assert {r["metrics"]["cores"] for r in two.values()} == {CORES // 2 if CORES > 1 else 1}


def test_rerun_skips_what_is_up_to_date_and_reruns_what_changed(tiny, serial, tmp_path):
    folder, out = tmp_path / "nb", tmp_path / "out"
    shutil.copytree(tiny[0], folder)  # the smoke run rewrote alpha.ipynb: its code hash is unchanged
    shutil.copytree(serial[0], out)
    config = write_config(folder)
    before = {p: p.read_bytes() for p in out.glob("results/*/*.json")}
    proc = run(config, out, "-j", "2")
    assert proc.returncode == 0 and proc.stdout.count("skipped (up to date)") == 3, proc.stdout
    assert {p: p.read_bytes() for p in out.glob("results/*/*.json")} == before

    write_config(folder, beta_n=5)  # a parameter of one run
    assert statuses(run(config, out)) == {"alpha:full": "skipped", "beta:full": "ok", "alpha:smoke": "skipped"}
    assert json.loads((out / "results/beta/full.json").read_text())["metrics"]["total"] == 15

    write_notebook(folder / "beta.ipynb", "beta", extra="\n# a changed line of code")
    assert statuses(run(config, out)) == {"alpha:full": "skipped", "beta:full": "ok", "alpha:smoke": "skipped"}

    assert statuses(run(config, out, "--force", "alpha:full")) == {"alpha:full": "ok"}
    assert statuses(run(config, out)) == {"alpha:full": "skipped", "beta:full": "skipped",
                                          "alpha:smoke": "skipped"}


def test_ray_runs_write_the_same_records(tiny, serial, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")  # pinned in requirements.txt; missing only outside the venv
    monkeypatch.setenv("RAY_agent_register_timeout_ms", "120000")  # a loaded machine starts slowly
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 2**20,
             log_to_driver=False)
    try:
        proc = run(tiny[1], tmp_path, "--ray", ray.get_runtime_context().gcs_address, "-j", "2")
    finally:
        ray.shutdown()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert statuses(proc) == {"alpha:full": "ok", "beta:full": "ok", "alpha:smoke": "ok"}
    one, ray_runs = records(serial[0]), records(tmp_path)
    assert {k: comparable(r) for k, r in one.items()} == {k: comparable(r) for k, r in ray_runs.items()}
    assert {r["metrics"]["threads"] for r in ray_runs.values()} == {1}  # 2 cluster CPUs, -j 2


@pytest.mark.parametrize("name", ["gamma", "alpha:nosuchrun"])
def test_unknown_names_exit_2(tiny, tmp_path, name):
    proc = run(tiny[1], tmp_path, name)
    assert proc.returncode == 2 and "unknown" in proc.stderr and not (tmp_path / "results").exists()


def test_a_config_without_family_is_refused(tiny, tmp_path):
    config = yaml.safe_load(tiny[1].read_text())
    del config["beta"]["family"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    proc = run(tmp_path / "config.yaml", tmp_path)
    assert proc.returncode == 2 and "family" in proc.stderr


def test_tree_hash_depends_on_contents_only(tmp_path):
    a = tmp_path / "a"
    (a / "sub").mkdir(parents=True)
    (a / "x.py").write_text("x = 1\n")
    (a / "sub/y.py").write_text("y = 2\n")
    first = tree_hash(a)
    shutil.copytree(a, tmp_path / "clone")  # a fresh copy elsewhere, new mtimes
    os.utime(a / "x.py", (0, 0))
    (a / "__pycache__").mkdir()
    (a / "__pycache__/x.cpython-311.pyc").write_bytes(b"\0")
    assert tree_hash(a) == tree_hash(tmp_path / "clone") == first
    (a / "sub/y.py").write_text("y = 3\n")
    assert tree_hash(a) != first
    (a / "sub/y.py").write_text("y = 2\n")
    (a / "sub/y.py").rename(a / "sub/z.py")  # same contents under another name
    assert tree_hash(a) != first


def test_model_hashes_follow_the_zoo_files(tmp_path, monkeypatch):
    zoo = tmp_path / "zoo"
    shutil.copytree(tokenworks.models.ZOO_DIR / "tw-micro", zoo / "tw-micro")
    monkeypatch.setattr(tokenworks.models, "zoo_dir", lambda: zoo)
    params = {"model": "tw-micro", "ensemble_model": "", "draft_model": "org/hub-model",
              "draft_model_revision": "abc123", "n": 3}
    first = model_hashes(params)
    assert set(first) == {"tw-micro", "org/hub-model"}
    assert first["org/hub-model"] == {"hub_id": "org/hub-model", "revision": "abc123"}
    assert first["tw-micro"]["model.safetensors"] == model_hashes({"model": "tw-micro"})["tw-micro"]["model.safetensors"]
    (zoo / "tw-micro/README.md").write_text("a card edit")  # not read when loading
    assert model_hashes(params) == first
    weights = zoo / "tw-micro/model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    assert model_hashes(params)["tw-micro"]["model.safetensors"] != first["tw-micro"]["model.safetensors"]
    assert model_hashes(params)["tw-micro"]["tokenizer.json"] == first["tw-micro"]["tokenizer.json"]


def test_notebook_hash_ignores_outputs_and_retries_a_torn_read(tmp_path, monkeypatch):
    path = tmp_path / "nb.ipynb"
    write_notebook(path, "alpha")
    first = notebook_hash(path)
    nb = nbformat.read(path, as_version=4)
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="3\n")]
    nb.cells[1].execution_count = 7
    injected = nbformat.v4.new_code_cell("n = 3")
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(1, injected)
    nbformat.write(nb, path)
    assert notebook_hash(path) == first  # what papermill writes back does not change the code
    text, reads = path.read_text(), []
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: reads.append(1) or (text[:50] if len(reads) < 3 else text))
    assert notebook_hash(path) == first and len(reads) == 3  # two torn reads, then the whole file
    nb.cells[2].source += "\n# changed"
    text = nbformat.writes(nb)
    assert notebook_hash(path) != first


def test_tidy_leaves_each_bar_its_last_frame_and_one_banner(tmp_path):
    sys.path.insert(0, str(ROOT / "reproduce"))
    from run import tidy

    old = nbformat.v4.new_markdown_cell("old banner")
    old.metadata["tags"] = ["run-banner"]
    cell = nbformat.v4.new_code_cell("work()")
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text="items:  10%|#\ritems:  50%|#####"),
                    nbformat.v4.new_output("stream", name="stderr", text="\ritems: 100%|##########|\n"),
                    nbformat.v4.new_output("stream", name="stdout", text="done\n"),
                    nbformat.v4.new_output("stream", name="stderr", text="inner:  40%\r          \r")]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[old, nbformat.v4.new_markdown_cell("# Title"), cell]), path)
    tidy(path, "new banner")
    tidy(path, "new banner")  # a re-run replaces the banner, never adds one
    nb = nbformat.read(path, as_version=4)
    assert [c.source for c in nb.cells[:2]] == ["new banner", "# Title"]
    assert [(o.name, o.text) for o in nb.cells[2].outputs] == [("stderr", "items: 100%|##########|\n"),
                                                              ("stdout", "done\n")]
    tidy(path)
    assert nbformat.read(path, as_version=4).cells[0].source == "# Title"


def test_a_smoke_notebook_opens_with_a_banner_naming_its_full_run(tiny, serial):
    first = nbformat.read(tiny[0] / "alpha.ipynb", as_version=4).cells[0]
    assert first.metadata["tags"] == ["run-banner"] and first.source.startswith("> **Smoke run**")
    assert "[full](../results/alpha/full.ipynb) (n 3)" in first.source
