"""A tiny real HTTP server standing in as the predictor where the test must see what a
component sent (headers, retries): it records every request and answers from a script."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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
