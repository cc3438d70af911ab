"""conntrack-zbx: the whole product from the command line.

Agent-facing commands (``stats``, ``talkers``, ``discovery``) print exactly one JSON document.
Failure contract (docs/failure-contract.md): both Zabbix agents ignore exit codes and merge
stderr into the value, so a failure is ``{"error": "<what is wrong and how to fix it>"}`` on
stdout (the template's "Check for error in JSON" step makes the item *not supported* with that
text) and a non-zero exit status for humans and scripts. Nothing that could not be read is ever
printed as 0 or as an empty list.

Imports are kept lazy: ``stats`` runs every minute on every host and must start fast.
"""

from __future__ import annotations

import os
import sys

from conntrack_zbx import __version__
from conntrack_zbx.errors import ConntrackError, NotPermitted

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs every agent call ~3 ms
    import argparse
    from typing import Any, Dict, List, Optional, Sequence

INTERNAL_ERROR = 70


# The agent commands' options as data: the full parser and the fast path below share them
# (talkers/discovery also take the key parameters of params.TALKERS_PARAMS, default "").
STATS_DEFAULTS = {"proc_root": "/", "etc_root": "/", "source": "auto"}
TABLE_DEFAULTS = {"proc_root": "/", "file": None, "source": "auto", "cache_dir": None, "budget": 2.5}
TABLE_FLAGS = ("sudo", "params_stdin")
SOURCES = ("auto", "netlink", "proc")


def fast_args(argv: Sequence[str]):
    """The agent's own command lines (``stats``, ``talkers``/``discovery`` with ``--opt=value``
    options and flags) parsed without argparse: importing and building it costs more than the
    ``stats`` work, on every host, every minute. Anything else (help, an abbreviation, an
    unknown or malformed option) returns None and goes through argparse, which explains itself."""
    from types import SimpleNamespace

    if not argv or argv[0] not in ("stats", "talkers", "discovery"):
        return None
    if argv[0] == "stats":
        values, flags = dict(STATS_DEFAULTS), {}
    else:
        from conntrack_zbx.params import TALKERS_PARAMS

        values = dict(TABLE_DEFAULTS, **dict.fromkeys((p.name for p in TALKERS_PARAMS), ""))
        flags = dict.fromkeys(TABLE_FLAGS, False)
    i = 1
    while i < len(argv):
        name, eq, value = argv[i][2:].partition("=") if argv[i].startswith("--") else ("", "", "")
        dest = name.replace("-", "_")
        if dest in flags and not eq:
            flags[dest] = True
            i += 1
            continue
        if dest not in values:
            return None
        if not eq:
            if i + 1 >= len(argv):
                return None
            value = argv[i + 1]
            i += 1
        values[dest] = value
        i += 1
    if values["source"] not in SOURCES:
        return None
    if "budget" in values and not isinstance(values["budget"], float):
        try:
            values["budget"] = float(values["budget"])
        except ValueError:
            return None
    return SimpleNamespace(command=argv[0], **values, **flags)


def _positive(limit: int):
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


COMMANDS = ("stats", "talkers", "discovery", "top", "tune", "template")


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The whole CLI, or (``only``) just one subcommand."""
    import argparse

    p = argparse.ArgumentParser(
        prog="conntrack-zbx",
        description="Linux conntrack table monitoring for Zabbix: usage, drops, top talkers.",
    )
    p.add_argument("--version", action="version", version="%(prog)s " + __version__)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--proc-root", default=TABLE_DEFAULTS["proc_root"], metavar="DIR",
                        help="read proc/ and sys/ below DIR instead of / (fixture trees)")

    def table_opts(sp: argparse.ArgumentParser) -> None:
        from conntrack_zbx.params import TALKERS_PARAMS

        common(sp)
        sp.add_argument("--file", metavar="PATH",
                        help="read a saved copy of /proc/net/nf_conntrack instead of the live table")
        sp.add_argument("--source", choices=SOURCES, default=TABLE_DEFAULTS["source"],
                        help="where the live table is read: ctnetlink (needs CAP_NET_ADMIN, fastest), "
                             "/proc/net/nf_conntrack, or auto = netlink, falling back to proc (default)")
        for prm in TALKERS_PARAMS:  # strings: validated by the allow-list, errors as JSON
            sp.add_argument("--" + prm.name.replace("_", "-"), dest=prm.name, default="", metavar="N",
                            help="%s, %d..%d (default %d)" % (prm.help, prm.lo, prm.hi, prm.default))
        sp.add_argument("--cache-dir", default=TABLE_DEFAULTS["cache_dir"], metavar="DIR",
                        help="snapshot cache directory (default /run/conntrack-zbx; must be owned by "
                             "this user, mode 0700)")
        sp.add_argument("--budget", type=float, default=TABLE_DEFAULTS["budget"], metavar="SECONDS",
                        help="stop reading after this long and report truncated (default 2.5: inside the "
                             "agent's default 3 s Timeout)")
        sp.add_argument("--sudo", action="store_true",
                        help="agent keys: validate the parameters, then run the fixed line "
                             "'sudo -n conntrack-zbx talkers --params-stdin' and hand them over on stdin")
        sp.add_argument("--params-stdin", action="store_true",
                        help="(the sudo line) read the parameters as name=value words from stdin")

    def wanted(name: str) -> bool:
        return only is None or only == name

    if wanted("stats"):
        st = sub.add_parser("stats", help="counters: count, max, usage, drops (JSON, no root needed)")
        common(st)
        st.add_argument("--etc-root", default=STATS_DEFAULTS["etc_root"], metavar="DIR",
                        help="read etc/sysctl.d, etc/modprobe.d, etc/modules-load.d below DIR (tests)")
        st.add_argument("--source", choices=SOURCES, default=STATS_DEFAULTS["source"],
                        help="kernel counters from /proc/net/stat (auto falls back to ctnetlink when "
                             "the kernel has no conntrack procfs) or from ctnetlink only")
    if wanted("talkers"):
        table_opts(sub.add_parser("talkers", help="top sources and networks by entries held (JSON)"))
    if wanted("discovery"):
        table_opts(sub.add_parser("discovery", help="Zabbix LLD array of the top talkers"))
    if only in ("stats", "talkers", "discovery"):
        return p

    top = sub.add_parser("top", help="on-call view: who fills the table (terminal table)")
    common(top)
    top.add_argument("--file", metavar="PATH",
                     help="read a saved copy of /proc/net/nf_conntrack instead of the live table")
    from conntrack_zbx.talkers import GROUP_BY

    top.add_argument("--by", choices=GROUP_BY, default="src")
    top.add_argument("-n", type=_positive(100000), default=10, metavar="N", help="rows (default 10)")
    top.add_argument("--prefix4", type=_positive(32), default=24, metavar="N")
    top.add_argument("--prefix6", type=_positive(128), default=64, metavar="N")
    top.add_argument("--max", type=_positive(1 << 31), metavar="N",
                     help="nf_conntrack_max to compute shares against (default: this host's)")
    tune = sub.add_parser("tune", help="raise nf_conntrack_max and the hash size, and make it survive reboot")
    common(tune)
    size = tune.add_mutually_exclusive_group(required=True)
    size.add_argument("--max", type=_positive(1 << 30), metavar="N", help="the new nf_conntrack_max")
    size.add_argument("--auto", action="store_true", help="propose a value from RAM and the peak usage")
    tune.add_argument("--peak", type=_positive(1 << 30), metavar="N",
                      help="peak entries seen (e.g. from Zabbix history); default: the current count")
    tune.add_argument("--apply", action="store_true", help="write the files and set the runtime values")
    tune.add_argument("--runtime-only", action="store_true", help="change the running kernel only, no files")
    tune.add_argument("--root", default="/", metavar="DIR", help="write etc/... below DIR (tests)")

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
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = fast_args(argv) or build_parser(argv[0] if argv and argv[0] in COMMANDS else None).parse_args(argv)
    if args.command == "template":
        return _template(args)
    if args.command in ("top", "tune"):
        try:
            if args.command == "tune":
                from conntrack_zbx import tune
                sys.stdout.write(tune.run(args))
            else:
                sys.stdout.write(_top(args))
        except ConntrackError as e:
            sys.stderr.write("conntrack-zbx: %s\n" % e)
            return e.exit_code
        return 0
    try:
        if getattr(args, "sudo", False):
            return _via_sudo(args)
        doc = {"stats": _stats, "talkers": _talkers, "discovery": _discovery}[args.command](args)
    except ConntrackError as e:
        _emit({"error": str(e)})
        return e.exit_code
    except Exception as e:  # the agent must get JSON whatever happens
        _emit({"error": "internal error in conntrack-zbx %s: %s: %s (please report it)"
                        % (args.command, type(e).__name__, e)})
        return INTERNAL_ERROR
    _emit(doc)
    return 0


def _emit(doc: Any) -> None:
    from conntrack_zbx.jsonout import dumps

    sys.stdout.write((doc if isinstance(doc, Raw) else dumps(doc)) + "\n")


# -- stats ----------------------------------------------------------------------------------
def _stats(args: argparse.Namespace) -> Dict[str, Any]:
    from conntrack_zbx.errors import NotAvailable
    from conntrack_zbx.sources.proc import ProcRoot

    root = ProcRoot(args.proc_root)
    count, maximum, buckets = root.count(), root.max(), root.buckets()
    doc = {
        "count": count,
        "max": maximum,
        "buckets": buckets,
        "hashsize": root.hashsize(),  # 0600 root: null for the agent user (== buckets)
        "usage_pct": round(100.0 * count / maximum, 2) if maximum else None,
        "free": maximum - count if maximum else None,
        "stat": None,
    }  # type: Dict[str, Any]
    problem = None
    if args.source != "netlink":
        try:
            doc["stat"] = root.stat().counters
            doc["stat_source"] = "proc"
        except NotAvailable as e:
            problem = str(e)
    # Kernels without CONFIG_NF_CONNTRACK_PROCFS: the same per-CPU counters through ctnetlink
    # (needs CAP_NET_ADMIN). Only for the live kernel, never mixed into a fixture tree.
    if doc["stat"] is None and (args.source == "netlink" or (args.source == "auto" and args.proc_root == "/")):
        from conntrack_zbx.sources import netlink

        try:
            doc["stat"] = netlink.stats_cpu()
            doc["stat_source"] = "netlink"
        except ConntrackError as e:
            problem = "%s%s" % (problem + "; " if problem else "", e)
    if doc["stat"] is None:
        # The counters above still hold; the per-counter items are discarded, and this says why.
        doc["stat_error"] = problem
    doc.update(_boot(root, maximum, buckets, args.etc_root))
    return doc


def _boot(root, maximum: int, buckets: int, etc_root: str) -> Dict[str, Any]:
    """What a reboot would set, and where it differs from what runs (the fix that does not stick)."""
    from conntrack_zbx import boot

    b = boot.read_boot(etc_root)
    release = root.osrelease()
    version = boot.kernel_version(release) if release else None
    problems = boot.drift(maximum, buckets, b, root.memtotal_kib(), version) if version else []
    return {
        "kernel": release,
        "recommended_buckets": boot.recommended_buckets(maximum, version) if version else None,
        "boot": {"max": b.max, "max_source": b.max_source, "hashsize": b.hashsize,
                 "hashsize_source": b.hashsize_source, "module_autoload": b.module_autoload},
        "drift": "; ".join(problems),
    }


# -- talkers / discovery --------------------------------------------------------------------
def _params(args: argparse.Namespace) -> Dict[str, int]:
    from conntrack_zbx import params

    try:
        if args.params_stdin:
            given = [o for o in ("file", "cache_dir") if getattr(args, o)]
            if given or any(getattr(args, p.name) for p in params.TALKERS_PARAMS):
                raise params.Refused("--params-stdin takes every parameter from stdin, no options")
            return params.from_wire(sys.stdin.buffer.read(4097))
        return params.check_all({p.name: getattr(args, p.name) for p in params.TALKERS_PARAMS})
    except params.Refused as e:
        raise NotPermitted(str(e)) from None


def _read_table(args: argparse.Namespace, deadline: float):
    """One pass over the live table (or --file) until ``deadline`` (time.monotonic())
    -> (Tally, source served, note on fallback)."""
    from conntrack_zbx.errors import NotAvailable
    from conntrack_zbx.sources.proc import ProcRoot, open_snapshot
    from conntrack_zbx.talkers import tally_sources

    if args.file:
        with open_snapshot(args.file) as f:
            return tally_sources(f, deadline), "file", None
    root = ProcRoot(args.proc_root)
    note = None
    # A fixture tree (--proc-root) is text: netlink would read the live kernel instead.
    if args.source == "netlink" or (args.source == "auto" and args.proc_root == "/"):
        try:
            return _read_netlink(deadline), "netlink", None
        except (NotPermitted, NotAvailable) as e:
            if args.source == "netlink":
                raise
            note = "netlink not used: %s" % e
    with root.open_table() as f:
        return tally_sources(f, deadline), "proc", note


def _read_netlink(deadline: float):
    from conntrack_zbx.sources import netlink
    from conntrack_zbx.talkers import Tally

    d = netlink.dump(deadline)
    return Tally(d.entries, d.skipped, d.counts, d.truncated)


def _render(t, source: str, note: Optional[str], maximum: Optional[int], p: Dict[str, int]) -> Dict[str, Any]:
    from conntrack_zbx.lld import discovery_rows
    from conntrack_zbx.talkers import family_of, pct, rank_sources_and_networks

    top = p["top"]
    ranked, by_net = rank_sources_and_networks(t.counts, top, p["prefix4"], p["prefix6"])
    sources, networks = ranked.groups, by_net.groups
    doc = {
        "source": source,
        "entries": t.entries,
        "skipped": t.skipped,
        "max": maximum,
        "truncated": t.truncated,
        "prefix4": p["prefix4"],
        "prefix6": p["prefix6"],
        "distinct_sources": ranked.distinct,
        "sources": [
            {"address": g.key, "family": family_of(g.key), "count": g.count,
             "pct_of_max": pct(g.count, maximum), "established": g.established,
             "protocols": g.protocols, "states": g.states}
            for g in sources[:top]
        ],
        "networks": [
            {"network": g.key, "family": family_of(g.key), "count": g.count,
             "pct_of_max": pct(g.count, maximum), "established": g.established,
             "sources": g.members, "protocols": g.protocols, "states": g.states}
            for g in networks[:top]
        ],
        # The template's talkers discovery is a dependent LLD rule on this document: $.discovery
        "discovery": discovery_rows(networks, sources, top),
    }  # type: Dict[str, Any]
    if note:
        doc["source_note"] = note
    return doc


class Raw(str):
    """A JSON document already written out (a cached answer): emitted as it is."""


def _with(text: str, **fields: Any) -> Raw:
    """Append fields to a written JSON object (the cache stores answers as written text)."""
    from conntrack_zbx.jsonout import dumps

    return Raw(text[:-1] + "".join(",%s:%s" % (dumps(k), dumps(v)) for k, v in fields.items()) + "}")


def _talkers_doc(args: argparse.Namespace) -> Raw:
    """The talkers document, through the snapshot cache for the live table (docs/performance.md).

    A fresh enough cached answer for these parameters is served as it was written. Else, under
    the cache lock (so concurrent calls make one table read, the others wait and take its
    answer), one table read refreshes it. A cache that fails its safety checks is not used, and
    the answer says why in ``cache_error``.
    """
    import time

    from conntrack_zbx import cache as cachemod
    from conntrack_zbx.jsonout import dumps

    # One time budget for waiting on another call's read and for our own read: together they
    # must end inside the agent's Timeout.
    deadline = time.monotonic() + args.budget
    p = _params(args)
    if args.file:
        t, source, note = _read_table(args, deadline)
        return _with(dumps(_render(t, source, note, _live_max(args, required=False), p)), cached=False, age=0.0)
    name = "talkers-%d-%d-%d.json" % (p["prefix4"], p["prefix6"], p["top"])
    # Same answer only for the same table: network namespace (one cache serves every netns of
    # the host's mount namespace), root directory and source choice.
    key = "netns=%s proc_root=%s source=%s" % (_netns_id(), os.path.abspath(args.proc_root), args.source)
    max_age = p["max_age"]
    problem = None
    try:
        with cachemod.Cache(args.cache_dir or cachemod.DEFAULT_DIR) as c:
            hit = c.read(name, max_age, key) if max_age > 0 else None
            if hit is not None:
                return _with(hit[0], cached=True, age=round(hit[1], 3))
            with c.lock(timeout=args.budget / 2):
                hit = c.read(name, max_age, key) if max_age > 0 else None
                if hit is not None:  # another call read the table while we waited
                    return _with(hit[0], cached=True, age=round(hit[1], 3))
                t, source, note = _read_table(args, deadline)
                text = dumps(_render(t, source, note, _live_max(args, True), p))
                try:
                    c.write(name, key, text)
                except OSError as e:  # the answer stands; the next call reads afresh
                    return _with(text, cache_error="cache not written: %s" % (e.strerror or e),
                                 cached=False, age=0.0)
                return _with(text, cached=False, age=0.0)
    except (cachemod.CacheRefused, cachemod.LockTimeout) as e:
        problem = "cache not used: %s" % e
    t, source, note = _read_table(args, deadline)
    text = dumps(_render(t, source, note, _live_max(args, True), p))
    return _with(text, cached=False, age=0.0, cache_error=problem)


def _netns_id() -> str:
    """This network namespace's cookie (unique for the boot, never reused: Linux >= 5.14), else
    its nsfs inode (which a new namespace may reuse after the old one is gone)."""
    import _socket  # the C module: ``socket`` would import enum, selectors... for one getsockopt

    try:
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
        try:
            return "cookie:%d" % int.from_bytes(s.getsockopt(_socket.SOL_SOCKET, 71, 8), sys.byteorder)
        finally:
            s.close()
    except OSError:
        pass
    try:
        st = os.stat("/proc/self/ns/net")
        return "inode:%d:%d" % (st.st_dev, st.st_ino)
    except OSError:
        return "unknown"


def _live_max(args: argparse.Namespace, required: bool) -> Optional[int]:
    from conntrack_zbx.sources.proc import ProcRoot

    root = ProcRoot(args.proc_root)
    if required:
        return root.max()
    try:
        return root.max()
    except ConntrackError:
        return None


def _talkers(args: argparse.Namespace) -> Raw:
    return _talkers_doc(args)


def _discovery(args: argparse.Namespace) -> List[Dict[str, str]]:
    """The same LLD rows standalone, for setups that poll discovery as its own item."""
    import json

    return json.loads(_talkers_doc(args))["discovery"]


# -- privilege: the fixed sudo line ---------------------------------------------------------
def _via_sudo(args: argparse.Namespace) -> int:
    """Validate the key parameters here, then run exactly ``sudo -n <this binary> <command>
    --params-stdin`` and hand them over on stdin, as data, never as arguments.

    The sudo rule is one fixed line with no caller-controlled argument; root validates the
    parameters again against the same allow-list. A refusal becomes an error naming the grant.
    """
    import subprocess

    from conntrack_zbx import params
    from conntrack_zbx.keys import KEYS, SUDO, sudo_command

    key = next((k for k in KEYS if k.privileged and k.args[0] == args.command), None)
    if key is None:
        raise NotPermitted("--sudo is only for the agent keys' fixed command lines, "
                           "not for '%s'" % args.command)
    changed = [o for o in ("file", "source", "cache_dir", "budget", "proc_root")
               if getattr(args, o) != TABLE_DEFAULTS[o]] + (["params_stdin"] if args.params_stdin else [])
    if changed:
        raise NotPermitted("--sudo runs only the fixed line '%s' with the key parameters (%s): drop "
                           "--%s" % (" ".join(sudo_command(key)), ", ".join(prm.name for prm in params.TALKERS_PARAMS),
                                     ", --".join(o.replace("_", "-") for o in changed)))
    values = _params(args)  # refused here, before anything runs as root
    if os.geteuid() == 0:  # already root (e.g. run by hand): nothing to elevate
        return main([args.command] + ["--%s=%d" % (n.replace("_", "-"), v) for n, v in values.items()])
    cmd = [SUDO, "-n"] + list(sudo_command(key, os.path.abspath(sys.argv[0])))
    try:
        p = subprocess.run(cmd, input=params.to_wire(values), capture_output=True)
    except FileNotFoundError:
        raise NotPermitted("%s is not installed: the talker keys read the root-only entry table "
                           "through sudo; install sudo and sudoers.d/conntrack-zbx "
                           "(docs/permissions.md)" % SUDO) from None
    out = p.stdout.decode("utf-8", "replace")
    if out.lstrip().startswith(("{", "[")):
        if args.command == "discovery" and out.lstrip().startswith("{") and p.returncode == 0:
            import json

            out = json.dumps(json.loads(out)["discovery"], separators=(",", ":")) + "\n"
        sys.stdout.write(out)
        return p.returncode
    said = (p.stderr.decode("utf-8", "replace").strip() or out.strip())[:300]
    raise NotPermitted(
        "not permitted: sudo refused '%s' for uid %d (%s); install sudoers.d/conntrack-zbx as "
        "/etc/sudoers.d/conntrack-zbx (mode 0440, check with 'visudo -cf'), see "
        "docs/permissions.md" % (" ".join(cmd[2:]), os.geteuid(), said))


# -- template: admin side ---------------------------------------------------------------------
def _template(args: argparse.Namespace) -> int:
    try:
        from conntrack_zbx import deploy
    except ImportError as e:
        sys.stderr.write("conntrack-zbx: the admin commands need pyzabbix and pyyaml "
                         "(pip install conntrack-zbx): %s\n" % e)
        return 2
    try:
        result = deploy.run(args)
    except deploy.DeployError as e:
        sys.stderr.write("conntrack-zbx: template import failed: %s\n" % e)
        return 1
    except OSError as e:
        sys.stderr.write("conntrack-zbx: %s\n" % e)
        return 1
    import json

    sys.stdout.write(json.dumps(result, indent=1) + "\n")
    return 0


# -- top: the on-call terminal view ---------------------------------------------------------
def _top(args: argparse.Namespace) -> str:
    from conntrack_zbx.sources.proc import ProcRoot, iter_lines, open_snapshot
    from conntrack_zbx.talkers import address_text, network_of, network_text, pct, rank, tally

    root = ProcRoot(args.proc_root)
    if args.file:
        f, what = open_snapshot(args.file), args.file
    else:
        f, what = root.open_table(), root.path("proc/net/nf_conntrack")
    with f:
        t = tally(iter_lines(f), args.by)
    maximum = args.max if args.max is not None else _live_max(args, required=False)
    out = []
    share = " (%s%% of nf_conntrack_max %d)" % (pct(t.entries, maximum), maximum) if maximum else ""
    out.append("%d entries%s in %s; %d lines skipped\n" % (t.entries, share, what, t.skipped))
    sections = []
    if args.by in ("src", "dst"):
        sections.append(("networks (/%d IPv4, /%d IPv6)" % (args.prefix4, args.prefix6),
                         rank(t.counts, args.n, network_of(args.prefix4, args.prefix6), network_text).groups, True))
    sections.append(("%s" % {"src": "sources", "dst": "destinations", "dport": "protocol/port",
                             "state": "states", "proto": "protocols"}[args.by],
                     rank(t.counts, args.n, text=address_text if args.by in ("src", "dst") else None).groups,
                     False))
    for title, groups, is_net in sections:
        out.append("\nTop %s by entries held:\n" % title)
        if not groups:
            out.append("  (no entries)\n")
            continue
        width = max(len(g.key) for g in groups[:args.n])
        out.append("  %8s %7s  %-*s  %s\n" % ("ENTRIES", "%MAX", width, "KEY", "STATE MIX"))
        for g in groups[:args.n]:
            p = pct(g.count, maximum)
            mix = ", ".join("%s %d%%" % (s, round(100.0 * n / g.count))
                            for s, n in list(g.states.items())[:3])
            extra = ("  [%d source%s]" % (g.members, "" if g.members == 1 else "s")
                     if is_net else "")
            out.append("  %8d %7s  %-*s  %s%s\n"
                       % (g.count, "-" if p is None else "%.2f" % p, width, g.key, mix, extra))
    return "".join(out)
