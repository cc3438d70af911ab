"""The templates as data: macros, items, triggers, discovery, graphs, dashboard.

Everything that names an agent key takes it from ``conntrack_zbx.keys``; every counter name comes
from ``conntrack_zbx.parse.stat``. UUIDs are derived from stable names (``uid``), so they never
change between regenerations and never collide with stock templates.
"""

import hashlib
import uuid
from typing import Any, Dict, List, Optional, Sequence

from conntrack_zbx.keys import KEYS, AgentKey
from conntrack_zbx.options import Option
from conntrack_zbx.parse.stat import COUNTER_HELP

# The official templates' groups, with the UUIDs a Zabbix server's own data carries for them: a
# Linux subsystem goes with the operating systems, a service with the applications.
GROUP, GROUP_UUID = "Templates/Operating systems", "846977d1dfed4968bc5f8bdb363285bc"
CONNTRACK = "Linux conntrack by Zabbix agent"
SHORT = "Conntrack"

STATS_KEY = next(k.key for k in KEYS if k.args == ("stats",))
_TALKERS = next(k for k in KEYS if k.args == ("talkers",))
# The master item passes every key parameter as a macro, so an admin tunes them per host.
_NAMESPACES = next(k for k in KEYS if k.args == ("namespaces",))


def _macro_name(prefix: str, p: Option) -> str:
    """The macro that carries one key parameter: {$CONNTRACK.TALKERS.PREFIX4} ..."""
    return "CONNTRACK.%s.%s" % (prefix, p.name.upper())


TALKERS_KEY = "%s[%s]" % (_TALKERS.key, ",".join("{$%s}" % _macro_name("TALKERS", p) for p in _TALKERS.params))
NAMESPACES_KEY = "%s[%s]" % (_NAMESPACES.key, ",".join("{$%s}" % _macro_name("NAMESPACES", p)
                                                        for p in _NAMESPACES.params))

CONNTRACK_ACTIVE = "Linux conntrack by Zabbix agent active"
CULPRIT = "%s: One network holds a large share of the table" % SHORT
CULPRIT_FILLING = "%s: The table is filling and one network holds a large share of it" % SHORT
DROPS = "%s: Packets dropped, table full" % SHORT
STATS_NODATA = "%s: No data from conntrack.stats" % SHORT
FEW_BUCKETS = "%s: Too few hash buckets for the limit" % SHORT
TOP_NETWORK_KEY = "conntrack.talkers.top.network"
TOP_SHARE_KEY = "conntrack.talkers.top.share"
# Per discovered network: its share of the table, and whether that is over the culprit threshold
# (the fleet template's calculated items aggregate these over a host group)
TALKER_SHARE_KEY, TALKER_OVER_KEY = "conntrack.talker.share", "conntrack.talker.over"
# The networks the culprit trigger looks at: all but {$CONNTRACK.TALKER.NOT_MATCHES} (known NAT
# gateways), first = the one holding most (the document lists them by entries, descending).
_NOT_EXCLUDED = "@.network =~ \"^(?!(?:{$CONNTRACK.TALKER.NOT_MATCHES})$)\""
TOP_FILTER = "$.networks[?(%s)]" % _NOT_EXCLUDED
# The network item names only a network above the threshold ("none" otherwise): the trigger's
# name is then taken from the very value that made it fire, never from a sibling item that the
# server happened to store a moment later.
CULPRIT_FILTER = "$.networks[?(@.pct_of_max > {$CONNTRACK.TALKER.SHARE.WARN} && %s)]" % _NOT_EXCLUDED


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
    return [macro(_macro_name(prefix, p), str(p.default),
                  "%s parameter %d: %s (%d..%d; anything else makes the item not supported)."
                  % (key.key, i, p.help, p.lo, p.hi)) for i, p in enumerate(key.params, 1)]


# --- Linux conntrack by Zabbix agent ---------------------------------------------------------

CONNTRACK_MACROS = [
    macro("CONNTRACK.INTERVAL", "1m", "How often the counters (conntrack.stats) are polled."),
    macro("CONNTRACK.RUNBOOK.URL", "",
          "Where the runbook is published (docs/runbook.md: a wiki, a Git forge), given to `template "
          "import --runbook-url`. Every trigger links to its section: this URL plus #section."),
    macro("CONNTRACK.HEARTBEAT", "1h",
          "Values that rarely change (limits, hash size, drift) are stored when they change, and at "
          "least this often."),
    macro("CONNTRACK.TALKERS.INTERVAL", "5m",
          "How often the entry table is read for top talkers (conntrack.talkers); it walks the whole "
          "table, so it is polled less often than the counters."),
    *key_parameter_macros("TALKERS", _TALKERS),
    macro("CONNTRACK.HISTORY", "7d", "History storage period of numeric conntrack items."),
    macro("CONNTRACK.TRENDS", "365d", "Trend storage period of numeric conntrack items."),
    macro("CONNTRACK.RAW.HISTORY", "1d", "History of the raw JSON master items (what on-call reads back)."),
    macro("CONNTRACK.USAGE.WARN", "80", "Warning threshold of table usage, in % of nf_conntrack_max."),
    macro("CONNTRACK.USAGE.HIGH", "95", "High threshold of table usage, in % of nf_conntrack_max."),
    macro("CONNTRACK.USAGE.WINDOW", "3m",
          "Usage must stay above the warning level for this long (min() over the window) before it "
          "warns: a burst that clears inside it does not. The High-level triggers and the drops look at "
          "the last value: past the high level the next poll can be a full table."),
    macro("CONNTRACK.USAGE.HYSTERESIS", "5",
          "Usage must fall this many points below a threshold before its problem resolves."),
    macro("CONNTRACK.RECOVERY.WINDOW", "5m",
          "How long a condition must stay clear before its problem resolves (hysteresis window)."),
    macro("CONNTRACK.FULL.WINDOW", "15m", "Period of history the 'will be full' forecast is fitted on."),
    macro("CONNTRACK.FULL.TIMELEFT", "1h", "Warn when the forecast says the table is full within this time."),
    macro("CONNTRACK.INSERT_FAILED.MAX", "10",
          "insert_failed per second, sustained over {$CONNTRACK.INSERT_FAILED.WINDOW}, above which a problem "
          "is raised. NAT- and DNS-heavy hosts see some insert clashes all the time; raise it there."),
    macro("CONNTRACK.INSERT_FAILED.WINDOW", "5m", "Window insert failures must stay above the limit for."),
    macro("CONNTRACK.BUCKETS.RATIO.MAX", "8",
          "Entries per hash bucket (nf_conntrack_max / buckets) above which lookups get slow. Since "
          "kernel 5.15 the default is 1; older kernels defaulted to 4 (the 'hashsize = max/4' advice)."),
    macro("CONNTRACK.NODATA.TIMEOUT", "5m",
          "No value from conntrack.stats for this long raises a problem (the incident's missing data)."),
    macro("CONNTRACK.TALKERS.NODATA.TIMEOUT", "30m",
          "No value from conntrack.talkers for this long raises a problem: the 'who' is no longer "
          "collected (e.g. the sudo grant is missing). At least 30s (Zabbix's nodata() minimum)."),
    macro("CONNTRACK.TALKER.SHARE.WARN", "20",
          "Share of nf_conntrack_max the network holding most of the table may hold before it is named "
          "in a problem (the incident's culprit). It resolves below this minus "
          "{$CONNTRACK.USAGE.HYSTERESIS}."),
    macro("CONNTRACK.TALKER.SHARE.WINDOW", "10m",
          "A network must hold more than {$CONNTRACK.TALKER.SHARE.WARN}% for this long (min() over the "
          "window: two talkers polls at the default interval) before it is named: a crawler's burst that "
          "leaves again is not a culprit; a leak stays."),
    macro("CONNTRACK.TALKER.IDLE.WARN", "5",
          "Share of nf_conntrack_max a network's idle ESTABLISHED entries (silent for over "
          "{$CONNTRACK.TALKERS.IDLE_MIN} s) may hold before it is named as a leak: connections nobody "
          "closed, which the kernel's early drop never evicts."),
    macro("CONNTRACK.TALKER.MATCHES", ".*", "Discover only talkers (address or network) matching this regex."),
    macro("CONNTRACK.TALKER.NOT_MATCHES", "CHANGE_IF_NEEDED",
          "Talkers (addresses or networks, e.g. known NAT gateways) neither discovered nor named by the "
          "share trigger: a regex matched against the whole address or network, e.g. ^192.0.2.0/24$. "
          "Write it without backslashes (a '.' also matches itself): the share trigger uses it inside "
          "a JSONPath string."),
    macro("CONNTRACK.TALKER.LOST", "1h",
          "Keep a talker's items this long after it left the top list (talkers churn)."),
    macro("CONNTRACK.NAMESPACES.INTERVAL", "1m",
          "How often every network namespace's own table is checked (conntrack.namespaces)."),
    *key_parameter_macros("NAMESPACES", _NAMESPACES),
    macro("CONNTRACK.NS.USAGE.WARN", "80",
          "Warning threshold of one namespace's own entries, in % of the global nf_conntrack_max; "
          "context macro by namespace name: {$CONNTRACK.NS.USAGE.WARN:\"pod ...\"}."),
    macro("CONNTRACK.NS.USAGE.HIGH", "95", "High threshold of one namespace's own entries, in % of nf_conntrack_max."),
    macro("CONNTRACK.NS.MATCHES", ".*", "Discover only namespaces whose name matches this regex."),
    macro("CONNTRACK.NS.NOT_MATCHES", "CHANGE_IF_NEEDED", "Do not discover namespaces whose name matches this regex."),
    macro("CONNTRACK.NS.LOST", "1d", "Keep a namespace's items this long after it is gone (pods come and go)."),
    macro("CONNTRACK.HASH.LOAD.MAX", "4",
          "Entries of all namespaces together per hash bucket above which lookups get slow: every "
          "namespace shares the one hash table."),
]

# Counters turned into per-second rates: (stable name, item name); the unit is always !/s
RATES = [
    ("drop", "Packets dropped, table full"),
    ("early_drop", "Entries evicted early"),
    ("insert_failed", "Inserts failed"),
    ("invalid", "Invalid packets"),
    ("search_restart", "Lookups restarted"),
    ("clash_resolve", "Insert clashes resolved"),
    ("chaintoolong", "Inserts refused, hash chain too long"),
]


def item_ref(template: str, key: str) -> str:
    """An item reference for trigger expressions: /template/key."""
    return "/%s/%s" % (template, key)


def _dep(template: str, name: str, key: str, path: str, description: str, value_type: str = "UNSIGNED",
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


def _trigger(template: str, name: str, expression: str, priority: str, description: str,
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


def _master(key: str, name: str, delay: str, description: str, trigger: Dict[str, Any]) -> Dict[str, Any]:
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


def conntrack_template() -> Dict[str, Any]:
    items = (_stats_items() + [_usage_item()] + _rate_items() + _boot_items() + _timeout_items()
             + _talkers_items() + _namespaces_items())
    over_several = _lift_multi_item_triggers(items)
    return {
        "uuid": uid(CONNTRACK),
        "template": CONNTRACK,
        "name": CONNTRACK,
        "description": (
            "Linux connection-tracking table: usage against nf_conntrack_max, drops and insert "
            "failures from the kernel's counters, and the top talkers holding the table, named by "
            "source and by network. Requires conntrack_zbx on the host: "
            "zabbix_agentd.d/userparameter_conntrack.conf (and sudoers.d/conntrack-zbx for talkers).\n\n"
            "Generated by conntrack_zbx; do not edit by hand."),
        "groups": [{"name": GROUP}],
        "items": items,
        "discovery_rules": [talkers_discovery("network"), talkers_discovery("source"), namespaces_discovery()],
        "tags": tags(**{"class": "os", "target": "linux"}),
        "macros": CONNTRACK_MACROS,
        "triggers": _bucket_triggers() + [_default_timeout_trigger()] + over_several,
        "graphs": conntrack_graphs(),
        "dashboards": [conntrack_dashboard()],
    }




def _lift_multi_item_triggers(items: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """A trigger written beside its item that also reads another item goes to the template's
    top level (where ``export`` puts triggers over several items, as Zabbix's own exports do)."""
    lifted: List[Dict[str, Any]] = []
    for item in items:
        own = "/%s/%s)" % (CONNTRACK, item["key"])
        keep: List[Dict[str, Any]] = []
        for t in item.get("triggers", []):
            refs = t["expression"].count("/%s/" % CONNTRACK)
            (keep if t["expression"].count(own) == refs else lifted).append(t)
        if "triggers" in item:
            item["triggers"] = keep
    return lifted


def _stats_items() -> List[Dict[str, Any]]:
    """The counters master item and the plain values taken from it."""
    items = [_master(
        STATS_KEY, "%s: Get stats" % SHORT, "{$CONNTRACK.INTERVAL}",
        "Master item: `conntrack-zbx stats` as JSON. When the source cannot be read "
        "the item is not supported with a message saying what is wrong and how to fix it.",
        _trigger(
            CONNTRACK, STATS_NODATA,
            "nodata(%s,{$CONNTRACK.NODATA.TIMEOUT})=1" % item_ref(CONNTRACK, STATS_KEY), "AVERAGE",
            "No value for {$CONNTRACK.NODATA.TIMEOUT}: the agent is not reachable (when the table is full "
            "the kernel drops the server's polls too: this is how the incident's data went missing), or "
            "the item is not supported. First step: read the item's error in Latest data (module not "
            "loaded, kernel without procfs...); if there is none, check the agent from the server with "
            "zabbix_get and the host's dmesg for 'table full'.",
            event_name="%s: no data for {$CONNTRACK.NODATA.TIMEOUT}" % SHORT,
            scope="availability", anchor="no-data", manual_close=True))]
    heartbeat = [{"type": "DISCARD_UNCHANGED_HEARTBEAT", "parameters": ["{$CONNTRACK.HEARTBEAT}"]}]
    items += [
        _dep(CONNTRACK, "%s: Entries" % SHORT, "conntrack.count", "$.count",
             "Connections tracked now (nf_conntrack_count)."),
        _dep(CONNTRACK, "%s: Max entries" % SHORT, "conntrack.max", "$.max",
             "The table limit (nf_conntrack_max). At this count the kernel drops new connections.",
             extra_pre=heartbeat),
        _dep(CONNTRACK, "%s: Hash buckets" % SHORT, "conntrack.buckets", "$.buckets",
             "Hash table size (nf_conntrack_buckets, the hashsize module parameter).", extra_pre=heartbeat),
        _dep(CONNTRACK, "%s: Free slots" % SHORT, "conntrack.free", "$.free",
             "nf_conntrack_max - nf_conntrack_count.", on_fail_discard=True),
    ]
    return items


def _usage_item() -> Dict[str, Any]:
    """Usage in %, with the warning, very high and forecast triggers.

    Severities and dependencies follow the official templates' rule: a lower severity may depend
    on a higher one or on its cause, never a higher on a lower. The warning and the forecast
    (WARNING) depend on very high, on the culprit (AVERAGE) and on the filling culprit (HIGH):
    while one is open they add nothing to page about. Very high (HIGH) depends only on the drops
    (HIGH, what it warns of). A leak can take a table from the warning level to full between two
    polls, so very high may never be seen before the drops: what pages an action from High up
    before the first drop is the filling culprit (``_culprit_triggers``)."""
    usage = item_ref(CONNTRACK, "conntrack.usage")
    usage_item = _dep(CONNTRACK, "%s: Usage, in %%" % SHORT, "conntrack.usage", "$.usage_pct",
                      "Entries as a share of nf_conntrack_max.", value_type="FLOAT", units="%",
                      on_fail_discard=True)
    high = _trigger(
        CONNTRACK, "%s: Table usage is very high" % SHORT,
        # the last value, not a window: past the high level the next poll can be a full table
        "last(%s)>{$CONNTRACK.USAGE.HIGH}" % usage, "HIGH",
        "The table is nearly full: at 100% the kernel logs 'nf_conntrack: table full, dropping packet' "
        "and new connections (and monitoring polls) fail. First step: raise the limit now "
        "(`sudo conntrack-zbx tune --auto --apply`), then name who fills it (`sudo conntrack-zbx top`).",
        event_name="%s: table usage above {$CONNTRACK.USAGE.HIGH}%% of nf_conntrack_max" % SHORT,
        opdata="Used: {ITEM.LASTVALUE1}",
        recovery="max(%s,{$CONNTRACK.RECOVERY.WINDOW})<{$CONNTRACK.USAGE.HIGH}-{$CONNTRACK.USAGE.HYSTERESIS}"
        % usage, anchor="usage-high", depends=(DROPS,))
    warn = _trigger(
        CONNTRACK, "%s: Table usage is high" % SHORT,
        "min(%s,{$CONNTRACK.USAGE.WINDOW})>{$CONNTRACK.USAGE.WARN}" % usage, "WARNING",
        "The table is filling up: the early warning the incident lacked. First step: `conntrack-zbx "
        "top` on the host: one range holding most entries, mostly ESTABLISHED, is a leak to fix at its "
        "source; many ordinary sources are load: raise the limit (`conntrack-zbx tune --auto`).",
        event_name="%s: table usage above {$CONNTRACK.USAGE.WARN}%% of nf_conntrack_max" % SHORT,
        opdata="Used: {ITEM.LASTVALUE1}",
        recovery="max(%s,{$CONNTRACK.RECOVERY.WINDOW})<{$CONNTRACK.USAGE.WARN}-{$CONNTRACK.USAGE.HYSTERESIS}"
        % usage, anchor="usage-high", depends=(high["name"], CULPRIT, CULPRIT_FILLING))
    full = _trigger(
        CONNTRACK, "%s: Table will be full soon" % SHORT,
        "min(%s,{$CONNTRACK.USAGE.WINDOW})>{$CONNTRACK.USAGE.WARN} and "
        "timeleft(%s,{$CONNTRACK.FULL.WINDOW},100)<{$CONNTRACK.FULL.TIMELEFT}"
        % (usage, usage), "WARNING",
        "Above {$CONNTRACK.USAGE.WARN}% and, at the growth rate of the last {$CONNTRACK.FULL.WINDOW}, full "
        "within {$CONNTRACK.FULL.TIMELEFT} (only above the warning level: a forecast from a low table "
        "flaps). First step: as for high usage, `sudo conntrack-zbx top`, then raise the limit.",
        event_name="%s: table will be full within {$CONNTRACK.FULL.TIMELEFT}" % SHORT,
        opdata="Used: {ITEM.LASTVALUE1}",
        recovery="last(%s)<{$CONNTRACK.USAGE.WARN}-{$CONNTRACK.USAGE.HYSTERESIS}" % usage,
        anchor="usage-high", depends=(high["name"], CULPRIT, CULPRIT_FILLING))
    usage_item["triggers"] = [high, warn, full]
    return usage_item


def _rate_items() -> List[Dict[str, Any]]:
    """The kernel counters as per-second rates, with the drop, insert and chain triggers."""
    items = []
    for name, title in RATES:
        key = "conntrack.rate[%s]" % name
        item = _dep(CONNTRACK, "%s: %s, per second" % (SHORT, title), key, "$.stat.%s" % name,
                    "%s Per second. Discarded when the running kernel lacks this counter." % COUNTER_HELP[name],
                    value_type="FLOAT", units="!/s", on_fail_discard=True,
                    extra_pre=[{"type": "CHANGE_PER_SECOND", "parameters": [""]}])
        trigger = _rate_trigger(name, item_ref(CONNTRACK, key))
        if trigger:
            item["triggers"] = [trigger]
        items.append(item)
    return items


def _rate_trigger(name: str, rate: str) -> Optional[Dict[str, Any]]:
    if name == "drop":
        return _trigger(
            # the last value is already a rate over one poll interval, and any drop is the outage
            CONNTRACK, DROPS, "last(%s)>0" % rate, "HIGH",
            "The kernel is dropping packets because it could not add an entry ('nf_conntrack: table "
            "full, dropping packet'): clients see timeouts, monitoring data from this host may go "
            "missing. First step: raise the limit now (`sudo conntrack-zbx tune --max N --apply "
            "--runtime-only`), then name who fills it (`sudo conntrack-zbx top`) before flushing anything.",
            event_name="%s: kernel is dropping packets, table full" % SHORT,
            opdata="Drops: {ITEM.LASTVALUE1}", recovery="max(%s,{$CONNTRACK.RECOVERY.WINDOW})=0" % rate,
            anchor="drops")
    if name == "insert_failed":
        return _trigger(
            CONNTRACK, "%s: Inserts failing" % SHORT,
            "min(%s,{$CONNTRACK.INSERT_FAILED.WINDOW})>{$CONNTRACK.INSERT_FAILED.MAX}" % rate, "WARNING",
            "Entries could not be inserted for {$CONNTRACK.INSERT_FAILED.WINDOW} on end: clashes between "
            "simultaneous packets of one flow (NAT- and DNS-heavy hosts) or a full table. First step: if "
            "drops come with it, the table is full; if not, look at the clash counter and the NAT rules.",
            event_name="%s: inserts failing above {$CONNTRACK.INSERT_FAILED.MAX}/s" % SHORT,
            opdata="Failed: {ITEM.LASTVALUE1}",
            recovery="max(%s,{$CONNTRACK.RECOVERY.WINDOW})<={$CONNTRACK.INSERT_FAILED.MAX}" % rate,
            anchor="inserts-failing", depends=(DROPS,))
    if name == "chaintoolong":
        return _trigger(
            # as the drops: each refused insert is a dropped packet, there is no harmless level
            CONNTRACK, "%s: Hash chains too long" % SHORT, "last(%s)>0" % rate, "WARNING",
            "The kernel refused inserts because a hash chain grew too long: too few buckets for the load. "
            "First step: raise the hash size with the limit (`conntrack-zbx tune --auto` shows both).",
            event_name="%s: inserts refused, hash chains too long" % SHORT,
            opdata="Refused: {ITEM.LASTVALUE1}",
            recovery="max(%s,{$CONNTRACK.RECOVERY.WINDOW})=0" % rate, scope="performance",
            anchor="hash-buckets", depends=(FEW_BUCKETS,))
    return None


def _boot_items() -> List[Dict[str, Any]]:
    """What a reboot would not keep, and the hash size this kernel should have."""
    heartbeat = [{"type": "DISCARD_UNCHANGED_HEARTBEAT", "parameters": ["{$CONNTRACK.HEARTBEAT}"]}]
    drift_item = _dep(CONNTRACK, "%s: Settings a reboot would not keep" % SHORT, "conntrack.drift", "$.drift",
                      "Where the running nf_conntrack_max or hash size differs from what the next boot sets "
                      "(sysctl.d, modprobe.d, modules-load.d), or a sysctl.d setting the boot order would "
                      "skip. Empty when a reboot keeps what runs now.", value_type="TEXT", extra_pre=heartbeat)
    drift_item["trends"] = "0"
    drift_item["triggers"] = [_trigger(
        CONNTRACK, "%s: Running settings will not survive a reboot" % SHORT,
        "length(last(%s))>0" % item_ref(CONNTRACK, "conntrack.drift"), "WARNING",
        "The running conntrack limits are not what the next boot sets: the fix was applied at runtime "
        "only, or persisted in a way boot skips (a sysctl.d line while nf_conntrack loads after "
        "systemd-sysctl). After a reboot the table is as small as before the fix. First step: persist "
        "it with `sudo conntrack-zbx tune --max N --apply` (it writes sysctl.d, modprobe.d and modules-load.d).",
        event_name="%s: running settings differ from what boot sets" % SHORT,
        opdata="{ITEM.LASTVALUE1}", scope="notice", anchor="reboot", manual_close=True)]
    recommended = _dep(CONNTRACK, "%s: Recommended hash buckets" % SHORT, "conntrack.buckets.recommended",
                       "$.recommended_buckets", "Hash buckets this kernel should have for the running "
                       "nf_conntrack_max: one per entry since 5.15, max/4 before.", on_fail_discard=True,
                       extra_pre=heartbeat)
    return [drift_item, recommended]


# The namespace's timeouts stats reports: (short name, item name, what it means).
TIMEOUTS = [
    ("tcp_established", "TCP ESTABLISHED timeout",
     "nf_conntrack_tcp_timeout_established: how long an ESTABLISHED TCP entry lives without a packet "
     "(432000 s, 5 days, by default). Connections nobody closes hold the table this long."),
    ("tcp_close_wait", "TCP CLOSE_WAIT timeout", "nf_conntrack_tcp_timeout_close_wait."),
    ("udp", "UDP timeout", "nf_conntrack_udp_timeout: a UDP flow seen one way."),
    ("udp_stream", "UDP stream timeout", "nf_conntrack_udp_timeout_stream: a UDP flow seen both ways."),
]
DEFAULT_ESTABLISHED = 432000


def _timeout_items() -> List[Dict[str, Any]]:
    heartbeat = [{"type": "DISCARD_UNCHANGED_HEARTBEAT", "parameters": ["{$CONNTRACK.HEARTBEAT}"]}]
    return [_dep(CONNTRACK, "%s: %s" % (SHORT, title), "conntrack.timeout[%s]" % name, "$.timeouts.%s" % name,
                 "%s Discarded when this kernel has no such sysctl." % help_, units="s", extra_pre=heartbeat,
                 on_fail_discard=True)
            for name, title, help_ in TIMEOUTS]


def _default_timeout_trigger() -> Dict[str, Any]:
    return _trigger(
        CONNTRACK, "%s: Table filling with the 5-day ESTABLISHED timeout" % SHORT,
        "min(%s,{$CONNTRACK.USAGE.WINDOW})>{$CONNTRACK.USAGE.WARN} and last(%s)=%d" % (
            item_ref(CONNTRACK, "conntrack.usage"), item_ref(CONNTRACK, "conntrack.timeout[tcp_established]"),
            DEFAULT_ESTABLISHED), "INFO",
        "The table is over the warning level and an ESTABLISHED TCP entry still lives 5 days without a "
        "packet (the kernel default). Connections a NAT or a crashed client never closed hold their "
        "slots that long, and early drop never evicts them. First step: `sudo conntrack-zbx top --by idle`; "
        "if idle entries hold the table, `conntrack-zbx tune --tcp-established-timeout` (see the "
        "runbook for the trade-off) and `sudo conntrack-zbx clean` for what already leaked.",
        event_name="%s: table over {$CONNTRACK.USAGE.WARN}%% with the 5-day ESTABLISHED timeout" % SHORT,
        opdata="Used: {ITEM.LASTVALUE1}, timeout: {ITEM.LASTVALUE2}",
        recovery="last(%s)<{$CONNTRACK.USAGE.WARN}-{$CONNTRACK.USAGE.HYSTERESIS} or last(%s)<>%d" % (
            item_ref(CONNTRACK, "conntrack.usage"), item_ref(CONNTRACK, "conntrack.timeout[tcp_established]"),
            DEFAULT_ESTABLISHED),
        anchor="idle")


def _bucket_triggers() -> List[Dict[str, Any]]:
    """Triggers over two items: hash buckets against the limit, and the network named as culprit."""
    few = _trigger(
        CONNTRACK, FEW_BUCKETS,
        # over the last two values: max and buckets change one after the other when an admin
        # resizes, and the in-between ratio must not raise a problem
        "min(%s,#2)/max(%s,#2)>{$CONNTRACK.BUCKETS.RATIO.MAX}" % (item_ref(CONNTRACK, "conntrack.max"),
                                                                item_ref(CONNTRACK, "conntrack.buckets")),
        "WARNING",
        "nf_conntrack_max is more than {$CONNTRACK.BUCKETS.RATIO.MAX} times the number of hash buckets: "
        "when the table fills, lookups walk long chains. Since kernel 5.15 the default is one bucket per "
        "entry; 'hashsize = max/4' is older advice. First step: `conntrack-zbx tune --auto` shows the "
        "size for this kernel; `--apply` sets it and makes it survive a reboot.",
        event_name="%s: more than {$CONNTRACK.BUCKETS.RATIO.MAX} entries per hash bucket" % SHORT,
        opdata="Max: {ITEM.LASTVALUE1}, buckets: {ITEM.LASTVALUE2}", scope="performance", anchor="hash-buckets")
    ratio = _trigger(
        CONNTRACK, "%s: Hash buckets below the recommended ratio for this kernel" % SHORT,
        "max(%s,#2)<min(%s,#2)" % (item_ref(CONNTRACK, "conntrack.buckets"),
                                  item_ref(CONNTRACK, "conntrack.buckets.recommended")), "INFO",
        "Fewer hash buckets than this kernel's default ratio for the running nf_conntrack_max (one per "
        "entry since 5.15): lookups walk longer chains as the table fills. First step: nothing urgent; "
        "`conntrack-zbx tune --auto` at the next change window.",
        event_name="%s: hash buckets below the recommended ratio for this kernel" % SHORT,
        opdata="Buckets: {ITEM.LASTVALUE1}, recommended: {ITEM.LASTVALUE2}", scope="performance",
        anchor="hash-buckets", depends=(FEW_BUCKETS,))
    share, network = item_ref(CONNTRACK, TOP_SHARE_KEY), item_ref(CONNTRACK, TOP_NETWORK_KEY)
    culprit = _trigger(
        CONNTRACK, CULPRIT,
        "min(%s,{$CONNTRACK.TALKER.SHARE.WINDOW})>{$CONNTRACK.TALKER.SHARE.WARN} and last(%s)<>\"none\""
        % (share, network), "AVERAGE",
        "One network holds a large part of the table. In the incident it was a NAT firewall's range "
        "that never closed its TCP connections: thousands of ESTABLISHED entries from one /24. First "
        "step: `sudo conntrack-zbx top` on the host shows its state mix (mostly ESTABLISHED: connections not "
        "closed, a leak; many states: load) and its sources; contact the range's owners. A known "
        "gateway is left out by setting the macro CONNTRACK.TALKER.NOT_MATCHES (a regex). The usage "
        "warnings depend on this one: while the culprit is named, they do not page again.",
        event_name="%s: network {ITEM.LASTVALUE2} holds more than {$CONNTRACK.TALKER.SHARE.WARN}%% of "
                   "nf_conntrack_max" % SHORT,
        opdata="Share: {ITEM.LASTVALUE1}, network {ITEM.LASTVALUE2}",
        recovery="max(%s,{$CONNTRACK.RECOVERY.WINDOW})<{$CONNTRACK.TALKER.SHARE.WARN}-"
                 "{$CONNTRACK.USAGE.HYSTERESIS}" % share, anchor="culprit", depends=(CULPRIT_FILLING,))
    culprit["tags"] += tags(cause="talker")  # who, not harm: a fleet's paging leaves it to the fleet
    return [few, ratio, culprit, _culprit_filling(share, network)]


def _culprit_filling(share: str, network: str) -> Dict[str, Any]:
    """The culprit at HIGH once the table is past the warning level: the page an action paging
    from High up gets before the first drop, naming the network (a leak can take the table from
    the warning level to full between two polls, so "very high" may come only with the drops).
    The AVERAGE culprit depends on it: an action from Average up has had the culprit already."""
    usage = item_ref(CONNTRACK, "conntrack.usage")
    return _trigger(
        CONNTRACK, CULPRIT_FILLING,
        # usage by its last value (a leak can take the table from the warning level to full between
        # two polls), the share over its window as in the AVERAGE culprit
        "last(%s)>{$CONNTRACK.USAGE.WARN} and min(%s,{$CONNTRACK.TALKER.SHARE.WINDOW})>"
        "{$CONNTRACK.TALKER.SHARE.WARN} and last(%s)<>\"none\""
        % (usage, share, network), "HIGH",
        "The table is past the warning level and one network holds a large part of it: the incident's "
        "shape, a range (a NAT firewall that never closed its TCP connections) taking the table towards "
        "full, when the kernel drops everyone's new connections. First step: `sudo conntrack-zbx top "
        "--by idle` on the host (idle ESTABLISHED entries: a leak; contact the range's owners, "
        "`sudo conntrack-zbx clean` removes what it left), and raise the limit for the time it takes "
        "(`sudo conntrack-zbx tune --auto --apply`).",
        event_name="%s: table over {$CONNTRACK.USAGE.WARN}%% and network {ITEM.LASTVALUE3} holds more than "
                   "{$CONNTRACK.TALKER.SHARE.WARN}%% of nf_conntrack_max" % SHORT,
        opdata="Used: {ITEM.LASTVALUE1}, network {ITEM.LASTVALUE3}: {ITEM.LASTVALUE2}",
        recovery="max(%s,{$CONNTRACK.RECOVERY.WINDOW})<{$CONNTRACK.USAGE.WARN}-{$CONNTRACK.USAGE.HYSTERESIS} or "
                 "max(%s,{$CONNTRACK.RECOVERY.WINDOW})<{$CONNTRACK.TALKER.SHARE.WARN}-{$CONNTRACK.USAGE.HYSTERESIS}"
                 % (usage, share), anchor="culprit", depends=(DROPS,))


def _not_collected(key: str, what: str, consequence: str) -> Dict[str, Any]:
    """No value from a root-side master item (talkers, namespaces) for a while."""
    return _trigger(
        CONNTRACK, "%s: %s not collected" % (SHORT, what),
        "nodata(%s,{$CONNTRACK.TALKERS.NODATA.TIMEOUT})=1" % item_ref(CONNTRACK, key), "WARNING",
        "%s has had no value for {$CONNTRACK.TALKERS.NODATA.TIMEOUT}: %s. First step: the item's error "
        "in Latest data; most often the sudo grant (sudoers.d/conntrack-zbx, docs/permissions.md) is "
        "missing, or the kernel has neither conntrack procfs nor ctnetlink." % (key.split("[")[0], consequence),
        event_name="%s: %s not collected for {$CONNTRACK.TALKERS.NODATA.TIMEOUT}" % (SHORT, what.lower()),
        scope="availability", anchor="not-collected", depends=(STATS_NODATA,), manual_close=True)


def _talkers_items() -> List[Dict[str, Any]]:
    """The talkers master item and what is taken from it (discovery is separate)."""
    items = [_master(
        TALKERS_KEY, "%s: Get top talkers" % SHORT, "{$CONNTRACK.TALKERS.INTERVAL}",
        "Master item: `conntrack-zbx talkers` as JSON: top sources and networks by "
        "entries held. Reads the root-only entry table (ctnetlink, else /proc) through the sudo "
        "drop-in; without it the item is not supported with a message naming the grant. "
        "Parameters: IPv4 and IPv6 roll-up prefix, how many talkers, how many seconds a cached "
        "table read may be reused (keep it below the interval), a network namespace (0: the "
        "agent's own), the silence that makes an ESTABLISHED entry idle, and the Zabbix Timeout "
        "the key runs under (the read ends inside it: raise {$CONNTRACK.TALKERS.TIMEOUT} with the "
        "agent's and proxy's Timeout where the table takes longer to read); values outside the "
        "allow-list make the item not supported with a message saying what is allowed.",
        _not_collected(TALKERS_KEY, "Top talkers", "nobody will be named when the table fills"))]
    items.append(_dep(CONNTRACK, "%s: Entries read for talkers" % SHORT, "conntrack.talkers.entries",
                      "$.entries", "Entries the last talkers run read from the table.",
                      master=TALKERS_KEY))
    items.append(_dep(CONNTRACK, "%s: Distinct sources" % SHORT, "conntrack.talkers.sources",
                      "$.distinct_sources", "Distinct original-direction source addresses in the table.",
                      master=TALKERS_KEY))
    top_network = _dep(CONNTRACK, "%s: Network holding more than the share threshold" % SHORT, TOP_NETWORK_KEY,
                       CULPRIT_FILTER + ".network.first()",
                       "The network (/{$CONNTRACK.TALKERS.PREFIX4}, /{$CONNTRACK.TALKERS.PREFIX6}) holding most "
                       "entries if it holds more than {$CONNTRACK.TALKER.SHARE.WARN}% of nf_conntrack_max, known "
                       "gateways ({$CONNTRACK.TALKER.NOT_MATCHES}) left out; \"none\" otherwise.",
                       value_type="CHAR", master=TALKERS_KEY)
    top_network["preprocessing"][0].update(error_handler="CUSTOM_VALUE", error_handler_params="none")
    top_network["trends"] = "0"
    items.append(top_network)
    items.append(_dep(CONNTRACK, "%s: Share of the network holding most" % SHORT, TOP_SHARE_KEY,
                      TOP_FILTER + ".pct_of_max.first()",
                      "Its entries as a share of nf_conntrack_max: the culprit trigger watches this.",
                      value_type="FLOAT", units="%", master=TALKERS_KEY, on_fail_discard=True))
    return items + _lifeline_items()


def _lifeline_items() -> List[Dict[str, Any]]:
    """Whether monitoring survives a full table here (``conntrack-zbx protect``), from the talkers
    answer (root through the sudo line reads the firewall); an INFO problem where it would not."""
    heartbeat = [{"type": "DISCARD_UNCHANGED_HEARTBEAT", "parameters": ["{$CONNTRACK.HEARTBEAT}"]}]
    state = _dep(CONNTRACK, "%s: Lifeline in place" % SHORT, "conntrack.lifeline", "$.lifeline.protected",
                 "1 when this host's monitoring traffic is kept out of conntrack (`conntrack-zbx protect`), so a "
                 "full table cannot drop the polls; 0 when it is not. Discarded from agents older than the "
                 "lifeline.", master=TALKERS_KEY, on_fail_discard=True, extra_pre=heartbeat)
    ports = _dep(CONNTRACK, "%s: Lifeline ports" % SHORT, "conntrack.lifeline.ports", "$.lifeline.ports",
                 "The TCP ports the lifeline keeps out of conntrack: local services (in) and the server's (out).",
                 value_type="CHAR", master=TALKERS_KEY, on_fail_discard=True, extra_pre=heartbeat)
    ports["trends"] = "0"
    state["triggers"] = [_trigger(
        CONNTRACK, "%s: No lifeline: a full table will blind monitoring on this host" % SHORT,
        "last(%s)=0" % item_ref(CONNTRACK, "conntrack.lifeline"), "INFO",
        "When this host's table is full the kernel drops every new connection, Zabbix's polls and "
        "active checks included: values go missing and the drop problem waits for a poll that wins a "
        "slot (the incident's vanished monitoring data). Nothing is wrong now. First step, at a quiet "
        "moment: `sudo conntrack-zbx protect` shows the rules that keep the agent's traffic out of "
        "conntrack and why; `sudo conntrack-zbx protect --apply` applies them and makes them survive a "
        "reboot (it refuses, naming the rule to add, where the host's firewall would drop them).",
        event_name="%s: no lifeline: a full table will blind monitoring on this host" % SHORT,
        scope="availability", anchor="lifeline")]
    return [state, ports]


def _namespaces_items() -> List[Dict[str, Any]]:
    """The namespaces master item and the host-wide values taken from it."""
    items = [_master(
        NAMESPACES_KEY, "%s: Get namespaces" % SHORT, "{$CONNTRACK.NAMESPACES.INTERVAL}",
        "Master item: `conntrack-zbx namespaces` as JSON: every network namespace of the host "
        "(containers, pods, ip netns) with its own entry count against the one global "
        "nf_conntrack_max, its drop counters, the host-wide sum and the hash table load. Reads other "
        "processes' namespaces through the sudo drop-in.",
        _not_collected(NAMESPACES_KEY, "Namespaces", "a container or pod filling its own table would go unseen"))]
    items.append(_dep(CONNTRACK, "%s: Entries in all namespaces" % SHORT, "conntrack.namespaces.sum", "$.sum",
                      "The sum of every namespace's entries: what the one shared hash table holds.",
                      master=NAMESPACES_KEY))
    load = _dep(CONNTRACK, "%s: Hash table load, all namespaces" % SHORT, "conntrack.namespaces.hash_load",
                "$.hash_load", "Entries of all namespaces per hash bucket.", value_type="FLOAT",
                master=NAMESPACES_KEY, on_fail_discard=True)
    load["triggers"] = [_trigger(
        CONNTRACK, "%s: Hash table overloaded by all namespaces together" % SHORT,
        "min(%s,#2)>{$CONNTRACK.HASH.LOAD.MAX}" % item_ref(CONNTRACK, "conntrack.namespaces.hash_load"), "WARNING",
        "All namespaces share one hash table: together they hold more than {$CONNTRACK.HASH.LOAD.MAX} "
        "entries per bucket, so every lookup walks long chains even where each table looks small. "
        "First step: `sudo conntrack-zbx namespaces --human` shows which namespaces hold most; raise the hash size "
        "with `conntrack-zbx tune`.",
        event_name="%s: all namespaces hold more than {$CONNTRACK.HASH.LOAD.MAX} entries per hash bucket" % SHORT,
        opdata="Load: {ITEM.LASTVALUE1}", scope="performance", anchor="namespaces")]
    items.append(load)
    items.append(_dep(CONNTRACK, "%s: Namespaces in use" % SHORT, "conntrack.namespaces.in_use",
                      "$.namespaces_in_use", "Network namespaces with entries or drops.", master=NAMESPACES_KEY))
    return items


def namespaces_discovery() -> Dict[str, Any]:
    """One namespace per row; the host's own is not discovered (the host-level items and triggers
    cover it, so a full host table pages once)."""
    def proto(name: str, key: str, field: str, description: str, units: str = "", value_type: str = "UNSIGNED",
              extra_pre: Sequence[Dict[str, Any]] = ()) -> Dict[str, Any]:
        it = _dep(CONNTRACK, "%s: {#CT.NS.NAME}: %s" % (SHORT, name), "%s[{#CT.NS.INODE}]" % key,
                  "{#CT.NS.PATH}.%s.first()" % field, description, value_type=value_type, units=units,
                  master=NAMESPACES_KEY, on_fail_discard=True, extra_pre=extra_pre)
        it["uuid"] = uid(CONNTRACK, "prototype", key)
        it["tags"] = tags(component="conntrack", netns="{#CT.NS.NAME}")
        return it

    count = proto("Entries", "conntrack.ns.count", "count", "Entries of this namespace's own table.")
    usage = proto("Usage, in %", "conntrack.ns.usage", "pct_of_max",
                  "This namespace's entries as a share of the global nf_conntrack_max: each namespace "
                  "is refused new entries at that limit on its own.", units="%", value_type="FLOAT")
    drop = proto("Packets dropped, per second", "conntrack.ns.drop", "drop",
                 "Packets this namespace's conntrack dropped because its table was full.", units="!/s",
                 value_type="FLOAT", extra_pre=[{"type": "CHANGE_PER_SECOND", "parameters": [""]}])
    drop_ref, usage_ref = item_ref(CONNTRACK, drop["key"]), item_ref(CONNTRACK, usage["key"])
    drops = _ns_trigger(
        "drops", "kernel is dropping packets, its table is full",
        "last(%s)>0" % drop_ref, "max(%s,{$CONNTRACK.RECOVERY.WINDOW})=0" % drop_ref, "HIGH",
        "The kernel refuses new connections in {#CT.NS.NAME}: its own table reached nf_conntrack_max "
        "('nf_conntrack: table full in netns ..., dropping packet'), while the host's table may look "
        "calm. First step: name who fills it with `sudo conntrack-zbx top --netns {#CT.NS.INODE}` on the "
        "host. See docs/namespaces.md.",
        "Drops: {ITEM.LASTVALUE1}")
    high = _ns_trigger(
        "high", "at more than {$CONNTRACK.NS.USAGE.HIGH:\"{#CT.NS.NAME}\"}% of nf_conntrack_max",
        "last(%s)>{$CONNTRACK.NS.USAGE.HIGH:\"{#CT.NS.NAME}\"}" % usage_ref,
        "max(%s,{$CONNTRACK.RECOVERY.WINDOW})<{$CONNTRACK.NS.USAGE.HIGH:\"{#CT.NS.NAME}\"}-"
        "{$CONNTRACK.USAGE.HYSTERESIS}" % usage_ref, "HIGH",
        "{#CT.NS.NAME} has nearly filled its own table: at 100% of the global nf_conntrack_max the "
        "kernel drops its new connections. First step: `sudo conntrack-zbx top --netns {#CT.NS.INODE}` "
        "names who holds it. See docs/namespaces.md.", "Used: {ITEM.LASTVALUE1}", depends=drops)
    warn = _ns_trigger(
        "warn", "at more than {$CONNTRACK.NS.USAGE.WARN:\"{#CT.NS.NAME}\"}% of nf_conntrack_max",
        "min(%s,{$CONNTRACK.USAGE.WINDOW})>{$CONNTRACK.NS.USAGE.WARN:\"{#CT.NS.NAME}\"}" % usage_ref,
        "max(%s,{$CONNTRACK.RECOVERY.WINDOW})<{$CONNTRACK.NS.USAGE.WARN:\"{#CT.NS.NAME}\"}-"
        "{$CONNTRACK.USAGE.HYSTERESIS}" % usage_ref, "WARNING",
        "{#CT.NS.NAME} is filling its own table. First step: `sudo conntrack-zbx top --netns {#CT.NS.INODE}` "
        "on the host. See docs/namespaces.md.", "Used: {ITEM.LASTVALUE1}",
        depends=high)
    usage["trigger_prototypes"] = [high, warn]
    drop["trigger_prototypes"] = [drops]
    return {
        "uuid": uid(CONNTRACK, "discovery", "namespaces"),
        "name": "%s: Network namespaces discovery" % SHORT,
        "type": "DEPENDENT",
        "key": "conntrack.namespaces.discovery",
        "delay": "0",
        "filter": {
            "evaltype": "AND",
            "conditions": [
                {"macro": "{#CT.NS.KIND}", "value": "^host$", "operator": "NOT_MATCHES_REGEX", "formulaid": "A"},
                {"macro": "{#CT.NS.NAME}", "value": "{$CONNTRACK.NS.MATCHES}", "formulaid": "B"},
                {"macro": "{#CT.NS.NAME}", "value": "{$CONNTRACK.NS.NOT_MATCHES}",
                 "operator": "NOT_MATCHES_REGEX", "formulaid": "C"},
            ],
        },
        "lifetime": "{$CONNTRACK.NS.LOST}",
        "description": "The network namespaces other than the agent's own (containers, pods, ip netns) with "
                       "the most entries: the top {$CONNTRACK.NAMESPACES.TOP}, from conntrack.namespaces. "
                       "Each is compared with the one global nf_conntrack_max on its own.",
        "item_prototypes": [count, usage, drop],
        "master_item": {"key": NAMESPACES_KEY},
        "preprocessing": [{"type": "JSONPATH", "parameters": ["$.discovery"]}],
    }


def _ns_trigger(slug: str, what: str, expression: str, recovery: str, priority: str, description: str,
                opdata: str, depends: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    t = {
        "uuid": uid(CONNTRACK, "trigger_prototype", "ns-" + slug),
        "expression": expression,
        "recovery_mode": "RECOVERY_EXPRESSION",
        "recovery_expression": recovery,
        "name": "%s: {#CT.NS.NAME}: %s" % (SHORT, what),
        "event_name": "%s: {#CT.NS.NAME}: %s" % (SHORT, what),  # the name says which: "pod ...", "netns ..."
        "opdata": opdata,
        "url": runbook_url(CONNTRACK, "namespaces"),
        "priority": priority,
        "description": description,
        "tags": tags(scope="capacity", netns="{#CT.NS.NAME}"),
    }  # type: Dict[str, Any]
    if depends is not None:
        t["dependencies"] = [{"name": depends["name"]}]
    return t


def talkers_discovery(kind: str) -> Dict[str, Any]:
    """One LLD rule per kind ("network", "source") over the talkers document's ``$.discovery``.

    Neither pages: the culprit trigger names the network holding most, and a source's entries are
    always counted in its network, so a source above the share is never news its network did not
    already bring. The discovered items give every range and address its own history and graph.
    """
    plural = kind + "s"

    def proto(name: str, key: str, field: str, description: str, units: str = "",
              value_type: str = "UNSIGNED") -> Dict[str, Any]:
        it = _dep(CONNTRACK, name, "%s[%s,{#CT.TALKER}]" % (key, kind), "{#CT.PATH}.%s.first()" % field,
                  description, value_type=value_type, units=units, master=TALKERS_KEY, on_fail_discard=True)
        it["uuid"] = uid(CONNTRACK, "prototype", key) if kind == "network" else uid(CONNTRACK, "prototype", kind, key)
        it["tags"] = tags(component="conntrack", talker="{#CT.TALKER}")
        return it

    count = proto("%s: %s {#CT.TALKER}: Entries held" % (SHORT, kind), "conntrack.talker.count", "count",
                  "Entries whose original source is this %s. Discarded while it is not in the top list "
                  "(its count is then unknown, not 0)." % kind)
    est = proto("%s: %s {#CT.TALKER}: Established" % (SHORT, kind), "conntrack.talker.established",
                "established", "TCP entries in ESTABLISHED state from this %s: connections a NAT that never "
                "closes them leaves behind." % kind)
    share = proto("%s: %s {#CT.TALKER}: Share of max" % (SHORT, kind), TALKER_SHARE_KEY,
                  "pct_of_max", "Entries held as a share of nf_conntrack_max.", units="%", value_type="FLOAT")
    idle = proto("%s: %s {#CT.TALKER}: Idle entries" % (SHORT, kind), "conntrack.talker.idle", "idle",
                 "ESTABLISHED TCP entries from this %s silent for over {$CONNTRACK.TALKERS.IDLE_MIN} s, from the "
                 "remaining timeout the kernel keeps per entry: connections nobody closed (a leak) rather than "
                 "busy ones (load). Not supported, saying why, where the idle time cannot be known." % kind)
    known = proto("%s: %s {#CT.TALKER}: Entries with a known idle time" % (SHORT, kind),
                  "conntrack.talker.idle_known", "idle_known",
                  "ESTABLISHED TCP entries from this %s whose idle time can be told (their remaining "
                  "timeout is above the retransmission caps and within the established timeout): what "
                  "the idle entries are a share of." % kind)
    # 1 while this network is over the culprit's threshold here, else 0: what the fleet template
    # sums over a host group (6.0's aggregate count() takes no comparison)
    over = proto("%s: %s {#CT.TALKER}: Over the share threshold" % (SHORT, kind), TALKER_OVER_KEY, "pct_of_max",
                 "1 while this %s holds more than {$CONNTRACK.TALKER.SHARE.WARN}%% of nf_conntrack_max, else 0: "
                 "the fleet template counts the nodes of a group where it is." % kind)
    over["preprocessing"].append({"type": "JAVASCRIPT",
                                  "parameters": ["return Number(value) > {$CONNTRACK.TALKER.SHARE.WARN} ? 1 : 0;"]})
    for it in (idle, known):
        it["preprocessing"].append({"type": "REGEX", "parameters": ["^([0-9]+)$", "\\1"],
                                    "error_handler": "CUSTOM_ERROR",
                                    "error_handler_params": "idle time unknown here: the talkers document's "
                                                            "idle_note says why"})
    return {
        "uuid": uid(CONNTRACK, "discovery", "talkers") if kind == "network" else uid(CONNTRACK, "discovery", plural),
        "name": "%s: Top %s discovery" % (SHORT, plural),
        "type": "DEPENDENT",
        "key": "conntrack.talkers.discovery" + ("" if kind == "network" else "[%s]" % plural),
        "delay": "0",
        "filter": {
            "evaltype": "AND",
            "conditions": [
                {"macro": "{#CT.TALKER}", "value": "{$CONNTRACK.TALKER.MATCHES}", "formulaid": "A"},
                {"macro": "{#CT.TALKER}", "value": "{$CONNTRACK.TALKER.NOT_MATCHES}",
                 "operator": "NOT_MATCHES_REGEX", "formulaid": "B"},
            ],
        },
        "lifetime": "{$CONNTRACK.TALKER.LOST}",
        "description": "The top {$CONNTRACK.TALKERS.TOP} %s by entries held, from conntrack.talkers%s." % (
            plural, " (/{$CONNTRACK.TALKERS.PREFIX4}, /{$CONNTRACK.TALKERS.PREFIX6})" if kind == "network" else ""),
        "item_prototypes": [count, est, share, idle, known] + ([over] if kind == "network" else []),
        "trigger_prototypes": _leak_or_load(known, share, idle) if kind == "network" else [],
        "graph_prototypes": [{
            "uuid": uid(CONNTRACK, "graph_prototype", "talker" if kind == "network" else plural),
            "name": "%s: %s {#CT.TALKER}: Entries held" % (SHORT, kind),
            "graph_items": [
                {"color": "F63100", "item": {"host": CONNTRACK, "key": count["key"]}},
                {"sortorder": "1", "color": "199C0D", "item": {"host": CONNTRACK, "key": est["key"]}},
                {"sortorder": "2", "color": "2774A4", "item": {"host": CONNTRACK, "key": idle["key"]}},
            ],
        }],
        "master_item": {"key": TALKERS_KEY},
        "preprocessing": [{"type": "JSONPATH",
                           "parameters": ["$.discovery[?(@['{#CT.KIND}']=='%s')]" % kind]}],
    }


def _leak_or_load(known: Dict[str, Any], share: Dict[str, Any], idle: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Leak or load, for one network, in the problem's name: its idle ESTABLISHED entries hold a
    share of the table (connections not closed), or it held a large share idle_min ago and few
    of the entries it held then are idle now (busy: raise the limit). A young network cannot be
    judged load: the value from idle_min ago does not exist yet, and the expression stays unknown.
    Entries whose idle time cannot be told count for neither."""
    def ref(item: Dict[str, Any]) -> str:
        return item_ref(CONNTRACK, item["key"])
    maximum, talkers = item_ref(CONNTRACK, "conntrack.max"), item_ref(CONNTRACK, TALKERS_KEY)
    leak = _trigger(
        CONNTRACK, "%s: network {#CT.TALKER}: idle connections hold the table" % SHORT,
        # last() keeps the value from before the network left the top list (its items are then
        # discarded, not 0), and Zabbix evaluates the recovery only while the problem expression is
        # false: so the problem also ends once at least two talkers answers came without this network
        # in idle_min. Two, not one: after a gap (a full table starves the polls) the first answer's
        # master value is evaluated before its dependent idle value exists, and one answer would
        # resolve the problem and reopen it in the same second (measured on 6.0.14).
        "last(%s)/last(%s)*100>{$CONNTRACK.TALKER.IDLE.WARN} and (nodata(%s,{$CONNTRACK.TALKERS.IDLE_MIN})=0 "
        "or count(%s,{$CONNTRACK.TALKERS.IDLE_MIN})<2)" % (ref(idle), maximum, ref(idle), talkers), "AVERAGE",
        "This network's ESTABLISHED entries have been silent for over {$CONNTRACK.TALKERS.IDLE_MIN} s: "
        "connections nobody closed (the incident's NAT firewall that never sent FIN/RST). They keep their "
        "slot for the whole ESTABLISHED timeout and early drop never evicts them, so raising the limit only "
        "postpones the outage. First step: tell the network's owners; `sudo conntrack-zbx clean --network "
        "{#CT.TALKER}` removes the idle entries (dry run first), then `conntrack-zbx tune "
        "--tcp-established-timeout` shortens how long the next leak lasts. While the source still leaks, "
        "its newest connections are not idle yet when you clean: they turn idle within "
        "{$CONNTRACK.TALKERS.IDLE_MIN} s and the problem stays open, as it should, until the source is fixed "
        "and the idle share has stayed under half the threshold for {$CONNTRACK.TALKERS.IDLE_MIN} s.",
        event_name="%s: network {#CT.TALKER} holds {ITEM.LASTVALUE1} ESTABLISHED entries silent for over "
                   "{$CONNTRACK.TALKERS.IDLE_MIN}s: connections not closed" % SHORT,
        opdata="Idle: {ITEM.LASTVALUE1}, max: {ITEM.LASTVALUE2}",
        # resolved only once the idle share stayed low for idle_min: a leak still going on after
        # `clean` leaves young entries that turn idle within idle_min, and a recovery on the first
        # low value would resolve the problem and open it again a minute later
        # or the network has left the top list for that long (max() over an empty window is unknown):
        # left it, with answers arriving without it; a talkers poll that fails for idle_min (a slow
        # table, a busy host) tells nothing of the leak and must not resolve it, to reopen it later
        recovery="max(%s,{$CONNTRACK.TALKERS.IDLE_MIN})/last(%s)*100<{$CONNTRACK.TALKER.IDLE.WARN}/2 or "
                 "(nodata(%s,{$CONNTRACK.TALKERS.IDLE_MIN})=1 and count(%s,{$CONNTRACK.TALKERS.IDLE_MIN})>=2)"
                 % (ref(idle), maximum, ref(idle), talkers),
        anchor="leak")
    ago = "#1:now-{$CONNTRACK.TALKERS.IDLE_MIN}"  # the entries it held then are idle now, if silent
    load = _trigger(
        CONNTRACK, "%s: network {#CT.TALKER}: busy connections hold the table" % SHORT,
        "last(%s)>{$CONNTRACK.TALKER.SHARE.WARN} and last(%s,%s)>{$CONNTRACK.TALKER.SHARE.WARN} and "
        "last(%s,%s)>0 and last(%s)*10<last(%s,%s)"
        % (ref(share), ref(share), ago, ref(known), ago, ref(idle), ref(known), ago), "INFO",
        "This network held a large share of the table {$CONNTRACK.TALKERS.IDLE_MIN} s ago and still does, "
        "and fewer than a tenth as many of its ESTABLISHED entries are silent that long as it had then "
        "(of those whose idle time can be told): its connections are in use, or closed and replaced. "
        "That is load, not a leak. First step: raise the limit (`conntrack-zbx tune --auto`).",
        event_name="%s: network {#CT.TALKER} holds {ITEM.LASTVALUE1} of nf_conntrack_max in connections "
                   "still in use: load" % SHORT,
        opdata="Share: {ITEM.LASTVALUE1}, idle: {ITEM.LASTVALUE4}",
        recovery="last(%s)<{$CONNTRACK.TALKER.SHARE.WARN}-{$CONNTRACK.USAGE.HYSTERESIS} or last(%s)*5>last(%s,%s)"
                 % (ref(share), ref(idle), ref(known), ago),
        anchor="load")
    for t in (leak, load):  # who: a fleet's paging can leave these to the fleet's own problems
        t["tags"] += tags(cause="talker", talker="{#CT.TALKER}")
    return [leak, load]


def conntrack_graphs() -> List[Dict[str, Any]]:

    def gi(key: str, color: str, n: int, **extra: str) -> Dict[str, Any]:
        d = {"sortorder": str(n), "color": color, "item": {"host": CONNTRACK, "key": key}}
        if n == 0:
            del d["sortorder"]
        d.update(extra)
        return d

    return [
        {"uuid": uid(CONNTRACK, "graph", "entries"), "name": "%s: Entries vs max" % SHORT,
         "graph_items": [gi("conntrack.count", "1A7C11", 0, drawtype="GRADIENT_LINE"),
                         gi("conntrack.max", "F63100", 1, drawtype="BOLD_LINE")]},
        {"uuid": uid(CONNTRACK, "graph", "usage"), "name": "%s: Usage, in %%" % SHORT,
         "ymin_type_1": "FIXED", "ymax_type_1": "FIXED", "yaxismax": "100",
         "graph_items": [gi("conntrack.usage", "2774A4", 0, drawtype="GRADIENT_LINE")]},
        {"uuid": uid(CONNTRACK, "graph", "drops"), "name": "%s: Drops and failures" % SHORT,
         "graph_items": [gi("conntrack.rate[drop]", "F63100", 0, drawtype="BOLD_LINE"),
                         gi("conntrack.rate[early_drop]", "FF8000", 1),
                         gi("conntrack.rate[insert_failed]", "A54F10", 2),
                         gi("conntrack.rate[chaintoolong]", "6C59DC", 3)]},
    ]


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


def conntrack_dashboard() -> Dict[str, Any]:
    """The template's own dashboard, as the official nginx template carries one."""
    talkers = {"type": "PLAIN_TEXT", "name": "Who holds the table", "x": "12", "y": "5", "width": "12",
               "height": "5",
               "fields": [{"type": "ITEM", "name": "itemids", "value": {"host": CONNTRACK, "key": key}}
                          for key in (TOP_NETWORK_KEY, TOP_SHARE_KEY, "conntrack.talkers.sources",
                                      "conntrack.namespaces.in_use")]}
    return {
        "uuid": uid(CONNTRACK, "dashboard", "conntrack"),
        "name": "Conntrack",
        "pages": [{"widgets": [
            graph_widget(CONNTRACK, "%s: Entries vs max" % SHORT, 0, 0),
            graph_widget(CONNTRACK, "%s: Usage, in %%" % SHORT, 12, 0),
            graph_widget(CONNTRACK, "%s: Drops and failures" % SHORT, 0, 5),
            talkers,
        ]}],
    }


def active_variant(t: Dict[str, Any], name: str) -> Dict[str, Any]:
    """The same template for agents in active mode: every agent item becomes "Zabbix agent
    (active)" (the agent pushes its values, and buffers them while the server cannot be reached:
    the values of a full table arrive afterwards instead of leaving a gap), everything else is the
    same model under another name, with its own stable UUIDs. Availability: the no-data triggers
    (an active agent's silence is the only sign it is gone)."""
    old = t["template"]

    def walk(o: Any) -> Any:
        if isinstance(o, dict):
            return {k: (uid(name, v) if k == "uuid" else name if k == "host" and v == old else walk(v))
                    for k, v in o.items()}
        if isinstance(o, list):
            return [walk(x) for x in o]
        if isinstance(o, str):
            return o.replace("/%s/" % old, "/%s/" % name)
        return o

    new = dict(walk(t))
    new["template"] = new["name"] = name
    for item in new.get("items", []):
        if "type" not in item:  # an agent item (dependent ones say so)
            item["type"] = "ZABBIX_ACTIVE"
    links = {CONNTRACK: CONNTRACK_ACTIVE}  # a node linking the passive template links the active one
    new["templates"] = [{"name": links.get(x["name"], x["name"])} for x in new.get("templates", [])] or None
    if new["templates"] is None:
        del new["templates"]
    new["description"] = new["description"].replace(
        "\n\nGenerated", " Active mode: the agent sends its values (ServerActive, Hostname).\n\nGenerated", 1)
    return new


def _all_triggers(t: Dict[str, Any]) -> List[Dict[str, Any]]:
    out = list(t.get("triggers", []))
    for item in t.get("items", []):
        out += item.get("triggers", [])
    for rule in t.get("discovery_rules", []):
        out += rule.get("trigger_prototypes", [])
        for proto in rule.get("item_prototypes", []):
            out += proto.get("trigger_prototypes", [])
    return out


def resolve_dependencies(t: Dict[str, Any]) -> None:
    """Dependencies are written by trigger name; Zabbix wants name and expressions. A name that
    is not a trigger of the same template is a bug: fail here, not at import."""
    triggers = _all_triggers(t)
    by_name = {x["name"]: x for x in triggers}
    for x in triggers:
        for dep in x.get("dependencies", []):
            target = by_name.get(dep["name"])
            if target is None:
                raise ValueError("%s: trigger %r depends on unknown %r" % (t["template"], x["name"], dep["name"]))
            dep["expression"] = target["expression"]
            if "recovery_expression" in target:
                dep["recovery_expression"] = target["recovery_expression"]
