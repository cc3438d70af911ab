"""The shared snapshot cache: one table read per interval, however many calls ask.

The agent runs checks in parallel, and ``talkers``, ``discovery`` and ad-hoc calls all want the
same pass over the table, which costs about a second at the incident's size. Results are cached
as small JSON files; a lock makes concurrent callers that find the cache stale wait for the one
that is already reading, then use its result.

The cache is written by root (the talker keys run through sudo) and read by root, so it must not
become a way in: it lives in a directory owned by the effective user with no access for anyone
else (``/run/conntrack-zbx``, 0700, under root-only /run, so no other user can pre-create it);
every open uses ``O_NOFOLLOW`` and is checked with ``fstat`` for owner, type and mode; writes
go to an ``O_EXCL`` temporary file renamed into place. A file that fails a check or does not
parse is ignored and rebuilt, never trusted; a directory that fails a check disables the cache
for the call (the answer is read afresh and says why).
"""

import errno
import os
import stat
import time
import zlib

from conntrack_zbx.errors import CacheRefused, LockTimeout
from conntrack_zbx.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs every agent call ~3 ms
    from typing import Any, Callable, Optional, Tuple, Union

    from conntrack_zbx.jsonout import Written

DEFAULT_DIR = "/run/conntrack-zbx"
# A file is one header line, "conntrack-zbx-cache FORMAT WRITTEN CRC32 KEY-HEX", then the answer
# as written out. No json on the read side: a cached call must cost little more than starting
# Python (json imports re).
MAGIC = b"conntrack-zbx-cache"
FORMAT = 2
MAX_BYTES = 64 << 20  # a counts file for a million distinct sources is ~40 MiB


def _hexkey(key: str) -> bytes:
    return key.encode("utf-8", "surrogateescape").hex().encode("ascii")


def _check(st: "os.stat_result", what: str, want_dir: bool) -> None:
    euid = os.geteuid()
    if want_dir and not stat.S_ISDIR(st.st_mode):
        raise CacheRefused("%s is not a directory" % what)
    if not want_dir and not stat.S_ISREG(st.st_mode):
        raise CacheRefused("%s is not a regular file" % what)
    if st.st_uid != euid:
        raise CacheRefused("%s is owned by uid %d, not by uid %d (who runs this)" % (what, st.st_uid, euid))
    if st.st_mode & 0o077:
        raise CacheRefused("%s has mode %04o: group/other may access it (want 0%s00)"
                           % (what, stat.S_IMODE(st.st_mode), "7" if want_dir else "6"))


class Cache:
    """A checked directory of JSON snapshots. Use as a context manager (holds a dir fd)."""

    def __init__(self, directory: str = DEFAULT_DIR) -> None:
        self.directory = directory
        self.fd = -1

    def __enter__(self) -> "Cache":
        self.fd = self._open_dir()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _open_dir(self) -> int:
        d = self.directory
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            pass
        except OSError as e:
            raise CacheRefused("cannot create cache directory %s: %s" % (d, e.strerror or e)) from None
        try:
            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise CacheRefused("cache directory %s is a symlink or not a directory" % d) from None
            raise CacheRefused("cannot open cache directory %s: %s" % (d, e.strerror or e)) from None
        try:
            _check(os.fstat(fd), "cache directory %s" % d, True)
        except CacheRefused:
            os.close(fd)
            raise
        return fd

    def read(self, name: str, max_age: float, key: str) -> "Optional[Tuple[str, float]]":
        """(the stored text, its age in seconds) if the file under ``name`` is ours, intact (its
        CRC matches), describes ``key`` and is at most ``max_age`` seconds old; None otherwise
        (the caller reads afresh and overwrites it)."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=self.fd)
        except OSError:
            return None  # missing, a symlink (ELOOP), a FIFO trap...: rebuilt by the caller
        try:
            try:
                st = os.fstat(fd)
                _check(st, name, False)
            except CacheRefused:
                return None
            if st.st_size > MAX_BYTES:
                return None
            with os.fdopen(fd, "rb", closefd=False) as f:
                data = f.read(MAX_BYTES + 1)
        finally:
            os.close(fd)
        header, nl, body = data.partition(b"\n")
        words = header.split(b" ")
        if not nl or len(words) != 5 or words[0] != MAGIC or words[1] != b"%d" % FORMAT:
            return None
        try:
            written = float(words[2])
            crc = int(words[3])
        except ValueError:
            return None
        if words[4] != _hexkey(key) or crc != zlib.crc32(body):
            return None
        age = time.time() - written
        if not -1 <= age <= max_age:  # from the future (clock step), too old or not a number
            return None
        try:
            return body.decode("utf-8"), max(age, 0.0)
        except UnicodeDecodeError:
            return None

    def write(self, name: str, key: str, text: str) -> None:
        """Atomically replace ``name`` with ``text`` for ``key``: readers see the old file or the
        new one, never half of one."""
        body = text.encode("utf-8")
        data = b"%s %d %r %d %s\n" % (MAGIC, FORMAT, time.time(), zlib.crc32(body), _hexkey(key)) + body
        tmp = ".%s.%d.tmp" % (name, os.getpid())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=self.fd)
        try:
            with os.fdopen(fd, "wb", closefd=False) as f:
                f.write(data)
            os.replace(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=self.fd)
            except OSError:
                pass
            raise
        finally:
            os.close(fd)

    def lock(self, timeout: float) -> "_Lock":
        return _Lock(self, timeout)


class _Lock:
    """An exclusive flock on ``.lock`` in the cache directory: the one reader of the table.
    Waiting is bounded, so a stuck holder cannot make every later call time out."""

    def __init__(self, cache: "Cache", timeout: float) -> None:
        self.cache = cache
        self.timeout = timeout
        self.fd = -1

    def __enter__(self) -> "_Lock":
        import fcntl

        name = ".lock"
        try:
            fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                         0o600, dir_fd=self.cache.fd)
        except OSError as e:
            raise CacheRefused("cannot open the cache lock: %s" % (e.strerror or e)) from None
        try:
            _check(os.fstat(fd), "cache lock", False)
        except CacheRefused:
            os.close(fd)
            raise
        give_up = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > give_up:
                    os.close(fd)
                    raise LockTimeout("another conntrack-zbx call held the cache lock for %.1f s"
                                      % self.timeout) from None
                time.sleep(0.01)
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing releases the flock
            self.fd = -1


# -- an answer through the cache -------------------------------------------------------------------
class Wanted(Record):
    """Which of the answers one table read writes a call wants: ``answers`` names them all (each
    is kept in its own file), ``which`` is this call's, ``stamped`` whether it gets the call's
    own fields (cached, age, cache_error) or is served as it was written."""

    __slots__ = ("answers", "which", "stamped")
    answers: "Tuple[str, ...]"
    which: int
    stamped: bool


def serve(directory: "Optional[str]", name: str, key: str, max_age: int, wanted: Wanted, deadline: float,
          lock_wait: float, fresh: "Callable[[], Tuple[str, ...]]") -> "Written":
    """The ``wanted`` answer for the table ``key`` names.

    A fresh enough cached answer is served as it was written. Else, under the cache lock (so
    concurrent calls make one table read, the others wait up to ``lock_wait`` and take its
    answer), ``fresh()`` reads the table once and every answer is kept. A cache that fails its
    safety checks is not used, and a stamped answer says why in ``cache_error``.
    """
    from conntrack_zbx.budget import OWN_READ_RESERVE

    names = ["%s-%s.json" % (answer, name) for answer in wanted.answers]
    command = names[wanted.which]

    def finish(text: "Union[str, Tuple[str, ...]]", **fields: "Any") -> "Written":
        return stamp(text if isinstance(text, str) else text[wanted.which], wanted.stamped, **fields)

    try:
        with Cache(directory or DEFAULT_DIR) as c:
            hit = c.read(command, max_age, key) if max_age > 0 else None
            if hit is not None:
                return finish(hit[0], cached=True, age=round(hit[1], 3))
            # Wait for another call's read as long as leaves time for a short read of our own: under
            # load (many checks at once on few CPUs) the reader is slow, and a second read only adds load.
            with c.lock(timeout=max(lock_wait, deadline - time.monotonic() - OWN_READ_RESERVE)):
                hit = c.read(command, max_age, key) if max_age > 0 else None
                if hit is not None:  # another call read the table while we waited
                    return finish(hit[0], cached=True, age=round(hit[1], 3))
                written = fresh()
                try:
                    for file, text in zip(names, written):
                        c.write(file, key, text)
                except OSError as e:  # the answer stands; the next call reads afresh
                    return finish(written, cache_error="cache not written: %s" % (e.strerror or e),
                                  cached=False, age=0.0)
                return finish(written, cached=False, age=0.0)
    except LockTimeout as e:
        # The reader may have finished a moment after the wait ended: files are renamed into
        # place whole, so a look without the lock is safe, and beats a read with no time left.
        problem = "cache not used: %s" % e
        try:
            with Cache(directory or DEFAULT_DIR) as c:
                hit = c.read(command, max_age, key) if max_age > 0 else None
        except CacheRefused:
            hit = None
        if hit is not None:
            return finish(hit[0], cached=True, age=round(hit[1], 3))
    except CacheRefused as e:
        problem = "cache not used: %s" % e
    return finish(fresh(), cached=False, age=0.0, cache_error=problem)


def stamp(text: str, stamped: bool, **fields: "Any") -> "Written":
    """One answer as written, with the call's own fields added when it is ``stamped``."""
    from conntrack_zbx.jsonout import Written, with_fields

    return Written(with_fields(text, fields)) if stamped else Written(text)
