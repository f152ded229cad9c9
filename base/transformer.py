"""The `Transformer` component: pre- and post-processing around a remote predictor.

A transformer is a `Predictor` without a model directory whose `infer` is async: it runs
`preprocess`, forwards the result to the predictor (`--predictor_host`, over
`--predictor_protocol` v1, v2 or grpc-v2, with the transformer's own model name as KServe
does) through one pooled `PredictorClient`, and runs `postprocess` on the answer. V1 and V2
requests reach it through the same routes, errors and metrics as any predictor.

What `preprocess` receives and may return (KServe's contract, made explicit):
- a V1 request arrives as its JSON body (a dict, as KServe hands it); a V2 (REST or gRPC)
  request as an `InferRequest`;
- it returns a V1 body (dict) or an `InferRequest`. Either is sent in the predictor's
  protocol: a dict to a V2 predictor is decoded as a predictor decodes V1 (`instances` ->
  tensor `input-0`, rows of objects -> one tensor per key), an `InferRequest` to a V1
  predictor is sent as `instances` (one input) or rows of objects (several inputs);
- `postprocess` receives the predictor's answer (a dict from V1, an `InferResponse` from
  V2) and returns a dict or an `InferResponse`: a V1 client gets a dict as it is, a V2 client
  needs an `InferResponse` (or a dict with `predictions`, which becomes output `output-0`).

Both hooks get the request's headers (lower-case names) and may be `def` or `async def`.
A `postprocess` that declares a parameter named `request` also gets what `preprocess` got
(e.g. to echo a client's `key` the predictor never sees); KServe's two-argument form works.
"""

from __future__ import annotations

import argparse
import inspect
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from modelport.base.config import _bool
from modelport.base.errors import InferenceFailed, InvalidInput, ModelLoadError
from modelport.base.forward import (
    FORWARDED_HEADERS,
    PROTOCOLS,
    PredictorClient,
    PredictorUnavailable,
)
from modelport.base.messages import InferRequest, InferResponse, Tensor
from modelport.base.model import Predictor
from modelport.base.protocol import v1

Payload = dict[str, Any] | InferRequest
Result = dict[str, Any] | InferResponse


@dataclass(slots=True)
class V1Request(InferRequest):
    """A V1 request kept as the client's JSON body: `preprocess` sees the dict itself."""

    body: Any = None


@dataclass(slots=True)
class V1Response(InferResponse):
    """A V1 answer kept as the JSON body `postprocess` returned."""

    body: Any = None


def _protocol(text: str) -> str:
    if text not in PROTOCOLS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(PROTOCOLS)}, got '{text}'")
    return text


class Transformer(Predictor):
    """Subclass and override `preprocess` and/or `postprocess`; the base passes through."""

    runtime = "transformer"
    needs_model_dir: ClassVar[bool] = False
    # Requests are forwarded one by one: merging V1 bodies is meaningless.
    default_max_batch_size = 1
    # With --max_batch_size, V2 requests may merge into one forwarded request, which carries
    # the first one's headers: requests with other credentials, request id or trace must not
    # join it (a subclass that forwards more headers adds them here).
    batch_key_headers: ClassVar[frozenset[str]] = FORWARDED_HEADERS

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """KServe's transformer flags; booleans may be given bare (`--predictor_use_ssl`)."""
        parser.add_argument(
            "--predictor_host", default=None, help="the predictor's host[:port] (required)"
        )
        parser.add_argument(
            "--predictor_protocol",
            type=_protocol,
            default="v1",
            help="protocol to the predictor: v1, v2 or grpc-v2 (default: v1)",
        )
        for flag, text in (
            ("predictor_use_ssl", "talk to the predictor over TLS"),
            ("enable_predictor_health_check", "ready only while the predictor is ready"),
        ):
            parser.add_argument(
                f"--{flag}", type=_bool, nargs="?", const=True, default=False, help=text
            )
        parser.add_argument(
            "--predictor_request_timeout_seconds",
            type=float,
            default=600.0,
            help="seconds to wait for the predictor's answer (default: 600)",
        )
        parser.add_argument(
            "--predictor_request_retries",
            type=int,
            default=0,
            help="retries on connection failures and 503 (default: 0)",
        )

    # --- lifecycle ------------------------------------------------------------------

    def load(self) -> None:
        """Nothing to load: set up the (lazily connecting) client to the predictor."""
        options = self.settings.parameters
        host = options.get("predictor_host")
        if not host:
            raise ModelLoadError("a transformer needs --predictor_host HOST[:PORT]")
        self.health_check = bool(options.get("enable_predictor_health_check", False))
        self.client = PredictorClient(
            str(host),
            str(options.get("predictor_protocol") or "v1"),
            use_ssl=bool(options.get("predictor_use_ssl", False)),
            timeout=float(options.get("predictor_request_timeout_seconds", 600.0)),
            retries=int(options.get("predictor_request_retries", 0)),
            max_answer_size=self.settings.max_message_size,
        )
        self._post_wants_request = "request" in inspect.signature(self.postprocess).parameters

    async def is_ready(self) -> bool:
        """Ready; with --enable_predictor_health_check only while the predictor is."""
        if not self.health_check:
            return True
        return await self.client.is_ready(self.name)

    # --- the hooks users override -----------------------------------------------------

    def preprocess(self, request: Payload, headers: dict[str, str]) -> Any:
        """Turn the client's request into the predictor's (default: unchanged)."""
        return request

    def postprocess(self, response: Result, headers: dict[str, str]) -> Any:
        """Turn the predictor's answer into the client's (default: unchanged)."""
        return response

    async def predict(self, payload: Payload, headers: dict[str, str]) -> Result:
        """Forward to the predictor in its protocol (see the module docstring)."""
        client = self.client
        if client.protocol == "v1":
            body = payload if isinstance(payload, dict) else request_to_v1(payload)
            return await client.predict_v1(self.name, body, headers)
        request = payload if isinstance(payload, InferRequest) else v1.decode_request(payload)
        return await client.infer(self.name, request, headers)

    # --- the Predictor interface ----------------------------------------------------

    async def infer(self, request: InferRequest) -> InferResponse:
        headers = request.headers
        payload: Any = request.body if isinstance(request, V1Request) else request
        original = payload
        payload = await _maybe_await(self.preprocess(payload, headers))
        if not isinstance(payload, (dict, InferRequest)):
            raise InferenceFailed(
                f"preprocess returned {type(payload).__name__}; expected a dict or InferRequest"
            )
        answer: Any = await self.predict(payload, headers)
        predictions = answer.get("predictions") if isinstance(answer, dict) else None
        if self._post_wants_request:
            result = self.postprocess(answer, headers, request=original)  # type: ignore[call-arg]
        else:
            result = self.postprocess(answer, headers)
        result = await _maybe_await(result)
        if isinstance(result, InferResponse):
            return result
        if isinstance(result, dict):
            if isinstance(request, V1Request):
                return V1Response(outputs=[], body=result)
            if result is answer and result.get("predictions") is predictions:
                # The V1 predictor's answer, as it sent it: what a V2 client cannot be given
                # is the predictor's fault, not the client's (nor postprocess's).
                return self._predictor_answer_to_response(result)
            try:
                return v1_to_response(result)
            except InvalidInput as exc:  # postprocess's own answer: the transformer's fault
                raise InferenceFailed(
                    f"postprocess returned a dict a V2 client cannot receive: {exc.message}"
                ) from None
        raise InferenceFailed(
            f"postprocess returned {type(result).__name__}; expected a dict or InferResponse"
        )

    def _predictor_answer_to_response(self, answer: dict[str, Any]) -> InferResponse:
        """A V1 predictor's unchanged answer for a V2 client; a 502 naming the predictor
        when its `predictions` cannot become a tensor."""
        host = self.client.host
        if "predictions" not in answer:
            raise PredictorUnavailable(f"predictor {host} sent a V1 answer without 'predictions'")
        try:
            return v1_to_response(answer)
        except InvalidInput as exc:
            raise PredictorUnavailable(
                f"predictor {host} sent V1 predictions no V2 tensor can hold: {exc.message}"
            ) from None

    def decode_v1(self, body: Any) -> InferRequest:
        """Keep the V1 body as it is: `preprocess` gets the client's dict."""
        if not isinstance(body, dict):
            raise InvalidInput("request body must be a JSON object")
        return V1Request(inputs=[], body=body)

    def encode_v1(self, response: InferResponse) -> dict[str, Any]:
        if isinstance(response, V1Response):
            return response.body
        return v1.encode_response(response)


def v1_to_response(body: dict[str, Any]) -> InferResponse:
    """A V1 answer for a V2 client: `predictions` as one tensor `output-0`."""
    if "predictions" not in body:
        raise InferenceFailed(
            "postprocess returned a dict without 'predictions' for a V2 request; "
            "return an InferResponse"
        )
    array = v1.json_array(body["predictions"], "'predictions'", "numbers or strings")
    return InferResponse(outputs=[Tensor("output-0", array)])


def request_to_v1(request: InferRequest) -> dict[str, Any]:
    """An InferRequest as a V1 body: one input as `instances`, several as rows of objects."""
    if len(request.inputs) == 1 and request.content_type != "pd":
        return {"instances": _instances(request.inputs[0])}
    columns = {tensor.name: _column(tensor) for tensor in request.inputs}
    rows = len(next(iter(columns.values()))) if columns else 0
    if any(len(values) != rows for values in columns.values()):
        raise InvalidInput("inputs of different lengths cannot become V1 rows")
    return {
        "instances": [{name: values[i] for name, values in columns.items()} for i in range(rows)]
    }


def _instances(tensor: Tensor) -> Any:
    """One input's rows as JSON-ready values; what V1 cannot hold is the client's 400 naming
    the input (not a TypeError on a scalar, nor the base's complaint about an output)."""
    if tensor.data.ndim == 0:
        raise InvalidInput(f"input '{tensor.name}': shape [] has no rows to send as V1 'instances'")
    try:
        return v1.json_ready(tensor)
    except InvalidInput:
        raise InvalidInput(
            f"input '{tensor.name}': holds bytes that are not UTF-8 text, which a V1 (JSON) "
            "request cannot carry"
        ) from None


def _column(tensor: Tensor) -> list[Any]:
    data = _instances(tensor)
    return data.tolist() if isinstance(data, np.ndarray) else list(data)


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value
