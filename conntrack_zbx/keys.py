"""The agent keys, as ``commands.py`` declares them. The UserParameter conf, the sudoers drop-in,
the template and the docs are all generated from them, so a key can never exist in one and not the
others.

Parameters (``conntrack.talkers[<prefix4>,<prefix6>,<top>,<max_age>,<netns>,<idle_min>,<timeout>]``)
are each passed quoted as the value of one fixed option and checked against the allow-list in
``params.py``; they reach root only as data on stdin of the one fixed sudo line, never as an
argument, a path or a shell word there (see docs/permissions.md).
"""

from typing import NamedTuple, Tuple

from conntrack_zbx.commands import COMMANDS
from conntrack_zbx.options import Option

# Where `pip install` + the documented symlink put the entry point on an agent host.
BINARY = "/usr/local/bin/conntrack-zbx"
SUDO = "/usr/bin/sudo"
AGENT_USER = "zabbix"


class AgentKey(NamedTuple):
    key: str
    args: Tuple[str, ...]  # the fixed subcommand line after the binary
    privileged: bool  # reads the root-only entry table: runs through the sudo grant
    description: str
    params: Tuple[Option, ...] = ()  # flexible key: $1.. map to these options, allow-listed


KEYS = tuple(AgentKey(c.key.name, (c.name,), c.key.privileged, c.key.description, c.args.params())
             for c in COMMANDS if c.key is not None)


def command_line(k: AgentKey, binary: str = BINARY) -> str:
    """What the agent runs for a key. Privileged keys add --sudo: the entry point then runs
    exactly ``sudo -n BINARY <args>`` and turns a refusal into a message naming the grant."""
    parts = [binary] + list(k.args) + (["--sudo"] if k.privileged else [])
    for i, p in enumerate(k.params, 1):
        # Quoted: one argument whatever it holds (the agent refuses quotes in parameters).
        parts.append("%s='$%d'" % (p.flag, i))
    return " ".join(parts)


def conf_key(k: AgentKey) -> str:
    """The UserParameter key: flexible ([*]) when it takes parameters; the bare key still works."""
    return k.key + ("[*]" if k.params else "")


def sudo_command(k: AgentKey, binary: str = BINARY) -> Tuple[str, ...]:
    """The exact command the sudoers drop-in allows for a privileged key: parameters travel on
    stdin, so the line is fixed."""
    return (binary,) + k.args + (("--params-stdin",) if k.params else ())


def agent_conf(binary: str = BINARY) -> str:
    lines = [
        "# conntrack_zbx: Linux connection-tracking table monitoring for Zabbix.",
        "# Generated from conntrack_zbx/keys.py by `python -m conntrack_zbx.generate`; do not edit.",
        "# Works with zabbix_agentd and zabbix_agent2. Keep UnsafeUserParameters=0 (the default):",
        "# key parameters are then plain values, and conntrack-zbx accepts only allow-listed numbers.",
        "# Talker keys read the root-only entry table through the sudo drop-in",
        "# sudoers.d/conntrack-zbx (see docs/permissions.md); without it they are not",
        "# supported with a message naming the grant, and conntrack.stats keeps working.",
        "",
    ]
    for k in KEYS:
        lines.append("# %s" % k.description)
        if k.params:
            lines.append("# Parameters: %s." % ", ".join(
                "%s (%d..%d, empty = %d)" % (p.name, p.lo, p.hi, p.default) for p in k.params))
        lines.append("UserParameter=%s,%s" % (conf_key(k), command_line(k, binary)))
    return "\n".join(lines) + "\n"


def sudoers(binary: str = BINARY, user: str = AGENT_USER) -> str:
    cmds = [" ".join(sudo_command(k, binary)) for k in KEYS if k.privileged]
    return "\n".join([
        "# conntrack_zbx: let the Zabbix agent read the conntrack entry table, nothing else.",
        "# Generated from conntrack_zbx/keys.py; install as /etc/sudoers.d/conntrack-zbx, mode 0440.",
        "# Exact command lines with their arguments: sudo refuses any other argument.",
        "# The binary and its Python environment must be owned by root and not writable by %s." % user,
        "Defaults!%s !requiretty" % binary,
        "%s ALL=(root) NOPASSWD: %s" % (user, ", ".join(cmds)),
    ]) + "\n"
