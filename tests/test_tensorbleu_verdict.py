"""TensorBLEU's verdict (``tokenworks.metrics.tasks.verdict``): equality with NLTK within the
paper's bound, and the paper's counting at least Table 1's T4 speed-up, a proxy on a CPU."""
import json

import pytest

from tokenworks.metrics import tasks
from tokenworks.paths import repo_root
from tokenworks.verdicts import STATUSES, judge
from records import is_current

EXACT = {f"method{m}": 1e-16 for m in range(8)}


def _bench(speedup, length=1024, batch=256):
    """One benchmark point where NLTK takes 1 s and the paper's counting 1 / speedup s."""
    return [{"length": length, "batch": batch, "nltk_s": 1.0, "sort_s": 0.05, "unique_s": 1.0 / speedup}]


@pytest.mark.parametrize("worst, speedup, device, label", [
    (1e-16, 20.0, "cuda", "reproduced"), (1e-16, 0.1, "cpu", "partly reproduced"),
    (1e-3, 20.0, "cuda", "partly reproduced"), (1e-3, 0.1, "cpu", "not reproduced")])
def test_each_label_follows_the_claims_that_hold(worst, speedup, device, label):
    claims = tasks.verdict({**EXACT, "method3": worst}, 0.0, _bench(speedup), device)
    assert judge(claims) == label


def test_boundaries_of_the_tolerance_and_of_the_t4_speed_up():
    at_bound = tasks.verdict(EXACT, tasks.TOLERANCE, _bench(tasks.T4_SPEEDUP), "cuda")
    assert [c.held for c in at_bound] == [False, True]  # strictly below the bound; at least 11.6x
    just = tasks.verdict(EXACT, 0.99 * tasks.TOLERANCE, _bench(0.99 * tasks.T4_SPEEDUP), "cuda")
    assert [c.held for c in just] == [True, False]


def test_speed_on_a_cpu_is_named_a_proxy_and_on_a_gpu_it_is_not():
    cpu, gpu = (tasks.verdict(EXACT, 0.0, _bench(20.0), d)[1] for d in ("cpu", "cuda"))
    assert "CPU in place of a GPU" in cpu.proxy and "both on this CPU" in cpu.rule
    assert gpu.proxy == "" and "Table 1" in gpu.paper and "11.6x" in gpu.paper and "40.2x" in gpu.paper


def test_speed_is_not_measured_without_the_papers_point():
    claims = tasks.verdict(EXACT, 0.0, _bench(0.1, length=256, batch=64), "cpu")
    assert claims[1].held is None and judge(claims) == "reproduced"
    row = tasks.context(_bench(0.1, length=256, batch=64), "cpu")
    assert [r[0].split(":")[0] for r in row] == [tasks.LABELS["sort"], tasks.LABELS["unique"]]


def test_the_claim_says_which_smoothings_were_compared():
    partial = {k: v for k, v in EXACT.items() if k != "method6"}
    assert "method6 not compared" in tasks.verdict(partial, 0.0, _bench(1.0), "cpu")[0].ours
    assert "not compared" not in tasks.verdict(EXACT, 0.0, _bench(1.0), "cpu")[0].ours


@pytest.mark.parametrize("exactness, bench, device, message", [
    ({"floor": 0.0}, _bench(1.0), "cpu", "method0-method7"), ({}, _bench(1.0), "cpu", "method0-method7"),
    (EXACT, _bench(1.0), "mps", "'cpu' or 'cuda'"), (EXACT, [], "cpu", "no rows"),
    (EXACT, [{"length": 1024, "batch": 256, "nltk_s": 1.0, "sort_s": 0.1}], "cpu", "unique_s")])
def test_bad_input_says_what_to_give(exactness, bench, device, message):
    with pytest.raises(ValueError, match=message):
        tasks.verdict(exactness, 0.0, bench, device)


def test_the_committed_full_run_agrees_with_its_verdict():
    record = json.loads((repo_root() / "results/tensorbleu/full.json").read_text())
    m = record["metrics"]
    claims = tasks.verdict(m["exactness"], m["generation"]["max_diff_vs_nltk"], m["benchmark"], "cpu")
    line = tasks.headline(m["exactness"], m["generation"]["max_diff_vs_nltk"], m["benchmark"], "cpu")
    assert judge(claims) in STATUSES and line
    if is_current("tensorbleu", record):
        assert (judge(claims), line) == (m["summary"]["status"], m["summary"]["ours"])
