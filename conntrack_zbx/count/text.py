"""Counting table text (``/proc/net/nf_conntrack`` or a saved snapshot) fast, by source.

Whole-line blocks go to the block counter (``lines.count_block``), and a big regular file is
split at a line end with its second half counted by a forked process.
"""

from collections import Counter
from typing import IO, Any, Optional, Pattern, Tuple

from conntrack_zbx.count.tally import Tally, read_deadline
from conntrack_zbx.count.idle import IdleRule
from conntrack_zbx.count.kinds import Sums
from conntrack_zbx.parse.states import KINDS
from conntrack_zbx.count.lines import EMPTY_LINE, count_block, label_lines, line_pattern
from conntrack_zbx.errors import Malformed


BLOCK = 1 << 20  # bytes per regex pass: ~6,500 lines, a clock check every ~10 ms


def count_text(f: IO[bytes], deadline: Optional[float] = None, rule: Optional[IdleRule] = None) -> Tally:
    """The talkers pass over /proc text (or a snapshot), by source, in whole-line blocks.

    Same result as the line-by-line ``views.tally_lines`` (tests hold them equal) at a fraction of
    the cost: one compiled pattern per block and ``Counter`` do the per-line work in C, and each
    distinct raw key is labelled once into a compact key. Memory: one block plus the distinct
    keys. A big regular file (a saved snapshot) is cut in two at a line end and the second part
    is counted and labelled by a forked process on the second CPU, which sends its sources in
    parts that this process merges as they come.
    """
    import os
    import stat

    try:
        st = os.fstat(f.fileno())
        size = st.st_size if stat.S_ISREG(st.st_mode) else 0
    except (OSError, AttributeError, ValueError):
        size = 0
    pattern = line_pattern(rule)
    half = None
    if size >= SPLIT_MIN and (os.cpu_count() or 1) > 1:
        half = _fork_second_half(f, size, deadline, pattern)
    sums = Sums()
    if half is None:
        lines, truncated = _count(f, None, deadline, pattern, sums)
    else:
        boundary, pid, r, numbered = half
        try:
            lines, truncated = _count(f, boundary, deadline, pattern, sums, 2)
        except BaseException:
            _abandon(pid, r)
            raise
        their_lines, their_truncated = _collect(pid, r, sums, numbered)
        lines += their_lines
        truncated = truncated or their_truncated
    entries = sum(sums.counts.values())  # lines - entries: skipped, bad addresses included
    return Tally(entries, lines - entries, sums.counts, truncated, sums.kinds, sums.idle, rule)


def _count(f: IO[bytes], limit: Optional[int], deadline: Optional[float], pattern: "Pattern[bytes]",
           sums: Sums, parts: int = 1) -> Tuple[int, bool]:
    """Count and label this process's share -> (its lines, truncated)."""
    raw, lines, truncated = _scan(f, limit, deadline, pattern, parts)
    label_lines(raw, sums)
    return lines, truncated


SPLIT_MIN = 16 << 20  # below ~80,000 lines a second process costs more than it saves


def _scan(f: IO[bytes], limit: Optional[int], deadline: Optional[float], pattern: "Pattern[bytes]",
          parts: int = 1) -> "Tuple[Counter[bytes], int, bool]":
    """Count whole lines from the current position up to byte ``limit`` (None: to the end)."""
    import time

    raw: "Counter[bytes]" = Counter()
    lines = 0
    rest = b""
    left = limit
    last = time.monotonic()
    while True:
        want = BLOCK if left is None else min(BLOCK, left)
        try:
            chunk = f.read(want) if want else b""
        except OSError as e:
            raise Malformed("reading the conntrack table failed after a partial read: %s" % e) from None
        if left is not None:
            left -= len(chunk)
        if not chunk:
            block, rest = rest, b""
        else:
            cut = chunk.rfind(b"\n") + 1
            if cut == 0:  # no line end in a whole block: keep gathering (bounded by MAX_LINE)
                rest += chunk
                if len(rest) > MAX_LINE:
                    # Not a table line; count it once and drop up to its end.
                    lines += 1
                    rest = b""
                    if left is None:
                        _skip_to_newline(f)
                continue
            block, rest = rest + chunk[:cut], chunk[cut:]
        if block:
            raw.update(count_block(block, pattern))  # a list: counted in C
        if not chunk:
            return raw, _lines(raw, lines), False
        if deadline is not None:
            # stop if the next block (as long as the last one took) would end past the point
            # where ranking what we hold must start
            now = time.monotonic()
            step, last = now - last, now
            if now + step > read_deadline(deadline, len(raw), parts):
                return raw, _lines(raw, lines), True


def _lines(raw: "Counter[bytes]", overlong: int) -> int:
    """The lines counted (every line has one raw key; empty lines are not table lines, and
    their key is dropped), plus the over-long ones cut out before the pattern saw them."""
    raw.pop(EMPTY_LINE, None)
    return sum(raw.values()) + overlong


def _fork_second_half(f: IO[bytes], size: int, deadline: Optional[float],
                      pattern: "Pattern[bytes]") -> "Optional[Tuple[int, int, int, int]]":
    """Start a child counting from the first line end after SHARE of the file to its end;
    returns (boundary, pid, read end of its pipe, kinds numbered at the fork), or None if no
    line end was found."""
    import marshal
    import os

    fd = os.open("/proc/self/fd/%d" % f.fileno(), os.O_RDONLY | os.O_CLOEXEC)  # own offset
    try:
        start = int(size * SHARE)
        probe = os.pread(fd, MAX_LINE, start)
        nl = probe.find(b"\n")
        if nl < 0:
            os.close(fd)
            return None
        boundary = start + nl + 1
        r, w = os.pipe()
        numbered = len(KINDS.names)
        pid = os.fork()
    except OSError:
        os.close(fd)
        return None
    if pid == 0:
        code = 0
        try:
            os.close(r)
            with os.fdopen(fd, "rb") as g:
                g.seek(boundary)
                raw, lines, truncated = _scan(g, None, deadline, pattern, 2)
            head: "Any" = (lines, truncated)
        except BaseException as e:  # reported, never raised into the caller's stack
            head, code = ("error", "%s: %s" % (type(e).__name__, e)), 1
        try:
            with os.fdopen(w, "wb") as out:
                marshal.dump(head, out)
                while not code and raw:  # labelled a part at a time, each sent as it is done
                    part = Sums()
                    label_lines(raw, part, PART)
                    marshal.dump((part.counts, part.kinds, part.idle, KINDS.extra_since(numbered)), out)
                marshal.dump(None, out)
        finally:
            os._exit(code)
    os.close(w)
    os.close(fd)
    return boundary, pid, r, numbered


PART = 1 << 14  # raw keys the forked counter labels and sends at a time
# The share of a split file this process counts itself. The forked counter labels its keys a
# part at a time and sends each part as it is done; this process merges each as it comes, while
# the other side labels the next. With a little less than half of the lines here, this process
# has counted and labelled its share about when the first part arrives (docs/performance.md).
SHARE = 0.45


def _collect(pid: int, r: int, sums: Sums, numbered: int) -> Tuple[int, bool]:
    """Merge the forked counter's sources into ours, part by part as they come -> (its lines,
    truncated). A source may come in several parts: merging adds."""
    import marshal
    import os

    try:
        with os.fdopen(r, "rb") as f:
            head = marshal.load(f)
            if head[0] == "error":
                raise Malformed("counting the second half of the file failed: %s" % head[1])
            lines, truncated = head
            part = marshal.load(f)
            while part is not None:
                remap = {numbered + i: KINDS.index(proto, label) for i, (proto, label) in enumerate(part[3])}
                sums.merge(part[0], part[1], part[2], remap)
                part = marshal.load(f)
    except (EOFError, ValueError, TypeError):
        raise Malformed("the process counting the second half of the file died") from None
    finally:
        os.waitpid(pid, 0)
    return lines, truncated


def _abandon(pid: int, r: int) -> None:
    """Stop and reap the forked counter when this side failed."""
    import os

    os.close(r)
    try:
        os.kill(pid, 9)
    except OSError:
        pass
    os.waitpid(pid, 0)


MAX_LINE = 1 << 16  # kernel lines are < 1 KiB; anything this long is garbage


def _skip_to_newline(f: IO[bytes]) -> None:
    while True:
        chunk = f.read(BLOCK)
        if not chunk:
            return
        i = chunk.find(b"\n")
        if i >= 0:
            # Put the remainder back by seeking when possible; a pipe cannot, and loses it.
            try:
                f.seek(i + 1 - len(chunk), 1)
            except (OSError, ValueError):
                pass
            return
