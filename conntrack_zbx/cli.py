"""conntrack-zbx: the whole product from the command line: parsing, dispatch, one failure contract.

The commands, their options, help and the modules that answer them are declared once in
``commands.py`` (options in ``options.py``); this module finds the command, parses its line into
the command's typed arguments and runs the module's ``run``. ``fast_args`` (no argparse: it costs
more to import than ``stats`` costs to run) and ``parser.build_parser`` are both derived from them.

Failure contract (docs/failure-contract.md, exit codes in ``errors.py``): an agent command prints
``{"error": "<what is wrong and how to fix it>"}`` on stdout (both Zabbix agents ignore exit
codes and merge stderr into the value; the template's "Check for error in JSON" step makes the
item *not supported* with that text); the other commands print ``conntrack-zbx: <message>`` on
stderr. Both exit with the error's code. Nothing that could not be read is printed as 0.

Imports are kept lazy: ``stats`` runs every minute on every host and must start fast.
"""

import os
import sys

from conntrack_zbx.errors import (INTERNAL_ERROR, INTERRUPTED, OUTPUT_ERROR, ConntrackError, DeployFailed,
                                  NotAvailable, NotPermitted, OutputFailed, Refused)
from conntrack_zbx.commands import AGENT_COMMANDS, get
from conntrack_zbx.options import CHOICE, FLAG, SECONDS

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs every agent call ~3 ms
    from typing import Any, Dict, Optional, Sequence

    from conntrack_zbx.commands import Command
    from conntrack_zbx.options import Args


def main(argv: "Optional[Sequence[str]]" = None) -> int:
    """Run one command; every outcome is a line of the failure contract, never a traceback
    (``CONNTRACK_ZBX_DEBUG=1`` adds one to an internal error, for a bug report)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = fast_args(argv)
    if args is None:
        from conntrack_zbx.parser import parse

        args = parse(argv)
    agent = args.command in AGENT_COMMANDS and not getattr(args, "human", False)
    try:
        rc = _dispatch(args)
        _out("")  # flush: a full disk or a closed pipe shows here, not at interpreter exit
        return rc
    except ConntrackError as e:
        _fail(agent, _for_a_person(args, e, argv) if not agent else str(e))
        return e.exit_code
    except KeyboardInterrupt:
        _fail(agent, "interrupted%s" % (" (run it again without --apply to see what is in place)"
                                         if getattr(args, "apply", False) else ""))
        return INTERRUPTED
    except BrokenPipeError:  # `conntrack-zbx top | head`: the reader has what it wanted
        _quiet_stdout()
        return 0
    except OutputFailed as e:
        _quiet_stdout()
        _fail(False, "cannot write the output: %s" % e)
        return OUTPUT_ERROR
    except Exception as e:  # a bug: the agent still gets JSON, a person a message, never a traceback
        if isinstance(e, OSError) and e.filename:  # a file this command used, not reported more precisely
            _fail(agent, "%s: %s" % (e.filename, e.strerror or e))
            return 1
        if os.environ.get("CONNTRACK_ZBX_DEBUG") == "1":
            import traceback

            traceback.print_exc()
        _fail(agent, "internal error in conntrack-zbx %s: %s: %s (please report it, with the command line; "
                     "CONNTRACK_ZBX_DEBUG=1 shows where)" % (args.command, type(e).__name__, e))
        return INTERNAL_ERROR


def _out(text: str) -> None:
    try:
        if text:
            sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as e:
        raise OutputFailed(e.strerror or str(e)) from None


def _for_a_person(args: "Args", e: "ConntrackError", argv: "Sequence[str]") -> str:
    """A permission error met by a person at a terminal: the agent's remedy (the sudo grant, the
    keys' --sudo form) is not theirs; running the same command as root is."""
    message = str(e)
    if not isinstance(e, NotPermitted) or isinstance(e, Refused) or os.geteuid() == 0:
        return message
    cut = message.find(" as uid ")
    reason = message[:message.find(":", cut)] if cut >= 0 and message.find(":", cut) > 0 else message
    return "%s: run it as root: sudo conntrack-zbx %s" % (reason, " ".join(argv))


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's own flush at exit cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _dispatch(args: "Args") -> int:
    command = get(args.command)
    # A privileged key's --sudo line always goes through sudo: which keys those are is the
    # registry's fact, so a new one cannot answer in-process with the agent user's rights.
    if command.key is not None and command.key.privileged and getattr(args, "sudo", False):
        from conntrack_zbx.privilege import run_via_sudo

        return run_via_sudo(args, main)
    if command.admin:
        answer = _admin(command, args)
    else:
        module, _, function = command.module.partition(":")
        answer = getattr(__import__(module, fromlist=("run",)), function or "run")(args)
    if command.output == "json":
        from conntrack_zbx.jsonout import dumps

        if getattr(args, "human", False):  # a person's view, lines already ended
            _out(answer)
        else:  # a document, or one already written as JSON (a cached answer)
            _out((answer if isinstance(answer, str) else dumps(answer)) + "\n")
    elif command.output == "pretty":
        import json

        _out(json.dumps(answer, indent=1) + "\n")
    else:
        _out(answer)
    return 0


def _fail(agent: bool, message: str) -> None:
    if agent:
        from conntrack_zbx.jsonout import dumps

        _out(dumps({"error": message}) + "\n")
    else:
        sys.stderr.write("conntrack-zbx: %s\n" % message)


def _admin(command: "Command", args: "Args") -> "Any":
    """An admin command (pyzabbix, Python 3.8+): what it needs is said, not a traceback."""
    if sys.version_info < (3, 8):
        raise NotAvailable("the admin commands (template import) need Python 3.8 or newer, this is %d.%d; "
                           "the agent commands run on 3.6+" % sys.version_info[:2])
    try:
        module = __import__(command.module, fromlist=("run",))
    except ImportError as e:
        from conntrack_zbx.zabbixapi import NEEDS

        raise NotAvailable("%s (%s)" % (NEEDS, e)) from None
    try:
        return module.run(args)
    except DeployFailed as e:
        raise DeployFailed("%s failed: %s" % ("template import" if command.name == "template" else command.name, e)) \
            from None
    except OSError as e:
        raise ConntrackError(str(e)) from None


# -- parsing ------------------------------------------------------------------------------------
def fast_args(argv: "Sequence[str]") -> "Optional[Args]":
    """The agent's own command lines (``stats``, ``talkers``/``discovery`` with ``--opt=value``
    or ``--opt value`` options and flags) parsed without argparse: importing and building it
    costs more than the ``stats`` work, on every host, every minute. Anything else (help, an
    abbreviation, an unknown or malformed option) returns None and goes through argparse, which
    explains itself. Tests hold both equal."""
    if not argv or argv[0] not in AGENT_COMMANDS:
        return None
    cls = get(argv[0]).args
    spelled = {o.flag: o for o in cls.options()}
    values: "Dict[str, Any]" = cls.defaults()
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
            if not o.lo <= values[o.name] <= o.hi:  # nan too: argparse says why
                return None
        else:
            values[o.name] = value
        i += 1
    return cls(command=argv[0], **values)
