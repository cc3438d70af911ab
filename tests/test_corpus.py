"""The checked-in hostile corpus (tests/corpus, built by make.py from real captures): every
parser survives every file, answers valid JSON (LLD: a valid array), and counts what it skipped."""

import json
import os
import shutil
from collections import Counter

import pytest

from conntrack_zbx.cli import main
from conntrack_zbx.errors import Malformed
from conntrack_zbx.count import rows
from conntrack_zbx.parse import netlink as nl
from conntrack_zbx.parse.stat import parse_stat
from conntrack_zbx.count.views import tally_lines
from conntrack_zbx.sources.proc import open_snapshot
from tests.conftest import netlink_fast, netlink_slow
from tests.conftest import MIXED

REFUSED = -1  # make.py's mark for a file refused with a reason
HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
with open(os.path.join(HERE, "manifest.json")) as f:
    MANIFEST = json.load(f)


def path(name):
    return os.path.join(HERE, name)


def run_json(capsys, *argv):
    rc = main(list(argv))
    out, _ = capsys.readouterr()
    assert out.endswith("\n") and out.count("\n") == 1, out[:200]
    return rc, json.loads(out)


@pytest.mark.parametrize("name", sorted(MANIFEST["table"]))
def test_table_corpus_through_talkers_and_discovery(capsys, name):
    want = MANIFEST["table"][name]
    rc, doc = run_json(capsys, "talkers", "--file", path(name), "--proc-root", MIXED)
    if want["entries"] == REFUSED:
        assert rc != 0 and list(doc) == ["error"] and "is empty" in doc["error"]
        return
    assert rc == 0, doc
    assert (doc["entries"], doc["skipped"]) == (want["entries"], want["skipped"])
    assert doc["truncated"] is False
    rc, rows = run_json(capsys, "discovery", "--file", path(name), "--proc-root", MIXED)
    assert rc == 0 and isinstance(rows, list)
    assert all(set(r) == {"{#CT.KIND}", "{#CT.TALKER}", "{#CT.FAMILY}", "{#CT.PATH}"} for r in rows)
    with open_snapshot(path(name)) as f:  # the line parser (used by `top`) agrees
        t = tally_lines(f, "src")
    assert (t.entries, t.skipped) == (want["entries"], want["skipped"])


@pytest.mark.parametrize("name", sorted(MANIFEST["stat"]))
def test_stat_corpus_is_malformed_with_a_message(capsys, tmp_path, name):
    with open(path(name), "rb") as f:
        data = f.read()
    with pytest.raises(Malformed):
        parse_stat(data.decode("ascii", "replace"))
    root = str(tmp_path / "root")
    shutil.copytree(MIXED, root)
    shutil.copyfile(path(name), os.path.join(root, "proc/net/stat/nf_conntrack"))
    rc, doc = run_json(capsys, "stats", "--proc-root", root)
    assert rc == 4 and list(doc) == ["error"] and doc["error"]


@pytest.mark.parametrize("name", sorted(MANIFEST["netlink"]))
def test_netlink_corpus(name):
    with open(path(name), "rb") as f:
        buf = f.read()
    want = MANIFEST["netlink"][name]
    if want == "badmessage":
        with pytest.raises(nl.BadMessage):
            nl.walk(buf)
        return
    w = nl.walk(buf)
    good = Counter()
    bad = 0
    for mtype, _f, off, length in nl.messages(buf):
        if mtype == nl.CT_NEW:
            try:
                good[nl.decode_entry(buf, off, length)] += 1
            except nl.BadMessage:
                bad += 1
    found = rows.count_rows(buf, w.rows)
    if want == "skipped":
        assert bad >= 1 and found is None  # the damaged row goes to the general decoder, and is skipped
    else:
        assert bad == 0 and found is not None and len(found) == w.rows == sum(good.values())
        assert netlink_fast(found) == netlink_slow(good)
