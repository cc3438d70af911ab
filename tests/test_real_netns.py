"""Real entries made by the kernel in a namespace; stats and talkers must report exactly them."""

import json
import subprocess
import sys

import pytest

from lab.netns import Netns
from tests.conftest import require_root

pytestmark = pytest.mark.real

SPEC = [
    {"kind": "tcp_open", "src": "127.0.2.1", "count": 7},
    {"kind": "tcp_open", "src": "127.0.2.2", "count": 5},
    {"kind": "tcp_open", "src": "127.0.2.3", "count": 4},
    {"kind": "tcp_closed", "src": "127.0.3.7", "count": 4},
    {"kind": "udp_unreplied", "src": "127.0.4.9", "count": 6},
    {"kind": "icmp", "src": "127.0.5.5", "count": 2},
    {"kind": "udp_unreplied", "src": "::1", "count": 3},
]
TOTAL = 31


@pytest.fixture(scope="module")
def ns():
    require_root()
    with Netns(leaky=["127.0.2.0/24"]) as n:
        n.traffic(SPEC)
        yield n


def cli(ns, *argv):
    p = ns.run([sys.executable, "-m", "conntrack_zbx"] + list(argv), check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout)


def test_kernel_count_matches_what_we_made(ns):
    assert ns.count() == TOTAL


def test_stats_in_namespace(ns):
    doc = cli(ns, "stats")
    assert doc["count"] == TOTAL
    assert doc["max"] == int(open("/proc/sys/net/netfilter/nf_conntrack_max").read())
    assert doc["free"] == doc["max"] - TOTAL
    assert set(doc["stat"]) >= {"drop", "insert_failed", "early_drop"}


def test_talkers_in_namespace(ns):
    doc = cli(ns, "talkers", "--top", "20")
    assert doc["entries"] == TOTAL and doc["skipped"] == 0
    got = {s["address"]: (s["count"], s["established"], s["protocols"]) for s in doc["sources"]}
    assert got == {
        "127.0.2.1": (7, 7, {"tcp": 7}),
        "127.0.2.2": (5, 5, {"tcp": 5}),
        "127.0.2.3": (4, 4, {"tcp": 4}),
        "127.0.3.7": (4, 0, {"tcp": 4}),
        "127.0.4.9": (6, 0, {"udp": 6}),
        "127.0.5.5": (2, 0, {"icmp": 2}),
        "::1": (3, 0, {"udp": 3}),
    }
    # the leaky range is named first, as on-call needs it
    first = doc["networks"][0]
    assert (first["network"], first["count"], first["established"], first["sources"]) == \
        ("127.0.2.0/24", 16, 16, 3)


def test_top_in_namespace_names_the_range(ns):
    p = ns.run([sys.executable, "-m", "conntrack_zbx", "top"], check=False)
    assert p.returncode == 0
    nets = p.stdout.decode().split("Top networks")[1].splitlines()
    assert "127.0.2.0/24" in nets[2].split() and "ESTABLISHED 100%" in nets[2]


def test_incident_awk_pipeline_miscounts_udp(ns):
    """Why `top` exists: the incident's awk '$7' takes dst= on UDP/ICMP lines."""
    table = ns.read("/proc/net/nf_conntrack")
    awk = subprocess.run(["awk", "{print $7}"], input=table.encode(), capture_output=True)
    fields = awk.stdout.decode().split()
    assert sum(1 for f in fields if f == "src=127.0.4.9") == 0  # UDP culprit invisible to awk
    assert sum(1 for f in fields if f == "dst=127.0.0.1") >= 8  # counted as a "source" instead
