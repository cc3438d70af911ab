"""Traffic for the incident replay, run inside the node namespace.

- ``leaky``: the NAT firewall of the incident. Clients from one /24 make a request to the
  mirrorlist and hang up, but their FIN/RST never reach conntrack (the lab ruleset drops them
  before conntrack for that range), so every connection stays ESTABLISHED for 5 days. The replay
  tells it on stdin how many more connections to open.
- ``background``: ordinary clients from a few other sources: short HTTP requests that close
  properly, and UDP datagrams to a closed port.

Both print one JSON status line per second on stdout (the replay reads them for its timeline).

- ``chatter``: held connections, some silent after the handshake and some talking every second:
  a leak and load side by side, for idle-time tests.
"""

import json
import socket
import sys
import threading
import time
from typing import List, Optional


def _request(src: str, dst: str, port: int, timeout: float, hold: Optional[List[socket.socket]] = None) -> bool:
    """One HTTP request from ``src``. With ``hold``, the connection is kept open and silent after
    the answer, never closed: the NAT's connections (their entries stay ESTABLISHED and are never
    refreshed again, as in the incident)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.bind((src, 0))
        s.connect((dst, port))
        s.sendall(b"GET /?release=9&arch=x86_64&repo=updates HTTP/1.0\r\n\r\n")
        s.recv(4096)
        if hold is not None:
            hold.append(s)
            s = None
        return True
    except OSError:
        return False
    finally:
        if s is not None:
            s.close()


def leaky(network: str, dst: str, port: int, rate: float) -> None:
    """The NAT: read "N" lines on stdin and make N more connection attempts from ``network`` (a
    /24) at ``rate`` per second. Each attempt that connects gets its answer and then says nothing
    more and is never closed; one the kernel drops (table full) is given up after the connect
    timeout. The replay decides how hard to push."""
    base = network.split("/")[0].rsplit(".", 1)[0]
    state = {"opened": 0, "failed": 0, "asked": 0}
    lock = threading.Lock()
    held = []  # type: List[socket.socket]

    def one(src: str) -> None:
        ok = _request(src, dst, port, timeout=3.0, hold=held)
        with lock:
            state["opened" if ok else "failed"] += 1

    def report() -> None:
        while True:
            with lock:
                print(json.dumps(dict(state, t=time.time())), flush=True)
            time.sleep(1.0)

    threading.Thread(target=report, daemon=True).start()
    i = 0
    for line in sys.stdin:
        n = int(line)
        with lock:
            state["asked"] += n
        for _ in range(n):
            threading.Thread(target=one, args=("%s.%d" % (base, i % 254 + 1),), daemon=True).start()
            i += 1
            time.sleep(1.0 / rate)


def background(sources: List[str], dst: str, port: int, rate: float) -> None:
    ok = failed = 0
    next_report = time.monotonic()
    i = 0
    while True:
        src = sources[i % len(sources)]
        i += 1
        if _request(src, dst, port, timeout=2.0):
            ok += 1
        else:
            failed += 1
        try:
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.bind((src, 0))
            u.sendto(b"query", (dst, 5353))
            u.close()
        except OSError:
            pass
        now = time.monotonic()
        if now >= next_report:
            print(json.dumps({"t": time.time(), "ok": ok, "failed": failed}), flush=True)
            next_report = now + 1.0
        time.sleep(1.0 / rate)


def chatter(silent: List[str], busy: List[str], per_source: int, dst: str, port: int, interval: float) -> None:
    """Connections that stay open: ``per_source`` from each ``silent`` source that say nothing
    after the handshake (the leak: their entries are never refreshed), and as many from each
    ``busy`` source that send a byte every ``interval`` seconds (load: refreshed all the time).
    Prints {"ready": ...} once all are up, then runs until stdin closes."""
    srv = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((dst, port))
    srv.listen(4096)
    held, chatty = [], []
    for group, out in ((silent, None), (busy, chatty)):
        for src in group:
            for _ in range(per_source):
                c = socket.socket(srv.family, socket.SOCK_STREAM)
                c.bind((src, 0))
                c.connect((dst, port))
                a, _ = srv.accept()
                held.append((c, a))
                if out is not None:
                    out.append((c, a))

    def talk() -> None:
        while True:
            for c, a in chatty:
                c.send(b".")
                a.recv(16)
            time.sleep(interval)

    threading.Thread(target=talk, daemon=True).start()
    print(json.dumps({"ready": len(held), "t": time.time()}), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    kind = sys.argv[1]
    if kind == "leaky":
        leaky(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
    elif kind == "background":
        background(sys.argv[2].split(","), sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
    elif kind == "chatter":
        chatter([x for x in sys.argv[2].split(",") if x], [x for x in sys.argv[3].split(",") if x],
                int(sys.argv[4]), sys.argv[5], int(sys.argv[6]), float(sys.argv[7]))
