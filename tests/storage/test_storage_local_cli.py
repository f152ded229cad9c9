"""Local paths, file://, pvc://, /mnt/models, unsupported schemes, the CLI and atomicity."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelport.storage.download import download
from modelport.storage.errors import (
    ConfigError,
    NotFoundError,
    StorageError,
    UnsupportedSchemeError,
)
from tests.storage.support import run_cli, tree


@pytest.fixture
def model_src(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "model.joblib").write_bytes(b"m")
    (src / "sub" / "cfg.json").write_bytes(b"{}")
    return src


def test_local_dir_and_file_uri_are_linked(model_src, tmp_path):
    for i, uri in enumerate((str(model_src), f"file://{model_src}")):
        out = download(uri, tmp_path / f"d{i}")  # not tmp_path / "/tmp": that is /tmp itself
        assert (out / "model.joblib").is_symlink()  # KServe links local sources
        assert (out / "model.joblib").read_bytes() == b"m"
        assert (out / "sub" / "cfg.json").read_bytes() == b"{}"


def test_local_copy_mode(model_src, tmp_path, monkeypatch):
    monkeypatch.setenv("MODELPORT_STORAGE_LOCAL_COPY", "true")
    out = download(str(model_src), tmp_path / "d")
    assert tree(out) == {"model.joblib": b"m", "sub/cfg.json": b"{}"}


def test_pvc_uri_maps_to_mount(model_src, tmp_path, monkeypatch):
    monkeypatch.setenv("MODELPORT_PVC_ROOT", str(tmp_path))
    out = download("pvc://my-claim/src/sub", tmp_path / "d")
    assert (out / "cfg.json").read_bytes() == b"{}"
    with pytest.raises(NotFoundError, match="for PVC"):
        download("pvc://my-claim/nope", tmp_path / "e")


def test_mnt_models_is_noop(tmp_path):
    assert download("/mnt/models", tmp_path / "d") == tmp_path / "d"
    assert not (tmp_path / "d").exists()


def test_unsupported_scheme_lists_supported(tmp_path):
    with pytest.raises(UnsupportedSchemeError, match=r"'ftp://'.*s3://, gs://, http://, https://"):
        download("ftp://host/model", tmp_path / "d")


def test_missing_local_path(tmp_path):
    with pytest.raises(NotFoundError):
        download(str(tmp_path / "nope"), tmp_path / "d")


def test_cli_usage_and_pairs(model_src, tmp_path):
    res = run_cli(str(model_src))
    assert res.returncode == 2 and "usage:" in res.stderr
    res = run_cli(
        str(model_src), str(tmp_path / "a"), f"file://{model_src}/sub", str(tmp_path / "b")
    )
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "a" / "model.joblib").exists() and (tmp_path / "b" / "cfg.json").exists()
    res = run_cli(str(model_src), str(tmp_path / "c"), "hdfs://nn/x", str(tmp_path / "e"))
    assert res.returncode == 1
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("modelport.storage:")]
    assert errors == [
        "modelport.storage: unsupported scheme: hdfs://nn/x: unsupported storage scheme "
        "'hdfs://'; supported: s3://, gs://, http://, https://, file://, pvc://, a local path"
    ]
    assert (tmp_path / "c" / "model.joblib").exists()


def test_sigterm_mid_download_leaves_no_partial_files(http_server, tmp_path):
    path = "/sigterm/model.bin"

    def trickle(h):  # type: ignore[no-untyped-def]
        h.send_response(200)
        h.send_header("Content-Length", str(10_000_000))
        h.end_headers()
        try:
            for _ in range(200):
                h.wfile.write(b"x" * 10_000)
                h.wfile.flush()
                time.sleep(0.05)
        except OSError:
            pass

    http_server.routes[path] = trickle
    dest = tmp_path / "dest"
    dest.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelport.storage", http_server.url(path), str(dest)],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    staged = []
    while time.monotonic() < deadline and not staged:
        staged = [p for p in dest.rglob("model.bin") if p.stat().st_size > 0]
        time.sleep(0.05)
    assert staged and staged[0].parent.parent.name.startswith(".modelport-download-")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode != 0
    assert os.listdir(dest) == [], err


def test_stale_staging_of_dead_process_is_removed(model_src, tmp_path):
    dest = tmp_path / "d"
    stale = dest / ".modelport-download-999999-abc" / "payload"
    stale.mkdir(parents=True)
    (stale / "half.bin").write_bytes(b"half")
    download(str(model_src), dest)
    assert sorted(os.listdir(dest)) == ["model.joblib", "sub"]


# Runs the CLI with a SIGTERM delivered to itself right after the first rename into DEST, the
# worst moment: the rest of the new model is still staged and the old one half replaced.
_SIGTERM_MID_PUBLISH = """
import os, signal, sys
from modelport.storage import download as d
from modelport.storage.__main__ import main

real_publish, real_replace = d._publish, os.replace

def replace(src, dst):
    real_replace(src, dst)
    os.replace = real_replace
    os.kill(os.getpid(), signal.SIGTERM)

def publish(payload, dest, stage):
    os.replace = replace
    real_publish(payload, dest, stage)

d._publish = publish
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_while_publishing_never_leaves_a_mixed_dest(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(b"new a")
    (src / "b.bin").write_bytes(b"new b")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "a.bin").write_bytes(b"old a")
    (dest / "b.bin").write_bytes(b"old b")
    monkeypatch.setenv("MODELPORT_STORAGE_LOCAL_COPY", "true")
    res = subprocess.run(
        [sys.executable, "-c", _SIGTERM_MID_PUBLISH, str(src), str(dest)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 128 + signal.SIGTERM, res.stderr
    assert tree(dest) == {"a.bin": b"new a", "b.bin": b"new b"}, res.stderr  # finished, whole


@pytest.mark.parametrize(
    ("op", "fails_on"),
    [
        ("replace", "m_dir"),  # the new entry cannot be moved in (old one already set aside)
        ("rename", "z.bin"),  # the old entry cannot be set aside (earlier ones already new)
    ],
)
def test_publish_failure_midway_restores_dest(tmp_path, monkeypatch, op, fails_on):
    src = tmp_path / "src"
    (src / "m_dir").mkdir(parents=True)
    for rel in ("a.bin", "m_dir/w.bin", "n.bin", "z.bin"):
        (src / rel).write_bytes(b"new " + rel.encode())
    dest = tmp_path / "dest"
    (dest / "m_dir").mkdir(parents=True)
    for rel in ("a.bin", "m_dir/w.bin", "m_dir/old-only.bin", "keep.txt", "z.bin"):
        (dest / rel).write_bytes(b"old " + rel.encode())
    before = tree(dest)
    monkeypatch.setenv("MODELPORT_STORAGE_LOCAL_COPY", "true")

    # Stands in for a rename the kernel refuses (EACCES on a root-owned dir, EXDEV, ENOSPC...).
    real = getattr(os, op)
    failed: list[str] = []

    def flaky(src_path, dst_path):  # type: ignore[no-untyped-def]
        in_dest = Path(dst_path if op == "replace" else src_path)  # the DEST side of the move
        if in_dest == dest / fails_on:
            failed.append(fails_on)
            raise PermissionError(13, "Permission denied", str(src_path))
        return real(src_path, dst_path)

    monkeypatch.setattr(os, op, flaky)
    with pytest.raises(StorageError) as err:
        download(str(src), dest)
    assert failed == [fails_on]
    assert f"cannot move {fails_on!r} into {dest}: Permission denied; left as it was" in str(
        err.value
    )
    assert ".modelport-download-" not in str(err.value)
    assert tree(dest) == before  # every entry old, none new, nothing missing
    assert sorted(os.listdir(dest)) == ["a.bin", "keep.txt", "m_dir", "z.bin"]  # no staging


def test_pvc_path_must_stay_under_the_pvc_root(tmp_path, monkeypatch):
    pvc = tmp_path / "pvc"
    (pvc / "model").mkdir(parents=True)
    (pvc / "model" / "model.joblib").write_bytes(b"m")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_bytes(b"secret")
    (pvc / "escape").symlink_to(tmp_path / "outside")
    monkeypatch.setenv("MODELPORT_PVC_ROOT", str(pvc))
    for uri in (
        "pvc://claim/../outside/secret.txt",
        "pvc://claim/model/../../outside",
        "pvc://claim/escape/secret.txt",  # a symlink on the claim leading out of it
    ):
        with pytest.raises(ConfigError, match="resolves outside the PVC mount"):
            download(uri, tmp_path / "d")
        assert not (tmp_path / "d").exists()
    # ".." that stays on the claim is fine.
    out = download("pvc://claim/model/../model", tmp_path / "ok")
    assert (out / "model.joblib").read_bytes() == b"m"


@pytest.mark.parametrize("copy", ["false", "true"])
def test_symlinked_directories_in_source_are_brought_along(tmp_path, monkeypatch, copy):
    shared = tmp_path / "shared" / "tokenizer"
    (shared / "deep").mkdir(parents=True)
    (shared / "vocab.json").write_bytes(b"{}")
    (shared / "deep" / "merges.txt").write_bytes(b"m")
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.bin").write_bytes(b"w")
    (src / "tokenizer").symlink_to("../shared/tokenizer")
    (src / "tok2").symlink_to(shared)  # the same directory again, not nested: twice
    monkeypatch.setenv("MODELPORT_STORAGE_LOCAL_COPY", copy)
    out = download(str(src), tmp_path / "d")
    files = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert files == {
        "model.bin": b"w",
        "tok2/deep/merges.txt": b"m",
        "tok2/vocab.json": b"{}",
        "tokenizer/deep/merges.txt": b"m",
        "tokenizer/vocab.json": b"{}",
    }
    # Directories are recreated for real, as for any other source directory.
    assert (out / "tokenizer").is_dir() and not (out / "tokenizer").is_symlink()


def test_symlink_loop_in_source_is_an_error(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "model.bin").write_bytes(b"w")
    (src / "sub" / "again").symlink_to("..")
    with pytest.raises(StorageError, match="'sub/again' is a symlink to one of its ancestors"):
        download(str(src), tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_unreadable_source_directory_is_an_error(tmp_path, monkeypatch):
    src = tmp_path / "src"
    (src / "weights").mkdir(parents=True)
    (src / "config.json").write_bytes(b"{}")
    (src / "weights" / "w.bin").write_bytes(b"w")
    # chmod does not stop root (the tests may run as root): refuse the listing instead, as
    # the kernel does for a uid without read permission on the directory.
    real_scandir = os.scandir

    def scandir(path):  # type: ignore[no-untyped-def]
        if not isinstance(path, int) and Path(path) == src / "weights":  # rmtree passes fds
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    dest = tmp_path / "d"
    with pytest.raises(StorageError, match="cannot read directory 'weights': Permission denied"):
        download(str(src), dest)
    assert not dest.exists()


@pytest.mark.parametrize("copy", ["false", "true"])
def test_source_that_is_the_destination_is_left_intact(model_src, monkeypatch, copy):
    # Linking a file onto itself replaced it by a symlink to itself and deleted the file.
    monkeypatch.setenv("MODELPORT_STORAGE_LOCAL_COPY", copy)
    before = tree(model_src)
    for uri in (str(model_src), f"file://{model_src}/", f"{model_src}/sub/.."):
        assert download(uri, model_src) == model_src
        assert tree(model_src) == before


@pytest.mark.parametrize("inside", ["model.joblib", "sub", "sub/cfg.json"])
def test_source_inside_the_destination_is_refused(model_src, inside):
    before = tree(model_src)
    with pytest.raises(ConfigError, match="is inside the destination"):
        download(str(model_src / inside), model_src)
    assert tree(model_src) == before


def test_destination_inside_the_source_is_not_copied_into_itself(model_src):
    # DEST holds the previous run's files and the staging directory: walking it as part of
    # the source nested a copy of DEST inside DEST on every run.
    dest = model_src / "serving"
    for _ in range(3):
        download(str(model_src), dest)
        assert sorted(os.listdir(dest)) == ["model.joblib", "sub"]
        assert tree(dest) == {
            "model.joblib": f"-> {model_src / 'model.joblib'}",
            "sub/cfg.json": f"-> {model_src / 'sub' / 'cfg.json'}",
        }


@pytest.mark.parametrize("kind", ["dangling-link", "fifo"])
def test_uncopyable_source_file_is_one_clear_error(model_src, tmp_path, monkeypatch, kind):
    # shutil's FileNotFoundError / SpecialFileError escaped as they were: a generic error
    # naming a staging path in the CLI, a traceback from a server's --model_dir.
    monkeypatch.setenv("MODELPORT_STORAGE_LOCAL_COPY", "true")
    bad = model_src / "sub" / "weights.bin"
    if kind == "fifo":
        os.mkfifo(bad)
    else:
        bad.symlink_to(tmp_path / "gone")
    dest = tmp_path / "d"
    with pytest.raises(StorageError, match=r"cannot copy 'sub/weights.bin': ") as info:
        download(str(model_src), dest)
    assert ".modelport-download-" not in str(info.value)
    assert not dest.exists()


@pytest.mark.parametrize(
    ("env", "cause"),
    [
        (
            {"MODELPORT_STORAGE_DEADLINE": "soon"},
            "MODELPORT_STORAGE_DEADLINE must be a number, got 'soon'",
        ),
        ({"STORAGE_CONFIG": "{not json"}, "STORAGE_CONFIG is not valid JSON (line 1)"),
        ({"AWS_CA_BUNDLE": "/no/such/ca.pem"}, "CA bundle file /no/such/ca.pem does not exist"),
    ],
)
def test_cli_config_error_line_names_the_uri(tmp_path, env, cause):
    # The URI slot of '<kind>: <uri>: <cause>' held the setting's name, or 's3:'.
    res = run_cli("s3://bucket/models/iris", str(tmp_path / "d"), env={**os.environ, **env})
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == (
        f"modelport.storage: config: s3://bucket/models/iris: {cause}"
    )


@pytest.mark.parametrize("copy", ["false", "true"])
def test_links_inside_a_pvc_must_stay_on_the_claim(tmp_path, monkeypatch, copy):
    # Only the URI's own path was confined: a link below it was followed out of the mount,
    # and in copy mode the initializer's own file landed in DEST.
    pvc = tmp_path / "pvc"
    (pvc / "model" / "sub").mkdir(parents=True)
    (pvc / "model" / "model.joblib").write_bytes(b"m")
    (pvc / "shared.bin").write_bytes(b"s")
    (pvc / "model" / "sub" / "shared.bin").symlink_to(pvc / "shared.bin")  # on the claim: fine
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "token").write_bytes(b"secret")
    monkeypatch.setenv("MODELPORT_PVC_ROOT", str(pvc))
    monkeypatch.setenv("MODELPORT_STORAGE_LOCAL_COPY", copy)
    assert sorted(tree(download("pvc://claim/model", tmp_path / "ok"))) == [
        "model.joblib",
        "sub/shared.bin",
    ]
    for name, target in (("token", "outside/token"), ("dir", "outside")):
        link = pvc / "model" / "sub" / name
        link.symlink_to(tmp_path / target)
        with pytest.raises(ConfigError, match=r"'sub/.*' resolves outside the PVC mount"):
            download("pvc://claim/model", tmp_path / "d")
        assert not (tmp_path / "d").exists()
        link.unlink()


def test_destination_that_cannot_be_created_is_one_clear_error(model_src, tmp_path):
    # mkdir's NotADirectoryError escaped raw: a traceback from a server's --model_dir.
    (tmp_path / "file").write_bytes(b"x")
    dest = tmp_path / "file" / "models"
    with pytest.raises(StorageError, match=r"cannot write to .*file/models: Not a directory"):
        download(str(model_src), dest)
    res = run_cli(str(model_src), str(dest))
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == (
        f"modelport.storage: error: {model_src}: cannot write to {dest}: Not a directory"
    )


@pytest.mark.parametrize(
    "setting",
    [
        "MODELPORT_STORAGE_RETRIES=inf",
        "MODELPORT_STORAGE_CONCURRENCY=nan",
        "MODELPORT_STORAGE_DEADLINE=nan",
    ],
)
def test_non_finite_number_setting_is_a_config_error(model_src, tmp_path, monkeypatch, setting):
    # float() accepts them: int() then raised a raw OverflowError/ValueError, and a NaN
    # deadline silently meant no deadline at all.
    name, value = setting.split("=")
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=f"{name} must be a finite number, got '{value}'"):
        download(str(model_src), tmp_path / "d")
    assert not (tmp_path / "d").exists()
