"""The fleet template: one host standing for a group of nodes, so that a range over the threshold on
several nodes is one problem, not one per node.

The incident's diagnosis was "the same range on all our mirrorlist servers". Each node judges its
own table (``model.py``); this template, linked to a host with no interface that stands for the
group, counts for every network how many nodes of ``{$CONNTRACK.FLEET.GROUP}`` hold it over the
culprit threshold. The counts are the server's own aggregates (calculated items over the group:
``sum(last_foreach(...))`` of each node's 0/1 ``conntrack.talker.over`` item); which networks exist
at all, and which node holds how much and how idle, come from one API call per poll (an HTTP
agent item: ``item.get`` over the group), since discovery needs the list and a calculated item
returns only a number. The count's problems escalate with the spread, one each per range for the
whole fleet: over the threshold on one node, on several (the shared cause), on every node.
"""

from typing import Any, Dict, List, Sequence

from conntrack_zbx.options import IDLE_WARN_PCT
from conntrack_zbx.template.build import GROUP, item_ref, macro, make_trigger, tags, uid
from conntrack_zbx.template.model import CONNTRACK_MACROS
from conntrack_zbx.template.talkers import TALKER_OVER_KEY, TALKER_SHARE_KEY

FLEET = "Linux conntrack fleet by Zabbix aggregates"
FLEET_SHORT = "Conntrack fleet"
SIZE_KEY = "conntrack.fleet.size"
GET_KEY = "conntrack.fleet.get"
OVER_KEY = "conntrack.fleet.over[{#CT.TALKER}]"
NODES_KEY = "conntrack.fleet.nodes[{#CT.TALKER}]"
# The per-node items the API call reads, by the node template's keys (network prototypes only)
READ = (TALKER_SHARE_KEY, TALKER_OVER_KEY, "conntrack.talker.count", "conntrack.talker.idle",
        "conntrack.talker.idle_known")
GROUP_FILTER = '?[group="{$CONNTRACK.FLEET.GROUP}"]'
ONE = "%s: One range over the threshold on a node" % FLEET_SHORT
SEVERAL = "%s: The same range over the threshold on several nodes" % FLEET_SHORT
EVERY = "%s: The same range over the threshold on every node" % FLEET_SHORT

FLEET_MACROS = [
    macro("CONNTRACK.FLEET.GROUP", "CHANGE_ME",
          "The host group of the fleet's nodes (each linked to a conntrack template). "
          "`conntrack-zbx fleet --group NAME --setup` sets it."),
    macro("CONNTRACK.FLEET.MIN", "2", "Nodes over the threshold that make it the same range on several nodes."),
    macro("CONNTRACK.FLEET.INTERVAL", "1m", "How often the fleet's counts are taken."),
    macro("CONNTRACK.FLEET.FRESH", "15m",
          "A node's value older than this is not counted (the network left its top list; the node "
          "stopped reporting): three talkers polls at the default interval."),
    macro("CONNTRACK.FLEET.RECOVERY", "15m",
          "A fleet problem resolves once its spread stayed lower this long (a full table starves its "
          "node's polls: the count would drop while the node is at its worst)."),
    macro("CONNTRACK.FLEET.NODATA", "5m", "No answer from the API call for this long raises a problem."),
    macro("CONNTRACK.FLEET.LOST", "1d", "Keep a range's fleet items this long after no node holds it."),
    macro("CONNTRACK.FLEET.API.URL", "http://localhost/api_jsonrpc.php",
          "The frontend's API as the Zabbix server reaches it (`fleet --setup` sets it)."),
    macro("CONNTRACK.FLEET.API.TOKEN", "",
          "An API token of a user who can read the group's hosts (`fleet --setup` creates one)."),
    macro("CONNTRACK.TALKER.SHARE.WARN", "20",
          "Share of nf_conntrack_max above which a range counts on a node: the same value as the "
          "node template's (set both, or neither)."),
    macro("CONNTRACK.TALKER.IDLE.WARN", str(IDLE_WARN_PCT),
          "Share of nf_conntrack_max in idle ESTABLISHED entries that makes a node's range a leak, as in "
          "the node template."),
]

# item.get over the group: one call for every node and network (search by key prefix, any of READ)
_REQUEST = ('{"jsonrpc":"2.0","method":"item.get","id":1,%s"params":{"group":"{$CONNTRACK.FLEET.GROUP}",'
            '"monitored":true,"search":{"key_":[%s]},"searchByAny":true,"startSearch":true,'
            '"output":["key_","lastvalue","lastclock"],"selectHosts":["host"]}}')

# The API's answer, grouped: {"nodes": [hosts reporting their entry count], "networks": {network:
# {host: {share, over, count, idle, idle_known}}}}, values older than {$CONNTRACK.FLEET.FRESH} left
# out. An API error makes the item not supported with the API's own message (a bad token, a group
# the user cannot read).
GROUP_JS = r"""var r = JSON.parse(value);
if (r.error) {
    throw 'Zabbix API: ' + r.error.message + ' ' + (r.error.data || '') +
        ' (check the macros CONNTRACK.FLEET.API.URL and CONNTRACK.FLEET.API.TOKEN)';
}
var f = '{$CONNTRACK.FLEET.FRESH}', units = {s: 1, m: 60, h: 3600, d: 86400, w: 604800};
var fresh = parseInt(f, 10) * (units[f.slice(-1)] || 1), now = Date.now() / 1000, nets = {}, nodes = [];
r.result.forEach(function (it) {
    if (it.lastclock === '0' || now - Number(it.lastclock) > fresh) {
        return;
    }
    if (it.key_ === 'conntrack.count') {
        nodes.push(it.hosts[0].host);
        return;
    }
    var m = /^conntrack\.talker\.([a-z_]+)\[network,(.+)\]$/.exec(it.key_);
    if (m) {
        var net = nets[m[2]] = nets[m[2]] || {};
        var host = net[it.hosts[0].host] = net[it.hosts[0].host] || {};
        host[m[1]] = Number(it.lastvalue);
    }
});
return JSON.stringify({nodes: nodes, networks: nets});"""

# The networks over the threshold on at least one node: the discovery rows
DISCOVER_JS = r"""var nets = JSON.parse(value).networks, rows = [];
Object.keys(nets).forEach(function (net) {
    if (Object.keys(nets[net]).some(function (h) { return nets[net][h].over === 1; })) {
        rows.push({'{#CT.TALKER}': net});
    }
});
return JSON.stringify(rows);"""

# One line on-call reads: the nodes over the threshold, most first, each with its share and
# whether its entries are idle (a leak, as the node's leak trigger judges) or not (load, or a
# leak younger than idle_min: the node's own load trigger tells them apart); and
# "; every node" when that is all the group's nodes (the every-node problem waits for it); led by
# its own count ("3 of 4 nodes: "), which the problems' names show: the server's count is stored
# by another history syncer and can be a poll older or newer than the line it would head
NODES_JS = r"""var doc = JSON.parse(value), net = doc.networks['{#CT.TALKER}'] || {};
var idleWarn = {$CONNTRACK.TALKER.IDLE.WARN};
var rows = Object.keys(net).filter(function (h) { return net[h].over === 1; }).sort(function (a, b) {
    return net[b].share - net[a].share;
}).map(function (h) {
    var n = net[h], how = 'idle unknown';
    if (n.idle !== undefined && n.count > 0) {
        var idlePct = n.idle / n.count * n.share;
        how = idlePct > idleWarn ? 'idle: a leak' : 'not idle';
    }
    return h + ' ' + n.share.toFixed(0) + '% (' + how + ')';
});
var every = rows.length >= doc.nodes.length && doc.nodes.length > 0 ? '; every node' : '';
return rows.length ? rows.length + ' of ' + doc.nodes.length + ' nodes: ' + rows.join(', ') + every : 'none';"""


def request(version: str) -> str:
    """The API call's body: 6.0 takes the token in the body; 7.0 in the Authorization header
    (``headers``), and its body must not carry it too."""
    keys = ",".join(['"%s[network,"' % k for k in READ] + ['"conntrack.count"'])
    auth = '"auth":"{$CONNTRACK.FLEET.API.TOKEN}",' if version == "6.0" else ""
    return _REQUEST % (auth, keys)


def fleet_template(version: str = "6.0") -> Dict[str, Any]:
    get = {
        "uuid": uid(FLEET, "item", GET_KEY),
        "name": "%s: Get the group's talker items" % FLEET_SHORT,
        "type": "HTTP_AGENT",
        "key": GET_KEY,
        "delay": "{$CONNTRACK.FLEET.INTERVAL}",
        "history": "1h",
        "trends": "0",
        "value_type": "TEXT",
        "description": "Master item: one API call (item.get over {$CONNTRACK.FLEET.GROUP}) for every node's "
                       "per-network items, grouped by network and node.",
        "url": "{$CONNTRACK.FLEET.API.URL}",
        "request_method": "POST",
        "post_type": "JSON",
        "posts": request(version),
        "headers": [{"name": "Content-Type", "value": "application/json-rpc"}],
        "timeout": "15s",
        "preprocessing": [{"type": "JAVASCRIPT", "parameters": [GROUP_JS]}],
        "tags": tags(component="conntrack", scope="fleet"),
    }  # type: Dict[str, Any]
    nodata = make_trigger(FLEET, "%s: No data from the API" % FLEET_SHORT,
                      "nodata(%s,{$CONNTRACK.FLEET.NODATA})=1" % item_ref(FLEET, GET_KEY), "WARNING",
                      "The fleet's API call gave nothing for {$CONNTRACK.FLEET.NODATA}: the fleet's ranges are "
                      "no longer named (each node still judges its own). The item's error says why: a bad "
                      "token, an unreachable URL. First step: read that error (Monitoring > Latest data), then "
                      "`conntrack-zbx fleet --group {$CONNTRACK.FLEET.GROUP} --setup` renews the token and URL.",
                      event_name="%s: no data from the API for {$CONNTRACK.FLEET.NODATA}" % FLEET_SHORT,
                      scope="availability", anchor="fleet", manual_close=True)
    get["triggers"] = [nodata]
    if version != "6.0":
        get["headers"].append({"name": "Authorization", "value": "Bearer {$CONNTRACK.FLEET.API.TOKEN}"})
    size = {
        "uuid": uid(FLEET, "item", SIZE_KEY),
        "name": "%s: Nodes in the group" % FLEET_SHORT,
        "type": "CALCULATED",
        "key": SIZE_KEY,
        "value_type": "UNSIGNED",
        "delay": "{$CONNTRACK.FLEET.INTERVAL}",
        # conntrack.count, stored at every poll (nf_conntrack_max is stored when it changes)
        "params": "count(last_foreach(/*/conntrack.count%s,{$CONNTRACK.FLEET.FRESH}))" % GROUP_FILTER,
        "description": "Nodes of {$CONNTRACK.FLEET.GROUP} that reported their entry count within "
                       "{$CONNTRACK.FLEET.FRESH}: what 'of N nodes' counts.",
        "tags": tags(component="conntrack", scope="fleet"),
    }
    return {
        "uuid": uid(FLEET),
        "template": FLEET,
        "name": FLEET,
        "description": (
            "One host standing for a group of conntrack nodes (no interface): for every range over the "
            "culprit threshold on a node, how many nodes of the group hold it so, and one problem for the "
            "whole fleet as it spreads. Link it to one host per group; `conntrack-zbx fleet --group "
            "NAME --setup` creates that host, its API token and its dashboard.\n\n"
            "Generated by conntrack_zbx; do not edit by hand."),
        "groups": [{"name": GROUP}],
        "items": [get, size],
        "discovery_rules": [_discovery()],
        "tags": tags(**{"class": "os", "target": "linux"}),
        "macros": [m for m in CONNTRACK_MACROS if m["macro"] == "{$CONNTRACK.RUNBOOK.URL}"] + FLEET_MACROS,
    }


def _discovery() -> Dict[str, Any]:
    over = {
        "uuid": uid(FLEET, "prototype", "over"),
        "name": "%s: network {#CT.TALKER}: Nodes over the threshold" % FLEET_SHORT,
        "type": "CALCULATED",
        "key": OVER_KEY,
        "value_type": "UNSIGNED",
        "delay": "{$CONNTRACK.FLEET.INTERVAL}",
        "params": "sum(last_foreach(/*/%s[network,{#CT.TALKER}]%s,{$CONNTRACK.FLEET.FRESH}))"
                  % (TALKER_OVER_KEY, GROUP_FILTER),
        "description": "Nodes of {$CONNTRACK.FLEET.GROUP} where this network holds more than "
                       "{$CONNTRACK.TALKER.SHARE.WARN}% of nf_conntrack_max (the server's aggregate of each "
                       "node's conntrack.talker.over).",
        "tags": tags(component="conntrack", talker="{#CT.TALKER}"),
    }
    nodes = {
        "uuid": uid(FLEET, "prototype", "nodes"),
        "name": "%s: network {#CT.TALKER}: Nodes, share and idle" % FLEET_SHORT,
        "type": "DEPENDENT",
        "key": NODES_KEY,
        "delay": "0",
        "history": "7d",
        "trends": "0",
        "value_type": "TEXT",
        "description": "The nodes where this network is over the threshold, most first, each with its share "
                       "and whether its entries are idle (a leak) or not.",
        "master_item": {"key": GET_KEY},
        "preprocessing": [{"type": "JAVASCRIPT", "parameters": [NODES_JS]}],
        "tags": tags(component="conntrack", talker="{#CT.TALKER}"),
    }
    return {
        "uuid": uid(FLEET, "discovery", "networks"),
        "name": "%s: Ranges over the threshold on a node" % FLEET_SHORT,
        "type": "DEPENDENT",
        "key": "conntrack.fleet.discovery",
        "delay": "0",
        "lifetime": "{$CONNTRACK.FLEET.LOST}",
        "description": "Every network over the threshold on at least one node of the group.",
        "master_item": {"key": GET_KEY},
        "preprocessing": [{"type": "JAVASCRIPT", "parameters": [DISCOVER_JS]}],
        "item_prototypes": [over, nodes],
        "trigger_prototypes": _triggers(),
    }


def _triggers() -> List[Dict[str, Any]]:
    """Three levels of spread, each one problem for the whole fleet, the lower depending on the
    higher (while every node has it, "several" adds nothing to page about). The problem's name
    carries the nodes with their shares and leak or load (the API's line); while the API is silent
    the fleet's problems wait, and "No data from the API" says so."""
    over, nodes, size = (item_ref(FLEET, k) for k in (OVER_KEY, NODES_KEY, SIZE_KEY))

    def spread(n: str) -> str:
        # the server's count, and the API's line naming at least as many nodes: the two are stored
        # by different history syncers, and a problem that opened on the count alone could name a
        # line a poll old. The line's entries are separated by ", " ("none" is not one).
        return ('last(%s)>=%s and last(%s)>0 and find(%s,,"regexp","^(?:[^,;]+[)](?:, |; |$)){%s}")=1'
                % (over, n, size, nodes, n))
    # {ITEM.LASTVALUEn} counts the expression's functions: over, size, the line. The name takes
    # both the count and the nodes from the line, so they always agree
    where = ('{{ITEM.LASTVALUE3}.regsub("^([0-9]+ of [0-9]+) nodes: ", "\\1")} nodes of {$CONNTRACK.FLEET.GROUP}: '
             '{{ITEM.LASTVALUE3}.regsub("^[0-9]+ of [0-9]+ nodes: (.*)", "\\1")}')
    step = ("First step: `conntrack-zbx fleet --group {$CONNTRACK.FLEET.GROUP}` ranks the ranges across the "
            "nodes; on a node, `sudo conntrack-zbx top --by idle`. ")

    def t(name: str, expression: str, priority: str, description: str, event: str, recovery: str,
          depends: Sequence[str] = ()) -> Dict[str, Any]:
        # resolved only once the spread stayed lower for {$CONNTRACK.FLEET.RECOVERY}: a full table
        # starves its node's polls, its values age out of the count, and the problem would
        # resolve and open again while the nodes are at their worst
        tr = make_trigger(FLEET, name, expression, priority, description, event_name=event, recovery=recovery,
                      opdata="Nodes over the threshold: {ITEM.LASTVALUE1} of {ITEM.LASTVALUE2}", scope="fleet",
                      anchor="fleet", depends=depends)
        tr["tags"] += tags(talker="{#CT.TALKER}")
        return tr

    return [
        t(ONE, spread("1"), "AVERAGE",
          "One node of the group has this range over the threshold: the node's own culprit, paged once "
          "for the fleet. " + step,
          "%s: network {#CT.TALKER} is over the threshold on %s" % (FLEET_SHORT, where),
          "max(%s,{$CONNTRACK.FLEET.RECOVERY})<1" % over, depends=(SEVERAL,)),
        t(SEVERAL, spread("{$CONNTRACK.FLEET.MIN}"), "AVERAGE",
          "The same range holds a large share of the table on several nodes: one cause upstream of them "
          "(the incident's NAT firewall that never closed its connections reached every mirrorlist node). "
          "Nodes whose entries are idle hold a leak: tell the range's owners once, for all of them. " + step,
          "%s: the same network {#CT.TALKER} on several nodes: over the threshold on %s" % (FLEET_SHORT, where),
          "max(%s,{$CONNTRACK.FLEET.RECOVERY})<{$CONNTRACK.FLEET.MIN}" % over, depends=(EVERY,)),
        t(EVERY, '%s and last(%s)>=last(%s) and find(%s,,"like","; every node")=1'
          % (spread("{$CONNTRACK.FLEET.MIN}"), over, size, nodes),
          "HIGH",
          "Every node of the group has this range over the threshold: whatever it does will fill every "
          "table, and the fleet has no spare node. Raise the limit on all of them (`sudo conntrack-zbx tune "
          "--auto --apply`) while the range's owners fix it. " + step,
          "%s: network {#CT.TALKER} on every node: over the threshold on %s" % (FLEET_SHORT, where),
          "max(%s,{$CONNTRACK.FLEET.RECOVERY})<max(%s,{$CONNTRACK.FLEET.RECOVERY})" % (over, size)),
    ]

