"""ctnetlink: the conntrack table and counters straight from the kernel, standard library only.

Why it is the primary talkers source: the kernel's dump is cheaper than formatting
``/proc/net/nf_conntrack`` text, binary rows are counted faster than text lines, and the kernel's
share of the work runs in a reader process in parallel with the counting. It is also the only
way to the entries on kernels built without ``CONFIG_NF_CONNTRACK_PROCFS``. It needs CAP_NET_ADMIN,
as ``conntrack -L`` does, so the agent reaches it through the same fixed sudo line as /proc.

This is the thin I/O layer: sockets, the reader process and errors here; message layouts in
``parse/netlink.py``, counting in ``count/rows.py``.
"""

import errno
import mmap
import os
import socket
import struct
import time
from typing import Dict, Optional

from conntrack_zbx.errors import Malformed, NotAvailable, NotPermitted
from conntrack_zbx.parse import netlink as nl
from conntrack_zbx.parse.netlink import DONE_TAIL

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol  # novermin (type checking only: never imported at run time)

    class Counting(Protocol):
        """What counts a dump's buffers (``count.rows.RowCounter``): this layer only reads them."""

        done: bool

        @property
        def pending(self) -> bool: ...
        def add(self, buf: memoryview) -> None: ...
        def label_some(self) -> None: ...
        def must_stop(self, now: float, step: float, deadline: float) -> bool: ...

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


def walk(buf: bytes) -> nl.Walk:
    """A received buffer's message counts; the kernel's error or a broken datagram raised as ours."""
    try:
        w = nl.walk(buf)
    except nl.BadMessage as e:
        raise Malformed("ctnetlink sent a malformed datagram: %s" % e) from None
    if w.error:
        raise _translate(OSError(w.error, os.strerror(w.error)))
    return w


def dump(counter: "Counting", deadline: Optional[float] = None) -> None:
    """One CT_GET dump, every buffer handed to ``counter`` (``count.rows``); nothing holds the table.

    The kernel does its part of a dump (walking the table, filling the next buffer) inside
    recv(). A forked reader process does only the recv() calls, straight into a ring of shared
    memory slots, and says which slot it filled through a pipe, while this process counts the
    previous slot and hands it back: the kernel's work and ours run on two CPUs at once, nothing
    is copied between them, and there is no lock (threads would serialise on the GIL).
    Each buffer is counted by the compiled row pattern and checked against its message count;
    a buffer the pattern does not fully account for is decoded message by message instead.
    """
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
    try:
        _count_frames(filled_r, free_w, view, counter, deadline)
    finally:
        os.close(filled_r)
        os.close(free_w)
        _end_reader(pid, counter.done)
        view.release()
        ring.close()


def _count_frames(filled_r: int, free_w: int, view: memoryview, tally: "Counting",
                  deadline: Optional[float]) -> None:
    """Take each filled slot the reader names, count it, hand it back; label in between."""
    import select

    last = time.monotonic()
    while not tally.done:
        if tally.pending and not select.select([filled_r], [], [], 0)[0]:
            tally.label_some()  # the reader is still inside recv(): label what was counted
            continue
        if deadline is not None:
            now = time.monotonic()
            step, last = now - last, now
            if tally.must_stop(now, step, deadline):
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
        except OSError as e:  # the kernel's error inside the dump
            raise _translate(e) from None
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


# Reader -> counter frames: slot, bytes in it, and whether the reader carries on or failed (then
# the error text of that many bytes follows the frame).
_FRAME = struct.Struct("=III")
_MORE, _FAILED = 0, 2
SLOTS = 32


def _reader(s: socket.socket, ring: "mmap.mmap", filled: int, free: int) -> None:
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
            last, first = bytes(view[start + n - 20:start + n - 14]), bytes(view[start + 4:start + 6])
            if last == DONE_TAIL or first == b"\x02\x00":
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
            w = walk(buf)
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
