"""The one rule that names an entry's state, whatever source it came from, the small numbering
of (protocol, label) pairs that keeps per-source counting keys compact, and the per-source sums
(``Sums``) that every reader fills.

/proc prints a state word for TCP, SCTP and DCCP only; for every other protocol the flags say
what happened: ``[UNREPLIED]`` (no answer seen), ``[ASSURED]`` (or ``[OFFLOAD]``: traffic both
ways, kept under pressure), else a reply was seen but the entry is not assured yet. ctnetlink
carries the same facts as a state number and status bits. Both sources, and every view of the
talkers, label entries through this function, so the labels cannot drift apart.
"""

from collections import Counter
from typing import Any, Dict, List, Optional, Tuple


def state_label(state: Optional[str], unreplied: bool, assured: bool) -> str:
    if state:
        return state
    if unreplied:
        return "UNREPLIED"
    return "ASSURED" if assured else "REPLIED"


# -- compact keys ---------------------------------------------------------------------------------
# A talkers pass counts entries per (source, protocol, label). A public mirror's table holds a
# quarter of a million distinct sources, so the key is one short bytes object: the packed
# address (4 or 16 bytes, which also gives the family) followed by one byte numbering the
# (protocol, label) pair. The numbering starts from a fixed list, the same in every process (a
# forked counter and its parent agree without talking), and grows only for a pair the kernel
# has never printed so far (a new state word), which ``KINDS.extra_since`` lets a parent adopt.
TCP_STATES = ("NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT",
              "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2")
SCTP_STATES = ("NONE", "CLOSED", "COOKIE_WAIT", "COOKIE_ECHOED", "ESTABLISHED", "SHUTDOWN_SENT",
               "SHUTDOWN_RECD", "SHUTDOWN_ACK_SENT", "HEARTBEAT_SENT", "HEARTBEAT_ACKED")
DCCP_STATES = ("NONE", "REQUEST", "RESPOND", "PARTOPEN", "OPEN", "CLOSEREQ", "CLOSING",
               "TIMEWAIT", "IGNORE", "INVALID")
STATELESS = ("UNREPLIED", "ASSURED", "REPLIED")


class Kinds:
    """(protocol name, state label) <-> one byte.

    The one piece of counting state that outlives a call, on purpose: the numbering must be the
    same in a forked counter and its parent without their talking (both start from the fixed list
    above), and a kind numbered later (a state word no list holds) keeps its number for the rest
    of the process, which ``extra_since`` lets a parent learn from its child."""

    def __init__(self) -> None:
        self.names = []  # type: List[Tuple[str, str]]
        self._index = {}  # type: Dict[Tuple[str, str], int]
        for proto, states in (("tcp", TCP_STATES), ("sctp", SCTP_STATES), ("dccp", DCCP_STATES)):
            for s in states:
                self.index(proto, s)
        for proto in ("udp", "udplite", "icmp", "icmpv6", "gre", "unknown", "tcp", "sctp", "dccp"):
            for s in STATELESS:
                self.index(proto, s)

    def index(self, proto: str, label: str) -> int:
        i = self._index.get((proto, label))
        if i is None:
            if len(self.names) == 256:
                return self.index("unknown", "OTHER") if (proto, label) != ("unknown", "OTHER") else 255
            i = self._index[(proto, label)] = len(self.names)
            self.names.append((proto, label))
        return i

    def extra_since(self, n: int) -> List[Tuple[str, str]]:
        """The pairs numbered after the first ``n`` (what a forked counter added)."""
        return self.names[n:]


KINDS = Kinds()
# An ESTABLISHED TCP entry whose idle time can be told (its remaining timeout is above the
# retransmission caps and within the established timeout): counted apart so that "how many of
# this network's connections are idle" has a denominator; reported as ESTABLISHED.
KNOWN_LABEL = "ESTABLISHED+"
KNOWN = KINDS.index("tcp", KNOWN_LABEL)


def count_kind(counts: Dict[bytes, int], kinds: Dict[bytes, object], src: bytes, kind: int, n: int) -> None:
    """Count ``n`` entries of ``kind`` for ``src``. ``kinds`` holds the one kind of a source
    whose entries are all alike (most of a long tail: a client with one or two connections), and
    a {kind: entries} dict only for a source with several, so per-source memory is two dict slots."""
    c = counts.get(src)
    if c is None:
        counts[src] = n
        kinds[src] = kind
        return
    counts[src] = c + n
    k = kinds[src]
    if k == kind:
        return
    if isinstance(k, dict):
        k[kind] = k.get(kind, 0) + n
    else:
        kinds[src] = {k: c, kind: n}


def kind_counts(kinds: Dict[bytes, object], src: bytes, total: int) -> Dict[int, int]:
    """The {kind: entries} of one source (``total`` entries in all)."""
    k = kinds[src]
    return k if isinstance(k, dict) else {k: total}  # type: ignore[dict-item]


class Sums:
    """What one pass holds per packed source: ``counts`` (entries), ``kinds`` (their protocol
    and label numbers, ``count_kind``) and ``idle`` ([idle ESTABLISHED entries, least remaining
    timeout]). A reader owns one and the labelling steps fill it; nothing else holds it."""

    __slots__ = ("counts", "kinds", "idle")

    def __init__(self) -> None:
        self.counts = {}  # type: Dict[bytes, int]
        self.kinds = {}  # type: Dict[bytes, Any]
        self.idle = {}  # type: Dict[bytes, List[int]]

    def merge(self, counts: Dict[bytes, int], kinds: Dict[bytes, Any], idle: Dict[bytes, List[int]],
              remap: Dict[int, int]) -> None:
        """Add another reader's sums (a forked counter's part). Kinds it numbered itself (a
        state word this process had not seen at the fork) are renumbered by ``remap``."""
        from conntrack_zbx.count.idle import add_idle

        mine, my_kinds = self.counts, self.kinds
        get = mine.get
        for src, n in counts.items():
            k = kinds[src]
            if not remap and k.__class__ is int:  # the common cases inlined: a new source, or one
                c = get(src)                      # whose entries here are all of the same kind
                if c is None:
                    mine[src] = n
                    my_kinds[src] = k
                    continue
                if my_kinds[src] == k:
                    mine[src] = c + n
                    continue
            for kind, m in kind_counts(kinds, src, n).items():
                count_kind(mine, my_kinds, src, remap.get(kind, kind), m)
        for src, (n, rem) in idle.items():
            add_idle(self.idle, src, n, rem)


def expand(counts: Dict[bytes, int], kinds: Dict[bytes, Any]) -> "Counter[Tuple[bytes, str, str]]":
    """A by-source tally's sources as (packed source, protocol, state label) -> entries: the
    plain form, for comparing readers and for views that want every row's mix."""
    out = Counter()  # type: Counter[Tuple[bytes, str, str]]
    names = KINDS.names
    for src, n in counts.items():
        for kind, m in kind_counts(kinds, src, n).items():
            proto, label = names[kind]
            out[(src, proto, label)] += m
    return out
