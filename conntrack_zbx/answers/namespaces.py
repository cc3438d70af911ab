"""``namespaces``: every network namespace's own table count against the one global limit.

Containers, pods and ``ip netns`` each have a table of their own, all counted against the one
``nf_conntrack_max`` and sharing the one hash table (docs/namespaces.md): a pod can fill the
host's table while the host's own count looks small.
"""

from conntrack_zbx.errors import ConntrackError

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs every agent call ~3 ms
    from typing import Any, Dict, Optional, Union

    from conntrack_zbx.options import NamespacesArgs
    from conntrack_zbx.sources.netns import Found, Runtimes


def run(args: "NamespacesArgs") -> "Union[Dict[str, Any], str]":
    doc = document(args)
    return text(doc) if args.human else doc


def document(args: "NamespacesArgs") -> "Dict[str, Any]":
    """Every network namespace's own count against the one global limit, its drops, and the
    host-wide sum against the one shared hash table (docs/namespaces.md).

    Each namespace costs one small file read (``/proc/PID/net/stat/nf_conntrack`` of a process
    inside; its ``entries`` column is that namespace's count) or, for a namespace held only by a
    bind mount, a setns() there and back. Namespaces whose table is empty and never dropped are
    counted but not listed. The budget bounds the whole pass; what was not reached is reported.
    """
    import time

    from conntrack_zbx.budget import budget_of, started
    from conntrack_zbx.rank import pct
    from conntrack_zbx.sources import netns
    from conntrack_zbx.sources.proc import ProcRoot

    start = started()
    p = args.key_parameters()
    deadline = start + budget_of(args.budget, p)
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
    runtimes = netns.Runtimes(args.proc_root)
    for row in top:
        _name(row, found[row["inode"]], args.proc_root, runtimes)

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


def _namespace_row(f: "Found", own: int, maximum: int, proc_root: str) -> "Optional[Dict[str, Any]]":
    from conntrack_zbx.parse.stat import parse_stat
    from conntrack_zbx.sources import netns
    from conntrack_zbx.rank import pct

    try:
        st = parse_stat(netns.stat_text(f, proc_root))
    except (OSError, ConntrackError):
        return None
    count = st.entries or 0
    c = st.counters
    return {"inode": f.inode, "host": f.inode == own, "pid": f.pid, "count": count,
            "pct_of_max": pct(count, maximum), "drop": c.get("drop", 0),
            "insert_failed": c.get("insert_failed", 0), "early_drop": c.get("early_drop", 0)}


def _name(row: "Dict[str, Any]", f: "Found", proc_root: str, runtimes: "Runtimes") -> None:
    """A name on-call can act on: the pod (namespace/name) or container (its name), the ip netns
    name, else the process; the uid or id stays in the row, and in the name when the runtime
    gave no name."""
    from conntrack_zbx.sources import netns

    if f.pid is not None:
        owner = netns.owner_of(f.pid, proc_root, runtimes)
    else:
        owner = {"comm": None, "container": None, "container_name": None, "pod": None, "pod_name": None}
    process = "%s[%s]" % (owner["comm"], f.pid) if owner["comm"] else None
    row.update(comm=owner["comm"], container=owner["container"], container_name=owner["container_name"],
               pod=owner["pod"], pod_name=owner["pod_name"], netns_names=list(f.names))
    if row["host"]:
        kind, name = "host", "host (this agent's namespace)"
    elif owner["pod"]:
        kind, name = "pod", "pod %s" % (owner["pod_name"] or owner["pod"])
    elif owner["container"]:
        kind, name = "container", "container %s" % (owner["container_name"] or owner["container"])
    elif f.names:
        kind, name = "netns", "netns %s" % f.names[0]
    else:
        kind, name = "process", "process %s" % (process or "pid %s" % f.pid)
    if process and kind in ("pod", "container", "netns"):
        name += " (%s)" % process
    row.update(kind=kind, name=name)


def text(doc: "Dict[str, Any]") -> str:
    """``namespaces --human``: who holds the one global limit, namespace by namespace."""
    out = ["%d entries in %d namespace%s (%s %% of the one nf_conntrack_max %d); %d of them in use%s\n" % (
        doc["sum"], doc["namespaces_seen"], "" if doc["namespaces_seen"] == 1 else "s", doc["sum_pct_of_max"],
        doc["max"], doc["namespaces_in_use"],
        "; stopped early, the rest not read" if doc["truncated"] else "")]
    rows = doc["namespaces"]
    if not rows:
        return "".join(out) + "  (no namespace holds an entry)\n"
    width = max(len(r["name"]) for r in rows)
    out.append("  %8s %7s %8s %8s  %-*s  %s\n" % ("ENTRIES", "%MAX", "DROP", "INS_FAIL", width, "NAMESPACE",
                                                "INODE"))
    for r in rows:
        out.append("  %8d %7s %8d %8d  %-*s  %d\n" % (r["count"], "-" if r["pct_of_max"] is None else
                                                    "%.2f" % r["pct_of_max"], r["drop"], r["insert_failed"],
                                                    width, r["name"], r["inode"]))
    out.append("next: who fills one: sudo conntrack-zbx top --netns INODE\n")
    return "".join(out)
