"""The product's templates as data: the counters (stats), the assembly of every room into
"Linux conntrack by Zabbix agent" and its active twin, graphs and dashboard. The talkers' and the
namespaces' items, discovery and triggers are their own rooms (``talkers.py``, ``namespaces.py``);
the shared names and builders are ``build.py``. Every counter name comes from ``parse/stat.py``.
"""

from typing import Any, Dict, List, Optional

from conntrack_zbx.options import IDLE_WARN_PCT
from conntrack_zbx.parse.stat import COUNTER_HELP
from conntrack_zbx.template.build import (CONNTRACK, CONNTRACK_ACTIVE, DROPS, GROUP, GROUP_UUID, NAMESPACES_AGENT_KEY,
                                          SHORT, TALKERS_KEY,
                                          STATS_KEY, STATS_NODATA, TALKERS_AGENT_KEY, answer_master, dependent_item,
                                          graph_widget, item_ref, key_parameter_macros, macro, make_trigger, tags,
                                          uid)
from conntrack_zbx.template.namespaces import namespaces_discovery, namespaces_items
from conntrack_zbx.template.talkers import (CULPRIT, CULPRIT_FILLING, TOP_NETWORK_KEY, TOP_SHARE_KEY,
                                            culprit_filling, talkers_discovery, talkers_items)

# The assembled template's public face: its builders, and the names the lab and export.py read here
__all__ = ["CONNTRACK", "CONNTRACK_ACTIVE", "CONNTRACK_MACROS", "CULPRIT", "CULPRIT_FILLING", "DROPS", "FEW_BUCKETS",
           "GROUP", "GROUP_UUID", "RATES", "STATS_NODATA", "TALKERS_KEY", "TOP_NETWORK_KEY", "TOP_SHARE_KEY",
           "active_variant", "conntrack_dashboard", "conntrack_graphs", "conntrack_template", "resolve_dependencies",
           "talkers_discovery", "uid"]

FEW_BUCKETS = "%s: Too few hash buckets for the limit" % SHORT


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
    *key_parameter_macros("TALKERS", TALKERS_AGENT_KEY),
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
    macro("CONNTRACK.TALKER.IDLE.WARN", str(IDLE_WARN_PCT),
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
    *key_parameter_macros("NAMESPACES", NAMESPACES_AGENT_KEY),
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


def conntrack_template() -> Dict[str, Any]:
    items = (_stats_items() + [_usage_item()] + _rate_items() + _boot_items() + _timeout_items()
             + talkers_items() + namespaces_items())
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
    items = [answer_master(
        STATS_KEY, "%s: Get stats" % SHORT, "{$CONNTRACK.INTERVAL}",
        "Master item: `conntrack-zbx stats` as JSON. When the source cannot be read "
        "the item is not supported with a message saying what is wrong and how to fix it.",
        make_trigger(
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
        dependent_item(CONNTRACK, "%s: Entries" % SHORT, "conntrack.count", "$.count",
             "Connections tracked now (nf_conntrack_count)."),
        dependent_item(CONNTRACK, "%s: Max entries" % SHORT, "conntrack.max", "$.max",
             "The table limit (nf_conntrack_max). At this count the kernel drops new connections.",
             extra_pre=heartbeat),
        dependent_item(CONNTRACK, "%s: Hash buckets" % SHORT, "conntrack.buckets", "$.buckets",
             "Hash table size (nf_conntrack_buckets, the hashsize module parameter).", extra_pre=heartbeat),
        dependent_item(CONNTRACK, "%s: Free slots" % SHORT, "conntrack.free", "$.free",
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
    usage_item = dependent_item(CONNTRACK, "%s: Usage, in %%" % SHORT, "conntrack.usage", "$.usage_pct",
                      "Entries as a share of nf_conntrack_max.", value_type="FLOAT", units="%",
                      on_fail_discard=True)
    high = make_trigger(
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
    warn = make_trigger(
        CONNTRACK, "%s: Table usage is high" % SHORT,
        "min(%s,{$CONNTRACK.USAGE.WINDOW})>{$CONNTRACK.USAGE.WARN}" % usage, "WARNING",
        "The table is filling up: the early warning the incident lacked. First step: `conntrack-zbx "
        "top` on the host: one range holding most entries, mostly ESTABLISHED, is a leak to fix at its "
        "source; many ordinary sources are load: raise the limit (`conntrack-zbx tune --auto`).",
        event_name="%s: table usage above {$CONNTRACK.USAGE.WARN}%% of nf_conntrack_max" % SHORT,
        opdata="Used: {ITEM.LASTVALUE1}",
        recovery="max(%s,{$CONNTRACK.RECOVERY.WINDOW})<{$CONNTRACK.USAGE.WARN}-{$CONNTRACK.USAGE.HYSTERESIS}"
        % usage, anchor="usage-high", depends=(high["name"], CULPRIT, CULPRIT_FILLING))
    full = make_trigger(
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
        item = dependent_item(CONNTRACK, "%s: %s, per second" % (SHORT, title), key, "$.stat.%s" % name,
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
        return make_trigger(
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
        return make_trigger(
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
        return make_trigger(
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
    drift_item = dependent_item(CONNTRACK, "%s: Settings a reboot would not keep" % SHORT, "conntrack.drift", "$.drift",
                      "Where the running nf_conntrack_max or hash size differs from what the next boot sets "
                      "(sysctl.d, modprobe.d, modules-load.d), or a sysctl.d setting the boot order would "
                      "skip. Empty when a reboot keeps what runs now.", value_type="TEXT", extra_pre=heartbeat)
    drift_item["trends"] = "0"
    drift_item["triggers"] = [make_trigger(
        CONNTRACK, "%s: Running settings will not survive a reboot" % SHORT,
        "length(last(%s))>0" % item_ref(CONNTRACK, "conntrack.drift"), "WARNING",
        "The running conntrack limits are not what the next boot sets: the fix was applied at runtime "
        "only, or persisted in a way boot skips (a sysctl.d line while nf_conntrack loads after "
        "systemd-sysctl). After a reboot the table is as small as before the fix. First step: persist "
        "it with `sudo conntrack-zbx tune --max N --apply` (it writes sysctl.d, modprobe.d and modules-load.d).",
        event_name="%s: running settings differ from what boot sets" % SHORT,
        opdata="{ITEM.LASTVALUE1}", scope="notice", anchor="reboot", manual_close=True)]
    recommended = dependent_item(CONNTRACK, "%s: Recommended hash buckets" % SHORT, "conntrack.buckets.recommended",
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
    return [dependent_item(CONNTRACK, "%s: %s" % (SHORT, title), "conntrack.timeout[%s]" % name, "$.timeouts.%s" % name,
                 "%s Discarded when this kernel has no such sysctl." % help_, units="s", extra_pre=heartbeat,
                 on_fail_discard=True)
            for name, title, help_ in TIMEOUTS]


def _default_timeout_trigger() -> Dict[str, Any]:
    return make_trigger(
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
    few = make_trigger(
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
    ratio = make_trigger(
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
    culprit = make_trigger(
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
    return [few, ratio, culprit, culprit_filling(share, network)]


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
