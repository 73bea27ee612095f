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
        assert len(paths) >= 4, f"{stem}: a path per folder (a kernel and figures where it has them)"
        for path in paths:
            assert sorted(ROOT.glob(path)), f"{stem}: {path} does not exist"
            if not path.startswith("kernels/"):  # a kernel may serve several methods (tree attention)
                assert stem in path, f"{stem}: {path} does not carry the stem"


def _root_seen(env_root, cwd):
    import os
    import subprocess
    import sys
    env = {**os.environ, "TOKENWORKS_ROOT": str(env_root)}
    return subprocess.run([sys.executable, "-c", "from tokenworks.paths import REPO; print(REPO)"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_the_checkout_is_found_through_tokenworks_root(tmp_path):
    """Resources are found through $TOKENWORKS_ROOT (a non-editable install), and a root that
    is no checkout is refused with what to do."""
    ok = _root_seen(ROOT, tmp_path)
    assert ok.returncode == 0 and ok.stdout.strip() == str(ROOT)
    bad = _root_seen(tmp_path, tmp_path)
    assert bad.returncode != 0 and "point it at a tokenworks checkout" in bad.stderr
