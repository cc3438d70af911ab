"""How long an ESTABLISHED TCP entry has been silent, from its remaining timeout.

Every in-window TCP packet sets the entry's expiry to now + the state's timeout
(``nf_ct_refresh_acct`` in the kernel's ``nf_conntrack_core.c``); for ESTABLISHED that is
``nf_conntrack_tcp_timeout_established`` of the entry's network namespace (432000 s, five days,
by default). So ``idle ≈ timeout_established − remaining``, where *remaining* is the fifth field
of a ``/proc/net/nf_conntrack`` line and ``CTA_TIMEOUT`` in ctnetlink. That holds only where it
can be known:

- remaining above the retransmission and unacknowledged caps
  (``nf_conntrack_tcp_timeout_max_retrans``, ``…_unacknowledged``, 300 s by default): a
  connection retransmitting into the void is given that short timeout instead, so a small
  remaining says nothing about idle time;
- remaining at most timeout_established (a larger one comes from a custom timeout policy or a
  sysctl lowered since the entry's last packet);
- not offloaded (the flow table keeps those alive, /proc prints no timeout for them) and not a
  fixed timeout (``IPS_FIXED_TIMEOUT``).

An entry under a custom timeout policy *below* the sysctl cannot be told apart here; the docs say
so. Counting happens inside compiled patterns, so the rule is turned into a pattern that matches
exactly the remaining values of entries idle longer than the threshold: the counting keys of
everything else do not change, and a busy table costs what it cost before.
"""

from typing import Callable, Dict, List, NamedTuple, Optional


class IdleRule(NamedTuple):
    established: int  # nf_conntrack_tcp_timeout_established of the table's namespace (s)
    cap: int  # max(nf_conntrack_tcp_timeout_max_retrans, ..._unacknowledged) (s)
    idle_min: int  # the threshold: entries idle longer than this are counted (s)

    @property
    def low(self) -> int:
        """Smallest remaining value that says something (above the caps)."""
        return self.cap + 1

    @property
    def high(self) -> int:
        """Largest remaining value of an entry idle longer than idle_min."""
        return self.established - self.idle_min - 1

    @property
    def busy_low(self) -> int:
        """Smallest remaining value of a known entry that is not idle (refreshed recently)."""
        return max(self.high + 1, self.low)

    def idle_of(self, remaining: int) -> Optional[int]:
        """Idle seconds of an ESTABLISHED TCP entry, None where it cannot be known."""
        return self.established - remaining if self.is_known(remaining) else None

    def is_known(self, remaining: Optional[int]) -> bool:
        return remaining is not None and self.cap < remaining <= self.established

    def is_idle(self, remaining: Optional[int]) -> bool:
        return remaining is not None and self.low <= remaining <= self.high


def _fixed(lo: List[int], hi: List[int], base: int, cls: Callable[[int, int], str]) -> str:
    """A pattern for the fixed-width numbers lo..hi given as digit lists in ``base``."""
    if not lo:
        return ""
    if lo[0] == hi[0]:
        return cls(lo[0], lo[0]) + _fixed(lo[1:], hi[1:], base, cls)
    n = len(lo) - 1
    low, high = [0] * n, [base - 1] * n
    parts = []
    start, end = lo[0], hi[0]
    if lo[1:] != low:
        parts.append(cls(lo[0], lo[0]) + _fixed(lo[1:], high, base, cls))
        start += 1
    tail = None
    if hi[1:] != high:
        tail = cls(hi[0], hi[0]) + _fixed(low, hi[1:], base, cls)
        end -= 1
    if start <= end:
        parts.append(cls(start, end) + ("%s{%d}" % (cls(0, base - 1), n) if n else ""))
    if tail:
        parts.append(tail)
    return parts[0] if len(parts) == 1 else "(?:" + "|".join(parts) + ")"


def _digits(v: int, base: int, width: int) -> List[int]:
    out = []
    for _ in range(width):
        out.append(v % base)
        v //= base
    return out[::-1]


def decimal_range(lo: int, hi: int) -> bytes:
    """A pattern matching the decimal numbers lo..hi as the kernel prints them (no leading
    zeros), or one that never matches when the range is empty."""
    if hi < lo:
        return rb"(?!)"
    parts = []
    for width in range(len(str(lo)), len(str(hi)) + 1):
        a, b = max(lo, 10 ** (width - 1) if width > 1 else 0), min(hi, 10 ** width - 1)
        if a <= b:
            parts.append(_fixed(_digits(a, 10, width), _digits(b, 10, width), 10,
                                lambda x, y: str(x) if x == y else "[%d-%d]" % (x, y)))
    return ("(?:" + "|".join(parts) + ")").encode("ascii")


def _byte_class(x: int, y: int) -> str:
    if x == 0 and y == 255:
        return "."
    return "\\x%02x" % x if x == y else "[\\x%02x-\\x%02x]" % (x, y)


def be32_range(lo: int, hi: int) -> bytes:
    """A pattern (for re.S) matching the big-endian u32 values lo..hi: ctnetlink's CTA_TIMEOUT."""
    if hi < lo:
        return rb"(?!)"
    hi = min(hi, 0xFFFFFFFF)
    return ("(?:%s)" % _fixed(_digits(lo, 256, 4), _digits(hi, 256, 4), 256, _byte_class)).encode("ascii")


def add_idle(idle: Dict[bytes, List[int]], key: bytes, n: int, remaining: int) -> None:
    """Count ``n`` idle entries of ``key`` and keep the smallest remaining (the longest idle)."""
    row = idle.get(key)
    if row is None:
        idle[key] = [n, remaining]
    else:
        row[0] += n
        if remaining < row[1]:
            row[1] = remaining
