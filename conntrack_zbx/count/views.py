"""The slow, line-by-line pass: every field of every entry parsed (``lines.parse_line``).

It serves ``top --by dst|dport|state|proto``, which want fields the fast source counter does not
capture, and it is the reference the fast readers are tested against (by source, ``tally_lines``
gives what ``text.count_text`` and the ctnetlink counter give, line for line).
"""

import time
from typing import IO, Any, Callable, Dict, Iterable, Iterator, Optional, Tuple

from conntrack_zbx.count.tally import Tally
from conntrack_zbx.count.idle import IdleRule, add_idle
from conntrack_zbx.count.kinds import Sums, count_kind
from conntrack_zbx.parse.states import KINDS, KNOWN, state_label
from conntrack_zbx.count.lines import AddressCache, Entry, parse_line
from conntrack_zbx.errors import BadLine, Malformed

CHECK_EVERY = 8192  # lines between looks at the clock


def entry_label(e: Entry) -> str:
    """A state for every protocol: the TCP/SCTP/DCCP word, else UNREPLIED/ASSURED/REPLIED."""
    return state_label(e.state, e.unreplied, e.assured)


_KEYS: "Dict[str, Callable[[Entry], Any]]" = {
    "dport": lambda e: "%s/%s" % (e.proto, "-" if e.dport is None else e.dport),
    "state": entry_label,
    "proto": lambda e: "%s/%s" % (e.family, e.proto),
}


def count_view(f: IO[bytes], by: str, deadline: Optional[float] = None) -> Tally:
    """Entries per (key, protocol, state label), the key being the destination (packed), the
    protocol and port, the state or the protocol."""
    return tally_lines(_lines(f), by, deadline)


def _lines(f: IO[bytes]) -> Iterator[bytes]:
    """Stream lines without holding the table; a read error mid-way is reported, not hidden."""
    try:
        yield from f
    except OSError as e:
        raise Malformed("reading the conntrack table failed after a partial read: %s" % e) from None


def tally_lines(lines: Iterable[bytes], by: str = "src", deadline: Optional[float] = None,
                rule: Optional[IdleRule] = None) -> Tally:
    """One pass, line by line. By source it gives what the fast readers give (compact keys, idle
    entries under ``rule``); other views count per (key, protocol, state label)."""
    addresses = AddressCache()
    sums = Sums()
    counts: "Dict[Any, int]" = {}
    entries = skipped = seen = 0
    for line in lines:
        seen += 1
        if deadline is not None and seen % CHECK_EVERY == 0 and time.monotonic() > deadline:
            return _result(by, entries, skipped, counts, sums, rule, True)
        try:
            e = parse_line(line, addresses)
        except BadLine:
            if line.rstrip(b"\n"):  # an empty line is not a bad entry (same rule as count_block)
                skipped += 1
            continue
        if by == "dst" and e.dst is None:
            skipped += 1  # a garbled destination cannot be placed in a by-destination view
            continue
        entries += 1
        label = entry_label(e)
        if by == "src":
            _add_source(sums, addresses.packed(e.src), e, label, rule)
            continue
        key: "Tuple[Any, str, str]" = (addresses.packed(e.dst) if by == "dst" and e.dst else _KEYS[by](e),
                                       e.proto, label)
        counts[key] = counts.get(key, 0) + 1
    return _result(by, entries, skipped, counts, sums, rule, False)


def _add_source(sums: Sums, src: bytes, e: Entry, label: str, rule: Optional[IdleRule]) -> None:
    established = rule is not None and e.proto == "tcp" and label == "ESTABLISHED"
    known = established and rule is not None and rule.is_known(e.timeout)
    count_kind(sums.counts, sums.kinds, src, KNOWN if known else KINDS.index(e.proto, label), 1)
    if established and rule is not None and e.timeout is not None and rule.is_idle(e.timeout):
        add_idle(sums.idle, src, 1, e.timeout)


def _result(by: str, entries: int, skipped: int, counts: Dict[Any, int], sums: Sums, rule: Optional[IdleRule],
            truncated: bool) -> Tally:
    if by == "src":
        return Tally(entries, skipped, dict(sums.counts), truncated, sums.kinds, sums.idle, rule)
    return Tally(entries, skipped, counts, truncated, {}, {}, rule)

