"""The one I/O layer over /proc and /sys, rooted at a directory so tests use fixture trees.

Readers open files and translate the OS's answer into our error classes with a message that
says what to do; everything they read is handed to the pure parsers in ``conntrack_zbx.parse``.
"""

import errno
import os

from conntrack_zbx.errors import Malformed, NotAvailable, NotPermitted
from conntrack_zbx.parse.stat import StatTable, parse_stat

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs every agent call ~3 ms
    from typing import IO, Dict, Iterator, Optional

COUNT = "proc/sys/net/netfilter/nf_conntrack_count"
MAX = "proc/sys/net/netfilter/nf_conntrack_max"
BUCKETS = "proc/sys/net/netfilter/nf_conntrack_buckets"
HASHSIZE = "sys/module/nf_conntrack/parameters/hashsize"
STAT = "proc/net/stat/nf_conntrack"
OSRELEASE = "proc/sys/kernel/osrelease"
MEMINFO = "proc/meminfo"
TABLE = "proc/net/nf_conntrack"
NETFILTER = "proc/sys/net/netfilter/"
# The timeouts (s) stats reports and idle time is judged by; per network namespace.
TIMEOUTS = {
    "tcp_established": "nf_conntrack_tcp_timeout_established",
    "tcp_close_wait": "nf_conntrack_tcp_timeout_close_wait",
    "tcp_max_retrans": "nf_conntrack_tcp_timeout_max_retrans",
    "tcp_unacknowledged": "nf_conntrack_tcp_timeout_unacknowledged",
    "udp": "nf_conntrack_udp_timeout",
    "udp_stream": "nf_conntrack_udp_timeout_stream",
}

MODULE_HINT = (
    "the nf_conntrack module is not loaded (no %s); nothing is tracked on this host, "
    "load it with 'modprobe nf_conntrack' if it should be, or unlink the template"
)
PROCFS_HINT = (
    "%s does not exist: this kernel is built without CONFIG_NF_CONNTRACK_PROCFS "
    "(counters in /proc/sys still work; entries need the netlink source)"
)
TABLE_PERMISSION_HINT = (
    "permission denied reading %s (mode 0440, root only) as uid %d: grant the agent exactly "
    "this read with the sudoers drop-in sudoers.d/conntrack-zbx and the talker keys' --sudo "
    "form, see docs/permissions.md"
)


class ProcRoot:
    """Paths below a root directory ('/' on a real host, a fixture tree in tests)."""

    def __init__(self, root: str = "/") -> None:
        self.root = root

    def path(self, rel: str) -> str:
        return os.path.join(self.root, rel)

    # -- counters -------------------------------------------------------------------------
    def read_int(self, rel: str) -> int:
        text = self._read_text(rel)
        try:
            return int(text.strip())
        except ValueError:
            raise Malformed("%s does not hold an integer: %r" % (self.path(rel), text[:64])) from None

    def module_loaded(self) -> bool:
        return os.path.exists(self.path(COUNT))

    def count(self) -> int:
        return self._sysctl(COUNT)

    def max(self) -> int:
        return self._sysctl(MAX)

    def buckets(self) -> int:
        return self._sysctl(BUCKETS)

    def hashsize(self) -> "Optional[int]":
        """The module parameter: 0600 root, so None (not 0) when this user cannot read it."""
        try:
            return self.read_int(HASHSIZE)
        except (NotPermitted, NotAvailable):
            return None

    def osrelease(self) -> "Optional[str]":
        try:
            return self._read_text(OSRELEASE).strip()
        except (NotAvailable, NotPermitted, Malformed):
            return None

    def memtotal_kib(self) -> "Optional[int]":
        try:
            for line in self._read_text(MEMINFO).splitlines():
                if line.startswith("MemTotal:"):
                    return int(line.split()[1])
        except (NotAvailable, NotPermitted, Malformed, ValueError, IndexError):
            pass
        return None

    def timeouts(self) -> "Dict[str, Optional[int]]":
        """The namespace's conntrack timeouts by our short name; None where a sysctl is missing
        (an older kernel) or unreadable."""
        out = {}  # type: Dict[str, Optional[int]]
        for name, sysctl in TIMEOUTS.items():
            try:
                out[name] = self.read_int(NETFILTER + sysctl)
            except (NotAvailable, NotPermitted, Malformed):
                out[name] = None
        return out

    def stat(self) -> "StatTable":
        if not self.module_loaded():
            raise NotAvailable(MODULE_HINT % self.path(COUNT))
        return parse_stat(self._read_text(STAT, missing_hint=PROCFS_HINT))

    def _sysctl(self, rel: str) -> int:
        if not self.module_loaded():
            if self.root != "/" and not os.path.isdir(self.path("proc/sys")):  # a mistyped --proc-root
                raise NotAvailable("%s has no proc/sys: --proc-root names a directory holding proc/ (and sys/), "
                                   "like / on a live host" % self.root)
            raise NotAvailable(MODULE_HINT % self.path(COUNT))
        return self.read_int(rel)

    def _read_text(self, rel: str, missing_hint: "Optional[str]" = None) -> str:
        path = self.path(rel)
        try:
            with open(path, "rb") as f:
                data = f.read(1 << 20)
        except OSError as e:
            raise _translate(e, path, missing_hint) from None
        try:
            return data.decode("ascii")
        except UnicodeDecodeError:
            raise Malformed("%s is not ASCII text" % path) from None

    # -- the entry table ------------------------------------------------------------------
    def open_table(self) -> "IO[bytes]":
        """Open /proc/net/nf_conntrack for streaming; the caller closes it."""
        if not self.module_loaded():
            raise NotAvailable(MODULE_HINT % self.path(COUNT))
        path = self.path(TABLE)
        try:
            return open(path, "rb")
        except OSError as e:
            raise _translate(e, path, PROCFS_HINT, TABLE_PERMISSION_HINT) from None


SAVE_ONE = "save one as root: sudo cat /proc/net/nf_conntrack > FILE"


def open_snapshot(path: str) -> "IO[bytes]":
    """Open a saved copy of the table (``sudo cat /proc/net/nf_conntrack > conntrack.list``).
    An empty file is refused: it is what ``cat`` without root leaves (the table is readable by
    root only), not an empty table. A copy with CRLF line ends (one that went through Windows) is
    read as its LF original, from an unlinked temporary copy (the counters need a real file). A
    pipe is read as it comes."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise _translate(e, path, "snapshot file %s does not exist") from None
    if not f.seekable():  # a pipe (--file /dev/stdin): read as it comes, nothing to look at first
        return f
    head = f.read(65536)
    if not head:
        f.close()
        raise Malformed("%s is empty: 'cat /proc/net/nf_conntrack > FILE' run without root leaves an empty "
                        "file (the table is readable by root only); %s" % (path, SAVE_ONE))
    if b"\r\n" not in head:
        f.seek(0)
        return f
    import tempfile

    out = tempfile.TemporaryFile()
    with f:
        carry = b""
        chunk = head
        while chunk:
            chunk = carry + chunk
            carry = b"\r" if chunk.endswith(b"\r") else b""
            out.write(chunk[:len(chunk) - len(carry)].replace(b"\r\n", b"\n"))
            chunk = f.read(1 << 20)
        out.write(carry)
    out.seek(0)
    return out


def iter_lines(f: "IO[bytes]") -> "Iterator[bytes]":
    """Stream lines without holding the table; a read error mid-way is reported, not hidden."""
    try:
        yield from f
    except OSError as e:
        raise Malformed("reading the conntrack table failed after a partial read: %s" % e) from None


def _translate(e: "OSError", path: str, missing_hint: "Optional[str]" = None,
               permission_hint: "Optional[str]" = None) -> "Exception":
    if e.errno == errno.ENOENT:
        return NotAvailable((missing_hint or "%s does not exist") % path)
    if e.errno in (errno.EACCES, errno.EPERM):
        if permission_hint:
            return NotPermitted(permission_hint % (path, os.geteuid()))
        return NotPermitted("permission denied reading %s as uid %d" % (path, os.geteuid()))
    return NotAvailable("cannot read %s: %s" % (path, e.strerror or e))


def not_a_table(entries: int, skipped: int, path: str) -> None:
    """A saved table with lines and not one entry, none of them even starting as an entry does
    ("ipv4"/"ipv6"): the wrong file (a README, a log), raised as Malformed rather than answered as
    0 entries. A mangled copy of a real table (truncated lines) is still answered, its lines
    counted as skipped."""
    if entries or not skipped:
        return
    try:
        with open(path, "rb") as f:
            head = [f.readline() for _ in range(64)]
    except OSError:
        return  # it was read a moment ago; the answer with its skipped count stands
    if any(line.lstrip()[:4] in (b"ipv4", b"ipv6") for line in head):
        return
    raise Malformed("%s is not a conntrack table: %d lines, none like an entry of /proc/net/nf_conntrack "
                    "('ipv4 2 tcp 6 431999 ESTABLISHED src=...'); %s" % (path, skipped, SAVE_ONE))
