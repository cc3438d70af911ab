"""The lifeline's pure parts: what the agent configuration says the monitoring traffic is, and
the rules for a firewall read from a real ``nft -j -a list ruleset`` (captured in a namespace:
an inet filter input chain with policy drop accepting only new ssh and established, and an ip
table whose input chain ends in a reject)."""

import json
import os

import pytest

from conntrack_zbx import agentconf
from conntrack_zbx.lifeline import nft

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "nft",
                       "two-tables-drop-and-reject.json")


def write(root, rel, text):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_agent_conf_with_includes_names_the_traffic(tmp_path):
    write(tmp_path, "etc/zabbix/zabbix_agentd.conf",
          "# stock\nServer=192.0.2.10, 2001:db8::10\nListenPort=10077\n"
          "ServerActive=zbx.example:10061;[2001:db8::11]:10051,198.51.100.7\n"
          "Include=/etc/zabbix/zabbix_agentd.d/*.conf\n")
    write(tmp_path, "etc/zabbix/zabbix_agentd.d/50-local.conf", "ListenPort=10078\n")
    (ep,) = agentconf.read(str(tmp_path))
    assert ep.conf == "etc/zabbix/zabbix_agentd.conf"
    assert ep.listen_port == 10078  # the include, read after, wins
    assert ep.servers == ("192.0.2.10", "2001:db8::10")
    assert ep.active == (("zbx.example", 10061), ("2001:db8::11", 10051), ("198.51.100.7", 10051))


def test_an_include_loop_is_an_error_not_a_hang(tmp_path):
    write(tmp_path, "etc/zabbix/zabbix_agent2.conf", "Server=192.0.2.1\nInclude=/etc/zabbix/zabbix_agent2.conf\n")
    with pytest.raises(ValueError, match="Include loop"):
        agentconf.read(str(tmp_path))


def exempt():
    ep = agentconf.Endpoints("etc/zabbix/zabbix_agentd.conf", 10050, (), ("192.0.2.10", "2001:db8::/64"),
                             (("zbx.example", 10051),))
    return nft.exemptions([ep], [22], lambda name: {"zbx.example": ["198.51.100.7"]}[name])


def test_exemptions_hold_addresses_and_ports_never_everything():
    ex = exempt()
    assert [(e.incoming, e.port, e.peers) for e in ex] == [
        (True, 10050, ("192.0.2.10", "2001:db8::/64")), (False, 10051, ("198.51.100.7",)), (True, 22, ())]
    passive = ex[0]
    assert passive.matches("inet", True) == ["ip saddr { 192.0.2.10 } tcp dport 10050",
                                             "ip6 saddr { 2001:db8::/64 } tcp dport 10050"]
    assert passive.matches("ip", False) == ["ip daddr { 192.0.2.10 } tcp sport 10050"]
    active = ex[1]  # the agent connects out: replies come from the server's port
    assert active.matches("inet", True) == ["ip saddr { 198.51.100.7 } tcp sport 10051"]
    assert active.matches("ip6", True) == []  # no IPv6 peer: nothing for an ip6 chain


def test_every_chain_that_can_drop_gets_the_accept_at_its_top():
    with open(FIXTURE) as f:
        fw = nft.read_ruleset(json.load(f))
    assert {(c.family, c.table, c.name, c.drops) for c in fw.chains} == {
        ("inet", "filter", "input", True), ("inet", "filter", "output", False), ("ip", "strict", "in", True)}
    p = nft.plan(fw, exempt(), {})
    assert p.refusals == []
    # both input chains (an accept in one does not stop the other), the output one needs nothing
    assert [i.split(":")[0] for i in p.inserts] == ["inet filter input (input, policy drop)"] * 4 + [
        "ip strict in (input, policy accept)"] * 3
    assert ('insert rule inet filter input ip saddr { 192.0.2.10 } tcp dport 10050 ct state untracked accept '
            'comment "conntrack-zbx lifeline"') in p.script
    assert "tcp dport 10050 notrack" in p.script and "priority -300" in p.script
    assert "delete" not in p.script  # nothing of ours there yet
    assert p.persist == p.script


def test_iptables_legacy_and_firewalld_are_refused_with_the_rule_to_add():
    save = ("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            "-A INPUT -p tcp -m state --state NEW -m tcp --dport 10050 -j ACCEPT\n"
            "-A INPUT -j REJECT --reject-with icmp-host-prohibited\nCOMMIT\n")
    assert nft.legacy_blocking(save) == ["INPUT"]
    with open(FIXTURE) as f:
        fw = nft.read_ruleset(json.load(f))
    p = nft.plan(fw, exempt(), {"ip": ["INPUT"]})
    assert len(p.refusals) == 1 and "iptables -I INPUT 1 -p tcp --dport PORT -m conntrack --ctstate UNTRACKED" \
        in p.refusals[0]
    fw = fw._replace(firewalld=True)
    said = [r for r in nft.plan(fw, exempt(), {}).refusals if "firewalld" in r]
    assert len(said) == 1
    commands = [ln.strip() for ln in said[0].splitlines() if ln.strip().startswith("firewall-cmd")]
    assert commands == nft.firewalld_commands(exempt()) and commands[-1] == "firewall-cmd --reload"
    # every exempted port, each direction, each family its peers have; never a rule without its peers
    for e in exempt():
        for v6 in (False, True):
            for inbound in (True, False):
                for m in e.iptables(v6, inbound):
                    assert any(" %s -m comment --comment 'conntrack-zbx lifeline' -j CT --notrack" % m in c
                               for c in commands), (m, commands)
    # the ports with peers never get a rule open to everybody
    assert [c for c in commands if " -s " not in c and " -d " not in c] == [
        c for c in commands if "--dport 22 " in c or "--sport 22 " in c] + ["firewall-cmd --reload"]


def test_firewalld_direct_rules_name_the_peers_of_their_family():
    e = nft.Exemption("passive", True, 10050, ("192.0.2.7", "2001:db8::7"))
    assert e.iptables(False, True) == ["-s 192.0.2.7 -p tcp --dport 10050"]
    assert e.iptables(True, False) == ["-d 2001:db8::7 -p tcp --sport 10050"]
    active = nft.Exemption("active", False, 10051, ("192.0.2.9",))
    assert active.iptables(False, False) == ["-d 192.0.2.9 -p tcp --dport 10051"]
    assert active.iptables(True, True) == []
    assert nft.Exemption("--port 22", True, 22, ()).iptables(True, True) == ["-p tcp --dport 22"]


def test_remove_finds_what_was_added_by_its_comment():
    doc = {"nftables": [
        {"table": {"family": "inet", "name": nft.TABLE, "handle": 9}},
        {"rule": {"family": "inet", "table": nft.TABLE, "chain": "prerouting", "handle": 3,
                  "comment": nft.COMMENT, "expr": []}},
        {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 7, "comment": nft.COMMENT,
                  "expr": [{"accept": None}]}},
        {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 8, "comment": "admin's",
                  "expr": [{"drop": None}]}}]}
    fw = nft.read_ruleset(doc)
    assert fw.ours == [("inet", "filter", "input", 7)] and fw.have_table
    assert nft.removal(fw) == "delete rule inet filter input handle 7\ndelete table inet %s\n" % nft.TABLE


def test_the_boot_include_is_added_once_and_removed_whole():
    conf = "#!/usr/sbin/nft -f\nflush ruleset\n"
    once = nft.with_include(conf, "/etc/conntrack-zbx/lifeline.nft")
    assert once.startswith(conf) and once.count("include") == 1
    assert nft.with_include(once, "/etc/conntrack-zbx/lifeline.nft") is None
    assert nft.without_include(once, "/etc/conntrack-zbx/lifeline.nft") == conf


def test_the_state_names_the_ports_of_the_table_nft_lists():
    """``nft -j list table inet conntrack_zbx_lifeline`` of a table protect made (captured in a
    namespace): local services in, the server's port out, as the template's ports item shows."""
    from conntrack_zbx.lifeline.state import ports_of

    with open(os.path.join(os.path.dirname(FIXTURE), "lifeline-table.json")) as f:
        assert ports_of(json.load(f)) == "in 22,10050; out 10051"
    assert ports_of({"nftables": []}) == ""


def test_the_state_reads_firewalld_direct_rules_by_their_comment():
    """What ``protect`` tells a firewalld host to add lands in iptables' raw table (firewalld's
    direct rules): the state finds ours by their comment, not somebody else's notrack rule."""
    from conntrack_zbx.lifeline.state import _label, direct_ports

    with open(os.path.join(os.path.dirname(FIXTURE), "firewalld-direct-iptables-save.txt")) as f:
        found = direct_ports(f.read())
    assert found == {"prerouting": {22, 10050}, "output": {10051}}
    assert _label(found) == "in 22,10050; out 10051"
    assert direct_ports("*raw\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n") == {"prerouting": set(), "output": set()}


def test_the_template_says_where_there_is_no_lifeline():
    from conntrack_zbx.template import model

    t = model.conntrack_template()
    items = {i["key"]: i for i in t["items"]}
    assert items["conntrack.lifeline"]["preprocessing"][0]["parameters"] == ["$.lifeline.protected"]
    (tr,) = items["conntrack.lifeline"]["triggers"]
    assert tr["priority"] == "INFO" and tr["expression"] == "last(/%s/conntrack.lifeline)=0" % model.CONNTRACK
    assert "sudo conntrack-zbx protect --apply" in tr["description"]


@pytest.mark.parametrize("argv, says", [
    ([], "reading the firewall (nft list ruleset) needs CAP_NET_ADMIN: run it as root: sudo conntrack-zbx protect"),
    (["--apply"], "changes the firewall and /etc (the dry run only reads): run it as root: "
                  "sudo conntrack-zbx protect --apply"),
])
def test_without_root_it_says_to_use_sudo_and_changes_nothing(argv, says):
    import subprocess

    from tests.conftest import require_root

    require_root()  # to become nobody
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-m",
                        "conntrack_zbx", "protect"] + argv, capture_output=True, text=True,
                       env={"PYTHONPATH": repo, "PATH": "/usr/sbin:/usr/bin:/bin"})
    assert p.returncode == 3 and says in p.stderr and "Traceback" not in p.stderr, p.stderr
