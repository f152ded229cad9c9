"""CLI, KServe's storage-initializer convention: ``python -m modelport.storage SRC DEST [...]``.

Pairs are downloaded concurrently. Exit 0 on success, 1 if any pair failed (one line per failed
URI on stderr: ``modelport.storage: <kind>: <uri>: <cause>``), 2 on a usage error, 128+N on
signal N (SIGTERM: 143, SIGINT: 130) after every download in flight was stopped and its staging
directory removed, within about two seconds, before Kubernetes' grace period runs out.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from types import FrameType

from modelport.storage.download import cancel_all, download, publishing, remove_staging
from modelport.storage.errors import RedactFilter, StorageError, display_uri, redact

_GRACE_S = 1.5
USAGE = "usage: python -m modelport.storage SRC_URI DEST_DIR [SRC_URI DEST_DIR ...]"


def _one(uri: str, dest: str) -> str | None:
    """Download one pair; return the error line, or None on success."""
    try:
        download(uri, dest)
        return None
    except StorageError as exc:
        return f"modelport.storage: {exc.kind}: {exc}"
    except Exception as exc:  # a bug or an unmapped backend error: still one clean line
        logging.getLogger("modelport.storage").debug("unexpected failure", exc_info=True)
        cause = f"{type(exc).__name__}: {redact(str(exc))}"
        return f"modelport.storage: error: {display_uri(uri)}: {cause}"


_deferred: list[int] = []  # a signal that arrived while the main thread was publishing


def _on_signal(signum: int, frame: FrameType | None) -> None:
    """Stop every download (from a thread: this handler may interrupt a lock holder), then
    unwind the main thread through download()'s cleanup, unless it is moving a finished
    download into DEST: then exit right after (a half-published DEST is worse than either)."""
    why = f"interrupted by {signal.Signals(signum).name}"
    threading.Thread(target=cancel_all, args=(why,), name="cancel-all", daemon=True).start()
    if publishing(threading.get_ident()):
        _deferred.append(signum)
        return
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if not args or len(args) % 2:
        print(
            f"modelport.storage: error: expected SRC DEST pairs, got {len(args)} args\n{USAGE}",
            file=sys.stderr,
        )
        return 2
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("modelport.storage")
    logger.addHandler(handler)
    logger.setLevel(os.environ.get("MODELPORT_STORAGE_LOG_LEVEL", "INFO").upper())
    logger.propagate = False
    pairs = list(zip(args[0::2], args[1::2], strict=True))
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    pool = ThreadPoolExecutor(max_workers=len(pairs))
    futures: list[Future[str | None]] = []
    try:
        if len(pairs) == 1:
            errors = [_one(*pairs[0])]  # in the main thread: the signal interrupts its reads
        else:
            futures = [pool.submit(_one, *p) for p in pairs]
            errors = [f.result() for f in futures]
        if _deferred:
            raise SystemExit(128 + _deferred[0])
    except SystemExit as exc:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal changes nothing now
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        wait(futures, timeout=_GRACE_S)  # cancelled downloads clean up after themselves...
        remove_staging()  # ...but one stuck in a read would hold its staging until its timeout
        code = exc.code if isinstance(exc.code, int) else 1
        print(f"modelport.storage: interrupted, exiting with {code}", file=sys.stderr, flush=True)
        os._exit(code)  # a transfer thread still blocked in a read must not delay the exit
    pool.shutdown()
    failed = [e for e in errors if e]
    for line in failed:
        print(line, file=sys.stderr, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
