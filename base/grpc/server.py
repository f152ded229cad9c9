"""The `grpc.aio` server started beside the HTTP one, on the same event loop.

It serves the OIP service, the standard health service (`grpc.health.v1`: "" or the OIP
service name for the server, a model's name for that model), server reflection (so
`grpcurl` works without the proto) and, for Triton's RPCs that modelport does not offer,
UNIMPLEMENTED with a message that says so. Message caps come from the one request-size limit
(`ServerConfig.grpc_limits`). With `--workers N` every worker binds the port with
SO_REUSEPORT (gRPC's default on Linux), so the kernel spreads connections over them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

import grpc
from modelport.base.dataplane import DataPlane
from modelport.base.errors import ModelNotFound, ModelportError
from modelport.base.grpc import inference_pb2_grpc as pb_grpc
from modelport.base.grpc.service import SERVICE_NAME, InferenceService, status_details

log = logging.getLogger("modelport.server")
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
# Triton's RPCs beyond the OIP: answered UNIMPLEMENTED by name rather than "Method not found".
_TRITON_ONLY = {
    "ModelConfig": "unary",
    "ModelStatistics": "unary",
    "ModelStreamInfer": "stream",
    "SystemSharedMemoryStatus": "unary",
    "SystemSharedMemoryRegister": "unary",
    "SystemSharedMemoryUnregister": "unary",
    "CudaSharedMemoryStatus": "unary",
    "CudaSharedMemoryRegister": "unary",
    "CudaSharedMemoryUnregister": "unary",
    "TraceSetting": "unary",
    "LogSettings": "unary",
}


class HealthService(health_pb2_grpc.HealthServicer):
    """`grpc.health.v1.Health` answered from the data plane at the time of asking."""

    def __init__(self, dataplane: DataPlane, poll_seconds: float = 1.0) -> None:
        self.dataplane = dataplane
        self.poll_seconds = poll_seconds

    async def _status(self, service: str) -> int:
        if self.dataplane.draining:  # going away: nothing here should get new work
            return _NOT_SERVING
        if service in ("", SERVICE_NAME):
            return _SERVING if await self.dataplane.ready() else _NOT_SERVING
        try:
            ready = await self.dataplane.model_ready(service)
        except ModelNotFound:
            return _UNKNOWN
        return _SERVING if ready else _NOT_SERVING

    async def Check(self, request: Any, context: Any) -> health_pb2.HealthCheckResponse:
        status = await self._status(request.service)
        if status == _UNKNOWN:
            message = status_details(f"unknown service '{request.service}'")
            await context.abort(grpc.StatusCode.NOT_FOUND, message)
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(
        self, request: Any, context: Any
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        last = None
        while True:
            status = await self._status(request.service)
            if status != last:
                last = status
                yield health_pb2.HealthCheckResponse(status=status)
            if self.dataplane.draining:
                # End the stream, or the drain's grpc.stop() would wait the whole grace for
                # a stream that never ends on its own; NOT_SERVING first, also when the
                # drain began while the last status was on its way.
                if last != _NOT_SERVING:
                    yield health_pb2.HealthCheckResponse(status=_NOT_SERVING)
                return
            # The next poll, or at once when the drain starts: NOT_SERVING then leaves
            # well before the drain stops the server, which could cut it off in flight.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.dataplane.drain_started.wait(), self.poll_seconds)


def _unimplemented_handler() -> grpc.GenericRpcHandler:
    def handler_for(method: str, kind: str) -> grpc.RpcMethodHandler:
        message = (
            f"{method} is a Triton extension that modelport does not implement; "
            "modelport serves the Open Inference Protocol's RPCs and the repository RPCs"
        )

        async def unary(request: bytes, context: Any) -> bytes:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, message)
            return b""

        async def stream(requests: Any, context: Any) -> AsyncIterator[bytes]:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, message)
            yield b""

        if kind == "stream":
            return grpc.stream_stream_rpc_method_handler(stream)
        return grpc.unary_unary_rpc_method_handler(unary)

    return grpc.method_handlers_generic_handler(
        SERVICE_NAME, {method: handler_for(method, kind) for method, kind in _TRITON_ONLY.items()}
    )


async def start_grpc(dataplane: DataPlane) -> grpc.aio.Server:
    """Bind `--grpc_port` and start serving; a port that cannot be bound is a clear error."""
    config = dataplane.config
    send, receive = config.grpc_limits
    server = grpc.aio.server(
        options=[
            ("grpc.max_send_message_length", send),
            ("grpc.max_receive_message_length", receive),
            # Workers share the port (the kernel spreads connections); a single server must
            # not, or a second server on the same port would bind silently and split traffic.
            ("grpc.so_reuseport", 1 if config.workers > 1 else 0),
        ]
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(dataplane), server)
    server.add_generic_rpc_handlers((_unimplemented_handler(),))
    health_pb2_grpc.add_HealthServicer_to_server(HealthService(dataplane), server)
    reflection.enable_server_reflection(
        (
            SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    address = f"{config.host}:{config.grpc_port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise ModelportError(f"cannot serve gRPC on {address}: {exc}") from None
    if not bound:
        raise ModelportError(f"cannot serve gRPC on {address}: the port is not available")
    await server.start()
    log.info("grpc serving", extra={"address": address})
    return server
