"""Byte counting shared by all backends: rate-limited progress lines, the deadline, cancellation.

Backends call :meth:`Progress.add` from their worker threads for every chunk, and it raises once
the download is cancelled. Chunks alone cannot enforce ``MODELPORT_STORAGE_DEADLINE``: a client
library may read in big blocks, so a server that trickles bytes (or stalls within the read
timeout) never completes one. A watchdog timer therefore cancels the download at the deadline,
independently of progress, and cancelling runs the abort hooks backends register (S3 shuts its
open response sockets down, so blocked reads return at once instead of after the read timeout).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

from modelport.storage.errors import DownloadTimeoutError, RedactFilter, StorageError, display_uri

log = logging.getLogger("modelport.storage")
log.addFilter(RedactFilter())


def human(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


class Progress:
    """Thread-safe byte counter that logs at most one line per ``interval`` seconds."""

    def __init__(self, uri: str, interval: float, deadline: float) -> None:
        self.uri = uri
        self.interval = interval
        self.start = time.monotonic()
        self.deadline_at = self.start + deadline if deadline > 0 else None
        self.deadline = deadline
        self.total = 0
        self.files_total = 0
        self.done = 0
        self.files_done = 0
        self._lock = threading.Lock()
        self._last_log = self.start
        self._cancelled = threading.Event()
        self._reason: StorageError | None = None
        self._hooks: list[Callable[[], None]] = []
        self._watchdog: threading.Timer | None = None
        if deadline > 0:
            self._watchdog = threading.Timer(deadline, self._expire)
            self._watchdog.daemon = True
            self._watchdog.start()

    def _expire(self) -> None:
        self.cancel(
            DownloadTimeoutError(
                self.uri,
                f"overall deadline of {self.deadline:g}s exceeded (MODELPORT_STORAGE_DEADLINE)",
            )
        )

    def close(self) -> None:
        """Stop the deadline watchdog (the download is over, one way or another)."""
        if self._watchdog is not None:
            self._watchdog.cancel()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self, reason: StorageError | None = None) -> None:
        """Stop the download: every worker's next :meth:`add` raises ``reason``; hooks run once.

        The first reason wins (a deadline stays a deadline even if parts fail afterwards).
        """
        with self._lock:
            if self._cancelled.is_set():
                return
            self._reason = reason or StorageError(self.uri, "cancelled after another part failed")
            self._cancelled.set()
            hooks, self._hooks = self._hooks, []
        for hook in hooks:
            with contextlib.suppress(Exception):  # an abort hook must not hide the reason
                hook()

    def on_cancel(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` when the download is cancelled (at once if it already is)."""
        with self._lock:
            if not self._cancelled.is_set():
                self._hooks.append(hook)
                return
        hook()

    def sleep(self, seconds: float) -> None:
        """Back off between attempts, waking early (and raising) if the download is cancelled."""
        self._cancelled.wait(seconds)
        self.check_deadline()

    def expect(self, nbytes: int, files: int = 1) -> None:
        """Announce work whose size is known up front (for the percentage)."""
        with self._lock:
            self.total += nbytes
            self.files_total += files

    def check_deadline(self) -> None:
        """Raise the cancellation reason (deadline, signal, failed part) if there is one."""
        if self.deadline_at is not None and time.monotonic() > self.deadline_at:
            self._expire()  # the timer may not have fired yet
        if self._cancelled.is_set():
            reason = self._reason
            assert reason is not None
            raise type(reason)(reason.uri, reason.cause)  # a fresh copy per raising thread

    def add(self, nbytes: int) -> None:
        """Count ``nbytes`` more; may log a line; raises when past the deadline."""
        now = time.monotonic()
        line = None
        with self._lock:
            self.done += nbytes
            if self.interval >= 0 and now - self._last_log >= self.interval:
                self._last_log = now
                line = self._line(now)
        if line:
            log.info("%s", line)
        self.check_deadline()

    def file_done(self) -> None:
        with self._lock:
            self.files_done += 1

    def forget(self, nbytes: int, files: int = 0) -> None:
        """Uncount a download that is thrown away to be fetched again (a corrupted object)."""
        with self._lock:
            self.done -= nbytes
            self.files_done -= files

    def _line(self, now: float) -> str:
        elapsed = max(now - self.start, 1e-6)
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        of = f" of {human(self.total)}" if self.total else ""
        files = f", {self.files_done}/{self.files_total} files" if self.files_total > 1 else ""
        return (
            f"{display_uri(self.uri)}: {human(self.done)}{of}{pct} at "
            f"{human(self.done / elapsed)}/s{files}"
        )

    def summary(self) -> str:
        elapsed = time.monotonic() - self.start
        return (
            f"downloaded {display_uri(self.uri)}: {human(self.done)} in {elapsed:.1f}s "
            f"({human(self.done / max(elapsed, 1e-6))}/s)"
        )
