"""The ctnetlink decoder over dumps captured from the real kernel (tests/fixtures/netlink-*).

Each tree holds one moment of one table through both interfaces, so the binary rows must give
exactly what the /proc text gives: the fast whole-buffer pattern, the general per-message
decoder and the /proc reader all agree, including zones, marks, accounting and timestamps.
"""

import os
from collections import Counter

import pytest

from conntrack_zbx.count import rows
from conntrack_zbx.parse import netlink as nl
from conntrack_zbx.parse.stat import parse_stat
from conntrack_zbx.count.text import count_text
from conntrack_zbx.count.kinds import expand
from tests.conftest import fixture_tree, netlink_fast, netlink_slow

TREES = ["netlink-6.18.44-mixed", "netlink-6.18.44-acct-timestamp"]


def read(tree, rel):
    with open(os.path.join(fixture_tree(tree), rel), "rb") as f:
        return f.read()


def slow_counts(buf, rule=None):
    """The general decoder's view of a dump: ((source, protocol, label) -> entries, idle)."""
    out = Counter()
    for mtype, _f, off, length in nl.messages(buf):
        if mtype == nl.CT_NEW:
            out[nl.decode_entry(buf, off, length)] += 1
    return netlink_slow(out, rule)


@pytest.mark.parametrize("tree", TREES)
def test_fast_pattern_accounts_for_every_real_row(tree):
    dump = read(tree, "ctnetlink-dump.bin")
    w = nl.walk(dump)
    lines = read(tree, "proc/net/nf_conntrack").count(b"\n")
    assert w.done and w.error == 0 and w.other == 0 and w.rows == lines > 0
    found = rows.count_rows(dump, w.rows)
    assert found is not None, "a real row shape the pattern does not know"
    assert netlink_fast(found)[0] == slow_counts(dump)[0]


@pytest.mark.parametrize("tree", TREES)
def test_netlink_and_proc_give_the_same_talkers(tree):
    dump = read(tree, "ctnetlink-dump.bin")
    with open(os.path.join(fixture_tree(tree), "proc/net/nf_conntrack"), "rb") as f:
        t = count_text(f)
    assert t.skipped == 0
    assert slow_counts(dump)[0] == expand(t.counts, t.kinds)


def test_labels_cover_states_flags_and_families():
    labels = slow_counts(read("netlink-6.18.44-mixed", "ctnetlink-dump.bin"))[0]
    seen = {(len(src), proto, label) for src, proto, label in labels}
    assert {(4, "tcp", "ESTABLISHED"), (4, "tcp", "TIME_WAIT"), (4, "tcp", "SYN_SENT"),
            (4, "udp", "UNREPLIED"), (4, "udp", "REPLIED"), (4, "icmp", "REPLIED"),
            (16, "tcp", "TIME_WAIT"), (16, "udp", "UNREPLIED"), (16, "icmpv6", "REPLIED")} <= seen


@pytest.mark.parametrize("tree", TREES)
def test_stats_cpu_equals_the_proc_stat_table(tree):
    buf = read(tree, "ctnetlink-stats-cpu.bin")
    total = Counter()
    cpus = 0
    for mtype, _f, off, length in nl.messages(buf):
        if mtype == nl.CT_GET_STATS_CPU:
            cpus += 1
            total.update(nl.decode_stats_cpu(buf, off, length))
    proc = parse_stat(read(tree, "proc/net/stat/nf_conntrack").decode())
    assert cpus == proc.cpus
    assert {k: total[k] for k in proc.counters} == proc.counters


def test_a_cut_buffer_is_an_error_not_a_short_count():
    dump = read("netlink-6.18.44-mixed", "ctnetlink-dump.bin")
    with pytest.raises(nl.BadMessage):
        nl.walk(dump[:len(dump) // 2 + 3])


def test_a_row_the_pattern_does_not_know_sends_the_buffer_to_the_general_decoder():
    dump = bytearray(read("netlink-6.18.44-mixed", "ctnetlink-dump.bin"))
    # Rename the first row's CTA_STATUS attribute type to an unknown one (3 -> 30): the row is
    # still a well-formed message, but no longer the kernel's layout.
    first = next(off for t, _f, off, _l in nl.messages(bytes(dump)) if t == nl.CT_NEW)
    at = bytes(dump).index(b"\x08\x00\x03\x00", first + 20)
    dump[at + 2] = 30
    w = nl.walk(bytes(dump))
    assert rows.count_rows(bytes(dump), w.rows) is None
    with pytest.raises(nl.BadMessage):
        nl.decode_entry(bytes(dump), first, nl._HDR.unpack_from(dump, first)[0])


def _buffers(dump: bytes, rows_per_buffer: int):
    """A captured dump cut into buffers of ``rows_per_buffer`` messages, as recv() would hand
    them over (the last one ends with NLMSG_DONE)."""
    cuts = [off for _t, _f, off, _l in nl.messages(dump)][::rows_per_buffer][1:]
    return [dump[a:b] for a, b in zip([0] + cuts, cuts + [len(dump)])]


@pytest.mark.parametrize("tree", TREES)
@pytest.mark.parametrize("raw_max,step,every", [(1, 1, 1), (4, 3, 2), (8, 1, 0), (1 << 15, 512, 1), (1 << 15, 2, 0)])
def test_labelling_in_the_readers_shadow_gives_what_labelling_once_gives(tree, monkeypatch, raw_max, step, every):
    """The ctnetlink counter labels raw keys a few at a time while the reader is in recv(), and
    all at once past RAW_MAX: keys taken out early and seen again later are labelled again.
    However the two interleave, the sources, kinds and idle entries are those of one labelling."""
    from conntrack_zbx.count.idle import IdleRule
    from conntrack_zbx.count import rows as source

    dump = read(tree, "ctnetlink-dump.bin")
    rule = IdleRule(432000, 300, 3600)
    once = source.RowCounter(rule)
    for buf in _buffers(dump, 10 ** 6):
        once.add(memoryview(buf))
    expected = once.tally()
    monkeypatch.setattr(source, "RAW_MAX", raw_max)
    monkeypatch.setattr(source, "LABEL_STEP", step)
    tally = source.RowCounter(rule)
    for i, buf in enumerate(_buffers(dump, 3)):
        tally.add(memoryview(buf))
        assert len(tally.raw) <= raw_max
        if every and i % every == 0 and tally.pending:
            tally.label_some()
    got = tally.tally()
    assert (got.entries, got.skipped, got.truncated) == (expected.entries, expected.skipped, False)
    assert expand(got.counts, got.kinds) == expand(expected.counts, expected.kinds)
    assert got.idle == expected.idle
    assert got.entries == nl.walk(dump).rows
