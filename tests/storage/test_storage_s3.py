"""s3:// against a real moto server: single object, prefixes, siblings, errors, config, secrets."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile

import pytest

from modelport.storage.download import download
from modelport.storage.errors import (
    ConfigError,
    DownloadTimeoutError,
    NotFoundError,
    StorageError,
)
from tests.storage.archives import zip_bytes
from tests.storage.support import SECRET, moto_requests, run_cli, tree


def put(s3, bucket: str, objects: dict[str, bytes]) -> None:  # type: ignore[no-untyped-def]
    for key, body in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)


def test_single_object_saved_under_its_basename(s3_env, s3_admin, bucket, tmp_path):
    put(s3_admin, bucket, {"models/iris/model.joblib": b"M" * 100, "models/iris/other": b"x"})
    out = download(f"s3://{bucket}/models/iris/model.joblib", tmp_path / "dest")
    assert out == tmp_path / "dest"
    assert tree(out) == {"model.joblib": b"M" * 100}


def test_single_object_is_head_and_get_only(s3_env, s3_admin, bucket, tmp_path):
    """No LIST request for an exact key, so a GetObject-only policy is enough."""
    put(s3_admin, bucket, {"m/model.bin": b"abc", "m/model.bin.extra": b"no"})
    out = tmp_path / "d"
    seen = moto_requests(s3_env, lambda: download(f"s3://{bucket}/m/model.bin", out))
    assert tree(out) == {"model.bin": b"abc"}
    assert {m for m, _ in seen} <= {"HEAD", "GET"}
    assert not [u for _, u in seen if "list-type" in u or "prefix=" in u], seen
    assert any(m == "GET" and u.endswith("/m/model.bin") for m, u in seen), seen


def test_prefix_keeps_nested_tree_and_skips_sibling_prefix(s3_env, s3_admin, bucket, tmp_path):
    put(
        s3_admin,
        bucket,
        {
            "models/iris/model.joblib": b"1",
            "models/iris/sub/deep/weights.bin": b"2",
            "models/iris/": b"",  # folder marker
            "models/iris-v2/model.joblib": b"sibling",
            "models/irisfile": b"sibling-file",
            "models/iris/empty.txt": b"",
        },
    )
    for uri in (f"s3://{bucket}/models/iris", f"s3://{bucket}/models/iris/"):
        dest = tmp_path / uri[-1].replace("/", "slash")
        download(uri, dest)
        assert tree(dest) == {
            "model.joblib": b"1",
            "sub/deep/weights.bin": b"2",
            "empty.txt": b"",
        }


def test_whole_bucket(s3_env, s3_admin, bucket, tmp_path):
    put(s3_admin, bucket, {"a": b"1", "d/b": b"2"})
    assert tree(download(f"s3://{bucket}", tmp_path / "d")) == {"a": b"1", "d/b": b"2"}


def test_missing_bucket_key_and_empty_prefix(s3_env, s3_admin, bucket, tmp_path):
    with pytest.raises(NotFoundError, match="does not exist"):
        download("s3://no-such-bucket-xyz/model", tmp_path / "a")
    with pytest.raises(NotFoundError, match=r"no objects under s3://.*/nothing/"):
        download(f"s3://{bucket}/nothing", tmp_path / "b")
    put(s3_admin, bucket, {"models/iris-v2/x": b"1"})
    with pytest.raises(NotFoundError, match="no objects under"):
        download(f"s3://{bucket}/models/iris", tmp_path / "c")
    # DEST did not exist before: a failed run does not leave it behind.
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_large_object_in_ranged_parts(s3_env, s3_admin, bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("MODELPORT_STORAGE_PART_SIZE", str(5 * 1024 * 1024))
    body = os.urandom(1024 * 1024) * 13 + b"tail"
    s3_admin.put_object(Bucket=bucket, Key="big/model.bin", Body=body)  # single-part: MD5 ETag
    out = download(f"s3://{bucket}/big/model.bin", tmp_path / "d")
    data = (out / "model.bin").read_bytes()
    assert hashlib.sha256(data).digest() == hashlib.sha256(body).digest()


def test_archive_object_is_extracted(s3_env, s3_admin, bucket, tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("model/model.joblib")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
    put(s3_admin, bucket, {"arch/model.tar.gz": buf.getvalue()})
    assert tree(download(f"s3://{bucket}/arch/model.tar.gz", tmp_path / "d")) == {
        "model/model.joblib": b"abc"
    }


def test_lone_archive_in_a_subfolder_of_a_prefix_is_extracted(s3_env, s3_admin, bucket, tmp_path):
    # The archive was moved aside under its relative name, whose folder did not exist there:
    # a raw FileNotFoundError. Extracted at the top of DEST, as KServe does, and no empty
    # folder is left where the archive was.
    put(s3_admin, bucket, {"models/v1/model.zip": zip_bytes([("model.joblib", b"abc")])})
    dest = tmp_path / "d"
    assert tree(download(f"s3://{bucket}/models", dest)) == {"model.joblib": b"abc"}
    assert os.listdir(dest) == ["model.joblib"]


def test_unsafe_object_key_refused(s3_env, s3_admin, bucket, tmp_path):
    put(s3_admin, bucket, {"m/ok": b"1", "m/../../escape": b"2"})
    # S3 normalises nothing: the key literally holds "..". Listing "m/" returns it.
    s3_admin.put_object(Bucket=bucket, Key="m/sub/../../../evil", Body=b"x")
    dest = tmp_path / "inner" / "dest"
    with pytest.raises(StorageError, match="refusing object name"):
        download(f"s3://{bucket}/m", dest)
    assert not list(tmp_path.rglob("evil")) and not list(tmp_path.rglob("escape"))
    assert not dest.exists()


def test_rerun_is_idempotent_and_keeps_other_files(s3_env, s3_admin, bucket, tmp_path):
    put(s3_admin, bucket, {"p/a.bin": b"1", "p/d/b.bin": b"2"})
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "unrelated.txt").write_text("keep")
    download(f"s3://{bucket}/p", dest)
    first = tree(dest)
    download(f"s3://{bucket}/p", dest)
    assert tree(dest) == first == {"a.bin": b"1", "d/b.bin": b"2", "unrelated.txt": b"keep"}
    assert not [p for p in dest.iterdir() if p.name.startswith(".")]


def test_storage_config_and_override(s3_env, s3_admin, bucket, tmp_path, monkeypatch):
    put(s3_admin, bucket, {"m/model.bin": b"ok"})
    # Environment points nowhere; STORAGE_CONFIG (KServe's secret JSON) wins, as in KServe.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    cfg = {
        "type": "s3",
        "endpoint_url": "http://127.0.0.1:9",
        "access_key_id": "AKIDFROMCONFIG",
        "secret_access_key": SECRET,
        "region": "us-east-1",
        "verify_ssl": "0",
    }
    monkeypatch.setenv("STORAGE_CONFIG", json.dumps(cfg))
    monkeypatch.setenv("STORAGE_OVERRIDE_CONFIG", json.dumps({"endpoint_url": s3_env}))
    assert tree(download(f"s3://{bucket}/m", tmp_path / "d")) == {"model.bin": b"ok"}


def test_allow_and_ignore_patterns(s3_env, s3_admin, bucket, tmp_path, monkeypatch):
    put(
        s3_admin,
        bucket,
        {"m/a.safetensors": b"1", "m/b.bin": b"2", "m/cfg/config.json": b"3", "m/c.gguf": b"4"},
    )
    monkeypatch.setenv("STORAGE_ALLOW_PATTERNS", '["*.safetensors", "cfg/"]')
    assert set(tree(download(f"s3://{bucket}/m", tmp_path / "a"))) == {
        "a.safetensors",
        "cfg/config.json",
    }
    monkeypatch.delenv("STORAGE_ALLOW_PATTERNS")
    monkeypatch.setenv("STORAGE_IGNORE_PATTERNS", "*.bin,*.gguf")
    assert set(tree(download(f"s3://{bucket}/m", tmp_path / "b"))) == {
        "a.safetensors",
        "cfg/config.json",
    }
    monkeypatch.setenv("STORAGE_IGNORE_PATTERNS", "*")
    with pytest.raises(NotFoundError, match="match STORAGE_ALLOW_PATTERNS"):
        download(f"s3://{bucket}/m", tmp_path / "c")


def test_cli_failure_never_prints_secret(s3_env, bucket, tmp_path):
    env = dict(os.environ)
    env["STORAGE_CONFIG"] = json.dumps(
        {"type": "s3", "access_key_id": "AKIDCONFIGKEY99", "secret_access_key": SECRET + "-cfg"}
    )
    env["MODELPORT_STORAGE_LOG_LEVEL"] = "DEBUG"
    res = run_cli(f"s3://{bucket}/missing/model.bin", str(tmp_path / "d"))
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("modelport.storage: not found: s3://")
    res = run_cli(f"s3://{bucket}/x", str(tmp_path / "d"), env=env)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1].startswith("modelport.storage: not found: ")
    for out in (res.stdout, res.stderr):
        assert SECRET not in out and "AKIDCONFIGKEY99" not in out


def test_unreachable_endpoint_is_one_clean_error(s3_env, s3_admin, bucket, tmp_path, monkeypatch):
    put(s3_admin, bucket, {"m/a": b"1"})
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens on port 9
    with pytest.raises(StorageError, match="cannot connect") as err:
        download(f"s3://{bucket}/m", tmp_path / "d")
    assert SECRET not in str(err.value)


def test_deadline_stops_s3_transfer_without_partial_files(
    s3_env, s3_admin, bucket, tmp_path, monkeypatch
):
    s3_admin.put_object(Bucket=bucket, Key="m/model.bin", Body=os.urandom(12 * 1024 * 1024))
    monkeypatch.setenv("MODELPORT_STORAGE_PART_SIZE", str(5 * 1024 * 1024))
    monkeypatch.setenv("MODELPORT_STORAGE_DEADLINE", "0.000001")
    dest = tmp_path / "d"
    dest.mkdir()
    with pytest.raises(DownloadTimeoutError, match="deadline"):
        download(f"s3://{bucket}/m/model.bin", dest)
    assert list(dest.iterdir()) == []


def test_rerun_replaces_a_folder_by_a_file(s3_env, s3_admin, bucket, tmp_path):
    dest = tmp_path / "d"
    (dest / "model").mkdir(parents=True)
    (dest / "model" / "old.bin").write_bytes(b"old")
    put(s3_admin, bucket, {"p/model": b"new"})
    assert tree(download(f"s3://{bucket}/p", dest)) == {"model": b"new"}


@pytest.mark.parametrize(
    ("objects", "message"),
    [
        (
            {"p/w.bin": b"GOOD", "p/./w.bin": b"EVIL"},
            "objects 'p/./w.bin' and 'p/w.bin' would both be saved as 'w.bin'",
        ),
        (
            {"p/a": b"file", "p/a/b": b"nested"},
            "object 'p/a' would be saved as the file 'a', which object 'p/a/b' needs as a folder",
        ),
        (
            # Listed folder-first ("-" sorts before "."): the clash is found the other way round.
            {"p/a/-/x": b"nested", "p/a/.": b"file"},
            "object 'p/a/.' would be saved as the file 'a', which object 'p/a/-/x' needs as a folder",
        ),
    ],
    ids=["same-path", "file-then-folder", "folder-then-file"],
)
def test_keys_mapping_to_one_path_are_refused(s3_env, s3_admin, bucket, tmp_path, objects, message):
    put(s3_admin, bucket, objects)
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "model.bin").write_bytes(b"previous")
    with pytest.raises(StorageError) as err:
        download(f"s3://{bucket}/p", dest)
    assert message in str(err.value)
    assert tree(dest) == {"model.bin": b"previous"}


@pytest.mark.parametrize("endpoint", ["minio:9000", "http://[bad"])
def test_malformed_endpoint_is_a_config_error(s3_env, tmp_path, monkeypatch, endpoint):
    # boto3's ValueError escaped unmapped: "error: ValueError: Invalid endpoint".
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    with pytest.raises(ConfigError, match=r"AWS_ENDPOINT_URL .* is not a valid URL"):
        download("s3://bucket/models/iris", tmp_path / "d")
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("uri", ["s3://[bad/models", "gs://[bad/models"])
def test_malformed_bucket_uri_is_a_config_error(s3_env, tmp_path, uri):
    with pytest.raises(ConfigError, match="invalid URL"):
        download(uri, tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_key_with_a_name_longer_than_the_filesystem_allows_is_refused(
    s3_env, s3_admin, bucket, tmp_path
):
    # S3 keys reach 1024 bytes; a path component reaches 255: a raw OSError before.
    put(s3_admin, bucket, {"models/model.joblib": b"m", "models/" + "k" * 300: b"x"})
    with pytest.raises(StorageError, match=r"refusing object name .*longer than 255 bytes"):
        download(f"s3://{bucket}/models", tmp_path / "d")
    assert not (tmp_path / "d").exists()
