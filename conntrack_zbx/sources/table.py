"""Which table a read takes, and how its idle time is judged: the source choice.

A read takes the live table (ctnetlink first, then /proc) or a saved ``--file``; a fixture tree
(``--proc-root``) is text only, since netlink would read the live kernel instead. Idle time is
judged with the table's own ESTABLISHED timeout: the live table's namespace sysctl (read after any
``--netns`` step), or for a snapshot the ``--timeout-established`` of the host it came from.
"""

from conntrack_zbx.errors import NotAvailable, NotPermitted, Refused
from conntrack_zbx.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs every agent call ~3 ms
    from typing import Optional, Tuple

    from conntrack_zbx.count import Tally
    from conntrack_zbx.count.idle import IdleRule


class Where(Record):
    """The table one read takes: the live one below ``proc_root`` through ``source``, or ``file``."""

    __slots__ = ("proc_root", "source", "file")
    proc_root: str
    source: str
    file: "Optional[str]"

    @property
    def netlink_first(self) -> bool:
        return self.source == "netlink" or (self.source == "auto" and self.proc_root == "/")


def read(where: Where, deadline: float, rule: "Optional[IdleRule]" = None) -> "Tuple[Tally, str, Optional[str]]":
    """One pass over the table until ``deadline`` (time.monotonic()) -> (Tally, source served,
    note on a fallback)."""
    from conntrack_zbx import count
    from conntrack_zbx.sources.proc import ProcRoot, not_a_table, open_snapshot

    if where.file:
        with open_snapshot(where.file) as f:
            t = count.tally(f, deadline, rule)
        not_a_table(t.entries, t.skipped, where.file)
        return t, "file", None
    note = None
    if where.netlink_first:
        from conntrack_zbx.count.rows import RowCounter
        from conntrack_zbx.sources import netlink

        try:
            counter = RowCounter(rule)
            netlink.dump(counter, deadline)  # the dump reader feeds the engine's row counter
            return counter.tally(), "netlink", None
        except (NotPermitted, NotAvailable) as e:
            if where.source == "netlink":
                raise
            note = "netlink not used: %s" % e
    with ProcRoot(where.proc_root).open_table() as f:
        return count.tally(f, deadline, rule), "proc", note


def idle_rule(where: Where, idle_min: int,
              timeout_established: "Optional[str]" = None) -> "Tuple[Optional[IdleRule], Optional[str]]":
    """How idle time is judged for this read -> (IdleRule or None, why not)."""
    from conntrack_zbx.count.idle import IdleRule
    from conntrack_zbx.sources.proc import ProcRoot

    if where.file:
        given = timeout_established
        if given is None:
            return None, ("idle times unknown: a snapshot's timeouts are its host's; give "
                          "--timeout-established (its nf_conntrack_tcp_timeout_established)")
        if not given.isdigit() or not 0 < int(given) <= 1 << 31:
            raise Refused("--timeout-established takes whole seconds, got %r" % given[:32])
        return _knowable(IdleRule(int(given), 300, idle_min))  # the kernel's default caps
    if timeout_established is not None:
        raise Refused("--timeout-established is for --file; the live table's timeout is read from its sysctl")
    t = ProcRoot(where.proc_root).timeouts()
    established = t["tcp_established"]
    if established is None:
        return None, ("idle times unknown: nf_conntrack_tcp_timeout_established could not be read "
                      "below %s" % where.proc_root)
    caps = [c for c in (t["tcp_max_retrans"], t["tcp_unacknowledged"]) if c is not None]
    return _knowable(IdleRule(established, max(caps) if caps else 300, idle_min))


def _knowable(rule: "IdleRule") -> "Tuple[Optional[IdleRule], Optional[str]]":
    """A rule under which no remaining value can say "idle longer than idle_min" (the timeout
    minus idle_min is not above the retransmission caps) gives unknown, never a count of 0."""
    if rule.high < rule.low:
        return None, ("idle times unknown: an entry idle over %d s has less than %d s left, which the "
                      "retransmission caps (%d s) also give; lower idle_min or raise "
                      "nf_conntrack_tcp_timeout_established" % (rule.idle_min, rule.established - rule.idle_min,
                                                                 rule.cap))
    return rule, None


def live_max(proc_root: str) -> int:
    """This host's nf_conntrack_max, the limit the live table's shares are computed against."""
    from conntrack_zbx.sources.proc import ProcRoot

    return ProcRoot(proc_root).max()
