"""Decode ctnetlink messages (``NETLINK_NETFILTER``, subsystem CTNETLINK) from bytes.

Pure functions over the bytes ``recv()`` returned; the socket lives in
``conntrack_zbx.sources.netlink``. Layouts are from ``include/uapi/linux/netfilter/nfnetlink_conntrack.h``:
every message is an ``nlmsghdr`` (16 bytes), an ``nfgenmsg`` (family, version, res_id: 4 bytes)
and a list of netlink attributes (``nlattr``: u16 length, u16 type, value, padded to 4 bytes).
Nested attributes carry ``NLA_F_NESTED``; attribute values are big-endian.

Why not a general attribute tree: a talkers pass over a million-entry table decodes a million
messages, and only four things are needed from each (family, original source, protocol and the
state/status that give the state label). The decoder walks the top level with early exit and
looks inside only the original tuple and the protocol info. Anything that does not fit the
layout raises ``BadMessage``; callers skip and count it, exactly like a bad /proc line.
"""

import re
import struct
from typing import Dict, Iterator, List, NamedTuple, Optional, Pattern, Tuple

from conntrack_zbx.errors import BadMessage
from conntrack_zbx.parse import labels
from conntrack_zbx.parse.idle import IdleRule, add_idle, be32_range
from conntrack_zbx.parse.labels import KINDS, KNOWN, count_kind

# netlink
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_DUMP = 0x300
NLA_TYPE_MASK = 0x3FFF
NLA_F_NESTED = 0x8000

# nfnetlink / ctnetlink
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_NEW = 0
IPCTNL_MSG_CT_GET = 1
IPCTNL_MSG_CT_GET_STATS_CPU = 4
CT_NEW = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW
CT_GET = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET
CT_GET_STATS_CPU = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET_STATS_CPU

CTA_TUPLE_ORIG = 1
CTA_TUPLE_REPLY = 2
CTA_STATUS = 3
CTA_PROTOINFO = 4
CTA_TIMEOUT = 7
CTA_MARK = 8
CTA_ZONE = 18
CTA_TUPLE_IP = 1
CTA_TUPLE_PROTO = 2
CTA_IP_V4_SRC, CTA_IP_V4_DST, CTA_IP_V6_SRC, CTA_IP_V6_DST = 1, 2, 3, 4
CTA_PROTO_NUM = 1
CTA_PROTO_SRC_PORT = 2
CTA_PROTO_DST_PORT = 3
CTA_PROTOINFO_TCP = 1
CTA_PROTOINFO_DCCP = 2
CTA_PROTOINFO_SCTP = 3
CTA_PROTOINFO_TCP_STATE = 1  # the same first attribute number for DCCP and SCTP state

AF_INET = 2
AF_INET6 = 10
FAMILY_NAMES = {AF_INET: "ipv4", AF_INET6: "ipv6"}

# enum ip_conntrack_status
IPS_SEEN_REPLY = 1 << 1
IPS_ASSURED = 1 << 2
IPS_CONFIRMED = 1 << 3
IPS_FIXED_TIMEOUT = 1 << 10
IPS_OFFLOAD = 1 << 14
IPS_HW_OFFLOAD = 1 << 15

# The names /proc/net/nf_conntrack prints, so both sources give the same labels.
PROTO_NAMES = {6: "tcp", 17: "udp", 136: "udplite", 1: "icmp", 58: "icmpv6", 132: "sctp",
               33: "dccp", 47: "gre"}
TCP_STATES, SCTP_STATES, DCCP_STATES = labels.TCP_STATES, labels.SCTP_STATES, labels.DCCP_STATES
STATE_TABLES = {6: TCP_STATES, 132: SCTP_STATES, 33: DCCP_STATES}

# CTA_STATS_* attribute number -> our stable counter name (parse.stat.STABLE_NAMES' values).
STATS_CPU_NAMES = {2: "found", 4: "invalid", 8: "insert", 9: "insert_failed", 10: "drop",
                   11: "early_drop", 12: "error", 13: "search_restart", 14: "clash_resolve",
                   15: "chaintoolong"}

_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_NLA = struct.Struct("=HH")
_U32 = struct.Struct("!I")
_MSGHDR_LEN = 16
_PAYLOAD = 20  # nlmsghdr + nfgenmsg


class Record(NamedTuple):
    """What talkers needs from one entry, raw: addresses stay bytes until ranked, because a
    table holds far fewer distinct sources than entries."""

    family: int  # AF_INET / AF_INET6
    src: bytes  # 4 or 16 bytes, original direction
    proto: int  # IP protocol number
    state: int  # protocol state number, -1 for protocols without one
    status: int  # the IPS_* bits that give [UNREPLIED] / [ASSURED], offloaded, fixed timeout
    timeout: int = -1  # CTA_TIMEOUT: seconds left, -1 when absent (offloaded flows)


def align(n: int) -> int:
    return (n + 3) & ~3


def messages(buf: bytes) -> Iterator[Tuple[int, int, int, int]]:
    """Split a recv() buffer into (type, flags, offset, length) of each message.

    Raises BadMessage when a header's length runs outside the buffer (a truncated datagram).
    """
    off, end = 0, len(buf)
    while off + _MSGHDR_LEN <= end:
        length, mtype, flags, seq, _ = _HDR.unpack_from(buf, off)
        if length < _MSGHDR_LEN or off + length > end:
            raise BadMessage("netlink message length %d at offset %d runs outside %d bytes"
                             % (length, off, end))
        yield mtype, flags, off, length
        off += align(length)


def error_code(buf: bytes, off: int) -> int:
    """The (positive) errno of an NLMSG_ERROR message; 0 is an ACK."""
    if off + _MSGHDR_LEN + 4 > len(buf):
        raise BadMessage("truncated NLMSG_ERROR")
    (code,) = struct.unpack_from("=i", buf, off + _MSGHDR_LEN)
    return -code


def attrs(buf: bytes, start: int, end: int) -> Iterator[Tuple[int, int, int]]:
    """(type without flags, value offset, value length) of the attributes in buf[start:end]."""
    nla = _NLA.unpack_from
    off = start
    while off + 4 <= end:
        length, atype = nla(buf, off)
        if length < 4 or off + length > end:
            raise BadMessage("attribute length %d at offset %d runs outside its parent" % (length, off))
        yield atype & NLA_TYPE_MASK, off + 4, length - 4
        off += (length + 3) & ~3


def decode_entry(buf: bytes, off: int, length: int) -> Record:
    """One IPCTNL_MSG_CT_NEW message (a dump row) -> Record. Raises BadMessage."""
    end = off + length
    if length < _PAYLOAD + 4:
        raise BadMessage("conntrack message too short (%d bytes)" % length)
    family = buf[off + _MSGHDR_LEN]
    src = None  # type: Optional[bytes]
    proto = -1
    state = -1
    status = None  # type: Optional[int]
    info = None  # type: Optional[Tuple[int, int]]
    timeout = -1
    nla = _NLA.unpack_from
    pos = off + _PAYLOAD
    # Top level, up to the protocol info (the kernel writes it after the tuples, status and timeout).
    while pos + 4 <= end:
        alen, atype = nla(buf, pos)
        if alen < 4 or pos + alen > end:
            raise BadMessage("attribute length %d runs outside the message" % alen)
        atype &= NLA_TYPE_MASK
        if atype == CTA_TUPLE_ORIG:
            src, proto = _orig_tuple(buf, pos + 4, pos + alen)
        elif atype == CTA_STATUS:
            if alen != 8:
                raise BadMessage("CTA_STATUS of %d bytes" % (alen - 4))
            status = _U32.unpack_from(buf, pos + 4)[0]
        elif atype == CTA_TIMEOUT:
            if alen != 8:
                raise BadMessage("CTA_TIMEOUT of %d bytes" % (alen - 4))
            timeout = _U32.unpack_from(buf, pos + 4)[0]
        elif atype == CTA_PROTOINFO:
            info = (pos + 4, pos + alen)
            break
        pos += (alen + 3) & ~3
    if src is None or status is None:
        raise BadMessage("conntrack message without %s"
                         % ("original tuple" if src is None else "status"))
    if (family == AF_INET and len(src) != 4) or (family == AF_INET6 and len(src) != 16) \
            or family not in FAMILY_NAMES:
        raise BadMessage("address of %d bytes in family %d" % (len(src), family))
    if info is not None and proto in STATE_TABLES:
        state = _proto_state(buf, info[0], info[1])
    return Record(family, src, proto, state, status & _STATUS_BITS, timeout)


def _orig_tuple(buf: bytes, start: int, end: int) -> Tuple[bytes, int]:
    src = None  # type: Optional[bytes]
    proto = -1
    for atype, voff, vlen in attrs(buf, start, end):
        if atype == CTA_TUPLE_IP:
            for itype, ioff, ilen in attrs(buf, voff, voff + vlen):
                if itype in (CTA_IP_V4_SRC, CTA_IP_V6_SRC):
                    src = bytes(buf[ioff:ioff + ilen])
                    break
        elif atype == CTA_TUPLE_PROTO:
            for ptype, poff, plen in attrs(buf, voff, voff + vlen):
                if ptype == CTA_PROTO_NUM:
                    if plen < 1:
                        raise BadMessage("empty CTA_PROTO_NUM")
                    proto = buf[poff]
                    break
    if src is None or proto < 0:
        raise BadMessage("original tuple without source address or protocol")
    return src, proto


def _proto_state(buf: bytes, start: int, end: int) -> int:
    for atype, voff, vlen in attrs(buf, start, end):
        if atype in (CTA_PROTOINFO_TCP, CTA_PROTOINFO_DCCP, CTA_PROTOINFO_SCTP):
            for stype, soff, slen in attrs(buf, voff, voff + vlen):
                if stype == CTA_PROTOINFO_TCP_STATE and slen >= 1:
                    return buf[soff]
    return -1


def record_label(r: Record) -> str:
    """The label /proc's line gives (``parse.labels``): the state number named as /proc names it,
    or the status bits behind [UNREPLIED] / [ASSURED]."""
    word = None
    names = STATE_TABLES.get(r.proto)
    if names is not None and r.state >= 0:
        word = names[r.state] if r.state < len(names) else "STATE%d" % r.state
    return labels.state_label(word, not r.status & IPS_SEEN_REPLY,
                              bool(r.status & (IPS_ASSURED | IPS_OFFLOAD | IPS_HW_OFFLOAD)))


def proto_name(proto: int) -> str:
    return PROTO_NAMES.get(proto, "unknown")


def decode_stats_cpu(buf: bytes, off: int, length: int) -> Dict[str, int]:
    """One IPCTNL_MSG_CT_GET_STATS_CPU answer (one CPU) -> {stable counter name: value}."""
    out = {}  # type: Dict[str, int]
    for atype, voff, vlen in attrs(buf, off + _PAYLOAD, off + length):
        name = STATS_CPU_NAMES.get(atype)
        if name is not None:
            if vlen != 4:
                raise BadMessage("stats attribute %d of %d bytes" % (atype, vlen))
            out[name] = _U32.unpack_from(buf, voff)[0]
    return out


# -- the fast path: a whole recv() buffer counted in C ---------------------------------------
# The kernel writes every dump row in the same order (ctnetlink_fill_info): original tuple,
# reply tuple, [zone], status, a run of u32 attributes (mark, id, use, timeout...), then the
# protocol info for TCP/SCTP/DCCP. One compiled pattern per row captures the family, the
# original source, the protocol, the status and the state, and ``Counter(findall)`` counts rows
# without a Python-level step per entry (decode_entry costs ~5 us per row; this, ~1 us per 1.3).
# Rows of any other shape (a master tuple, an offloaded TCP entry without protoinfo...) make
# the per-buffer match count differ from the row count, and that buffer is decoded the slow,
# general way. The pattern starts at the message type (a literal, so the C search skips ahead).
_ORIG_ADDR = (rb"\x14\x00\x01\x80(\x08\x00\x01\x00.{4})\x08\x00\x02\x00.{4}"  # IPv4 src (with its header)
              rb"|\x2c\x00\x01\x80(\x14\x00\x03\x00.{16})\x14\x00\x04\x00.{16}")  # IPv6 src
_PNUM = rb"\x05\x00\x01\x00"
_ORIG_PROTO = (
    rb"(?:\x1c\x00\x02\x80" + _PNUM + rb"(?P<sp>[\x06\x21\x84])"  # tcp, dccp, sctp: have a state
    rb"|(\x1c\x00\x02\x80" + _PNUM + rb"[^\x06\x21\x84]"  # udp, udplite, gre: ports
    rb"|\x24\x00\x02\x80" + _PNUM + rb"."  # icmp, icmpv6: id, type, code
    rb"|\x0c\x00\x02\x80" + _PNUM + rb"."  # any other protocol: the number only
    rb"))\x00\x00\x00(?:.{16}|.{24}|)"
)
_TUPLE_ZONE = rb"(?:\x06\x00\x03\x00..\x00\x00)?"
_REPLY = (rb".\x00\x02\x80(?:\x14\x00\x01\x80.{16}|\x2c\x00\x01\x80.{40})"
          rb"(?:\x1c\x00\x02\x80.{24}|\x24\x00\x02\x80.{32}|\x0c\x00\x02\x80.{8})" + _TUPLE_ZONE)
_ROW = (
    rb"\x00\x01\x02\x00.{8}[\x02\x0a]\x00.."  # type CT_NEW, flags NLM_F_MULTI; nfgenmsg
    rb".\x00\x01\x80(?:" + _ORIG_ADDR + rb")" + _ORIG_PROTO + _TUPLE_ZONE + _REPLY +
    rb"(?:\x06\x00\x12\x00..\x00\x00)?"  # CTA_ZONE
    rb"\x08\x00\x03\x00(.{4})"  # CTA_STATUS
    # timeout (captured when it says idle, its first byte as a marker when it says busy: see
    # parse.idle), mark, use, id, secmark
    rb"(?:\x08\x00\x07\x00(%s)|\x08\x00\x07\x00(?=%s)(.).{3}|\x08\x00[\x07\x08\x0b\x0c\x11]\x00.{4})*"
    rb"(?(sp).\x00\x04\x80.\x00[\x01-\x03]\x80\x05\x00\x01\x00(.)|)"  # protoinfo state: required
)
DUMP_ROW = re.compile(_ROW % (rb"(?!)", rb"(?!)"), re.S)
_STATUS_BITS = IPS_SEEN_REPLY | IPS_ASSURED | IPS_OFFLOAD | IPS_HW_OFFLOAD | IPS_FIXED_TIMEOUT
_NO_IDLE = IPS_OFFLOAD | IPS_HW_OFFLOAD | IPS_FIXED_TIMEOUT  # the timeout says nothing of idle time


def row_pattern(rule: "Optional[IdleRule]") -> "Pattern[bytes]":
    """The row pattern capturing CTA_TIMEOUT where it says the entry is idle under ``rule``."""
    if rule is None:
        return DUMP_ROW
    return re.compile(_ROW % (be32_range(rule.low, rule.high), be32_range(rule.busy_low, rule.established)), re.S)


class Walk(NamedTuple):
    rows: int  # CT_NEW messages in the buffer
    other: int  # messages of another type (not DONE/ERROR)
    done: bool  # NLMSG_DONE (or an ACK) seen: the dump is complete
    error: int  # errno of an NLMSG_ERROR, 0 if none


def walk(buf: bytes) -> Walk:
    """Count a buffer's messages by type, following the length fields only."""
    unpack = _HDR.unpack_from
    off, end = 0, len(buf)
    rows = other = 0
    while off + _MSGHDR_LEN <= end:
        length, mtype, _f, _s, _p = unpack(buf, off)
        if length < _MSGHDR_LEN or off + length > end:
            raise BadMessage("netlink message length %d at offset %d runs outside %d bytes"
                             % (length, off, end))
        if mtype == CT_NEW:
            rows += 1
        elif mtype == NLMSG_DONE:
            return Walk(rows, other, True, 0)
        elif mtype == NLMSG_ERROR:
            code = error_code(buf, off)
            return Walk(rows, other, True, code)
        else:
            other += 1
        off += (length + 3) & ~3
    return Walk(rows, other, False, 0)


def count_rows(buf: bytes, rows: int, pattern: "Pattern[bytes]" = DUMP_ROW) -> Optional[List[bytes]]:
    """The raw row keys of a buffer holding ``rows`` CT_NEW messages (the captures joined: one
    bytes object hashes faster and weighs a third of a tuple), for ``Counter.update`` (which
    counts a list in C), or None when the pattern did not account for every row (decode that
    buffer with ``decode_entry``)."""
    found = pattern.findall(buf)
    return list(map(b"".join, found)) if len(found) == rows else None


_HAS_STATE = (6, 0x21, 0x84)


def label_rows(raw: Dict[bytes, int], counts: Dict[bytes, int], kinds: Dict[bytes, object],
               idle: Dict[bytes, List[int]], limit: int = -1) -> None:
    """Raw row keys (emptied) -> what ``parse.table.label_lines`` gives for text: entries per packed
    source, their (protocol, label) numbers, and (count, smallest remaining) of idle
    ESTABLISHED TCP entries; one step per distinct raw key.

    A raw key is the row's captures joined: the source with its attribute header (8 bytes for
    IPv4, 20 for IPv6), then the protocol (one byte for TCP/DCCP/SCTP, else the 9-byte protocol
    attribute head ending in its number), the 4 status bytes, the 4 timeout bytes when they say
    idle or one marker byte when they say busy, and for TCP/DCCP/SCTP the state byte last.
    Everything after the source is looked up whole in ``_TAILS`` (a handful of distinct tails
    in a table, plus one per idle remaining time), so a key costs two slices and three dict steps.
    With a ``limit``, at most that many keys are taken (the rest stay in ``raw``)."""
    tails = _TAILS
    if len(tails) > _TAILS_MAX:
        tails.clear()
    get = counts.get
    pop = raw.popitem
    while raw and limit:  # consumed as labelled: each raw key's memory is free for the compact one
        limit -= 1
        key, n = pop()
        if key[0] == 8:
            src, tail = key[4:8], key[8:]
        else:
            src, tail = key[4:20], key[20:]
        told = tails.get(tail)
        if told is None:
            told = tails[tail] = _tail_kind(tail)
        kind, remaining = told
        c = get(src)
        if c is None:
            counts[src] = n
            kinds[src] = kind
        else:
            count_kind(counts, kinds, src, kind, n)
        if remaining is not None:
            add_idle(idle, src, n, remaining)


_TAILS = {}  # type: Dict[bytes, Tuple[int, Optional[int]]]  # raw key after the source -> (kind, idle remaining)
_TAILS_MAX = 1 << 16


def _tail_kind(tail: bytes) -> Tuple[int, Optional[int]]:
    """A raw key's part after the source -> (its kind number, the remaining timeout of an idle
    ESTABLISHED entry whose idle time tells, else None)."""
    proto = tail[0]
    if proto in _HAS_STATE:  # status, [idle timeout | busy marker], state
        status, state, rest = tail[1:5], tail[-1], tail[5:-1]
    else:  # status, [idle timeout | busy marker]
        proto = tail[8]
        status, state, rest = tail[9:13], -1, tail[13:]
    r = Record(AF_INET, b"", proto, state, _U32.unpack(status)[0] & _STATUS_BITS)
    if rest and idle_tells(r):
        return KNOWN, _U32.unpack(rest)[0] if len(rest) == 4 else None
    return KINDS.index(proto_name(proto), record_label(r)), None


def idle_tells(r: Record) -> bool:
    """Whether an entry's remaining timeout can say how long it has been silent: ESTABLISHED TCP,
    not offloaded, no fixed timeout (``parse.idle``)."""
    return r.proto == 6 and r.state == 3 and not r.status & _NO_IDLE


def label_records(records: Dict[Record, int], counts: Dict[bytes, int], kinds: Dict[bytes, object],
                  idle: Dict[bytes, List[int]], rule: "Optional[IdleRule]") -> None:
    """Records (the general decoder's output) -> the same as ``label_rows``."""
    for r, n in records.items():
        label = record_label(r)
        told = rule is not None and idle_tells(r)
        known = told and rule.is_known(r.timeout)  # type: ignore[union-attr]  # told: rule is set
        count_kind(counts, kinds, r.src, KNOWN if known else KINDS.index(proto_name(r.proto), label), n)
        if told and rule.is_idle(r.timeout):  # type: ignore[union-attr]
            add_idle(idle, r.src, n, r.timeout)
