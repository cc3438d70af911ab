"""What the next boot sets (sysctl.d, modprobe.d, modules-load.d) and the drift from what runs."""

import os

import pytest

from conntrack_zbx import boot


def tree(tmp_path, files):
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return str(tmp_path)


@pytest.mark.parametrize("files, expected", [
    ({}, (None, None, False)),
    ({"etc/sysctl.d/90-ct.conf": "net.netfilter.nf_conntrack_max = 524288\n"}, (524288, "90-ct.conf", False)),
    ({"etc/sysctl.d/90-ct.conf": "net/netfilter/nf_conntrack_max=1000\n"}, (1000, "90-ct.conf", False)),
    ({"etc/sysctl.d/10-a.conf": "net.netfilter.nf_conntrack_max = 1\n",
      "etc/sysctl.d/20-b.conf": "# comment\n; other\n-net.netfilter.nf_conntrack_max = 2\n"}, (2, "20-b.conf", False)),
    ({"usr/lib/sysctl.d/50-x.conf": "net.netfilter.nf_conntrack_max = 7\n",
      "etc/sysctl.d/50-x.conf": "kernel.pid_max = 1\n"}, (None, None, False)),  # /etc hides /usr/lib
    ({"etc/sysctl.conf": "net.netfilter.nf_conntrack_max = 5\n",
      "etc/sysctl.d/99-z.conf": "net.netfilter.nf_conntrack_max = 6\n"}, (6, "99-z.conf", False)),
    ({"etc/modules-load.d/ct.conf": "# load early\nnf_conntrack\n"}, (None, None, True)),
    ({"etc/modules": "loop\nnf-conntrack # debian\n"}, (None, None, True)),
    ({"etc/modules-load.d/ct.conf": "nf_conntrack_ftp\n"}, (None, None, False)),
], ids=["nothing", "sysctl.d", "slash-key", "later-file-wins", "etc-hides-usr-lib", "sysctl.d-over-sysctl.conf",
        "modules-load.d", "etc-modules", "other-module"])
def test_read_boot(tmp_path, files, expected):
    b = boot.read_boot(tree(tmp_path, files))
    src = os.path.basename(b.max_source) if b.max_source else None
    assert (b.max, src, b.module_autoload) == expected


def test_modprobe_hashsize(tmp_path):
    root = tree(tmp_path, {"etc/modprobe.d/ct.conf": "options nf_conntrack hashsize=131072 expect_hashsize=8\n",
                           "lib/modprobe.d/aa.conf": "options nf-conntrack hashsize=1\n"})
    b = boot.read_boot(root)
    assert b.hashsize == 131072 and b.hashsize_source.endswith("etc/modprobe.d/ct.conf")


MEM_24G = 24684084  # kB, from the fixture's real /proc/meminfo


@pytest.mark.parametrize("running, buckets, b, messages", [
    (262144, 262144, boot.Boot(None, None, None, None, False, None), []),
    (524288, 262144, boot.Boot(None, None, None, None, False, None),
     ["nothing persists it: a reboot returns it to the kernel default 262144"]),
    (524288, 524288, boot.Boot(524288, "/etc/sysctl.d/90.conf", 524288, "/etc/modprobe.d/ct.conf", True, "x"), []),
    (524288, 524288, boot.Boot(524288, "/etc/sysctl.d/90.conf", 524288, "/etc/modprobe.d/ct.conf", False, None),
     ["silently skipped when the module loads after systemd-sysctl"]),
    (524288, 524288, boot.Boot(262144, "/etc/sysctl.d/90.conf", 524288, "/etc/modprobe.d/ct.conf", True, "x"),
     ["nf_conntrack_max is 524288 now but /etc/sysctl.d/90.conf sets 262144 at boot"]),
    (524288, 262144, boot.Boot(524288, "/etc/sysctl.d/90.conf", None, None, True, "x"), []),
], ids=["defaults", "runtime-only-raise", "persisted", "boot-order-trap", "persisted-differs", "default-hash"])
def test_drift(running, buckets, b, messages):
    got = boot.drift(running, buckets, b, MEM_24G, (6, 18))
    assert len(got) == len(messages)
    for g, m in zip(got, messages):
        assert m in g


@pytest.mark.parametrize("mem_kib, version, expected", [
    (MEM_24G, (6, 18), 262144), (MEM_24G, (5, 10), 262144), (MEM_24G, (3, 10), 262144),
    (2 * 1024 * 1024, (6, 1), 65536), (2 * 1024 * 1024, (3, 10), 65536), (512 * 1024, (6, 1), 4096),
    (512 * 1024, (3, 10), 16384),
])
def test_kernel_defaults(mem_kib, version, expected):
    """What a reboot gives back (the kernel's nf_conntrack_init_start): 262144 entries on any
    64-bit host above 4 GiB, before 5.15 as 4 per bucket of 65536, since then one per bucket."""
    assert boot.default_max(mem_kib, version) == expected


def test_the_incidents_centos7_nodes_boot_to_262144():
    """3.10 on a host with more than 4 GiB: 65536 buckets, 262144 entries, as the nodes booted."""
    assert boot.default_buckets(MEM_24G, (3, 10)) == 65536
    got = boot.drift(524288, 65536, boot.Boot(None, None, None, None, False, "x"), MEM_24G, (3, 10))
    assert got == ["nf_conntrack_max is 524288 now but nothing persists it: a reboot returns it to the "
                   "kernel default 262144"]


def test_recommended_ratio_follows_the_kernel():
    assert boot.recommended_buckets(524288, (6, 18)) == 524288
    assert boot.recommended_buckets(524288, (5, 14)) == 131072
