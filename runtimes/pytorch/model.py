"""PyTorch predictor: TorchScript (`.pt`/`.pth`) and `torch.export` programs (`.pt2`).

Only formats that carry their own code are loaded, so nothing is unpickled: a file written
with `torch.save(model)` (a pickle of arbitrary classes) or a bare state_dict is refused
with a message saying how to export the model. Inputs bind to `forward`'s arguments by name
(V2 tensors or V1 instance keys) or by position; outputs are `output-0` for a tensor,
`output-0..n` for a tuple and the keys of a returned dict. Dtypes pass through exactly
(BF16 travels as raw 16-bit words in the binary extension); V1 numbers, which JSON leaves
untyped, take the dtype an exported program declares; for TorchScript, which declares
none, the floating dtype of the model's parameters (so integer rows feed a float model),
except in a model with an embedding, or without floating parameters, where integers stay
int64 and decimals become float32.
An exported program's inputs must have the dtypes, ranks and fixed sizes it records,
checked before it runs.
Metadata: an exported program declares its outputs; TorchScript declares neither dtypes nor
ranks, so its metadata is a guess until the first inference with inputs of the datatype the
metadata gives them, and what it answered to that after.
A RuntimeError is the client's mistake only when torch says the input does not fit (its
dtype, shape or indices), never when it names a device error.
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modelport.base.errors import InferenceFailed, InvalidInput, ModelLoadError, ModelportError
from modelport.base.messages import InferRequest, InferResponse, Tensor, TensorSpec
from modelport.base.model import Predictor, load_artifact
from modelport.base.tensors import (
    bind_inputs,
    check_shape,
    datatype_of,
    decode_instances,
    device_flag,
    encode_rows,
    output_tensor,
    select_outputs,
    wrong_datatype,
)

log = logging.getLogger("modelport.pytorch")

# torch.export.load falls back to full unpickling for some payloads (sample inputs, tensor
# subclasses, legacy weights): forcing every torch.load in this server process to
# weights_only means no model file can run code while loading.
os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)

_EXPORT_ADVICE = (
    "save it with torch.jit.save(torch.jit.script(model), 'model.pt') or "
    "torch.export.save(torch.export.export(model, example_inputs), 'model.pt2')"
)


class PyTorchPredictor(Predictor):
    runtime = "pytorch"
    extensions = (".pt", ".pth", ".pt2")

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--device",
            type=device_flag,
            default="auto",
            help="auto (CUDA when available), cpu, cuda or cuda:N (default: auto)",
        )
        parser.add_argument(
            "--nthread", type=int, default=None, help="intra-op CPU threads (torch default)"
        )

    # --- loading ------------------------------------------------------------------------

    def load(self) -> None:
        parameters = self.settings.parameters
        self.device = select_device(str(parameters.get("device") or "auto"))
        nthread = parameters.get("nthread")
        if nthread:
            torch.set_num_threads(int(nthread))
        path = self.model_file()
        self.program: Any = None
        if path.suffix.lower() == ".pt2":
            self.program = load_artifact(load_exported, path)
            self.module: Callable[..., Any] = self.program.module().to(self.device)
            self.input_names = list(self.program.graph_signature.user_inputs)
            self.required = len(self.input_names)
        else:
            self.module = load_torchscript(path, self.device)
            arguments = self.module.forward.schema.arguments[1:]  # type: ignore[attr-defined]
            self.input_names = [argument.name for argument in arguments]
            self.required = sum(not argument.has_default_value() for argument in arguments)
        self.input_dtypes = self._declared_dtypes()
        self.input_shapes = self._declared_shapes()
        # TorchScript outputs as first answered (names, datatypes, ranks), for metadata.
        self.answered: list[TensorSpec] = []
        log.info(
            "pytorch model loaded",
            extra={"model": self.name, "device": str(self.device), "file": path.name},
        )

    def _declared_dtypes(self) -> dict[str, torch.dtype]:
        """Input dtypes an exported program records (TorchScript declares none)."""
        if self.program is None:
            return {}
        values = _placeholder_values(self.program)
        return {
            name: values[name].dtype
            for name in self.input_names
            if isinstance(values.get(name), torch.Tensor)
        }

    def _declared_shapes(self) -> dict[str, list[int]]:
        """Input ranks and fixed sizes an exported program records (-1: dynamic). Checked
        before running: the program's own check indexes the input's sizes and, for a rank
        too low, fails with a bare `tuple index out of range`."""
        if self.program is None:
            return {}
        values = _placeholder_values(self.program)
        return {
            name: _spec(name, values[name]).shape
            for name in self.input_names
            if isinstance(values.get(name), torch.Tensor)
        }

    # --- metadata -----------------------------------------------------------------------

    def inputs(self) -> list[TensorSpec]:
        if self.program is not None:
            values = _placeholder_values(self.program)
            return [_spec(name, values.get(name)) for name in self.input_names]
        # TorchScript declares no dtype: the parameters' floating dtype is the best hint.
        datatype = _datatype(self._parameter_dtype())
        return [TensorSpec(name, datatype, [-1]) for name in self.input_names]

    def outputs(self) -> list[TensorSpec]:
        if self.program is not None:
            output = next(node for node in self.program.graph.nodes if node.op == "output")
            leaves = [arg.meta.get("val") for arg in output.args[0]]
            user = len(self.program.graph_signature.user_outputs)
            leaves = leaves[len(leaves) - user :]
            spec = self.program.call_spec.out_spec
            if spec.type is dict and len(spec.context) == len(leaves):
                names = [str(key) for key in spec.context]
            else:
                names = [f"output-{index}" for index in range(len(leaves))]
            return [_spec(name, value) for name, value in zip(names, leaves, strict=True)]
        if self.answered:  # TorchScript declares neither dtypes nor ranks: what it answered
            return list(self.answered)
        returns = self.module.forward.schema.returns  # type: ignore[attr-defined]
        datatype = _datatype(self._parameter_dtype())
        kind = returns[0].type.kind() if len(returns) == 1 else ""
        if kind == "TensorType":
            return [TensorSpec("output-0", datatype, [-1])]
        if kind == "TupleType":
            count = len(returns[0].type.elements())
            return [TensorSpec(f"output-{index}", datatype, [-1]) for index in range(count)]
        return []  # a dict's keys are known only once the model has run

    def _parameter_dtype(self) -> torch.dtype:
        for parameter in self.module.parameters():  # type: ignore[attr-defined]
            if parameter.dtype.is_floating_point:
                return parameter.dtype
        return torch.float32

    # --- inference ----------------------------------------------------------------------

    def infer(self, request: InferRequest) -> InferResponse:
        args, kwargs = self._bind(request.inputs)
        try:
            with torch.inference_mode():
                result = self.module(*args, **kwargs)
        except torch.OutOfMemoryError as exc:
            raise InferenceFailed(f"model '{self.name}' ran out of memory: {exc}") from exc
        except (RuntimeError, ValueError, TypeError, IndexError, AssertionError) as exc:
            raise _classify(self.name, exc) from exc
        outputs = [_to_tensor(name, value) for name, value in _named(result)]
        if self.program is None and not self.answered and self._as_described(request):
            self.answered = [TensorSpec(t.name, t.datatype, [-1] * t.data.ndim) for t in outputs]
        return InferResponse(outputs=select_outputs(outputs, request, self.name), id=request.id)

    def _as_described(self, request: InferRequest) -> bool:
        """Whether a request's inputs have the datatypes the metadata gives them: only such an
        answer describes the model (a half-precision request may get a half answer)."""
        described = _datatype(self._parameter_dtype())
        return all(tensor.datatype == described for tensor in request.inputs)

    def _bind(self, inputs: list[Tensor]) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """Request tensors to forward's arguments: all by name, or else by position."""
        for tensor in inputs:
            if tensor.datatype == "BYTES":
                raise InvalidInput(f"input '{tensor.name}': BYTES has no torch tensor equivalent")
        given = bind_inputs(
            inputs,
            self.input_names,
            f"model '{self.name}'",
            required=self.required,
            positional=True,
        )
        values = {name: self._to_torch(tensor, name) for name, tensor in given.items()}
        if self.program is not None:  # exported programs take positional arguments only
            return list(values.values()), {}
        return [], values

    def _to_torch(self, tensor: Tensor, argument: str) -> torch.Tensor:
        """An exact-dtype torch view of a request tensor, on the model's device."""
        data = tensor.data
        if not data.flags.writeable or not data.flags.c_contiguous:
            data = np.array(data, order="C")  # torch wants its own writable buffer
        value = torch.from_numpy(data)
        if tensor.datatype == "BF16":
            value = value.view(torch.bfloat16)
        owner = f"model '{self.name}'"
        declared = self.input_dtypes.get(argument)
        if declared is not None and declared != value.dtype:
            raise wrong_datatype(tensor, _datatype(declared), owner, argument)
        check_shape(tensor, self.input_shapes.get(argument), owner)
        return value.to(self.device)

    # --- V1 -----------------------------------------------------------------------------

    def decode_v1(self, body: Any) -> InferRequest:
        """Instances are rows of one input, or objects whose keys name forward's arguments;
        numbers take the dtype an exported program declares, or for TorchScript that of
        its floating parameters (see `_v1_datatype`)."""
        if self.program is not None:
            datatypes = {name: _datatype(dtype) for name, dtype in self.input_dtypes.items()}
        else:
            floating = self._v1_datatype()
            datatypes = dict.fromkeys(self.input_names, floating) if floating else {}
        return decode_instances(body, self.input_names, datatypes)

    def _v1_datatype(self) -> str | None:
        """The datatype V1 numbers take for a TorchScript model, which declares none.

        JSON does not tell 1 from 1.0, so `[[1, 2, 3, 4]]` must not become an int64 tensor
        that a float Linear refuses while `[[1.0, 2, 3, 4]]` works: numbers take the floating
        dtype of the model's parameters, as other runtimes give them the declared one. A
        model with an embedding takes integer indices, and one without floating parameters
        gives no hint: there, numbers keep their JSON kind (integers int64, decimals
        float32)."""
        floating = None
        for module in self.module.modules():  # type: ignore[attr-defined]
            if getattr(module, "original_name", "") in _INDEX_MODULES:
                return None
        for parameter in self.module.parameters():  # type: ignore[attr-defined]
            if parameter.dtype.is_floating_point:
                floating = parameter.dtype
                break
        return None if floating is None else _datatype(floating)

    def encode_v1(self, response: InferResponse) -> dict[str, Any]:
        """One output: its rows; several: one object per instance (TF Serving's shape)."""
        return encode_rows(response)


# TorchScript submodules (by class name) whose input is integer indices, not features.
_INDEX_MODULES = frozenset({"Embedding", "EmbeddingBag"})


# --- loading helpers ----------------------------------------------------------------------


def select_device(choice: str) -> torch.device:
    """`auto` is CUDA when torch sees a GPU; asking for CUDA without one fails the load."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice.startswith("cuda"):
        if not torch.cuda.is_available():
            built = torch.version.cuda or "no CUDA (CPU-only build)"
            raise ModelLoadError(
                f"--device {choice} but CUDA is not available (torch {torch.__version__} built "
                f"with {built}); use --device cpu or auto"
            )
        device = torch.device(choice)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ModelLoadError(
                f"--device {choice} but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
        return device
    return torch.device("cpu")


def load_exported(path: Path) -> Any:
    """torch.export.load, refusing archives with plainly pickled constants first."""
    with zipfile.ZipFile(path) as archive:
        opaque = [name for name in archive.namelist() if "data/constants/opaque_obj_" in name]
    if opaque:
        raise ModelLoadError(
            f"'{path}' holds pickled Python objects ({opaque[0]}), which modelport never "
            "unpickles: export the model without opaque constants"
        )
    try:
        return torch.export.load(path)
    except pickle.UnpicklingError:
        raise ModelLoadError(
            f"'{path}' holds pickled Python objects beyond tensors, which modelport never "
            f"unpickles because they can run arbitrary code: {_EXPORT_ADVICE}"
        ) from None


def load_torchscript(path: Path, device: torch.device) -> Any:
    """torch.jit.load, or a refusal that says what the file is and how to export it."""
    try:
        return torch.jit.load(str(path), map_location=device)
    except Exception as exc:
        jit_error = exc
    try:
        # weights_only refuses any class outside tensors and containers: nothing runs.
        content = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ModelLoadError(
            f"'{path}' is a pickled Python object (torch.save(model)), which modelport never "
            f"unpickles because it can run arbitrary code: {_EXPORT_ADVICE}"
        ) from None
    except Exception:
        raise ModelLoadError(
            f"cannot load model file '{path}': not a TorchScript archive "
            f"({type(jit_error).__name__}: {_message(jit_error)})"
        ) from None
    raise ModelLoadError(
        f"'{path}' holds only weights ({type(content).__name__}, e.g. a state_dict) without "
        f"the model's code: {_EXPORT_ADVICE}"
    )


# --- tensor helpers -----------------------------------------------------------------------


def _datatype(dtype: torch.dtype) -> str:
    """The OIP datatype of a torch dtype (torch's own name where the protocol has none)."""
    try:
        numpy_dtype = None if dtype == torch.bfloat16 else torch.empty(0, dtype=dtype).numpy().dtype
    except TypeError:
        numpy_dtype = None
    return datatype_of(numpy_dtype, str(dtype))


def _placeholder_values(program: Any) -> dict[str, Any]:
    return {
        node.name: node.meta.get("val") for node in program.graph.nodes if node.op == "placeholder"
    }


def _spec(name: str, value: Any) -> TensorSpec:
    """A TensorSpec from an exported program's fake tensor (symbolic sizes are -1)."""
    if not isinstance(value, torch.Tensor):
        return TensorSpec(name, "FP32", [-1])
    shape = [int(dim) if isinstance(dim, int) else -1 for dim in value.shape]
    return TensorSpec(name, _datatype(value.dtype), shape)


def _named(result: Any) -> list[tuple[str, Any]]:
    if isinstance(result, torch.Tensor):
        return [("output-0", result)]
    if isinstance(result, dict):
        return [(str(key), value) for key, value in result.items()]
    if isinstance(result, tuple) and hasattr(result, "_fields"):  # a NamedTuple names its own
        return list(zip(result._fields, result, strict=True))
    if isinstance(result, (tuple, list)):
        return [(f"output-{index}", value) for index, value in enumerate(result)]
    raise InferenceFailed(
        f"the model returned {type(result).__name__}; expected a tensor, a tuple of tensors "
        "or a dict of tensors"
    )


def _to_tensor(name: str, value: Any) -> Tensor:
    """A torch output as an exact-dtype ndarray (BF16 as its raw 16-bit words)."""
    if not isinstance(value, torch.Tensor):
        raise InferenceFailed(f"output '{name}' is a {type(value).__name__}, not a tensor")
    value = value.detach().cpu()
    if value.dtype == torch.bfloat16:
        return output_tensor(name, value.view(torch.int16).numpy(), "BF16")
    try:
        array = value.numpy()
    except TypeError:
        raise InferenceFailed(
            f"output '{name}' has dtype {value.dtype}, which the inference protocol cannot carry"
        ) from None
    return output_tensor(name, array)


# What torch says when the input does not fit the model (shapes, ranks, dtypes). Torch
# raises RuntimeError for those and for device faults alike (TorchScript wraps everything
# in one), so only these messages make a RuntimeError the client's mistake.
# Each alternative names the operand's dtype, shape or index, never the device: a CUDA
# error (even an index assert on the device) stays a model fault.
_INPUT_MISMATCH = re.compile(
    r"shapes cannot be multiplied|size mismatch|must match the size of tensor"
    r"|is invalid for input of size|dimension out of range|expected .*input"
    r"|to have \d+ channels|expected scalar type|(must|to) have the same dtype"
    r"|not implemented for '\w+'|expected input at"
    # a rank too low: `both arguments to linear need to be at least 1D, but they are 0D and 2D`
    r"|need to be at least \d+D"
    # dtype mismatches: `mat1 and mat2 must have the same dtype, but got Long and Float`,
    # conv's `Input type (double) and bias type (float) should be the same`, embedding's
    # `Expected tensor for argument #1 'indices' to have one of the following scalar types`
    r"|input type \(.*\) and \w+ type \(.*\) should be the same"
    r"|expected tensor for argument #\d+ '\w+' to have (one of )?the following scalar type"
    # indices the client sent: `index 7 is out of bounds for dimension 0 with size 3`,
    # `tensors used as indices must be long, int, byte or bool tensors`, embedding's
    # `index out of range in self`
    r"|index -?\d+ is out of bounds for dimension|tensors used as indices must be"
    r"|index out of range in self",
    re.IGNORECASE,
)

# A device error is the model's (or the machine's) whatever else its message says.
_DEVICE_FAULT = re.compile(r"CUDA error|CUBLAS_STATUS|CUDNN_STATUS|device-side assert")


def _classify(model: str, exc: Exception) -> ModelportError:
    """A 400 when the input detectably did not fit the model, else a 500 (a model or
    device fault: a CUDA error, an assertion on the device, a bug in forward).

    torch's argument checks raise ValueError, TypeError and IndexError for bad
    arguments, and a failed `assert` in forward is the model checking its input."""
    message = _message(exc)
    blamed = not isinstance(exc, RuntimeError) or (
        bool(_INPUT_MISMATCH.search(message)) and not _DEVICE_FAULT.search(message)
    )
    if blamed:
        return InvalidInput(f"model '{model}' rejected the input: {message}")
    return InferenceFailed(f"model '{model}' failed: {type(exc).__name__}: {message}")


def _message(exc: BaseException) -> str:
    """The useful line of a framework error (TorchScript prepends its own traceback)."""
    text = str(exc).strip()
    if "Traceback of TorchScript" in text:
        text = text.splitlines()[-1]
    return text[:500]
