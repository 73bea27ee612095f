"""The README's stem table matches the tree: every method is found by its stem in every folder."""
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIG = yaml.safe_load((ROOT / "reproduce/config.yaml").read_text())


def stem_rows() -> dict[str, list[str]]:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("<!-- stems:start -->")[1].split("<!-- stems:end -->")[0]
    rows = [line.split("|")[1:-1] for line in table.strip().splitlines()[2:]]
    return {cells[0].strip(): re.findall(r"`([^`]+)`", "|".join(cells[2:])) for cells in rows}


def test_every_notebook_has_a_stem_row_and_every_row_a_notebook():
    assert set(stem_rows()) == set(CONFIG)


def test_every_path_of_a_stem_exists_and_carries_the_stem():
    for stem, paths in stem_rows().items():
        assert len(paths) >= 6, f"{stem}: a path per folder"
        for path in paths:
            assert sorted(ROOT.glob(path)), f"{stem}: {path} does not exist"
            if not path.startswith("kernels/"):  # a kernel may serve several methods (tree attention)
                assert stem in path, f"{stem}: {path} does not carry the stem"
