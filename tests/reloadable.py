"""A test runtime whose model file is a version label, for reload tests.

Served through `model-settings.json` (`"runtime": "tests.reloadable:LabelPredictor"`): it
answers every request with the label its `model.label` file held when it loaded plus its
`add` parameter (one INT64 per row), refuses to load a file that is not a number (a corrupt
model), and on unload leaves `unloaded-<label>` in the directory named by its `marker_dir`
parameter, so a test sees which predictor object was unloaded. Request parameters `sleep`
and `started_file` as in `tests.echo`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson

from modelport.base.messages import InferRequest, InferResponse, Tensor
from modelport.base.model import Predictor
from tests.echo import start_call


class LabelPredictor(Predictor):
    runtime = "label"
    extensions = (".label",)

    def load(self) -> None:
        text = self.model_file().read_text().strip()
        if not text.isdigit():
            raise ValueError(f"not a label: {text[:20]!r}")
        self.label = int(text)

    def unload(self) -> None:
        marker_dir = self.settings.parameters.get("marker_dir")
        if marker_dir:
            (Path(marker_dir) / f"unloaded-{self.label}").touch()

    def infer(self, request: InferRequest) -> InferResponse:
        start_call(request)
        rows = request.inputs[0].data.shape[0] if request.inputs else 1
        answer = self.label + int(self.settings.parameters.get("add", 0))
        return InferResponse([Tensor("label", np.full(rows, answer, np.int64), "INT64")])


def label_model(
    directory: Path,
    label: int | str,
    marker_dir: Path,
    name: str | None = None,
    add: int | None = None,
) -> Path:
    """A model (or version) directory the label runtime serves, answering `label` (+ `add`)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.label").write_text(str(label))
    parameters: dict[str, object] = {"marker_dir": str(marker_dir)}
    if add is not None:
        parameters["add"] = add
    doc = {
        "name": name or directory.name,
        "runtime": "tests.reloadable:LabelPredictor",
        "parameters": parameters,
    }
    (directory / "model-settings.json").write_bytes(orjson.dumps(doc))
    return directory
