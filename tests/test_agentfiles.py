"""`agent-conf` on every agent layout users have, in scratch roots: the stock configuration files'
``Include`` lines as their packages ship them (Debian's and Ubuntu's zabbix-agent and
zabbix-agent2, Zabbix's repository packages, EPEL), the agent's file never edited."""

import os

from conntrack_zbx import agentfiles
from conntrack_zbx.cli import main

AGENTD_D = "/etc/zabbix/zabbix_agentd.d/userparameter_conntrack.conf"
AGENT2_D = "/etc/zabbix/zabbix_agent2.d/userparameter_conntrack.conf"
LAYOUTS = {
    # the Include lines of the shipped configuration files (layout table in conntrack_zbx/agentconf.py)
    "debian": {"etc/zabbix/zabbix_agentd.conf": "Include=/etc/zabbix/zabbix_agentd.conf.d/*.conf\n",
               "etc/zabbix/zabbix_agent2.conf": "Include=/etc/zabbix/zabbix_agent2.d/*.conf\n"
                                                "Include=./zabbix_agent2.d/plugins.d/*.conf\n"},
    "zabbix-repo": {"etc/zabbix/zabbix_agentd.conf": "Include=/etc/zabbix/zabbix_agentd.d/*.conf\n",
                    "etc/zabbix/zabbix_agent2.conf": "Include=/etc/zabbix/zabbix_agent2.d/*.conf\n"},
    "epel": {"etc/zabbix_agentd.conf": "Include=/etc/zabbix_agentd.conf.d/*.conf\n"},
}


def host(tmp_path, layout, package=True):
    for rel, include in LAYOUTS[layout].items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# stock\nServer=127.0.0.1\n" + include)
        for line in include.splitlines():
            d = line.split("=", 1)[1].rsplit("/", 1)[0]
            d = d if d.startswith("/") else os.path.join("/" + os.path.dirname(rel), d)
            (tmp_path / d.lstrip("/")).mkdir(parents=True, exist_ok=True)
    if package:  # what the deb or the rpm leaves: its code and the two shipped confs
        (tmp_path / "usr/lib/conntrack-zbx").mkdir(parents=True)
        for f in (AGENTD_D, AGENT2_D):
            (tmp_path / f.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / f.lstrip("/")).write_text("# conntrack_zbx: shipped\nUserParameter=conntrack.stats,x\n")
    return tmp_path


def agent_conf(capsys, root, *args):
    rc = main(["agent-conf", "--root", str(root)] + list(args))
    out, err = capsys.readouterr()
    return rc, out + err


def reads(root, conf):
    """Which of our files the agent reading ``conf`` would load, by its Include lines."""
    return [f for f in agentfiles.find(str(root)) if f.conf == conf][0].reading


def test_debian_agentd_gets_a_link_where_its_include_points(tmp_path, capsys):
    root = host(tmp_path, "debian")
    before = {p: (root / p).read_text() for p in LAYOUTS["debian"]}
    assert reads(root, "/etc/zabbix/zabbix_agentd.conf") == ()  # the defect: the package alone is not read
    rc, out = agent_conf(capsys, root)
    assert rc == 0 and "would link /etc/zabbix/zabbix_agentd.conf.d/userparameter_conntrack.conf" in out
    assert not (root / "etc/zabbix/zabbix_agentd.conf.d/userparameter_conntrack.conf").exists()  # a dry run
    rc, out = agent_conf(capsys, root, "--apply")
    assert rc == 0 and "service zabbix-agent restart" in out and "zabbix-agent2 restart" not in out
    link = root / "etc/zabbix/zabbix_agentd.conf.d/userparameter_conntrack.conf"
    assert os.readlink(str(link)) == AGENTD_D
    assert reads(root, "/etc/zabbix/zabbix_agentd.conf") == (
        "/etc/zabbix/zabbix_agentd.conf.d/userparameter_conntrack.conf",)
    assert reads(root, "/etc/zabbix/zabbix_agent2.conf") == (AGENT2_D,)
    assert {p: (root / p).read_text() for p in LAYOUTS["debian"]} == before  # never edited
    rc, out = agent_conf(capsys, root, "--apply")  # idempotent
    assert "nothing to do" in out and "linked" not in out
    rc, out = agent_conf(capsys, root, "--remove")
    assert "removed /etc/zabbix/zabbix_agentd.conf.d/userparameter_conntrack.conf" in out
    assert not os.path.lexists(str(link)) and (root / AGENTD_D.lstrip("/")).exists()  # the package's own stays


def test_zabbix_repository_layout_needs_nothing(tmp_path, capsys):
    root = host(tmp_path, "zabbix-repo")
    rc, out = agent_conf(capsys, root, "--apply")
    assert rc == 0 and out.count("nothing to do") == 2 and "link" not in out


def test_epel_layout_is_linked_too(tmp_path, capsys):
    root = host(tmp_path, "epel")
    rc, out = agent_conf(capsys, root, "--apply")
    assert rc == 0 and os.readlink(str(root / "etc/zabbix_agentd.conf.d/userparameter_conntrack.conf")) == AGENTD_D


def test_a_conf_without_include_gets_the_line_to_add_not_an_edit(tmp_path, capsys):
    root = host(tmp_path, "zabbix-repo")
    (root / "etc/zabbix/zabbix_agentd.conf").write_text("Server=127.0.0.1\n")
    rc, out = agent_conf(capsys, root, "--apply")
    assert rc == 0 and "add this line to /etc/zabbix/zabbix_agentd.conf" in out
    assert "Include=%s" % AGENTD_D in out
    assert (root / "etc/zabbix/zabbix_agentd.conf").read_text() == "Server=127.0.0.1\n"


def test_a_key_defined_twice_is_taken_away(tmp_path, capsys):
    """An admin who made agentd include both directories: our link on top of the shipped file
    would define every key twice, and zabbix_agentd refuses to start on that."""
    root = host(tmp_path, "debian")
    agent_conf(capsys, root, "--apply")
    conf = root / "etc/zabbix/zabbix_agentd.conf"
    conf.write_text(conf.read_text() + "Include=/etc/zabbix/zabbix_agentd.d/\n")
    rc, out = agent_conf(capsys, root, "--apply")
    assert "removed /etc/zabbix/zabbix_agentd.conf.d/userparameter_conntrack.conf" in out
    assert reads(root, "/etc/zabbix/zabbix_agentd.conf") == (AGENTD_D,)


def test_a_pip_install_copies_its_own_conf(tmp_path, capsys, monkeypatch):
    root = host(tmp_path, "debian", package=False)
    src = tmp_path / "checkout.conf"
    src.write_text("# conntrack_zbx: from a checkout\n"
                   "UserParameter=conntrack.stats,/usr/local/bin/conntrack-zbx stats\n")
    monkeypatch.chdir(tmp_path)
    rc, out = agent_conf(capsys, root, "--apply", "--source", "checkout.conf")
    assert rc == 0, out
    placed = root / "etc/zabbix/zabbix_agentd.conf.d/userparameter_conntrack.conf"
    assert not placed.is_symlink() and placed.read_text() == src.read_text()
    assert (root / "etc/zabbix/zabbix_agent2.d/userparameter_conntrack.conf").read_text() == src.read_text()
    rc, out = agent_conf(capsys, root, "--remove")
    assert not placed.exists() and out.count("removed") == 2


def test_no_agent_says_what_to_do(tmp_path, capsys):
    rc, out = agent_conf(capsys, tmp_path)
    assert rc == 0 and "no Zabbix agent configuration found" in out and "agent-conf --apply" in out
    rc, out = agent_conf(capsys, tmp_path, "--source", "missing.conf")
    assert rc != 0 and "--source missing.conf: no such file" in out
