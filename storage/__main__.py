"""CLI, KServe's storage-initializer convention: ``python -m modelport.storage SRC DEST [...]``.

Pairs are downloaded concurrently. Exit 0 on success, 1 if any pair failed (one line per failed
URI on stderr: ``modelport.storage: <kind>: <uri>: <cause>``), 2 on a usage error.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from types import FrameType

from modelport.storage.download import download
from modelport.storage.errors import RedactFilter, StorageError, display_uri, redact

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


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through download()'s cleanup


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
    signal.signal(signal.SIGTERM, _on_sigterm)
    pairs = list(zip(args[0::2], args[1::2], strict=True))
    if len(pairs) == 1:
        errors = [_one(*pairs[0])]
    else:
        with ThreadPoolExecutor(max_workers=len(pairs)) as pool:
            errors = list(pool.map(lambda p: _one(*p), pairs))
    failed = [e for e in errors if e]
    for line in failed:
        print(line, file=sys.stderr, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
