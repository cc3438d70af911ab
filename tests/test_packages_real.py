"""The native packages, for real: the .deb built offline, installed with dpkg on this machine,
both Zabbix agents polled as the zabbix user through its conf and sudo grant, upgraded with a
locally edited conf, purged without a trace; the .rpm built, inspected, installed into a scratch
root and run there on the oldest Python an agent host has (3.6)."""

import glob
import hashlib
import json
import os
import pwd
import subprocess

import pytest

from lab.agent import StockAgent
from lab.netns import Netns, sh
from tests.conftest import MIXED, require_root

pytestmark = pytest.mark.real

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AGENTD_CONF = "/etc/zabbix/zabbix_agentd.d/userparameter_conntrack.conf"
AGENT2_CONF = "/etc/zabbix/zabbix_agent2.d/userparameter_conntrack.conf"
GRANT = "/etc/sudoers.d/conntrack-zbx"


def build(kind, out, version=None):
    env = dict(os.environ, **({"VERSION": version} if version else {}))
    p = subprocess.run(["bash", os.path.join(REPO, "packaging", "build-%s.sh" % kind), str(out)],
                       cwd=REPO, capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip().splitlines()[-1]


def dpkg(*args):
    p = subprocess.run(["dpkg"] + list(args), capture_output=True, text=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    assert p.returncode == 0, p.stdout + p.stderr
    return p


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    require_root()
    subprocess.run(["dpkg", "--purge", "conntrack-zbx"], capture_output=True)
    deb = build("deb", tmp_path_factory.mktemp("deb"))
    dpkg("-i", deb)
    yield deb
    subprocess.run(["dpkg", "--purge", "conntrack-zbx"], capture_output=True)


def test_deb_installs_the_agent_side_and_a_checked_grant(installed):
    files = dpkg("-L", "conntrack-zbx").stdout.split()
    for path in ("/usr/bin/conntrack-zbx", "/usr/lib/conntrack-zbx/conntrack_zbx/cli.py", AGENTD_CONF,
                 AGENT2_CONF, "/usr/share/conntrack-zbx/templates/conntrack_zbx.yaml",
                 "/usr/share/doc/conntrack-zbx/README.md"):
        assert path in files and os.path.exists(path), path
    assert not any("/lab/" in f or f.startswith("/usr/lib/python3") for f in files)
    st = os.stat(GRANT)
    assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o440, 0, 0)
    assert sh(["visudo", "-cf", GRANT], check=False).returncode == 0
    with open(GRANT) as f:
        assert "NOPASSWD: /usr/bin/conntrack-zbx talkers --params-stdin" in f.read()
    with open(AGENTD_CONF) as f:
        assert "UserParameter=conntrack.stats,/usr/bin/conntrack-zbx stats" in f.read()
    deps = dpkg("-f", installed, "Depends").stdout
    assert deps.strip() == "python3 (>= 3.6)"  # no pip, no venv, no pyzabbix/pyyaml
    with open("/usr/share/doc/conntrack-zbx/copyright") as f:
        copyright_ = f.read()
    assert copyright_.startswith("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/")
    assert "License: MIT" in copyright_ and "Permission is hereby granted" in copyright_
    maintainer = dpkg("-f", installed, "Maintainer").stdout.strip()
    assert "@" in maintainer and "localhost" not in maintainer, maintainer  # someone who answers


def test_what_a_debian_admin_expects_man_md5sums_and_a_version_per_commit(installed):
    page = subprocess.run(["man", "-P", "cat", "conntrack-zbx"], capture_output=True, text=True,
                          env=dict(os.environ, MANWIDTH="100"))
    assert page.returncode == 0, page.stderr
    for command in ("agent-conf", "talkers", "namespaces", "tune", "protect", "--params-stdin"):
        assert command in page.stdout, command
    verify = subprocess.run(["dpkg", "--verify", "conntrack-zbx"], capture_output=True, text=True)
    assert verify.returncode == 0 and verify.stdout == "", verify.stdout  # md5sums present and matching
    assert os.path.getsize("/var/lib/dpkg/info/conntrack-zbx.md5sums") > 0
    head = subprocess.run(["git", "rev-parse", "--short=8", "HEAD"], cwd=REPO, capture_output=True,
                          text=True).stdout.strip()
    version = dpkg("-f", installed, "Version").stdout.strip()
    assert ".g%s" % head in version, version  # two builds of different commits differ


def test_package_version_orders_by_commit():
    import sys

    sys.path.insert(0, os.path.join(REPO, "packaging"))
    from stage import package_version

    a, b = package_version("0.1.0", 141, "0123abcd", False), package_version("0.1.0", 142, "ffff0000", False)
    assert a != b and package_version("0.1.0", 0, "", False) == "0.1.0"
    assert subprocess.run(["dpkg", "--compare-versions", b, "gt", a]).returncode == 0
    assert subprocess.run(["dpkg", "--compare-versions", a, "gt", "0.1.0"]).returncode == 0


def shipped_confs(root=None):
    """Each stock agent configuration and the bytes its package shipped: Debian's zabbix-agent
    generates its conf with ucf from /usr/share/zabbix-agent/zabbix_agentd.conf; zabbix-agent2's
    is a conffile whose md5 dpkg recorded."""
    inside = root.inside if root is not None else (lambda p: p)
    run = root.cmd if root is not None else (lambda argv: argv)
    out = {}
    with open(inside("/usr/share/zabbix-agent/zabbix_agentd.conf"), "rb") as f:
        out["/etc/zabbix/zabbix_agentd.conf"] = hashlib.md5(f.read()).hexdigest()
    listed = sh(run(["dpkg-query", "-W", "-f=${Conffiles}", "zabbix-agent2"])).stdout.decode()
    out.update({p: md5 for p, md5 in (line.split()[:2] for line in listed.splitlines() if line.strip())
                if p == "/etc/zabbix/zabbix_agent2.conf"})
    return out


def assert_untouched(root=None):
    shipped = shipped_confs(root)
    assert len(shipped) == 2, shipped
    for path, md5 in shipped.items():
        with open(root.inside(path) if root is not None else path, "rb") as f:
            assert hashlib.md5(f.read()).hexdigest() == md5, "%s is not as its package shipped it" % path


def answer(agent, key):
    text = agent.get(key)
    assert text.startswith("{"), "%s answered %r to %s" % (agent.service, text, key)
    return json.loads(text)


def poll_stock_agents(root=None, leaky="127.0.5.0/24"):
    """Each agent as its systemd unit starts it, with its stock configuration, in its own namespace:
    the keys answer as the zabbix user, the talkers through the package's sudo grant."""
    for kind in ("agentd", "agent2"):
        with Netns(leaky=[leaky]) as ns:
            src = leaky.replace("0/24", "9")
            ns.traffic([{"kind": "tcp_open", "src": src, "count": 4}])
            with StockAgent(kind, ns, root=root) as agent:
                with open("/proc/%d/status" % agent.proc.pid) as f:
                    uid = next(line.split()[1] for line in f if line.startswith("Uid:"))
                assert int(uid) == pwd.getpwnam("zabbix").pw_uid
                stats = answer(agent, "conntrack.stats")
                assert "error" not in stats and stats["count"] >= 4, (kind, stats)
                talkers = answer(agent, "conntrack.talkers[,,,0]")
                assert "error" not in talkers, (kind, talkers)
                assert {t["address"]: t["count"] for t in talkers["sources"]}.get(src) == 4, talkers


def test_stock_agents_read_the_package_with_their_shipped_configuration(installed):
    """Debian 12's own zabbix-agent (which includes zabbix_agentd.conf.d/) and zabbix-agent2, their
    configuration files byte for byte as shipped: after dpkg -i, both answer the keys."""
    assert_untouched()
    assert os.readlink("/etc/zabbix/zabbix_agentd.conf.d/userparameter_conntrack.conf") == AGENTD_CONF
    poll_stock_agents()
    assert_untouched()


def test_upgrade_keeps_an_edited_conf_and_purge_leaves_nothing(installed, tmp_path):
    with open(AGENTD_CONF, "a") as f:
        f.write("# edited by the admin\n")
    listed = dpkg("-L", "conntrack-zbx").stdout.split()
    newer = build("deb", tmp_path, version="99.0.0")
    dpkg("-i", newer)
    assert dpkg("-s", "conntrack-zbx").stdout.count("Version: 99.0.0") == 1
    with open(AGENTD_CONF) as f:
        assert f.read().endswith("# edited by the admin\n")
    assert os.path.exists(GRANT) and sh(["visudo", "-cf", GRANT], check=False).returncode == 0
    subprocess.run(["/usr/bin/conntrack-zbx", "stats"], check=True, capture_output=True)  # makes byte-code
    dpkg("--purge", "conntrack-zbx")
    left = [p for p in listed if os.path.isfile(p) or (os.path.isdir(p) and "conntrack" in p)]
    assert left == []
    assert not os.path.exists(GRANT) and not os.path.exists("/usr/lib/conntrack-zbx")
    assert not glob.glob("/etc/sudoers.d/conntrack-zbx.*") and not os.path.exists("/var/lib/conntrack-zbx")
    assert not os.path.lexists("/etc/zabbix/zabbix_agentd.conf.d/userparameter_conntrack.conf")  # the link too


def test_a_grant_sudo_rejects_is_never_put_in_place(tmp_path):
    require_root()
    broken = tmp_path / "sudoers"
    broken.write_text("zabbix ALL=(root) NOPASSWD /usr/bin/conntrack-zbx talkers\n")  # no colon
    grant = "/etc/sudoers.d/ctzbx-pkgtest"
    env = dict(os.environ, CONNTRACK_ZBX_SHIPPED=str(broken), CONNTRACK_ZBX_GRANT=grant,
               CONNTRACK_ZBX_STATE=str(tmp_path / "state"))
    p = subprocess.run(["sh", os.path.join(REPO, "packaging", "maintscript.sh"), "configure"], env=env,
                       capture_output=True, text=True)
    assert p.returncode != 0 and "visudo rejects" in p.stderr
    assert not glob.glob(grant + "*")


def test_rpm_holds_the_same_tree_and_runs_on_python36(tmp_path):
    require_root()
    rpm = build("rpm", tmp_path / "out")
    listed = sh(["rpm", "-qlp", rpm]).stdout.decode().split()
    assert "/usr/bin/conntrack-zbx" in listed and AGENTD_CONF in listed and AGENT2_CONF in listed
    assert sorted(sh(["rpm", "-qcp", rpm]).stdout.decode().split()) == [AGENT2_CONF, AGENTD_CONF]
    scripts = sh(["rpm", "-qp", "--scripts", rpm]).stdout.decode()
    assert "maintscript.sh configure" in scripts and "maintscript.sh prerm remove" in scripts
    triggers = sh(["rpm", "-qp", "--triggers", rpm]).stdout.decode()
    assert "triggerin scriptlet" in triggers and "zabbix-agent" in triggers and "maintscript.sh agent-conf" in triggers
    requires = sh(["rpm", "-qp", "--requires", rpm]).stdout.decode()
    assert "python3 >= 3.6" in requires and "pyzabbix" not in requires.replace("Suggests", "")
    assert sh(["rpm", "-qLp", rpm]).stdout.decode().split() == ["/usr/share/doc/conntrack-zbx/copyright"]
    assert "/usr/share/man/man1/conntrack-zbx.1.gz" in listed
    root = tmp_path / "root"
    root.mkdir()
    sh(["rpm", "--root", str(root), "--initdb"])
    sh(["rpm", "-i", "--root", str(root), "--nodeps", "--noscripts", rpm])
    assert (root / "usr/lib/conntrack-zbx/conntrack_zbx/cli.py").exists()
    py36 = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.6.*/bin/python3")))
    assert py36, "Python 3.6 (RHEL 8's python3) is needed for this check: pyenv install 3.6"
    code = ("import sys; sys.path.insert(0, %r); from conntrack_zbx.cli import main; "
            "sys.exit(main(['stats', '--proc-root', %r]))" % (str(root / "usr/lib/conntrack-zbx"), MIXED))
    out = subprocess.run([py36[-1], "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and json.loads(out.stdout)["count"] == 18, out.stderr
    sh(["rpm", "-e", "--root", str(root), "--noscripts", "conntrack-zbx"])
    assert not (root / "usr/lib/conntrack-zbx/conntrack_zbx/cli.py").exists()
