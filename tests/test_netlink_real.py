"""ctnetlink on the real kernel, in throw-away namespaces: the netlink and /proc sources give the
same talkers, big tables come out right, the time budget truncates honestly, a table changing
under the reader never breaks the output, and the counters come without procfs."""

import ipaddress
import json
import sys
import threading
import time

import pytest

from conntrack_zbx.cli import main
from lab import bulk
from lab.netns import Netns, Entered
from tests.conftest import require_root

pytestmark = pytest.mark.real

MIX = [
    {"kind": "tcp_open", "src": "127.0.2.1", "count": 5},
    {"kind": "tcp_open", "src": "127.0.2.2", "count": 3},
    {"kind": "tcp_closed", "src": "127.0.3.7", "count": 2},
    {"kind": "tcp_syn", "src": "127.0.3.8", "count": 1},
    {"kind": "udp_unreplied", "src": "127.0.4.9", "count": 4},
    {"kind": "udp_replied", "src": "127.0.4.10", "count": 1},
    {"kind": "icmp", "src": "127.0.5.5", "count": 2},
    {"kind": "tcp_closed", "src": "::1", "count": 1},
    {"kind": "udp_unreplied", "src": "::1", "count": 2},
    {"kind": "icmp", "src": "::1", "count": 1},
]
BIG = 40000


def talkers(ns, *opts, user=None):
    argv = [sys.executable, "-m", "conntrack_zbx", "talkers", "--max-age=0", "--top=100"] + list(opts)
    if user:
        argv = ["setpriv", "--reuid=%s" % user, "--regid=nogroup", "--init-groups"] + argv
    p = ns.run(argv, check=False)
    doc = json.loads(p.stdout)
    return p.returncode, doc


def same_answer(a, b):
    """Same table, same answer; idle_max moves with the clock between two reads, so it is
    compared to within a few seconds, apart."""
    # and "lifeline": the host's firewall, which a live read reports and a --file snapshot cannot
    strip = ("source", "age", "cached", "source_note", "lifeline")

    def plain(doc):
        out = {k: v for k, v in doc.items() if k not in strip}
        for rows in ("sources", "networks"):
            out[rows] = [{k: v for k, v in r.items() if k != "idle_max"} for r in doc[rows]]
        return out

    def idle_max(doc):
        return [r["idle_max"] for rows in ("sources", "networks") for r in doc[rows]]

    close = all((x is None) == (y is None) and (x is None or abs(x - y) <= 3) for x, y in zip(idle_max(a), idle_max(b)))
    return plain(a) == plain(b) and close


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    require_root()
    with Netns(leaky=["127.0.2.0/24"]) as ns:
        ns.traffic(MIX)
        yield ns


@pytest.fixture(scope="module")
def big():
    require_root()
    with Netns(conntrack=False) as ns:
        flows = bulk.realistic_mix(BIG)
        with Entered(ns):
            report = bulk.insert(flows)
        assert report["errors"] == 0 and ns.count() == BIG
        yield ns, flows


def test_netlink_and_proc_agree_on_a_real_mixed_table(mixed, tmp_path):
    rc1, nlk = talkers(mixed, "--source=netlink", "--cache-dir", str(tmp_path / "a"))
    rc2, proc = talkers(mixed, "--source=proc", "--cache-dir", str(tmp_path / "b"))
    assert rc1 == rc2 == 0
    assert (nlk["source"], proc["source"]) == ("netlink", "proc")
    assert nlk["entries"] == proc["entries"] == mixed.count() == 22
    assert same_answer(nlk, proc), (nlk, proc)
    states = {s["address"]: s["states"] for s in nlk["sources"]}
    assert states["127.0.3.8"] == {"SYN_SENT": 1} and states["127.0.4.9"] == {"UNREPLIED": 4}
    assert states["::1"] == {"REPLIED": 1, "TIME_WAIT": 1, "UNREPLIED": 2}


def test_auto_uses_netlink_as_root(mixed, tmp_path):
    rc, doc = talkers(mixed, "--cache-dir", str(tmp_path / "c"))
    assert rc == 0 and doc["source"] == "netlink" and "source_note" not in doc


def test_netlink_needs_cap_net_admin_and_says_so(mixed):
    rc, doc = talkers(mixed, "--source=netlink", "--cache-dir=/nonexistent/x", user="nobody")
    assert rc == 3 and "CAP_NET_ADMIN" in doc["error"] and "sudo" in doc["error"]


def test_auto_falls_back_to_proc_and_says_why(mixed, tmp_path, monkeypatch):
    from conntrack_zbx.errors import NotPermitted
    from conntrack_zbx.sources import netlink

    def refused():
        raise NotPermitted("synthetic: ctnetlink refused")
    monkeypatch.setattr(netlink, "open_socket", refused)
    out = tmp_path / "out.json"
    with Entered(mixed):
        with open(str(out), "w") as f:
            saved = sys.stdout
            sys.stdout = f
            try:
                rc = main(["talkers", "--max-age=0", "--cache-dir", str(tmp_path / "d")])
            finally:
                sys.stdout = saved
    doc = json.loads(out.read_text())
    assert rc == 0 and doc["source"] == "proc" and doc["entries"] == 22
    assert "netlink not used: synthetic: ctnetlink refused" in doc["source_note"]


def test_big_table_known_answer_from_every_source(big, tmp_path):
    ns, flows = big
    # ties in numeric address order, IPv4 first, as talkers ranks them
    known = sorted(bulk.known_answer(flows).items(),
                   key=lambda kv: (-kv[1], ipaddress.ip_address(kv[0]).version, int(ipaddress.ip_address(kv[0]))))
    snap = tmp_path / "snap.list"
    snap.write_bytes(ns.run(["cat", "/proc/net/nf_conntrack"]).stdout)
    docs = [talkers(ns, "--source=netlink", "--cache-dir", str(tmp_path / "e"))[1],
            talkers(ns, "--source=proc", "--cache-dir", str(tmp_path / "f"))[1],
            talkers(ns, "--file", str(snap), "--timeout-established",
                    ns.read("/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established").strip(),
                    "--max", ns.read("/proc/sys/net/netfilter/nf_conntrack_max").strip())[1]]  # the snapshot host's
    for doc in docs:
        assert doc["entries"] == BIG and doc["skipped"] == 0 and doc["truncated"] is False
        assert [(s["address"], s["count"]) for s in doc["sources"]] == known[:100]
        assert doc["distinct_sources"] == len(known)
        assert doc["networks"][0]["network"] == "127.66.6.0/24"
    assert same_answer(docs[0], docs[1]) and same_answer(docs[0], docs[2])
    # a live read says whether this host has the lifeline (the lab namespace has none); a file cannot
    assert docs[0]["lifeline"] == docs[1]["lifeline"] == {"protected": 0, "ports": ""} and "lifeline" not in docs[2]


def test_budget_truncates_the_netlink_read_honestly(big, tmp_path):
    ns, _ = big
    rc, doc = talkers(ns, "--source=netlink", "--budget=0", "--cache-dir", str(tmp_path / "g"))
    assert rc == 0 and doc["truncated"] is True and 0 <= doc["entries"] < BIG


def test_a_table_changing_while_it_is_read(tmp_path):
    """Entries inserted and expiring during the reads: every answer is valid and plausible."""
    require_root()
    with Netns(conntrack=False) as ns:
        stop = threading.Event()
        inserted = [0]

        def churn():
            k = 0
            with Entered(ns):
                while not stop.is_set():  # 500 entries per batch, each gone after a second
                    flows = [bulk.Flow("127.9.%d.%d" % (k // 256 % 256, k % 256), "tcp", "ESTABLISHED", 500)]
                    inserted[0] += bulk.insert(flows, timeout=1)["sent"]
                    k += 1
        t = threading.Thread(target=churn, daemon=True)
        t.start()
        try:
            time.sleep(1.5)
            for i in range(6):
                for source in ("netlink", "proc"):
                    rc, doc = talkers(ns, "--source=" + source, "--cache-dir", str(tmp_path / ("h%d" % i)))
                    assert rc == 0 and "error" not in doc, doc
                    assert 0 <= doc["entries"] <= inserted[0] and doc["skipped"] == 0
                    assert sum(s["count"] for s in doc["sources"]) <= doc["entries"]
            assert t.is_alive() and inserted[0] > 20000  # it really churned all along
        finally:
            stop.set()
            t.join(10)


def test_stats_counters_through_netlink_match_proc(mixed):
    def stats(*opts):
        p = mixed.run([sys.executable, "-m", "conntrack_zbx", "stats"] + list(opts), check=False)
        return json.loads(p.stdout)
    before = stats("--source=proc")
    via = stats("--source=netlink")
    after = stats("--source=proc")
    assert via["stat_source"] == "netlink" and before["stat_source"] == "proc"
    assert set(via["stat"]) == set(before["stat"])
    for k in before["stat"]:
        assert before["stat"][k] <= via["stat"][k] <= after["stat"][k], k
    assert via["count"] == mixed.count()


def test_stats_without_procfs_falls_back_to_netlink_only_on_the_live_kernel(mixed, tmp_path):
    """--proc-root is a fixture tree: never mixed with the live kernel's counters."""
    from tests.conftest import fixture_tree
    p = mixed.run([sys.executable, "-m", "conntrack_zbx", "stats", "--proc-root",
                   fixture_tree("procfs-disabled")], check=False)
    doc = json.loads(p.stdout)
    assert doc["stat"] is None and "CONFIG_NF_CONNTRACK_PROCFS" in doc["stat_error"]
    p = mixed.run([sys.executable, "-m", "conntrack_zbx", "stats", "--source=netlink", "--proc-root",
                   fixture_tree("procfs-disabled")], check=False)
    doc = json.loads(p.stdout)
    assert doc["stat_source"] == "netlink" and isinstance(doc["stat"]["drop"], int)


def test_netlink_is_unavailable_as_a_plain_user_and_stats_say_why(mixed):
    p = mixed.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--init-groups", sys.executable,
                   "-m", "conntrack_zbx", "stats", "--source=netlink"], check=False)
    doc = json.loads(p.stdout)
    assert doc["stat"] is None and "CAP_NET_ADMIN" in doc["stat_error"]
    assert isinstance(doc["count"], int)
