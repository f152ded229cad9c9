"""The bounded thread pool that runs blocking predict calls off the event loop.

It does what `loop.run_in_executor` does with less machinery: a job is a tuple on a
SimpleQueue, and its result is posted straight to an asyncio future with
`call_soon_threadsafe`, skipping concurrent.futures' Future and its chaining. On one pinned
CPU that halves the cost of the hop, which is most of a small model's overhead.

With zero threads (`--predict_threads=0`, an explicit opt-in) a job runs on the event loop
itself, as the floor and MLServer's `parallel_workers: 0` do: no hop at all, for models
whose predict takes microseconds, at the price of every other request (health checks
included) waiting while one runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[Any], Any], Any]


class PredictPool:
    """`threads` daemon threads taking jobs from one queue (the bound on parallel predicts);
    with none, jobs run inline on the event loop."""

    def __init__(self, threads: int, name: str = "predict") -> None:
        self.jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self.threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self.threads:
            thread.start()

    async def run(self, function: Callable[[Any], T], argument: Any) -> T:
        """`function(argument)` in a pool thread; the caller's task awaits the result."""
        if not self.threads:
            return function(argument)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self.jobs.put((loop, future, function, argument))
        try:
            return await future
        finally:
            # A failed future holds the exception, whose traceback holds this frame: drop
            # the local so no cycle keeps the request (and its tensors) alive until the
            # cyclic GC happens to run (seen: +60 MB per failed 60 MB request).
            del future

    def shutdown(self) -> None:
        for _ in self.threads:
            self.jobs.put(None)

    def _work(self) -> None:
        while (job := self.jobs.get()) is not None:
            _run(*job)
            job = None  # hold no request while waiting for the next one


def _run(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    function: Callable[[Any], Any],
    argument: Any,
) -> None:
    if future.done():
        # Its caller gave up while it queued (--request_timeout, a gRPC deadline): nobody
        # will read the answer, and under overload running it anyway would put every
        # later request behind abandoned work. (A read of the state from this thread:
        # at worst one job already being cancelled still runs.)
        return
    try:
        result = function(argument)
    except BaseException as exc:
        _post(loop, future, None, exc)
        # The traceback holds this frame: without these the future (which holds the
        # exception) makes a cycle that keeps the request alive until a cyclic GC.
        del future, argument
    else:
        _post(loop, future, result, None)


def _post(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    result: Any,
    exc: BaseException | None,
) -> None:
    if loop.is_closed():  # the server stopped while this job ran: nobody awaits it
        return
    with contextlib.suppress(RuntimeError):  # closed between the check and the call
        loop.call_soon_threadsafe(_settle, future, result, exc)


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():  # the awaiting request was cancelled (client went away)
        return
    if exc is None:
        future.set_result(result)
    else:
        future.set_exception(exc)
