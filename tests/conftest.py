import os
import shutil

import pytest

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
MIXED = os.path.join(FIXTURES, "kernel-6.18.44-mixed")


def fixture_tree(name: str) -> str:
    path = os.path.join(FIXTURES, name)
    assert os.path.isdir(path), path
    return path


@pytest.fixture
def tree(tmp_path):
    """A writable copy of a fixture tree, for tests that change permissions or files."""
    def make(name: str) -> str:
        dest = str(tmp_path / name)
        shutil.copytree(fixture_tree(name), dest)
        return dest
    return make


def require_root():
    """Real-kernel tests need root. On CI we run as root: not being root there is a failure."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("real-stack tests must run as root on CI")
        pytest.skip("needs root (network namespaces)")


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Every in-process CLI call gets its own empty snapshot cache (mode 0700), so tests never
    see each other's cached answers nor the host's /run/conntrack-zbx."""
    from conntrack_zbx import cache

    d = tmp_path_factory.mktemp("cache")
    os.chmod(str(d), 0o700)
    monkeypatch.setattr(cache, "DEFAULT_DIR", str(d / "c"))
    return str(d / "c")


def netlink_fast(found, rule=None):
    """The fast row pattern's captures labelled: ((source, protocol, label) -> entries, idle)."""
    from collections import Counter

    from conntrack_zbx.count.kinds import Sums, expand
    from conntrack_zbx.count.rows import label_rows

    sums = Sums()
    label_rows(Counter(found), sums, {})
    return expand(sums.counts, sums.kinds), sums.idle


def netlink_slow(records, rule=None):
    """The general decoder's records labelled, as ``netlink_fast``."""
    from conntrack_zbx.count.kinds import Sums, expand
    from conntrack_zbx.count.rows import label_entries

    sums = Sums()
    label_entries(records, sums, rule)
    return expand(sums.counts, sums.kinds), sums.idle
