"""Build ``IPCTNL_MSG_CT_NEW`` requests: how the lab and ``bench/`` insert entries by the hundred
thousand (needs CAP_NET_ADMIN). The product only ever reads the table, so this lives here."""

import struct
from typing import Optional

from conntrack_zbx.parse import netlink as nl
from conntrack_zbx.sources.netlink import request

NLM_F_ACK = 0x4
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400

_NLA = struct.Struct("=HH")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")


def nla(atype: int, value: bytes, nested: bool = False) -> bytes:
    hdr = _NLA.pack(4 + len(value), atype | (nl.NLA_F_NESTED if nested else 0))
    return hdr + value + b"\0" * (nl.align(len(value)) - len(value))


def entry_request(seq: int, family: int, src: bytes, dst: bytes, proto: int, sport: int,
                  dport: int, status: int, timeout: int, tcp_state: Optional[int] = None) -> bytes:
    """One new entry with its reply tuple mirrored, the given status bits and timeout."""
    v_src, v_dst = ((nl.CTA_IP_V4_SRC, nl.CTA_IP_V4_DST) if family == nl.AF_INET
                    else (nl.CTA_IP_V6_SRC, nl.CTA_IP_V6_DST))

    def tup(a: bytes, b: bytes, sp: int, dp: int) -> bytes:
        ip = nla(nl.CTA_TUPLE_IP, nla(v_src, a) + nla(v_dst, b), True)
        pr = nla(nl.CTA_TUPLE_PROTO, nla(nl.CTA_PROTO_NUM, bytes([proto]))
                 + nla(nl.CTA_PROTO_SRC_PORT, _U16.pack(sp)) + nla(nl.CTA_PROTO_DST_PORT, _U16.pack(dp)), True)
        return ip + pr

    payload = (nla(nl.CTA_TUPLE_ORIG, tup(src, dst, sport, dport), True)
               + nla(nl.CTA_TUPLE_REPLY, tup(dst, src, dport, sport), True)
               + nla(nl.CTA_STATUS, _U32.pack(status)) + nla(nl.CTA_TIMEOUT, _U32.pack(timeout)))
    if tcp_state is not None:
        payload += nla(nl.CTA_PROTOINFO, nla(nl.CTA_PROTOINFO_TCP, nla(nl.CTA_PROTOINFO_TCP_STATE,
                                                                       bytes([tcp_state])), True), True)
    return request(nl.CT_NEW, nl.NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK, seq, family, payload)
