"""Build the hostile-input corpus from the real captures (python3 tests/corpus/make.py).

Every file is derived from a capture in tests/fixtures by a named, deterministic damage, so the
corpus stays reproducible; manifest.json records what each must give. Checked in; the test
(tests/test_corpus.py) runs every file through the parser it targets.
"""

import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(os.path.dirname(HERE), "fixtures")


def read(rel):
    with open(os.path.join(FIX, rel), "rb") as f:
        return f.read()


def main():
    table = read("kernel-6.18.44-mixed/proc/net/nf_conntrack")
    lines = table.splitlines(True)
    stat = read("kernel-6.18.44-mixed/proc/net/stat/nf_conntrack")
    REFUSED = -1
    dump = read("netlink-6.18.44-mixed/ctnetlink-dump.bin")
    n = len(lines)
    tables = {
        # name: (bytes, entries, skipped)
        "truncated-every-line": (b"".join(ln[: len(ln) // 2] + b"\n" for ln in lines), 0, n),
        "cut-mid-last-line": (table[:-30], n - 1, 1),
        "unknown-family": (b"".join(ln.replace(b"ipv4 ", b"ipv9 ", 1) for ln in lines), 3 * 1 + 0, 0),
        "unknown-protocol-name": (lines[0].replace(b" tcp ", b" xyzzy ", 1) * 3, 3, 0),
        "missing-src": (b"".join(ln.replace(b"src=", b"sxc=", 1) for ln in lines), 0, n),
        "duplicated-src": (b"".join(ln.replace(b"src=", b"src=10.9.9.9 src=", 1) for ln in lines), 0, n),
        "garbage-and-nul": (b"\x00\x01\x02 garbage \xff\xfe\n" * 5 + table + b"\x00" * 64 + b"\n", n, 6),
        "non-utf8-address": (lines[1].replace(b"src=127", b"src=\xc3\xa9", 1) * 2, 0, 2),
        "very-long-line": (b"ipv4     2 tcp      6 1 ESTABLISHED src=" + b"1" * (1 << 18) + b"\n" + table, n, 1),
        "only-newlines": (b"\n" * 1000, 0, 0),
        "crlf-line-ends": (table.replace(b"\n", b"\r\n"), n, 0),  # a copy through Windows: read as the original
        "address-family-mismatch": (lines[0].replace(b"ipv4 ", b"ipv6 ", 1) * 2, 0, 2),
        "state-word-missing-space": (lines[0].replace(b" ESTABLISHED ", b" ESTABLISHEDsrc=", 1), 0, 1),
        "empty": (b"", REFUSED, REFUSED),  # what `cat` without root leaves: refused, never "0 entries"
    }
    # IPv4 lines relabelled ipv9 are bad, IPv6 lines stay good: count them from the capture.
    v6 = sum(1 for ln in lines if ln.startswith(b"ipv6"))
    tables["unknown-family"] = (tables["unknown-family"][0], v6, n - v6)
    header, *rows = stat.decode().splitlines()
    stats = {
        "header-longer-than-rows": ((header + " extra_column\n" + "\n".join(rows) + "\n").encode(), "malformed"),
        "rows-longer-than-header": ((" ".join(header.split()[:-2]) + "\n" + "\n".join(rows) + "\n").encode(),
                                    "malformed"),
        "non-hex-counter": (stat.replace(b"0000", b"zzzz", 1), "malformed"),
        "header-only": ((header + "\n").encode(), "malformed"),
        "duplicated-column": ((header.replace("found", "drop", 1) + "\n" + "\n".join(rows) + "\n").encode(),
                              "malformed"),
        "binary-garbage": (b"\xff\xfe\x00\x01" * 50, "malformed"),
        "empty": (b"", "malformed"),
    }
    first = struct.unpack_from("=I", dump, 0)[0]
    netlinks = {
        "cut-in-first-message": (dump[: first - 7], "badmessage"),
        "length-zero": (b"\x00" * 4 + dump[4:], "badmessage"),
        "length-beyond-buffer": (struct.pack("=I", len(dump) + 100) + dump[4:], "badmessage"),
        # the first row's source address attribute claims 255 bytes (offset 28: nlmsghdr,
        # nfgenmsg, the original-tuple and IP nest headers)
        "attribute-runs-outside-message": (dump[:28] + b"\xff" + dump[29:], "skipped"),
        "random-bytes": (bytes((i * 151 + 7) % 256 for i in range(512)), "badmessage"),
        "real-dump-twice": (dump[:-20] + dump, "ok"),
    }
    manifest = {"table": {}, "stat": {}, "netlink": {}}
    for kind, items in (("table", tables), ("stat", stats), ("netlink", netlinks)):
        for name, spec in items.items():
            fname = "%s-%s.%s" % (kind, name, "bin" if kind == "netlink" else "txt")
            with open(os.path.join(HERE, fname), "wb") as f:
                f.write(spec[0])
            if kind == "table":
                manifest[kind][fname] = {"entries": spec[1], "skipped": spec[2]}
            else:
                manifest[kind][fname] = spec[1]
    with open(os.path.join(HERE, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
