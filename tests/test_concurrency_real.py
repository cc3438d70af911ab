"""Many simultaneous agent calls (the agent runs checks in parallel): all get valid output and
share one table read."""

import json
import os
import subprocess
import sys

import pytest

from lab import bulk
from lab.netns import Netns, Entered
from tests.conftest import require_root

pytestmark = pytest.mark.real

CALLS = 50


def test_fifty_concurrent_calls_one_table_read(tmp_path):
    require_root()
    cache = str(tmp_path / "cache")
    with Netns(conntrack=False) as ns:
        flows = bulk.realistic_mix(20000)
        with Entered(ns):
            assert bulk.insert(flows)["errors"] == 0
            argv = [sys.executable, "-m", "conntrack_zbx", "talkers", "--max-age=60", "--cache-dir", cache]
            procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                     for _ in range(CALLS)]
            outs = [(p.communicate(timeout=120), p.returncode) for p in procs]
            # The LLD view is served from the same cached answer: the file is not rewritten.
            written = os.stat(os.path.join(cache, "talkers-24-64-10-3600.json")).st_mtime_ns
            d = subprocess.run([sys.executable, "-m", "conntrack_zbx", "discovery", "--max-age=60",
                                "--cache-dir", cache], capture_output=True, check=True)
            assert os.stat(os.path.join(cache, "talkers-24-64-10-3600.json")).st_mtime_ns == written
    docs = []
    for (out, err), rc in outs:
        assert rc == 0 and err == b"", err
        docs.append(json.loads(out))
    fresh = [d for d in docs if d["cached"] is False]
    assert len(fresh) == 1, "%d of %d calls read the table" % (len(fresh), CALLS)
    assert all("cache_error" not in d for d in docs)
    answer = {k: v for k, v in fresh[0].items() if k not in ("cached", "age")}
    assert answer["entries"] == 20000 and answer["sources"][0]["address"] == "127.53.0.9"
    for doc in docs:
        assert {k: v for k, v in doc.items() if k not in ("cached", "age")} == answer
    assert json.loads(d.stdout) == answer["discovery"]
