"""Hardware-aware trees: best-first growth is optimal, sizing follows the cost, slot statistics
count what greedy decoding did, and the cost table is measured, interpolated and cached."""
import itertools
import json

import pytest
import torch

from tokenworks.models import load
from tokenworks.speculative import cost as cost_mod
from tokenworks.speculative.cost import StepCost, calibrate, measure_cost
from tokenworks.speculative.tree_shape import (SlotAcceptance, best_paths, best_size, choose_tree,
                                               expected_tokens)

Q = [[0.7, 0.2, 0.05], [0.6, 0.3, 0.1], [0.5, 0.1, 0.1]]


def _closed_trees(slots, n):
    """Every prefix-closed set of ``n`` rank paths drawn from ``slots``."""
    for chosen in itertools.combinations(slots, n):
        s = set(chosen)
        if all(p[:-1] in s or len(p) == 1 for p in chosen):
            yield [list(p) for p in chosen]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_best_first_tree_is_optimal(n):
    """Eq. 1 over every prefix-closed tree of n nodes (depth <= 3, ranks < 3): none beats best_paths."""
    slots = [p for d in (1, 2, 3) for p in itertools.product(range(3), repeat=d)]
    brute = max(expected_tokens(t, Q) for t in _closed_trees(slots, n))
    paths, probs = best_paths(Q, n, max_depth=3)
    assert expected_tokens(paths, Q) == pytest.approx(brute)
    assert expected_tokens(paths, Q) == pytest.approx(1 + sum(probs))
    assert all(p[:-1] in paths or len(p) == 1 for p in paths) and probs == sorted(probs, reverse=True)


def test_size_follows_the_cost():
    flat, linear = StepCost.flat(), (lambda T, L: float(T))
    paths, probs = best_paths(Q, 20)
    assert best_size(probs, flat, 100) == 20  # every node with p > 0 is free
    assert choose_tree(Q, linear, 100, 20) == []  # a node costs a full step: never worth it
    steep = StepCost({"sizes": [1, 2, 8], "cache_lens": [1], "seconds": [[1, 1, 1]], "relative": [[1.0, 1.6, 3.0]]})
    n = best_size(probs, steep, 100)
    rate = [(1 + sum(probs[:m])) / steep(m + 1, 100) for m in range(21)]
    assert n == max(range(21), key=lambda m: rate[m])
    with pytest.raises(ValueError, match="max_nodes must be >= 0"):
        best_paths(Q, -1)


def test_slot_acceptance_counts_what_greedy_emitted():
    """A probe is scored against the tokens that followed its root: a slot counts a try only
    when its parent was right, and a hit when its token came next."""
    stats = SlotAcceptance(depth=2, ranks=2, prior=0.5)
    # root 9 at position 3; children 5 (rank 0), 6 (rank 1); 5 -> 7 (rank 0), 6 -> 8 (rank 0)
    stats.probe(3, [9, 5, 6, 7, 8], [-1, 0, 0, 1, 2], [(0, -1), (1, 0), (1, 1), (2, 0), (2, 0)])
    stats.resolve([1, 2, 9, 5])  # only one token known yet: wait for two
    assert stats.tries == [[0, 0], [0, 0]]
    stats.resolve([1, 2, 9, 5, 4])  # 5 right, 6 wrong; 7 (below 5) wrong; 8 not tried
    assert stats.tries == [[1, 1], [1, 0]] and stats.hits == [[1, 0], [0, 0]]
    assert stats.q() == [[0.75, 0.25], [0.25, 0.5]]


def test_step_cost_interpolates_and_refuses_an_empty_forward():
    c = StepCost({"sizes": [1, 4, 8], "cache_lens": [100, 300], "seconds": [[0] * 3] * 2,
                  "relative": [[1.0, 2.0, 3.0], [1.0, 3.0, 5.0]]})
    assert c(1, 100) == 1.0 and c(4, 100) == 2.0 and c(2, 100) == pytest.approx(4 / 3)
    assert c(4, 200) == pytest.approx(2.5) and c(4, 50) == 2.0 and c(4, 999) == 3.0
    assert c(12, 100) == pytest.approx(4.0)  # beyond the table: the last slope
    with pytest.raises(ValueError, match="at least one token"):
        c(0, 100)


def test_measure_cost_and_calibration_cache(tmp_path, monkeypatch):
    model, _ = load("tw-micro", device="cpu", dtype=torch.float32)
    table = measure_cost(model, sizes=[1, 3, 6], cache_lens=[8, 20], repeats=2)
    assert table["sizes"] == [1, 3, 6] and len(table["relative"]) == 2
    for row in table["relative"]:
        assert row[0] == 1.0 and row[1:] == sorted(row[1:])
    with pytest.raises(ValueError, match="include 1"):
        measure_cost(model, sizes=[2, 4])
    monkeypatch.setenv("TOKENWORKS_CACHE", str(tmp_path))
    calls = []
    monkeypatch.setattr(cost_mod, "measure_cost", lambda m, **kw: calls.append(kw) or table)
    first = calibrate(model)
    second = calibrate(model)
    assert len(calls) == 1 and first.table == second.table == json.loads(json.dumps(table))
    assert len(list((tmp_path / "speculative").glob("cost-*.json"))) == 1
    calibrate(model, refresh=True)
    assert len(calls) == 2
