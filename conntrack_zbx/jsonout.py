"""JSON output for the agent commands, byte for byte what ``json.dumps(obj, separators=(",", ":"))``
writes (tests hold them equal over arbitrary documents).

Why not the json module: importing it imports ``re`` (and ``enum``), which costs more than
everything else ``conntrack-zbx stats`` does, on every host, every minute. The documents written
here are plain: dicts with string keys, lists, strings, ints, floats, booleans and None.
"""

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs every agent call ~3 ms
    from typing import Any, Dict

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _plain(s: str) -> bool:
    """Printable ASCII only (str.isascii is Python 3.7+; the agent runs on 3.6 too)."""
    try:
        s.encode("ascii")
    except UnicodeEncodeError:
        return False
    return s.isprintable()



def _string(s: str) -> str:
    if _plain(s) and '"' not in s and "\\" not in s:
        return '"' + s + '"'  # the common case: nothing to escape
    out = []
    for ch in s:
        esc = _ESCAPES.get(ch)
        if esc is not None:
            out.append(esc)
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            n = ord(ch)
            if n < 0x10000:
                out.append("\\u%04x" % n)
            else:  # outside the BMP: a surrogate pair, as json does with ensure_ascii
                n -= 0x10000
                out.append("\\u%04x\\u%04x" % (0xD800 | (n >> 10), 0xDC00 | (n & 0x3FF)))
    return '"' + "".join(out) + '"'


def dumps(obj: "Any") -> str:
    if isinstance(obj, str):
        return _string(obj)
    if obj is None:
        return "null"
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if isinstance(obj, int):
        return int.__repr__(obj)
    if isinstance(obj, float):
        if obj != obj or obj in (float("inf"), float("-inf")):
            return {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}[repr(obj)]
        return float.__repr__(obj)
    if isinstance(obj, dict):
        return "{" + ",".join(_string(k) + ":" + dumps(v) for k, v in obj.items()) + "}"
    if isinstance(obj, (list, tuple)):
        return "[" + ",".join(dumps(v) for v in obj) + "]"
    raise TypeError("Object of type %s is not JSON serializable" % type(obj).__name__)


def with_fields(written: str, fields: "Dict[str, Any]") -> str:
    """A written JSON object with ``fields`` appended: what ``dumps(dict(obj, **fields))`` writes
    when none of ``fields`` is already in it (tests hold them equal). Cached answers are stored
    as written text, and each call adds its own ``cached``/``age``; parsing the answer back would
    import ``json`` on every cached call."""
    if not (written.startswith("{") and written.endswith("}")):
        raise ValueError("not a written JSON object")
    tail = ",".join(_string(k) + ":" + dumps(v) for k, v in fields.items())
    if not tail:
        return written
    return written[:-1] + ("," if written != "{}" else "") + tail + "}"


class Written(str):
    """A JSON document already written out: ``cli`` emits it as it is. A cached answer is served
    as it was written, with only the call's own fields added, so a cached call never imports
    ``json`` or ranks anything."""
