"""Streaming aggregation of table entries: who holds the table.

Entries are never kept: each line updates one counter keyed by (group key, protocol, state
label), so memory grows with the number of distinct keys, not with the table. Sources are rolled
up into networks (/24 and /64 by default) after the pass, because in the incident it was "the same
range of IPs" that had to be named, not any single address.
"""

import ipaddress
from collections import Counter
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional

from conntrack_zbx.parse.table import AddressCache, BadLine, Entry, parse_line

GROUP_BY = ("src", "dst", "dport", "state", "proto")


def state_label(e: Entry) -> str:
    """A state for every protocol: the TCP/SCTP/DCCP word, else UNREPLIED/ASSURED/REPLIED."""
    if e.state is not None:
        return e.state
    if e.unreplied:
        return "UNREPLIED"
    return "ASSURED" if e.assured else "REPLIED"


_KEYS = {
    "src": lambda e: e.src,
    "dst": lambda e: e.dst,
    "dport": lambda e: "%s/%s" % (e.proto, "-" if e.dport is None else e.dport),
    "state": state_label,
    "proto": lambda e: "%s/%s" % (e.family, e.proto),
}  # type: Dict[str, Callable[[Entry], str]]


class Tally(NamedTuple):
    """Result of one pass over the table."""

    entries: int  # lines read that were entries
    skipped: int  # lines that were not (malformed, truncated): counted, never silently lost
    counts: Counter  # (key, proto, state_label) -> entries
    truncated: bool = False  # the time budget ran out: counts cover the first entries+skipped lines


CHECK_EVERY = 8192  # lines between looks at the clock


def tally(lines: Iterable[bytes], by: str = "src", deadline: Optional[float] = None) -> Tally:
    """One streaming pass: count entries per (key, proto, state). With a ``deadline``
    (time.monotonic()), stop there and say so: a partial answer inside the agent's timeout beats
    being killed with nothing, exactly when the table is at its largest."""
    import time

    keyfunc = _KEYS[by]
    addresses = AddressCache()
    counts = Counter()  # type: Counter
    entries = skipped = 0
    seen = 0
    for line in lines:
        seen += 1
        if deadline is not None and seen % CHECK_EVERY == 0 and time.monotonic() > deadline:
            return Tally(entries, skipped, counts, True)
        try:
            e = parse_line(line, addresses)
        except BadLine:
            if line.strip():
                skipped += 1
            continue
        entries += 1
        counts[(keyfunc(e), e.proto, state_label(e))] += 1
    return Tally(entries, skipped, counts)


class Group(NamedTuple):
    """One row of a ranking: a source, network, port, state..."""

    key: str
    count: int
    established: int
    protocols: Dict[str, int]
    states: Dict[str, int]
    members: int  # distinct sources rolled into a network; 1 for plain keys


def rank(counts: Counter, keyer: Optional[Callable[[str], str]] = None) -> List[Group]:
    """Roll (key, proto, state) counts up per key (optionally mapped, e.g. to its network).

    Sorted by count, descending, then key, so output is stable for equal counts.
    """
    rows = {}  # type: Dict[str, Tuple[Counter, Counter, set]]
    for (key, proto, state), n in counts.items():
        group = keyer(key) if keyer else key
        row = rows.get(group)
        if row is None:
            row = rows[group] = (Counter(), Counter(), set())
        row[0][proto] += n
        row[1][state] += n
        row[2].add(key)
    out = [
        Group(
            key=g,
            count=sum(protos.values()),
            established=states.get("ESTABLISHED", 0),
            protocols=dict(sorted(protos.items())),
            states=dict(states.most_common()),
            members=len(members),
        )
        for g, (protos, states, members) in rows.items()
    ]
    out.sort(key=lambda r: (-r.count, r.key))
    return out


def network_of(prefix4: int, prefix6: int) -> Callable[[str], str]:
    """Map an address to its network, memoised (called once per distinct address)."""
    memo = {}  # type: Dict[str, str]

    def keyer(address: str) -> str:
        net = memo.get(address)
        if net is None:
            prefix = prefix6 if ":" in address else prefix4
            net = str(ipaddress.ip_network("%s/%d" % (address, prefix), strict=False))
            memo[address] = net
        return net

    return keyer


def family_of(key: str) -> str:
    return "ipv6" if ":" in key else "ipv4"


def pct(count: int, maximum: Optional[int]) -> Optional[float]:
    """Share of nf_conntrack_max, or None when max is unknown or 0 (unlimited)."""
    if not maximum:
        return None
    return round(100.0 * count / maximum, 4)
