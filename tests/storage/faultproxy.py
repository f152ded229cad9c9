"""A loopback proxy in front of moto or the GCS emulator that misbehaves like real networks do.

The client talks to the proxy (``AWS_ENDPOINT_URL``, ``STORAGE_EMULATOR_HOST``); metadata and
listings pass through unchanged, and each object body answer (``is_body``) is delivered
according to ``mode``:

- ``"pass"``: as moto sent it;
- ``"trickle"``: headers, then one byte every 50 ms, until the client goes away (every read
  completes well within any read timeout, yet the body never ends);
- ``"stall"``: headers and the first KiB, then nothing until the client goes away;
- ``"corrupt"``: one byte flipped in the first ``corrupt_times`` answers (``-1``: all of them).

``strip_checksums`` removes the checksum headers (S3's ``x-amz-checksum-*``, GCS's
``x-goog-hash``), so that only the checks modelport makes itself can see a corruption. moto's
signature checks are off, so forwarded requests stay valid.
"""

from __future__ import annotations

import http.server
import select
import socket
import threading
import time
from collections.abc import Callable

import httpx

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "date"}
_CHECKSUM_HEADERS = ("x-amz-checksum-", "x-goog-hash")


def s3_object(path: str) -> bool:
    """A GetObject: ``/bucket/key`` (path style), not a bucket listing."""
    return path.split("?", 1)[0].count("/") >= 2


def gcs_media(path: str) -> bool:
    """A GCS media download (JSON API ``alt=media``), not object metadata."""
    return "alt=media" in path


class FaultProxy:
    def __init__(self, upstream: str, is_body: Callable[[str], bool]) -> None:
        self.upstream = upstream
        self.is_body = is_body
        self.mode = "pass"
        self.corrupt_times = 1
        self.strip_checksums = False
        self.object_gets: list[str] = []
        self.stalled = threading.Event()  # a GetObject answer is being held back
        self.stop = threading.Event()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                proxy._forward(self, "HEAD")

            def do_GET(self) -> None:
                proxy._forward(self, "GET")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.client = httpx.Client(timeout=30)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _forward(self, h: http.server.BaseHTTPRequestHandler, method: str) -> None:
        headers = {k: v for k, v in h.headers.items() if k.lower() not in _HOP}
        res = self.client.request(method, self.upstream + h.path, headers=headers)
        body = res.content
        is_object = method == "GET" and res.status_code in (200, 206) and self.is_body(h.path)
        if not is_object:  # links in metadata (GCS mediaLink) must lead back to the proxy
            body = body.replace(self.upstream.encode(), self.url.encode())
        if is_object:
            self.object_gets.append(h.path)
            nth = len(self.object_gets)
            if self.mode == "corrupt" and (self.corrupt_times < 0 or nth <= self.corrupt_times):
                i = len(body) // 2
                body = body[:i] + bytes([body[i] ^ 0xFF]) + body[i + 1 :]
        h.send_response(res.status_code)
        for key, value in res.headers.multi_items():
            lower = key.lower()
            if lower in _HOP or (self.strip_checksums and lower.startswith(_CHECKSUM_HEADERS)):
                continue
            h.send_header(key, value)
        length = res.headers.get("content-length", "0") if method == "HEAD" else len(body)
        h.send_header("Content-Length", str(length))
        h.end_headers()
        if method == "HEAD":
            return
        try:
            if is_object and self.mode == "trickle":
                self._trickle(h, body)
            elif is_object and self.mode == "stall":
                h.wfile.write(body[:1024])
                h.wfile.flush()
                self.stalled.set()
                self._hold(h.connection)
            else:
                h.wfile.write(body)
        except OSError:
            h.close_connection = True  # the client went away: what these tests wait for

    def _trickle(self, h: http.server.BaseHTTPRequestHandler, body: bytes) -> None:
        for i in range(len(body)):
            if self.stop.is_set():
                break
            h.wfile.write(body[i : i + 1])
            h.wfile.flush()
            self.stalled.set()
            time.sleep(0.05)
        h.close_connection = True

    def _hold(self, conn: socket.socket) -> None:
        """Send nothing more until the client closes its end (or the test ends)."""
        while not self.stop.is_set():
            readable, _, _ = select.select([conn], [], [], 0.1)
            if readable and not conn.recv(1, socket.MSG_PEEK):
                break
        raise ConnectionAbortedError

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()
        self.client.close()
