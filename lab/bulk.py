"""Big real tables fast: entries inserted with ctnetlink (IPCTNL_MSG_CT_NEW), in batches.

For the benchmark and the large-table tests. Run it inside a throw-away namespace (``Entered``):
an insert is a kernel table operation, no packet is sent anywhere, so the IPv6 tail can use the
documentation prefix 2001:db8::/32 while IPv4 stays in 127.0.0.0/8. The mix is the incident's
shape with a known answer: one /24 holding most entries as ESTABLISHED TCP (the NAT that never
closed), one UDP source, one IPv6 source, a body of ordinary clients and a long tail of sources
with a single entry each.
"""

import ipaddress
import os
import socket
from collections import Counter
from itertools import islice
from typing import Dict, Iterator, List, NamedTuple, Tuple

from conntrack_zbx.parse import netlink as nl
from lab.ctnew import entry_request

ESTABLISHED, TIME_WAIT = 3, 7
ST_REPLIED = nl.IPS_CONFIRMED | nl.IPS_SEEN_REPLY | nl.IPS_ASSURED
ST_UNREPLIED = nl.IPS_CONFIRMED
BATCH = 256
TIMEOUT = 3600


class Flow(NamedTuple):
    src: str
    proto: str  # tcp / udp
    label: str  # ESTABLISHED, TIME_WAIT, UNREPLIED, ASSURED
    count: int
    idle: int = 0  # seconds its entries have been silent (inserted with the established timeout less this)


ESTABLISHED_TIMEOUT = 432000  # the kernel's nf_conntrack_tcp_timeout_established
BUSY = ESTABLISHED_TIMEOUT - 10  # a timeout for entries refreshed seconds ago


def realistic_mix(n: int) -> List[Flow]:
    """N entries with an unambiguous top 10 of sources (strictly decreasing counts)."""
    udp, v6 = n * 11 // 100, n * 8 // 100
    culprit = n * 45 // 100
    top8 = [n * (20 - i) // 1000 for i in range(8)]  # 2.0 % .. 1.3 %
    rest_hosts = 192
    rest_each = (culprit - sum(top8)) // rest_hosts
    tail = n * 6 // 100
    flows = [Flow("127.53.0.9", "udp", "UNREPLIED", udp), Flow("2001:db8:bad::7", "tcp", "ESTABLISHED", v6)]
    flows += [Flow("127.66.6.%d" % (i + 1), "tcp", "ESTABLISHED", c) for i, c in enumerate(top8)]
    flows += [Flow("127.66.6.%d" % (i + 9), "tcp", "ESTABLISHED", rest_each) for i in range(rest_hosts)]
    for i in range(tail):
        if i % 2:
            flows.append(Flow(str(ipaddress.IPv6Address("2001:db8:1::") + i), "tcp", "TIME_WAIT", 1))
        else:
            flows.append(Flow("127.200.%d.%d" % (i >> 8 & 255, i & 255), "udp", "ASSURED", 1))
    body = n - sum(f.count for f in flows)
    hosts = 4096
    for i in range(hosts):
        c = body // hosts + (1 if i < body % hosts else 0)
        if c:
            flows.append(Flow("127.10.%d.%d" % (i >> 8, i & 255), "tcp", "ESTABLISHED" if i % 3 else "TIME_WAIT", c))
    return flows


def known_answer(flows: List[Flow]) -> Counter:
    out = Counter()  # type: Counter
    for f in flows:
        out[f.src] += f.count
    return out


def messages(flows: List[Flow], timeout: int = TIMEOUT, first_port: int = 1024) -> Iterator[bytes]:
    seq = 0
    for f in flows:
        family = socket.AF_INET6 if ":" in f.src else socket.AF_INET
        src = socket.inet_pton(family, f.src)
        dst = socket.inet_pton(family, "::1" if family == socket.AF_INET6 else "127.0.0.1")
        proto = 6 if f.proto == "tcp" else 17
        status = ST_UNREPLIED if f.label == "UNREPLIED" else ST_REPLIED
        state = {"ESTABLISHED": ESTABLISHED, "TIME_WAIT": TIME_WAIT}.get(f.label) if proto == 6 else None
        dport = 443 if proto == 6 else 53
        t = ESTABLISHED_TIMEOUT - f.idle if f.idle else timeout
        for i in range(f.count):
            seq += 1
            # Distinct tuples: one source port per entry, another destination every 64,000.
            yield entry_request(seq, family, src, dst if i < 64000 else _dst_variant(family, i),
                                   proto, first_port + i % 64000, dport, status, t, state)


def _dst_variant(family: int, i: int) -> bytes:
    """More than 64,000 entries from one source need more destinations: 127.0.x.y / ::1 is one
    address, so big flows spread over 127.1.0.0/16 (IPv4) or 2001:db8:ffff::/48 (IPv6)."""
    k = i // 64000
    if family == socket.AF_INET:
        return socket.inet_pton(family, "127.1.%d.%d" % (k >> 8 & 255, k & 255))
    return (ipaddress.IPv6Address("2001:db8:ffff::") + k).packed


def insert(flows: List[Flow], timeout: int = TIMEOUT, first_port: int = 1024) -> Dict[str, int]:
    """Insert every flow's entries in the current network namespace; returns counts and errors
    (an entry that already exists is an EEXIST error, not a second entry)."""
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    s.bind((0, 0))
    sent = errors = 0
    errnos = Counter()  # type: Counter
    batch = []  # type: List[bytes]

    def drain() -> None:
        nonlocal errors
        while True:
            try:
                buf = s.recv(1 << 16, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            for mtype, _f, off, _l in nl.messages(buf):
                if mtype == nl.NLMSG_ERROR and nl.error_code(buf, off):
                    errors += 1
                    errnos[os.strerror(nl.error_code(buf, off))] += 1

    for m in messages(flows, timeout, first_port):
        batch.append(m)
        if len(batch) == BATCH:
            s.send(b"".join(batch))
            sent += len(batch)
            batch = []
            drain()
    if batch:
        s.send(b"".join(batch))
        sent += len(batch)
    drain()
    s.close()
    return {"sent": sent, "errors": errors, "errnos": dict(errnos)}


def proc_line(f: Flow, i: int) -> bytes:
    """One line in the kernel's /proc format for flow f (synthetic snapshot files)."""
    v6 = ":" in f.src
    fam = "ipv6     10" if v6 else "ipv4     2"
    src = ipaddress.ip_address(f.src).exploded if v6 else f.src
    dst = "0000:0000:0000:0000:0000:0000:0000:0001" if v6 else "127.0.0.1"
    sport, dport = 1024 + i % 64000, 443 if f.proto == "tcp" else 53
    if f.proto == "tcp":
        head = "%s tcp      6 %d %s " % (fam, ESTABLISHED_TIMEOUT - (f.idle or 1), f.label)
    else:
        head = "%s udp      17 29 " % fam
    orig = "src=%s dst=%s sport=%d dport=%d " % (src, dst, sport, dport)
    reply = "src=%s dst=%s sport=%d dport=%d " % (dst, src, dport, sport)
    if f.label == "UNREPLIED":
        mid = orig + "[UNREPLIED] " + reply
    else:
        mid = orig + reply + "[ASSURED] "
    return (head + mid + "mark=0 zone=0 use=2\n").encode()


def write_snapshot(path: str, flows: List[Flow]) -> Tuple[int, int]:
    """A synthetic /proc/net/nf_conntrack copy of these flows (lines interleaved like a hash
    table's order would scatter them); returns (lines, bytes)."""
    lines = 0
    size = 0
    iters = [(f, iter(range(f.count))) for f in flows]
    with open(path, "wb") as out:
        while iters:
            nxt = []
            chunk = []  # type: List[bytes]
            for f, it in iters:
                before = len(chunk)
                chunk.extend(proc_line(f, i) for i in islice(it, 64))
                if len(chunk) - before == 64:
                    nxt.append((f, it))
            data = b"".join(chunk)
            out.write(data)
            lines += len(chunk)
            size += len(data)
            iters = nxt
    return lines, size


def long_tail_mix(n: int, distinct: int) -> List[Flow]:
    """A public service's table: most sources seen once or twice (``distinct`` of them in ``n``
    entries, IPv4 and IPv6 mixed), and still the incident's culprit: one /24 holding 12 % as
    ESTABLISHED TCP, spread over its hosts so that no single address stands out, silent for two
    hours (insert the rest with ``timeout=BUSY``: refreshed seconds ago)."""
    culprit = n * 12 // 100
    flows = [Flow("127.66.6.%d" % (i + 1), "tcp", "ESTABLISHED", culprit // 254 + (1 if i < culprit % 254 else 0),
                  idle=7200) for i in range(254)]
    rest, sources = n - culprit, distinct - 254
    for i in range(sources):
        c = rest // sources + (1 if i < rest % sources else 0)
        if i % 3 == 2:  # a third of the clients over IPv6
            src = str(ipaddress.IPv6Address("2001:db8::") + (i << 64))  # one client per /64
        else:
            src = "127.%d.%d.%d" % (100 + (i >> 16 & 63), i >> 8 & 255, i & 255)
        flows.append(Flow(src, "tcp" if i % 5 else "udp", "ESTABLISHED" if i % 5 else "ASSURED", c))
    return flows
