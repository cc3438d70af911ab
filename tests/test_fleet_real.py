"""The fleet template and ``conntrack-zbx fleet`` on a real server, each LTS: four simulated nodes
(trapper items fed by zabbix_sender, lab/fleetsim.py) in one group, the fleet host made by
``fleet --setup``; the range spreads from one node to all four, and the fleet's one problem per
level names it with the nodes, their shares and whether each is a leak. The real nodes with real
tables are the fleet replay's (tests/test_fleet_replay_real.py)."""

import json
import os
import re
import time

import pytest

from conntrack_zbx.cli import main
from conntrack_zbx.template import fleet as fleet_template
from lab import browser, fleetsim
from lab.debroot import SHARED, zabbix_root
from lab.monitor import Monitor, wait_for
from lab.netns import Entered, Netns
from lab.stack import Stack
from tests.conftest import require_root

pytestmark = pytest.mark.real

GROUP = "Mirrorlist"
NODES = ["mirrorlist-eu1", "mirrorlist-eu2", "mirrorlist-us1", "mirrorlist-us2"]
LEAKY4, LEAKY6, BUSY = "127.0.66.0/24", "fd00:66::/64", "127.0.30.0/24"
FAST = {"{$CONNTRACK.FLEET.INTERVAL}": "3s"}


@pytest.fixture(scope="module", params=["6.0", "7.0"])
def lab(request):
    require_root()
    zabbix = request.param
    root = zabbix_root(zabbix)
    if root is not None:
        root.ensure()
    base = SHARED + "/stack%s-fleet" % zabbix.replace(".", "") if root else "/var/tmp/ctzbx-stack-fleet"
    try:
        with Netns() as ns, Stack(base=base, netns=ns, root=root) as stack, Entered(ns):
            os.environ.update(ZABBIX_URL=stack.url, ZABBIX_USER="Admin", ZABBIX_PASSWORD="zabbix")
            mon = Monitor(stack.url)
            mon.disable_host("Zabbix server")
            assert main(["template", "import"]) == 0
            ids = fleetsim.create_nodes(mon, GROUP, NODES, [LEAKY4, LEAKY6, BUSY])
            stack.reload_config_cache()
            lab = {"stack": stack, "ns": ns}
            wait_for("the server to take the simulated nodes' values", lambda: accepted(lab), timeout=60)
            yield {"stack": stack, "mon": mon, "ns": ns, "ids": ids, "zabbix": zabbix}
    finally:
        for k in ("ZABBIX_URL", "ZABBIX_USER", "ZABBIX_PASSWORD"):
            os.environ.pop(k, None)


def accepted(lab):
    """One batch of quiet values, all taken (the server's configuration cache has every item)."""
    try:
        return send(lab, [])
    except RuntimeError:
        return None


def run_cli(capsys, argv):
    capsys.readouterr()
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def send(lab, over):
    """The leaky range at 31 % (idle) on the nodes in ``over``, at 5 % elsewhere; IPv6 the same;
    the busy range at 25 % (busy) on the first node only."""
    values = []
    for i, host in enumerate(NODES):
        values += [(host, "conntrack.count", "1200"), (host, "conntrack.max", "2048"), (host, "conntrack.usage", "60"),
                   (host, "conntrack.rate[drop]", "0")]
        for net in (LEAKY4, LEAKY6):
            share = 31.0 - i if host in over else 5.0
            values += [(host, "conntrack.talker.%s[network,%s]" % (f, net), v)
                       for f, v in fleetsim.network_values(share, 97)]
        busy = 25.0 if i == 0 else 2.0
        values += [(host, "conntrack.talker.%s[network,%s]" % (f, BUSY), v)
                   for f, v in fleetsim.network_values(busy, 0)]
    stack = lab["stack"]
    return fleetsim.send("127.0.0.1", stack.server_port, values, sender=lab["ns"].cmd(["zabbix_sender"]))


def agrees(name):
    """A fleet problem's name: its count is the number of nodes it lists (both from one API poll)."""
    m = re.search(r"over the threshold on (\d+) of (\d+) nodes of [^:]+: (.*)$", name)
    assert m, name
    listed = m.group(3).split("; every node")[0].split(", ")
    return int(m.group(1)) == len(listed) and int(m.group(1)) <= int(m.group(2))


def opdata(mon, hostid, name):
    """A problem's operational data as the server expands it now (problem.get's opdata)."""
    got = mon.call("problem.get", hostids=[hostid], output=["name", "opdata"])
    return next(x["opdata"] for x in got if x["name"] == name)


def fleet_problems(mon, hostid):
    return {p["name"]: p for p in mon.problems(hostid) if p["r_clock"] == "0"}


def set_up_twice(lab, capsys):
    """``fleet --setup`` run twice: the second renews the token and keeps one host, one
    dashboard. -> the fleet host's id."""
    rc, out, err = run_cli(capsys, ["fleet", "--group", GROUP, "--setup", "--api-url", lab["stack"].url])
    assert rc == 0, err
    made = json.loads(out)
    assert made["fleet_host"] == "%s conntrack fleet" % GROUP and made["nodes"] == NODES
    for k, v in FAST.items():
        lab["mon"].set_macro(made["hostid"], k, v)
    rc, out, err = run_cli(capsys, ["fleet", "--group", GROUP, "--setup", "--api-url", lab["stack"].url])
    assert rc == 0 and json.loads(out)["dashboardid"] == made["dashboardid"], err
    lab["stack"].reload_config_cache()
    return made["hostid"]


def test_fleet_spreads_one_problem_per_level(lab, capsys):
    mon = lab["mon"]
    hostid = set_up_twice(lab, capsys)

    def named(needle):
        def probe():
            if time.monotonic() - last[0] > 2:  # a node's values every 2 s, as a fast talkers poll
                send(lab, spread)
                last[0] = time.monotonic()
            found = [n for n in fleet_problems(mon, hostid) if needle in n]
            return found[0] if found else None
        return probe

    seen = lambda: (sorted(fleet_problems(mon, hostid)), [(i["key_"], i["lastvalue"], i["error"])  # noqa: E731
                                                          for i in mon.items(hostid)],
                    [(t["description"], t["error"]) for t in mon.call("trigger.get", hostids=[hostid],
                                                                      output=["description", "error"]) if t["error"]])
    last = [0.0]
    spread = NODES[:1]
    one = wait_for("the fleet's one-node problem", named("%s is over the threshold on 1 of 4" % LEAKY4),
                   timeout=90, seen=seen)
    assert one == "Conntrack fleet: network %s is over the threshold on 1 of 4 nodes of Mirrorlist: " \
                  "mirrorlist-eu1 31%% (idle: a leak)" % LEAKY4, one
    assert opdata(mon, hostid, one) == "Nodes over the threshold: 1 of 4"
    spread = NODES[:2]
    several = wait_for("the fleet's several-nodes problem", named("the same network %s on several" % LEAKY4),
                       timeout=60, seen=seen)
    # the names are those of the count: never a line a poll older than it
    assert several.endswith("over the threshold on 2 of 4 nodes of Mirrorlist: mirrorlist-eu1 31% (idle: a leak), "
                            "mirrorlist-eu2 30% (idle: a leak)"), several
    spread = NODES
    every = wait_for("the fleet's every-node problem", named("%s on every node" % LEAKY6), timeout=60, seen=seen)
    assert every.endswith("over the threshold on 4 of 4 nodes of Mirrorlist: mirrorlist-eu1 31% (idle: a leak), "
                          "mirrorlist-eu2 30% (idle: a leak), mirrorlist-us1 29% (idle: a leak), mirrorlist-us2 28% "
                          "(idle: a leak); every node"), every
    # the /24 too (each range's items are evaluated on their own schedule: wait for both)
    every4 = wait_for("the /24's every-node problem", named("%s on every node" % LEAKY4), timeout=60, seen=seen)
    assert every4.endswith(every.split(" nodes of ")[1]), (every4, every)
    # the busy range over the threshold on one node is its own one-node problem, and not idle
    busy = wait_for("the busy range's one-node problem", named("%s is over the threshold on 1 of 4" % BUSY),
                    timeout=30, seen=seen)
    assert busy.endswith("mirrorlist-eu1 25% (not idle)"), busy
    # one problem per range and level: never one per node
    names = list(fleet_problems(mon, hostid))
    assert len([n for n in names if LEAKY4 in n]) == 3 and not [n for n in names if "mirrorlist-us2" in n
                                                                  and "1 of 4" in n], names
    assert all(agrees(n) for n in (one, several, every, every4, busy)), (one, several, every, every4, busy)
    levels = {p["name"]: p["severity"] for p in mon.problems(hostid)}
    assert levels[every] == levels[every4] == "4" and levels[several] == "3" and levels[one] == "3"

    # conntrack-zbx fleet: the same picture from the API, paged
    rc, out, err = run_cli(capsys, ["fleet", "--group", GROUP, "--json"])
    assert rc == 0, err
    doc = json.loads(out)
    nets = {n["network"]: n for n in doc["networks"]}
    assert doc["nodes"] == 4 and doc["networks"][0]["nodes_over"] == 4
    assert nets[LEAKY4]["nodes_over"] == 4 and nets[LEAKY6]["nodes_over"] == 4 and nets[BUSY]["nodes_over"] == 1
    assert [n["host"] for n in nets[LEAKY4]["nodes"]] == NODES
    assert nets[LEAKY4]["nodes"][0]["idle_pct"] == pytest.approx(97, abs=1)
    assert nets[LEAKY4]["since"] is not None and nets[LEAKY4]["since"] <= time.time()
    assert doc["api_calls"] == 4  # group, hosts, one page of items, problems
    rc, out, err = run_cli(capsys, ["fleet", "--group", GROUP])
    assert rc == 0, err
    assert out.startswith("Fleet Mirrorlist: 4 nodes, 3 networks over the threshold on a node")
    assert "%s  over the threshold on 4 of 4 nodes, since " % LEAKY4 in out and "idle (a leak) on 4" in out
    assert "mirrorlist-eu1" in out.split(BUSY)[1] and "idle   0%" in out.split(BUSY)[1]


def test_fleet_failures_are_clear(lab, capsys):
    rc, out, err = run_cli(capsys, ["fleet", "--group", "No such group"])
    assert rc != 0 and out == ""
    assert err == "conntrack-zbx: fleet failed: host group 'No such group' not found (the group of the " \
                  "fleet's nodes, as the frontend names it)\n", err
    rc, out, err = run_cli(capsys, ["fleet", "--group", GROUP, "--url", "http://127.0.0.1:9/"])
    assert rc != 0 and "cannot reach http://127.0.0.1:9/" in err and "Traceback" not in err, err


def test_a_bad_token_makes_the_fleet_item_not_supported_saying_so(lab, capsys):
    mon = lab["mon"]
    hostid = mon.hostid("%s conntrack fleet" % GROUP)
    mon.set_macro(hostid, "{$CONNTRACK.FLEET.API.TOKEN}", "0" * 64)
    lab["stack"].reload_config_cache()
    try:
        def unsupported():
            it = mon.item(hostid, fleet_template.GET_KEY)
            return it if it["state"] == "1" else None
        it = wait_for("the fleet's API item to be not supported", unsupported, timeout=60,
                      seen=lambda: mon.item(hostid, fleet_template.GET_KEY))
        # the server's own preface, then the API's words and where to look
        assert "Failed: Zabbix API: " in it["error"] and "Not authorized" in it["error"], it["error"]
        assert "(check the macros CONNTRACK.FLEET.API.URL and CONNTRACK.FLEET.API.TOKEN)" in it["error"]
    finally:
        rc, out, err = run_cli(capsys, ["fleet", "--group", GROUP, "--setup", "--api-url", lab["stack"].url])
        assert rc == 0, err


def test_the_fleet_dashboard_has_its_widgets(lab):
    mon = lab["mon"]
    d = mon.call("dashboard.get", filter={"name": ["Conntrack fleet: %s" % GROUP]}, selectPages="extend",
                 output=["dashboardid", "name"])
    assert len(d) == 1
    widgets = d[0]["pages"][0]["widgets"]
    assert sorted(w["name"] for w in widgets) == ["Drops per node", "Problems naming a range",
                                                  "Shared ranges: nodes over the threshold", "Usage per node, in %"]


def test_the_fleet_dashboard_renders_in_a_browser(lab, capsys):
    """The dashboard as on-call opens it: headless Chromium runs the frontend's own scripts.
    Every widget renders and the graphs name every node; a viewer who may not read the nodes
    gets graphs without them (so the check can tell the difference)."""
    mon = lab["mon"]
    rc, out, err = run_cli(capsys, ["fleet", "--group", GROUP, "--setup", "--api-url", lab["stack"].url])
    assert rc == 0, err
    url = json.loads(out)["url"]
    assert url.startswith(lab["stack"].url.rstrip("/") + "/zabbix.php?action=dashboard.view&dashboardid="), url
    shown = browser.widgets(browser.page(lab["ns"], url))
    assert [w.name for w in shown] == ["Usage per node, in %", "Shared ranges: nodes over the threshold",
                                       "Drops per node", "Problems naming a range"], shown
    assert [(w.name, w.error) for w in shown if w.error] == []
    for w in (shown[0], shown[2]):
        assert all(n + ": " in w.text for n in NODES), (w.name, w.text[:400])
    over = [i["name"] for i in mon.items(json.loads(out)["hostid"]) if i["key_"].startswith("conntrack.fleet.over[")]
    assert over and all("Mirrorlist conntrack fleet: " + name in shown[1].text for name in over), (over, shown[1].text)
    gid = mon.call("usergroup.create", name="fleet viewers without hosts")["usrgrpids"][0]
    role = mon.call("role.get", filter={"name": ["User role"]}, output=["roleid"])[0]["roleid"]
    uid = mon.call("user.create", username="viewer", passwd="Qx7-wqzt-991", roleid=role,
                   usrgrps=[{"usrgrpid": gid}])["userids"][0]
    mon.call("dashboard.update", dashboardid=json.loads(out)["dashboardid"], users=[{"userid": uid, "permission": 2}])
    blind = browser.widgets(browser.page(lab["ns"], url, user="viewer", password="Qx7-wqzt-991"))
    assert [w.name for w in blind] == [w.name for w in shown]
    assert not any(n + ": " in blind[0].text for n in NODES), blind[0].text[:400]
