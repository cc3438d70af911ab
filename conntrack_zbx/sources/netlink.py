"""ctnetlink: the conntrack table and counters straight from the kernel, standard library only.

Why it is the primary talkers source: the kernel's dump is cheaper than formatting
``/proc/net/nf_conntrack`` text, binary rows are counted faster than text lines, and the kernel's
share of the work runs in a reader process in parallel with the counting. It is also the only
way to the entries on kernels built without ``CONFIG_NF_CONNTRACK_PROCFS``. It needs CAP_NET_ADMIN,
as ``conntrack -L`` does, so the agent reaches it through the same fixed sudo line as /proc.

This is the thin I/O layer: sockets and errors here, decoding in ``conntrack_zbx.parse.netlink``.
"""

import errno
import os
import socket
import struct
import time
from collections import Counter
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple

from conntrack_zbx.errors import Malformed, NotAvailable, NotPermitted
from conntrack_zbx.parse import netlink as nl
from conntrack_zbx.parse.idle import IdleRule
from conntrack_zbx.talkers import read_deadline

NETLINK_NETFILTER = 12
RCVBUF = 1 << 21
RECV_SIZE = 1 << 16  # the kernel fills at most ~32 KiB per dump step whatever is asked

PERMISSION_HINT = (
    "permission denied by ctnetlink (needs CAP_NET_ADMIN, like 'conntrack -L') as uid %d: run the "
    "talker keys through the sudo grant (sudoers.d/conntrack-zbx, docs/permissions.md) or use "
    "--source proc"
)


def request(mtype: int, flags: int, seq: int, family: int = 0, payload: bytes = b"",
            res_id: int = 0) -> bytes:
    """One netlink request: nlmsghdr, nfgenmsg, then ``payload`` (attributes)."""
    body = struct.pack("!BBH", family, 0, res_id) + payload
    return struct.pack("=IHHII", 16 + len(body), mtype, flags, seq, 0) + body


def dump_request(seq: int, family: int = 0) -> bytes:
    """A CT_GET dump of every entry of the socket's network namespace (family 0: IPv4 and IPv6)."""
    return request(nl.CT_GET, nl.NLM_F_REQUEST | nl.NLM_F_DUMP, seq, family)


class Dump(NamedTuple):
    """Counts of one dump by compact key (packed source + kind byte), as talkers ranks."""

    counts: Dict[bytes, int]  # packed source -> entries
    entries: int
    skipped: int
    truncated: bool
    kinds: Dict[bytes, object]  # packed source -> its (protocol, label) numbers (labels.count_kind)
    idle: Dict[bytes, List[int]]  # packed source -> [idle ESTABLISHED entries, least remaining]


def open_socket() -> socket.socket:
    try:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    except OSError as e:
        if e.errno in (errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT):
            raise NotAvailable("ctnetlink is not available (%s): the kernel has no nfnetlink; "
                               "use --source proc" % (e.strerror or e)) from None
        raise _translate(e) from None
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    except OSError:
        pass
    s.bind((0, 0))
    return s


def _translate(e: OSError) -> Exception:
    if e.errno in (errno.EPERM, errno.EACCES):
        return NotPermitted(PERMISSION_HINT % os.geteuid())
    if e.errno in (errno.ENOENT, errno.EOPNOTSUPP, errno.EPROTONOSUPPORT):
        return NotAvailable("ctnetlink refused the request (%s): is the nf_conntrack_netlink module "
                            "available? ('modprobe nf_conntrack_netlink'), or use --source proc"
                            % (e.strerror or e))
    return NotAvailable("ctnetlink failed: %s" % (e.strerror or e))


def _walk(buf) -> nl.Walk:
    """A received buffer's message counts; the kernel's error or a broken datagram raised as ours."""
    try:
        w = nl.walk(buf)
    except nl.BadMessage as e:
        raise Malformed("ctnetlink sent a malformed datagram: %s" % e) from None
    if w.error:
        raise _translate(OSError(w.error, os.strerror(w.error)))
    return w


def dump(deadline: Optional[float] = None, rule: "Optional[IdleRule]" = None) -> Dump:
    """One CT_GET dump, counted; nothing holds the table.

    The kernel does its part of a dump (walking the table, filling the next buffer) inside
    recv(). A forked reader process does only the recv() calls, straight into a ring of shared
    memory slots, and says which slot it filled through a pipe, while this process counts the
    previous slot and hands it back: the kernel's work and ours run on two CPUs at once, nothing
    is copied between them, and there is no lock (threads would serialise on the GIL).
    Each buffer is counted by the compiled row pattern and checked against its message count;
    a buffer the pattern does not fully account for is decoded message by message instead.
    """
    import mmap

    s = open_socket()
    s.send(dump_request(1, 0))
    ring = mmap.mmap(-1, SLOTS * RECV_SIZE)  # anonymous and shared with the forked reader
    filled_r, filled_w = os.pipe()
    free_r, free_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(filled_r)
        os.close(free_w)
        _reader(s, ring, filled_w, free_r)  # never returns
    os.close(filled_w)
    os.close(free_r)
    s.close()
    view = memoryview(ring)
    tally = _Counting(rule)
    try:
        _count_frames(filled_r, free_w, view, tally, deadline)
    finally:
        os.close(filled_r)
        os.close(free_w)
        _end_reader(pid, tally.done)
        view.release()
        ring.close()
    return tally.result()


def _count_frames(filled_r: int, free_w: int, view: memoryview, tally: "_Counting", deadline: Optional[float]) -> None:
    """Take each filled slot the reader names, count it, hand it back; label in between."""
    import select

    last = time.monotonic()
    while not tally.done:
        if tally.pending and not select.select([filled_r], [], [], 0)[0]:
            tally.label_one()  # the reader is still inside recv(): label what was counted
            continue
        if deadline is not None:
            now = time.monotonic()
            step, last = now - last, now
            if now + step > read_deadline(deadline, tally.keys(), per_key=COST_PER_KEY):
                return  # report what was counted, truncated, leaving time to rank it
        head = _read(filled_r, _FRAME.size)
        if len(head) != _FRAME.size:
            raise Malformed("the ctnetlink reader process stopped before the dump was complete")
        slot, size, state = _FRAME.unpack(head)
        if state == _FAILED:
            raise _failure(_read(filled_r, size))
        buf = view[slot * RECV_SIZE:slot * RECV_SIZE + size]
        try:  # the slice must be released before the ring can be closed, whatever happens
            tally.add(buf)
        finally:
            buf.release()
        if not tally.done:
            try:
                os.write(free_w, b".")  # the slot is the reader's again
            except BrokenPipeError:  # the reader has stopped: its frame (or EOF) says why
                pass


def _read(fd: int, n: int) -> bytes:
    out = b""
    while len(out) < n:
        got = os.read(fd, n - len(out))
        if not got:
            break
        out += got
    return out


def _end_reader(pid: int, finished: bool) -> None:
    if not finished:
        try:
            os.kill(pid, 9)
        except OSError:
            pass
    os.waitpid(pid, 0)


class _Counting:
    """The counts of one dump so far. Rows the compiled pattern matched are counted by their raw
    key in ``raw`` (``Counter.update``, in C); whenever the reader is still inside recv() a few
    raw keys are taken out and labelled into per-source counts (``parse.netlink.label_rows``,
    additive: a key seen again later is simply labelled again), so little is left to label when
    the dump ends. Labelling per buffer instead labels a long tail's every row once (most rows of
    a buffer are a key of their own), four times the work of labelling each distinct key once,
    and on that shape the counting process, not the kernel, is the slower side.
    Rows decoded one by one go to ``slow``; entries, skipped messages, and whether NLMSG_DONE
    was seen."""

    def __init__(self, rule: "Optional[IdleRule]") -> None:
        self.rule = rule
        self.pattern = nl.row_pattern(rule)
        self.raw = Counter()  # type: Counter
        self.counts = {}  # type: Dict[bytes, int]
        self.kinds = {}  # type: Dict[bytes, object]
        self.idle = {}  # type: Dict[bytes, List[int]]
        self.slow = Counter()  # type: Counter
        self.entries = self.skipped = 0
        self.done = False

    @property
    def pending(self) -> bool:
        """Whether raw keys wait to be labelled."""
        return bool(self.raw)

    def keys(self) -> int:
        """Distinct keys held or about to be (what is left to label and rank)."""
        return len(self.counts) + len(self.raw) + len(self.slow)

    def add(self, buf) -> None:
        # A dump's buffers hold CT_NEW rows only, and the last one ends with NLMSG_DONE. When the
        # row pattern matched as many rows as the buffer holds CT_NEW headers (each row has one;
        # the same bytes inside a payload only raise the header count), every row was counted,
        # and no message needs walking in Python. Anything else is walked, message by message.
        if buf[-20:-14] != _DONE_TAIL and buf[4:6] != b"\x02\x00":
            found = self.pattern.findall(buf)
            if found and len(found) == bytes(buf).count(_ROW_HEAD):
                self._count(map(b"".join, found))
                self.entries += len(found)
                return
        wk = _walk(buf)
        self.skipped += wk.other
        if wk.rows:
            c = nl.count_rows(buf, wk.rows, self.pattern)
            if c is not None:
                self._count(c)
                self.entries += wk.rows
            else:
                e, k = _decode_slowly(bytes(buf), self.slow)
                self.entries += e
                self.skipped += k
        self.done = wk.done

    def _count(self, rows: "Iterable[bytes]") -> None:
        self.raw.update(rows)
        if len(self.raw) > RAW_MAX:  # labelling fell behind: catch up, down to half
            nl.label_rows(self.raw, self.counts, self.kinds, self.idle, len(self.raw) - RAW_MAX // 2)

    def label_one(self) -> None:
        """Label a few raw keys (about a millisecond's work: the reader is polled in between)."""
        nl.label_rows(self.raw, self.counts, self.kinds, self.idle, LABEL_STEP)

    def result(self) -> Dump:
        nl.label_rows(self.raw, self.counts, self.kinds, self.idle)
        self.raw.clear()  # popitem leaves the emptied table allocated: 10 MiB at 250,000 keys
        if self.slow:
            nl.label_records(self.slow, self.counts, self.kinds, self.idle, self.rule)
        return Dump(self.counts, self.entries, self.skipped, not self.done, self.kinds, self.idle)


# Raw keys waiting to be labelled, at most. A raw key weighs about twice its labelled form, and
# a long tail's keys hardly repeat, so a bigger backlog buys nothing: on 1,048,576 entries from
# 250,000 sources this bound took peak RSS from 74 to 57 MiB and the whole call from 2.75 s to
# 2.6 s (smaller tables stay in cache), where 16,384 began to cost time (bench/run.py).
RAW_MAX = 1 << 15
# What a key held when the dump stops costs until the answer is written: most are labelled
# already (at most RAW_MAX wait, ~1 us each), ranking takes ~0.5 us per source (measured 0.12 s
# for 250,000 on a 2-CPU VM); twice that for a busy host.
COST_PER_KEY = 1.5e-6
LABEL_STEP = 512  # raw keys labelled between two looks at the reader

# Reader -> counter frames: slot, bytes in it, and whether the reader carries on or failed (then
# the error text of that many bytes follows the frame).
_FRAME = struct.Struct("=III")
_MORE, _FAILED = 0, 2
SLOTS = 32
_DONE_TAIL = struct.pack("=IH", 20, nl.NLMSG_DONE)
_ROW_HEAD = struct.pack("=HH", nl.CT_NEW, nl.NLM_F_MULTI)  # type and flags of every dump row


def _reader(s: socket.socket, ring, filled: int, free: int) -> None:
    """The forked reader: recv() into the ring's slots, in order, until the dump ends, and
    say which slot holds how much. It does nothing else: the kernel's share (inside recv) is
    the larger half of the work."""
    code = 0
    try:
        view = memoryview(ring)
        tokens, slot = SLOTS, 0
        while True:
            if tokens == 0:
                got = os.read(free, 4096)
                if not got:
                    break  # the counting side is gone (deadline)
                tokens = len(got)
            tokens -= 1
            n = s.recv_into(view[slot * RECV_SIZE:(slot + 1) * RECV_SIZE])
            if n == 0:
                raise Malformed("ctnetlink closed the dump without NLMSG_DONE")
            os.write(filled, _FRAME.pack(slot, n, _MORE))
            # The dump ends with NLMSG_DONE, last in its buffer, or with an NLMSG_ERROR (the
            # counting side reads either and stops).
            start = slot * RECV_SIZE
            if view[start + n - 20:start + n - 14] == _DONE_TAIL or view[start + 4:start + 6] == b"\x02\x00":
                break
            slot = (slot + 1) % SLOTS
    except BaseException as e:  # reported through the pipe, never raised into the caller's stack
        code = 1
        try:
            msg = ("%d|%s" % (getattr(e, "errno", None) or 0, e)).encode("utf-8", "replace")[:4000]
            os.write(filled, _FRAME.pack(0, len(msg), _FAILED) + msg)
        except BaseException:
            pass
    finally:
        os._exit(code)


def _failure(payload: bytes) -> Exception:
    code, _, text = payload.decode("utf-8", "replace").partition("|")
    if code.isdigit() and int(code):
        return _translate(OSError(int(code), text))
    return Malformed("the ctnetlink reader process failed: %s" % text)


def _decode_slowly(buf: bytes, into: Counter) -> Tuple[int, int]:
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


def raw_answers(mtype: int) -> bytes:
    """Every buffer the kernel sends for one small dump request (the per-CPU counters; fixture
    capture), concatenated: netlink messages are self-delimiting."""
    s = open_socket()
    try:
        s.settimeout(5)
        s.send(request(mtype, nl.NLM_F_REQUEST | nl.NLM_F_DUMP, 1))
        out = []
        while True:
            try:
                buf = s.recv(RECV_SIZE)
            except socket.timeout:
                raise NotAvailable("ctnetlink did not finish answering within 5 s") from None
            except OSError as e:
                raise _translate(e) from None
            if not buf:
                raise Malformed("ctnetlink closed the dump without NLMSG_DONE")
            w = _walk(buf)
            out.append(buf)
            if w.done:
                return b"".join(out)
    finally:
        s.close()


def stats_cpu() -> Dict[str, int]:
    """The per-CPU counters summed, under the same stable names as /proc/net/stat/nf_conntrack."""
    total = {}  # type: Dict[str, int]
    buf = raw_answers(nl.CT_GET_STATS_CPU)
    cpus = 0
    try:
        for mtype, _f, off, length in nl.messages(buf):
            if mtype == nl.CT_GET_STATS_CPU:
                cpus += 1
                for name, value in nl.decode_stats_cpu(buf, off, length).items():
                    total[name] = total.get(name, 0) + value
    except nl.BadMessage as e:
        raise Malformed("ctnetlink per-CPU stats: %s" % e) from None
    if not cpus:
        raise Malformed("ctnetlink answered the per-CPU stats dump with no CPU")
    return total
