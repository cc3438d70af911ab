"""``conntrack-zbx top``: the on-call terminal view of who holds the table.

It replaces the incident's ``awk '{print $7}' | sort | uniq -c | sort -nr | head``, which took the
seventh field (a destination on UDP and ICMP lines) and left IPv6 unnormalised: entries are
parsed by ``key=value`` and ranked by source (rolled up into networks), destination, port,
state or protocol.
"""

from conntrack_zbx.errors import ConntrackError, Refused

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, List, Optional

    from conntrack_zbx.count.idle import IdleRule
    from conntrack_zbx.options import TopArgs
    from conntrack_zbx.rank import Group
    from conntrack_zbx.sources.proc import ProcRoot

SECTION_TITLES = {"src": "sources", "dst": "destinations", "dport": "protocol/port",
                  "state": "states", "proto": "protocols"}


def run(args: "TopArgs") -> str:
    from conntrack_zbx import count
    from conntrack_zbx.rank import address_text, network_keys, pct, rank, rank_talkers
    from conntrack_zbx.sources.proc import ProcRoot, not_a_table, open_snapshot
    from conntrack_zbx.sources.table import Where, idle_rule

    root = ProcRoot(args.proc_root)
    f: "Optional[IO[bytes]]" = None
    if args.file and args.netns:
        raise Refused("--netns reads a live table; --file is a saved snapshot: give one of them")
    if args.file:
        f, what = open_snapshot(args.file), args.file
    elif args.netns:  # a container's or pod's own table: opened from inside its namespace
        from conntrack_zbx.sources.netns import Entered, resolve

        found = resolve(args.netns, args.proc_root)
        with Entered(found.path):
            f = root.open_table()
        what = "network namespace %s (inode %d)" % (args.netns, found.inode)
    else:
        f, what = root.open_table(), root.path("proc/net/nf_conntrack")
    rule: "Optional[IdleRule]" = None
    why: "Optional[str]" = None
    if args.by in ("src", "idle"):
        rule, why = idle_rule(Where(args.proc_root, "proc", args.file), args.idle_min, args.timeout_established)
    with f:
        t = count.tally(f, None, rule, "src" if args.by == "idle" else args.by)
    if args.file:
        not_a_table(t.entries, t.skipped, args.file)
    # A snapshot's shares are of its own host's limit: this machine's would mislead.
    maximum = args.max if args.max is not None or args.file else _max_or_none(root)
    share = " (%s%% of nf_conntrack_max %d)" % (pct(t.entries, maximum), maximum) if maximum else ""
    out = ["%d entries%s in %s; %d lines skipped\n" % (t.entries, share, what, t.skipped)]
    if args.file and maximum is None:
        out.append("shares of the limit: give --max (the nf_conntrack_max of the host the snapshot came from)\n")
    sections = []
    if args.by in ("src", "idle"):
        src, net = rank_talkers(t, args.n, args.prefix4, args.prefix6, by_idle=args.by == "idle")
        if t.rule is not None:
            out.append("idle = ESTABLISHED TCP entries silent for over %ds (timeout_established %ds)\n"
                       % (t.rule.idle_min, t.rule.established))
        else:
            out.append("%s\n" % why)
        sections.append(("networks (/%d IPv4, /%d IPv6)" % (args.prefix4, args.prefix6), net.groups, True, t.rule))
        sections.append(("sources", src.groups, False, t.rule))
    else:
        if args.by == "dst":
            sections.append(("networks (/%d IPv4, /%d IPv6)" % (args.prefix4, args.prefix6),
                             rank(t.counts, args.n, *network_keys(args.prefix4, args.prefix6)).groups, True, None))
        sections.append((SECTION_TITLES[args.by],
                         rank(t.counts, args.n, text=address_text if args.by == "dst" else None).groups,
                         False, None))
    order = "idle entries" if args.by == "idle" else "entries held"
    for title, groups, is_net, rule in sections:
        out.append("\nTop %s by %s:\n" % (title, order))
        out.extend(_table(groups[:args.n], maximum, is_net, rule))
    return "".join(out)


def _table(groups: "List[Group]", maximum: "Optional[int]", is_net: bool, rule: "Optional[IdleRule]") -> "List[str]":
    from conntrack_zbx.rank import pct

    if not groups:
        return ["  (no entries)\n"]
    width = max(len(g.key) for g in groups)
    idle = any(g.idle is not None for g in groups)
    rows = ["  %8s %7s%s  %-*s  %s\n" % ("ENTRIES", "%MAX", "  %7s %9s" % ("IDLE", "IDLE MAX") if idle else "",
                                        width, "KEY", "STATE MIX")]
    for g in groups:
        p = pct(g.count, maximum)
        mix = ", ".join("%s %d%%" % (s, round(100.0 * n / g.count)) for s, n in list(g.states.items())[:3])
        extra = "  [%d source%s]" % (g.members, "" if g.members == 1 else "s") if is_net else ""
        cols = ""
        if idle:
            longest = rule.idle_of(g.idle_remaining) if rule is not None and g.idle_remaining is not None else None
            cols = "  %7s %9s" % ("-" if g.idle is None else g.idle, "-" if longest is None else _duration(longest))
        rows.append("  %8d %7s%s  %-*s  %s%s\n" % (g.count, "-" if p is None else "%.2f" % p, cols, width, g.key,
                                                 mix, extra))
    return rows


def _duration(seconds: int) -> str:
    """3 a.m. reading: 1d04h, 3h12m, 14m05s."""
    d, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, sec = divmod(rest, 60)
    if d:
        return "%dd%02dh" % (d, h)
    if h:
        return "%dh%02dm" % (h, m)
    return "%dm%02ds" % (m, sec)


def _max_or_none(root: "ProcRoot") -> "Optional[int]":
    try:
        return root.max()
    except ConntrackError:
        return None
