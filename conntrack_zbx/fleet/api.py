"""The fleet's reads from the Zabbix API: a host group's hosts and their per-network items,
paged by hosts (one call per PAGE hosts, never one per host and network)."""

import time
from typing import Any, Dict, List, TYPE_CHECKING

from conntrack_zbx.fleet.report import Fleet

if TYPE_CHECKING:
    from pyzabbix import ZabbixAPI  # type: ignore[attr-defined]  # the admin side's client

# Hosts per item.get call
PAGE = 100
# The per-node items read, by the node template's network prototypes
FIELDS = ("share", "over", "count", "idle", "idle_known")


def group_id(zapi: "ZabbixAPI", group: str) -> str:
    from conntrack_zbx.zabbixapi import call
    from conntrack_zbx.errors import DeployFailed

    found = call(zapi, "hostgroup.get", filter={"name": [group]}, output=["groupid"])
    if not found:
        raise DeployFailed("host group %r not found (the group of the fleet's nodes, as the frontend names it)"
                           % group)
    return str(found[0]["groupid"])


def fetch(zapi: "ZabbixAPI", group: str, fresh: float) -> Fleet:
    """The group's hosts, their per-network items and entry counts (paged by hosts) and the
    open problems naming a network: 3 + hosts/PAGE calls."""
    from conntrack_zbx.zabbixapi import call
    from conntrack_zbx.fleet.report import networks

    gid = group_id(zapi, group)
    hosts = {h["hostid"]: h["host"] for h in call(zapi, "host.get", groupids=[gid], monitored_hosts=True,
                                                  output=["hostid", "host"])}
    calls = 2
    items: List[Dict[str, Any]] = []
    ids = sorted(hosts)
    prefixes = ["conntrack.talker.%s[network," % f for f in FIELDS] + ["conntrack.count"]
    for i in range(0, len(ids), PAGE):
        items += call(zapi, "item.get", hostids=ids[i:i + PAGE], monitored=True, searchByAny=True,
                      startSearch=True, search={"key_": prefixes}, output=["hostid", "key_", "lastvalue", "lastclock"])
        calls += 1
    problems = call(zapi, "problem.get", groupids=[gid], tags=[{"tag": "talker", "operator": 4}],
                    selectTags="extend", output=["clock"])
    calls += 1
    since: Dict[str, int] = {}
    for p in problems:
        for t in p.get("tags", []):
            if t["tag"] == "talker":
                since[t["value"]] = min(since.get(t["value"], int(p["clock"])), int(p["clock"]))
    # the nodes: hosts with a conntrack.count (the fleet's own host has none and does not count)
    size = len({it["hostid"] for it in items if it["key_"] == "conntrack.count"})
    return Fleet(group, size, networks(items, hosts, since, time.time() - fresh), calls)
