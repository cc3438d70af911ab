"""The snapshot cache cannot be planted, redirected or trusted when it is not ours.

Talkers run as root (through sudo), so the cache must not become a way in: another user
pre-creating or symlinking the directory, a symlink, FIFO or foreign file in place of an answer,
a corrupt or future-dated file — each is refused or ignored and rebuilt, the answer is read
afresh, and it says why when the cache was not used.
"""

import json
import os
import stat

import pytest

from conntrack_zbx.cli import main
from tests.conftest import MIXED, require_root

NAME = "talkers-24-64-10-3600.json"


def talkers(capsys, cache_dir, *extra):
    rc = main(["talkers", "--proc-root", MIXED, "--cache-dir", cache_dir] + list(extra))
    out, _ = capsys.readouterr()
    doc = json.loads(out)
    assert rc == 0, doc
    return doc


def real_answer(doc):
    assert doc["entries"] == 18 and doc["sources"][0]["address"] == "127.0.1.10"
    return True


@pytest.fixture
def cache_dir(tmp_path):
    d = tmp_path / "cache"
    d.mkdir(mode=0o700)
    return str(d)


def test_second_call_is_served_from_the_cache_without_a_read(capsys, cache_dir, monkeypatch):
    first = talkers(capsys, cache_dir)
    assert first["cached"] is False and real_answer(first)
    from conntrack_zbx.sources import proc

    def no_read(self):
        raise AssertionError("the table was read although a fresh answer was cached")
    monkeypatch.setattr(proc.ProcRoot, "open_table", no_read)
    second = talkers(capsys, cache_dir)
    assert second["cached"] is True and 0 <= second["age"] < 20
    assert {k: v for k, v in second.items() if k not in ("cached", "age")} == \
        {k: v for k, v in first.items() if k not in ("cached", "age")}
    st = os.stat(os.path.join(cache_dir, NAME))
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()


def test_max_age_zero_always_reads_afresh(capsys, cache_dir):
    talkers(capsys, cache_dir)
    assert talkers(capsys, cache_dir, "--max-age=0")["cached"] is False


def test_a_missing_directory_is_created_private(capsys, tmp_path):
    d = str(tmp_path / "new")
    talkers(capsys, d)
    st = os.lstat(d)
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700


def test_directory_precreated_by_another_user_is_refused(capsys, cache_dir):
    require_root()
    os.chown(cache_dir, 65534, 65534)
    doc = talkers(capsys, cache_dir)
    assert real_answer(doc) and doc["cached"] is False
    assert "owned by uid 65534" in doc["cache_error"]
    assert os.listdir(cache_dir) == []  # nothing written into it either
    assert talkers(capsys, cache_dir)["cached"] is False  # and never served from it


def test_directory_symlinked_elsewhere_is_refused(capsys, tmp_path, cache_dir):
    link = str(tmp_path / "link")
    os.symlink(cache_dir, link)
    doc = talkers(capsys, link)
    assert real_answer(doc) and "symlink" in doc["cache_error"]
    assert os.listdir(cache_dir) == []


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777, 0o1777])
def test_directory_others_may_write_is_refused(capsys, cache_dir, mode):
    os.chmod(cache_dir, mode)
    doc = talkers(capsys, cache_dir)
    assert real_answer(doc) and "group/other may access it" in doc["cache_error"]


def forge(path, body_change=None, age=0.0):
    """Rewrite a cache file as a forger could: a plausible answer naming the wrong culprit,
    with a correct header (time, CRC, key) so only the ownership and mode checks stand."""
    import time
    import zlib

    with open(path, "rb") as f:
        header, _, body = f.read().partition(b"\n")
    if body_change:
        body = body.replace(*body_change)
    words = header.split(b" ")
    words[2] = b"%r" % (time.time() - age)
    words[3] = b"%d" % zlib.crc32(body)
    with open(path, "wb") as f:
        f.write(b" ".join(words) + b"\n" + body)


def test_foreign_file_in_the_directory_is_not_trusted(capsys, cache_dir):
    require_root()
    first = talkers(capsys, cache_dir)
    path = os.path.join(cache_dir, NAME)
    forge(path, (b"127.0.1.10", b"6.6.6.6"))
    assert talkers(capsys, cache_dir)["sources"][0]["address"] == "6.6.6.6"  # a valid forgery...
    forge(path, (b"127.0.1.10", b"6.6.6.6"))
    os.chown(path, 65534, 65534)  # ...owned by someone else is never served
    doc = talkers(capsys, cache_dir)
    assert doc["cached"] is False and real_answer(doc) and doc["sources"] == first["sources"]
    assert os.stat(path).st_uid == os.geteuid()  # replaced by our own answer


def test_symlinked_answer_is_not_followed_and_its_target_untouched(capsys, cache_dir, tmp_path):
    target = tmp_path / "precious"
    talkers(capsys, cache_dir)
    os.rename(os.path.join(cache_dir, NAME), str(target))  # a valid answer, but behind a link
    os.chmod(str(target), 0o600)
    before = target.read_bytes()
    os.symlink(str(target), os.path.join(cache_dir, NAME))
    doc = talkers(capsys, cache_dir)
    assert doc["cached"] is False and real_answer(doc)
    assert target.read_bytes() == before
    assert not os.path.islink(os.path.join(cache_dir, NAME))  # the link itself was replaced


def test_fifo_in_place_of_an_answer_does_not_hang(capsys, cache_dir):
    os.mkfifo(os.path.join(cache_dir, NAME), 0o600)
    doc = talkers(capsys, cache_dir)
    assert doc["cached"] is False and real_answer(doc)


@pytest.mark.parametrize("damage", [
    lambda d: b"", lambda d: b"{not json", lambda d: b"\xff\xfe" * 40, lambda d: d[: len(d) // 2],
    lambda d: d.replace(b"127.0.1.10", b"127.0.1.99", 1),  # body changed, CRC not
    lambda d: d.replace(b"conntrack-zbx-cache 2 ", b"conntrack-zbx-cache 9 ", 1),
    lambda d: d.replace(b" ", b"  ", 1), lambda d: d.split(b"\n", 1)[1],
    lambda d: d.replace(b"\n", b" nan\n", 1),
], ids=["empty", "garbage", "binary", "cut", "body-changed", "format", "header-spaces", "no-header",
        "extra-word"])
def test_corrupt_answer_is_ignored_and_rebuilt(capsys, cache_dir, damage):
    talkers(capsys, cache_dir)
    path = os.path.join(cache_dir, NAME)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(damage(data))
    doc = talkers(capsys, cache_dir)
    assert doc["cached"] is False and real_answer(doc)
    assert talkers(capsys, cache_dir)["cached"] is True  # rebuilt: the next call uses it


def test_future_dated_or_group_readable_answers_are_ignored(capsys, cache_dir):
    talkers(capsys, cache_dir)
    path = os.path.join(cache_dir, NAME)
    forge(path, age=-3600)
    assert talkers(capsys, cache_dir)["cached"] is False
    os.chmod(path, 0o640)
    assert talkers(capsys, cache_dir)["cached"] is False


def test_planted_lock_symlink_means_no_cache_not_a_followed_link(capsys, cache_dir, tmp_path):
    target = tmp_path / "victim"
    target.write_text("keep")
    os.symlink(str(target), os.path.join(cache_dir, ".lock"))
    doc = talkers(capsys, cache_dir)
    assert real_answer(doc) and "cache lock" in doc["cache_error"]
    assert target.read_text() == "keep"


def test_an_answer_from_another_table_is_not_served(capsys, cache_dir, tree):
    talkers(capsys, cache_dir)
    other = tree("kernel-6.18.44-acct-timestamp")
    rc = main(["talkers", "--proc-root", other, "--cache-dir", cache_dir])
    doc = json.loads(capsys.readouterr()[0])
    assert rc == 0 and doc["cached"] is False and doc["entries"] == 4
