"""Parse ``/proc/net/stat/nf_conntrack`` by header name.

The file is a header row, then one row of hexadecimal counters per possible CPU. Kernels renamed
columns over time (``searched`` became ``clashres``, ``delete_list`` became ``chainlength``), so
columns are located by name, never by position, and exposed under the stable names that
``conntrack -S`` prints. ``entries`` repeats the global table count on every row and is taken once,
every other counter is summed over CPUs.
"""


from conntrack_zbx.errors import Malformed
from conntrack_zbx.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs every agent call ~3 ms
    from typing import Dict, List, Optional

# Kernel header name -> the name `conntrack -S` prints (our stable, documented name).
# Header names not listed here are ignored: they are either always zero on current kernels
# (new, ignore, delete, searched, delete_list) or expectation counters we do not alert on.
STABLE_NAMES = {
    "found": "found",
    "invalid": "invalid",
    "insert": "insert",
    "insert_failed": "insert_failed",
    "drop": "drop",
    "early_drop": "early_drop",
    "icmp_error": "error",
    "search_restart": "search_restart",
    "clashres": "clash_resolve",
    "chainlength": "chaintoolong",
}

# One sentence per counter, used for item descriptions and docs (node_exporter's help as model).
COUNTER_HELP = {
    "found": "Lookups that found an existing entry.",
    "invalid": "Packets that could not be tracked (malformed or out of window).",
    "insert": "Entries inserted into the table.",
    "insert_failed": "Entries that could not be inserted, e.g. a clash on a full bucket.",
    "drop": "Packets dropped because a new entry could not be allocated: the table was full.",
    "early_drop": "Entries evicted early (not yet ASSURED) to make room in a full table.",
    "error": "Packets rejected by conntrack protocol handlers (ICMP errors and similar).",
    "search_restart": "Table lookups restarted because of a concurrent hash resize.",
    "clash_resolve": "Insert races resolved by reusing the existing entry.",
    "chaintoolong": "Inserts refused because a hash chain was too long: too few buckets.",
}


class StatTable(Record):
    """Counters summed over CPUs under stable names (``counters``: name -> int), plus the table
count from ``entries`` (None if absent) and how many CPU rows were summed (``cpus``)."""

    __slots__ = ("entries", "counters", "cpus")
    entries: "Optional[int]"
    counters: "Dict[str, int]"
    cpus: int


def parse_stat(text: str) -> "StatTable":
    """Parse the whole stat file; raise Malformed if it is not the kernel's table shape."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise Malformed("empty conntrack stat table")
    header = lines[0].split()
    if len(set(header)) != len(header):
        raise Malformed("conntrack stat header repeats a column name: %r" % lines[0][:200])
    if not any(name in STABLE_NAMES or name == "entries" for name in header):
        raise Malformed("conntrack stat header has no known column: %r" % lines[0][:200])
    sums = [0] * len(header)
    entries = None  # type: Optional[int]
    rows = 0
    for lineno, line in enumerate(lines[1:], start=2):
        values = _parse_row(line.split(), len(header), lineno)
        rows += 1
        for i, v in enumerate(values):
            sums[i] += v
        if entries is None and "entries" in header:
            entries = values[header.index("entries")]
    if rows == 0:
        raise Malformed("conntrack stat table has a header but no CPU rows")
    counters = {}  # type: Dict[str, int]
    for i, name in enumerate(header):
        stable = STABLE_NAMES.get(name)
        if stable is not None:
            counters[stable] = sums[i]
    return StatTable(entries=entries, counters=counters, cpus=rows)


def _parse_row(fields: "List[str]", width: int, lineno: int) -> "List[int]":
    if len(fields) != width:
        raise Malformed(
            "conntrack stat line %d has %d columns, header has %d" % (lineno, len(fields), width)
        )
    try:
        return [int(f, 16) for f in fields]
    except ValueError:
        raise Malformed("conntrack stat line %d is not hexadecimal counters" % lineno) from None
