"""conntrack-zbx tune: the plan, the files it writes (golden), refusals, and a real apply."""

import os
import shutil
import subprocess

import pytest

from conntrack_zbx.cli import main
from conntrack_zbx.sources.proc import HASHSIZE, MAX
from tests.conftest import MIXED, require_root
from tests.test_cli import golden

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def host(tmp_path):
    """A writable copy of the captured tree (runtime files) and an empty /etc."""
    proc = str(tmp_path / "proc-root")
    shutil.copytree(MIXED, proc)
    etc = str(tmp_path / "etc-root")
    os.makedirs(etc)
    return proc, etc


def tune(capsys, *argv):
    rc = main(["tune"] + list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def read(root, rel):
    with open(os.path.join(root, rel)) as f:
        return f.read()


def local_sysctl(etc, line):
    """An admin's own sysctl.d file that sorts after ours: boot applies it last."""
    os.makedirs(os.path.join(etc, "etc/sysctl.d"), exist_ok=True)
    with open(os.path.join(etc, "etc/sysctl.d/zz-local.conf"), "w") as f:
        f.write(line + "\n")


def test_dry_run_changes_nothing(capsys, host):
    proc, etc = host
    rc, out, err = tune(capsys, "--max", "524288", "--proc-root", proc, "--root", etc)
    assert rc == 0, err
    golden("tune-dry-run.txt", out.replace(etc, "<root>"))
    assert os.listdir(etc) == [] and read(proc, MAX) == "262144\n"


def test_apply_writes_the_three_files_and_the_runtime(capsys, host):
    proc, etc = host
    rc, out, err = tune(capsys, "--max", "524288", "--apply", "--proc-root", proc, "--root", etc)
    assert rc == 0, err
    assert "verified: nf_conntrack_max 524288, hashsize 524288" in out
    for rel in ("etc/sysctl.d/99-conntrack-zbx.conf", "etc/modules-load.d/99-conntrack-zbx.conf",
                "etc/modprobe.d/99-conntrack-zbx.conf"):
        golden("tune-" + os.path.basename(os.path.dirname(rel)) + ".conf", read(etc, rel))
    assert read(proc, MAX) == "524288\n" and read(proc, HASHSIZE) == "524288\n"
    # and what it wrote is what the agent reads as the boot configuration: no drift
    rc = main(["stats", "--proc-root", proc, "--etc-root", etc])
    import json
    doc = json.loads(capsys.readouterr().out)
    assert doc["boot"]["max"] == 524288 and doc["boot"]["module_autoload"] is True
    assert doc["boot"]["hashsize"] == 524288


def test_apply_backs_up_what_it_replaces(capsys, host):
    proc, etc = host
    path = os.path.join(etc, "etc/sysctl.d/99-conntrack-zbx.conf")
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        f.write("net.netfilter.nf_conntrack_max = 300000\n")
    rc, out, _ = tune(capsys, "--max", "524288", "--apply", "--proc-root", proc, "--root", etc)
    assert rc == 0 and "[replace (backup: %s.bak)]" % path in out
    assert read(etc, "etc/sysctl.d/99-conntrack-zbx.conf.bak") == "net.netfilter.nf_conntrack_max = 300000\n"
    assert "524288" in read(etc, "etc/sysctl.d/99-conntrack-zbx.conf")
    assert not [n for n in os.listdir(os.path.dirname(path)) if n.startswith(".conntrack-zbx-")]


def test_apply_notices_a_file_that_overrides_ours(capsys, host):
    proc, etc = host
    local_sysctl(etc, "net.netfilter.nf_conntrack_max = 65536")
    rc, out, err = tune(capsys, "--max", "524288", "--apply", "--proc-root", proc, "--root", etc)
    assert rc == 2 and "zz-local.conf sets nf_conntrack_max 65536 later at boot" in err


def test_runtime_only_leaves_etc_alone(capsys, host):
    proc, etc = host
    rc, out, _ = tune(capsys, "--max", "300000", "--apply", "--runtime-only", "--proc-root", proc, "--root", etc)
    assert rc == 0 and "files: none (--runtime-only)" in out
    assert os.listdir(etc) == [] and read(proc, MAX) == "300000\n"


def test_auto_explains_itself(capsys, host):
    proc, etc = host
    rc, out, _ = tune(capsys, "--auto", "--peak", "400000", "--proc-root", proc, "--root", etc)
    assert rc == 0
    assert "twice the peak of 400000 entries is 800000" in out and "1048576" in out
    assert "bytes per entry" in out


@pytest.mark.parametrize("edit, argv, code, message", [
    ({MAX: "262144\n", "proc/sys/net/netfilter/nf_conntrack_count": "5000\n"}, ["--max", "2000"], 2,
     "5000 entries are in the table now"),
    ({}, ["--max", "1000000000"], 2, "more than 1/8 of this host's"),
    ({}, ["--max", "10"], 2, "this is a typo"),
    ({"proc/meminfo": "nothing here\n"}, ["--max", "524288"], 2, "cannot read MemTotal"),
], ids=["below-count", "above-memory", "nonsense", "no-meminfo"])
def test_refusals(capsys, host, edit, argv, code, message):
    proc, etc = host
    for rel, text in edit.items():
        with open(os.path.join(proc, rel), "w") as f:
            f.write(text)
    rc, out, err = tune(capsys, *argv, "--apply", "--proc-root", proc, "--root", etc)
    assert rc == code and message in err and out == ""
    assert os.listdir(etc) == []


def test_apply_refused_without_root(host):
    require_root()
    proc, etc = host
    p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-m",
                        "conntrack_zbx", "tune", "--max", "524288", "--apply", "--proc-root", proc, "--root", etc],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env={"PYTHONPATH": REPO, "PATH": "/usr/bin:/bin"})
    assert p.returncode == 3 and b"run it as root" in p.stderr


@pytest.mark.real
def test_apply_on_the_running_kernel(capsys, tmp_path):
    """Raises the real nf_conntrack_max and hashsize, then puts them back."""
    require_root()
    before = (read("/", MAX), read("/", HASHSIZE))
    target = int(before[0]) * 2
    try:
        rc, out, err = tune(capsys, "--max", str(target), "--apply", "--root", str(tmp_path))
        assert rc == 0, err
        assert read("/", MAX) == "%d\n" % target
        assert int(read("/", HASHSIZE)) >= target  # one bucket per entry on this kernel (>= 5.15)
        assert int(read("/", "proc/sys/net/netfilter/nf_conntrack_buckets")) == int(read("/", HASHSIZE))
    finally:
        with open("/proc/sys/net/netfilter/nf_conntrack_max", "w") as f:
            f.write(before[0])
        with open("/sys/module/nf_conntrack/parameters/hashsize", "w") as f:
            f.write(before[1])
    assert (read("/", MAX), read("/", HASHSIZE)) == before



def test_established_timeout_dry_run_then_apply(capsys, host):
    proc, etc = host
    est = "proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established"
    rc, out, err = tune(capsys, "--tcp-established-timeout", "86400", "--proc-root", proc, "--root", etc)
    assert rc == 0, err
    golden("tune-timeout-dry-run.txt", out.replace(etc, "<root>"))
    assert os.listdir(etc) == [] and read(proc, est) == "432000\n"
    rc, out, err = tune(capsys, "--tcp-established-timeout", "86400", "--apply", "--proc-root", proc, "--root", etc)
    assert rc == 0, err
    assert "verified: nf_conntrack_tcp_timeout_established 86400" in out and read(proc, est) == "86400\n"
    assert "nf_conntrack_tcp_timeout_established = 86400" in read(etc, "etc/sysctl.d/99-conntrack-zbx-timeout.conf")
    assert read(etc, "etc/modules-load.d/99-conntrack-zbx.conf").strip().endswith("nf_conntrack")
    rc = main(["stats", "--proc-root", proc, "--etc-root", etc])
    import json
    assert json.loads(capsys.readouterr().out)["timeouts"]["tcp_established"] == 86400


def test_established_timeout_refusals(capsys, host):
    proc, etc = host
    rc, out, err = tune(capsys, "--tcp-established-timeout", "60", "--apply", "--proc-root", proc, "--root", etc)
    assert rc == 2 and "this is a typo" in err and os.listdir(etc) == []
    rc, out, err = tune(capsys, "--proc-root", proc, "--root", etc)
    assert rc == 2 and "--tcp-established-timeout" in err
    local_sysctl(etc, "net.netfilter.nf_conntrack_tcp_timeout_established = 432000")
    rc, out, err = tune(capsys, "--tcp-established-timeout", "86400", "--apply", "--proc-root", proc, "--root", etc)
    assert rc == 2 and "zz-local.conf sets nf_conntrack_tcp_timeout_established 432000 later at boot" in err


def test_auto_recommends_a_timeout_when_idle_entries_hold_the_table(capsys, host):
    """The captured table with its ESTABLISHED entries' remaining time set as if their connections
    had been silent for two days."""
    proc, etc = host
    path = os.path.join(proc, "proc/net/nf_conntrack")
    with open(path, "rb") as f:
        table = f.read()
    with open(path, "wb") as f:
        f.write(table.replace(b" 431999 ESTABLISHED ", b" 259200 ESTABLISHED "))
    rc, out, _ = tune(capsys, "--auto", "--proc-root", proc, "--root", etc)
    assert rc == 0
    assert "idle entries: 5 of 18 (28%)" in out and "recommended: --tcp-established-timeout 86400 (now 432000)" in out
    with open(path, "wb") as f:
        f.write(table)
    rc, out, _ = tune(capsys, "--auto", "--proc-root", proc, "--root", etc)
    assert "idle entries: 0 of 18" in out and "recommended: --tcp" not in out


def test_auto_never_plans_below_the_boot_default(capsys, host):
    """A limit lowered at runtime (a lab, a mistake) must not be what --auto persists: every boot
    would then start with a smaller table than no tuning at all."""
    from conntrack_zbx import boot
    from conntrack_zbx.sources.proc import ProcRoot

    proc, etc = host
    with open(os.path.join(proc, MAX), "w") as f:
        f.write("4096\n")
    root = ProcRoot(proc)
    default = boot.default_max(root.memtotal_kib(), boot.kernel_version(root.osrelease()))
    assert default > 2 * 4096  # the check can fail: twice the runtime limit is below it
    rc, out, _ = tune(capsys, "--auto", "--proc-root", proc, "--root", etc)
    assert rc == 0 and "nor the kernel's boot default %d" % default in out
    assert "net.netfilter.nf_conntrack_max = %d" % default in out
    assert "other network namespaces not counted" in out  # a fixture tree has no live namespaces
    rc, out, _ = tune(capsys, "--max", "8192", "--proc-root", proc, "--root", etc)
    assert rc == 0 and "WARNING: 8192 is below the kernel's boot default %d" % default in out

