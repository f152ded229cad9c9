"""A tiny real HTTP server standing in as the predictor where the test must see what a
component sent (headers, retries): it records every request and answers from a script. And
a raw-socket one for answers and connection closes no HTTP server library would produce."""

from __future__ import annotations

import itertools
import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# The V2 answer of a one-output model, and the V1 answer, for any request.
V2_ANSWER = {
    "model_name": "fake",
    "outputs": [{"name": "output-0", "datatype": "INT64", "shape": [1], "data": [1]}],
}
V1_ANSWER = {"predictions": [1]}


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakePredictor:
    """Answers `script` statuses in order (then 200); records every request in `seen`."""

    script: list[int] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    port: int = 0

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"


@contextmanager
def fake_predictor(script: list[int] | None = None) -> Iterator[FakePredictor]:
    fake = FakePredictor(list(script or []))
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            with lock:
                fake.seen.append(
                    Seen(
                        self.command,
                        self.path,
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                    )
                )
                status = fake.script.pop(0) if fake.script else 200
            if status != 200:
                doc: dict = {"error": f"scripted {status}"}
            elif self.path.startswith("/v2/"):
                doc = {"name": "fake", "ready": True} if self.command == "GET" else V2_ANSWER
            else:
                doc = {"name": "fake", "ready": True} if self.command == "GET" else V1_ANSWER
            payload = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


class Closing(bytes):
    """Raw bytes after which the raw predictor closes the connection."""


# How a raw predictor answers one request: `(connection number, request number on that
# connection, request head)` -> the raw bytes to send (`Closing` ones: then close), or None
# to close the connection without answering.
RawScript = Callable[[int, int, bytes], bytes | None]


@dataclass
class RawPredictor:
    """A predictor written on bare sockets, for answers no HTTP server library sends:
    connections closed between or instead of answers, malformed heads and bodies."""

    connections: int = 0
    requests: int = 0
    port: int = 0

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"


def http_answer(status: int, body: Any, extra_headers: bytes = b"") -> bytes:
    """One raw HTTP/1.1 answer; a body that is not bytes is sent as JSON."""
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    return b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s" % (
        status,
        len(payload),
        extra_headers,
        payload,
    )


def _read_head(connection: socket.socket) -> bytes | None:
    """One request's head (its body read and dropped), or None when the peer closed."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        data = connection.recv(65536)
        if not data:
            return None
        buffer += data
    head, rest = buffer.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        data = connection.recv(65536)
        if not data:
            return None
        rest += data
    return head


@contextmanager
def raw_predictor(script: RawScript) -> Iterator[RawPredictor]:
    fake = RawPredictor()
    lock = threading.Lock()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    fake.port = listener.getsockname()[1]

    def serve(connection: socket.socket, number: int) -> None:
        with connection:
            for index in itertools.count():
                try:
                    head = _read_head(connection)
                except OSError:
                    return
                if head is None:
                    return
                with lock:
                    fake.requests += 1
                answer = script(number, index, head)
                if answer is None:
                    return
                connection.sendall(answer)
                if isinstance(answer, Closing):
                    return

    def accept() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:  # the listener was closed: the test is over
                return
            with lock:
                fake.connections += 1
                number = fake.connections - 1
            threading.Thread(target=serve, args=(connection, number), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        listener.close()
