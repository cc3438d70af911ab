"""The time one agent call may take, and the clock it counts on.

The Zabbix agent kills a UserParameter that outlives its Timeout and shows nothing: a partial
answer inside the Timeout beats a complete one after it, exactly when the table is at its
largest. Every reading answer therefore works to one deadline, counted from the process's own
start (the interpreter's start-up and imports count too) and kept a margin short of the Timeout.
"""

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs every agent call ~3 ms
    from typing import Dict, Optional

EXIT_MARGIN = 0.1  # seconds: ranking, writing and the interpreter's exit after the read
OWN_READ_RESERVE = 0.5  # seconds a call that waited for the cache lock in vain keeps for its own read
# What the agent and its start-up need out of the Zabbix Timeout: the interpreter's start, sudo,
# and the agent reading the answer (the default 3 s Timeout leaves a 2.5 s budget).
TIMEOUT_RESERVE = 0.5
DEFAULT_TIMEOUT = 3


def process_age() -> float:
    """Seconds since this process started: /proc/self/stat's start time against /proc/uptime,
    rounded up to the clock tick; 0 where they cannot be read. A fixed margin for the start-up
    did not always cover a loaded host (docs/performance.md)."""
    import os

    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        with open("/proc/uptime", "rb") as f:
            uptime = float(f.read().split()[0])
        tick = os.sysconf("SC_CLK_TCK")
        started = int(stat[stat.rindex(b")") + 2:].split()[19]) / tick  # field 22, after the comm
        return min(max(uptime - started + 1.0 / tick, 0.0), 1.0)
    except (OSError, ValueError, IndexError):
        return 0.0


def budget_of(given: "Optional[float]", p: "Dict[str, int]") -> float:
    """The time this call may take: ``--budget`` when given (a person at a terminal, tests),
    else the key's ``timeout`` parameter (the Zabbix Timeout it runs under) less TIMEOUT_RESERVE,
    so an admin who raises the Timeout for a big table gets a complete answer, not the default's."""
    if given is not None:
        return given
    return p.get("timeout", DEFAULT_TIMEOUT) - TIMEOUT_RESERVE


def started() -> float:
    """The process's start on the time.monotonic() clock."""
    import time

    return time.monotonic() - process_age()
