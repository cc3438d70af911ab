"""The one registry of commands: each is declared once, here, and everything else is derived.

A declaration names the command, its options (an ``Args`` class of ``options.py``), the module
whose ``run`` answers it, how the answer is written, its help and examples, and, for an agent
command, the Zabbix key it serves. ``cli`` dispatches through it, ``parser`` builds every
subcommand from it, ``keys`` makes the agent conf and the sudoers line from it. Adding an agent
command is its declaration here, its ``Args`` class and its answer module (tests/test_shape.py
shows it).

Output kinds: ``json`` (an agent command: compact JSON, errors as ``{"error": ...}`` on stdout),
``text`` (a terminal view), ``pretty`` (indented JSON for an admin command).
"""

from conntrack_zbx import options

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional, Tuple, Type


class Key:
    """The Zabbix agent key an agent command serves (``keys.py`` writes its conf line)."""

    __slots__ = ("name", "privileged", "description")

    def __init__(self, name: str, privileged: bool, description: str) -> None:
        self.name, self.privileged, self.description = name, privileged, description


class Command:
    __slots__ = ("name", "args", "module", "output", "help", "examples", "key", "admin")

    def __init__(self, name: str, args: "Type[options.Args]", module: str, output: str, help: str,
                 examples: "Tuple[str, ...]" = (), key: "Optional[Key]" = None, admin: bool = False) -> None:
        self.name, self.args, self.module, self.output, self.help = name, args, module, output, help
        self.examples, self.key, self.admin = examples, key, admin

    @property
    def agent(self) -> bool:
        return self.output == "json"


COMMANDS = (
    Command("stats", options.StatsArgs, "conntrack_zbx.answers.stats", "json",
            "counters: count, max, usage, drops, boot drift (JSON, no root needed)",
            ("conntrack-zbx stats", "conntrack-zbx stats --proc-root tests/fixtures/kernel-6.18.44-mixed"),
            Key("conntrack.stats", False,
                "Table count, max, buckets, usage and the kernel's per-CPU counters summed (JSON). Runs as the "
                "agent user: every file it reads is world-readable.")),
    Command("talkers", options.TalkersArgs, "conntrack_zbx.answers.talkers", "json",
            "top sources and networks by entries held (JSON)",
            ("sudo conntrack-zbx talkers", "conntrack-zbx talkers --file saved-table.txt --top 5"),
            Key("conntrack.talkers", True,
                "Top sources and networks by entries held, with the talkers' LLD rows (JSON). Reads the "
                "root-only entry table through the fixed sudo grant.")),
    Command("discovery", options.TableArgs, "conntrack_zbx.answers.talkers:discovery", "json",
            "Zabbix LLD array of the top talkers (the talkers document's rows, standalone)",
            ("sudo conntrack-zbx discovery --top 5",)),
    Command("namespaces", options.NamespacesArgs, "conntrack_zbx.answers.namespaces", "json",
            "every network namespace's own table usage and drops, host-wide sum (JSON)",
            ("sudo conntrack-zbx namespaces",),
            Key("conntrack.namespaces", True,
                "Every network namespace with conntrack in use (containers, pods, ip netns) with its own count "
                "against the one global nf_conntrack_max and its drop counters, the host-wide sum and the "
                "hash table's load, with LLD rows (JSON). Reads other processes' namespaces through the fixed "
                "sudo grant.")),
    Command("top", options.TopArgs, "conntrack_zbx.top", "text",
            "on-call view: who fills the table (terminal table)",
            ("sudo conntrack-zbx top", "sudo conntrack-zbx top --by idle", "sudo conntrack-zbx top --netns NAME",
             "conntrack-zbx top --file saved-table.txt --max 262144 --timeout-established 432000")),
    Command("tune", options.TuneArgs, "conntrack_zbx.tune", "text",
            "raise nf_conntrack_max and the hash size, and make it survive reboot",
            ("conntrack-zbx tune --auto", "sudo conntrack-zbx tune --max 1048576 --apply")),
    Command("clean", options.CleanArgs, "conntrack_zbx.clean", "text",
            "remove one network's idle ESTABLISHED entries (what a leak left behind)",
            ("sudo conntrack-zbx clean --network 198.51.100.0/24",
             "sudo conntrack-zbx clean --network 198.51.100.0/24 --apply")),
    Command("protect", options.ProtectArgs, "conntrack_zbx.protect", "text",
            "keep this host's monitoring traffic out of conntrack, so a full table cannot blind Zabbix",
            ("sudo conntrack-zbx protect", "sudo conntrack-zbx protect --port 22 --apply",
             "sudo conntrack-zbx protect --remove")),
    Command("agent-conf", options.AgentConfArgs, "conntrack_zbx.agentfiles", "text",
            "make every Zabbix agent on this host read the conntrack UserParameters (where its Include points)",
            ("conntrack-zbx agent-conf", "sudo conntrack-zbx agent-conf --apply",
             "sudo conntrack-zbx agent-conf --apply --source zabbix_agentd.d/userparameter_conntrack.conf")),
    Command("template", options.TemplateArgs, "conntrack_zbx.deploy", "pretty",
            "admin: import the Zabbix template (needs pyzabbix)",
            ("ZABBIX_URL=https://zabbix.example/ ZABBIX_TOKEN=... conntrack-zbx template import --group Linux",),
            admin=True),
    Command("fleet", options.FleetArgs, "conntrack_zbx.fleet", "text",
            "admin: the networks of a host group's nodes, ranked by how many nodes hold them (needs pyzabbix)",
            ("ZABBIX_URL=https://zabbix.example/ ZABBIX_TOKEN=... conntrack-zbx fleet --group Mirrorlist",
             "conntrack-zbx fleet --group Mirrorlist --json",
             "conntrack-zbx fleet --group Mirrorlist --setup"),
            admin=True),
)

NAMES = tuple(c.name for c in COMMANDS)
AGENT_COMMANDS = tuple(c.name for c in COMMANDS if c.agent)


def get(name: str) -> Command:
    return next(c for c in COMMANDS if c.name == name)


def args_of(name: str) -> "Type[options.Args]":
    return get(name).args
