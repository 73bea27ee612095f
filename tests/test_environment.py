"""environment.yml and requirements.txt pin the same packages at the same versions."""
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def pins(lines):
    out = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line:
            name, version = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s]+)", line).groups()
            out[name.lower()] = version
    return out


def test_environment_and_requirements_agree():
    req = pins((ROOT / "requirements.txt").read_text().splitlines())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pins(pip_section) == req
    assert "python=3.11" in env["dependencies"]
    assert req["torch"] == "2.13.0"  # an unpinned torch pulls a multi-GB CUDA build


def test_core_packages_are_pinned():
    req = pins((ROOT / "requirements.txt").read_text().splitlines())
    for pkg in ("jupyterlab", "papermill", "torch", "transformers", "datasets", "triton",
                "matplotlib", "nbval"):
        assert pkg in req, pkg
