"""How one loaded predictor's calls run: batched or not, on a pool thread or on the loop.

- Async predictors (`async def infer`, e.g. transformers waiting on a remote predictor) are
  awaited on the event loop and never take a pool thread.
- Blocking predictors run on the predict pool, except calls measured to be cheap: once a
  predict costs microseconds, the hop to a pool thread is most of the request's cost. A call
  runs inline when this predictor's recent calls of a similar size took at most
  `inline_limit` seconds, so health checks wait at most about that long, and either nothing
  else is waiting for the model (its batcher is idle, and stays so after the requests
  already received have run up to the model) or the call costs less than the measured hop
  to a pool thread (a cheap batch under load: overlapping it with HTTP work cannot win
  back more than the hop costs). Calls of a size never seen (elements over all inputs)
  run on the pool first, and so do calls holding text, so a slow model or a huge request
  never blocks the loop.
- `max_queued` bounds the requests waiting for (or in) this model: beyond it, 503.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable
from typing import Any, cast

from modelport.base.batching import Batcher, KeyHeaders
from modelport.base.errors import Overloaded
from modelport.base.messages import InferRequest, InferResponse
from modelport.base.model import Predictor
from modelport.base.pool import PredictPool

# Exponential moving average weight of the newest measurement.
_EWMA = 0.2


def _size_bucket(request: InferRequest) -> int | None:
    """Requests grouped by their size: elements over all inputs, by powers of two (a
    predict's cost grows with it, roughly linearly). Rows alone would not do: one row of
    30,000 columns would pass for the cheap one-row calls measured before it. None for
    requests holding text (object arrays): their cost follows the text's length, which
    the size does not show, so they never run inline."""
    elements = 0
    for tensor in request.inputs:
        data = tensor.data
        if data.dtype.kind == "O":
            return None
        elements += data.size
    return elements.bit_length()


class ModelRunner:
    """The call path of one predictor (see the module docstring)."""

    def __init__(
        self,
        predictor: Predictor,
        pool: PredictPool,
        *,
        batch_size: int,
        batch_time: float,
        max_queued: int,
        inline_limit: float,
    ) -> None:
        self.predictor = predictor
        self.pool = pool
        self.is_async = inspect.iscoroutinefunction(predictor.infer)
        self.max_queued = max_queued
        self.inline_limit = inline_limit if pool.threads else 0.0
        names = predictor.batch_key_headers
        self.batcher = (
            Batcher(self._call, batch_size, batch_time, KeyHeaders(names) if names else None)
            if batch_size > 1
            else None
        )
        self.active = 0  # requests waiting for or inside this model
        self.costs: dict[int, float] = {}  # size bucket -> seconds per predict (EWMA)
        # Seconds from handing a call to the pool until a thread starts it (EWMA): until
        # measured, no call is assumed cheaper than a hop.
        self.hop_cost = 0.0

    async def run(self, request: InferRequest) -> InferResponse:
        if self.max_queued and self.active >= self.max_queued:
            raise Overloaded(
                f"model '{self.predictor.name}' has {self.active} requests queued "
                f"(--max_queued_requests={self.max_queued}); retry later"
            )
        self.active += 1
        try:
            if self.batcher is not None:
                return await self.batcher.submit(request)
            return await self._call(request, self.active == 1)
        finally:
            self.active -= 1

    async def _call(self, request: InferRequest, alone: bool) -> InferResponse:
        """One predictor call; `alone` says nothing else waits for this model."""
        if self.is_async:
            return await cast("Awaitable[InferResponse]", self.predictor.infer(request))
        bucket = _size_bucket(request)
        cost = None if bucket is None else self.costs.get(bucket)
        if cost is not None and cost <= self.inline_limit:
            if alone:
                # Requests already received run up to this model first: under load they
                # queue behind this one, and batch.
                await asyncio.sleep(0)
                alone = self.active == 1
            # Inline when nothing else waits, or when the hop to a pool thread would cost
            # more than the call itself (a cheap batch under load: overlapping it with HTTP
            # work cannot win that back).
            if alone or cost <= self.hop_cost:
                return self._timed((request, bucket))
        submitted = time.perf_counter()
        return await self.pool.run(self._timed, (request, bucket, submitted))

    def _timed(self, job: tuple[Any, ...]) -> InferResponse:
        """Predict and learn what a call of this size costs (runs on either side); a job
        that hopped to a pool thread carries when it was submitted: what hops cost."""
        request, bucket = job[0], job[1]
        started = time.perf_counter()
        if len(job) > 2:
            self.hop_cost += _EWMA * (started - job[2] - self.hop_cost)
        result = cast(InferResponse, self.predictor.infer(request))
        elapsed = time.perf_counter() - started
        if bucket is None:
            return result
        previous = self.costs.get(bucket)
        self.costs[bucket] = (
            elapsed if previous is None else previous + _EWMA * (elapsed - previous)
        )
        return result

    @property
    def inline_buckets(self) -> list[Any]:
        """Size buckets currently cheap enough to run inline (for tests and debugging)."""
        return sorted(b for b, cost in self.costs.items() if cost <= self.inline_limit)
