"""The data plane and the REST adapter in process: httpx over the app factory (ASGI), with
small fake predictors. Fast checks of logic; real servers are tested elsewhere."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import ClassVar

import httpx
import numpy as np
import orjson
import pytest

from modelport.base import runner as runner_module
from modelport.base.app import create_app
from modelport.base.config import ServerConfig, parse_config
from modelport.base.dataplane import DataPlane, log_failure
from modelport.base.errors import (
    InferenceFailed,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    ModelportError,
    NotAvailable,
    Overloaded,
    RequestTimeout,
    ServerDraining,
)
from modelport.base.messages import InferRequest, InferResponse, Tensor, TensorSpec
from modelport.base.model import Predictor
from modelport.base.pool import PredictPool
from modelport.base.repository import ModelRepository


class Doubler(Predictor):
    """Answers `2 * x`; `fail` in the request parameters raises as a model or client fault."""

    runtime = "doubler"
    extensions = (".fake",)
    calls: ClassVar[list[tuple[int, str]]] = []  # (rows, thread name) per call
    delay = 0.0

    def load(self) -> None:
        self.model_file()

    def infer(self, request: InferRequest) -> InferResponse:
        fail = request.parameters.get("fail")
        if fail == "client":
            raise InvalidInput("input 'x': the doubler wants numbers")
        if fail == "model":
            raise ZeroDivisionError("the model broke")
        if self.delay:
            time.sleep(self.delay)
        data = request.inputs[0].data
        type(self).calls.append((data.shape[0], threading.current_thread().name))
        return InferResponse([Tensor("y", data * 2)])

    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec("x", "FP64", [-1, 2])]

    def outputs(self) -> list[TensorSpec]:
        return [TensorSpec("y", "FP64", [-1, 2])]


class SlowDoubler(Doubler):
    delay = 0.01


class AsyncEcho(Doubler):
    """An async predictor: awaited on the event loop, never on a pool thread."""

    ready_flag = True

    async def infer(self, request: InferRequest) -> InferResponse:  # type: ignore[override]
        await asyncio.sleep(0)
        type(self).calls.append((len(request.inputs[0].data), threading.current_thread().name))
        return InferResponse([Tensor("y", request.inputs[0].data)])

    def is_ready(self) -> bool:
        return self.ready_flag


async def make_plane(
    tmp_path: Path, runtime: type[Predictor] = Doubler, **flags: object
) -> DataPlane:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "m.fake").write_text("model")
    config = ServerConfig(model_name="m", model_dir=str(tmp_path), **flags)  # type: ignore[arg-type]
    repository = ModelRepository(config, runtime)
    repository.discover()
    await repository.load_all()
    runtime.calls = []
    return DataPlane(config, repository)


def client_for(plane: DataPlane) -> httpx.AsyncClient:
    app = create_app(plane.config, plane.repository, plane)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def v2_body(rows: list[list[float]], **parameters: object) -> dict[str, object]:
    return {
        "inputs": [{"name": "x", "datatype": "FP64", "shape": [len(rows), 2], "data": rows}],
        "parameters": parameters,
    }


def request_of(rows: list[list[float]]) -> InferRequest:
    return InferRequest([Tensor("x", np.array(rows, dtype=np.float64))])


async def test_health_metadata_and_infer_over_rest(tmp_path):
    plane = await make_plane(tmp_path)
    async with client_for(plane) as client:
        assert (await client.get("/v2/health/live")).json() == {"live": True}
        assert (await client.get("/v2/health/ready")).json() == {"ready": True}
        metadata = (await client.get("/v2/models/m")).json()
        assert metadata["platform"] == "doubler"
        assert metadata["inputs"] == [{"name": "x", "datatype": "FP64", "shape": [-1, 2]}]
        response = await client.post("/v2/models/m/infer", json=v2_body([[1, 2]]))
        assert response.status_code == 200
        assert response.json()["outputs"][0]["data"] == [2.0, 4.0]
        v1 = await client.post("/v1/models/m:predict", json={"instances": [[1, 2]]})
        assert v1.json() == {"predictions": [[2.0, 4.0]]}


async def test_errors_are_json_with_the_table_status_and_serving_goes_on(tmp_path):
    plane = await make_plane(tmp_path)
    async with client_for(plane) as client:
        cases = [
            ("/v2/models/nope/infer", v2_body([[1, 2]]), 404, "nope"),
            ("/v2/models/m/infer", v2_body([[1, 2]], fail="client"), 400, "numbers"),
            ("/v2/models/m/infer", v2_body([[1, 2]], fail="model"), 500, "the model broke"),
            ("/v1/models/m:explain", {"instances": [[1, 2]]}, 501, "explainer"),
        ]
        for path, body, status, words in cases:
            response = await client.post(path, json=body)
            assert response.status_code == status, response.text
            assert words in response.json()["error"]
        bad_json = await client.post("/v2/models/m/infer", content=b"{nope")
        assert bad_json.status_code == 400
        assert "JSON" in bad_json.json()["error"]
        for suffix in ("%0A", "%0Ax"):  # a newline is not the end of the path
            response = await client.post(f"/v2/models/m/infer{suffix}", json=v2_body([[1, 2]]))
            assert response.status_code == 404
            assert "no route" in response.json()["error"]
        wrong_method = await client.get("/v2/models/m/infer")
        assert wrong_method.status_code == 405
        assert "GET" in wrong_method.json()["error"]
        ok = await client.post("/v2/models/m/infer", json=v2_body([[1, 1]]))
        assert ok.status_code == 200


async def test_concurrent_requests_merge_into_one_batch_and_split_back(tmp_path):
    plane = await make_plane(tmp_path, max_batch_size=8, max_batch_time=0.5)
    rows = [[[i, i]] for i in range(4)] + [[[10, 10], [11, 11]]]
    responses = await asyncio.gather(*(plane.infer("m", None, request_of(r)) for r in rows))
    assert Doubler.calls == [(6, Doubler.calls[0][1])]  # one predict for all six rows
    for sent, response in zip(rows, responses, strict=True):
        assert response.outputs[0].data.tolist() == (np.array(sent) * 2).tolist()


async def test_a_bad_request_in_a_batch_does_not_fail_its_neighbours(tmp_path):
    plane = await make_plane(tmp_path, max_batch_size=8, max_batch_time=0.3)
    bad = request_of([[1, 1]])
    bad.parameters["fail"] = "client"
    good = [request_of([[2, 2]]), request_of([[3, 3]])]
    results = await asyncio.gather(
        plane.infer("m", None, bad),
        *(plane.infer("m", None, r) for r in good),
        return_exceptions=True,
    )
    assert isinstance(results[0], InvalidInput)
    assert [r.outputs[0].data.tolist() for r in results[1:]] == [[[4, 4]], [[6, 6]]]


async def test_cheap_predicts_move_onto_the_event_loop_and_slow_ones_never_do(tmp_path):
    plane = await make_plane(tmp_path)
    for _ in range(5):
        await plane.infer("m", None, request_of([[1, 1]]))
    threads = [name for _, name in Doubler.calls]
    assert threads[0] != "MainThread"  # first measured on the pool
    assert threads[-1] == "MainThread"  # then measured cheap: inline
    # A row count never seen goes to the pool first, whatever the small calls cost.
    await plane.infer("m", None, request_of([[1, 1]] * 5000))
    assert Doubler.calls[-1][1] != "MainThread"
    # So does one row of a size never seen: rows alone do not tell what a call costs.
    await plane.infer("m", None, request_of([[1.0] * 30_000]))
    assert Doubler.calls[-1][1] != "MainThread"
    # Text never runs inline: its cost follows its length, which no size shows.
    text = InferRequest([Tensor("x", np.array([["a" * 10_000, "b"]], dtype=object))])
    for _ in range(3):
        await plane.infer("m", None, text)
    assert all(name != "MainThread" for _, name in Doubler.calls[-3:])

    slow = await make_plane(tmp_path / "slow", SlowDoubler)
    for _ in range(5):
        await slow.infer("m", None, request_of([[1, 1]]))
    assert all(name != "MainThread" for _, name in SlowDoubler.calls)


async def test_cheap_predicts_still_batch_under_concurrent_load(tmp_path):
    """Inline only when the model is otherwise idle: requests that arrive together queue behind
    the first and merge, instead of each predicting alone on the loop."""
    plane = await make_plane(tmp_path, max_batch_size=16)
    for _ in range(5):
        await plane.infer("m", None, request_of([[1, 1]]))
    assert Doubler.calls[-1][1] == "MainThread"  # measured cheap: inline when alone
    Doubler.calls.clear()
    results = await asyncio.gather(
        *(plane.infer("m", None, request_of([[i, i]])) for i in range(8))
    )
    assert [r.outputs[0].data.tolist() for r in results] == [[[2 * i, 2 * i]] for i in range(8)]
    assert len(Doubler.calls) < 8  # merged into fewer predicts


async def test_cheap_batches_under_load_run_inline_when_the_hop_costs_more(tmp_path, monkeypatch):
    """Under load a batch runs on the loop when it costs less than the measured hop to a
    pool thread, and on the pool (overlapping with HTTP work) when the hop is cheaper."""
    plane = await make_plane(tmp_path, max_batch_size=16)
    await plane.infer("m", None, request_of([[1, 1]]))  # first of its size: on the pool
    runner = next(iter(plane.runners.values()))
    assert runner.hop_cost > 0  # the hop it took was measured

    async def burst() -> list[str]:
        Doubler.calls.clear()
        results = await asyncio.gather(
            *(plane.infer("m", None, request_of([[i, i]])) for i in range(8))
        )
        assert [r.outputs[0].data.tolist() for r in results] == [[[2 * i] * 2] for i in range(8)]
        return [name for _, name in Doubler.calls]

    for _ in range(3):  # every batch size of the burst measured
        await burst()
    # From here the measurements stand still (a pool call would otherwise measure the hop
    # again), so the decision rests on the hop cost set below.
    monkeypatch.setattr(runner_module, "_EWMA", 0.0)
    runner.hop_cost = 1.0  # a hop dearer than any of these calls: all inline
    assert set(await burst()) == {"MainThread"}
    runner.hop_cost = 0.0  # a free hop: whatever does not run alone goes to the pool
    assert "MainThread" not in await burst()


async def test_inline_limit_zero_keeps_every_predict_on_the_pool(tmp_path):
    plane = await make_plane(tmp_path, inline_predict_limit=0.0)
    for _ in range(5):
        await plane.infer("m", None, request_of([[1, 1]]))
    assert all(name != "MainThread" for _, name in Doubler.calls)


async def test_async_predictors_are_awaited_on_the_loop_and_batch_too(tmp_path):
    plane = await make_plane(tmp_path, AsyncEcho, max_batch_size=4, max_batch_time=0.2)
    results = await asyncio.gather(
        *(plane.infer("m", None, request_of([[i, i]])) for i in range(4))
    )
    assert [r.outputs[0].data.tolist() for r in results] == [[[i, i]] for i in range(4)]
    assert all(name == "MainThread" for _, name in AsyncEcho.calls)
    assert len(AsyncEcho.calls) < 4  # merged
    AsyncEcho.ready_flag = False
    try:
        assert not await plane.ready()
        assert not await plane.model_ready("m")
    finally:
        AsyncEcho.ready_flag = True
    assert await plane.ready()


async def test_request_timeout_answers_504_and_frees_the_caller(tmp_path):
    SlowDoubler.delay = 0.5
    try:
        plane = await make_plane(tmp_path, SlowDoubler, request_timeout=0.05)
        async with client_for(plane) as client:
            response = await client.post("/v2/models/m/infer", json=v2_body([[1, 2]]))
        assert response.status_code == 504
        assert "request_timeout" in response.json()["error"]
    finally:
        SlowDoubler.delay = 0.01


async def test_a_pool_job_whose_caller_gave_up_never_runs():
    """A timed-out (cancelled) request must not leave its predict queued behind it: under
    overload every later request would wait for abandoned work and time out too."""
    pool = PredictPool(1)
    release = threading.Event()
    ran: list[str] = []
    try:
        busy = asyncio.ensure_future(pool.run(lambda _: release.wait(10), None))
        abandoned = asyncio.ensure_future(pool.run(ran.append, "abandoned"))
        await asyncio.sleep(0)  # both jobs are queued; the only thread is held by the first
        abandoned.cancel()
        release.set()
        assert await busy is True
        assert await pool.run(lambda value: value, "next") == "next"  # FIFO: after the second
        assert ran == []
        assert abandoned.cancelled()
    finally:
        release.set()
        pool.shutdown()


async def test_queue_cap_answers_503(tmp_path):
    SlowDoubler.delay = 0.2
    try:
        plane = await make_plane(tmp_path, SlowDoubler, max_queued_requests=2)
        async with client_for(plane) as client:
            responses = await asyncio.gather(
                *(client.post("/v2/models/m/infer", json=v2_body([[1, 2]])) for _ in range(4))
            )
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200, 200, 503, 503]
        refused = next(r for r in responses if r.status_code == 503)
        assert "max_queued_requests" in refused.json()["error"]
        assert refused.headers["retry-after"] == "1"  # as the connection cap's 503 says
    finally:
        SlowDoubler.delay = 0.01


async def test_draining_answers_with_connection_close(tmp_path):
    plane = await make_plane(tmp_path)
    async with client_for(plane) as client:
        assert "connection" not in (await client.get("/v2/health/live")).headers
        plane.draining = True
        live = await client.get("/v2/health/live")
        assert live.headers["connection"] == "close"
        ready = await client.get("/v2/health/ready")
        assert ready.status_code == 503
        assert (await client.post("/v2/models/m/infer", json=v2_body([[1, 2]]))).status_code == 200


async def test_openapi_and_offline_docs(tmp_path):
    plane = await make_plane(tmp_path)
    async with client_for(plane) as client:
        spec = (await client.get("/openapi.json")).json()
        assert spec["openapi"].startswith("3.")
        for path in (
            "/v2/models/{name}/infer",
            "/v1/models/{name}:predict",
            "/v2/repository/index",
        ):
            assert path in spec["paths"]
        infer = spec["paths"]["/v2/models/{name}/infer"]["post"]
        assert infer["responses"]["200"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/InferenceResponse"
        }
        page = await client.get("/docs")
        assert page.status_code == 200
        assert "/docs/static/swagger-ui-bundle.js" in page.text
        asset = await client.get("/docs/static/swagger-ui-bundle.js")
        assert asset.status_code == 200
        assert len(asset.content) > 100_000  # the real bundle, served by the server itself
    closed = await make_plane(tmp_path, enable_docs_url=False)
    async with client_for(closed) as client:
        assert (await client.get("/docs")).status_code == 404


async def test_protocol_details_405_allow_index_filter_classification(tmp_path):
    plane = await make_plane(tmp_path, enable_model_repository=True)
    async with client_for(plane) as client:
        # A 405 names the methods allowed (RFC 9110), on the fast path and elsewhere.
        assert (await client.get("/v2/models/m/infer")).headers["allow"] == "POST"
        ready = await client.post("/v2/health/ready")
        assert ready.status_code == 405 and "GET" in ready.headers["allow"]
        # The repository index takes the extension's {"ready": true}.
        assert (await client.post("/v2/repository/models/m/unload")).status_code == 200
        everything = (await client.post("/v2/repository/index")).json()
        assert [row["state"] for row in everything] == ["UNAVAILABLE"]
        assert (await client.post("/v2/repository/index", json={"ready": True})).json() == []
        assert (
            await client.post("/v2/repository/index", json={"ready": False})
        ).json() == everything
        bad = await client.post("/v2/repository/index", content=b"{")
        assert bad.status_code == 400 and "JSON" in bad.json()["error"]
        assert (await client.post("/v2/repository/models/m/load")).status_code == 200
        # Triton's classification extension (class_count) is refused, not ignored.
        body = v2_body([[1, 2]])
        body["outputs"] = [{"name": "y", "parameters": {"classification": 2}}]
        refused = await client.post("/v2/models/m/infer", json=body)
        assert refused.status_code == 400 and "class_count" in refused.json()["error"]
        # A boolean is not a byte count.
        header = b'{"inputs":[{"name":"x","shape":[1],"datatype":"BOOL","parameters":{"binary_data_size":true}}]}'
        sized = await client.post(
            "/v2/models/m/infer",
            content=header + b"\x01",
            headers={"inference-header-content-length": str(len(header))},
        )
        assert sized.status_code == 400 and "binary_data_size" in sized.json()["error"]


async def test_compressed_request_bodies_are_decoded_within_the_size_limit(tmp_path):
    """tritonclient compresses request bodies on request (gzip or deflate), the header
    length counting the uncompressed JSON; the decoded size is held to the limit."""
    import gzip
    import zlib

    plane = await make_plane(tmp_path, max_request_size=4096)
    body = orjson.dumps(v2_body([[1, 2]]))
    async with client_for(plane) as client:
        for encoding, packed in (("gzip", gzip.compress(body)), ("deflate", zlib.compress(body))):
            answer = await client.post(
                "/v2/models/m/infer", content=packed, headers={"content-encoding": encoding}
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["outputs"][0]["data"] == [2.0, 4.0]
        v1 = await client.post(
            "/v1/models/m:predict",
            content=gzip.compress(b'{"instances": [[1, 2]]}'),
            headers={"content-encoding": "gzip"},
        )
        assert v1.json() == {"predictions": [[2.0, 4.0]]}
        bomb = gzip.compress(b" " * 100_000)  # ~150 bytes that expand past the 4096 limit
        refused = await client.post(
            "/v2/models/m/infer", content=bomb, headers={"content-encoding": "gzip"}
        )
        assert refused.status_code == 413 and "decompressed" in refused.json()["error"]
        broken = await client.post(
            "/v2/models/m/infer", content=b"not gzip", headers={"content-encoding": "gzip"}
        )
        assert broken.status_code == 400 and "gzip" in broken.json()["error"]
        other = await client.post(
            "/v2/models/m/infer", content=body, headers={"content-encoding": "br"}
        )
        assert other.status_code == 415 and "'br'" in other.json()["error"]


async def test_unknown_model_names_share_one_metric_label(tmp_path):
    """Model names in paths come from clients: each one kept as a label value would be a
    series for the process' life (an attacker grows /metrics and memory without bound)."""
    plane = await make_plane(tmp_path)
    async with client_for(plane) as client:
        for index in range(20):
            name = f"probe-{index}-x"
            assert (
                await client.post(f"/v2/models/{name}/infer", json=v2_body([[1, 2]]))
            ).status_code == 404
            assert (await client.get(f"/v2/models/{name}/ready")).status_code == 404
            assert (await client.post(f"/v1/models/{name}:predict", json={})).status_code == 404
        assert (await client.post("/v2/models/m/infer", json=v2_body([[1, 2]]))).status_code == 200
        exposition = (await client.get("/metrics")).text
    assert "probe-" not in exposition
    assert 'model="m"' in exposition  # a known model keeps its label
    assert 'endpoint="infer",model="",protocol="v2",status="404"' in exposition


async def test_a_bug_behind_a_starlette_route_is_a_json_500_and_serving_goes_on(tmp_path):
    plane = await make_plane(tmp_path)

    def broken() -> dict[str, object]:
        raise RuntimeError("metadata broke")

    plane.server_metadata = broken  # type: ignore[method-assign]
    async with client_for(plane) as client:
        response = await client.get("/v2")
        assert response.status_code == 500
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {"error": "internal server error: RuntimeError: metadata broke"}
        assert (await client.get("/v2/health/live")).status_code == 200


async def test_unknown_model_is_404_in_the_data_plane(tmp_path):
    plane = await make_plane(tmp_path)
    with pytest.raises(ModelNotFound):
        await plane.infer("nope", None, request_of([[1, 1]]))
    with pytest.raises(ModelNotFound):
        await plane.model_ready("m", "7")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--enable_grpc"], True),
        (["--enable_grpc=false"], False),
        (["--enable_grpc", "false"], False),
        (["--enable_grpc", "--enable_docs_url"], True),
        ([], True),
    ],
)
def test_boolean_flags_accept_kserve_spellings(argv, expected):
    assert parse_config(argv, "test").enable_grpc is expected


def test_grpc_limits_default_to_the_request_size_limit():
    config = parse_config(["--max_request_size=200M"], "test")
    assert config.grpc_limits == (200 << 20, 200 << 20)
    assert ServerConfig().max_request_size >= 100 * 1000 * 1000 + 1024  # a 100 MB tensor fits
    config = parse_config(["--grpc_max_receive_message_length=1M"], "test")
    assert config.grpc_limits[1] == 1 << 20


def test_grpc_limits_past_what_grpc_can_express_mean_its_largest_message():
    """gRPC takes message caps as C ints: `--max_request_size=4G` used to crash start-up."""
    config = parse_config(["--max_request_size=4G"], "test")
    assert config.grpc_limits == ((1 << 31) - 1, (1 << 31) - 1)
    config = parse_config(["--grpc_max_receive_message_length=3000000000"], "test")
    assert config.grpc_limits[1] == (1 << 31) - 1


def test_environment_values_yield_to_flags_and_bad_ones_are_usage_errors(capsys):
    """Kubernetes adds `<SERVICE>_PORT=tcp://ip:port` variables to every pod: a Service
    named modelport-http used to crash start-up with a traceback, flag given or not."""
    service = {"MODELPORT_HTTP_PORT": "tcp://10.96.0.12:8080"}
    assert parse_config(["--http_port=18080"], "test", environ=service).http_port == 18080
    assert parse_config([], "test", environ={"MODELPORT_HTTP_PORT": "9000"}).http_port == 9000
    for environ in (service, {"MODELPORT_ENABLE_GRPC": "maybe"}):
        with pytest.raises(SystemExit) as exited:
            parse_config([], "test", environ=environ)
        assert exited.value.code == 2
    assert "invalid" in capsys.readouterr().err


def test_kserve_flags_modelport_does_not_use_are_accepted_and_named(caplog):
    """A ServingRuntime written for KServe's servers may pass its thread, asyncio and
    logging flags; they used to be a usage error (exit 2)."""
    argv = [
        "--max_threads=8",
        "--max_asyncio_workers",
        "4",
        "--enable_latency_logging",
        "--configure_logging=false",
        "--log_config_file=/etc/log.yaml",
        "--access_log_format=%(h)s",
        "--http_port=9001",
    ]
    config = parse_config(argv, "test", environ={})
    assert config.http_port == 9001
    assert not set(config.runtime_options) & {"max_threads", "enable_latency_logging"}
    assert "--max_threads, --max_asyncio_workers, --enable_latency_logging" in caplog.text


@pytest.mark.parametrize(
    ("error", "logged"),
    [
        (ModelNotReady("m", "loading"), False),
        (ServerDraining("the server is shutting down"), False),
        (Overloaded("model 'm' has 8 requests queued"), False),
        (RequestTimeout("the request did not finish"), False),
        (NotAvailable("no explainer"), False),
        (InvalidInput("input 'x': bad"), False),
        (InferenceFailed("model failed: boom"), True),
        (ModelportError("unexpected"), True),
    ],
)
def test_only_server_faults_are_logged_with_their_traceback(caplog, error, logged):
    # A model loading or a full queue is a state every request meets: a warning with a
    # traceback per request would flood the log (under overload most of all).
    caplog.set_level("WARNING", logger="modelport.server")
    log_failure("POST /v2/models/m/infer", error)
    assert [record.message for record in caplog.records] == (["request failed"] if logged else [])
