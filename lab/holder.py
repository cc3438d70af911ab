"""Namespaces held only by processes (lab/nsholder.py), as a context manager for tests and bench."""

import json
import os
import subprocess
import sys
import tempfile
from typing import List

from lab import REPO
from lab.netns import ruleset


class Held:
    """``with Held(n, entries) as h: h.namespaces`` -> [{"pid", "inode"}], all gone on exit.
    ``tracked=True`` loads the lab's nftables ruleset in each, so packets there are tracked too."""

    def __init__(self, n: int, entries: int, tracked: bool = False) -> None:
        self.n, self.entries, self.tracked = n, entries, tracked
        self.proc = None  # type: Optional[subprocess.Popen]
        self.namespaces = []  # type: List[Dict[str, int]]
        self._nft = None  # type: Optional[str]

    def __enter__(self) -> "Held":
        argv = [sys.executable, "-m", "lab.nsholder", str(self.n), str(self.entries)]
        if self.tracked:
            fd, self._nft = tempfile.mkstemp(suffix=".nft")
            with os.fdopen(fd, "w") as f:
                f.write(ruleset())
            argv.append(self._nft)
        self.proc = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip() == "ready":
                break
            self.namespaces.append(json.loads(line))
        if len(self.namespaces) != self.n:
            self.__exit__()
            raise RuntimeError("only %d of %d namespaces came up" % (len(self.namespaces), self.n))
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            if self.proc.stdin:
                self.proc.stdin.close()
            self.proc.wait(60)
        if self._nft:
            os.remove(self._nft)

    def run(self, pid: int, argv: List[str]) -> subprocess.CompletedProcess:
        """Run a command inside one held namespace."""
        return subprocess.run(["nsenter", "--net=/proc/%d/ns/net" % pid] + argv, capture_output=True, text=True,
                              cwd=REPO)
