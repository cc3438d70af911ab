"""The monitoring side of the lab: hosts, macros, values and problems through the real API.

Every wait polls with a deadline and, on timeout, fails with what it saw last.
"""

import time
from typing import Any, Callable, Dict, List, Optional

from conntrack_zbx import zabbixapi


class Timeout(AssertionError):
    pass


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 60, interval: float = 0.5,
             seen: Optional[Callable[[], Any]] = None):
    """Call ``probe`` until it returns something truthy; on timeout raise with what was seen
    (``seen()`` if given, else the probe's last answer)."""
    deadline = time.monotonic() + timeout
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise Timeout("timed out after %ss waiting for %s; last seen: %r"
                          % (timeout, what, seen() if seen else last))
        time.sleep(interval)


class Monitor:
    def __init__(self, url: str, user: str = "Admin", password: str = "zabbix") -> None:
        self.zapi = zabbixapi.connect(url, user=user, password=password)

    def call(self, method: str, _params=None, **params):
        return zabbixapi.call(self.zapi, method, _params, **params)

    def disable_host(self, name: str) -> None:
        """data.sql ships an enabled 'Zabbix server' host polling 127.0.0.1:10050."""
        for h in self.call("host.get", filter={"host": [name]}, output=["hostid"]):
            self.call("host.update", hostid=h["hostid"], status=1)

    def create_host(self, name: str, ip: str, port: int, macros: Optional[Dict[str, str]] = None,
                    group: str = "Linux servers") -> str:
        gid = self.call("hostgroup.get", filter={"name": [group]}, output=["groupid"])[0]["groupid"]
        return self.call("host.create", host=name, groups=[{"groupid": gid}],
                         interfaces=[{"type": 1, "main": 1, "useip": 1, "ip": ip, "dns": "",
                                      "port": str(port)}],
                         macros=[{"macro": k, "value": v} for k, v in (macros or {}).items()])["hostids"][0]

    def hostid(self, name: str) -> str:
        return self.call("host.get", filter={"host": [name]}, output=["hostid"])[0]["hostid"]

    def set_macro(self, hostid: str, macro: str, value: str) -> None:
        found = self.call("usermacro.get", hostids=[hostid], filter={"macro": [macro]}, output=["hostmacroid"])
        if found:
            self.call("usermacro.update", hostmacroid=found[0]["hostmacroid"], value=value)
        else:
            self.call("usermacro.create", hostid=hostid, macro=macro, value=value)

    def items(self, hostid: str) -> List[Dict[str, Any]]:
        return self.call("item.get", hostids=[hostid], webitems=True,
                         output=["itemid", "key_", "name", "lastvalue", "lastclock", "state", "error",
                                 "status", "flags", "type"])

    def item(self, hostid: str, key: str) -> Optional[Dict[str, Any]]:
        found = [i for i in self.items(hostid) if i["key_"] == key]
        return found[0] if found else None

    def execute_now(self, itemids: List[str]) -> None:
        """'Execute now' (task type 6) for passive items: no waiting for the next interval."""
        self.call("task.create", [{"type": 6, "request": {"itemid": i}} for i in itemids])

    def problems(self, hostid: str) -> List[Dict[str, Any]]:
        return self.call("problem.get", hostids=[hostid], output=["eventid", "name", "clock", "r_clock",
                                                                  "severity", "opdata", "objectid"],
                         recent=True, sortfield=["eventid"])

    def active_problem(self, hostid: str, needle: str) -> Optional[Dict[str, Any]]:
        for p in self.problems(hostid):
            if needle in p["name"] and p["r_clock"] == "0":
                return p
        return None
