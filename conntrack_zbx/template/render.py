"""Render the template model: the YAML export and a README per template (official style)."""

from typing import Any, Dict, List, Optional

import yaml

from conntrack_zbx.template import export, fleet, model, service


class _Dumper(yaml.SafeDumper):
    """Block style everywhere, long lines kept whole, multi-line strings as literal blocks, and no
    anchors or aliases (``&id001``/``*id001`` for a list the model shares): no Zabbix export has
    them, and a reviewer diffing against one should see every value where it applies."""

    def ignore_aliases(self, data: object) -> bool:
        return True



# What the frontend and the official templates' READMEs call the export's enum values.
ITEM_TYPES = {"ZABBIX_PASSIVE": "Zabbix agent", "ZABBIX_ACTIVE": "Zabbix agent (active)",
              "DEPENDENT": "Dependent item", "CALCULATED": "Calculated", "HTTP_AGENT": "HTTP agent",
              "TRAP": "Zabbix trapper", "INTERNAL": "Zabbix internal"}
SEVERITIES = {"NOT_CLASSIFIED": "Not classified", "INFO": "Information", "WARNING": "Warning", "AVERAGE": "Average",
              "HIGH": "High", "DISASTER": "Disaster"}
STEPS = {"JSONPATH": "JSON Path", "CHECK_JSON_ERROR": "Check for error in JSON", "REGEX": "Regular expression",
         "DISCARD_UNCHANGED_HEARTBEAT": "Discard unchanged with heartbeat", "CHANGE_PER_SECOND": "Change per second",
         "MULTIPLIER": "Custom multiplier", "JAVASCRIPT": "JavaScript", "DISCARD_UNCHANGED": "Discard unchanged"}

def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def template_yaml(runbook: Optional[str] = None, services: bool = False, version: str = "6.0") -> str:
    return yaml.dump(export.export(runbook, services, version), Dumper=_Dumper, sort_keys=False,
                     allow_unicode=True, width=10000, default_flow_style=False)


def _table(header: List[str], rows: List[List[str]]) -> str:
    def cell(v: str) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")
    out = ["|" + "|".join(header) + "|", "|" + "|".join("---" for _ in header) + "|"]
    out += ["|" + "|".join(cell(c) for c in r) + "|" for r in rows]
    return "\n".join(out) + "\n"


TESTED_VERSIONS = (
    "Exported in format 6.0 (templates/conntrack_zbx.yaml) and 7.0 (templates/conntrack_zbx_7.0.yaml, "
    "with the talkers item's own timeout). Tested end to end on real installations: Zabbix 6.0.14 "
    "(server, proxy with SQLite, zabbix_agentd and zabbix_agent2, passive and active) and Zabbix "
    "7.0.22 (server, proxy with SQLite, zabbix_agent2 passive and active, the package on Debian 13). "
    "Agent side: Python 3.6 to 3.13.")


def template_readme(name: str) -> str:
    whole = export.export(services=True)["zabbix_export"]
    t = next(t for t in whole["templates"] if t["template"] == name)
    out = ["# %s\n" % name, "## Overview\n", t["description"].split("\n\n")[0] + "\n"]
    if name in (model.CONNTRACK, model.CONNTRACK_ACTIVE, fleet.FLEET):
        out.append("\nGenerated from `conntrack_zbx/template/%s.py` together with "
                   "`templates/conntrack_zbx.yaml`.\n" % ("fleet" if name == fleet.FLEET else "model"))
    else:
        out.append("\nGenerated from `conntrack_zbx/template/service.py` together with "
                   "`templates/mirrorlist_service.yaml` (`conntrack-zbx template import --services`).\n")
    out.append("\n## Requirements\n\n%s\n" % REQUIREMENTS[_family(name)])
    out.append("\n## Tested versions\n\n%s\n" % TESTED_VERSIONS)
    out.append("\n## Setup\n\n%s\n" % SETUP[_family(name)])
    if t.get("templates"):
        out.append("\nLinks: " + ", ".join("%s" % x["name"] for x in t["templates"]) + ".\n")
    if t.get("macros"):
        out.append("\n## Macros used\n\n")
        out.append(_table(["Name", "Description", "Default"],
                          [[m["macro"], m["description"], "`%s`" % m["value"]] for m in t["macros"]]))
    items = t.get("items", [])
    if items:
        out.append("\n## Items collected\n\n")
        out.append(_table(["Name", "Description", "Type", "Key and additional info"],
                          [[i["name"], i.get("description", ""), ITEM_TYPES[i.get("type", "ZABBIX_PASSIVE")],
                            "`%s`%s" % (i["key"], _pre(i))] for i in items]))
    for tt in t.get("httptests", []):
        out.append("\n## Web scenario\n\n")
        out.append(_table(["Scenario", "Step", "URL", "Items"], [[
            tt["name"], s["name"], "`%s`" % s["url"],
            "`%s`, `%s`, `%s`" % (service.WEB_TIME, service.WEB_FAIL, service.WEB_ERROR)]
            for s in tt["steps"]]))
    for rule in t.get("discovery_rules", []):
        out.append("\n## Discovery rules\n\n")
        conditions = "; ".join("`%s` %s `%s`" % (c["macro"], "does not match" if c.get("operator") else "matches",
                                                  c["value"]) for c in rule.get("filter", {}).get("conditions", []))
        out.append(_table(["Name", "Description", "Type", "Key and additional info"], [[
            rule["name"], rule["description"], ITEM_TYPES[rule["type"]],
            "`%s`; filter: %s; keep lost resources `%s`" % (rule["key"], conditions or "none", rule["lifetime"])]]))
        out.append("\n### Item prototypes\n\n")
        out.append(_table(["Name", "Description", "Key and additional info"],
                          [[p["name"], p["description"], "`%s`%s" % (p["key"], _pre(p))]
                           for p in rule["item_prototypes"]]))
        protos = rule.get("trigger_prototypes", []) + [tp for p in rule["item_prototypes"]
                                                        for tp in p.get("trigger_prototypes", [])]
        if protos:
            out.append("\n### Trigger prototypes\n\n")
            out.append(_table(["Name", "Description", "Expression", "Severity"],
                              [[tp["name"], tp["description"], "`%s`" % tp["expression"], SEVERITIES[tp["priority"]]]
                               for tp in protos]))
    triggers = _triggers_of(whole, t, name)
    if triggers:
        out.append("\n## Triggers\n\n")
        out.append(_table(["Name", "Description", "Expression", "Severity", "Dependencies and additional info"],
                          [[tr["name"], tr["description"], "`%s`" % tr["expression"], SEVERITIES[tr["priority"]],
                            _extra(tr)] for tr in triggers]))
    for d in t.get("dashboards", []):
        out.append("\n## Dashboard\n\n`%s`: %s.\n" % (d["name"], ", ".join(
            _widget_title(w) for w in d["pages"][0]["widgets"])))
    return "".join(out)


def _widget_title(w: Dict[str, Any]) -> str:
    if w["type"] == "GRAPH_CLASSIC":
        return str(w["fields"][1]["value"]["name"])
    return "%s (%s)" % (w.get("name", w["type"]), ", ".join("`%s`" % f["value"]["key"] for f in w["fields"]))


def _family(name: str) -> str:
    if name == fleet.FLEET:
        return "fleet"
    return "mirrorlist" if name == service.MIRRORLIST else "active" if "active" in name else "passive"


_AGENT_REQ = ("A Zabbix agent (zabbix_agentd or zabbix_agent2) with the conntrack_zbx package on the host: "
              "its UserParameter conf and, for the talker and namespace keys, its sudo grant. The host's "
              "system python3 (3.6 or newer) and nothing else. See [the install guide](../install.md).")
REQUIREMENTS = {
    "passive": _AGENT_REQ + " The server (or proxy) polls the agent: the agent's `Server` lists it.",
    "active": _AGENT_REQ + " The agent sends its values: `ServerActive` points at the server or proxy and "
              "`Hostname` equals the host's name in Zabbix.",
    "mirrorlist": "A Zabbix server or proxy that can reach the service over HTTP; nothing on the host.",
    "fleet": "Zabbix 6.0 or newer (aggregate functions over a host group); the nodes in one host group, each "
             "linked to a conntrack template; an API token the server uses to list the group's items.",
}
# How the incident pages, per common action: README, the runbook and these READMEs say the same.
PAGES = ("an action paging from Average up then gets five pages about the incident's cause (the network "
         "named as culprit, the same network once the table is past the warning level, the network as a leak, "
         "the drops, the service), one paging from High up two (the network once the table is past the "
         "warning level, before the first drop, and the drops)")

SETUP = {
    "passive": "Install the package on the host (`dpkg -i conntrack-zbx_*.deb` or the rpm), restart the "
               "agent, import `templates/conntrack_zbx.yaml` (`conntrack-zbx template import`) and link "
               "the template; `--runbook-url URL`, where you publish docs/runbook.md, gives every trigger "
               "a link to its section. Set `{$CONNTRACK.TALKER.NOT_MATCHES}` to known NAT gateways. To "
               "be paged, create an action for severity Average (or High) and above: %s; everything "
               "else shows as dependent or below that severity." % PAGES,
    "active": "As for the passive template, with the agent in active mode. Recommended with "
              "zabbix_agent2: while the table is full the kernel drops the agent's connections to the "
              "server too; agent2 keeps collecting, buffers the values and sends them afterwards with "
              "their own time stamps, so the incident's graphs are not blank (measured: all ~9 values "
              "of 20 s cut off arrived). zabbix_agentd 6.0 in active mode does not: it stalls on the "
              "failing connection and loses nearly all of them (1 of ~9), like passive polls. Keep "
              "agent2's buffer large enough for the outage (`BufferSize`, `EnablePersistentBuffer=1`).",
    "fleet": "`conntrack-zbx fleet --group NAME --setup` (admin side, as `template import`): it creates the host "
             "'NAME conntrack fleet' (no interface) linked to this template, an API token for it, the macros, "
             "and the fleet dashboard. Each range over the threshold is then one problem for the whole group, "
             "escalating as it spreads: on one node, on several (`{$CONNTRACK.FLEET.MIN}`), on every node. "
             "So that a shared cause pages once, not once per node, let the paging action skip the nodes' own "
             "'who' problems (tag `cause` = `talker`) for hosts of the group; their drops still page each.",
    "mirrorlist": "Link it to the host that serves the mirrorlist: the check asks "
                  "`{$MIRRORLIST.SCHEME}://{HOST.CONN}:{$MIRRORLIST.PORT}{$MIRRORLIST.PATH}` from the "
                  "server; the defaults work for a service on port 80 of the host's address.",
}


def _pre(item: Dict[str, Any]) -> str:
    # a script of several lines is named, not printed into a table cell
    steps = [STEPS[s["type"]] + " (a script: see the template)" if "\n" in s["parameters"][0]
             else "%s: `%s`" % (STEPS[s["type"]], "`, `".join(p for p in s["parameters"] if p))
             if any(s["parameters"]) else STEPS[s["type"]] for s in item.get("preprocessing", [])]
    return ("<p>**Preprocessing**</p><p>- " + "</p><p>- ".join(steps) + "</p>") if steps else ""


def _extra(tr: Dict[str, Any]) -> str:
    parts = []
    if tr.get("recovery_expression"):
        parts.append("**Recovery expression**: `%s`" % tr["recovery_expression"])
    for d in tr.get("dependencies", []):
        parts.append("**Depends on**: %s" % d["name"])
    return "<p>" + "</p><p>".join(parts) + "</p>" if parts else ""


def _triggers_of(export: Dict[str, Any], t: Dict[str, Any], name: str) -> List[Dict[str, Any]]:
    out = []
    for item in t.get("items", []):
        out += item.get("triggers", [])
    out += [tr for tr in export.get("triggers", []) if "/%s/" % name in tr["expression"]]
    return out
