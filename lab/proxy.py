"""A real Zabbix proxy (Debian's zabbix-proxy-sqlite3), active, on 127.0.0.1, for tests.

Debian's proxy package conflicts with the server package the lab needs, so it is not installed:
for 6.0 ``apt-get download`` fetches it (the same 6.0.14 as the server) and ``dpkg-deb -x``
unpacks the binary and its schema under /var/tmp (its libraries are all on the machine already);
7.0's is installed in a Debian 13 root of its own (lab/debroot.py, "trixie-proxy").

Large installations poll agents through proxies: the proxy runs the passive checks, receives
the active agents' values, and forwards everything to the server. Its ``Timeout`` is the one
that kills a slow UserParameter for hosts behind it, so it must cover the talkers key.
"""

import gzip
import os
import shutil
import sqlite3
import subprocess
import time

from lab.stack import UNREACHABLE_DELAY, alive, as_user

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Optional

    from lab.debroot import DebRoot

UNPACKED = "/var/tmp/ctzbx-proxy-pkg"


def fetch(base: str = UNPACKED) -> str:
    """Download and unpack zabbix-proxy-sqlite3 once; returns the unpacked root."""
    import glob

    from lab.netns import sh

    root = os.path.join(base, "root")
    if os.path.exists(os.path.join(root, "usr/sbin/zabbix_proxy")):
        return root
    debs = os.path.join(base, "debs")
    os.makedirs(debs, exist_ok=True)
    sh(["apt-get", "-q", "-o", "APT::Sandbox::User=root", "download", "zabbix-proxy-sqlite3"], cwd=debs)
    tmp = root + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for deb in glob.glob(os.path.join(debs, "zabbix-proxy-sqlite3_*.deb")):
        sh(["dpkg-deb", "-x", deb, tmp])
    for dirpath, dirs, _files in os.walk(base):
        for d in dirs:
            os.chmod(os.path.join(dirpath, d), 0o755)
    os.chmod(base, 0o755)
    os.rename(tmp, root)
    return root


class Proxy:
    def __init__(self, base: str, server_port: int, name: str = "ct-proxy", listen_port: int = 10161,
                 timeout: int = 15, root: "Optional[DebRoot]" = None) -> None:
        """``root``: the proxy of that Debian root (7.0); ``base`` must then be under its shared
        directory (lab/debroot.py)."""
        self.base, self.server_port, self.name = base, server_port, name
        self.listen_port, self.timeout, self.root = listen_port, timeout, root
        self.proc = None  # type: Optional[subprocess.Popen]
        if root is not None:
            self.binary = "/usr/sbin/zabbix_proxy"
            self.schema = root.inside("/usr/share/zabbix-proxy-sqlite3/schema.sql.gz")
        else:
            unpacked = fetch()
            self.binary = os.path.join(unpacked, "usr/sbin/zabbix_proxy")
            self.schema = os.path.join(unpacked, "usr/share/zabbix-proxy-sqlite3/schema.sql.gz")

    def _conf(self) -> str:
        run = os.path.join(self.base, "run")
        for d in (self.base, run):
            os.makedirs(d, exist_ok=True)
            shutil.chown(d, "zabbix", "zabbix")
        db = os.path.join(self.base, "proxy.db")
        if os.path.exists(db):
            os.remove(db)
        with gzip.open(self.schema, "rt") as f, sqlite3.connect(db) as c:
            c.executescript(f.read())
        shutil.chown(db, "zabbix", "zabbix")
        conf = os.path.join(self.base, "zabbix_proxy.conf")
        with open(conf, "w") as f:
            f.write("\n".join([
                "ProxyMode=0", "Server=127.0.0.1:%d" % self.server_port, "Hostname=%s" % self.name,
                "ListenIP=127.0.0.1", "ListenPort=%d" % self.listen_port,
                "LogType=file", "LogFile=%s/proxy.log" % self.base, "LogFileSize=0",
                "PidFile=%s/zabbix_proxy.pid" % run, "SocketDir=%s" % run, "DBName=%s" % db,
                # The proxy's Timeout kills slow UserParameters of the hosts behind it: it must
                # cover conntrack.talkers (docs/install.md).
                "Timeout=%d" % self.timeout,
                "ConfigFrequency=2", "DataSenderFrequency=1", "HousekeepingFrequency=0",
                "StartPollers=3", "StartPollersUnreachable=1", "StartTrappers=2", "StartPingers=0",
                "StartDiscoverers=0", "StartHTTPPollers=0", "StartPreprocessors=2",
                "StartODBCPollers=0", "UnreachablePeriod=3600",
                "UnavailableDelay=%d" % UNREACHABLE_DELAY, "UnreachableDelay=%d" % UNREACHABLE_DELAY,
            ]) + "\n")
        os.chmod(conf, 0o644)
        return conf

    def __enter__(self) -> "Proxy":
        conf = self._conf()
        argv: "List[str]" = as_user("zabbix") + [self.binary, "-c", conf, "-f"]
        if self.root is not None:
            argv = self.root.cmd(argv)
        self.proc = subprocess.Popen(argv,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("zabbix_proxy exited: %s" % self.log())
            if "proxy #0 started" in self.log(200000):
                return self
            time.sleep(0.2)
        self.__exit__()
        raise RuntimeError("zabbix_proxy did not start: %s" % self.log())

    def __exit__(self, *exc) -> None:
        if self.proc is not None and alive(self.proc.pid):
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self, n: int = 3000) -> str:
        try:
            with open(os.path.join(self.base, "proxy.log"), "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError as e:
            return str(e)
