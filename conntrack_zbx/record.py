"""Small immutable records without importing ``collections`` or ``typing``: the agent's counters
call imports as little as possible (docs/performance.md). Subclasses list their fields in
``__slots__`` and get keyword/positional construction, equality, a repr and ``_asdict``; type
checkers see ordinary annotated classes."""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Tuple


class Record:
    __slots__: "Tuple[str, ...]" = ()

    def __init__(self, *args: "Any", **kw: "Any") -> None:
        names = self.__slots__
        if len(args) + len(kw) != len(names):
            raise TypeError("%s takes %d fields, got %d" % (type(self).__name__, len(names), len(args) + len(kw)))
        values = dict(zip(names, args))
        for k, v in kw.items():
            if k not in names or k in values:
                raise TypeError("%s: unexpected or repeated field %s" % (type(self).__name__, k))
            values[k] = v
        for k in names:
            object.__setattr__(self, k, values[k])

    def __setattr__(self, name: str, value: "Any") -> None:
        raise AttributeError("%s is immutable" % type(self).__name__)

    def _asdict(self) -> "Dict[str, Any]":
        return {k: getattr(self, k) for k in self.__slots__}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Record) and type(other) is type(self) and self._asdict() == other._asdict()

    def __hash__(self) -> int:
        return hash(tuple(self._asdict().items()))

    def __repr__(self) -> str:
        return "%s(%s)" % (type(self).__name__, ", ".join("%s=%r" % kv for kv in self._asdict().items()))
