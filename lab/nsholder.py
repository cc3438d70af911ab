"""Hold many network namespaces with processes only (no ``ip netns`` name), as container runtimes
do: ``python -m lab.nsholder N ENTRIES [NFT_RULES]`` forks N children; each unshares its network
namespace, optionally loads an nftables ruleset there (``NFT_RULES``: a file), inserts ENTRIES
conntrack entries by ctnetlink, reports ``{"pid": ..., "inode": ...}`` on stdout, and stays until
this process's stdin closes. Run as root, from the initial namespace."""

import ctypes
import json
import os
import subprocess
import sys

from conntrack_zbx.sources.netns import CLONE_NEWNET
from lab import bulk


def _child(entries: int, nft: str, ready_w: int, hold_r: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        os._exit(3)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    if nft:
        subprocess.run(["nft", "-f", nft], check=True)
    if entries:
        report = bulk.insert([bulk.Flow("127.77.%d.%d" % (i >> 8 & 255, i & 255), "tcp", "ESTABLISHED", 1)
                              for i in range(entries)])
        if report["errors"]:
            os._exit(4)
    os.write(ready_w, (json.dumps({"pid": os.getpid(), "inode": os.stat("/proc/self/ns/net").st_ino})
                       + "\n").encode())
    os.read(hold_r, 1)  # returns when the holder closes its end
    os._exit(0)


def main() -> int:
    n, entries = int(sys.argv[1]), int(sys.argv[2])
    nft = sys.argv[3] if len(sys.argv) > 3 else ""
    ready_r, ready_w = os.pipe()
    hold_r, hold_w = os.pipe()
    pids = []
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            os.close(ready_r)
            os.close(hold_w)
            _child(entries, nft, ready_w, hold_r)
        pids.append(pid)
    os.close(ready_w)
    os.close(hold_r)
    with os.fdopen(ready_r) as ready:
        for _ in range(n):
            line = ready.readline()
            if not line:
                break
            sys.stdout.write(line)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.read()  # until the caller closes it
    os.close(hold_w)
    for pid in pids:
        os.waitpid(pid, 0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
