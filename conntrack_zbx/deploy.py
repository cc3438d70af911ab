"""Import the template into a Zabbix server and link it to hosts (admin side: pyzabbix).

Credentials come from the environment (ZABBIX_URL, ZABBIX_TOKEN or ZABBIX_USER/ZABBIX_PASSWORD)
or options, and are never printed. pyzabbix's ``with`` block swallows API errors, so it is not
used: every API error surfaces as ``DeployFailed`` with the API's own message, and the CLI exits
non-zero with it.
"""

import os
from typing import Dict, List, Optional

from pyzabbix import ZabbixAPI, ZabbixAPIException

from conntrack_zbx.errors import DeployFailed
from conntrack_zbx.template import model


def connect(url: Optional[str] = None, token: Optional[str] = None, user: Optional[str] = None,
            password: Optional[str] = None, timeout: float = 60) -> ZabbixAPI:
    url = url or os.environ.get("ZABBIX_URL")
    token = token or os.environ.get("ZABBIX_TOKEN")
    user = user or os.environ.get("ZABBIX_USER")
    password = password if password is not None else os.environ.get("ZABBIX_PASSWORD")
    if not url:
        raise DeployFailed("no Zabbix URL: pass --url or set ZABBIX_URL")
    if not token and not (user and password is not None):
        raise DeployFailed("no credentials: set ZABBIX_TOKEN, or ZABBIX_USER and ZABBIX_PASSWORD")
    zapi = ZabbixAPI(url, timeout=timeout)
    try:
        if token:
            zapi.login(api_token=token)
        else:
            zapi.login(user or "", password or "")
    except ZabbixAPIException as e:
        raise DeployFailed("login to %s failed: %s" % (url, _api_message(e))) from None
    except OSError as e:
        raise DeployFailed("cannot reach %s: %s" % (url, e)) from None
    return zapi


def _api_message(e: ZabbixAPIException) -> str:
    data = getattr(e, "data", None) or (e.args[0] if e.args else "")
    return str(data)


def call(zapi: ZabbixAPI, method: str, _params=None, **params):
    """One API call; positional ``_params`` for methods that take an array."""
    try:
        return zapi.do_request(method, params if _params is None else _params)["result"]
    except ZabbixAPIException as e:
        raise DeployFailed("%s failed: %s" % (method, _api_message(e))) from None
    except OSError as e:
        raise DeployFailed("%s failed: %s" % (method, e)) from None


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


def import_template(zapi: ZabbixAPI, source: str, delete_missing: bool = False) -> None:
    rules = {k: dict(v) for k, v in IMPORT_RULES.items()}
    if delete_missing:
        for k in ("templateLinkage", "items", "triggers", "graphs", "discoveryRules", "httptests",
                  "templateDashboards", "valueMaps"):
            rules[k]["deleteMissing"] = True
    call(zapi, "configuration.import", format="yaml", source=source, rules=rules)


def link(zapi: ZabbixAPI, template: str, host: Optional[str] = None,
         group: Optional[str] = None) -> List[str]:
    """Link ``template`` to one host or to every host of a group; keep their other templates."""
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
    if hosts:
        call(zapi, "host.massadd", hosts=[{"hostid": h["hostid"]} for h in hosts],
             templates=[{"templateid": tid}])
    return sorted(h["host"] for h in hosts)


def template_names() -> List[str]:
    return [t["template"] for t in model.export()["zabbix_export"]["templates"]]


def run(args) -> Dict[str, object]:
    """``conntrack-zbx template import``: what the CLI prints as its result."""
    if args.file:
        with open(args.file) as f:
            source = f.read()
    else:
        from conntrack_zbx.template.render import template_yaml
        source = template_yaml()
    zapi = connect(args.url)
    import_template(zapi, source, delete_missing=args.delete_missing)
    result = {"imported": template_names(), "url": zapi.url}  # type: Dict[str, object]
    if args.host or args.group:
        result["linked"] = {"template": args.template,
                            "hosts": link(zapi, args.template, host=args.host, group=args.group)}
    return result
