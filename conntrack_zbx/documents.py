"""The answers of the agent commands: which source serves, the snapshot cache, the JSON written.

``cli.py`` parses a command line and reports failures; everything between a parsed
``stats``/``talkers``/``discovery`` and the text on stdout happens here:

- ``stats``: the counters (``sources.proc``), the per-CPU stat table from /proc or, on kernels
  without conntrack procfs, from ctnetlink, and what the next boot would set (``boot``).
- ``talkers``/``discovery``: one pass over the table (``sources.netlink``, else
  ``sources.text`` over /proc or a ``--file``), ranked (``talkers``), rendered once into both
  answers (the talkers document and its LLD rows), and kept in the snapshot cache (``cache``)
  so concurrent and repeated calls share one read.

Answers are returned as written JSON text (``Written``): a cached answer is served as it was
written, with only the call's own fields (``cached``, ``age``, ``cache_error``) added, so a cached
call never imports ``json`` or ranks anything.
"""

import os
import sys

from conntrack_zbx.errors import CacheRefused, ConntrackError, LockTimeout, NotAvailable, NotPermitted, Refused

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs every agent call ~3 ms
    from typing import Any, Dict, Optional, Tuple

    from conntrack_zbx.talkers import Tally


EXIT_MARGIN = 0.1  # seconds: ranking, writing and the interpreter's exit after the read


def process_age() -> float:
    """Seconds since this process started (the interpreter's start-up and imports, which the
    agent's Timeout counts too): /proc/self/stat's start time against /proc/uptime, rounded up to
    the clock tick; 0 where they cannot be read. Measured: 40-100 ms under a venv's site
    imports, more on a loaded host, which a fixed margin did not always cover."""
    import os

    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        with open("/proc/uptime", "rb") as f:
            uptime = float(f.read().split()[0])
        tick = os.sysconf("SC_CLK_TCK")
        started = int(stat[stat.rindex(b")") + 2:].split()[19]) / tick  # field 22, after the comm
        return min(max(uptime - started + 1.0 / tick, 0.0), 1.0)
    except (OSError, ValueError, IndexError):
        return 0.0
OWN_READ_RESERVE = 0.5  # seconds a call that waited for the cache lock in vain keeps for its own read


class Written(str):
    """A JSON document already written out: ``cli`` emits it as it is."""


# -- stats --------------------------------------------------------------------------------------
def stats(args: "Any") -> "Dict[str, Any]":
    from conntrack_zbx.sources.proc import ProcRoot

    root = ProcRoot(args.proc_root)
    count, maximum, buckets = root.count(), root.max(), root.buckets()
    doc = {
        "count": count,
        "max": maximum,
        "buckets": buckets,
        "hashsize": root.hashsize(),  # 0600 root: null for the agent user (== buckets)
        "usage_pct": round(100.0 * count / maximum, 2) if maximum else None,
        "free": maximum - count if maximum else None,
        "stat": None,
        # The namespace's timeouts: ESTABLISHED still at the 5-day default on a filling table
        # is what lets leaked connections (never closed) hold it (docs/runbook.md#idle).
        "timeouts": root.timeouts(),
    }  # type: Dict[str, Any]
    doc.update(_stat_counters(root, args))
    doc.update(_boot(root, maximum, buckets, args.etc_root))
    return doc


def _stat_counters(root: "Any", args: "Any") -> "Dict[str, Any]":
    """The per-CPU counters summed, from /proc/net/stat or (kernels without
    CONFIG_NF_CONNTRACK_PROCFS) ctnetlink; when neither works, ``stat`` is null and
    ``stat_error`` says why, while the table counters above still hold."""
    problem = None
    if args.source != "netlink":
        try:
            return {"stat": root.stat().counters, "stat_source": "proc"}
        except NotAvailable as e:
            problem = str(e)
    # Only for the live kernel: never mixed into a fixture tree.
    if args.source == "netlink" or (args.source == "auto" and args.proc_root == "/"):
        from conntrack_zbx.sources import netlink

        try:
            return {"stat": netlink.stats_cpu(), "stat_source": "netlink"}
        except ConntrackError as e:
            problem = "%s%s" % (problem + "; " if problem else "", e)
    return {"stat": None, "stat_error": problem}


def _boot(root: "Any", maximum: int, buckets: int, etc_root: str) -> "Dict[str, Any]":
    """What a reboot would set, and where it differs from what runs (the fix that does not stick)."""
    from conntrack_zbx import boot

    b = boot.read_boot(etc_root)
    release = root.osrelease()
    version = boot.kernel_version(release) if release else None
    problems = boot.drift(maximum, buckets, b, root.memtotal_kib(), version) if version else []
    return {
        "kernel": release,
        "recommended_buckets": boot.recommended_buckets(maximum, version) if version else None,
        "boot": {"max": b.max, "max_source": b.max_source, "hashsize": b.hashsize,
                 "hashsize_source": b.hashsize_source, "module_autoload": b.module_autoload},
        "drift": "; ".join(problems),
    }


# -- talkers / discovery ------------------------------------------------------------------------
def key_parameters(args: "Any") -> "Dict[str, int]":
    """The validated key parameters: from the options, or (the root side of the sudo line) from
    stdin, where the fixed line allows no option at all."""
    from conntrack_zbx import options, params

    own = options.params_of(args.command)
    if args.params_stdin:
        given = options.not_on_fixed_line(args, ("params_stdin",))
        if given or any(getattr(args, p.name) for p in own):
            raise Refused("--params-stdin takes every parameter from stdin, no options")
        return params.from_wire(sys.stdin.buffer.read(4097), args.command)
    return params.check_all({p.name: getattr(args, p.name) for p in own}, args.command)


# What the agent and its start-up need out of the Zabbix Timeout: the interpreter's start, sudo,
# and the agent reading the answer (the default 3 s Timeout leaves a 2.5 s budget).
TIMEOUT_RESERVE = 0.5
DEFAULT_TIMEOUT = 3


def budget_of(args: "Any", p: "Dict[str, int]") -> float:
    """The time this call may take: ``--budget`` when given (a person at a terminal, tests),
    else the key's ``timeout`` parameter (the Zabbix Timeout it runs under) less TIMEOUT_RESERVE,
    so an admin who raises the Timeout for a big table gets a complete answer, not the default's."""
    if args.budget is not None:
        return args.budget
    return p.get("timeout", DEFAULT_TIMEOUT) - TIMEOUT_RESERVE


def talkers(args: "Any") -> "Written":
    return _answer(args, "talkers")


def discovery(args: "Any") -> "Written":
    """The same LLD rows as the talkers document's ``discovery``, standalone, for setups that
    poll discovery as its own item."""
    return _answer(args, "discovery")


def _answer(args: "Any", command: str) -> "Written":
    """The answer of ``command``, through the snapshot cache for the live table.

    A fresh enough cached answer for these parameters is served as it was written. Else, under
    the cache lock (so concurrent calls make one table read, the others wait and take its
    answer), one table read refreshes both answers. A cache that fails its safety checks is not
    used, and the talkers answer says why in ``cache_error``.
    """
    import time

    # One time budget for waiting on another call's read, our own read, ranking and writing:
    # together they must end inside the agent's Timeout, counted from the process's start.
    start = time.monotonic() - process_age()
    p = key_parameters(args)
    deadline = start + budget_of(args, p) - EXIT_MARGIN
    if args.file:
        if p["netns"]:
            raise Refused("--netns reads a live table; --file is a saved snapshot: give one of them")
        written = _fresh(args, p, deadline, _live_max(args, required=False))
        return _finish(written, command, cached=False, age=0.0)
    if p["netns"]:  # another namespace's table: step in for the whole answer (read, cache key)
        from conntrack_zbx.sources.netns import entered, resolve

        with entered(resolve(str(p["netns"]), args.proc_root).path):
            return _live_answer(args, p, command, deadline)
    return _live_answer(args, p, command, deadline)


def _live_answer(args: "Any", p: "Dict[str, int]", command: str, deadline: float) -> "Written":
    from conntrack_zbx import cache as cachemod

    problem = None
    try:
        with cachemod.Cache(args.cache_dir or cachemod.DEFAULT_DIR) as c:
            return _through_cache(c, args, p, command, deadline)
    except (CacheRefused, LockTimeout) as e:
        problem = "cache not used: %s" % e
    written = _fresh(args, p, deadline, _live_max(args, required=True))
    return _finish(written, command, cached=False, age=0.0, cache_error=problem)


def _cache_names(p: "Dict[str, int]") -> "Dict[str, str]":
    suffix = "-%d-%d-%d-%d%s.json" % (p["prefix4"], p["prefix6"], p["top"], p["idle_min"],
                                   "-netns%d" % p["netns"] if p.get("netns") else "")
    return {"talkers": "talkers" + suffix, "discovery": "discovery" + suffix}


def _through_cache(c: "Any", args: "Any", p: "Dict[str, int]", command: str, deadline: float) -> "Written":
    from conntrack_zbx.sources.netns import current_netns

    names = _cache_names(p)
    # Same answer only for the same table: network namespace (one cache serves every netns of
    # the host's mount namespace), root directory and source choice.
    key = "netns=%s proc_root=%s source=%s" % (current_netns(), os.path.abspath(args.proc_root), args.source)
    max_age = p["max_age"]
    hit = c.read(names[command], max_age, key) if max_age > 0 else None
    if hit is not None:
        return _finish(hit[0], command, cached=True, age=round(hit[1], 3))
    # Wait for another call's read as long as leaves time for a short read of our own: under
    # load (many checks at once on few CPUs) the reader is slow, and a second read only adds load.
    import time

    with c.lock(timeout=max(budget_of(args, p) / 2, deadline - time.monotonic() - OWN_READ_RESERVE)):
        hit = c.read(names[command], max_age, key) if max_age > 0 else None
        if hit is not None:  # another call read the table while we waited
            return _finish(hit[0], command, cached=True, age=round(hit[1], 3))
        written = _fresh(args, p, deadline, _live_max(args, required=True))
        try:
            for name, text in zip(("talkers", "discovery"), written):
                c.write(names[name], key, text)
        except OSError as e:  # the answer stands; the next call reads afresh
            return _finish(written, command, cache_error="cache not written: %s" % (e.strerror or e),
                           cached=False, age=0.0)
        return _finish(written, command, cached=False, age=0.0)


def _finish(written: "Any", command: str, **fields: "Any") -> "Written":
    """A talkers answer gets the call's own fields; discovery rows are served as they are."""
    from conntrack_zbx.jsonout import with_fields

    if isinstance(written, tuple):
        written = written[0] if command == "talkers" else written[1]
    if command == "discovery":
        return Written(written)
    return Written(with_fields(written, fields))


def _fresh(args: "Any", p: "Dict[str, int]", deadline: float, maximum: "Optional[int]") -> "Tuple[str, str]":
    """Read the table once and write both answers: (talkers document, discovery rows)."""
    from conntrack_zbx.jsonout import dumps

    rule, why = idle_rule(args, p["idle_min"])
    t, source, note = read_table(args, deadline, rule)
    doc = render(t, source, note, maximum, p)
    if why:
        doc["idle_note"] = why
    return dumps(doc), dumps(doc["discovery"])


def idle_rule(args: "Any", idle_min: int) -> "Tuple[Optional[Any], Optional[str]]":
    """How idle time is judged for this read -> (IdleRule or None, why not). The live table's
    timeouts come from its namespace's sysctls (read after any --netns step); a snapshot's from
    ``--timeout-established``, since the host it came from is not this one."""
    from conntrack_zbx.parse.idle import IdleRule
    from conntrack_zbx.sources.proc import ProcRoot

    if args.file:
        given = args.timeout_established
        if given is None:
            return None, ("idle times unknown: a snapshot's timeouts are its host's; give "
                          "--timeout-established (its nf_conntrack_tcp_timeout_established)")
        if not given.isdigit() or not 0 < int(given) <= 1 << 31:
            raise Refused("--timeout-established takes whole seconds, got %r" % given[:32])
        return _knowable(IdleRule(int(given), 300, idle_min))  # the kernel's default caps
    if args.timeout_established is not None:
        raise Refused("--timeout-established is for --file; the live table's timeout is read from its sysctl")
    t = ProcRoot(args.proc_root).timeouts()
    if t["tcp_established"] is None:
        return None, ("idle times unknown: nf_conntrack_tcp_timeout_established could not be read "
                      "below %s" % args.proc_root)
    caps = [c for c in (t["tcp_max_retrans"], t["tcp_unacknowledged"]) if c is not None]
    return _knowable(IdleRule(t["tcp_established"], max(caps) if caps else 300, idle_min))


def _knowable(rule: "Any") -> "Tuple[Optional[Any], Optional[str]]":
    """A rule under which no remaining value can say "idle longer than idle_min" (the timeout
    minus idle_min is not above the retransmission caps) gives unknown, never a count of 0."""
    if rule.high < rule.low:
        return None, ("idle times unknown: an entry idle over %d s has less than %d s left, which the "
                      "retransmission caps (%d s) also give; lower idle_min or raise "
                      "nf_conntrack_tcp_timeout_established" % (rule.idle_min, rule.established - rule.idle_min,
                                                                 rule.cap))
    return rule, None


def read_table(args: "Any", deadline: float, rule: "Optional[Any]" = None) -> "Tuple[Tally, str, Optional[str]]":
    """One pass over the live table (or --file) until ``deadline`` (time.monotonic())
    -> (Tally, source served, note on fallback)."""
    from conntrack_zbx.sources.proc import ProcRoot, open_snapshot
    from conntrack_zbx.sources.text import tally_sources

    if args.file:
        from conntrack_zbx.talkers import not_a_table

        with open_snapshot(args.file) as f:
            t = tally_sources(f, deadline, rule)
        not_a_table(t.entries, t.skipped, args.file)
        return t, "file", None
    root = ProcRoot(args.proc_root)
    note = None
    # A fixture tree (--proc-root) is text: netlink would read the live kernel instead.
    if args.source == "netlink" or (args.source == "auto" and args.proc_root == "/"):
        try:
            return _read_netlink(deadline, rule), "netlink", None
        except (NotPermitted, NotAvailable) as e:
            if args.source == "netlink":
                raise
            note = "netlink not used: %s" % e
    with root.open_table() as f:
        return tally_sources(f, deadline, rule), "proc", note


def _read_netlink(deadline: float, rule: "Optional[Any]") -> "Tally":
    from conntrack_zbx.sources import netlink
    from conntrack_zbx.talkers import Tally

    d = netlink.dump(deadline, rule)
    return Tally(d.entries, d.skipped, d.counts, d.truncated, d.kinds, d.idle, rule)


def render(t: "Tally", source: str, note: "Optional[str]", maximum: "Optional[int]",
           p: "Dict[str, int]") -> "Dict[str, Any]":
    """The talkers document of one pass: top sources and networks, and their LLD rows."""
    from conntrack_zbx.lld import discovery_rows
    from conntrack_zbx.talkers import family_of, pct, rank_talkers

    top = p["top"]
    ranked, by_net = rank_talkers(t, top, p["prefix4"], p["prefix6"])
    sources, networks = ranked.groups, by_net.groups
    rule = t.rule
    est = rule.established if rule is not None else None

    def idle_max(g: "Any") -> "Optional[int]":
        return rule.idle_of(g.idle_remaining) if rule is not None and g.idle_remaining is not None else None

    doc = {
        "source": source,
        "entries": t.entries,
        "skipped": t.skipped,
        "max": maximum,
        "truncated": t.truncated,
        "prefix4": p["prefix4"],
        "prefix6": p["prefix6"],
        "idle_min": p["idle_min"],
        "timeout_established": est,
        "distinct_sources": ranked.distinct,
        "sources": [
            {"address": g.key, "family": family_of(g.key), "count": g.count,
             "pct_of_max": pct(g.count, maximum), "established": g.established,
             "idle": g.idle, "idle_max": idle_max(g), "idle_known": g.idle_known,
             "protocols": g.protocols, "states": g.states}
            for g in sources[:top]
        ],
        "networks": [
            {"network": g.key, "family": family_of(g.key), "count": g.count,
             "pct_of_max": pct(g.count, maximum), "established": g.established,
             "idle": g.idle, "idle_max": idle_max(g), "idle_known": g.idle_known,
             "sources": g.members, "protocols": g.protocols, "states": g.states}
            for g in networks[:top]
        ],
        # The template's talkers discovery is a dependent LLD rule on this document: $.discovery
        "discovery": discovery_rows(networks, sources, top),
    }  # type: Dict[str, Any]
    if note:
        doc["source_note"] = note
    if p.get("netns"):
        doc["netns"] = p["netns"]
    return doc


def _live_max(args: "Any", required: bool) -> "Optional[int]":
    from conntrack_zbx.sources.proc import ProcRoot

    root = ProcRoot(args.proc_root)
    if required:
        return root.max()
    try:
        return root.max()
    except ConntrackError:
        return None



# -- namespaces -----------------------------------------------------------------------------------
def namespaces(args: "Any") -> "Dict[str, Any]":
    """Every network namespace's own count against the one global limit, its drops, and the
    host-wide sum against the one shared hash table (docs/namespaces.md).

    Each namespace costs one small file read (``/proc/PID/net/stat/nf_conntrack`` of a process
    inside; its ``entries`` column is that namespace's count) or, for a namespace held only by a
    bind mount, a setns() there and back. Namespaces whose table is empty and never dropped are
    counted but not listed. The budget bounds the whole pass; what was not reached is reported.
    """
    import time

    from conntrack_zbx.sources import netns
    from conntrack_zbx.sources.proc import ProcRoot

    start = time.monotonic()
    p = key_parameters(args)
    deadline = start + budget_of(args, p)
    root = ProcRoot(args.proc_root)
    maximum, buckets = root.max(), root.buckets()
    found, own = netns.find(args.proc_root)
    rows, seen, total, truncated = [], 0, 0, False
    for f in sorted(found.values(), key=lambda f: (f.inode != own, f.inode)):  # ours first
        if time.monotonic() > deadline:
            truncated = True
            break
        row = _namespace_row(f, own, maximum, args.proc_root)
        if row is None:
            continue  # gone meanwhile
        seen += 1
        total += row["count"]
        if row["count"] or row["drop"] or row["insert_failed"] or row["early_drop"] or row["host"]:
            rows.append(row)
    rows.sort(key=lambda r: (-r["count"], r["inode"]))
    top = rows[:p["top"]]
    for row in top:
        _name(row, found[row["inode"]], args.proc_root)
    from conntrack_zbx.talkers import pct

    return {
        "max": maximum,
        "buckets": buckets,
        "sum": total,
        "sum_pct_of_max": pct(total, maximum),
        "hash_load": round(total / buckets, 4) if buckets else None,
        "namespaces_seen": seen,
        "namespaces_in_use": len(rows),
        "truncated": truncated,
        "own_inode": own,
        "namespaces": top,
        # The template's namespaces discovery is a dependent LLD rule on this document: $.discovery
        "discovery": [{"{#CT.NS.INODE}": str(r["inode"]), "{#CT.NS.NAME}": r["name"], "{#CT.NS.KIND}": r["kind"],
                       "{#CT.NS.PATH}": "$.namespaces[?(@.inode==%d)]" % r["inode"]} for r in top],
    }


def _namespace_row(f: "Any", own: int, maximum: int, proc_root: str) -> "Optional[Dict[str, Any]]":
    from conntrack_zbx.parse.stat import parse_stat
    from conntrack_zbx.sources import netns
    from conntrack_zbx.talkers import pct

    try:
        st = parse_stat(netns.stat_text(f, proc_root))
    except (OSError, ConntrackError):
        return None
    count = st.entries or 0
    c = st.counters
    return {"inode": f.inode, "host": f.inode == own, "pid": f.pid, "count": count,
            "pct_of_max": pct(count, maximum), "drop": c.get("drop", 0),
            "insert_failed": c.get("insert_failed", 0), "early_drop": c.get("early_drop", 0)}


def _name(row: "Dict[str, Any]", f: "Any", proc_root: str) -> None:
    """A name on-call can act on: the pod or container, the ip netns name, else the process."""
    from conntrack_zbx.sources import netns

    owner = netns.owner_of(f.pid, proc_root) if f.pid is not None else {"comm": None, "container": None, "pod": None}
    process = "%s[%d]" % (owner["comm"], f.pid) if owner["comm"] else None
    row.update(comm=owner["comm"], container=owner["container"], pod=owner["pod"], netns_names=list(f.names))
    if row["host"]:
        kind, name = "host", "host (this agent's namespace)"
    elif owner["pod"]:
        kind, name = "pod", "pod %s" % owner["pod"]
    elif owner["container"]:
        kind, name = "container", "container %s" % owner["container"]
    elif f.names:
        kind, name = "netns", "netns %s" % f.names[0]
    else:
        kind, name = "process", "process %s" % (process or "pid %s" % f.pid)
    if process and kind in ("pod", "container", "netns"):
        name += " (%s)" % process
    row.update(kind=kind, name=name)
