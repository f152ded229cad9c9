"""Slow clients and connection floods, spoken with raw sockets."""

from __future__ import annotations

import contextlib
import json
import socket
import time

from tests.models import iris_logistic

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
