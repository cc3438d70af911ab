"""Counting ctnetlink dump rows: the compiled row pattern, its raw keys, and the dump's counter.

``sources/netlink.py`` reads the dump (the socket, a reader process, a ring of buffers) and hands
each buffer to a ``RowCounter``; everything here is pure: bytes in, ``Sums`` out. Layouts are
``parse/netlink.py``'s (the messages and attributes of ``nfnetlink_conntrack.h``).
"""

import re
import struct
from collections import Counter
from typing import Dict, Iterable, List, Optional, Pattern, Tuple

from conntrack_zbx.count.tally import Tally, read_deadline
from conntrack_zbx.count.idle import IdleRule, add_idle, be32_range
from conntrack_zbx.count.kinds import Sums, count_kind
from conntrack_zbx.parse.states import KINDS, KNOWN
from conntrack_zbx.errors import Malformed
from conntrack_zbx.parse import netlink as nl

_U32 = struct.Struct("!I")
IPV4_ADDR_ATTR = 8  # a raw key's first byte: the length of the IPv4 source attribute (20 for IPv6)

# The kernel writes every dump row in the same order (ctnetlink_fill_info): original tuple,
# reply tuple, [zone], status, a run of u32 attributes (mark, id, use, timeout...), then the
# protocol info for TCP/SCTP/DCCP. One compiled pattern per row captures the family, the
# original source, the protocol, the status and the state, and ``Counter(findall)`` counts rows
# without a Python-level step per entry (several times cheaper than decoding each message:
# docs/performance.md).
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
_NO_IDLE = nl.IPS_OFFLOAD | nl.IPS_HW_OFFLOAD | nl.IPS_FIXED_TIMEOUT  # the timeout says nothing of idle time


def row_pattern(rule: "Optional[IdleRule]") -> "Pattern[bytes]":
    """The row pattern capturing CTA_TIMEOUT where it says the entry is idle under ``rule``."""
    if rule is None:
        return DUMP_ROW
    return re.compile(_ROW % (be32_range(rule.low, rule.high), be32_range(rule.busy_low, rule.established)), re.S)


def count_rows(buf: bytes, rows: int, pattern: "Pattern[bytes]" = DUMP_ROW) -> Optional[List[bytes]]:
    """The raw row keys of a buffer holding ``rows`` CT_NEW messages (the captures joined: one
    bytes object hashes faster and weighs a third of a tuple), for ``Counter.update`` (which
    counts a list in C), or None when the pattern did not account for every row (decode that
    buffer with ``decode_entry``)."""
    found = pattern.findall(buf)
    return list(map(b"".join, found)) if len(found) == rows else None


_HAS_STATE = (6, 0x21, 0x84)


def label_rows(raw: Dict[bytes, int], sums: Sums, tails: "Dict[bytes, Tuple[int, Optional[int]]]",
               limit: int = -1) -> None:
    """Raw row keys (emptied as they are taken) -> ``sums``, as ``lines.label_lines`` does for
    text: entries per packed source, their (protocol, label) numbers, and (count, smallest
    remaining) of idle ESTABLISHED TCP entries; one step per distinct raw key.

    A raw key is the row's captures joined: the source with its attribute header (8 bytes for
    IPv4, 20 for IPv6), then the protocol (one byte for TCP/DCCP/SCTP, else the 9-byte protocol
    attribute head ending in its number), the 4 status bytes, the 4 timeout bytes when they say
    idle or one marker byte when they say busy, and for TCP/DCCP/SCTP the state byte last.
    Everything after the source is looked up whole in ``tails``, the dump's own memo (a handful
    of distinct tails in a table, plus one per idle remaining time), so a key costs two slices and
    three dict steps. With a ``limit``, at most that many keys are taken (the rest stay in ``raw``)."""
    counts, kinds, idle = sums.counts, sums.kinds, sums.idle
    get = counts.get
    pop = raw.popitem
    while raw and limit:  # consumed as labelled: each raw key's memory is free for the compact one
        limit -= 1
        key, n = pop()
        if key[0] == IPV4_ADDR_ATTR:  # the source with its attribute header, then the tail
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


def _tail_kind(tail: bytes) -> Tuple[int, Optional[int]]:
    """A raw key's part after the source -> (its kind number, the remaining timeout of an idle
    ESTABLISHED entry whose idle time tells, else None)."""
    proto = tail[0]
    if proto in _HAS_STATE:  # status, [idle timeout | busy marker], state
        status, state, rest = tail[1:5], tail[-1], tail[5:-1]
    else:  # status, [idle timeout | busy marker]
        proto = tail[8]
        status, state, rest = tail[9:13], -1, tail[13:]
    r = nl.DumpEntry(nl.AF_INET, b"", proto, state, _U32.unpack(status)[0] & nl.STATUS_BITS)
    if rest and idle_tells(r):
        return KNOWN, _U32.unpack(rest)[0] if len(rest) == 4 else None
    return KINDS.index(nl.proto_name(proto), nl.record_label(r)), None


def idle_tells(r: nl.DumpEntry) -> bool:
    """Whether an entry's remaining timeout can say how long it has been silent: ESTABLISHED TCP,
    not offloaded, no fixed timeout (``idle.py``)."""
    return r.proto == 6 and r.state == 3 and not r.status & _NO_IDLE


def label_entries(entries: "Dict[nl.DumpEntry, int]", sums: Sums, rule: "Optional[IdleRule]") -> None:
    """Entries the general decoder gave -> the same as ``label_rows``."""
    counts, kinds, idle = sums.counts, sums.kinds, sums.idle
    for r, n in entries.items():
        label = nl.record_label(r)
        told = rule is not None and idle_tells(r)
        known = told and rule.is_known(r.timeout)  # type: ignore[union-attr]  # told: rule is set
        count_kind(counts, kinds, r.src, KNOWN if known else KINDS.index(nl.proto_name(r.proto), label), n)
        if told and rule.is_idle(r.timeout):  # type: ignore[union-attr]
            add_idle(idle, r.src, n, r.timeout)


class RowCounter:
    """The counts of one dump so far. Rows the compiled pattern matched are counted by their raw
    key in ``raw`` (``Counter.update``, in C); whenever the reader is still inside recv() a few
    raw keys are taken out and labelled into ``sums`` (``label_rows``, additive: a key seen
    again later is simply labelled again), so little is left to label when the dump ends.
    Labelling per buffer instead would label a long tail's every row once (most rows of a buffer
    are a key of their own), and on that shape the counting process, not the kernel, would be
    the slower side (docs/performance.md). Rows decoded one by one go to ``slow``."""

    def __init__(self, rule: "Optional[IdleRule]") -> None:
        self.rule = rule
        self.pattern = row_pattern(rule)
        self.raw = Counter()  # type: Counter[bytes]
        self.sums = Sums()
        self.tails = {}  # type: Dict[bytes, Tuple[int, Optional[int]]]  # raw key after the source -> kind
        self.slow = Counter()  # type: Counter[nl.DumpEntry]
        self.entries = self.skipped = 0
        self.done = False  # NLMSG_DONE seen

    @property
    def pending(self) -> bool:
        """Whether raw keys wait to be labelled."""
        return bool(self.raw)

    def keys(self) -> int:
        """Distinct keys held or about to be (what is left to label and rank)."""
        return len(self.sums.counts) + len(self.raw) + len(self.slow)

    def must_stop(self, now: float, step: float, deadline: float) -> bool:
        """Whether the next buffer (as long as the last one took, ``step``) would end past the
        point where ranking what is held must start."""
        return now + step > read_deadline(deadline, self.keys(), per_key=COST_PER_KEY)

    def add(self, buf: memoryview) -> None:
        """Count one received buffer. The kernel's error in it is raised as OSError (the reader
        translates it), a broken datagram as Malformed."""
        # A dump's buffers hold CT_NEW rows only, and the last one ends with NLMSG_DONE. When the
        # row pattern matched as many rows as the buffer holds CT_NEW headers (each row has one;
        # the same bytes inside a payload only raise the header count), every row was counted,
        # and no message needs walking in Python. Anything else is walked, message by message.
        if bytes(buf[-20:-14]) != DONE_TAIL and bytes(buf[4:6]) != b"\x02\x00":
            found = self.pattern.findall(buf)
            if found and len(found) == bytes(buf).count(ROW_HEAD):
                self._count(map(b"".join, found))
                self.entries += len(found)
                return
        try:
            wk = nl.walk(buf)  # type: ignore[arg-type]  # unpack_from reads a memoryview alike
        except nl.BadMessage as e:
            raise Malformed("ctnetlink sent a malformed datagram: %s" % e) from None
        if wk.error:
            import os

            raise OSError(wk.error, os.strerror(wk.error))
        self.skipped += wk.other
        if wk.rows:
            c = count_rows(buf, wk.rows, self.pattern)  # type: ignore[arg-type]
            if c is not None:
                self._count(c)
                self.entries += wk.rows
            else:
                decoded, bad = _decode_slowly(bytes(buf), self.slow)
                self.entries += decoded
                self.skipped += bad
        self.done = wk.done

    def _count(self, rows: "Iterable[bytes]") -> None:
        self.raw.update(rows)
        if len(self.raw) > RAW_MAX:  # labelling fell behind: catch up, down to half
            label_rows(self.raw, self.sums, self.tails, len(self.raw) - RAW_MAX // 2)

    def label_some(self) -> None:
        """Label a few raw keys (about a millisecond's work: the reader is polled in between)."""
        label_rows(self.raw, self.sums, self.tails, LABEL_STEP)

    def tally(self) -> Tally:
        label_rows(self.raw, self.sums, self.tails)
        self.raw.clear()  # popitem leaves the emptied table allocated (docs/performance.md)
        if self.slow:
            label_entries(self.slow, self.sums, self.rule)
        s = self.sums
        return Tally(self.entries, self.skipped, s.counts, not self.done, s.kinds, s.idle, self.rule)


# Raw keys waiting to be labelled, at most. A raw key weighs about twice its labelled form, and
# a long tail's keys hardly repeat, so a bigger backlog buys nothing but memory; a much smaller
# one begins to cost time (docs/performance.md).
RAW_MAX = 1 << 15
# What a key held when the dump stops costs until the answer is written (most are labelled
# already, ranking is the rest), with room for a busy host (docs/performance.md).
COST_PER_KEY = 1.5e-6
LABEL_STEP = 512  # raw keys labelled between two looks at the reader
DONE_TAIL = nl.DONE_TAIL
ROW_HEAD = struct.pack("=HH", nl.CT_NEW, nl.NLM_F_MULTI)  # type and flags of every dump row


def _decode_slowly(buf: bytes, into: "Counter[nl.DumpEntry]") -> Tuple[int, int]:
    entries = skipped = 0
    for mtype, _f, off, length in nl.messages(buf):
        if mtype != nl.CT_NEW:
            continue
        try:
            into[nl.decode_entry(buf, off, length)] += 1
            entries += 1
        except nl.BadMessage:
            skipped += 1
    return entries, skipped
