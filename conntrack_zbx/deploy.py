"""Import the template into a Zabbix server and link it to hosts (admin side, through
``zabbixapi``): every API error surfaces as ``DeployFailed`` with the API's own message, and the
CLI exits non-zero with it."""

from typing import TYPE_CHECKING, Dict, List, Optional, Set, Tuple

from conntrack_zbx.errors import DeployFailed
from conntrack_zbx.template import export
from conntrack_zbx.zabbixapi import call, connect, server_version

if TYPE_CHECKING:
    from pyzabbix import ZabbixAPI  # type: ignore[attr-defined]

    from conntrack_zbx.options import TemplateArgs


IMPORT_RULES = {
    "groups": {"createMissing": True, "updateExisting": True},
    "templates": {"createMissing": True, "updateExisting": True},
    "templateLinkage": {"createMissing": True},
    "items": {"createMissing": True, "updateExisting": True},
    "triggers": {"createMissing": True, "updateExisting": True},
    "graphs": {"createMissing": True, "updateExisting": True},
    "discoveryRules": {"createMissing": True, "updateExisting": True},
    "httptests": {"createMissing": True, "updateExisting": True},
    "templateDashboards": {"createMissing": True, "updateExisting": True},
    "valueMaps": {"createMissing": True, "updateExisting": True},
}


def import_rules(version: Tuple[int, int], delete_missing: bool = False) -> Dict[str, Dict[str, bool]]:
    """The import rules for a server version (whichever file format it gets): 6.2 split
    ``groups`` into ``template_groups`` and ``host_groups``."""
    rules = {k: dict(v) for k, v in IMPORT_RULES.items()}
    if version >= (6, 2):
        rules["template_groups"] = rules.pop("groups")
    if delete_missing:
        for k in ("templateLinkage", "items", "triggers", "graphs", "discoveryRules", "httptests",
                  "templateDashboards", "valueMaps"):
            rules[k]["deleteMissing"] = True
    return rules


def export_format(version: Tuple[int, int]) -> str:
    """The file a server gets: the native 7.0 one from 7.0 on (later servers convert it
    upwards), 6.0 for 6.0 to 6.4."""
    return "7.0" if version >= (7, 0) else "6.0"


def import_template(zapi: "ZabbixAPI", source: str, delete_missing: bool = False) -> None:
    rules = import_rules(server_version(zapi), delete_missing)
    call(zapi, "configuration.import", format="yaml", source=source, rules=rules)


def link(zapi: "ZabbixAPI", template: str, host: Optional[str] = None,
         group: Optional[str] = None) -> Dict[str, List[str]]:
    """Link ``template`` to one host or to every host of a group; keep their other templates.
    A host that already has it, directly or through another template (e.g. the mirrorlist node
    template includes the conntrack one), is left alone: Zabbix refuses to link a template twice.
    Returns {"hosts": newly linked, "already": left alone}."""
    found = call(zapi, "template.get", filter={"host": [template]}, output=["templateid"])
    if not found:
        raise DeployFailed("template %r is not on the server: import it first" % template)
    tid = found[0]["templateid"]
    if host:
        hosts = call(zapi, "host.get", filter={"host": [host]}, output=["hostid", "host"])
        if not hosts:
            raise DeployFailed("host %r not found" % host)
    else:
        groups = call(zapi, "hostgroup.get", filter={"name": [group]}, output=["groupid"])
        if not groups:
            raise DeployFailed("host group %r not found" % group)
        hosts = call(zapi, "host.get", groupids=[groups[0]["groupid"]], output=["hostid", "host"])
    todo = [h for h in hosts if tid not in _templates_of(zapi, h["hostid"])]
    if todo:
        call(zapi, "host.massadd", hosts=[{"hostid": h["hostid"]} for h in todo],
             templates=[{"templateid": tid}])
    return {"hosts": sorted(h["host"] for h in todo),
            "already": sorted(h["host"] for h in hosts if h not in todo)}


def _templates_of(zapi: "ZabbixAPI", hostid: str) -> Set[str]:
    """Every template a host has, directly or nested."""
    seen = set()  # type: Set[str]
    frontier = [hostid]
    while frontier:
        got = call(zapi, "template.get", hostids=frontier, output=["templateid"])
        frontier = [t["templateid"] for t in got if t["templateid"] not in seen]
        seen.update(frontier)
    return seen


def template_names(services: bool = False) -> List[str]:
    return [t["template"] for t in export.export(services=services)["zabbix_export"]["templates"]]


def read_export(path: str) -> str:
    """A template export file, checked before anything reaches the server: UTF-8 YAML whose top
    is ``zabbix_export``, as the frontend's export and ``make generate`` write it."""
    import yaml

    from conntrack_zbx.errors import Malformed, NotAvailable

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise NotAvailable("cannot read %s: %s" % (path, e.strerror or e)) from None
    try:
        source = data.decode("utf-8")
        doc = yaml.safe_load(source)
    except UnicodeDecodeError as e:
        raise Malformed("%s is not a template export: not UTF-8 text (byte %d); give the YAML file the "
                        "frontend exports or templates/conntrack_zbx.yaml" % (path, e.start)) from None
    except yaml.YAMLError as e:
        raise Malformed("%s is not a template export: not valid YAML (%s)" % (path, str(e).splitlines()[0])) from None
    if not isinstance(doc, dict) or "zabbix_export" not in doc:
        raise Malformed("%s is not a template export: its top level has no 'zabbix_export' (give the YAML "
                        "file the frontend exports or templates/conntrack_zbx.yaml)" % path)
    return source


BODY_AUTH = '"auth":'  # the 6.0 file's fleet API call carries its token here; Zabbix 7.2 removed it


def file_format(source: str) -> str:
    """An export's format (``zabbix_export: version: 'X.Y'``)."""
    import re

    m = re.search(r"^\s+version:\s*'?(\d+\.\d+)", source, re.M)
    return m.group(1) if m else "?"


def refuse_body_auth(version: Tuple[int, int], fmt: str) -> None:
    """The 6.0 file on a 7.2+ server: its fleet item would fail on every poll."""
    if fmt == "6.0" and version >= (7, 2):
        from conntrack_zbx.errors import Refused

        raise Refused("this server is Zabbix %d.%d: the 6.0 file's fleet item sends its API token in the request "
                      "body, which 7.2 removed; import templates/conntrack_zbx_7.0.yaml instead (or run template "
                      "import without --file: it picks the file for the server)" % version)


def _fleet_posts(zapi: "ZabbixAPI") -> List[str]:
    from conntrack_zbx.template.fleet import GET_KEY

    return [str(i.get("posts", "")) for i in call(zapi, "item.get", templated=True, filter={"key_": [GET_KEY]},
                                                   output=["posts"])]


def run(args: "TemplateArgs") -> Dict[str, object]:
    """``conntrack-zbx template import``: what the CLI prints as its result."""
    runbook = args.runbook_url
    if runbook is not None:
        from conntrack_zbx.errors import Refused

        if args.file:
            raise Refused("--runbook-url sets the links of the built-in template; a --file keeps its own")
        if not runbook.startswith(("https://", "http://")) or len(runbook) > 2000:
            raise Refused("--runbook-url takes an http(s) URL that on-call's browser can open (where "
                          "docs/runbook.md is published), got %r" % runbook[:80])
    source = read_export(args.file) if args.file else None  # a bad file is refused before any login
    zapi = connect(args.url)
    version = server_version(zapi)
    if source is None:
        from conntrack_zbx.template.render import template_yaml
        source = template_yaml(runbook, args.services, export_format(version))
    refuse_body_auth(version, file_format(source))
    before = _fleet_posts(zapi)
    import_template(zapi, source, delete_missing=args.delete_missing)
    result = {"imported": template_names(args.services), "url": zapi.url,
              "server": "%d.%d" % version, "format": file_format(source)}  # type: Dict[str, object]
    if any(BODY_AUTH in p for p in before) and not any(BODY_AUTH in p for p in _fleet_posts(zapi)):
        result["upgraded"] = ("the fleet item's API call now sends its token as 'Authorization: Bearer' (the "
                              "6.0 file's token in the request body stops working on Zabbix 7.2 and newer)")
    if args.host or args.group:
        result["linked"] = dict(link(zapi, args.template, host=args.host, group=args.group), template=args.template)
    return result
