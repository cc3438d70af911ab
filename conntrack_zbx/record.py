"""Small immutable records, like ``collections.namedtuple``, without importing ``collections``:
the agent's counters call imports as little as possible (docs/performance.md)."""

from operator import itemgetter


def record(name: str, fields: str, doc: str) -> type:
    """A tuple subclass with named, read-only fields, keyword construction and a useful repr."""
    names = tuple(fields.split())

    def __new__(cls, *args, **kw):
        if len(args) + len(kw) != len(names):
            raise TypeError("%s takes %d fields, got %d" % (name, len(names), len(args) + len(kw)))
        values = list(args) + [kw.pop(n) for n in names[len(args):]]
        if kw:
            raise TypeError("%s has no field(s) %s" % (name, ", ".join(kw)))
        return tuple.__new__(cls, values)

    def __repr__(self):
        return "%s(%s)" % (name, ", ".join("%s=%r" % (n, v) for n, v in zip(names, self)))

    def _asdict(self):
        return dict(zip(names, self))

    ns = {"__slots__": (), "__doc__": doc, "__new__": __new__, "__repr__": __repr__, "_fields": names,
          "_asdict": _asdict, "__getnewargs__": lambda self: tuple(self)}
    ns.update((n, property(itemgetter(i), doc="field %d" % i)) for i, n in enumerate(names))
    return type(name, (tuple,), ns)
