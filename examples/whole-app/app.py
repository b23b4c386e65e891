"""The web process of the whole-app sample: standard library only, answers 200 on $PORT."""

import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Hello(BaseHTTPRequestHandler):
    """Answers every GET with the instance's name."""

    def do_GET(self) -> None:
        body = f"Hello from whole-app (web.{os.environ.get('INSTANCE_INDEX', '?')})\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # the worker's lines are what the logs are for


def main() -> None:
    port = int(os.environ["PORT"])
    server = ThreadingHTTPServer(("0.0.0.0", port), Hello)
    # fence stops an instance with TERM: leave quietly with status 0.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"whole-app web listening on port {port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
