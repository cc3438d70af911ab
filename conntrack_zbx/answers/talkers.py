"""``talkers`` and ``discovery``: one pass over the table, ranked, written once into both answers.

The pass (``sources.table.read``: ctnetlink, else /proc, or a ``--file``) is counted by the
counting engine (``count``), ranked (``rank``) and rendered here into the talkers document and
its LLD rows; the snapshot cache (``cache.serve``) lets concurrent and repeated calls share one
read. Everything works to one deadline inside the agent's Timeout (``budget``).
"""

from conntrack_zbx.errors import Refused

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs every agent call ~3 ms
    from typing import Any, Dict, List, Optional, Tuple

    from conntrack_zbx.cache import Wanted
    from conntrack_zbx.count import Tally
    from conntrack_zbx.jsonout import Written
    from conntrack_zbx.options import TableArgs, TalkersArgs
    from conntrack_zbx.rank import Group
    from conntrack_zbx.sources.table import Where


def run(args: "TalkersArgs") -> "Written":
    return answer(args, "talkers")


def discovery(args: "TableArgs") -> "Written":
    """The same LLD rows as the talkers document's ``discovery``, standalone, for setups that
    poll discovery as its own item."""
    return answer(args, "discovery")


def answer(args: "TableArgs", command: str) -> "Written":
    """The answer of ``command``, through the snapshot cache for the live table."""
    import os

    from conntrack_zbx import cache
    from conntrack_zbx.budget import EXIT_MARGIN, budget_of, started
    from conntrack_zbx.sources.table import Where, live_max

    # One time budget for waiting on another call's read, our own read, ranking and writing:
    # together they must end inside the agent's Timeout, counted from the process's start.
    start = started()
    p = args.key_parameters()
    budget = budget_of(args.budget, p)
    deadline = start + budget - EXIT_MARGIN
    where = Where(args.proc_root, args.source, args.file)

    def fresh() -> "Tuple[str, str]":
        return _fresh(where, args.timeout_established, p, deadline, live_max(args.proc_root))

    if args.file:
        if p["netns"]:
            raise Refused("--netns reads a live table; --file is a saved snapshot: give one of them")
        # a snapshot's shares are of its own host's limit, never this machine's
        wanted = _wanted(command)
        written = _fresh(where, args.timeout_established, p, deadline, _snapshot_max(args.max))
        return cache.stamp(written[wanted.which], wanted.stamped, cached=False, age=0.0)
    if args.max is not None:
        raise Refused("--max is for --file; the live table's limit is read from its sysctl")
    name = "%d-%d-%d-%d%s" % (p["prefix4"], p["prefix6"], p["top"], p["idle_min"],
                              "-netns%d" % p["netns"] if p["netns"] else "")
    from conntrack_zbx.sources.netns import Entered, current_netns, resolve

    def served() -> "Written":
        # Same answer only for the same table: network namespace (one cache serves every netns of
        # the host's mount namespace), root directory and source choice.
        key = "netns=%s proc_root=%s source=%s" % (current_netns(), os.path.abspath(args.proc_root), args.source)
        return cache.serve(args.cache_dir, name, key, p["max_age"], _wanted(command), deadline, budget / 2, fresh)

    if p["netns"]:  # another namespace's table: step in for the whole answer (read, cache key)
        with Entered(resolve(str(p["netns"]), args.proc_root).path):
            return served()
    return served()


ANSWERS = ("talkers", "discovery")  # what one table read writes, in _fresh's order


def _wanted(command: str) -> "Wanted":
    """The talkers document carries the call's own fields (cached, age); discovery rows do not."""
    from conntrack_zbx.cache import Wanted

    return Wanted(answers=ANSWERS, which=ANSWERS.index(command), stamped=command == "talkers")


def _snapshot_max(given: "Optional[str]") -> "Optional[int]":
    if given is None:
        return None
    if not given.isdigit() or not 0 < int(given) <= 1 << 31:
        raise Refused("--max takes the snapshot host's nf_conntrack_max, a whole number, got %r" % given[:32])
    return int(given)


def _fresh(where: "Where", timeout_established: "Optional[str]", p: "Dict[str, int]", deadline: float,
           maximum: "Optional[int]") -> "Tuple[str, str]":
    """Read the table once and write both answers: (talkers document, discovery rows)."""
    from conntrack_zbx.jsonout import dumps
    from conntrack_zbx.sources.table import idle_rule, read

    rule, why = idle_rule(where, p["idle_min"], timeout_established)
    t, source, note = read(where, deadline, rule)
    doc = render(t, source, note, maximum, p)
    if why:
        doc["idle_note"] = why
    if where.file is None and where.proc_root == "/":  # this host's own firewall, for the template
        from conntrack_zbx.lifeline.state import state

        doc["lifeline"] = state(deadline)
    return dumps(doc), dumps(doc["discovery"])


def render(t: "Tally", source: str, note: "Optional[str]", maximum: "Optional[int]",
           p: "Dict[str, int]") -> "Dict[str, Any]":
    """The talkers document of one pass: top sources and networks, and their LLD rows."""
    from conntrack_zbx.rank import family_of, pct, rank_talkers

    top = p["top"]
    ranked, by_net = rank_talkers(t, top, p["prefix4"], p["prefix6"])
    sources, networks = ranked.groups[:top], by_net.groups[:top]
    rule = t.rule

    def row(g: "Group") -> "Dict[str, Any]":
        idle_max = rule.idle_of(g.idle_remaining) if rule is not None and g.idle_remaining is not None else None
        return {"family": family_of(g.key), "count": g.count, "pct_of_max": pct(g.count, maximum),
                "established": g.established, "idle": g.idle, "idle_max": idle_max, "idle_known": g.idle_known}

    doc = {
        "source": source,
        "entries": t.entries,
        "skipped": t.skipped,
        "max": maximum,
        "truncated": t.truncated,
        "prefix4": p["prefix4"],
        "prefix6": p["prefix6"],
        "idle_min": p["idle_min"],
        "timeout_established": rule.established if rule is not None else None,
        "distinct_sources": ranked.distinct,
        "sources": [dict({"address": g.key}, **row(g), protocols=g.protocols, states=g.states) for g in sources],
        "networks": [dict({"network": g.key}, **row(g), sources=g.members, protocols=g.protocols, states=g.states)
                     for g in networks],
        # The template's talkers discovery is a dependent LLD rule on this document: $.discovery
        "discovery": discovery_rows(networks, sources),
    }  # type: Dict[str, Any]
    if note:
        doc["source_note"] = note
    if p.get("netns"):
        doc["netns"] = p["netns"]
    return doc


# The two kinds of LLD row: (the {#CT.KIND} value, the document's array that holds its object).
ROW_KINDS = (("network", "networks"), ("source", "sources"))


def discovery_rows(networks: "List[Group]", sources: "List[Group]") -> "List[Dict[str, str]]":
    """Zabbix LLD rows for the top talkers: a bare JSON array (the 4.2+ LLD format), ``[]`` when
    there is nothing, never ``null``. Each row carries the JSONPath that selects its object in the
    talkers document, so item prototypes need no per-kind copies."""
    from conntrack_zbx.rank import family_of

    rows = []
    for (kind, array), groups in zip(ROW_KINDS, (networks, sources)):
        field = "network" if kind == "network" else "address"
        for g in groups:
            rows.append({
                "{#CT.KIND}": kind,
                "{#CT.TALKER}": g.key,
                "{#CT.FAMILY}": family_of(g.key),
                "{#CT.PATH}": "$.%s[?(@.%s=='%s')]" % (array, field, g.key),
            })
    return rows
