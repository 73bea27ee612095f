"""The zoo loss figure draws each model's whole history: every resumed run, chained through
``previous``, placed after the tokens the runs before it saw."""
import math

import matplotlib

matplotlib.use("Agg")

from tokenworks.models.plots import zoo_loss


def run(tokens_before, steps, resumed=False, previous=None):
    seq, batch = 4, 2
    return {"stages": [[seq, batch, steps]], "tokens_this_run": steps * seq * batch,
            "tokens_seen_total": tokens_before + steps * seq * batch,
            "loss_history": [[s, 1.0 / s, seq] for s in range(1, steps + 1)],
            "resumed_from": "abc" if resumed else None, "previous": previous}


def test_zoo_loss_chains_resumed_runs_in_bits_per_byte():
    first = run(0, 3)
    card = {"name": "m", "validation": {"tokens": 10, "bytes": 20},
            "training": run(first["tokens_seen_total"], 2, resumed=True, previous=first)}
    ax = zoo_loss([card]).axes[0]
    line, starts = ax.lines[0], ax.lines[1]
    assert list(line.get_xdata() * 1e6) == [8, 16, 24, 32, 40]  # 8 tokens a step, the second run after the first
    assert math.isclose(line.get_ydata()[0], 1.0 * 10 / 20 / math.log(2))
    assert list(starts.get_xdata() * 1e6) == [32]  # the resumed run's first step
