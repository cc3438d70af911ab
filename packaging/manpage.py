"""conntrack-zbx(1), generated from the command line parser (conntrack_zbx.parser): every command,
its options and examples as ``--help`` shows them, so the page cannot drift from the program.

    python3 packaging/manpage.py VERSION > conntrack-zbx.1
"""

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def roff(text: str) -> str:
    """Plain text as roff: backslashes and hyphens escaped, no line starting with a control character."""
    out = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + ln) if ln.startswith((".", "'")) else ln for ln in out.splitlines())


def _options(sp: argparse.ArgumentParser) -> list:
    lines = []
    for a in sp._actions:  # argparse keeps no public list of a parser's options
        if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) or not a.option_strings:
            continue
        spelled = ", ".join(a.option_strings)
        if a.nargs != 0:
            spelled += " " + (a.metavar or a.dest.upper())
        lines += [".TP", "\\fB%s\\fR" % roff(spelled), roff(a.help or "")]
    return lines


def manpage(version: str) -> str:
    sys.path.insert(0, REPO)
    from conntrack_zbx.commands import COMMANDS
    from conntrack_zbx.parser import build_parser

    top = build_parser()
    subs = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction)).choices
    lines = [
        '.TH CONNTRACK\\-ZBX 1 "" "conntrack-zbx %s" "User Commands"' % roff(version),
        ".SH NAME", "conntrack\\-zbx \\- %s" % roff(top.description or ""),
        ".SH SYNOPSIS", "\\fBconntrack\\-zbx\\fR \\fICOMMAND\\fR [\\fIOPTIONS\\fR]",
        ".SH DESCRIPTION",
        roff("The agent keys (stats, talkers, namespaces) print one JSON document for the Zabbix agent's "
             "UserParameters; the other commands are for people at a terminal and for Zabbix admins. "
             "Errors are one line: {\"error\": ...} on stdout for an agent key, 'conntrack-zbx: ...' on "
             "stderr otherwise, with a non-zero exit code."),
        ".SH COMMANDS",
    ]
    for c in COMMANDS:
        sp = subs[c.name]
        lines += [".SS %s" % roff(c.name), roff(c.help) + "." + ("" if c.key is None else " Zabbix key: \\fB%s\\fR."
                                                                 % roff(c.key.name))]
        lines += _options(sp)
        if c.examples:
            lines += [".PP", "Examples:", ".RS", ".nf"] + [roff(e) for e in c.examples] + [".fi", ".RE"]
    lines += [
        ".SH FILES",
        ".TP", "\\fB/etc/zabbix/zabbix_agentd.d/userparameter_conntrack.conf\\fR, "
               "\\fB/etc/zabbix/zabbix_agent2.d/userparameter_conntrack.conf\\fR",
        roff("The agents' UserParameters (linked where each agent's Include reads them: agent-conf)."),
        ".TP", "\\fB/etc/sudoers.d/conntrack\\-zbx\\fR", roff("The one sudo line of the root-only keys."),
        ".TP", "\\fB/usr/share/conntrack\\-zbx/templates/\\fR", roff("The Zabbix templates (formats 6.0 and 7.0)."),
        ".TP", "\\fB/usr/share/doc/conntrack\\-zbx/\\fR", roff("The documentation: install.md, runbook.md."),
        ".SH SEE ALSO", "\\fBzabbix_agentd\\fR(8), \\fBzabbix_agent2\\fR(8), \\fBconntrack\\fR(8)",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(manpage(sys.argv[1]))
