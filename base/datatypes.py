"""Open Inference Protocol datatypes and their numpy equivalents (one table, both ways)."""

from __future__ import annotations

import numpy as np

from modelport.base.errors import InvalidInput

# BF16 has no numpy dtype; it travels only as raw binary and is exposed as uint16 words.
TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}

# Datatypes that travel only as raw bytes (binary extension, gRPC raw contents), with the
# dtype of their words: BF16 has no numpy dtype and is exposed as raw 16-bit words.
BINARY_ONLY: dict[str, np.dtype] = {"BF16": np.dtype(np.uint16)}

_FROM_NUMPY: dict[np.dtype, str] = {dtype: name for name, dtype in TO_NUMPY.items()}


def to_numpy(datatype: str) -> np.dtype:
    """The numpy dtype for an OIP datatype; unknown names are the client's mistake."""
    try:
        return TO_NUMPY[datatype]
    except (KeyError, TypeError):
        raise InvalidInput(
            f"unsupported datatype '{datatype}'; expected one of {', '.join(TO_NUMPY)}"
        ) from None


def from_numpy(dtype: np.dtype) -> str:
    """The OIP datatype for a numpy dtype (strings and objects are BYTES)."""
    name = _FROM_NUMPY.get(dtype)
    if name is not None:
        return name
    if dtype.kind in "OSU":
        return "BYTES"
    raise InvalidInput(f"numpy dtype '{dtype}' has no Open Inference Protocol datatype")


def overflowed(data: np.ndarray, finite: np.ndarray) -> bool:
    """Whether narrowing `data` to a float type made finite values infinite (`finite`: the
    narrowed values' `isfinite`): FP64 1e300 to float32, INT32 100000 to float16. The model
    would compute on infinity. NaN and infinity sent as such (in binary) are no overflow."""
    if finite.all():
        return False
    return data.dtype.kind != "f" or bool(np.isfinite(data[~finite]).any())


def narrow_floats(data: np.ndarray, dtype: np.dtype) -> np.ndarray | None:
    """`data` as the float `dtype`, or None when finite values overflow it (`overflowed`);
    each caller refuses that with its own message."""
    with np.errstate(over="ignore"):  # an overflow is what is looked for
        cast = data.astype(dtype)
    return None if overflowed(data, np.isfinite(cast)) else cast
