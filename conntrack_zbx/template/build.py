"""The shared vocabulary of the templates: names, agent keys as items call them, and the small
builders every room uses (an item depending on an agent answer, a trigger, a macro, a stable UUID).

Everything that names an agent key takes it from ``conntrack_zbx.keys``. UUIDs are derived from
stable names (``uid``), so they never change between regenerations and never collide with stock
templates.
"""

import hashlib
import uuid
from typing import Any, Dict, List, Sequence

from conntrack_zbx.keys import KEYS, AgentKey
from conntrack_zbx.options import Option


# The official templates' groups, with the UUIDs a Zabbix server's own data carries for them: a
# Linux subsystem goes with the operating systems, a service with the applications.
GROUP, GROUP_UUID = "Templates/Operating systems", "846977d1dfed4968bc5f8bdb363285bc"
CONNTRACK = "Linux conntrack by Zabbix agent"
SHORT = "Conntrack"

STATS_KEY = next(k.key for k in KEYS if k.args == ("stats",))
TALKERS_AGENT_KEY = next(k for k in KEYS if k.args == ("talkers",))
# The master item passes every key parameter as a macro, so an admin tunes them per host.
NAMESPACES_AGENT_KEY = next(k for k in KEYS if k.args == ("namespaces",))


def macro_name(prefix: str, p: Option) -> str:
    """The macro that carries one key parameter: {$CONNTRACK.TALKERS.PREFIX4} ..."""
    return "CONNTRACK.%s.%s" % (prefix, p.name.upper())


TALKERS_KEY = "%s[%s]" % (TALKERS_AGENT_KEY.key, ",".join("{$%s}" % macro_name("TALKERS", p)
                                                         for p in TALKERS_AGENT_KEY.params))
NAMESPACES_KEY = "%s[%s]" % (NAMESPACES_AGENT_KEY.key, ",".join("{$%s}" % macro_name("NAMESPACES", p)
                                                        for p in NAMESPACES_AGENT_KEY.params))

# Trigger names more than one room depends on
DROPS = "%s: Packets dropped, table full" % SHORT
STATS_NODATA = "%s: No data from conntrack.stats" % SHORT
CONNTRACK_ACTIVE = "Linux conntrack by Zabbix agent active"


def uid(*parts: str) -> str:
    """A stable UUIDv4-shaped id from a name path (Zabbix wants 32 hex digits, version 4)."""
    digest = hashlib.sha256(b"conntrack_zbx/" + "/".join(parts).encode()).digest()[:16]
    return uuid.UUID(bytes=digest, version=4).hex


def tags(**kv: str) -> List[Dict[str, str]]:
    return [{"tag": k, "value": v} for k, v in kv.items()]


def macro(name: str, value: str, description: str) -> Dict[str, str]:
    return {"macro": "{$%s}" % name, "value": value, "description": description}


def key_parameter_macros(prefix: str, key: AgentKey) -> List[Dict[str, str]]:
    """One macro per parameter of an agent key, {$CONNTRACK.<PREFIX>.<NAME>}, at the key's default:
    the item key passes them in order (``TALKERS_KEY``, ``NAMESPACES_KEY``)."""
    return [macro(macro_name(prefix, p), str(p.default),
                  "%s parameter %d: %s (%d..%d; anything else makes the item not supported)."
                  % (key.key, i, p.help, p.lo, p.hi)) for i, p in enumerate(key.params, 1)]


def item_ref(template: str, key: str) -> str:
    """An item reference for trigger expressions: /template/key."""
    return "/%s/%s" % (template, key)


def dependent_item(template: str, name: str, key: str, path: str, description: str, value_type: str = "UNSIGNED",
         units: str = "", extra_pre: Sequence[Dict[str, Any]] = (), master: str = STATS_KEY,
         on_fail_discard: bool = False) -> Dict[str, Any]:
    step = {"type": "JSONPATH", "parameters": [path]}
    if on_fail_discard:
        step["error_handler"] = "DISCARD_VALUE"
    item = {
        "uuid": uid(template, "item", key),
        "name": name,
        "type": "DEPENDENT",
        "key": key,
        "delay": "0",
        "history": "{$CONNTRACK.HISTORY}",
        "trends": "{$CONNTRACK.TRENDS}",
        "value_type": value_type,
        "units": units,
        "description": description,
        "preprocessing": [step] + list(extra_pre),
        "master_item": {"key": master},
        "tags": tags(component="conntrack"),
    }
    if not units:
        del item["units"]
    return item


def make_trigger(template: str, name: str, expression: str, priority: str, description: str,
             event_name: str = "", opdata: str = "", scope: str = "capacity",
             recovery: str = "", anchor: str = "", depends: Sequence[str] = (),
             manual_close: bool = False) -> Dict[str, Any]:
    """A trigger. ``anchor``: its runbook section (the trigger's URL); ``depends``: names of the
    triggers it depends on, resolved by ``resolve_dependencies`` once the whole export exists
    (a name that resolves to nothing fails the generation)."""
    t = {"uuid": uid(template, "trigger", name), "expression": expression, "name": name}  # type: Dict[str, Any]
    if recovery:
        t["recovery_mode"] = "RECOVERY_EXPRESSION"
        t["recovery_expression"] = recovery
    if event_name:
        t["event_name"] = event_name
    if opdata:
        t["opdata"] = opdata
    t["url"] = runbook_url(template, anchor or "top")
    t["priority"] = priority
    t["description"] = description
    if manual_close:
        t["manual_close"] = "YES"
    if depends:
        t["dependencies"] = [{"name": d} for d in depends]
    t["tags"] = tags(scope=scope)
    return t


def runbook_url(template: str, anchor: str) -> str:
    return "{$%s.RUNBOOK.URL}#%s" % ("CONNTRACK" if template.startswith("Linux conntrack") else "MIRRORLIST",
                                     anchor)


def answer_master(key: str, name: str, delay: str, description: str, trigger: Dict[str, Any]) -> Dict[str, Any]:
    """A raw JSON master item: failures become *not supported* with the plugin's own message.
    Its UUID comes from the bare key (before "["): a parameter added to the key keeps the item's
    identity, so re-importing the template updates it in place instead of replacing it."""
    return {
        "uuid": uid(CONNTRACK, "item", key.split("[")[0]),
        "name": name,
        "key": key,
        "delay": delay,
        "history": "{$CONNTRACK.RAW.HISTORY}",
        "trends": "0",
        "value_type": "TEXT",
        "description": description,
        "preprocessing": [{"type": "CHECK_JSON_ERROR", "parameters": ["$.error"]}],
        "tags": tags(component="raw"),
        "triggers": [trigger],
    }


def not_collected(key: str, what: str, consequence: str) -> Dict[str, Any]:
    """No value from a root-side master item (talkers, namespaces) for a while."""
    return make_trigger(
        CONNTRACK, "%s: %s not collected" % (SHORT, what),
        "nodata(%s,{$CONNTRACK.TALKERS.NODATA.TIMEOUT})=1" % item_ref(CONNTRACK, key), "WARNING",
        "%s has had no value for {$CONNTRACK.TALKERS.NODATA.TIMEOUT}: %s. First step: the item's error "
        "in Latest data; most often the sudo grant (sudoers.d/conntrack-zbx, docs/permissions.md) is "
        "missing, or the kernel has neither conntrack procfs nor ctnetlink." % (key.split("[")[0], consequence),
        event_name="%s: %s not collected for {$CONNTRACK.TALKERS.NODATA.TIMEOUT}" % (SHORT, what.lower()),
        scope="availability", anchor="not-collected", depends=(STATS_NODATA,), manual_close=True)


# --- the template's own dashboard -----------------------------------------------------------

def graph_widget(host: str, graph: str, x: int, y: int, width: int = 12) -> Dict[str, Any]:
    w = {"type": "GRAPH_CLASSIC", "width": str(width), "height": "5",
         "fields": [{"type": "INTEGER", "name": "source_type", "value": "0"},
                    {"type": "GRAPH", "name": "graphid", "value": {"host": host, "name": graph}}]}
    if x:
        w["x"] = str(x)
    if y:
        w["y"] = str(y)
    return w
