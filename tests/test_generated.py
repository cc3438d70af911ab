"""Files generated from conntrack_zbx/keys.py are committed; they must equal a fresh generation."""

import os
import re
import subprocess
import sys

import pytest

from conntrack_zbx import generate, keys

REPO = generate.ROOT


@pytest.mark.parametrize("rel", sorted(generate.outputs()))
def test_committed_equals_generated(rel):
    with open(os.path.join(REPO, rel)) as f:
        committed = f.read()
    assert committed == generate.outputs()[rel](), "run `make generate` and commit %s" % rel


def test_conf_is_boring():
    """One UserParameter per key, fixed command lines: no pipes, no shell. The only variable
    parts are the parameters, each quoted whole as the value of its own fixed option."""
    lines = [ln for ln in keys.agent_conf().splitlines() if ln and not ln.startswith("#")]
    assert len(lines) == len(keys.KEYS)
    for ln, k in zip(lines, keys.KEYS):
        assert ln == "UserParameter=%s,%s" % (keys.conf_key(k), keys.command_line(k))
        fixed = re.sub(r" --[a-z0-9-]+='\$[1-9]'", "", ln).replace("[*],", ",")
        assert fixed.count("$") == 0 and ln.count("$") == len(k.params)
        assert not any(c in fixed for c in "|;&$`><\\\"'*")
        assert ("[*]" in ln) == bool(k.params)


def test_sudoers_passes_visudo(tmp_path):
    path = tmp_path / "conntrack-zbx"
    path.write_text(keys.sudoers())
    p = subprocess.run(["visudo", "-cf", str(path)], capture_output=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_sudoers_lists_exact_privileged_lines_only():
    rule = [ln for ln in keys.sudoers().splitlines() if "NOPASSWD" in ln]
    assert rule == ["zabbix ALL=(root) NOPASSWD: /usr/local/bin/conntrack-zbx talkers --params-stdin, "
                    "/usr/local/bin/conntrack-zbx namespaces --params-stdin"]
    assert "*" not in keys.sudoers() and "ALL:" not in keys.sudoers()


def test_agent_keys_import_nothing_heavy():
    """The hot path imports neither pyzabbix nor yaml, nor the admin-side modules."""
    mixed = os.path.join(REPO, "tests/fixtures/kernel-6.18.44-mixed")
    code = "\n".join([
        "import sys",
        "from conntrack_zbx.cli import main",
        "main(['stats', '--proc-root', %r])" % mixed,
        "main(['talkers', '--proc-root', %r])" % mixed,
        "heavy = ('yaml', 'pyzabbix', 'requests', 'lab', 'conntrack_zbx.generate',",
        "         'conntrack_zbx.template', 'conntrack_zbx.deploy')",
        "sys.stderr.write(repr([m for m in sys.modules if m.startswith(heavy)]))",
    ])
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=REPO)
    assert p.returncode == 0, p.stderr
    assert p.stderr.decode() == "[]"


def imported_by(argv, env=None):
    """Every module a run of the launcher imports (from -X importtime, so nothing is missed)."""
    # -S: no site (a dev venv's editable-install hook imports re itself); PYTHONPATH finds the code
    p = subprocess.run([sys.executable, "-S", "-X", "importtime", os.path.join(REPO, "bin/conntrack-zbx")] + argv,
                       capture_output=True, cwd="/", env=env)
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    return {ln.rsplit("|", 1)[1].strip() for ln in p.stderr.decode().splitlines() if ln.startswith("import time:")}


LEAN_FORBIDDEN = {"re", "json", "argparse", "typing", "collections", "socket", "enum", "subprocess"}


def test_counters_and_cached_talkers_import_only_what_they_need(tmp_path):
    """The agent's every-minute calls stay near the interpreter's own start-up (the bench's
    target: <= 2x `python3 -c pass`): no re, json, argparse, typing, collections, socket."""
    mixed = os.path.join(REPO, "tests/fixtures/kernel-6.18.44-mixed")
    env = dict(os.environ, PYTHONPATH=REPO)
    assert imported_by(["stats", "--proc-root", mixed], env) & LEAN_FORBIDDEN == set()
    cache = str(tmp_path / "cache")
    argv = ["talkers", "--proc-root", mixed, "--cache-dir", cache, "--max-age=600"]
    assert "re" in imported_by(argv, env)  # the first call reads the table
    assert imported_by(argv, env) & LEAN_FORBIDDEN == set()  # the second is served from the cache


def test_agent_code_is_python36_compatible():
    """The agent runs on the host's system python3; vermin checks syntax *and* stdlib APIs."""
    agent_side = [os.path.join(REPO, "conntrack_zbx", p) for p in (
        "__init__.py", "__main__.py", "cli.py", "errors.py", "keys.py", "lld.py", "talkers.py",
        "boot.py", "cache.py", "jsonout.py", "params.py", "record.py", "tune.py", "documents.py", "options.py",
        "privilege.py", "top.py", "parse", "sources")] + [
        os.path.join(REPO, "bin/conntrack-zbx")]
    vermin = os.path.join(os.path.dirname(sys.executable), "vermin")
    p = subprocess.run([vermin, "--no-tips", "--violations",
                        "--eval-annotations", "-t=3.6-"] + agent_side, capture_output=True)
    assert p.returncode == 0, p.stdout.decode() + p.stderr.decode()


def test_hand_written_docs_name_every_key_parameter():
    """The pages that spell out a key's parameters by hand (README, permissions, keys.py's
    docstring) list exactly the parameters the registry gives, in order: a parameter added to
    options.py fails here until the docs say it."""
    from conntrack_zbx import keys as keymod

    talkers = next(k for k in keymod.KEYS if k.key == "conntrack.talkers")
    names = [p.name for p in talkers.params]
    for rel, spelled in (("README.md", "conntrack.talkers[%s]" % ",".join(names)),
                         ("docs/permissions.md", "conntrack.talkers[%s]" % ",".join("<%s>" % n for n in names)),
                         ("conntrack_zbx/keys.py", "conntrack.talkers[%s]" % ",".join("<%s>" % n for n in names))):
        with open(os.path.join(REPO, rel)) as f:
            assert spelled in f.read(), (rel, spelled)
    with open(os.path.join(REPO, "docs/permissions.md")) as f:
        text = f.read()
    words = {5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine", 10: "ten"}
    assert "takes %s optional parameters" % words[len(names)] in text, "permissions.md counts the parameters"
    conf_line = keymod.command_line(talkers)
    assert conf_line.split(" ", 1)[1] in text, "permissions.md's conf line is not the generated one"
    for p in talkers.params:
        assert "| %s" % p.name in text and "%d..%d" % (p.lo, p.hi) in text, p.name
