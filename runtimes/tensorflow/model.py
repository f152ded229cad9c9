"""TensorFlow predictor: SavedModel signatures (TF Serving's layout and REST formats) and Keras.

A model directory holds `saved_model.pb` (TF Serving's numbered version subdirectories are
versions, handled by the repository) or one `.keras` file. Requests run one signature,
`serving_default` unless `--signature_name` (or a request's `signature_name`) picks another;
inputs are matched by the signature's names and converted to its dtypes, never losing
their kind. V1 speaks TF Serving's REST dialect, which lives in `tfserving`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ info banners are not JSON logs
import tensorflow as tf
from modelport.base.datatypes import narrow_floats, overflowed
from modelport.base.errors import InferenceFailed, InvalidInput, ModelLoadError
from modelport.base.messages import InferRequest, InferResponse, Tensor, TensorSpec
from modelport.base.model import Predictor, load_artifact
from modelport.base.tensors import (
    bind_inputs,
    check_shape,
    datatype_of,
    output_tensor,
    requested_outputs,
    wrong_datatype,
)
from modelport.runtimes.tensorflow import tfserving
from modelport.runtimes.tensorflow.tfserving import SIGNATURE

DEFAULT_SIGNATURE = "serving_default"
SAVED_MODEL = "saved_model.pb"
Feed = dict[str, tf.Tensor]


@dataclass(slots=True)
class Signature:
    """One callable entry point: named input and output specs and how to run it."""

    name: str
    inputs: dict[str, tf.TensorSpec]
    outputs: dict[str, tf.TensorSpec]
    run: Callable[[Feed], dict[str, tf.Tensor]]
    owner: Any = None  # keeps the loaded object (and its variables) alive


class TensorFlowPredictor(Predictor):
    """Serves the signatures of one SavedModel (or a Keras file as one signature)."""

    runtime = "tensorflow"
    extensions = (".keras",)

    @classmethod
    def holds_model(cls, directory: Path) -> bool:
        return (directory / SAVED_MODEL).is_file() or super().holds_model(directory)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--signature_name",
            default=DEFAULT_SIGNATURE,
            help=f"SavedModel signature to serve (default: {DEFAULT_SIGNATURE})",
        )

    # --- loading ------------------------------------------------------------------------

    def load(self) -> None:
        self.default = str(self.settings.parameters.get(SIGNATURE) or DEFAULT_SIGNATURE)
        directory = self.settings.model_dir
        named = self.settings.model_file
        if named and Path(named).name == SAVED_MODEL:
            directory, named = (directory / named).parent, None
        if not named and (directory / SAVED_MODEL).is_file():
            self.signatures = load_artifact(saved_model_signatures, directory)
        else:
            path = self.model_file()
            self.signatures = {self.default: load_artifact(keras_signature, path)}
            self.signatures[self.default].name = self.default
        if self.default not in self.signatures:
            raise ModelLoadError(
                f"SavedModel '{directory}' has no signature '{self.default}'; it has: "
                f"{', '.join(self.signatures) or 'none'} (choose one with --signature_name)"
            )

    def signature(self, name: Any) -> Signature:
        """The named signature, or the served default; an unknown name is the client's error.

        `name` comes from a request's parameters, which may hold any JSON value: a list
        cannot even be looked up, and an integer is no signature name either."""
        if name is not None and not isinstance(name, str):
            raise InvalidInput(
                f"parameter '{SIGNATURE}' must be a string, got {type(name).__name__}"
            )
        found = self.signatures.get(name or self.default)
        if found is None:
            raise InvalidInput(
                f"model '{self.name}' has no signature '{name}'; it has: "
                f"{', '.join(self.signatures)}"
            )
        return found

    # --- metadata -----------------------------------------------------------------------

    def inputs(self) -> list[TensorSpec]:
        return _specs(self.signature(None).inputs)

    def outputs(self) -> list[TensorSpec]:
        return _specs(self.signature(None).outputs)

    # --- inference ----------------------------------------------------------------------

    def infer(self, request: InferRequest) -> InferResponse:
        signature = self.signature(request.parameters.get(SIGNATURE))
        feed = _feed(signature, request.inputs)
        wanted = requested_outputs(request, signature.outputs, f"signature '{signature.name}'")
        try:
            result = signature.run(feed)
        except tf.errors.InvalidArgumentError as exc:
            raise InvalidInput(f"model '{self.name}' rejected the input: {exc.message}") from exc
        except (tf.errors.OpError, ValueError, TypeError) as exc:
            raise InferenceFailed(
                f"model '{self.name}' failed: {type(exc).__name__}: {exc}"
            ) from exc
        names = wanted or [name for name in signature.outputs if name in result]
        outputs = [_from_tf(name, result[name]) for name in names]
        parameters = tfserving.response_parameters(request)
        return InferResponse(outputs=outputs, id=request.id, parameters=parameters)

    # --- V1: TF Serving's REST formats (see tfserving) -------------------------------------

    def decode_v1(self, body: Any) -> InferRequest:
        """The signature named in the body decides where bare (unnamed) values go."""
        signature = self.signature(tfserving.signature_name(body))
        return tfserving.decode_request(body, signature.name, list(signature.inputs))

    def encode_v1(self, response: InferResponse) -> dict[str, Any]:
        return tfserving.encode_response(response)


# --- loading helpers ----------------------------------------------------------------------


def saved_model_signatures(directory: Path) -> dict[str, Signature]:
    """Every signature of a SavedModel, keyed by name."""
    loaded = tf.saved_model.load(str(directory))
    signatures: dict[str, Signature] = {}
    for name, function in loaded.signatures.items():
        _, specs = function.structured_input_signature

        def run(feed: Feed, function: Any = function) -> dict[str, tf.Tensor]:
            return function(**feed)

        # A SavedModel keeps signature inputs and outputs in proto maps: name order is the
        # only stable one.
        inputs = dict(sorted(specs.items()))
        outputs = dict(sorted(function.structured_outputs.items()))
        signatures[name] = Signature(name, inputs, outputs, run, loaded)
    return signatures


def keras_signature(path: Path) -> Signature:
    """A Keras model as one signature: inputs by their Input names, outputs by structure."""
    import keras

    model = keras.saving.load_model(path)  # safe_mode: no arbitrary code from the file
    if not getattr(model, "inputs", None):
        raise ModelLoadError(
            f"Keras model '{path}' has no defined inputs: build it with keras.Input"
        )
    inputs = {tensor.name: tf.TensorSpec(tensor.shape, tensor.dtype) for tensor in model.inputs}
    structure = model.input

    def names(value: Any) -> list[str]:
        if isinstance(value, dict):
            return [str(key) for key in value]
        if isinstance(value, (list, tuple)):
            return [f"output-{index}" for index in range(len(value))]
        return ["output-0"]

    def flat(value: Any) -> list[Any]:
        if isinstance(value, dict):
            return list(value.values())
        return list(value) if isinstance(value, (list, tuple)) else [value]

    output_names = names(model.output)
    outputs = {
        name: tf.TensorSpec(tensor.shape, tensor.dtype)
        for name, tensor in zip(output_names, flat(model.output), strict=True)
    }

    def run(feed: Feed) -> dict[str, tf.Tensor]:
        arguments = tf.nest.map_structure(lambda tensor: feed[tensor.name], structure)
        result = model(arguments, training=False)
        return dict(zip(output_names, flat(result), strict=True))

    return Signature(DEFAULT_SIGNATURE, inputs, outputs, run)


# --- request -> tensors -------------------------------------------------------------------


def _feed(signature: Signature, inputs: list[Tensor]) -> Feed:
    """Request tensors by the signature's names (a sole input also by position)."""
    owner = f"signature '{signature.name}'"
    given = bind_inputs(inputs, list(signature.inputs), owner)
    return {name: _to_tf(tensor, signature.inputs[name], owner) for name, tensor in given.items()}


def _to_tf(tensor: Tensor, spec: tf.TensorSpec, owner: str) -> tf.Tensor:
    """Convert to the signature's dtype when that loses no kind (no float -> int, no text)."""
    data, name = tensor.data, tensor.name
    refusal = wrong_datatype(tensor, _datatype(spec.dtype), owner)
    if spec.dtype == tf.string:
        if data.dtype != object:
            raise refusal
        try:
            value = tf.constant(data, dtype=tf.string)
        except (TypeError, ValueError):
            raise InvalidInput(f"input '{name}': string input holds non-string values") from None
    elif tensor.datatype == "BF16":
        if spec.dtype != tf.bfloat16:
            raise refusal
        value = tf.bitcast(tf.constant(data), tf.bfloat16)
    elif spec.dtype == tf.bfloat16:
        if data.dtype.kind not in "iuf":
            raise refusal
        value = tf.cast(tf.constant(data), tf.bfloat16)
        if overflowed(data, tf.math.is_finite(value).numpy()):
            raise InvalidInput(f"{refusal.message}: values out of range")
    else:
        target = np.dtype(spec.dtype.as_numpy_dtype)
        if data.dtype != target:
            data = _cast(data, target, refusal)
        value = tf.constant(data)
    check_shape(tensor, None if spec.shape.rank is None else _shape(spec.shape), owner)
    return value


def _cast(data: np.ndarray, target: np.dtype, refusal: InvalidInput) -> np.ndarray:
    """Same-kind conversions only: bool->bool, int->int (in range), int or float->float."""
    kind, goal = data.dtype.kind, target.kind
    allowed = (
        (goal == "b" and kind == "b")
        or (goal in "iu" and kind in "iu")
        or (goal in "fc" and kind in "iuf")
    )
    if not allowed:
        raise refusal
    if goal in "iu" and data.size:
        info = np.iinfo(target)
        if data.min() < info.min or data.max() > info.max:
            raise InvalidInput(f"{refusal.message}: values out of range")
    if goal != "f":
        return data.astype(target)
    # A finite value beyond the float type would reach the model as infinity (and V2 would
    # blame the output for it while V1 answered null).
    cast = narrow_floats(data, target)
    if cast is None:
        raise InvalidInput(f"{refusal.message}: values out of range")
    return cast


# --- tensors -> responses -----------------------------------------------------------------


def _from_tf(name: str, value: tf.Tensor) -> Tensor:
    """An output as a protocol tensor (BF16 as raw 16-bit words, strings as objects)."""
    if value.dtype == tf.bfloat16:
        return output_tensor(name, tf.bitcast(value, tf.uint16).numpy(), "BF16")
    if value.dtype == tf.string:
        return output_tensor(name, np.asarray(value.numpy(), dtype=object), "BYTES")
    return output_tensor(name, np.asarray(value.numpy()))


# --- metadata helpers ---------------------------------------------------------------------


def _datatype(dtype: tf.DType) -> str:
    """The OIP datatype name; TF-only dtypes keep TF's name so metadata still says something."""
    try:
        numpy_dtype = np.dtype(dtype.as_numpy_dtype)
    except TypeError:
        numpy_dtype = None
    return datatype_of(numpy_dtype, dtype.name)


def _shape(shape: tf.TensorShape) -> list[int]:
    """-1 for every unknown dimension (and for an unknown rank)."""
    if shape.rank is None:
        return [-1]
    return [-1 if dim is None else int(dim) for dim in shape.as_list()]


def _specs(specs: dict[str, Any]) -> list[TensorSpec]:
    """Metadata for a signature's inputs or outputs."""
    return [
        TensorSpec(name, _datatype(spec.dtype), _shape(spec.shape))
        if isinstance(spec, tf.TensorSpec)
        else TensorSpec(name, "BYTES", [-1])  # nested or composite outputs: no flat spec
        for name, spec in specs.items()
    ]
