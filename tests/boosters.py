"""Helpers shared by the XGBoost and LightGBM server tests (same outputs, same checks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def save(booster: Any, directory: Path, filename: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    booster.save_model(directory / filename)
    return directory


def colors_frame(rows: int = 300) -> tuple[Any, Any]:
    """Two numeric features and a categorical one that drives the label."""
    import pandas as pd

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=rows),
            "color": pd.Categorical(rng.choice(["red", "green", "blue"], rows)),
            "size": rng.uniform(0, 10, rows),
        }
    )
    label = ((frame["color"] == "red") | (frame["a"] > 1)).astype(int)
    return frame, label


def outputs(response: Any) -> dict[str, np.ndarray]:
    """A V2 answer's outputs by name, reshaped."""
    assert response.status_code == 200, response.text
    return {
        item["name"]: np.array(item["data"]).reshape(item["shape"])
        for item in response.json()["outputs"]
    }


def v2_rows(rows: list[list[float]], *names: str) -> dict[str, Any]:
    """A V2 body of FP64 rows as `input-0`, asking for the named outputs."""
    shape = [len(rows), len(rows[0])]
    body: dict[str, Any] = {
        "inputs": [{"name": "input-0", "shape": shape, "datatype": "FP64", "data": rows}]
    }
    if names:
        body["outputs"] = [{"name": name} for name in names]
    return body


def assert_bad(response: Any, *words: str) -> None:
    assert response.status_code == 400, response.text
    message = response.json()["error"]
    for word in words:
        assert word in message, message


def assert_adds_up(
    explanations: list[dict[str, Any]], margin: np.ndarray, tolerance: float
) -> None:
    """Contributions plus the base value give the raw margin, row by row (and class)."""
    for explanation, expected in zip(explanations, margin, strict=True):
        contributions = np.array(explanation["contributions"])
        total = contributions.sum(axis=-1) + np.array(explanation["base_value"])
        np.testing.assert_allclose(total, expected, rtol=tolerance, atol=tolerance)


# V2 inputs for the three models both booster test modules serve (iris, colors, reg).
METADATA_INPUTS: dict[str, list[dict[str, Any]]] = {
    "iris": v2_rows([[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]])["inputs"],
    "colors": [
        {"name": "color", "shape": [2], "datatype": "BYTES", "data": ["red", "blue"]},
        {"name": "size", "shape": [2], "datatype": "FP64", "data": [1.0, 5.0]},
        {"name": "a", "shape": [2], "datatype": "FP64", "data": [0.0, 2.0]},
    ],
    "reg": v2_rows([[0.1, 0.2, 0.3], [1.0, -1.0, 0.5]])["inputs"],
}
SERVERS = {"iris": "iris_server", "colors": "colors_server", "reg": "regression_server"}


def check_metadata(request: Any, model: str) -> None:
    """Each listed output of `model` (served by its module fixture) as infer answers it."""
    from tests.servers import assert_metadata_describes_infer

    server = request.getfixturevalue(SERVERS[model])
    # Named columns travel with the `pd` content type (a request parameter).
    parameters = {"content_type": "pd"} if model == "colors" else None
    assert_metadata_describes_infer(server, model, METADATA_INPUTS[model], parameters=parameters)
