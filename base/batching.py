"""Adaptive batching: concurrent requests to one model merged into one predict call.

Requests queue up; the collector takes the first and keeps taking until `max_batch_size`
requests or `max_batch_time` seconds (MLServer's names). Requests that agree on everything
but their row count (input names, datatypes, trailing dims, parameters, requested outputs)
are concatenated along the first axis, predicted once and split back; any other request
runs alone. Batches run in the predict thread pool, so the next batch is collected while
the current one computes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable
from concurrent.futures import Executor
from typing import Any

import numpy as np
from modelport.base.messages import InferRequest, InferResponse, Tensor
from modelport.base.model import ModelSettings, Predictor

log = logging.getLogger("modelport.batching")
Pending = tuple[InferRequest, "asyncio.Future[InferResponse]"]


def batch_key(request: InferRequest) -> Hashable | None:
    """What must match for requests to merge; None when the request cannot batch."""
    rows = {tensor.data.shape[0] if tensor.data.ndim else None for tensor in request.inputs}
    if len(rows) != 1 or None in rows:
        return None
    return (
        tuple(
            (t.name, t.datatype, t.data.shape[1:], _frozen(t.parameters)) for t in request.inputs
        ),
        _frozen(request.parameters),
        tuple((o.name, _frozen(o.parameters)) for o in request.outputs),
    )


def _frozen(mapping: dict[str, Any]) -> Hashable:
    return repr(sorted(mapping.items())) if mapping else ()


def merge(requests: list[InferRequest]) -> InferRequest:
    """Concatenate the inputs of compatible requests along the first axis."""
    first = requests[0]
    inputs = [
        Tensor(
            tensor.name,
            np.concatenate([request.inputs[i].data for request in requests]),
            tensor.datatype,
            tensor.parameters,
        )
        for i, tensor in enumerate(first.inputs)
    ]
    return InferRequest(inputs, None, first.parameters, first.outputs)


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

    def __init__(self, predictor: Predictor, executor: Executor, settings: ModelSettings) -> None:
        self.predictor = predictor
        self.executor = executor
        self.max_size = settings.max_batch_size
        self.max_time = settings.max_batch_time
        self.queue: asyncio.Queue[Pending] = asyncio.Queue()
        self.collector: asyncio.Task[None] | None = None
        self.running: set[asyncio.Task[None]] = set()

    async def submit(self, request: InferRequest) -> InferResponse:
        loop = asyncio.get_running_loop()
        if batch_key(request) is None:
            return await loop.run_in_executor(self.executor, self.predictor.infer, request)
        if self.collector is None or self.collector.done():
            self.collector = loop.create_task(self._collect())
        future: asyncio.Future[InferResponse] = loop.create_future()
        self.queue.put_nowait((request, future))
        return await future

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.max_time
            while len(batch) < self.max_size:
                if not self.queue.empty():
                    batch.append(self.queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), remaining))
                except TimeoutError:
                    break
            groups: dict[Hashable, list[Pending]] = {}
            for pending in batch:
                groups.setdefault(batch_key(pending[0]), []).append(pending)
            for group in groups.values():
                task = loop.create_task(self._run(group))
                self.running.add(task)
                task.add_done_callback(self.running.discard)

    async def _run(self, group: list[Pending]) -> None:
        loop = asyncio.get_running_loop()
        requests = [request for request, _ in group]
        try:
            if len(group) == 1:
                results = [
                    await loop.run_in_executor(self.executor, self.predictor.infer, requests[0])
                ]
            else:
                merged = await loop.run_in_executor(
                    self.executor, self.predictor.infer, merge(requests)
                )
                rows = [request.inputs[0].data.shape[0] for request in requests]
                parts = split(merged, rows)
                if parts is None:  # outputs not per-row: fall back to one call each
                    parts = [
                        await loop.run_in_executor(self.executor, self.predictor.infer, request)
                        for request in requests
                    ]
                results = parts
        except Exception as exc:
            if len(group) > 1:
                # One bad request must not fail its neighbours: retry each on its own.
                for request, future in group:
                    await self._run_alone(request, future)
                return
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(group, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def _run_alone(
        self, request: InferRequest, future: asyncio.Future[InferResponse]
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self.executor, self.predictor.infer, request)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
            return
        if not future.done():
            future.set_result(result)
