"""Real local servers for the storage tests: moto S3, gcp-storage-emulator, a threaded HTTP server.

All bind 127.0.0.1 on free ports, start once per session and are stopped at the end.
"""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.storage.faultproxy import FaultProxy, gcs_media, s3_object
from tests.storage.support import ACCESS, SECRET, free_port

BIN = Path(sys.executable).parent

_ENV_TO_CLEAR = (
    "STORAGE_CONFIG",
    "STORAGE_OVERRIDE_CONFIG",
    "STORAGE_ALLOW_PATTERNS",
    "STORAGE_IGNORE_PATTERNS",
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_CA_BUNDLE",
    "AWS_PROFILE",
    "S3_VERIFY_SSL",
    "awsAnonymousCredential",
    "STORAGE_EMULATOR_HOST",
    "GOOGLE_APPLICATION_CREDENTIALS",
)


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early: {proc.args}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"server did not start: {url}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ambient credentials or configs; short timeouts so failure tests stay fast."""
    for name in _ENV_TO_CLEAR:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("MODELPORT_STORAGE_RETRIES", "1")
    monkeypatch.setenv("MODELPORT_STORAGE_CONNECT_TIMEOUT", "2")
    monkeypatch.setenv("MODELPORT_STORAGE_READ_TIMEOUT", "5")
    monkeypatch.setenv("MODELPORT_STORAGE_PROGRESS_INTERVAL", "1")


# ---------------------------------------------------------------- S3 (moto) --


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    exe = shutil.which("moto_server", path=str(BIN)) or "moto_server"
    recording = tmp_path_factory.mktemp("moto") / "recording.jsonl"
    proc = subprocess.Popen(
        [exe, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "MOTO_RECORDER_FILEPATH": str(recording)},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(url + "/moto-api/", proc)
        yield url
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def s3_admin(moto_endpoint: str):  # type: ignore[no-untyped-def]
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        aws_access_key_id=ACCESS,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    )


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch, moto_endpoint: str) -> str:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return moto_endpoint


@pytest.fixture
def bucket(s3_admin) -> str:  # type: ignore[no-untyped-def]
    name = f"b-{uuid.uuid4().hex[:12]}"
    s3_admin.create_bucket(Bucket=name)
    return name


# ------------------------------------------------------ GCS (emulator) --


@pytest.fixture(scope="session")
def gcs_host() -> Iterator[str]:
    port = free_port()
    exe = shutil.which("gcp-storage-emulator", path=str(BIN)) or "gcp-storage-emulator"
    proc = subprocess.Popen(
        [exe, "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(url + "/storage/v1/b", proc)
        yield url
    finally:
        _stop(proc)


@pytest.fixture
def gcs(monkeypatch: pytest.MonkeyPatch, gcs_host: str):  # type: ignore[no-untyped-def]
    """A fresh bucket on the emulator; the env points the code under test at it."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_host)
    client = storage.Client(project="test", credentials=AnonymousCredentials())
    return client.create_bucket(f"g-{uuid.uuid4().hex[:12]}")


# ------------------------------------------------------------- HTTP --

Route = Callable[[http.server.BaseHTTPRequestHandler], None]


class HTTPFixture:
    """A threaded HTTP server whose routes tests register per path."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        fixture = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                fixture.requests.append((self.path, dict(self.headers.items())))
                route = fixture.routes.get(path)
                if route is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                route(self)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return self.base + path

    def file(self, path: str, body: bytes, content_type: str = "application/octet-stream") -> str:
        def route(h: http.server.BaseHTTPRequestHandler) -> None:
            h.send_response(200)
            h.send_header("Content-Type", content_type)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)

        self.routes[path] = route
        return self.url(path)

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        def route(h: http.server.BaseHTTPRequestHandler) -> None:
            h.send_response(status)
            h.send_header("Location", location)
            h.send_header("Content-Length", "0")
            h.end_headers()

        self.routes[path] = route
        return self.url(path)

    def truncated(self, path: str, body: bytes, announced: int) -> str:
        """Announces ``announced`` bytes, sends ``body`` and closes the connection."""

        def route(h: http.server.BaseHTTPRequestHandler) -> None:
            h.send_response(200)
            h.send_header("Content-Type", "application/octet-stream")
            h.send_header("Content-Length", str(announced))
            h.end_headers()
            h.wfile.write(body)
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)

        self.routes[path] = route
        return self.url(path)

    def status(self, path: str, code: int) -> str:
        def route(h: http.server.BaseHTTPRequestHandler) -> None:
            h.send_response(code)
            h.send_header("Content-Length", "0")
            h.end_headers()

        self.routes[path] = route
        return self.url(path)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def http_server() -> Iterator[HTTPFixture]:
    srv = HTTPFixture()
    try:
        yield srv
    finally:
        srv.close()


# ------------------------------------------------------ faults (proxies) --


@pytest.fixture
def s3_proxy(s3_env: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """moto behind a misbehaving proxy; the code under test talks to the proxy."""
    proxy = FaultProxy(s3_env, s3_object)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture
def gcs_proxy(gcs, gcs_host: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """The GCS emulator behind a misbehaving proxy (the ``gcs`` bucket is made directly)."""
    proxy = FaultProxy(gcs_host, gcs_media)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
    try:
        yield proxy
    finally:
        proxy.close()
