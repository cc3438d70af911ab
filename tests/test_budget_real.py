"""A call never outlives its budget: on a real long-tail table too big to read in time, the whole
process, interpreter start to last byte written, ends inside --budget, and says it is truncated.
(A UserParameter that outlives the agent's Timeout is killed and the item goes *not supported*
exactly when the table is at its largest.)"""

import json
import os
import subprocess
import sys
import time

import pytest

from lab import bulk
from lab.netns import Netns, Entered
from tests.conftest import require_root

pytestmark = pytest.mark.real

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N, DISTINCT = 240000, 60000  # the long-tail shape of a public mirror, under the default max


@pytest.fixture(scope="module")
def table():
    require_root()
    flows = bulk.long_tail_mix(N, DISTINCT)
    with Netns(conntrack=False) as ns:
        with Entered(ns):
            report = bulk.insert(flows)
            assert not report["errors"], report
            yield ns


def timed(argv):
    t = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "conntrack_zbx"] + argv, cwd=REPO, capture_output=True, text=True)
    wall = time.monotonic() - t
    assert p.returncode == 0, p.stdout + p.stderr
    return wall, json.loads(p.stdout)


@pytest.mark.parametrize("source", ["netlink", "proc"])
@pytest.mark.parametrize("budget", [0.3, 0.6])
def test_whole_call_ends_inside_the_budget(table, source, budget):
    with Entered(table):
        wall, doc = timed(["talkers", "--source=%s" % source, "--max-age=0", "--budget=%s" % budget,
                           "--cache-dir=/run/conntrack-zbx-budgettest"])
    assert wall < budget, "%s: %.3f s for a %.1f s budget" % (source, wall, budget)
    if budget < 0.5:  # far too short for this table: what was read, and says so
        assert doc["truncated"] and 0 < doc["entries"] < N, doc["entries"]
    else:  # whatever it managed, it says which
        assert doc["entries"] == N or (doc["truncated"] and doc["entries"] < N)


def test_snapshot_file_ends_inside_the_budget(table, tmp_path):
    path = str(tmp_path / "conntrack.list")
    with Entered(table):
        with open("/proc/net/nf_conntrack", "rb") as src, open(path, "wb") as dst:
            dst.write(src.read())
    wall, doc = timed(["talkers", "--file", path, "--budget=0.3"])
    assert doc["truncated"] and wall < 0.3, (wall, doc["entries"])
    wall, doc = timed(["talkers", "--file", path, "--budget=30"])
    assert not doc["truncated"] and doc["entries"] == N and doc["skipped"] == 0
    assert doc["networks"][0]["network"] == "127.66.6.0/24"  # the culprit, in the long tail
