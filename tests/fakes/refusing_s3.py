"""An S3 endpoint on loopback that answers every request 503 SlowDown and counts them.

It shows how many requests one storage call really sends: every retry layer under ours
(botocore's, s3fs's ``_error_wrapper``) would multiply them.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


class RefusingS3:
    def __init__(self) -> None:
        self.requests: list[str] = []
        seen = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # answers botocore's Expect: 100-continue

            def log_message(self, *args: Any) -> None:
                pass

            def answer(self) -> None:
                seen.append(f"{self.command} {self.path}")
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                self.send_response(503)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(SLOW_DOWN)))
                self.end_headers()
                self.wfile.write(SLOW_DOWN)

            do_GET = do_HEAD = do_PUT = do_POST = answer

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    @property
    def storage_options(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.server.server_address[1]}"
        return {
            "key": "test",
            "secret": "test",
            "client_kwargs": {"endpoint_url": url, "region_name": "us-east-1"},
        }


@contextmanager
def refusing_s3() -> Iterator[RefusingS3]:
    fake = RefusingS3()
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()
