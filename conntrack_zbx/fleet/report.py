"""What ``conntrack-zbx fleet`` says: the networks of a host group's nodes, ranked by how many nodes
hold them over the threshold. Pure: the API's items and problems in, small typed rows out.

Each node's template already judges its own table (share, the 0/1 over-the-threshold item, idle
entries); this only puts the nodes side by side, which is what named the incident's cause: the
same range on every mirrorlist node.
"""

import re
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional

from conntrack_zbx.options import IDLE_WARN_PCT as IDLE_WARN  # a node's range is a leak above it
# conntrack.talker.<field>[network,<network>], as the node template's network prototypes are keyed
_KEY = re.compile(r"^conntrack\.talker\.([a-z_]+)\[network,(.+)\]$")


class Node(NamedTuple):
    host: str
    entries: Optional[int]
    share: Optional[float]
    over: bool
    idle: Optional[int]  # idle ESTABLISHED entries (None: cannot be told on that node)
    idle_known: Optional[int]

    @property
    def leak(self) -> bool:
        """Its idle entries hold more than IDLE_WARN % of the node's table, as its leak trigger judges."""
        if self.idle is None or not self.entries or self.share is None:
            return False
        return self.idle / self.entries * self.share > IDLE_WARN

    @property
    def idle_pct(self) -> Optional[float]:
        """Idle entries as a share of those whose idle time is known."""
        if self.idle is None or not self.idle_known:
            return None
        return 100.0 * self.idle / self.idle_known


class Network(NamedTuple):
    network: str
    over: int  # nodes holding it over the threshold
    holding: int  # nodes that have it in their top list at all
    entries: int
    since: Optional[int]  # earliest open problem naming it (clock), if any
    nodes: List[Node]  # over first, then by share


class Fleet(NamedTuple):
    group: str
    size: int  # monitored hosts of the group
    networks: List[Network]
    calls: int  # API calls it took (paged: never one per host and network)


def networks(items: Iterable[Dict[str, Any]], hosts: Dict[str, str], since: Dict[str, int],
             fresh_after: float) -> List[Network]:
    """Rows from item.get's answer (``key_``, ``lastvalue``, ``lastclock``, ``hostid``); ``hosts``
    maps hostid to name; values older than ``fresh_after`` (a clock) are left out: the network has
    left that node's top list, or the node stopped reporting."""
    by_net: Dict[str, Dict[str, Dict[str, str]]] = {}
    for it in items:
        m = _KEY.match(it["key_"])
        if not m or it["hostid"] not in hosts or int(it["lastclock"] or 0) < fresh_after:
            continue
        field, net = m.groups()
        by_net.setdefault(net, {}).setdefault(it["hostid"], {})[field] = it["lastvalue"]
    rows = []
    for net, per_host in by_net.items():
        nodes = [_node(hosts[h], v) for h, v in per_host.items()]
        nodes.sort(key=lambda n: (not n.over, -(n.share or 0.0), n.host))
        rows.append(Network(net, sum(n.over for n in nodes), len(nodes), sum(n.entries or 0 for n in nodes),
                            since.get(net), nodes))
    rows.sort(key=lambda r: (-r.over, -r.entries, r.network))
    return rows


def _node(host: str, v: Dict[str, str]) -> Node:
    def whole(field: str) -> Optional[int]:
        x = v.get(field)
        return int(float(x)) if x not in (None, "") else None

    share = v.get("share")
    return Node(host, whole("count"), float(share) if share not in (None, "") else None, v.get("over") == "1",
                whole("idle"), whole("idle_known"))


def as_json(f: Fleet) -> Dict[str, Any]:
    return {"group": f.group, "nodes": f.size, "api_calls": f.calls, "networks": [{
        "network": r.network, "nodes_over": r.over, "nodes_holding": r.holding, "entries": r.entries,
        "since": r.since,
        "nodes": [{"host": n.host, "entries": n.entries, "pct_of_max": n.share, "over": n.over, "idle": n.idle,
                   "idle_known": n.idle_known,
                   "idle_pct": round(n.idle_pct, 1) if n.idle_pct is not None else None,
                   "leak": n.leak} for n in r.nodes],
    } for r in f.networks]}


def table(f: Fleet, top: int, when: Callable[[float], str]) -> str:
    """The terminal view: one block per network, most nodes first; ``when`` formats a clock."""
    shown = [r for r in f.networks if r.over][:top] or f.networks[:top]
    out = ["Fleet %s: %d node%s, %d network%s over the threshold on a node" % (
        f.group, f.size, "" if f.size == 1 else "s", sum(1 for r in f.networks if r.over),
        "" if sum(1 for r in f.networks if r.over) == 1 else "s")]
    if not f.networks:
        out.append("  no node reports a network (none is linked to a conntrack template, or the talkers "
                   "items have no values yet)")
    for r in shown:
        leaks = sum(1 for n in r.nodes if n.over and n.leak)
        out.append("")
        out.append("%s  over the threshold on %d of %d nodes%s%s" % (
            r.network, r.over, f.size, ", since %s" % when(r.since) if r.since else "",
            ", idle (a leak) on %d" % leaks if leaks else ""))
        for n in r.nodes:
            idle = "idle %3.0f%%" % n.idle_pct if n.idle_pct is not None else "idle    ?"
            out.append("  %-24s %9s entries  %5.1f%% of max  %s%s%s" % (
                n.host[:24], "{:,}".format(n.entries) if n.entries is not None else "?", n.share or 0.0, idle,
                "  over" if n.over else "", ", a leak" if n.leak else ""))
    hidden = len(f.networks) - len(shown)
    if hidden > 0:
        out.append("\n(%d more network%s; --top N or --json)" % (hidden, "" if hidden == 1 else "s"))
    return "\n".join(out) + "\n"
