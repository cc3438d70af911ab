"""A real Zabbix 7.0 LTS frontend and API, for import tests, on a Debian 12 machine.

Debian 12 ships Zabbix 6.0. The 7.0 server binary needs a newer libc and cannot run here, but the
frontend is PHP (architecture all) and runs on Debian 12's PHP 8.2. Its packages come from the
next Debian release through a *separate* sources list (nothing is added to the system's apt
sources and nothing is installed): ``apt-get download`` of ``zabbix-frontend-php`` and
``zabbix-server-pgsql`` (for the schema SQL), unpacked with ``dpkg-deb -x``. The frontend's
config path is hard-coded (``CConfigFile::CONFIG_FILE_PATH``); the unpacked copy is pointed at
its own file. The API (``apiinfo.version``, ``user.login``, ``configuration.import``,
``host.massadd``...) then works without a server; the frontend just reports the server as down.
"""

import glob
import os
import subprocess

from lab.debroot import debian_uri
from lab.netns import sh
from lab.stack import Stack

BASE = "/var/tmp/ctzbx-z70"
SUITE = "trixie"
PACKAGES = ("zabbix-frontend-php", "zabbix-server-pgsql")


def fetch(base: str = BASE) -> str:
    """Download and unpack the 7.0 packages once; returns the unpacked root."""
    root = os.path.join(base, "root")
    if os.path.exists(os.path.join(root, "usr/share/zabbix/api_jsonrpc.php")):
        return root
    lists, debs = os.path.join(base, "lists"), os.path.join(base, "debs")
    for d in (os.path.join(lists, "partial"), debs):
        os.makedirs(d, exist_ok=True)
    sources = os.path.join(base, "%s.list" % SUITE)
    with open(sources, "w") as f:
        f.write("deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s %s main\n"
                % (debian_uri(), SUITE))
    apt = ["apt-get", "-q", "-o", "Dir::Etc::SourceList=" + sources, "-o", "Dir::Etc::SourceParts=/dev/null",
           "-o", "Dir::State::Lists=" + lists, "-o", "APT::Sandbox::User=root"]
    sh(apt + ["update"])
    sh(apt + ["download"] + list(PACKAGES), cwd=debs)
    tmp = root + ".tmp"
    subprocess.run(["rm", "-rf", tmp], check=True)
    for deb in sorted(glob.glob(os.path.join(debs, "*.deb"))):
        sh(["dpkg-deb", "-x", deb, tmp])
    conf_class = os.path.join(tmp, "usr/share/zabbix/include/classes/core/CConfigFile.php")
    with open(conf_class) as f:
        text = f.read()
    with open(conf_class, "w") as f:
        f.write(text.replace("'/etc/zabbix/zabbix.conf.php'", "'%s/zabbix.conf.php'" % base))
    os.rename(tmp, root)
    return root


class Frontend70(Stack):
    """PostgreSQL with the 7.0 schema and the 7.0 frontend under ``php -S``: no server."""

    def __init__(self, base: str = BASE, pg_port: int = 15442, web_port: int = 18090) -> None:
        super().__init__(base=os.path.join(base, "stack"), pg_port=pg_port, web_port=web_port)
        root = fetch(base)
        self.schema_dir = os.path.join(root, "usr/share/zabbix-server-pgsql")
        self.frontend_dir = os.path.join(root, "usr/share/zabbix")
        self.frontend_conf = os.path.join(base, "zabbix.conf.php")

    def start(self) -> "Frontend70":
        from lab.stack import stop_pids

        os.makedirs(self.base, exist_ok=True)
        os.chmod(self.base, 0o755)
        stop_pids(self.base)
        self._start_postgres()
        self._fresh_database()
        self._start_frontend()
        return self
