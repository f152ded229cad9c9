"""The `grpc-v2` half of `PredictorClient`: one `grpc.aio` channel to the predictor.

Inputs always travel as `raw_input_contents` (the same little-endian bytes as REST's binary
extension: no per-element protobuf encoding); answers are decoded raw or typed. gRPC status
codes become the same `PredictorError`s as HTTP statuses do in `forward.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import grpc

from modelport.base.config import GRPC_MAX_MESSAGE
from modelport.base.errors import InvalidInput, ModelportError
from modelport.base.forward import (
    PredictorError,
    PredictorNotReady,
    PredictorRejected,
    PredictorUnavailable,
    _Retry,
    forwarded,
)
from modelport.base.grpc import codec
from modelport.base.grpc import inference_pb2 as pb
from modelport.base.grpc.inference_pb2_grpc import GRPCInferenceServiceStub
from modelport.base.messages import InferRequest, InferResponse, Tensor
from modelport.base.protocol import v2

if TYPE_CHECKING:
    from modelport.base.forward import PredictorClient

# The predictor's rejections that pass through, as the HTTP status a REST client sees.
_PASSED_THROUGH = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413,
    grpc.StatusCode.UNIMPLEMENTED: 501,
}
# How gRPC says an answer exceeded this channel's grpc.max_receive_message_length.
_ANSWER_TOO_LARGE = "Received message larger than max"
_RESPONSE_LIMITS = v2.Limits(max_inputs=1 << 16, max_tensor_elements=1 << 40)


class GrpcForwarder:
    """ModelInfer and ModelReady over one channel, made inside the event loop that uses it."""

    def __init__(self, client: PredictorClient) -> None:
        self.client = client
        target = client.host.split("://", 1)[-1]
        # Requests: no cap of gRPC's own (the server's --max_request_size already bounded
        # what came in). Answers: the client's cap, as over REST.
        options = [
            ("grpc.max_send_message_length", -1),
            ("grpc.max_receive_message_length", min(client.max_answer_size, GRPC_MAX_MESSAGE)),
        ]
        if client.use_ssl:
            credentials = grpc.ssl_channel_credentials()
            self.channel = grpc.aio.secure_channel(target, credentials, options=options)
        else:
            self.channel = grpc.aio.insecure_channel(target, options=options)
        self.stub = GRPCInferenceServiceStub(self.channel)

    async def aclose(self) -> None:
        await self.channel.close()

    async def infer(
        self, model: str, request: InferRequest, headers: Mapping[str, str] | None
    ) -> InferResponse:
        message = encode_request(model, request)
        metadata = _metadata(headers)
        try:
            answer = await self.stub.ModelInfer(
                message, timeout=self.client.timeout, metadata=metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise self.error(exc) from None
        try:
            return decode_response(answer)
        except ModelportError as exc:
            raise PredictorUnavailable(
                f"predictor {self.client.host} sent an invalid gRPC response: {exc.message}"
            ) from None

    async def is_ready(self, model: str) -> bool:
        try:
            answer = await self.stub.ModelReady(
                pb.ModelReadyRequest(name=model), timeout=self.client.ready_timeout
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(answer.ready)

    def error(self, exc: grpc.aio.AioRpcError) -> PredictorError | _Retry:
        """The PredictorError for a failed call (a _Retry where retrying is safe)."""
        host, code = self.client.host, exc.code()
        details = exc.details() or code.name
        if code is grpc.StatusCode.RESOURCE_EXHAUSTED and _ANSWER_TOO_LARGE in details:
            # This channel's own receive cap, not the predictor refusing the request.
            return self.client.too_large(f"more than {self.client.max_answer_size} bytes")
        if code in _PASSED_THROUGH:
            return PredictorRejected(f"predictor {host}: {details}", _PASSED_THROUGH[code])
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            return self.client.timed_out("waiting for the answer")
        if code is grpc.StatusCode.UNAVAILABLE:
            # The channel never got through, or the predictor said it is not ready.
            if _connection_failure(exc):
                return _Retry(PredictorUnavailable(f"predictor {host} is unreachable: {details}"))
            return _Retry(PredictorNotReady(f"predictor {host} answered UNAVAILABLE: {details}"))
        return PredictorUnavailable(f"predictor {host} answered {code.name}: {details}")


def _metadata(headers: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    """The forwarded headers as gRPC metadata, which carries only printable ASCII values:
    an HTTP client's Latin-1 header would otherwise fail inside grpc, as a 500."""
    pairs = forwarded(headers)
    for name, value in pairs.items():
        if not (value.isascii() and value.isprintable()):
            raise InvalidInput(
                f"header '{name}' holds characters other than printable ASCII, which gRPC "
                "metadata cannot carry to the predictor"
            )
    return tuple(pairs.items())


def _connection_failure(exc: grpc.aio.AioRpcError) -> bool:
    text = f"{exc.details()} {exc.debug_error_string()}".lower()
    return any(sign in text for sign in ("connect", "refused", "unreachable", "dns"))


def encode_request(model: str, request: InferRequest) -> pb.ModelInferRequest:
    """An InferRequest as a ModelInferRequest with every input raw."""
    message = pb.ModelInferRequest(model_name=model, id=request.id or "")
    if request.parameters:
        codec.fill_parameters(message.parameters, request.parameters)
    for tensor in request.inputs:
        entry = message.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        parameters = {k: v for k, v in tensor.parameters.items() if k != "binary_data_size"}
        if parameters:
            codec.fill_parameters(entry.parameters, parameters)
        message.raw_input_contents.append(v2.encode_binary(tensor))
    for output in request.outputs:
        wanted = message.outputs.add(name=output.name)
        if output.parameters:
            codec.fill_parameters(wanted.parameters, output.parameters)
    return message


def decode_response(message: pb.ModelInferResponse) -> InferResponse:
    """A ModelInferResponse (raw or typed outputs) as an InferResponse."""
    raw = message.raw_output_contents
    if raw and len(raw) != len(message.outputs):
        raise InvalidInput(f"{len(raw)} raw_output_contents for {len(message.outputs)} outputs")
    outputs: list[Tensor] = []
    for index, tensor in enumerate(message.outputs):
        shape = v2.check_shape(tensor.name, list(tensor.shape), _RESPONSE_LIMITS)
        data: Any
        if raw:
            view = memoryview(raw[index])
            data = v2.decode_binary(tensor.name, tensor.datatype, shape, view).copy()
        else:
            data = codec._typed(tensor, shape)
        parameters = codec.parameters_to_dict(tensor.parameters)
        outputs.append(Tensor(tensor.name, data, tensor.datatype, parameters))
    return InferResponse(
        outputs=outputs,
        id=message.id or None,
        parameters=codec.parameters_to_dict(message.parameters),
    )
