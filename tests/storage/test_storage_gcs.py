"""gs:// against gcp-storage-emulator (STORAGE_EMULATOR_HOST): same rules as S3."""

from __future__ import annotations

import hashlib
import os

import pytest

from modelport.storage.download import download
from modelport.storage.errors import NotFoundError, StorageError
from tests.storage.support import tree


def put(bucket, objects: dict[str, bytes]) -> None:  # type: ignore[no-untyped-def]
    for name, body in objects.items():
        bucket.blob(name).upload_from_string(body)


def test_single_blob(gcs, tmp_path):
    put(gcs, {"models/iris/model.joblib": b"M" * 10, "models/iris/model.joblib.bak": b"no"})
    out = download(f"gs://{gcs.name}/models/iris/model.joblib", tmp_path / "d")
    assert tree(out) == {"model.joblib": b"M" * 10}


def test_prefix_nested_tree_without_sibling(gcs, tmp_path):
    put(
        gcs,
        {
            "models/iris/model.joblib": b"1",
            "models/iris/a/b/c.bin": b"2",
            "models/iris-v2/model.joblib": b"sibling",
            "models/irisx": b"sibling-file",
        },
    )
    out = download(f"gs://{gcs.name}/models/iris", tmp_path / "d")
    assert tree(out) == {"model.joblib": b"1", "a/b/c.bin": b"2"}


def test_large_blob_in_ranged_parts_is_checksummed(gcs, tmp_path, monkeypatch):
    monkeypatch.setenv("MODELPORT_STORAGE_PART_SIZE", str(5 * 1024 * 1024))
    body = os.urandom(1024 * 1024) * 12 + b"end"
    put(gcs, {"big/model.bin": body})
    out = download(f"gs://{gcs.name}/big/model.bin", tmp_path / "d")
    assert hashlib.sha256((out / "model.bin").read_bytes()).digest() == (
        hashlib.sha256(body).digest()
    )


def test_missing_bucket_and_empty_prefix(gcs, tmp_path):
    with pytest.raises(NotFoundError, match="not found"):
        download("gs://no-such-bucket-xyz/model", tmp_path / "a")
    put(gcs, {"models/iris-v2/x": b"1"})
    with pytest.raises(NotFoundError, match=r"no objects under gs://.*/models/iris/"):
        download(f"gs://{gcs.name}/models/iris", tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_patterns(gcs, tmp_path, monkeypatch):
    put(gcs, {"m/a.safetensors": b"1", "m/b.bin": b"2"})
    monkeypatch.setenv("STORAGE_IGNORE_PATTERNS", '["*.bin"]')
    assert tree(download(f"gs://{gcs.name}/m", tmp_path / "d")) == {"a.safetensors": b"1"}


def test_blob_names_mapping_to_one_path_are_refused(gcs, tmp_path):
    put(gcs, {"p/w.bin": b"GOOD", "p/./w.bin": b"EVIL", "q/a": b"file", "q/a/b": b"nested"})
    with pytest.raises(StorageError, match=r"objects 'p/\./w\.bin' and 'p/w\.bin' would both"):
        download(f"gs://{gcs.name}/p", tmp_path / "d")
    with pytest.raises(StorageError, match="object 'q/a' would be saved as the file 'a', which"):
        download(f"gs://{gcs.name}/q", tmp_path / "e")
    assert not (tmp_path / "d").exists() and not (tmp_path / "e").exists()
