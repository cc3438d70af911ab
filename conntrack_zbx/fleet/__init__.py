"""``conntrack-zbx fleet``: a host group's nodes side by side (admin side: pyzabbix).

``fleet --group NAME`` ranks the networks across the group (``report.py``); ``fleet --group NAME
--setup`` creates the group's fleet host, its API token and its dashboard (``setup.py``).
"""

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conntrack_zbx.options import FleetArgs


def run(args: "FleetArgs") -> str:
    import json

    from conntrack_zbx.zabbixapi import connect

    zapi = connect(args.url)
    if args.setup:
        from conntrack_zbx.fleet.setup import setup

        return json.dumps(setup(zapi, args.group, args.api_url), indent=1) + "\n"
    from conntrack_zbx.fleet import report
    from conntrack_zbx.fleet.api import fetch

    f = fetch(zapi, args.group, args.fresh)
    if args.json:
        return json.dumps(report.as_json(f), indent=1) + "\n"
    return report.table(f, args.top, lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)))
