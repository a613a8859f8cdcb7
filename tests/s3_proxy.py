"""A store that fills up: a loopback HTTP proxy in front of the tests' real S3 server.

moto never runs out of room, so the proxy passes every request through unchanged (the
signatures still check out: the client signed the proxy's address, which it forwards as
the ``Host``) until it is told to fill up; from then on it answers object writes as a
full MinIO server does (``507 XMinioStorageFull``), while reads and deletes still work.
It also keeps the method and path of every request, for tests that count them.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

#: Headers about one connection, not the request: the proxy sets its own.
_HOP = ("connection", "keep-alive", "transfer-encoding", "content-length")
_FULL = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>XMinioStorageFull</Code>'
         b"<Message>Storage backend has reached its minimum free drive threshold. Please "
         b"delete a few objects to proceed.</Message></Error>")


class FillingProxy:
    """The proxy, on a free loopback port; :attr:`endpoint` is its URL."""

    def __init__(self, upstream: str) -> None:
        self._upstream = urlsplit(upstream).netloc
        self._lock = threading.Lock()
        self._room: int | None = None
        self._under = ""
        self.requests: list[tuple[str, str]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def fill_after(self, writes: int, under: str) -> None:
        """Let ``writes`` more objects whose key contains ``under`` be written, then none."""
        with self._lock:
            self._room, self._under = writes, under

    def _admits(self, method: str, path: str) -> bool:
        """Whether a request goes through; counts the objects begun (a plain PUT, or a
        multipart upload's start) while room is left."""
        if method not in ("PUT", "POST"):
            return True
        with self._lock:
            if self._room is None:
                return True
            # The parts and the completion of an upload begun with room left go through.
            if "uploadId=" in urlsplit(path).query:
                return True
            if self._room <= 0:
                return False
            if self._under in path:
                self._room -= 1
            return True

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def _forward(self) -> None:
                proxy.requests.append((self.command, self.path))
                body = self._body()
                if not proxy._admits(self.command, self.path):
                    self._answer(507, [("Content-Type", "application/xml")], _FULL)
                    return
                upstream = http.client.HTTPConnection(proxy._upstream, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                    headers["Content-Length"] = str(len(body))
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    reply = upstream.getresponse()
                    data = reply.read()
                    kept = [(k, v) for k, v in reply.getheaders() if k.lower() not in _HOP]
                    if self.command == "HEAD":
                        kept.append(("Content-Length", reply.getheader("Content-Length", "0")))
                        data = None
                    self._answer(reply.status, kept, data)
                finally:
                    upstream.close()

            def _body(self) -> bytes:
                if "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
                    return self.rfile.read(int(self.headers.get("Content-Length") or 0))
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    continue
                return b"".join(chunks)

            def _answer(self, status: int, headers: list[tuple[str, str]],
                        data: bytes | None) -> None:
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                if data is not None:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if data:
                    self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

        return Handler

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
