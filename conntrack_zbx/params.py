"""The allow-list for agent key parameters: the only caller-controlled input that reaches us.

A flexible UserParameter (``conntrack.talkers[*]``) hands what a Zabbix user typed in an item
key to the command line. The conf quotes each ``$N`` (and the agent's default
``UnsafeUserParameters=0`` refuses quotes and shell metacharacters), so a parameter arrives as one
argument; here it must then be a short run of ASCII digits inside a fixed range, or empty for
the default. Nothing else is accepted: no sign, no spaces, no Unicode digits, no option-like
text, never a path. The root side (``--params-stdin``) validates again, trusting nothing.

Which parameters exist, their ranges and defaults are the ``Param`` options of a command's
``Args`` class (``options.py``).
"""

from conntrack_zbx.errors import Refused

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs every agent call ~3 ms
    from typing import Dict, Optional

    from typing import Protocol, Tuple  # novermin (type checking only: never imported at run time)

    class Option(Protocol):
        """A key parameter as ``options.Param`` declares it (this module imports no option spec)."""

        name: str
        default: int
        lo: int
        hi: int

def check(p: "Option", raw: "Optional[str]") -> int:
    """Validate one parameter as typed ('' or None = the default)."""
    if raw is None or raw == "":
        return int(p.default)
    if not isinstance(raw, str) or not (_ascii_digits(raw) and len(raw) <= max(5, len(str(p.hi)))):
        raise Refused("parameter %s=%r is not allowed: use a whole number %d..%d (plain digits), "
                      "or leave it empty for %d" % (p.name, str(raw)[:40], p.lo, p.hi, p.default))
    value = int(raw)
    if not p.lo <= value <= p.hi:
        raise Refused("parameter %s=%d is outside %d..%d (empty means %d)"
                      % (p.name, value, p.lo, p.hi, p.default))
    return value


def _ascii_digits(text: str) -> bool:
    return bool(text) and all("0" <= c <= "9" for c in text)


def check_all(given: "Dict[str, Optional[str]]", own: "Tuple[Option, ...]") -> "Dict[str, int]":
    """Validate a mapping of parameter name -> text against a command's parameters ``own``;
    unknown names are refused."""
    known = {p.name: p for p in own}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise Refused("unknown parameter(s) %s: allowed are %s"
                      % (", ".join(map(repr, unknown)), ", ".join(known)))
    return {p.name: check(p, given.get(p.name)) for p in known.values()}


def to_wire(values: "Dict[str, int]") -> bytes:
    """What the agent side writes to the sudo line's stdin: ``name=value`` words, one line."""
    return (" ".join("%s=%d" % kv for kv in values.items()) + "\n").encode("ascii")


def from_wire(data: bytes, own: "Tuple[Option, ...]") -> "Dict[str, int]":
    """The root side of the sudo line: ``name=value`` words on one line, validated again,
    trusting nothing (size, encoding, names, duplicates, values)."""
    if len(data) > 4096:
        raise Refused("parameters on stdin are longer than 4096 bytes")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise Refused("parameters on stdin are not ASCII") from None
    if text.count("\n") > 1 or (text and not text.endswith("\n") and "\n" in text):
        raise Refused("parameters on stdin must be one line")
    given = {}  # type: Dict[str, Optional[str]]
    for word in text.split():
        name, eq, value = word.partition("=")
        if not eq or name in given:
            raise Refused("parameters on stdin must be distinct name=value words, got %r" % word[:40])
        given[name] = value
    return check_all(given, own)

