"""Streaming aggregation of table entries: who holds the table.

Entries are never kept: each line updates one counter keyed by (group key, protocol, state
label), so memory grows with the number of distinct keys, not with the table. Sources are rolled
up into networks (/24 and /64 by default) after the pass, because in the incident it was "the same
range of IPs" that had to be named, not any single address.
"""

import heapq
import ipaddress
from collections import Counter
from typing import Any, Callable, Dict, Hashable, Iterable, List, NamedTuple, Optional, Tuple

from conntrack_zbx.parse import labels
from conntrack_zbx.errors import BadLine
from conntrack_zbx.parse.table import AddressCache, Entry, parse_line

GROUP_BY = ("src", "dst", "dport", "state", "proto")


def entry_label(e: Entry) -> str:
    """A state for every protocol: the TCP/SCTP/DCCP word, else UNREPLIED/ASSURED/REPLIED."""
    return labels.state_label(e.state, e.unreplied, e.assured)


_KEYS: Dict[str, Callable[[Entry], Any]] = {
    "src": lambda e: e.src,  # packed by tally(): addresses rank as bytes (see rank)
    "dst": lambda e: e.dst,
    "dport": lambda e: "%s/%s" % (e.proto, "-" if e.dport is None else e.dport),
    "state": entry_label,
    "proto": lambda e: "%s/%s" % (e.family, e.proto),
}


class Tally(NamedTuple):
    """Result of one pass over the table."""

    entries: int  # lines read that were entries
    skipped: int  # lines that were not (malformed, truncated): counted, never silently lost
    counts: Counter  # (key, proto, state label) -> entries
    truncated: bool = False  # the time budget ran out: counts cover the first entries+skipped lines


CHECK_EVERY = 8192  # lines between looks at the clock
# What one distinct key costs after the read (labelling, ranking, rendering): measured ~2.7 µs on
# a 2-CPU VM with a quarter of a million distinct sources. Readers stop early enough to leave
# this much time per key they hold, so the whole call ends inside its budget.
RANK_COST_PER_KEY = 3e-6


def read_deadline(deadline: float, keys: int, parts: int = 1) -> float:
    """When a reader holding ``keys`` distinct keys (of ``parts`` readers alike) must stop."""
    return deadline - RANK_COST_PER_KEY * keys * parts


def tally(lines: Iterable[bytes], by: str = "src", deadline: Optional[float] = None) -> Tally:
    """One streaming pass: count entries per (key, proto, state). With a ``deadline``
    (time.monotonic()), stop there and say so: a partial answer inside the agent's timeout beats
    being killed with nothing, exactly when the table is at its largest."""
    import time

    keyfunc = _KEYS[by]
    if by in ("src", "dst"):
        text = keyfunc
        keyfunc = lambda e: addresses.packed(text(e))  # noqa: E731 (text was validated)
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
            if line.rstrip(b"\n"):  # an empty line is not a bad entry (same rule as count_block)
                skipped += 1
            continue
        if by == "dst" and e.dst is None:
            skipped += 1  # a garbled destination cannot be placed in a by-destination view
            continue
        entries += 1
        counts[(keyfunc(e), e.proto, entry_label(e))] += 1
    return Tally(entries, skipped, counts)


class Group(NamedTuple):
    """One row of a ranking: a source, network, port, state..."""

    key: str
    count: int  # type: ignore[assignment]  # the field, not tuple.count: every caller reads it
    established: int
    protocols: Dict[str, int]
    states: Dict[str, int]
    members: int  # distinct sources rolled into a network; 1 for plain keys


class Ranking(NamedTuple):
    groups: List[Group]  # the top rows, by count descending then key
    distinct: int  # how many distinct keys there were in all


def _order(key: Hashable) -> Tuple:
    # Packed addresses (and networks: address, prefix) sort IPv4 before IPv6, then numerically;
    # text keys alphabetically.
    if isinstance(key, tuple):
        key = key[0]
    return (len(key), key) if isinstance(key, bytes) else (0, key)


def rank(counts: Counter, top: Optional[int] = None, keyer: Optional[Callable] = None,
         text: Optional[Callable] = None) -> Ranking:
    """The ``top`` keys (all when None) by entries held, optionally mapped (e.g. source to its
    network), with their protocol and state mix and how many members each rolled up.

    Totals are summed per distinct key in one pass; the protocol/state breakdown is built for
    the top rows only, so a table with many thousand distinct sources ranks in milliseconds.
    """
    totals = _totals(counts)
    members = None  # type: Optional[Dict[Hashable, int]]
    mapped = None  # type: Optional[Dict[Hashable, Hashable]]
    if keyer is not None:
        totals, members, mapped = _roll_up(totals, keyer)
    chosen = _top(totals, top)
    wanted = {g: (Counter(), Counter()) for g, _ in chosen}  # type: Dict[Hashable, Tuple[Counter, Counter]]
    for (key, proto, state), n in counts.items():
        row = wanted.get(mapped[key] if mapped is not None else key)
        if row is not None:
            row[0][proto] += n
            row[1][state] += n
    return Ranking(_groups(chosen, wanted, members, text), len(totals))


def rank_sources_and_networks(counts: Counter, top: int, prefix4: int, prefix6: int) -> Tuple[Ranking, Ranking]:
    """``rank`` by source and by network at once (what talkers reports): the per-source totals
    are summed once and rolled up into networks, and one more pass over the counts builds the
    breakdown of the top rows of both."""
    by_src = _totals(counts)
    by_net, members, net_of = _roll_up(by_src, network_of(prefix4, prefix6))
    top_src, top_net = _top(by_src, top), _top(by_net, top)
    want_src = {g: (Counter(), Counter()) for g, _ in top_src}  # type: Dict[Hashable, Tuple[Counter, Counter]]
    want_net = {g: (Counter(), Counter()) for g, _ in top_net}  # type: Dict[Hashable, Tuple[Counter, Counter]]
    for (key, proto, state), n in counts.items():
        row = want_src.get(key)
        if row is not None:
            row[0][proto] += n
            row[1][state] += n
        row = want_net.get(net_of[key])
        if row is not None:
            row[0][proto] += n
            row[1][state] += n
    return (Ranking(_groups(top_src, want_src, None, address_text), len(by_src)),
            Ranking(_groups(top_net, want_net, members, network_text), len(by_net)))


def _totals(counts: Counter) -> Dict[Hashable, int]:
    totals = {}  # type: Dict[Hashable, int]
    get = totals.get
    for (key, _proto, _state), n in counts.items():
        totals[key] = get(key, 0) + n
    return totals


def _roll_up(totals: Dict[Hashable, int], keyer: Callable):
    """Per-key totals -> (per-group totals, distinct keys per group, key -> group)."""
    mapped = {}  # type: Dict[Hashable, Hashable]
    grouped = {}  # type: Dict[Hashable, int]
    members = {}  # type: Dict[Hashable, int]
    for key, n in totals.items():
        g = mapped[key] = keyer(key)
        grouped[g] = grouped.get(g, 0) + n
        members[g] = members.get(g, 0) + 1
    return grouped, members, mapped


def _top(totals: Dict[Hashable, int], top: Optional[int]) -> List[Tuple[Hashable, int]]:
    items = list(totals.items())
    if top is not None and len(totals) > top:
        # Only rows that can make the top need the full sort key (ties broken by key).
        floor = heapq.nlargest(top, totals.values())[-1]
        items = [kv for kv in items if kv[1] >= floor]
    order = sorted(items, key=lambda kv: (-kv[1],) + _order(kv[0]))
    return order if top is None else order[:top]


def _groups(chosen, wanted, members: Optional[Dict[Hashable, int]], text: Optional[Callable]) -> List[Group]:
    show = text or (lambda k: k)
    groups = []
    for g, count in chosen:
        protos, states = wanted[g]
        groups.append(Group(
            key=show(g),
            count=count,
            established=states.get("ESTABLISHED", 0),
            protocols=dict(sorted(protos.items())),
            states=dict(sorted(states.items(), key=lambda kv: (-kv[1], kv[0]))),
            members=members[g] if members is not None else 1,
        ))
    return groups


def address_text(packed: bytes) -> str:
    """Normalised text of a packed address (IPv6 compressed, as ``ipaddress`` prints it)."""
    return str(ipaddress.ip_address(packed))


def network_of(prefix4: int, prefix6: int) -> Callable[[bytes], Tuple[bytes, int]]:
    """Packed address -> (packed network address, prefix length); called once per distinct key.
    Whole-byte prefixes (the /24 and /64 defaults) are a slice, others a mask."""
    shapes = {}  # type: Dict[int, Tuple[int, int, int, bytes]]
    for size, prefix in ((4, prefix4), (16, prefix6)):
        bits = size * 8
        shapes[size] = (prefix, prefix // 8 if prefix % 8 == 0 else -1,
                        ((1 << bits) - 1) ^ ((1 << (bits - prefix)) - 1), bytes(size - prefix // 8))

    def keyer(packed: bytes) -> Tuple[bytes, int]:
        prefix, whole, mask, pad = shapes[len(packed)]
        if whole >= 0:
            return packed[:whole] + pad, prefix
        return (int.from_bytes(packed, "big") & mask).to_bytes(len(packed), "big"), prefix

    return keyer


def network_text(net: Tuple[bytes, int]) -> str:
    return "%s/%d" % (address_text(net[0]), net[1])


def family_of(key: str) -> str:
    return "ipv6" if ":" in key else "ipv4"


def pct(count: int, maximum: Optional[int]) -> Optional[float]:
    """Share of nf_conntrack_max, or None when max is unknown or 0 (unlimited)."""
    if not maximum:
        return None
    return round(100.0 * count / maximum, 4)
