"""`make demo`: the incident replayed on this machine, and what on-call would have seen.

Starts the lab (see replay.py), lets the leaky NAT fill the table, keeps it full a little while
so the graphs show it, applies the incident's fix, then prints the problems with their times and
the top-talkers table, saves the frontend's own PNGs of three graphs, and leaves the monitoring
host up for a look in a browser (``make demo-stop`` stops it). Every kernel setting it touched is
restored and the node is removed, even when it fails or is interrupted.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from lab import REPO
from lab.replay import HOLD, LEAKY_NET, MON_NS, STACK_BASES, ZABBIX, Replay
from lab.stack import stop_pids

GRAPHS = {  # file: (graph, colours its lines must show: the template's graph item colours)
    "conntrack-entries-vs-max.png": ("Conntrack: Entries vs max", ("1a7c11", "f63100")),
    "conntrack-drops.png": ("Conntrack: Drops and failures", ("f63100",)),
    "mirrorlist-response-time.png": ("Mirrorlist: Response time", ("2774a4",)),
}


def near(counts: Dict[str, int], colour: str, tolerance: int = 40) -> int:
    """Pixels close to ``colour`` (gradient fills shade the line colour)."""
    want = bytes.fromhex(colour)
    return sum(n for c, n in counts.items()
               if all(abs(x - y) <= tolerance for x, y in zip(bytes.fromhex(c), want)))


def png_colours(data: bytes) -> Dict[str, int]:
    """Pixel counts per colour of an 8-bit RGB PNG (what GD writes for chart2.php): enough to tell a
    drawn graph from an error image that only carries text."""
    import struct
    import zlib

    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", body[:10])
            if (depth, ctype) != (8, 2):
                return {}
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw, stride, out = zlib.decompress(idat), width * 3, {}  # type: bytes, int, Dict[str, int]
    prev = bytearray(stride)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - 3] if x >= 3 else 0
            b, c = prev[x], prev[x - 3] if x >= 3 else 0
            if f == 1:
                line[x] = (line[x] + a) & 255
            elif f == 2:
                line[x] = (line[x] + b) & 255
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        for x in range(0, stride, 3):
            key = bytes(line[x:x + 3]).hex()
            out[key] = out.get(key, 0) + 1
        prev = line
    return out


def save_graphs(replay: Replay, out: str, since: float) -> List[str]:
    """Render graphs with the frontend's own chart2.php (needs the en_US.UTF-8 locale)."""
    import requests

    web = requests.Session()
    r = web.post(replay.stack.url + "index.php",
                 data={"name": "Admin", "password": "zabbix", "autologin": "1", "enter": "Sign in"},
                 timeout=30)
    r.raise_for_status()
    if "zbx_session" not in web.cookies:
        raise RuntimeError("frontend login failed")
    graphs = replay.api.call("graph.get", hostids=[replay.hostid], output=["graphid", "name"])
    ids = {g["name"]: g["graphid"] for g in graphs}
    saved = []
    # from the first poll after the limit was lowered: the host's original 262144 would flatten
    # the small lab table into the x axis
    start = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
    for fname, (name, colours) in GRAPHS.items():
        r = web.get(replay.stack.url + "chart2.php",
                    params={"graphid": ids[name], "from": start, "to": "now", "width": "1000",
                            "height": "260", "profileIdx": "web.charts.filter"}, timeout=60)
        r.raise_for_status()
        if not r.content.startswith(b"\x89PNG"):
            raise RuntimeError("chart2.php did not return a PNG for %r: %r" % (name, r.content[:200]))
        seen = png_colours(r.content)
        missing = [c for c in colours if near(seen, c) < 50]
        if missing:
            raise RuntimeError("the %r PNG has no line in %s: an error image? (is the en_US.UTF-8 locale "
                               "generated?)" % (name, ", ".join("#" + c for c in missing)))
        path = os.path.join(out, fname)
        with open(path, "wb") as f:
            f.write(r.content)
        saved.append(path)
    return saved


def stop_forwarders() -> None:
    subprocess.run(["pkill", "-f", "lab.forward"], check=False)


def start_forwarder(stack_base: str, port: int) -> int:
    stop_forwarders()  # an older demo's
    p = subprocess.Popen([sys.executable, "-m", "lab.forward", str(port), MON_NS, str(port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd=REPO)
    path = os.path.join(stack_base, "pids.json")
    with open(path) as f:
        pids = json.load(f)
    pids["forwarder"] = p.pid
    with open(path, "w") as f:
        json.dump(pids, f)
    return p.pid


def report(replay: Replay, seen: Dict[str, str], pages: List[Dict[str, Any]], high: List[Dict[str, Any]],
           pngs: List[str]) -> List[str]:
    """What on-call would have seen; returns the paging policies that did not name the range
    before the first drop (none, when the story holds)."""
    from lab.replay import IDLE_MIN

    print("\nWhat on-call would have seen (server clocks):\n" + replay.timeline())
    print("\nPages sent by the action paging from Average up: %d; by the one paging from High up: %d"
          % (len(pages), len(high)))
    first_drop = replay.first_drop
    late = []
    for policy, got in (("Average", pages), ("High", high)):
        named = [p for p in got if LEAKY_NET in p["body"].get("subject", "")]
        early = bool(named) and named[0]["clock"] < first_drop
        if not early:
            late.append(policy)
        print("  %s+: the leaky range %s named %s" % (
            policy, LEAKY_NET, "%.1f s before the first drop" % (first_drop - named[0]["clock"])
            if early else "NOT before the first drop"))
    print("\n`conntrack-zbx top` on the node while the table was full:\n" + seen["top"])
    print("\n`conntrack-zbx top --by idle --idle-min %d` before the leak's fix:\n" % IDLE_MIN + seen["idle_top"])
    print("Graphs rendered by the Zabbix frontend:\n  " + "\n  ".join(pngs))
    return late


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(REPO, "demo-out"), help="where the PNGs go")
    ap.add_argument("--hold", type=float, default=HOLD, help="seconds to keep the table full for the graphs")
    ap.add_argument("--stop", action="store_true", help="stop the monitoring host too at the end")
    ap.add_argument("--port", type=int, default=18080)
    ap.add_argument("--zabbix", choices=ZABBIX, default="6.0",
                    help="the Zabbix LTS to replay it on (7.0: from a Debian 13 root, built once)")
    ap.add_argument("--lifeline", action="store_true",
                    help="run it with conntrack-zbx protect applied on the node from the start: the monitoring "
                         "keeps its values through the full table")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()

    def say(msg: str) -> None:
        print("[demo +%5.1fs] %s" % (time.time() - t0, msg), flush=True)

    replay = Replay(REPO, say=say, zabbix=args.zabbix, lifeline=args.lifeline)
    with replay:
        try:
            seen = replay.story(hold=args.hold)
        except Exception as e:  # the timeline so far says more than a traceback; the kernel is restored on exit
            try:
                replay.collect_problems()
                replay.pages()
                replay.pages("High")
            except Exception as again:  # the monitor itself may be what failed
                print("(problems not collected: %s)" % again)
            print("\nmake demo FAILED: %s: %s\n\nWhat happened until then (server clocks):\n%s"
                  % (type(e).__name__, e, replay.timeline()), flush=True)
            return 1
        replay.collect_problems()
        pages, high = replay.pages(), replay.pages("High")
        say("rendering graphs with the frontend's chart2.php")
        from lab.replay import INTERVAL
        pngs = save_graphs(replay, args.out, since=replay.find("nf_conntrack_max lowered")["clock"] + INTERVAL + 1)
        dashboard = replay.api.call("templatedashboard.get", output=["dashboardid", "name"])
        url = "http://127.0.0.1:%d/zabbix.php?action=host.dashboard.view&hostid=%s" % (args.port, replay.hostid)
        if dashboard:
            url += "&dashboardid=%s" % dashboard[0]["dashboardid"]
        late = report(replay, seen, pages, high, pngs)
        replay.keep_stack = not args.stop  # the node goes, the monitoring host stays for a look
    if late:  # the story's point: on-call is paged with the range before the kernel drops
        print("\nmake demo FAILED: the action paging from %s up did not name the range before the first drop"
              % " and from ".join(late), flush=True)
        return 1
    if args.stop:
        say("done; everything stopped, kernel settings restored")
        return 0
    start_forwarder(replay.stack_base, args.port)
    print("\nThe monitoring host is still up: %s  (Admin / zabbix)" % url)
    print("The node is gone and nf_conntrack_max is back to %d. Stop the rest with: make demo-stop"
          % replay.knob.read())
    print("The leaky range on-call had to name: %s" % LEAKY_NET)
    return 0


def stop() -> int:
    from lab.replay import cleanup_leftovers

    for stack_base in STACK_BASES.values():
        stop_pids(stack_base)
        cleanup_leftovers(stack_base)
    stop_forwarders()
    from lab.netns import Netns
    Netns(MON_NS).delete()
    print("demo stopped: monitoring host down, lab namespaces removed, kernel settings restored")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["stop"]:
        raise SystemExit(stop())
    raise SystemExit(main())
