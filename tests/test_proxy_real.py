"""Monitoring through a real Zabbix proxy (zabbix-proxy-sqlite3, active proxy), on each LTS: one
node's agent is watched directly by the server and through the proxy, passively and actively, and
both paths show the same values, the same discovered talkers and the same problems. 6.0: this
machine's server, zabbix_agentd, agent 2 and the unpacked 6.0 proxy; 7.0: server and agent 2 from a
Debian 13 root (the agent side from the project's .deb), the proxy from a second one."""

import json
import os
import shutil
import sys

import pytest

from conntrack_zbx.cli import main
from lab.agent import Agent, grant_sudo, install_deb, install_plugin
from lab.debroot import SHARED, zabbix_root
from lab.monitor import Monitor, wait_for
from lab.netns import Netns, Entered
from lab.proxy import Proxy
from lab.proxy import fetch as fetch_proxy
from lab.stack import Stack
from tests.conftest import require_root

pytestmark = pytest.mark.real

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUDOERS = "/etc/sudoers.d/conntrack-zbx-proxytest"
AGENT_PORT, PROXY_PORT = 10062, 10161
DIRECT, PROXIED, ACTIVE = "node-direct", "node-via-proxy", "node-active-via-proxy"
FAST = {"{$CONNTRACK.INTERVAL}": "2s", "{$CONNTRACK.TALKERS.INTERVAL}": "4s", "{$CONNTRACK.TALKERS.MAX_AGE}": "0",
        "{$CONNTRACK.RECOVERY.WINDOW}": "10s", "{$CONNTRACK.USAGE.WINDOW}": "6s",
        "{$CONNTRACK.TALKER.SHARE.WINDOW}": "8s", "{$CONNTRACK.NAMESPACES.INTERVAL}": "3s"}
LEAKY = "127.0.11.0/24"


@pytest.fixture(scope="module", params=["6.0", "7.0"])
def lab(request):
    require_root()
    zabbix = request.param
    kind = "agent2" if zabbix == "7.0" else "agentd"
    root, proxy_root = zabbix_root(zabbix), zabbix_root(zabbix, proxy=True)
    if root is not None:
        # from the host's namespace (the lab namespace has no route out): both roots, built once
        root.ensure()
        proxy_root.ensure()
        plugin = install_deb(REPO, root, agent=kind)
        base = SHARED + "/stack%s-proxy" % zabbix.replace(".", "")
    else:
        plugin = install_plugin(REPO, sys.executable)
        grant_sudo(plugin.binary, SUDOERS)
        fetch_proxy()
        base = "/var/tmp/ctzbx-stack-proxy"
    try:
        with Netns(leaky=[LEAKY]) as ns:
            ns.traffic([{"kind": "tcp_open", "src": "127.0.11.%d" % i, "count": 5} for i in range(1, 5)])
            with Stack(base=base, netns=ns, root=root) as stack, Entered(ns), \
                    Proxy(os.path.join(base, "proxy"), stack.server_port, listen_port=PROXY_PORT,
                          root=proxy_root) as proxy, \
                    Agent(kind, AGENT_PORT, plugin.conf, netns=ns, root=root) as agent:
                os.environ.update(ZABBIX_URL=stack.url, ZABBIX_USER="Admin", ZABBIX_PASSWORD="zabbix")
                mon = Monitor(stack.url)
                mon.disable_host("Zabbix server")
                assert stack.api_version().startswith(zabbix + ".")
                yield {"stack": stack, "proxy": proxy, "agent": agent, "mon": mon, "ns": ns, "conf": plugin.conf,
                       "root": root, "zabbix": zabbix}
    finally:
        for k in ("ZABBIX_URL", "ZABBIX_USER", "ZABBIX_PASSWORD"):
            os.environ.pop(k, None)
        if os.path.exists(SUDOERS):
            os.remove(SUDOERS)
        shutil.rmtree(plugin.base, ignore_errors=True)


@pytest.fixture(scope="module")
def hosts(lab):
    mon = lab["mon"]
    if lab["zabbix"] == "7.0":  # 7.0's proxy API: a name and an operating mode (0: active)
        proxyid = mon.call("proxy.create", name="ct-proxy", operating_mode=0)["proxyids"][0]
    else:
        proxyid = mon.call("proxy.create", host="ct-proxy", status=5)["proxyids"][0]  # 5: active proxy
    assert main(["template", "import"]) == 0
    ids = {}
    for name, via in ((DIRECT, None), (PROXIED, proxyid), (ACTIVE, proxyid)):
        ids[name] = mon.create_host(name, "127.0.0.1", AGENT_PORT, macros=FAST)
        if via and lab["zabbix"] == "7.0":
            mon.call("host.update", hostid=ids[name], monitored_by=1, proxyid=via)
        elif via:
            mon.call("host.update", hostid=ids[name], proxy_hostid=via)
    for name in (DIRECT, PROXIED):
        assert main(["template", "import", "--host", name]) == 0
    # the active host: the same keys, as "Zabbix agent (active)" items the agent pushes to the proxy
    for key in ("conntrack.stats", "conntrack.talkers[24,64,10,0]"):
        mon.call("item.create", hostid=ids[ACTIVE], name=key, key_=key, type=7, value_type=4, delay="3s")
    lab["stack"].reload_config_cache()
    return ids


def value(mon, hostid, key):
    it = mon.item(hostid, key)
    return it["lastvalue"] if it and it["lastclock"] != "0" else None


def test_passive_checks_through_the_proxy_match_direct(lab, hosts):
    mon = lab["mon"]
    key = "conntrack.talker.count[network,%s]" % LEAKY
    for name in (DIRECT, PROXIED):
        wait_for("%s: the leaky /24 discovered with its count" % name,
                 lambda name=name: value(mon, hosts[name], key) == "20", timeout=120)
    for k in ("conntrack.max", "conntrack.buckets", "conntrack.talkers.sources"):
        wait_for("%s equal both ways" % k, lambda k=k: value(mon, hosts[DIRECT], k) is not None
                 and value(mon, hosts[DIRECT], k) == value(mon, hosts[PROXIED], k), timeout=60)
    # a 7.0 proxy that gets the host's items before the template's macros (one config sync apart)
    # can mark an item not supported ("Invalid update interval {$...}") until the next sync and
    # value: wait for every item to be supported, and say which were not
    def broken():
        return [(i["key_"], i["error"]) for i in mon.items(hosts[PROXIED]) if i["state"] == "1"]
    wait_for("every item of %s supported" % PROXIED, lambda: not broken(), timeout=120, seen=broken)


def test_active_checks_through_the_proxy(lab, hosts):
    """zabbix_agent2 in active mode, started once the proxy knows its host: it asks the proxy for
    its items at start (then every RefreshActiveChecks, at least 60 s) and pushes the values."""
    mon = lab["mon"]
    with Agent("agent2", AGENT_PORT + 2, lab["conf"], netns=lab["ns"], root=lab["root"],
               server_active="127.0.0.1:%d" % PROXY_PORT, hostname=ACTIVE):
        stats = wait_for("the active conntrack.stats value", lambda: value(mon, hosts[ACTIVE], "conntrack.stats"),
                         timeout=90)
        talkers = wait_for("the active talkers value",
                           lambda: value(mon, hosts[ACTIVE], "conntrack.talkers[24,64,10,0]"), timeout=60)
    assert json.loads(stats)["max"] == int(value(mon, hosts[DIRECT], "conntrack.max"))
    doc = json.loads(talkers)
    # the lab's own Zabbix traffic on 127.0.0.1 is tracked too: look the leaky range up
    assert {n["network"]: n["count"] for n in doc["networks"]}[LEAKY] == 20


def test_problems_through_the_proxy_match_direct(lab, hosts):
    mon = lab["mon"]
    for name in (DIRECT, PROXIED):
        mon.set_macro(hosts[name], "{$CONNTRACK.USAGE.WARN}", "0")
    lab["stack"].reload_config_cache()
    for name in (DIRECT, PROXIED):
        p = wait_for("%s: the usage warning" % name,
                     lambda name=name: mon.active_problem(hosts[name], "table usage above 0%"), timeout=90)
        assert p["name"] == "Conntrack: table usage above 0% of nf_conntrack_max"
    for name in (DIRECT, PROXIED):
        mon.set_macro(hosts[name], "{$CONNTRACK.USAGE.WARN}", "80")
    lab["stack"].reload_config_cache()
    for name in (DIRECT, PROXIED):
        wait_for("%s: the usage warning to resolve" % name,
                 lambda name=name: not mon.active_problem(hosts[name], "table usage above"), timeout=90)
