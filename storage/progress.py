"""Byte counting shared by all backends: rate-limited progress lines and the overall deadline.

Backends call :meth:`Progress.add` from their worker threads for every chunk; it is the single
place where the deadline is checked, so a slow trickle cannot outlive ``MODELPORT_STORAGE_DEADLINE``
even when every individual read is within its timeout.
"""

from __future__ import annotations

import logging
import threading
import time

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

    def cancel(self) -> None:
        """Make every worker's next :meth:`add` raise, so a failed download stops quickly."""
        self._cancelled.set()

    def expect(self, nbytes: int, files: int = 1) -> None:
        """Announce work whose size is known up front (for the percentage)."""
        with self._lock:
            self.total += nbytes
            self.files_total += files

    def check_deadline(self) -> None:
        if self._cancelled.is_set():
            raise StorageError(self.uri, "cancelled after another part failed")
        if self.deadline_at is not None and time.monotonic() > self.deadline_at:
            raise DownloadTimeoutError(
                self.uri,
                f"overall deadline of {self.deadline:g}s exceeded (MODELPORT_STORAGE_DEADLINE)",
            )

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
