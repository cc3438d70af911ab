"""`conntrack-zbx agent-conf`: make every Zabbix agent on this host read our UserParameter file.

The package ships the file once per agent (``/etc/zabbix/zabbix_agentd.d/`` and
``/etc/zabbix/zabbix_agent2.d/``, where Zabbix's own packages include), but Debian's and Ubuntu's
``zabbix-agent`` include ``/etc/zabbix/zabbix_agentd.conf.d/`` and EPEL's ``/etc/zabbix_agentd.conf.d/``
(``agentconf`` lists the layouts). Rather than a copy per layout (an agent that includes two of
them refuses to start on a key defined twice), this reads each agent configuration's ``Include``
lines and, where none reads the shipped file, links it into the first included directory. The
agent's configuration itself is never edited: where no ``Include`` names a directory, the answer
is the one line to add and where. The package's install runs ``--apply``, its removal
``--remove``; a person runs it bare to see where each agent reads from.
"""

import os
import shutil
from typing import TYPE_CHECKING, List, NamedTuple, Optional, Tuple

from conntrack_zbx import agentconf
from conntrack_zbx.errors import NotAvailable, NotPermitted

if TYPE_CHECKING:
    from conntrack_zbx.options import AgentConfArgs

NAME = "userparameter_conntrack.conf"
SHIPPED = {"agentd": "/etc/zabbix/zabbix_agentd.d/" + NAME, "agent2": "/etc/zabbix/zabbix_agent2.d/" + NAME}
HEADER = "# conntrack_zbx:"  # the first line of every conf keys.agent_conf writes
PACKAGE_LIB = "/usr/lib/conntrack-zbx"  # where the deb and the rpm put the code
RESTART = {"agentd": "zabbix-agent", "agent2": "zabbix-agent2"}


class Include(NamedTuple):
    pattern: str  # absolute, in the host's terms
    is_dir: bool


class Finding(NamedTuple):
    """One agent configuration and what it takes to make it read ``source``."""

    conf: str  # host path of the agent configuration
    kind: str  # agentd | agent2
    source: str  # the UserParameter file it should read
    includes: Tuple[Include, ...]
    reading: Tuple[str, ...]  # our files it reads today
    link: Optional[str]  # where to put ``source`` (None: nothing to put)
    extra: Tuple[str, ...]  # our links it reads besides ``source``: a key defined twice
    line: Optional[str]  # no included directory: the Include line to add to ``conf``


def plan_one(conf: str, includes: Tuple[Include, ...], source: str, present: "List[str]") -> Finding:
    """Pure: ``present`` lists the files of ours that exist (``candidates`` names where to look)."""
    kind = agentconf.kind(conf)
    reading = tuple(f for f in present if any(agentconf.reads(i.pattern, f, i.is_dir) for i in includes))
    link = line = None
    extra = ()  # type: Tuple[str, ...]
    if reading:  # one of ours is read; more than one defines every key twice
        keep = source if source in reading else reading[0]
        extra = tuple(f for f in reading if f != keep and f not in SHIPPED.values())
    else:
        usable = [i for i in includes if i.is_dir or agentconf.reads(i.pattern, os.path.join(
            os.path.dirname(i.pattern), NAME))]
        if usable:
            inc = usable[0]
            link = os.path.join(inc.pattern.rstrip("/") if inc.is_dir else os.path.dirname(inc.pattern), NAME)
        else:
            line = "Include=%s" % source
    return Finding(conf, kind, source, includes, reading, link, extra, line)


def candidates(includes: Tuple[Include, ...]) -> List[str]:
    """Every path where a file of ours could be read from: the shipped files and NAME in each
    included directory."""
    out = list(SHIPPED.values())
    for inc in includes:
        d = inc.pattern.rstrip("/") if inc.is_dir else os.path.dirname(inc.pattern)
        if os.path.join(d, NAME) not in out:
            out.append(os.path.join(d, NAME))
    return out


def find(root: str, source: Optional[str] = None) -> List[Finding]:
    """Every stock agent configuration under ``root`` and its finding (I/O: reads the confs)."""
    found = []
    for rel in agentconf.CONFS:
        path = os.path.join(root, rel)
        if not os.path.isfile(path):
            continue
        conf = "/" + rel
        try:
            with open(path) as f:
                values = agentconf.parse(f.read()).get("Include", [])
        except OSError as e:
            raise NotAvailable("cannot read %s: %s" % (path, e.strerror or e)) from None
        includes = []
        for v in values:
            pattern = agentconf.include_pattern(conf, v)
            includes.append(Include(pattern, os.path.isdir(_under(root, pattern))))
        incs = tuple(includes)
        present = [f for f in candidates(incs) if _exists(root, f)]
        found.append(plan_one(conf, incs, source or SHIPPED[agentconf.kind(conf)], present))
    return found


def _under(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def run(args: "AgentConfArgs") -> str:
    if (args.apply or args.remove) and os.geteuid() != 0 and args.root == "/":
        raise NotPermitted("agent-conf --apply/--remove writes in /etc/zabbix (the bare command only reads)")
    source = os.path.abspath(args.source) if args.source else None  # a file of this machine, not under --root
    if source is not None and not os.path.isfile(source):
        raise NotAvailable("--source %s: no such file (the UserParameter conf to install, e.g. the checkout's "
                           "zabbix_agentd.d/%s)" % (args.source, NAME))
    found = find(args.root, source)
    if not found:
        return ("no Zabbix agent configuration found under %s (looked for %s).\n"
                "Install zabbix-agent or zabbix-agent2, then run: sudo conntrack-zbx agent-conf --apply\n"
                "(or add to your agent's configuration: Include=%s)\n"
                % (args.root, ", ".join("/" + c for c in agentconf.CONFS), SHIPPED["agentd"]))
    if args.remove:
        return _remove(args.root, found)
    lines = []  # type: List[str]
    restart = []  # type: List[str]
    for f in found:
        lines += _settle(args, f, restart)
    if restart:
        lines.append("restart the agent%s to load the keys: %s" % (
            "s" if len(set(restart)) > 1 else "", "; ".join(
                "service %s restart" % RESTART[k] for k in sorted(set(restart)))))
    elif not args.apply and any(f.link or f.extra for f in found):
        lines.append("(dry run: --apply makes the links)")
    return "\n".join(lines) + "\n"


def _settle(args: "AgentConfArgs", f: Finding, restart: List[str]) -> List[str]:
    """One agent: what it includes and what was (or would be) done; the kinds to restart."""
    lines = ["%s (zabbix_%s) includes %s" % (f.conf, f.kind, ", ".join(
        i.pattern + ("/" if i.is_dir else "") for i in f.includes) or "nothing")]
    if not args.source and not _exists(args.root, f.source):
        return lines + ["  %s is not there: reinstall the package, or name the file with --source" % f.source]
    if f.link is None and f.line is None and not f.extra:
        return lines + ["  reads %s: nothing to do" % ", ".join(f.reading)]
    if f.link:
        if args.apply:
            _place(args.root, f.source, f.link, copy=bool(args.source))  # --source: copied from this machine
            restart.append(f.kind)
        lines.append("  %s %s -> %s" % ("linked" if args.apply else "would link", f.link, f.source))
    for x in f.extra:
        if args.apply:
            os.remove(_under(args.root, x))
            restart.append(f.kind)
        lines.append("  %s %s (the agent would read the keys twice and refuse to start)"
                     % ("removed" if args.apply else "would remove", x))
    if f.line:
        lines.append("  no Include names a directory: add this line to %s, then restart the agent:\n    %s"
                     % (f.conf, f.line))
    return lines


def _exists(root: str, path: str) -> bool:
    """A file at ``path`` as the host sees it under ``root`` (a link's absolute target too)."""
    full = _under(root, path)
    if os.path.islink(full) and os.readlink(full).startswith("/"):
        return os.path.isfile(_under(root, os.readlink(full)))
    return os.path.isfile(full)


def _place(root: str, source: str, link: str, copy: bool) -> None:
    dest = _under(root, link)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    if os.path.lexists(dest):
        os.remove(dest)
    if copy:  # a file of a checkout or a pip install: it may move, so the agent gets its own copy
        shutil.copyfile(source, dest)
        os.chmod(dest, 0o644)
    else:  # the package's file: upgrades change it in place, the link follows
        os.symlink(source, dest)


def _ours(root: str, path: str) -> bool:
    """A link to a shipped file, or a copy this command made (it starts with our header); the
    shipped paths themselves belong to the package while it is installed."""
    full = _under(root, path)
    if not os.path.lexists(full) or (path in SHIPPED.values() and os.path.isdir(_under(root, PACKAGE_LIB))):
        return False
    if os.path.islink(full):
        return os.readlink(full) in SHIPPED.values()
    try:
        with open(full) as f:
            return f.readline().startswith(HEADER)
    except OSError:
        return False


def _remove(root: str, found: List[Finding]) -> str:
    gone = []
    for f in found:
        for path in candidates(f.includes):
            if path not in gone and _ours(root, path):
                os.remove(_under(root, path))
                gone.append(path)
    return "".join("removed %s\n" % p for p in gone) or "nothing of conntrack-zbx in the agents' include directories\n"
