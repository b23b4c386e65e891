"""A minimal web app for fence: standard library only, listening on $PORT."""

import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from greeting import greet


class Hello(BaseHTTPRequestHandler):
    """Answers every GET with a greeting naming the instance."""

    def do_GET(self) -> None:
        body = (greet(os.environ.get("INSTANCE_INDEX")) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main() -> None:
    port = int(os.environ.get("PORT", "8080"))
    server = ThreadingHTTPServer(("0.0.0.0", port), Hello)
    # fence stops an instance with TERM: leave quietly with status 0.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"python-hello listening on port {port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
