"""`conntrack-zbx protect`: keep this host's monitoring traffic out of connection tracking, so a
full table cannot blind Zabbix (the incident's "the monitoring data vanished").

What is exempted comes from the agents' own configuration (``agentconf``): passive checks
to ``ListenPort`` from ``Server``, active checks to ``ServerActive``; ``--port`` adds a local TCP
service (ssh). Never a whole address family, never everything. The rules and the firewall they
must live with are ``lifeline.nft``. A dry run by default; ``--apply`` runs them as one nft
transaction, checks they are there, and persists them as an include of /etc/nftables.conf (what
nftables.service loads at boot); ``--remove`` takes away exactly what it added. Root's act, by
hand: the agent never runs it.
"""

import os
import socket
import subprocess
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from conntrack_zbx.errors import NotAvailable, NotPermitted, ProtectRefused
from conntrack_zbx import agentconf
from conntrack_zbx.lifeline import nft

if TYPE_CHECKING:
    from conntrack_zbx.options import ProtectArgs

RULES_FILE = "etc/conntrack-zbx/lifeline.nft"
NFTABLES_CONF = "etc/nftables.conf"


def run(args: "ProtectArgs") -> str:
    if (args.apply or args.remove) and os.geteuid() != 0:
        raise NotPermitted("protect --apply/--remove changes the firewall and /etc (the dry run only reads)")
    fw = nft.read_ruleset(_nft_json())
    if args.remove:
        return _remove(args, fw)
    ports = _ports(args.port)
    try:
        found = agentconf.read(args.root, [args.agent_conf] if args.agent_conf else None)
    except (OSError, ValueError) as e:
        raise NotAvailable("cannot read the agent configuration: %s" % e) from None
    if not found and not ports:
        raise NotAvailable("no Zabbix agent configuration under %s (%s): name it with --agent-conf PATH, or "
                           "the ports to exempt with --port" % (args.root, ", ".join(agentconf.CONFS)))
    exempt = nft.exemptions(found, ports, _resolve)
    if not exempt:
        raise NotAvailable("the agent configuration names no Server and no ServerActive: nothing to exempt")
    p = nft.plan(fw, exempt, _legacy())
    out = [_render(found, exempt, p, args)]
    if p.refusals:
        raise ProtectRefused("protect will not apply the lifeline here, nothing was changed:\n  - "
                             + "\n  - ".join(p.refusals) + "\n\n" + out[0])
    if not args.apply:
        return out[0] + "\n(dry run: --apply applies it and makes it survive a reboot)\n"
    _nft_file(p.script)
    after = nft.read_ruleset(_nft_json())
    if not after.have_table or len(after.ours) != len(p.inserts):
        raise ProtectRefused("the rules did not all land (table %s, %d of %d accepts): check `nft list "
                             "ruleset`" % (after.have_table, len(after.ours), len(p.inserts)))
    out.append("applied: table inet %s and %d accept%s; verified in the running ruleset"
               % (nft.TABLE, len(p.inserts), "" if len(p.inserts) == 1 else "s"))
    if not args.runtime_only:
        out.append(_persist(args.root, p.persist))
    return "\n".join(out) + "\n"


def _render(found: List[agentconf.Endpoints], exempt: List[nft.Exemption], p: nft.Plan,
            args: "ProtectArgs") -> str:
    lines = ["conntrack protect: %s" % ("applying" if args.apply else "dry run"), ""]
    for ep in found:
        lines.append("  agent conf %s: ListenPort %d, Server %s, ServerActive %s" % (
            ep.conf, ep.listen_port, ",".join(ep.servers) or "-",
            ",".join("%s:%d" % hp for hp in ep.active) or "-"))
    lines += ["", "  kept out of conntrack (a full table cannot drop them):"]
    lines += ["    - %s%s" % (e.why, (": " + ", ".join(e.peers)) if e.peers else "") for e in exempt]
    lines += ["", "  nft rules (one transaction):", ""]
    lines += ["    " + ln for ln in p.script.rstrip("\n").splitlines()]
    if p.inserts:
        lines += ["", "  why the accepts: these chains can drop, and untracked packets are neither new nor "
                      "established:"]
        lines += ["    - " + i for i in p.inserts]
    else:
        lines += ["", "  no chain on the input or output hook can drop: no accept needed"]
    return "\n".join(lines) + "\n"


def _remove(args: "ProtectArgs", fw: nft.Firewall) -> str:
    script = nft.removal(fw)
    out = ["conntrack protect --remove:"]
    if script:
        _nft_file(script)
        n = len(fw.ours)
        out.append("  removed table inet %s and %d accept%s" % (nft.TABLE, n, "" if n == 1 else "s"))
    else:
        out.append("  nothing of the lifeline in the running ruleset")
    conf = os.path.join(args.root, NFTABLES_CONF)
    rules = os.path.join(args.root, RULES_FILE)
    if os.path.exists(conf):
        with open(conf) as f:
            text = nft.without_include(f.read(), "/" + RULES_FILE)
        if text is not None:
            _write(conf, text)
            out.append("  %s: the include removed" % conf)
    if os.path.exists(rules):
        os.remove(rules)
        out.append("  %s removed" % rules)
    return "\n".join(out) + "\n"


def _persist(root: str, rules: str) -> str:
    path = os.path.join(root, RULES_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _write(path, "# written by conntrack-zbx protect; `conntrack-zbx protect --remove` takes it away\n" + rules)
    conf = os.path.join(root, NFTABLES_CONF)
    if not os.path.exists(conf):
        return ("persisted: %s; no %s here, so nothing loads it at boot: include it from the file your "
                "firewall loads (include \"/%s\")" % (path, conf, RULES_FILE))
    with open(conf) as f:
        text = nft.with_include(f.read(), "/" + RULES_FILE)
    if text is not None:
        _write(conf, text)
    return "persisted: %s, included from %s (nftables.service loads it at boot)" % (path, conf)


def _write(path: str, text: str) -> None:
    tmp = path + ".conntrack-zbx.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _ports(spec: Optional[str]) -> List[int]:
    if not spec:
        return []
    out = []
    for part in spec.split(","):
        if not part.strip().isdigit() or not 1 <= int(part) <= 65535:
            raise ProtectRefused("--port takes TCP port numbers 1..65535, comma-separated (e.g. 22), got %r" % spec)
        out.append(int(part))
    return out


def _resolve(name: str) -> List[str]:
    try:
        return sorted({str(ai[4][0]) for ai in socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)})
    except OSError as e:
        raise NotAvailable("cannot resolve %r from the agent configuration (%s): the rules hold "
                           "addresses; fix the name or write the address" % (name, e)) from None


def _nft(argv: List[str], stdin: Optional[bytes] = None) -> bytes:
    try:
        p = subprocess.run(["nft"] + argv, input=stdin, capture_output=True)
    except FileNotFoundError:
        raise NotAvailable("nft is not installed: the lifeline needs nftables (apt-get install nftables)") from None
    if p.returncode != 0:
        err = p.stderr.decode(errors="replace").strip()
        if "Operation not permitted" in err:
            raise NotPermitted("reading the firewall (nft list ruleset) needs CAP_NET_ADMIN")
        raise ProtectRefused("nft %s failed: %s" % (" ".join(argv[:2]), err))
    return p.stdout


def _nft_json() -> Dict[str, Any]:
    import json

    doc: Dict[str, Any] = json.loads(_nft(["-j", "-a", "list", "ruleset"]) or b'{"nftables": []}')
    return doc


def _nft_file(script: str) -> None:
    _nft(["-f", "-"], stdin=script.encode())


def _legacy() -> Dict[str, List[str]]:
    """Blocking chains of iptables-legacy, per family (empty where it is not installed)."""
    out = {}
    for family, cmd in (("ip", "iptables-legacy-save"), ("ip6", "ip6tables-legacy-save")):
        try:
            p = subprocess.run([cmd], capture_output=True, text=True)
        except FileNotFoundError:
            continue
        chains = nft.legacy_blocking(p.stdout) if p.returncode == 0 else []
        if chains:
            out[family] = chains
    return out
