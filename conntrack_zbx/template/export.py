"""The whole export: the product's templates (``model.py``) and, on request, the incident's
service ones (``service.py``), as one ``zabbix_export`` in format 6.0 or 7.0.

One model, two formats. 6.0 is the oldest LTS users still run; 7.0 servers could convert it
upwards, but a native 7.0 file is what a 7.0 admin expects to read and diff, and it carries what
only 7.0 has: per-item timeouts (since 7.0 the agent's ``Timeout`` no longer bounds a check; each
item has its own, so the talkers item gets the time a large table needs).
"""

from typing import Any, Dict, List, Optional

from conntrack_zbx.template import fleet, model, service

FORMATS = ("6.0", "7.0")
# The talkers key's timeout parameter (its macro) per format: what the call may take. 6.0 runs
# it under the agent's Timeout (3 s by default, 30 at most); 7.0 gives the item this much, enough
# for a 1,048,576-entry long-tail table (docs/performance.md).
TALKERS_TIMEOUT = {"6.0": "3", "7.0": "20"}
TIMEOUT_70 = ("conntrack.talkers parameter 7 and the item's own timeout (Zabbix 7.0): seconds the call may take; "
              "it reads as much of the table as fits and reports the rest as truncated (2..30). 20 s reads a "
              "table of a million entries whole.")
# 7.0 dashboards are 72 columns wide where 6.0's are 24
GRID_SCALE = 3


def export(runbook: Optional[str] = None, services: bool = False, version: str = "6.0") -> Dict[str, Any]:
    """The 6.0 export of the product's templates (passive and active), and with ``services`` the
    incident's mirrorlist service templates too (``template.service``: the web check and the node
    that links both; ``template import --services``). Triggers over several items (and web
    scenario items, which are not template items in the file) and graphs go at the top level, as
    Zabbix's own exports do.

    ``runbook``: where the admin publishes docs/runbook.md (``template import --runbook-url``).
    With it, every trigger links its section ("{$CONNTRACK.RUNBOOK.URL}#leak", the macro defaulting
    to that URL, overridable per host); without it no trigger has a link at all, since a default
    would be a dead one (a path on the agent host is nothing the frontend's browser can open). The
    steps on-call needs are in the descriptions either way."""
    conntrack = model.conntrack_template()
    if version not in FORMATS:
        raise ValueError("no export format %r (%s)" % (version, ", ".join(FORMATS)))
    templates = [conntrack, model.active_variant(conntrack, model.CONNTRACK_ACTIVE), fleet.fleet_template(version)]
    groups = [{"uuid": model.GROUP_UUID, "name": model.GROUP}]
    if services:
        templates += service.templates()
        groups.append({"uuid": service.GROUP_UUID, "name": service.GROUP})
    triggers, graphs = [], []
    for t in templates:
        model.resolve_dependencies(t)
        triggers += t.pop("triggers", [])
        graphs += t.pop("graphs", [])
    _runbook(templates + triggers, runbook)
    if version == "7.0":
        for t in templates:
            _to_70(t)
    return {"zabbix_export": {
        "version": version,
        "template_groups" if version == "7.0" else "groups": groups,
        "templates": templates,
        "triggers": triggers,
        "graphs": graphs,
    }}


def _to_70(template: Dict[str, Any]) -> None:
    """What a 7.0 file says differently: the vendor, the talkers item's own timeout (and its
    macro's 7.0 default), and the dashboards' widgets in 7.0's names and 72-column grid, as a 7.0
    server exports what it imported from 6.0 (tests/test_zabbix70_real.py compares the two)."""
    from conntrack_zbx import __version__

    template["vendor"] = {"name": "conntrack_zbx", "version": "7.0-%s" % __version__}
    template["macros"] = [dict(m, value=TALKERS_TIMEOUT["7.0"], description=TIMEOUT_70)
                          if m["macro"] == "{$CONNTRACK.TALKERS.TIMEOUT}" else m
                          for m in template.get("macros", [])]
    for item in template.get("items", []):
        if item["key"].startswith(model.TALKERS_KEY.split("[")[0] + "["):
            item["timeout"] = "{$CONNTRACK.TALKERS.TIMEOUT}"
    for rule in template.get("discovery_rules", []):
        # 7.0 can disable what discovery lost before deleting it; as in 6.0 it is kept enabled for
        # {$CONNTRACK.TALKER.LOST}: a disabled talker's triggers would stop seeing the leak end
        rule["enabled_lifetime_type"] = "DISABLE_NEVER"
    for dashboard in template.get("dashboards", []):
        for page in dashboard["pages"]:
            page["widgets"] = [_widget_70(w, "AAAA" + chr(ord("A") + i)) for i, w in enumerate(page["widgets"])]


def _widget_70(w: Dict[str, Any], reference: str) -> Dict[str, Any]:
    out = {"type": w["type"]}  # type: Dict[str, Any]
    for k in ("name", "x", "y", "width", "height"):
        if k in w:
            out[k] = str(int(w[k]) * GRID_SCALE) if k in ("x", "width") else w[k]
    fields = [f for f in w["fields"] if f["name"] != "source_type"]
    if w["type"] == "GRAPH_CLASSIC":
        out["type"] = "graph"
        fields.append({"type": "INTEGER", "name": "source_type", "value": "0"})
    elif w["type"] == "PLAIN_TEXT":
        # 7.0's item history widget: one column per item, the network in a monospace font
        out["type"] = "itemhistory"
        cols = []  # type: List[Dict[str, Any]]
        for i, f in enumerate(fields):
            cols.append({"type": "ITEM", "name": "columns.%d.itemid" % i, "value": f["value"]})
            if f["value"]["key"] == model.TOP_NETWORK_KEY:
                cols.append({"type": "INTEGER", "name": "columns.%d.monospace_font" % i, "value": "1"})
            cols.append({"type": "STRING", "name": "columns.%d.name" % i, "value": _item_name(f["value"]["key"])})
        fields = cols + [{"type": "INTEGER", "name": "show_timestamp", "value": "1"}]
    fields.append({"type": "STRING", "name": "reference", "value": reference})
    out["fields"] = sorted(fields, key=lambda f: f["name"])
    return out


def _item_name(key: str) -> str:
    for item in model.conntrack_template()["items"]:
        if item["key"] == key:
            return str(item["name"])
    raise KeyError(key)


def _runbook(nodes: List[Any], url: Optional[str]) -> None:
    """Point the runbook macros at ``url``, or drop them and every trigger's link (see export)."""
    def walk(node: Any) -> None:
        if isinstance(node, list):
            for x in node:
                walk(x)
        elif isinstance(node, dict):
            if "expression" in node and "url" in node and url is None:  # a trigger, not a web step
                del node["url"]
            macros = node.get("macros")
            if isinstance(macros, list):
                keep = []
                for m in macros:
                    if m["macro"].endswith(".RUNBOOK.URL}"):
                        if url is None:
                            continue
                        m = dict(m, value=url)
                    keep.append(m)
                node["macros"] = keep
            for v in node.values():
                walk(v)
    walk(nodes)
