#!/usr/bin/env python3
"""The long fuzz run: every property in tests/test_properties.py with a big example budget.

    make fuzz                                  # 20,000 examples per property, recorded
    .venv/bin/python tests/fuzz.py --examples 20000 --record docs/fuzzing.md

Kept out of `make test` (it runs for a long time); the default suite runs the same properties
with 300 examples each. With --record, the command and its result replace the "last run"
section of the given Markdown file.
"""

import argparse
import os
import re
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=20000, help="examples per property")
    ap.add_argument("--record", metavar="PATH", help="write the command and result into this file")
    args = ap.parse_args()
    env = dict(os.environ, CTZBX_FUZZ_EXAMPLES=str(args.examples))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_properties.py",
           "--hypothesis-seed=%d" % int(time.time())]
    t = time.time()
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    took = time.time() - t
    summary = (p.stdout.strip().splitlines() or ["(no output)"])[-1]
    print(p.stdout[-4000:], p.stderr[-2000:], sep="")
    result = "%s, %d examples per property, %.0f s, %s" % (
        "PASSED" if p.returncode == 0 else "FAILED (exit %d)" % p.returncode, args.examples, took, summary)
    print(result)
    if args.record:
        with open(args.record) as f:
            doc = f.read()
        start, end = "<!-- fuzz:start -->", "<!-- fuzz:end -->"
        text = "%s\nCommand: `python tests/fuzz.py --examples %d` (%s, seed %s)\n\nResult: %s\n%s" % (
            start, args.examples, time.strftime("%Y-%m-%d"), cmd[-1].split("=")[1], result, end)
        doc = re.sub(re.escape(start) + ".*" + re.escape(end), lambda m: text, doc, flags=re.S)
        with open(args.record, "w") as f:
            f.write(doc)
    return p.returncode


if __name__ == "__main__":
    sys.exit(main())
