"""Small seeded models trained in the tests and saved in their native formats."""

from __future__ import annotations

from pathlib import Path
from typing import Any

IRIS_ROWS = [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]


def iris_v2_body(
    name: str = "input-0", datatype: str = "FP32", outputs: list[str] | None = None
) -> dict[str, Any]:
    """A V2 infer body with the two IRIS_ROWS as one [2, 4] tensor (outputs by name)."""
    body: dict[str, Any] = {
        "inputs": [
            {
                "name": name,
                "shape": [2, 4],
                "datatype": datatype,
                "data": [value for row in IRIS_ROWS for value in row],
            }
        ]
    }
    if outputs is not None:
        body["outputs"] = [{"name": output} for output in outputs]
    return body


def iris_logistic(directory: Path, filename: str = "model.joblib") -> Path:
    """KServe's iris fixture: LogisticRegression on iris (rows above -> class 1, 1)."""
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    directory.mkdir(parents=True, exist_ok=True)
    joblib.dump(LogisticRegression(max_iter=1000, random_state=0).fit(x, y), directory / filename)
    return directory


def adult_pipeline(directory: Path) -> Path:
    """A Pipeline with a ColumnTransformer over named numeric and string columns."""
    import joblib
    import numpy as np
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, 200),
            "hours": rng.uniform(5, 60, 200),
            "job": rng.choice(["clerk", "engineer", "farmer"], 200),
        }
    )
    target = (frame["job"] == "engineer").astype(int)
    pipeline = Pipeline(
        [
            (
                "columns",
                ColumnTransformer(
                    [
                        ("numeric", StandardScaler(), ["age", "hours"]),
                        ("categorical", OneHotEncoder(handle_unknown="ignore"), ["job"]),
                    ]
                ),
            ),
            ("classifier", LogisticRegression(random_state=0)),
        ]
    ).fit(frame, target)
    directory.mkdir(parents=True, exist_ok=True)
    joblib.dump(pipeline, directory / "model.joblib")
    return directory


class SlowModel:
    """A picklable estimator whose predict sleeps: for drain and concurrency tests. With
    `started_file`, predict first creates that file, so a test can wait until a request is
    inside predict instead of guessing with a sleep."""

    def __init__(self, delay: float, value: int = 7, started_file: str | None = None) -> None:
        self.delay = delay
        self.value = value
        self.started_file = started_file
        self.n_features_in_ = 4

    def predict(self, rows):
        import pathlib
        import time

        import numpy as np

        if getattr(self, "started_file", None):
            pathlib.Path(self.started_file).touch()
        time.sleep(self.delay)
        return np.full(len(rows), self.value)


def constant_model(
    directory: Path, value: int, delay: float = 0.0, started_file: Path | None = None
) -> Path:
    """A model that answers `value` for every row (after `delay` seconds); see SlowModel for
    `started_file`."""
    import joblib

    directory.mkdir(parents=True, exist_ok=True)
    marker = str(started_file) if started_file else None
    joblib.dump(SlowModel(delay, value, marker), directory / "model.joblib")
    return directory


class BatchSizeModel:
    """Answers, for every row, how many rows its predict call saw: shows batching at work."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def predict(self, rows):
        import time

        import numpy as np

        time.sleep(self.delay)
        return np.full(len(rows), len(rows))


def batch_size_model(directory: Path, delay: float = 0.2) -> Path:
    import joblib

    directory.mkdir(parents=True, exist_ok=True)
    joblib.dump(BatchSizeModel(delay), directory / "model.joblib")
    return directory


class ThreadProbeModel:
    """Answers 1 per row when predict runs on the main thread (the event loop's), else 0."""

    def predict(self, rows):
        import threading

        import numpy as np

        return np.full(len(rows), int(threading.current_thread() is threading.main_thread()))


def thread_probe_model(directory: Path) -> Path:
    import joblib

    directory.mkdir(parents=True, exist_ok=True)
    joblib.dump(ThreadProbeModel(), directory / "model.joblib")
    return directory


class FaultyModel:
    """Predict raises `error` on any input: a bug in the model's code (a 500), not the
    client's mistake, whatever the exception type."""

    def __init__(self, error: str) -> None:
        self.error = error
        self.n_features_in_ = 4

    def predict(self, rows):
        if self.error == "KeyError":
            raise KeyError("lookup_table")
        raise TypeError("unsupported operand type(s) for +: 'int' and 'NoneType'")


class ColumnModel:
    """Reads the column `b` of a DataFrame: a request without it is the client's mistake."""

    def predict(self, frame):
        return frame["b"].to_numpy() * 2


class NonFiniteModel:
    """Answers NaN, +inf, -inf and 1.5 in turn: outputs JSON cannot carry."""

    n_features_in_ = 4

    def predict(self, rows):
        import numpy as np

        return np.resize(np.array([np.nan, np.inf, -np.inf, 1.5]), len(rows))


def pickled(directory: Path, model: object) -> Path:
    """Any picklable object as a scikit-learn runtime model directory."""
    import joblib

    directory.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, directory / "model.joblib")
    return directory
