"""Alerts that reach a person, in the lab: real media types (webhooks to lab/receiver.py), the
Admin user's media, and the two actions Zabbix shops commonly run: one that pages for severity
Average and above (as docs/runbook.md recommends), one that pages from High up. Each action sends
through its own media type to its own receiver, so the replay counts what each would have sent.
Each notification is one POST the receiver records."""

import json
import os
from typing import Any, Dict, List

WEBHOOK_JS = """
var p = JSON.parse(value);
var req = new HttpRequest();
req.addHeader('Content-Type: application/json');
req.post(p.URL, JSON.stringify({subject: p.Subject, message: p.Message, severity: p.Severity}));
if (req.getStatus() != 200) { throw 'receiver answered ' + req.getStatus(); }
return 'OK';
"""

MESSAGE = (
    "{EVENT.NAME}\n"
    "Host: {HOST.NAME}\n"
    "Severity: {EVENT.SEVERITY}\n"
    "Now: {EVENT.OPDATA}\n"
    "{TRIGGER.DESCRIPTION}\n"
    "Started at {EVENT.TIME} on {EVENT.DATE}; event {EVENT.ID}"
)


# The two paging policies: (name, lowest severity paged: 3 = Average, 4 = High)
ACTIONS = (("Average", 3), ("High", 4))


def configure(api: Any, urls: Dict[str, str], hostid: str = "", fleet_groupid: str = "") -> Dict[str, Dict[str, str]]:
    """Per policy of ``ACTIONS`` (its receiver's URL in ``urls``): a media type, Admin's media of
    it and the action paging from that severity up, for ``hostid``'s problems only; or, with
    ``fleet_groupid``, for a fleet's: its group's problems but the nodes' own "who" problems
    (tag ``cause``), which the fleet host's problems page once for the whole group."""
    if fleet_groupid:
        scope = [{"conditiontype": 0, "operator": 0, "value": fleet_groupid},  # host group
                 {"conditiontype": 25, "operator": 1, "value": "cause"}]  # no tag named cause
    else:
        scope = [{"conditiontype": 1, "operator": 0, "value": hostid}]
    admin = api.call("user.get", filter={"username": ["Admin"]}, output=["userid"])[0]["userid"]
    made, medias = {}, []
    for policy, _severity in ACTIONS:
        # status 0 said outright: 7.0 creates a media type disabled unless told
        mtid = api.call("mediatype.create", type=4, name="conntrack_zbx lab pager (%s+)" % policy,
                        status=0, script=WEBHOOK_JS, timeout="10s",
                        parameters=[{"name": "URL", "value": urls[policy]},
                                    {"name": "Subject", "value": "{ALERT.SUBJECT}"},
                                    {"name": "Message", "value": "{ALERT.MESSAGE}"},
                                    {"name": "Severity", "value": "{EVENT.SEVERITY}"}],
                        message_templates=[{"eventsource": 0, "recovery": 0, "subject": "Problem: {EVENT.NAME}",
                                            "message": MESSAGE}])["mediatypeids"][0]
        medias.append({"mediatypeid": mtid, "sendto": "on-call-%s" % policy.lower(), "active": 0,
                       "severity": 63, "period": "1-7,00:00-24:00"})
        made[policy] = {"mediatypeid": mtid}
    api.call("user.update", userid=admin, medias=medias)
    for policy, severity in ACTIONS:
        made[policy]["actionid"] = api.call(
            "action.create", name="conntrack_zbx: page on-call from %s up" % policy, eventsource=0, status=0,
            esc_period="1h", filter={"evaltype": 0, "conditions": [
                {"conditiontype": 4, "operator": 5, "value": str(severity)}] + scope},  # severity >= this
            operations=[{"operationtype": 0, "esc_step_from": 1, "esc_step_to": 1,
                         "opmessage": {"default_msg": 1, "mediatypeid": made[policy]["mediatypeid"]},
                         "opmessage_usr": [{"userid": admin}]}])["actionids"][0]
    return made


def received(path: str) -> List[Dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(ln) for ln in f if ln.strip()]
