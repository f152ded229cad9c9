"""What the tensor runtimes (PyTorch, TensorFlow, ONNX) share, written once.

Framework dtypes to OIP datatypes, binding request tensors to a model's inputs by name or
position, checking a tensor's datatype and shape against what the model declares,
requested outputs, V1 instances in and rows out, and the `--device` flag. Each runtime
only translates between its framework's objects and numpy; the rules and the messages a
client sees are the same in all of them.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from modelport.base.datatypes import TO_NUMPY, from_numpy, narrow_floats
from modelport.base.errors import NO_OUTPUTS, InferenceFailed, InvalidInput, ModelportError
from modelport.base.messages import InferRequest, InferResponse, Tensor
from modelport.base.protocol import json_tensors, v1

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def device_flag(text: str) -> str:
    """`--device`: auto (CUDA when there is one), cpu, cuda or cuda:N."""
    if not _DEVICE.match(text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got '{text}'")
    return text


def cuda_index(choice: str) -> int:
    """The device number of `cuda` (0) or `cuda:N`."""
    return int(choice.partition(":")[2] or 0)


# --- datatypes ----------------------------------------------------------------------------


def datatype_of(dtype: np.dtype | None, name: str) -> str:
    """The OIP datatype of a framework dtype, given as its numpy equivalent (None where it
    has none) and its framework name. bfloat16 and strings are known by name; dtypes the
    protocol lacks keep the framework's name in upper case, so metadata still says what
    the model takes."""
    lowered = name.lower().removeprefix("torch.")
    if lowered in ("bfloat16", "bf16"):
        return "BF16"
    if lowered in ("string", "str", "bytes"):
        return "BYTES"
    if dtype is not None:
        try:
            return from_numpy(dtype)
        except ModelportError:
            pass
    return lowered.upper()


def carried(datatype: str) -> bool:
    """Whether the protocol can carry this datatype (BF16 as raw 16-bit words)."""
    return datatype in TO_NUMPY or datatype == "BF16"


def output_tensor(name: str, array: np.ndarray, datatype: str | None = None) -> Tensor:
    """A framework output as a protocol tensor of its exact dtype: `datatype="BF16"` for
    raw bfloat16 words, text (str or bytes) as BYTES. A dtype the protocol cannot carry
    is the model's fault, never the client's."""
    if datatype == "BF16":
        return Tensor(name, np.ascontiguousarray(array).view(np.uint16), "BF16")
    if array.dtype.kind in "SU":
        array = array.astype(object)
    try:
        datatype = datatype or from_numpy(array.dtype)
    except ModelportError:
        raise InferenceFailed(
            f"output '{name}' has dtype {array.dtype}, which the inference protocol cannot carry"
        ) from None
    canonical = TO_NUMPY[datatype]
    if array.dtype.char != canonical.char and canonical.kind != "O":
        # Same dtype, another C type (e.g. `longlong` for int64): encoders know only one.
        array = array.view(canonical)
    return Tensor(name, array, datatype)


def wrong_datatype(
    tensor: Tensor, expected: str, owner: str, argument: str | None = None
) -> InvalidInput:
    """The 400 for an input of another datatype than the model takes."""
    target = f" for '{argument}'" if argument else ""
    return InvalidInput(
        f"input '{tensor.name}': {owner} takes {expected}{target}, got {tensor.datatype}"
    )


def check_shape(tensor: Tensor, declared: Sequence[int] | None, owner: str) -> None:
    """Rank and fixed dimensions must match what the model declares (-1: any size; None:
    unknown rank, anything goes)."""
    if declared is None:
        return
    shape = tensor.shape
    fits = len(shape) == len(declared) and all(
        want < 0 or want == got for want, got in zip(declared, shape, strict=True)
    )
    if not fits:
        raise InvalidInput(
            f"input '{tensor.name}': shape {shape} does not fit {owner} shape {list(declared)}"
        )


# --- inputs -------------------------------------------------------------------------------


def bind_inputs(
    inputs: Sequence[Tensor],
    names: Sequence[str],
    owner: str,
    *,
    required: int | None = None,
    positional: bool = False,
) -> dict[str, Tensor]:
    """Request tensors keyed by the model's input names, in the model's order.

    By name when every tensor names an input (each once); else by position, for a model
    with one input given one tensor or, with `positional`, for any model given between
    `required` (default: all) and all of its inputs, unless a tensor names another of its
    inputs than the one its position binds to (a typo beside `y` must not feed `y` to
    `x`). Anything else is a 400 that names the stray, missing or duplicated input and
    what the model takes.
    """
    required = len(names) if required is None else required
    expected = ", ".join(names) or "no inputs"
    given = [tensor.name for tensor in inputs]
    unique = len(set(given)) == len(given)
    if given and unique and set(given) <= set(names):
        by_name = {tensor.name: tensor for tensor in inputs}
        missing = [name for name in names[:required] if name not in by_name]
        if missing:
            raise InvalidInput(f"missing input '{missing[0]}'; {owner} takes: {expected}")
        return {name: by_name[name] for name in names if name in by_name}
    if positional or (len(names) == 1 and len(inputs) == 1):
        if not required <= len(inputs) <= len(names):
            arity = str(required) if required == len(names) else f"{required} to {len(names)}"
            raise InvalidInput(
                f"{owner} takes {arity} input(s) ({expected}), got {len(inputs)} "
                f"({', '.join(given)})"
            )
        if all(name == own or name not in names for name, own in zip(given, names, strict=False)):
            return dict(zip(names, inputs, strict=False))
    if not unique:
        twice = next(name for name in given if given.count(name) > 1)
        raise InvalidInput(f"input '{twice}' is given twice; {owner} takes: {expected}")
    stray = next((name for name in given if name not in names), None)
    if stray is None:  # no inputs at all
        raise InvalidInput(f"no inputs given; {owner} takes: {expected}")
    raise InvalidInput(f"unknown input '{stray}'; {owner} takes: {expected}")


# --- outputs ------------------------------------------------------------------------------


def requested_outputs(request: InferRequest, offered: Iterable[str], owner: str) -> list[str]:
    """The output names a request asks for, in its order (empty: all); unknown ones are 400s."""
    wanted = request.requested_output_names
    if wanted:
        known = list(offered)
        for name in wanted:
            if name not in known:
                raise InvalidInput(f"unknown output '{name}'; {owner} offers: {', '.join(known)}")
    return wanted


def select_outputs(outputs: list[Tensor], request: InferRequest, model: str) -> list[Tensor]:
    """The outputs a request names, in its order (all when it names none); for runtimes
    that learn their output names only by running the model. Unknown names are a 400."""
    by_name = {tensor.name: tensor for tensor in outputs}
    wanted = requested_outputs(request, by_name, f"model '{model}'")
    return [by_name[name] for name in wanted] if wanted else outputs


# --- V1 -----------------------------------------------------------------------------------


def decode_instances(body: Any, names: Sequence[str], datatypes: dict[str, str]) -> InferRequest:
    """V1 instances: rows of the model's first input, or objects whose keys name inputs.

    Each column takes the datatype the model declares for its input (`datatypes`, by name;
    bare rows go to the first input), since JSON leaves numbers untyped.
    """
    instances = v1.instances_of(body)
    if all(isinstance(instance, dict) for instance in instances):
        keys = list(dict.fromkeys(key for instance in instances for key in instance))
        columns = [(key, [instance.get(key) for instance in instances]) for key in keys]
    else:
        columns = [(v1.DEFAULT_INPUT, instances)]
    tensors = []
    for position, (name, values) in enumerate(columns):
        datatype = datatypes.get(name)
        if datatype is None and position < len(names):
            datatype = datatypes.get(names[position])
        tensors.append(Tensor(name, v1_column(name, values, datatype)))
    return InferRequest(inputs=tensors)


def v1_column(name: str, values: list[Any], datatype: str | None) -> np.ndarray:
    """V1 values of one input stacked into rows of the model's datatype (when known and
    carried; floats where unknown, as frameworks default JSON numbers to float32).

    The conversion is V2's JSON decoding (`json_tensors.from_json`), so both protocols refuse the
    same values alike: booleans only for BOOL, integers within the datatype's range, floats
    that stay finite once narrowed. A plain `astype` would wrap 300 to 44 in UINT8 and turn
    1e6 into infinity in FP16 without a word."""
    if any(value is None for value in values):
        raise InvalidInput(f"input '{name}' is missing from some instances")
    what = f"input '{name}': instances"
    if datatype == "BYTES":
        return v1.json_array(values, what, "strings", kinds="US")
    array = v1.json_array(values, what, "numbers", kinds="biuf")
    target = TO_NUMPY.get(datatype or "")
    if datatype is not None and target is not None and target.kind != "O":
        # orjson reads integers past 64 bits as floats: V2 calls those out of range.
        huge = array.dtype.kind == "f" and bool(array.size) and np.abs(array).max() >= 2.0**63
        if array.dtype.kind == "f" and target.kind in "biu" and not huge:
            raise InvalidInput(f"input '{name}': the model takes {datatype}, got decimals")
        return json_tensors.from_json(name, datatype, array.shape, values)
    if array.dtype == np.float64:
        narrowed = narrow_floats(array, np.dtype(np.float32))
        if narrowed is None:
            raise InvalidInput(f"input '{name}': values out of range for FP32")
        return narrowed
    return array


def split_rows(values: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Several outputs as one object per instance; None when they do not share a first
    dimension (scalars, or different batch sizes)."""
    rows = {np.shape(value)[0] if np.ndim(value) else None for value in values.values()}
    if len(rows) != 1 or None in rows:
        return None
    count = rows.pop()
    assert count is not None  # checked above
    return [{name: value[index] for name, value in values.items()} for index in range(count)]


def encode_rows(response: InferResponse) -> dict[str, Any]:
    """V1 answer: one output as its rows; several as one object per instance (TF Serving's
    row format), or one entry per output when they do not share a batch size."""
    if not response.outputs:
        raise InferenceFailed(NO_OUTPUTS)
    values = {tensor.name: v1.json_ready(tensor) for tensor in response.outputs}
    if len(values) == 1:
        return {"predictions": next(iter(values.values()))}
    rows = split_rows(values)
    return {"predictions": values if rows is None else rows}
