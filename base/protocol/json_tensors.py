"""One tensor's `data` in JSON, both ways: the conversions V2 REST (requests and answers),
the V2 client and V1 instances share, so every protocol refuses the same values alike.

JSON numbers have no type of their own: a tensor's datatype decides, and what numpy would
quietly coerce (a `null` to NaN, `true` to 1, `"2.5"` to 2.5, 300 to 44 in UINT8, 1e300 to
infinity in FP32) is a 400 naming the input. Answers JSON cannot carry (half precision,
NaN, text that is not UTF-8) are refused with the way to ask for them in binary.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from modelport.base.datatypes import BINARY_ONLY, to_numpy
from modelport.base.errors import InvalidInput, OutputNotRepresentable
from modelport.base.messages import Tensor

_NUMBERS = frozenset((int, float))  # JSON numbers as orjson reads them (bool is no number)
# Elements are walked with `reshape(-1)` (a view), never `.flat`: numpy iterates at most 32
# dimensions, a tensor of the OIP may have 64 (v2.MAX_RANK).


def from_json(name: str, datatype: str, shape: tuple[int, ...], data: Any) -> np.ndarray:
    """Decode JSON `data` (flat or nested) into an array of `datatype` and `shape`."""
    if datatype in BINARY_ONLY:
        raise InvalidInput(f"input '{name}': {datatype} data is only accepted in binary form")
    dtype = to_numpy(datatype)
    if not isinstance(data, list):
        data = [data]
    if dtype.kind == "f":
        return _floats_from_json(name, datatype, dtype, shape, data)
    try:
        array = np.array(data, dtype=object if datatype == "BYTES" else None)
    except ValueError:
        raise InvalidInput(
            f"input '{name}': 'data' is ragged (rows of different lengths)"
        ) from None
    expected = math.prod(shape)
    if array.size != expected:
        raise InvalidInput(
            f"input '{name}': shape {list(shape)} needs {expected} elements, data has {array.size}"
        )
    if datatype == "BYTES":
        if not all(isinstance(item, str) for item in array.reshape(-1)):
            raise InvalidInput(f"input '{name}': BYTES data must be strings")
        return array.reshape(shape)
    kind = array.dtype.kind
    if dtype.kind in "iu" and kind in "fO" and array.size:
        # numpy promotes ints above 2**63 mixed with small ones to float64 (or keeps them
        # as objects past 2**64): convert the original Python ints exactly instead.
        return _exact_integers(name, datatype, dtype, shape, data)
    if array.size and not _kind_fits(kind, dtype):
        found = "non-numeric" if kind in "OUS" else array.dtype.name
        raise InvalidInput(f"input '{name}': {found} data for a {datatype} tensor")
    if dtype.kind in "iu" and array.size:
        _check_numbers(name, datatype, data, array.ndim)
        info = np.iinfo(dtype)
        if array.min() < info.min or array.max() > info.max:
            raise InvalidInput(f"input '{name}': values out of range for {datatype}")
    return array.astype(dtype, copy=False).reshape(shape)


def _exact_integers(
    name: str, datatype: str, dtype: np.dtype, shape: tuple[int, ...], data: list[Any]
) -> np.ndarray:
    """JSON integers of any size to an integer tensor, exactly, or a 400 saying why not."""
    values = np.array(data, dtype=object)
    others = [value for value in values.reshape(-1) if type(value) is not int]
    if others:
        # orjson reads integers past 64 bits as floats: those are out of range, not decimals.
        huge = all(isinstance(v, float) and v.is_integer() and abs(v) >= 2**63 for v in others)
        problem = "values out of range for" if huge else "non-integer data for a"
        raise InvalidInput(f"input '{name}': {problem} {datatype} tensor")
    try:
        return values.astype(dtype).reshape(shape)
    except OverflowError:
        raise InvalidInput(f"input '{name}': values out of range for {datatype}") from None


def _floats_from_json(
    name: str, datatype: str, dtype: np.dtype, shape: tuple[int, ...], data: list[Any]
) -> np.ndarray:
    """The common case, converted in one pass straight to the target dtype.

    numpy would quietly turn `null` into NaN, `true` into 1.0 and `"2.5"` into 2.5: JSON has
    no NaN, so a NaN in the result means a null (or a string) was sent; the first element
    tells strings and booleans apart before any work is done, the others are checked last.
    """
    first: Any = data
    while isinstance(first, list) and first:
        first = first[0]
    if isinstance(first, (str, bool)) or (first is None and data):
        found = "boolean" if isinstance(first, bool) else "non-numeric"
        raise InvalidInput(f"input '{name}': {found} data for a {datatype} tensor")
    try:
        with np.errstate(over="ignore"):  # beyond the datatype's range: refused below
            array = np.array(data, dtype=dtype)
    except (ValueError, TypeError):
        raise InvalidInput(
            f"input '{name}': 'data' must be numbers in rows of equal length for a {datatype} "
            "tensor"
        ) from None
    if array.size != math.prod(shape):
        raise InvalidInput(
            f"input '{name}': shape {list(shape)} needs {math.prod(shape)} elements, "
            f"data has {array.size}"
        )
    # A finite sum proves every value finite in one cheap pass; a sum can overflow, so
    # only then are the values checked one by one.
    if not math.isfinite(array.sum()) and not np.isfinite(array).all():
        # JSON has no NaN or infinity: a null, a string or a number beyond the datatype's
        # range got here. Non-finite values travel in binary only (see README).
        raise InvalidInput(
            f"input '{name}': null, non-numeric or non-finite data for a {datatype} tensor "
            "(JSON carries finite numbers only: send NaN or infinity with the binary tensor "
            "extension)"
        )
    _check_numbers(name, datatype, data, array.ndim)
    return array.reshape(shape)


def _check_numbers(name: str, datatype: str, data: list[Any], ndim: int) -> None:
    """Every element of `data` (nested `ndim` deep, as numpy read it) must be a JSON number:
    numpy takes `true` as 1 and `"2.5"` as 2.5 wherever they stand among numbers."""
    flat: Any = data
    for _ in range(ndim - 1):
        flat = itertools.chain.from_iterable(flat)
    kinds = set(map(type, flat))
    if not kinds <= _NUMBERS:
        found = "boolean" if bool in kinds else "non-numeric"
        raise InvalidInput(f"input '{name}': {found} data for a {datatype} tensor")


def _kind_fits(kind: str, dtype: np.dtype) -> bool:
    """JSON numbers decode to b/i/f; an int tensor must not silently truncate floats."""
    if dtype.kind == "b":
        return kind == "b"
    if dtype.kind in "iu":
        return kind in "iu"
    return kind in "iuf"


def to_json(tensor: Tensor) -> Any:
    """An output's data as JSON takes it (flat); what JSON cannot carry is refused by name."""
    if tensor.datatype in ("FP16", "BF16"):
        # As KServe: half precision has no faithful JSON form; the client must ask for binary.
        raise InvalidInput(
            f"output '{tensor.name}' is {tensor.datatype}, which JSON cannot carry: request it "
            "with the binary tensor extension ('binary_data': true)"
        )
    if tensor.datatype == "BYTES":
        return [_text(item) for item in tensor.data.reshape(-1)]
    data = np.ascontiguousarray(tensor.data).reshape(-1)
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        # JSON has no NaN or infinity (orjson would write null, which reads as missing
        # data): the binary form carries them exactly. The model made them: a 500.
        raise OutputNotRepresentable(
            f"output '{tensor.name}' holds NaN or infinity, which JSON cannot carry: request "
            "it with the binary tensor extension ('binary_data': true)"
        )
    return data


def _text(item: Any) -> str:
    if isinstance(item, bytes):
        try:
            return item.decode()
        except UnicodeDecodeError:
            raise InvalidInput(
                "a BYTES output is not UTF-8 text: request it with 'binary_data': true"
            ) from None
    return str(item)
