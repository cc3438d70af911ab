#!/usr/bin/env python3
"""Benchmark: the fleet on a group of 500 simulated nodes, against a group of 4 in the same run.

    sudo .venv/bin/python bench/fleet.py                 # 500 nodes (--nodes N)
    sudo .venv/bin/python bench/fleet.py --markdown docs/performance.md

A real Zabbix 6.0 server in a throw-away network namespace; the nodes are hosts whose per-network
items are trapper items fed by zabbix_sender (lab/fleetsim.py), so no agents are needed. Both
groups get their fleet host from ``conntrack-zbx fleet --setup``; then every node reports the leaky
range over the threshold at once, and the run measures, per group: the time until the fleet host's
calculated count shows every node (the server's aggregate over the group, at a 5 s interval), the
time until its every-node problem opens, and ``conntrack-zbx fleet --json``'s wall time and API
calls. The report gives each with the 500-node group's ratio to the 4-node one.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from lab import fleetsim  # noqa: E402
from lab.monitor import Monitor, wait_for  # noqa: E402
from lab.netns import Entered, Netns  # noqa: E402
from lab.stack import Stack  # noqa: E402

LEAKY, OTHER = "127.0.66.0/24", "198.51.100.0/24"


def cli(argv: List[str]) -> str:
    p = subprocess.run([sys.executable, "-m", "conntrack_zbx"] + argv, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, cwd=REPO)
    if p.returncode != 0:
        raise RuntimeError("conntrack-zbx %s: %s" % (" ".join(argv), p.stderr.decode()))
    return p.stdout.decode()


def values(hosts: List[str], over: bool) -> List[tuple]:
    out = []
    for i, h in enumerate(hosts):
        out += [(h, "conntrack.count", "1500"), (h, "conntrack.max", "2048"), (h, "conntrack.usage", "73"),
                (h, "conntrack.rate[drop]", "0")]
        for net, share in ((LEAKY, 31.0 if over else 3.0), (OTHER, 2.0 + i % 7)):
            out += [(h, "conntrack.talker.%s[network,%s]" % (f, net), v) for f, v in fleetsim.network_values(share, 95)]
    return out


def measure(mon: Monitor, stack: Stack, ns: Netns, group: str, hosts: List[str]) -> Dict[str, float]:
    made = json.loads(cli(["fleet", "--group", group, "--setup", "--api-url", stack.url]))
    fid = made["hostid"]
    mon.set_macro(fid, "{$CONNTRACK.FLEET.INTERVAL}", "5s")
    stack.reload_config_cache()
    sender = ns.cmd(["zabbix_sender"])
    # the range discovered first (below the threshold on every node but one), then every node at once
    wait_for("the fleet host to discover %s" % LEAKY, lambda: (fleetsim.send(
        "127.0.0.1", stack.server_port, values(hosts[:1], True) + values(hosts[1:], False), sender) and
        mon.item(fid, "conntrack.fleet.over[%s]" % LEAKY)), timeout=180, interval=5)
    time.sleep(6)
    t0 = time.time()
    fleetsim.send("127.0.0.1", stack.server_port, values(hosts, True), sender)
    sent = time.time() - t0
    n = len(hosts)
    wait_for("the count to reach %d" % n, lambda: mon.item(fid, "conntrack.fleet.over[%s]" % LEAKY)["lastvalue"]
             == str(n), timeout=300, interval=0.5)
    counted = time.time() - t0
    wait_for("the every-node problem", lambda: any("on every node" in p["name"] for p in mon.problems(fid)),
             timeout=300, interval=0.5)
    problem = time.time() - t0
    t1 = time.time()
    doc = json.loads(cli(["fleet", "--group", group, "--json"]))
    wall = time.time() - t1
    assert doc["nodes"] == n and doc["networks"][0]["nodes_over"] == n, doc["networks"][:1]
    return {"nodes": n, "send_s": sent, "count_s": counted, "problem_s": problem, "fleet_s": wall,
            "api_calls": doc["api_calls"], "items": n * 14}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=500)
    ap.add_argument("--markdown", metavar="PATH", help="replace the fleet section of this file")
    args = ap.parse_args()
    results = []
    with Netns() as ns, Stack(base="/var/tmp/ctzbx-bench-fleet", netns=ns, server_timeout=10) as stack, Entered(ns):
        os.environ.update(ZABBIX_URL=stack.url, ZABBIX_USER="Admin", ZABBIX_PASSWORD="zabbix")
        mon = Monitor(stack.url)
        mon.disable_host("Zabbix server")
        cli(["template", "import"])
        for group, n in (("Fleet of 4", 4), ("Fleet of %d" % args.nodes, args.nodes)):
            hosts = ["%s-node%03d" % (group.split()[-1], i) for i in range(n)]
            t = time.time()
            fleetsim.create_nodes(mon, group, hosts, [LEAKY, OTHER])
            print("%s: %d simulated nodes made in %.0f s" % (group, n, time.time() - t), flush=True)
            stack.reload_config_cache()
            time.sleep(3)
            results.append(measure(mon, stack, ns, group, hosts))
            print(json.dumps(results[-1]), flush=True)
    small, big = results
    rows = ["| | %d nodes | %d nodes | ratio |" % (small["nodes"], big["nodes"]), "|---|---|---|---|"]
    for key, what in (("count_s", "values sent -> fleet count shows every node (s)"),
                      ("problem_s", "values sent -> every-node problem open (s)"),
                      ("fleet_s", "`conntrack-zbx fleet --json` wall time (s)"),
                      ("api_calls", "its API calls")):
        rows.append("| %s | %.1f | %.1f | %.2f |" % (what, small[key], big[key], big[key] / small[key]))
    text = "\n".join(rows) + "\n"
    print(text)
    if args.markdown:
        with open(args.markdown) as f:
            doc = f.read()
        start, end = "<!-- fleet bench -->", "<!-- /fleet bench -->"
        block = "%s\n%s%s" % (start, text, end)
        if start in doc:
            doc = doc[:doc.index(start)] + block + doc[doc.index(end) + len(end):]
        else:
            doc += "\n## The fleet, 500 simulated nodes (bench/fleet.py)\n\n" + block + "\n"
        with open(args.markdown, "w") as f:
            f.write(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
