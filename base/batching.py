"""Adaptive batching: concurrent requests to one model merged into one predict call.

One batch per model runs at a time. A request that finds its model idle runs at once (no
queueing cost at low load); requests that arrive while a batch computes wait and form the
next batch, up to `max_batch_size` requests. With `max_batch_time` > 0 (MLServer's names) a
batch also waits up to that long after its first request for more to arrive. Requests that
agree on everything but their row count (input names, datatypes, trailing dims, parameters,
requested outputs) are concatenated along the first axis, predicted once and split back;
any other request runs alone. A predictor that passes some request headers on (a
transformer: credentials, request id, trace) names them in `batch_key_headers`: requests
whose values of those headers differ are never merged, as the merged request carries only
the first one's headers.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

import numpy as np

from modelport.base.messages import Headers, InferRequest, InferResponse, Tensor

log = logging.getLogger("modelport.batching")
# (request, its batch key, the future its caller awaits)
Pending = tuple[InferRequest, Hashable, "asyncio.Future[InferResponse]"]
# Input parameters that describe the transport, not the tensor: requests differing only in
# these still merge (a binary input's byte count follows its row count).
_TRANSPORT_PARAMETERS = ("binary_data_size",)
# How the batcher calls its model: `call(request, alone)`, where `alone` says that no other
# request waits (the runner may then predict on the event loop).
ModelCall = Callable[[InferRequest, bool], Awaitable[InferResponse]]


class KeyHeaders:
    """Header names (lower case) whose values must agree for requests to merge, in both forms
    a request carries headers in: raw ASGI byte pairs (HTTP) or a dict (gRPC metadata)."""

    __slots__ = ("as_bytes", "as_str")

    def __init__(self, names: frozenset[str]) -> None:
        self.as_str = tuple(sorted(name.lower() for name in names))
        self.as_bytes = frozenset(name.encode("latin-1") for name in self.as_str)

    def values(self, headers: Headers | None) -> Hashable:
        """The request's values of these headers. A dict's (str) and raw pairs' (bytes)
        never compare equal unless both are empty: a gRPC and an HTTP request with such
        headers do not merge, but no two different values can ever look alike."""
        if not headers:
            return ()
        if isinstance(headers, dict):
            return tuple((name, headers[name]) for name in self.as_str if name in headers)
        # Raw pairs stay undecoded: ASGI header names are lower-case bytes already.
        wanted = self.as_bytes
        return tuple(sorted(pair for pair in headers if pair[0] in wanted))


def batch_key(request: InferRequest, headers: KeyHeaders | None = None) -> Hashable | None:
    """What must match for requests to merge; None when the request cannot batch.

    With `headers`, the values of those headers are part of the key (read only for a
    request that can batch at all)."""
    rows = {tensor.data.shape[0] if tensor.data.ndim else None for tensor in request.inputs}
    if len(rows) != 1 or None in rows:
        return None
    key = (
        tuple(
            (t.name, t.datatype, t.data.shape[1:], _frozen(t.parameters, _TRANSPORT_PARAMETERS))
            for t in request.inputs
        ),
        _frozen(request.parameters),
        tuple((o.name, _frozen(o.parameters)) for o in request.outputs),
    )
    if headers is None:
        return key
    return (*key, headers.values(request.raw_headers))


def _frozen(mapping: dict[str, Any], ignore: tuple[str, ...] = ()) -> Hashable:
    if not mapping:
        return ()
    return repr(sorted(item for item in mapping.items() if item[0] not in ignore))


def merge(requests: list[InferRequest]) -> InferRequest:
    """Concatenate the inputs of compatible requests along the first axis."""
    first = requests[0]
    inputs = [
        Tensor(
            tensor.name,
            np.concatenate([request.inputs[i].data for request in requests]),
            tensor.datatype,
            {k: v for k, v in tensor.parameters.items() if k not in _TRANSPORT_PARAMETERS},
        )
        for i, tensor in enumerate(first.inputs)
    ]
    return InferRequest(inputs, None, first.parameters, first.outputs, first.raw_headers)


def split(response: InferResponse, rows: list[int]) -> list[InferResponse] | None:
    """Split a merged response back by row counts; None when an output is not per-row."""
    total = sum(rows)
    if any(not t.data.ndim or t.data.shape[0] != total for t in response.outputs):
        return None
    cuts = np.cumsum(rows)[:-1]
    parts = [np.split(t.data, cuts) for t in response.outputs]
    return [
        InferResponse(
            [
                Tensor(t.name, part[index], t.datatype, t.parameters)
                for t, part in zip(response.outputs, parts, strict=True)
            ],
            None,
            response.parameters,
        )
        for index in range(len(rows))
    ]


class Batcher:
    """The batching queue of one loaded predictor."""

    def __init__(
        self,
        call: ModelCall,
        max_size: int,
        max_time: float,
        key_headers: KeyHeaders | None = None,
    ) -> None:
        self.call = call
        self.max_size = max_size
        self.max_time = max_time
        self.key_headers = key_headers
        self.pending: deque[Pending] = deque()
        self.first_arrival = 0.0
        self.busy = False
        self.timer: asyncio.TimerHandle | None = None
        self.running: set[asyncio.Task[None]] = set()

    async def submit(self, request: InferRequest) -> InferResponse:
        if not self.busy and not self.pending and self.max_time <= 0:
            # Idle model: this request is its own batch, with no queueing cost.
            self.busy = True
            try:
                return await self.call(request, True)
            finally:
                self.busy = False
                self._schedule()
        key = batch_key(request, self.key_headers)
        if key is None:
            return await self.call(request, False)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[InferResponse] = loop.create_future()
        if not self.pending:
            self.first_arrival = loop.time()
        self.pending.append((request, key, future))
        self._schedule()
        try:
            return await future
        finally:
            del future  # no exception -> traceback -> frame -> future cycle (see pool.run)

    def _schedule(self) -> None:
        """Start the next batch if the model is idle and the batch is full or due."""
        if self.busy or not self.pending:
            return
        loop = asyncio.get_running_loop()
        wait = self.first_arrival + self.max_time - loop.time()
        if len(self.pending) < self.max_size and wait > 0:
            if self.timer is None:
                self.timer = loop.call_later(wait, self._on_timer)
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        batch: list[Pending] = []
        while self.pending and len(batch) < self.max_size:
            pending = self.pending.popleft()
            if not pending[2].done():  # its caller gave up (disconnect, deadline): skip it
                batch.append(pending)
        if not batch:
            return
        if self.pending:
            self.first_arrival = loop.time()
        self.busy = True
        task = loop.create_task(self._run(batch))
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    def _on_timer(self) -> None:
        self.timer = None
        self._schedule()

    async def _run(self, batch: list[Pending]) -> None:
        try:
            groups: dict[Hashable, list[Pending]] = {}
            for pending in batch:
                groups.setdefault(pending[1], []).append(pending)
            for group in groups.values():
                await self._run_group(group)
        finally:
            self.busy = False
            self._schedule()

    async def _run_group(self, group: list[Pending]) -> None:
        requests = [request for request, _, _ in group]
        try:
            if len(group) == 1:
                results = [await self._call(requests[0])]
            else:
                merged = await self._call(merge(requests))
                parts = split(merged, [request.inputs[0].data.shape[0] for request in requests])
                # Outputs that are not per-row cannot be split: one call each instead.
                results = parts or [await self._call(request) for request in requests]
        except Exception as exc:
            if len(group) == 1:
                _settle(group[0][2], exception=exc)
                return
            # One bad request must not fail its neighbours: retry each on its own.
            for request, _, future in group:
                try:
                    _settle(future, await self._call(request))
                except Exception as single:
                    _settle(future, exception=single)
            return
        for (_, _, future), result in zip(group, results, strict=True):
            _settle(future, result)

    async def _call(self, request: InferRequest) -> InferResponse:
        return await self.call(request, False)


def _settle(
    future: asyncio.Future[InferResponse],
    result: InferResponse | None = None,
    exception: BaseException | None = None,
) -> None:
    if future.done():  # the client went away
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)  # type: ignore[arg-type]
