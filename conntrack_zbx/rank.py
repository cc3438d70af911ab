"""Ranking what the counting engine counted: who holds the table.

Sources are rolled up into networks (/24 and /64 by default) after the pass, because in the
incident it was "the same range of IPs" that had to be named, not any single address. Only the
top rows get their protocol and state breakdown, so a long tail ranks in milliseconds.
"""

import heapq
import ipaddress
from collections import Counter
from typing import Any, Callable, Dict, Hashable, List, NamedTuple, Optional, Tuple

from conntrack_zbx.count import Tally
from conntrack_zbx.count.kinds import kind_counts
from conntrack_zbx.parse.states import KINDS, KNOWN_LABEL


class Group(NamedTuple):
    """One row of a ranking: a source, network, port, state..."""

    key: str
    count: int  # type: ignore[assignment]  # the field, not tuple.count: every caller reads it
    established: int
    protocols: Dict[str, int]
    states: Dict[str, int]
    members: int  # distinct sources rolled into a network; 1 for plain keys
    idle: Optional[int] = None  # ESTABLISHED TCP entries idle longer than the rule's idle_min
    idle_remaining: Optional[int] = None  # the least remaining timeout among them (longest idle)
    idle_known: Optional[int] = None  # ESTABLISHED TCP entries whose idle time could be told


class Ranking(NamedTuple):
    groups: List[Group]  # the top rows, by count descending then key
    distinct: int  # how many distinct keys there were in all


def _order(key: Hashable) -> Tuple[Any, ...]:
    # Packed addresses (and networks) sort IPv4 before IPv6, then numerically; text keys
    # alphabetically.
    return (len(key), key) if isinstance(key, bytes) else (0, key)


def rank(counts: Dict[Tuple[Any, str, str], int], top: Optional[int] = None,
         keyer: Optional[Callable[[Any], Hashable]] = None, text: Optional[Callable[[Any], str]] = None) -> Ranking:
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
    wanted = {g: _Row() for g, _ in chosen}  # type: Dict[Hashable, _Row]
    for (key, proto, state), n in counts.items():
        row = wanted.get(mapped[key] if mapped is not None else key)
        if row is not None:
            row.add(proto, state, n, None)
    return Ranking(_groups(chosen, wanted, members, text, False), len(totals))


def rank_talkers(t: Tally, top: int, prefix4: int, prefix6: int, by_idle: bool = False) -> Tuple[Ranking, Ranking]:
    """The ``top`` sources and networks of a by-source tally (by entries held, or with
    ``by_idle`` by idle entries), with their protocol and state mix and idle entries.

    Two passes over the sources, one dictionary step each: networks rolled up on the packed
    bytes (a slice for whole-byte prefixes such as /24 and /64, an integer mask otherwise), then
    the breakdown of the rows that made the top only."""
    by_src, kinds, idle = t.counts, t.kinds or {}, t.idle or {}
    net_of, name_of = network_keys(prefix4, prefix6)
    by_net = {}  # type: Dict[Hashable, int]
    nget = by_net.get
    for src, n in by_src.items():
        net = net_of(src)
        by_net[net] = nget(net, 0) + n
    if by_idle:
        idle_src = {src: v[0] for src, v in idle.items()}
        idle_net = {}  # type: Dict[Hashable, int]
        for src, n in idle_src.items():
            net = net_of(src)
            idle_net[net] = idle_net.get(net, 0) + n
        top_src = [(g, by_src[g]) for g, _ in _top(idle_src, top)]
        top_net = [(g, by_net[g]) for g, _ in _top(idle_net, top)]
    else:
        top_src, top_net = _top(by_src, top), _top(by_net, top)
    want_src = {g: _Row() for g, _ in top_src}  # type: Dict[Hashable, _Row]
    want_net = {g: _Row() for g, _ in top_net}  # type: Dict[Hashable, _Row]
    for src, _n in top_src:
        _add_source(want_src[src], src, by_src, kinds, idle)  # type: ignore[arg-type]  # a packed source
    members = {g: 0 for g, _ in top_net}  # type: Dict[Hashable, int]  # counted for the top rows only
    for src in by_src:
        net = net_of(src)
        row = want_net.get(net)
        if row is not None:
            members[net] += 1
            _add_source(row, src, by_src, kinds, idle)
    rule = t.rule is not None
    return (Ranking(_groups(top_src, want_src, None, address_text, rule), len(by_src)),
            Ranking(_groups(top_net, want_net, members, name_of, rule), len(by_net)))


def network_keys(prefix4: int, prefix6: int) -> Tuple[Callable[[bytes], Any], Callable[[Any], str]]:
    """(source -> network key, network key -> "address/prefix"). For whole-byte prefixes, the
    IPv6 one longer (the /24 and /64 defaults), the key is the address's leading bytes: a slice
    with no arithmetic (a quarter of a million sources pass through here), and keys still sort
    IPv4 first, then by address (``_order``). Otherwise the packed network address
    (``network_of``)."""
    if prefix4 % 8 == 0 and prefix6 % 8 == 0 and prefix4 < prefix6:
        w4, w6 = prefix4 // 8, prefix6 // 8
        pad4, pad6 = bytes(4 - w4), bytes(16 - w6)
        name = network_namer(prefix4, prefix6)
        return (lambda src: src[:w4] if len(src) == 4 else src[:w6],
                lambda net: name(net + pad4 if len(net) == w4 else net + pad6))
    return network_of(prefix4, prefix6), network_namer(prefix4, prefix6)


def _add_source(row: "_Row", src: bytes, by_src: Dict[bytes, int], kinds: Dict[bytes, Any],
                idle: Dict[bytes, List[int]]) -> None:
    names = KINDS.names
    for kind, n in kind_counts(kinds, src, by_src[src]).items():
        proto, label = names[kind]
        row.add(proto, label, n, None)
    iv = idle.get(src)
    if iv is not None:
        row.add_idle(iv)


class _Row:
    """The breakdown of one top row."""

    __slots__ = ("protos", "states", "idle", "remaining", "known")

    def __init__(self) -> None:
        self.protos = Counter()  # type: Counter[str]
        self.states = Counter()  # type: Counter[str]
        self.idle = 0
        self.remaining = None  # type: Optional[int]
        self.known = 0

    def add(self, proto: str, label: str, n: int, idle: Optional[List[int]]) -> None:
        if label == KNOWN_LABEL:
            label = "ESTABLISHED"
            self.known += n
        self.protos[proto] += n
        self.states[label] += n
        if idle is not None:
            self.add_idle(idle)

    def add_idle(self, idle: List[int]) -> None:
        self.idle += idle[0]
        if self.remaining is None or idle[1] < self.remaining:
            self.remaining = idle[1]


def _totals(counts: Dict[Tuple[Any, str, str], int]) -> Dict[Hashable, int]:
    totals = {}  # type: Dict[Hashable, int]
    get = totals.get
    for (key, _proto, _state), n in counts.items():
        totals[key] = get(key, 0) + n
    return totals


def _roll_up(totals: Dict[Hashable, int], keyer: Callable[[Any], Hashable]
             ) -> Tuple[Dict[Hashable, int], Dict[Hashable, int], Dict[Hashable, Hashable]]:
    """Per-key totals -> (per-group totals, distinct keys per group, key -> group)."""
    mapped = {}  # type: Dict[Hashable, Hashable]
    grouped = {}  # type: Dict[Hashable, int]
    members = {}  # type: Dict[Hashable, int]
    for key, n in totals.items():
        g = mapped[key] = keyer(key)
        grouped[g] = grouped.get(g, 0) + n
        members[g] = members.get(g, 0) + 1
    return grouped, members, mapped


def _top(totals: Dict[Any, int], top: Optional[int]) -> List[Tuple[Hashable, int]]:
    if top is not None and len(totals) > top:
        # Only rows that can make the top need the full sort key (ties broken by key), and only
        # they become (key, count) pairs: a long tail's quarter of a million pairs weighs 17 MiB.
        floor = heapq.nlargest(top, totals.values())[-1]
        items = [kv for kv in totals.items() if kv[1] >= floor]
    else:
        items = list(totals.items())
    order = sorted(items, key=lambda kv: (-kv[1],) + _order(kv[0]))
    return order if top is None else order[:top]


def _groups(chosen: List[Tuple[Hashable, int]], wanted: "Dict[Hashable, _Row]", members: Optional[Dict[Hashable, int]],
            text: Optional[Callable[[Any], str]], idle_known: bool) -> List[Group]:
    show = text or (lambda k: k)
    groups = []
    for g, count in chosen:
        row = wanted[g]
        groups.append(Group(
            key=show(g),
            count=count,
            established=row.states.get("ESTABLISHED", 0),
            protocols=dict(sorted(row.protos.items())),
            states=dict(sorted(row.states.items(), key=lambda kv: (-kv[1], kv[0]))),
            members=members[g] if members is not None else 1,
            idle=row.idle if idle_known else None,
            idle_remaining=row.remaining,
            idle_known=row.known if idle_known else None,
        ))
    return groups


def address_text(packed: bytes) -> str:
    """Normalised text of a packed address (IPv6 compressed, as ``ipaddress`` prints it)."""
    return str(ipaddress.ip_address(packed))


def network_of(prefix4: int, prefix6: int) -> Callable[[bytes], bytes]:
    """Packed address -> packed network address (same length, so the family stays known);
    called once per distinct source. Whole-byte prefixes (the /24 and /64 defaults) are a slice,
    others a mask."""
    shapes = {}  # type: Dict[int, Tuple[int, int, bytes]]
    for size, prefix in ((4, prefix4), (16, prefix6)):
        bits = size * 8
        shapes[size] = (prefix // 8 if prefix % 8 == 0 else -1,
                        ((1 << bits) - 1) ^ ((1 << (bits - prefix)) - 1), bytes(size - prefix // 8))

    def keyer(packed: bytes) -> bytes:
        whole, mask, pad = shapes[len(packed)]
        if whole >= 0:
            return packed[:whole] + pad
        return (int.from_bytes(packed, "big") & mask).to_bytes(len(packed), "big")

    return keyer


def network_namer(prefix4: int, prefix6: int) -> Callable[[bytes], str]:
    """Packed network address -> "address/prefix"."""
    return lambda net: "%s/%d" % (address_text(net), prefix4 if len(net) == 4 else prefix6)


def family_of(key: str) -> str:
    return "ipv6" if ":" in key else "ipv4"


def pct(count: int, maximum: Optional[int]) -> Optional[float]:
    """Share of nf_conntrack_max, or None when max is unknown or 0 (unlimited)."""
    if not maximum:
        return None
    return round(100.0 * count / maximum, 4)
