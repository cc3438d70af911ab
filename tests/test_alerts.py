"""Alerts on-call can trust, structurally: root-cause dependencies, no flapping, a runbook link
on every trigger, closable no-data problems, an active variant of every agent template, and a
mirrorlist check that works with its defaults."""

import os
import re

import pytest

from conntrack_zbx.template import model, service
from tests.test_template import EXPORT, TEMPLATES, items_of

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def triggers_of(name, export=None):
    """Every trigger and trigger prototype belonging to one template (multi-item ones included)."""
    export = export or EXPORT
    t = {x["template"]: x for x in export["templates"]}[name]
    out = [tr for i in t.get("items", []) for tr in i.get("triggers", [])]
    for rule in t.get("discovery_rules", []):
        out += [tp for p in rule["item_prototypes"] for tp in p.get("trigger_prototypes", [])]
    out += [tr for tr in export["triggers"] if "/%s/" % name in tr["expression"]]
    return out


AGENT_TEMPLATES = (model.CONNTRACK, model.CONNTRACK_ACTIVE)
ALL = sorted(TEMPLATES)


@pytest.mark.parametrize("name", ALL)
def test_dependencies_resolve_to_triggers_of_the_same_template(name):
    own = {tr["name"]: tr for tr in triggers_of(name)}
    for tr in own.values():
        for dep in tr.get("dependencies", []):
            target = own.get(dep["name"])
            assert target is not None, (tr["name"], dep["name"])
            assert dep["expression"] == target["expression"]
            assert dep.get("recovery_expression") == target.get("recovery_expression")
            assert "/%s/" % name in dep["expression"]


@pytest.mark.parametrize("name", AGENT_TEMPLATES)
def test_root_cause_dependencies(name):
    deps = {tr["name"]: {d["name"] for d in tr.get("dependencies", [])} for tr in triggers_of(name)}
    assert deps["Conntrack: Table usage is high"] == {"Conntrack: Table usage is very high", model.CULPRIT,
                                                      model.CULPRIT_FILLING}
    # HIGH depends on HIGH only
    assert deps["Conntrack: Table usage is very high"] == {model.DROPS}
    assert deps["Conntrack: Table will be full soon"] == {"Conntrack: Table usage is very high", model.CULPRIT,
                                                          model.CULPRIT_FILLING}
    assert deps["Conntrack: Hash buckets below the recommended ratio for this kernel"] == {model.FEW_BUCKETS}
    assert deps["Conntrack: Top talkers not collected"] == {model.STATS_NODATA}
    assert deps["Conntrack: Namespaces not collected"] == {model.STATS_NODATA}
    assert deps["Conntrack: Inserts failing"] == {model.DROPS}
    # the culprit waits on its HIGH twin (the table filling), which waits on the drops only;
    # the drops stand alone (and the service, below)
    assert deps[model.CULPRIT] == {model.CULPRIT_FILLING} and deps[model.CULPRIT_FILLING] == {model.DROPS}
    assert not deps[model.DROPS]


SEVERITY = ["NOT_CLASSIFIED", "INFO", "WARNING", "AVERAGE", "HIGH", "DISASTER"]


@pytest.mark.parametrize("name", ALL)
def test_no_trigger_depends_on_a_lower_severity(name):
    """The official templates' rule: the symptom or the lower severity depends on the cause, never
    a higher severity on a lower one (an action paging from High up would otherwise never hear of
    a problem an Average one holds back)."""
    by_name = {tr["name"]: tr for tr in triggers_of(name)}
    for tr in by_name.values():
        for d in tr.get("dependencies", []):
            if d["name"] in by_name:
                assert SEVERITY.index(tr["priority"]) <= SEVERITY.index(by_name[d["name"]]["priority"]), \
                    (tr["name"], tr["priority"], d["name"], by_name[d["name"]]["priority"])


def test_the_high_page_names_the_culprit_network():
    """What pages an action from High up before the drops is the culprit past the warning level:
    HIGH, naming the network (the third item of its expression) in its event name."""
    tr = next(t for t in triggers_of(model.CONNTRACK) if t["name"] == model.CULPRIT_FILLING)
    ref = "/%s/" % model.CONNTRACK
    assert tr["priority"] == "HIGH"
    assert tr["expression"] == ('last(%sconntrack.usage)>{$CONNTRACK.USAGE.WARN} and min(%s%s,'
                                '{$CONNTRACK.TALKER.SHARE.WINDOW})>{$CONNTRACK.TALKER.SHARE.WARN} and '
                                'last(%s%s)<>"none"'
                                % (ref, ref, model.TOP_SHARE_KEY, ref, model.TOP_NETWORK_KEY))
    assert "network {ITEM.LASTVALUE3} holds more than" in tr["event_name"]


def test_mirrorlist_symptoms_depend_on_the_check():
    deps = {tr["name"]: {d["name"] for d in tr.get("dependencies", [])} for tr in triggers_of(service.MIRRORLIST)}
    assert deps["Mirrorlist: No response time data"] == {service.CHECK_FAILED}
    assert deps["Mirrorlist: Response time is high"] == {service.CHECK_FAILED}
    check = next(tr for tr in triggers_of(service.MIRRORLIST) if tr["name"] == service.CHECK_FAILED)
    assert check["expression"].startswith("min(/Mirrorlist by HTTP/web.test.fail[Mirrorlist],#3)>0")


def test_what_pages_is_average_or_above_and_the_rest_is_not():
    """The recommended action pages for Average and above: the incident's three causes do, the
    symptoms that do not depend on them are below it."""
    pri = {tr["name"]: tr["priority"] for name in ALL for tr in triggers_of(name)}
    assert pri[model.CULPRIT] == "AVERAGE" and pri[model.DROPS] == "HIGH" and pri[service.CHECK_FAILED] == "AVERAGE"
    for quiet in ("Conntrack: Table usage is high", "Conntrack: Table will be full soon",
                  "Conntrack: Running settings will not survive a reboot", "Mirrorlist: Response time is high",
                  "Conntrack: Hash buckets below the recommended ratio for this kernel"):
        assert pri[quiet] in ("INFO", "WARNING"), quiet


def test_forecast_only_above_the_warning_level_and_recovers():
    tr = next(t for t in triggers_of(model.CONNTRACK) if t["name"] == "Conntrack: Table will be full soon")
    assert tr["expression"].startswith(
        "min(/%s/conntrack.usage,{$CONNTRACK.USAGE.WINDOW})>{$CONNTRACK.USAGE.WARN} and timeleft("
        % model.CONNTRACK)
    assert tr["recovery_mode"] == "RECOVERY_EXPRESSION" and "{$CONNTRACK.USAGE.HYSTERESIS}" in tr["recovery_expression"]


def test_insert_failures_need_a_sustained_rate():
    tr = next(t for t in triggers_of(model.CONNTRACK) if t["name"] == "Conntrack: Inserts failing")
    assert tr["expression"].startswith("min(/%s/conntrack.rate[insert_failed],{$CONNTRACK.INSERT_FAILED.WINDOW})>"
                                       % model.CONNTRACK)
    macros = {m["macro"]: m["value"] for m in TEMPLATES[model.CONNTRACK]["macros"]}
    assert int(macros["{$CONNTRACK.INSERT_FAILED.MAX}"]) > 0


@pytest.mark.parametrize("name", ALL)
def test_every_nodata_trigger_is_manually_closable(name):
    nodata = [tr for tr in triggers_of(name) if "nodata(" in tr["expression"]]
    for tr in nodata:
        assert tr.get("manual_close") == "YES", tr["name"]
    if name != service.NODE and name != service.NODE_ACTIVE:
        assert nodata


def test_no_dead_runbook_link_by_default():
    """Without --runbook-url no trigger links anywhere and no macro points at a path the
    frontend's browser cannot open; the steps are in the descriptions."""
    for name in ALL:
        for tr in triggers_of(name):
            assert "url" not in tr, (name, tr["name"])
        assert not [m for m in TEMPLATES[name].get("macros", []) if "RUNBOOK" in m["macro"]], name
    from conntrack_zbx.template.render import template_yaml

    assert "file://" not in template_yaml()
    with open(os.path.join(REPO, "templates", "conntrack_zbx.yaml")) as f:
        assert "file://" not in f.read()


def test_every_trigger_links_its_runbook_section_when_published():
    import yaml

    from conntrack_zbx.template.render import template_yaml

    where = "https://wiki.example.org/ops/conntrack-runbook"
    export = yaml.safe_load(template_yaml(where, services=True))["zabbix_export"]
    with open(os.path.join(REPO, "docs", "runbook.md")) as f:
        anchors = set(re.findall(r'<a id="([a-z0-9-]+)"></a>', f.read()))
    macros = {m["macro"]: m["value"] for t in export["templates"] for m in t.get("macros", [])}
    assert macros["{$CONNTRACK.RUNBOOK.URL}"] == macros["{$MIRRORLIST.RUNBOOK.URL}"] == where
    seen = 0
    for name in ALL:
        for tr in triggers_of(name, export):
            m = re.fullmatch(r"\{\$(CONNTRACK|MIRRORLIST)\.RUNBOOK\.URL\}#([a-z0-9-]+)", tr.get("url", ""))
            assert m, (name, tr["name"], tr.get("url"))
            assert m.group(2) in anchors, (tr["name"], m.group(2))
            seen += 1
    assert seen > 30


def test_descriptions_are_each_triggers_own():
    descriptions = [tr["description"] for name in ALL for tr in triggers_of(name)]
    assert [d for d in descriptions if "First step" not in d] == []
    # no shared paragraph pasted into every description any more
    tails = {d[-80:] for d in descriptions}
    assert len(tails) > len(descriptions) // 3


def test_values_that_rarely_change_are_stored_on_change_with_a_heartbeat():
    items = {i["key"]: i for i in TEMPLATES[model.CONNTRACK]["items"]}
    for key in ("conntrack.max", "conntrack.buckets", "conntrack.buckets.recommended", "conntrack.drift"):
        steps = [s["type"] for s in items[key]["preprocessing"]]
        assert "DISCARD_UNCHANGED_HEARTBEAT" in steps, key


@pytest.mark.parametrize("passive, active", [(model.CONNTRACK, model.CONNTRACK_ACTIVE),
                                             (service.NODE, service.NODE_ACTIVE)])
def test_active_variant_is_the_same_model_in_active_mode(passive, active):
    p, a = TEMPLATES[passive], TEMPLATES[active]
    assert sorted(i["key"] for i in p.get("items", [])) == sorted(i["key"] for i in a.get("items", []))
    for item in a.get("items", []):
        assert item.get("type") in ("ZABBIX_ACTIVE", "DEPENDENT"), item["key"]
    assert any(i.get("type") == "ZABBIX_ACTIVE" for i in a.get("items", [])) or passive == service.NODE
    assert sorted(tr["name"] for tr in triggers_of(passive)) == sorted(tr["name"] for tr in triggers_of(active))
    for tr in triggers_of(active):
        assert "/%s/" % passive not in tr["expression"]
    if passive == service.NODE:
        assert [t["name"] for t in a["templates"]] == [model.CONNTRACK_ACTIVE, service.MIRRORLIST]


def test_mirrorlist_url_works_with_its_defaults():
    """{HOST.CONN} inside a user macro's value is not expanded by 6.0: the step URL carries it
    itself, and no default hides a built-in macro."""
    t = TEMPLATES[service.MIRRORLIST]
    (step,) = t["httptests"][0]["steps"]
    assert "{HOST.CONN}" in step["url"]
    for m in t["macros"]:
        assert "{HOST." not in m["value"], m
    defaults = {m["macro"]: m["value"] for m in t["macros"]}
    url = step["url"]
    for k, v in defaults.items():
        url = url.replace(k, v)
    assert url == "http://{HOST.CONN}:80/?release=9&arch=x86_64&repo=updates"


def test_conntrack_template_has_its_own_dashboard():
    dash = TEMPLATES[model.CONNTRACK]["dashboards"][0]
    kinds = [w["type"] for w in dash["pages"][0]["widgets"]]
    assert kinds.count("GRAPH_CLASSIC") == 3 and "PLAIN_TEXT" in kinds
    text = next(w for w in dash["pages"][0]["widgets"] if w["type"] == "PLAIN_TEXT")
    assert {f["value"]["key"] for f in text["fields"]} <= items_of(model.CONNTRACK)
    assert model.TOP_NETWORK_KEY in {f["value"]["key"] for f in text["fields"]}


def test_culprit_names_the_network_and_pages_once():
    tr = next(t for t in EXPORT["triggers"] if t["name"] == model.CULPRIT and
              "/%s/" % model.CONNTRACK in t["expression"])
    assert "{ITEM.LASTVALUE2}" in tr["event_name"] and "network" in tr["event_name"]
    assert tr["recovery_mode"] == "RECOVERY_EXPRESSION"
    assert "{$CONNTRACK.USAGE.HYSTERESIS}" in tr["recovery_expression"]
    rules = TEMPLATES[model.CONNTRACK]["discovery_rules"]
    assert not [tp for r in rules if r["key"].startswith("conntrack.talkers.discovery")
                for p in r["item_prototypes"] for tp in p.get("trigger_prototypes", [])]


# Triggers whose threshold looks at one value, and why; every other threshold on a measured value
# is over a window (min() of a time or a count), as the official templates do.
ONE_VALUE = {
    "Conntrack: Table usage is very high": "past the high level the next poll can be a full table",
    model.CULPRIT_FILLING: "its usage term, for the same reason; its share is windowed",
    model.DROPS: "a rate over one poll already, and any drop is the outage",
    "Conntrack: Hash chains too long": "each refused insert is a dropped packet",
    "Conntrack: {#CT.NS.NAME}: kernel is dropping packets, its table is full": "as the drops",
    "Conntrack: {#CT.NS.NAME}: at more than {$CONNTRACK.NS.USAGE.HIGH:\"{#CT.NS.NAME}\"}% of nf_conntrack_max":
        "as very high usage",
}
THRESHOLD = re.compile(r"last\((/[^,)]+/(?:conntrack\.usage|conntrack\.ns\.usage\[[^]]*\]|%s|conntrack\.rate\[\w+\]"
                       r"|conntrack\.ns\.drop\[[^]]*\]))\)\s*>" % re.escape(model.TOP_SHARE_KEY))


def every_trigger():
    for name in ALL:
        yield from triggers_of(name)


def test_thresholds_are_windowed_unless_one_value_is_the_point():
    """A threshold on a usage, a share or a rate compared by its last value only where waiting
    for a second value would page after the harm (the list above says why for each)."""
    seen = set()
    for tr in every_trigger():
        if THRESHOLD.search(tr["expression"]):
            assert tr["name"] in ONE_VALUE, tr["name"] + ": " + tr["expression"]
            seen.add(tr["name"])
    assert seen == set(ONE_VALUE)  # the list holds no stale names
    windows = {m["macro"]: m["value"] for m in TEMPLATES[model.CONNTRACK]["macros"]}
    assert windows["{$CONNTRACK.USAGE.WINDOW}"] == "3m" and windows["{$CONNTRACK.TALKER.SHARE.WINDOW}"] == "10m"
    by_name = {tr["name"]: tr for tr in every_trigger()}
    assert "min(" in by_name["Conntrack: Table usage is high"]["expression"]
    assert "min(" in by_name[model.CULPRIT]["expression"]
