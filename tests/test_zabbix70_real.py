"""The templates on a real Zabbix 7.0 LTS frontend and API (lab/zabbix70.py): imported with an
API token, re-imported unchanged, linked to a host and to a host group; the native 7.0 file
(``template import`` sends it to a 7.0 server) against what 7.0 makes of the 6.0 one."""

import json
import os
import subprocess
import sys

import pytest

from conntrack_zbx.template import model, service
from lab.monitor import Monitor
from lab.zabbix70 import Frontend70
from tests.conftest import admin_cli, debian_pyzabbix, which_pyzabbix, require_root

pytestmark = pytest.mark.real

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GROUP = "conntrack_zbx 7.0 hosts"


@pytest.fixture(scope="module")
def z70():
    require_root()
    with Frontend70() as f:
        yield f


@pytest.fixture(scope="module")
def admin(z70):
    return Monitor(z70.url)


@pytest.fixture(scope="module")
def token(admin):
    uid = admin.call("user.get", filter={"username": ["Admin"]}, output=["userid"])[0]["userid"]
    tid = admin.call("token.create", name="conntrack-zbx import", userid=uid)["tokenids"][0]
    return admin.call("token.generate", [tid])[0]["token"]


def cli(z70, *argv, **env):
    """The command as an admin runs it, credentials only in the environment."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ZABBIX_")}
    clean.update(ZABBIX_URL=z70.url, **env)
    p = subprocess.run([sys.executable, "-m", "conntrack_zbx", "template", "import"] + list(argv),
                       cwd=REPO, env=clean, capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def exported(admin):
    ids = [t["templateid"] for t in admin.call("template.get", filter={"host": [model.CONNTRACK, service.MIRRORLIST,
                                                                                 service.NODE]},
                                              output=["templateid"])]
    assert len(ids) == 3
    return admin.call("configuration.export", format="yaml", options={"templates": ids})


def test_it_is_a_70_server(z70):
    assert z70.api_version().startswith("7.0.")


def test_import_with_a_token_then_reimport_changes_nothing(z70, admin, token):
    rc, out, err = cli(z70, "--services", ZABBIX_TOKEN=token)
    assert rc == 0, err
    assert json.loads(out)["server"] == "7.0" and token not in out + err
    first = exported(admin)
    rc, out, err = cli(z70, "--services", ZABBIX_TOKEN=token)
    assert rc == 0, err
    assert exported(admin) == first
    triggers = admin.call("trigger.get", templateids=[t["templateid"] for t in admin.call(
        "template.get", filter={"host": [model.CONNTRACK]}, output=["templateid"])], output=["description"])
    assert any("Table usage is very high" in t["description"] for t in triggers)
    assert admin.call("discoveryrule.get", filter={"key_": ["conntrack.talkers.discovery"]}, templated=True,
                      output=["itemid"])


def test_a_bad_token_is_refused_with_the_api_message(z70):
    rc, out, err = cli(z70, ZABBIX_TOKEN="0" * 64)
    assert rc == 1 and "ZABBIX_TOKEN failed" in err and "0" * 64 not in err


def test_debians_own_pyzabbix_082_imports_with_a_token_and_a_password(z70, token):
    """The package suggests python3-pyzabbix: Debian 12's 0.8.2 has no api_token and logs in with
    the ``user`` parameter 6.4 removed; the admin commands log in themselves."""
    lib = debian_pyzabbix()
    where, has_token = which_pyzabbix(lib)
    assert where.startswith(lib) and has_token == "False"  # really the old one
    for env in ({"ZABBIX_TOKEN": token}, {"ZABBIX_USER": "Admin", "ZABBIX_PASSWORD": "zabbix"}):
        rc, out, err = admin_cli(z70.url, pythonpath=lib, **env)
        assert rc == 0 and json.loads(out)["server"] == "7.0", err
        assert "internal error" not in err
    rc, out, err = admin_cli(z70.url, pythonpath=lib, ZABBIX_TOKEN="0" * 64)
    assert rc == 1 and "ZABBIX_TOKEN failed" in err, err


def test_link_to_a_host_and_to_a_group(z70, admin, token):
    gid = admin.call("hostgroup.create", name=GROUP)["groupids"][0]
    for name in ("ct70-a", "ct70-b"):
        admin.call("host.create", host=name, groups=[{"groupid": gid}],
                   interfaces=[{"type": 1, "main": 1, "useip": 1, "ip": "127.0.0.1", "dns": "", "port": "10050"}])
    rc, out, err = cli(z70, "--services", "--host", "ct70-a", "--template", service.NODE, ZABBIX_TOKEN=token)
    assert rc == 0, err
    assert json.loads(out)["linked"]["hosts"] == ["ct70-a"]
    # the group: ct70-a already has the conntrack template through the node template
    rc, out, err = cli(z70, "--group", GROUP, ZABBIX_USER="Admin", ZABBIX_PASSWORD="zabbix")
    assert rc == 0, err
    assert json.loads(out)["linked"]["hosts"] == ["ct70-b"]
    assert json.loads(out)["linked"]["already"] == ["ct70-a"]
    linked = admin.call("host.get", groupids=[gid], selectParentTemplates=["host"], output=["host"])
    names = {h["host"]: sorted(t["host"] for t in h["parentTemplates"]) for h in linked}
    assert names == {"ct70-a": [service.NODE], "ct70-b": [model.CONNTRACK]}
    rc, out, err = cli(z70, "--group", GROUP, ZABBIX_TOKEN=token)  # again: nothing to do, no error
    assert rc == 0 and json.loads(out)["linked"]["hosts"] == [], err


def _normalized(text):
    """An export as a 7.0 server writes it, without what the native file adds on purpose (the
    vendor, the talkers item's timeout and its macro's 7.0 value) and with item-history columns
    as a set (their numbering is free)."""
    import yaml

    doc = yaml.safe_load(text)["zabbix_export"]
    for t in doc["templates"]:
        t.pop("vendor", None)
        for item in t.get("items", []):
            item.pop("timeout", None)
        t["macros"] = [m for m in t.get("macros", []) if m["macro"] != "{$CONNTRACK.TALKERS.TIMEOUT}"]
        for rule in t.get("discovery_rules", []):
            rule.pop("enabled_lifetime_type", None)  # the native file says DISABLE_NEVER, as 6.0 did
        for d in t.get("dashboards", []):
            for page in d["pages"]:
                for w in page["widgets"]:
                    if w["type"] == "itemhistory":
                        cols = {}
                        for f in w["fields"]:
                            if f["name"].startswith("columns."):
                                _, n, what = f["name"].split(".", 2)
                                cols.setdefault(n, {})[what] = json.dumps(f["value"], sort_keys=True)
                        w["fields"] = sorted(json.dumps(c, sort_keys=True) for c in cols.values())
    return doc


def test_the_native_70_file_is_what_70_makes_of_the_60_one(z70, admin):
    """Imported into the same 7.0 server, the 6.0 file (converted by the server) and the native
    7.0 file export the same templates, apart from what only 7.0 has: the talkers item's own
    timeout (and vendor). The native file is what a 7.0 server gets from ``template import``."""
    from conntrack_zbx import deploy
    from conntrack_zbx.template.render import template_yaml

    rules = deploy.import_rules((7, 0), delete_missing=True)
    admin.call("configuration.import", format="yaml", source=template_yaml(None, True, "6.0"), rules=rules)
    converted = exported(admin)
    admin.call("configuration.import", format="yaml", source=template_yaml(None, True, "7.0"), rules=rules)
    native = exported(admin)
    assert native != converted  # the timeout and the vendor are really there
    assert "timeout: '{$CONNTRACK.TALKERS.TIMEOUT}'" in native and "vendor:" in native
    assert _normalized(native) == _normalized(converted)
    assert deploy.export_format((7, 0)) == "7.0" and deploy.export_format((6, 4)) == "6.0"


def test_the_60_file_on_a_newer_server_is_upgraded_by_one_import(z70, admin, token):
    """A shop imported the 6.0 file, then upgraded its server: its fleet item's token travels in the
    request body, which 7.2 removed. `template import` (no --file) sends the file for the server and
    says what it changed; 7.0.22 still takes the body, so the 6.0 file imports here first."""
    from conntrack_zbx.template.fleet import GET_KEY

    def fleet_item():
        (item,) = admin.call("item.get", templated=True, filter={"key_": [GET_KEY]}, output=["posts", "headers"])
        return item

    rc, out, err = admin_cli(z70.url, "--file", os.path.join(REPO, "templates", "conntrack_zbx.yaml"),
                             ZABBIX_TOKEN=token)
    assert rc == 0 and json.loads(out)["format"] == "6.0", err
    assert '"auth":' in fleet_item()["posts"]
    rc, out, err = admin_cli(z70.url, ZABBIX_TOKEN=token)
    doc = json.loads(out)
    assert rc == 0 and doc["format"] == "7.0" and "Authorization: Bearer" in doc["upgraded"], err
    item = fleet_item()
    assert '"auth":' not in item["posts"]
    assert {"name": "Authorization", "value": "Bearer {$CONNTRACK.FLEET.API.TOKEN}"} in item["headers"]
    rc, out, err = admin_cli(z70.url, ZABBIX_TOKEN=token)  # again: nothing left to upgrade
    assert rc == 0 and "upgraded" not in json.loads(out)


def test_the_60_file_is_refused_on_72_and_newer():
    from conntrack_zbx import deploy
    from conntrack_zbx.errors import Refused

    with open(os.path.join(REPO, "templates", "conntrack_zbx.yaml")) as f:
        fmt = deploy.file_format(f.read())
    assert fmt == "6.0"
    deploy.refuse_body_auth((7, 0), fmt)  # 7.0 and 7.1 still take the body
    for version in ((7, 2), (7, 4), (8, 0)):
        with pytest.raises(Refused, match="conntrack_zbx_7.0.yaml"):
            deploy.refuse_body_auth(version, fmt)
    deploy.refuse_body_auth((8, 0), "7.0")
