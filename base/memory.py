"""Keeping a worker's resident memory near what its models need (glibc malloc on Linux).

glibc gives each thread that allocates its own malloc arena (up to 8 per core) and hands a
freed block back to the OS only when it sits at the top of its heap; its mmap threshold
also rises after a large block is freed, so later large blocks come from the heap. After a
60 MB request every predict thread's arena keeps tens of MB it no longer uses, RSS stays
there, and `--memory_budget` (which reads RSS) evicts models for memory no model holds:

- `tune_malloc` at process start: two arenas, and blocks of 4 MB and more always mapped
  on their own (returned to the OS when freed; a page-fault cost on large requests only);
- `Trimmer`: after a large request, `malloc_trim(0)` in a background thread (off the
  request's path) returns the free pages inside every arena to the OS.

Elsewhere (musl, macOS) these are no-ops and RSS is whatever the allocator keeps.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import logging
import os
import resource
import threading
import time

log = logging.getLogger("modelport.memory")

_M_MMAP_THRESHOLD, _M_ARENA_MAX = -3, -8  # mallopt parameters (glibc malloc.h)
DEFAULT_ARENAS = 2
# Blocks from this size up get their own mapping, unmapped when freed. glibc's default
# threshold rises to the largest block freed so far (up to 32 MB), after which a large
# request's buffers come from the heap and stay resident; a fixed value turns that off.
MMAP_THRESHOLD = 4 << 20
# Requests with at least this many body bytes are followed by a trim.
LARGE_BODY = 8 << 20


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


_LIBC = _libc()


def tune_malloc(arenas: int = DEFAULT_ARENAS, mmap_threshold: int = MMAP_THRESHOLD) -> bool:
    """Few arenas and a fixed mmap threshold (call before threads start). Settings the
    user made through glibc's environment variables win. True when glibc took them."""
    if _LIBC is None:
        return False
    ok = True
    if "MALLOC_ARENA_MAX" not in os.environ:
        ok = bool(_LIBC.mallopt(_M_ARENA_MAX, arenas)) and ok
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        ok = bool(_LIBC.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and ok
    return ok


def trim() -> None:
    """Hand the free pages of every malloc arena back to the OS."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def settle() -> None:
    """After start-up work (models loaded, graphs converted) and after an unload: collect
    every garbage cycle (frozen objects included: an unloaded model's are garbage now),
    hand the freed pages back to the OS, and move what survived into the collector's
    permanent generation (`gc.freeze`): those objects live as long as the server, and
    full collections no longer scan them while requests allocate."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    trim()


def return_memory() -> None:
    """What RSS-based decisions need first to be honest (see `settle`)."""
    settle()


def rss() -> int:
    """Resident set size of this process in bytes (Linux /proc, else peak RSS)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Trimmer:
    """A daemon thread that trims after large requests; many requests, one trim.

    `request()` only sets an event (safe and cheap on the event loop); the thread waits
    `delay` seconds so the request's buffers are freed and a burst of large requests
    shares one trim, then calls `malloc_trim(0)` (ctypes releases the GIL meanwhile).
    """

    def __init__(self, delay: float = 0.2) -> None:
        self.delay = delay
        self.trims = 0
        self._wanted = threading.Event()
        self._thread: threading.Thread | None = None
        if _LIBC is not None:
            self._thread = threading.Thread(target=self._run, name="malloc-trim", daemon=True)
            self._thread.start()

    def request(self) -> None:
        self._wanted.set()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            time.sleep(self.delay)
            self._wanted.clear()
            with contextlib.suppress(Exception):
                before = rss()
                trim()
                self.trims += 1
                log.debug("malloc trimmed", extra={"rss_before": before, "rss_after": rss()})


_trimmer: Trimmer | None = None


def trimmer() -> Trimmer:
    """The process' trimmer, started on first use."""
    global _trimmer
    if _trimmer is None:
        _trimmer = Trimmer()
    return _trimmer
