"""Models and runtimes that fail on purpose: for supervision and error-logging tests."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from modelport.base.messages import InferRequest, InferResponse
from modelport.base.model import Predictor


class ExplodingModel:
    """A picklable estimator whose predict raises: a fault in the model, not the input."""

    n_features_in_ = 4

    def predict(self, rows):
        raise RuntimeError("boom inside the model")


def exploding_model(directory: Path) -> Path:
    import joblib

    directory.mkdir(parents=True, exist_ok=True)
    joblib.dump(ExplodingModel(), directory / "model.joblib")
    return directory


class CrashingPredictor(Predictor):
    """A runtime whose load kills its own process, as a segfault in native code would."""

    runtime = "crashing"

    def load(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def infer(self, request: InferRequest) -> InferResponse:
        raise NotImplementedError


def crashing_model(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model-settings.json").write_text('{"runtime": "tests.faulty:CrashingPredictor"}')
    return directory


class MarkedSlowModel:
    """Writes `marker` when a predict starts, then sleeps: a request known to be in flight."""

    def __init__(self, marker: str, delay: float) -> None:
        self.marker = marker
        self.delay = delay
        self.n_features_in_ = 4

    def predict(self, rows):
        import time

        import numpy as np

        Path(self.marker).write_text("in predict")
        time.sleep(self.delay)
        return np.full(len(rows), 7)


def marked_slow_model(directory: Path, marker: Path, delay: float) -> Path:
    import joblib

    directory.mkdir(parents=True, exist_ok=True)
    joblib.dump(MarkedSlowModel(str(marker), delay), directory / "model.joblib")
    return directory
