"""The Zabbix agents' own configuration: what their monitoring traffic is (``protect``) and which
files they read UserParameters from (``agent-conf``).

zabbix_agentd and zabbix_agent2 share the parameters that matter: ``ListenPort`` (passive checks
arrive there, default 10050), ``ListenIP``, ``Server`` (who may poll: addresses, CIDRs or names,
comma-separated) and ``ServerActive`` (where active checks go: ``host[:port]``, ``[v6]:port``,
default port 10051; since 6.0 ``;`` separates the nodes of one HA cluster). ``Include`` pulls in
more files (a file, a directory or a glob; a relative one from the including file's directory,
as the stock agent 2 conf's ``./zabbix_agent2.d/plugins.d/*.conf``). Parsing is pure; ``read`` is
the file I/O, under a root directory like every path ``tune`` and ``protect`` touch.

Where the stock packages point ``Include`` (the shipped files, unedited)::

  Debian/Ubuntu zabbix-agent        /etc/zabbix/zabbix_agentd.conf   /etc/zabbix/zabbix_agentd.conf.d/*.conf
  Debian/Ubuntu zabbix-agent2       /etc/zabbix/zabbix_agent2.conf   /etc/zabbix/zabbix_agent2.d/*.conf
  Zabbix's repository, deb and rpm  /etc/zabbix/zabbix_agentd.conf   /etc/zabbix/zabbix_agentd.d/*.conf
                                    /etc/zabbix/zabbix_agent2.conf   /etc/zabbix/zabbix_agent2.d/*.conf
  EPEL / Fedora                     /etc/zabbix_agentd.conf          /etc/zabbix_agentd.conf.d/*.conf
"""

import fnmatch
import glob
import os
from typing import Dict, List, NamedTuple, Optional, Tuple

# Every agent configuration a stock package installs, relative to the root (table above).
CONFS = ("etc/zabbix/zabbix_agentd.conf", "etc/zabbix/zabbix_agent2.conf",
         "etc/zabbix_agentd.conf", "etc/zabbix_agent2.conf")
PASSIVE_PORT, ACTIVE_PORT = 10050, 10051
MAX_INCLUDES = 200  # an Include loop or a huge directory is a mistake, not a configuration


class Endpoints(NamedTuple):
    """The monitoring traffic one agent configuration describes."""

    conf: str  # the file it came from (relative to the root)
    listen_port: int
    listen_ips: Tuple[str, ...]  # empty: every address
    servers: Tuple[str, ...]  # passive: who polls
    active: Tuple[Tuple[str, int], ...]  # active: (host, port) the agent connects to


def parse(text: str) -> Dict[str, List[str]]:
    """``KEY=value`` lines -> {KEY: [values in order]}; comments and blank lines skipped."""
    out = {}  # type: Dict[str, List[str]]
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def _last(params: Dict[str, List[str]], key: str) -> Optional[str]:
    values = params.get(key)
    return values[-1] if values else None


def split_list(value: Optional[str]) -> Tuple[str, ...]:
    if not value:
        return ()
    return tuple(v.strip() for v in value.replace(";", ",").split(",") if v.strip())


def host_port(entry: str, default: int) -> Tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address -> (host, port)."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else default
    if entry.count(":") == 1:
        host, port = entry.split(":")
        if port.isdigit():
            return host, int(port)
    return entry, default


def endpoints(conf: str, params: Dict[str, List[str]]) -> Endpoints:
    port = _last(params, "ListenPort")
    return Endpoints(
        conf=conf,
        listen_port=int(port) if port and port.isdigit() else PASSIVE_PORT,
        listen_ips=tuple(ip for ip in split_list(_last(params, "ListenIP")) if ip not in ("0.0.0.0", "::")),
        servers=split_list(_last(params, "Server")),
        active=tuple(host_port(e, ACTIVE_PORT) for e in split_list(_last(params, "ServerActive"))),
    )


def kind(conf: str) -> str:
    """``agent2`` or ``agentd``, from the configuration's file name."""
    return "agent2" if "agent2" in os.path.basename(conf) else "agentd"


def include_pattern(conf: str, value: str) -> str:
    """One ``Include=`` value as the absolute pattern the agent reads (``conf``: the absolute path
    of the file that holds it, in the host's terms): a directory means every file in it."""
    path = value if value.startswith("/") else os.path.normpath(os.path.join(os.path.dirname(conf), value))
    return path


def reads(pattern: str, path: str, is_dir: bool = False) -> bool:
    """Does an ``Include`` pattern pull in the file ``path``? ``is_dir``: the pattern names a
    directory (the agent then reads every file in it). Globs never cross a ``/``."""
    if is_dir:
        return os.path.dirname(path) == pattern.rstrip("/")
    return os.path.dirname(path) == os.path.dirname(pattern) and \
        fnmatch.fnmatchcase(os.path.basename(path), os.path.basename(pattern))


def user_path(root: str, path: str) -> str:
    """A path a person typed: relative to the current directory as every command line path, an
    absolute one under ``root``."""
    return os.path.abspath(path) if not path.startswith("/") else os.path.join(root, path.lstrip("/"))


def host_path(root: str, path: str) -> str:
    """``path`` (a file under ``root``) as the host sees it; a file outside ``root`` stays as is."""
    rel = os.path.relpath(path, root)
    return path if rel.startswith("..") else "/" + rel


def read(root: str, confs: Optional[List[str]] = None) -> List[Endpoints]:
    """Every agent configuration found under ``root`` (or the ``confs`` given, as a person typed
    them), with its includes merged in the order the agent reads them."""
    found = []
    for rel in confs or list(CONFS):
        path = user_path(root, rel) if confs else os.path.join(root, rel)
        if not os.path.isfile(path):
            if confs:
                raise FileNotFoundError("no such file: %s" % path)
            continue
        params = {}  # type: Dict[str, List[str]]
        _merge(root, path, params, [0])
        found.append(endpoints(rel.lstrip("/") if not confs else path, params))
    return found


def _merge(root: str, path: str, params: Dict[str, List[str]], seen: List[int]) -> None:
    seen[0] += 1
    if seen[0] > MAX_INCLUDES:
        raise ValueError("more than %d included files from %s: an Include loop?" % (MAX_INCLUDES, path))
    with open(path) as f:
        own = parse(f.read())
    for key, values in own.items():
        if key != "Include":
            params.setdefault(key, []).extend(values)
    for inc in own.get("Include", []):
        target = os.path.join(root, include_pattern(host_path(root, path), inc).lstrip("/"))
        if os.path.isdir(target):
            target = os.path.join(target, "*")
        for p in sorted(glob.glob(target)):
            if os.path.isfile(p):
                _merge(root, p, params, seen)
