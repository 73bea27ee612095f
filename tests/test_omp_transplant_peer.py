"""The peer comparison (``tokenworks.transplant.peer``): rows set beside each other are compared
exactly, and bad input fails at once. Running mergekit itself is the full run's job (it installs
its own environment), not a test's."""
import subprocess

import pytest
import torch

from tokenworks.transplant import peer
from tokenworks.transplant.peer import compare_rows, model_dir, peer_env, tokensurgeon


def test_compare_rows_reads_identity_and_difference():
    ours = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    theirs = ours.clone()
    theirs[4] = -ours[4]
    same = compare_rows(ours, theirs, [0, 1, 2])
    assert same["identical"] == 3 and same["cosine"]["p10"] == pytest.approx(1.0)
    assert same["relative_difference"]["p90"] == 0.0
    flipped = compare_rows(ours, theirs, [4])
    assert flipped["identical"] == 0 and flipped["cosine"]["median"] == pytest.approx(-1.0)
    assert flipped["relative_difference"]["median"] == pytest.approx(2.0)


def test_bad_input_fails_at_once(tmp_path):
    with pytest.raises(ValueError, match="do not cover"):
        compare_rows(torch.zeros(3, 4), torch.zeros(3, 5), [0])
    with pytest.raises(ValueError, match="do not cover"):
        compare_rows(torch.zeros(3, 4), torch.zeros(3, 4), [3])
    with pytest.raises(ValueError, match="unknown model"):
        model_dir("gemma-typo")
    with pytest.raises(ValueError, match="at least one atom"):
        tokensurgeon("tw-code", "tw-code-v2", tmp_path / "out", venv=tmp_path / "venv", k=0)
    assert not (tmp_path / "venv").exists()  # refused before installing anything


def test_the_peers_install_is_quiet_unless_it_fails(tmp_path, monkeypatch, capsys):
    """pip's output (which names this machine's index) stays out of the notebook; a failed
    install raises with it."""
    said = {"venv": (0, "venv says nothing"), "pip": (1, "WARNING: index file:///somewhere\nERROR: no mergekit")}

    def run(step, **kw):  # a child's output reaches the notebook unless it is captured
        code, err = said["pip" if "pip" in step else "venv"]
        if not kw.get("capture_output"):
            print(err)
        return subprocess.CompletedProcess(step, code, "", err)
    monkeypatch.setattr(peer.subprocess, "run", run)
    with pytest.raises(RuntimeError, match="ERROR: no mergekit"):
        peer_env(tmp_path / "venv")
    said["pip"] = (0, "WARNING: index file:///somewhere")
    peer_env(tmp_path / "venv")
    assert "file:///" not in capsys.readouterr().out
