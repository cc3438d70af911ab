"""Simulated fleet nodes for a real Zabbix server: hosts whose conntrack items are trapper items
fed by ``zabbix_sender``, so a group of hundreds of nodes needs no agent (bench/fleet.py, and
tests/test_fleet_real.py before the real nodes of the fleet replay).

Each node carries what the fleet reads of the node template: entries, nf_conntrack_max, usage, drops, and
per network the five per-network items under the node template's own keys and names.
"""

import os
import subprocess
import tempfile
from typing import Dict, Iterable, List, Tuple

from conntrack_zbx.template import model

# (key, value type): 0 float, 3 unsigned
NODE_ITEMS = (("conntrack.count", 3), ("conntrack.max", 3), ("conntrack.usage", 0), ("conntrack.rate[drop]", 0))
NETWORK_ITEMS = (("share", 0), ("over", 3), ("count", 3), ("idle", 3), ("idle_known", 3))


def _names() -> Dict[str, str]:
    names = {i["key"]: i["name"] for i in model.conntrack_template()["items"]}
    rule = model.talkers_discovery("network")
    for p in rule["item_prototypes"]:
        names[p["key"].split("[")[0]] = p["name"]
    return names


def create_nodes(api, group: str, hosts: Iterable[str], networks: Iterable[str]) -> Dict[str, str]:
    """The group (made if missing) and one trapper host per name -> {host: hostid}. Items are made
    in one item.create call per host."""
    found = api.call("hostgroup.get", filter={"name": [group]}, output=["groupid"])
    gid = found[0]["groupid"] if found else api.call("hostgroup.create", name=group)["groupids"][0]
    names = _names()
    nets = list(networks)
    out = {}
    for host in hosts:
        hid = api.call("host.create", host=host, groups=[{"groupid": gid}])["hostids"][0]
        items = [{"hostid": hid, "name": names[k], "key_": k, "type": 2, "value_type": vt} for k, vt in NODE_ITEMS]
        for net in nets:
            for field, vt in NETWORK_ITEMS:
                key = "conntrack.talker.%s[network,%s]" % (field, net)
                items.append({"hostid": hid, "key_": key, "type": 2, "value_type": vt,
                              "name": names["conntrack.talker." + field].replace("{#CT.TALKER}", net)
                              .replace("network ", "network ")})
        api.call("item.create", items)
        out[host] = hid
    return out


def network_values(share: float, idle_pct: float, maximum: int = 2048) -> List[Tuple[str, str]]:
    """One network's five values on a node at ``share`` % of the table, ``idle_pct`` % of it idle."""
    count = int(maximum * share / 100)
    idle = int(count * idle_pct / 100)
    return [("share", "%.2f" % share), ("over", "1" if share > 20 else "0"), ("count", str(count)),
            ("idle", str(idle)), ("idle_known", str(count))]


def send(server: str, port: int, values: Iterable[Tuple[str, str, str]], sender: List[str] = None) -> str:
    """Send (host, key, value) triples with zabbix_sender in one batch; its summary line."""
    fd, path = tempfile.mkstemp(prefix="ctzbx-sender-")
    with os.fdopen(fd, "w") as f:
        for host, key, value in values:
            f.write('"%s" "%s" %s\n' % (host, key, value))
    try:
        p = subprocess.run((sender or ["zabbix_sender"]) + ["-z", server, "-p", str(port), "-i", path],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    finally:
        os.remove(path)
    out = p.stdout.decode(errors="replace")
    if p.returncode not in (0, 2) or "failed: 0" not in out:
        raise RuntimeError("zabbix_sender failed (%d): %s" % (p.returncode, out[-500:]))
    return out.strip().splitlines()[-1]
