"""Render the template model: the YAML export and a README per template (official style)."""

from typing import Any, Dict, List, Optional

import yaml

from conntrack_zbx.template import model


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

def _str(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def template_yaml(runbook: Optional[str] = None) -> str:
    return yaml.dump(model.export(runbook), Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                     width=10000, default_flow_style=False)


def _table(header: List[str], rows: List[List[str]]) -> str:
    def cell(v: str) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")
    out = ["|" + "|".join(header) + "|", "|" + "|".join("---" for _ in header) + "|"]
    out += ["|" + "|".join(cell(c) for c in r) + "|" for r in rows]
    return "\n".join(out) + "\n"


TESTED_VERSIONS = (
    "Exported in format 6.0. Tested on real installations: Zabbix 6.0.14 (server, proxy with "
    "SQLite, zabbix_agentd and zabbix_agent2) and the Zabbix 7.0.22 frontend and API (import, "
    "re-import, linking). Agent side: Python 3.6, 3.8, 3.11 and 3.13.")


def template_readme(name: str) -> str:
    export = model.export()["zabbix_export"]
    t = next(t for t in export["templates"] if t["template"] == name)
    out = ["# %s\n" % name, "## Overview\n", t["description"].split("\n\n")[0] + "\n"]
    out.append("\nGenerated from `conntrack_zbx/template/model.py` together with "
               "`templates/conntrack_zbx.yaml`.\n")
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
            "`%s`, `%s`, `%s`" % (model.WEB_TIME, model.WEB_FAIL, model.WEB_ERROR)]
            for s in tt["steps"]]))
    for rule in t.get("discovery_rules", []):
        out.append("\n## Discovery rules\n\n")
        conditions = "; ".join("`%s` %s `%s`" % (c["macro"], "does not match" if c.get("operator") else "matches",
                                                  c["value"]) for c in rule["filter"]["conditions"])
        out.append(_table(["Name", "Description", "Type", "Key and additional info"], [[
            rule["name"], rule["description"], ITEM_TYPES[rule["type"]],
            "`%s`; filter: %s; keep lost resources `%s`" % (rule["key"], conditions, rule["lifetime"])]]))
        out.append("\n### Item prototypes\n\n")
        out.append(_table(["Name", "Description", "Key and additional info"],
                          [[p["name"], p["description"], "`%s`%s" % (p["key"], _pre(p))]
                           for p in rule["item_prototypes"]]))
        protos = [tp for p in rule["item_prototypes"] for tp in p.get("trigger_prototypes", [])]
        if protos:
            out.append("\n### Trigger prototypes\n\n")
            out.append(_table(["Name", "Description", "Expression", "Severity"],
                              [[tp["name"], tp["description"], "`%s`" % tp["expression"], SEVERITIES[tp["priority"]]]
                               for tp in protos]))
    triggers = _triggers_of(export, t, name)
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
    return "mirrorlist" if name == model.MIRRORLIST else "active" if "active" in name else "passive"


_AGENT_REQ = ("A Zabbix agent (zabbix_agentd or zabbix_agent2) with the conntrack_zbx package on the host: "
              "its UserParameter conf and, for the talker and namespace keys, its sudo grant. The host's "
              "system python3 (3.6 or newer) and nothing else. See [the install guide](../install.md).")
REQUIREMENTS = {
    "passive": _AGENT_REQ + " The server (or proxy) polls the agent: the agent's `Server` lists it.",
    "active": _AGENT_REQ + " The agent sends its values: `ServerActive` points at the server or proxy and "
              "`Hostname` equals the host's name in Zabbix.",
    "mirrorlist": "A Zabbix server or proxy that can reach the service over HTTP; nothing on the host.",
}
SETUP = {
    "passive": "Install the package on the host (`dpkg -i conntrack-zbx_*.deb` or the rpm), restart the "
               "agent, import `templates/conntrack_zbx.yaml` (`conntrack-zbx template import`) and link "
               "the template; `--runbook-url URL`, where you publish docs/runbook.md, gives every trigger "
               "a link to its section. Set `{$CONNTRACK.TALKER.NOT_MATCHES}` to known NAT gateways. To "
               "be paged, create an action for severity Average and above: the incident then pages "
               "four times about its cause (the network named as culprit, the same network as a leak, "
               "the drops, the service), everything else shows as dependent or below that severity.",
    "active": "As for the passive template, with the agent in active mode. Recommended with "
              "zabbix_agent2: while the table is full the kernel drops the agent's connections to the "
              "server too; agent2 keeps collecting, buffers the values and sends them afterwards with "
              "their own time stamps, so the incident's graphs are not blank (measured: all ~9 values "
              "of 20 s cut off arrived). zabbix_agentd 6.0 in active mode does not: it stalls on the "
              "failing connection and loses nearly all of them (1 of ~9), like passive polls. Keep "
              "agent2's buffer large enough for the outage (`BufferSize`, `EnablePersistentBuffer=1`).",
    "mirrorlist": "Link it to the host that serves the mirrorlist: the check asks "
                  "`{$MIRRORLIST.SCHEME}://{HOST.CONN}:{$MIRRORLIST.PORT}{$MIRRORLIST.PATH}` from the "
                  "server; the defaults work for a service on port 80 of the host's address.",
}


def _pre(item: Dict[str, Any]) -> str:
    steps = ["%s: `%s`" % (STEPS[s["type"]], "`, `".join(p for p in s["parameters"] if p))
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
