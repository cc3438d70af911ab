"""The lifeline on the real kernel: a node whose table is full of ASSURED entries (the global
nf_conntrack_max lowered from the init namespace, and restored), a real zabbix_agentd on it, polled
over a veth from a monitor namespace with zabbix_get. Without ``conntrack-zbx protect`` the polls
die with the kernel's "table full, dropping packet"; with it every one is answered. One test per
host-firewall shape: none, nftables accept-by-port, nftables accepting only ``ct state new``, and
iptables-legacy's ``--state NEW`` then REJECT (refused, nothing changed), and a real firewalld
(refused, nothing changed, and the firewall-cmd commands it gives instead keep the agent reachable
through the full table). ``--remove`` leaves the ruleset as it found it."""

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time

import pytest

from lab import bulk
from lab.agent import ZABBIX_GET, Agent, install_plugin
from lab.netns import Entered, Netns, sh, veth
from tests.conftest import require_root

pytestmark = pytest.mark.real

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX = "/proc/sys/net/netfilter/nf_conntrack_max"
MON_IP, NODE_IP = "169.254.79.1", "169.254.79.2"
PORT = 10079
FULL = 512  # the lowered global limit the node's table is filled to

SHAPES = {
    "no firewall": "",
    "nftables accept by port": (
        "table inet host_fw {\n  chain input {\n    type filter hook input priority 0; policy drop;\n"
        "    iif lo accept\n    ct state established,related accept\n    tcp dport %d accept\n  }\n}\n" % PORT),
    "nftables ct state new only": (
        "table inet host_fw {\n  chain input {\n    type filter hook input priority 0; policy drop;\n"
        "    iif lo accept\n    ct state established,related accept\n    tcp dport %d ct state new accept\n"
        "  }\n  chain output {\n    type filter hook output priority 0; policy drop;\n"
        "    oif lo accept\n    ct state established,related,new accept\n  }\n}\n" % PORT),
}


def read_max():
    with open(MAX) as f:
        return int(f.read())


@pytest.fixture(scope="module")
def plugin():
    require_root()
    p = install_plugin(REPO, sys.executable)
    yield p
    subprocess.run(["rm", "-rf", p.base], check=False)


@pytest.fixture
def node(plugin, tmp_path):
    """node + mon namespaces on a veth, the agent on the node (conf under tmp_path/etc), the
    global limit saved; the test fills the table. Everything restored on the way out."""
    conf = tmp_path / "etc" / "zabbix" / "zabbix_agentd.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("Server=%s\nListenPort=%d\nListenIP=%s\n" % (MON_IP, PORT, NODE_IP))
    saved = read_max()
    try:
        with Netns() as n, Netns(conntrack=False) as mon:
            veth(mon, n, MON_IP, NODE_IP)
            with Agent("agentd", PORT, plugin.conf, netns=n, listen_ip=NODE_IP, server=MON_IP) as agent:
                yield {"ns": n, "mon": mon, "agent": agent, "root": str(tmp_path)}
    finally:
        with open(MAX, "w") as f:
            f.write(str(saved))


@pytest.fixture
def fill(node):
    """Lower the global limit and keep the node's table full of ASSURED ESTABLISHED entries, as
    the incident's NAT did: once the table is full the kernel's garbage collector evicts what early
    drop may take (closed connections, the polls' own TIME_WAITs), and a leak that keeps
    connecting takes each freed slot again. A thread in the node's namespace plays that NAT."""
    import threading

    ns, stop = node["ns"], threading.Event()

    def leak():
        n = 0
        with Entered(ns):
            while not stop.is_set():
                bulk.insert([bulk.Flow("127.1.%d.%d" % (n >> 8 & 255, n & 255), "tcp", "ESTABLISHED", 1)
                             for n in range(n, n + 16)], timeout=bulk.BUSY)
                n += 16
                stop.wait(0.02)

    def start():
        with open(MAX, "w") as f:
            f.write(str(FULL))
        with Entered(ns):
            bulk.insert([bulk.Flow("127.0.88.%d" % i, "tcp", "ESTABLISHED", FULL // 200 + 1) for i in range(1, 201)],
                        timeout=bulk.BUSY)
        assert int(ns.read("/proc/sys/net/netfilter/nf_conntrack_count")) >= FULL - 2
        t.start()

    t = threading.Thread(target=leak, daemon=True)
    yield start
    stop.set()
    if t.is_alive():
        t.join(10)


def polls(mon, n, timeout=2):
    ok = 0
    for _ in range(n):
        p = sh(mon.cmd([ZABBIX_GET, "-s", NODE_IP, "-p", str(PORT), "-t", str(timeout), "-k", "agent.ping"]),
               check=False)
        ok += p.stdout.strip() == b"1"
    return ok


def protect(ns, root, *argv):
    p = subprocess.run(ns.cmd([sys.executable, "-m", "conntrack_zbx", "protect", "--root", root] + list(argv)),
                       capture_output=True, text=True, cwd=REPO)
    return p.returncode, p.stdout, p.stderr


def saved_iptables(ns):
    """iptables-legacy-save without its timestamped comment lines."""
    out = sh(ns.cmd(["iptables-legacy-save"])).stdout.decode()
    return [ln for ln in out.splitlines() if not ln.startswith("#")]


def ruleset(ns):
    return json.loads(sh(ns.cmd(["nft", "-j", "list", "ruleset"])).stdout)["nftables"][1:]  # no metainfo


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_full_table_cannot_blind_the_agent_once_protected(node, fill, shape):
    ns, mon, root = node["ns"], node["mon"], node["root"]
    if SHAPES[shape]:
        sh(ns.cmd(["nft", "-f", "-"]), input=SHAPES[shape].encode())
    assert polls(mon, 3) == 3  # reachable through the host's firewall before the table fills
    before = ruleset(ns)
    fill()
    assert polls(mon, 8) <= 2  # the kernel drops the polls' SYNs: "table full, dropping packet"
    rc, out, err = protect(ns, root, "--apply")
    assert rc == 0, err
    assert "tcp dport %d notrack" % PORT in out and "ip saddr { %s }" % MON_IP in out
    if shape == "nftables ct state new only":  # untracked is neither new nor established: the accept
        assert "inet host_fw input" in out and "ct state untracked accept" in out
    assert polls(mon, 50) == 50
    persisted = os.path.join(root, "etc", "conntrack-zbx", "lifeline.nft")
    assert os.path.exists(persisted)
    rc, out, err = protect(ns, root, "--remove")
    assert rc == 0, err
    assert ruleset(ns) == before and not os.path.exists(persisted)


def test_iptables_new_then_reject_is_refused_and_nothing_changes(node):
    """The CentOS 7 shape: -m state --state NEW --dport 10050 -j ACCEPT, then REJECT. Untracked
    packets would hit the REJECT: protect refuses, names the rule to add, and changes nothing."""
    ns, root = node["ns"], node["root"]
    for cmd in (["-A", "INPUT", "-m", "state", "--state", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
                ["-A", "INPUT", "-p", "tcp", "-m", "state", "--state", "NEW", "--dport", str(PORT), "-j", "ACCEPT"],
                ["-A", "INPUT", "-j", "REJECT"]):
        sh(ns.cmd(["iptables-legacy"] + cmd))
    before = (ruleset(ns), saved_iptables(ns))
    rc, out, err = protect(ns, root, "--apply")
    assert rc == 2 and "nothing was changed" in err and "iptables -I INPUT 1 -p tcp --dport PORT" in err, err
    assert "Traceback" not in err
    after = (ruleset(ns), saved_iptables(ns))
    assert after == before
    assert not os.path.exists(os.path.join(root, "etc", "conntrack-zbx"))


SYSTEM_BUS = "/run/dbus/system_bus_socket"


def bus_up():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(SYSTEM_BUS)
        return True
    except OSError:
        return False
    finally:
        s.close()


@pytest.fixture
def firewalld(node, tmp_path):
    """Debian's firewalld (nftables backend) running in the node's namespace, the agent's port
    opened in its default zone (permanently, as an admin does); the system D-Bus it needs started
    if none runs. firewalld's configuration under /etc/firewalld is the host's: saved and put
    back."""
    ns = node["ns"]
    saved = str(tmp_path / "firewalld-etc")
    shutil.copytree("/etc/firewalld", saved)
    had_run = os.path.isdir("/run/firewalld")  # firewalld leaves it behind; the lifeline state looks at it
    bus = None
    if not bus_up():
        os.makedirs("/run/dbus", exist_ok=True)
        bus = subprocess.Popen(["dbus-daemon", "--system", "--nofork", "--nopidfile"])
        deadline = time.monotonic() + 30
        while not bus_up():
            assert time.monotonic() < deadline and bus.poll() is None, "the system D-Bus did not start"
            time.sleep(0.1)
    fwd = subprocess.Popen(ns.cmd(["firewalld", "--nofork", "--nopid"]), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while sh(ns.cmd(["firewall-cmd", "--state"]), check=False).stdout.strip() != b"running":
            assert time.monotonic() < deadline and fwd.poll() is None, "firewalld did not come up"
            time.sleep(0.2)
        sh(ns.cmd(["firewall-cmd", "--permanent", "--add-port=%d/tcp" % PORT]))
        sh(ns.cmd(["firewall-cmd", "--reload"]))
        yield fwd
    finally:
        fwd.terminate()
        try:
            fwd.wait(20)
        except subprocess.TimeoutExpired:
            fwd.kill()
            fwd.wait()
        shutil.rmtree("/etc/firewalld")
        shutil.copytree(saved, "/etc/firewalld")
        if not had_run:
            shutil.rmtree("/run/firewalld", ignore_errors=True)
        if bus is not None:
            bus.terminate()
            bus.wait(10)
            if os.path.exists(SYSTEM_BUS):
                os.remove(SYSTEM_BUS)  # the bus it started leaves its socket file behind


def test_firewalld_is_refused_with_the_commands_that_keep_the_agent_reachable(node, fill, firewalld):
    """firewalld keeps rules across a reboot only in its own configuration: protect changes
    nothing and gives the firewall-cmd commands instead; run as given, they carry the agent through
    the full table (firewalld's zone accepts the untracked packets on the port it opens)."""
    ns, mon, root = node["ns"], node["mon"], node["root"]
    assert polls(mon, 3) == 3  # through firewalld's zone, the port opened
    before = ruleset(ns)
    assert any(t.get("table", {}).get("name") == "firewalld" for t in before)
    rc, out, err = protect(ns, root, "--apply")
    assert rc == 2 and "nothing was changed" in err and "firewalld" in err and "Traceback" not in err, err
    assert ruleset(ns) == before and not os.path.exists(os.path.join(root, "etc", "conntrack-zbx"))
    commands = [shlex.split(ln.strip()) for ln in err.splitlines() if ln.strip().startswith("firewall-cmd ")]
    assert commands[-1] == ["firewall-cmd", "--reload"] and len(commands) >= 3, err
    assert all("-s" in c and MON_IP in c for c in commands if "PREROUTING" in c), commands
    assert lifeline(ns)["protected"] == 0
    fill()
    assert polls(mon, 8) <= 2  # blinded: the full table drops the polls
    for c in commands:
        sh(ns.cmd(c))
    assert polls(mon, 50) == 50
    # and the template hears of it: the talkers answer's lifeline reads firewalld's direct rules
    state = lifeline(ns)
    assert state["protected"] == 1 and state["ports"] == "in %d" % PORT, state


def lifeline(ns):
    """The ``lifeline`` field of a talkers answer on the node, as the agent's sudo line runs it."""
    p = sh(ns.cmd([sys.executable, "-m", "conntrack_zbx", "talkers", "--max-age=0", "--source=proc"]), cwd=REPO)
    return json.loads(p.stdout)["lifeline"]


DEBIAN_NFTABLES_CONF = """#!/usr/sbin/nft -f

flush ruleset

table inet filter {
	chain input {
		type filter hook input priority filter;
	}
	chain forward {
		type filter hook forward priority filter;
	}
	chain output {
		type filter hook output priority filter;
	}
}
"""


def test_the_lifeline_survives_a_reboot_and_goes_with_remove(node, fill):
    """Persistence as nftables.service does it: Debian's /etc/nftables.conf, protect's include
    added once however often it runs; a reboot (the ruleset flushed, the boot file loaded as
    nftables.service loads it) brings the lifeline back, and it carries the agent through a full
    table; --remove leaves the boot file as it was."""
    ns, mon, root = node["ns"], node["mon"], node["root"]
    conf = os.path.join(root, "etc", "nftables.conf")
    with open(conf, "w") as f:
        f.write(DEBIAN_NFTABLES_CONF)
    sh(ns.cmd(["nft", "-f", conf]))  # the host as booted before protect
    for _ in range(2):
        rc, out, err = protect(ns, root, "--apply")
        assert rc == 0 and "included from" in out, err
    with open(conf) as f:
        booted = f.read()
    assert booted.count('include "/etc/conntrack-zbx/lifeline.nft"') == 1, booted
    # the reboot: nothing of this boot's ruleset is left, and the boot file is loaded (its include
    # read from the test's root, where protect wrote it)
    sh(ns.cmd(["nft", "flush", "ruleset"]))
    assert "conntrack_zbx_lifeline" not in sh(ns.cmd(["nft", "list", "tables"])).stdout.decode()
    boot = os.path.join(root, "boot-nftables.conf")
    with open(boot, "w") as f:
        f.write(booted.replace('"/etc/conntrack-zbx/', '"%s/etc/conntrack-zbx/' % root))
    sh(ns.cmd(["nft", "-f", boot]))
    listed = sh(ns.cmd(["nft", "list", "table", "inet", "conntrack_zbx_lifeline"])).stdout.decode()
    assert "tcp dport %d notrack" % PORT in listed and "tcp sport %d notrack" % PORT in listed, listed
    fill()
    assert polls(mon, 50) == 50
    rc, out, err = protect(ns, root, "--remove")
    assert rc == 0, err
    with open(conf) as f:
        assert f.read() == DEBIAN_NFTABLES_CONF
    assert not os.path.exists(os.path.join(root, "etc", "conntrack-zbx", "lifeline.nft"))
