"""Every key through the real zabbix_agentd and zabbix_agent2, as the zabbix user the daemons run
as, via passive checks with zabbix_get: with and without the sudo grant.

`zabbix_agentd -t` as root would hide exactly the permission problems this checks.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from conntrack_zbx import keys
from lab.agent import Agent, grant_sudo, install_plugin
from lab.netns import Netns, sh
from tests.conftest import require_root

pytestmark = pytest.mark.real

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUDOERS = "/etc/sudoers.d/conntrack-zbx-test"
SPEC = [
    {"kind": "tcp_open", "src": "127.0.7.1", "count": 6},
    {"kind": "tcp_open", "src": "127.0.7.2", "count": 3},
    {"kind": "udp_unreplied", "src": "127.0.8.8", "count": 2},
]


@pytest.fixture(scope="module")
def plugin():
    require_root()
    p = install_plugin(REPO, sys.executable)
    yield p.binary, p.conf
    shutil.rmtree(p.base, ignore_errors=True)


@pytest.fixture(scope="module")
def ns():
    require_root()
    with Netns(leaky=["127.0.7.0/24"], untracked_ports=[31050, 31052]) as n:
        n.traffic(SPEC)
        yield n


@pytest.fixture(params=[("agentd", 31050), ("agent2", 31052)], ids=["zabbix_agentd", "zabbix_agent2"])
def agent(request, plugin, ns):
    kind, port = request.param
    with Agent(kind, port, plugin[1], netns=ns) as a:
        yield a


def sudo_rules(user="zabbix"):
    out = sh(["sudo", "-l", "-U", user]).stdout.decode()
    return [ln.strip() for ln in out.splitlines() if "NOPASSWD" in ln or "PASSWD:" in ln]


@pytest.fixture
def grant(plugin):
    binary = plugin[0]
    before = sudo_rules()
    grant_sudo(binary, SUDOERS)
    yield binary, before
    os.remove(SUDOERS)


@pytest.fixture
def no_grant():
    if os.path.exists(SUDOERS):
        os.remove(SUDOERS)


def get_json(agent, key):
    raw = agent.get(key)
    try:
        return json.loads(raw)
    except ValueError:
        pytest.fail("%s: %s returned non-JSON %r\nagent log:\n%s" % (agent.kind, key, raw, agent.log()))


def test_conf_declares_every_key(plugin):
    with open(plugin[1]) as f:
        declared = [ln.split("=", 1)[1].split(",", 1)[0] for ln in f if ln.startswith("UserParameter=")]
    assert declared == [keys.conf_key(k) for k in keys.KEYS]


def test_without_grant_counters_work_and_talkers_name_the_fix(agent, no_grant):
    doc = get_json(agent, "conntrack.stats")
    assert doc["count"] == 11
    assert doc["hashsize"] is None  # 0600 root: not readable as zabbix, and not reported as 0
    assert isinstance(doc["stat"]["drop"], int)
    err = get_json(agent, "conntrack.talkers")
    assert list(err) == ["error"], err
    assert "sudoers.d/conntrack-zbx" in err["error"] and "sudo refused" in err["error"]


def test_with_grant_talkers_answer(agent, grant):
    doc = get_json(agent, "conntrack.talkers")
    assert doc["entries"] == 11
    assert [(s["address"], s["count"]) for s in doc["sources"]] == \
        [("127.0.7.1", 6), ("127.0.7.2", 3), ("127.0.8.8", 2)]
    assert doc["networks"][0]["network"] == "127.0.7.0/24"
    rows = doc["discovery"]
    assert {(r["{#CT.KIND}"], r["{#CT.TALKER}"]) for r in rows} == {
        ("network", "127.0.7.0/24"), ("network", "127.0.8.0/24"),
        ("source", "127.0.7.1"), ("source", "127.0.7.2"), ("source", "127.0.8.8")}
    assert get_json(agent, "conntrack.stats")["count"] == 11


def test_sudo_grant_is_exactly_the_fixed_lines(grant):
    # What the drop-in adds to `sudo -l -U zabbix`, compared with before it was installed (Debian's
    # zabbix-server package ships its own /etc/sudoers.d/zabbix for nmap; that one is not ours).
    binary, before = grant
    added = [r for r in sudo_rules() if r not in before]
    assert added == ["(root) NOPASSWD: %s talkers --params-stdin, %s namespaces --params-stdin" % (binary, binary)]
    # any other argument list is refused by sudo itself: more, fewer or other arguments
    for argv in (["talkers", "--params-stdin", "--proc-root", "/tmp"], ["talkers"], ["stats"],
                 ["talkers", "--file", "/etc/shadow"]):
        p = subprocess.run(["setpriv", "--reuid=zabbix", "--regid=zabbix", "--init-groups",
                            "sudo", "-n", binary] + argv, capture_output=True, stdin=subprocess.DEVNULL)
        assert p.returncode != 0 and b"password is required" in p.stderr, argv


def test_key_parameters_reach_root_only_through_the_allow_list(agent, grant):
    doc = get_json(agent, "conntrack.talkers[16,64,1,0]")
    assert doc["prefix4"] == 16 and len(doc["sources"]) == 1 and doc["cached"] is False
    assert doc["networks"][0]["network"] == "127.0.0.0/16"
    for key, says in (("conntrack.talkers[33]", "prefix4=33 is outside 8..32"),
                      ("conntrack.talkers[24x]", "prefix4='24x' is not allowed"),
                      ("conntrack.talkers[--file]", "prefix4='--file' is not allowed"),
                      ("conntrack.talkers[24 --file /etc/shadow]", "is not allowed"),
                      ("conntrack.talkers[,,,99999]", "max_age=99999 is outside")):
        err = get_json(agent, key)
        assert list(err) == ["error"] and says in err["error"], (key, err)
    # What the agent itself refuses never reaches us (UnsafeUserParameters=0): not supported.
    raw = agent.get("conntrack.talkers[$(id)]")
    assert raw.startswith("ZBX_NOTSUPPORTED") and "not allowed" in raw.lower(), raw
