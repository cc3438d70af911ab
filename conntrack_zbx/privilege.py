"""The agent side of the one sudo grant: validate, then run the fixed line and pass its answer on.

The talker keys read the root-only entry table. The agent's conf runs ``conntrack-zbx talkers
--sudo --prefix4='$1' ...``; here the key parameters are validated against the allow-list, and
then exactly ``sudo -n <this binary> talkers --params-stdin`` runs, with the parameters handed
over on stdin as data, never as arguments. Root validates them again (``Args.key_parameters``).
A refused sudo prints prose on stderr that the agent would hand to Zabbix as a meaningless value;
here it becomes an error naming the grant (docs/permissions.md).
"""

import os
import sys

from conntrack_zbx.errors import NotPermitted, Refused

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, List

    from conntrack_zbx.options import Args


def run_via_sudo(args: "Args", rerun: "Callable[[List[str]], int]") -> int:
    """Run the fixed sudo line for ``args.command``; its JSON answer goes to stdout unchanged,
    and its exit status is returned. Already root, the same command is run in this process by
    ``rerun`` (the command line's entry, so nothing here imports it)."""
    import subprocess

    from conntrack_zbx import params
    from conntrack_zbx.keys import KEYS, SUDO, sudo_command

    key = next((k for k in KEYS if k.privileged and k.args[0] == args.command), None)
    if key is None:
        raise Refused("--sudo is only for the agent keys' fixed command lines, not for '%s'" % args.command)
    changed = args.not_on_fixed_line(("sudo",))
    if changed:
        raise Refused("--sudo runs only the fixed line '%s' with the key parameters (%s): drop %s"
                      % (" ".join(sudo_command(key)), ", ".join(p.name for p in args.params()),
                         ", ".join(o.flag for o in changed)))
    values = args.key_parameters()  # refused here, before anything runs as root
    if os.geteuid() == 0:  # already root (e.g. run by hand): nothing to elevate
        return rerun([args.command] + ["--%s=%d" % (n.replace("_", "-"), v) for n, v in values.items()])
    cmd = [SUDO, "-n"] + list(sudo_command(key, os.path.abspath(sys.argv[0])))
    try:
        p = subprocess.run(cmd, input=params.to_wire(values), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError:
        raise NotPermitted("%s is not installed: the talker keys read the root-only entry table "
                           "through sudo; install sudo and sudoers.d/conntrack-zbx "
                           "(docs/permissions.md)" % SUDO) from None
    out = p.stdout.decode("utf-8", "replace")
    if out.lstrip().startswith(("{", "[")):
        sys.stdout.write(out)
        return p.returncode
    said = (p.stderr.decode("utf-8", "replace").strip() or out.strip())[:300]
    raise NotPermitted(
        "not permitted: sudo refused '%s' for uid %d (%s); install sudoers.d/conntrack-zbx as "
        "/etc/sudoers.d/conntrack-zbx (mode 0440, check with 'visudo -cf'), see "
        "docs/permissions.md" % (" ".join(cmd[2:]), os.geteuid(), said))
