#!/usr/bin/env python3
"""Benchmark: talkers over real conntrack tables, against the kernel's own floor, in one run.

    sudo python3 bench/run.py                       # 262,144 and 1,048,576 real entries
    sudo python3 bench/run.py --markdown docs/performance.md

Builds each table in a throw-away network namespace with ctnetlink inserts (no packet is sent;
IPv4 in 127.0.0.0/8, the IPv6 tail in the documentation prefix 2001:db8::/32), in the shape of
the incident: a /24 of ESTABLISHED TCP, a UDP source, an IPv6 source, a body of clients and a
long tail of single-entry sources, with a known top 10. The global nf_conntrack_max is raised
for the run and restored afterwards (also on Ctrl-C). Every method runs as its own process,
interleaved, several times; the report gives the median wall time, the ratio to the floor
(``cat /proc/net/nf_conntrack``) measured in the same run, the peak RSS, and whether the
method's top 10 sources equal the known answer.
"""

import argparse
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from lab import bulk  # noqa: E402
from lab.netns import Netns, Entered  # noqa: E402

MAX = "/proc/sys/net/netfilter/nf_conntrack_max"
WORK = "/var/tmp/ctzbx-bench"
INCIDENT = "cat %s |awk '{print $7}'|sed 's/src=//g'|sort|uniq -c|sort -n -r|head"
CONNTRACK_L = ("conntrack -L 2>/dev/null | awk '{for(i=1;i<=NF;i++) if ($i ~ /^src=/) "
               "{print substr($i,5); break}}' | sort | uniq -c | sort -n -r | head")


class Result:
    def __init__(self, name: str) -> None:
        self.name = name
        self.walls = []  # type: List[float]
        self.rss = 0  # KiB
        self.top = None  # type: Optional[List[Tuple[str, int]]]
        self.note = ""


RSS_FILE = os.path.join(WORK, "maxrss")


def run_once(argv: List[str], shell: bool, capture: bool) -> Tuple[float, int, bytes, int]:
    """Wall time, peak RSS (KiB), stdout, exit status of one run.

    GNU time reports the peak RSS: measured from our own process, it would include this
    benchmark's memory, which a forked child carries until it execs. Output nobody checks
    goes to /dev/null, as in the floor's definition.
    """
    cmd = ["/usr/bin/time", "-f", "%M", "-o", RSS_FILE] + (argv if not shell else ["/bin/sh", "-c", argv[0]])
    t = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    with open(RSS_FILE) as f:
        rss = int(f.read().split()[-1])
    return wall, rss, p.stdout or b"", p.returncode


def parse_counts(out: bytes) -> List[Tuple[str, int]]:
    """`uniq -c` output -> [(normalised address or what was counted, count)]."""
    rows = []
    for line in out.decode(errors="replace").splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        what = parts[1]
        try:
            what = str(ipaddress.ip_address(what))
        except ValueError:
            pass
        rows.append((what, int(parts[0])))
    return rows


def parse_talkers(out: bytes) -> Tuple[List[Tuple[str, int]], Dict]:
    doc = json.loads(out)
    if "error" in doc:
        raise RuntimeError(doc["error"])
    return [(s["address"], s["count"]) for s in doc["sources"]], doc


def expected_top(flows) -> List[Tuple[str, int]]:
    """The top 10 sources as talkers orders them: by entries, ties by address (IPv4 first)."""
    known = bulk.known_answer(flows)
    return sorted(known.items(), key=lambda kv: (-kv[1], _address_order(kv[0])))[:10]


def _address_order(text: str) -> Tuple[int, int]:
    a = ipaddress.ip_address(text)
    return a.version, int(a)


def measure(methods: Dict[str, Tuple[List[str], bool, str]], runs: int, expect) -> Dict[str, Result]:
    """Interleaved: every run goes through every method once, so drift hits all alike."""
    results = {name: Result(name) for name in methods}
    for _ in range(runs):
        for name, (argv, shell, kind) in methods.items():
            wall, rss, out, rc = run_once(argv, shell, bool(kind))
            r = results[name]
            r.walls.append(wall)
            r.rss = max(r.rss, rss)
            if rc != 0:
                r.note = "exit status %d" % rc
            if kind == "uniq":
                r.top = parse_counts(out)[:10]
            elif kind == "talkers":
                r.top, doc = parse_talkers(out)
                if doc.get("truncated"):
                    r.note = "TRUNCATED after %d entries" % doc["entries"]
                if name.startswith("cached"):
                    if not doc.get("cached"):
                        r.note = "not served from the cache"
    for r in results.values():
        if r.top is not None:
            r.note = r.note or ("top-10 = known answer" if r.top == expect else
                                "top-10 differs: first %s" % (r.top[:1],))
    return results


def table(title: str, results: Dict[str, Result], floor: str) -> List[str]:
    base = statistics.median(results[floor].walls)
    out = ["", "### %s" % title, "",
           "| method | median s | × %s | peak RSS MiB | check |" % floor,
           "|---|---:|---:|---:|---|"]
    for r in results.values():
        med = statistics.median(r.walls)
        out.append("| %s | %.3f | %.2f | %.1f | %s |" % (r.name, med, med / base, r.rss / 1024.0, r.note))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="262144,1048576", help="real table sizes (entries)")
    ap.add_argument("--files", default="262144,524288,1048576", help="synthetic snapshot sizes (lines)")
    ap.add_argument("--namespaces", default="500", help="network namespace counts for `namespaces`")
    ap.add_argument("--longtail", default="262144:63000,1048576:250000",
                    help="long-tail tables as ENTRIES:DISTINCT_SOURCES (a public mirror's shape)")
    ap.add_argument("--agent70", default="1048576:250000",
                    help="long-tail tables (ENTRIES:DISTINCT_SOURCES) polled through a real Zabbix 7.0 agent 2 "
                         "with the shipped 7.0 template's talkers key and item timeout")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--markdown", metavar="PATH", help="replace the results section of this file")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/run.py needs root (network namespaces, ctnetlink, nf_conntrack_max)")
    plugin, interpreter = install()
    os.makedirs(WORK, exist_ok=True)
    with open(MAX) as f:
        saved_max = f.read().strip()
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    lines = ["Command: `%s`" % " ".join(["sudo python3 bench/run.py"] + sys.argv[1:]),
             "", "Machine: %s, %d CPUs, kernel %s, %s; %s." % (
                 os.uname().machine, os.cpu_count() or 0, os.uname().release,
                 time.strftime("%Y-%m-%d"), interpreter)]
    verdicts = []  # type: List[str]
    try:
        for n in [int(x) for x in args.sizes.split(",") if x]:
            with open(MAX, "w") as f:
                f.write(str(max(int(saved_max), n + 65536)))
            lines += real_table(n, plugin.binary, interpreter, args.runs, verdicts)
        for n in [int(x) for x in args.files.split(",") if x]:
            lines += snapshot_file(n, plugin.binary, args.runs, verdicts)
        for spec in [x for x in args.longtail.split(",") if x]:
            n, distinct = (int(v) for v in spec.split(":"))
            with open(MAX, "w") as f:
                f.write(str(max(int(saved_max), n + 65536)))
            lines += long_tail(n, distinct, plugin.binary, args.runs, verdicts)
        for spec in [x for x in args.agent70.split(",") if x]:
            n, distinct = (int(v) for v in spec.split(":"))
            with open(MAX, "w") as f:
                f.write(str(max(int(saved_max), n + 65536)))
            lines += agent70_long_tail(n, distinct, args.runs, verdicts)
        for n in [int(x) for x in args.namespaces.split(",") if x]:
            lines += many_namespaces(n, plugin.binary, interpreter, args.runs, verdicts)
    finally:
        with open(MAX, "w") as f:
            f.write(saved_max)
        shutil.rmtree(plugin.base, ignore_errors=True)
    lines += ["", "### Targets", ""] + ["- " + v for v in verdicts]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        record(args.markdown, text)
    return 0


def install():
    """The product as users install it: a wheel in a venv on the host's /usr/bin/python3 (not
    the editable checkout, whose import hook costs every start-up ~10 ms)."""
    import glob

    from lab.agent import install_plugin

    plugin = install_plugin(REPO, sys.executable)
    with open(plugin.binary) as f:
        interpreter = f.readline()[2:].strip()  # the console script's own python
    # pip compiles bytecode at install time unless PYTHONDONTWRITEBYTECODE is set (it is on
    # some CI machines): compile once so start-up is what users see.
    subprocess.run([interpreter, "-m", "compileall", "-q"]
                   + glob.glob(os.path.join(plugin.base, "venv/lib/python3*/site-packages/conntrack_zbx")),
                   check=True, stdout=subprocess.DEVNULL)
    return plugin, interpreter


def real_table(n: int, binary: str, interpreter: str, runs: int, verdicts: List[str]) -> List[str]:
    """Build a real n-entry table in a throw-away namespace and time every way of reading it."""
    flows = bulk.realistic_mix(n)
    expect = expected_top(flows)
    cache = os.path.join(WORK, "cache")
    with Netns(conntrack=False) as ns:
        with Entered(ns):
            t = time.perf_counter()
            report = bulk.insert(flows, timeout=bulk.BUSY)
            built = time.perf_counter() - t
            count = int(open("/proc/sys/net/netfilter/nf_conntrack_count").read())
            if count != n or report["errors"]:
                raise SystemExit("table build failed: %d of %d entries, %r" % (count, n, report))
            shutil.rmtree(cache, ignore_errors=True)
            talkers = [binary, "talkers", "--cache-dir", cache]
            methods = {
                "cat (floor)": (["cat", "/proc/net/nf_conntrack"], False, ""),
                "incident awk pipeline": ([INCIDENT % "/proc/net/nf_conntrack"], True, "uniq"),
                "conntrack -L (no parsing)": (["conntrack", "-L"], False, ""),
                "conntrack -L + awk": ([CONNTRACK_L], True, "uniq"),
                "talkers netlink": (talkers + ["--source=netlink", "--max-age=0", "--budget", "30"],
                                    False, "talkers"),
                "talkers proc": (talkers + ["--source=proc", "--max-age=0", "--budget", "30"], False, "talkers"),
                "talkers (agent default)": (talkers + ["--max-age=0"], False, "talkers"),
                "talkers, idle off": (talkers + ["--max-age=0", "--idle-min=%d" % IDLE_OFF], False, "talkers"),
                "cached talkers": (talkers + ["--max-age=3600"], False, "talkers"),
                "stats": ([binary, "stats"], False, ""),
                "python3 -c pass": ([interpreter, "-c", "pass"], False, ""),
            }
            res = measure(methods, runs if n <= 262144 else max(3, runs - 2), expect)
    verdicts += real_verdicts(n, res)
    return table("Real table, %d entries (built in %.1f s by ctnetlink inserts)" % (n, built), res, "cat (floor)")


# An idle_min above any ESTABLISHED timeout: no remaining value can say idle, so the counting
# pattern carries no idle range (the talkers of before idle time, for a same-run comparison).
IDLE_OFF = 31536000


def idle_verdict(what: str, med: Dict[str, float]) -> str:
    ratio = med["talkers (agent default)"] / med["talkers, idle off"]
    return "%s %s: fresh talkers with idle time %.3f × without (target ≤ 1.05)" % (
        "MET " if ratio <= 1.05 else "MISSED", what, ratio)


def real_verdicts(n: int, res: Dict[str, "Result"]) -> List[str]:
    med = {k: statistics.median(r.walls) for k, r in res.items()}
    floor, py = med["cat (floor)"], med["python3 -c pass"]
    out = []
    out.append(idle_verdict("few heavy sources %d" % n, med))
    if n == 262144:
        out.append("%s talkers (agent default) at 262,144: %.2f × cat floor (target ≤ 1.0), %s" % (
            "MET " if med["talkers (agent default)"] <= floor else "MISSED",
            med["talkers (agent default)"] / floor, res["talkers (agent default)"].note))
        out.append("%s cached talkers: %.2f × python3 -c pass (target ≤ 2)" % (
            "MET " if med["cached talkers"] <= 2 * py else "MISSED", med["cached talkers"] / py))
        out.append("%s stats: %.2f × python3 -c pass (target ≤ 2)" % (
            "MET " if med["stats"] <= 2 * py else "MISSED", med["stats"] / py))
    if n == 1048576:
        t = res["talkers (agent default)"]
        out.append("%s talkers at 1,048,576: max %.2f s (target < 3 s, no truncation: %s)" % (
            "MET " if max(t.walls) < 3 and "TRUNC" not in t.note else "MISSED", max(t.walls), t.note))
        out.append("%s peak RSS at 1,048,576: %.1f MiB (target ≤ 64)" % (
            "MET " if t.rss <= 64 * 1024 else "MISSED", t.rss / 1024.0))
    return out


def snapshot_file(n: int, binary: str, runs: int, verdicts: List[str]) -> List[str]:
    """A synthetic n-line snapshot: talkers --file against the incident's pipeline."""
    flows = bulk.realistic_mix(n)
    path = os.path.join(WORK, "snapshot-%d.list" % n)
    if not os.path.exists(path):
        bulk.write_snapshot(path + ".tmp", flows)
        os.replace(path + ".tmp", path)
    methods = {
        "incident awk pipeline": ([INCIDENT % path], True, "uniq"),
        "talkers --file": ([binary, "talkers", "--file", path, "--budget", "30"], False, "talkers"),
    }
    res = measure(methods, runs if n <= 262144 else max(3, runs - 2), expected_top(flows))
    if n == 1048576:
        ratio = statistics.median(res["incident awk pipeline"].walls) / \
            statistics.median(res["talkers --file"].walls)
        verdicts.append("%s --file at 1,048,576 lines: %.2f× faster than the incident pipeline "
                        "(target ≥ 3)" % ("MET " if ratio >= 3 else "MISSED", ratio))
    return table("Snapshot file, %d lines (%.0f MiB)" % (n, os.path.getsize(path) / 2**20),
                 res, "incident awk pipeline")


def long_tail(n: int, distinct: int, binary: str, runs: int, verdicts: List[str]) -> List[str]:
    """The shape of a public mirror: n entries from ``distinct`` sources, most seen once or
    twice, IPv4 and IPv6, with the incident's culprit /24 inside. A real table, then its copy."""
    flows = bulk.long_tail_mix(n, distinct)
    expect = expected_top(flows)
    path = os.path.join(WORK, "longtail-%d.list" % n)
    with Netns(conntrack=False) as ns:
        with Entered(ns):
            report = bulk.insert(flows, timeout=bulk.BUSY)
            if report["errors"]:
                raise SystemExit("long-tail table build failed: %r" % report)
            talkers = [binary, "talkers", "--max-age=0", "--cache-dir", os.path.join(WORK, "cache-lt")]
            methods = {
                "cat (floor)": (["cat", "/proc/net/nf_conntrack"], False, ""),
                "talkers (agent default)": (talkers, False, "talkers"),
                "talkers, idle off": (talkers + ["--idle-min=%d" % IDLE_OFF], False, "talkers"),
                "talkers netlink, no budget": (talkers + ["--source=netlink", "--budget=30"], False, "talkers"),
            }
            res = measure(methods, max(3, runs - 2), expect)
            first = json.loads(subprocess.run(talkers, capture_output=True).stdout)
            with open("/proc/net/nf_conntrack", "rb") as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst)
    out = table("Long-tail real table, %d entries, %d sources" % (n, distinct), res, "cat (floor)")
    files = {
        "incident pipeline, C.UTF-8": (["LC_ALL=C.UTF-8 sh -c %s" % shlex.quote(INCIDENT % path)], True, ""),
        "incident pipeline, en_US.UTF-8": (["LC_ALL=en_US.UTF-8 sh -c %s" % shlex.quote(INCIDENT % path)], True, ""),
        "talkers --file": ([binary, "talkers", "--file", path, "--budget", "30",
                            "--timeout-established=%d" % bulk.ESTABLISHED_TIMEOUT], False, "talkers"),
    }
    fres = measure(files, max(3, runs - 2), expect)
    out += table("Long-tail snapshot, %d lines" % n, fres, "incident pipeline, C.UTF-8")
    med = {k: statistics.median(r.walls) for k, r in list(res.items()) + list(fres.items())}
    verdicts.extend(long_tail_verdicts(n, res, fres, med, first))
    os.remove(path)
    return out


def long_tail_verdicts(n: int, res: Dict[str, "Result"], fres: Dict[str, "Result"], med: Dict[str, float],
                       first: Dict) -> List[str]:
    """The long-tail targets: ≤ 1.0× the floor at 262,144; < 3 s whole and untruncated within
    64 MiB at 1,048,576; every call inside its budget; the snapshot against the pipeline."""
    out = []
    t, nb, f = res["talkers (agent default)"], res["talkers netlink, no budget"], fres["talkers --file"]
    named = first["networks"][0]["network"] if first.get("networks") else None
    if n <= 262144:
        met = med["talkers (agent default)"] <= med["cat (floor)"] and t.note == "top-10 = known answer"
        out.append("%s long-tail %d: fresh talkers %.2f × cat floor (target ≤ 1.0), %s, culprit first: %s, "
                   "peak RSS %.1f MiB" % ("MET " if met else "MISSED", n, med["talkers (agent default)"] /
                                          med["cat (floor)"], t.note, named, t.rss / 1024.0))
    else:
        met = max(nb.walls) < 3 and nb.note == "top-10 = known answer" and nb.rss <= 64 * 1024
        out.append("%s long-tail %d: fresh talkers, whole process, unbudgeted: max %.2f s (target < 3), %s, "
                   "peak RSS %.1f MiB (target ≤ 64)" % ("MET " if met else "MISSED", n, max(nb.walls), nb.note,
                                                        nb.rss / 1024.0))
    inside = max(t.walls) < 2.5
    out.append("%s long-tail %d: agent default (2.5 s budget): max %.2f s, %s, culprit first: %s" % (
        "MET " if inside else "MISSED", n, max(t.walls),
        "truncated after %d entries" % first["entries"] if first.get("truncated") else "complete", named))
    out.append(idle_verdict("long-tail %d" % n, med))
    idle = {r["network"]: r["idle"] for r in first["networks"]}
    out.append("long-tail %d: the culprit's entries reported idle: %s of %s" % (
        n, idle.get("127.66.6.0/24"), first["networks"][0]["count"] if first.get("networks") else None))
    for locale, target in (("C.UTF-8", 1.0), ("en_US.UTF-8", 2.0)):
        ratio = med["incident pipeline, %s" % locale] / med["talkers --file"]
        out.append("%s long-tail %d --file: %.2f× the incident pipeline in %s (target ≥ %.1f), %s" % (
            "MET " if ratio >= target else "MISSED", n, ratio, locale, target, f.note))
    out.append("%s long-tail %d --file: peak RSS %.1f MiB (target ≤ 64)" % (
        "MET " if f.rss <= 64 * 1024 else "MISSED", n, f.rss / 1024.0))
    return out


def shipped_talkers_key(version: str = "7.0") -> Tuple[str, int]:
    """The talkers item's key as the shipped template's macros resolve it, and its timeout (s)."""
    from conntrack_zbx.template import export

    t = export.export(version=version)["zabbix_export"]["templates"][0]
    macros = {m["macro"]: m["value"] for m in t["macros"]}
    item = next(i for i in t["items"] if i["key"].startswith("conntrack.talkers["))
    key = re.sub(r"\{\$[A-Z0-9_.]+\}", lambda m: macros[m.group(0)], item["key"])
    return key, int(re.sub(r"\{\$[A-Z0-9_.]+\}", lambda m: macros[m.group(0)], item["timeout"]).rstrip("s"))


def agent70_long_tail(n: int, distinct: int, runs: int, verdicts: List[str]) -> List[str]:
    """The long-tail table through what a Zabbix 7.0 user runs: zabbix_agent2 7.0 and the
    project's .deb in a Debian 13 root (lab/debroot.py), asked the shipped 7.0 template's talkers
    key with its item timeout, as the server would (``zabbix_get -t``). The baseline, in the same
    run: the same installed command called directly, unbudgeted. Every poll reads afresh (the key's
    max_age set to 0, as each 5-minute poll finds the 20 s cache stale anyway)."""
    from lab.agent import Agent, install_deb
    from lab.debroot import DebRoot

    root = DebRoot("trixie").ensure()
    plugin = install_deb(REPO, root)
    key, timeout = shipped_talkers_key("7.0")
    params = key[len("conntrack.talkers["):-1].split(",")
    params[3] = "0"  # max_age
    key = "conntrack.talkers[%s]" % ",".join(params)
    flows = bulk.long_tail_mix(n, distinct)
    expect = expected_top(flows)
    port = 31090
    try:
        with Netns(conntrack=False) as ns:
            with Entered(ns):
                report = bulk.insert(flows, timeout=bulk.BUSY)
            if report["errors"]:
                raise SystemExit("long-tail table build failed: %r" % report)
            with Agent("agent2", port, plugin.conf, netns=ns, root=root, timeout=30):
                get = ns.cmd(root.cmd(["zabbix_get", "-s", "127.0.0.1", "-p", str(port), "-t", str(timeout),
                                       "-k", key]))
                direct = ns.cmd(root.cmd(["/usr/bin/conntrack-zbx", "talkers", "--max-age=0", "--budget=30"]))
                methods = {
                    "conntrack-zbx talkers, direct, unbudgeted (baseline)": (direct, False, "talkers"),
                    "zabbix_agent2 7.0, shipped key and item timeout": (get, False, "talkers"),
                }
                res = measure(methods, max(3, runs - 2), expect)
    finally:
        shutil.rmtree(plugin.base, ignore_errors=True)
    out = table("Long-tail real table, %d entries, %d sources, through Zabbix 7.0 agent 2 (item timeout %d s)"
                % (n, distinct, timeout), res, "conntrack-zbx talkers, direct, unbudgeted (baseline)")
    agent = res["zabbix_agent2 7.0, shipped key and item timeout"]
    base = res["conntrack-zbx talkers, direct, unbudgeted (baseline)"]
    met = agent.note == "top-10 = known answer" and max(agent.walls) < timeout
    verdicts.append("%s long-tail %d through zabbix_agent2 7.0 with the shipped 7.0 key (%s) and item timeout %d s: "
                    "%s, max %.2f s, %.2f × the direct read" % (
                        "MET " if met else "MISSED", n, key, timeout, agent.note, max(agent.walls),
                        statistics.median(agent.walls) / statistics.median(base.walls)))
    return out


def many_namespaces(n: int, binary: str, interpreter: str, runs: int, verdicts: List[str]) -> List[str]:
    """A container host: n network namespaces held by processes, two entries each."""
    from lab.holder import Held

    with Held(n, 2):
        methods = {
            "namespaces": ([binary, "namespaces", "--top=1000"], False, ""),
            "python3 -c pass": ([interpreter, "-c", "pass"], False, ""),
        }
        res = measure(methods, runs, None)
    worst = max(res["namespaces"].walls)
    verdicts.append("%s namespaces with %d network namespaces: max %.2f s (target: inside the agent's 3 s)"
                    % ("MET " if worst < 3 else "MISSED", n, worst))
    return table("%d network namespaces (held by processes, 2 entries each)" % n, res, "python3 -c pass")


def record(path: str, text: str) -> None:
    """Replace the results section of a markdown file."""
    with open(path) as f:
        doc = f.read()
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    doc = re.sub(re.escape(start) + ".*" + re.escape(end), lambda m: start + "\n" + text + end, doc, flags=re.S)
    with open(path, "w") as f:
        f.write(doc)


if __name__ == "__main__":
    sys.exit(main())
