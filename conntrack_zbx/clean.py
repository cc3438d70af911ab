"""``conntrack-zbx clean``: remove the entries a leak left behind, and nothing else.

A shorter ESTABLISHED timeout (``tune --tcp-established-timeout``) applies from an entry's *next*
packet; entries that already leaked never get one and keep the expiry they were given, up to five
days. The incident had only ``conntrack -F`` (everything, the evidence and every healthy
connection with it). This removes exactly the ESTABLISHED TCP entries of one network (or source)
that have been silent longer than a threshold, judged as talkers judges idle time
(``count/idle.py``), through ctnetlink deletes naming each entry by its tuple and id (an entry that
was replaced meanwhile is not touched). A dry run by default; ``--apply`` deletes and counts.
"""

import ipaddress
import os
import socket
import struct
from typing import TYPE_CHECKING, List, NamedTuple, Optional, Tuple

from conntrack_zbx.errors import NotAvailable, Refused
from conntrack_zbx.parse import netlink as nl
from conntrack_zbx.count.idle import IdleRule
from conntrack_zbx.count.rows import idle_tells

if TYPE_CHECKING:
    from typing import Union

    from conntrack_zbx.options import CleanArgs

    Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

IPCTNL_MSG_CT_DELETE = 2
CT_DELETE = (nl.NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE
NLM_F_ACK = 0x4
CTA_ID = 12
SHOW = 20  # entries listed by a dry run (the count covers all)


class Victim(NamedTuple):
    family: int
    src: bytes
    idle: int
    request: bytes  # the CT_DELETE payload: original tuple, zone and id, as the dump gave them
    text: str  # "src:sport -> dst:dport"


class Selection(NamedTuple):
    victims: List[Victim]
    entries: int  # every entry of the table
    in_network: int  # entries whose source is in the network, any state
    young: int  # of those, ESTABLISHED TCP entries not silent for idle_min yet (a leak's newest)


def select(network: "Network", rule: IdleRule) -> Selection:
    """One ctnetlink dump; the idle ESTABLISHED TCP entries of ``network``."""
    from conntrack_zbx.sources.netlink import walk, dump_request, open_socket

    s = open_socket()
    try:
        s.settimeout(10)
        s.send(dump_request(1, 0))
        victims = []  # type: List[Victim]
        entries = in_network = young = 0
        while True:
            buf = s.recv(1 << 16)
            if not buf:
                raise NotAvailable("ctnetlink closed the dump without NLMSG_DONE")
            w = walk(buf)  # the kernel's error, or a broken datagram, raised as ours
            for mtype, _f, off, length in nl.messages(buf):
                if mtype != nl.CT_NEW:
                    continue
                entries += 1
                v, inside = _judge(buf, off, length, network, rule)
                in_network += inside != OUTSIDE
                young += inside == YOUNG
                if v is not None:
                    victims.append(v)
            if w.done:
                return Selection(victims, entries, in_network, young)
    except socket.timeout:
        raise NotAvailable("ctnetlink did not finish the dump within 10 s") from None
    finally:
        s.close()


OUTSIDE, OTHER, YOUNG, IDLE = range(4)  # what _judge finds an entry to be


def _judge(buf: bytes, off: int, length: int, network: "Network", rule: IdleRule) -> Tuple[Optional[Victim], int]:
    try:
        r = nl.decode_entry(buf, off, length)
    except nl.BadMessage:
        return None, OUTSIDE
    src = ipaddress.ip_address(r.src)
    if src.version != network.version or src not in network:
        return None, OUTSIDE
    if not idle_tells(r):
        return None, OTHER
    if not rule.is_idle(r.timeout):
        return None, YOUNG
    parts, text = [], ""
    for atype, voff, vlen in nl.attrs(buf, off + 20, off + length):
        if atype in (nl.CTA_TUPLE_ORIG, nl.CTA_ZONE, CTA_ID):
            parts.append(bytes(buf[voff - 4:voff + ((vlen + 3) & ~3)]))
            if atype == nl.CTA_TUPLE_ORIG:
                text = _tuple_text(buf, voff, vlen)
    return Victim(buf[off + 16], r.src, rule.idle_of(r.timeout) or 0, b"".join(parts), text), IDLE


def _tuple_text(buf: bytes, voff: int, vlen: int) -> str:
    addrs, ports = {}, {}
    for atype, aoff, alen in nl.attrs(buf, voff, voff + vlen):
        for itype, ioff, ilen in nl.attrs(buf, aoff, aoff + alen):
            if atype == nl.CTA_TUPLE_IP:
                addrs[itype] = str(ipaddress.ip_address(bytes(buf[ioff:ioff + ilen])))
            elif atype == nl.CTA_TUPLE_PROTO and itype in (nl.CTA_PROTO_SRC_PORT, nl.CTA_PROTO_DST_PORT):
                ports[itype] = struct.unpack_from("!H", buf, ioff)[0]
    src = addrs.get(nl.CTA_IP_V4_SRC) or addrs.get(nl.CTA_IP_V6_SRC, "?")
    dst = addrs.get(nl.CTA_IP_V4_DST) or addrs.get(nl.CTA_IP_V6_DST, "?")
    return "%s:%s -> %s:%s" % (src, ports.get(nl.CTA_PROTO_SRC_PORT, "?"), dst, ports.get(nl.CTA_PROTO_DST_PORT, "?"))


def still_leaking(network: "Network", young: int, idle_min: int) -> str:
    """What the person who just cleaned must know: entries that are not idle *yet* were left, and
    if the source still opens connections it never closes, they are the leak's newest."""
    return ("%d ESTABLISHED entries of %s stay: silent for less than %d s, they may be in use. If %s "
            "still opens connections it never closes, they turn idle within %d s and the leak problem stays "
            "open until its source is fixed; then run this again.\n" % (young, network, idle_min, network,
                                                                         idle_min))


def delete(victims: List[Victim]) -> Tuple[int, int, List[str]]:
    """One CT_DELETE per entry, acknowledged -> (deleted, already gone, other errors)."""
    from conntrack_zbx.sources.netlink import open_socket, request

    s = open_socket()
    deleted = gone = 0
    errors = []  # type: List[str]
    try:
        s.settimeout(5)
        for i, v in enumerate(victims, 1):
            s.send(request(CT_DELETE, nl.NLM_F_REQUEST | NLM_F_ACK, i, v.family, v.request))
            buf = s.recv(1 << 16)
            for mtype, _f, off, _len in nl.messages(buf):
                if mtype != nl.NLMSG_ERROR:
                    continue
                code = nl.error_code(buf, off)
                if code == 0:
                    deleted += 1
                elif code == 2:  # ENOENT: it closed or expired meanwhile
                    gone += 1
                else:
                    errors.append("%s: %s" % (v.text, os.strerror(code)))
    finally:
        s.close()
    return deleted, gone, errors


def run(args: "CleanArgs") -> str:
    try:
        network = ipaddress.ip_network(args.network, strict=False)
    except ValueError:
        raise Refused("--network takes an address or a network (198.51.100.0/24, 2001:db8::/64), got %r"
                      % args.network[:64]) from None
    given = ipaddress.ip_interface(args.network).ip
    if given != network.network_address:  # 127.0.66.7/24: the network, or the one address?
        raise Refused("--network %s has host bits set: the network is %s, the address alone is %s/%d; give "
                      "the one you mean" % (args.network, network, given, network.max_prefixlen))
    if network.prefixlen == 0:
        raise Refused("refusing %s: it matches every entry; that is `conntrack -F`, not a clean-up" % network)
    if args.apply and os.geteuid() != 0:
        raise Refused("clean --apply deletes conntrack entries: run it as root")
    if args.netns:
        from conntrack_zbx.sources.netns import Entered, resolve

        with Entered(resolve(args.netns).path):
            return _run(args, network)
    return _run(args, network)


def _run(args: "CleanArgs", network: "Network") -> str:
    from conntrack_zbx.sources.table import Where, idle_rule

    rule, why = idle_rule(Where("/", "netlink", None), args.idle_min)
    if rule is None:
        raise Refused("cannot tell idle entries here: %s" % why)
    sel = select(network, rule)
    if sel.entries and sel.in_network == sel.entries:
        raise Refused("refusing %s: every one of the table's %d entries comes from it; that is a flush, "
                      "not a clean-up (narrow the network)" % (network, sel.entries))
    v = sorted(sel.victims, key=lambda x: -x.idle)
    head = ("%d of %d entries: ESTABLISHED TCP from %s silent for over %d s (timeout_established %d s); "
            "%d entries of the table come from it\n" % (len(v), sel.entries, network, rule.idle_min,
                                                       rule.established, sel.in_network))
    lines = ["  %s  idle %d s\n" % (x.text, x.idle) for x in v[:SHOW]]
    if len(v) > SHOW:
        lines.append("  ... and %d more\n" % (len(v) - SHOW))
    young = still_leaking(network, sel.young, rule.idle_min) if sel.young else ""
    if not args.apply:
        return head + "".join(lines) + young + "dry run: nothing deleted; --apply deletes them\n"
    deleted, gone, errors = delete(v)
    tail = "deleted %d entries (%d had closed or expired meanwhile)\n" % (deleted, gone)
    tail += young
    if errors:
        tail += "".join("  failed: %s\n" % e for e in errors[:SHOW])
        raise NotAvailable(head + tail + "%d deletes failed" % len(errors))
    return head + "".join(lines) + tail
