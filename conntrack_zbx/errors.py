"""The three ways reading conntrack can fail, under one base.

``cli.main`` maps them to the failure contract (docs/failure-contract.md): a JSON document
``{"error": "..."}`` on stdout, which the template's "Check for error in JSON" step turns into a
*not supported* item carrying exactly that text, and a non-zero exit status for humans.
Messages say what is wrong *and* how to fix it, because they end up in front of on-call staff.
"""


class ConntrackError(Exception):
    """Base class: something could not be read; never report it as a zero."""

    exit_code = 1


class NotAvailable(ConntrackError):
    """The source does not exist here (module not loaded, kernel without procfs support)."""

    exit_code = 2


class NotPermitted(ConntrackError):
    """The source exists but this user may not read it."""

    exit_code = 3


class Malformed(ConntrackError):
    """The source was read but its content is not what the kernel writes."""

    exit_code = 4
