"""What a backend needs for one download: settings, patterns, progress and the staging area."""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from modelport.storage.archive import _safe_relpath, archive_suffix
from modelport.storage.config import Patterns, Transfer
from modelport.storage.errors import (
    ConfigError,
    IntegrityError,
    NotFoundError,
    StorageError,
    display_uri,
)
from modelport.storage.progress import Progress

log = logging.getLogger("modelport.storage")
T = TypeVar("T", bound=Hashable)


@dataclass(frozen=True)
class Damage:
    """A downloaded object whose bytes do not match its announced checksum or size."""

    error: IntegrityError
    path: Path
    nbytes: int  # counted in the progress, to uncount before fetching it again
    files: int  # 1 if it was counted as a finished file


@dataclass
class Job:
    """One URI being fetched into ``payload`` (a hidden staging dir, published when complete)."""

    uri: str
    payload: Path
    transfer: Transfer
    patterns: Patterns
    progress: Progress
    # Relative names the backend identified as archives by other means than their suffix
    # (HTTP Content-Type).
    archive_hints: set[str] = field(default_factory=set)
    # The directory being filled: a local source that contains it must not read it back.
    dest: Path | None = None
    # Every local path handed out by target(): file path -> object name, and folder path ->
    # the first object name below it. Two object names can map to one path ("w.bin" and
    # "./w.bin"), and a path cannot be a file for one object and a folder for another.
    _files: dict[str, str] = field(default_factory=dict, repr=False)
    _dirs: dict[str, str] = field(default_factory=dict, repr=False)

    def bucket_and_key(self) -> tuple[str, str]:
        """`scheme://bucket/key-or-prefix` split, a missing bucket being a clear error."""
        try:
            parts = urlsplit(self.uri)
        except ValueError as exc:  # "s3://[bucket/x": a typo, not a fault
            raise ConfigError(self.uri, f"invalid URL: {exc}") from None
        if not parts.netloc:
            raise ConfigError(
                self.uri, f"no bucket in the URI (expected {parts.scheme}://bucket/path)"
            )
        return parts.netloc, parts.path.lstrip("/")

    def keep(self, rel: str, single: bool) -> bool:
        """Patterns apply to paths as they land in DEST; a single archive is filtered by member."""
        if single and archive_suffix(rel):
            return True
        return self.patterns.wants(rel)

    def target(self, rel: str, name: str | None = None) -> Path:
        """Local path for object ``rel``: refuses ``..``/absolute keys, creates parent dirs.

        ``name`` is how errors name the object (its full key; ``rel`` by default). Refuses an
        object whose path another object already has, or that is a folder of another's path
        (or the reverse): all targets are claimed before any download, and silently letting one
        overwrite the other would publish whichever finished last.
        """
        shown = rel if name is None else name
        try:
            safe = _safe_relpath(rel)
        except ValueError as exc:
            raise StorageError(self.uri, f"refusing object name {shown!r}: {exc}") from None
        if not safe:
            raise StorageError(self.uri, f"refusing empty object name {shown!r}")
        self._claim(safe, shown)
        path = self.payload / safe
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise StorageError(
                self.uri, f"object {rel!r} conflicts with an object of the same name as a folder"
            ) from None
        if path.is_dir():
            raise StorageError(self.uri, f"object {rel!r} conflicts with a folder of the same name")
        return path

    def _claim(self, safe: str, shown: str) -> None:
        if safe in self._files:
            raise StorageError(
                self.uri,
                f"objects {self._files[safe]!r} and {shown!r} would both be saved as {safe!r}",
            )
        if safe in self._dirs:
            raise StorageError(self.uri, self._clash(shown, safe, self._dirs[safe]))
        parts = safe.split("/")
        folders = ["/".join(parts[:i]) for i in range(1, len(parts))]
        for folder in folders:
            if folder in self._files:
                raise StorageError(self.uri, self._clash(self._files[folder], folder, shown))
        for folder in folders:
            self._dirs.setdefault(folder, shown)
        self._files[safe] = shown

    @staticmethod
    def _clash(file_obj: str, path: str, below: str) -> str:
        return (
            f"object {file_obj!r} would be saved as the file {path!r}, "
            f"which object {below!r} needs as a folder"
        )

    def nothing_found(self, where: str, listed: int) -> NotFoundError:
        if listed and self.patterns:
            return NotFoundError(
                self.uri,
                f"none of the {listed} objects under {where} match "
                "STORAGE_ALLOW_PATTERNS/STORAGE_IGNORE_PATTERNS",
            )
        return NotFoundError(self.uri, f"no objects under {where}")

    def fetch_intact(self, items: list[T], fetch: Callable[[list[T]], dict[T, Damage]]) -> None:
        """Run ``fetch`` on ``items``, then again on the damaged ones, with backoff.

        Corruption is nearly always in transit (a flipped bit, a proxy), so it is retried like a
        transient fault, up to ``MODELPORT_STORAGE_RETRIES`` times; only an object corrupted in
        every attempt is an :class:`IntegrityError`.
        """
        todo = items
        attempts = self.transfer.retries + 1
        for attempt in range(attempts):
            damaged = fetch(todo)
            if not damaged:
                return
            first = next(iter(damaged.values())).error
            if attempt + 1 == attempts:
                tries = "the only attempt" if attempts == 1 else f"each of {attempts} attempts"
                raise IntegrityError(self.uri, f"{first.cause} (corrupted in {tries})")
            log.warning("%s: %s; downloading it again", display_uri(self.uri), first.cause)
            for damage in damaged.values():
                damage.path.unlink(missing_ok=True)
                self.progress.forget(damage.nbytes, damage.files)
            todo = list(damaged)
            self.progress.sleep(min(0.25 * 2**attempt, 10.0))
