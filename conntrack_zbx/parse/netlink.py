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

import struct
from typing import Dict, Iterator, NamedTuple, Optional, Tuple

from conntrack_zbx.errors import BadMessage as BadMessage  # re-exported: the decoders raise it
import conntrack_zbx.parse.states as labels

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
STATUS_BITS = IPS_SEEN_REPLY | IPS_ASSURED | IPS_OFFLOAD | IPS_HW_OFFLOAD | IPS_FIXED_TIMEOUT  # what is kept

# The names /proc/net/nf_conntrack prints, so both sources give the same labels.
PROTO_NAMES = {6: "tcp", 17: "udp", 136: "udplite", 1: "icmp", 58: "icmpv6", 132: "sctp",
               33: "dccp", 47: "gre"}
TCP_STATES, SCTP_STATES, DCCP_STATES = labels.TCP_STATES, labels.SCTP_STATES, labels.DCCP_STATES
STATE_TABLES = {6: TCP_STATES, 132: SCTP_STATES, 33: DCCP_STATES}

# CTA_STATS_* attribute number -> our stable counter name (parse.stat.STABLE_NAMES' values).
STATS_CPU_NAMES = {2: "found", 4: "invalid", 8: "insert", 9: "insert_failed", 10: "drop",
                   11: "early_drop", 12: "error", 13: "search_restart", 14: "clash_resolve",
                   15: "chaintoolong"}

DONE_TAIL = struct.pack("=IH", 20, NLMSG_DONE)  # length and type of the last message of a dump's last buffer
_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_NLA = struct.Struct("=HH")
_U32 = struct.Struct("!I")
_MSGHDR_LEN = 16
_PAYLOAD = 20  # nlmsghdr + nfgenmsg


class DumpEntry(NamedTuple):
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
    return -int(code)


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


def decode_entry(buf: bytes, off: int, length: int) -> DumpEntry:
    """One IPCTNL_MSG_CT_NEW message (a dump row) -> DumpEntry. Raises BadMessage."""
    end = off + length
    if length < _PAYLOAD + 4:
        raise BadMessage("conntrack message too short (%d bytes)" % length)
    family = buf[off + _MSGHDR_LEN]
    src: "Optional[bytes]" = None
    proto = -1
    state = -1
    status: "Optional[int]" = None
    info: "Optional[Tuple[int, int]]" = None
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
    return DumpEntry(family, src, proto, state, status & STATUS_BITS, timeout)


def _orig_tuple(buf: bytes, start: int, end: int) -> Tuple[bytes, int]:
    src: "Optional[bytes]" = None
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


def record_label(r: DumpEntry) -> str:
    """The label /proc's line gives (``count.kinds``): the state number named as /proc names it,
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
    out: "Dict[str, int]" = {}
    for atype, voff, vlen in attrs(buf, off + _PAYLOAD, off + length):
        name = STATS_CPU_NAMES.get(atype)
        if name is not None:
            if vlen != 4:
                raise BadMessage("stats attribute %d of %d bytes" % (atype, vlen))
            out[name] = _U32.unpack_from(buf, voff)[0]
    return out


# -- the fast path: a whole recv() buffer counted in C ---------------------------------------
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
