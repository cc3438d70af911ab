"""Parse lines of ``/proc/net/nf_conntrack`` by ``key=value``, never by column position.

A line looks like::

    ipv4     2 tcp      6 431999 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=40000 dport=80 \
        src=10.0.0.2 dst=10.0.0.1 sport=80 dport=40000 [ASSURED] mark=0 zone=0 use=2

Only TCP, SCTP and DCCP lines carry a state word, accounting adds ``packets=``/``bytes=`` after
each tuple, ICMP has ``type=/code=/id=`` instead of ports, ``[UNREPLIED]`` sits between the two
tuples. That is why the incident's ``awk '{print $7}'`` counted destinations for UDP lines, and
why this parser walks the tokens: the first ``src``/``dst``/``sport``/``dport`` belong to the
original direction (who opened the connection), a second ``src=`` starts the reply direction.
"""

import ipaddress
from typing import NamedTuple, Optional

FAMILIES = (b"ipv4", b"ipv6")


class Entry(NamedTuple):
    """One tracked connection, original direction."""

    family: str  # "ipv4" | "ipv6"
    proto: str  # "tcp", "udp", "icmp", "icmpv6", "sctp", "gre", "unknown", ...
    state: Optional[str]  # TCP/SCTP/DCCP state word, None for stateless protocols
    src: str  # normalised with ipaddress (IPv6 compressed)
    dst: str
    sport: Optional[int]  # None when the protocol has no ports (ICMP, GRE, ...)
    dport: Optional[int]
    assured: bool
    unreplied: bool
    zone: int
    mark: int


class BadLine(ValueError):
    """A line that is not a conntrack entry; callers skip and count it."""


class AddressCache:
    """Normalise addresses once per distinct value.

    The kernel prints IPv6 fully expanded (``0000:...:0001``); ``ipaddress`` validates and
    compresses it. A table holds far fewer distinct addresses than lines, so memoising keeps
    validation off the per-line cost. Memory grows with distinct addresses only.
    """

    __slots__ = ("_map",)

    def __init__(self) -> None:
        self._map = {}  # type: Dict[bytes, str]

    def get(self, raw: bytes) -> str:
        text = self._map.get(raw)
        if text is None:
            try:
                text = str(ipaddress.ip_address(raw.decode("ascii")))
            except (UnicodeDecodeError, ValueError):
                raise BadLine("bad address %r" % raw[:64]) from None
            self._map[raw] = text
        return text


def parse_line(line: bytes, addresses: Optional[AddressCache] = None) -> Entry:
    """Parse one table line (bytes, as read from /proc). Raise BadLine if it is not one."""
    if addresses is None:
        addresses = AddressCache()
    tokens = line.split()
    if len(tokens) < 6 or tokens[0] not in FAMILIES:
        raise BadLine("not a conntrack line")
    try:
        int(tokens[1])
        int(tokens[3])
        int(tokens[4])
        proto = tokens[2].decode("ascii")
    except (ValueError, UnicodeDecodeError):
        raise BadLine("bad protocol or timeout fields") from None
    state = None
    src = dst = None  # type: Optional[bytes]
    sport = dport = None  # type: Optional[int]
    assured = unreplied = False
    zone = mark = 0
    reply = False
    for tok in tokens[5:]:
        key, sep, value = tok.partition(b"=")
        if sep:
            if key == b"src":
                if src is None:
                    src = value
                else:
                    reply = True
            elif reply:
                if key == b"mark":
                    mark = _int(value)
                elif key == b"zone":
                    zone = _int(value)
            elif key == b"dst":
                if dst is None:
                    dst = value
            elif key == b"sport":
                if sport is None:
                    sport = _int(value)
            elif key == b"dport":
                if dport is None:
                    dport = _int(value)
        elif tok == b"[ASSURED]":
            assured = True
        elif tok == b"[UNREPLIED]":
            unreplied = True
        elif src is None and state is None and tok.replace(b"_", b"").isalpha():
            state = tok.decode("ascii")
    if src is None or dst is None:
        raise BadLine("no original-direction addresses")
    if not reply:
        raise BadLine("no reply tuple: the line is truncated")
    family = tokens[0].decode("ascii")
    src_text = addresses.get(src)
    dst_text = addresses.get(dst)
    if (":" in src_text) != (family == "ipv6"):
        raise BadLine("address family does not match %s" % family)
    return Entry(family, proto, state, src_text, dst_text, sport, dport, assured, unreplied,
                 zone, mark)


def _int(value: bytes) -> int:
    try:
        return int(value)
    except ValueError:
        raise BadLine("bad number %r" % value[:32]) from None
