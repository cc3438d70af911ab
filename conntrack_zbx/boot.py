"""What the next boot will set: nf_conntrack_max from sysctl.d, the hash size from modprobe.d,
and whether nf_conntrack is loaded early enough for sysctl.d to apply at all.

The trap (docs/runbook.md, "4. Make it survive a reboot"): a ``net.netfilter.nf_conntrack_max`` line in
``/etc/sysctl.d/`` is silently not applied when the module loads after systemd-sysctl has run.
Only a module listed in ``modules-load.d`` (or ``/etc/modules`` on Debian) is loaded before it.

Pure functions over file texts plus one reader that takes the root directory, like the /proc
readers. Agent side: standard library only, Python 3.8.
"""

import os
from conntrack_zbx.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs every agent call ~3 ms
    from typing import Dict, List, Optional, Tuple

SYSCTL_DIRS = ("etc/sysctl.d", "run/sysctl.d", "usr/local/lib/sysctl.d", "usr/lib/sysctl.d", "lib/sysctl.d")
MODPROBE_DIRS = ("etc/modprobe.d", "run/modprobe.d", "usr/local/lib/modprobe.d", "usr/lib/modprobe.d",
                 "lib/modprobe.d")
MODULES_LOAD_DIRS = ("etc/modules-load.d", "run/modules-load.d", "usr/local/lib/modules-load.d",
                     "usr/lib/modules-load.d", "lib/modules-load.d")
MODULE = "nf_conntrack"


class Boot(Record):
    """What a reboot sets. ``max``: nf_conntrack_max from sysctl.d, None when nothing is persisted
(kernel default); ``hashsize``: ``options nf_conntrack hashsize=``, None for the kernel
default; ``module_autoload``: nf_conntrack in modules-load.d or /etc/modules. Each
``*_source`` names the file that decided it (None: nothing did)."""

    __slots__ = ("max", "max_source", "hashsize", "hashsize_source", "module_autoload", "module_source")
    max: "Optional[int]"
    max_source: "Optional[str]"
    hashsize: "Optional[int]"
    hashsize_source: "Optional[str]"
    module_autoload: bool
    module_source: "Optional[str]"


def config_files(root: str, dirs: "Tuple[str, ...]") -> "List[str]":
    """systemd's rule for *.d directories: files by basename in lexical order; a name in an
    earlier directory (/etc) hides the same name in later ones (/usr/lib)."""
    chosen = {}  # type: Dict[str, str]
    for d in dirs:
        try:
            names = os.listdir(os.path.join(root, d))
        except OSError:
            continue
        for name in names:
            if name.endswith(".conf") and name not in chosen:
                chosen[name] = os.path.join(root, d, name)
    return [chosen[n] for n in sorted(chosen)]


def parse_sysctl(text: str) -> "Dict[str, str]":
    """key = value lines; '#' and ';' comments; a leading '-' (ignore errors) is dropped."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        key, value = line.split("=", 1)
        out[key.strip().lstrip("-").strip()] = value.strip()
    return out


def parse_modprobe_options(text: str, module: str = MODULE) -> "Dict[str, str]":
    """``options <module> k=v ...`` lines (string operations, no regex: stats imports no ``re``)."""
    out = {}
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(None, 2)
        if len(words) == 3 and words[0] == "options" and words[1].replace("-", "_") == module:
            for opt in words[2].split():
                if "=" in opt:
                    k, v = opt.split("=", 1)
                    out[k] = v
    return out


def lists_module(text: str, module: str = MODULE) -> bool:
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line.replace("-", "_") == module:
            return True
    return False


def boot_sysctl(root: str, name: str) -> "Tuple[Optional[int], Optional[str]]":
    """The integer value boot gives ``net.netfilter.<name>`` and the file that sets it (later
    files win), or (None, None)."""
    value, source = None, None
    keys = ("net.netfilter." + name, "net/netfilter/" + name)
    for path in [os.path.join(root, "etc/sysctl.conf")] + config_files(root, SYSCTL_DIRS):
        values = parse_sysctl(_read(path))
        for key in keys:
            if key in values and values[key].isdigit():
                value, source = int(values[key]), path
    return value, source


def read_boot(root: str = "/") -> "Boot":
    """Files that cannot be read are skipped: they are not this user's to judge."""
    max_value, max_source = boot_sysctl(root, "nf_conntrack_max")
    hashsize, hs_source = None, None
    for path in config_files(root, MODPROBE_DIRS):
        opts = parse_modprobe_options(_read(path))
        if opts.get("hashsize", "").isdigit():
            hashsize, hs_source = int(opts["hashsize"]), path
    autoload, mod_source = False, None
    for path in config_files(root, MODULES_LOAD_DIRS) + [os.path.join(root, "etc/modules")]:
        if lists_module(_read(path)):
            autoload, mod_source = True, path
            break
    return Boot(max_value, max_source, hashsize, hs_source, autoload, mod_source)


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(1 << 20).decode("utf-8", "replace")
    except OSError:
        return ""


def kernel_version(release: str) -> "Tuple[int, int]":
    """(major, minor) from a release string like ``6.18.44-fc-v669``; (0, 0) if it is not one."""
    major, dot, rest = release.partition(".")
    minor = ""
    for ch in rest:
        if not ("0" <= ch <= "9"):
            break
        minor += ch
    if dot and major and all("0" <= c <= "9" for c in major) and minor:
        return int(major), int(minor)
    return 0, 0


def default_buckets(memtotal_kib: int, version: "Tuple[int, int]" = (5, 15)) -> int:
    """The kernel's default hash size for this much RAM (``nf_conntrack_init_start``, 64-bit):
    1/16384 of memory in 8-byte bucket heads, then fixed above 1 GiB and 4 GiB. Since 5.15 those
    are 65536 and 262144 (at least 1024); before, 16384 and 65536 (at least 32), as on the
    incident's CentOS 7 (3.10) nodes."""
    pages = memtotal_kib // 4
    new = version >= (5, 15)
    if pages > 4 * (1 << 30) // 4096:
        return 262144 if new else 65536
    if pages > (1 << 30) // 4096:
        return 65536 if new else 16384
    return max(1024 if new else 32, (memtotal_kib * 1024 // 16384) // 8)


def default_max(memtotal_kib: int, version: "Tuple[int, int]") -> int:
    """Since 5.15 the default limit equals the default bucket count; before, 4 entries per bucket:
    262144 either way on a host with more than 4 GiB, 65536 above 1 GiB."""
    buckets = default_buckets(memtotal_kib, version)
    return buckets if version >= (5, 15) else buckets * 4


def recommended_buckets(maximum: int, version: "Tuple[int, int]") -> int:
    """One bucket per entry since 5.15; 'hashsize = max/4' on older kernels."""
    return maximum if version >= (5, 15) else max(1, maximum // 4)


def drift(running_max: int, running_buckets: int, boot: "Boot", memtotal_kib: "Optional[int]",
          version: "Tuple[int, int]") -> "List[str]":
    """Why a reboot would not give back what runs now (empty: it would)."""
    out = []
    if boot.max is not None:
        if boot.max != running_max:
            out.append("nf_conntrack_max is %d now but %s sets %d at boot"
                       % (running_max, boot.max_source, boot.max))
        if not boot.module_autoload:
            out.append("%s sets nf_conntrack_max but nf_conntrack is not in modules-load.d: the "
                       "setting is silently skipped when the module loads after systemd-sysctl"
                       % boot.max_source)
    elif memtotal_kib is not None and running_max != default_max(memtotal_kib, version):
        out.append("nf_conntrack_max is %d now but nothing persists it: a reboot returns it to the "
                   "kernel default %d" % (running_max, default_max(memtotal_kib, version)))
    if boot.hashsize is not None and boot.hashsize != running_buckets:
        out.append("the hash has %d buckets now but %s sets hashsize=%d at load"
                   % (running_buckets, boot.hashsize_source, boot.hashsize))
    elif (boot.hashsize is None and memtotal_kib is not None
          and running_buckets != default_buckets(memtotal_kib, version)):
        out.append("the hash has %d buckets now but nothing persists it: a reboot returns it to the "
                   "kernel default %d" % (running_buckets, default_buckets(memtotal_kib, version)))
    return out
