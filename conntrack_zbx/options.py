"""Every command's options, written down once: each class below is both the spec and the typed value.

A command's options are the class attributes of its ``Args`` class (``TalkersArgs.prefix4`` ...).
From them come the fast path (``cli.fast_args``), the argparse parser (``parser.py``), the key
parameters and their allow-list (``params``), the options that ``--sudo`` and ``--params-stdin``
refuse, and the agent conf's ``--opt='$N'`` words (``keys.py``). A parsed command line is an
instance of its class, so mypy checks every attribute a command reads against this spec.
Adding an option is one line in its class; nothing else has to learn about it.

Typed without importing ``typing`` at run time (it costs every agent call ~3 ms): each kind of
option is a descriptor whose ``__get__``, declared for the type checker only, names the type of
the value; at run time the instance's own ``__dict__`` holds the values.

Kinds:

``text``     a string (paths); ``MaybeText``: ``None`` means "not given"
``choice``   one of ``choices``
``seconds``  a float within ``lo``..``hi``, or ``None``
``flag``     present or not
``whole``    a whole number within ``lo``..``hi`` (the human commands)
``param``    a key parameter: what a Zabbix user typed in ``conntrack.talkers[...]``. It stays text
             here (empty = ``default``) and is validated by ``params.check`` against ``lo``..``hi``,
             so a bad value becomes the item's error message, not an argparse exit.
"""

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs every agent call ~3 ms
    from typing import Any, Dict, List, Optional, Tuple

TEXT, CHOICE, SECONDS, FLAG, PARAM, WHOLE = "text", "choice", "seconds", "flag", "param", "whole"

SOURCES = ("auto", "netlink", "proc")
GROUP_BY = ("src", "dst", "dport", "state", "proto")  # the views `top --by` counts (count.views)
# Ranges the human commands share with the key parameters of the same name.
PREFIX4, PREFIX6, IDLE_MIN = (8, 32), (16, 128), (60, 31536000)
# The share of nf_conntrack_max (%) a network's idle entries may hold before it is called a leak:
# the default of the templates' {$CONNTRACK.TALKER.IDLE.WARN} and what `fleet` judges by
IDLE_WARN_PCT = 5
IDLE_FLOOR = " (an ESTABLISHED connection in use can be silent for a minute: below 60 s idle is not a leak)"


class Option:
    """One option. ``name`` is the attribute (``max_age``, set when its class is made); the
    command-line spelling is ``--max-age`` unless ``spelled`` says otherwise. ``group`` names a
    set of mutually exclusive options; ``why`` is added to a range error (where a floor comes from)."""

    kind = TEXT
    __slots__ = ("name", "default", "help", "metavar", "choices", "lo", "hi", "why", "group", "required",
                 "spelled")

    def __init__(self, default: "Any", help: str, metavar: "Optional[str]" = None, choices: "Tuple[str, ...]" = (),
                 span: "Tuple[int, int]" = (0, 0), why: str = "", group: "Optional[str]" = None,
                 required: bool = False, spelled: "Optional[str]" = None) -> None:
        self.name = ""
        self.default, self.help, self.metavar, self.choices = default, help, metavar, choices
        self.lo, self.hi = span
        self.why, self.group, self.required, self.spelled = why, group, required, spelled

    def __set_name__(self, owner: "Any", name: str) -> None:
        self.name = name

    @property
    def flag(self) -> str:
        return self.spelled or "--" + self.name.replace("_", "-")

    def __repr__(self) -> str:
        return "Option(%s)" % self.flag


class Text(Option):
    if TYPE_CHECKING:
        def __get__(self, obj: "Args", owner: "Any") -> str: ...


class MaybeText(Option):
    if TYPE_CHECKING:
        def __get__(self, obj: "Args", owner: "Any") -> "Optional[str]": ...


class Choice(Option):
    kind = CHOICE
    if TYPE_CHECKING:
        def __get__(self, obj: "Args", owner: "Any") -> str: ...


class Seconds(Option):
    kind = SECONDS
    if TYPE_CHECKING:
        def __get__(self, obj: "Args", owner: "Any") -> "Optional[float]": ...


class Flag(Option):
    kind = FLAG

    def __init__(self, help: str, group: "Optional[str]" = None) -> None:
        Option.__init__(self, False, help, group=group)

    if TYPE_CHECKING:
        def __get__(self, obj: "Args", owner: "Any") -> bool: ...


class Whole(Option):
    kind = WHOLE
    if TYPE_CHECKING:
        def __get__(self, obj: "Args", owner: "Any") -> int: ...


class MaybeWhole(Option):
    kind = WHOLE
    if TYPE_CHECKING:
        def __get__(self, obj: "Args", owner: "Any") -> "Optional[int]": ...


class Param(Option):
    kind = PARAM
    if TYPE_CHECKING:
        def __get__(self, obj: "Args", owner: "Any") -> str: ...


class Args:
    """A parsed command line: ``command`` and one attribute per option of its class."""

    command = ""

    def __init__(self, **values: "Any") -> None:
        self.__dict__.update(values)

    @classmethod
    def options(cls) -> "Tuple[Option, ...]":
        """The options of this command, base classes' first, each in the order written."""
        found = {}  # type: Dict[str, Option]
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                if isinstance(value, Option):
                    found.pop(name, None)
                    found[name] = value
        return tuple(found.values())

    @classmethod
    def params(cls) -> "Tuple[Option, ...]":
        """The key parameters: the ``$1``, ``$2``... of the command's flexible agent key."""
        return tuple(o for o in cls.options() if o.kind == PARAM)

    @classmethod
    def defaults(cls) -> "Dict[str, Any]":
        """Every option at its command-line default (key parameters: empty text)."""
        return {o.name: ("" if o.kind == PARAM else o.default) for o in cls.options()}

    def not_on_fixed_line(self, allowed: "Tuple[str, ...]") -> "List[Option]":
        """The options the fixed sudo line cannot carry: anything but the key parameters and
        ``allowed`` that differs from its default. ``--sudo`` and ``--params-stdin`` refuse these
        by name."""
        return [o for o in self.options()
                if o.kind != PARAM and o.name not in allowed and getattr(self, o.name) != o.default]

    def key_parameters(self) -> "Dict[str, int]":
        """The validated key parameters: from the options, or (the root side of the sudo line,
        ``--params-stdin``) from stdin, where the fixed line allows no option at all."""
        from conntrack_zbx import params
        from conntrack_zbx.errors import Refused

        own = self.params()
        if getattr(self, "params_stdin", False):
            if self.not_on_fixed_line(("params_stdin",)) or any(getattr(self, p.name) for p in own):
                raise Refused("--params-stdin takes every parameter from stdin, no options")
            import sys

            return params.from_wire(sys.stdin.buffer.read(4097), own)
        return params.check_all({p.name: getattr(self, p.name) for p in own}, own)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(self) == vars(other)

    def __repr__(self) -> str:
        return "%s(%s)" % (type(self).__name__, ", ".join("%s=%r" % kv for kv in sorted(vars(self).items())))


# -- the agent commands -----------------------------------------------------------------------------
class AgentArgs(Args):
    """Every agent command: JSON on stdout, the failure contract's JSON error."""

    proc_root = Text("/", "read proc/ and sys/ below DIR instead of / (fixture trees)", metavar="DIR")
    source = Choice("auto", "where the table and counters are read: ctnetlink (needs CAP_NET_ADMIN), /proc, or "
                    "auto = the fastest that works here (talkers: netlink first; stats: /proc first)",
                    choices=SOURCES)


HUMAN = Flag("a person's view: the same answer as lines to read at a terminal, errors on stderr (the agent "
             "keys never use it)")


class StatsArgs(AgentArgs):
    etc_root = Text("/", "read etc/sysctl.d, etc/modprobe.d, etc/modules-load.d below DIR (tests)", metavar="DIR")
    human = HUMAN


BUDGET = Seconds(None, "stop reading after this long and report truncated (default: the timeout parameter less "
                 "0.5 s, 2.5 s for Zabbix's default 3 s Timeout; 0..30, Zabbix's longest Timeout)",
                 metavar="SECONDS", span=(0, 30))
SUDO = Flag("agent keys: validate the parameters, then run the fixed line 'sudo -n conntrack-zbx COMMAND "
            "--params-stdin' and hand them over on stdin")
PARAMS_STDIN = Flag("(the sudo line) read the parameters as name=value words from stdin")


class TableArgs(AgentArgs):
    """``discovery``: one pass over the table. ``talkers`` adds the sudo line."""

    file = MaybeText(None, "read a saved copy of /proc/net/nf_conntrack instead of the live table", metavar="PATH")
    prefix4 = Param(24, "IPv4 network prefix length of the roll-up", span=PREFIX4)
    prefix6 = Param(64, "IPv6 network prefix length of the roll-up", span=PREFIX6)
    top = Param(10, "how many sources and networks to report and discover", span=(1, 100))
    max_age = Param(20, "seconds a cached table read may be reused; 0 = always read afresh", span=(0, 3600))
    netns = Param(0, "read the table of this network namespace (its inode, from 'conntrack-zbx namespaces'); "
                  "0 = this process's own", span=(0, 4294967295))
    idle_min = Param(3600, "seconds an ESTABLISHED TCP entry must have been silent to count as idle (a leak "
                     "rather than load)", span=IDLE_MIN)
    timeout = Param(3, "the Zabbix Timeout (s) this key runs under (agent, and proxy or server): the call ends "
                    "inside it, reading as much of the table as fits; raise it together with the Timeout on "
                    "hosts whose table takes longer to read", span=(2, 30))
    timeout_established = MaybeText(None, "--file only: the nf_conntrack_tcp_timeout_established (s) of the host "
                                    "the snapshot came from, so idle times can be told (without it they are "
                                    "unknown)", metavar="SECONDS")
    max = MaybeText(None, "--file only: the nf_conntrack_max of the host the snapshot came from, for the shares "
                    "(without it they are not given: this machine's limit would mislead)", metavar="N")
    cache_dir = MaybeText(None, "snapshot cache directory (default /run/conntrack-zbx; must be owned by this "
                          "user, mode 0700)", metavar="DIR")
    budget = BUDGET


class TalkersArgs(TableArgs):
    sudo = SUDO
    params_stdin = PARAMS_STDIN


class NamespacesArgs(AgentArgs):
    top = Param(20, "how many namespaces to report and discover (by entries)", span=(1, 1000))
    human = HUMAN
    budget = BUDGET
    sudo = SUDO
    params_stdin = PARAMS_STDIN


# -- the commands for people -----------------------------------------------------------------------
PROC_ROOT = Text("/", "read proc/ and sys/ below DIR instead of / (fixture trees)", metavar="DIR")


class TopArgs(Args):
    proc_root = PROC_ROOT
    file = MaybeText(None, "read a saved copy of /proc/net/nf_conntrack instead of the live table", metavar="PATH")
    netns = MaybeText(None, "read the table of another network namespace (an 'ip netns' name or the inode "
                      "'conntrack-zbx namespaces' lists): who fills a container's or pod's table",
                      metavar="NAME|INODE")
    by = Choice("src", "rank by entries held per source (default), destination, port, state or protocol; "
                "'idle': sources and networks by ESTABLISHED entries silent longer than --idle-min (a leak "
                "rather than load)", choices=GROUP_BY + ("idle",))
    idle_min = Whole(3600, "silence that makes an ESTABLISHED entry idle (default 3600)", metavar="SECONDS",
                     span=IDLE_MIN, why=IDLE_FLOOR)
    timeout_established = MaybeText(None, "--file only: nf_conntrack_tcp_timeout_established of the snapshot's "
                                    "host", metavar="SECONDS")
    n = Whole(10, "rows (default 10)", metavar="N", span=(1, 100000), spelled="-n")
    prefix4 = Whole(24, "IPv4 network prefix length of the roll-up (8..32, default 24)", metavar="N", span=PREFIX4)
    prefix6 = Whole(64, "IPv6 network prefix length of the roll-up (16..128, default 64)", metavar="N",
                    span=PREFIX6)
    max = MaybeWhole(None, "nf_conntrack_max to compute shares against (default: this host's; give the source "
                     "host's for a --file)", metavar="N", span=(1, 1 << 31))


class TuneArgs(Args):
    proc_root = PROC_ROOT
    max = MaybeWhole(None, "the new nf_conntrack_max", metavar="N", span=(1, 1 << 30), group="size")
    auto = Flag("propose a value from RAM and the peak usage (and an ESTABLISHED timeout when idle entries "
                "hold much of the table)", group="size")
    tcp_established_timeout = MaybeWhole(None, "the new nf_conntrack_tcp_timeout_established (kernel default "
                                         "432000, 5 days); see the runbook for the trade-off", metavar="SECONDS",
                                         span=(1, 1 << 31))
    peak = MaybeWhole(None, "peak entries seen (e.g. from Zabbix history); default: the current count",
                      metavar="N", span=(0, 1 << 30))
    apply = Flag("write the files and set the runtime values")
    runtime_only = Flag("change the running kernel only, no files")
    root = Text("/", "write etc/... below DIR (tests)", metavar="DIR")


class CleanArgs(Args):
    network = Text(None, "the network or address whose entries go (e.g. 198.51.100.0/24)", metavar="CIDR",
                   required=True)
    idle_min = Whole(3600, "only entries silent for longer than this (default 3600)", metavar="SECONDS",
                     span=IDLE_MIN, why=IDLE_FLOOR)
    netns = MaybeText(None, "in this network namespace's table", metavar="NAME|INODE")
    apply = Flag("delete them (default: a dry run listing them)")


class ProtectArgs(Args):
    apply = Flag("apply the rules now and make them survive a reboot", group="action")
    remove = Flag("take away everything protect added (rules, include, file)", group="action")
    runtime_only = Flag("with --apply: the running firewall only, no files")
    agent_conf = MaybeText(None, "the agent configuration to read (default: etc/zabbix/zabbix_agentd.conf and "
                           "zabbix_agent2.conf under --root)", metavar="PATH")
    port = MaybeText(None, "more local TCP services to keep reachable, comma-separated (e.g. 22 for ssh)",
                     metavar="PORTS")
    root = Text("/", "read and write etc/... below DIR (tests, reviews)", metavar="DIR")


class AgentConfArgs(Args):
    apply = Flag("make the links (the package's install runs this)", group="action")
    remove = Flag("take away the links and copies agent-conf made (the package's removal runs this)",
                  group="action")
    source = MaybeText(None, "the UserParameter conf to install instead of the package's (copied, not linked), "
                       "e.g. the checkout's zabbix_agentd.d/userparameter_conntrack.conf", metavar="PATH")
    root = Text("/", "read and write etc/... below DIR (tests, images)", metavar="DIR")


class TemplateArgs(Args):
    """``template import``: the admin side (pyzabbix)."""

    action = "import"
    url = MaybeText(None, "frontend URL (default: $ZABBIX_URL); credentials come from $ZABBIX_TOKEN or "
                    "$ZABBIX_USER/$ZABBIX_PASSWORD")
    file = MaybeText(None, "import this YAML instead of the built-in one", metavar="PATH")
    runbook_url = MaybeText(None, "where you publish docs/runbook.md (http or https): every trigger then links "
                            "to its section; without it the triggers carry no link, their descriptions the "
                            "steps", metavar="URL")
    services = Flag("also import the incident's mirrorlist service templates (the web check and the node "
                    "template that links it with the conntrack one)")
    delete_missing = Flag("also delete items, triggers... that the template no longer has")
    host = MaybeText(None, "link the template to this host", metavar="NAME", group="where")
    group = MaybeText(None, "link the template to every host of this group", metavar="NAME", group="where")
    template = Text("Linux conntrack by Zabbix agent", "which template --host/--group get (default: "
                    "%(default)s)")


class FleetArgs(Args):
    """``fleet``: a host group's nodes side by side (pyzabbix)."""

    group = Text("", "the host group of the fleet's nodes, as the frontend names it", metavar="NAME", required=True)
    url = MaybeText(None, "frontend URL (default: $ZABBIX_URL); credentials come from $ZABBIX_TOKEN or "
                    "$ZABBIX_USER/$ZABBIX_PASSWORD")
    json = Flag("the ranking as JSON")
    top = Whole(10, "networks shown (default 10)", metavar="N", span=(1, 1000))
    fresh = Whole(900, "a node's value older than this is not counted (default 900: three talkers polls)",
                  metavar="SECONDS", span=(10, 86400))
    setup = Flag("create or renew the group's fleet host (linked to the fleet template), its API token and its "
                 "dashboard")
    api_url = MaybeText(None, "with --setup: the API as the Zabbix server reaches it (default: --url)",
                        metavar="URL")
