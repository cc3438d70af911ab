"""Write every file derived from ``conntrack_zbx.keys``: ``python -m conntrack_zbx.generate``.

Committed outputs must equal what this produces (tests/test_generated.py), so the agent conf,
the sudoers drop-in and the template can never drift from the key list.
"""

import os
import sys
from typing import Callable, Dict

from conntrack_zbx import keys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def outputs() -> Dict[str, Callable[[], str]]:
    from functools import partial

    from conntrack_zbx.template import fleet, model, render, service

    out = {
        "zabbix_agentd.d/userparameter_conntrack.conf": keys.agent_conf,
        "sudoers.d/conntrack-zbx": keys.sudoers,
        "templates/conntrack_zbx.yaml": render.template_yaml,
        "templates/mirrorlist_service.yaml": partial(render.template_yaml, None, True),
        "templates/conntrack_zbx_7.0.yaml": partial(render.template_yaml, None, False, "7.0"),
        "templates/mirrorlist_service_7.0.yaml": partial(render.template_yaml, None, True, "7.0"),
    }  # type: Dict[str, Callable[[], str]]
    for name, slug in ((model.CONNTRACK, "linux_conntrack"), (model.CONNTRACK_ACTIVE, "linux_conntrack_active"),
                       (fleet.FLEET, "linux_conntrack_fleet"), (service.MIRRORLIST, "mirrorlist_http"),
                       (service.NODE, "mirrorlist_node"),
                       (service.NODE_ACTIVE, "mirrorlist_node_active")):
        out["docs/templates/%s.md" % slug] = partial(render.template_readme, name)
    return out


def main() -> int:
    for rel, make in outputs().items():
        path = os.path.join(ROOT, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(make())
        print("wrote %s" % rel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
