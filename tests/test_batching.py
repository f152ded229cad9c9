"""Adaptive batching: concurrent requests merged into one predict call and split back."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import joblib
import numpy as np

from tests.models import batch_size_model


def infer(url: str, rows: int, features: int = 4, request_id: str = "") -> dict:
    body = {
        "id": request_id,
        "inputs": [
            {
                "name": "x",
                "shape": [rows, features],
                "datatype": "FP32",
                "data": [0.5] * (rows * features),
            }
        ],
    }
    with httpx.Client(base_url=url, timeout=60) as client:
        response = client.post("/v2/models/counter/infer", json=body)
        assert response.status_code == 200, response.text
        return response.json()


def test_concurrent_requests_are_merged_and_split_back(serve, tmp_path):
    batch_size_model(tmp_path)
    server = serve(
        "sklearn", tmp_path, "--model_name=counter", "--max_batch_size=16", "--max_batch_time=1.0"
    )
    row_counts = [1, 2, 3, 1, 2, 3, 1, 2]
    with ThreadPoolExecutor(len(row_counts)) as pool:
        results = list(
            pool.map(
                lambda args: infer(server.url, *args),
                [(n, 4, f"r{i}") for i, n in enumerate(row_counts)],
            )
        )
    for i, (rows, result) in enumerate(zip(row_counts, results, strict=True)):
        output = result["outputs"][0]
        assert result["id"] == f"r{i}"  # each response is its own request's
        assert output["shape"] == [rows]  # split back by row count
        assert len(set(output["data"])) == 1
    seen = {result["outputs"][0]["data"][0] for result in results}
    assert max(seen) > max(row_counts)  # some predict call saw rows of several requests
    assert sum(row_counts) in seen  # with a 1 s window, all eight arrive in one batch


def test_requests_that_cannot_batch_pass_alone(serve, tmp_path):
    batch_size_model(tmp_path)
    server = serve(
        "sklearn", tmp_path, "--model_name=counter", "--max_batch_size=16", "--max_batch_time=1.0"
    )
    shapes = [(1, 4), (1, 4), (1, 5), (2, 4)]
    with ThreadPoolExecutor(len(shapes)) as pool:
        results = list(pool.map(lambda args: infer(server.url, *args), shapes))
    odd = results[2]["outputs"][0]["data"]
    assert odd == [1]  # the 5-feature request ran on its own
    merged = {result["outputs"][0]["data"][0] for i, result in enumerate(results) if i != 2}
    assert merged == {4}  # the three 4-feature requests (1 + 1 + 2 rows) ran together


def test_batching_off_runs_each_request_alone(serve, tmp_path):
    batch_size_model(tmp_path, delay=0.05)
    server = serve("sklearn", tmp_path, "--model_name=counter", "--max_batch_size=1")
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: infer(server.url, 1), range(6)))
    assert all(result["outputs"][0]["data"] == [1] for result in results)


def test_batched_predictions_equal_unbatched(serve, tmp_path):
    from tests.models import iris_logistic

    iris_logistic(tmp_path)
    server = serve(
        "sklearn", tmp_path, "--model_name=counter", "--max_batch_size=32", "--max_batch_time=0.05"
    )
    rng = np.random.default_rng(0)
    rows = rng.uniform(0, 7, size=(24, 4)).round(2)
    expected = joblib.load(tmp_path / "model.joblib").predict(rows).tolist()

    def one(row):
        body = {
            "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": row.tolist()}]
        }
        with httpx.Client(base_url=server.url, timeout=60) as client:
            return client.post("/v2/models/counter/infer", json=body).json()["outputs"][0]["data"][
                0
            ]

    with ThreadPoolExecutor(12) as pool:
        assert list(pool.map(one, rows)) == expected


def infer_binary(url: str, rows: int) -> list[int]:
    """A binary tensor extension request; its `binary_data_size` follows its row count."""
    raw = np.full((rows, 4), 0.5, dtype="<f4").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [rows, 4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    ).encode()
    with httpx.Client(base_url=url, timeout=60) as client:
        response = client.post(
            "/v2/models/counter/infer",
            content=header + raw,
            headers={
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(len(header)),
            },
        )
    assert response.status_code == 200, response.text
    output = response.json()["outputs"][0]
    assert output["shape"] == [rows]
    return output["data"]


def test_binary_requests_of_different_sizes_merge(serve, tmp_path):
    batch_size_model(tmp_path)
    server = serve(
        "sklearn", tmp_path, "--model_name=counter", "--max_batch_size=16", "--max_batch_time=1.0"
    )
    row_counts = [1, 2, 3]
    with ThreadPoolExecutor(len(row_counts)) as pool:
        results = list(pool.map(lambda rows: infer_binary(server.url, rows), row_counts))
    # binary_data_size differs per request, yet all three ran as one 6-row predict call
    assert all(set(data) == {sum(row_counts)} for data in results)
