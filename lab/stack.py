"""A real Zabbix 6.0 stack from Debian packages, on 127.0.0.1, without systemd.

PostgreSQL (own cluster), zabbix_server, and the frontend/API under PHP's built-in server, each
started by hand as its own user, optionally inside a network namespace (the "monitoring host").
The database is created once from the packaged schema and kept as a template database, so every
start gets a fresh copy in about a second. Process ids go to ``<base>/pids.json`` so another
process (``python -m lab stack-stop``) can stop a stack left running for a look.

Facts this relies on are in docs/lab.md (paths, ANALYZE, cache reload, zombies).
"""

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from typing import Dict, List, Optional

from lab.netns import Netns, sh

TYPE_CHECKING = False
if TYPE_CHECKING:
    from lab.debroot import DebRoot

SCHEMA_DIR = "/usr/share/zabbix-server-pgsql"
FRONTEND = "/usr/share/zabbix"
FRONTEND_CONF = "/etc/zabbix/zabbix.conf.php"  # Debian hard-codes this path
ZABBIX_SERVER = "/usr/sbin/zabbix_server"


def postgres_bin(root: str = "/") -> str:
    """The newest PostgreSQL's bin directory under ``root`` (15 on Debian 12, 17 on Debian 13)."""
    import glob

    bins = sorted(glob.glob(os.path.join(root, "usr/lib/postgresql/*/bin")),
                  key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0)
    if not bins:
        raise RuntimeError("no PostgreSQL under %s (usr/lib/postgresql/*/bin): scripts/install-deps.sh "
                           "installs it" % root)
    return "/" + os.path.relpath(bins[-1], root)


def as_user(user: str) -> List[str]:
    return ["setpriv", "--reuid=%s" % user, "--regid=%s" % user, "--init-groups"]


def alive(pid: int) -> bool:
    """A zombie is not alive (PID 1 here reaps late)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


# Seconds the server waits before it polls an agent again after a poll failed (a lost poll).
UNREACHABLE_DELAY = 5


class Stack:
    # Where the schema and the frontend come from (a 7.0 frontend overrides these: lab/zabbix70.py).
    schema_dir = SCHEMA_DIR
    frontend_dir = FRONTEND
    frontend_conf = FRONTEND_CONF

    def __init__(self, base: str = "/var/tmp/ctzbx-stack", netns: Optional[Netns] = None,
                 pg_port: int = 15432, server_port: int = 10151, web_port: int = 18080,
                 server_timeout: int = 15, extra_server_conf: str = "",
                 root: "Optional[DebRoot]" = None) -> None:
        """``root``: run PostgreSQL, the server and the frontend from that Debian root (Zabbix
        7.0 from Debian 13, lab/debroot.py); ``base`` must then be under its shared directory."""
        self.base, self.netns, self.root = base, netns, root
        if root is not None:
            from lab.debroot import SHARED

            if not base.startswith(SHARED + "/"):
                raise ValueError("a stack in %r needs its base under %s" % (root, SHARED))
            self.frontend_conf = root.inside(FRONTEND_CONF)
        self.pg_bin = postgres_bin(root.path if root is not None else "/")
        self.pg_port, self.server_port, self.web_port = pg_port, server_port, web_port
        self.server_timeout = server_timeout
        self.extra_server_conf = extra_server_conf
        self.url = "http://127.0.0.1:%d/" % web_port
        self.procs = {}  # type: Dict[str, subprocess.Popen]

    # -- helpers ---------------------------------------------------------------------------
    def _wrap(self, argv: List[str]) -> List[str]:
        if self.root is not None:
            argv = self.root.cmd(argv)
        return self.netns.cmd(argv) if self.netns else list(argv)

    def _run(self, argv: List[str], **kw) -> subprocess.CompletedProcess:
        return sh(self._wrap(argv), **kw)

    def _spawn(self, name: str, argv: List[str], env: Optional[Dict[str, str]] = None) -> None:
        log = open(os.path.join(self.base, "%s.out" % name), "ab")
        self.procs[name] = subprocess.Popen(self._wrap(argv), stdout=log, stderr=log,
                                            stdin=subprocess.DEVNULL, env=env,
                                            start_new_session=True)
        log.close()
        self._save_pids()

    def _save_pids(self) -> None:
        with open(os.path.join(self.base, "pids.json"), "w") as f:
            json.dump({k: p.pid for k, p in self.procs.items()}, f)

    def psql(self, sql: str, db: str = "postgres") -> str:
        return self._run(as_user("postgres") + [
            self.pg_bin + "/psql", "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "postgres",
            "-d", db, "-v", "ON_ERROR_STOP=1", "-qAtc", sql]).stdout.decode()

    def _wait(self, what: str, check, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError("%s exited while waiting for %s: %s"
                                       % (name, what, self.tail(name)))
            if check():
                return
            time.sleep(0.3)
        raise RuntimeError("timed out waiting for %s" % what)

    def tail(self, name: str, n: int = 3000) -> str:
        for path in (os.path.join(self.base, "%s.log" % name), os.path.join(self.base, "%s.out" % name)):
            if os.path.exists(path):
                with open(path, "rb") as f:
                    data = f.read()
                return data[-n:].decode(errors="replace")
        return "(no log)"

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> "Stack":
        os.makedirs(self.base, exist_ok=True)
        os.chmod(self.base, 0o755)
        stop_pids(self.base)  # a stack an interrupted run left behind
        self._start_postgres()
        self._fresh_database()
        self._start_server()
        self._start_frontend()
        return self

    def __enter__(self) -> "Stack":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    def _start_postgres(self) -> None:
        data = os.path.join(self.base, "pg")
        sock = os.path.join(self.base, "pgsock")
        if not os.path.exists(os.path.join(data, "PG_VERSION")):
            shutil.rmtree(data, ignore_errors=True)
            os.makedirs(data)
            shutil.chown(data, "postgres", "postgres")
            self._run(as_user("postgres") + [self.pg_bin + "/initdb", "-D", data, "-A", "trust", "-U",
                                       "postgres", "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"])
        os.makedirs(sock, exist_ok=True)
        shutil.chown(sock, "postgres", "postgres")
        self._spawn("postgres", as_user("postgres") + [
            self.pg_bin + "/postgres", "-D", data, "-p", str(self.pg_port), "-k", sock,
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off", "-c", "max_connections=100"])
        self._wait("postgres", lambda: self._run(
            [self.pg_bin + "/pg_isready", "-h", "127.0.0.1", "-p", str(self.pg_port)],
            check=False).returncode == 0)

    def _fresh_database(self) -> None:
        have = self.psql("SELECT datname FROM pg_database").split()
        if "zabbix_fresh" not in have:
            if "zabbix" not in self.psql("SELECT rolname FROM pg_roles").split():
                self.psql("CREATE ROLE zabbix LOGIN")
            self.psql("CREATE DATABASE zabbix_loading OWNER zabbix")
            for part in ("schema", "images", "data"):
                # pipefail: a missing or broken dump must fail the load, not feed psql nothing
                load = ("zcat %s/%s.sql.gz | %s %s/psql -h 127.0.0.1 -p %d -U zabbix -d zabbix_loading -q "
                        "-v ON_ERROR_STOP=1 >/dev/null"
                        % (self.schema_dir, part, " ".join(as_user("postgres")), self.pg_bin, self.pg_port))
                self._run(["bash", "-o", "pipefail", "-c", load])
            self.psql("ANALYZE", db="zabbix_loading")
            # Only a fully loaded database gets the template name: an interrupted load is redone.
            self.psql("ALTER DATABASE zabbix_loading RENAME TO zabbix_fresh")
        self.psql("DROP DATABASE IF EXISTS zabbix WITH (FORCE)")
        self.psql("CREATE DATABASE zabbix TEMPLATE zabbix_fresh OWNER zabbix")
        self.psql("ANALYZE", db="zabbix")

    def _server_conf(self) -> str:
        run = os.path.join(self.base, "server")
        os.makedirs(run, exist_ok=True)
        shutil.chown(run, "zabbix", "zabbix")
        conf = os.path.join(self.base, "zabbix_server.conf")
        lines = [
            "ListenIP=127.0.0.1", "ListenPort=%d" % self.server_port,
            "LogType=file", "LogFile=%s/server.log" % self.base, "LogFileSize=0",
            "PidFile=%s/zabbix_server.pid" % run, "SocketDir=%s" % run,
            "DBHost=127.0.0.1", "DBPort=%d" % self.pg_port, "DBName=zabbix", "DBUser=zabbix",
            "Timeout=%d" % self.server_timeout, "CacheUpdateFrequency=2",
            "HousekeepingFrequency=0", "ProblemHousekeepingFrequency=3600",
            "StartPollers=4", "StartPollersUnreachable=1", "StartPreprocessors=2",
            "StartHistoryPollers=1", "StartTrappers=2", "StartPingers=0", "StartDiscoverers=0",
            "StartHTTPPollers=2", "StartTimers=1", "StartEscalators=1", "StartAlerters=1",
            "StartDBSyncers=2", "StartLLDProcessors=1", "StartODBCPollers=0",
            "StartReportWriters=0", "UnreachablePeriod=3600", "UnavailableDelay=%d" % UNREACHABLE_DELAY,
            "UnreachableDelay=%d" % UNREACHABLE_DELAY,
        ]
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n" + self.extra_server_conf)
        os.chmod(conf, 0o644)
        log = os.path.join(self.base, "server.log")
        open(log, "a").close()
        shutil.chown(log, "zabbix", "zabbix")
        return conf

    def _start_server(self) -> None:
        conf = self._server_conf()
        self.server_conf = conf
        self._spawn("server", as_user("zabbix") + [ZABBIX_SERVER, "-c", conf, "-f"])
        self._wait("zabbix_server", lambda: "server #0 started" in self.tail("server", 200000))

    def reload_config_cache(self) -> None:
        """Make the server see API changes now instead of after CacheUpdateFrequency."""
        self._run(as_user("zabbix") + [ZABBIX_SERVER, "-c", self.server_conf, "-R",
                                       "config_cache_reload"], check=False)

    def _start_frontend(self) -> None:
        os.makedirs(os.path.dirname(self.frontend_conf), exist_ok=True)
        with open(self.frontend_conf, "w") as f:
            f.write(FRONTEND_CONF_TEMPLATE % {"port": self.pg_port, "server_port": self.server_port})
        os.chmod(self.frontend_conf, 0o644)
        env = dict(os.environ, PHP_CLI_SERVER_WORKERS="4", LC_ALL="en_US.UTF-8")
        self._spawn("frontend", ["php", "-d", "memory_limit=512M", "-d", "post_max_size=32M",
                                 "-d", "max_execution_time=300", "-d", "max_input_time=300",
                                 "-S", "127.0.0.1:%d" % self.web_port, "-t", self.frontend_dir], env=env)
        self._wait("frontend API", lambda: self.api_version() is not None)

    def api_version(self) -> Optional[str]:
        body = json.dumps({"jsonrpc": "2.0", "method": "apiinfo.version", "params": {}, "id": 1})
        code = ("import urllib.request,sys;r=urllib.request.urlopen(urllib.request.Request(%r,"
                "data=sys.stdin.buffer.read(),headers={'Content-Type':'application/json-rpc'}),"
                "timeout=5);sys.stdout.write(r.read().decode())" % (self.url + "api_jsonrpc.php"))
        if self.netns:
            p = self._run(["python3", "-c", code], check=False, input=body.encode())
            if p.returncode != 0:
                return None
            return json.loads(p.stdout).get("result")
        try:
            req = urllib.request.Request(self.url + "api_jsonrpc.php", data=body.encode(),
                                         headers={"Content-Type": "application/json-rpc"})
            return json.loads(urllib.request.urlopen(req, timeout=5).read()).get("result")
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        stop_pids(self.base, {k: p.pid for k, p in self.procs.items()})
        for p in self.procs.values():
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.procs = {}


def stop_pids(base: str, pids: Optional[Dict[str, int]] = None) -> None:
    """Stop a stack by its pids file: frontend and server first, PostgreSQL last (fast shutdown)."""
    path = os.path.join(base, "pids.json")
    if pids is None:
        try:
            with open(path) as f:
                pids = json.load(f)
        except (OSError, ValueError):
            return
    for name in ("forwarder", "frontend", "server", "postgres"):
        pid = pids.get(name)
        if pid and alive(pid):
            try:
                os.killpg(pid, signal.SIGINT if name == "postgres" else signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 20
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if alive(pid):
                os.killpg(pid, signal.SIGKILL)
    if os.path.exists(path):
        os.remove(path)


FRONTEND_CONF_TEMPLATE = """<?php
// Written by lab.stack for the local test/demo stack.
$DB['TYPE']     = 'POSTGRESQL';
$DB['SERVER']   = '127.0.0.1';
$DB['PORT']     = '%(port)d';
$DB['DATABASE'] = 'zabbix';
$DB['USER']     = 'zabbix';
$DB['PASSWORD'] = '';
$DB['SCHEMA'] = '';
$DB['ENCRYPTION'] = false;
$DB['KEY_FILE'] = '';
$DB['CERT_FILE'] = '';
$DB['CA_FILE'] = '';
$DB['VERIFY_HOST'] = false;
$DB['CIPHER_LIST'] = '';
$DB['VAULT_URL'] = '';
$DB['VAULT_DB_PATH'] = '';
$DB['VAULT_TOKEN'] = '';
$DB['DOUBLE_IEEE754'] = true;
$ZBX_SERVER = '127.0.0.1';
$ZBX_SERVER_PORT = '%(server_port)d';
$ZBX_SERVER_NAME = 'conntrack_zbx lab';
$IMAGE_FORMAT_DEFAULT = IMAGE_FORMAT_PNG;
"""
