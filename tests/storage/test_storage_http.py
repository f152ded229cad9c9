"""http(s):// against a local threaded server: content types, archives, redirects, failures."""

from __future__ import annotations

import gzip
import http.server
import itertools
import os
import select
import socket
import time
from pathlib import Path

import pytest

from modelport.storage.download import download
from modelport.storage.errors import (
    ArchiveError,
    AuthError,
    ConfigError,
    DownloadTimeoutError,
    NotFoundError,
    StorageError,
    TLSError,
)
from tests.storage.archives import FILES, benign, malicious
from tests.storage.support import outcome_within, run_cli, tree

_n = itertools.count()


def uniq(name: str) -> str:
    return f"/{next(_n)}/{name}"


def test_plain_file_any_content_type_query_ignored(http_server, tmp_path):
    url = http_server.file(uniq("model.joblib"), b"abc", content_type="text/html; charset=utf-8")
    out = download(url + "?X-Amz-Signature=deadbeef&v=2", tmp_path / "d")
    assert tree(out) == {"model.joblib": b"abc"}


@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz", "tgz"])
def test_archive_by_name(http_server, tmp_path, kind):
    url = http_server.file(uniq(f"model.{kind}"), benign(kind), content_type="text/plain")
    assert tree(download(url, tmp_path / "d")) == FILES


@pytest.mark.parametrize(
    ("kind", "ctype"),
    [("zip", "application/zip"), ("tar", "application/x-tar"), ("tgz", "application/gzip")],
)
def test_archive_by_content_type(http_server, tmp_path, kind, ctype):
    url = http_server.file(uniq("download"), benign(kind), content_type=ctype)
    assert tree(download(url, tmp_path / "d")) == FILES


def test_gzip_that_is_not_a_tar_stays_a_file(http_server, tmp_path):
    body = gzip.compress(b"weights")
    url = http_server.file(uniq("weights.gz"), body, content_type="application/gzip")
    assert tree(download(url, tmp_path / "d")) == {"weights.gz": body}


def test_not_an_archive(http_server, tmp_path):
    url = http_server.file(uniq("model.zip"), b"<html>login page</html>", "text/html")
    with pytest.raises(ArchiveError, match="not an archive"):
        download(url, tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_status_errors(http_server, tmp_path):
    with pytest.raises(NotFoundError, match="HTTP 404"):
        download(http_server.url(uniq("missing.bin")), tmp_path / "a")
    with pytest.raises(AuthError, match="HTTP 403"):
        download(http_server.status(uniq("secret.bin"), 403), tmp_path / "b")


def test_redirects_followed_with_a_limit(http_server, tmp_path, monkeypatch):
    final = http_server.file(uniq("model.bin"), b"redirected")
    a = http_server.redirect(uniq("a"), final, 301)
    b = http_server.redirect(uniq("model.bin"), a, 307)
    assert tree(download(b, tmp_path / "d")) == {"model.bin": b"redirected"}
    loop = uniq("loop.bin")
    http_server.redirect(loop, loop)
    monkeypatch.setenv("MODELPORT_STORAGE_MAX_REDIRECTS", "3")
    with pytest.raises(StorageError, match="more than 3 redirects"):
        download(http_server.url(loop), tmp_path / "e")


def test_host_headers_sent_only_to_their_host(http_server, tmp_path, monkeypatch):
    path = uniq("model.bin")

    def guarded(h):  # type: ignore[no-untyped-def]
        ok = h.headers.get("Authorization") == "Bearer tok-123456"
        body = b"ok" if ok else b""
        h.send_response(200 if ok else 401)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    http_server.routes[path] = guarded
    monkeypatch.setenv("127.0.0.1-headers", '{"Authorization": "Bearer tok-123456"}')
    assert tree(download(http_server.url(path), tmp_path / "d")) == {"model.bin": b"ok"}
    # Redirect to another host name (localhost): the 127.0.0.1 headers must not follow.
    other = http_server.url(path).replace("127.0.0.1", "localhost")
    start = len(http_server.requests)
    with pytest.raises(AuthError):
        download(http_server.redirect(uniq("model.bin"), other), tmp_path / "e")
    assert http_server.requests[start][1].get("Authorization") == "Bearer tok-123456"
    assert "Authorization" not in http_server.requests[-1][1]


def test_host_headers_not_sent_to_another_port(http_server, tmp_path, monkeypatch):
    from tests.storage.conftest import HTTPFixture

    # Same host name, another port: another service, which must not get the token.
    other = HTTPFixture()
    try:
        final = other.file(uniq("model.bin"), b"elsewhere")
        monkeypatch.setenv("127.0.0.1-headers", '{"Authorization": "Bearer tok-123456"}')
        start = len(http_server.requests)
        out = download(http_server.redirect(uniq("model.bin"), final), tmp_path / "d")
        assert tree(out) == {"model.bin": b"elsewhere"}
        assert http_server.requests[start][1].get("Authorization") == "Bearer tok-123456"
        assert [r[1].get("Authorization") for r in other.requests] == [None]
    finally:
        other.close()


def test_host_headers_not_sent_after_https_to_http_downgrade(http_server, tmp_path, monkeypatch):
    import http.server
    import threading

    final = http_server.file(uniq("model.bin"), b"plain")

    class Redirect(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", final)
            self.send_header("Content-Length", "0")
            self.end_headers()

    srv, cafile = _tls_server(tmp_path, Redirect, san=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("SSL_CERT_FILE", str(cafile))
        monkeypatch.setenv("127.0.0.1-headers", '{"Authorization": "Bearer tok-123456"}')
        start = len(http_server.requests)
        url = f"https://127.0.0.1:{srv.server_address[1]}/model.bin"
        assert tree(download(url, tmp_path / "d")) == {"model.bin": b"plain"}
        # The token was sent over TLS only; the clear-text hop got no Authorization.
        assert [r[1].get("Authorization") for r in http_server.requests[start:]] == [None]
    finally:
        srv.shutdown()
        srv.server_close()


def test_redirect_to_unsupported_scheme_is_a_config_error_without_retry(
    http_server, tmp_path, monkeypatch
):
    monkeypatch.setenv("MODELPORT_STORAGE_RETRIES", "3")
    path = uniq("model.bin")
    url = http_server.redirect(path, "file:///etc/passwd")
    start = len(http_server.requests)
    with pytest.raises(ConfigError, match="redirected to an unsupported scheme 'file://'"):
        download(url, tmp_path / "d")
    assert len(http_server.requests) - start == 1  # refused at once, not retried
    assert not (tmp_path / "d").exists()


def test_closed_mid_body_leaves_no_partial_file(http_server, tmp_path):
    url = http_server.truncated(uniq("model.bin"), b"x" * 100_000, announced=1_000_000)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "model.bin").write_bytes(b"previous good model")
    with pytest.raises(StorageError, match=r"closed mid-body|ended after"):
        download(url, dest)
    assert tree(dest) == {"model.bin": b"previous good model"}
    assert [p.name for p in dest.iterdir()] == ["model.bin"]  # no staging dir left


def test_transient_503_is_retried(http_server, tmp_path):
    path, calls = uniq("model.bin"), []

    def flaky(h):  # type: ignore[no-untyped-def]
        calls.append(1)
        body = b"finally" if len(calls) > 1 else b""
        h.send_response(200 if body else 503)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    http_server.routes[path] = flaky
    assert tree(download(http_server.url(path), tmp_path / "d")) == {"model.bin": b"finally"}
    assert len(calls) == 2


def test_read_timeout(http_server, tmp_path, monkeypatch):
    path = uniq("slow.bin")

    def slow(h):  # type: ignore[no-untyped-def]
        h.send_response(200)
        h.send_header("Content-Length", "10")
        h.end_headers()
        h.wfile.write(b"12345")
        h.wfile.flush()
        time.sleep(2)

    http_server.routes[path] = slow
    monkeypatch.setenv("MODELPORT_STORAGE_READ_TIMEOUT", "0.5")
    monkeypatch.setenv("MODELPORT_STORAGE_RETRIES", "0")
    with pytest.raises(DownloadTimeoutError, match="timeout"):
        download(http_server.url(path), tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_overall_deadline(http_server, tmp_path, monkeypatch):
    path = uniq("trickle.bin")

    def trickle(h):  # type: ignore[no-untyped-def]
        h.send_response(200)
        h.send_header("Content-Length", "100")
        h.end_headers()
        for _ in range(100):
            h.wfile.write(b"x")
            h.wfile.flush()
            time.sleep(0.03)

    http_server.routes[path] = trickle
    monkeypatch.setenv("MODELPORT_STORAGE_DEADLINE", "0.5")
    start = time.monotonic()
    with pytest.raises(DownloadTimeoutError, match="deadline"):
        download(http_server.url(path), tmp_path / "d")
    assert time.monotonic() - start < 2.0  # stopped mid-trickle, not after the whole body


def test_overall_deadline_stops_a_stalled_read(http_server, tmp_path, monkeypatch):
    """No byte arrives at all: the deadline, not the 60 s read timeout, ends the download."""
    path = uniq("stalled.bin")

    def stall(h):  # type: ignore[no-untyped-def]
        h.send_response(200)
        h.send_header("Content-Length", "100")
        h.end_headers()
        h.wfile.write(b"x" * 10)
        h.wfile.flush()
        end = time.monotonic() + 90
        while time.monotonic() < end:  # hold until the client goes away
            readable, _, _ = select.select([h.connection], [], [], 0.1)
            if readable and not h.connection.recv(1, socket.MSG_PEEK):
                break
        h.close_connection = True

    http_server.routes[path] = stall
    monkeypatch.setenv("MODELPORT_STORAGE_READ_TIMEOUT", "60")
    monkeypatch.setenv("MODELPORT_STORAGE_DEADLINE", "1")
    error = outcome_within(lambda: download(http_server.url(path), tmp_path / "d"), timeout=20)
    assert isinstance(error, DownloadTimeoutError) and "deadline" in str(error), error
    assert not (tmp_path / "d").exists()


def test_cli_malicious_archive_over_http_one_clear_line(http_server, tmp_path):
    name, data, entry = malicious()["zip-dotdot"]
    url = http_server.file(uniq(name), data)
    dest = tmp_path / "dest"
    res = run_cli(url + "?token=abcdef", str(dest))
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("modelport.storage: archive: http://127.0.0.1:")
    assert entry in last and "token=abcdef" not in res.stderr
    assert not (tmp_path / "escaped.txt").exists() and not dest.exists()


def test_progress_lines_are_rate_limited(http_server, tmp_path):
    path = uniq("progress.bin")

    def trickle(h):  # type: ignore[no-untyped-def]
        h.send_response(200)
        h.send_header("Content-Length", str(40 * 65536))
        h.end_headers()
        for _ in range(40):
            h.wfile.write(b"x" * 65536)
            h.wfile.flush()
            time.sleep(0.03)

    http_server.routes[path] = trickle
    env = dict(os.environ, MODELPORT_STORAGE_PROGRESS_INTERVAL="0.3")
    res = run_cli(http_server.url(path), str(tmp_path / "d"), env=env)
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if "/s" in ln and " of 2.5 MiB" in ln]
    assert 1 <= len(lines) <= 8, res.stderr  # ~1.2 s of transfer, one line per 0.3 s at most
    assert "%" in lines[0] and ("KiB/s" in lines[0] or "MiB/s" in lines[0])
    assert "downloaded http://" in res.stderr


def _tls_server(
    tmp_path: Path, handler: type[http.server.BaseHTTPRequestHandler], san: bool = False
) -> tuple[http.server.ThreadingHTTPServer, Path]:
    """A TLS server on 127.0.0.1 with a fresh self-signed certificate (returned as a CA file).
    Without ``san`` the certificate names the host only in the CN, which clients refuse."""
    import datetime
    import ipaddress
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if san:
        alt = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        builder = builder.add_extension(alt, critical=False)
    cert = builder.sign(key, hashes.SHA256())
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    return srv, tmp_path / "c.pem"


def test_tls_failure_is_reported_as_tls(tmp_path):
    import threading

    srv, _ = _tls_server(tmp_path, http.server.BaseHTTPRequestHandler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"https://127.0.0.1:{srv.server_address[1]}/model.bin"
        with pytest.raises(TLSError, match="CERTIFICATE_VERIFY_FAILED"):
            download(url, tmp_path / "d")
    finally:
        srv.shutdown()
        srv.server_close()


def _gzip_route(body: bytes, cut: int | None, length: bool):  # type: ignore[no-untyped-def]
    """Serves ``body`` gzip-encoded, only its first ``cut`` encoded bytes if given; with a
    Content-Length that counts exactly what is sent, or none (the close ends the body)."""
    encoded = gzip.compress(body)
    sent = encoded if cut is None else encoded[:cut]

    def route(h):  # type: ignore[no-untyped-def]
        h.send_response(200)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Encoding", "gzip")
        if length:
            h.send_header("Content-Length", str(len(sent)))
        else:
            h.send_header("Connection", "close")
            h.close_connection = True
        h.end_headers()
        h.wfile.write(sent)
        h.wfile.flush()

    return route


@pytest.mark.parametrize("length", [True, False], ids=["lying-length", "close-delimited"])
def test_gzip_encoded_body_cut_short_is_never_accepted(http_server, tmp_path, length):
    # The transfer ends cleanly (the length the server announced, or its close), but the gzip
    # stream is incomplete: the decoded file is truncated and must not be published.
    body = os.urandom(200_000)
    path = uniq("model.bin")
    http_server.routes[path] = _gzip_route(body, cut=100_000, length=length)
    dest = tmp_path / "d"
    with pytest.raises(StorageError, match="gzip stream ended early"):
        download(http_server.url(path), dest)
    assert not dest.exists()
    http_server.routes[path] = _gzip_route(body, cut=None, length=length)
    assert tree(download(http_server.url(path), dest)) == {"model.bin": body}


def test_malformed_url_is_a_config_error(tmp_path):
    # urlsplit's ValueError escaped unmapped: "error: ValueError: Invalid IPv6 URL".
    with pytest.raises(ConfigError, match="invalid URL"):
        download("http://[::1/model.joblib", tmp_path / "d")
    assert not (tmp_path / "d").exists()
