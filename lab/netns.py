"""Real conntrack entries on demand, in a throw-away network namespace (tests, fixtures, demo).

Not agent code: it drives ``ip``/``nft`` as root. Traffic only ever uses loopback addresses
(127.0.0.0/8, ::1) inside a namespace this module created, so nothing leaves the machine.

How each state is made, for real, by the kernel:
- ESTABLISHED that never closes ("leaky NAT"): FIN/RST to or from a *leaky* network are dropped
  in a hook that runs before conntrack, so the kernel never sees the close;
- TIME_WAIT: a normal close;
- SYN_SENT: the SYN is dropped after conntrack saw it (input rule on the black-hole port);
- UDP [UNREPLIED] to a closed port, UDP replied by an echo server, ICMP echo.
Per-namespace timeouts are raised so a test table stays put while it is read.
"""

import json
import socket
import subprocess
import sys
import time
import uuid
from typing import Dict, Iterable, List, Sequence, Tuple

from conntrack_zbx.sources.netns import Entered as _Entered
from lab import REPO

SERVICE_PORT = 8080
UDP_ECHO_PORT = 5300
UDP_CLOSED_PORT = 5353
TCP_BLACKHOLE_PORT = 8099

# Seconds: long enough that nothing expires during a test, short enough to go by itself.
STABLE_TIMEOUTS = {
    "nf_conntrack_tcp_timeout_time_wait": 3600,
    "nf_conntrack_tcp_timeout_close": 3600,
    "nf_conntrack_tcp_timeout_syn_sent": 3600,
    "nf_conntrack_tcp_timeout_unacknowledged": 3600,
    "nf_conntrack_udp_timeout": 3600,
    "nf_conntrack_udp_timeout_stream": 3600,
    "nf_conntrack_icmp_timeout": 3600,
    "nf_conntrack_icmpv6_timeout": 3600,
}


def ruleset(leaky: Sequence[str] = (), untracked_ports: Sequence[int] = ()) -> str:
    """The namespace's nftables: conntrack on (a ct state rule), leaky networks' closes hidden
    from conntrack, and the test harness's own ports (agent polls) left untracked so the table
    holds exactly what a test made."""
    notrack = ""
    if untracked_ports:
        ports = ", ".join(str(p) for p in untracked_ports)
        notrack = "    tcp dport { %s } notrack\n    tcp sport { %s } notrack\n" % (ports, ports)
    leak_rules = notrack + "".join(
        "    %s saddr %s tcp flags & (fin | rst) != 0 drop\n"
        "    %s daddr %s tcp flags & (fin | rst) != 0 drop\n" % (("ip6" if ":" in net else "ip"), net,
                                                               ("ip6" if ":" in net else "ip"), net)
        for net in leaky
    )
    return (
        "table inet conntrack_zbx_lab {\n"
        "  chain before_conntrack {\n"
        "    type filter hook output priority -300; policy accept;\n"
        + leak_rules +
        "  }\n"
        "  chain input {\n"
        "    type filter hook input priority 0; policy accept;\n"
        "    ct state established,related accept\n"
        "    tcp dport %d drop\n"
        "  }\n"
        "}\n" % TCP_BLACKHOLE_PORT
    )


def sh(argv: Sequence[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(list(argv), capture_output=True, **kw)
    if check and p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(argv), p.returncode,
                                                   p.stderr.decode(errors="replace").strip()))
    return p


class Netns:
    """A network namespace with conntrack active on loopback; deleted on exit."""

    def __init__(self, name: str = "", leaky: Sequence[str] = (), stable: bool = True,
                 extra_nft: str = "", untracked_ports: Sequence[int] = (), conntrack: bool = True) -> None:
        self.name = name or "ctzbx-%s" % uuid.uuid4().hex[:8]
        self.leaky = tuple(leaky)
        self.stable = stable
        self.extra_nft = extra_nft
        self.untracked_ports = tuple(untracked_ports)
        self.conntrack = conntrack

    def __enter__(self) -> "Netns":
        sh(["ip", "netns", "add", self.name])
        try:
            sh(["ip", "-n", self.name, "link", "set", "lo", "up"])
            if self.conntrack:
                rules = ruleset(self.leaky, self.untracked_ports) + self.extra_nft
                sh(self.cmd(["nft", "-f", "-"]), input=rules.encode())
            if self.stable and self.conntrack:
                for key, value in STABLE_TIMEOUTS.items():
                    self.write_sysctl(key, value)
        except BaseException:
            self.delete()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.delete()

    def delete(self) -> None:
        pids = sh(["ip", "netns", "pids", self.name], check=False).stdout.split()
        for pid in pids:
            sh(["kill", "-9", pid.decode()], check=False)
        sh(["ip", "netns", "del", self.name], check=False)

    def cmd(self, argv: Sequence[str]) -> List[str]:
        return ["ip", "netns", "exec", self.name] + list(argv)

    def run(self, argv: Sequence[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
        return sh(self.cmd(argv), check=check, **kw)

    def write_sysctl(self, key: str, value: int) -> None:
        self.run(["sh", "-c", 'echo %d > /proc/sys/net/netfilter/%s' % (value, key)])

    def read(self, path: str) -> str:
        return self.run(["cat", path]).stdout.decode()

    def count(self) -> int:
        return int(self.read("/proc/sys/net/netfilter/nf_conntrack_count"))

    def traffic(self, spec: Iterable[Dict]) -> Dict:
        """Create the entries described by ``spec`` (see ``make_traffic``) inside the namespace."""
        out = self.run([sys.executable, "-m", "lab", "traffic"],
                       input=json.dumps(list(spec)).encode(), cwd=REPO)
        return json.loads(out.stdout)


def make_traffic(spec: List[Dict]) -> Dict:
    """Run inside the namespace. Each item: {"kind": K, "src": ADDR, "count": N}, with K one of
    tcp_open (ESTABLISHED: src must be in a leaky network), tcp_closed (TIME_WAIT), tcp_syn
    (SYN_SENT), udp_unreplied, udp_replied, icmp."""
    t = _Traffic()
    for item in spec:
        kind, src, n = item["kind"], item["src"], int(item["count"])
        family = socket.AF_INET6 if ":" in src else socket.AF_INET
        dst = "::1" if family == socket.AF_INET6 else item.get("dst", "127.0.0.1")
        make = getattr(t, kind, None) if not kind.startswith("_") else None
        if make is None:
            raise ValueError("unknown traffic kind %r" % kind)
        for _ in range(n):
            make(family, src, dst)
            t.made[kind] = t.made.get(kind, 0) + 1
    time.sleep(0.2)  # let RSTs, replies and closes be processed before we report
    return {"made": t.made}


class _Traffic:
    """One method per traffic kind; sockets that must stay open are held until the process ends."""

    def __init__(self) -> None:
        self.servers = {}  # type: Dict[Tuple[int, str], socket.socket]
        self.udp_echo = {}  # type: Dict[int, socket.socket]
        self.held = []  # type: List[Tuple[socket.socket, ...]]
        self.made = {}  # type: Dict[str, int]

    def _server(self, family: int, host: str) -> socket.socket:
        key = (family, host)
        if key not in self.servers:
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, SERVICE_PORT))
            s.listen(4096)
            self.servers[key] = s
        return self.servers[key]

    def _connect(self, family: int, src: str, dst: str) -> Tuple[socket.socket, socket.socket]:
        srv = self._server(family, dst)
        c = socket.socket(family, socket.SOCK_STREAM)
        c.bind((src, 0))
        c.connect((dst, SERVICE_PORT))
        a, _ = srv.accept()
        return c, a

    def tcp_open(self, family: int, src: str, dst: str) -> None:
        self.held.append(self._connect(family, src, dst))

    def tcp_closed(self, family: int, src: str, dst: str) -> None:
        c, a = self._connect(family, src, dst)
        c.close()  # the client closes first: its side goes TIME_WAIT
        a.close()

    def tcp_syn(self, family: int, src: str, dst: str) -> None:
        c = socket.socket(family, socket.SOCK_STREAM)
        c.bind((src, 0))
        c.setblocking(False)
        c.connect_ex((dst, TCP_BLACKHOLE_PORT))
        self.held.append((c,))

    def udp_unreplied(self, family: int, src: str, dst: str) -> None:
        with socket.socket(family, socket.SOCK_DGRAM) as u:
            u.bind((src, 0))
            u.sendto(b"ping", (dst, UDP_CLOSED_PORT))

    def udp_replied(self, family: int, src: str, dst: str) -> None:
        e = self.udp_echo.get(family)
        if e is None:
            e = self.udp_echo[family] = socket.socket(family, socket.SOCK_DGRAM)
            e.bind((dst, UDP_ECHO_PORT))
        with socket.socket(family, socket.SOCK_DGRAM) as u:
            u.bind((src, 0))
            u.sendto(b"ping", (dst, UDP_ECHO_PORT))
            data, peer = e.recvfrom(64)
            e.sendto(data, peer)
            u.recv(64)

    def icmp(self, family: int, src: str, dst: str) -> None:
        proto = socket.IPPROTO_ICMPV6 if family == socket.AF_INET6 else socket.IPPROTO_ICMP
        with socket.socket(family, socket.SOCK_RAW, proto) as r:
            r.bind((src, 0))
            ident = (len(self.held) + self.made.get("icmp", 0)) & 0xFFFF
            typ = 128 if family == socket.AF_INET6 else 8
            r.sendto(_icmp_echo(typ, ident), (dst, 0))


def _icmp_echo(typ: int, ident: int) -> bytes:
    header = bytes([typ, 0, 0, 0, ident >> 8, ident & 0xFF, 0, 1]) + b"conntrack_zbx"
    if typ == 128:
        return header  # the kernel fills in the ICMPv6 checksum on raw sockets
    total = 0
    for i in range(0, len(header), 2):
        total += (header[i] << 8) + (header[i + 1] if i + 1 < len(header) else 0)
    total = (total >> 16) + (total & 0xFFFF)
    total = ~(total + (total >> 16)) & 0xFFFF
    return header[:2] + bytes([total >> 8, total & 0xFF]) + header[4:]


def veth(a: Netns, b: Netns, addr_a: str, addr_b: str, prefix: int = 30,
         names: "Tuple[str, str]" = ("", "")) -> None:
    """A cable between two lab namespaces. The addresses exist only on these two ends and no
    route leads anywhere else, so nothing can leave the machine. ``names``: the two interfaces'
    (one namespace with several cables needs them)."""
    ifa, ifb = names[0] or "v%s" % a.name[-8:], names[1] or "v%s" % b.name[-8:]
    sh(["ip", "link", "add", ifa, "netns", a.name, "type", "veth", "peer", "name", ifb, "netns", b.name])
    for ns, ifname, addr in ((a, ifa, addr_a), (b, ifb, addr_b)):
        sh(["ip", "-n", ns.name, "addr", "add", "%s/%d" % (addr, prefix), "dev", ifname])
        sh(["ip", "-n", ns.name, "link", "set", ifname, "up"])


class Entered(_Entered):
    """Move this thread (and the processes it starts) into a lab namespace, and back on exit:
    the product's own setns helper, given the namespace by its ``ip netns`` name.

    Lets a test talk to services listening on the namespace's own 127.0.0.1 (the Zabbix API of a
    lab "monitoring host") with ordinary sockets."""

    def __init__(self, netns: Netns) -> None:
        super().__init__("/run/netns/%s" % netns.name)
        self.netns = netns
