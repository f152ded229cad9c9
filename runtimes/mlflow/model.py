"""MLflow predictor: any MLflow model directory (`MLmodel` + artifacts), loaded as pyfunc.

The model's signature drives everything: it is the V2 metadata, it decides whether a
request becomes a DataFrame (column-based) or ndarray(s) (tensor-based), and which
`params` a request may pass (`schema.py`). V1 speaks MLflow's own scoring formats and
answers as `mlflow models serve` does (`scoring.py`), so MLflow clients work unchanged.
The model's `requirements.txt` is compared with what is installed and differences are
logged once at load time (`requirements.py`).
"""

from __future__ import annotations

import logging
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelport.base.errors import ModelLoadError, ModelportError
from modelport.base.messages import InferRequest, InferResponse, TensorSpec
from modelport.base.model import Predictor, load_artifact
from modelport.base.tensors import select_outputs
from modelport.runtimes.mlflow import scoring
from modelport.runtimes.mlflow.requirements import (
    MLMODEL,
    check_flavors,
    missing_loader,
    requirement_for,
    warn_requirement_mismatches,
)
from modelport.runtimes.mlflow.schema import Signature


class MLflowPredictor(Predictor):
    runtime = "mlflow"
    extensions = ()

    @classmethod
    def holds_model(cls, directory: Path) -> bool:
        return (directory / MLMODEL).is_file()

    # --- loading ------------------------------------------------------------------------

    def load(self) -> None:
        import mlflow.pyfunc

        _route_mlflow_logs()
        path = self.model_path()
        check_flavors(path)
        warn_requirement_mismatches(self.name, path)
        self.model: Any = load_artifact(_loader(mlflow.pyfunc.load_model), path)
        self.signature = Signature(self.model.metadata, self.name)

    def model_path(self) -> Path:
        """The model directory, or the local MLflow URI `parameters.uri` names (MLServer's key).

        Plain paths are relative to the model dir; `file:` URIs are local paths; other MLflow
        URIs (`runs:/`, `models:/`) are resolved by MLflow against its tracking URI, which
        works offline for a local file store.
        """
        uri = self.settings.parameters.get("uri")
        if not uri:
            return self.settings.model_dir
        uri = str(uri)
        parsed = urllib.parse.urlparse(uri)
        if parsed.scheme == "file":
            if parsed.netloc not in ("", "localhost"):
                raise ModelLoadError(f"model URI '{uri}' names a remote host; only local files")
            path = Path(urllib.request.url2pathname(parsed.path))
        elif parsed.scheme in ("runs", "models"):
            import mlflow.artifacts

            return Path(load_artifact(_downloader(mlflow.artifacts), Path(uri)))
        elif parsed.scheme:
            raise ModelLoadError(
                f"model URI '{uri}': only local MLflow URIs are loaded here; pass a remote "
                "location as --model_dir (downloaded by modelport[storage]) instead"
            )
        else:
            path = self.settings.model_dir / uri
        if not (path / MLMODEL).is_file():
            raise ModelLoadError(f"model URI '{uri}': '{path}' holds no {MLMODEL} file")
        return path

    # --- metadata and V1 ----------------------------------------------------------------

    def inputs(self) -> list[TensorSpec]:
        return self.signature.inputs()

    def outputs(self) -> list[TensorSpec]:
        return self.signature.outputs()

    def decode_v1(self, body: Any) -> InferRequest:
        return scoring.decode_request(
            body, tensor_based=self.signature.tensor_based, columns=self.signature.column_names
        )

    def encode_v1(self, response: InferResponse) -> dict[str, Any]:
        return scoring.encode_response(response)

    # --- inference ----------------------------------------------------------------------

    def infer(self, request: InferRequest) -> InferResponse:
        data = self.signature.model_input(request)
        params = self.signature.params(request)
        try:
            result = self.model.predict(data, params=params or None)
        except ModelportError:
            raise
        except Exception as exc:
            raise self.signature.failure(exc) from exc
        outputs, parameters = scoring.result_tensors(result)
        outputs = select_outputs(outputs, request, self.name)
        return InferResponse(outputs=outputs, id=request.id, parameters=parameters)


def _loader(load_model: Callable[..., Any]) -> Callable[[Path], Any]:
    """`load_model` with a missing module named, with the requirement line that asks for it.

    suppress_warnings: the one requirements warning logged at load replaces MLflow's own.
    """

    def load(path: Path) -> Any:
        try:
            return load_model(str(path), suppress_warnings=True)
        except ModuleNotFoundError as exc:
            missing_loader(path, exc)
            wanted = requirement_for(path, exc.name or "")
            hint = f" (the model's requirements list {wanted})" if wanted else ""
            raise ModelLoadError(
                f"cannot load MLflow model '{path}': it needs module '{exc.name}', which is not "
                f"installed{hint}; install the model's requirements.txt into the image "
                "(see runtimes/mlflow/README.md)"
            ) from exc

    return load


def _downloader(artifacts: Any) -> Callable[[Path], str]:
    def download(uri: Path) -> str:
        return str(artifacts.download_artifacts(artifact_uri=str(uri)))

    return download


def _route_mlflow_logs() -> None:
    """MLflow installs its own plain-text handler; send its records through our JSON one."""
    logger = logging.getLogger("mlflow")
    logger.handlers[:] = []
    logger.propagate = True
