"""ONNX predictor: one `.onnx` graph run by ONNX Runtime, on CPU or CUDA.

Everything the server says about the model comes from the loaded session, so metadata
tells the truth: names, OIP datatypes (STRING as BYTES, bfloat16 as BF16) and shapes with
dynamic dimensions as -1. Inputs bind by name (a sole input also by position) and must
have the datatype and shape the graph declares (a named dimension one size wherever it
appears), checked before the session runs, as Triton checks its config; V1 numbers, which
JSON leaves untyped, take the declared datatype. Outputs are every tensor output, or those
a request names (only they are computed). Non-tensor outputs (e.g. skl2onnx's ZipMap
dictionaries) are not served: convert with `zipmap=False` to get probabilities as a
tensor.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from modelport.base.errors import InferenceFailed, InvalidInput, ModelLoadError
from modelport.base.messages import InferRequest, InferResponse, Tensor, TensorSpec
from modelport.base.model import Predictor, load_artifact
from modelport.base.tensors import (
    bind_inputs,
    check_shape,
    cuda_index,
    datatype_of,
    decode_instances,
    device_flag,
    encode_rows,
    output_tensor,
    requested_outputs,
    wrong_datatype,
)

log = logging.getLogger("modelport.onnx")

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
# ONNX element type names whose numpy dtype differs from numpy's reading of the name.
_NUMPY_NAMES = {"float": "float32", "double": "float64", "string": "object"}
# ONNX Runtime's INVALID_ARGUMENT is a feed that does not fit the graph. A kernel's FAIL is
# the input's fault only when it says so (dynamic dimensions that do not fit together, once
# the datatype, rank and fixed dimensions were checked here); anything else is the model's.
_INPUT_MISMATCH = re.compile(
    r"broadcast|dimension mismatch|invalid dimensions|invalid rank|shape mismatch"
    r"|incompatible dimensions|input dimensions",
    re.IGNORECASE,
)
_BFLOAT16 = 16  # onnx.TensorProto.BFLOAT16 (the onnx package is not a runtime dependency)


@dataclass(frozen=True, slots=True)
class Port:
    """One graph input or output as the session declares it."""

    name: str
    onnx_type: str  # ONNX Runtime's type string: `tensor(float)`, `seq(map(...))`...
    datatype: str  # OIP datatype (or ONNX's own name where the protocol has none)
    # -1 for dynamic dimensions; None where the rank is unknown. ONNX Runtime reports both
    # an unknown rank and a scalar as `[]`: neither is checked here (the session checks a
    # known rank itself) and metadata shows `[-1]`.
    shape: list[int] | None
    is_tensor: bool = True
    # Each dimension's name (ONNX's dim_param) or None: a name stands for one size across
    # every input (ONNX IR), so `a: [n]` and `b: [n]` must come equally long.
    symbols: tuple[str | None, ...] = ()

    def spec(self) -> TensorSpec:
        return TensorSpec(self.name, self.datatype, self.shape or [-1])

    def declared(self) -> str:
        """The shape as the graph writes it, dimension names included: `[n, 4]`."""
        dims = zip(self.symbols, self.shape or [], strict=False)
        return "[" + ", ".join(str(dim if symbol is None else symbol) for symbol, dim in dims) + "]"


class ONNXPredictor(Predictor):
    runtime = "onnx"
    extensions = (".onnx",)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--device",
            type=device_flag,
            default="auto",
            help="auto (CUDA when ONNX Runtime has it), cpu, cuda or cuda:N (default: auto)",
        )
        parser.add_argument(
            "--nthread",
            type=int,
            default=None,
            help="intra-op threads per model (default: ONNX Runtime's, one per core)",
        )

    # --- loading ------------------------------------------------------------------------

    def load(self) -> None:
        parameters = self.settings.parameters
        choice = str(parameters.get("device") or "auto")
        wanted = select_providers(choice, ort.get_available_providers())
        options = ort.SessionOptions()
        # ORT's own log lines are not JSON: its errors reach the client and the log as ours.
        options.log_severity_level = 4
        nthread = parameters.get("nthread")
        if nthread:
            options.intra_op_num_threads = int(nthread)
        path = self.model_file()

        def open_session(file: Path) -> ort.InferenceSession:
            return ort.InferenceSession(str(file), sess_options=options, providers=wanted)

        self.session = load_artifact(open_session, path)
        self.provider = self.session.get_providers()[0]
        if choice.startswith("cuda") and self.provider != CUDA:
            raise ModelLoadError(
                f"--device {choice} but ONNX Runtime could not start its CUDA provider for "
                f"'{path}' (no usable GPU or CUDA libraries); use --device cpu or auto"
            )
        self.input_ports = [_port(arg) for arg in self.session.get_inputs()]
        self.output_ports = [_port(arg) for arg in self.session.get_outputs()]
        for port in self.input_ports:
            if not port.is_tensor:
                raise ModelLoadError(
                    f"'{path}': input '{port.name}' is {port.onnx_type}, not a tensor; the "
                    "inference protocol carries tensors only"
                )
        symbols = [symbol for port in self.input_ports for symbol in port.symbols if symbol]
        # Only a name that appears twice can be given two sizes: most graphs skip the check.
        self.shared_symbols = len(symbols) != len(set(symbols))
        self.tensor_outputs = [port.name for port in self.output_ports if port.is_tensor]
        self.bf16_outputs = {port.name for port in self.output_ports if port.datatype == "BF16"}
        skipped = [f"{p.name} ({p.onnx_type})" for p in self.output_ports if not p.is_tensor]
        log.info(
            "onnx model loaded",
            extra={
                "model": self.name,
                "file": path.name,
                "provider": self.provider,
                "skipped_outputs": ", ".join(skipped),
            },
        )

    # --- metadata -----------------------------------------------------------------------

    def inputs(self) -> list[TensorSpec]:
        return [port.spec() for port in self.input_ports]

    def outputs(self) -> list[TensorSpec]:
        return [port.spec() for port in self.output_ports if port.is_tensor]

    def metadata_parameters(self) -> dict[str, Any]:
        """Which ONNX Runtime execution provider runs the graph (CUDA or CPU)."""
        return {"execution_provider": self.provider}

    # --- inference ----------------------------------------------------------------------

    def infer(self, request: InferRequest) -> InferResponse:
        owner = f"model '{self.name}'"
        for port in self.output_ports:
            if not port.is_tensor and port.name in request.requested_output_names:
                raise InvalidInput(
                    f"output '{port.name}' is {port.onnx_type}, not a tensor, so it cannot "
                    f"be served; {owner} offers: {', '.join(self.tensor_outputs)}"
                )
        names = requested_outputs(request, self.tensor_outputs, owner) or self.tensor_outputs
        ports = {port.name: port for port in self.input_ports}
        given = bind_inputs(request.inputs, list(ports), owner)
        feed = {name: self._to_onnx(tensor, ports[name]) for name, tensor in given.items()}
        if self.shared_symbols:
            _check_symbols(given, ports, owner)
        bf16 = bool(self.bf16_outputs.intersection(names))
        if bf16:  # numpy has no bfloat16: run to OrtValues, which take OrtValues only
            feed = {name: _ort_value(name, value) for name, value in feed.items()}
        try:
            if bf16:  # bfloat16 outputs as raw words
                values = self.session.run_with_ort_values(names, feed)
                results = [
                    _words(value) if name in self.bf16_outputs else value.numpy()
                    for name, value in zip(names, values, strict=True)
                ]
            else:
                results = self.session.run(names, feed)
        except Exception as exc:
            raise _classify(owner, exc) from exc
        outputs = [
            output_tensor(name, np.asarray(value), "BF16" if name in self.bf16_outputs else None)
            for name, value in zip(names, results, strict=True)
        ]
        return InferResponse(outputs=outputs, id=request.id)

    def _to_onnx(self, tensor: Tensor, port: Port) -> Any:
        """A request tensor as ONNX Runtime takes it: the declared datatype and shape, exactly."""
        owner = f"model '{self.name}'"
        if tensor.datatype != port.datatype:
            raise wrong_datatype(tensor, port.datatype, owner)
        check_shape(tensor, port.shape, owner)
        data = tensor.data
        if port.datatype == "BYTES":
            return _as_text(tensor)
        if port.datatype == "BF16":  # raw 16-bit words, handed over with their ONNX type
            return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(
                np.ascontiguousarray(data), _BFLOAT16
            )
        return data

    # --- V1 -----------------------------------------------------------------------------

    def decode_v1(self, body: Any) -> InferRequest:
        """Rows of the sole input (or objects keyed by input names), typed as declared."""
        datatypes = {port.name: port.datatype for port in self.input_ports}
        return decode_instances(body, list(datatypes), datatypes)

    def encode_v1(self, response: InferResponse) -> dict[str, Any]:
        return encode_rows(response)


def _classify(owner: str, exc: Exception) -> Exception:
    """A 400 when ONNX Runtime blames the input, else a 500 (a fault of the model or runtime)."""
    kind, message = type(exc).__name__, str(exc).strip()[:500]
    if kind == "InvalidArgument" or (kind == "Fail" and _INPUT_MISMATCH.search(message)):
        return InvalidInput(f"{owner} rejected the input: {message}")
    return InferenceFailed(f"{owner} failed: {kind}: {message}")


def _check_symbols(given: dict[str, Tensor], ports: dict[str, Port], owner: str) -> None:
    """Named dimensions take one size across the inputs, as the graph declares (ONNX IR):
    refused here, before a kernel fails on it with a message that reads like a model fault."""
    seen: dict[str, tuple[int, str]] = {}
    for name, tensor in given.items():
        port = ports[name]
        for symbol, size in zip(port.symbols, tensor.shape, strict=False):
            if symbol is None:
                continue
            known, where = seen.setdefault(symbol, (size, name))
            if known != size:
                raise InvalidInput(
                    f"input '{name}': shape {tensor.shape} does not fit {owner} shape "
                    f"{port.declared()}: {symbol} is {known} in input '{where}'"
                )


def select_providers(choice: str, available: list[str]) -> list[Any]:
    """Execution providers for `--device`: CUDA for `cuda[:N]` (an error when ONNX Runtime
    has none) and for `auto` when it has one, with CPU behind it for unsupported nodes."""
    has_cuda = CUDA in available
    if choice == "cpu" or (choice == "auto" and not has_cuda):
        return [CPU]
    if not has_cuda:
        raise ModelLoadError(
            f"--device {choice} but this ONNX Runtime ({ort.__version__}) has no CUDA "
            f"provider (it has: {', '.join(available)}); install onnxruntime-gpu or use "
            "--device cpu or auto"
        )
    return [(CUDA, {"device_id": cuda_index(choice)}), CPU]


def _port(arg: Any) -> Port:
    """A session NodeArg as a Port: symbolic or unknown dimensions become -1."""
    onnx_type = str(arg.type)
    if not onnx_type.startswith("tensor("):
        return Port(arg.name, onnx_type, "BYTES", None, is_tensor=False)
    element = onnx_type[len("tensor(") : -1]
    try:
        dtype: np.dtype | None = np.dtype(_NUMPY_NAMES.get(element, element))
    except TypeError:
        dtype = None
    dims = [d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape or []] or None
    symbols = tuple(d if isinstance(d, str) and d else None for d in arg.shape or [])
    return Port(arg.name, onnx_type, datatype_of(dtype, element), dims, symbols=symbols)


def _ort_value(name: str, value: Any) -> Any:
    """A feed as the OrtValue `run_with_ort_values` needs. ONNX Runtime's Python API makes
    none of strings: a graph with string inputs cannot answer bfloat16 through it."""
    if not isinstance(value, np.ndarray):
        return value  # already an OrtValue (bfloat16 inputs)
    if value.dtype.kind == "O":
        raise InferenceFailed(
            f"input '{name}' is a string tensor, which ONNX Runtime's Python API cannot feed "
            "to a run that returns bfloat16 outputs; ask for the other outputs only"
        )
    return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value))


def _words(value: Any) -> np.ndarray:
    """A bfloat16 OrtValue's raw 16-bit words, copied out of ONNX Runtime's buffer (which
    `numpy()` refuses: numpy has no bfloat16). Outputs of `run_with_ort_values` are on CPU."""
    shape = tuple(value.shape())
    size = value.tensor_size_in_bytes()
    if not size:
        return np.zeros(shape, dtype=np.uint16)
    if value.device_name().lower() != "cpu":
        raise InferenceFailed(f"a bfloat16 output is on {value.device_name()}, not the CPU")
    buffer = (ctypes.c_char * size).from_address(value.data_ptr())
    return np.frombuffer(buffer, dtype=np.uint16).reshape(shape).copy()


def _as_text(tensor: Tensor) -> np.ndarray:
    """BYTES items as str, which ONNX Runtime's string tensors take."""
    out = np.empty(tensor.data.shape, dtype=object)
    try:
        out.flat[:] = [
            item.decode() if isinstance(item, bytes) else str(item) for item in tensor.data.flat
        ]
    except UnicodeDecodeError:
        raise InvalidInput(f"input '{tensor.name}': string values must be UTF-8 text") from None
    return out
