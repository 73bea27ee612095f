"""Every notebook follows the notebook contract; the runner and results helpers behave."""
import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from records import is_current, published
from tokenworks.results import figure_path, load_result, provenance, save_result
from tokenworks.verdicts import Claim, judge

ROOT = Path(__file__).resolve().parent.parent
CONFIG = yaml.safe_load((ROOT / "reproduce/config.yaml").read_text())
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
NOT_PAPERS = {"model_cards"}  # measures the models the reproductions run on; reproduces no paper


def test_every_notebook_has_reproduction_runs():
    assert {p.stem for p in NOTEBOOKS} == set(CONFIG)
    for name, spec in CONFIG.items():
        assert (ROOT / spec["notebook"]).exists() and spec["timeout"] > 0
        assert "smoke" in spec["runs"] and len(spec["runs"]) > 1  # and a full run (one per model for model cards)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_declares_the_family_it_imports(path):
    """The record's code hash covers lib/<family>/ and the shared code: a notebook must take
    its methods from its declared family only (models, kernels and top-level modules are shared)."""
    from tokenworks.results import families, reproductions

    spec = reproductions()[path.stem]
    imported = set(re.findall(r"tokenworks\.([a-z_]+)", path.read_text())) & set(families())
    assert imported - {"models"} == {spec["family"]} - {"models"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_contract(path):
    nb = nbformat.read(path, as_version=4)
    first = next(c for c in nb.cells if "run-banner" not in c.metadata.get("tags", []))
    text = "\n".join(c.source for c in nb.cells)
    assert first.cell_type == "markdown" and "save_result(" in text
    if path.stem not in NOT_PAPERS:
        assert "arxiv.org/abs/" in first.source and "Paper vs. this run" in text
        key = first.source.split("`")[1]
        assert f"{{{key}," in (ROOT / "references.bib").read_text(), f"{key} not in references.bib"
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    for name in ("model", "device", "config"):
        assert f"\n{name}: str = " in "\n" + params[0].source
    assert all(": " in line and "#" in line for line in params[0].source.splitlines() if line.strip())
    assert any("NBVAL_CHECK_OUTPUT" in c.source for c in nb.cells if c.cell_type == "code")
    executed = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in executed), "commit the notebook with its outputs"
    assert not any(o.get("output_type") == "error" for c in executed for o in c.get("outputs", []))


def test_save_and_load_result(tmp_path, monkeypatch):
    monkeypatch.setenv("TOKENWORKS_OUT", str(tmp_path))
    path = save_result("demo", "unit", {"x": 1.5}, {"p": 2})
    assert path == tmp_path / "results/demo/unit.json"
    record = load_result("demo", "unit")
    assert record["metrics"] == {"x": 1.5} and record["parameters"] == {"p": 2}
    assert set(record["provenance"]) >= {"commit", "dirty", "device", "packages", "time"}
    assert figure_path("demo", "curve", "full") == tmp_path / "figures/demo_curve.png"
    assert figure_path("demo", "curve", "smoke") == tmp_path / "figures/demo_curve_smoke.png"
    with pytest.raises(FileNotFoundError, match="make reproduce"):
        load_result("demo", "missing")
    assert record["provenance"]["code"] is None  # not a notebook of reproduce/config.yaml
    assert record["provenance"]["models"] == {}


def test_records_hash_their_code_and_models(tmp_path, monkeypatch):
    from tokenworks.results import code_hashes, file_sha256, notebook_hash

    monkeypatch.setenv("TOKENWORKS_OUT", str(tmp_path))
    save_result("cntp", "unit", {"x": 1}, {"model": "tw-arith", "code_model": "tw-code", "device": "cpu"})
    prov = load_result("cntp", "unit")["provenance"]
    assert set(prov["code"]) == {"notebook", "lib/decoding", "lib/*.py", "lib/models", "kernels"}
    assert prov["code"] == code_hashes("cntp") and prov["code"]["notebook"] == notebook_hash(ROOT / "notebooks/cntp.ipynb")
    assert code_hashes("cntp")["lib/decoding"] != code_hashes("ems")["lib/kvcache"]
    assert set(prov["models"]) == {"tw-arith", "tw-code"}
    assert prov["models"]["tw-code"]["model.safetensors"] == file_sha256(ROOT / "zoo/tw-code/model.safetensors")


def test_provenance_names_the_commit():
    p = provenance()
    assert p["commit"] is None or len(p["commit"]) == 40
    assert p["packages"]["torch"].startswith("2.13.0")


def test_runner_rejects_unknown_notebooks():
    proc = subprocess.run([sys.executable, str(ROOT / "reproduce/run.py"), "no-such-method"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown notebook" in proc.stderr


def test_results_on_disk_are_complete():
    for path in (ROOT / "results").glob("*/*.json"):
        record = json.loads(path.read_text())
        assert {"method", "config", "metrics", "parameters", "provenance"} <= set(record), path


def test_every_current_record_keeps_the_claims_its_status_was_judged_on():
    """The "Paper vs. this run" table is data: a current full record keeps its claims
    (``tokenworks.verdicts.Claim``), and judging them again gives the status it reports."""
    wrong = {}
    for method, record in published():
        if method in NOT_PAPERS or not is_current(method, record):
            continue
        claims = record["metrics"].get("claims")
        status = judge([Claim(**c) for c in claims]) if claims else "no claims recorded"
        if status != record["metrics"]["summary"]["status"]:
            wrong[method] = status
    assert not wrong, wrong


def test_results_are_stale_once_their_code_or_models_changed(monkeypatch):
    """Staleness follows the hashes, not times: a record made after the zoo was installed is
    still stale when its code changed since (the install-time check missed that)."""
    sys.path.insert(0, str(ROOT / "reproduce"))
    import figures

    from tokenworks.results import code_hashes, model_hashes

    params = {"model": "tw-arith", "code_model": "tw-code", "n": 3}
    now = {"time": "2999-01-01T00:00:00Z", "code": code_hashes("cntp"), "models": model_hashes(params)}
    record = lambda **prov: {"method": "cntp", "parameters": params, "provenance": {**now, **prov}}
    assert figures.staleness("cntp", record()) == ""
    code = {**now["code"], "lib/decoding": "0" * 64}
    assert figures.staleness("cntp", record(code=code)) == "stale: lib/decoding changed since this run; re-run pending"
    models = {**now["models"], "tw-code": {**now["models"]["tw-code"], "model.safetensors": "0" * 64}}
    assert figures.staleness("cntp", record(code=code, models=models)) == (
        "stale: lib/decoding, tw-code changed since this run; re-run pending")
    old = {"method": "cntp", "parameters": params, "provenance": {"time": "2999-01-01T00:00:00Z"}}
    assert figures.staleness("cntp", old) == "stale: predates code hashing"
    summary = {"paper": "P", "claim": "C", "ours": "O", "status": "reproduced"}
    monkeypatch.setattr(figures, "published_records", lambda: iter([("cntp", {**record(code=code), "metrics": {"summary": summary}})]))
    row = next(line for line in figures.reproductions_table().splitlines() if line.startswith("| P |"))
    assert row.startswith("| P | [cntp](notebooks/cntp.ipynb) | C | O | reproduced (stale: lib/decoding changed")


def test_dirty_means_inputs_changed_not_other_runs_outputs(monkeypatch):
    """With -j N, a full run that finishes after another sees that run's results and figures
    changed in the work tree, and after an earlier run the README's regenerated tables: they
    are outputs, not the code a run depends on."""
    import tokenworks.results as results

    outputs = "results/cntp/full.json\nfigures/cntp_accuracy_cost.png\nREADME.md"  # README: the runner's tables
    monkeypatch.setattr(results, "_git", lambda *a: outputs if a[0] == "diff" else "")
    p = provenance()
    assert p["dirty"] is False and p["dirty_files"] == []
    monkeypatch.setattr(results, "_git", lambda *a: outputs + "\nlib/stats.py" if a[0] == "diff" else "")
    p = provenance()
    assert p["dirty"] is True and p["dirty_files"] == ["lib/stats.py"]
