"""Which network namespace this process is in: the conntrack table it sees is that namespace's.

The snapshot cache is shared by every namespace of the host's mount namespace, so an answer is
keyed by the namespace it describes.
"""

import os
import sys

# <asm-generic/socket.h>: SO_NETNS_COOKIE (Linux >= 5.14) gives a 64-bit id of the socket's
# network namespace that is unique for the boot and never reused, unlike an nsfs inode.
SO_NETNS_COOKIE = 71


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
