"""CNTP's verdict (``tokenworks.decoding.tasks.verdict``): the paper's three claims on each
word-problem task, decided by paired intervals; the code task is context, not a claim."""
import json

import pytest

from tokenworks.decoding import tasks as cntp
from tokenworks.paths import repo_root
from tokenworks.verdicts import judge, markdown
from records import is_current

HOLDS = {"cntp - sample": (0.05, 0.01), "cntp - greedy": (0.04, 0.001), "cntp_sc - sc": (0.02, 0.0)}


def _task(model="m", n=500, diffs=None):
    """A task as the notebook records it: summary() entries and differences() (mean, ci_low)."""
    diffs = {**HOLDS, **(diffs or {})}
    summary = [{"strategy": s, "accuracy": 0.5, "ci_low": 0.45, "ci_high": 0.55, "forwards_per_answer": 10.0 * (i + 1),
                "tokens_per_answer": 9.0, "chains": 8 if s in ("sc", "cntp_sc") else 1} for i, s in enumerate(cntp.ARMS)]
    return {"model": model, "n": n, "summary": summary,
            "differences": {k: {"mean": m, "ci_low": lo, "ci_high": m + 0.1} for k, (m, lo) in diffs.items()}}


@pytest.mark.parametrize("arith, chat, label", [
    ({}, {}, "reproduced"),
    ({"cntp - greedy": (0.01, -0.001)}, {}, "partly reproduced"),
    ({"cntp - sample": (0.0, -0.1), "cntp - greedy": (-0.01, -0.05), "cntp_sc - sc": (-0.02, -0.04)},
     {"cntp - sample": (0.0, -0.1), "cntp - greedy": (-0.01, -0.05), "cntp_sc - sc": (-0.02, -0.04)}, "not reproduced")])
def test_each_label_follows_the_claims_that_hold(arith, chat, label):
    claims = cntp.verdict({"arith": _task(diffs=arith), "chat": _task("smollm2-135m", 25, chat)})
    assert len(claims) == 6 and judge(claims) == label


def test_the_chat_task_comes_first_as_the_papers_own_setting():
    claims = cntp.verdict({"arith": _task("tw-arith"), "chat": _task("smollm2-135m", 25)})
    assert [c.claim.split(" (")[0] for c in claims] == ["chat"] * 3 + ["arith"] * 3
    assert all("unverified" in c.paper and not c.proxy for c in claims)


def test_boundaries_beating_needs_an_interval_above_zero_improving_on_sc_one_from_zero():
    at_zero = cntp.verdict({"arith": _task(diffs={"cntp - sample": (0.05, 0.0), "cntp_sc - sc": (0.05, 0.0)})})
    assert [c.held for c in at_zero] == [False, True, True]
    below = cntp.verdict({"arith": _task(diffs={"cntp_sc - sc": (0.05, -1e-9)})})
    assert [c.held for c in below] == [True, True, False]


def test_the_code_task_informs_but_never_counts():
    losing = {"cntp - sample": (-0.2, -0.3), "cntp - greedy": (-0.2, -0.3), "cntp_sc - sc": (-0.2, -0.3)}
    tasks = {"arith": _task(), "code": _task("tw-code", 200, losing)}
    claims = cntp.verdict(tasks)
    assert judge(claims) == "reproduced" and not any("code" in c.claim for c in claims)
    code_row = next(r for r in cntp.context(tasks) if r[0].startswith("code"))
    assert "no code task in the paper" in code_row[1] and "-20.0 pts" in code_row[2]
    assert "code (tw-code, 200 lines; no code task in the paper)" in cntp.headline(tasks)


def test_bad_input_says_what_to_run():
    with pytest.raises(ValueError, match="arithmetic task"):
        cntp.verdict({"code": _task()})
    broken = _task()
    del broken["differences"]["cntp - greedy"]
    with pytest.raises(ValueError, match="lacks \\['cntp - greedy'\\]"):
        cntp.verdict({"arith": broken})
    with pytest.raises(ValueError, match="lacks"):
        cntp.context({"arith": _task(), "code": {"model": "tw-code"}})


def test_the_committed_full_run_agrees_with_its_verdict_and_shows_the_code_task():
    record = json.loads((repo_root() / "results/cntp/full.json").read_text())
    tasks = record["metrics"]["tasks"]
    claims = cntp.verdict(tasks)
    md = markdown(claims, cntp.context(tasks))
    assert "code" in md and "code" in cntp.headline(tasks)  # the code task is shown, in the table and the README line
    if is_current("cntp", record):
        assert judge(claims) == record["metrics"]["summary"]["status"]
