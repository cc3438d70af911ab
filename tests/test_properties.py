"""Property tests: the parsers survive anything (hostile or broken input) with their own errors
only, and what they accept is consistent."""

import io
import os
from collections import Counter

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conntrack_zbx.errors import Malformed
from conntrack_zbx.parse.stat import parse_stat
from conntrack_zbx.count.lines import AddressCache, BadLine, parse_line
from conntrack_zbx.count import rows
from conntrack_zbx.parse import netlink as nl
from conntrack_zbx.count.text import count_text
from conntrack_zbx.count.idle import IdleRule
from conntrack_zbx.count.kinds import expand
from conntrack_zbx.count.views import tally_lines
from tests.conftest import MIXED, fixture_tree, netlink_fast, netlink_slow

with open(os.path.join(MIXED, "proc/net/nf_conntrack"), "rb") as f:
    REAL_LINES = f.read().splitlines(True)
with open(os.path.join(MIXED, "proc/net/stat/nf_conntrack")) as f:
    REAL_STAT = f.read()

NETLINK_DUMPS = []
for _tree in ("netlink-6.18.44-mixed", "netlink-6.18.44-acct-timestamp"):
    with open(os.path.join(fixture_tree(_tree), "ctnetlink-dump.bin"), "rb") as f:
        NETLINK_DUMPS.append(f.read())

# tests/fuzz.py runs these same properties with a far bigger budget (CTZBX_FUZZ_EXAMPLES).
SETTINGS = settings(max_examples=int(os.environ.get("CTZBX_FUZZ_EXAMPLES", "300")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def mutate(data: bytes, cuts):
    out = bytearray(data)
    for pos, byte in cuts:
        if out:
            out[pos % len(out)] = byte
    return bytes(out)


@SETTINGS
@given(st.binary(max_size=400))
def test_any_bytes_parse_or_badline(data):
    try:
        e = parse_line(data)
    except BadLine:
        return
    assert e.family in ("ipv4", "ipv6") and e.src and e.dst


@SETTINGS
@given(st.sampled_from(REAL_LINES), st.lists(st.tuples(st.integers(0, 10 ** 6), st.integers(0, 255)), max_size=6),
       st.integers(0, 400))
def test_real_lines_mutated_or_truncated(line, cuts, cut_at):
    data = mutate(line, cuts)[:cut_at]
    try:
        e = parse_line(data, AddressCache())
    except BadLine:
        return
    assert ":" in e.src if e.family == "ipv6" else "." in e.src


@SETTINGS
@given(st.lists(st.one_of(st.sampled_from(REAL_LINES), st.binary(max_size=200)), max_size=40))
def test_tally_counts_every_line_once(lines):
    t = tally_lines(lines)
    nonblank = sum(1 for ln in lines if ln.rstrip(b"\n"))
    assert t.entries + t.skipped == nonblank
    assert sum(t.counts.values()) == t.entries


@SETTINGS
@given(st.text(max_size=600))
def test_any_text_stat_parses_or_malformed(text):
    try:
        st_ = parse_stat(text)
    except Malformed:
        return
    assert st_.cpus >= 1 and all(v >= 0 for v in st_.counters.values())


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 10 ** 5), st.sampled_from(list("0123456789abcdefxyz \n"))), max_size=8))
def test_real_stat_mutated(cuts):
    data = list(REAL_STAT)
    for pos, ch in cuts:
        data[pos % len(data)] = ch
    try:
        parse_stat("".join(data))
    except Malformed:
        pass


# -- the fast block counter is the line parser, counted in C ----------------------------------
LINE_PARTS = st.one_of(
    st.sampled_from(REAL_LINES),
    st.sampled_from([b"\n", b" \n", b"\r\n", b"ipv4 2 tcp 6 1 src=1.2.3.4\n", b"\xff\xfe garbage\n"]),
    st.binary(max_size=120),
)


@SETTINGS
@given(st.lists(st.tuples(LINE_PARTS, st.lists(st.tuples(st.integers(0, 10 ** 6), st.integers(0, 255)),
                                                  max_size=3), st.integers(0, 400)), max_size=30))
def test_block_counter_equals_line_parser(parts):
    """Any byte stream (real lines mutated, cut, mixed with garbage): same entries, same skipped."""
    data = b"".join(mutate(p, cuts)[:cut] for p, cuts, cut in parts)
    rule = IdleRule(432000, 300, 3600)
    fast = count_text(io.BytesIO(data), rule=rule)
    slow = tally_lines(io.BytesIO(data), "src", rule=rule)
    assert (fast.entries, fast.skipped) == (slow.entries, slow.skipped)
    assert expand(fast.counts, fast.kinds) == expand(slow.counts, slow.kinds)
    assert fast.idle == slow.idle


# -- the netlink decoder -----------------------------------------------------------------------
def _decode_all(buf):
    """Everything the decoder offers, on any bytes: only BadMessage may come out."""
    try:
        w = nl.walk(buf)
    except nl.BadMessage:
        return None
    found = rows.count_rows(buf, w.rows)
    slow = Counter()
    for mtype, _f, off, length in nl.messages(buf):
        if mtype == nl.CT_NEW:
            try:
                slow[nl.decode_entry(buf, off, length)] += 1
            except nl.BadMessage:
                pass
        elif mtype == nl.CT_GET_STATS_CPU:
            try:
                nl.decode_stats_cpu(buf, off, length)
            except nl.BadMessage:
                pass
    return found, netlink_slow(slow)[0]


@SETTINGS
@given(st.binary(max_size=600))
def test_any_bytes_decode_or_badmessage(data):
    _decode_all(data)


@SETTINGS
@given(st.sampled_from(NETLINK_DUMPS),
       st.lists(st.tuples(st.integers(0, 10 ** 6), st.integers(0, 255)), min_size=1, max_size=4))
def test_real_dumps_mutated(dump, cuts):
    """Flipped bytes in real rows: when both the fast pattern and the general decoder account
    for every row, they name the same sources with the same counts. (A flipped length byte can
    make them read a different state for a corrupted row; the kernel never writes one.)"""
    got = _decode_all(mutate(dump, cuts))
    if got is None:
        return
    found, slow = got
    if found is not None and sum(slow.values()) == len(found):
        def by_source(counts):
            out = Counter()
            for (src, _proto, _label), n in counts.items():
                out[src] += n
            return out
        assert by_source(netlink_fast(found)[0]) == by_source(slow)


@SETTINGS
@given(st.one_of(st.binary(min_size=4, max_size=4), st.binary(min_size=16, max_size=16)),
       st.integers(8, 32), st.integers(16, 128))
@example(bytes([198, 51, 100, 7]), 24, 64)  # the defaults: slices
@example(bytes(range(16)), 24, 64)
@example(bytes(range(16)), 32, 32)  # same whole-byte length for both families: masks
def test_network_roll_up_equals_ipaddress(packed, prefix4, prefix6):
    import ipaddress

    from conntrack_zbx.rank import network_keys

    ip = ipaddress.ip_address(packed)
    prefix = prefix4 if ip.version == 4 else prefix6
    key, name = network_keys(prefix4, prefix6)  # the slice for whole-byte prefixes, else the mask
    assert name(key(packed)) == \
        str(ipaddress.ip_network("%s/%d" % (ip, prefix), strict=False))


JSON_DOCS = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30)


@SETTINGS
@given(JSON_DOCS)
def test_json_output_equals_the_json_module(doc):
    import json

    from conntrack_zbx.jsonout import dumps

    assert dumps(doc) == json.dumps(doc, separators=(",", ":"))


@SETTINGS
@given(st.dictionaries(st.text(), JSON_DOCS, max_size=5), st.dictionaries(st.text(), JSON_DOCS, max_size=3))
def test_fields_added_to_a_written_object_equal_the_json_module(doc, fields):
    """A cached answer plus the call's own fields reads as the merged object would."""
    import json

    from conntrack_zbx.jsonout import dumps, with_fields

    fields = {k: v for k, v in fields.items() if k not in doc}
    assert with_fields(dumps(doc), fields) == json.dumps(dict(doc, **fields), separators=(",", ":"))


@SETTINGS
@given(st.dictionaries(st.tuples(st.one_of(st.binary(min_size=4, max_size=4), st.binary(min_size=16, max_size=16)),
                                 st.sampled_from(["tcp", "udp"]), st.sampled_from(["ESTABLISHED", "UNREPLIED"])),
                       st.integers(1, 50), max_size=40),
       st.integers(1, 5), st.integers(8, 32), st.integers(16, 128))
def test_talkers_ranking_equals_the_general_ranking(counts, top, prefix4, prefix6):
    """The compact by-source ranking talkers uses gives what the general `rank` gives over
    plain (source, protocol, label) keys, for sources and for networks."""
    from collections import Counter

    from conntrack_zbx.count.kinds import KINDS, count_kind
    from conntrack_zbx.count import Tally
    from conntrack_zbx.rank import (address_text, network_namer, network_of, rank,
                                       rank_talkers)

    by_src, kinds = {}, {}
    for (src, proto, label), n in counts.items():
        count_kind(by_src, kinds, src, KINDS.index(proto, label), n)
    t = Tally(sum(counts.values()), 0, by_src, kinds=kinds)
    src, net = rank_talkers(t, top, prefix4, prefix6)
    counts = Counter(counts)
    assert src == rank(counts, top, text=address_text)
    assert net == rank(counts, top, network_of(prefix4, prefix6), network_namer(prefix4, prefix6))


@SETTINGS
@given(st.text(alphabet="0123456789abcdefABCDEF.:", min_size=1, max_size=45), st.sampled_from(["ipv4", "ipv6"]))
def test_fast_address_packing_accepts_what_ipaddress_accepts(text, family):
    """The block counter packs addresses with inet_pton of the line's family, the line parser
    with ipaddress: for every string the line grammar lets through they must accept and pack
    the same."""
    import ipaddress

    from conntrack_zbx.count.lines import label_lines

    try:
        ip = ipaddress.ip_address(text)
        expected = ip.packed if ip.version == int(family[-1]) else None
    except ValueError:
        expected = None
    from conntrack_zbx.count.kinds import Sums

    sums = Sums()
    key = b"/".join([family.encode() + b" 2 udp", b"", b"", b"", text.encode(), b"", b""])
    label_lines({key: 1}, sums)
    assert list(sums.counts) == ([expected] if expected else [])
