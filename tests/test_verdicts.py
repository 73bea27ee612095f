"""The status labels (``tokenworks.verdicts``): defined once, and the README's legend is theirs."""
import pytest

from tokenworks.paths import repo_root
from tokenworks.verdicts import STATUSES, status


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

