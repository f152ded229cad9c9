"""The explainer's data: the background sample, and requests to and from a feature matrix.

KernelSHAP needs numbers: a request's features become a float matrix `[rows, features]`
and the perturbed rows go to the predictor in the request's own layout (one 2-D tensor
under the client's input name, or one column per feature with content type `pd`), so the
predictor sees what the client would have sent it, only with more rows.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from modelport.base.errors import InvalidInput, ModelLoadError
from modelport.base.messages import InferRequest, RequestedOutput, Tensor


@dataclass(frozen=True, slots=True)
class Background:
    """The background sample and, when the file had a header, its feature names."""

    data: np.ndarray
    names: list[str] | None = None


def load_background(path: str | None, inline: str | None) -> Background:
    """From `--background_data` (.npy, or .csv with an optional header row) or from
    `--background` (JSON rows); exactly one of them."""
    if bool(path) == bool(inline):
        raise ModelLoadError(
            "the explainer needs a background sample: pass --background_data FILE (.npy or "
            ".csv) or --background '[[...], ...]' (JSON rows), not both"
        )
    if inline:
        try:
            rows = orjson.loads(inline)
        except orjson.JSONDecodeError as exc:
            raise ModelLoadError(f"--background is not JSON: {exc}") from None
        return Background(_matrix(rows, "--background"))
    assert path is not None
    file = Path(path)
    if not file.is_file():
        raise ModelLoadError(f"background file '{file}' does not exist")
    suffix = file.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot read background file '{file}': {exc}") from None
        return Background(_matrix(array, f"background file '{file}'"))
    if suffix == ".csv":
        return _read_csv(file)
    raise ModelLoadError(f"background file '{file}': expected a .npy or .csv file")


def _read_csv(file: Path) -> Background:
    with file.open(newline="") as handle:
        rows = [row for row in csv.reader(handle) if row]
    names = None
    if rows and not all(_is_number(cell) for cell in rows[0]):
        names, rows = [cell.strip() for cell in rows[0]], rows[1:]
    try:
        values = [[float(cell) for cell in row] for row in rows]
    except ValueError as exc:
        raise ModelLoadError(f"background file '{file}': {exc}") from None
    data = _matrix(values, f"background file '{file}'")
    if names is not None and len(names) != data.shape[1]:
        raise ModelLoadError(
            f"background file '{file}': {len(names)} names in the header, "
            f"{data.shape[1]} values per row"
        )
    return Background(data, names)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _matrix(values: Any, what: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"{what} must hold rows of numbers: {exc}") from None
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ModelLoadError(
            f"{what} must be a non-empty [rows, features] matrix, got shape {list(array.shape)}"
        )
    if not np.isfinite(array).all():
        raise ModelLoadError(f"{what} holds NaN or infinite values")
    return array


@dataclass(frozen=True, slots=True)
class Features:
    """A request's features as a matrix, with how to send more rows like them."""

    matrix: np.ndarray
    names: list[str]
    #: The input name of a single 2-D tensor; None when the features came as columns.
    tensor: str | None
    dtypes: list[np.dtype[Any]]

    def request(self, matrix: np.ndarray, outputs: list[str]) -> InferRequest:
        """Rows shaped like the client's request, asking for `outputs` (none: the default)."""
        wanted = [RequestedOutput(name) for name in outputs]
        if self.tensor is not None:
            data = matrix.astype(self.dtypes[0], copy=False)
            return InferRequest(inputs=[Tensor(self.tensor, data)], outputs=wanted)
        columns = [
            Tensor(name, np.ascontiguousarray(matrix[:, i]).astype(dtype, copy=False))
            for i, (name, dtype) in enumerate(zip(self.names, self.dtypes, strict=True))
        ]
        return InferRequest(inputs=columns, parameters={"content_type": "pd"}, outputs=wanted)


def features_of(request: InferRequest, background: Background) -> Features:
    """The request's numeric features, checked against the background (400s otherwise)."""
    width = background.data.shape[1]
    inputs = request.inputs
    if not inputs:
        raise InvalidInput("the request holds no inputs")
    if len(inputs) == 1 and request.content_type != "pd":
        tensor = inputs[0]
        data = tensor.data if tensor.data.ndim != 1 else tensor.data.reshape(1, -1)
        _numeric(tensor.name, data)
        if data.ndim != 2:
            raise InvalidInput(
                f"input '{tensor.name}': expected a 2-D [rows, features] tensor, got shape "
                f"{tensor.shape}"
            )
        if data.shape[1] != width:
            raise InvalidInput(
                f"input '{tensor.name}': the explainer expects {width} features (as its "
                f"background sample has), got {data.shape[1]}"
            )
        names = background.names or [f"f{i}" for i in range(width)]
        return Features(_rows(data), names, tensor.name, [_wire_dtype(data)])
    columns = {tensor.name: _column(tensor) for tensor in inputs}
    names = list(columns)
    if background.names is not None:
        missing = [name for name in background.names if name not in columns]
        extra = [name for name in names if name not in background.names]
        if missing or extra:
            raise InvalidInput(
                "the features must be the background's columns "
                f"({', '.join(background.names)}); "
                + "; ".join(
                    text
                    for text in (
                        f"missing: {', '.join(missing)}" if missing else "",
                        f"unexpected: {', '.join(extra)}" if extra else "",
                    )
                    if text
                )
            )
        names = list(background.names)
    elif len(names) != width:
        raise InvalidInput(
            f"the explainer expects {width} feature columns (as its background sample has), "
            f"got {len(names)}"
        )
    lengths = {len(columns[name]) for name in names}
    if len(lengths) != 1:
        raise InvalidInput("every feature column must have the same number of rows")
    matrix = np.stack([columns[name] for name in names], axis=1)
    return Features(_rows(matrix), names, None, [_wire_dtype(columns[name]) for name in names])


def _column(tensor: Tensor) -> np.ndarray:
    data = tensor.data
    if data.ndim == 2 and data.shape[1] == 1:
        data = data[:, 0]
    if data.ndim != 1:
        raise InvalidInput(f"input '{tensor.name}': a column must be 1-D, got shape {tensor.shape}")
    _numeric(tensor.name, data)
    return data


def _numeric(name: str, data: np.ndarray) -> None:
    if data.dtype.kind not in "biuf":
        raise InvalidInput(
            f"input '{name}': KernelSHAP explains numeric features only, got "
            f"{'text' if data.dtype.kind in 'OUS' else data.dtype.name}"
        )


def _rows(data: np.ndarray) -> np.ndarray:
    matrix = np.asarray(data, dtype=np.float64)
    if len(matrix) == 0:
        raise InvalidInput("the request holds no rows to explain")
    if not np.isfinite(matrix).all():
        raise InvalidInput("the features hold NaN or infinite values")
    return matrix


def _wire_dtype(data: np.ndarray) -> np.dtype[Any]:
    """Perturbed rows mix the client's values with the background's: a float request keeps
    its float type, anything else (integers from JSON) goes as FP64."""
    return data.dtype if data.dtype.kind == "f" else np.dtype(np.float64)
