"""The counting engine: a table in, a ``Tally`` out. ``tally()`` is its one entry.

``tally`` counts an open binary file of table text (``/proc/net/nf_conntrack``, a saved
snapshot); ``rows.RowCounter`` counts the live kernel's ctnetlink dump, which
``sources/netlink.dump`` feeds it (``sources/table.read`` drives it: the engine never reaches up
into the sources). Entries are never kept: each is counted under a
compact key (the packed source and one byte naming its protocol and state label,
``parse/states.py``),
so memory grows with the distinct sources, not with the table.

Inside: ``lines.py`` (the text grammar and its raw keys), ``rows.py`` (the ctnetlink row pattern
and its raw keys), ``text.py`` (reading text in blocks, a big file split over two processes),
``kinds.py`` (the per-source sums every reader fills), ``idle.py`` (idle
time from the remaining timeout), ``views.py`` (the slow line-by-line pass for the views other
than by source). Ranking what was counted is ``rank.py``'s job. How fast each part is, and what
was tried, is in docs/performance.md.
"""

from typing import IO, Optional

from conntrack_zbx.count.idle import IdleRule
from conntrack_zbx.count.tally import RANK_COST_PER_KEY, Tally, read_deadline

__all__ = ["RANK_COST_PER_KEY", "Tally", "read_deadline", "tally"]


def tally(table: IO[bytes], deadline: Optional[float] = None, rule: Optional[IdleRule] = None,
          by: str = "src") -> Tally:
    """Count ``table`` by ``by`` (``src``; or ``dst``, ``dport``, ``state``, ``proto`` for
    text) until ``deadline`` (time.monotonic()), then say it was truncated: a partial answer
    inside the agent's Timeout beats being killed with nothing. Idle entries are counted under
    ``rule`` (by source only)."""
    if by == "src":
        from conntrack_zbx.count.text import count_text

        return count_text(table, deadline, rule)
    from conntrack_zbx.count.views import count_view

    return count_view(table, by, deadline)
