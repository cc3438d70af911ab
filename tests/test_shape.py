"""The product's shape: what a wheel ships, one option spec, small functions, a clean type check.

These pin the redesign: the lab stays out of what an agent host installs, an option is defined
once, and no function grows past what a reader can hold in view.
"""

import ast
import json
import os
import re
import subprocess
import sys
import zipfile

import pytest

from conntrack_zbx import commands, options
from conntrack_zbx.cli import fast_args
from conntrack_zbx.parser import build_parser, parse

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
    for needed in ("cli.py", "commands.py", "options.py", "params.py", "keys.py", "rank.py", "top.py",
                   "tune.py", "boot.py", "cache.py", "budget.py", "privilege.py", "answers/stats.py",
                   "answers/talkers.py", "answers/namespaces.py", "count/__init__.py", "count/lines.py",
                   "count/rows.py", "count/text.py", "count/kinds.py", "count/idle.py", "count/views.py",
                   "parse/netlink.py", "sources/proc.py", "sources/netlink.py", "sources/table.py", "sources/netns.py",
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
    """A new option, declared once in its command's Args class, reaches the fast path, argparse,
    the sudo refusal and (for a key parameter) the allow-list, the agent conf and the wire format."""
    from conntrack_zbx import keys, params

    class Extended(options.TalkersArgs):
        limit_rows = options.MaybeText(None, "test option", metavar="X")
        depth = options.Param(3, "test parameter", span=(1, 9))

    monkeypatch.setattr(commands.get("talkers"), "args", Extended)
    argv = ["talkers", "--limit-rows=5", "--depth", "4"]
    fast = fast_args(argv)
    assert isinstance(fast, Extended) and fast.limit_rows == "5" and fast.depth == "4"
    assert vars(fast) == vars(build_parser("talkers").parse_args(argv))
    assert fast == parse(argv)
    # --sudo refuses the new plain option by name, and accepts the new parameter
    assert [o.flag for o in fast_args(["talkers", "--sudo", "--limit-rows=1"]).not_on_fixed_line(("sudo",))] \
        == ["--limit-rows"]
    assert fast_args(["talkers", "--sudo", "--depth=2"]).not_on_fixed_line(("sudo",)) == []
    # the parameter is allow-listed, travels on the wire, and gets its $N in a key's command line
    own = Extended.params()
    assert fast.key_parameters()["depth"] == 4
    assert params.from_wire(params.to_wire(params.check_all({"depth": "9"}, own)), own)["depth"] == 9
    with pytest.raises(params.Refused):
        fast_args(["talkers", "--depth=10"]).key_parameters()
    key = keys.AgentKey("conntrack.test", ("talkers",), True, "test", Extended.params())
    assert "--depth='$%d'" % len(Extended.params()) in keys.command_line(key)


def test_fast_path_and_argparse_agree_on_every_option():
    """Each option of each agent command, given a value of its kind, means the same to both."""
    for command in commands.AGENT_COMMANDS:
        for o in commands.args_of(command).options():
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
            assert fast == parse(argv), argv


def test_every_command_parses_into_its_typed_arguments():
    """What argparse gives each command is an instance of its declared Args class with exactly
    the declared options: a command cannot read an option the spec does not have."""
    for c in commands.COMMANDS:
        argv = [c.name] + (["import"] if c.name == "template" else []) + \
            (["--network", "10.0.0.0/8"] if c.name == "clean" else []) + \
            (["--group", "Mirrorlist"] if c.name == "fleet" else [])
        args = parse(argv)
        assert type(args) is c.args, c.name
        declared = {o.name for o in c.args.options()}
        assert set(vars(args)) - {"command", "action"} == declared, c.name


def test_adding_an_agent_command_touches_three_hand_edited_files(tmp_path):
    """A new agent command in a copy of the package: its Args class (options.py), its declaration
    (commands.py) and its answer module are all that is written by hand; the fast path, argparse
    and its --help, dispatch, the failure contract, the agent conf and the sudoers line follow,
    and the generated files are regenerated, not edited."""
    import shutil

    pkg = tmp_path / "conntrack_zbx"
    shutil.copytree(os.path.join(REPO, "conntrack_zbx"), str(pkg), ignore=shutil.ignore_patterns("__pycache__"))
    edits = {
        "options.py": "\n\nclass HelloArgs(AgentArgs):\n"
                      "    greeting = Param(1, 'how many greetings', span=(1, 3))\n",
        "commands.py": "    Command('hello', options.HelloArgs, 'conntrack_zbx.answers.hello', 'json',\n"
                       "            'say hello (JSON)', ('conntrack-zbx hello',),Key('conntrack.hello', False, '')),\n",
        "answers/hello.py": "def run(args):\n"
                            "    return {'hello': args.key_parameters()['greeting']}\n",
    }
    for rel, text in edits.items():
        path = str(pkg / rel)
        old = open(path).read() if os.path.exists(path) else ""
        if rel == "commands.py":  # one more entry at the end of the COMMANDS tuple
            end = old.index("\n)\n", old.index("COMMANDS = ("))
            new = old[:end + 1] + text + old[end + 1:]
        else:
            new = old + text
        with open(path, "w") as f:
            f.write(new)
    env = dict(os.environ, PYTHONPATH=str(tmp_path))

    def run(*argv):
        return subprocess.run([sys.executable, "-m", "conntrack_zbx"] + list(argv), cwd=str(tmp_path), env=env,
                              capture_output=True, text=True)

    assert run("hello").stdout == '{"hello":1}\n'
    assert run("hello", "--greeting=3").stdout == '{"hello":3}\n'
    bad = run("hello", "--greeting=9")
    assert bad.returncode == 3 and '"error":"parameter greeting=9 is outside 1..3' in bad.stdout
    assert "conntrack-zbx hello" in run("hello", "--help").stdout
    assert "hello" in run("--help").stdout
    conf = subprocess.run([sys.executable, "-c", "from conntrack_zbx import keys; print(keys.agent_conf())"],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True).stdout
    assert "UserParameter=conntrack.hello[*],/usr/local/bin/conntrack-zbx hello --greeting='$1'" in conf
    assert len(edits) <= 4


def test_adding_a_privileged_key_goes_through_sudo_for_a_non_root_user():
    """A new root-only key, declared like the others (Key(..., True, ...)): its conf line carries
    --sudo and its sudoers line is generated, and run as the agent's user it goes through sudo
    (here refused: no grant for it), never answering in-process with that user's rights."""
    import shutil

    from tests.conftest import require_root

    import pathlib
    import tempfile

    require_root()  # to become nobody, who must be able to read the copy
    tmp_path = pathlib.Path(tempfile.mkdtemp(prefix="ctzbx-privileged-", dir="/tmp"))
    try:
        _privileged_key_in_a_copy(tmp_path)
    finally:
        shutil.rmtree(str(tmp_path))


def _privileged_key_in_a_copy(tmp_path):
    import shutil

    pkg = tmp_path / "conntrack_zbx"
    shutil.copytree(os.path.join(REPO, "conntrack_zbx"), str(pkg), ignore=shutil.ignore_patterns("__pycache__"))
    with open(str(pkg / "options.py"), "a") as f:
        f.write("\n\nclass SecretArgs(AgentArgs):\n    depth = Param(1, 'how deep', span=(1, 3))\n"
                "    sudo = SUDO\n    params_stdin = PARAMS_STDIN\n")
    path = str(pkg / "commands.py")
    old = open(path).read()
    end = old.index("\n)\n", old.index("COMMANDS = ("))
    with open(path, "w") as f:
        f.write(old[:end + 1] + "    Command('secret', options.SecretArgs, 'conntrack_zbx.answers.secret', 'json', "
                "'root only', (), Key('conntrack.secret', True, 'reads what only root may')),\n" + old[end + 1:])
    with open(str(pkg / "answers/secret.py"), "w") as f:
        f.write("import os\n\ndef run(args):\n    return {'uid': os.geteuid()}\n")
    os.chmod(str(tmp_path), 0o755)
    for dirpath, dirs, files in os.walk(str(tmp_path)):
        for name in dirs + files:
            os.chmod(os.path.join(dirpath, name), 0o755 if name in dirs else 0o644)
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    made = subprocess.run([sys.executable, "-c", "from conntrack_zbx import keys; print(keys.agent_conf()); "
                           "print(keys.sudoers())"], cwd=str(tmp_path), env=env, capture_output=True, text=True)
    assert "UserParameter=conntrack.secret[*],/usr/local/bin/conntrack-zbx secret --sudo --depth='$1'" in made.stdout
    assert "/usr/local/bin/conntrack-zbx secret --params-stdin" in made.stdout
    p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m",
                        "conntrack_zbx", "secret", "--sudo", "--depth=2"], cwd=str(tmp_path), env=env,
                       capture_output=True, text=True)
    assert p.stdout.startswith("{"), p.stdout + p.stderr
    doc = json.loads(p.stdout)
    assert "uid" not in doc, "a privileged key answered in-process as uid 65534"
    assert "sudo refused" in doc["error"] and "secret --params-stdin" in doc["error"], doc


def test_every_privileged_key_has_the_sudo_line():
    """Its conf line says --sudo and its sudoers line --params-stdin: its Args must take both."""
    for c in commands.COMMANDS:
        if c.key is not None and c.key.privileged:
            names = {o.name for o in c.args.options()}
            assert {"sudo", "params_stdin"} <= names, c.name


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
    """Every exception class of the package is defined in errors.py: each module is imported and
    its classes checked by what they are (subclasses of BaseException), not by their names."""
    import importlib
    import inspect

    defined = []
    for m in import_graph():
        if m.endswith("__main__"):
            continue
        module = importlib.import_module(m)
        defined += ["%s.%s" % (m, name) for name, cls in inspect.getmembers(module, inspect.isclass)
                    if issubclass(cls, BaseException) and cls.__module__ == m and m != "conntrack_zbx.errors"]
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


def test_no_command_argument_is_untyped():
    """The most-travelled value, a command's parsed arguments, is typed wherever it goes: no
    function of the package takes ``args`` (or the table's ``where``) as ``Any`` or unannotated."""
    found = []
    for dirpath, _dirs, files in os.walk(os.path.join(REPO, "conntrack_zbx")):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                with open(path) as fh:
                    tree = ast.parse(fh.read())
                for node in ast.walk(tree):
                    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        for a in node.args.args:
                            if a.arg in ("args", "where"):
                                note = ast.unparse(a.annotation) if a.annotation is not None else None
                                if note is None or "Any" in note:
                                    found.append("%s:%d %s(%s: %s)" % (os.path.relpath(path, REPO), node.lineno,
                                                                       node.name, a.arg, note))
    assert found == [], found


def import_graph():
    """{module: the package modules it imports}, lazy imports inside functions included."""
    pkg = os.path.join(REPO, "conntrack_zbx")
    graph = {}
    for dirpath, _dirs, files in os.walk(pkg):
        for f in files:
            if not f.endswith(".py"):
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
            name = rel[:-len(".__init__")] if rel.endswith(".__init__") else rel
            with open(path) as fh:
                tree = ast.parse(fh.read())
            edges = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("conntrack_zbx"):
                    edges.add(node.module)
                    edges.update("%s.%s" % (node.module, a.name) for a in node.names)
                elif isinstance(node, ast.Import):
                    edges.update(a.name for a in node.names if a.name.startswith("conntrack_zbx"))
            graph[name] = edges
    return {m: {e for e in edges if e in graph and e != m} for m, edges in graph.items()}


def test_no_import_cycle_in_the_package():
    """Every import of the package, lazy ones inside functions included, runs one way: a module
    never imports (directly or through others) one that imports it back."""
    graph = import_graph()

    def reaches(start, goal, seen):
        for nxt in graph[start]:
            if nxt == goal or (nxt not in seen and not seen.add(nxt) and reaches(nxt, goal, seen)):
                return True
        return False

    cycles = sorted(m for m in graph if reaches(m, m, set()))
    assert cycles == [], cycles


# The layers of docs/architecture.md, lowest first: a module imports only its own layer or lower.
LAYERS = [
    ("base", ["conntrack_zbx", "conntrack_zbx.errors", "conntrack_zbx.record", "conntrack_zbx.jsonout",
              "conntrack_zbx.budget", "conntrack_zbx.options", "conntrack_zbx.params"]),
    ("kernel formats", ["conntrack_zbx.parse"]),
    ("registry", ["conntrack_zbx.commands", "conntrack_zbx.keys", "conntrack_zbx.agentconf", "conntrack_zbx.boot"]),
    ("engine", ["conntrack_zbx.count"]),
    ("I/O", ["conntrack_zbx.sources.proc", "conntrack_zbx.sources.netlink", "conntrack_zbx.sources.netns"]),
    ("reads", ["conntrack_zbx.sources", "conntrack_zbx.rank", "conntrack_zbx.cache", "conntrack_zbx.lifeline",
               "conntrack_zbx.privilege", "conntrack_zbx.template", "conntrack_zbx.zabbixapi"]),
    ("commands", ["conntrack_zbx.answers", "conntrack_zbx.top", "conntrack_zbx.tune", "conntrack_zbx.clean",
                  "conntrack_zbx.protect", "conntrack_zbx.agentfiles", "conntrack_zbx.deploy", "conntrack_zbx.fleet",
                  "conntrack_zbx.generate", "conntrack_zbx.parser"]),
    ("entry", ["conntrack_zbx.cli", "conntrack_zbx.__main__"]),
]


def layer_of(module):
    found = [(len(p), i) for i, (_n, prefixes) in enumerate(LAYERS) for p in prefixes
             if module == p or module.startswith(p + ".")]
    return max(found)[1] if found else None


def test_no_upward_import_between_layers():
    """The engine never reaches up into the sources, the kernel formats never into the engine."""
    graph = import_graph()
    assert [m for m in graph if layer_of(m) is None] == [], "a module of no layer: add it to LAYERS"
    up = ["%s (%s) -> %s (%s)" % (m, LAYERS[layer_of(m)][0], e, LAYERS[layer_of(e)][0])
          for m, edges in sorted(graph.items()) for e in sorted(edges) if layer_of(e) > layer_of(m)]
    assert up == [], up
    assert layer_of("conntrack_zbx.count.kinds") < layer_of("conntrack_zbx.sources.netlink")  # the check can fail


def test_no_package_module_over_500_lines():
    """Rooms a maintainer reads top to bottom: the template's used to be one of 1,000 lines."""
    long = []
    for dirpath, _dirs, files in os.walk(os.path.join(REPO, "conntrack_zbx")):
        for f in files:
            if f.endswith(".py"):
                with open(os.path.join(dirpath, f)) as fh:
                    n = len(fh.read().splitlines())
                if n > 500:
                    long.append("%s: %d" % (os.path.relpath(os.path.join(dirpath, f), REPO), n))
    assert long == [], long


def test_no_module_imports_another_modules_private_names():
    found = []
    for m in import_graph():
        path = os.path.join(REPO, *m.split(".")) + ".py"
        if not os.path.exists(path):
            path = os.path.join(REPO, *m.split("."), "__init__.py")
        with open(path) as fh:
            tree = ast.parse(fh.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("conntrack_zbx"):
                found += ["%s: %s.%s" % (m, node.module, a.name) for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert found == [], found
