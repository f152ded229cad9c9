"""The gRPC adapter: `inference.GRPCInferenceService` on the data plane.

Each RPC decodes its message, calls the same `DataPlane` method as the REST route, and
encodes the answer. Errors abort the call with the status code of `errors.STATUS_CODES` and
the same message text as REST; a bad request never breaks the server or the channel. Every
call is counted in the request metrics and access log with protocol `grpc`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import grpc
from modelport.base.dataplane import DataPlane, log_failure
from modelport.base.errors import ModelportError, PayloadTooLarge
from modelport.base.grpc import codec
from modelport.base.grpc import inference_pb2 as pb
from modelport.base.grpc import inference_pb2_grpc as pb_grpc
from modelport.base.logs import AccessLog
from modelport.base.messages import InferResponse

log = logging.getLogger("modelport.server")
T = TypeVar("T")
SERVICE_NAME = "inference.GRPCInferenceService"


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    """The OIP gRPC service (plus Triton's RepositoryIndex) over one data plane."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane
        self.access_log = AccessLog()
        self.send_limit = dataplane.config.grpc_limits[0]

    async def _answer(
        self,
        context: grpc.aio.ServicerContext,
        endpoint: str,
        model: str,
        work: Awaitable[T],
    ) -> T:
        """Await `work`, turning errors into status codes; metrics and access log."""
        started = time.perf_counter()
        code, message = "OK", ""
        try:
            return await work
        except asyncio.CancelledError:
            # The client's deadline passed or it cancelled: nothing is answered, but the
            # metrics and the access line say so rather than "OK".
            remaining = context.time_remaining()
            code = "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"
            raise
        except ModelportError as exc:
            code, message = exc.grpc_code, exc.message
            log_failure(f"grpc {endpoint}", exc)
        except Exception as exc:
            code, message = "INTERNAL", f"internal server error: {type(exc).__name__}: {exc}"
            log.error(
                "unexpected server error",
                exc_info=True,
                extra={"path": f"grpc {endpoint}", "error": message},
            )
        finally:
            self._observe(context, endpoint, model, code, time.perf_counter() - started)
        await context.abort(grpc.StatusCode[code], status_details(message))
        raise AssertionError("unreachable: abort raises")

    def _observe(
        self,
        context: grpc.aio.ServicerContext,
        endpoint: str,
        model: str,
        code: str,
        elapsed: float,
    ) -> None:
        self.dataplane.observe_request(model, "grpc", endpoint, code, elapsed)
        if self.access_log.enabled:
            self.access_log.write(
                {
                    "method": "grpc",
                    "path": f"/{SERVICE_NAME}/{endpoint}",
                    "status": code,
                    "duration_ms": round(elapsed * 1000, 3),
                    "request_id": _metadata(context).get("x-request-id"),
                    "model": model or None,
                }
            )

    # --- health and metadata ----------------------------------------------------------

    async def ServerLive(self, request: Any, context: Any) -> pb.ServerLiveResponse:
        async def work() -> pb.ServerLiveResponse:
            return pb.ServerLiveResponse(live=self.dataplane.live())

        return await self._answer(context, "live", "", work())

    async def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:
        async def work() -> pb.ServerReadyResponse:
            return pb.ServerReadyResponse(ready=await self.dataplane.ready())

        return await self._answer(context, "ready", "", work())

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: Any
    ) -> pb.ModelReadyResponse:
        async def work() -> pb.ModelReadyResponse:
            ready = await self.dataplane.model_ready(request.name, request.version or None)
            return pb.ModelReadyResponse(ready=ready)

        return await self._answer(context, "model_ready", request.name, work())

    async def ServerMetadata(self, request: Any, context: Any) -> pb.ServerMetadataResponse:
        async def work() -> pb.ServerMetadataResponse:
            return pb.ServerMetadataResponse(**self.dataplane.server_metadata())

        return await self._answer(context, "server_metadata", "", work())

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Any
    ) -> pb.ModelMetadataResponse:
        async def work() -> pb.ModelMetadataResponse:
            doc = await self.dataplane.model_metadata(request.name, request.version or None)
            return pb.ModelMetadataResponse(
                name=doc["name"],
                versions=doc["versions"],
                platform=doc["platform"],
                inputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in doc["inputs"]],
                outputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in doc["outputs"]],
            )

        return await self._answer(context, "metadata", request.name, work())

    # --- inference --------------------------------------------------------------------------

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: Any
    ) -> pb.ModelInferResponse:
        return await self._answer(
            context, "infer", request.model_name, self._infer(request, context)
        )

    async def _infer(self, message: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        dataplane = self.dataplane
        name, version = message.model_name, message.model_version or None
        with dataplane.track():
            await dataplane.resolve(name, version)  # unknown model: NOT_FOUND before decoding
            started = time.perf_counter()
            request = codec.decode_request(message, dataplane.limits)
            request.headers = _metadata(context)
            decoded = time.perf_counter()
            response = await dataplane.infer(name, version, request)
            encoding = time.perf_counter()
            answer = codec.encode_response(response, request.id, codec.wants_raw(message, request))
            dataplane.observe_codec(name, decoded - started, time.perf_counter() - encoding)
            self._check_size(response, request.id, answer)
            return answer

    def _check_size(
        self, response: InferResponse, request_id: str | None, answer: pb.ModelInferResponse
    ) -> None:
        """An answer over the send cap fails here, with a message saying so and its code in
        the metrics and access log: left to gRPC, it failed after the call was counted OK."""
        limit = self.send_limit
        bound = codec.size_bound(response, request_id)
        if bound is not None and bound <= limit:  # the usual case: no second encoding
            return
        size = answer.ByteSize()
        if size > limit:
            raise PayloadTooLarge(
                f"the answer is {size} bytes, over the {limit} byte limit on gRPC messages sent "
                "(--grpc_max_send_message_length, default --max_request_size): ask for fewer "
                "rows or outputs"
            )

    # --- model repository extension ---------------------------------------------------------

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Any
    ) -> pb.RepositoryIndexResponse:
        async def work() -> pb.RepositoryIndexResponse:
            rows = self.dataplane.repository_index(ready_only=request.ready)
            return pb.RepositoryIndexResponse(
                models=[pb.RepositoryIndexResponse.ModelIndex(**row) for row in rows]
            )

        return await self._answer(context, "repository", "", work())

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Any
    ) -> pb.RepositoryModelLoadResponse:
        name = request.model_name or request.repository_name  # Triton's or KServe's field

        async def work() -> pb.RepositoryModelLoadResponse:
            await self.dataplane.load(name)
            return pb.RepositoryModelLoadResponse(model_name=name, isLoaded=True)

        return await self._answer(context, "repository", name, work())

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Any
    ) -> pb.RepositoryModelUnloadResponse:
        name = request.model_name or request.repository_name

        async def work() -> pb.RepositoryModelUnloadResponse:
            await self.dataplane.unload(name)
            return pb.RepositoryModelUnloadResponse(model_name=name, isUnloaded=True)

        return await self._answer(context, "repository", name, work())


# Status details travel in the `grpc-message` trailer, percent-encoded beyond ASCII (up to
# 3 characters a byte), and clients cap metadata (grpc: 8 KiB, 16 KiB at most): past that,
# a client sees RESOURCE_EXHAUSTED for what was, say, an INVALID_ARGUMENT.
MAX_DETAILS_BYTES = 2000


def status_details(message: str) -> str:
    """`message` cut to fit in a trailer every client accepts (it echoes client-sent names,
    which can be of any length), so the status code reaches the client."""
    encoded = message.encode()
    if len(encoded) <= MAX_DETAILS_BYTES:
        return message
    kept = encoded[:MAX_DETAILS_BYTES].decode(errors="ignore")
    return f"{kept}... (truncated from {len(encoded)} bytes)"


def _metadata(context: Any) -> dict[str, str]:
    """Invocation metadata as a dict with lower-case names (text values only)."""
    return {
        key.lower(): value
        for key, value in (context.invocation_metadata() or ())
        if isinstance(value, str)
    }
