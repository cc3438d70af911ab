"""Zabbix low-level discovery rows for the top talkers.

A bare JSON array (the 4.2+ LLD format), sorted, capped, ``[]`` when there is nothing: never
``null``, never a shell-built string. Each row carries the JSONPath that selects its object in
the ``conntrack.talkers`` document, so item prototypes need no per-kind copies.
"""

from typing import Dict, List

from conntrack_zbx.talkers import Group, family_of

KINDS = (("network", "networks"), ("source", "sources"))


def discovery_rows(networks: List[Group], sources: List[Group], top: int) -> List[Dict[str, str]]:
    rows = []
    for (kind, array), groups in zip(KINDS, (networks, sources)):
        field = "network" if kind == "network" else "address"
        for g in groups[:top]:
            rows.append({
                "{#CT.KIND}": kind,
                "{#CT.TALKER}": g.key,
                "{#CT.FAMILY}": family_of(g.key),
                "{#CT.PATH}": "$.%s[?(@.%s=='%s')]" % (array, field, g.key),
            })
    return rows
