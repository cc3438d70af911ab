"""The fleet replay (lab/fleet.py, make demo-fleet) on the real kernel and a real Zabbix 6.0: four
node namespaces, one leaky NAT reaching all of them from the same /24 and /64 at different rates."""

import pytest

from lab.fleet import GROUP, LEAKY4, NODES, FleetReplay, host_name
from lab.scenario import MAX_PATH
from tests.conftest import require_root
from tests.test_fleet_real import agrees

pytestmark = pytest.mark.real


def read(path):
    with open(path) as f:
        return int(f.read())


def test_the_fleet_sees_one_range_on_every_node(capsys, tmp_path):
    require_root()
    before = read(MAX_PATH)
    r = FleetReplay(out=str(tmp_path))
    with r:
        try:
            res = r.story()
        finally:
            print("\nfleet replay timeline:\n" + r.timeline())
            with capsys.disabled():
                print("\nfleet replay timeline:\n" + r.timeline())
    assert read(MAX_PATH) == before  # the global limit is back
    named, drops, every = res["named"], res["first_drop"], res["every"]
    # every node dropped (the nodes fill at different times), and named the range itself first
    assert sorted(drops) == sorted(s for s, _ in NODES), drops
    assert len({round(t) for t in drops.values()}) == len(NODES), drops
    for short in drops:
        assert named[short] < drops[short], (short, named, drops)
    # the fleet's one every-node problem, before the last node's first drop, names the range on 4 of 4
    assert float(every["clock"]) < max(drops.values()), (every, drops)
    assert "%s on every node: over the threshold on 4 of 4 nodes of %s: " % (LEAKY4, GROUP) in every["name"]
    assert all(host_name(s) in every["name"] for s, _ in NODES), every["name"]
    # every fleet problem's count is the number of nodes it names
    fleet = [name for who, name in r._noted if who == "fleet"]
    assert fleet and all(agrees(n) for n in fleet), fleet
    # pages: the shared cause pages from the fleet host, once per level (one node, several, every
    # node): three at most, however many nodes; no node pages its own "who" problem
    shared = [p["body"]["subject"] for p in res["shared"]]
    assert 1 <= len(shared) <= 3 and len(set(shared)) == len(shared), shared
    assert any("on every node" in s for s in shared), shared
    node_who = [p["body"]["subject"] for p in res["pages"] if p["body"]["subject"].startswith(
        "Problem: Conntrack: network %s holds" % LEAKY4)]
    assert node_who == [], node_who
    high = [p["body"]["subject"] for p in res["high"]]
    assert [s for s in high if s.startswith("Problem: Conntrack fleet:")] == [s for s in shared if "every node" in s]
    # conntrack-zbx fleet, against the same server, ranked the range first, on all four
    top = r.fleet_json["networks"][0]
    assert r.fleet_json["nodes"] == 4 and top["network"] in (LEAKY4, "fd00:66::/64") and top["nodes_over"] == 4
    assert "over the threshold on 4 of 4 nodes" in r.fleet_table
    # the dashboard in a browser during the leak: every widget rendered, the graphs naming every
    # node, the problems widget the fleet's problem; its screenshot written
    shown = {w.name: w for w in r.dashboard}
    assert [w.name for w in r.dashboard] == ["Usage per node, in %", "Shared ranges: nodes over the threshold",
                                             "Drops per node", "Problems naming a range"], r.dashboard
    assert [(w.name, w.error) for w in r.dashboard if w.error] == []
    for name in ("Usage per node, in %", "Drops per node"):
        assert all(host_name(s) + ": " in shown[name].text for s, _ in NODES), shown[name].text[:400]
    assert "Mirrorlist conntrack fleet: " in shown["Shared ranges: nodes over the threshold"].text
    assert "on every node" in shown["Problems naming a range"].text
    with open(r.screenshot, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
