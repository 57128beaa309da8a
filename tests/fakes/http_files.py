"""A tiny HTTP server on loopback that serves inputs as a catalog's hosts do, good or bad:
files, 404, 403, login pages, and links whose HEAD is refused (as presigned GET links are)."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    content_type: str = "video/mp4"
    head_status: int | None = None  # answer HEAD differently (403: signed for GET only)
    chunked: bool = False  # no Content-Length: the size is known only by reading
    truncate_first: int = 0  # this many GETs send half the body, then drop (-1: every one)


@dataclass
class HttpFiles:
    """``serve(path_or_bytes, name)`` -> URL; ``requests[(method, name)]`` counts what came."""

    routes: dict[str, Route] = field(default_factory=dict)
    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    _server: ThreadingHTTPServer | None = None

    def start(self) -> HttpFiles:
        files = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self, head: bool) -> None:
                name = self.path.lstrip("/").split("?")[0]
                files.requests[(self.command, name)] += 1
                route = files.routes.get(name, Route(404, b"not found", "text/plain"))
                status = route.head_status if head and route.head_status else route.status
                body = route.body
                start, end = 0, len(body) - 1
                rng = self.headers.get("Range", "")
                if not head and status == 200 and rng.startswith("bytes=") and body:
                    first, _, last = rng[6:].partition("-")
                    start = int(first or 0)
                    end = min(int(last), end) if last else end
                    status = 206
                self.send_response(status)
                self.send_header("Content-Type", route.content_type)
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(body)}")
                    body = body[start : end + 1]
                if route.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for i in range(0, len(body), 1024) if not head else ():
                        piece = body[i : i + 1024]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    if not head:
                        self.wfile.write(b"0\r\n\r\n")
                    return
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if head:
                    return
                if route.truncate_first and not head:
                    route.truncate_first -= route.truncate_first > 0
                    files.requests[("TRUNCATED", name)] += 1
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)  # mid-body: the client sees a short read
                    return
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._answer(head=False)

            def do_HEAD(self) -> None:
                self._answer(head=True)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def serve(self, content: Path | bytes, name: str, **route: Any) -> str:
        body = content.read_bytes() if isinstance(content, Path) else content
        self.routes[name] = Route(body=body, **route)
        return f"{self.base_url}/{name}"
