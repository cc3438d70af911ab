"""``conntrack-zbx top``: the on-call terminal view of who holds the table.

It replaces the incident's ``awk '{print $7}' | sort | uniq -c | sort -nr | head``, which took the
seventh field (a destination on UDP and ICMP lines) and left IPv6 unnormalised: entries are
parsed by ``key=value`` and ranked by source (rolled up into networks), destination, port,
state or protocol.
"""

from conntrack_zbx.errors import ConntrackError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, List, Optional

SECTION_TITLES = {"src": "sources", "dst": "destinations", "dport": "protocol/port",
                  "state": "states", "proto": "protocols"}


def top(args: "Any") -> str:
    from conntrack_zbx.sources.proc import ProcRoot, iter_lines, open_snapshot
    from conntrack_zbx.talkers import address_text, network_of, network_text, pct, rank, tally

    root = ProcRoot(args.proc_root)
    if args.file:
        f, what = open_snapshot(args.file), args.file
    elif args.netns:  # a container's or pod's own table: opened from inside its namespace
        from conntrack_zbx.sources.netns import entered, resolve

        found = resolve(args.netns, args.proc_root)
        with entered(found.path):
            f = root.open_table()
        what = "network namespace %s (inode %d)" % (args.netns, found.inode)
    else:
        f, what = root.open_table(), root.path("proc/net/nf_conntrack")
    with f:
        t = tally(iter_lines(f), args.by)
    maximum = args.max if args.max is not None else _max_or_none(root)
    share = " (%s%% of nf_conntrack_max %d)" % (pct(t.entries, maximum), maximum) if maximum else ""
    out = ["%d entries%s in %s; %d lines skipped\n" % (t.entries, share, what, t.skipped)]
    sections = []
    if args.by in ("src", "dst"):
        sections.append(("networks (/%d IPv4, /%d IPv6)" % (args.prefix4, args.prefix6),
                         rank(t.counts, args.n, network_of(args.prefix4, args.prefix6), network_text).groups, True))
    sections.append((SECTION_TITLES[args.by],
                     rank(t.counts, args.n, text=address_text if args.by in ("src", "dst") else None).groups,
                     False))
    for title, groups, is_net in sections:
        out.append("\nTop %s by entries held:\n" % title)
        out.extend(_table(groups[:args.n], maximum, is_net))
    return "".join(out)


def _table(groups: "List[Any]", maximum: "Optional[int]", is_net: bool) -> "List[str]":
    from conntrack_zbx.talkers import pct

    if not groups:
        return ["  (no entries)\n"]
    width = max(len(g.key) for g in groups)
    rows = ["  %8s %7s  %-*s  %s\n" % ("ENTRIES", "%MAX", width, "KEY", "STATE MIX")]
    for g in groups:
        p = pct(g.count, maximum)
        mix = ", ".join("%s %d%%" % (s, round(100.0 * n / g.count)) for s, n in list(g.states.items())[:3])
        extra = "  [%d source%s]" % (g.members, "" if g.members == 1 else "s") if is_net else ""
        rows.append("  %8d %7s  %-*s  %s%s\n" % (g.count, "-" if p is None else "%.2f" % p, width, g.key, mix, extra))
    return rows


def _max_or_none(root: "Any") -> "Optional[int]":
    try:
        return root.max()
    except ConntrackError:
        return None
