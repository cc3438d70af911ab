import os

import pytest

from conntrack_zbx.errors import Malformed
from conntrack_zbx.parse.stat import STABLE_NAMES, parse_stat
from tests.conftest import fixture_tree


def read(tree):
    with open(os.path.join(fixture_tree(tree), "proc/net/stat/nf_conntrack")) as f:
        return f.read()


@pytest.mark.parametrize("tree, expected_names", [
    ("kernel-6.18.44-mixed", {"found", "invalid", "insert", "insert_failed", "drop", "early_drop",
                              "error", "search_restart", "clash_resolve", "chaintoolong"}),
    # pre-5.15 header: no clashres/chainlength, so no clash_resolve/chaintoolong
    ("stat-old-header", {"found", "invalid", "insert", "insert_failed", "drop", "early_drop",
                         "error", "search_restart"}),
], ids=["current-header", "old-header"])
def test_header_driven_names(tree, expected_names):
    st = parse_stat(read(tree))
    assert set(st.counters) == expected_names
    assert st.cpus == 2
    assert st.entries == 18  # once, not summed over the two CPU rows
    assert st.counters["invalid"] == 5  # real: row 1 has 5, row 2 has 0


def test_sums_every_cpu_row_by_name():
    header = ("entries  clashres found new invalid ignore delete chainlength insert insert_failed "
              "drop early_drop icmp_error  expect_new expect_create expect_delete search_restart")
    rows = [r.split() for r in read("kernel-6.18.44-mixed").splitlines()[1:]]
    # rebuild the real rows with the drop column (index 10) set differently per CPU
    rows[0][10], rows[1][10] = "0000000a", "00000003"
    text = header + "\n" + "\n".join(" ".join(r) for r in rows) + "\n"
    st = parse_stat(text)
    assert st.counters["drop"] == 13
    assert st.entries == 18


def test_columns_found_by_name_not_position():
    # Same real rows, header columns reordered with the values: result must not change.
    lines = read("kernel-6.18.44-mixed").splitlines()
    cols = [ln.split() for ln in lines]
    order = list(reversed(range(len(cols[0]))))
    text = "\n".join(" ".join(row[i] for i in order) for row in cols) + "\n"
    assert parse_stat(text) == parse_stat(read("kernel-6.18.44-mixed"))


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    (read("stat-short-row"), "has 15 columns, header has 17"),
    ("entries  found\n", "no CPU rows"),
    ("foo bar\n00000001 00000002\n", "no known column"),
    ("entries found found\n1 2 3\n", "repeats a column"),
    ("entries found\n0000000g 00000001\n", "not hexadecimal"),
], ids=["empty", "short-row", "header-only", "unknown-columns", "duplicate-column", "not-hex"])
def test_malformed(text, message):
    with pytest.raises(Malformed, match=message):
        parse_stat(text)


def test_stable_names_are_conntrack_S_names():
    # `conntrack -S` prints exactly these (conntrack-tools 1.4.7); keys of the template items.
    assert set(STABLE_NAMES.values()) == {
        "found", "invalid", "insert", "insert_failed", "drop", "early_drop", "error",
        "search_restart", "clash_resolve", "chaintoolong"}
