"""A Debian root of another release, built with debootstrap, to run that release's Zabbix here.

Debian 12 ships Zabbix 6.0 only and the 7.0 binaries need Debian 13's libc, so the 7.0 server,
frontend, agent 2 and proxy run from a Debian 13 (trixie) root: ``chroot ROOT ...``, inside the
lab's network namespaces (``ip netns exec NS chroot ROOT ...``). The kernel, its namespaces and
their conntrack tables are the host's: ``/proc/net`` and ``/proc/sys/net`` inside the root belong
to the namespace of the process that reads them.

Built once and kept (``/var/cache/ctzbx-roots/<suite>``): debootstrap ``--variant=minbase`` from the
Debian archive this machine's apt already uses (read from /etc/apt, never written in the repo),
then the packages with ``--no-install-recommends``, a ``policy-rc.d`` that keeps postinst scripts
from starting daemons, and the ``en_US.UTF-8`` locale the frontend's graphs need. A root is only
used once its stamp file exists, so an interrupted build is redone.

Paths: the lab's working directories live under ``SHARED`` (/var/tmp/ctzbx-lab), bind-mounted at
the same path inside every root, so a conf file the lab writes is the file the daemon reads. The
``zabbix`` and ``postgres`` users are created in the root with the host's uid and gid before the
packages are installed (the packages keep an existing system user), so ownership means the same
on both sides.
"""

import glob
import os
import pwd
import re
import subprocess
import time
from typing import List, Optional

from lab.netns import sh

ROOTS = "/var/cache/ctzbx-roots"
SHARED = "/var/tmp/ctzbx-lab"
STAMP = ".ctzbx-ready"
# name: (Debian suite, packages). The proxy has a root of its own: Debian's zabbix-proxy-* and
# zabbix-server-* packages conflict (they ship the same zabbix_get and docs).
ROOT_PACKAGES = {
    "trixie": ("trixie", ["zabbix-server-pgsql", "zabbix-frontend-php", "zabbix-agent", "zabbix-agent2", "postgresql",
                          "php-pgsql", "php-cli", "php-gd", "php-bcmath", "php-mbstring", "php-xml", "php-ldap",
                          "locales", "python3", "python3-pytest", "sudo", "util-linux", "iproute2", "nftables"]),
    "trixie-proxy": ("trixie", ["zabbix-proxy-sqlite3", "locales", "util-linux"]),
    # the same for 6.0 on a Debian 13 machine (whose own packages are 7.0)
    "bookworm": ("bookworm", ["zabbix-server-pgsql", "zabbix-frontend-php", "zabbix-agent", "zabbix-agent2",
                              "postgresql", "php-pgsql", "php-cli", "php-gd", "php-bcmath", "php-mbstring",
                              "php-xml", "php-ldap", "locales", "python3", "python3-pytest", "sudo", "util-linux",
                              "iproute2", "nftables"]),
    "bookworm-proxy": ("bookworm", ["zabbix-proxy-sqlite3", "locales", "util-linux"]),
}
# The Zabbix LTS each Debian release ships: the host's own packages serve that one, a root the other.
NATIVE = {"bookworm": "6.0", "trixie": "7.0"}


def host_release() -> str:
    """This machine's Debian codename (/etc/os-release)."""
    try:
        with open("/etc/os-release") as f:
            m = re.search(r"^VERSION_CODENAME=\"?(\w+)", f.read(), re.M)
    except OSError:
        m = None
    return m.group(1) if m else "unknown"


def zabbix_root(zabbix: str, proxy: bool = False) -> "Optional[DebRoot]":
    """Where a Zabbix LTS runs from on this machine: None when the host's own packages are that
    version (Debian 12: 6.0; Debian 13: 7.0), else the Debian root that has it."""
    if NATIVE.get(host_release()) == zabbix:
        return None
    for name, release in NATIVE.items():
        if release == zabbix:
            return DebRoot(name + ("-proxy" if proxy else ""))
    raise ValueError("no Debian release ships Zabbix %s" % zabbix)
USERS = ("postgres", "zabbix")


def debian_uri() -> str:
    """The Debian archive this machine's apt already uses (deb822 or one-line sources)."""
    for path in glob.glob("/etc/apt/sources.list.d/*.sources"):
        with open(path) as f:
            for stanza in f.read().split("\n\n"):
                uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
                suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
                if uris and suites and not any(s.endswith("-security") for s in suites.group(1).split()):
                    return uris.group(1)
    for path in ["/etc/apt/sources.list"] + glob.glob("/etc/apt/sources.list.d/*.list"):
        if os.path.exists(path):
            with open(path) as f:
                m = re.search(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\w+)\s", f.read(), re.M)
                if m and "security" not in m.group(1):
                    return m.group(1)
    raise RuntimeError("no Debian archive in /etc/apt: cannot choose where to build a Debian root from")


def mounted(path: str) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == path for line in f)


class DebRoot:
    """One cached Debian root; ``cmd(argv)`` runs argv inside it."""

    def __init__(self, name: str = "trixie", roots: str = ROOTS) -> None:
        if name not in ROOT_PACKAGES:
            raise ValueError("no Debian root named %r (%s)" % (name, ", ".join(ROOT_PACKAGES)))
        self.name = name
        self.suite, self.packages = ROOT_PACKAGES[name]
        self.path = os.path.join(roots, name)

    def __repr__(self) -> str:
        return "DebRoot(%s: Debian %s at %s)" % (self.name, self.suite, self.path)

    def inside(self, path: str) -> str:
        """Where a path of the root is on the host."""
        return os.path.join(self.path, path.lstrip("/"))

    def cmd(self, argv: List[str]) -> List[str]:
        return ["chroot", self.path] + list(argv)

    def ready(self) -> bool:
        try:
            with open(os.path.join(self.path, STAMP)) as f:
                return f.read().split() == self.packages  # a changed package list rebuilds
        except OSError:
            return False

    # -- build -----------------------------------------------------------------------------
    def ensure(self, say=print) -> "DebRoot":
        """Build the root unless a finished one is there, then mount what it needs."""
        if not self.ready():
            started = time.monotonic()
            say("  building a Debian %s root in %s (once; later runs reuse it)" % (self.suite, self.path))
            self._build()
            say("  Debian %s root ready in %.0f s" % (self.suite, time.monotonic() - started))
        self.mount()
        return self

    def _build(self) -> None:
        if os.path.exists(self.path):
            self.umount()
            # only a root with nothing mounted in it is removed
            with open("/proc/self/mounts") as f:
                if any(line.split()[1].startswith(self.path + "/") for line in f):
                    raise RuntimeError("%s still has mounts; not removing it" % self.path)
            sh(["rm", "-rf", "--one-file-system", self.path])
        if not os.path.exists("/usr/sbin/debootstrap"):
            sh(["apt-get", "install", "-y", "-q", "--no-install-recommends", "debootstrap"])
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        sh(["debootstrap", "--variant=minbase", self.suite, self.path, debian_uri()])
        policy = self.inside("/usr/sbin/policy-rc.d")
        with open(policy, "w") as f:
            f.write("#!/bin/sh\n# written by the conntrack_zbx lab: postinst scripts start nothing\nexit 101\n")
        os.chmod(policy, 0o755)
        self._same_users()
        self.mount()
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        sh(self.cmd(["apt-get", "update", "-q"]), env=env)
        sh(self.cmd(["apt-get", "install", "-y", "-q", "--no-install-recommends"] + self.packages), env=env)
        with open(self.inside("/etc/locale.gen"), "a") as f:
            f.write("en_US.UTF-8 UTF-8\n")
        sh(self.cmd(["locale-gen"]), env=env)
        sh(self.cmd(["apt-get", "clean"]))
        with open(os.path.join(self.path, STAMP), "w") as f:
            f.write(" ".join(self.packages) + "\n")

    def _same_users(self) -> None:
        """The host's zabbix and postgres, uid and gid, as system users of the root."""
        for name in USERS:
            u = pwd.getpwnam(name)
            home = "/var/lib/postgresql" if name == "postgres" else "/var/lib/zabbix"
            sh(self.cmd(["groupadd", "--system", "-g", str(u.pw_gid), name]))
            sh(self.cmd(["useradd", "--system", "-u", str(u.pw_uid), "-g", str(u.pw_gid), "-d", home,
                         "-M", "-s", "/usr/sbin/nologin" if name == "zabbix" else "/bin/bash", name]))

    # -- mounts ----------------------------------------------------------------------------
    def mount(self) -> None:
        os.makedirs(SHARED, exist_ok=True)
        os.chmod(SHARED, 0o1777)
        for src, dst, how in (("proc", "/proc", ["-t", "proc"]), ("/sys", "/sys", ["--rbind"]),
                              ("/dev", "/dev", ["--rbind"]), (SHARED, SHARED, ["--bind"])):
            target = self.inside(dst)
            if not mounted(target):
                os.makedirs(target, exist_ok=True)
                sh(["mount"] + how + [src, target])
                if how == ["--rbind"]:
                    sh(["mount", "--make-rslave", target])

    def umount(self) -> None:
        for dst in (SHARED, "/dev", "/sys", "/proc"):
            target = self.inside(dst)
            if mounted(target):
                subprocess.run(["umount", "-R", "-l", target], check=False)
