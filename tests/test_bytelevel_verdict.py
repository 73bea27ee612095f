"""The byte-level verdict (``tokenworks.bytelevel.tasks.verdict``): three claims, each on a
proxy named as such; pass@1, the PSM control and HumanEval completion are context."""
import json

import pytest

from tokenworks.bytelevel import tasks as ev
from tokenworks.paths import repo_root
from tokenworks.verdicts import STATUSES, judge
from records import is_current

BPB = {"a": 1.5, "b": 1.4, "ensemble": 1.3}


def _summary(passed=None):
    """summarize_fim() rows for PSM token/byte and SPM token/healing/byte."""
    keys = [("psm", "token"), ("psm", "byte"), ("spm", "token"), ("spm", "healing"), ("spm", "byte")]
    return [{"format": f, "method": m, "n": 100, "edit_similarity": 0.1 * i, "edit_low": 0.0, "edit_high": 0.2,
             "pass_at_1": passed, "calls_per_byte": 1.0} for i, (f, m) in enumerate(keys)]


def _diffs(tok=(0.2, 0.1), heal=(0.05, -0.01)):
    return {"spm byte - token": {"mean": tok[0], "ci_low": tok[1], "ci_high": tok[0] + 0.1},
            "spm byte - healing": {"mean": heal[0], "ci_low": heal[1], "ci_high": heal[0] + 0.1},
            "psm byte - token": {"mean": 0.01, "ci_low": -0.01, "ci_high": 0.03}}


@pytest.mark.parametrize("tok, heal, bpb, label", [
    ((0.2, 0.1), (0.05, -0.01), BPB, "reproduced"),
    ((0.2, 0.1), (0.05, -0.01), {**BPB, "ensemble": 1.45}, "partly reproduced"),
    ((0.0, -0.1), (-0.05, -0.1), {**BPB, "ensemble": 1.45}, "not reproduced")])
def test_each_label_follows_the_claims_that_hold(tok, heal, bpb, label):
    assert judge(ev.verdict(_summary(), _diffs(tok, heal), bpb)) == label


def test_boundaries_interval_above_zero_mean_at_least_zero_ensemble_strictly_below():
    claims = ev.verdict(_summary(), _diffs((0.1, 0.0), (0.0, -0.05)), {**BPB, "ensemble": 1.4})
    assert [c.held for c in claims] == [False, True, False]
    claims = ev.verdict(_summary(), _diffs((0.1, 1e-9), (-1e-9, -0.05)), {**BPB, "ensemble": 1.3999})
    assert [c.held for c in claims] == [True, False, True]


def test_every_claim_names_its_proxy():
    claims = ev.verdict(_summary(), _diffs(), BPB)
    assert [c.proxy for c in claims[:2]] == [ev.FIM_PROXY] * 2 and "pass rate" in ev.FIM_PROXY
    assert "true middle's length" in ev.FIM_PROXY and "task scores" in claims[2].proxy
    assert "(proxies: edit similarity, bits per byte)" in ev.headline(_summary(), _diffs(), BPB)


def test_without_an_ensemble_its_claim_is_not_measured():
    claims = ev.verdict(_summary(), _diffs(), {"a": 1.5})
    assert claims[2].held is None and judge(claims) == "reproduced"


def test_pass_at_1_is_context_only_where_the_items_were_scored():
    assert not any("pass@1" in r[0] for r in ev.context(_summary(), _diffs(), []))
    rows = ev.context(_summary(passed=0.05), _diffs(), [])
    assert rows[0][0].startswith("FIM, SPM: pass@1") and "byte 5.0%" in rows[0][2]


@pytest.mark.parametrize("summary, diffs, bpb, message", [
    (_summary()[:4], _diffs(), BPB, "spm byte"), (_summary(), {}, BPB, "spm byte - token"),
    (_summary(), _diffs(), {"a": 1.5, "ensemble": 1.4}, "two models")])
def test_bad_input_says_what_to_run(summary, diffs, bpb, message):
    with pytest.raises(ValueError, match=message):
        ev.verdict(summary, diffs, bpb)


def test_the_committed_full_run_agrees_with_its_verdict():
    record = json.loads((repo_root() / "results/bytelevel/full.json").read_text())
    m = record["metrics"]
    claims = ev.verdict(m["fim"]["summary"], m["fim"]["differences"], m["bits_per_byte"]["exact"])
    context = ev.context(m["fim"]["summary"], m["fim"]["differences"], m["humaneval"]["summary"])
    assert judge(claims) in STATUSES and "pass@1" in context[0][0].lower() + context[0][1].lower() + context[0][2]
    if is_current("bytelevel", record):
        assert judge(claims) == m["summary"]["status"]
