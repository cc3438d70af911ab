"""conntrack-zbx: the whole product from the command line: parsing, dispatch, one failure contract.

Commands and the modules that do their work:

=============  =====================================================  =========================
command        what                                                   module
=============  =====================================================  =========================
``stats``      counters, usage, drops, boot drift (agent, JSON)       ``documents``
``talkers``    top sources and networks by entries held (agent, JSON) ``documents``, ``privilege``
``discovery``  the talkers' LLD rows (agent, JSON)                    ``documents``
``top``        the on-call terminal view                              ``top``
``tune``       raise the limit or shorten the ESTABLISHED timeout,    ``tune``
               and make it survive a reboot
``clean``      remove one network's idle entries (a leak)             ``clean``
``template``   import the Zabbix template (admin, pyzabbix)           ``deploy``
=============  =====================================================  =========================

The agent commands' options are defined once in ``options.py``; ``fast_args`` (no argparse: it
costs more to import than ``stats`` costs to run) and ``build_parser`` are both derived from it.

Failure contract (docs/failure-contract.md, exit codes in ``errors.py``): an agent command prints
``{"error": "<what is wrong and how to fix it>"}`` on stdout (both Zabbix agents ignore exit
codes and merge stderr into the value; the template's "Check for error in JSON" step makes the
item *not supported* with that text); the other commands print ``conntrack-zbx: <message>`` on
stderr. Both exit with the error's code. Nothing that could not be read is printed as 0.

Imports are kept lazy: ``stats`` runs every minute on every host and must start fast.
"""

import sys

from conntrack_zbx import __version__
from conntrack_zbx.errors import INTERNAL_ERROR, ConntrackError, DeployFailed, NotAvailable
from conntrack_zbx.options import AGENT_COMMANDS, CHOICE, FLAG, PARAM, SECONDS, defaults, for_command

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs every agent call ~3 ms
    import argparse
    from typing import Any, Optional, Sequence

COMMANDS = AGENT_COMMANDS + ("top", "tune", "clean", "template")


def main(argv: "Optional[Sequence[str]]" = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = fast_args(argv) or build_parser(argv[0] if argv and argv[0] in COMMANDS else None).parse_args(argv)
    agent = args.command in AGENT_COMMANDS
    try:
        return _dispatch(args)
    except ConntrackError as e:
        _fail(agent, str(e))
        return e.exit_code
    except Exception as e:  # the agent must get JSON whatever happens
        if not agent:
            raise
        _fail(agent, "internal error in conntrack-zbx %s: %s: %s (please report it)"
                     % (args.command, type(e).__name__, e))
        return INTERNAL_ERROR


def _dispatch(args: "Any") -> int:
    if args.command in AGENT_COMMANDS:
        from conntrack_zbx import documents

        if getattr(args, "sudo", False):
            from conntrack_zbx.privilege import run_via_sudo

            return run_via_sudo(args)
        _emit(getattr(documents, args.command)(args))
    elif args.command == "top":
        from conntrack_zbx.top import top

        sys.stdout.write(top(args))
    elif args.command == "tune":
        from conntrack_zbx import tune

        sys.stdout.write(tune.run(args))
    elif args.command == "clean":
        from conntrack_zbx import clean

        sys.stdout.write(clean.run(args))
    else:
        _emit_pretty(_template(args))
    return 0


def _emit(doc: "Any") -> None:
    from conntrack_zbx.jsonout import dumps

    sys.stdout.write((doc if isinstance(doc, str) else dumps(doc)) + "\n")


def _emit_pretty(doc: "Any") -> None:
    import json

    sys.stdout.write(json.dumps(doc, indent=1) + "\n")


def _fail(agent: bool, message: str) -> None:
    if agent:
        _emit({"error": message})
    else:
        sys.stderr.write("conntrack-zbx: %s\n" % message)


def _template(args: "Any") -> "Any":
    if sys.version_info < (3, 8):
        raise NotAvailable("the admin commands (template import) need Python 3.8 or newer, this is %d.%d; "
                           "the agent commands run on 3.6+" % sys.version_info[:2])
    try:
        from conntrack_zbx import deploy
    except ImportError as e:
        raise NotAvailable("the admin commands need pyzabbix and pyyaml (pip install conntrack-zbx): %s" % e) from None
    try:
        return deploy.run(args)
    except DeployFailed as e:
        raise DeployFailed("template import failed: %s" % e) from None
    except OSError as e:
        raise ConntrackError(str(e)) from None


# -- parsing ------------------------------------------------------------------------------------
def fast_args(argv: "Sequence[str]") -> "Any":
    """The agent's own command lines (``stats``, ``talkers``/``discovery`` with ``--opt=value``
    or ``--opt value`` options and flags) parsed without argparse: importing and building it
    costs more than the ``stats`` work, on every host, every minute. Anything else (help, an
    abbreviation, an unknown or malformed option) returns None and goes through argparse, which
    explains itself. Tests hold both equal."""
    if not argv or argv[0] not in AGENT_COMMANDS:
        return None
    spelled = {o.flag: o for o in for_command(argv[0])}
    values = defaults(argv[0])
    i = 1
    while i < len(argv):
        flag, eq, value = argv[i].partition("=")
        o = spelled.get(flag)
        if o is None or (o.kind == FLAG and eq):
            return None
        if o.kind == FLAG:
            values[o.name] = True
            i += 1
            continue
        if not eq:
            if i + 1 >= len(argv):
                return None
            value = argv[i + 1]
            i += 1
        if o.kind == CHOICE and value not in o.choices:
            return None
        if o.kind == SECONDS:
            try:
                values[o.name] = float(value)
            except ValueError:
                return None
        else:
            values[o.name] = value
        i += 1
    from types import SimpleNamespace

    return SimpleNamespace(command=argv[0], **values)


def _positive(limit: int) -> "Any":
    import argparse

    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError("%r is not a whole number" % text) from None
        if not 0 <= value <= limit:
            raise argparse.ArgumentTypeError("%d is outside 0..%d" % (value, limit))
        return value
    return check


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
            sp.add_argument(o.flag, type=float, default=o.default, metavar=o.metavar, help=o.help)
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
        prog="conntrack-zbx",
        description="Linux conntrack table monitoring for Zabbix: usage, drops, top talkers.",
    )
    p.add_argument("--version", action="version", version="%(prog)s " + __version__)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in AGENT_COMMANDS:
        if only is None or only == command:
            add_agent_options(sub.add_parser(command, help=AGENT_HELP[command]), command)
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

    top = sub.add_parser("top", help="on-call view: who fills the table (terminal table)")
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
    top.add_argument("--idle-min", type=_positive(31536000), default=3600, metavar="SECONDS",
                     help="silence that makes an ESTABLISHED entry idle (default 3600)")
    top.add_argument("--timeout-established", metavar="SECONDS",
                     help="--file only: nf_conntrack_tcp_timeout_established of the snapshot's host")
    top.add_argument("-n", type=_positive(100000), default=10, metavar="N", help="rows (default 10)")
    top.add_argument("--prefix4", type=_positive(32), default=24, metavar="N")
    top.add_argument("--prefix6", type=_positive(128), default=64, metavar="N")
    top.add_argument("--max", type=_positive(1 << 31), metavar="N",
                     help="nf_conntrack_max to compute shares against (default: this host's)")


def _tune_parser(sub: "Any") -> None:
    tune = sub.add_parser("tune", help="raise nf_conntrack_max and the hash size, and make it survive reboot")
    _proc_root(tune)
    size = tune.add_mutually_exclusive_group()
    size.add_argument("--max", type=_positive(1 << 30), metavar="N", help="the new nf_conntrack_max")
    size.add_argument("--auto", action="store_true",
                      help="propose a value from RAM and the peak usage (and an ESTABLISHED timeout when "
                           "idle entries hold much of the table)")
    tune.add_argument("--tcp-established-timeout", type=_positive(1 << 31), metavar="SECONDS",
                      help="the new nf_conntrack_tcp_timeout_established (kernel default 432000, 5 days); "
                           "see the runbook for the trade-off")
    tune.add_argument("--peak", type=_positive(1 << 30), metavar="N",
                      help="peak entries seen (e.g. from Zabbix history); default: the current count")
    tune.add_argument("--apply", action="store_true", help="write the files and set the runtime values")
    tune.add_argument("--runtime-only", action="store_true", help="change the running kernel only, no files")
    tune.add_argument("--root", default="/", metavar="DIR", help="write etc/... below DIR (tests)")


def _clean_parser(sub: "Any") -> None:
    c = sub.add_parser("clean", help="remove one network's idle ESTABLISHED entries (what a leak left behind)")
    _proc_root(c)
    c.add_argument("--network", required=True, metavar="CIDR",
                   help="the network or address whose entries go (e.g. 198.51.100.0/24)")
    c.add_argument("--idle-min", type=_positive(31536000), default=3600, metavar="SECONDS",
                   help="only entries silent for longer than this (default 3600)")
    c.add_argument("--netns", metavar="NAME|INODE", help="in this network namespace's table")
    c.add_argument("--apply", action="store_true", help="delete them (default: a dry run listing them)")


def _template_parser(sub: "Any") -> None:
    tpl = sub.add_parser("template", help="admin: import the Zabbix template (needs pyzabbix)")
    tsub = tpl.add_subparsers(dest="action", metavar="ACTION")
    tsub.required = True
    imp = tsub.add_parser("import", help="import (create/update) the template into a Zabbix server")
    imp.add_argument("--url", help="frontend URL (default: $ZABBIX_URL); credentials come from "
                                   "$ZABBIX_TOKEN or $ZABBIX_USER/$ZABBIX_PASSWORD")
    imp.add_argument("--file", metavar="PATH", help="import this YAML instead of the built-in one")
    imp.add_argument("--delete-missing", action="store_true",
                     help="also delete items, triggers... that the template no longer has")
    where = imp.add_mutually_exclusive_group()
    where.add_argument("--host", metavar="NAME", help="link the template to this host")
    where.add_argument("--group", metavar="NAME", help="link the template to every host of this group")
    imp.add_argument("--template", default="Linux conntrack by Zabbix agent",
                     help="which template --host/--group get (default: %(default)s)")
