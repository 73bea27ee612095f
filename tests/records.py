"""Whether a committed full record was written by the code as it is now (not stale): tests that
compare a verdict function with a committed record's label and README line do so only for such
records, since a change of criteria waits for its re-run."""
import functools
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@functools.cache
def _figures():
    sys.path.insert(0, str(ROOT / "reproduce"))
    import figures

    return figures


def is_current(stem: str, record: dict) -> bool:
    return not _figures().staleness(stem, record)


def published():
    """(stem, record) of every full record the README's table shows."""
    return _figures().published_records()
