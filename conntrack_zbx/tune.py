"""`conntrack-zbx tune`: the incident's fix, done right and made to stick.

``--tcp-established-timeout`` does the same for ``nf_conntrack_tcp_timeout_established``: the
5-day default is how long a connection nobody closed keeps its slot. It is set at runtime for
this network namespace and persisted in its own sysctl.d file (loaded after the module, for the
same boot-order reason). A changed timeout applies from each entry's next packet: what already
leaked is removed with ``conntrack-zbx clean``.

Raises nf_conntrack_max and the hash size at runtime and persists both so a reboot keeps them:
``/etc/sysctl.d`` for the limit, ``/etc/modprobe.d`` for the hash size, and ``/etc/modules-load.d``
so nf_conntrack is loaded before systemd-sysctl runs (otherwise the sysctl.d line is silently
skipped). The bucket ratio follows the running kernel: one bucket per entry since 5.15,
"hashsize = max/4" before. A dry run by default; ``--apply`` writes atomically, backs up what it
replaces, sets the runtime values and reads them back.
"""

import os
import tempfile
from typing import TYPE_CHECKING, Dict, List, NamedTuple, Optional, Tuple

from conntrack_zbx import boot
from conntrack_zbx.errors import ConntrackError, NotPermitted, TuneRefused
from conntrack_zbx.sources.proc import HASHSIZE, MAX, ProcRoot

if TYPE_CHECKING:
    from conntrack_zbx.options import TuneArgs

# 99-: sorts after the usual numbered files, so ours is the value boot applies; apply verifies it.
SYSCTL_FILE = "etc/sysctl.d/99-conntrack-zbx.conf"
MODPROBE_FILE = "etc/modprobe.d/99-conntrack-zbx.conf"
MODULES_FILE = "etc/modules-load.d/99-conntrack-zbx.conf"
TIMEOUT_FILE = "etc/sysctl.d/99-conntrack-zbx-timeout.conf"
ESTABLISHED = "proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established"
MIN_ESTABLISHED = 600  # below this, ordinary idle connections (SSH, pools) break all the time
# The kernel keeps the timeout in jiffies (seconds x HZ in an int; HZ is at most 1000): a larger
# value is refused with EINVAL, or would be on a 1000 Hz kernel.
MAX_ESTABLISHED = (2 ** 31 - 1) // 1000
RECOMMENDED_ESTABLISHED = 86400  # what --auto proposes when idle entries hold the table
IDLE_SHARE = 0.25  # ... that is, at least this share of it
MIN_MAX = 1024  # the kernel's own floor for the default table; below it tuning is a mistake
DEFAULT_ENTRY_BYTES = 320  # nf_conn slab object, rounded up; /proc/slabinfo says 256 on 6.18 x86_64
BUCKET_BYTES = 8
MEMORY_SHARE = 8  # refuse a table that could take more than 1/8 of RAM when full


class Plan(NamedTuple):
    version: Tuple[int, int]
    release: str
    count: int  # type: ignore[assignment]  # the field, not tuple.count
    max_now: int
    buckets_now: int
    max_new: int
    buckets_new: int
    entry_bytes: int
    memtotal_kib: int
    files: Dict[str, str]  # relative path -> content
    reasons: List[str]


def _entry_bytes(root: ProcRoot) -> int:
    try:
        with open(root.path("proc/slabinfo")) as f:
            for line in f:
                if line.startswith("nf_conntrack "):
                    return int(line.split()[3])
    except (OSError, ValueError, IndexError):
        pass
    return DEFAULT_ENTRY_BYTES


def mib(n_bytes: float) -> str:
    return "%.0f MiB" % (n_bytes / 1048576.0)


def plan(root: ProcRoot, maximum: Optional[int], auto: bool, peak: Optional[int]) -> Plan:
    release = root.osrelease() or "0.0"
    version = boot.kernel_version(release)
    count, max_now, buckets_now = root.count(), root.max(), root.buckets()
    memtotal = root.memtotal_kib()
    if memtotal is None:
        raise TuneRefused("cannot read MemTotal from %s: refusing to size a table blind" % root.path("proc/meminfo"))
    entry = _entry_bytes(root)
    per_entry = entry + BUCKET_BYTES
    limit = memtotal * 1024 // MEMORY_SHARE // per_entry
    reasons = []
    default = boot.default_max(memtotal, version)
    if auto:
        peak = max(peak or 0, count)
        want = max(max_now, 2 * peak, default)
        target = 1
        while target < want:
            target *= 2
        maximum = min(target, 1 << (limit.bit_length() - 1))
        reasons.append("--auto: twice the peak of %d entries is %d, never below the current %d nor the kernel's "
                       "boot default %d, rounded up to a power of two: %d (each entry costs about %d bytes plus "
                       "%d for its bucket)" % (peak, 2 * peak, max_now, default, target, entry, BUCKET_BYTES))
        if maximum < target:
            reasons.append("capped at %d: a full table may use at most 1/%d of RAM (%s)"
                           % (maximum, MEMORY_SHARE, mib(memtotal * 1024 / MEMORY_SHARE)))
    assert maximum is not None
    if maximum < MIN_MAX:
        raise TuneRefused("refusing nf_conntrack_max %d: below %d the table is smaller than the kernel's "
                      "smallest default; this is a typo, not a tuning" % (maximum, MIN_MAX))
    if maximum < count:
        raise TuneRefused("refusing nf_conntrack_max %d: %d entries are in the table now, the kernel would "
                      "drop every new connection until %d of them expire" % (maximum, count, count - maximum))
    if maximum > limit:
        raise TuneRefused("refusing nf_conntrack_max %d: a full table would take about %s, more than 1/%d of "
                      "this host's %s of RAM; the most this host can afford is %d"
                      % (maximum, mib(maximum * per_entry), MEMORY_SHARE, mib(memtotal * 1024), limit))
    if maximum < default:
        reasons.append("WARNING: %d is below the kernel's boot default %d for this host (%s of RAM, kernel %s): "
                       "persisted, it makes every boot start with a smaller table than no tuning at all"
                       % (maximum, default, mib(memtotal * 1024), release))
    if maximum < max_now:
        reasons.append("this LOWERS the limit from %d to %d: a table that held more than %d entries before "
                       "will drop new connections at that point" % (max_now, maximum, maximum))
    buckets = boot.recommended_buckets(maximum, version)
    if version >= (5, 15):
        reasons.append("kernel %s: one hash bucket per entry (the default since 5.15; 'hashsize = max/4' "
                       "is older advice)" % release)
    else:
        reasons.append("kernel %s: hashsize = max/4, the default ratio before 5.15" % release)
    files = {
        SYSCTL_FILE: "# Written by conntrack-zbx tune. Applied at boot by systemd-sysctl, which only works\n"
                     "# because %s loads nf_conntrack first.\nnet.netfilter.nf_conntrack_max = %d\n"
                     % ("/" + MODULES_FILE, maximum),
        MODULES_FILE: "# Written by conntrack-zbx tune: load nf_conntrack before systemd-sysctl runs, so\n"
                      "# %s is not silently skipped.\nnf_conntrack\n" % ("/" + SYSCTL_FILE),
        MODPROBE_FILE: "# Written by conntrack-zbx tune: hash buckets for nf_conntrack_max %d.\n"
                       "options nf_conntrack hashsize=%d\n" % (maximum, buckets),
    }
    return Plan(version, release, count, max_now, buckets_now, maximum, buckets, entry, memtotal, files, reasons)


def render(p: Plan, etc_root: str, applied: bool, runtime_only: bool) -> str:
    per = p.entry_bytes + BUCKET_BYTES
    out = ["conntrack tune: %s" % ("applied" if applied else "plan (dry run; --apply makes it so)")]
    out += ["  " + r for r in p.reasons]
    out.append("")
    out.append("  %-18s %10s    %10s" % ("", "now", "after"))
    out.append("  %-18s %10d -> %10d" % ("nf_conntrack_max", p.max_now, p.max_new))
    out.append("  %-18s %10d -> %10d" % ("hash buckets", p.buckets_now, p.buckets_new))
    out.append("  %-18s %10d    (%.1f%% of max now, %.1f%% after)"
               % ("entries in use", p.count, 100.0 * p.count / p.max_now if p.max_now else 0,
                  100.0 * p.count / p.max_new))
    out.append("  %-18s %10s -> %10s    (about %d bytes per entry with its bucket)"
               % ("memory when full", mib(p.max_now * per), mib(p.max_new * per), per))
    out.append("")
    if runtime_only:
        out.append("  files: none (--runtime-only): a reboot returns to what boot sets; the template's "
                   "drift trigger will say so")
    else:
        out += _files(p.files, etc_root, runtime_only)
    return "\n".join(out) + "\n"


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def write_atomic(path: str, content: str) -> Optional[str]:
    """Write via a temporary file in the same directory and rename; keep the old file as .bak."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    backup = None
    if os.path.exists(path):
        if _read(path) == content:
            return None
        backup = path + ".bak"
        with open(path, "rb") as src, open(backup, "wb") as dst:
            dst.write(src.read())
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".conntrack-zbx-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return backup


def set_runtime(root: ProcRoot, maximum: int, buckets: int) -> None:
    """Grow the hash before the limit (shrink in the other order): the ratio never overshoots."""
    steps = [(HASHSIZE, buckets), (MAX, maximum)]
    if maximum < root.max():
        steps.reverse()
    for rel, value in steps:
        try:
            with open(root.path(rel), "w") as f:
                f.write("%d\n" % value)
        except PermissionError:
            raise NotPermitted("cannot write %s: run tune --apply as root in the host's own network "
                               "namespace" % root.path(rel)) from None
        except OSError as e:
            raise TuneRefused("the kernel refused %d for %s: %s" % (value, root.path(rel), e.strerror)) from None
    got_max, got_buckets = root.max(), root.read_int(HASHSIZE)
    if got_max != maximum or got_buckets < buckets:
        raise TuneRefused("runtime check failed: nf_conntrack_max reads %d (wanted %d), buckets %d (wanted %d)"
                      % (got_max, maximum, got_buckets, buckets))


def check_boot(etc_root: str, p: Plan) -> None:
    """Read the boot configuration back the way boot will: another file that sorts later would
    silently override ours."""
    b = boot.read_boot(etc_root)
    if b.max != p.max_new:
        raise TuneRefused("written, but %s sets nf_conntrack_max %s later at boot: edit or remove it"
                      % (b.max_source, b.max))
    if b.hashsize != p.buckets_new:
        raise TuneRefused("written, but %s sets hashsize=%s later at load: edit or remove it"
                      % (b.hashsize_source, b.hashsize))
    if not b.module_autoload:
        raise TuneRefused("written, but nf_conntrack is still not loaded early (modules-load.d)")


def plan_timeout(root: ProcRoot, seconds: int) -> Tuple[int, Dict[str, str]]:
    """-> (the running timeout, {file: content})."""
    if seconds < MIN_ESTABLISHED:
        raise TuneRefused("refusing an ESTABLISHED timeout of %d s: below %d s every idle SSH session or "
                          "connection pool through this host loses its state; this is a typo, not a tuning"
                          % (seconds, MIN_ESTABLISHED))
    if seconds > MAX_ESTABLISHED:
        raise TuneRefused("refusing an ESTABLISHED timeout of %d s: the kernel keeps it in jiffies and takes at "
                          "most %d s (24.8 days) on a 1000 Hz kernel; the default is 432000 (5 days)"
                          % (seconds, MAX_ESTABLISHED))
    now = root.read_int(ESTABLISHED)
    files = {
        TIMEOUT_FILE: "# Written by conntrack-zbx tune: how long an ESTABLISHED TCP entry lives without a\n"
                      "# packet. Applied at boot by systemd-sysctl after %s loads nf_conntrack.\n"
                      "net.netfilter.nf_conntrack_tcp_timeout_established = %d\n" % ("/" + MODULES_FILE, seconds),
        MODULES_FILE: "# Written by conntrack-zbx tune: load nf_conntrack before systemd-sysctl runs, so\n"
                      "# %s is not silently skipped.\nnf_conntrack\n" % ("/" + SYSCTL_FILE),
    }
    return now, files


def render_timeout(now: int, seconds: int, files: Dict[str, str], etc_root: str, applied: bool,
                   runtime_only: bool) -> str:
    out = ["conntrack tune: %s" % ("applied" if applied else "plan (dry run; --apply makes it so)"),
           "  nf_conntrack_tcp_timeout_established %d -> %d s (this network namespace)" % (now, seconds),
           "  an ESTABLISHED connection silent for longer than %d s through this host loses its state: a"
           % seconds,
           "  stateful firewall or NAT then drops or resets its next packet (keepalives avoid that).",
           "  Entries that already leaked keep their old expiry: remove them with conntrack-zbx clean",
           "  first (after the change their idle time can no longer be told).", ""]
    out += _files(files, etc_root, runtime_only)
    return "\n".join(out) + "\n"


def _files(files: Dict[str, str], etc_root: str, runtime_only: bool) -> List[str]:
    if runtime_only:
        return ["  files: none (--runtime-only): a reboot returns to what boot sets"]
    out = []
    for rel, content in sorted(files.items()):
        path = os.path.join(etc_root, rel)
        state = "replace (backup: %s.bak)" % path if os.path.exists(path) else "new"
        if os.path.exists(path) and _read(path) == content:
            state = "unchanged"
        out.append("  %s  [%s]" % (path, state))
        out += ["      " + ln for ln in content.splitlines() if not ln.startswith("#")]
    return out


def apply_timeout(root: ProcRoot, seconds: int, files: Dict[str, str], etc_root: str, runtime_only: bool) -> str:
    if not runtime_only:
        for rel, content in sorted(files.items()):
            write_atomic(os.path.join(etc_root, rel), content)
        at_boot, source = boot.boot_sysctl(etc_root, "nf_conntrack_tcp_timeout_established")
        if at_boot != seconds:
            raise TuneRefused("written, but %s sets nf_conntrack_tcp_timeout_established %s later at boot: "
                              "edit or remove it" % (source, at_boot))
    try:
        with open(root.path(ESTABLISHED), "w") as f:
            f.write("%d\n" % seconds)
    except PermissionError:
        raise NotPermitted("cannot write %s: run tune --apply as root" % root.path(ESTABLISHED)) from None
    except OSError as e:
        raise TuneRefused("the kernel refused %d for %s: %s" % (seconds, root.path(ESTABLISHED), e.strerror)) from None
    got = root.read_int(ESTABLISHED)
    if got != seconds:
        raise TuneRefused("runtime check failed: the ESTABLISHED timeout reads %d (wanted %d)" % (got, seconds))
    return "  verified: nf_conntrack_tcp_timeout_established %d\n" % got


def idle_advice(root: ProcRoot, proc_root: str) -> List[str]:
    """--auto: an ESTABLISHED timeout to propose when idle entries hold the table (reads the table,
    so it needs what talkers needs; says so instead of guessing)."""
    import time

    from conntrack_zbx.errors import ConntrackError
    from conntrack_zbx.sources.table import Where, idle_rule, read

    where = Where(proc_root, "auto", None)
    try:
        rule, why = idle_rule(where, 3600)
        if rule is None:
            return ["idle entries: %s" % why]
        t, _source, _note = read(where, time.monotonic() + 30, rule)
    except ConntrackError as e:
        return ["idle entries not checked: %s" % e]
    idle = sum(v[0] for v in (t.idle or {}).values())
    share = idle / t.entries if t.entries else 0.0
    line = "idle entries: %d of %d (%.0f%%) ESTABLISHED TCP silent for over 1h" % (idle, t.entries, 100 * share)
    if share >= IDLE_SHARE and rule.established > RECOMMENDED_ESTABLISHED:
        return [line, "recommended: --tcp-established-timeout %d (now %d): idle connections hold the table; "
                      "first conntrack-zbx clean --network ... for what already leaked (runbook: leak)"
                % (RECOMMENDED_ESTABLISHED, rule.established)]
    return [line + ": the ESTABLISHED timeout is not what fills the table"]


def run(args: "TuneArgs") -> str:
    root = ProcRoot(args.proc_root)
    if args.max is None and not args.auto and args.tcp_established_timeout is None:
        raise TuneRefused("tune needs --max N, --auto or --tcp-established-timeout SECONDS")
    if args.apply and os.geteuid() != 0:
        raise NotPermitted("tune --apply changes kernel settings and /etc: run it as root "
                           "(the dry run needs no privilege)")
    out = ""
    if args.tcp_established_timeout is not None:
        now, files = plan_timeout(root, args.tcp_established_timeout)
        out += render_timeout(now, args.tcp_established_timeout, files, args.root, args.apply, args.runtime_only)
        if args.apply:
            out += apply_timeout(root, args.tcp_established_timeout, files, args.root, args.runtime_only)
        if args.max is None and not args.auto:
            return out
    return out + _run_max(args, root)


def busiest_namespace(proc_root: str) -> Tuple[int, str]:
    """The fullest network namespace's count (containers and pods count against the one global
    limit) -> (entries, which); (0, why not) where they cannot be read."""
    from conntrack_zbx.parse.stat import parse_stat
    from conntrack_zbx.sources import netns

    try:
        found, _own = netns.find(proc_root)
    except ConntrackError as e:
        return 0, "other network namespaces not counted (%s)" % e
    best = (0, "")
    for f in found.values():
        try:
            n = parse_stat(netns.stat_text(f, proc_root)).entries or 0
        except (OSError, ConntrackError):
            continue
        if n > best[0]:
            best = (n, "network namespace %d%s" % (f.inode, " (%s)" % f.names[0] if f.names else ""))
    return best


def _run_max(args: "TuneArgs", root: ProcRoot) -> str:
    peak = args.peak
    busiest = (0, "")
    if args.auto:
        busiest = busiest_namespace(args.proc_root)
        peak = max(peak or 0, busiest[0])
    p = plan(root, args.max, args.auto, peak)
    if args.auto:
        if busiest[0] > p.count:
            p.reasons.insert(1, "the peak counted is the busiest namespace's: %d entries in %s" % busiest)
        elif busiest[1] and not busiest[0]:
            p.reasons.insert(1, busiest[1])
        p.reasons.extend(idle_advice(root, args.proc_root))
    if not args.apply:
        return render(p, args.root, applied=False, runtime_only=args.runtime_only)
    report = render(p, args.root, applied=True, runtime_only=args.runtime_only)
    if not args.runtime_only:
        for rel, content in sorted(p.files.items()):
            write_atomic(os.path.join(args.root, rel), content)
        check_boot(args.root, p)
    set_runtime(root, p.max_new, p.buckets_new)
    return report + "  verified: nf_conntrack_max %d, hashsize %d\n" % (root.max(), root.read_int(HASHSIZE))
