"""The incident's fleet, replayed: four mirrorlist nodes (two "eu", two "us"), each its own network
namespace with a real conntrack table and zabbix_agentd with the shipped conf, one monitor with
Zabbix 6.0; one leaky NAT reaching every node from the same /24 and the same /64 (IPv6 addresses
that exist only on the nodes' loopbacks), at a different rate on each, so the nodes fill at
different times. ``make demo-fleet`` runs it; tests/test_fleet_replay_real.py checks it.

What it must show (docs/demo.md): per node, when the range was named and when its drops began;
the fleet's one problem per level ("on every node: 4 of 4") before the last node's first drop;
and the page count, which for the shared cause does not grow with the nodes.

nf_conntrack_max is global: every node's table fills against the same limit. It is saved in the
replay's restore file (``make demo-stop`` puts it back after a kill -9) and restored at the end.
"""

import json
import os
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from lab import REPO
from lab.agent import Agent, grant_sudo, install_plugin
from lab.monitor import Monitor, wait_for
from lab.netns import Entered, Netns, sh, veth
from lab.scenario import Scenario, Step, restore_saved_max
from lab.stack import Stack, stop_pids

GROUP = "Mirrorlist"
# (node, leaked connections per tick): the eu nodes get the most, as the NAT's users sit there
NODES = (("eu1", 36), ("eu2", 30), ("us1", 24), ("us2", 20))
LEAKY4, LEAKY6 = "127.0.66.0/24", "fd00:66::/64"
MON_NS = "ctzbx-fmon"
STACK_BASE = "/var/tmp/ctzbx-stack-fleet-demo"
SUDOERS = "/etc/sudoers.d/conntrack-zbx-fleet"
PAGES = "/var/tmp/ctzbx-fleet-pages.jsonl"
PAGER_PORT = 18199
SCREENSHOT = "fleet-dashboard.png"
AGENT_PORT = 10050
LOW_MAX = 800
TICK = 2.0  # seconds between the NAT's bursts
MACROS = {
    "{$CONNTRACK.INTERVAL}": "5s",
    "{$CONNTRACK.TALKERS.INTERVAL}": "5s",
    "{$CONNTRACK.TALKERS.MAX_AGE}": "4",
    "{$CONNTRACK.TALKERS.IDLE_MIN}": "60",
    "{$CONNTRACK.RECOVERY.WINDOW}": "15s",
    "{$CONNTRACK.USAGE.WINDOW}": "15s",
    "{$CONNTRACK.TALKER.SHARE.WINDOW}": "10s",
    "{$CONNTRACK.NODATA.TIMEOUT}": "30s",
    # the lab's nodes are namespaces of one machine: each node's namespace discovery would list the
    # others (a real node sees its own containers only)
    "{$CONNTRACK.NS.NOT_MATCHES}": "ctzbx-f",
}
FLEET_MACROS = {"{$CONNTRACK.FLEET.INTERVAL}": "5s", "{$CONNTRACK.FLEET.FRESH}": "1m",
                "{$CONNTRACK.FLEET.RECOVERY}": "2m"}
CULPRIT = "network %s holds more than" % LEAKY4
DROPS = "kernel is dropping packets"


def node_name(short: str) -> str:
    return "ctzbx-f" + short


def host_name(short: str) -> str:
    return "mirrorlist-" + short


def cleanup_leftovers() -> None:
    restore_saved_max()
    stop_pids(STACK_BASE)
    for short, _ in NODES:
        Netns(node_name(short)).delete()
    Netns(MON_NS).delete()
    if os.path.exists(SUDOERS):
        os.remove(SUDOERS)


class FleetReplay(Scenario):
    def __init__(self, say: Callable[[str], None] = print, low_max: int = LOW_MAX,
                 out: str = os.path.join(REPO, "demo-out")) -> None:
        """``out``: where the dashboard's screenshot goes."""
        Scenario.__init__(self, say)
        self.low_max, self.out = low_max, out
        self.dashboard: List[Any] = []
        self.screenshot = ""
        self.nodes: Dict[str, Netns] = {}
        self.agents: List[Agent] = []
        self.first_drop: Dict[str, float] = {}
        self.named: Dict[str, float] = {}
        self.plugin_base: Optional[str] = None

    # -- lifecycle (lab/scenario.py): what this story adds ------------------------------------
    def cleanup_leftovers(self) -> None:
        cleanup_leftovers()

    def teardown(self, step: Step) -> None:
        for a in self.agents:
            step(a.__exit__)
        self.agents = []
        if hasattr(self, "stack"):
            step(self.stack.stop)
        step(cleanup_leftovers)
        if self.plugin_base:
            import shutil

            shutil.rmtree(self.plugin_base, ignore_errors=True)
            self.plugin_base = None

    def setup(self) -> None:
        self.say("[1/6] four mirrorlist nodes (%s) and a monitor, each its own namespace; nf_conntrack_max %d "
                 "(global: every node's table fills against it)"
                 % (", ".join(host_name(s) for s, _ in NODES), self.low_max))
        self.mon = Netns(MON_NS, conntrack=False).__enter__()
        plugin = install_plugin(REPO, sys.executable)
        self.plugin_base = plugin.base
        grant_sudo(plugin.binary, SUDOERS)
        for i, (short, _) in enumerate(NODES):
            ns = Netns(node_name(short), leaky=[LEAKY4, LEAKY6], stable=False).__enter__()
            self.nodes[short] = ns
            veth(self.mon, ns, "169.254.80.%d" % (4 * i + 1), "169.254.80.%d" % (4 * i + 2),
                 names=("vmon-" + short, "vnode-" + short))
            # the /64 answers on the node's loopback (any address of it), and nowhere else
            sh(["ip", "-n", ns.name, "-6", "route", "add", "local", LEAKY6, "dev", "lo"])
            ns.write_sysctl("nf_conntrack_tcp_timeout_time_wait", 5)
            agent = Agent("agentd", AGENT_PORT, plugin.conf, netns=ns, listen_ip="169.254.80.%d" % (4 * i + 2),
                          server="169.254.80.%d" % (4 * i + 1))
            agent.__enter__()
            self.agents.append(agent)
        self.knob.write(self.low_max)
        self.say("[2/6] Zabbix 6.0 on the monitor; the template imported, the nodes in host group %r, "
                 "`conntrack-zbx fleet --group %s --setup`, on-call's paging" % (GROUP, GROUP))
        self.stack = Stack(base=STACK_BASE, netns=self.mon, server_timeout=10).start()
        self.entered = Entered(self.mon).__enter__()
        os.environ.update(ZABBIX_URL=self.stack.url, ZABBIX_USER="Admin", ZABBIX_PASSWORD="zabbix")
        self.api = Monitor(self.stack.url)
        self.api.disable_host("Zabbix server")
        self.cli(["template", "import"])
        gid = self.api.call("hostgroup.create", name=GROUP)["groupids"][0]
        tid = self.api.call("template.get", filter={"host": ["Linux conntrack by Zabbix agent"]},
                            output=["templateid"])[0]["templateid"]
        self.hostids = {}
        for i, (short, _) in enumerate(NODES):
            self.hostids[short] = self.api.call(
                "host.create", host=host_name(short), groups=[{"groupid": gid}], templates=[{"templateid": tid}],
                interfaces=[{"type": 1, "main": 1, "useip": 1, "ip": "169.254.80.%d" % (4 * i + 2), "dns": "",
                             "port": str(AGENT_PORT)}],
                macros=[{"macro": k, "value": v} for k, v in MACROS.items()])["hostids"][0]
        made = json.loads(self.cli(["fleet", "--group", GROUP, "--setup", "--api-url", self.stack.url]))
        self.fleet_hostid = made["hostid"]
        self.dashboardid, self.dashboard_url = made["dashboardid"], made["url"]
        for k, v in FLEET_MACROS.items():
            self.api.set_macro(self.fleet_hostid, k, v)
        from lab.paging import configure

        for path in (PAGES, PAGES + ".high"):
            if os.path.exists(path):
                os.remove(path)
        self.spawn(self.mon, ["-m", "lab.receiver", "169.254.80.1", str(PAGER_PORT), PAGES])
        configure(self.api, {"Average": "http://169.254.80.1:%d/" % PAGER_PORT,
                             "High": "http://169.254.80.1:%d/" % (PAGER_PORT + 1)}, fleet_groupid=gid)
        self.spawn(self.mon, ["-m", "lab.receiver", "169.254.80.1", str(PAGER_PORT + 1), PAGES + ".high"])
        self.stack.reload_config_cache()
        wait_for("every node's first values", self._baseline, timeout=120,
                 seen=lambda: [h for h in self.hostids if not self._has_values(h)])
        self.event("baseline: every node monitored")

    def cli(self, argv: List[str]) -> str:
        """The product's admin command as an admin runs it (from the monitor's namespace)."""
        p = subprocess.run([sys.executable, "-m", "conntrack_zbx"] + argv, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, cwd=REPO)
        if p.returncode != 0:
            raise RuntimeError("conntrack-zbx %s failed: %s" % (" ".join(argv), p.stderr.decode()[-500:]))
        return p.stdout.decode()

    def _has_values(self, short: str) -> bool:
        it = self.api.item(self.hostids[short], "conntrack.count")
        return bool(it and it["lastclock"] != "0")

    def _baseline(self) -> bool:
        return all(self._has_values(s) for s in self.hostids)

    # -- the story -------------------------------------------------------------------------
    def drops(self, short: str) -> int:
        return self.drops_of(self.nodes[short])

    def _leak(self) -> None:
        """The NAT: every TICK, each node gets its rate of new connections that are never closed,
        half from the /24 and half from the /64; and each node's first drop is noted (the last
        sample that still read no drop)."""
        n = 0
        base = {s: self.drops(s) for s, _ in NODES}
        last_zero = {s: time.time() for s, _ in NODES}
        while not self.stopping.wait(TICK):
            n += 1
            for short, _ in NODES:
                t = time.time()
                if self.drops(short) > base[short]:
                    if short not in self.first_drop:
                        self.first_drop[short] = last_zero[short]
                        self.event("%s: kernel's first 'table full, dropping packet'" % host_name(short),
                                   clock=last_zero[short])
                else:
                    last_zero[short] = t
            # the four bursts at once (one process per node), as one NAT reaches them all
            procs = []
            for short, rate in NODES:
                spec = [{"kind": "tcp_open", "src": "127.0.66.%d" % (1 + (n + k) % 200), "count": 1}
                        for k in range(rate // 2)]
                spec += [{"kind": "tcp_open", "src": "fd00:66::%x" % (1 + (n + k) % 200), "count": 1}
                         for k in range(rate - rate // 2)]
                p = subprocess.Popen(self.nodes[short].cmd([sys.executable, "-m", "lab", "traffic"]),
                                     stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     cwd=REPO)
                p.stdin.write(json.dumps(spec).encode())
                p.stdin.close()
                procs.append(p)
            # a full table drops some SYNs, and their connect waits out its retries: what did
            # not connect within the tick is given up (what did stays open, its close hidden)
            stop_at = time.monotonic() + TICK
            for p in procs:
                try:
                    p.wait(max(0.1, stop_at - time.monotonic()))
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()

    def story(self, timeout: float = 300) -> Dict[str, Any]:
        self.say("[3/6] the NAT leaks into every node from %s and %s, at %s connections per %.0f s"
                 % (LEAKY4, LEAKY6, "/".join(str(r) for _, r in NODES), TICK))
        self.event("the leak starts")
        threading.Thread(target=self._leak, daemon=True).start()
        self.say("[4/6] each node names the range; the fleet host counts the nodes")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._note_problems()
            if len(self.first_drop) == len(NODES) and self.every is not None:
                break
            time.sleep(1)
        else:
            raise AssertionError("the fleet replay did not see every node drop and the every-node problem: %s"
                                 % self.timeline())
        # what `conntrack-zbx fleet` tells the admin now, from the same server
        self.fleet_json = json.loads(self.cli(["fleet", "--group", GROUP, "--json"]))
        self.fleet_table = self.cli(["fleet", "--group", GROUP])
        self.event("conntrack-zbx fleet: %s on %d of %d nodes" % (
            self.fleet_json["networks"][0]["network"], self.fleet_json["networks"][0]["nodes_over"],
            self.fleet_json["nodes"]))
        self.look_at_dashboard()
        time.sleep(10)  # the drop pages of the last node
        self._note_problems()
        self.say("[5/6] the fix on every node: the limit raised, the NAT's entries deleted")
        self.stopping.set()
        self.knob.write(self.saved[0] if self.saved else 262144)
        for ns in self.nodes.values():
            ns.run(["conntrack", "-D", "-s", "127.0.66.0/24"], check=False)
            ns.run(["conntrack", "-D", "-f", "ipv6", "-s", LEAKY6], check=False)
        self.event("fix: nf_conntrack_max raised, the leaked entries deleted")
        time.sleep(12)
        return self.result()

    def look_at_dashboard(self) -> None:
        """The fleet dashboard as on-call opens it now, in a real browser (headless Chromium in the
        monitor's namespace): its widgets as the frontend rendered them, and a PNG in ``out``."""
        from lab import browser

        self.dashboard = browser.widgets(browser.page(self.mon, self.dashboard_url))
        os.makedirs(self.out, exist_ok=True)
        # the replay's last minutes, not the default hour
        self.screenshot = browser.screenshot(self.mon, self.dashboard_url + "&from=now-6m&to=now",
                                             os.path.join(self.out, SCREENSHOT))
        failed = ["%s (%s)" % (w.name, w.error) for w in self.dashboard if w.error]
        self.event("fleet dashboard in a browser: %d widgets, %s; %s" % (
            len(self.dashboard), "failed: " + ", ".join(failed) if failed else "none failed", self.screenshot))

    every: Optional[Dict[str, Any]] = None
    _noted: set = set()

    def _note_problems(self) -> None:
        for short, hid in self.hostids.items():
            for p in self.api.problems(hid):
                key = (short, p["name"])
                if key not in self._noted:
                    self._noted = self._noted | {key}
                    self.event("%s: problem: %s" % (host_name(short), p["name"]), clock=float(p["clock"]))
                    if CULPRIT in p["name"] and short not in self.named:
                        self.named[short] = float(p["clock"])
        for p in self.api.problems(self.fleet_hostid):
            key = ("fleet", p["name"])
            if key not in self._noted:
                self._noted = self._noted | {key}
                self.event("fleet host: problem: %s" % p["name"], clock=float(p["clock"]))
                if LEAKY4 in p["name"] and "on every node" in p["name"] and self.every is None:
                    self.every = p

    def pages(self, path: str = PAGES) -> List[Dict[str, Any]]:
        from lab.paging import received

        return received(path)

    def result(self) -> Dict[str, Any]:
        pages, high = self.pages(), self.pages(PAGES + ".high")
        for pg in pages:
            self.event("page (Average+): %s" % pg["body"].get("subject", "?"), clock=pg["clock"])
        for pg in high:
            self.event("page (High+): %s" % pg["body"].get("subject", "?"), clock=pg["clock"])
        # the shared cause's pages: the fleet host's; the nodes' own pages are their harm (drops,
        # a nearly full table)
        shared = [p for p in pages if p["body"]["subject"].startswith("Problem: Conntrack fleet:")]
        return {"pages": pages, "high": high, "shared": shared, "named": dict(self.named),
                "first_drop": dict(self.first_drop), "every": self.every}


def main(argv: List[str]) -> int:
    if argv[:1] == ["stop"]:
        cleanup_leftovers()
        return 0
    with FleetReplay() as r:
        try:
            res = r.story()
        finally:
            print("\nfleet replay timeline:\n" + r.timeline())
    print("\nper node: range named, first drop")
    for short, _ in NODES:
        named, drop = res["named"].get(short), res["first_drop"].get(short)
        print("  %-16s named %s, first drop %s%s" % (
            host_name(short), time.strftime("%H:%M:%S", time.localtime(named)) if named else "never",
            time.strftime("%H:%M:%S", time.localtime(drop)) if drop else "never",
            " (%.0f s before)" % (drop - named) if named and drop else ""))
    every, last_drop = res["every"], max(res["first_drop"].values())
    print("\nthe fleet's every-node problem: %s\n  %.0f s before the last node's first drop"
          % (every["name"], last_drop - float(every["clock"])))
    print("pages from Average up: %d, of them the fleet's (the shared range): %d; from High up: %d"
          % (len(res["pages"]), len(res["shared"]), len(res["high"])))
    print("\n$ conntrack-zbx fleet --group %s\n%s" % (GROUP, r.fleet_table))
    print("the fleet dashboard, as a browser showed it during the leak: %s" % r.screenshot)
    return 0 if float(every["clock"]) < last_drop else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
