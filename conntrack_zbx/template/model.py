"""The templates as data: macros, items, triggers, discovery, graphs, dashboard.

Everything that names an agent key takes it from ``conntrack_zbx.keys``; every counter name comes
from ``conntrack_zbx.parse.stat``. UUIDs are derived from stable names (``uid``), so they never
change between regenerations and never collide with stock templates.
"""

import hashlib
import uuid
from typing import Any, Dict, List, Optional, Sequence

from conntrack_zbx.keys import KEYS
from conntrack_zbx.parse.stat import COUNTER_HELP

# The official templates' groups, with the UUIDs a Zabbix server's own data carries for them: a
# Linux subsystem goes with the operating systems, a service with the applications.
GROUP, GROUP_UUID = "Templates/Operating systems", "846977d1dfed4968bc5f8bdb363285bc"
SERVICE_GROUP, SERVICE_GROUP_UUID = "Templates/Applications", "a571c0d144b14fd4a87a9d9b2aa9fcd6"
CONNTRACK = "Linux conntrack by Zabbix agent"
MIRRORLIST = "Mirrorlist by HTTP"
NODE = "Mirrorlist node by Zabbix agent and HTTP"
SHORT = "Conntrack"

STATS_KEY = next(k.key for k in KEYS if k.args == ("stats",))
_TALKERS = next(k for k in KEYS if k.args == ("talkers",))
# The master item passes every key parameter as a macro, so an admin tunes them per host.
TALKERS_KEY = "%s[%s]" % (_TALKERS.key, ",".join("{$CONNTRACK.TALKERS.%s}" % p.name.upper()
                                                  for p in _TALKERS.params))
_NAMESPACES = next(k for k in KEYS if k.args == ("namespaces",))
NAMESPACES_KEY = "%s[%s]" % (_NAMESPACES.key, ",".join("{$CONNTRACK.NAMESPACES.%s}" % p.name.upper()
                                                        for p in _NAMESPACES.params))

CONNTRACK_ACTIVE = "Linux conntrack by Zabbix agent active"
NODE_ACTIVE = "Mirrorlist node by Zabbix agent active and HTTP"
CULPRIT = "%s: One network holds a large share of the table" % SHORT
DROPS = "%s: Packets dropped, table full" % SHORT
STATS_NODATA = "%s: No data from conntrack.stats" % SHORT
FEW_BUCKETS = "%s: Too few hash buckets for the limit" % SHORT
CHECK_FAILED = "Mirrorlist: Check failed"
TOP_NETWORK_KEY = "conntrack.talkers.top.network"
TOP_SHARE_KEY = "conntrack.talkers.top.share"
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
    *[macro("CONNTRACK.TALKERS.%s" % p.name.upper(), str(p.default),
            "conntrack.talkers parameter %d: %s (%d..%d; anything else makes the item not supported)."
            % (i, p.help, p.lo, p.hi)) for i, p in enumerate(_TALKERS.params, 1)],
    macro("CONNTRACK.HISTORY", "7d", "History storage period of numeric conntrack items."),
    macro("CONNTRACK.TRENDS", "365d", "Trend storage period of numeric conntrack items."),
    macro("CONNTRACK.RAW.HISTORY", "1d", "History of the raw JSON master items (what on-call reads back)."),
    macro("CONNTRACK.USAGE.WARN", "80", "Warning threshold of table usage, in % of nf_conntrack_max."),
    macro("CONNTRACK.USAGE.HIGH", "95", "High threshold of table usage, in % of nf_conntrack_max."),
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
    *[macro("CONNTRACK.NAMESPACES.%s" % p.name.upper(), str(p.default),
            "conntrack.namespaces parameter %d: %s (%d..%d)." % (i, p.help, p.lo, p.hi))
      for i, p in enumerate(_NAMESPACES.params, 1)],
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
    return "{$%s.RUNBOOK.URL}#%s" % ("MIRRORLIST" if template == MIRRORLIST else "CONNTRACK", anchor)


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
        "triggers": _bucket_triggers() + [_default_timeout_trigger()],
        "graphs": conntrack_graphs(),
        "dashboards": [conntrack_dashboard()],
    }




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
    """Usage in %, with the warning, very high and forecast triggers. All three depend on the
    culprit trigger (when one network is already named, the usage problems add nothing to page
    about) and on the one above them; very high depends on the drops."""
    usage = item_ref(CONNTRACK, "conntrack.usage")
    usage_item = _dep(CONNTRACK, "%s: Usage, in %%" % SHORT, "conntrack.usage", "$.usage_pct",
                      "Entries as a share of nf_conntrack_max.", value_type="FLOAT", units="%",
                      on_fail_discard=True)
    high = _trigger(
        CONNTRACK, "%s: Table usage is very high" % SHORT,
        "last(%s)>{$CONNTRACK.USAGE.HIGH}" % usage, "HIGH",
        "The table is nearly full: at 100% the kernel logs 'nf_conntrack: table full, dropping packet' "
        "and new connections (and monitoring polls) fail. First step: raise the limit now "
        "(`conntrack-zbx tune --auto --apply`), then name who fills it (`conntrack-zbx top`).",
        event_name="%s: table usage above {$CONNTRACK.USAGE.HIGH}%% of nf_conntrack_max" % SHORT,
        opdata="Used: {ITEM.LASTVALUE1}",
        recovery="max(%s,{$CONNTRACK.RECOVERY.WINDOW})<{$CONNTRACK.USAGE.HIGH}-{$CONNTRACK.USAGE.HYSTERESIS}"
        % usage, anchor="usage-high", depends=(DROPS, CULPRIT))
    warn = _trigger(
        CONNTRACK, "%s: Table usage is high" % SHORT,
        "last(%s)>{$CONNTRACK.USAGE.WARN}" % usage, "WARNING",
        "The table is filling up: the early warning the incident lacked. First step: `conntrack-zbx "
        "top` on the host: one range holding most entries, mostly ESTABLISHED, is a leak to fix at its "
        "source; many ordinary sources are load: raise the limit (`conntrack-zbx tune --auto`).",
        event_name="%s: table usage above {$CONNTRACK.USAGE.WARN}%% of nf_conntrack_max" % SHORT,
        opdata="Used: {ITEM.LASTVALUE1}",
        recovery="max(%s,{$CONNTRACK.RECOVERY.WINDOW})<{$CONNTRACK.USAGE.WARN}-{$CONNTRACK.USAGE.HYSTERESIS}"
        % usage, anchor="usage-high", depends=(high["name"], CULPRIT))
    full = _trigger(
        CONNTRACK, "%s: Table will be full soon" % SHORT,
        "last(%s)>{$CONNTRACK.USAGE.WARN} and timeleft(%s,{$CONNTRACK.FULL.WINDOW},100)<{$CONNTRACK.FULL.TIMELEFT}"
        % (usage, usage), "WARNING",
        "Above {$CONNTRACK.USAGE.WARN}% and, at the growth rate of the last {$CONNTRACK.FULL.WINDOW}, full "
        "within {$CONNTRACK.FULL.TIMELEFT} (only above the warning level: a forecast from a low table "
        "flaps). First step: as for high usage, `conntrack-zbx top`, then raise the limit.",
        event_name="%s: table will be full within {$CONNTRACK.FULL.TIMELEFT}" % SHORT,
        opdata="Used: {ITEM.LASTVALUE1}",
        recovery="last(%s)<{$CONNTRACK.USAGE.WARN}-{$CONNTRACK.USAGE.HYSTERESIS}" % usage,
        anchor="usage-high", depends=(high["name"], CULPRIT))
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
            CONNTRACK, DROPS, "last(%s)>0" % rate, "HIGH",
            "The kernel is dropping packets because it could not add an entry ('nf_conntrack: table "
            "full, dropping packet'): clients see timeouts, monitoring data from this host may go "
            "missing. First step: raise the limit now (`conntrack-zbx tune --max N --apply "
            "--runtime-only`), then name who fills it (`conntrack-zbx top`) before flushing anything.",
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
        "it with `conntrack-zbx tune --max N --apply` (it writes sysctl.d, modprobe.d and modules-load.d).",
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
        "last(%s)>{$CONNTRACK.USAGE.WARN} and last(%s)=%d" % (
            item_ref(CONNTRACK, "conntrack.usage"), item_ref(CONNTRACK, "conntrack.timeout[tcp_established]"),
            DEFAULT_ESTABLISHED), "INFO",
        "The table is over the warning level and an ESTABLISHED TCP entry still lives 5 days without a "
        "packet (the kernel default). Connections a NAT or a crashed client never closed hold their "
        "slots that long, and early drop never evicts them. First step: `conntrack-zbx top --by idle`; "
        "if idle entries hold the table, `conntrack-zbx tune --tcp-established-timeout` (see the "
        "runbook for the trade-off) and `conntrack-zbx clean` for what already leaked.",
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
        "last(%s)>{$CONNTRACK.TALKER.SHARE.WARN} and last(%s)<>\"none\"" % (share, network), "AVERAGE",
        "One network holds a large part of the table. In the incident it was a NAT firewall's range "
        "that never closed its TCP connections: thousands of ESTABLISHED entries from one /24. First "
        "step: `conntrack-zbx top` on the host shows its state mix (mostly ESTABLISHED: connections not "
        "closed, a leak; many states: load) and its sources; contact the range's owners. A known "
        "gateway is left out by setting the macro CONNTRACK.TALKER.NOT_MATCHES (a regex). The usage "
        "triggers depend on this one: while the culprit is named, they do not page again.",
        event_name="%s: network {ITEM.LASTVALUE2} holds more than {$CONNTRACK.TALKER.SHARE.WARN}%% of "
                   "nf_conntrack_max" % SHORT,
        opdata="Share: {ITEM.LASTVALUE1}, network {ITEM.LASTVALUE2}",
        recovery="max(%s,{$CONNTRACK.RECOVERY.WINDOW})<{$CONNTRACK.TALKER.SHARE.WARN}-"
                 "{$CONNTRACK.USAGE.HYSTERESIS}" % share, anchor="culprit")
    return [few, ratio, culprit]


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
    return items


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
        "First step: `conntrack-zbx namespaces` shows which namespaces hold most; raise the hash size "
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
        "calm. First step: name who fills it with `conntrack-zbx top --netns {#CT.NS.INODE}` on the "
        "host. See docs/namespaces.md.",
        "Drops: {ITEM.LASTVALUE1}")
    high = _ns_trigger(
        "high", "at more than {$CONNTRACK.NS.USAGE.HIGH:\"{#CT.NS.NAME}\"}% of nf_conntrack_max",
        "last(%s)>{$CONNTRACK.NS.USAGE.HIGH:\"{#CT.NS.NAME}\"}" % usage_ref,
        "max(%s,{$CONNTRACK.RECOVERY.WINDOW})<{$CONNTRACK.NS.USAGE.HIGH:\"{#CT.NS.NAME}\"}-"
        "{$CONNTRACK.USAGE.HYSTERESIS}" % usage_ref, "HIGH",
        "{#CT.NS.NAME} has nearly filled its own table: at 100% of the global nf_conntrack_max the "
        "kernel drops its new connections. First step: `conntrack-zbx top --netns {#CT.NS.INODE}` "
        "names who holds it. See docs/namespaces.md.", "Used: {ITEM.LASTVALUE1}", depends=drops)
    warn = _ns_trigger(
        "warn", "at more than {$CONNTRACK.NS.USAGE.WARN:\"{#CT.NS.NAME}\"}% of nf_conntrack_max",
        "last(%s)>{$CONNTRACK.NS.USAGE.WARN:\"{#CT.NS.NAME}\"}" % usage_ref,
        "max(%s,{$CONNTRACK.RECOVERY.WINDOW})<{$CONNTRACK.NS.USAGE.WARN:\"{#CT.NS.NAME}\"}-"
        "{$CONNTRACK.USAGE.HYSTERESIS}" % usage_ref, "WARNING",
        "{#CT.NS.NAME} is filling its own table. First step: `conntrack-zbx top --netns {#CT.NS.INODE}` "
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
    share = proto("%s: %s {#CT.TALKER}: Share of max" % (SHORT, kind), "conntrack.talker.share",
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
        "item_prototypes": [count, est, share, idle, known],
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
        "postpones the outage. First step: tell the network's owners; `conntrack-zbx clean --network "
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
        # or the network has left the top list for that long (max() over an empty window is unknown)
        recovery="max(%s,{$CONNTRACK.TALKERS.IDLE_MIN})/last(%s)*100<{$CONNTRACK.TALKER.IDLE.WARN}/2 or "
                 "nodata(%s,{$CONNTRACK.TALKERS.IDLE_MIN})=1" % (ref(idle), maximum, ref(idle)),
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


# --- Mirrorlist by HTTP -------------------------------------------------------------------------

SCENARIO = "Mirrorlist"
STEP = "mirrorlist"
WEB_TIME = "web.test.time[%s,%s,resp]" % (SCENARIO, STEP)
WEB_FAIL = "web.test.fail[%s]" % SCENARIO
WEB_ERROR = "web.test.error[%s]" % SCENARIO

MIRRORLIST_MACROS = [
    # The check's URL is built from the host's own address ({HOST.CONN}, expanded in the step URL)
    # and these parts: a {HOST.CONN} inside a user macro's value is not expanded (6.0), so the
    # defaults must not hide it there.
    macro("MIRRORLIST.SCHEME", "http", "Scheme of the mirrorlist URL (http or https)."),
    macro("MIRRORLIST.PORT", "80", "Port of the mirrorlist service on the host's address ({HOST.CONN})."),
    macro("MIRRORLIST.PATH", "/?release=9&arch=x86_64&repo=updates",
          "Path and query of the mirrorlist URL, as yum would ask it."),
    macro("MIRRORLIST.INTERVAL", "1m", "How often the web scenario runs."),
    macro("MIRRORLIST.TIMEOUT", "15s", "Timeout of one request."),
    macro("MIRRORLIST.RESPONSE.WARN", "1", "Average response time, in seconds, above which a problem is raised."),
    macro("MIRRORLIST.RESPONSE.WINDOW", "5m", "Window the response time is averaged over."),
    macro("MIRRORLIST.NODATA.TIMEOUT", "5m", "No response time for this long raises a problem."),
    macro("MIRRORLIST.RUNBOOK.URL", "",
          "Where the runbook is published (`template import --runbook-url`); every trigger links to its section."),
]
STEP_URL = "{$MIRRORLIST.SCHEME}://{HOST.CONN}:{$MIRRORLIST.PORT}{$MIRRORLIST.PATH}"


def mirrorlist_template() -> Dict[str, Any]:
    fail, error, rtime = (item_ref(MIRRORLIST, k) for k in (WEB_FAIL, WEB_ERROR, WEB_TIME))
    return {
        "uuid": uid(MIRRORLIST),
        "template": MIRRORLIST,
        "name": MIRRORLIST,
        "description": ("Response time and failures of a mirrorlist service, measured by the Zabbix "
                        "server with a web scenario, as in the incident's response-time panel.\n\n"
                        "Generated by conntrack_zbx; do not edit by hand."),
        "groups": [{"name": SERVICE_GROUP}],
        "tags": tags(**{"class": "application", "target": "mirrorlist"}),
        "macros": MIRRORLIST_MACROS,
        "httptests": [{
            "uuid": uid(MIRRORLIST, "httptest", SCENARIO),
            "name": SCENARIO,
            "delay": "{$MIRRORLIST.INTERVAL}",
            "steps": [{"name": STEP, "url": STEP_URL, "timeout": "{$MIRRORLIST.TIMEOUT}",
                       "status_codes": "200"}],
            "tags": tags(component="http"),
        }],
        "triggers": [
            _trigger(MIRRORLIST, CHECK_FAILED,
                     # three failed runs in a row, as the official HTTP service template
                     "min(%s,#3)>0 and length(last(%s))>0" % (fail, error), "AVERAGE",
                     "The web scenario failed three times in a row (timeout, refused connection, wrong "
                     "status). First step: is the host's conntrack table full? Its 'Conntrack' problems "
                     "(drops) say so; a full table drops new connections, clients' and this check's alike.",
                     event_name="Mirrorlist: check failed", opdata="{ITEM.LASTVALUE2}", scope="availability",
                     anchor="mirrorlist"),
            _trigger(MIRRORLIST, "Mirrorlist: Response time is high",
                     "avg(%s,{$MIRRORLIST.RESPONSE.WINDOW})>{$MIRRORLIST.RESPONSE.WARN}" % rtime, "WARNING",
                     "Requests to the mirrorlist are slow. In the incident this came first, while the "
                     "conntrack table was full and SYNs were retransmitted. First step: the host's "
                     "'Conntrack' problems.",
                     event_name="Mirrorlist: average response time above {$MIRRORLIST.RESPONSE.WARN}s "
                                "over {$MIRRORLIST.RESPONSE.WINDOW}",
                     opdata="Response time: {ITEM.LASTVALUE1}", scope="performance", anchor="mirrorlist",
                     depends=(CHECK_FAILED,)),
            _trigger(MIRRORLIST, "Mirrorlist: No response time data",
                     "nodata(%s,{$MIRRORLIST.NODATA.TIMEOUT})=1" % rtime, "AVERAGE",
                     "No successful response for {$MIRRORLIST.NODATA.TIMEOUT}: the graph has a gap, as in "
                     "the incident's panel. First step: the check's error (Latest data, web.test.error).",
                     event_name="Mirrorlist: no response time for {$MIRRORLIST.NODATA.TIMEOUT}",
                     scope="availability", anchor="mirrorlist", depends=(CHECK_FAILED,), manual_close=True),
        ],
        "graphs": [{
            "uuid": uid(MIRRORLIST, "graph", "response"),
            "name": "Mirrorlist: Response time",
            "graph_items": [{"color": "2774A4", "drawtype": "GRADIENT_LINE",
                             "item": {"host": MIRRORLIST, "key": WEB_TIME}}],
        }],
    }


# --- the mirrorlist node: both, with the incident's dashboard --------------------------------

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


def node_template() -> Dict[str, Any]:
    return {
        "uuid": uid(NODE),
        "template": NODE,
        "name": NODE,
        "description": ("A mirrorlist node as in the incident: the conntrack template and the mirrorlist "
                        "checks together, with a dashboard that puts the table and the response time "
                        "side by side.\n\nGenerated by conntrack_zbx; do not edit by hand."),
        "templates": [{"name": CONNTRACK}, {"name": MIRRORLIST}],
        "groups": [{"name": SERVICE_GROUP}],
        "tags": tags(**{"class": "application", "target": "mirrorlist"}),
        "dashboards": [{
            "uuid": uid(NODE, "dashboard", "incident"),
            "name": "Conntrack and mirrorlist",
            "pages": [{"widgets": [
                graph_widget(NODE, "%s: Entries vs max" % SHORT, 0, 0),
                graph_widget(NODE, "Mirrorlist: Response time", 12, 0),
                graph_widget(NODE, "%s: Drops and failures" % SHORT, 0, 5),
                graph_widget(NODE, "%s: Usage, in %%" % SHORT, 12, 5),
            ]}],
        }],
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

    new = walk(t)
    new["template"] = new["name"] = name
    for item in new.get("items", []):
        if "type" not in item:  # an agent item (dependent ones say so)
            item["type"] = "ZABBIX_ACTIVE"
    links = {CONNTRACK: CONNTRACK_ACTIVE}
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


def export(runbook: Optional[str] = None) -> Dict[str, Any]:
    """The whole 6.0 export. Triggers over several items (and web scenario items, which are not
    template items in the file) and graphs go at the top level, as Zabbix's own exports do.

    ``runbook``: where the admin publishes docs/runbook.md (``template import --runbook-url``).
    With it, every trigger links its section ("{$CONNTRACK.RUNBOOK.URL}#leak", the macro defaulting
    to that URL, overridable per host); without it no trigger has a link at all, since a default
    would be a dead one (a path on the agent host is nothing the frontend's browser can open). The
    steps on-call needs are in the descriptions either way."""
    conntrack, node = conntrack_template(), node_template()
    templates = [conntrack, active_variant(conntrack, CONNTRACK_ACTIVE), mirrorlist_template(), node,
                 active_variant(node, NODE_ACTIVE)]
    triggers, graphs = [], []
    for t in templates:
        resolve_dependencies(t)
        triggers += t.pop("triggers", [])
        graphs += t.pop("graphs", [])
    _runbook(templates + triggers, runbook)
    return {"zabbix_export": {
        "version": "6.0",
        "groups": [{"uuid": GROUP_UUID, "name": GROUP}, {"uuid": SERVICE_GROUP_UUID, "name": SERVICE_GROUP}],
        "templates": templates,
        "triggers": triggers,
        "graphs": graphs,
    }}


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
