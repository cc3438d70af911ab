"""Lay out the files of the native packages (deb and rpm) in a staging root.

Both packages hold the same tree, so both are built from this one layout:

  /usr/bin/conntrack-zbx                          launcher (system python3, private lib dir)
  /usr/lib/conntrack-zbx/conntrack_zbx/           the package (agent side: standard library only)
  /etc/zabbix/zabbix_agentd.d/userparameter_conntrack.conf   for zabbix_agentd  (conffile)
  /etc/zabbix/zabbix_agent2.d/userparameter_conntrack.conf   for zabbix_agent2  (conffile)
  /usr/share/conntrack-zbx/sudoers                the grant; the install script checks it with
                                                  visudo before it goes to /etc/sudoers.d/
  /usr/share/conntrack-zbx/templates/             the Zabbix templates (YAML, formats 6.0 and 7.0)
  /usr/share/conntrack-zbx/maintscript.sh         install/remove steps shared by deb and rpm
  /usr/share/doc/conntrack-zbx/                   README, docs, changelog
  /usr/share/man/man1/conntrack-zbx.1.gz          the manual page, generated from the parser

The code goes into a private directory rather than a Python version's site-packages, so one
package serves python3 3.6 (RHEL 8) to 3.13 alike. Standard library only: runs on any python3.
"""

import os
import shutil
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = "/usr/bin/conntrack-zbx"
LIBDIR = "/usr/lib/conntrack-zbx"

LAUNCHER = '''#!/usr/bin/python3
"""conntrack-zbx, installed by the native package: the code lives in %(lib)s."""
import sys

sys.path.insert(0, "%(lib)s")
from conntrack_zbx.cli import main  # noqa: E402

sys.exit(main())
'''



# Debian's machine-readable copyright header (policy 12.5), then the LICENSE text.
COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: conntrack-zbx
Source: the conntrack_zbx repository this package was built from

Files: *
Copyright: 2026 the conntrack_zbx developers
License: MIT

"""

def _write(root: str, path: str, text: str, mode: int = 0o644) -> None:
    dest = os.path.join(root, path.lstrip("/"))
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with open(dest, "w") as f:
        f.write(text)
    os.chmod(dest, mode)


def _copy_tree(src: str, dest: str) -> None:
    for dirpath, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for f in sorted(files):
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), src)
                os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
                shutil.copyfile(os.path.join(dirpath, f), os.path.join(dest, rel))
                os.chmod(os.path.join(dest, rel), 0o644)


def package_version(base: str, commits: int, sha: str, dirty: bool) -> str:
    """The released version, plus where in the history the package was built: two builds of
    different commits never share a version, and a later commit sorts later (dpkg and rpm)."""
    if not sha:
        return base
    return "%s+git%d.g%s%s" % (base, commits, sha, ".dirty" if dirty else "")


def _git(*argv: str) -> str:
    import subprocess

    try:
        return subprocess.run(["git"] + list(argv), cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def _manpage(root: str, version: str) -> None:
    import gzip

    sys.path.insert(0, os.path.join(REPO, "packaging"))
    from manpage import manpage

    dest = os.path.join(root, "usr/share/man/man1/conntrack-zbx.1.gz")
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with open(dest, "wb") as raw:  # mtime 0 and no name: the same page gives the same bytes
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as f:
            f.write(manpage(version).encode())
    os.chmod(dest, 0o644)


def stage(root: str) -> str:
    """Fill ``root``; returns the version."""
    sys.path.insert(0, REPO)
    from conntrack_zbx import __version__, keys

    sha = _git("rev-parse", "--short=8", "HEAD")
    version = package_version(__version__, int(_git("rev-list", "--count", "HEAD") or 0), sha,
                              bool(_git("status", "--porcelain", "--untracked-files=no", "conntrack_zbx",
                                        "packaging", "templates")))
    _manpage(root, version)

    _write(root, BINARY, LAUNCHER % {"lib": LIBDIR}, 0o755)
    _copy_tree(os.path.join(REPO, "conntrack_zbx"), os.path.join(root, LIBDIR.lstrip("/"), "conntrack_zbx"))
    conf = keys.agent_conf(BINARY)
    _write(root, "/etc/zabbix/zabbix_agentd.d/userparameter_conntrack.conf", conf)
    _write(root, "/etc/zabbix/zabbix_agent2.d/userparameter_conntrack.conf", conf)
    _write(root, "/usr/share/conntrack-zbx/sudoers", keys.sudoers(BINARY), 0o440)
    with open(os.path.join(REPO, "packaging", "maintscript.sh")) as f:
        _write(root, "/usr/share/conntrack-zbx/maintscript.sh", f.read(), 0o755)
    shutil.copytree(os.path.join(REPO, "templates"), os.path.join(root, "usr/share/conntrack-zbx/templates"))
    doc = os.path.join(root, "usr/share/doc/conntrack-zbx")
    shutil.copytree(os.path.join(REPO, "docs"), doc, ignore=shutil.ignore_patterns("img"))
    for f in ("README.md", "CHANGELOG.md"):
        shutil.copyfile(os.path.join(REPO, f), os.path.join(doc, f))
    with open(os.path.join(REPO, "LICENSE")) as f:
        _write(root, "/usr/share/doc/conntrack-zbx/copyright", COPYRIGHT + f.read())
    for dirpath, dirs, _files in os.walk(root):
        for d in dirs:
            os.chmod(os.path.join(dirpath, d), 0o755)
    return version


if __name__ == "__main__":
    print(stage(sys.argv[1]))
