"""Parse lines of ``/proc/net/nf_conntrack`` by ``key=value``, never by column position.

A line looks like::

    ipv4     2 tcp      6 431999 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=40000 dport=80 \
        src=10.0.0.2 dst=10.0.0.1 sport=80 dport=40000 [ASSURED] mark=0 zone=0 use=2

Only TCP, SCTP and DCCP lines carry a state word, accounting adds ``packets=``/``bytes=`` after
each tuple, ICMP has ``type=/code=/id=`` instead of ports, ``[UNREPLIED]`` sits between the two
tuples. That is why the incident's ``awk '{print $7}'`` counted destinations for UDP lines.
Here one grammar (``SRC_LINE``) accepts a line and finds the original direction's source (who
opened the connection) and the first flag; the line parser then walks the ``key=value`` tokens
for the rest (the first ``dst``/``sport``/``dport``; a second ``src=`` starts the reply).
"""

import _socket  # the C module: inet_pton without importing socket's enums
import ipaddress
import re
from collections import Counter
from typing import Dict, List, NamedTuple, Optional, Tuple

from conntrack_zbx.errors import BadLine
from conntrack_zbx.parse.labels import state_label

FAMILIES = (b"ipv4", b"ipv6")
# Flags the kernel prints after the reply tuple for an assured entry (offloaded ones say so).
ASSURED_FLAGS = (b"[ASSURED]", b"[OFFLOAD]", b"[HW_OFFLOAD]")


class Entry(NamedTuple):
    """One tracked connection, original direction."""

    family: str  # "ipv4" | "ipv6"
    proto: str  # "tcp", "udp", "icmp", "icmpv6", "sctp", "gre", "unknown", ...
    state: Optional[str]  # TCP/SCTP/DCCP state word, None for stateless protocols
    src: str  # normalised with ipaddress (IPv6 compressed)
    dst: Optional[str]  # None if garbled (the line's acceptance depends on the source only)
    sport: Optional[int]  # None when the protocol has no ports (ICMP, GRE, ...)
    dport: Optional[int]
    assured: bool
    unreplied: bool
    zone: int
    mark: int


class AddressCache:
    """Normalise addresses once per distinct value.

    The kernel prints IPv6 fully expanded (``0000:...:0001``); ``ipaddress`` validates and
    compresses it. A table holds far fewer distinct addresses than lines, so memoising keeps
    validation off the per-line cost. Memory grows with distinct addresses only.
    """

    __slots__ = ("_map", "_packed")

    def __init__(self) -> None:
        self._map = {}  # type: Dict[bytes, str]
        self._packed = {}  # type: Dict[str, bytes]

    def get(self, raw: bytes) -> str:
        text = self._map.get(raw)
        if text is None:
            try:
                ip = ipaddress.ip_address(raw.decode("ascii"))
            except (UnicodeDecodeError, ValueError):
                raise BadLine("bad address %r" % raw[:64]) from None
            text = self._map[raw] = str(ip)
            self._packed[text] = ip.packed
        return text

    def packed(self, text: str) -> bytes:
        """The packed form of an address this cache returned: the ranking key (4 or 16 bytes)."""
        return self._packed[text]


def parse_line(line: bytes, addresses: Optional[AddressCache] = None) -> Entry:
    """Parse one table line (bytes, as read from /proc). Raise BadLine if it is not one.

    Acceptance, family, protocol, state, source and the first flag come from ``SRC_LINE``, the
    same grammar the fast block counter uses, so both paths agree on every line by
    construction; the remaining ``key=value`` tokens give destination, ports, zone and mark.
    """
    if addresses is None:
        addresses = AddressCache()
    body = line[:-1] if line.endswith(b"\n") else line
    m = SRC_LINE.match(body)
    if m is None or b"\n" in body:
        raise BadLine("not a complete conntrack line (the kernel's layout, ending with use=N)")
    family_b, proto_b, state_b, src, flag = m.groups()
    family = family_b.decode("ascii")
    src_text = addresses.get(src)
    if (":" in src_text) != (family == "ipv6"):
        raise BadLine("address family does not match %s" % family)
    dst, sport, dport, zone, mark = _fields(body[m.end(4) + 1:])
    try:
        dst_text = addresses.get(dst) if dst is not None else None
    except BadLine:
        dst_text = None  # secondary field: the entry counts; a by-destination view skips it
    return Entry(family, proto_b.decode("ascii"), state_b.decode("ascii") if state_b else None, src_text,
                 dst_text, sport, dport, flag in ASSURED_FLAGS, flag == b"[UNREPLIED]", zone, mark)


def _fields(rest: bytes) -> Tuple[Optional[bytes], Optional[int], Optional[int], int, int]:
    """The first dst=, sport=, dport= of the original tuple; mark= and zone= after the reply."""
    first = {}  # type: Dict[bytes, bytes]
    after = {}  # type: Dict[bytes, bytes]
    reply = False
    for tok in rest.split(b" "):
        key, sep, value = tok.partition(b"=")
        if not sep:
            continue
        if key == b"src":
            reply = True
        elif key == b"zone-orig":  # a zone for the original direction only (ct_show_zone)
            after.setdefault(b"zone", value)
        elif reply:
            if key in (b"mark", b"zone"):
                after[key] = value
        elif key in (b"dst", b"sport", b"dport") and key not in first:
            first[key] = value
    sport, dport = first.get(b"sport"), first.get(b"dport")
    mark, zone = after.get(b"mark"), after.get(b"zone")
    return (first.get(b"dst"), None if sport is None else _int(sport), None if dport is None else _int(dport),
            (_int(zone) or 0) if zone is not None else 0, (_int(mark) or 0) if mark is not None else 0)


def _int(value: bytes) -> Optional[int]:
    """A port, zone or mark; None when garbled. These are secondary fields: the line's
    acceptance is the grammar's alone, so the /proc line parser and the block counter agree."""
    return int(value) if value.isdigit() and len(value) < 12 else None


# -- the fast path: sources only, counted in C ------------------------------------------------
# One match per complete line (the lookahead demands the kernel's final ``use=N``; it is atomic,
# so a bad line costs one scan, never backtracking), capturing what talkers need: family,
# protocol, state word, original source and the first [FLAG] after it ([UNREPLIED] sits before
# the reply tuple, [ASSURED] after it, so the first flag decides the label).
# Shapes ``ct_seq_show()`` prints (tests/fixtures/printed-formats): the remaining timeout is left
# out for offloaded flows; the protocol's ``print_conntrack`` hook writes a state word (TCP, SCTP,
# DCCP) or, for GRE (``gre_print_conntrack``), ``timeout=N, stream_timeout=N`` before the tuple.
# Spelled out rather than a general key=value run: that would cost ~40 % more per line.
SRC_LINE = re.compile(
    rb"^(?=[^\n]* use=[0-9]+$)(ipv[46]) +[0-9]+ ([a-z0-9]+) +[0-9]+ (?:[0-9]+ )?"
    rb"(?:([A-Z][A-Z0-9_]*) )?(?:timeout=[0-9]+, stream_timeout=[0-9]+ )?"
    rb"src=([0-9a-fA-F.:]+) dst=[0-9a-fA-F.:]+ [^\[\n]*(?:(\[[A-Z_]+\]) )?",
    re.M,
)
EMPTY_LINE = re.compile(rb"^\n", re.M)

RawKey = Tuple[bytes, bytes, bytes, bytes, bytes]  # family, proto, state, src, first flag


def count_block(block: bytes) -> Tuple[List[RawKey], int]:
    """The entries of a block of whole lines as raw (family, proto, state, src, flag) tuples,
    for ``Counter.update`` (which counts a list in C), and the number of non-empty lines, so
    the caller knows how many were skipped (lines - matches) without looking at a line in
    Python. Addresses are validated later, once per distinct value (``label_lines``).
    """
    counts = SRC_LINE.findall(block)
    lines = block.count(b"\n") + (0 if not block or block.endswith(b"\n") else 1)
    if block.startswith(b"\n") or b"\n\n" in block:
        lines -= len(EMPTY_LINE.findall(block))
    return counts, lines


def _pack(src: bytes) -> Optional[bytes]:
    """An address's 4 or 16 bytes, None when it is not one. inet_pton costs ~0.15 µs against
    ~3-8 µs for ipaddress, and a long-tail table has a quarter of a million distinct sources; it
    accepts exactly what ipaddress accepts for the characters the grammar lets through (a test
    holds them equal)."""
    try:
        text = src.decode("ascii")
        return _socket.inet_pton(_socket.AF_INET6 if ":" in text else _socket.AF_INET, text)
    except (UnicodeDecodeError, OSError):
        return None


def label_lines(raw: Dict[RawKey, int]) -> Counter:
    """Raw block counts -> (packed src, proto, label) -> entries. Entries whose address is not
    one, or not of the line's family, are left out (the caller counts them as skipped).

    Each distinct address is validated and packed once; the text form is not kept (a table can
    hold a hundred thousand distinct sources, and only the top rows are ever printed). Protocol
    and label strings are shared between keys."""
    out = Counter()  # type: Counter
    packed = {}  # type: Dict[bytes, Optional[bytes]]
    names = {}  # type: Dict[Tuple[bytes, bytes, bytes], Tuple[str, str]]
    for (family, proto, state, src, flag), n in raw.items():
        p = packed.get(src, b"")
        if p == b"":
            p = packed[src] = _pack(src)
        if p is None or (len(p) == 16) != (family == b"ipv6"):
            continue
        pl = names.get((proto, state, flag))
        if pl is None:
            pl = names[(proto, state, flag)] = (
                proto.decode("ascii"),
                state_label(state.decode("ascii") if state else None, flag == b"[UNREPLIED]", flag in ASSURED_FLAGS))
        out[(p, pl[0], pl[1])] += n
    return out
