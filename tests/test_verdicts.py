"""The status labels (``tokenworks.verdicts``): defined once, and the README's legend is theirs."""
import pytest

from tokenworks.paths import repo_root
from tokenworks.verdicts import STATUSES, Claim, judge, markdown, status


@pytest.mark.parametrize("held, measured, label", [(3, 3, "reproduced"), (1, 3, "partly reproduced"),
                                                   (0, 2, "not reproduced"), (1, 1, "reproduced")])
def test_status_counts_the_claims_that_held(held, measured, label):
    assert status(held, measured) == label and label in STATUSES


@pytest.mark.parametrize("held, measured", [(0, 0), (3, 2), (-1, 2)])
def test_status_refuses_impossible_counts(held, measured):
    with pytest.raises(ValueError, match="0 <= held <= measured"):
        status(held, measured)


def test_the_readme_legend_defines_every_status():
    readme = (repo_root() / "README.md").read_text()
    for label, meaning in STATUSES.items():
        assert f"**{label}**: {meaning}" in readme



def _claim(held, proxy=""):
    return Claim("c", "1.0 (Table 1)", "0.9", "ours >= 90% of the paper's", held, proxy)


def test_judge_counts_only_measured_claims():
    assert judge([_claim(True), _claim(None)]) == "reproduced"
    assert judge([_claim(True), _claim(False)]) == "partly reproduced"
    assert judge([_claim(False), _claim(None)]) == "not reproduced"
    with pytest.raises(ValueError, match="none of"):
        judge([_claim(None)])


def test_markdown_names_proxies_rules_and_the_verdict():
    md = markdown([_claim(True, proxy="edit similarity for pass rate"), _claim(None)],
                  context=[("ablation", "-", "x")], why="Because.")
    lines = md.splitlines()
    assert lines[2] == "| c (proxy: edit similarity for pass rate) | 1.0 (Table 1) | 0.9 | ours >= 90% of the paper's | yes |"
    assert lines[3].endswith("| not measured |") and lines[4] == "| ablation | - | x | context, not counted | - |"
    assert lines[-1] == "**Verdict: reproduced.** Because."
