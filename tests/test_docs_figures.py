"""A measured figure lives in one document with its run's date (docs/demo.md for the replays,
docs/performance.md for speed and memory); every other hand-written doc links to it. This fails
when one of them states such a figure again: the copies went stale before (three page counts,
four "values kept while full" figures)."""

import glob
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEASURED_HERE = {"docs/demo.md", "docs/performance.md", "docs/fuzzing.md"}  # fuzzing.md: written by make fuzz
FIGURES = re.compile("|".join([
    r"\b\d+ ?/ ?\d+ pages\b", r"\b\d+ pages?\b", r"\bsent \d+\b",  # page counts
    r"\b\d+ of ~?\d+ (expected )?values\b", r"\b\d+ of ~?\d+ expected\b",  # values kept while full
    r"\b\d+(\.\d+)? s before (the|each|its) (first|last) drop",  # how early the range was named
    r"\btakes? (this \S+ lab |about |≈ ?|~)?\d+(\.\d+)? ?(s|ms|seconds|minutes)\b",  # timings
    r"\bat most \d+(\.\d+)? s\b", r"\(about \d+ ?(s|minutes)\b", r"~\d+ ?s\b",
]))


def hand_written():
    for path in ["README.md"] + sorted(glob.glob(os.path.join(REPO, "docs", "*.md"))):
        rel = os.path.relpath(os.path.join(REPO, path), REPO)
        if rel not in MEASURED_HERE:
            yield rel


def test_the_pattern_catches_what_went_stale():
    for text in ("sent 7 pages", "7 / 3 pages", "3 of 16 expected values",
                 "named 55.9 s before the first drop", "takes this 2-CPU lab 2.6 s to read",
                 "(about 5 minutes on this kind of machine", "at most 5.3 s through"):
        assert FIGURES.search(text), text


def test_measured_figures_live_in_one_place():
    found = []
    for rel in hand_written():
        with open(os.path.join(REPO, rel)) as f:
            for n, line in enumerate(f, 1):
                m = FIGURES.search(line)
                if m:
                    found.append("%s:%d: %r" % (rel, n, m.group(0)))
    assert found == [], "link to docs/demo.md or docs/performance.md instead:\n" + "\n".join(found)


def test_the_readme_top_sample_is_what_top_prints():
    """The README's `top` sample is a command line and its output: run it, compare."""
    import shlex
    import subprocess
    import sys

    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    m = re.search(r"```\n# (conntrack-zbx top [^\n(]*?)\s+\([^\n]*\)\n(.*?)```", text, re.S)
    assert m, "README has no `top` sample"
    argv = shlex.split(m.group(1))[1:]
    out = subprocess.run([sys.executable, "-m", "conntrack_zbx"] + argv, cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    assert m.group(2) == out
