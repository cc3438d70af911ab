"""The other Debian release, for real, on this machine: on Debian 12 a Debian 13 root (lab/debroot.py),
on Debian 13 a Debian 12 one. The root runs the agent-side suite on that release's own python3,
and takes the project's .deb with ``dpkg -i``, its own zabbix-agent and zabbix-agent2 polling the
keys as ``zabbix`` with their stock configuration, through the grant the package put in place."""

import os
import re
import subprocess
import tarfile

import pytest

from lab.agent import StockAgent, install_deb
from lab.debroot import SHARED, DebRoot, host_release
from lab.netns import Netns, sh
from tests.conftest import require_root
from tests.test_packages_real import assert_untouched, poll_stock_agents

pytestmark = pytest.mark.real

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEAKY = "127.0.13.0/24"


# release: (its python3, its Zabbix)
RELEASES = {"trixie": ("3.13", "7.0."), "bookworm": ("3.11", "6.0.")}


@pytest.fixture(scope="module")
def root():
    require_root()
    return DebRoot("bookworm" if host_release() == "trixie" else "trixie").ensure()


def agent_side_tests():
    """The agent-side test files, as scripts/test-pythons.sh lists them (one list for both)."""
    with open(os.path.join(REPO, "scripts", "test-pythons.sh")) as f:
        m = re.search(r"^tests=\(([^)]*)\)", f.read(), re.M)
    assert m, "scripts/test-pythons.sh has no tests=(...) list"
    return m.group(1).split()


def test_agent_side_suite_on_the_other_releases_python(root, tmp_path):
    """The checkout's committed files, copied into the root, tested by the root's python3 and
    its python3-pytest: Debian 13's interpreter, not one of pyenv's."""
    import tempfile

    files = sh(["git", "ls-files", "-z"], cwd=REPO).stdout.decode().split("\0")
    work = tempfile.mkdtemp(prefix="ctzbx-checkout-", dir=SHARED)
    os.chmod(work, 0o755)  # some tests drop to nobody and run the checkout from there
    try:
        archive = str(tmp_path / "checkout.tar")
        with tarfile.open(archive, "w") as tar:
            for name in files:
                if name and os.path.exists(os.path.join(REPO, name)):
                    tar.add(os.path.join(REPO, name), arcname=name, recursive=False)
        with tarfile.open(archive) as tar:
            tar.extractall(work)
        version = sh(root.cmd(["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"])).stdout
        assert version.decode().strip() == RELEASES[root.suite][0]
        p = subprocess.run(root.cmd(["sh", "-c", 'cd "$1" && shift && PYTHONPATH=. exec python3 -m pytest -q '
                                     '-p no:cacheprovider "$@"', "run", work] + agent_side_tests()),
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
        assert re.search(r"\d+ passed", p.stdout) and "failed" not in p.stdout, p.stdout[-500:]
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", work], check=False)


def test_the_deb_on_the_other_releases_stock_agents_polled_as_zabbix_through_sudo(root):
    """dpkg -i in the root; its own zabbix-agent and zabbix-agent2 (7.0 from Debian 13), started as
    their systemd units start them with their configuration files as shipped, answer the counters
    and, through the package's grant, the top talkers naming the leaky range."""
    plugin = install_deb(REPO, root)
    try:
        grant = root.inside("/etc/sudoers.d/conntrack-zbx")
        st = os.stat(grant)
        assert (st.st_mode & 0o777, st.st_uid) == (0o440, 0)
        assert sh(root.cmd(["visudo", "-cf", "/etc/sudoers.d/conntrack-zbx"]), check=False).returncode == 0
        assert_untouched(root)
        with Netns(leaky=[LEAKY]) as ns:
            with StockAgent("agent2", ns, root=root) as agent:
                assert agent.get("agent.version").startswith(RELEASES[root.suite][1])
        poll_stock_agents(root, LEAKY)
        assert_untouched(root)
    finally:
        subprocess.run(["rm", "-rf", plugin.base], check=False)


def test_an_agent_installed_after_the_package_is_linked_by_the_trigger(root):
    """The package first, Debian's zabbix-agent after it (apt-get, as an admin does): the deb's
    trigger runs agent-conf, and the stock agent answers the keys without any step by hand."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    link = root.inside("/etc/zabbix/zabbix_agentd.conf.d/userparameter_conntrack.conf")
    try:
        sh(root.cmd(["dpkg", "--purge", "zabbix-agent"]), env=env)
        plugin = install_deb(REPO, root)
        subprocess.run(["rm", "-rf", plugin.base], check=False)
        assert not os.path.lexists(link)  # no agentd yet: nothing linked
        got = sh(root.cmd(["apt-get", "install", "-y", "-q", "--no-install-recommends", "zabbix-agent"]), env=env)
        assert b"Processing triggers for conntrack-zbx" in got.stdout, got.stdout[-2000:]
        assert os.readlink(link) == "/etc/zabbix/zabbix_agentd.d/userparameter_conntrack.conf"
        assert_untouched(root)
        poll_stock_agents(root, LEAKY)
    finally:  # the root keeps its agent for the tests after this one
        sh(root.cmd(["apt-get", "install", "-y", "-q", "--no-install-recommends", "zabbix-agent"]), env=env,
           check=False)
