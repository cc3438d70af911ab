"""Real Zabbix agents (zabbix_agentd, zabbix_agent2) run as the zabbix user, for tests and the demo."""

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, NamedTuple, Optional, Tuple

from conntrack_zbx import keys
from lab.netns import Netns, sh

TYPE_CHECKING = False
if TYPE_CHECKING:
    from lab.debroot import DebRoot

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AGENTD = "/usr/sbin/zabbix_agentd"
AGENT2 = "/usr/sbin/zabbix_agent2"
ZABBIX_GET = "/usr/bin/zabbix_get"
AS_ZABBIX = ["setpriv", "--reuid=zabbix", "--regid=zabbix", "--init-groups"]


class Plugin(NamedTuple):
    base: str  # the install directory (remove it when done)
    binary: str  # its conntrack-zbx entry point
    conf: str  # the UserParameter conf generated for that binary


def install_plugin(repo: str, wheel_python: str) -> Plugin:
    """Install the package the way an admin does (a wheel into a root-owned venv on the host's
    /usr/bin/python3) in a fresh directory the zabbix user can traverse, with its agent conf."""
    base = tempfile.mkdtemp(prefix="ctzbx-install-", dir="/tmp")
    os.chmod(base, 0o755)
    wheels = os.path.join(base, "wheels")
    sh([wheel_python, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheels, repo])
    sh(["/usr/bin/python3", "-m", "venv", os.path.join(base, "venv")])
    wheel = [os.path.join(wheels, w) for w in os.listdir(wheels) if w.endswith(".whl")][0]
    sh([os.path.join(base, "venv/bin/pip"), "install", "-q", "--no-deps", "--no-index", wheel])
    binary = os.path.join(base, "venv/bin/conntrack-zbx")
    conf = os.path.join(base, "userparameter_conntrack.conf")
    with open(conf, "w") as f:
        f.write(keys.agent_conf(binary))
    return Plugin(base, binary, conf)


PACKAGED_CONF = {"agentd": "/etc/zabbix/zabbix_agentd.d/userparameter_conntrack.conf",
                 "agent2": "/etc/zabbix/zabbix_agent2.d/userparameter_conntrack.conf"}


def install_deb(repo: str, root: "DebRoot", agent: str = "agent2") -> Plugin:
    """Install the project's .deb into a Debian root the way a Debian host does (``dpkg -i``): its
    system python3, the shipped agent 2 conf, the grant its postinst checks and puts in place.
    A version already there is replaced (``--purge`` first: each run installs this checkout)."""
    from lab.debroot import SHARED

    out = tempfile.mkdtemp(prefix="ctzbx-deb-", dir=SHARED)
    built = sh(["bash", os.path.join(repo, "packaging", "build-deb.sh"), out], cwd=repo)
    deb = built.stdout.decode().strip().splitlines()[-1]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    sh(root.cmd(["dpkg", "--purge", "conntrack-zbx"]), check=False, env=env)
    sh(root.cmd(["dpkg", "-i", deb]), env=env)
    return Plugin(out, "/usr/bin/conntrack-zbx", root.inside(PACKAGED_CONF[agent]))


def grant_sudo(binary: str, path: str) -> None:
    """Install the generated sudoers drop-in for ``binary`` at ``path`` (mode 0440, visudo-checked)."""
    with open(path, "w") as f:
        f.write(keys.sudoers(binary))
    os.chmod(path, 0o440)
    check = sh(["visudo", "-cf", path], check=False)
    if check.returncode != 0:
        os.remove(path)
        raise RuntimeError("visudo rejected %s: %s" % (path, check.stdout + check.stderr))


def stop(proc: "Optional[subprocess.Popen]") -> None:
    """An agent run in the foreground: TERM, then KILL if it has not gone in 10 s."""
    if proc and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


STOCK_CONF = {"agentd": "/etc/zabbix/zabbix_agentd.conf", "agent2": "/etc/zabbix/zabbix_agent2.conf"}


def edit_conf(text: str, settings: Dict[str, str], unset: Tuple[str, ...] = ()) -> str:
    """An agent configuration edited as an admin edits it: each setting replaces the active line
    of that key, else the commented template line (``# Key=...``), else is appended; ``unset``
    comments a key out. Every other line, ``Include`` among them, stays as it was."""
    lines = text.splitlines()
    for key in unset:
        lines = ["# " + ln if re.match(r"%s\s*=" % key, ln) else ln for ln in lines]
    for key, value in settings.items():
        active = [i for i, ln in enumerate(lines) if re.match(r"%s\s*=" % key, ln)]
        template = [i for i, ln in enumerate(lines) if re.match(r"#\s*%s\s*=" % key, ln)]
        if active:
            lines[active[0]] = "%s=%s" % (key, value)
            lines = [ln for i, ln in enumerate(lines) if i not in active[1:]]
        elif template:
            lines.insert(template[-1] + 1, "%s=%s" % (key, value))
        else:
            lines.append("%s=%s" % (key, value))
    return "\n".join(lines) + "\n"


class Agent:
    """zabbix_agentd or zabbix_agent2 in the foreground as the zabbix user, on ``listen_ip:port``,
    inside a lab network namespace: the distribution's own configuration directory as its package
    left it, the agent conf edited where an admin edits it (``Server``, ``ListenPort``...), and the
    UserParameter file put where that conf's stock ``Include`` reads it by ``conntrack-zbx
    agent-conf`` (install.md's step), or by the package already (a Debian root after ``dpkg -i``).
    The lab's one difference: that directory is a copy, bind-mounted over /etc/zabbix in the
    agent's own mount namespace, so several agents run side by side (docs/lab.md)."""

    def __init__(self, kind: str, port: int, userparameter_conf: str, netns: Netns,
                 timeout: int = 10, listen_ip: str = "127.0.0.1", server: str = "127.0.0.1",
                 binds: Optional[Dict[str, str]] = None, server_active: str = "", hostname: str = "",
                 root: "Optional[DebRoot]" = None) -> None:
        """``binds``: {host dir: path it replaces}, bind-mounted in the agent's own mount namespace
        (``ip netns exec`` gives it one), e.g. a lab /etc/sysctl.d that tests may rewrite.
        ``root``: the agent of that Debian root (zabbix_agent2 7.0 from Debian 13), run in it."""
        self.kind, self.port, self.netns, self.ip = kind, port, netns, listen_ip
        self.root = root
        if root is not None:
            from lab.debroot import SHARED
            workdir = SHARED
        else:
            workdir = "/tmp"
        self.dir = tempfile.mkdtemp(prefix="ctzbx-%s-" % kind, dir=workdir)
        shutil.chown(self.dir, "zabbix", "zabbix")
        os.chmod(self.dir, 0o755)
        inside = root.inside if root is not None else (lambda p: p)
        etc = os.path.join(self.dir, "root")
        shutil.copytree(inside("/etc/zabbix"), os.path.join(etc, "etc/zabbix"), symlinks=True)
        self.binds = dict(binds or {})
        self.binds[os.path.join(etc, "etc/zabbix")] = "/etc/zabbix"
        if not os.path.realpath(userparameter_conf).startswith(inside("/etc/zabbix") + "/"):
            # a pip install: install.md's `conntrack-zbx agent-conf --apply --source FILE`, here
            # on the copy (--root) rather than the host's own /etc/zabbix
            sh([sys.executable, "-m", "conntrack_zbx", "agent-conf", "--apply", "--source", userparameter_conf,
                "--root", etc], cwd=REPO)
        settings = {
            # the agent's own address too: the readiness probe runs zabbix_get beside it
            "Server": server if listen_ip in server.split(",") else server + "," + listen_ip,
            "ListenIP": listen_ip, "ListenPort": str(port),
            "LogType": "file", "LogFile": "%s/agent.log" % self.dir, "PidFile": "%s/agent.pid" % self.dir,
            "Timeout": str(timeout),
        }
        if server_active:  # active checks: the agent asks ServerActive for its items, as Hostname
            settings.update(ServerActive=server_active, Hostname=hostname, RefreshActiveChecks="60",
                            BufferSend="1")
        if kind == "agent2":
            settings["ControlSocket"] = "%s/agent2.sock" % self.dir
        self.conf = STOCK_CONF[kind]  # where the agent reads it, in its own mount namespace
        self.conf_file = path = os.path.join(etc, self.conf.lstrip("/"))  # the same file, from anywhere
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(edit_conf(text, settings, () if server_active else ("ServerActive",)))
        self.proc = None  # type: subprocess.Popen

    def _wrap(self, argv: List[str]) -> List[str]:
        return self.netns.cmd(argv)

    def __enter__(self) -> "Agent":
        binary = AGENTD if self.kind == "agentd" else AGENT2
        argv = AS_ZABBIX + [binary, "-c", self.conf, "-f"]
        inside = self.root.inside if self.root is not None else (lambda p: p)
        if self.root is not None:
            argv = self.root.cmd(argv)
        if self.binds:
            mounts = " && ".join("mkdir -p %s && mount --bind %s %s" % (inside(dst), src, inside(dst))
                                 for src, dst in sorted(self.binds.items()))
            argv = ["sh", "-c", mounts + ' && exec "$@"', "agent"] + argv
        self.proc = subprocess.Popen(self._wrap(argv),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited: %s" % (self.kind, self.log()))
            if sh(self._wrap([ZABBIX_GET, "-s", self.ip, "-p", str(self.port), "-k",
                              "agent.ping"]), check=False).stdout.strip() == b"1":
                return self
            time.sleep(0.2)
        self.__exit__()
        raise RuntimeError("%s did not answer on port %d: %s" % (self.kind, self.port, self.log()))

    def __exit__(self, *exc) -> None:
        stop(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        try:
            with open(os.path.join(self.dir, "agent.log")) as f:
                return f.read()[-2000:]
        except OSError as e:
            return str(e)

    def get(self, key: str) -> str:
        """A passive check, exactly as the server makes it."""
        p = sh(self._wrap([ZABBIX_GET, "-s", self.ip, "-p", str(self.port), "-k", key]),
               check=False)
        return p.stdout.decode().rstrip("\n")


SERVICES = {"agentd": "zabbix-agent", "agent2": "zabbix-agent2"}
STOCK_PORT = 10050


def read_unit(text: str, name: str) -> Dict[str, List[str]]:
    """A systemd unit's ``[Service]`` settings as {key: [values]} (``%p``: the unit's name)."""
    out = {}  # type: Dict[str, List[str]]
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip().replace("%p", name))
    return out


def unit_command(unit: Dict[str, List[str]], read_file) -> Tuple[List[str], str, str]:
    """What systemd runs for a ``Type=simple`` unit: (argv, user, group), ``$VAR`` and ``${VAR}``
    from ``Environment=`` and ``EnvironmentFile=`` (a leading ``-``: optional), split on spaces."""
    env = {}  # type: Dict[str, str]
    for value in unit.get("Environment", []):
        for word in shlex.split(value):
            k, _, v = word.partition("=")
            env[k] = v
    for value in unit.get("EnvironmentFile", []):
        text = read_file(value.lstrip("-"))
        if text is None and not value.startswith("-"):
            raise FileNotFoundError(value)
        for line in (text or "").splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                k, _, v = line.strip().partition("=")
                env[k] = v.strip('"')
    line = re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), unit["ExecStart"][-1].lstrip("-@+!"))
    return line.split(), unit.get("User", ["root"])[-1], unit.get("Group", unit.get("User", ["root"]))[-1]


class StockAgent:
    """A distribution's own agent as its package ships it: the systemd unit's command, user and
    environment (what ``systemctl restart zabbix-agent`` runs on a Debian host), its configuration
    file untouched (port 10050, ``Server=127.0.0.1``, the stock ``Include``). It runs inside a lab
    namespace, which has its own loopback and port 10050, and optionally in a Debian root."""

    def __init__(self, kind: str, netns: Netns, root: "Optional[DebRoot]" = None) -> None:
        self.kind, self.netns, self.root = kind, netns, root
        self.service = SERVICES[kind]
        self.proc = None  # type: Optional[subprocess.Popen]

    def _path(self, path: str) -> str:
        return self.root.inside(path) if self.root is not None else path

    def _read(self, path: str) -> Optional[str]:
        try:
            with open(self._path(path)) as f:
                return f.read()
        except OSError:
            return None

    def command(self) -> List[str]:
        unit = self._read("/lib/systemd/system/%s.service" % self.service)
        if unit is None:
            raise RuntimeError("%s: no systemd unit %s (is the package installed?)" % (self.kind, self.service))
        argv, user, group = unit_command(read_unit(unit, self.service), self._read)
        # the unit's runtime directory comes from the package's tmpfiles.d (systemd-tmpfiles at boot)
        for line in (self._read("/usr/lib/tmpfiles.d/%s.conf" % self.service) or "").splitlines():
            f = line.split()
            if len(f) >= 5 and f[0] == "d":
                os.makedirs(self._path(f[1]), exist_ok=True)
                shutil.chown(self._path(f[1]), f[3], f[4])
        argv = ["setpriv", "--reuid=" + user, "--regid=" + group, "--init-groups"] + argv
        return self.root.cmd(argv) if self.root is not None else argv

    def __enter__(self) -> "StockAgent":
        self.proc = subprocess.Popen(self.netns.cmd(self.command()), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode(errors="replace") if self.proc.stdout else ""
                raise RuntimeError("%s exited %s: %s" % (self.service, self.proc.returncode, out[-2000:]))
            if self.get("agent.ping") == "1":
                return self
            time.sleep(0.2)
        self.__exit__()
        raise RuntimeError("%s did not answer on port %d" % (self.service, STOCK_PORT))

    def __exit__(self, *exc) -> None:
        stop(self.proc)

    def get(self, key: str) -> str:
        """A passive check from the namespace's own loopback (the stock ``Server=127.0.0.1``)."""
        p = sh(self.netns.cmd([ZABBIX_GET, "-s", "127.0.0.1", "-p", str(STOCK_PORT), "-k", key]), check=False)
        return p.stdout.decode().rstrip("\n")
