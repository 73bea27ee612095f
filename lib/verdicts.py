"""What a reproduction's status label means, defined once (the README's legend is drawn from
``STATUSES``). Each notebook's verdict function lists the paper's claims it measured, in the
paper's own setting first, each with the comparison that decides it, and ``status`` turns how many
held into the label."""
from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class Claim:
    """One claim of the paper as this run measured it. ``paper``: the paper's number or statement
    with its table or figure (and "unverified" where not checked against the paper); ``ours``:
    this run's number; ``rule``: the comparison that decides it (which of ours against what, with
    what tolerance); ``held``: its outcome, None where this run could not measure it (it then
    does not count). ``proxy`` names the metric we measured in place of the paper's, if any."""
    claim: str
    paper: str
    ours: str
    rule: str
    held: bool | None
    proxy: str = ""


def judge(claims: list[Claim]) -> str:
    """The status label over the claims that were measured (``held`` not None)."""
    measured = [c for c in claims if c.held is not None]
    if not measured:
        raise ValueError(f"none of {[c.claim for c in claims]} was measured: a verdict needs at least one")
    return status(sum(c.held for c in measured), len(measured))


def markdown(claims: list[Claim], context: list[tuple[str, str, str]] = (), why: str = "") -> str:
    """The notebook's "Paper vs. this run" table: the claims in the order given (the paper's own
    setting first), then ``context`` rows (name, paper, this run) that inform but do not decide,
    then the verdict with ``why``."""
    mark = {True: "yes", False: "no", None: "not measured"}
    rows = ["| claim | paper | this run | decided by | holds |", "|---|---|---|---|---|"]
    for c in claims:
        proxy = f" (proxy: {c.proxy})" if c.proxy else ""
        rows.append(f"| {c.claim}{proxy} | {c.paper} | {c.ours} | {c.rule} | {mark[c.held]} |")
    rows += [f"| {name} | {paper} | {ours} | context, not counted | - |" for name, paper, ours in context]
    return "\n".join(rows) + f"\n\n**Verdict: {judge(claims)}.**" + (f" {why}" if why else "")
