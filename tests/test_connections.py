"""Slow clients and connection floods, spoken with raw sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import time

import uvicorn
from uvicorn.server import ServerState

from modelport.base import connections
from tests.models import constant_model, iris_logistic
from tests.servers import wait_for

DEADLINE = 60.0


def _connect(server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE)
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    """Wait for the server to close the connection (EOF or reset); False on our timeout."""
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One whole HTTP/1.1 response from `sock`: (status, headers, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    while len(body) < int(headers.get("content-length", 0)):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


def _request(server, path: str) -> tuple[int, dict[str, str], bytes]:
    """One GET on a fresh connection: (status, headers, body)."""
    with _connect(server) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        return _read_response(sock)


def test_connection_that_never_finishes_its_head_is_closed(serve, tmp_path):
    iris_logistic(tmp_path)
    server = serve("sklearn", tmp_path, "--model_name=iris", "--request_header_timeout=1")
    partial = _connect(server)
    partial.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: test\r\n")  # no blank line
    silent = _connect(server)  # sends nothing at all
    with partial, silent:
        assert _closed_by_server(partial)
        assert _closed_by_server(silent)
    # A client that sends its head in time is served as before, on a kept-alive connection.
    with _connect(server) as sock:
        for _ in range(2):
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: test\r\n\r\n")
            assert _read_response(sock)[0] == 200


def test_a_request_head_beyond_the_size_cap_is_a_json_431_and_closed(serve, tmp_path):
    """httptools buffers a header until its end and sets no limit: one client used to grow
    the server by ~300 MB a second within the head deadline. Big but sane heads pass."""
    iris_logistic(tmp_path)
    server = serve("sklearn", tmp_path, "--model_name=iris", "--max_request_header_size=32k")
    with _connect(server) as sock:  # a 20 KB token: under the cap
        sock.sendall(
            b"GET /v2/health/live HTTP/1.1\r\nHost: test\r\n"
            + b"Authorization: Bearer "
            + b"t" * 20_000
            + b"\r\n\r\n"
        )
        assert _read_response(sock)[0] == 200
    with _connect(server) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: test\r\nX-Big: ")
        sent = 0
        with contextlib.suppress(ConnectionError):  # the server may close while we send
            while sent < 64 << 20:  # at most 64 MB: far beyond any read the cap allows
                sock.sendall(b"a" * 65536)
                sent += 65536
        status, headers, body = _read_response(sock)
        assert status == 431
        assert headers["connection"] == "close"
        assert "max_request_header_size" in json.loads(body)["error"]
        assert sent < 8 << 20  # refused after a few reads, not after the whole stream
    assert _request(server, "/v2/health/live")[0] == 200  # and the server serves on


def test_connections_beyond_the_cap_get_a_json_503(serve, tmp_path):
    iris_logistic(tmp_path)
    server = serve(
        "sklearn",
        tmp_path,
        "--model_name=iris",
        "--max_connections=2",
        "--request_header_timeout=120",
    )
    held = [_connect(server) for _ in range(2)]
    for sock in held:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\n")  # open, head still coming
    try:
        deadline = time.monotonic() + DEADLINE
        while (answer := _request(server, "/v2/models"))[0] != 503:  # until both are accepted
            assert time.monotonic() < deadline, answer
        status, headers, body = answer
        assert headers["content-type"] == "application/json"
        assert headers["connection"] == "close"
        assert "more than 2 open connections" in json.loads(body)["error"]
        # Probes are answered above the cap: a busy worker is not a dead one.
        assert _request(server, "/v2/health/live")[0] == 200
    finally:
        for sock in held:
            with contextlib.suppress(OSError):
                sock.close()
    deadline = time.monotonic() + DEADLINE
    while (status := _request(server, "/v2/models")[0]) != 200:
        assert time.monotonic() < deadline, status


def test_responses_of_every_kind_arrive_whole(serve, tmp_path):
    """The response head waits for its body (ResponseWriter): small answers, answers with
    no body write (HEAD), errors and streamed files all still arrive, whole."""
    iris_logistic(tmp_path)
    server = serve("sklearn", tmp_path, "--model_name=iris")
    body = json.dumps(
        {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}]}
    ).encode()
    with _connect(server) as sock:
        for _ in range(5):
            sock.sendall(
                b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: test\r\n"
                + f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            first = sock.recv(65536)
            head, _, rest = first.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            assert head.startswith(b"HTTP/1.1 200 ") and len(rest) == length, first
        sock.sendall(b"HEAD /v2/health/live HTTP/1.1\r\nHost: test\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:  # a HEAD answer has no body write to carry it
            head += sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"GET /v2/models/nope HTTP/1.1\r\nHost: test\r\n\r\n")
        status, _, answer = _read_response(sock)
        assert status == 404 and "nope" in json.loads(answer)["error"]
        sock.sendall(b"GET /docs/static/swagger-ui.css HTTP/1.1\r\nHost: test\r\n\r\n")
        status, headers, css = _read_response(sock)  # a file, streamed in chunks
        assert status == 200 and len(css) == int(headers["content-length"]) > 1000


class RecordingTransport(asyncio.Transport):
    """What uvicorn's protocol writes, call by call (the socket's side of the test)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def test_uvicorn_protocol_writes_each_response_once():
    """Through uvicorn's own protocol: head and body leave in one write, a HEAD answer (no
    body write) when the response completes, an interim 100 Continue at once."""

    async def app(scope, receive, send):
        await receive()
        body = b"" if scope["method"] == "HEAD" else b'{"ok":true}'
        headers = [(b"content-type", b"application/json"), (b"content-length", b"11")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    config = uvicorn.Config(app, http=connections.protocol_class(None, None), lifespan="off")
    config.load()
    protocol = config.http_protocol_class(config=config, server_state=ServerState(), app_state={})
    transport = RecordingTransport()
    protocol.connection_made(transport)

    async def exchange(request: bytes) -> list[bytes]:
        transport.writes.clear()
        protocol.data_received(request)
        for _ in range(100):  # let the app's task run to the end of the response
            if protocol.cycle is not None and protocol.cycle.response_complete:
                break
            await asyncio.sleep(0)
        return transport.writes

    writes = await exchange(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert len(writes) == 1 and writes[0].startswith(b"HTTP/1.1 200 ")
    assert writes[0].endswith(b'{"ok":true}')
    writes = await exchange(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert len(writes) == 1 and writes[0].startswith(b"HTTP/1.1 200 ")
    writes = await exchange(
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
    )
    assert writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]  # not held back: the client waits
    protocol.data_received(b"{}")
    for _ in range(100):
        if protocol.cycle.response_complete:
            break
        await asyncio.sleep(0)
    assert len(transport.writes) == 2 and transport.writes[1].startswith(b"HTTP/1.1 200 ")
    protocol.connection_lost(None)


def test_a_body_that_stops_arriving_closes_its_connection_and_frees_the_drain(serve, tmp_path):
    """A client announces a body and goes quiet: the connection is closed after
    --request_body_timeout, the request leaves the in-flight count (SIGTERM then exits at
    once instead of waiting out the grace), and a slow body that keeps flowing is served."""
    iris_logistic(tmp_path)
    server = serve(
        "sklearn",
        tmp_path,
        "--model_name=iris",
        "--request_body_timeout=1",
        "--graceful_shutdown_timeout=60",
    )
    body = json.dumps(
        {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}]}
    ).encode()
    head = (
        b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: test\r\n"
        + f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    )
    with _connect(server) as slow:  # the body in three parts, 0.6 s apart: never idle 1 s
        slow.sendall(head)
        for part in (body[:10], body[10:20], body[20:]):
            time.sleep(0.6)
            slow.sendall(part)
        assert _read_response(slow)[0] == 200
    stalled = _connect(server)
    with stalled:
        stalled.sendall(head + body[:10])  # and nothing more
        started = time.monotonic()
        assert _closed_by_server(stalled)
        assert time.monotonic() - started < DEADLINE / 2
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=30) == 0  # nothing left in flight to wait for


class _Responses:
    """Reads responses (and interim 100 Continues) one after another from one socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.data = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, "the server closed the connection"
        self.data += chunk

    def next(self) -> tuple[int, bytes]:
        while b"\r\n\r\n" not in self.data:
            self._fill()
        head, _, self.data = self.data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        length = int(headers.get("content-length", 0))
        while len(self.data) < length:
            self._fill()
        body, self.data = self.data[:length], self.data[length:]
        return int(lines[0].split()[1]), body


def _infer_request(rows: int, extra: bytes = b"") -> tuple[bytes, bytes]:
    body = json.dumps(
        {
            "inputs": [
                {"name": "x", "shape": [rows, 4], "datatype": "FP64", "data": [[1.5] * 4] * rows}
            ]
        }
    ).encode()
    head = (
        b"POST /v2/models/slow/infer HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n".encode()
        + extra
        + b"\r\n"
    )
    return head, body


def test_requests_the_server_holds_back_are_not_timed_out(serve, tmp_path):
    """The body deadline is for clients that stall, not for requests the server itself
    holds back: a pipelined request whose body waits (reading paused) behind a slow one,
    and a pipelined request whose client waits for its 100 Continue. Both used to close
    the connection after --request_body_timeout, losing the first request's answer too."""
    constant_model(tmp_path, 7, delay=2.5)
    server = serve(
        "sklearn",
        tmp_path,
        "--model_name=slow",
        "--request_body_timeout=0.5",
        "--max_batch_size=1",
    )
    first_head, first_body = _infer_request(1)
    big_head, big_body = _infer_request(15_000)  # ~200 KB: more than one read, so it waits
    assert len(big_body) > 150_000
    with _connect(server) as sock:
        sock.sendall(first_head + first_body)
        time.sleep(0.2)  # the first request is predicting (2.5 s)
        sock.sendall(big_head + big_body)
        responses = _Responses(sock)
        status, answer = responses.next()
        assert (status, json.loads(answer)) == (200, _slow_answer(1))
        status, answer = responses.next()
        assert status == 200
        assert json.loads(answer)["outputs"][0]["data"] == [7] * 15_000

    waiting_head, waiting_body = _infer_request(1, b"Expect: 100-continue\r\n")
    with _connect(server) as sock:
        sock.sendall(first_head + first_body)
        time.sleep(0.2)
        sock.sendall(waiting_head)  # and the body only after its 100 Continue (RFC 9110)
        responses = _Responses(sock)
        assert responses.next()[0] == 200
        assert responses.next() == (100, b"")
        sock.sendall(waiting_body)
        assert responses.next()[0] == 200


def _slow_answer(rows: int) -> dict[str, object]:
    output = {"name": "output-0", "datatype": "INT64", "shape": [rows], "data": [7] * rows}
    return {"model_name": "slow", "outputs": [output]}


def test_response_writer_passes_other_buffers_through():
    """Only a bytes response head is held; any other buffer (an app's memoryview body)
    goes straight to the socket, after a held head."""
    transport = RecordingTransport()
    writer = connections.ResponseWriter(transport)
    writer.write(memoryview(b"raw"))
    writer.write(b"HTTP/1.1 200 OK\r\n\r\n")
    writer.write(memoryview(b"body"))
    assert transport.writes == [b"raw", b"HTTP/1.1 200 OK\r\n\r\nbody"]


def test_response_writer_holds_only_a_response_head():
    """Inside a response every write is body, even one that looks like a status line (a
    streamed file, a body about HTTP); writelines keeps the order after a held head."""
    transport = RecordingTransport()
    writer = connections.ResponseWriter(transport)
    writer.write(b"HTTP/1.1 200 OK\r\n\r\n")
    writer.write(b"HTTP/1.1 200 is what the server said")  # body: sent with the head
    writer.write(b"HTTP/1.1 404 and so is this")  # body too: sent at once, not held
    writer.flush()  # the response ends
    writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")  # the next response's head: held
    writer.writelines([b"a", b"b"])
    assert transport.writes == [
        b"HTTP/1.1 200 OK\r\n\r\nHTTP/1.1 200 is what the server said",
        b"HTTP/1.1 404 and so is this",
        b"HTTP/1.1 204 No Content\r\n\r\nab",
    ]


def _counter_request(rows: int) -> bytes:
    body = json.dumps(
        {
            "inputs": [
                {"name": "x", "shape": [rows, 4], "datatype": "FP32", "data": [0.5] * rows * 4}
            ]
        }
    ).encode()
    return (
        b"POST /v2/models/counter/infer HTTP/1.1\r\nHost: test\r\n"
        b"Content-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


def test_a_request_whose_client_left_while_it_waited_is_not_predicted(serve, tmp_path):
    """A client that disconnects while its request waits for the model (behind a batch)
    takes its request away: it neither joins the next batch nor holds a queue place. It
    used to be predicted all the same, and counted as answered."""
    from tests.models import batch_size_model

    batch_size_model(tmp_path, delay=2.0)  # answers each row with the batch's row count
    server = serve("sklearn", tmp_path, "--model_name=counter", "--max_batch_size=16")
    with _connect(server) as busy:
        busy.sendall(_counter_request(1))  # runs alone, for 2 s
        time.sleep(0.3)
        with _connect(server) as leaving:
            leaving.sendall(_counter_request(3))  # waits for the model...
            time.sleep(0.3)
        # ...and its client is gone.
        time.sleep(0.3)
        with _connect(server) as staying:
            staying.sendall(_counter_request(1))
            status, _, body = _read_response(staying)
        assert status == 200
        assert json.loads(body)["outputs"][0]["data"] == [1]  # predicted without the 3 rows
        assert _read_response(busy)[0] == 200
    wait_for(lambda: '"status":499' in server.log())
    assert "Exception in ASGI application" not in server.log()
