"""The agent commands' options, written down once.

``stats``, ``talkers`` and ``discovery`` run on every monitored host every minute, so their
command lines are parsed twice over: a fast path that avoids importing argparse (``cli.fast_args``)
and the full argparse parser for humans (``parser.build_parser``). Both are built from ``OPTIONS``,
and so are the allow-listed Zabbix key parameters (``params_of``, checked by ``params``), the options that
``--sudo`` and ``--params-stdin`` refuse, and the agent conf's ``--opt='$N'`` words (``keys.py``).
Adding an option is one line here; nothing else has to learn about it.

Kinds:

``text``     a string (paths); ``None`` default means "not given"
``choice``   one of ``choices``
``seconds``  a float
``flag``     present or not
``param``    a key parameter: what a Zabbix user typed in ``conntrack.talkers[...]``. It stays text
             here (empty = ``default``) and is validated by ``params.check`` against ``lo``..``hi``,
             so a bad value becomes the item's error message, not an argparse exit.
"""

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs every agent call ~3 ms
    from typing import Any, Dict, List, Optional, Tuple

TEXT, CHOICE, SECONDS, FLAG, PARAM = "text", "choice", "seconds", "flag", "param"

AGENT_COMMANDS = ("stats", "talkers", "discovery", "namespaces")
TABLE_COMMANDS = ("talkers", "discovery")
# Commands that read what only root may read, through the fixed sudo line.
ROOT_COMMANDS = ("talkers", "discovery", "namespaces")
SOURCES = ("auto", "netlink", "proc")


class Option:
    """One option of one or more agent commands. ``name`` is the attribute (``max_age``); the
    command-line spelling is ``--max-age``."""

    __slots__ = ("name", "commands", "kind", "default", "help", "metavar", "choices", "lo", "hi")

    def __init__(self, name: str, commands: "Tuple[str, ...]", kind: str, default: "Any", help: str,
                 metavar: "Optional[str]" = None, choices: "Tuple[str, ...]" = (), lo: int = 0, hi: int = 0) -> None:
        self.name, self.commands, self.kind, self.default = name, commands, kind, default
        self.help, self.metavar, self.choices, self.lo, self.hi = help, metavar, choices, lo, hi

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def __repr__(self) -> str:
        return "Option(%s)" % self.flag


OPTIONS = (
    Option("proc_root", AGENT_COMMANDS, TEXT, "/",
           "read proc/ and sys/ below DIR instead of / (fixture trees)", metavar="DIR"),
    Option("etc_root", ("stats",), TEXT, "/",
           "read etc/sysctl.d, etc/modprobe.d, etc/modules-load.d below DIR (tests)", metavar="DIR"),
    Option("file", TABLE_COMMANDS, TEXT, None,
           "read a saved copy of /proc/net/nf_conntrack instead of the live table", metavar="PATH"),
    Option("source", AGENT_COMMANDS, CHOICE, "auto",
           "where the table and counters are read: ctnetlink (needs CAP_NET_ADMIN), /proc, or auto = "
           "the fastest that works here (talkers: netlink first; stats: /proc first)", choices=SOURCES),
    Option("prefix4", TABLE_COMMANDS, PARAM, 24, "IPv4 network prefix length of the roll-up", lo=8, hi=32),
    Option("prefix6", TABLE_COMMANDS, PARAM, 64, "IPv6 network prefix length of the roll-up", lo=16, hi=128),
    Option("top", TABLE_COMMANDS, PARAM, 10, "how many sources and networks to report and discover",
           lo=1, hi=100),
    Option("top", ("namespaces",), PARAM, 20, "how many namespaces to report and discover (by entries)",
           lo=1, hi=1000),
    Option("max_age", TABLE_COMMANDS, PARAM, 20,
           "seconds a cached table read may be reused; 0 = always read afresh", lo=0, hi=3600),
    Option("netns", TABLE_COMMANDS, PARAM, 0,
           "read the table of this network namespace (its inode, from 'conntrack-zbx namespaces'); "
           "0 = this process's own", lo=0, hi=4294967295),
    Option("idle_min", TABLE_COMMANDS, PARAM, 3600,
           "seconds an ESTABLISHED TCP entry must have been silent to count as idle (a leak "
           "rather than load)", lo=60, hi=31536000),
    Option("timeout", TABLE_COMMANDS, PARAM, 3,
           "the Zabbix Timeout (s) this key runs under (agent, and proxy or server): the call ends "
           "inside it, reading as much of the table as fits; raise it together with the Timeout on "
           "hosts whose table takes longer to read", lo=2, hi=30),
    Option("timeout_established", TABLE_COMMANDS, TEXT, None,
           "--file only: the nf_conntrack_tcp_timeout_established (s) of the host the snapshot "
           "came from, so idle times can be told (without it they are unknown)", metavar="SECONDS"),
    Option("cache_dir", TABLE_COMMANDS, TEXT, None,
           "snapshot cache directory (default /run/conntrack-zbx; must be owned by this user, mode 0700)",
           metavar="DIR"),
    Option("budget", ROOT_COMMANDS, SECONDS, None,
           "stop reading after this long and report truncated (default: the timeout parameter less "
           "0.5 s, 2.5 s for Zabbix's default 3 s Timeout; 0..30, Zabbix's longest Timeout)",
           metavar="SECONDS", lo=0, hi=30),
    Option("sudo", ROOT_COMMANDS, FLAG, False,
           "agent keys: validate the parameters, then run the fixed line 'sudo -n conntrack-zbx "
           "COMMAND --params-stdin' and hand them over on stdin"),
    Option("params_stdin", ROOT_COMMANDS, FLAG, False,
           "(the sudo line) read the parameters as name=value words from stdin"),
)


def for_command(command: str) -> "Tuple[Option, ...]":
    """The options of one agent command, in the order above."""
    return tuple(o for o in OPTIONS if command in o.commands)


def params_of(command: str) -> "Tuple[Option, ...]":
    """The key parameters of a command: the ``$1``, ``$2``... of its flexible agent key."""
    return tuple(o for o in for_command(command) if o.kind == PARAM)


def defaults(command: str) -> "Dict[str, Any]":
    """Every option of ``command`` at its command-line default (key parameters: empty text)."""
    return {o.name: ("" if o.kind == PARAM else o.default) for o in for_command(command)}


def not_on_fixed_line(args: "Any", allowed: "Tuple[str, ...]") -> "List[Option]":
    """The options of a parsed command line that the fixed sudo line cannot carry: anything but
    the key parameters and ``allowed`` that differs from its default. ``--sudo`` and
    ``--params-stdin`` refuse these by name."""
    return [o for o in for_command(args.command)
            if o.kind != PARAM and o.name not in allowed and getattr(args, o.name) != o.default]
