"""Every error conntrack_zbx raises, in one place.

Failures that reach a person derive from ``ConntrackError``. ``cli.main`` reports each the same
way (docs/failure-contract.md): the agent commands print ``{"error": "<message>"}`` on stdout
(both Zabbix agents ignore exit codes and merge stderr into the value, so the template's "Check
for error in JSON" step makes the item *not supported* with exactly that text); the human and
admin commands print ``conntrack-zbx: <message>`` on stderr. Either way the exit status is the
class's ``exit_code``:

====  ==========================================================================================
code  meaning
====  ==========================================================================================
0     the answer was printed
1     ``ConntrackError`` without a more precise class; ``DeployFailed`` (the Zabbix API said no)
2     ``NotAvailable`` (no such source here), ``TuneRefused`` (tune will not do it); also
      argparse's own usage errors
3     ``NotPermitted`` (this user may not read it), ``Refused`` (a key parameter or option
      outside the allow-list)
4     ``Malformed`` (read, but not what the kernel writes)
70    an internal error (a bug: the message asks for a report), still printed as JSON
74    the output could not be written (a full disk, a closed terminal)
130   interrupted (Ctrl-C), as a shell reports SIGINT
====  ==========================================================================================

Messages say what is wrong *and* how to fix it: they end up in front of on-call staff.

The remaining classes never reach the contract. ``BadLine`` and ``BadMessage`` mark one record
that is not a conntrack entry: readers skip and count it. ``CacheRefused`` and ``LockTimeout``
mean the snapshot cache cannot be used safely: the table is then read afresh and the answer's
``cache_error`` says why.
"""

INTERNAL_ERROR = 70
OUTPUT_ERROR = 74  # EX_IOERR
INTERRUPTED = 130  # 128 + SIGINT, what a shell reports


class ConntrackError(Exception):
    """Base class: something could not be read or done; never report it as a zero."""

    exit_code = 1


class NotAvailable(ConntrackError):
    """The source does not exist here (module not loaded, kernel without procfs support)."""

    exit_code = 2


class NotPermitted(ConntrackError):
    """The source exists but this user may not read it."""

    exit_code = 3


class Refused(NotPermitted):
    """Caller-controlled input outside the allow-list (a key parameter, an option the fixed sudo
    line cannot carry); the message says what is allowed."""


class Malformed(ConntrackError):
    """The source was read but its content is not what the kernel writes."""

    exit_code = 4


class TuneRefused(ConntrackError):
    """``tune`` will not apply a plan (unsafe size, a boot file that would undo it...)."""

    exit_code = 2


class ProtectRefused(TuneRefused):
    """``protect`` will not apply: the host's firewall would drop the exempted traffic (or is one
    this command does not edit); the message says which rule to add."""


class DeployFailed(ConntrackError):
    """The Zabbix API refused or could not be reached; the message is the API's own."""

    exit_code = 1


class OutputFailed(Exception):
    """Our own output could not be written (ENOSPC, EIO): reported as exit 74, not as the
    failure of the command's work."""


class BadRecord(ValueError):
    """One record of the table is not a conntrack entry: skipped and counted, never fatal."""


class BadLine(BadRecord):
    """A /proc/net/nf_conntrack line that is not an entry."""


class BadMessage(BadRecord):
    """A ctnetlink message that does not have the layout the kernel writes."""


class CacheRefused(Exception):
    """The snapshot cache (or one answer in it) failed a safety check and is not used."""


class LockTimeout(Exception):
    """Another call held the cache lock for longer than this call may wait."""
