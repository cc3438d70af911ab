"""The per-source sums every reader fills (``Sums``) and the compact-key counting helpers.

The state labels and the (protocol, label) numbering these keys use are ``parse/states.py``.
"""

from collections import Counter
from typing import Any, Dict, List, Tuple

from conntrack_zbx.parse.states import KINDS

def count_kind(counts: Dict[bytes, int], kinds: Dict[bytes, object], src: bytes, kind: int, n: int) -> None:
    """Count ``n`` entries of ``kind`` for ``src``. ``kinds`` holds the one kind of a source
    whose entries are all alike (most of a long tail: a client with one or two connections), and
    a {kind: entries} dict only for a source with several, so per-source memory is two dict slots."""
    c = counts.get(src)
    if c is None:
        counts[src] = n
        kinds[src] = kind
        return
    counts[src] = c + n
    k = kinds[src]
    if k == kind:
        return
    if isinstance(k, dict):
        k[kind] = k.get(kind, 0) + n
    else:
        kinds[src] = {k: c, kind: n}


def kind_counts(kinds: Dict[bytes, object], src: bytes, total: int) -> Dict[int, int]:
    """The {kind: entries} of one source (``total`` entries in all)."""
    k = kinds[src]
    return k if isinstance(k, dict) else {k: total}  # type: ignore[dict-item]


class Sums:
    """What one pass holds per packed source: ``counts`` (entries), ``kinds`` (their protocol
    and label numbers, ``count_kind``) and ``idle`` ([idle ESTABLISHED entries, least remaining
    timeout]). A reader owns one and the labelling steps fill it; nothing else holds it."""

    __slots__ = ("counts", "kinds", "idle")

    def __init__(self) -> None:
        self.counts = {}  # type: Dict[bytes, int]
        self.kinds = {}  # type: Dict[bytes, Any]
        self.idle = {}  # type: Dict[bytes, List[int]]

    def merge(self, counts: Dict[bytes, int], kinds: Dict[bytes, Any], idle: Dict[bytes, List[int]],
              remap: Dict[int, int]) -> None:
        """Add another reader's sums (a forked counter's part). Kinds it numbered itself (a
        state word this process had not seen at the fork) are renumbered by ``remap``."""
        from conntrack_zbx.count.idle import add_idle

        mine, my_kinds = self.counts, self.kinds
        get = mine.get
        for src, n in counts.items():
            k = kinds[src]
            if not remap and k.__class__ is int:  # the common cases inlined: a new source, or one
                c = get(src)                      # whose entries here are all of the same kind
                if c is None:
                    mine[src] = n
                    my_kinds[src] = k
                    continue
                if my_kinds[src] == k:
                    mine[src] = c + n
                    continue
            for kind, m in kind_counts(kinds, src, n).items():
                count_kind(mine, my_kinds, src, remap.get(kind, kind), m)
        for src, (n, rem) in idle.items():
            add_idle(self.idle, src, n, rem)


def expand(counts: Dict[bytes, int], kinds: Dict[bytes, Any]) -> "Counter[Tuple[bytes, str, str]]":
    """A by-source tally's sources as (packed source, protocol, state label) -> entries: the
    plain form, for comparing readers and for views that want every row's mix."""
    out = Counter()  # type: Counter[Tuple[bytes, str, str]]
    names = KINDS.names
    for src, n in counts.items():
        for kind, m in kind_counts(kinds, src, n).items():
            proto, label = names[kind]
            out[(src, proto, label)] += m
    return out
