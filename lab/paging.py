"""Alerts that reach a person, in the lab: a real media type (a webhook to lab/receiver.py), the
Admin user's media, and an action that pages for severity Average and above, as docs/runbook.md
recommends. Each notification is one POST the receiver records."""

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


def configure(api: Any, url: str, hostid: str) -> Dict[str, str]:
    """Media type, Admin's media and the paging action (for ``hostid``'s problems only)."""
    mtid = api.call("mediatype.create", type=4, name="conntrack_zbx lab pager", script=WEBHOOK_JS, timeout="10s",
                    parameters=[{"name": "URL", "value": url}, {"name": "Subject", "value": "{ALERT.SUBJECT}"},
                                {"name": "Message", "value": "{ALERT.MESSAGE}"},
                                {"name": "Severity", "value": "{EVENT.SEVERITY}"}],
                    message_templates=[{"eventsource": 0, "recovery": 0, "subject": "Problem: {EVENT.NAME}",
                                        "message": MESSAGE}])["mediatypeids"][0]
    admin = api.call("user.get", filter={"username": ["Admin"]}, output=["userid"])[0]["userid"]
    api.call("user.update", userid=admin, medias=[{"mediatypeid": mtid, "sendto": "on-call", "active": 0,
                                                   "severity": 63, "period": "1-7,00:00-24:00"}])
    action = api.call("action.create", name="conntrack_zbx: page on-call", eventsource=0, status=0, esc_period="1h",
                      filter={"evaltype": 0, "conditions": [
                          {"conditiontype": 4, "operator": 5, "value": "3"},  # severity >= Average
                          {"conditiontype": 1, "operator": 0, "value": hostid}]},
                      operations=[{"operationtype": 0, "esc_step_from": 1, "esc_step_to": 1,
                                   "opmessage": {"default_msg": 1, "mediatypeid": mtid},
                                   "opmessage_usr": [{"userid": admin}]}])["actionids"][0]
    return {"mediatypeid": mtid, "actionid": action}


def received(path: str) -> List[Dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(ln) for ln in f if ln.strip()]
