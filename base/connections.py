"""Per-connection guards uvicorn lacks, as a small subclass of its httptools protocol.

- Request head deadline: a connection that has not completed its request line and
  headers `header_timeout` seconds after it opened (or after the first byte of its next
  request) is closed, so slow or silent clients cannot hold sockets forever. The idle
  time between keep-alive requests stays uvicorn's keep-alive timeout.
- Request body idle limit: a body that goes `body_timeout` seconds without a byte (a
  client that announced more than it sends) closes its connection; the request's handler
  sees the disconnect and the in-flight count (which a drain waits for) drops. A slow
  upload that keeps flowing is not cut off. Neither deadline counts time in which the
  server holds the request back (a pipelined request behind one being answered, reading
  paused, a 100 Continue not yet sent).
- Request head size: a request line plus headers beyond `max_head_bytes` is answered 431
  and its connection closed. httptools sets no limit of its own, and it buffers a header
  until its end: one client could otherwise fill the memory within the head deadline.
- Connection cap: beyond `max_connections` open connections in this worker, a request is
  answered 503 `{"error": ...}` with `Connection: close` (uvicorn's own
  `limit_concurrency` answers in plain text). Health probes are always answered, so an
  overloaded but healthy worker is not restarted by its liveness probe.
- A client that leaves: when a connection closes while its inference request is still
  being worked on (waiting in a batch, queued for a predict thread) and nothing was
  answered yet, the request's task is cancelled, with `GONE` set in its scope: its batch
  slot, queue place and pool job are given up instead of computed for nobody (the app
  counts it as 499). uvicorn itself only marks the request disconnected.
- Large bodies: after a request whose body reached `memory.LARGE_BODY` bytes, the
  process' malloc trimmer is asked to return freed memory to the OS.
- One write per response: uvicorn writes a response's head as soon as the app starts it
  and the body when it comes; `ResponseWriter` holds the head back until the body (or the
  end of the response) follows, so a small answer costs one system call and reaches the
  client as one segment.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from modelport.base import memory

log = logging.getLogger("modelport.server")

#: Scope keys: the app puts the task of a request that may be given up when its client
#: leaves (inference, not a model load) under CANCELLABLE; when the connection closes before
#: its answer starts, the task is cancelled and GONE set, which tells it from a shutdown's.
CANCELLABLE = "modelport.cancellable"
GONE = "modelport.client_gone"

# Paths answered even above the connection cap (liveness/readiness probes).
PROBES = frozenset({b"/", b"/v2/health/live", b"/v2/health/ready"})
_WARN_EVERY = 10.0
_FINAL_STATUS = frozenset((b"2", b"3", b"4", b"5"))  # first digit of a final status code


class ResponseWriter:
    """The connection's transport, with a response head held back until what follows it.

    uvicorn's protocol writes the head (`HTTP/1.1 ...` status line and headers) and then
    each body chunk; here the head waits for the next write, the end of the response
    (`flush`) or a close, and goes out with it. Everything else is the transport's.
    """

    __slots__ = ("head", "responding", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.head: bytes | None = None
        self.responding = False  # a final head was written: body chunks follow until flush

    def write(self, data: bytes) -> None:
        head = self.head
        if head is not None:
            self.head = None
            self.transport.write(head + data)
        elif (
            not self.responding
            and type(data) is bytes
            and data.startswith(b"HTTP/1.1 ")
            and data[9:10] in _FINAL_STATUS
        ):
            self.head = data  # a final response's head (never 100 Continue or 101)
            self.responding = True
        else:
            self.transport.write(data)

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))  # in order after a held head, never before it

    def flush(self) -> None:
        """The response is complete (or the connection closes): send a held head."""
        self.responding = False
        head = self.head
        if head is not None:
            self.head = None
            self.transport.write(head)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a request-head deadline and a connection cap."""

    header_timeout: float | None = None
    body_timeout: float | None = None
    max_connections: int | None = None
    max_head_bytes: int = 64 << 10
    _last_warning = 0.0
    _refused = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.modelport_app = self.app
        self.timer: asyncio.TimerHandle | None = None
        self.timer_for = ""  # what the running timer guards: "head" or "body"
        self.reading = ""  # the part of a request being received: "head", "body" or ""
        self.head_bytes = 0  # of the head being received, after the read that began it
        self.body_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.writer = ResponseWriter(transport)
        super().connection_made(self.writer)  # type: ignore[arg-type]
        self._arm("head", self.header_timeout)  # a client that never sends a byte

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        cycle = getattr(self, "cycle", None)  # uvicorn's latest request on this connection
        super().connection_lost(exc)
        if cycle is None:
            return
        task = cycle.scope.get(CANCELLABLE)
        if task is not None and not cycle.response_started and not task.done():
            cycle.scope[GONE] = True
            task.cancel()

    def data_received(self, data: bytes) -> None:
        continuing_head = self.reading == "head"
        super().data_received(data)
        # Timers only while a request is incomplete: most arrive whole in one read.
        if self.reading == "head":
            # Counted from the read after the one that began the head (that one may also
            # end a previous body): the bound overshoots by at most one read.
            self.head_bytes = self.head_bytes + len(data) if continuing_head else 0
            if self.head_bytes > self.max_head_bytes:
                self._head_too_large()
                return
            if self.timer_for != "head":  # its clock runs from the request's first bytes
                self._arm("head", self.header_timeout)
        elif self.reading == "body":
            self._arm("body", self.body_timeout)  # again at every chunk: an idle limit
        elif self.timer is not None:
            self._cancel()

    def on_message_begin(self) -> None:
        self.reading = "head"
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self.reading = "body"
        if self.timer_for == "head":
            self._cancel()
        self.body_bytes = 0
        self.app = self.modelport_app if self._admit() else self.refuse
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self.reading = ""
        super().on_message_complete()

    def on_response_complete(self) -> None:
        self.writer.flush()
        if self.body_bytes >= memory.LARGE_BODY:
            memory.trimmer().request()
        self.body_bytes = 0
        super().on_response_complete()

    # --- deadlines ----------------------------------------------------------------------

    def _arm(self, part: str, seconds: float | None) -> None:
        self._cancel()
        if seconds is not None and seconds > 0:
            self.timer_for = part
            self.timer = self.loop.call_later(seconds, self._timed_out)

    def _cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.timer_for = ""

    def _timed_out(self) -> None:
        part, self.timer, self.timer_for = self.timer_for, None, ""
        if self.transport.is_closing():
            return
        if self._server_holds_the_request():
            # Not the client's delay: look again after another period.
            self._arm(part, self.body_timeout if part == "body" else self.header_timeout)
            return
        log.debug("request not received in time: connection closed", extra={"part": part})
        self.transport.close()

    def _server_holds_the_request(self) -> bool:
        """Whether the request being received waits on the server rather than the client:
        a pipelined request queued behind one still being answered, reading paused on a
        full buffer the app has not taken yet, or a client that sent `Expect:
        100-continue` and is still owed its 100 Continue. Closing then would cut off a
        client doing nothing wrong, and an earlier request's answer with it."""
        cycle = self.cycle
        return bool(
            self.pipeline
            or self.flow.read_paused
            or (
                cycle is not None and cycle.waiting_for_100_continue and not cycle.response_complete
            )
        )

    def _head_too_large(self) -> None:
        """431 with a JSON error, then close: the rest of this head is never read."""
        self._cancel()
        self.reading = ""
        if self.transport.is_closing():
            return
        body = orjson.dumps(
            {
                "error": f"request line and headers exceed {self.max_head_bytes} bytes "
                "(--max_request_header_size)"
            }
        )
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\n"
            + f"content-length: {len(body)}\r\n".encode()
            + b"connection: close\r\n\r\n"
            + body
        )
        self.transport.close()

    # --- connection cap ----------------------------------------------------------------

    def _admit(self) -> bool:
        cap = self.max_connections
        if cap is None or len(self.connections) <= cap:
            return True
        if self.url.partition(b"?")[0] in PROBES:
            return True
        cls = type(self)
        cls._refused += 1
        now = time.monotonic()
        if now - cls._last_warning >= _WARN_EVERY:  # one line per burst, not per request
            log.warning(
                "connection cap reached: answering 503",
                extra={"max_connections": cap, "refused": cls._refused},
            )
            cls._last_warning = now
            cls._refused = 0
        return False

    async def refuse(self, scope: Any, receive: Any, send: Any) -> None:
        """The answer above the cap: 503 with a JSON error, and the connection closed."""
        body = orjson.dumps(
            {
                "error": f"server busy: more than {self.max_connections} open connections "
                "in this worker; retry later"
            }
        )
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                    (b"retry-after", b"1"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def protocol_class(
    header_timeout: float | None,
    max_connections: int | None,
    body_timeout: float | None = None,
    max_head_bytes: int = GuardedHttpProtocol.max_head_bytes,
) -> type[GuardedHttpProtocol]:
    """A protocol class for `uvicorn.Config(http=...)` carrying this server's limits."""
    return type(
        "GuardedHttpProtocol",
        (GuardedHttpProtocol,),
        {
            "header_timeout": header_timeout,
            "body_timeout": body_timeout,
            "max_connections": max_connections,
            "max_head_bytes": max_head_bytes,
        },
    )
