"""The one list of modelport's runtimes: everything else (runtime lookup, test extras, lint
targets, images, KServe manifests) derives from it.

Adding a runtime means its folder `runtimes/<name>/`, its extra in pyproject.toml and one
entry here. Plain Python with no imports beyond the standard library, so tools without
modelport installed can read it: `python3 base/registry.py names` (or `extras`, `json`).
"""

from __future__ import annotations

import os
import sys

# Run as a script, its own folder (base/) heads sys.path: it must not shadow the stdlib.
_HERE = os.path.dirname(os.path.realpath(__file__))
if __name__ == "__main__" and sys.path and os.path.realpath(sys.path[0] or ".") == _HERE:
    del sys.path[0]

import json  # noqa: E402 - after the sys.path fix above
from dataclasses import asdict, dataclass  # noqa: E402


@dataclass(frozen=True, slots=True)
class Runtime:
    """One runtime: how to import it, what installs it and what KServe calls its format."""

    #: Runtime name: `runtimes/<name>/`, `python -m modelport.runtimes.<name>`, the
    #: `runtime` field of model-settings.json.
    name: str
    #: `module:Class` of its Predictor, imported only when a model asks for it.
    predictor: str
    #: The pyproject.toml extra that installs its framework (and the server).
    extra: str
    #: KServe `modelFormat.name` this runtime serves.
    model_format: str
    #: KServe `modelFormat.version` strings it loads (KServe matches them literally).
    versions: tuple[str, ...]

    @property
    def module(self) -> str:
        """The runtime's package (`python -m` target)."""
        return f"modelport.runtimes.{self.name}"


RUNTIMES: tuple[Runtime, ...] = (
    Runtime(
        "sklearn", "modelport.runtimes.sklearn.model:SKLearnPredictor", "sklearn", "sklearn", ("1",)
    ),
    Runtime(
        "xgboost",
        "modelport.runtimes.xgboost.model:XGBoostPredictor",
        "xgboost",
        "xgboost",
        # Not "1": XGBoost 1.x saved its old binary format (any name but *.json), which
        # XGBoost 3 cannot read; KServe's xgbserver (XGBoost 2) takes those models.
        ("2", "3"),
    ),
    Runtime(
        "lightgbm",
        "modelport.runtimes.lightgbm.model:LightGBMPredictor",
        "lightgbm",
        "lightgbm",
        ("2", "3", "4"),
    ),
    Runtime(
        "pytorch",
        "modelport.runtimes.pytorch.model:PyTorchPredictor",
        "pytorch",
        "pytorch",
        ("1", "2"),
    ),
    Runtime(
        "tensorflow",
        "modelport.runtimes.tensorflow.model:TensorFlowPredictor",
        "tensorflow",
        "tensorflow",
        ("1", "2"),
    ),
    Runtime(
        "mlflow",
        "modelport.runtimes.mlflow.model:MLflowPredictor",
        "mlflow",
        "mlflow",
        ("1", "2", "3"),
    ),
    Runtime("onnx", "modelport.runtimes.onnx.model:ONNXPredictor", "onnx", "onnx", ("1",)),
)

BY_NAME: dict[str, Runtime] = {runtime.name: runtime for runtime in RUNTIMES}

# Components beside the predictor (`runtimes/<name>/`, `python -m modelport.runtimes.<name>`):
# they serve no model format, so they get no ClusterServingRuntime; KServe runs them as the
# InferenceService's transformer or explainer container.
COMPONENTS: tuple[str, ...] = ("transformer", "explainer")


def find(name: str) -> Runtime | None:
    """A runtime by its name or its KServe modelFormat name."""
    found = BY_NAME.get(name)
    if found is None:
        found = next((runtime for runtime in RUNTIMES if runtime.model_format == name), None)
    return found


def main(argv: list[str]) -> int:
    """`names`, `components`, `extras` (comma-separated, for Makefiles and shells) or `json`
    (every field)."""
    command = argv[0] if argv else "names"
    if command == "names":
        print(" ".join(runtime.name for runtime in RUNTIMES))
    elif command == "components":
        print(" ".join(COMPONENTS))
    elif command == "extras":
        print(",".join(dict.fromkeys(runtime.extra for runtime in RUNTIMES)))
    elif command == "json":
        print(json.dumps([asdict(runtime) for runtime in RUNTIMES], indent=2))
    else:
        print(f"usage: {sys.argv[0]} names|components|extras|json", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
