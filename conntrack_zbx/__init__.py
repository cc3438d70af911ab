"""conntrack_zbx: see the Linux conntrack table filling up, and who fills it, from Zabbix.

Agent-side modules (everything imported by ``cli`` for the agent keys) use the standard
library only and stay Python 3.6 compatible: they run on the monitored host's system python3
(3.6 on RHEL 8 and CentOS 7, up to 3.13).
"""

__version__ = "0.1.0"
