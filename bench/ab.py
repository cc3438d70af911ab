"""Before and after a change, in one run: ``sudo python3 bench/ab.py --before DIR [--after DIR]``.

A reshaping of the code must keep its speed, and two separate `make bench` runs on a busy machine
differ by more than the change. This runs the same inputs through two checkouts (``--before``, for
instance a ``git worktree`` of the previous commit, and ``--after``, this one), interleaved run by
run so that drift hits both alike, and reports after / before per input with each side's median:

- real tables built in a throw-away namespace (ctnetlink inserts, as bench/run.py does), read by
  ``talkers --source netlink`` and ``--source proc`` (the two counting engines);
- a long-tail real table (a public mirror's shape: many sources with few entries each);
- saved snapshot files (``talkers --file``: the text engine with its forked second half).

Each checkout runs from its own tree with the system python3 (``python3 -m conntrack_zbx``), so
nothing installed is shared. Exit status 1 when a median ratio is above ``--max-ratio``.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from lab import bulk  # noqa: E402
from lab.netns import Entered, Netns  # noqa: E402

MAX = "/proc/sys/net/netfilter/nf_conntrack_max"
WORK = "/var/tmp/ctzbx-bench-ab"


def once(tree: str, argv: List[str]) -> float:
    env = dict(os.environ, PYTHONPATH=tree)
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "conntrack_zbx"] + argv, cwd=tree, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t
    if p.returncode != 0 or b'"error"' in p.stdout[:200]:
        raise SystemExit("%s %s failed: %s %s" % (tree, " ".join(argv), p.stdout[:300], p.stderr[-300:]))
    return wall


def compare(label: str, trees: Dict[str, str], argv: List[str], runs: int) -> Tuple[str, float, float]:
    walls = {side: [] for side in trees}  # type: Dict[str, List[float]]
    for _ in range(runs):
        for side, tree in trees.items():
            walls[side].append(once(tree, argv))
    before, after = statistics.median(walls["before"]), statistics.median(walls["after"])
    return label, before, after


def real_tables(trees: Dict[str, str], sizes: List[Tuple[int, int]], runs: int) -> List[Tuple[str, float, float]]:
    out = []
    for n, distinct in sizes:
        flows = bulk.long_tail_mix(n, distinct) if distinct else bulk.realistic_mix(n)
        shape = "long tail, %d sources" % distinct if distinct else "few heavy sources"
        with Netns(conntrack=False) as ns, Entered(ns):
            report = bulk.insert(flows, timeout=bulk.BUSY)
            if report["errors"]:
                raise SystemExit("table build failed: %r" % report)
            for source in ("netlink", "proc"):
                argv = ["talkers", "--source=%s" % source, "--max-age=0", "--budget=30",
                        "--cache-dir", os.path.join(WORK, "cache")]
                out.append(compare("real %d entries (%s), --source %s" % (n, shape, source), trees, argv, runs))
    return out


def snapshots(trees: Dict[str, str], sizes: List[int], runs: int) -> List[Tuple[str, float, float]]:
    out = []
    for n in sizes:
        path = os.path.join(WORK, "snapshot-%d.list" % n)
        if not os.path.exists(path):
            bulk.write_snapshot(path, bulk.realistic_mix(n))
        out.append(compare("snapshot %d lines, --file" % n, trees, ["talkers", "--file", path, "--budget=30"], runs))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="the checkout before the change (e.g. a git worktree)")
    ap.add_argument("--after", default=REPO, help="the checkout after it (default: this one)")
    ap.add_argument("--real", default="262144:0,1048576:0,262144:63000",
                    help="real tables as ENTRIES:DISTINCT_SOURCES (0: the few-heavy mix)")
    ap.add_argument("--files", default="262144,1048576", help="snapshot sizes (lines)")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--max-ratio", type=float, default=1.10, help="fail above this after/before median ratio")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/ab.py needs root (network namespaces, ctnetlink, nf_conntrack_max)")
    os.makedirs(os.path.join(WORK, "cache"), mode=0o700, exist_ok=True)
    trees = {"before": os.path.abspath(args.before), "after": os.path.abspath(args.after)}
    real = [tuple(int(v) for v in spec.split(":")) for spec in args.real.split(",") if spec]
    with open(MAX) as f:
        saved = f.read().strip()
    try:
        with open(MAX, "w") as f:
            f.write(str(max([int(saved)] + [n + 65536 for n, _ in real])))
        results = real_tables(trees, real, args.runs)  # type: ignore[arg-type]
    finally:
        with open(MAX, "w") as f:
            f.write(saved)
    results += snapshots(trees, [int(x) for x in args.files.split(",") if x], args.runs)
    print("| input | before s | after s | after / before |")
    print("|---|---:|---:|---:|")
    worst = 0.0
    for label, before, after in results:
        worst = max(worst, after / before)
        print("| %s | %.3f | %.3f | %.2f |" % (label, before, after, after / before))
    print("\n%d runs each, interleaved; %s vs %s; worst ratio %.2f (limit %.2f)"
          % (args.runs, trees["after"], trees["before"], worst, args.max_ratio))
    return 1 if worst > args.max_ratio else 0


if __name__ == "__main__":
    sys.exit(main())
