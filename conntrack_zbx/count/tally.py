"""The result of one pass (``Tally``) and the deadline a reader keeps: what every reader of
the counting engine returns and works to."""

from typing import Any, Dict, List, NamedTuple, Optional

from conntrack_zbx.count.idle import IdleRule


class Tally(NamedTuple):
    """Result of one pass over the table."""

    entries: int  # lines read that were entries
    skipped: int  # lines that were not (malformed, truncated): counted, never silently lost
    # by source: packed source -> entries; other views: (key, proto, state label) -> entries
    counts: Dict[Any, int]
    truncated: bool = False  # the time budget ran out: counts cover the first entries+skipped lines
    kinds: Optional[Dict[bytes, Any]] = None  # by source: its (protocol, label) numbers (kinds.count_kind)
    idle: Optional[Dict[bytes, List[int]]] = None  # by source: [idle entries, least remaining]
    rule: Optional[IdleRule] = None  # how idle was judged; None: the timeout was not known


# What one distinct key costs after the read (labelling, ranking, rendering), twice the figure
# measured on an idle 2-CPU VM so that a busy host still ends inside its budget
# (docs/performance.md). Readers stop early enough to leave this much time per key they hold.
RANK_COST_PER_KEY = 3e-6


def read_deadline(deadline: float, keys: int, parts: int = 1, per_key: float = RANK_COST_PER_KEY) -> float:
    """When a reader holding ``keys`` distinct keys (of ``parts`` readers alike) must stop, if
    each costs ``per_key`` seconds after the read."""
    return deadline - per_key * keys * parts
