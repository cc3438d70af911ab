"""The talkers answer in the template: its master item, the top network items, the lifeline's
state, the talkers discovery (networks and sources) and the triggers that name who holds the table
and whether it is a leak or load."""

from typing import Any, Dict, List

from conntrack_zbx.template.build import (CONNTRACK, DROPS, SHORT, TALKERS_KEY, answer_master, dependent_item, item_ref,
                                          make_trigger, not_collected, tags, uid)

CULPRIT = "%s: One network holds a large share of the table" % SHORT
CULPRIT_FILLING = "%s: The table is filling and one network holds a large share of it" % SHORT
TOP_NETWORK_KEY = "conntrack.talkers.top.network"
TOP_SHARE_KEY = "conntrack.talkers.top.share"
# Per discovered network: its share of the table, and whether that is over the culprit threshold
# (the fleet template's calculated items aggregate these over a host group)
TALKER_SHARE_KEY, TALKER_OVER_KEY = "conntrack.talker.share", "conntrack.talker.over"
# The networks the culprit trigger looks at: all but {$CONNTRACK.TALKER.NOT_MATCHES} (known NAT
# gateways), first = the one holding most (the document lists them by entries, descending).
NOT_EXCLUDED = "@.network =~ \"^(?!(?:{$CONNTRACK.TALKER.NOT_MATCHES})$)\""
TOP_FILTER = "$.networks[?(%s)]" % NOT_EXCLUDED
# The network item names only a network above the threshold ("none" otherwise): the trigger's
# name is then taken from the very value that made it fire, never from a sibling item that the
# server happened to store a moment later.
CULPRIT_FILTER = "$.networks[?(@.pct_of_max > {$CONNTRACK.TALKER.SHARE.WARN} && %s)]" % NOT_EXCLUDED


def culprit_filling(share: str, network: str) -> Dict[str, Any]:
    """The culprit at HIGH once the table is past the warning level: the page an action paging
    from High up gets before the first drop, naming the network (a leak can take the table from
    the warning level to full between two polls, so "very high" may come only with the drops).
    The AVERAGE culprit depends on it: an action from Average up has had the culprit already."""
    usage = item_ref(CONNTRACK, "conntrack.usage")
    return make_trigger(
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


def talkers_items() -> List[Dict[str, Any]]:
    """The talkers master item and what is taken from it (discovery is separate)."""
    items = [answer_master(
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
        not_collected(TALKERS_KEY, "Top talkers", "nobody will be named when the table fills"))]
    items.append(dependent_item(CONNTRACK, "%s: Entries read for talkers" % SHORT, "conntrack.talkers.entries",
                      "$.entries", "Entries the last talkers run read from the table.",
                      master=TALKERS_KEY))
    items.append(dependent_item(CONNTRACK, "%s: Distinct sources" % SHORT, "conntrack.talkers.sources",
                      "$.distinct_sources", "Distinct original-direction source addresses in the table.",
                      master=TALKERS_KEY))
    top_network = dependent_item(CONNTRACK, "%s: Network holding more than the share threshold" % SHORT,
                                 TOP_NETWORK_KEY,
                       CULPRIT_FILTER + ".network.first()",
                       "The network (/{$CONNTRACK.TALKERS.PREFIX4}, /{$CONNTRACK.TALKERS.PREFIX6}) holding most "
                       "entries if it holds more than {$CONNTRACK.TALKER.SHARE.WARN}% of nf_conntrack_max, known "
                       "gateways ({$CONNTRACK.TALKER.NOT_MATCHES}) left out; \"none\" otherwise.",
                       value_type="CHAR", master=TALKERS_KEY)
    top_network["preprocessing"][0].update(error_handler="CUSTOM_VALUE", error_handler_params="none")
    top_network["trends"] = "0"
    items.append(top_network)
    items.append(dependent_item(CONNTRACK, "%s: Share of the network holding most" % SHORT, TOP_SHARE_KEY,
                      TOP_FILTER + ".pct_of_max.first()",
                      "Its entries as a share of nf_conntrack_max: the culprit trigger watches this.",
                      value_type="FLOAT", units="%", master=TALKERS_KEY, on_fail_discard=True))
    return items + lifeline_items()


def lifeline_items() -> List[Dict[str, Any]]:
    """Whether monitoring survives a full table here (``conntrack-zbx protect``), from the talkers
    answer (root through the sudo line reads the firewall); an INFO problem where it would not."""
    heartbeat = [{"type": "DISCARD_UNCHANGED_HEARTBEAT", "parameters": ["{$CONNTRACK.HEARTBEAT}"]}]
    state = dependent_item(CONNTRACK, "%s: Lifeline in place" % SHORT, "conntrack.lifeline", "$.lifeline.protected",
                 "1 when this host's monitoring traffic is kept out of conntrack (`conntrack-zbx protect`), so a "
                 "full table cannot drop the polls; 0 when it is not. Discarded from agents older than the "
                 "lifeline.", master=TALKERS_KEY, on_fail_discard=True, extra_pre=heartbeat)
    ports = dependent_item(CONNTRACK, "%s: Lifeline ports" % SHORT, "conntrack.lifeline.ports", "$.lifeline.ports",
                 "The TCP ports the lifeline keeps out of conntrack: local services (in) and the server's (out).",
                 value_type="CHAR", master=TALKERS_KEY, on_fail_discard=True, extra_pre=heartbeat)
    ports["trends"] = "0"
    state["triggers"] = [make_trigger(
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


def talkers_discovery(kind: str) -> Dict[str, Any]:
    """One LLD rule per kind ("network", "source") over the talkers document's ``$.discovery``.

    Neither pages: the culprit trigger names the network holding most, and a source's entries are
    always counted in its network, so a source above the share is never news its network did not
    already bring. The discovered items give every range and address its own history and graph.
    """
    plural = kind + "s"

    def proto(name: str, key: str, field: str, description: str, units: str = "",
              value_type: str = "UNSIGNED") -> Dict[str, Any]:
        it = dependent_item(CONNTRACK, name, "%s[%s,{#CT.TALKER}]" % (key, kind), "{#CT.PATH}.%s.first()" % field,
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
    leak = make_trigger(
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
    load = make_trigger(
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
