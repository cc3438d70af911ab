"""``stats``: the table's counters, the kernel's per-CPU counters, and what the next boot sets.

The counters come from /proc (``sources.proc``); the per-CPU stat table from /proc or, on kernels
without conntrack procfs, from ctnetlink; the boot side (``boot``) says where a fix made at run
time would not survive a reboot. Every file read here is world-readable: it runs as the agent user.
"""

from conntrack_zbx.errors import ConntrackError, NotAvailable

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs every agent call ~3 ms
    from typing import Any, Dict, List, Union

    from conntrack_zbx.options import StatsArgs
    from conntrack_zbx.sources.proc import ProcRoot


def run(args: "StatsArgs") -> "Union[Dict[str, Any], str]":
    doc = document(args)
    return text(doc) if args.human else doc


def document(args: "StatsArgs") -> "Dict[str, Any]":
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
    doc.update(_stat_counters(root, args.source, args.proc_root))
    doc.update(_boot(root, maximum, buckets, args.etc_root))
    return doc


def _stat_counters(root: "ProcRoot", source: str, proc_root: str) -> "Dict[str, Any]":
    """The per-CPU counters summed, from /proc/net/stat or (kernels without
    CONFIG_NF_CONNTRACK_PROCFS) ctnetlink; when neither works, ``stat`` is null and
    ``stat_error`` says why, while the table counters above still hold."""
    problem = None
    if source != "netlink":
        try:
            return {"stat": root.stat().counters, "stat_source": "proc"}
        except NotAvailable as e:
            problem = str(e)
    # Only for the live kernel: never mixed into a fixture tree.
    if source == "netlink" or (source == "auto" and proc_root == "/"):
        from conntrack_zbx.sources import netlink

        try:
            return {"stat": netlink.stats_cpu(), "stat_source": "netlink"}
        except ConntrackError as e:
            problem = "%s%s" % (problem + "; " if problem else "", e)
    return {"stat": None, "stat_error": problem}


def _boot(root: "ProcRoot", maximum: int, buckets: int, etc_root: str) -> "Dict[str, Any]":
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


def text(doc: "Dict[str, Any]") -> str:
    """``stats --human``: the runbook's first look, in lines (counters that could not be read say
    so; nothing unknown is shown as 0)."""
    lines = ["table: %d of %s entries%s" % (
        doc["count"], doc["max"] or "unlimited",
        " (%.1f %%), %d free" % (doc["usage_pct"], doc["free"]) if doc["usage_pct"] is not None else "")]
    buckets = doc["buckets"]
    lines.append("hash: %d buckets, %.1f entries per bucket at the limit%s" % (
        buckets, doc["max"] / buckets if buckets else 0,
        " (recommended for this kernel: %d)" % doc["recommended_buckets"]
        if doc["recommended_buckets"] and doc["recommended_buckets"] != buckets else ""))
    stat = doc["stat"]
    if stat is None:
        lines.append("kernel counters: not read: %s" % doc.get("stat_error"))
    else:
        lines.append("kernel counters since boot: " + ", ".join(
            "%s %d" % (k, stat[k]) for k in ("drop", "early_drop", "insert_failed", "invalid") if k in stat))
    est = doc["timeouts"].get("tcp_established")
    lines.append("ESTABLISHED timeout: %s" % ("%d s (%.1f days)" % (est, est / 86400.0) if est is not None
                                              else "not readable"))
    boot = doc["boot"]
    lines.append("next boot: nf_conntrack_max %s, hashsize %s" % (
        "%d (%s)" % (boot["max"], boot["max_source"]) if boot["max"] is not None else "the kernel default",
        "%d (%s)" % (boot["hashsize"], boot["hashsize_source"]) if boot["hashsize"] is not None
        else "the kernel default"))
    if doc["drift"]:
        lines.append("DRIFT: %s" % doc["drift"])
    lines += _next_steps(doc)
    return "\n".join(lines) + "\n"


def _next_steps(doc: "Dict[str, Any]") -> "List[str]":
    steps = []
    if doc["usage_pct"] is not None and doc["usage_pct"] >= 80:
        steps.append("who fills it: sudo conntrack-zbx top (and --by idle for a leak)")
    if doc["stat"] and doc["stat"].get("drop"):
        steps.append("packets were dropped since boot: compare with the drop rate in Zabbix; the fix: "
                     "sudo conntrack-zbx tune --auto")
    if doc["drift"]:
        steps.append("make the running values survive a reboot: sudo conntrack-zbx tune --max N --apply")
    return ["next: %s" % s for s in steps]
