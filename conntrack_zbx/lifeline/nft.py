"""The lifeline's rules, and the host firewall they have to live with (pure functions over what
``nft -j list ruleset`` and ``iptables-legacy-save`` print).

Packets marked ``notrack`` in a raw-priority chain never need a table slot, so a full table cannot
drop them. They reach the filter chains in state ``untracked``: a chain that accepts only ``new``
and ``established`` (or ends in a drop) would drop exactly what the lifeline saves. So every base
chain on the input or output hook that can drop gets, at its top, an accept for the lifeline's own
packets in state ``untracked`` — in *each* such chain, since an accept in one base chain does not
stop another on the same hook from dropping. Shapes this module will not edit (iptables rules,
firewalld's tables) are refused with the rule to add by hand.

Every rule carries the comment ``COMMENT``: that is how ``--remove`` finds what it added.
"""

import ipaddress
import shlex
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from conntrack_zbx.lifeline import COMMENT, TABLE
from conntrack_zbx.agentconf import Endpoints

__all__ = ["COMMENT", "TABLE"]
Resolve = Callable[[str], List[str]]  # a host name -> its addresses
RAW = -300  # NF_IP_PRI_RAW: before conntrack (-200) sees the packet


class Exemption(NamedTuple):
    """Traffic kept out of conntrack: TCP to a local port (``incoming``: passive checks, ssh) or to
    a remote port (active checks), optionally only with ``peers`` (addresses or networks)."""

    why: str
    incoming: bool
    port: int
    peers: Tuple[str, ...]  # empty: any peer

    def matches(self, family: str, inbound: bool) -> List[str]:
        """nft match expressions for this traffic, per address family, for packets coming in
        (``inbound``) or going out."""
        # incoming service: in = to our port, out = from our port; active: the other way round
        ours = (self.incoming == inbound)
        port = "tcp %s %d" % ("dport" if ours else "sport", self.port)
        if not self.peers:
            return [port]
        out = []
        for fam, kw in (("ip", "ip"), ("ip6", "ip6")):
            nets = [p for p in self.peers if ipaddress.ip_network(p, strict=False).version == (4 if fam == "ip" else 6)]
            if nets and family in (fam, "inet"):
                out.append("%s %s { %s } %s" % (kw, "saddr" if inbound else "daddr", ", ".join(nets), port))
        return out

    def iptables(self, v6: bool, inbound: bool) -> List[str]:
        """The same traffic as iptables match arguments (firewalld's direct rules take them), one
        per rule; none when the peers are all of the other family."""
        ours = (self.incoming == inbound)
        port = "-p tcp --%s %d" % ("dport" if ours else "sport", self.port)
        if not self.peers:
            return [port]
        nets = [p for p in self.peers if ipaddress.ip_network(p, strict=False).version == (6 if v6 else 4)]
        return ["%s %s %s" % ("-s" if inbound else "-d", n, port) for n in nets]


def firewalld_commands(exempt: Sequence[Exemption]) -> List[str]:
    """What an admin runs on a firewalld host for the lifeline: permanent direct rules in the raw
    table (firewalld loads them at boot and on every reload), then a reload. Its zones accept
    untracked packets on the ports they open, so no accept is needed (measured with firewalld
    1.3.3: an opened port is ``tcp dport P accept`` with no state match)."""
    out = []
    for v6 in (False, True):
        for chain, inbound in (("PREROUTING", True), ("OUTPUT", False)):
            for e in exempt:
                for m in e.iptables(v6, inbound):
                    out.append("firewall-cmd --permanent --direct --add-rule %s raw %s 0 %s -m comment --comment %s "
                               "-j CT --notrack" % ("ipv6" if v6 else "ipv4", chain, m, shlex.quote(COMMENT)))
    return out + ["firewall-cmd --reload"]


def exemptions(endpoints: Sequence[Endpoints], ports: Sequence[int], resolve: Resolve) -> List[Exemption]:
    """From the agents' endpoints (``agentconf.Endpoints``) and extra ``--port``s. Names are
    resolved now (``resolve(name) -> [addresses]``): the rules hold addresses."""
    out = []
    for ep in endpoints:
        if ep.servers:
            out.append(Exemption("passive checks to port %d (%s: Server)" % (ep.listen_port, ep.conf), True,
                                 ep.listen_port, _addresses(ep.servers, resolve)))
        for host, port in ep.active:
            out.append(Exemption("active checks to %s:%d (%s: ServerActive)" % (host, port, ep.conf), False,
                                 port, _addresses([host], resolve)))
    for port in ports:
        out.append(Exemption("--port %d, from any address" % port, True, port, ()))
    seen, unique = set(), []
    for e in out:
        if (e.incoming, e.port, e.peers) not in seen:
            seen.add((e.incoming, e.port, e.peers))
            unique.append(e)
    return unique


def _addresses(entries: Sequence[str], resolve: Resolve) -> Tuple[str, ...]:
    out = []  # type: List[str]
    for entry in entries:
        try:
            net = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            out.extend(str(ipaddress.ip_address(a)) for a in resolve(entry))
            continue
        out.append(str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net))
    return tuple(sorted(set(out), key=lambda a: (":" in a, a)))


# -- the host's firewall ---------------------------------------------------------------------

class Chain(NamedTuple):
    family: str
    table: str
    name: str
    hook: str
    policy: str
    drops: bool  # policy drop, or a rule with a drop or reject verdict


class Firewall(NamedTuple):
    chains: List[Chain]  # base filter chains on input/output, ours left out
    ours: List[Tuple[str, str, str, int]]  # (family, table, chain, handle) of rules we added
    have_table: bool  # our raw table exists
    iptables_nft: List[str]  # iptables-nft tables seen (family table)
    firewalld: bool


def read_ruleset(doc: Dict[str, Any]) -> Firewall:
    """``nft -j list ruleset`` (with handles) -> what the lifeline has to know."""
    items = doc.get("nftables", [])
    drops = {}  # type: Dict[Tuple[str, str, str], bool]
    ours, tables = [], set()
    for it in items:
        rule = it.get("rule")
        if rule:
            key = (rule["family"], rule["table"], rule["chain"])
            if rule.get("comment") == COMMENT and rule["table"] != TABLE:
                ours.append((rule["family"], rule["table"], rule["chain"], int(rule["handle"])))
            elif any(("drop" in e or "reject" in e) for e in rule.get("expr", []) if isinstance(e, dict)):
                drops[key] = True
        table = it.get("table")
        if table:
            tables.add((table["family"], table["name"]))
    chains = []
    for it in items:
        c = it.get("chain")
        if not c or c.get("hook") not in ("input", "output") or c.get("type", "filter") != "filter":
            continue
        if c["table"] == TABLE:
            continue
        key = (c["family"], c["table"], c["name"])
        chains.append(Chain(c["family"], c["table"], c["name"], c["hook"], c.get("policy", "accept"),
                            c.get("policy") == "drop" or drops.get(key, False)))
    iptables = sorted("%s %s" % t for t in tables if t[1] in ("filter", "raw", "mangle") and t[0] in ("ip", "ip6")
                      and any(c.table == t[1] and c.name.isupper() for c in chains))
    return Firewall(chains, ours, ("inet", TABLE) in tables, iptables, any(t[1] == "firewalld" for t in tables))


def legacy_blocking(save_output: str) -> List[str]:
    """Chains of ``iptables-legacy-save`` (filter table) that can drop: policy DROP or a DROP or
    REJECT rule in INPUT or OUTPUT."""
    out, table = [], ""
    for line in save_output.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif table == "filter" and line.startswith(":"):
            name, policy = line[1:].split()[:2]
            if name in ("INPUT", "OUTPUT") and policy == "DROP" and name not in out:
                out.append(name)
        elif table == "filter" and line.startswith("-A "):
            parts = line.split()
            if parts[1] in ("INPUT", "OUTPUT") and ("-j DROP" in line or "-j REJECT" in line) and parts[1] not in out:
                out.append(parts[1])
    return out


# -- the plan ----------------------------------------------------------------------------------

class Plan(NamedTuple):
    script: str  # what nft -f runs: remove what we added before, then add it anew
    persist: str  # the same without the removal by handle, for the boot include
    inserts: List[str]  # human-readable: the accepts put at the top of the host's chains
    refusals: List[str]


def plan(fw: Firewall, exempt: Sequence[Exemption], legacy: Dict[str, List[str]]) -> Plan:
    """The lifeline for this firewall, or the reasons it cannot be applied safely."""
    refusals = []
    if fw.firewalld:
        refusals.append("firewalld manages this host's firewall, and it keeps rules across a reboot only in "
                        "its own configuration (nftables.service, which would load an include, conflicts with "
                        "it). Keep the traffic out of conntrack with firewalld's permanent direct rules, as "
                        "root:\n      " + "\n      ".join(firewalld_commands(exempt)))
    for family, chains in sorted(legacy.items()):
        cmd = "iptables" if family == "ip" else "ip6tables"
        for chain in chains:
            refusals.append("%s-legacy rules can drop in filter %s: add first, for each port below, "
                            "`%s -I %s 1 -p tcp --%s PORT -m conntrack --ctstate UNTRACKED -j ACCEPT -m comment "
                            "--comment '%s'` (and persist it with your iptables rules)"
                            % (cmd, chain, cmd, chain, "dport" if chain == "INPUT" else "sport", COMMENT))
    for t in fw.iptables_nft:
        if any(c.drops and "%s %s" % (c.family, c.table) == t for c in fw.chains):
            refusals.append("iptables-nft rules (table %s) can drop: nft rules must not be mixed into "
                            "iptables' own tables. Add the accepts with iptables -I as above" % t)
    body = []
    for hook, inbound in (("prerouting", True), ("output", False)):
        body.append("  chain %s {\n    type filter hook %s priority %d; policy accept;" % (hook, hook, RAW))
        for e in exempt:
            for m in e.matches("inet", inbound):
                body.append('    %s notrack comment "%s"' % (m, COMMENT))
        body.append("  }")
    create = "table inet %s {\n%s\n}\n" % (TABLE, "\n".join(body))
    inserts, lines = [], []
    skip = set(fw.iptables_nft)
    for c in fw.chains:
        if not c.drops or "%s %s" % (c.family, c.table) in skip or c.table == "firewalld":
            continue
        for e in exempt:
            for m in e.matches(c.family, c.hook == "input"):
                rule = '%s ct state untracked accept comment "%s"' % (m, COMMENT)
                lines.append("insert rule %s %s %s %s" % (c.family, c.table, c.name, rule))
                inserts.append("%s %s %s (%s, policy %s): %s" % (c.family, c.table, c.name, c.hook, c.policy, rule))
    remove = removal(fw)
    persist = create + "".join(ln + "\n" for ln in lines)
    return Plan(remove + persist, persist, inserts, refusals)


def removal(fw: Firewall) -> str:
    """nft commands that take away everything the lifeline added (nothing when nothing is there)."""
    out = ["delete rule %s %s %s handle %d" % r for r in fw.ours]
    if fw.have_table:
        out.append("delete table inet %s" % TABLE)
    return "".join(ln + "\n" for ln in out)


def include_line(path: str) -> str:
    return 'include "%s"  # %s\n' % (path, COMMENT)


def with_include(conf: str, path: str) -> Optional[str]:
    """/etc/nftables.conf with the lifeline's include appended (None: already there)."""
    line = include_line(path)
    if line in conf:
        return None
    return conf + ("" if conf.endswith("\n") or not conf else "\n") + line


def without_include(conf: str, path: str) -> Optional[str]:
    line = include_line(path)
    return conf.replace(line, "") if line in conf else None
