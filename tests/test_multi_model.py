"""Multi-model hosting: layouts, repository extension, versions, LRU budget, path safety."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from modelport.base.config import ServerConfig
from modelport.base.messages import InferRequest, InferResponse
from modelport.base.model import ModelSettings, Predictor
from modelport.base.repository import ModelRepository
from tests.models import IRIS_ROWS, constant_model, iris_logistic


def predict(server, name, rows=IRIS_ROWS):
    return server.post(f"/v1/models/{name}:predict", json={"instances": rows})


@pytest.fixture
def three_models(tmp_path):
    iris_logistic(tmp_path / "iris")
    constant_model(tmp_path / "sevens", 7)
    constant_model(tmp_path / "nines", 9)
    (tmp_path / "notes").mkdir()  # a directory without a model is not a model
    (tmp_path / "notes" / "README.txt").write_text("not a model")
    return tmp_path


def test_three_models_served_at_once(serve, three_models):
    server = serve("sklearn", three_models)
    assert sorted(server.get("/v2/models").json()["models"]) == ["iris", "nines", "sevens"]
    assert sorted(server.get("/v1/models").json()["models"]) == ["iris", "nines", "sevens"]
    assert predict(server, "iris").json() == {"predictions": [1, 1]}
    assert predict(server, "sevens").json() == {"predictions": [7, 7]}
    assert predict(server, "nines").json() == {"predictions": [9, 9]}
    assert predict(server, "notes").status_code == 404


def test_index_load_unload(serve, three_models):
    server = serve("sklearn", three_models)
    index = server.post("/v2/repository/index").json()
    assert {(row["name"], row["state"]) for row in index} == {
        ("iris", "READY"),
        ("nines", "READY"),
        ("sevens", "READY"),
    }
    assert server.get("/v2/repository/index").json() == index
    assert server.post("/v2/repository/models/nines/unload").json() == {
        "name": "nines",
        "unload": True,
    }
    assert "nines" not in server.get("/v2/models").json()["models"]
    # Unloaded on purpose: a 4xx that says so (a retry will not help), as Triton's 404.
    response = predict(server, "nines")
    assert response.status_code == 404
    assert "model 'nines' is unloaded" in response.json()["error"]
    v2 = server.post("/v2/models/nines/infer", json={"inputs": []})
    assert v2.status_code == 404 and "unloaded" in v2.json()["error"]
    ready = server.get("/v2/models/nines/ready")
    assert ready.status_code == 404 and ready.json() == {"name": "nines", "ready": False}
    assert server.get("/v2/models/nines").status_code == 404
    rows = {row["name"]: row for row in server.post("/v2/repository/index").json()}
    assert rows["nines"]["state"] == "UNAVAILABLE" and rows["nines"]["reason"] == "unloaded"
    # Readiness of the server is unaffected by an explicit unload.
    assert server.get("/v2/health/ready").status_code == 200
    assert server.post("/v2/repository/models/nines/load").json() == {"name": "nines", "load": True}
    assert predict(server, "nines").json() == {"predictions": [9, 9]}


def test_load_a_model_added_after_start(serve, three_models):
    server = serve("sklearn", three_models)
    constant_model(three_models / "late", 5)
    assert predict(server, "late").status_code == 404
    assert server.post("/v2/repository/models/late/load").status_code == 200
    assert predict(server, "late").json() == {"predictions": [5, 5]}


def test_load_refuses_paths_and_non_models(serve, three_models, tmp_path_factory):
    constant_model(three_models / ".hidden", 1)
    outside = constant_model(tmp_path_factory.mktemp("outside") / "escape", 1)
    (three_models / "link").symlink_to(outside)
    server = serve("sklearn", three_models)
    for name in [
        "..",
        "%2E%2E%2Fetc",
        "%2Fetc",
        "..%2F..%2Fetc",
        "notes",
        "missing",
        ".hidden",
        "link",
        str(outside).replace("/", "%2F"),
    ]:
        response = server.client.post(f"/v2/repository/models/{name}/load")
        assert response.status_code in (400, 404), name
        assert "error" in response.json()
    names = {row["name"] for row in server.get("/v2/repository/index").json()}
    assert names == {"iris", "nines", "sevens"}


def test_unload_during_traffic_to_another_model(serve, three_models):
    server = serve("sklearn", three_models)
    failures: list[int] = []
    done = threading.Event()

    def traffic() -> None:
        import httpx

        with httpx.Client(base_url=server.url, timeout=30) as client:
            while not done.is_set():
                response = client.post("/v1/models/iris:predict", json={"instances": IRIS_ROWS})
                if response.status_code != 200 or response.json() != {"predictions": [1, 1]}:
                    failures.append(response.status_code)

    workers = [threading.Thread(target=traffic) for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        for _ in range(5):
            assert server.post("/v2/repository/models/sevens/unload").status_code == 200
            assert server.post("/v2/repository/models/sevens/load").status_code == 200
    finally:
        done.set()
        for worker in workers:
            worker.join()
    assert failures == []
    assert predict(server, "sevens").json() == {"predictions": [7, 7]}


def test_lru_eviction_with_budget_of_two(serve, three_models):
    server = serve("sklearn", three_models, "--max_loaded_models=2")

    def states():
        return {row["name"]: row["state"] for row in server.get("/v2/repository/index").json()}

    # Sorted discovery: iris and nines load, sevens waits for its first request.
    assert states() == {"iris": "READY", "nines": "READY", "sevens": "UNAVAILABLE"}
    assert predict(server, "iris").status_code == 200  # nines is now least recently used
    assert predict(server, "sevens").json() == {"predictions": [7, 7]}  # loads, evicts nines
    assert states() == {"iris": "READY", "nines": "UNAVAILABLE", "sevens": "READY"}
    reasons = {row["name"]: row["reason"] for row in server.get("/v2/repository/index").json()}
    assert "evicted" in reasons["nines"]
    assert predict(server, "nines").json() == {"predictions": [9, 9]}  # evicts iris
    assert states() == {"iris": "UNAVAILABLE", "nines": "READY", "sevens": "READY"}
    assert server.get("/v2/health/ready").status_code == 200


def test_versions_route_to_the_named_version(serve, tmp_path):
    constant_model(tmp_path / "counter" / "1", 1)
    constant_model(tmp_path / "counter" / "2", 2)
    constant_model(tmp_path / "plain", 5)
    server = serve("sklearn", tmp_path)
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}

    def infer(path):
        return server.post(path, json=body)

    assert infer("/v2/models/counter/infer").json()["outputs"][0]["data"] == [2]
    assert infer("/v2/models/counter/infer").json()["model_version"] == "2"
    assert infer("/v2/models/counter/versions/1/infer").json()["outputs"][0]["data"] == [1]
    assert infer("/v2/models/counter/versions/2/infer").json()["outputs"][0]["data"] == [2]
    assert server.get("/v2/models/counter").json()["versions"] == ["1", "2"]
    assert server.get("/v2/models/counter/versions/1/ready").json()["ready"] is True
    missing = infer("/v2/models/counter/versions/3/infer")
    assert missing.status_code == 404 and "version '3'" in missing.json()["error"]
    unversioned = infer("/v2/models/plain/versions/1/infer")
    assert unversioned.status_code == 404


def test_model_settings_json_overrides_name_and_batching(serve, tmp_path):
    constant_model(tmp_path / "dir-name", 3)
    (tmp_path / "dir-name" / "model-settings.json").write_text(
        json.dumps({"name": "renamed", "version": "v7", "max_batch_size": 4})
    )
    server = serve("sklearn", tmp_path)
    assert server.get("/v2/models").json()["models"] == ["renamed"]
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    response = server.post("/v2/models/renamed/infer", json=body).json()
    assert response["model_version"] == "v7"
    assert response["outputs"][0]["data"] == [3]


def test_repository_extension_can_be_turned_off(serve, three_models):
    server = serve("sklearn", three_models, "--enable_model_repository=false")
    assert server.post("/v2/repository/index").status_code == 404
    assert server.post("/v2/repository/models/iris/unload").status_code == 404
    assert "model_repository" not in server.get("/v2").json()["extensions"]


def test_memory_budget_evicts_least_recently_used(serve, three_models):
    # A budget below any real process size: each load evicts every other model.
    server = serve("sklearn", three_models, "--memory_budget=1M")

    def ready():
        return sorted(server.get("/v2/models").json()["models"])

    assert len(ready()) == 1
    assert predict(server, "sevens").json() == {"predictions": [7, 7]}
    assert ready() == ["sevens"]
    assert predict(server, "iris").json() == {"predictions": [1, 1]}
    assert ready() == ["iris"]
    # Evicted, not unloaded: the next request loads it again, so not ready is a 503.
    assert server.get("/v2/models/sevens/ready").status_code == 503
    reasons = {row["name"]: row["reason"] for row in server.get("/v2/repository/index").json()}
    assert "evicted" in reasons["sevens"]


def test_a_directory_declaring_a_served_name_never_replaces_that_model(serve, tmp_path):
    """A loaded directory whose model-settings.json names a model another directory serves
    replaced that model (its predictor never unloaded) and answered 404; loading a renamed
    model by its directory reloaded it and answered 404 too."""
    constant_model(tmp_path / "dir-name", 3)
    (tmp_path / "dir-name" / "model-settings.json").write_text(json.dumps({"name": "renamed"}))
    constant_model(tmp_path / "other", 4)
    server = serve("sklearn", tmp_path)

    constant_model(tmp_path / "clash", 9)
    (tmp_path / "clash" / "model-settings.json").write_text(json.dumps({"name": "other"}))
    clash = server.post("/v2/repository/models/clash/load")
    assert clash.status_code == 400
    assert "'other'" in clash.json()["error"] and "'clash'" in clash.json()["error"]
    assert predict(server, "other").json() == {"predictions": [4, 4]}

    assert server.post("/v2/repository/models/dir-name/load").json() == {
        "name": "dir-name",
        "load": True,
    }
    assert predict(server, "renamed").json() == {"predictions": [3, 3]}
    rows = server.get("/v2/repository/index").json()
    assert {(row["name"], row["state"]) for row in rows} == {
        ("other", "READY"),
        ("renamed", "READY"),
    }


def test_two_directories_serving_one_name_fail_the_start(serve, tmp_path):
    for directory, value in (("a", 1), ("b", 2)):
        constant_model(tmp_path / directory, value)
        (tmp_path / directory / "model-settings.json").write_text(json.dumps({"name": "m"}))
    server = serve("sklearn", tmp_path, wait=False)
    assert server.process.wait(timeout=60) != 0
    assert "directories 'a' and 'b' both serve model 'm'" in server.log()


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"max_batch_size": "abc"}, "max_batch_size"),
        ({"max_batch_size": None}, "max_batch_size"),
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"max_batch_time": -1}, "max_batch_time"),
        ({"name": "a/b"}, "name"),
        ({"name": ""}, "name"),
        ({"version": {"v": 1}}, "version"),
        ({"parameters": [1]}, "parameters"),
        ({"model_file": 3}, "model_file"),
    ],
)
def test_model_settings_of_the_wrong_type_are_named_load_errors(serve, tmp_path, settings, field):
    """Wrong types were a bare ValueError or TypeError (an internal error naming neither the
    file nor the field), or a model served under a name no URL reaches."""
    constant_model(tmp_path / "good", 1)
    server = serve("sklearn", tmp_path)
    constant_model(tmp_path / "late", 5)
    (tmp_path / "late" / "model-settings.json").write_text(json.dumps(settings))
    response = server.post("/v2/repository/models/late/load")
    assert response.status_code == 500, response.text
    error = response.json()["error"]
    assert "model-settings.json" in error and f'"{field}"' in error
    assert "internal server error" not in error
    names = {row["name"] for row in server.get("/v2/repository/index").json()}
    assert names == {"good"}
    assert predict(server, "good").json() == {"predictions": [1, 1]}


def test_a_directory_of_non_ascii_digits_is_not_a_version(serve, tmp_path):
    """`²` passes `str.isdigit` but not `int()`: the server failed to start (ValueError)."""
    constant_model(tmp_path / "v" / "1", 1)
    constant_model(tmp_path / "v" / "²", 2)
    constant_model(tmp_path / "v" / "\u0661", 3)  # an Arabic-Indic one: `int` reads it as 1
    server = serve("sklearn", tmp_path)
    assert server.get("/v2/models/v").json()["versions"] == ["1"]
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    assert server.post("/v2/models/v/infer", json=body).json()["model_version"] == "1"


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({"version": "2"}, "two directories in"),
        ({"name": "other"}, "name different models"),
    ],
)
def test_versions_that_disagree_fail_the_load(serve, tmp_path, settings, error):
    """A version whose model-settings.json repeats another's version replaced it unseen; one
    naming another model was served under the first version's name."""
    constant_model(tmp_path / "good", 1)
    server = serve("sklearn", tmp_path)
    constant_model(tmp_path / "v" / "1", 1)
    constant_model(tmp_path / "v" / "2", 2)
    (tmp_path / "v" / "1" / "model-settings.json").write_text(json.dumps(settings))
    response = server.post("/v2/repository/models/v/load")
    assert response.status_code == 500 and error in response.json()["error"], response.text
    assert {row["name"] for row in server.get("/v2/repository/index").json()} == {"good"}


class _RaisingInInit(Predictor):
    """A custom runtime whose constructor raises (a bad parameter, a missing library)."""

    runtime = "raising"
    extensions = (".fake",)

    def __init__(self, settings: ModelSettings) -> None:
        raise RuntimeError("no such device")

    def load(self) -> None:
        raise NotImplementedError

    def infer(self, request: InferRequest) -> InferResponse:
        raise NotImplementedError


def test_a_runtime_whose_constructor_raises_is_a_failed_load(tmp_path):
    """The constructor ran outside the load's error handling: the model stayed LOADING (503
    "loading" forever, in the index too) and the load answered an internal error."""

    async def scenario() -> None:
        (tmp_path / "m").mkdir()
        (tmp_path / "m" / "model.fake").write_text("x")
        repository = ModelRepository(ServerConfig(model_dir=str(tmp_path)), _RaisingInInit)
        repository.discover()
        await repository.load("m")
        assert repository.index() == [
            {
                "name": "m",
                "state": "UNAVAILABLE",
                "reason": "model 'm': RuntimeError: no such device",
            }
        ]

    asyncio.run(scenario())


def test_settings_of_a_versioned_model_apply_to_its_versions(serve, tmp_path):
    """The model directory's model-settings.json was ignored once it held versions."""
    constant_model(tmp_path / "dir-name" / "1", 1)
    constant_model(tmp_path / "dir-name" / "2", 2)
    (tmp_path / "dir-name" / "model-settings.json").write_text(json.dumps({"name": "renamed"}))
    (tmp_path / "dir-name" / "1" / "model-settings.json").write_text(json.dumps({"version": "7"}))
    server = serve("sklearn", tmp_path)
    assert server.get("/v2/models").json()["models"] == ["renamed"]
    assert server.get("/v2/models/renamed").json()["versions"] == ["7", "2"]
