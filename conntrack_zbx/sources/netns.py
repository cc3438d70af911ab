"""Network namespaces: which one this process is in, every one the host has, and stepping into one.

Why it matters (``__nf_conntrack_alloc`` in the kernel's ``nf_conntrack_core.c``): the entry count
is kept per network namespace and each namespace's count is compared with the one global
``nf_conntrack_max``. A pod or container can fill its own table and drop every new connection
while the host's ``nf_conntrack_count``, ``/proc/net/nf_conntrack`` and its ctnetlink dump stay
calm: they only ever show the reader's own namespace. All namespaces share one hash table.

Namespaces are found the way ``lsns`` does: ``/proc/PID/ns/net`` of every process, deduplicated by
inode, plus bind mounts such as ``/run/netns/NAME`` (``ip netns``), which can hold a namespace no
process is in. Reading another namespace needs root (``/proc/PID/ns`` is ptrace-protected).
"""

import errno
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs every agent call ~3 ms
    from typing import Dict, List, Optional, Tuple

# <asm-generic/socket.h>: SO_NETNS_COOKIE (Linux >= 5.14) gives a 64-bit id of the socket's
# network namespace that is unique for the boot and never reused, unlike an nsfs inode.
SO_NETNS_COOKIE = 71
CLONE_NEWNET = 0x40000000
# Where bind-mounted namespaces live: ip netns, and the Docker daemon's sandboxes.
BIND_DIRS = ("run/netns", "var/run/docker/netns", "run/docker/netns")


def current_netns() -> str:
    """This network namespace's cookie, else its nsfs device and inode (which a new namespace
    may reuse after the old one is gone), else "unknown"."""
    import _socket  # the C module: ``socket`` would import enum, selectors... for one getsockopt

    try:
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
        try:
            return "cookie:%d" % int.from_bytes(s.getsockopt(_socket.SOL_SOCKET, SO_NETNS_COOKIE, 8),
                                                sys.byteorder)
        finally:
            s.close()
    except OSError:
        pass
    try:
        st = os.stat("/proc/self/ns/net")
        return "inode:%d:%d" % (st.st_dev, st.st_ino)
    except OSError:
        return "unknown"


class Found:
    """One network namespace: its nsfs inode, a path that opens it, one process inside (the
    lowest pid: usually the container's or pod's init), and its ``ip netns`` names."""

    __slots__ = ("inode", "path", "pid", "names")

    def __init__(self, inode: int, path: str, pid: "Optional[int]") -> None:
        self.inode, self.path, self.pid = inode, path, pid
        self.names: "List[str]" = []


def find(root: str = "/") -> "Tuple[Dict[int, Found], int]":
    """Every network namespace under ``root`` -> ({inode: Found}, inode of our own)."""
    proc = os.path.join(root, "proc")
    found = {}  # type: Dict[int, Found]
    hidden = 0  # processes whose namespace this user may not see: the answer would be partial
    root_user = os.geteuid() == 0  # root may still be refused one (a sandbox's own init): not partial
    pids = sorted(int(p) for p in os.listdir(proc) if p.isdigit())
    for pid in pids:
        path = os.path.join(proc, str(pid), "ns", "net")
        try:
            ino = os.stat(path).st_ino
        except OSError as e:  # gone meanwhile, or a kernel thread; or not ours to see
            hidden += not root_user and e.errno in (errno.EACCES, errno.EPERM)
            continue
        if ino not in found:
            found[ino] = Found(ino, path, pid)
    for rel in BIND_DIRS:
        d = os.path.join(root, rel)
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        for name in names:
            path = os.path.join(d, name)
            try:
                ino = os.stat(path).st_ino
            except OSError:
                continue
            f = found.setdefault(ino, Found(ino, path, None))
            if name not in f.names:
                f.names.append(name)
    try:
        own = os.stat(os.path.join(proc, "self", "ns", "net")).st_ino
    except OSError as e:
        from conntrack_zbx.errors import NotAvailable

        raise NotAvailable("no namespaces below %s: %s has no ns/net (%s); namespaces need a live /proc, "
                           "not a fixture tree" % (root, os.path.join(proc, "self"), e.strerror or e)) from None
    if hidden:
        from conntrack_zbx.errors import NotPermitted

        raise NotPermitted("the network namespaces of %d processes cannot be seen as uid %d: the answer would "
                           "leave out every container and pod they hold; the agent key reads them through the sudo "
                           "grant (/etc/sudoers.d/conntrack-zbx)" % (hidden, os.geteuid()))
    return found, own


def resolve(target: str, root: str = "/") -> Found:
    """A namespace by inode (digits) or ``ip netns`` name; NotAvailable if there is none."""
    from conntrack_zbx.errors import NotAvailable

    found, _own = find(root)
    for f in found.values():
        if (target.isdigit() and f.inode == int(target)) or target in f.names:
            return f
    raise NotAvailable("no network namespace %r on this host: list them with 'conntrack-zbx namespaces'"
                       % target)


def _setns(fd: int) -> None:
    if hasattr(os, "setns"):  # Python 3.12+
        os.setns(fd, CLONE_NEWNET)  # novermin (guarded: Python 3.12+)
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class Entered:
    """``with Entered(path): ...`` runs the block in the network namespace ``path`` opens
    (``/proc/PID/ns/net``, ``/run/netns/NAME``) and returns to ours afterwards. Sockets opened
    and /proc/net or /proc/sys/net files read inside belong to that namespace; the mount
    namespace does not change. Needs CAP_SYS_ADMIN (root)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.home = -1

    def __enter__(self) -> "Entered":
        from conntrack_zbx.errors import NotAvailable, NotPermitted

        self.home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            os.close(self.home)
            raise NotAvailable("cannot open network namespace %s: %s" % (self.path, e.strerror)) from None
        try:
            _setns(fd)
        except OSError as e:
            os.close(self.home)
            raise NotPermitted("cannot enter network namespace %s: %s (needs root)" % (self.path, e.strerror)) from None
        finally:
            os.close(fd)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            _setns(self.home)
        finally:
            os.close(self.home)


class Runtimes:
    """Names the node's container runtimes gave, read once per call: an id or a uid alone is not
    something on-call can act on (``kubectl`` takes a namespace and a pod name).

    Pods: kubelet gives every pod, whatever the runtime (containerd, CRI-O, cri-dockerd), a log
    directory ``/var/log/pods/<namespace>_<pod>_<uid>``; neither a namespace nor a pod name may
    hold a ``_``, so the name splits cleanly. Containers outside Kubernetes: Docker keeps the name
    in ``/var/lib/docker/containers/<id>/config.v2.json``, Podman (containers/storage) in
    ``/var/lib/containers/storage/overlay-containers/containers.json``. A runtime that is absent or
    unreadable leaves the id as the name."""

    def __init__(self, root: str = "/") -> None:
        self.root = root
        self._pods = None  # type: Optional[Dict[str, str]]
        self._storage = None  # type: Optional[Dict[str, str]]

    def pod(self, uid: str) -> "Optional[str]":
        """"namespace/name" of the pod with this uid."""
        if self._pods is None:
            self._pods = {}
            try:
                entries = os.listdir(os.path.join(self.root, "var", "log", "pods"))
            except OSError:
                entries = []
            for e in entries:
                parts = e.split("_")
                if len(parts) == 3:
                    self._pods[parts[2]] = "%s/%s" % (parts[0], parts[1])
        return self._pods.get(uid)

    def container(self, cid: str) -> "Optional[str]":
        """The name Docker or Podman gave the container with this (full) id."""
        import json

        try:
            with open(os.path.join(self.root, "var", "lib", "docker", "containers", cid, "config.v2.json")) as f:
                name = json.load(f).get("Name")
            if isinstance(name, str) and name.strip("/"):
                return name.strip("/")
        except (OSError, ValueError, AttributeError):
            pass
        if self._storage is None:
            self._storage = {}
            try:
                with open(os.path.join(self.root, "var", "lib", "containers", "storage", "overlay-containers",
                                       "containers.json")) as f:
                    listed = json.load(f)
                for c in listed if isinstance(listed, list) else ():
                    names = c.get("names") if isinstance(c, dict) else None
                    if names and isinstance(c.get("id"), str):
                        self._storage[c["id"]] = str(names[0])
            except (OSError, ValueError, AttributeError):
                pass
        return self._storage.get(cid)


def owner_of(pid: int, root: str = "/", runtimes: "Optional[Runtimes]" = None) -> "Dict[str, Optional[str]]":
    """Who is inside: the process's command, a container id and a pod uid from its cgroup, and
    the names the runtimes gave them (``Runtimes``)."""
    import re

    proc = os.path.join(root, "proc", str(pid))
    out = {"comm": None, "container": None, "container_name": None, "pod": None,
           "pod_name": None}  # type: Dict[str, Optional[str]]
    try:
        with open(os.path.join(proc, "comm")) as f:
            out["comm"] = f.read().strip()
        with open(os.path.join(proc, "cgroup")) as f:
            cgroup = f.read()
    except OSError:
        return out
    runtimes = runtimes or Runtimes(root)
    m = re.search(r"([0-9a-f]{64})", cgroup)
    if m:
        out["container"] = m.group(1)[:12]
        out["container_name"] = runtimes.container(m.group(1))
    m = re.search(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})", cgroup)
    if m:
        uid = m.group(1).replace("_", "-")
        out["pod"], out["pod_name"] = uid, runtimes.pod(uid)
    return out


def stat_text(f: Found, root: str = "/") -> str:
    """The namespace's /proc/net/stat/nf_conntrack text: through a process inside it, else by
    stepping in (a namespace held only by a bind mount)."""
    if f.pid is not None:
        with open(os.path.join(root, "proc", str(f.pid), "net", "stat", "nf_conntrack")) as fh:
            return fh.read()
    with Entered(f.path):
        with open("/proc/thread-self/net/stat/nf_conntrack") as fh:
            return fh.read()
