"""What a reproduction's status label means, defined once (the README's legend is drawn from
``STATUSES``). Each notebook's verdict function lists the paper's claims it measured, in the
paper's own setting first, each with the comparison that decides it, and ``status`` turns how many
held into the label."""
from __future__ import annotations

STATUSES = {
    "reproduced": "every claim of the paper measured here holds in this run, by the comparison "
                  "its notebook's verdict states (which paper number, which of ours, what tolerance)",
    "partly reproduced": "some of the measured claims hold and some do not",
    "not reproduced": "none of the measured claims holds",
}


def status(held: int, measured: int) -> str:
    """The label for ``held`` of ``measured`` claims holding (``STATUSES``)."""
    if measured < 1 or not 0 <= held <= measured:
        raise ValueError(f"held={held} of measured={measured}: give 0 <= held <= measured, measured >= 1")
    return "reproduced" if held == measured else "partly reproduced" if held else "not reproduced"
