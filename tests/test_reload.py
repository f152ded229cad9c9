"""Reloading a loaded model through the repository extension (REST and gRPC).

As Triton: the new predictor loads beside the one serving and replaces it only once
loaded, after which the old one is unloaded; a reload that fails leaves the loaded version
serving and answers the failure.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import weakref
from pathlib import Path
from typing import Any, ClassVar

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
from tritonclient.utils import InferenceServerException

from modelport.base import memory
from modelport.base.config import ServerConfig
from modelport.base.dataplane import DataPlane
from modelport.base.messages import InferRequest, InferResponse
from modelport.base.model import Predictor
from modelport.base.repository import ModelRepository, State
from tests.models import constant_model
from tests.reloadable import label_model
from tests.servers import ServerProcess, wait_for

ROWS = [[1, 2, 3, 4], [5, 6, 7, 8]]


def predict(server: ServerProcess, name: str) -> httpx.Response:
    return server.post(f"/v1/models/{name}:predict", json={"instances": ROWS})


def infer_label(server: ServerProcess, path: str, **parameters: object) -> httpx.Response:
    body = {
        "inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [0]}],
        "parameters": parameters,
    }
    return server.post(f"{path}/infer", json=body, timeout=60)


def label_of(response: httpx.Response) -> int:
    assert response.status_code == 200, response.text
    return int(response.json()["outputs"][0]["data"][0])


def metric(server: ServerProcess, prefix: str) -> float:
    for line in server.get("/metrics").text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric line starts with {prefix!r}")


def states(server: ServerProcess) -> dict[str, tuple[str, str]]:
    rows = server.get("/v2/repository/index").json()
    return {row["name"]: (row["state"], row["reason"]) for row in rows}


def test_failed_reload_keeps_the_loaded_version_serving(serve, tmp_path):
    constant_model(tmp_path / "b", 2)
    constant_model(tmp_path / "c", 3)
    # A budget of two, both used: a reload counts its model once and never evicts.
    server = serve("sklearn", tmp_path, "--max_loaded_models=2")
    assert predict(server, "b").json() == {"predictions": [2, 2]}
    assert metric(server, "modelport_loaded_models") == 2

    (tmp_path / "b" / "model.joblib").write_bytes(b"garbage")
    failed = server.post("/v2/repository/models/b/load")
    assert failed.status_code == 500  # a model fault, as a failed first load
    assert "cannot load model file" in failed.json()["error"]
    # The version loaded before still answers: nothing about it changed.
    assert predict(server, "b").json() == {"predictions": [2, 2]}
    assert server.get("/v2/models/b/ready").status_code == 200
    assert states(server) == {"b": ("READY", ""), "c": ("READY", "")}
    assert metric(server, "modelport_loaded_models") == 2

    constant_model(tmp_path / "b", 5)  # a good, different model file
    assert server.post("/v2/repository/models/b/load").json() == {"name": "b", "load": True}
    assert predict(server, "b").json() == {"predictions": [5, 5]}
    assert predict(server, "c").json() == {"predictions": [3, 3]}
    assert states(server) == {"b": ("READY", ""), "c": ("READY", "")}
    assert metric(server, "modelport_loaded_models") == 2
    # The replaced predictor's unload must not take the new one off the engine gauge.
    assert metric(server, 'modelport_model_engine{engine="native",model="b"}') == 1


def serve_label_model(serve: Any, tmp_path: Path) -> tuple[ServerProcess, Path, Path]:
    """A server over a models root holding label model `m` (answering 1): the server,
    the root, and the folder where the label runtime leaves its unload markers."""
    markers = tmp_path / "markers"
    markers.mkdir()
    models = tmp_path / "models"
    label_model(models / "m", 1, markers)
    return serve("sklearn", models), models, markers


def test_reload_swaps_in_the_new_predictor_and_unloads_the_old(serve, tmp_path):
    server, models, markers = serve_label_model(serve, tmp_path)
    assert label_of(infer_label(server, "/v2/models/m")) == 1

    # A request in flight on the loaded predictor while the reload replaces it.
    started = tmp_path / "started"
    in_flight: dict[str, httpx.Response] = {}

    def slow() -> None:
        in_flight["response"] = infer_label(
            server, "/v2/models/m", sleep=1.5, started_file=str(started)
        )

    thread = threading.Thread(target=slow)
    thread.start()
    try:
        wait_for(started.exists)
        (models / "m" / "model.label").write_text("2")
        assert server.post("/v2/repository/models/m/load").status_code == 200
        assert label_of(infer_label(server, "/v2/models/m")) == 2
    finally:
        thread.join()
    # It finished on the predictor it started on, which was then unloaded; the new one
    # was not.
    assert label_of(in_flight["response"]) == 1
    assert sorted(path.name for path in markers.iterdir()) == ["unloaded-1"]

    (models / "m" / "model.label").write_text("garbage")
    failed = server.post("/v2/repository/models/m/load")
    assert failed.status_code == 500 and "not a label" in failed.json()["error"]
    assert label_of(infer_label(server, "/v2/models/m")) == 2
    assert sorted(path.name for path in markers.iterdir()) == ["unloaded-1"]

    assert server.post("/v2/repository/models/m/unload").status_code == 200
    assert sorted(path.name for path in markers.iterdir()) == ["unloaded-1", "unloaded-2"]


def test_reload_of_versions_replaces_each_version_that_loads(serve, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    models = tmp_path / "models"
    label_model(models / "v" / "1", 1, markers, name="v")
    label_model(models / "v" / "2", 2, markers, name="v")
    server = serve("sklearn", models)

    (models / "v" / "1" / "model.label").write_text("garbage")
    (models / "v" / "2" / "model.label").write_text("20")
    failed = server.post("/v2/repository/models/v/load")
    assert failed.status_code == 500 and "not a label" in failed.json()["error"]
    # Version 1 failed to reload and keeps its predictor; version 2 reloaded.
    assert label_of(infer_label(server, "/v2/models/v/versions/1")) == 1
    assert label_of(infer_label(server, "/v2/models/v/versions/2")) == 20
    assert label_of(infer_label(server, "/v2/models/v")) == 20
    assert sorted(path.name for path in markers.iterdir()) == ["unloaded-2"]


def test_failed_reload_through_grpc_keeps_serving(serve, tmp_path):
    server, models, markers = serve_label_model(serve, tmp_path)

    def grpc_label(client: tgrpc.InferenceServerClient) -> int:
        tensor = tgrpc.InferInput("x", [1, 1], "FP32")
        tensor.set_data_from_numpy(np.zeros((1, 1), "float32"))
        return int(client.infer("m", [tensor]).as_numpy("label")[0])

    with tgrpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}") as client:
        assert grpc_label(client) == 1
        (models / "m" / "model.label").write_text("garbage")
        with pytest.raises(InferenceServerException) as failed:
            client.load_model("m")
        assert failed.value.status() == "StatusCode.INTERNAL"
        assert "not a label" in failed.value.message()
        assert client.is_model_ready("m")
        assert grpc_label(client) == 1
        assert list(markers.iterdir()) == []

        (models / "m" / "model.label").write_text("3")
        client.load_model("m")
        assert grpc_label(client) == 3
        assert sorted(path.name for path in markers.iterdir()) == ["unloaded-1"]


class Tracked(Predictor):
    """Records the predictors unloaded, by `id`."""

    runtime = "tracked"
    extensions = (".fake",)
    unloaded: ClassVar[list[int]] = []

    def load(self) -> None:
        self.model_file()

    def unload(self) -> None:
        self.unloaded.append(id(self))

    def infer(self, request: InferRequest) -> InferResponse:
        raise NotImplementedError


def test_replaced_predictor_is_unloaded_and_freed_before_memory_returns(tmp_path, monkeypatch):
    """In process: the data plane's runner of the old predictor is dropped and nothing of
    the repository's holds it when the memory is returned, so the trim can give it back."""

    async def scenario() -> None:
        (tmp_path / "m.fake").write_text("x")
        config = ServerConfig(model_name="m", model_dir=str(tmp_path))
        repository = ModelRepository(config, Tracked)
        repository.discover()
        await repository.load_all()
        plane = DataPlane(config, repository)
        try:
            entry = repository.version("m")
            plane._runner(entry)  # as after a first request
            assert entry.predictor is not None
            old, old_id = weakref.ref(entry.predictor), id(entry.predictor)
            alive_at_return: list[bool] = []
            monkeypatch.setattr(
                memory, "return_memory", lambda: alive_at_return.append(old() is not None)
            )
            Tracked.unloaded = []
            await repository.load("m")
            assert entry.state is State.READY and entry.predictor is not None
            assert Tracked.unloaded == [old_id]
            assert alive_at_return == [False]
            assert old_id not in plane.runners
        finally:
            plane.shutdown()

    asyncio.run(scenario())


def test_a_first_load_is_a_failure_when_any_version_fails(serve, tmp_path):
    """A model whose non-default version cannot load was answered 200: the load reported
    only the default version. Every version now counts (the one that loaded serves)."""
    server, models, markers = serve_label_model(serve, tmp_path)

    label_model(models / "v" / "1", "garbage", markers, name="v")  # the older version
    label_model(models / "v" / "2", 2, markers, name="v")
    failed = server.post("/v2/repository/models/v/load")
    assert failed.status_code == 500, failed.text
    assert "not a label" in failed.json()["error"]
    assert label_of(infer_label(server, "/v2/models/v/versions/2")) == 2
    assert server.get("/v2/models/v/versions/1/ready").status_code != 200


def test_reload_reads_version_directories_added_and_removed(serve, tmp_path):
    """A reload read only the artifacts of the versions found at start: a version added
    later stayed unknown (404) and a removed one kept serving. As Triton, a load now reads
    the model's directory again."""
    markers = tmp_path / "markers"
    markers.mkdir()
    models = tmp_path / "models"
    label_model(models / "v" / "1", 1, markers, name="v")
    server = serve("sklearn", models)
    assert label_of(infer_label(server, "/v2/models/v")) == 1

    label_model(models / "v" / "2", 2, markers, name="v")
    (models / "v" / "1" / "model.label").write_text("11")
    assert server.post("/v2/repository/models/v/load").status_code == 200
    assert label_of(infer_label(server, "/v2/models/v")) == 2  # the highest answers
    assert label_of(infer_label(server, "/v2/models/v/versions/1")) == 11  # reloaded
    assert server.get("/v2/models/v").json()["versions"] == ["1", "2"]
    assert list(markers.iterdir()) == [markers / "unloaded-1"]

    shutil.rmtree(models / "v" / "1")
    assert server.post("/v2/repository/models/v/load").status_code == 200
    gone = infer_label(server, "/v2/models/v/versions/1")
    assert gone.status_code == 404, gone.text
    assert label_of(infer_label(server, "/v2/models/v")) == 2
    index = server.get("/v2/repository/index").json()
    assert index == [{"name": "v", "state": "READY", "version": "2", "reason": ""}]
    # Version 1 (answering 11) was unloaded; version 2 was reloaded.
    assert sorted(path.name for path in markers.iterdir()) == [
        "unloaded-1",
        "unloaded-11",
        "unloaded-2",
    ]


def test_reload_reads_an_edited_model_settings_file(serve, tmp_path):
    server, models, markers = serve_label_model(serve, tmp_path)
    assert label_of(infer_label(server, "/v2/models/m")) == 1
    label_model(models / "m", 1, markers, add=10)
    assert server.post("/v2/repository/models/m/load").status_code == 200
    assert label_of(infer_label(server, "/v2/models/m")) == 11

    # A served model keeps its name: a settings file that renames it is a failed reload,
    # and the loaded version keeps serving under its name.
    label_model(models / "m", 1, markers, name="renamed")
    failed = server.post("/v2/repository/models/m/load")
    assert failed.status_code == 500 and "keeps its name" in failed.json()["error"]
    assert label_of(infer_label(server, "/v2/models/m")) == 11

    # Unloaded, it may take the new name: the folder's name finds it.
    assert server.post("/v2/repository/models/m/unload").status_code == 200
    assert server.post("/v2/repository/models/m/load").json() == {"name": "m", "load": True}
    assert label_of(infer_label(server, "/v2/models/renamed")) == 1
    assert infer_label(server, "/v2/models/m").status_code == 404


def test_a_renamed_model_unloads_by_its_folder_name(serve, tmp_path):
    """Loading took the folder's name of a renamed model, unloading answered 404."""
    markers = tmp_path / "markers"
    markers.mkdir()
    models = tmp_path / "models"
    label_model(models / "folder", 4, markers, name="served")
    server = serve("sklearn", models)
    assert label_of(infer_label(server, "/v2/models/served")) == 4
    assert server.post("/v2/repository/models/folder/unload").status_code == 200
    assert server.get("/v2/models/served/ready").status_code == 404
    assert server.post("/v2/repository/models/folder/load").status_code == 200
    assert label_of(infer_label(server, "/v2/models/served")) == 4


def test_two_directories_of_one_version_number_are_refused(serve, tmp_path):
    """`1/` and `01/` were two versions of the same number, one of them unreachable."""
    server, models, markers = serve_label_model(serve, tmp_path)
    label_model(models / "d" / "1", 1, markers, name="d")
    label_model(models / "d" / "01", 2, markers, name="d")
    failed = server.post("/v2/repository/models/d/load")
    assert failed.status_code == 500, failed.text
    assert "'01' and '1'" in failed.json()["error"] and "version 1" in failed.json()["error"]
    assert label_of(infer_label(server, "/v2/models/m")) == 1
