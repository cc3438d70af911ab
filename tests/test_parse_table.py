import os
from collections import Counter

import pytest

from conntrack_zbx.count.lines import BadLine, parse_line
from conntrack_zbx.count.views import entry_label, tally_lines
from tests.conftest import fixture_tree


def lines(tree):
    with open(os.path.join(fixture_tree(tree), "proc/net/nf_conntrack"), "rb") as f:
        return f.read().splitlines(True)


def entries(tree):
    return [parse_line(ln) for ln in lines(tree)]


def find(tree, **match):
    return [e for e in entries(tree) if all(getattr(e, k) == v for k, v in match.items())]


def test_mixed_table_every_line_parses():
    es = entries("kernel-6.18.44-mixed")
    assert len(es) == 18
    by_src = Counter(e.src for e in es)
    assert by_src == {"127.0.1.10": 3, "127.0.1.11": 2, "127.0.0.20": 2, "127.0.0.22": 1,
                      "127.0.0.30": 2, "127.0.0.31": 1, "127.0.0.40": 1, "127.0.0.50": 1,
                      "127.0.0.51": 2, "::1": 3}


@pytest.mark.parametrize("match, expected", [
    ({"src": "127.0.1.10"}, {"proto": "tcp", "state": "ESTABLISHED", "assured": True,
                             "dport": 8080, "dst": "127.0.0.1", "family": "ipv4"}),
    ({"src": "127.0.0.20"}, {"proto": "tcp", "state": "TIME_WAIT", "dport": 8080}),
    ({"src": "127.0.0.22"}, {"proto": "tcp", "state": "SYN_SENT", "unreplied": True,
                             "assured": False, "dport": 8099}),
    # UDP has no state word: the awk '$7' of the incident would be dst= here
    ({"src": "127.0.0.30"}, {"proto": "udp", "state": None, "unreplied": True, "dport": 5353}),
    ({"src": "127.0.0.31"}, {"proto": "udp", "state": None, "unreplied": False, "dport": 5300}),
    ({"src": "127.0.0.40"}, {"proto": "icmp", "state": None, "sport": None, "dport": None}),
    ({"src": "127.0.0.50"}, {"mark": 42, "zone": 0}),
    ({"src": "127.0.0.51", "state": "SYN_SENT"}, {"zone": 7}),
    ({"src": "::1", "proto": "tcp"}, {"family": "ipv6", "dst": "::1", "state": "TIME_WAIT"}),
    ({"src": "::1", "proto": "icmpv6"}, {"family": "ipv6", "sport": None}),
], ids=["tcp-established", "tcp-time-wait", "tcp-syn-sent-unreplied", "udp-unreplied",
        "udp-replied", "icmp", "mark", "zone", "ipv6-normalised", "icmpv6"])
def test_fields_by_key_not_position(match, expected):
    found = find("kernel-6.18.44-mixed", **match)
    assert found, match
    for e in found:
        for k, v in expected.items():
            assert getattr(e, k) == v, (k, e)


def test_accounting_and_timestamp_fields_do_not_shift_anything():
    es = entries("kernel-6.18.44-acct-timestamp")
    assert Counter((e.src, e.proto, e.state) for e in es) == {
        ("127.0.1.10", "tcp", "ESTABLISHED"): 2, ("127.0.0.31", "udp", None): 1,
        ("::1", "icmpv6", None): 1}
    assert {e.sport for e in es if e.proto == "tcp"} != {None}


def test_truncated_table_skips_and_counts_bad_lines():
    t = tally_lines(lines("table-truncated"))
    assert t.entries == 17
    assert t.skipped == 2


@pytest.mark.parametrize("line", [
    b"",
    b"ipv4     2 tcp      6 431999 ESTABLISHED src=127.0.1.10 dst=127.0.0.1 sport=1",
    b"entries  clashres found new invalid",
    b"ipx 2 tcp 6 1 src=1.2.3.4 dst=1.2.3.4 src=1.2.3.4 dst=1.2.3.4",
    b"ipv4 2 tcp 6 1 src=999.1.1.1 dst=1.2.3.4 src=1.2.3.4 dst=1.2.3.4",
    b"ipv4 2 tcp 6 1 src=::1 dst=::1 src=::1 dst=::1",
    b"ipv4 2 tcp 6 x src=1.2.3.4 dst=1.2.3.4 src=1.2.3.4 dst=1.2.3.4",
    b"ipv4 2 tcp 6 1 src=1.2.3.4 dst=1.2.3.4 sport=http src=1.2.3.4 dst=1.2.3.4",
    b"ipv4 2 \xff\xfe 6 1 src=1.2.3.4 dst=1.2.3.4 src=1.2.3.4 dst=1.2.3.4",
], ids=["empty", "truncated", "other-file", "unknown-family", "bad-ipv4", "family-mismatch",
        "bad-timeout", "bad-port", "non-utf8"])
def test_bad_lines_raise_badline(line):
    with pytest.raises(BadLine):
        parse_line(line)


def test_state_label_covers_stateless_protocols():
    labels = Counter(entry_label(e) for e in entries("kernel-6.18.44-mixed"))
    assert labels["ESTABLISHED"] == 5
    assert labels["UNREPLIED"] == 3  # two IPv4 UDP + one IPv6 UDP to a closed port
    assert labels["REPLIED"] == 3  # replied UDP, ICMP echo, ICMPv6 echo


PRINTED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "printed-formats", "nf_conntrack")


def test_every_shape_the_kernel_prints_is_an_entry():
    """Offloaded flows (no timeout field), GRE's fields before the tuple, SCTP/DCCP states, an
    unknown protocol, directional zones, accounting, secctx, delta-time: counted, none skipped."""
    from conntrack_zbx.count.text import count_text

    with open(PRINTED, "rb") as f:
        raw = f.read()
    es = [parse_line(ln) for ln in raw.splitlines(True)]
    assert len(es) == 11
    by_src = {e.src: e for e in es}
    offload = by_src["192.0.2.10"]
    assert (offload.proto, offload.state, offload.assured) == ("tcp", "ESTABLISHED", True)
    assert by_src["192.0.2.11"].assured and by_src["2001:db8::19"].assured  # [HW_OFFLOAD], IPv6 [OFFLOAD]
    assert by_src["192.0.2.12"].proto == "gre" and by_src["192.0.2.12"].dst == "198.51.100.2"
    assert by_src["192.0.2.14"].state == "COOKIE_WAIT" and by_src["192.0.2.14"].unreplied
    assert by_src["192.0.2.15"].state == "OPEN" and by_src["192.0.2.16"].proto == "unknown"
    zoned = by_src["192.0.2.18"]
    assert (zoned.zone, zoned.mark, zoned.sport, zoned.dport) == (5, 7, 40003, 443)
    import io

    t = count_text(io.BytesIO(raw))
    assert (t.entries, t.skipped) == (11, 0)
    assert sum(t.counts.values()) == 11
    assert entry_label(by_src["192.0.2.16"]) == "ASSURED" and entry_label(by_src["192.0.2.17"]) == "UNREPLIED"


def test_printed_shapes_through_the_cli(capsys):
    from conntrack_zbx.cli import main

    assert main(["talkers", "--file", PRINTED, "--top=20"]) == 0
    import json

    doc = json.loads(capsys.readouterr().out)
    assert doc["entries"] == 11 and doc["skipped"] == 0 and doc["distinct_sources"] == 11


def test_every_line_of_a_block_has_one_raw_key():
    """The block counter's contract with its callers: one key per line, a refused line gives
    OTHER_LINE and an empty one EMPTY_LINE (how lines are counted and skipped without a second
    pass), an entry a key of the grammar's captures."""
    from conntrack_zbx.count.lines import EMPTY_LINE, OTHER_LINE, count_block, line_pattern

    entry = (b"ipv4     2 udp      17 29 src=127.0.0.30 dst=127.0.0.1 sport=4 dport=53 [UNREPLIED] "
             b"src=127.0.0.1 dst=127.0.0.30 sport=53 dport=4 mark=0 zone=0 use=2\n")
    keys = count_block(b"not a line\n\n" + entry + entry[:40], line_pattern(None))
    assert keys[:2] == [OTHER_LINE, EMPTY_LINE]
    assert keys[2] == b"ipv4     2 udp////127.0.0.30/[UNREPLIED]/"
    assert keys[3] == OTHER_LINE and len(keys) == 4  # the cut last line, given its newline
