"""Property tests: the parsers survive anything (hostile or broken input) with their own errors
only, and what they accept is consistent."""

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conntrack_zbx.errors import Malformed
from conntrack_zbx.parse.stat import parse_stat
from conntrack_zbx.parse.table import AddressCache, BadLine, parse_line
from conntrack_zbx.talkers import tally
from tests.conftest import MIXED

with open(os.path.join(MIXED, "proc/net/nf_conntrack"), "rb") as f:
    REAL_LINES = f.read().splitlines(True)
with open(os.path.join(MIXED, "proc/net/stat/nf_conntrack")) as f:
    REAL_STAT = f.read()

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


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
    t = tally(lines)
    nonblank = sum(1 for ln in lines if ln.strip())
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
