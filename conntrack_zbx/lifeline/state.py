"""Whether this host has the lifeline, for the template: read by ``talkers`` (root, through the
existing sudo line) and sent as its ``lifeline`` field, so Zabbix can say "a full table will blind
monitoring on this host" where nobody ran ``conntrack-zbx protect``.

One ``nft -j list table`` per fresh talkers read (a few milliseconds, inside the call's deadline);
nothing is imported until then.
"""

from conntrack_zbx.lifeline import TABLE

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
    if p.returncode != 0:
        return {"protected": 0, "ports": ""}  # no such table
    try:
        doc = json.loads(p.stdout)
    except ValueError:
        return {"protected": 0, "ports": "", "note": "nft printed no JSON"}
    return {"protected": 1, "ports": ports_of(doc)}


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
    parts: "List[str]" = []
    for chain, label in (("prerouting", "in"), ("output", "out")):
        if found[chain]:
            parts.append("%s %s" % (label, ",".join(str(p) for p in sorted(found[chain]))))
    return "; ".join(parts)
