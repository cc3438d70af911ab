"""The CLI over fixture trees: JSON documents, the failure contract, the on-call table.

Golden files live in tests/golden/; regenerate with UPDATE_GOLDEN=1 and review the diff.
"""

import json
import os
import shutil
import stat
import subprocess
import tempfile

import pytest

from conntrack_zbx.cli import main
from tests.conftest import MIXED, fixture_tree, require_root

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def run_json(capsys, *argv):
    rc, out, err = run(capsys, *argv)
    assert out.count("\n") == 1, "exactly one JSON document on one line"
    return rc, json.loads(out)


def golden(name, text):
    path = os.path.join(GOLDEN, name)
    if os.environ.get("UPDATE_GOLDEN"):
        with open(path, "w") as f:
            f.write(text)
    with open(path) as f:
        assert text == f.read(), "golden %s differs; UPDATE_GOLDEN=1 to accept" % name


def test_stats_current_kernel(capsys):
    rc, doc = run_json(capsys, "stats", "--proc-root", MIXED)
    assert rc == 0
    assert doc["count"] == 18 and doc["max"] == 262144 and doc["buckets"] == 262144
    assert doc["hashsize"] == 262144
    assert doc["usage_pct"] == round(100 * 18 / 262144, 2)
    assert doc["free"] == 262144 - 18
    assert doc["stat"]["invalid"] == 5 and doc["stat"]["drop"] == 0
    assert set(doc["stat"]) >= {"drop", "early_drop", "insert_failed", "chaintoolong"}


def test_stats_old_kernel_header(capsys):
    rc, doc = run_json(capsys, "stats", "--proc-root", fixture_tree("stat-old-header"))
    assert rc == 0
    assert "chaintoolong" not in doc["stat"] and "clash_resolve" not in doc["stat"]
    assert doc["stat"]["invalid"] == 5


def test_stats_procfs_disabled_keeps_counters_and_says_why(capsys):
    rc, doc = run_json(capsys, "stats", "--proc-root", fixture_tree("procfs-disabled"))
    assert rc == 0
    assert doc["count"] == 18
    assert doc["stat"] is None
    assert "CONFIG_NF_CONNTRACK_PROCFS" in doc["stat_error"]


def test_stats_hashsize_unreadable_is_null_not_zero(capsys, tree):
    root = tree("kernel-6.18.44-mixed")
    hs = os.path.join(root, "sys/module/nf_conntrack/parameters/hashsize")
    os.remove(hs)  # as the agent user sees it: 0600 root is indistinguishable from absent here
    rc, doc = run_json(capsys, "stats", "--proc-root", root)
    assert rc == 0 and doc["hashsize"] is None and doc["buckets"] == 262144


def test_talkers_carries_the_discovery_rows(capsys):
    _, doc = run_json(capsys, "talkers", "--proc-root", MIXED, "--top", "2")
    _, rows = run_json(capsys, "discovery", "--proc-root", MIXED, "--top", "2")
    assert doc["discovery"] == rows and len(rows) == 4


def test_sudo_only_for_agent_keys(capsys):
    """discovery has no agent key (the template's discovery is a dependent rule on talkers), so
    it has no sudo line to offer either."""
    with pytest.raises(SystemExit) as e:
        main(["discovery", "--sudo"])
    assert e.value.code == 2 and "unrecognized arguments: --sudo" in capsys.readouterr().err


@pytest.mark.parametrize("argv, code, message", [
    (["stats"], 2, "nf_conntrack module is not loaded"),
    (["talkers"], 2, "nf_conntrack module is not loaded"),
    (["discovery"], 2, "modprobe nf_conntrack"),
], ids=["stats", "talkers", "discovery"])
def test_module_not_loaded_is_an_error_not_zero(capsys, argv, code, message):
    rc, doc = run_json(capsys, *argv, "--proc-root", fixture_tree("module-not-loaded"))
    assert rc == code
    assert list(doc) == ["error"] and message in doc["error"]


@pytest.mark.parametrize("argv", [["talkers"], ["discovery"]])
def test_table_absent_without_procfs(capsys, argv):
    rc, doc = run_json(capsys, *argv, "--proc-root", fixture_tree("procfs-disabled"))
    assert rc == 2
    assert "CONFIG_NF_CONNTRACK_PROCFS" in doc["error"]


def test_stats_malformed_counter(capsys, tree):
    root = tree("kernel-6.18.44-mixed")
    with open(os.path.join(root, "proc/sys/net/netfilter/nf_conntrack_max"), "w") as f:
        f.write("lots\n")
    rc, doc = run_json(capsys, "stats", "--proc-root", root)
    assert rc == 4 and "does not hold an integer" in doc["error"]


def test_stats_malformed_stat_table(capsys):
    rc, doc = run_json(capsys, "stats", "--proc-root", fixture_tree("stat-short-row"))
    assert rc == 4 and "has 15 columns, header has 17" in doc["error"]


def test_talkers_permission_denied_names_the_grant(tmp_path):
    """The table is 0440 root: an unprivileged user gets an error naming the grant."""
    require_root()
    root = tempfile.mkdtemp(dir="/tmp")
    try:
        os.chmod(root, 0o755)
        shutil.copytree(MIXED, os.path.join(root, "t"))
        os.chmod(os.path.join(root, "t/proc/net/nf_conntrack"), 0o440)
        p = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3",
             "-m", "conntrack_zbx", "talkers", "--proc-root", os.path.join(root, "t")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={"PYTHONPATH": REPO, "PATH": "/usr/bin:/bin"})
        doc = json.loads(p.stdout)
        assert p.returncode == 3, p.stderr
        assert "permission denied" in doc["error"] and "uid 65534" in doc["error"]
        assert "sudoers.d/conntrack-zbx" in doc["error"]
    finally:
        shutil.rmtree(root)


def test_talkers_mixed(capsys):
    rc, doc = run_json(capsys, "talkers", "--proc-root", MIXED)
    assert rc == 0
    assert doc["entries"] == 18 and doc["skipped"] == 0 and doc["truncated"] is False
    assert doc["max"] == 262144 and doc["source"] == "proc"
    top = doc["sources"][0]
    assert top["address"] == "127.0.1.10" and top["count"] == 3 and top["established"] == 3
    assert top["protocols"] == {"tcp": 3}
    nets = {n["network"]: n for n in doc["networks"]}
    assert nets["127.0.0.0/24"]["count"] == 10 and nets["127.0.0.0/24"]["sources"] == 7
    assert nets["127.0.1.0/24"]["count"] == 5 and nets["127.0.1.0/24"]["established"] == 5
    assert nets["::/64"]["count"] == 3 and nets["::/64"]["family"] == "ipv6"
    assert doc["networks"][0]["network"] == "127.0.0.0/24"
    golden("talkers-mixed.json", json.dumps(doc, indent=1, sort_keys=True) + "\n")


def test_talkers_prefix_and_top(capsys):
    rc, doc = run_json(capsys, "talkers", "--proc-root", MIXED, "--prefix4", "16", "--top", "1")
    assert rc == 0
    assert doc["networks"] == [{
        "network": "127.0.0.0/16", "family": "ipv4", "count": 15, "pct_of_max": 0.0057,
        "established": 5, "idle": 0, "idle_max": None, "idle_known": 5, "sources": 9,
        "protocols": {"icmp": 1, "tcp": 11, "udp": 3}, "states": doc["networks"][0]["states"]}]
    assert len(doc["sources"]) == 1


def test_talkers_snapshot_file(capsys):
    snap = os.path.join(fixture_tree("table-truncated"), "proc/net/nf_conntrack")
    rc, doc = run_json(capsys, "talkers", "--file", snap, "--proc-root", MIXED)
    assert rc == 0 and doc["source"] == "file"
    assert doc["entries"] == 17 and doc["skipped"] == 2


def test_talkers_time_budget_truncates_and_says_so(capsys, tmp_path):
    with open(os.path.join(MIXED, "proc/net/nf_conntrack"), "rb") as f:
        lines = f.read().splitlines(True)
    snap = tmp_path / "big.list"
    snap.write_bytes(b"".join(lines * 1200))  # 21,600 real lines
    rc, doc = run_json(capsys, "talkers", "--file", str(snap), "--budget", "0", "--proc-root", MIXED)
    assert rc == 0 and doc["truncated"] is True
    # stopped at the first look at the clock: after the whole lines of the first block
    from conntrack_zbx.count.text import BLOCK
    assert doc["entries"] == snap.read_bytes()[:BLOCK].count(b"\n") < 21600
    rc, doc = run_json(capsys, "talkers", "--file", str(snap), "--proc-root", MIXED)
    assert doc["truncated"] is False and doc["entries"] == 21600


def test_talkers_missing_snapshot_is_an_error(capsys, tmp_path):
    rc, doc = run_json(capsys, "talkers", "--file", str(tmp_path / "nope.list"))
    assert rc == 2 and "nope.list does not exist" in doc["error"]


def test_discovery_rows(capsys):
    rc, rows = run_json(capsys, "discovery", "--proc-root", MIXED, "--top", "2")
    assert rc == 0
    assert rows == [
        {"{#CT.KIND}": "network", "{#CT.TALKER}": "127.0.0.0/24", "{#CT.FAMILY}": "ipv4",
         "{#CT.PATH}": "$.networks[?(@.network=='127.0.0.0/24')]"},
        {"{#CT.KIND}": "network", "{#CT.TALKER}": "127.0.1.0/24", "{#CT.FAMILY}": "ipv4",
         "{#CT.PATH}": "$.networks[?(@.network=='127.0.1.0/24')]"},
        {"{#CT.KIND}": "source", "{#CT.TALKER}": "127.0.1.10", "{#CT.FAMILY}": "ipv4",
         "{#CT.PATH}": "$.sources[?(@.address=='127.0.1.10')]"},
        {"{#CT.KIND}": "source", "{#CT.TALKER}": "::1", "{#CT.FAMILY}": "ipv6",
         "{#CT.PATH}": "$.sources[?(@.address=='::1')]"},
    ]


def test_discovery_empty_table_is_empty_array(capsys, tree):
    root = tree("kernel-6.18.44-mixed")
    open(os.path.join(root, "proc/net/nf_conntrack"), "w").close()
    rc, out, _ = run(capsys, "discovery", "--proc-root", root)
    assert rc == 0 and out == "[]\n"


@pytest.mark.parametrize("extra", [["--file", "/etc/shadow"], ["--proc-root", "/tmp"],
                                   ["--cache-dir", "/tmp/x"], ["--source", "proc"], ["--params-stdin"]])
def test_sudo_form_refuses_options_other_than_key_parameters(capsys, extra):
    rc, doc = run_json(capsys, "talkers", "--sudo", *extra)
    assert rc == 3 and "fixed line" in doc["error"] and "--" + extra[0].lstrip("-") in doc["error"]


@pytest.mark.parametrize("opt, value, says", [
    ("--top", "5x", "not allowed"), ("--top", "0", "outside 1..100"), ("--prefix4", "--file", "not allowed"),
    ("--prefix4", "24 --file /etc/shadow", "not allowed"), ("--prefix6", "\u0661\u0662", "not allowed"),
    ("--max-age", "-1", "not allowed"), ("--max-age", "+5", "not allowed"), ("--prefix4", "33", "outside"),
    ("--top", "$(id)", "not allowed"), ("--top", "1" * 6, "not allowed"),
    ("--timeout", "1", "outside 2..30"), ("--timeout", "31", "outside 2..30"), ("--timeout", "2.5", "not allowed"),
])
def test_key_parameters_outside_the_allow_list_are_refused(capsys, opt, value, says):
    for cmd in (["talkers", "--sudo"], ["talkers", "--proc-root", MIXED], ["discovery", "--proc-root", MIXED]):
        rc, doc = run_json(capsys, *cmd, "%s=%s" % (opt, value))
        assert rc == 3 and says in doc["error"], doc


def test_key_parameters_empty_means_default(capsys):
    rc, doc = run_json(capsys, "talkers", "--proc-root", MIXED, "--prefix4=", "--prefix6=", "--top=", "--max-age=")
    assert rc == 0 and doc["prefix4"] == 24 and doc["prefix6"] == 64 and len(doc["sources"]) == 10


def test_internal_error_is_still_json(capsys, monkeypatch):
    import conntrack_zbx.sources.proc as proc

    def boom(self):
        raise ZeroDivisionError("synthetic")
    monkeypatch.setattr(proc.ProcRoot, "count", boom)
    rc, doc = run_json(capsys, "stats", "--proc-root", MIXED)
    assert rc == 70 and "ZeroDivisionError" in doc["error"]


def test_top_by_src_names_the_range(capsys):
    rc, out, err = run(capsys, "top", "--proc-root", MIXED)
    assert rc == 0 and err == ""
    golden("top-src-mixed.txt", out.replace(MIXED, "<fixture>"))
    first_net = out.split("Top networks")[1].splitlines()[2]
    assert "127.0.0.0/24" in first_net and "[7 sources]" in first_net


@pytest.mark.parametrize("by, first", [
    ("dst", "127.0.0.1"), ("dport", "tcp/8080"), ("state", "ESTABLISHED"), ("proto", "ipv4/tcp"),
])
def test_top_by_other_keys(capsys, by, first):
    rc, out, _ = run(capsys, "top", "--by", by, "--proc-root", MIXED, "-n", "3")
    assert rc == 0
    last_section = out.split("Top ")[-1].splitlines()
    assert last_section[2].split()[2] == first


def test_top_snapshot_with_explicit_max(capsys):
    snap = os.path.join(MIXED, "proc/net/nf_conntrack")
    rc, out, _ = run(capsys, "top", "--file", snap, "--max", "36", "--proc-root", "/nonexistent")
    assert rc == 0
    assert out.startswith("18 entries (50.0% of nf_conntrack_max 36) in " + snap)


def test_top_error_goes_to_stderr(capsys):
    rc, out, err = run(capsys, "top", "--proc-root", fixture_tree("module-not-loaded"))
    assert rc == 2 and out == "" and "not loaded" in err


def test_fixture_table_is_root_only_like_the_kernel():
    # documents the real mode the privilege model is built around
    mode = stat.S_IMODE(os.stat("/proc/net/nf_conntrack").st_mode)
    assert mode == 0o440


@pytest.mark.parametrize("argv", [
    ["stats"], ["stats", "--proc-root", "/x", "--etc-root=/y", "--source=netlink"],
    ["talkers"], ["talkers", "--sudo", "--prefix4=16", "--prefix6=", "--top=3", "--max-age=0"],
    ["talkers", "--params-stdin"], ["discovery", "--file", "/tmp/f", "--budget", "1.5", "--cache-dir=/c"],
    ["talkers", "--source", "proc", "--top", "5", "--top=7"],
])
def test_fast_argv_path_equals_argparse(argv):
    """The agent command lines skip argparse; they must mean exactly what argparse makes of them."""
    from conntrack_zbx.cli import fast_args
    from conntrack_zbx.parser import build_parser

    fast = fast_args(argv)
    assert fast is not None
    assert vars(fast) == vars(build_parser(argv[0]).parse_args(argv))


@pytest.mark.parametrize("argv", [["talkers", "--help"], ["talkers", "--top"], ["talkers", "--pre=1"],
                                  ["talkers", "--source=x"], ["stats", "--sudo"], ["talkers", "x"],
                                  ["talkers", "--budget=soon"], ["tune", "--max", "5"]])
def test_anything_unusual_goes_through_argparse(argv):
    from conntrack_zbx.cli import fast_args

    assert fast_args(argv) is None


def test_admin_commands_say_which_python_they_need(capsys, monkeypatch):
    """The agent side runs on 3.6; template import needs 3.8+ and says so instead of failing
    somewhere inside pyzabbix (scripts/test-pythons.sh runs this on a real 3.6)."""
    import sys

    monkeypatch.delenv("ZABBIX_URL", raising=False)
    rc, out, err = run(capsys, "template", "import")
    if sys.version_info < (3, 8):
        assert rc == 2 and "need Python 3.8 or newer" in err
    else:
        assert "Python 3.8" not in err and rc != 0  # refused for the missing URL instead


@pytest.mark.parametrize("cgroup, kind", [
    ("0::/system.slice/docker-%s.scope\n" % ("a" * 64), "container"),
    ("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234abcd_5678_9abc_def0_123456789abc.slice/"
     "cri-containerd-%s.scope\n" % ("b" * 64), "pod"),
    ("0::/user.slice/user-0.slice/session-1.scope\n", "process"),
], ids=["docker", "kubernetes", "plain"])
def test_namespace_owner_names_pod_container_or_process(tmp_path, cgroup, kind):
    """Who is inside a namespace, from /proc/PID/comm and /proc/PID/cgroup (cgroup v2 paths of
    Docker and of a Kubernetes pod under containerd)."""
    from conntrack_zbx.sources.netns import owner_of

    proc = tmp_path / "proc" / "4242"
    proc.mkdir(parents=True)
    (proc / "comm").write_text("pause\n")
    (proc / "cgroup").write_text(cgroup)
    owner = owner_of(4242, str(tmp_path))
    assert owner["comm"] == "pause"
    if kind == "pod":
        assert owner["pod"] == "1234abcd-5678-9abc-def0-123456789abc" and owner["container"] == "b" * 12
    elif kind == "container":
        assert owner["container"] == "a" * 12 and owner["pod"] is None
    else:
        assert owner["container"] is None and owner["pod"] is None
    assert owner["pod_name"] is None and owner["container_name"] is None  # no runtime on this tree


POD_UID = "1234abcd-5678-9abc-def0-123456789abc"


def _node(tmp_path, cgroup):
    proc = tmp_path / "proc" / "4242"
    proc.mkdir(parents=True)
    (proc / "comm").write_text("pause\n")
    (proc / "cgroup").write_text(cgroup)
    return str(tmp_path)


def test_a_pod_is_named_by_namespace_and_name_from_kubelet_log_directory(tmp_path):
    """kubelet gives every pod /var/log/pods/<namespace>_<name>_<uid>, whatever the runtime; the
    pod's name is what kubectl takes (its uid changes every time the pod is recreated)."""
    from conntrack_zbx.sources.netns import Runtimes, owner_of

    root = _node(tmp_path, "0::/kubepods.slice/kubepods-pod%s.slice/cri-containerd-%s.scope\n"
                 % (POD_UID.replace("-", "_"), "b" * 64))
    for d in ("kube-system_coredns-5d78c9869d-x2x1q_0badc0de-0000-4000-8000-000000000000",
              "shop_web-7d4b9cf5b-abcde_%s" % POD_UID, "not-a-pod-dir"):
        (tmp_path / "var" / "log" / "pods" / d).mkdir(parents=True)
    runtimes = Runtimes(root)
    owner = owner_of(4242, root, runtimes)
    assert owner["pod"] == POD_UID and owner["pod_name"] == "shop/web-7d4b9cf5b-abcde"
    assert runtimes.pod("0badc0de-0000-4000-8000-000000000000") == "kube-system/coredns-5d78c9869d-x2x1q"
    assert runtimes.pod("ffffffff-0000-4000-8000-000000000000") is None


def test_a_container_is_named_by_docker_or_podman(tmp_path):
    """Docker's config.v2.json "Name" ("/web-1"), else containers/storage's containers.json
    (Podman, CRI-O) "names"; a broken file leaves the id."""
    import json

    from conntrack_zbx.sources.netns import Runtimes, owner_of

    root = _node(tmp_path, "0::/system.slice/docker-%s.scope\n" % ("a" * 64))
    docker = tmp_path / "var" / "lib" / "docker" / "containers" / ("a" * 64)
    docker.mkdir(parents=True)
    (docker / "config.v2.json").write_text(json.dumps({"ID": "a" * 64, "Name": "/web-1", "State": {}}))
    storage = tmp_path / "var" / "lib" / "containers" / "storage" / "overlay-containers"
    storage.mkdir(parents=True)
    (storage / "containers.json").write_text(json.dumps([{"id": "c" * 64, "names": ["db"], "image": "x"}]))
    owner = owner_of(4242, root)
    assert owner["container"] == "a" * 12 and owner["container_name"] == "web-1"
    assert Runtimes(root).container("c" * 64) == "db"
    (docker / "config.v2.json").write_text("{not json")
    assert owner_of(4242, root)["container_name"] is None


def test_namespaces_lists_the_pod_by_its_name(tmp_path):
    """The row's name (the discovered {#CT.NS.NAME}, the problem's title) carries the pod's
    namespace/name; the uid stays in the row."""
    from conntrack_zbx.answers.namespaces import _name
    from conntrack_zbx.sources.netns import Found, Runtimes

    root = _node(tmp_path, "0::/kubepods.slice/kubepods-pod%s.slice/cri-containerd-%s.scope\n"
                 % (POD_UID.replace("-", "_"), "b" * 64))
    (tmp_path / "var" / "log" / "pods" / ("shop_web-0_%s" % POD_UID)).mkdir(parents=True)
    f = Found(4026533012, "/proc/4242/ns/net", 4242)
    row = {"host": False}
    _name(row, f, root, Runtimes(root))
    assert row["kind"] == "pod" and row["name"] == "pod shop/web-0 (pause[4242])"
    assert row["pod"] == POD_UID and row["pod_name"] == "shop/web-0"
    row = {"host": False}
    (tmp_path / "var" / "log" / "pods" / ("shop_web-0_%s" % POD_UID)).rmdir()
    _name(row, f, root, Runtimes(root))
    assert row["name"] == "pod %s (pause[4242])" % POD_UID  # no log directory: the uid, not nothing


def test_the_timeout_parameter_sets_the_budget():
    """The key's timeout parameter is the Zabbix Timeout the call runs under: the budget is it
    less the agent's share; --budget (a person at a terminal) wins; a key without the parameter
    (namespaces) keeps the default's 2.5 s."""
    from conntrack_zbx.budget import budget_of

    assert budget_of(None, {"timeout": 3}) == 2.5
    assert budget_of(None, {"timeout": 10}) == 9.5
    assert budget_of(0.3, {"timeout": 10}) == 0.3
    assert budget_of(None, {"top": 20}) == 2.5


@pytest.mark.parametrize("timeout", [2, 4])
def test_a_whole_call_ends_inside_the_timeout_parameter(tmp_path, timeout):
    """Whole process, start to exit, on a table that never ends (a pipe fed for 8 s): the call
    answers inside the Timeout its key names, truncated, and a longer Timeout reads more."""
    import subprocess
    import sys
    import threading
    import time

    with open(os.path.join(MIXED, "proc/net/nf_conntrack"), "rb") as f:
        block = f.read() * 200
    p = subprocess.Popen([sys.executable, "-m", "conntrack_zbx", "talkers", "--file", "/dev/stdin",
                          "--timeout=%d" % timeout], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def feed():
        end = time.monotonic() + 8
        try:
            while time.monotonic() < end and p.poll() is None:
                p.stdin.write(block)
                time.sleep(0.05)
            p.stdin.close()
        except (BrokenPipeError, ValueError):
            pass

    t = time.monotonic()
    feeder = threading.Thread(target=feed)
    feeder.start()
    out = p.stdout.read()
    p.wait()
    wall = time.monotonic() - t
    feeder.join()
    doc = json.loads(out)
    assert doc["truncated"] is True and wall < timeout, (wall, doc.get("entries"))
    assert timeout - 1.5 < wall, wall  # it used the time it was given (less the agent's share)
    assert doc["entries"] > 0
