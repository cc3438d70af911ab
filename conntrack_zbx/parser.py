"""The command line as argparse sees it: every command's options, help and examples.

The agent's own command lines skip this (``cli.fast_args``: importing and building argparse costs
more than ``stats`` costs to run); a person's, ``--help`` and anything ``fast_args`` does not take
come here. Subcommands come from ``commands.COMMANDS`` and their options from each command's
``Args`` class (``options.py``); the human commands share their ranges with the key parameters of
the same name, so ``top --prefix4`` takes what ``conntrack.talkers[...]`` takes. No parser accepts
abbreviations: ``--n`` must not be read as ``--netns``.
"""

from conntrack_zbx import __version__
from conntrack_zbx.commands import COMMANDS, NAMES, get
from conntrack_zbx.options import CHOICE, FLAG, PARAM, SECONDS, WHOLE

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any, Callable, Dict, Optional, Sequence, Type

    from conntrack_zbx.options import Args, Option


def _whole(o: "Option") -> "Callable[[str], int]":
    """An argparse type: a whole number in the option's lo..hi (``why`` says where a floor comes from)."""
    import argparse

    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError("%r is not a whole number" % text[:32]) from None
        if not o.lo <= value <= o.hi:
            raise argparse.ArgumentTypeError("%d is outside %d..%d%s" % (value, o.lo, o.hi, o.why))
        return value
    return check


def _seconds(o: "Option") -> "Callable[[str], float]":
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


def add_options(sp: "argparse.ArgumentParser", cls: "Type[Args]") -> None:
    """argparse's view of one command's ``Args`` class."""
    groups: "Dict[str, Any]" = {}
    for o in cls.options():
        target: "Any" = sp
        if o.group:
            target = groups.get(o.group) or groups.setdefault(o.group, sp.add_mutually_exclusive_group())
        if o.kind == FLAG:
            target.add_argument(o.flag, action="store_true", help=o.help)
        elif o.kind == PARAM:  # strings: validated by the allow-list, errors as JSON
            target.add_argument(o.flag, dest=o.name, default="", metavar="N",
                                help="%s, %d..%d (default %d)" % (o.help, o.lo, o.hi, o.default))
        elif o.kind == CHOICE:
            target.add_argument(o.flag, choices=o.choices, default=o.default, help=o.help)
        elif o.kind in (SECONDS, WHOLE):
            target.add_argument(o.flag, dest=o.name, type=(_seconds if o.kind == SECONDS else _whole)(o),
                                default=o.default, metavar=o.metavar, help=o.help)
        else:
            target.add_argument(o.flag, dest=o.name, default=o.default, metavar=o.metavar, help=o.help,
                                required=o.required)


def build_parser(only: "Optional[str]" = None) -> "argparse.ArgumentParser":
    """The whole CLI, or (``only``) just one subcommand."""
    import argparse

    p = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="conntrack-zbx",
        description="Linux conntrack table monitoring for Zabbix: usage, drops, top talkers.",
        epilog="'conntrack-zbx COMMAND --help' shows a command's options and examples.",
    )
    p.add_argument("-V", "--version", action="version", version="%(prog)s " + __version__)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for c in COMMANDS:
        if only is not None and only != c.name:
            continue
        sp = sub.add_parser(c.name, allow_abbrev=False, help=c.help, description=c.help,
                            formatter_class=argparse.RawDescriptionHelpFormatter,
                            epilog="examples:\n" + "".join("  %s\n" % e for e in c.examples) if c.examples else None)
        if c.name == "template":  # one action today: `template import`
            actions = sp.add_subparsers(dest="action", metavar="ACTION")
            actions.required = True
            sp = actions.add_parser("import", allow_abbrev=False,
                                    help="import (create/update) the template into a Zabbix server")
        add_options(sp, c.args)
    return p


def parse(argv: "Sequence[str]") -> "Args":
    """A command line as the command's typed arguments; argparse's own exit (with its usage
    message) for help, a version request and anything it refuses."""
    argv = list(argv)
    parser = build_parser(argv[0] if argv and argv[0] in NAMES else None)
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help", "-V", "--version"):
        parser.error("unknown option %s: the command comes first (%s), its options after it "
                     "(conntrack-zbx COMMAND --help)" % (argv[0][:40], ", ".join(NAMES)))
    values = vars(parser.parse_args(argv))
    return get(values["command"]).args(**values)
