"""A canned HTTP server on a loopback port, for the tests of the load generators: there the server under load
is a stand-in, because those tests judge the client (what it sends, counts and records), not PaCa Serve."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class StubHandler(BaseHTTPRequestHandler):
    """Keep-alive handler base: subclasses define `do_POST` with `read_body` and `answer`; nothing is logged."""

    protocol_version = "HTTP/1.1"

    def read_body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def serving(handler: type[StubHandler], backlog: int | None = None) -> Iterator[str]:
    """Serve `handler` in threads on a free loopback port; yields the base URL. `backlog`: the listen queue
    (socketserver's default is 5)."""

    class Server(ThreadingHTTPServer):
        request_queue_size = backlog or ThreadingHTTPServer.request_queue_size

    http = Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{http.server_address[1]}"
    finally:
        http.shutdown()
        http.server_close()
