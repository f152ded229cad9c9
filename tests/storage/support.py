"""Helpers shared by the storage tests (imported as tests.storage.support)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import httpx

SECRET = "s3cr3t-Never-Print-Me-42"
ACCESS = "AKIDTESTACCESSKEY0001"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def moto_requests(endpoint: str, action: Callable[[], object]) -> list[tuple[str, str]]:
    """(method, url) of every request moto received while ``action`` ran (its recorder)."""
    httpx.post(endpoint + "/moto-api/recorder/reset-recording")
    httpx.post(endpoint + "/moto-api/recorder/start-recording")
    try:
        action()
    finally:
        httpx.post(endpoint + "/moto-api/recorder/stop-recording")
    text = httpx.get(endpoint + "/moto-api/recorder/download-recording").text
    rows = [json.loads(line) for line in text.replace("}{", "}\n{").splitlines() if line]
    return [(r["method"], r["url"]) for r in rows]


def tree(root: Path) -> dict[str, bytes | str]:
    """Relative path -> content (files) or '-> target' (symlinks), for whole-tree asserts."""
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = Path(dirpath, name)
            rel = p.relative_to(root).as_posix()
            out[rel] = f"-> {os.readlink(p)}" if p.is_symlink() else p.read_bytes()
    return out


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelport.storage", *args],
        capture_output=True,
        text=True,
        env=env if env is not None else dict(os.environ),
        timeout=120,
    )


def outcome_within(action: Callable[[], object], timeout: float) -> BaseException | None:
    """Run ``action`` in a thread; its exception (None if it returned). Fails the test if it is
    still running after ``timeout`` (a bound far above the behaviour under test)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            action()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout)
    assert not worker.is_alive(), f"still running after {timeout} s"
    return outcome[0]
