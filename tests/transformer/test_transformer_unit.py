"""In-process checks of the Transformer's protocol conversions and hook contract (the
forwarding itself is exercised against real processes in test_transformer.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelport.base.batching import KeyHeaders, batch_key
from modelport.base.errors import InferenceFailed, InvalidInput, ModelLoadError
from modelport.base.forward import FORWARDED_HEADERS, PredictorUnavailable
from modelport.base.messages import InferRequest, InferResponse, Tensor
from modelport.base.model import ModelSettings
from modelport.base.transformer import (
    Transformer,
    V1Request,
    V1Response,
    request_to_v1,
    v1_to_response,
)


def transformer(cls: type[Transformer] = Transformer, **options: Any) -> Transformer:
    settings = ModelSettings(
        name="m",
        model_dir=Path("/nonexistent"),
        parameters={"predictor_host": "127.0.0.1:9", **options},
    )
    instance = cls(settings)
    instance.load()
    return instance


def test_one_input_becomes_instances_and_several_become_rows():
    single = InferRequest(inputs=[Tensor("x", np.array([[1.0, 2.0], [3.0, 4.0]]))])
    assert np.asarray(request_to_v1(single)["instances"]).tolist() == [[1.0, 2.0], [3.0, 4.0]]
    frame = InferRequest(
        inputs=[Tensor("a", np.array([1, 2])), Tensor("b", np.array(["x", "y"], dtype=object))],
        parameters={"content_type": "pd"},
    )
    assert request_to_v1(frame) == {"instances": [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]}
    ragged = InferRequest(inputs=[Tensor("a", np.array([1, 2])), Tensor("b", np.array([1]))])
    with pytest.raises(InvalidInput, match="different lengths"):
        request_to_v1(ragged)


def test_v1_answer_for_a_v2_client():
    response = v1_to_response({"predictions": ["a", "b"]})
    assert response.outputs[0].name == "output-0"
    assert response.outputs[0].data.tolist() == ["a", "b"]
    with pytest.raises(InferenceFailed, match="without 'predictions'"):
        v1_to_response({"labels": [1]})


def test_v1_body_reaches_preprocess_as_the_clients_dict():
    body = {"instances": [{"image": "..."}], "extra": 1}
    request = transformer().decode_v1(body)
    assert isinstance(request, V1Request) and request.body is body
    with pytest.raises(InvalidInput):
        transformer().decode_v1([1, 2])


def test_hooks_returning_the_wrong_type_are_a_server_fault():
    class Bad(Transformer):
        def preprocess(self, request: Any, headers: dict[str, str]) -> Any:
            return "not a request"

    with pytest.raises(InferenceFailed, match="preprocess returned str"):
        asyncio.run(transformer(Bad).infer(V1Request(inputs=[], body={"instances": [1]})))


def test_postprocess_may_ask_for_the_request_and_dicts_stay_v1():
    seen: dict[str, Any] = {}

    class Echo(Transformer):
        async def predict(self, payload: Any, headers: dict[str, str]) -> Any:
            return {"predictions": [7]}

        def postprocess(self, response: Any, headers: dict[str, str], request: Any = None) -> Any:
            seen["request"] = request
            return {**response, "key": request["key"]}

    answer = asyncio.run(
        transformer(Echo).infer(V1Request(inputs=[], body={"instances": [1], "key": "k"}))
    )
    assert isinstance(answer, V1Response)
    assert transformer(Echo).encode_v1(answer) == {"predictions": [7], "key": "k"}
    assert seen["request"] == {"instances": [1], "key": "k"}


def test_transformer_needs_a_predictor_host_and_no_model_dir():
    assert Transformer.needs_model_dir is False
    settings = ModelSettings(name="m", model_dir=Path("/nonexistent"))
    with pytest.raises(ModelLoadError, match="--predictor_host"):
        Transformer(settings).load()


def test_an_infer_response_passes_to_v2_clients_unchanged():
    class Fixed(Transformer):
        async def predict(self, payload: Any, headers: dict[str, str]) -> Any:
            return InferResponse(outputs=[Tensor("y", np.array([1]))])

    answer = asyncio.run(transformer(Fixed).infer(InferRequest(inputs=[])))
    assert answer.outputs[0].name == "y"


def test_batch_key_keeps_requests_with_other_forwarded_headers_apart():
    def request(headers: Any) -> InferRequest:
        return InferRequest(inputs=[Tensor("x", np.ones((1, 2)))], raw_headers=headers)

    raw = [(b"host", b"a"), (b"authorization", b"Bearer alice"), (b"x-request-id", b"1")]
    other_host = [(b"host", b"b"), (b"authorization", b"Bearer alice"), (b"x-request-id", b"1")]
    other_user = [(b"host", b"a"), (b"authorization", b"Bearer bob"), (b"x-request-id", b"1")]
    names = KeyHeaders(Transformer.batch_key_headers)
    key = batch_key(request(raw), names)
    assert key is not None
    assert batch_key(request(other_host), names) == key  # not a forwarded header
    assert batch_key(request(other_user), names) != key
    assert batch_key(request([(b"x-b3-traceid", b"t")]), names) != batch_key(request([]), names)
    # gRPC metadata arrives as a dict.
    grpc = {"authorization": "Bearer alice", "x-request-id": "1"}
    assert batch_key(request(grpc), names) == batch_key(request(dict(grpc)), names)
    assert batch_key(request({**grpc, "authorization": "x"}), names) != batch_key(
        request(grpc), names
    )
    # Without header names (a plain predictor) the key ignores headers, as before.
    assert batch_key(request(raw)) == batch_key(request(other_user)) == batch_key(request(None))
    # A request that cannot batch is not looked at further.
    assert batch_key(InferRequest(inputs=[], raw_headers=raw), names) is None


def test_the_batcher_of_a_transformer_keys_on_the_forwarded_headers():
    from modelport.base.pool import PredictPool
    from modelport.base.runner import ModelRunner

    pool = PredictPool(0)
    runner = ModelRunner(
        transformer(), pool, batch_size=8, batch_time=0.1, max_queued=0, inline_limit=0.0
    )
    assert runner.batcher is not None and runner.batcher.key_headers is not None
    assert set(runner.batcher.key_headers.as_str) == FORWARDED_HEADERS


def test_bad_v1_predictions_for_a_v2_client_blame_whoever_made_them():
    class Ragged(Transformer):
        async def predict(self, payload: Any, headers: dict[str, str]) -> Any:
            return {"predictions": [[1, 2], [3]]}  # as if the predictor had answered so

    class RaggedPost(Transformer):
        async def predict(self, payload: Any, headers: dict[str, str]) -> Any:
            return {"predictions": [1, 2]}

        def postprocess(self, response: Any, headers: dict[str, str]) -> Any:
            response["predictions"] = [[1, 2], [3]]  # in place: postprocess's own answer
            return response

    v2_request = InferRequest(inputs=[Tensor("x", np.ones((1, 2)))])
    with pytest.raises(PredictorUnavailable, match=r"predictor 127\.0\.0\.1:9 sent V1 predictions"):
        asyncio.run(transformer(Ragged).infer(v2_request))
    with pytest.raises(InferenceFailed, match="postprocess returned a dict a V2 client cannot"):
        asyncio.run(transformer(RaggedPost).infer(v2_request))


def test_the_predictors_answers_are_capped_by_the_servers_one_size_limit(tmp_path):
    from modelport.base.config import ServerConfig
    from modelport.base.repository import ModelRepository

    config = ServerConfig(
        model_name="m",
        model_dir=str(tmp_path),
        max_request_size=12345,
        runtime_options={"predictor_host": "127.0.0.1:9"},
    )
    repository = ModelRepository(config, Transformer)
    repository.discover()
    asyncio.run(repository.load_all())
    predictor = repository.version("m").predictor
    assert isinstance(predictor, Transformer)
    assert predictor.client.max_answer_size == 12345
