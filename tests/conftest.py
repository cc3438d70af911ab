import os
import shutil

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
MIXED = os.path.join(FIXTURES, "kernel-6.18.44-mixed")


def fixture_tree(name: str) -> str:
    path = os.path.join(FIXTURES, name)
    assert os.path.isdir(path), path
    return path


@pytest.fixture
def tree(tmp_path):
    """A writable copy of a fixture tree, for tests that change permissions or files."""
    def make(name: str) -> str:
        dest = str(tmp_path / name)
        shutil.copytree(fixture_tree(name), dest)
        return dest
    return make


def require_root():
    """Real-kernel tests need root. On CI we run as root: not being root there is a failure."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("real-stack tests must run as root on CI")
        pytest.skip("needs root (network namespaces)")


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Every in-process CLI call gets its own empty snapshot cache (mode 0700), so tests never
    see each other's cached answers nor the host's /run/conntrack-zbx."""
    from conntrack_zbx import cache

    d = tmp_path_factory.mktemp("cache")
    os.chmod(str(d), 0o700)
    monkeypatch.setattr(cache, "DEFAULT_DIR", str(d / "c"))
    return str(d / "c")


def netlink_fast(found, rule=None):
    """The fast row pattern's captures labelled: ((source, protocol, label) -> entries, idle)."""
    from collections import Counter

    from conntrack_zbx.count.kinds import Sums, expand
    from conntrack_zbx.count.rows import label_rows

    sums = Sums()
    label_rows(Counter(found), sums, {})
    return expand(sums.counts, sums.kinds), sums.idle


def netlink_slow(records, rule=None):
    """The general decoder's records labelled, as ``netlink_fast``."""
    from conntrack_zbx.count.kinds import Sums, expand
    from conntrack_zbx.count.rows import label_entries

    sums = Sums()
    label_entries(records, sums, rule)
    return expand(sums.counts, sums.kinds), sums.idle


PYZABBIX_082 = "/var/cache/ctzbx-debs/python3-pyzabbix"


def debian_pyzabbix():
    """Debian 12's python3-pyzabbix 0.8.2 (what the package suggests), unpacked beside the system,
    never installed: the directory to put first on PYTHONPATH."""
    lib = os.path.join(PYZABBIX_082, "usr/lib/python3/dist-packages")
    if not os.path.isdir(lib):
        import glob
        import subprocess

        os.makedirs(PYZABBIX_082, exist_ok=True)
        subprocess.run(["apt-get", "download", "python3-pyzabbix"], cwd=PYZABBIX_082, check=True,
                       capture_output=True)
        deb = glob.glob(os.path.join(PYZABBIX_082, "python3-pyzabbix_*.deb"))[0]
        subprocess.run(["dpkg-deb", "-x", deb, PYZABBIX_082], check=True)
    return lib


def admin_cli(url, *argv, pythonpath=None, **env):
    """``conntrack-zbx template import ...`` as an admin runs it, credentials only in the
    environment; ``pythonpath`` first on the path (another pyzabbix)."""
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if not k.startswith("ZABBIX_")}
    clean.update(ZABBIX_URL=url, **env)
    if pythonpath:
        clean["PYTHONPATH"] = pythonpath + os.pathsep + REPO
    p = subprocess.run([sys.executable, "-m", "conntrack_zbx", "template", "import"] + list(argv),
                       cwd=REPO, env=clean, capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def which_pyzabbix(pythonpath):
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-c", "import inspect, pyzabbix; print(pyzabbix.__file__, "
                        "'api_token' in inspect.signature(pyzabbix.ZabbixAPI.login).parameters)"],
                       env=dict(os.environ, PYTHONPATH=pythonpath), capture_output=True, text=True, check=True)
    return p.stdout.split()
