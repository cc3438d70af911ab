"""Structural checks of the generated template, like a golden file with rules."""

import re

import pytest
import yaml

from conntrack_zbx import keys
from conntrack_zbx.template import model, service
from conntrack_zbx.template.render import template_yaml

EXPORT = yaml.safe_load(template_yaml(services=True))["zabbix_export"]  # the product and the service side
TEMPLATES = {t["template"]: t for t in EXPORT["templates"]}
MACRO_RE = re.compile(r"\{\$([A-Z0-9_.]+)(?::[^}]*)?\}")
REF_RE = re.compile(r"/([^/]+)/([a-z0-9_.]+(?:\[[^\]]*\])?)")


def walk(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)
    elif isinstance(node, str):
        yield node


def linked(name):
    """The template and every template it links, recursively."""
    out = [name]
    for t in TEMPLATES[name].get("templates", []):
        out += linked(t["name"])
    return out


def items_of(name, prototypes=False):
    t = TEMPLATES[name]
    keys_ = {i["key"] for i in t.get("items", [])}
    for ht in t.get("httptests", []):
        keys_ |= {"web.test.fail[%s]" % ht["name"], "web.test.error[%s]" % ht["name"],
                  "web.test.in[%s,,bps]" % ht["name"]}
        for st in ht["steps"]:
            keys_ |= {"web.test.time[%s,%s,resp]" % (ht["name"], st["name"]),
                      "web.test.rspcode[%s,%s]" % (ht["name"], st["name"]),
                      "web.test.in[%s,%s,bps]" % (ht["name"], st["name"])}
    if prototypes:
        for rule in t.get("discovery_rules", []):
            keys_ |= {p["key"] for p in rule["item_prototypes"]}
    return keys_


def test_no_yaml_anchors_or_aliases():
    """No Zabbix export has them; each shared value is written out where it applies."""
    text = template_yaml()
    assert not re.search(r"(^|\s)[&*]id\d+", text)
    with open(model.__file__.replace("conntrack_zbx/template/model.py", "templates/conntrack_zbx.yaml")) as f:
        assert not re.search(r"(^|\s)[&*]id\d+", f.read())


def test_the_service_templates_are_an_opt_in():
    """The default export (templates/conntrack_zbx.yaml, `template import`) is the product's three
    templates (the node's, passive and active, and the fleet's);
    `--services` adds the incident's mirrorlist side, whose file imports on its own
    (the node links the conntrack template, so that file carries it too)."""
    from conntrack_zbx.template import fleet, service

    product = yaml.safe_load(template_yaml())["zabbix_export"]
    assert [t["template"] for t in product["templates"]] == [model.CONNTRACK, model.CONNTRACK_ACTIVE, fleet.FLEET]
    assert [g["name"] for g in product["groups"]] == ["Templates/Operating systems"]
    assert [t["template"] for t in EXPORT["templates"]] == [model.CONNTRACK, model.CONNTRACK_ACTIVE, fleet.FLEET,
                                                           service.MIRRORLIST, service.NODE, service.NODE_ACTIVE]
    assert EXPORT["templates"][:3] == product["templates"]
    for rel, export in (("conntrack_zbx.yaml", product), ("mirrorlist_service.yaml", EXPORT)):
        with open(model.__file__.replace("conntrack_zbx/template/model.py", "templates/" + rel)) as f:
            assert yaml.safe_load(f)["zabbix_export"] == export, rel


def test_format_version_and_groups():
    assert EXPORT["version"] == "6.0"
    assert "template_groups" not in EXPORT  # 6.2+ only; 6.0 rejects it
    # the official groups, with the UUIDs the server's own data gives them
    assert EXPORT["groups"] == [{"uuid": "846977d1dfed4968bc5f8bdb363285bc", "name": "Templates/Operating systems"},
                                {"uuid": "a571c0d144b14fd4a87a9d9b2aa9fcd6", "name": "Templates/Applications"}]
    for t in EXPORT["templates"]:
        want = "Templates/Applications" if t["template"].startswith("Mirrorlist") else "Templates/Operating systems"
        assert t["groups"] == [{"name": want}], t["template"]


def test_uuids_valid_unique_and_stable():
    uuids = [v for d in _dicts(EXPORT) for k, v in d.items() if k == "uuid"]
    assert len(uuids) > 40
    assert len(uuids) == len(set(uuids))
    for u in uuids:
        assert re.fullmatch(r"[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}", u), u
    again = yaml.safe_load(template_yaml(services=True))["zabbix_export"]
    assert [v for d in _dicts(again) for k, v in d.items() if k == "uuid"] == uuids
    assert model.uid(model.CONNTRACK) == "ff155ce95f0c4774bd053fb97ffc483f"  # pinned: never changes


def _dicts(node):
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _dicts(v)
    elif isinstance(node, list):
        for v in node:
            yield from _dicts(v)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_every_macro_used_is_defined(name):
    defined = {m["macro"][2:-1] for t in linked(name) for m in TEMPLATES[t].get("macros", [])}
    used = set()
    for s in walk(TEMPLATES[name]):
        used |= set(MACRO_RE.findall(s))
    for tr in EXPORT["triggers"]:
        if "/%s/" % name in tr["expression"]:
            for s in walk(tr):
                used |= set(MACRO_RE.findall(s))
    assert used - defined == set()
    assert used or not TEMPLATES[name].get("macros"), name  # a template defining macros uses them


def test_agent_keys_match_the_conf_both_ways():
    polled = {i["key"] for t in TEMPLATES.values() for i in t.get("items", [])
              if i.get("type", "ZABBIX_PASSIVE") == "ZABBIX_PASSIVE"}
    conf = {ln.split("=", 1)[1].split(",", 1)[0] for ln in keys.agent_conf().splitlines()
            if ln.startswith("UserParameter=")}
    base = {k.split("[")[0] for k in polled}
    assert base == {k.split("[")[0] for k in conf} == {k.key for k in keys.KEYS}
    for k in keys.KEYS:  # a key with parameters is flexible in the conf and passes them all
        assert keys.conf_key(k) in conf
        if k.params:
            used = next(p for p in polled if p.startswith(k.key + "["))
            assert used.count(",") == len(k.params) - 1


def test_every_dependent_has_its_master():
    for t in TEMPLATES.values():
        own = {i["key"] for i in t.get("items", [])}
        deps = [i for i in t.get("items", []) if i.get("type") == "DEPENDENT"]
        for rule in t.get("discovery_rules", []):
            deps.append(rule)
            deps += [p for p in rule["item_prototypes"] if p.get("type") == "DEPENDENT"]
            own |= {p["key"] for p in rule["item_prototypes"]}  # a prototype may be another's master
        for d in deps:
            assert d["master_item"]["key"] in own, d["key"]


def test_every_trigger_references_its_templates_items():
    checked = 0
    for name, t in TEMPLATES.items():
        for item in t.get("items", []):
            for tr in item.get("triggers", []):
                assert all(h == name and k in items_of(name) for h, k in REF_RE.findall(tr["expression"]))
                assert item["key"] in [k for _, k in REF_RE.findall(tr["expression"])]
                checked += 1
        for rule in t.get("discovery_rules", []):
            for p in rule["item_prototypes"]:
                for tr in p.get("trigger_prototypes", []):
                    refs = REF_RE.findall(tr["expression"] + " " + tr.get("recovery_expression", ""))
                    assert refs and all(h == name and k in items_of(name, True) for h, k in refs)
                    checked += 1
    for tr in EXPORT["triggers"]:
        refs = REF_RE.findall(tr["expression"] + " " + tr.get("recovery_expression", ""))
        hosts = {h for h, _ in refs}
        assert len(hosts) == 1, tr["name"]
        host = hosts.pop()
        assert all(k in items_of(host) for _, k in refs), tr["name"]
        checked += 1
    assert checked >= 12


def test_graph_items_and_dashboard_widgets_exist():
    graphs = {}
    for g in EXPORT["graphs"]:
        for gi in g["graph_items"]:
            assert gi["item"]["key"] in items_of(gi["item"]["host"]), gi
        graphs.setdefault(g["graph_items"][0]["item"]["host"], set()).add(g["name"])
    node = TEMPLATES[service.NODE]
    reachable = set().union(*(graphs.get(t, set()) for t in linked(service.NODE)))
    widgets = node["dashboards"][0]["pages"][0]["widgets"]
    names = [w["fields"][1]["value"]["name"] for w in widgets]
    assert names and set(names) <= reachable
    assert "Mirrorlist: Response time" in names and "Conntrack: Entries vs max" in names


def test_triggers_follow_the_official_style():
    all_triggers = [tr for t in TEMPLATES.values() for i in t.get("items", []) for tr in i.get("triggers", [])]
    all_triggers += EXPORT["triggers"]
    for tr in all_triggers:
        assert tr["name"].startswith(("Conntrack: ", "Conntrack fleet: ", "Mirrorlist: ")), tr["name"]
        assert tr.get("event_name") and tr.get("description")
        # scope, and the "who" triggers also say so (a fleet's paging leaves them to the fleet)
        assert [x["tag"] for x in tr["tags"]] in (["scope"], ["scope", "cause"]), tr["name"]
    names = {tr["name"]: tr for tr in all_triggers}
    warn = names["Conntrack: Table usage is high"]
    assert warn["dependencies"][0]["name"] == "Conntrack: Table usage is very high"
    assert "{$CONNTRACK.USAGE.WARN}" in warn["event_name"] and warn["opdata"]
    assert "conntrack-zbx top" in names["Conntrack: Packets dropped, table full"]["description"]


def test_rates_discard_when_the_kernel_lacks_the_counter():
    rates = [i for i in TEMPLATES[model.CONNTRACK]["items"] if i["key"].startswith("conntrack.rate[")]
    assert {i["key"] for i in rates} == {"conntrack.rate[%s]" % n for n, _ in model.RATES}
    for i in rates:
        assert i["preprocessing"][0]["error_handler"] == "DISCARD_VALUE"
        assert i["preprocessing"][1]["type"] == "CHANGE_PER_SECOND"


def test_intervals_and_history_are_macros():
    for i in TEMPLATES[model.CONNTRACK]["items"]:
        assert i["delay"] == "0" or i["delay"].startswith("{$")
        assert i["history"].startswith("{$")


def test_the_readmes_speak_the_frontends_words():
    """Item types, severities and preprocessing steps as the frontend shows them, not enum names."""
    import glob
    import os

    docs = glob.glob(os.path.join(os.path.dirname(model.__file__), "..", "..", "docs", "templates", "*.md"))
    assert docs
    for path in docs:
        with open(path) as f:
            text = f.read()
        assert not re.search(r"\|(ZABBIX_PASSIVE|ZABBIX_ACTIVE|DEPENDENT|AVERAGE|WARNING|HIGH|INFO)\|", text), path
        assert "JSONPATH:" not in text and "CHECK_JSON_ERROR" not in text, path
