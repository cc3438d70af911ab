"""Whether this host has the lifeline, for the template: read by ``talkers`` (root, through the
existing sudo line) and sent as its ``lifeline`` field, so Zabbix can say "a full table will blind
monitoring on this host" where nobody ran ``conntrack-zbx protect``.

One ``nft -j list table`` per fresh talkers read (a few milliseconds, inside the call's deadline);
on a firewalld host without that table, ``iptables-save``/``ip6tables-save -t raw`` too (the direct
rules ``protect`` tells firewalld hosts to add). Nothing is imported until then.
"""

import os

from conntrack_zbx.lifeline import COMMENT, TABLE

FIREWALLD_RUN = "/run/firewalld"  # there while firewalld runs: only then are its direct rules looked for

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List


def state(deadline: float) -> "Dict[str, Any]":
    """{"protected": 1|0, "ports": "in 10050,22; out 10051" or "", "note": why unknown, if so}."""
    import json
    import subprocess
    import time

    left = deadline - time.monotonic()
    if left <= 0.05:
        return {"protected": 0, "ports": "", "note": "not checked: the time budget ran out"}
    try:
        p = subprocess.run(["nft", "-j", "list", "table", "inet", TABLE], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=min(left, 1.0))
    except FileNotFoundError:
        return {"protected": 0, "ports": "", "note": "nft is not installed: no lifeline possible"}
    except subprocess.TimeoutExpired:
        return {"protected": 0, "ports": "", "note": "not checked: nft did not answer in time"}
    if p.returncode != 0:  # no such table: on a firewalld host, its direct rules may hold it
        return _direct_rules(deadline) if os.path.isdir(FIREWALLD_RUN) else {"protected": 0, "ports": ""}
    try:
        doc = json.loads(p.stdout)
    except ValueError:
        return {"protected": 0, "ports": "", "note": "nft printed no JSON"}
    return {"protected": 1, "ports": ports_of(doc)}


def _direct_rules(deadline: float) -> "Dict[str, Any]":
    """The lifeline as firewalld keeps it (the commands ``protect`` prints there): permanent
    direct rules in iptables' raw table, found by their comment."""
    import subprocess
    import time

    found = {"prerouting": set(), "output": set()}  # type: Dict[str, Any]
    for cmd in ("iptables-save", "ip6tables-save"):
        left = deadline - time.monotonic()
        if left <= 0.05:
            return {"protected": 0, "ports": "", "note": "not checked: the time budget ran out"}
        try:
            p = subprocess.run([cmd, "-t", "raw"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               timeout=min(left, 1.0))
        except (OSError, subprocess.TimeoutExpired):
            continue
        if p.returncode == 0:
            for chain, ports in direct_ports(p.stdout.decode(errors="replace")).items():
                found[chain] |= ports
    if not found["prerouting"] and not found["output"]:
        return {"protected": 0, "ports": ""}
    return {"protected": 1, "ports": _label(found), "note": "firewalld direct rules (iptables raw table)"}


def direct_ports(save: str) -> "Dict[str, Any]":
    """``iptables-save -t raw`` -> the TCP destination ports of our notrack rules, per chain
    (prerouting: local services; output: remote ones), as ``ports_of`` counts them."""
    import re

    out = {"prerouting": set(), "output": set()}  # type: Dict[str, Any]
    for line in save.splitlines():
        parts = line.split(" ", 2)
        if (len(parts) < 3 or parts[0] != "-A" or parts[1] not in ("PREROUTING", "OUTPUT")
                or '--comment "%s"' % COMMENT not in line or "-j CT --notrack" not in line):
            continue
        m = re.search(r"--dport (\d+)\b", line)
        if m:
            out[parts[1].lower()].add(int(m.group(1)))
    return out


def _label(found: "Dict[str, Any]") -> str:
    parts: "List[str]" = []
    for chain, label in (("prerouting", "in"), ("output", "out")):
        if found[chain]:
            parts.append("%s %s" % (label, ",".join(str(p) for p in sorted(found[chain]))))
    return "; ".join(parts)


def ports_of(doc: "Dict[str, Any]") -> str:
    """The TCP ports the lifeline's rules name: local services (prerouting dport) and remote
    ones (output dport), e.g. "in 22,10050; out 10051"."""
    found = {"prerouting": set(), "output": set()}  # type: Dict[str, Any]
    for item in doc.get("nftables", []):
        rule = item.get("rule")
        if not rule or rule.get("chain") not in found:
            continue
        for e in rule.get("expr", []):
            m = e.get("match") if isinstance(e, dict) else None
            if not isinstance(m, dict):
                continue
            left = m.get("left", {}).get("payload", {})
            if left.get("protocol") == "tcp" and left.get("field") == "dport" and isinstance(m.get("right"), int):
                found[rule["chain"]].add(m["right"])
    return _label(found)
