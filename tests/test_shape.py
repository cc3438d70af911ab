"""The product's shape: what a wheel ships, one option spec, small functions, a clean type check.

These pin the redesign: the lab stays out of what an agent host installs, an option is defined
once, and no function grows past what a reader can hold in view.
"""

import ast
import os
import re
import subprocess
import sys
import zipfile

import pytest

from conntrack_zbx import options
from conntrack_zbx.cli import fast_args
from conntrack_zbx.parser import build_parser

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """Built from the committed files only, as a clean clone would (a stale build/ in a working
    tree would otherwise be packed too)."""
    import shutil

    out = tmp_path_factory.mktemp("wheel")
    src = str(tmp_path_factory.mktemp("src"))
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout.split()
    for rel in listed:
        if os.path.exists(os.path.join(REPO, rel)):
            os.makedirs(os.path.join(src, os.path.dirname(rel)), exist_ok=True)
            shutil.copy2(os.path.join(REPO, rel), os.path.join(src, rel))
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), src],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    (path,) = [os.path.join(out, w) for w in os.listdir(out) if w.endswith(".whl")]
    return path


def test_wheel_ships_the_agent_and_admin_commands_and_no_lab(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    code = sorted(n for n in names if not n.startswith("conntrack_zbx-"))
    # the package, and the conntrack-zbx launcher (a wheel's data/scripts)
    assert all(n.startswith("conntrack_zbx/") for n in code), code
    scripts = [n for n in names if "/scripts/" in n]
    assert [os.path.basename(n) for n in scripts] == ["conntrack-zbx"]
    shipped = {n[len("conntrack_zbx/"):] for n in code}
    for needed in ("cli.py", "documents.py", "options.py", "params.py", "keys.py", "talkers.py", "top.py",
                   "tune.py", "boot.py", "cache.py", "privilege.py", "parse/table.py", "parse/netlink.py",
                   "sources/proc.py", "sources/netlink.py", "sources/text.py", "sources/netns.py",
                   "deploy.py", "template/model.py", "template/render.py", "generate.py"):
        assert needed in shipped, needed
    assert not any(n.startswith(("lab/", "tests/", "bench/")) or "/lab/" in n for n in names), names
    # and nothing in what ships builds conntrack entries (the lab's CT_NEW requests)
    z = zipfile.ZipFile(wheel)
    for n in code:
        if n.endswith(".py"):
            text = z.read(n).decode()
            assert not re.search(r"\bdef entry_request\b|^\s*(import lab|from lab)\b", text, re.M), n


def test_adding_an_option_is_one_edit(monkeypatch, capsys):
    """A new option, declared once, reaches the fast path, argparse, the sudo refusal and (for a
    key parameter) the allow-list, the agent conf and the wire format."""
    from conntrack_zbx import keys, params

    extra = (options.Option("limit_rows", options.TABLE_COMMANDS, options.TEXT, None, "test option", metavar="X"),
             options.Option("depth", options.TABLE_COMMANDS, options.PARAM, 3, "test parameter", lo=1, hi=9))
    monkeypatch.setattr(options, "OPTIONS", options.OPTIONS + extra)
    argv = ["talkers", "--limit-rows=5", "--depth", "4"]
    fast = fast_args(argv)
    assert fast is not None and fast.limit_rows == "5" and fast.depth == "4"
    assert vars(fast) == vars(build_parser("talkers").parse_args(argv))
    # --sudo refuses the new plain option by name, and accepts the new parameter
    assert [o.flag for o in options.not_on_fixed_line(fast_args(["talkers", "--sudo", "--limit-rows=1"]),
                                                      ("sudo",))] == ["--limit-rows"]
    assert options.not_on_fixed_line(fast_args(["talkers", "--sudo", "--depth=2"]), ("sudo",)) == []
    # the parameter is allow-listed, travels on the wire, and gets its $N in a key's command line
    assert params.check_all({"depth": "4"})["depth"] == 4
    assert params.from_wire(params.to_wire(params.check_all({"depth": "9"})))["depth"] == 9
    with pytest.raises(params.Refused):
        params.check_all({"depth": "10"})
    key = keys.AgentKey("conntrack.test", ("talkers",), True, "test", options.params_of("talkers"))
    assert "--depth='$%d'" % len(options.params_of("talkers")) in keys.command_line(key)


def test_fast_path_and_argparse_agree_on_every_option():
    """Each option of each agent command, given a value of its kind, means the same to both."""
    for command in options.AGENT_COMMANDS:
        for o in options.for_command(command):
            if o.kind == options.FLAG:
                argv = [command, o.flag]
            elif o.kind == options.CHOICE:
                argv = [command, o.flag, o.choices[-1]]
            elif o.kind == options.SECONDS:
                argv = [command, "%s=1.25" % o.flag]
            else:
                argv = [command, "%s=7" % o.flag]
            fast = fast_args(argv)
            assert fast is not None, argv
            assert vars(fast) == vars(build_parser(command).parse_args(argv)), argv


MAX_FUNCTION_LINES = 80


def test_no_function_is_longer_than_a_screenful():
    long = []
    for top in ("conntrack_zbx", "lab", "bench", "tests"):
        for dirpath, _dirs, files in os.walk(os.path.join(REPO, top)):
            for f in files:
                if not f.endswith(".py"):
                    continue
                path = os.path.join(dirpath, f)
                with open(path) as fh:
                    tree = ast.parse(fh.read())
                for node in ast.walk(tree):
                    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        n = node.end_lineno - node.lineno + 1
                        if n > MAX_FUNCTION_LINES:
                            long.append("%s:%s %d lines" % (os.path.relpath(path, REPO), node.name, n))
    assert long == []


def test_cli_module_stays_small():
    with open(os.path.join(REPO, "conntrack_zbx", "cli.py")) as f:
        assert len(f.read().splitlines()) <= 300


def test_one_error_family():
    """Every exception class of the package is defined in errors.py."""
    defined = []
    for dirpath, _dirs, files in os.walk(os.path.join(REPO, "conntrack_zbx")):
        for f in files:
            if f.endswith(".py") and not (dirpath.endswith("conntrack_zbx") and f == "errors.py"):
                with open(os.path.join(dirpath, f)) as fh:
                    tree = ast.parse(fh.read())
                for node in ast.walk(tree):
                    if isinstance(node, ast.ClassDef) and any(
                            getattr(b, "id", getattr(b, "attr", "")).endswith(("Error", "Exception"))
                            for b in node.bases):
                        defined.append("%s:%s" % (f, node.name))
    assert defined == []


def test_types_check_clean():
    mypy = os.path.join(os.path.dirname(sys.executable), "mypy")
    p = subprocess.run([mypy], cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_version_license_and_changelog_agree():
    """--version prints the newest released CHANGELOG version; setup.cfg's license is the LICENSE file's."""
    import re

    from conntrack_zbx import __version__

    with open(os.path.join(REPO, "CHANGELOG.md")) as f:
        released = re.findall(r"^## (\d+\.\d+\.\d+) — (\d{4}-\d\d-\d\d)$", f.read(), re.M)
    assert released and released[0][0] == __version__, (released[:1], __version__)
    with open(os.path.join(REPO, "LICENSE")) as f:
        assert f.readline().strip() == "MIT License"
    with open(os.path.join(REPO, "setup.cfg")) as f:
        assert "\nlicense = MIT\n" in f.read()
