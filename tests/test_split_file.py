"""A big snapshot file is cut in two at a line end and its second half counted by a forked
process that sends its sources back in parts: the answer must be the one a single pass gives,
whatever the halves hold (sources in both, a state word only the second half has, refused and
empty lines), and a failing half must fail the read with our error, not hang or lose it."""

import os

import pytest

from conntrack_zbx.errors import Malformed
from conntrack_zbx.count.idle import IdleRule
from conntrack_zbx.parse.states import KINDS
from conntrack_zbx.count import text
from conntrack_zbx.count.kinds import expand
from conntrack_zbx.count.views import tally_lines
from tests.conftest import MIXED

RULE = IdleRule(432000, 300, 3600)

with open(os.path.join(MIXED, "proc/net/nf_conntrack"), "rb") as f:
    REAL = f.read().splitlines(True)


def _file(tmp_path, second_half_extra: bytes = b""):
    """About 2 MiB of real kernel lines with some sources in both halves, a refused and an
    empty line in each half, and ``second_half_extra`` near the end."""
    lines = []
    for i in range(3000):  # the same sources all through: each is in both halves
        lines.extend(REAL)
        if i == 10 or i == 2900:
            lines.append(b"this is not a conntrack line\n")
            lines.append(b"\n")
    lines.insert(len(lines) - 5, second_half_extra)
    path = tmp_path / "conntrack.list"
    path.write_bytes(b"".join(lines))
    return str(path)


def _both(path):
    """(the split read, its rows) and the one-pass read; the rows are expanded before the
    one-pass read numbers any state word in this process."""
    with open(path, "rb") as f:
        fast = text.count_text(f, rule=RULE)
    rows = expand(fast.counts, fast.kinds)
    with open(path, "rb") as f:
        slow = tally_lines(f, "src", rule=RULE)
    return fast, rows, slow


def test_the_split_read_equals_one_pass(tmp_path, monkeypatch):
    monkeypatch.setattr(text, "SPLIT_MIN", 1 << 16)
    monkeypatch.setattr(text, "PART", 7)  # many parts from the forked half, a source in several
    path = _file(tmp_path)
    assert os.path.getsize(path) > 4 * text.SPLIT_MIN
    fast, rows, slow = _both(path)
    assert (fast.entries, fast.skipped) == (slow.entries, slow.skipped)
    assert fast.skipped == 2  # the two refused lines; empty lines are not lines
    assert rows == expand(slow.counts, slow.kinds)
    assert fast.idle == slow.idle
    assert fast.entries == 3000 * len(REAL)


def test_a_state_word_only_the_forked_half_saw_is_renumbered(tmp_path, monkeypatch):
    monkeypatch.setattr(text, "SPLIT_MIN", 1 << 16)
    word = "NEWSTATE%d" % len(KINDS.names)  # never numbered in this process
    line = ("ipv4     2 tcp      6 60 %s src=127.9.9.9 dst=127.0.0.1 sport=1 dport=2 src=127.0.0.1 "
            "dst=127.9.9.9 sport=2 dport=1 mark=0 zone=0 use=2\n" % word).encode()
    path = _file(tmp_path, line)
    fast, rows, slow = _both(path)
    assert rows == expand(slow.counts, slow.kinds)
    assert [k for k in rows if k[2] == word] == [(bytes([127, 9, 9, 9]), "tcp", word)]


def test_a_failing_forked_half_fails_the_read(tmp_path, monkeypatch):
    monkeypatch.setattr(text, "SPLIT_MIN", 1 << 16)
    scan = text._scan

    def second_half_breaks(f, limit, *args):
        if limit is None:  # the forked half reads to the end
            raise OSError(5, "Input/output error")
        return scan(f, limit, *args)

    monkeypatch.setattr(text, "_scan", second_half_breaks)
    with open(_file(tmp_path), "rb") as f, pytest.raises(Malformed, match="second half.*Input/output error"):
        text.count_text(f, rule=RULE)
