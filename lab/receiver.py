"""A webhook receiver standing in for on-call's phone: ``python -m lab.receiver HOST PORT FILE``
appends every POSTed body, with the time it arrived, to FILE as one JSON line."""

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer


def serve(host: str, port: int, path: str) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the http.server name)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                doc = json.loads(body)
            except ValueError:
                doc = {"raw": body.decode(errors="replace")}
            with open(path, "a") as f:
                f.write(json.dumps({"clock": time.time(), "body": doc}) + "\n")
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    HTTPServer((host, port), Handler).serve_forever()


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), sys.argv[3])
