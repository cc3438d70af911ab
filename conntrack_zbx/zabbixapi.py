"""The Zabbix API client of the admin commands (``template import``, ``fleet``) and the lab.

pyzabbix carries the JSON-RPC; this module owns the login, so it works with what hosts have:
pyzabbix 1.x from PyPI and Debian 12's ``python3-pyzabbix`` 0.8.2 (which has no ``api_token``
and logs in with ``user``, removed in Zabbix 6.4). The server's version is asked first (no
credentials needed), then the token or the session goes where that version wants it: in the
request body up to 6.2, as ``Authorization: Bearer`` from 6.4 on (7.2 removed the body's
``auth``). Credentials come from the environment or options and are never printed. pyzabbix's
``with`` block swallows API errors, so it is not used: every API error surfaces as
``DeployFailed`` with the API's own message.
"""

import os
from typing import TYPE_CHECKING, Any, Optional, Tuple

from conntrack_zbx.errors import DeployFailed, NotAvailable

if TYPE_CHECKING:
    from pyzabbix import ZabbixAPI  # type: ignore[attr-defined]

LOGIN = "_conntrack_zbx_login"  # (secret, is it a token) on the client, for whoami
VERSION = "_conntrack_zbx_version"  # the server's (major, minor), asked once before the login
NEEDS = ("the admin commands need pyzabbix and PyYAML: apt install python3-pyzabbix python3-yaml (Debian, "
         "Ubuntu), or pip install 'conntrack-zbx[admin]'")


def client() -> "Any":
    """pyzabbix's module, or a message saying how to get it."""
    try:
        import pyzabbix  # type: ignore[import-untyped,unused-ignore]
    except ImportError as e:
        raise NotAvailable("%s (%s)" % (NEEDS, e)) from None
    return pyzabbix


def connect(url: Optional[str] = None, token: Optional[str] = None, user: Optional[str] = None,
            password: Optional[str] = None, timeout: float = 60) -> "ZabbixAPI":
    url = url or os.environ.get("ZABBIX_URL")
    token = token or os.environ.get("ZABBIX_TOKEN")
    user = user or os.environ.get("ZABBIX_USER")
    password = password if password is not None else os.environ.get("ZABBIX_PASSWORD")
    if not url:
        raise DeployFailed("no Zabbix URL: pass --url or set ZABBIX_URL")
    if not token and not (user and password is not None):
        raise DeployFailed("no credentials: set ZABBIX_TOKEN, or ZABBIX_USER and ZABBIX_PASSWORD")
    zapi: "ZabbixAPI" = client().ZabbixAPI(url, timeout=timeout)
    version = server_version(zapi, url)
    if token:
        secret = token
    else:  # the parameter was renamed in 5.4 and the old name removed in 6.4
        name = "username" if version >= (5, 4) else "user"
        secret = str(call(zapi, "user.login", **{name: user or "", "password": password or ""}))
    if version >= (6, 4):
        zapi.session.headers["Authorization"] = "Bearer " + secret
    else:
        zapi.auth = secret
    setattr(zapi, LOGIN, (secret, bool(token)))
    setattr(zapi, VERSION, version)  # 7.x refuses apiinfo.version with an Authorization header
    if token:  # a token is not checked until it is used: one cheap call does
        try:
            call(zapi, "template.get", output=["templateid"], limit=1)
        except DeployFailed as e:
            raise DeployFailed("login to %s with ZABBIX_TOKEN failed: %s" % (url, str(e).partition(": ")[2])) \
                from None
    return zapi


def whoami(zapi: "ZabbixAPI") -> str:
    """The userid the client is logged in as (by its token or its session)."""
    secret, is_token = vars(zapi)[LOGIN]
    header = zapi.session.headers.pop("Authorization", None)  # 7.x: this call must come without it
    try:
        return str(call(zapi, "user.checkAuthentication", **{"token" if is_token else "sessionid": secret})["userid"])
    finally:
        if header is not None:
            zapi.session.headers["Authorization"] = header


def server_version(zapi: "ZabbixAPI", url: str = "") -> Tuple[int, int]:
    """The API's major.minor: what login, import rules and export format depend on. Asked once,
    before the login: a logged-in client sends its token, with which 7.x refuses this call."""
    known = vars(zapi).get(VERSION)  # not getattr: pyzabbix makes any unknown attribute an API object
    if known is not None:
        return known  # type: ignore[no-any-return]
    try:
        text = str(call(zapi, "apiinfo.version"))
    except DeployFailed as e:
        raise DeployFailed("cannot reach %s (the Zabbix API): %s" % (url or "the server", e)) from None
    major, minor = text.split(".")[:2]
    return int(major), int(minor)


def api_message(e: Exception) -> str:
    data = getattr(e, "data", None) or (e.args[0] if e.args else "")
    return str(data)


def call(zapi: "ZabbixAPI", method: str, _params: Any = None, **params: Any) -> Any:
    """One API call; positional ``_params`` for methods that take an array."""
    failed = client().ZabbixAPIException
    try:
        return zapi.do_request(method, params if _params is None else _params)["result"]
    except failed as e:
        raise DeployFailed("%s failed: %s" % (method, api_message(e))) from None
    except OSError as e:  # requests' errors are OSErrors: refused, timed out, DNS
        raise DeployFailed("%s failed: %s" % (method, e)) from None
    except ValueError as e:  # not JSON: not a Zabbix API at that URL
        raise DeployFailed("%s failed: the answer is not the Zabbix API's (%s)" % (method, e)) from None
