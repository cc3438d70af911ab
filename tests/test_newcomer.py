"""What a newcomer tripped on, each refused with its reason or answered correctly: a partial
namespaces answer, an empty or CRLF snapshot, a snapshot's shares against the wrong limit, the
admin commands without pyzabbix, a mistyped --proc-root, --file with --netns, a network with host
bits, protect's relative --agent-conf, make rpm without rpmbuild, tune --auto below boot."""

import json
import os
import subprocess
import sys

import pytest

from conntrack_zbx.cli import main
from tests.conftest import MIXED, REPO, require_root

TABLE = os.path.join(MIXED, "proc/net/nf_conntrack")
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_namespaces_as_a_user_who_cannot_see_them_is_refused_not_partial():
    """As nobody, every other process's namespace is hidden: "0 entries in 1 namespace" would
    read as a quiet host while a container next to it drops."""
    require_root()  # to become nobody
    for argv, stream in ((["namespaces", "--human"], "stderr"), (["namespaces"], "stdout")):
        p = subprocess.run(NOBODY + [sys.executable, "-m", "conntrack_zbx"] + argv, capture_output=True,
                           text=True, cwd=REPO)
        assert p.returncode == 3, p.stdout + p.stderr
        said = getattr(p, stream)
        assert "cannot be seen as uid 65534" in said and "entries in" not in p.stdout
        if stream == "stdout":  # the agent's JSON names the grant the key goes through
            assert "sudoers.d/conntrack-zbx" in json.loads(said)["error"]
        else:
            assert said.rstrip().endswith("run it as root: sudo conntrack-zbx namespaces --human")


def test_an_empty_snapshot_is_refused_with_the_command_that_makes_a_good_one(capsys, tmp_path):
    empty = tmp_path / "f"
    empty.write_bytes(b"")
    rc, out, err = run(capsys, "top", "--file", str(empty))
    assert rc != 0 and "is empty" in err and "sudo cat /proc/net/nf_conntrack > FILE" in err and out == ""
    rc, out, err = run(capsys, "talkers", "--file", str(empty))
    assert rc != 0 and "is empty" in json.loads(out)["error"]


def test_a_crlf_copy_of_a_real_table_counts_as_the_original(capsys, tmp_path):
    with open(TABLE, "rb") as f:
        lf = f.read()
    crlf = tmp_path / "copied-through-windows.txt"
    crlf.write_bytes(lf.replace(b"\n", b"\r\n"))
    rc, top_lf, _ = run(capsys, "top", "--file", TABLE)
    rc2, top_crlf, _ = run(capsys, "top", "--file", str(crlf))
    assert rc == rc2 == 0 and top_lf.startswith("18 entries")
    assert top_crlf.replace(str(crlf), TABLE) == top_lf
    _, t_lf, _ = run(capsys, "talkers", "--file", TABLE)
    _, t_crlf, _ = run(capsys, "talkers", "--file", str(crlf))
    assert json.loads(t_crlf)["entries"] == 18 and json.loads(t_crlf)["skipped"] == 0
    assert json.loads(t_crlf)["sources"] == json.loads(t_lf)["sources"]


@pytest.mark.parametrize("command", ["talkers", "discovery"])
def test_a_snapshots_shares_are_of_the_limit_given_never_this_machines(capsys, command):
    rc, out, _ = run(capsys, command, "--file", TABLE, "--max", "100")
    assert rc == 0
    if command == "talkers":
        doc = json.loads(out)
        assert doc["max"] == 100 and doc["sources"][0]["pct_of_max"] == 3.0  # 3 of 100
        rc, out, _ = run(capsys, command, "--file", TABLE)
        doc = json.loads(out)
        assert doc["max"] is None and all(s["pct_of_max"] is None for s in doc["sources"])
    else:
        assert json.loads(out)[0]["{#CT.KIND}"] in ("network", "source")
    rc, out, _ = run(capsys, command, "--file", TABLE, "--max", "lots")
    assert rc != 0 and "--max takes" in json.loads(out)["error"]


def test_max_is_for_a_snapshot_only(capsys):
    rc, out, _ = run(capsys, "talkers", "--proc-root", MIXED, "--max", "100")
    assert rc != 0 and json.loads(out)["error"].startswith("--max is for --file")


def test_the_admin_commands_without_pyzabbix_say_how_to_get_it():
    """The system python3 has no pyzabbix (the agent side needs none): a message, not a traceback."""
    probe = subprocess.run(["/usr/bin/python3", "-s", "-c", "import pyzabbix"], capture_output=True)
    assert probe.returncode != 0, "this check needs a python3 without pyzabbix"
    for argv in (["template", "import"], ["fleet", "--group", "Mirrorlist"]):
        p = subprocess.run(["/usr/bin/python3", "-s", "-m", "conntrack_zbx"] + argv, capture_output=True, text=True,
                           cwd=REPO, env=dict(os.environ, ZABBIX_URL="http://127.0.0.1:9/", ZABBIX_TOKEN="x" * 64))
        assert p.returncode != 0 and "apt install python3-pyzabbix python3-yaml" in p.stderr, p.stderr
        assert "internal error" not in p.stderr and "Traceback" not in p.stderr and "x" * 64 not in p.stderr


def test_a_mistyped_proc_root_is_not_called_a_missing_module(capsys, tmp_path):
    rc, out, _ = run(capsys, "stats", "--proc-root", str(tmp_path / "tests/fixture/kernel"))
    error = json.loads(out)["error"]
    assert rc != 0 and "has no proc/sys" in error and "not loaded" not in error
    rc, out, _ = run(capsys, "stats", "--proc-root", os.path.join(REPO, "tests/fixtures/module-not-loaded"))
    assert "module is not loaded" in json.loads(out)["error"]


def test_top_file_with_netns_is_refused(capsys):
    rc, out, err = run(capsys, "top", "--file", TABLE, "--netns", "4026531840")
    assert rc != 0 and "give one of them" in err and out == ""


@pytest.mark.parametrize("network, means", [("127.0.66.7/24", "127.0.66.0/24"), ("2001:db8::1/64", "2001:db8::/64")])
def test_a_network_with_host_bits_is_a_question_not_a_guess(capsys, network, means):
    rc, out, err = run(capsys, "clean", "--network", network)
    assert rc != 0 and "host bits set" in err and "the network is %s" % means in err and out == ""


def test_protect_reads_a_relative_agent_conf_from_here_and_says_why_not(capsys, tmp_path, monkeypatch):
    require_root()  # protect reads the running ruleset (nft)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "agent.conf").write_text("Server=192.0.2.10\nListenPort=10077\n")
    rc, out, err = run(capsys, "protect", "--agent-conf", "agent.conf", "--root", "/nonexistent")
    assert rc == 0 and "agent conf %s: ListenPort 10077" % (tmp_path / "agent.conf") in out, err
    rc, out, err = run(capsys, "protect", "--agent-conf", "missing.conf")
    assert rc != 0 and "no such file: %s" % (tmp_path / "missing.conf") in err


def test_make_rpm_without_rpmbuild_says_what_to_install():
    p = subprocess.run(["bash", "packaging/build-rpm.sh", "/tmp/ctzbx-no-rpm"], cwd=REPO, capture_output=True,
                       text=True, env=dict(os.environ, RPMBUILD="/nonexistent/rpmbuild"))
    assert p.returncode == 1 and "apt-get install rpm" in p.stderr and "dnf install rpm-build" in p.stderr


def test_tune_auto_counts_the_busiest_namespace(capsys, tmp_path):
    """A container's table counts against the one global limit: --auto sizes for the fullest
    namespace, not for the host's own (nearly empty) one."""
    from lab.netns import Netns

    require_root()
    with Netns(leaky=["127.0.71.0/24"]) as ns:
        ns.traffic([{"kind": "tcp_open", "src": "127.0.71.%d" % i, "count": 30} for i in range(1, 4)])
        with open("/proc/sys/net/netfilter/nf_conntrack_count") as f:
            here = int(f.read())
        assert here < 90  # the init namespace holds less than the lab's: the check can fail
        rc, out, err = run(capsys, "tune", "--auto", "--root", str(tmp_path))
        assert rc == 0, err
        line = next(ln for ln in out.splitlines() if "the busiest namespace's" in ln)
        assert "(%s)" % ns.name in line and int(line.split(": ")[1].split()[0]) >= 90, line
