"""Forward a TCP port of this (init) namespace to 127.0.0.1 of a lab namespace, so a browser on
the machine can reach the demo's frontend, which listens on the monitor namespace's loopback.

Each connection's upstream socket is created by a thread that first moved itself into the lab
namespace (setns works per thread for network namespaces)."""

import socket
import sys
import threading

from lab.netns import Netns, Entered


def _pipe(a: socket.socket, b: socket.socket) -> None:
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _serve(client: socket.socket, netns: str, port: int) -> None:
    # a socket keeps the namespace it was made in: step in for the connect only (this thread)
    try:
        with Entered(Netns(netns)):
            upstream = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
    _pipe(client, upstream)


def forward(listen_port: int, netns: str, port: int) -> None:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", listen_port))
    srv.listen(64)
    while True:
        client, _ = srv.accept()
        threading.Thread(target=_serve, args=(client, netns, port), daemon=True).start()


if __name__ == "__main__":
    forward(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]))
