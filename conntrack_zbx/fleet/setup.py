"""``conntrack-zbx fleet --group NAME --setup``: the group's fleet host, its API token, its
dashboard. Idempotent: a second run renews the token and rewrites the dashboard with the group's
hosts of the moment (re-run it when nodes join or leave).

A template's dashboard shows one host; a fleet's spans the group, so it is a global dashboard
made here. Its graphs name the nodes by host name (a graph's dataset takes host patterns, not a
group), the problems widget takes the group.
"""

from typing import Any, Dict, List, Optional, TYPE_CHECKING

from conntrack_zbx.zabbixapi import call, server_version, whoami
from conntrack_zbx.errors import DeployFailed

if TYPE_CHECKING:
    from pyzabbix import ZabbixAPI  # type: ignore[attr-defined]  # the admin side's client


def host_name(group: str) -> str:
    return "%s conntrack fleet" % group


def dashboard_name(group: str) -> str:
    return "Conntrack fleet: %s" % group


def setup(zapi: "ZabbixAPI", group: str, api_url: Optional[str]) -> Dict[str, Any]:
    from conntrack_zbx.fleet.api import group_id
    from conntrack_zbx.template.fleet import FLEET

    gid = group_id(zapi, group)
    found = call(zapi, "template.get", filter={"host": [FLEET]}, output=["templateid"])
    if not found:
        raise DeployFailed("template %r is not on the server: `conntrack-zbx template import` first" % FLEET)
    url = api_url or zapi.url
    if not url.endswith("api_jsonrpc.php"):
        url = url.rstrip("/") + "/api_jsonrpc.php"
    token = _token(zapi, group)
    macros: List[Dict[str, Any]] = [{"macro": "{$CONNTRACK.FLEET.GROUP}", "value": group},
              {"macro": "{$CONNTRACK.FLEET.API.URL}", "value": url},
              {"macro": "{$CONNTRACK.FLEET.API.TOKEN}", "value": token, "type": 1}]
    name = host_name(group)
    have = call(zapi, "host.get", filter={"host": [name]}, output=["hostid"])
    if have:
        hostid = have[0]["hostid"]
        # the admin's own macros on the host (an interval, a threshold) stay; ours are renewed
        ours = {m["macro"] for m in macros}
        kept = [{k: m[k] for k in ("macro", "value", "type", "description") if k in m}
                for m in call(zapi, "usermacro.get", hostids=[hostid], output=["macro", "value", "type", "description"])
                if m["macro"] not in ours]
        call(zapi, "host.update", hostid=hostid, macros=kept + macros,
             templates=[{"templateid": found[0]["templateid"]}])
    else:
        hostid = call(zapi, "host.create", host=name, groups=[{"groupid": gid}], macros=macros,
                      templates=[{"templateid": found[0]["templateid"]}])["hostids"][0]
    nodes = sorted(h["host"] for h in call(zapi, "host.get", groupids=[gid], output=["host"]) if h["host"] != name)
    dashboardid = _dashboard(zapi, group, gid, name, nodes)
    return {"group": group, "fleet_host": name, "hostid": hostid, "api_url": url, "nodes": nodes,
            "dashboard": dashboard_name(group), "dashboardid": dashboardid,
            "url": dashboard_url(zapi.url, dashboardid)}


def dashboard_url(api_url: str, dashboardid: str) -> str:
    """The dashboard's page in the frontend that serves ``api_url`` (pyzabbix's url ends in
    api_jsonrpc.php; the frontend's pages sit beside it)."""
    front = api_url.split("api_jsonrpc.php")[0].rstrip("/")
    return front + "/zabbix.php?action=dashboard.view&dashboardid=%s" % dashboardid


def _token(zapi: "ZabbixAPI", group: str) -> str:
    """A token of the calling user, for the fleet host's API call only (named after the group,
    renewed on every run)."""
    name = "conntrack-zbx fleet %s" % group
    userid = whoami(zapi)
    old = call(zapi, "token.get", userids=[userid], filter={"name": [name]}, output=["tokenid"])
    if old:
        call(zapi, "token.delete", [t["tokenid"] for t in old])
    tokenid = call(zapi, "token.create", name=name, userid=userid)["tokenids"][0]
    return str(call(zapi, "token.generate", [tokenid])[0]["token"])


def _item_names() -> Dict[str, str]:
    from conntrack_zbx.template import fleet, model

    names = {i["key"]: i["name"] for i in model.conntrack_template()["items"]}
    over = next(p for p in fleet.fleet_template()["discovery_rules"][0]["item_prototypes"]
                if p["key"] == fleet.OVER_KEY)
    return {"usage": names["conntrack.usage"], "drops": names["conntrack.rate[drop]"],
            "over": over["name"].replace("{#CT.TALKER}", "*")}


def _dashboard(zapi: "ZabbixAPI", group: str, gid: str, fleet_host: str, nodes: List[str]) -> str:
    v70 = server_version(zapi) >= (7, 0)
    names = _item_names()
    width = 72 if v70 else 24
    half = width // 2
    widgets = [
        _graph("Usage per node, in %", nodes or ["-"], names["usage"], 0, 0, half, v70, "AAAAA"),
        _graph("Shared ranges: nodes over the threshold", [fleet_host], names["over"], half, 0, half, v70, "AAAAB"),
        _graph("Drops per node", nodes or ["-"], names["drops"], 0, 5, half, v70, "AAAAC"),
        _problems(gid, half, 5, half, v70),
    ]
    pages = [{"widgets": widgets}]
    name = dashboard_name(group)
    have = call(zapi, "dashboard.get", filter={"name": [name]}, output=["dashboardid"])
    if have:
        call(zapi, "dashboard.update", dashboardid=have[0]["dashboardid"], pages=pages)
        return str(have[0]["dashboardid"])
    return str(call(zapi, "dashboard.create", name=name, display_period=30, auto_start=1,
                    pages=pages)["dashboardids"][0])


def _graph(title: str, hosts: List[str], item: str, x: int, y: int, width: int, v70: bool,
           reference: str) -> Dict[str, Any]:
    """An SVG graph of one item name over hosts: 6.0 spells its dataset fields ds.hosts.0.N,
    7.0 ds.0.hosts.N."""
    def ds(field: str, n: Optional[int] = None) -> str:
        if v70:
            return "ds.0.%s" % field + ("" if n is None else ".%d" % n)
        return "ds.%s.0" % field + ("" if n is None else ".%d" % n)

    fields = [{"type": 1, "name": ds("hosts", i), "value": h} for i, h in enumerate(hosts)]
    fields += [{"type": 1, "name": ds("items", 0), "value": item},
               {"type": 1, "name": ds("color"), "value": "FF465C"},
               {"type": 0, "name": ds("transparency"), "value": 0},
               {"type": 0, "name": ds("fill"), "value": 0},
               {"type": 0, "name": "legend_lines" if not v70 else "legend_lines", "value": 4}]
    if v70:
        fields.append({"type": 1, "name": "reference", "value": reference})
    return {"type": "svggraph", "name": title, "x": x, "y": y, "width": width, "height": 5, "fields": fields}


def _problems(gid: str, x: int, y: int, width: int, v70: bool) -> Dict[str, Any]:
    """The group's problems that name a range (tag talker), with their tags shown."""
    return {"type": "problems", "name": "Problems naming a range", "x": x, "y": y, "width": width, "height": 5,
            "fields": [{"type": 2, "name": "groupids.0" if v70 else "groupids", "value": gid},
                       {"type": 1, "name": "tags.0.tag" if v70 else "tags.tag.0", "value": "talker"},
                       {"type": 0, "name": "tags.0.operator" if v70 else "tags.operator.0", "value": 4},
                       {"type": 1, "name": "tags.0.value" if v70 else "tags.value.0", "value": ""},
                       {"type": 0, "name": "show_tags", "value": 3},
                       {"type": 0, "name": "show_lines", "value": 10}]}
