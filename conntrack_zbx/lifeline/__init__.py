"""The lifeline: the monitoring traffic of a host kept out of connection tracking, so a full table
cannot blind Zabbix (``conntrack-zbx protect``). ``conntrack_zbx.agentconf`` says what the traffic is, from the
agents' own configuration; ``nft`` reads the host's firewall and writes the rules."""

TABLE = "conntrack_zbx_lifeline"  # nft table, family inet: the one name protect and the state check share
COMMENT = "conntrack-zbx lifeline"  # on every rule protect adds: what --remove finds
