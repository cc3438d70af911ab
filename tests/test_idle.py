"""Idle time: never reported for an entry that is not ESTABLISHED TCP, nor where the remaining
timeout cannot tell (offloaded flows, values at or under the retransmission caps, values above
the established timeout), and the same by every reader.

Lines are real kernel lines (the fixtures, every printed shape) with their state word and
remaining timeout replaced; netlink rows are real dump rows with CTA_TIMEOUT rewritten."""

import io
import os
import re
import struct
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from conntrack_zbx.count import rows
from conntrack_zbx.count.kinds import Sums
from conntrack_zbx.parse import netlink as nl
from conntrack_zbx.count.idle import IdleRule
from conntrack_zbx.count.lines import parse_line
from conntrack_zbx.count.text import count_text
from conntrack_zbx.count.views import tally_lines
from tests.conftest import MIXED, fixture_tree
from tests.test_properties import NETLINK_DUMPS, SETTINGS

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
LINES = []
for _path in (os.path.join(MIXED, "proc/net/nf_conntrack"), os.path.join(FIXTURES, "printed-formats/nf_conntrack"),
              os.path.join(fixture_tree("kernel-6.18.44-acct-timestamp"), "proc/net/nf_conntrack")):
    with open(_path, "rb") as f:
        LINES += [ln for ln in f.read().splitlines(True) if ln.strip()]
STATES = [b"ESTABLISHED", b"TIME_WAIT", b"CLOSE_WAIT", b"SYN_SENT", b"OPEN", b"COOKIE_WAIT"]
HEAD = re.compile(rb"^(ipv[46] +[0-9]+ [a-z0-9]+ +[0-9]+ )([0-9]+ )?((?:[A-Z][A-Z0-9_]* )?)")
RULES = st.builds(IdleRule, st.integers(1, 500000), st.integers(0, 1000), st.integers(60, 400000))


def reshape(line, remaining, state):
    """The line with another remaining timeout (None: left out, as for offloaded flows) and, if
    it prints a state word, another one."""
    m = HEAD.match(line)
    word = m.group(3) and state + b" "
    return m.group(1) + (b"%d " % remaining if remaining is not None else b"") + word + line[m.end():]


def expected(lines, rule):
    """Idle entries per source by the rule read literally, line by line."""
    out = Counter()
    for ln in lines:
        e = parse_line(ln)
        if e.proto == "tcp" and e.state == "ESTABLISHED" and e.timeout is not None \
                and rule.cap < e.timeout <= rule.established and rule.established - e.timeout > rule.idle_min:
            out[e.src] += 1
    return out


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(LINES), st.one_of(st.none(), st.integers(0, 600000)),
                          st.sampled_from(STATES)), max_size=30), RULES)
def test_idle_only_for_established_tcp_where_the_timeout_tells(parts, rule):
    lines = [reshape(ln, rem, state) for ln, rem, state in parts]
    data = b"".join(lines)
    fast = count_text(io.BytesIO(data), rule=rule)
    slow = tally_lines(io.BytesIO(data), "src", rule=rule)
    assert fast.idle == slow.idle
    from conntrack_zbx.rank import address_text

    got = Counter({address_text(src): v[0] for src, v in fast.idle.items()})
    assert got == expected(lines, rule)
    for _n, least in fast.idle.values():
        assert rule.cap < least <= rule.established - rule.idle_min - 1


def _offsets(dump, attr):
    """Offsets of every CT_NEW row's value of one top-level attribute."""
    out = []
    for mtype, _f, off, length in nl.messages(dump):
        if mtype == nl.CT_NEW:
            for atype, voff, _vlen in nl.attrs(dump, off + 20, off + length):
                if atype == attr:
                    out.append(voff)
    return out


# Status bits a row can carry that change what its timeout says: offloaded to a flow table (the
# flow table keeps it alive; ctnetlink_dump_status writes them like any other bit; this kernel is
# built without CONFIG_NF_FLOW_TABLE, so real offloaded rows are these captured rows with the bit
# set) and a fixed timeout.
STATUS_BITS = st.sampled_from([0, nl.IPS_OFFLOAD, nl.IPS_HW_OFFLOAD, nl.IPS_FIXED_TIMEOUT])


@SETTINGS
@given(st.sampled_from(NETLINK_DUMPS), st.lists(st.integers(0, 600000), min_size=1, max_size=40), RULES,
       st.lists(STATUS_BITS, min_size=1, max_size=40))
def test_netlink_rows_idle_equals_the_general_decoder(dump, values, rule, bits):
    buf = bytearray(dump)
    for i, voff in enumerate(_offsets(dump, nl.CTA_TIMEOUT)):
        struct.pack_into("!I", buf, voff, values[i % len(values)])
    for i, voff in enumerate(_offsets(dump, nl.CTA_STATUS)):
        struct.pack_into("!I", buf, voff, struct.unpack_from("!I", buf, voff)[0] | bits[i % len(bits)])
    buf = bytes(buf)
    w = nl.walk(buf)
    found = rows.count_rows(buf, w.rows, rows.row_pattern(rule))
    assert found is not None
    fast = Sums()
    rows.label_rows(Counter(found), fast, {})
    records = Counter()
    for mtype, _f, off, length in nl.messages(buf):
        if mtype == nl.CT_NEW:
            records[nl.decode_entry(buf, off, length)] += 1
    slow = Sums()
    rows.label_entries(records, slow, rule)
    assert (fast.counts, fast.kinds, fast.idle) == (slow.counts, slow.kinds, slow.idle)
    truth = Counter()
    for r, n in records.items():
        no_idle = nl.IPS_OFFLOAD | nl.IPS_HW_OFFLOAD | nl.IPS_FIXED_TIMEOUT
        if r.proto == 6 and r.state == 3 and not r.status & no_idle \
                and rule.cap < r.timeout <= rule.established and rule.established - r.timeout > rule.idle_min:
            truth[r.src] += n
    assert Counter({src: v[0] for src, v in fast.idle.items()}) == truth


def test_offloaded_and_capped_entries_are_never_idle():
    offloaded = [ln for ln in LINES if b"OFFLOAD]" in ln and b" tcp " in ln]
    assert offloaded, "the printed-formats fixture holds offloaded TCP lines"
    rule = IdleRule(432000, 300, 3600)
    capped = reshape(LINES[0], 300, b"ESTABLISHED")  # a retransmitting connection: unknown
    above = reshape(LINES[0], 432001, b"ESTABLISHED")  # more left than the sysctl gives: unknown
    idle = reshape(LINES[0], 301, b"ESTABLISHED")
    t = count_text(io.BytesIO(b"".join(offloaded + [capped, above, idle])), rule=rule)
    assert [v for v in t.idle.values()] == [[1, 301]]
