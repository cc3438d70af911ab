"""Parse lines of ``/proc/net/nf_conntrack`` by ``key=value``, never by column position.

A line looks like::

    ipv4     2 tcp      6 431999 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=40000 dport=80 \
        src=10.0.0.2 dst=10.0.0.1 sport=80 dport=40000 [ASSURED] mark=0 zone=0 use=2

Only TCP, SCTP and DCCP lines carry a state word, accounting adds ``packets=``/``bytes=`` after
each tuple, ICMP has ``type=/code=/id=`` instead of ports, ``[UNREPLIED]`` sits between the two
tuples. That is why the incident's ``awk '{print $7}'`` counted destinations for UDP lines.
Here one grammar (``LINE``) accepts a line and finds the original direction's source (who
opened the connection) and the first flag; the line parser then walks the ``key=value`` tokens
for the rest (the first ``dst``/``sport``/``dport``; a second ``src=`` starts the reply).
"""

import _socket  # the C module: inet_pton without importing socket's enums
import ipaddress
import re
from typing import Dict, List, NamedTuple, Optional, Pattern, Tuple

from conntrack_zbx.errors import BadLine
from conntrack_zbx.count.idle import IdleRule, add_idle, decimal_range
from conntrack_zbx.count.kinds import Sums, count_kind
from conntrack_zbx.parse.states import KINDS, KNOWN, state_label

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
    timeout: Optional[int] = None  # remaining seconds; None for offloaded flows (not printed)


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

    Acceptance, family, protocol, state, source and the first flag come from ``LINE``, the
    same grammar the fast block counter uses, so both paths agree on every line by
    construction; the remaining ``key=value`` tokens give destination, ports, zone and mark.
    """
    if addresses is None:
        addresses = AddressCache()
    body = line[:-1] if line.endswith(b"\n") else line
    m = LINE.match(body + b"\n")
    if m is None or b"\n" in body:
        raise BadLine("not a complete conntrack line (the kernel's layout, ending with use=N)")
    head, _busy, timeout_b, state_b, src, flag = m.groups()
    family_b, proto_b = head[:4], head[head.rindex(b" ") + 1:]
    end = m.end(4 if state_b else 5)
    if state_b:  # the grammar looks for a flag only where the label needs it
        state_b, _, src = state_b.partition(b" src=")
        flag = next((f for f in (b"[UNREPLIED]",) + ASSURED_FLAGS if f in body), None)
    family = family_b.decode("ascii")
    src_text = addresses.get(src)
    if (":" in src_text) != (family == "ipv6"):
        raise BadLine("address family does not match %s" % family)
    dst, sport, dport, zone, mark = _fields(body[end + 1:])
    try:
        dst_text = addresses.get(dst) if dst is not None else None
    except BadLine:
        dst_text = None  # secondary field: the entry counts; a by-destination view skips it
    return Entry(family, proto_b.decode("ascii"), state_b.decode("ascii") if state_b else None, src_text,
                 dst_text, sport, dport, flag in ASSURED_FLAGS, flag == b"[UNREPLIED]", zone, mark,
                 int(timeout_b) if timeout_b else None)


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
# One match per complete line, capturing what talkers needs: family, protocol, the remaining
# timeout when it says the entry is idle (below), state word, original source and, for
# protocols without a state word, the first [FLAG] after it ([UNREPLIED] sits before the reply
# tuple, [ASSURED] after it, so the first flag decides the label). The match runs to the line's
# end, which must be the kernel's final ``use=N``: a truncated line is not counted, and the next
# match starts right at the next line (a pattern stopping mid-line made the engine try every
# following byte as a line start). Shapes ``ct_seq_show()`` prints
# (tests/fixtures/printed-formats): the remaining timeout is left out for offloaded flows; the
# protocol's ``print_conntrack`` hook writes a state word (TCP, SCTP, DCCP) or, for GRE
# (``gre_print_conntrack``), ``timeout=N, stream_timeout=N`` before the tuple.
# Spelled out rather than a general key=value run, which costs more per line (docs/performance.md).
_LINE = (
    rb"^(ipv[46] +[0-9]+ [a-z0-9]+) +[0-9]+ (?:%s)?"
    rb"(?:([A-Z][A-Z0-9_]* src=[0-9a-fA-F.:]+) dst="  # a state word: it alone names the label
    rb"|(?:timeout=[0-9]+, stream_timeout=[0-9]+ )?src=([0-9a-fA-F.:]+) dst=[^\[\n]*(\[[A-Z_]+\])?)"
    rb"[^\n]* use=[0-9]+\n"
)
# The timeout field: every value captured (the line parser), or only the values of an idle
# ESTABLISHED entry (the counter: everything else keeps the one key it had).
LINE = re.compile(_LINE % rb"()([0-9]+) ", re.M)


def line_pattern(rule: "Optional[IdleRule]") -> "Pattern[bytes]":
    """The counting pattern for an idle rule: the line grammar, else any other non-empty line
    (a seventh group captures its newline) or an empty line (every group empty). Every line
    gives one match, so the matches count the lines and no second pass over the block has to.
    (``re`` keeps the compiled pattern: a process compiles each rule once.)"""
    # Busy values (refreshed less than idle_min ago) are tried first: most ESTABLISHED entries
    # of a healthy table have them, and they fail the idle range only after several digits.
    sub = rb"()()[0-9]+ " if rule is None else (
        decimal_range(rule.busy_low, rule.established) + rb"( )|(" + decimal_range(rule.low, rule.high) +
        rb") (?=ESTABLISHED )|[0-9]+ ")
    return re.compile(rb"^(?:" + _LINE[1:] % sub + rb"|[^\n]+(\n)|\n)", re.M)


# -- the raw key of a line ------------------------------------------------------------------------
# The counting pattern's seven captures joined by SEP (which none of them holds): one bytes
# object per line hashes faster and weighs a third of a tuple. In order:
#
#   HEAD       "ipv4     2 tcp" (family, family number, protocol: one capture, since every
#              capture is an object made per line)
#   BUSY       " " when the timeout says the entry is busy (refreshed less than idle_min ago)
#   REMAINING  the remaining timeout of an idle ESTABLISHED entry
#   STATE_SRC  "STATE src=ADDR" for protocols with a state word (the address inside it) ...
#   SRC        ... else the address alone
#   FLAG       and the first [FLAG] after it
#   NEWLINE    "\n" for a non-empty line the grammar refused
#
# So a key is "HEAD/BUSY/REMAINING/STATE src=ADDR///" (STATEFUL_END) or
# "HEAD/BUSY/REMAINING//ADDR/FLAG/", and a key that starts with SEP has no HEAD: no entry.
SEP = b"/"
NO_HEAD = SEP[0]
STATEFUL_END = SEP * 3
OTHER_LINE = SEP * 6 + b"\n"  # a line the grammar refused
EMPTY_LINE = SEP * 6  # an empty line (which is not an entry)


def count_block(block: bytes, pattern: "Pattern[bytes]") -> List[bytes]:
    """One raw key per line of a block of whole lines, for ``Counter.update`` (which counts a
    list in C). A line the grammar refused gives ``OTHER_LINE``, an empty one ``EMPTY_LINE``,
    so the counts say how many lines were skipped without looking at a line in Python.
    Addresses are validated later, once per distinct key."""
    if not block.endswith(b"\n"):
        block += b"\n"  # the last line of a file without a final newline
    return list(map(SEP.join, pattern.findall(block)))


_AF = {b"ipv4": _socket.AF_INET, b"ipv6": _socket.AF_INET6}


def label_lines(raw: Dict[bytes, int], sums: Sums, limit: int = -1) -> None:
    """Raw line keys (emptied as they are taken) -> ``sums``: entries per packed source with
    their (protocol, label) numbers, and (count, smallest remaining) of idle ESTABLISHED TCP
    entries. Entries whose address is not one, or not of the line's family (``inet_pton`` of
    the line's family refuses both), are left out: the caller counts them as skipped.

    One step per distinct raw key: a long-tail table has a quarter of a million of them, so
    nothing here is done per key that can be done per kind. A key is cut into its address and
    the rest, and the rest (a handful of distinct values, plus one per idle remaining time) is
    described once per call (``_describe``). With a ``limit``, at most that many keys are taken
    (the rest stay in ``raw``)."""
    described = {}  # type: Dict[bytes, Tuple[int, int, Optional[int]]]
    pton = _socket.inet_pton
    counts, kinds, idle = sums.counts, sums.kinds, sums.idle
    get = counts.get
    pop = raw.popitem
    sep = SEP
    while raw and limit:  # consumed as labelled: each raw key's memory is free for the compact one
        limit -= 1
        key, n = pop()
        if key[0] == NO_HEAD:  # OTHER_LINE or EMPTY_LINE: no entry
            continue
        if key.endswith(STATEFUL_END):  # the address ends STATE_SRC
            i = key.rindex(b"=")
            addr, rest = key[i + 1:-3], key[:i]
        else:  # the address is SRC, between the last two separators but one
            j = key.rindex(sep, 0, -1)
            i = key.rindex(sep, 0, j)
            addr, rest = key[i + 1:j], key[:i] + key[j:]
        d = described.get(rest)
        if d is None:
            d = described[rest] = _describe(rest)
        try:
            p = pton(d[0], addr.decode())
        except (OSError, UnicodeDecodeError):
            continue
        c = get(p)
        if c is None:  # count_kind inlined for the common case: a source seen first
            counts[p] = n
            kinds[p] = d[1]
        else:
            count_kind(counts, kinds, p, d[1], n)
        if d[2] is not None:
            add_idle(idle, p, n, d[2])


def _describe(rest: bytes) -> Tuple[int, int, Optional[int]]:
    """A raw key without its address ("HEAD/BUSY/REMAINING/STATE src" or
    "HEAD/BUSY/REMAINING//FLAG/") -> (address family, kind number, idle remaining timeout of a
    TCP entry or None)."""
    head, busy, rem, state, *more = rest.split(SEP)
    flag = more[0] if more else b""
    state = state[:-4]  # " src", or nothing
    family, proto = head[:4], head[head.rindex(b" ") + 1:]
    known = bool(busy or rem) and proto == b"tcp" and state == b"ESTABLISHED"
    kind = KNOWN if known else KINDS.index(
        proto.decode("ascii"),
        state_label(state.decode("ascii") if state else None, flag == b"[UNREPLIED]", flag in ASSURED_FLAGS))
    return _AF[family], kind, int(rem) if rem and proto == b"tcp" else None
