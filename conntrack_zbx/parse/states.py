"""The one rule that names an entry's state, whatever source it came from, and the small
numbering of (protocol, label) pairs that keeps per-source counting keys compact.

/proc prints a state word for TCP, SCTP and DCCP only; for every other protocol the flags say
what happened: ``[UNREPLIED]`` (no answer seen), ``[ASSURED]`` (or ``[OFFLOAD]``: traffic both
ways, kept under pressure), else a reply was seen but the entry is not assured yet. ctnetlink
carries the same facts as a state number and status bits. Both decoders (``parse/netlink.py``,
``count/lines.py``) and every view of the talkers label entries through this module, so the
labels cannot drift apart; it sits in ``parse/``, below both the decoders and the counters.
"""

from typing import Dict, List, Optional, Tuple  # noqa: F401  (Dict: a type comment)

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
