"""The failure contract over the whole command line: whatever a person (or a generated argument
list) gives ``main()``, the answer is output or one message, with an exit status from the
documented table (conntrack_zbx/errors.py), never a traceback and never an internal error.

Nothing here changes the machine: ``--apply`` is never generated (tune and clean only plan), the
API URL points at a closed loopback port, caches go to a temporary directory.
"""

import json
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conntrack_zbx.cli import main
from conntrack_zbx.errors import INTERRUPTED, OUTPUT_ERROR
from tests.conftest import MIXED, fixture_tree, require_root

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DOCUMENTED = {0, 1, 2, 3, 4, OUTPUT_ERROR, INTERRUPTED}  # 70 is documented too: as a bug, found here
TABLE = os.path.join(MIXED, "proc/net/nf_conntrack")
GARBAGE = os.path.join(REPO, "README.md")
BINARY = sys.executable
TREES = [MIXED, fixture_tree("module-not-loaded"), fixture_tree("procfs-disabled"),
         fixture_tree("stat-old-header"), "/nonexistent", "/", GARBAGE]
NUMBERS = ["0", "1", "-1", "3", "24", "60", "600", "3600", "1e308", "nan", "inf", "x", "", "99999999999",
           "4294967296", "0.5", "30"]
FILES = [TABLE, GARBAGE, BINARY, "/nonexistent", "/", os.devnull]

COMMANDS = {
    "stats": ["--proc-root", "--etc-root", "--source"],
    "talkers": ["--proc-root", "--file", "--source", "--prefix4", "--prefix6", "--top", "--max-age", "--netns",
                "--idle-min", "--timeout", "--timeout-established", "--cache-dir", "--budget"],
    "discovery": ["--proc-root", "--file", "--prefix4", "--top", "--idle-min", "--cache-dir", "--budget"],
    "namespaces": ["--proc-root", "--top", "--budget", "--source"],
    "top": ["--proc-root", "--file", "--netns", "--by", "--idle-min", "--timeout-established", "-n",
            "--prefix4", "--prefix6", "--max", "--n"],
    "tune": ["--proc-root", "--max", "--auto", "--tcp-established-timeout", "--peak", "--runtime-only", "--root"],
    "clean": ["--network", "--idle-min", "--netns"],
    "template": ["import", "--url", "--file", "--host", "--group", "--delete-missing"],
}
FLAGS = {"--auto", "--runtime-only", "--delete-missing", "import"}


def values(option, tmp):
    if option in ("--proc-root", "--etc-root"):
        return st.sampled_from(TREES)
    if option in ("--file",):
        return st.sampled_from(FILES)
    if option in ("--root", "--cache-dir"):
        return st.sampled_from([tmp, "/nonexistent/x", GARBAGE])
    if option == "--source":
        return st.sampled_from(["auto", "netlink", "proc", "bogus"])
    if option == "--by":
        return st.sampled_from(["src", "dst", "dport", "state", "proto", "idle", "bogus"])
    if option == "--network":
        return st.sampled_from(["127.0.66.0/24", "0.0.0.0/0", "::/0", "2001:db8::/64", "not-a-net", "10.0.0.1"])
    if option == "--netns":
        return st.sampled_from(["0", "1", "ctzbx-no-such-ns", "x"] + NUMBERS[:3])
    if option == "--url":
        return st.sampled_from(["http://127.0.0.1:9", "not a url", ""])
    if option in ("--host", "--group"):
        return st.sampled_from(["node", ""])
    return st.sampled_from(NUMBERS)


@st.composite
def argv_of(draw, tmp):
    command = draw(st.sampled_from(sorted(COMMANDS)))
    argv = [command]
    for option in draw(st.lists(st.sampled_from(COMMANDS[command]), max_size=5)):
        argv.append(option)
        if option not in FLAGS:
            value = draw(values(option, tmp))
            if draw(st.booleans()):
                argv.append(value)
            else:
                argv[-1] = "%s=%s" % (option, value)
    return argv


def run_main(argv, capsys):
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse: usage errors (2) and --help (0)
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cli"))


@settings(max_examples=int(os.environ.get("CTZBX_FUZZ_EXAMPLES", "250")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_traceback_anywhere(data, tmp, capsys, monkeypatch):
    for name in ("ZABBIX_URL", "ZABBIX_TOKEN", "ZABBIX_USER", "ZABBIX_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    argv = data.draw(argv_of(tmp))
    rc, out, err = run_main(argv, capsys)
    assert rc in DOCUMENTED, (argv, rc, out, err)
    assert "Traceback" not in err and "Traceback" not in out, (argv, err)
    assert "internal error" not in out + err, (argv, out, err)
    if rc != 0 and argv[0] in ("stats", "talkers", "discovery", "namespaces") and out:
        assert "error" in json.loads(out), (argv, out)  # the agent gets JSON, and it says what is wrong
    elif rc not in (0,):
        assert err.strip(), (argv, rc)  # a person gets a message


@pytest.mark.parametrize("argv, rc, says", [
    (["top", "--file", TABLE, "-n", "0"], 2, "0 is outside 1..100000"),
    (["top", "--file", TABLE, "--prefix4", "0"], 2, "0 is outside 8..32"),
    (["top", "--file", TABLE, "--n", "3"], 2, "unrecognized arguments: --n"),
    (["top", "--file", GARBAGE], 4, "is not a conntrack table"),
    (["talkers", "--file", GARBAGE], 4, "is not a conntrack table"),
    (["clean", "--network", "127.0.66.0/24", "--idle-min", "0"], 2, "below 60 s idle is not a leak"),
    (["clean", "--network", "127.0.66.0/24", "--proc-root", MIXED], 2, "unrecognized arguments: --proc-root"),
    (["talkers", "--budget", "nan"], 2, "outside 0..30 s"),
    (["talkers", "--budget", "-1"], 2, "outside 0..30 s"),
    (["talkers", "--budget", "1e308"], 2, "outside 0..30 s"),
    (["tune", "--tcp-established-timeout", "99999999"], 2, "takes at most 2147483 s"),
    (["namespaces", "--proc-root", MIXED], 2, "namespaces need a live /proc"),
    (["template", "import", "--file", BINARY, "--url", "http://127.0.0.1:9"], 4, "not UTF-8 text"),
    (["template", "import", "--file", GARBAGE, "--url", "http://127.0.0.1:9"], 4, "not a template export"),
    (["--bogus"], 2, "unknown option --bogus: the command comes first"),
])
def test_bad_input_is_named(argv, rc, says, capsys):
    got, out, err = run_main(argv, capsys)
    assert got == rc and says in out + err, (got, out, err)
    assert "Traceback" not in err


def test_version_short_flag(capsys):
    rc, out, err = run_main(["-V"], capsys)
    assert rc == 0 and out.startswith("conntrack-zbx ")


def test_tune_says_it_lowers_the_limit(capsys):
    from conntrack_zbx.sources.proc import ProcRoot

    now = ProcRoot("/").max()
    rc, out, err = run_main(["tune", "--max", str(max(1024, now // 2))], capsys)
    if now // 2 >= 1024:  # the lab lowers it for a while: then half may be under the floor
        assert rc == 0 and "this LOWERS the limit from %d" % now in out, (rc, out, err)


def test_ctrl_c_during_a_long_read(capsys, monkeypatch):
    """Ctrl-C while ``top --file`` reads: a line saying so and 130, as a shell reports SIGINT."""
    import conntrack_zbx.count.text as text

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(text, "count_text", interrupted)
    rc, out, err = run_main(["top", "--file", TABLE], capsys)
    assert rc == INTERRUPTED and err == "conntrack-zbx: interrupted\n"


def test_a_full_disk_is_an_error_not_a_traceback():
    p = subprocess.run([sys.executable, "-m", "conntrack_zbx", "top", "--file", TABLE],
                       stdout=open("/dev/full", "w"), stderr=subprocess.PIPE, cwd=REPO)
    assert p.returncode == OUTPUT_ERROR
    assert p.stderr.decode() == "conntrack-zbx: cannot write the output: No space left on device\n"


def test_a_closed_pipe_is_quiet():
    p = subprocess.Popen([sys.executable, "-m", "conntrack_zbx", "top", "--file", TABLE, "-n", "1000"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    p.stdout.read(10)
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait() == 0 and "Traceback" not in err, err


def test_an_unexpected_bug_reaches_a_person_as_one_line(capsys, monkeypatch):
    import conntrack_zbx.top as top

    def bug(args):
        return {}["missing"]
    monkeypatch.setattr(top, "run", bug)
    rc, out, err = run_main(["top", "--file", TABLE], capsys)
    assert rc == 70 and err.startswith("conntrack-zbx: internal error in conntrack-zbx top: KeyError")
    assert "Traceback" not in err and "CONNTRACK_ZBX_DEBUG=1" in err


@pytest.mark.parametrize("argv", [["top", "-n", "3"], ["clean", "--network", "127.0.66.0/24"]])
def test_a_person_without_root_is_told_to_use_sudo(argv):
    """The agent's remedy (the sudo drop-in, the keys' --sudo form) is not a person's."""
    require_root()  # to become another user; on CI not being root fails
    p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
                        "-m", "conntrack_zbx"] + argv, capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 3, p.stderr
    assert p.stderr.rstrip().endswith("run it as root: sudo conntrack-zbx %s" % " ".join(argv)), p.stderr
    assert "sudoers" not in p.stderr and "--source proc" not in p.stderr


@pytest.mark.parametrize("argv, says", [
    (["--runbook-url", "file:///usr/share/doc/conntrack-zbx/runbook.md"], "an http(s) URL that on-call's browser"),
    (["--runbook-url", "https://wiki.example.org/rb", "--file", TABLE], "a --file keeps its own"),
])
def test_runbook_url_is_one_a_browser_opens(argv, says, capsys):
    rc, out, err = run_main(["template", "import", "--url", "http://127.0.0.1:9"] + argv, capsys)
    assert rc == 3 and says in err, (rc, err)


def test_a_snapshot_is_not_measured_against_this_hosts_limit(capsys):
    """`top --file` shares are of the snapshot host's limit: without --max there are none, and
    the view says which option gives them; with --max they are computed against it."""
    rc, out, _ = run_main(["top", "--file", TABLE], capsys)
    assert rc == 0 and "of nf_conntrack_max" not in out.splitlines()[0]
    assert "give --max (the nf_conntrack_max of the host the snapshot came from)" in out
    rc, out, _ = run_main(["top", "--file", TABLE, "--max", "1000"], capsys)
    assert rc == 0 and "of nf_conntrack_max 1000)" in out.splitlines()[0] and "give --max" not in out


def test_stats_and_namespaces_have_a_view_for_people(capsys):
    """The runbook's first step is `conntrack-zbx stats`: with --human it reads as lines, the
    numbers the JSON holds, and a failure is a person's one line on stderr, not agent JSON."""
    from tests.conftest import MIXED

    rc, out, _ = run_main(["stats", "--proc-root", MIXED], capsys)
    doc = json.loads(out)
    rc, text, err = run_main(["stats", "--human", "--proc-root", MIXED], capsys)
    assert rc == 0 and not err and not text.startswith("{")
    assert text.startswith("table: %d of %d entries" % (doc["count"], doc["max"]))
    assert "drop %d" % doc["stat"]["drop"] in text and "ESTABLISHED timeout" in text
    rc, out, err = run_main(["stats", "--human", "--proc-root", fixture_tree("module-not-loaded")], capsys)
    assert rc == 2 and out == "" and err.startswith("conntrack-zbx: ") and "modprobe nf_conntrack" in err


def test_namespaces_view_for_people_lists_what_the_json_holds(capsys):
    """On the live host (root): every listed namespace's row, the one global limit and the step
    that names who fills one."""
    require_root()
    rc, out, _ = run_main(["namespaces"], capsys)
    doc = json.loads(out)
    rc, text, err = run_main(["namespaces", "--human"], capsys)
    assert rc == 0 and not err
    assert "of the one nf_conntrack_max %d" % doc["max"] in text.splitlines()[0]
    for row in doc["namespaces"]:
        assert str(row["inode"]) in text and row["name"] in text
    assert "conntrack-zbx top --netns INODE" in text
