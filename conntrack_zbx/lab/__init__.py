"""The test lab: real namespaces, real agents, a real Zabbix stack. Admin/test side only (root);
the agent keys never import it."""
