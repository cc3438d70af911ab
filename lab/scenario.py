"""The lifecycle every lab story shares: build, run, record, restore.

A scenario (the incident replay on one node, the fleet of four) lowers the one global
``nf_conntrack_max`` to make a table really full, so the first thing it does is save the limits
(also to ``RESTORE_FILE``, for ``make demo-stop`` after a ``kill -9``) and the last thing is put
them back, whatever happened in between: an exception, Ctrl-C, SIGTERM or the interpreter's exit.
A story subclasses it with its own steps only: ``cleanup_leftovers`` (what an earlier run that was
killed left), ``setup`` (its hosts, stack and baseline), ``teardown`` (what it built), and the
story itself. Its timeline is a list of events with their clocks.
"""

import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from lab.netns import Entered, Netns

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_PATH = "/proc/sys/net/netfilter/nf_conntrack_max"
HASHSIZE_PATH = "/sys/module/nf_conntrack/parameters/hashsize"
RESTORE_FILE = "/var/tmp/ctzbx-replay-restore"
Step = Callable[[Callable[[], Any]], None]


class Knob:
    """A global conntrack setting, written from the init namespace: nf_conntrack_max is read-only
    from any other namespace and the hashsize setter refuses a caller outside init_net
    (EOPNOTSUPP), so the replay steps out of the monitor's namespace around every write
    (``Scenario.set_limits``)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR)

    def read(self) -> int:
        os.lseek(self.fd, 0, os.SEEK_SET)
        return int(os.read(self.fd, 64))

    def write(self, value: int) -> int:
        """Write, and return what the kernel took (it rounds hashsize up to a page of buckets)."""
        os.lseek(self.fd, 0, os.SEEK_SET)
        os.write(self.fd, b"%d\n" % int(value))
        took = self.read()
        if took < int(value):
            raise OSError("%s did not take %d (reads %d)" % (self.path, value, took))
        return took


def restore_saved_max() -> Optional[Dict[str, int]]:
    """Put back the global settings a replay saved (after a crash or kill -9)."""
    try:
        with open(RESTORE_FILE) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return None
    for path, value in saved.items():
        Knob(path).write(value)
    os.remove(RESTORE_FILE)
    return saved


def record(events: List[Dict[str, Any]], what: str, clock: Optional[float], info: Dict[str, Any]) -> Dict[str, Any]:
    """One event of a replay's timeline (now, unless ``clock`` says when), kept in ``events``."""
    e = {"clock": clock if clock is not None else time.time(), "what": what}
    e.update(info)
    events.append(e)
    return e


def render_timeline(events: List[Dict[str, Any]]) -> str:
    """The events in time order, each with its clock, its offset from the first and its details."""
    if not events:
        return ""
    t0 = min(e["clock"] for e in events)
    rows = []
    for e in sorted(events, key=lambda e: e["clock"]):
        extra = ", ".join("%s=%s" % (k, v) for k, v in e.items() if k not in ("clock", "what"))
        rows.append("  %s  +%6.1fs  %s%s" % (time.strftime("%H:%M:%S", time.localtime(e["clock"])),
                                           e["clock"] - t0, e["what"], ("  (%s)" % extra) if extra else ""))
    return "\n".join(rows)


class Scenario:
    """Build, run, record, restore: a story's lifecycle, the story's steps in a subclass."""

    def __init__(self, say: Callable[[str], None] = print) -> None:
        self.say = say
        self.events: List[Dict[str, Any]] = []
        self.procs: List[subprocess.Popen] = []
        self.entered: Optional[Entered] = None  # the monitor's namespace, entered by this thread
        self.saved: Optional[Tuple[int, int]] = None  # nf_conntrack_max and hashsize before the run
        self.stopping = threading.Event()  # background threads of the story end when it is set

    # -- what a story provides ------------------------------------------------------------------
    def cleanup_leftovers(self) -> None:
        """What a killed earlier run left behind."""

    def setup(self) -> None:
        raise NotImplementedError

    def teardown(self, step: Step) -> None:
        """Remove what ``setup`` built; each removal through ``step``, so one failing never stops
        the others."""

    # -- timeline -------------------------------------------------------------------------------
    def event(self, what: str, clock: Optional[float] = None, **info: Any) -> Dict[str, Any]:
        return record(self.events, what, clock, info)

    def timeline(self) -> str:
        return render_timeline(self.events)

    def find(self, what: str) -> Dict[str, Any]:
        return next(e for e in self.events if e["what"] == what)

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> "Scenario":
        self.cleanup_leftovers()
        self.knob, self.hashsize = Knob(MAX_PATH), Knob(HASHSIZE_PATH)
        self.saved = (self.knob.read(), self.hashsize.read())
        with open(RESTORE_FILE, "w") as f:
            json.dump({MAX_PATH: self.saved[0], HASHSIZE_PATH: self.saved[1]}, f)
        atexit.register(self.close)
        # SIGINT too: a non-interactive shell starts background jobs with SIGINT ignored (so does
        # nohup ... &), and Python then installs no KeyboardInterrupt for it; Ctrl-C or kill -INT
        # must still restore the kernel.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        try:
            self.setup()
        except BaseException:
            self.close()
            raise
        return self

    def _on_signal(self, signum: int, frame: Any) -> None:
        raise KeyboardInterrupt("signal %d" % signum)

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop the story's threads and processes, restore the kernel, then the story's own
        teardown. Every step runs even when an earlier one fails; the first failure is raised at
        the end."""
        errors: List[BaseException] = []

        def step(fn: Callable[[], Any]) -> None:
            try:
                fn()
            except BaseException as e:  # keep cleaning up
                errors.append(e)

        self.stopping.set()
        for p in self.procs:
            if p.poll() is None:
                step(p.kill)
                step(p.wait)
        self.procs = []
        if self.entered is not None:
            entered = self.entered
            step(lambda: entered.__exit__())
            self.entered = None
        if self.saved is not None:
            step(self.restore_limits)
        self.teardown(step)
        if errors:
            raise errors[0]

    def restore_limits(self) -> None:
        if self.saved is None:
            return
        self.set_limits(*self.saved)
        self.saved = None
        if os.path.exists(RESTORE_FILE):
            os.remove(RESTORE_FILE)

    # -- helpers every story uses ---------------------------------------------------------------
    @contextlib.contextmanager
    def in_init_ns(self) -> Iterator[None]:
        """Step this thread out of the monitor's namespace for a global setting (see Knob)."""
        if self.entered is not None:
            self.entered.__exit__()
        try:
            yield
        finally:
            if self.entered is not None:
                self.entered.__enter__()

    def set_limits(self, maximum: int, hashsize: int) -> None:
        """Write the global limits from the init namespace, in the order that never leaves the
        limit above the old ratio of buckets in between."""
        with self.in_init_ns():
            if maximum < self.knob.read():
                self.knob.write(maximum)
                self.hashsize.write(hashsize)
            else:
                self.hashsize.write(hashsize)
                self.knob.write(maximum)

    def spawn(self, ns: Netns, args: List[str], out: Any = subprocess.DEVNULL, stdin: Any = None) -> subprocess.Popen:
        """A lab helper (``python -m lab ...``) in a namespace, stopped by ``close``."""
        p = subprocess.Popen(ns.cmd([sys.executable] + args), stdout=out, stderr=subprocess.DEVNULL,
                             stdin=stdin, cwd=REPO)
        self.procs.append(p)
        return p

    @staticmethod
    def drops_of(ns: Netns) -> int:
        """The namespace's kernel drop counter, summed over CPUs."""
        lines = ns.read("/proc/net/stat/nf_conntrack").splitlines()
        col = lines[0].split().index("drop")
        return sum(int(ln.split()[col], 16) for ln in lines[1:] if ln.strip())
