"""The namespaces answer in the template: its master item and the discovery of every network
namespace's own count and drops against the one global limit (docs/namespaces.md)."""

from typing import Any, Dict, List, Optional, Sequence

from conntrack_zbx.template.build import (CONNTRACK, NAMESPACES_KEY, SHORT, answer_master, dependent_item, item_ref,
                                          make_trigger, not_collected, runbook_url, tags, uid)



def namespaces_items() -> List[Dict[str, Any]]:
    """The namespaces master item and the host-wide values taken from it."""
    items = [answer_master(
        NAMESPACES_KEY, "%s: Get namespaces" % SHORT, "{$CONNTRACK.NAMESPACES.INTERVAL}",
        "Master item: `conntrack-zbx namespaces` as JSON: every network namespace of the host "
        "(containers, pods, ip netns) with its own entry count against the one global "
        "nf_conntrack_max, its drop counters, the host-wide sum and the hash table load. Reads other "
        "processes' namespaces through the sudo drop-in.",
        not_collected(NAMESPACES_KEY, "Namespaces", "a container or pod filling its own table would go unseen"))]
    items.append(dependent_item(CONNTRACK, "%s: Entries in all namespaces" % SHORT, "conntrack.namespaces.sum", "$.sum",
                      "The sum of every namespace's entries: what the one shared hash table holds.",
                      master=NAMESPACES_KEY))
    load = dependent_item(CONNTRACK, "%s: Hash table load, all namespaces" % SHORT, "conntrack.namespaces.hash_load",
                "$.hash_load", "Entries of all namespaces per hash bucket.", value_type="FLOAT",
                master=NAMESPACES_KEY, on_fail_discard=True)
    load["triggers"] = [make_trigger(
        CONNTRACK, "%s: Hash table overloaded by all namespaces together" % SHORT,
        "min(%s,#2)>{$CONNTRACK.HASH.LOAD.MAX}" % item_ref(CONNTRACK, "conntrack.namespaces.hash_load"), "WARNING",
        "All namespaces share one hash table: together they hold more than {$CONNTRACK.HASH.LOAD.MAX} "
        "entries per bucket, so every lookup walks long chains even where each table looks small. "
        "First step: `sudo conntrack-zbx namespaces --human` shows which namespaces hold most; raise the hash size "
        "with `conntrack-zbx tune`.",
        event_name="%s: all namespaces hold more than {$CONNTRACK.HASH.LOAD.MAX} entries per hash bucket" % SHORT,
        opdata="Load: {ITEM.LASTVALUE1}", scope="performance", anchor="namespaces")]
    items.append(load)
    items.append(dependent_item(CONNTRACK, "%s: Namespaces in use" % SHORT, "conntrack.namespaces.in_use",
                      "$.namespaces_in_use", "Network namespaces with entries or drops.", master=NAMESPACES_KEY))
    return items


def namespaces_discovery() -> Dict[str, Any]:
    """One namespace per row; the host's own is not discovered (the host-level items and triggers
    cover it, so a full host table pages once)."""
    def proto(name: str, key: str, field: str, description: str, units: str = "", value_type: str = "UNSIGNED",
              extra_pre: Sequence[Dict[str, Any]] = ()) -> Dict[str, Any]:
        it = dependent_item(CONNTRACK, "%s: {#CT.NS.NAME}: %s" % (SHORT, name), "%s[{#CT.NS.INODE}]" % key,
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
