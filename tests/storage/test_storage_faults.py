"""When the network misbehaves: a trickle past the deadline and SIGTERM during a stall (S3), and
corrupted bodies (S3 and GCS), through tests/storage/faultproxy.py in front of moto / the GCS
emulator."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelport.storage.download import download
from modelport.storage.errors import DownloadTimeoutError, IntegrityError
from tests.storage.faultproxy import FaultProxy
from tests.storage.support import outcome_within, tree

BODY = os.urandom(256 * 1024) + b"end"


def _previous(tmp_path: Path, name: str = "dest") -> Path:
    """A destination holding a previous model, which a failed run must leave as it was."""
    dest = tmp_path / name
    dest.mkdir()
    (dest / "model.bin").write_bytes(b"previous good model")
    return dest


def _poll(condition: object, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.05)


def test_deadline_holds_against_a_trickling_server(
    s3_proxy: FaultProxy, s3_admin, bucket, tmp_path, monkeypatch
):
    """Every read gets a byte within the read timeout, but the body never ends: the deadline
    alone must stop the download (it used to be checked only when a 256 KiB block arrived)."""
    s3_admin.put_object(Bucket=bucket, Key="m/model.bin", Body=BODY)
    s3_proxy.mode = "trickle"
    monkeypatch.setenv("MODELPORT_STORAGE_DEADLINE", "4")
    dest = _previous(tmp_path)
    # 20 s: far beyond the 4 s deadline, far below the hours the trickle would take.
    error = outcome_within(lambda: download(f"s3://{bucket}/m/model.bin", dest), timeout=20)
    assert s3_proxy.stalled.is_set(), error  # the trickle really started
    assert isinstance(error, DownloadTimeoutError), error
    assert "MODELPORT_STORAGE_DEADLINE" in str(error)
    assert tree(dest) == {"model.bin": b"previous good model"}


@pytest.mark.parametrize("pairs", [1, 2])
def test_sigterm_during_a_stalled_download_exits_promptly_and_cleanly(
    s3_proxy: FaultProxy, s3_admin, bucket, tmp_path, pairs
):
    """Transfer threads are blocked in reads with a 60 s timeout; SIGTERM must not wait them
    out, must exit with 128+15, and must leave every DEST as it was (with 2 pairs, the
    downloads run on worker threads, which the signal does not interrupt by itself)."""
    args, dests = [], []
    for i in range(pairs):
        s3_admin.put_object(Bucket=bucket, Key=f"m{i}/model.bin", Body=BODY)
        dests.append(_previous(tmp_path, f"dest{i}"))
        args += [f"s3://{bucket}/m{i}/model.bin", str(dests[-1])]
    s3_proxy.mode = "stall"
    env = dict(os.environ, MODELPORT_STORAGE_READ_TIMEOUT="60")
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelport.storage", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        _poll(lambda: len(s3_proxy.object_gets) >= pairs or proc.poll() is not None)
        _poll(lambda: s3_proxy.stalled.is_set() or proc.poll() is not None)
        assert proc.poll() is None, proc.communicate()
        for dest in dests:
            assert [p for p in dest.iterdir() if p.name.startswith(".modelport-download-")]
        proc.send_signal(signal.SIGTERM)
        try:
            _out, err = proc.communicate(timeout=10)  # well below the 60 s read timeout
        except subprocess.TimeoutExpired:
            pytest.fail("SIGTERM did not stop a stalled S3 download within 10 s")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "modelport.storage: interrupted, exiting with 143"
    for dest in dests:
        assert tree(dest) == {"model.bin": b"previous good model"}  # staging removed too


@pytest.mark.parametrize("checked_by", ["flexible-checksum", "md5-etag"])
def test_corrupted_body_is_fetched_again(
    s3_proxy: FaultProxy, s3_admin, bucket, tmp_path, checked_by
):
    s3_admin.put_object(Bucket=bucket, Key="m/model.bin", Body=BODY)
    s3_proxy.mode = "corrupt"
    s3_proxy.strip_checksums = checked_by == "md5-etag"
    dest = _previous(tmp_path)
    download(f"s3://{bucket}/m/model.bin", dest)
    assert tree(dest) == {"model.bin": BODY}
    assert len(s3_proxy.object_gets) == 2


@pytest.mark.parametrize("checked_by", ["flexible-checksum", "md5-etag"])
def test_always_corrupted_body_is_an_integrity_failure(
    s3_proxy: FaultProxy, s3_admin, bucket, tmp_path, monkeypatch, checked_by
):
    s3_admin.put_object(Bucket=bucket, Key="m/model.bin", Body=BODY)
    s3_proxy.mode = "corrupt"
    s3_proxy.corrupt_times = -1
    s3_proxy.strip_checksums = checked_by == "md5-etag"
    monkeypatch.setenv("MODELPORT_STORAGE_RETRIES", "2")
    dest = _previous(tmp_path)
    with pytest.raises(IntegrityError, match="checksum mismatch") as err:
        download(f"s3://{bucket}/m/model.bin", dest)
    assert err.value.kind == "integrity"
    assert "m/model.bin" in str(err.value) and "corrupted in each of 3 attempts" in str(err.value)
    # Which check caught it: botocore's CRC32 (moto keeps the one boto3 sent) or our MD5.
    assert ("Expected checksum" in str(err.value)) == (checked_by == "flexible-checksum")
    assert len(s3_proxy.object_gets) == 3
    assert tree(dest) == {"model.bin": b"previous good model"}


@pytest.mark.parametrize("layout", ["whole", "ranged-parts"])
def test_corrupted_gcs_blob_is_fetched_again(
    gcs, gcs_proxy: FaultProxy, tmp_path, monkeypatch, layout
):
    """Whole blobs are checked by the library (x-goog-hash), ranged parts by our crc32c."""
    body = BODY if layout == "whole" else os.urandom(1024 * 1024) * 11 + b"end"
    monkeypatch.setenv("MODELPORT_STORAGE_PART_SIZE", str(5 * 1024 * 1024))
    gcs.blob("m/model.bin").upload_from_string(body)
    gcs_proxy.mode = "corrupt"
    dest = _previous(tmp_path)
    download(f"gs://{gcs.name}/m/model.bin", dest)
    assert (dest / "model.bin").read_bytes() == body
    parts = 1 if layout == "whole" else 3
    assert len(gcs_proxy.object_gets) == 2 * parts


def test_always_corrupted_gcs_blob_is_an_integrity_failure(gcs, gcs_proxy: FaultProxy, tmp_path):
    gcs.blob("m/model.bin").upload_from_string(BODY)
    gcs_proxy.mode = "corrupt"
    gcs_proxy.corrupt_times = -1
    dest = _previous(tmp_path)
    with pytest.raises(IntegrityError, match="checksum mismatch") as err:
        download(f"gs://{gcs.name}/m/model.bin", dest)
    assert err.value.kind == "integrity"
    assert "corrupted in each of 2 attempts" in str(err.value)  # MODELPORT_STORAGE_RETRIES=1
    assert len(gcs_proxy.object_gets) == 2
    assert tree(dest) == {"model.bin": b"previous good model"}


def test_deadline_stops_a_stalled_gcs_read(gcs, gcs_proxy: FaultProxy, tmp_path, monkeypatch):
    """The body stalls after 1 KiB: the deadline, not the 60 s read timeout, ends it."""
    gcs.blob("m/model.bin").upload_from_string(BODY)
    gcs_proxy.mode = "stall"
    monkeypatch.setenv("MODELPORT_STORAGE_READ_TIMEOUT", "60")
    monkeypatch.setenv("MODELPORT_STORAGE_DEADLINE", "4")
    dest = _previous(tmp_path)
    error = outcome_within(lambda: download(f"gs://{gcs.name}/m/model.bin", dest), timeout=20)
    assert gcs_proxy.stalled.is_set(), error
    assert isinstance(error, DownloadTimeoutError) and "deadline" in str(error), error
    assert tree(dest) == {"model.bin": b"previous good model"}
