"""The command line as argparse sees it: every command's options and help.

The agent's own command lines skip this (``cli.fast_args``: importing and building argparse costs
more than ``stats`` costs to run); a person's, ``--help`` and anything ``fast_args`` does not take
come here. The agent commands' options come from ``options.OPTIONS``; the human commands share
their ranges with the key parameters of the same name (``_param``), so ``top --prefix4`` takes
what ``conntrack.talkers[...]`` takes. No parser accepts abbreviations: ``--n`` must not be read as
``--netns``.
"""

from conntrack_zbx import __version__
from conntrack_zbx.options import AGENT_COMMANDS, CHOICE, FLAG, PARAM, SECONDS, for_command

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any, Optional


def _whole(lo: int, hi: int, why: str = "") -> "Any":
    """An argparse type: a whole number in lo..hi (``why`` says where the floor comes from)."""
    import argparse

    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError("%r is not a whole number" % text[:32]) from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError("%d is outside %d..%d%s" % (value, lo, hi, why))
        return value
    return check


def _param(command: str, name: str, why: str = "") -> "Any":
    """The range a human command's option shares with the agent key parameter of that name."""
    o = next(o for o in for_command(command) if o.name == name)
    return _whole(o.lo, o.hi, why)


def _seconds(o: "Any") -> "Any":
    """An argparse type: seconds within the option's lo..hi (nan is outside every range)."""
    import argparse

    def check(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError("%r is not a number of seconds" % text[:32]) from None
        if not o.lo <= value <= o.hi:
            raise argparse.ArgumentTypeError("%s is outside %d..%d s (Zabbix's longest Timeout is 30 s)"
                                             % (text[:32], o.lo, o.hi))
        return value
    return check


IDLE_FLOOR = " (an ESTABLISHED connection in use can be silent for a minute: below 60 s idle is not a leak)"


def add_agent_options(sp: "argparse.ArgumentParser", command: str) -> None:
    """argparse's view of ``options.OPTIONS`` for one command."""
    for o in for_command(command):
        if o.kind == FLAG:
            sp.add_argument(o.flag, action="store_true", help=o.help)
        elif o.kind == PARAM:  # strings: validated by the allow-list, errors as JSON
            sp.add_argument(o.flag, dest=o.name, default="", metavar="N",
                            help="%s, %d..%d (default %d)" % (o.help, o.lo, o.hi, o.default))
        elif o.kind == CHOICE:
            sp.add_argument(o.flag, choices=o.choices, default=o.default, help=o.help)
        elif o.kind == SECONDS:
            sp.add_argument(o.flag, type=_seconds(o), default=o.default, metavar=o.metavar, help=o.help)
        else:
            sp.add_argument(o.flag, default=o.default, metavar=o.metavar, help=o.help)


AGENT_HELP = {
    "stats": "counters: count, max, usage, drops (JSON, no root needed)",
    "talkers": "top sources and networks by entries held (JSON)",
    "discovery": "Zabbix LLD array of the top talkers",
    "namespaces": "every network namespace's own table usage and drops, host-wide sum (JSON)",
}


def build_parser(only: "Optional[str]" = None) -> "argparse.ArgumentParser":
    """The whole CLI, or (``only``) just one subcommand."""
    import argparse

    p = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="conntrack-zbx",
        description="Linux conntrack table monitoring for Zabbix: usage, drops, top talkers.",
    )
    p.add_argument("-V", "--version", action="version", version="%(prog)s " + __version__)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in AGENT_COMMANDS:
        if only is None or only == command:
            add_agent_options(sub.add_parser(command, allow_abbrev=False, help=AGENT_HELP[command]), command)
    if only in AGENT_COMMANDS:
        return p
    _top_parser(sub)
    _tune_parser(sub)
    _clean_parser(sub)
    _template_parser(sub)
    return p


def _proc_root(sp: "argparse.ArgumentParser") -> None:
    o = next(o for o in for_command("stats") if o.name == "proc_root")
    sp.add_argument(o.flag, default=o.default, metavar=o.metavar, help=o.help)


def _top_parser(sub: "Any") -> None:
    from conntrack_zbx.talkers import GROUP_BY

    top = sub.add_parser("top", allow_abbrev=False, help="on-call view: who fills the table (terminal table)")
    _proc_root(top)
    top.add_argument("--file", metavar="PATH",
                     help="read a saved copy of /proc/net/nf_conntrack instead of the live table")
    top.add_argument("--netns", metavar="NAME|INODE",
                     help="read the table of another network namespace (an 'ip netns' name or the inode "
                          "'conntrack-zbx namespaces' lists): who fills a container's or pod's table")
    top.add_argument("--by", choices=GROUP_BY + ("idle",), default="src",
                     help="rank by entries held per source (default), destination, port, state or "
                          "protocol; 'idle': sources and networks by ESTABLISHED entries silent longer "
                          "than --idle-min (a leak rather than load)")
    top.add_argument("--idle-min", type=_param("talkers", "idle_min", IDLE_FLOOR), default=3600, metavar="SECONDS",
                     help="silence that makes an ESTABLISHED entry idle (default 3600)")
    top.add_argument("--timeout-established", metavar="SECONDS",
                     help="--file only: nf_conntrack_tcp_timeout_established of the snapshot's host")
    top.add_argument("-n", type=_whole(1, 100000), default=10, metavar="N", help="rows (default 10)")
    top.add_argument("--prefix4", type=_param("talkers", "prefix4"), default=24, metavar="N",
                     help="IPv4 network prefix length of the roll-up (8..32, default 24)")
    top.add_argument("--prefix6", type=_param("talkers", "prefix6"), default=64, metavar="N",
                     help="IPv6 network prefix length of the roll-up (16..128, default 64)")
    top.add_argument("--max", type=_whole(1, 1 << 31), metavar="N",
                     help="nf_conntrack_max to compute shares against (default: this host's)")


def _tune_parser(sub: "Any") -> None:
    tune = sub.add_parser("tune", allow_abbrev=False,
                          help="raise nf_conntrack_max and the hash size, and make it survive reboot")
    _proc_root(tune)
    size = tune.add_mutually_exclusive_group()
    size.add_argument("--max", type=_whole(1, 1 << 30), metavar="N", help="the new nf_conntrack_max")
    size.add_argument("--auto", action="store_true",
                      help="propose a value from RAM and the peak usage (and an ESTABLISHED timeout when "
                           "idle entries hold much of the table)")
    tune.add_argument("--tcp-established-timeout", type=_whole(1, 1 << 31), metavar="SECONDS",
                      help="the new nf_conntrack_tcp_timeout_established (kernel default 432000, 5 days); "
                           "see the runbook for the trade-off")
    tune.add_argument("--peak", type=_whole(0, 1 << 30), metavar="N",
                      help="peak entries seen (e.g. from Zabbix history); default: the current count")
    tune.add_argument("--apply", action="store_true", help="write the files and set the runtime values")
    tune.add_argument("--runtime-only", action="store_true", help="change the running kernel only, no files")
    tune.add_argument("--root", default="/", metavar="DIR", help="write etc/... below DIR (tests)")


def _clean_parser(sub: "Any") -> None:
    c = sub.add_parser("clean", allow_abbrev=False,
                       help="remove one network's idle ESTABLISHED entries (what a leak left behind)")
    c.add_argument("--network", required=True, metavar="CIDR",
                   help="the network or address whose entries go (e.g. 198.51.100.0/24)")
    c.add_argument("--idle-min", type=_param("talkers", "idle_min", IDLE_FLOOR), default=3600, metavar="SECONDS",
                   help="only entries silent for longer than this (default 3600)")
    c.add_argument("--netns", metavar="NAME|INODE", help="in this network namespace's table")
    c.add_argument("--apply", action="store_true", help="delete them (default: a dry run listing them)")


def _template_parser(sub: "Any") -> None:
    tpl = sub.add_parser("template", allow_abbrev=False,
                         help="admin: import the Zabbix template (needs pyzabbix)")
    tsub = tpl.add_subparsers(dest="action", metavar="ACTION")
    tsub.required = True
    imp = tsub.add_parser("import", allow_abbrev=False,
                          help="import (create/update) the template into a Zabbix server")
    imp.add_argument("--url", help="frontend URL (default: $ZABBIX_URL); credentials come from "
                                   "$ZABBIX_TOKEN or $ZABBIX_USER/$ZABBIX_PASSWORD")
    imp.add_argument("--file", metavar="PATH", help="import this YAML instead of the built-in one")
    imp.add_argument("--runbook-url", metavar="URL",
                     help="where you publish docs/runbook.md (http or https): every trigger then links to "
                          "its section; without it the triggers carry no link, their descriptions the steps")
    imp.add_argument("--delete-missing", action="store_true",
                     help="also delete items, triggers... that the template no longer has")
    where = imp.add_mutually_exclusive_group()
    where.add_argument("--host", metavar="NAME", help="link the template to this host")
    where.add_argument("--group", metavar="NAME", help="link the template to every host of this group")
    imp.add_argument("--template", default="Linux conntrack by Zabbix agent",
                     help="which template --host/--group get (default: %(default)s)")
