"""`conntrack-zbx tune`: the incident's fix, done right and made to stick.

Raises nf_conntrack_max and the hash size at runtime and persists both so a reboot keeps them:
``/etc/sysctl.d`` for the limit, ``/etc/modprobe.d`` for the hash size, and ``/etc/modules-load.d``
so nf_conntrack is loaded before systemd-sysctl runs (otherwise the sysctl.d line is silently
skipped). The bucket ratio follows the running kernel: one bucket per entry since 5.15,
"hashsize = max/4" before. A dry run by default; ``--apply`` writes atomically, backs up what it
replaces, sets the runtime values and reads them back.
"""

import os
import tempfile
from typing import Dict, List, NamedTuple, Optional, Tuple

from conntrack_zbx import boot
from conntrack_zbx.errors import NotPermitted, TuneRefused
from conntrack_zbx.sources.proc import HASHSIZE, MAX, ProcRoot

# 99-: sorts after the usual numbered files, so ours is the value boot applies; apply verifies it.
SYSCTL_FILE = "etc/sysctl.d/99-conntrack-zbx.conf"
MODPROBE_FILE = "etc/modprobe.d/99-conntrack-zbx.conf"
MODULES_FILE = "etc/modules-load.d/99-conntrack-zbx.conf"
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
    if auto:
        peak = max(peak or 0, count)
        want = max(max_now, 2 * peak)
        target = 1
        while target < want:
            target *= 2
        maximum = min(target, 1 << (limit.bit_length() - 1))
        reasons.append("--auto: twice the peak of %d entries is %d, never below the current %d, rounded up "
                       "to a power of two: %d (each entry costs about %d bytes plus %d for its bucket)"
                       % (peak, 2 * peak, max_now, target, entry, BUCKET_BYTES))
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
        for rel, content in sorted(p.files.items()):
            path = os.path.join(etc_root, rel)
            state = "replace (backup: %s.bak)" % path if os.path.exists(path) else "new"
            if os.path.exists(path) and _read(path) == content:
                state = "unchanged"
            out.append("  %s  [%s]" % (path, state))
            out += ["      " + ln for ln in content.splitlines() if not ln.startswith("#")]
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


def run(args) -> str:
    root = ProcRoot(args.proc_root)
    if args.apply and os.geteuid() != 0:
        raise NotPermitted("tune --apply changes kernel settings and /etc: run it as root "
                           "(the dry run needs no privilege)")
    p = plan(root, args.max, args.auto, args.peak)
    if not args.apply:
        return render(p, args.root, applied=False, runtime_only=args.runtime_only)
    report = render(p, args.root, applied=True, runtime_only=args.runtime_only)
    if not args.runtime_only:
        for rel, content in sorted(p.files.items()):
            write_atomic(os.path.join(args.root, rel), content)
        check_boot(args.root, p)
    set_runtime(root, p.max_new, p.buckets_new)
    return report + "  verified: nf_conntrack_max %d, hashsize %d\n" % (root.max(), root.read_int(HASHSIZE))
