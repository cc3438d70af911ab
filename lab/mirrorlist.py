"""A small mirrorlist-like HTTP service: answers a list of mirror URLs for ?release=&arch=&repo=,
as mirrorlist.centos.org did for yum. Used inside lab namespaces only."""

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

MIRRORS = ["http://mirror%d.example.org/centos/" % i for i in range(1, 6)]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection, as yum's urlgrabber did

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        q = parse_qs(urlparse(self.path).query)
        release = q.get("release", ["9"])[0]
        arch = q.get("arch", ["x86_64"])[0]
        repo = q.get("repo", ["os"])[0]
        body = "".join("%s%s/%s/%s/\n" % (m, release, repo, arch) for m in MIRRORS).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def serve(host: str, port: int) -> None:
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer((host, port), Handler).serve_forever()


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
