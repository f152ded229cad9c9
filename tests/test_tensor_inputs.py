"""V1 instances through base/tensors.py, in process: the model's datatype is reached with
V2's JSON checks, so V1 and V2 refuse the same values alike."""

from __future__ import annotations

import numpy as np
import pytest

from modelport.base.errors import InvalidInput
from modelport.base.tensors import decode_instances


def column(instances: list, datatype: str | None) -> np.ndarray:
    datatypes = {} if datatype is None else {"x": datatype}
    return decode_instances({"instances": instances}, ["x"], datatypes).inputs[0].data


@pytest.mark.parametrize(
    ("instances", "datatype", "message"),
    [
        ([300, -1, 255], "UINT8", "values out of range for UINT8"),
        ([256], "UINT8", "values out of range for UINT8"),
        ([-1], "UINT64", "values out of range for UINT64"),
        ([2**40, 1], "INT32", "values out of range for INT32"),
        ([float(2**70)], "INT64", "values out of range for INT64"),  # as orjson reads 2**70
        ([[1e6, 1.0]], "FP16", "non-finite data for a FP16 tensor"),
        ([[1e300, 1.0]], "FP32", "non-finite data for a FP32 tensor"),
        ([[True, False]], "FP32", "boolean data for a FP32 tensor"),
        ([[1, 0]], "BOOL", "int64 data for a BOOL tensor"),
        ([1e300], None, "values out of range for FP32"),
    ],
)
def test_values_the_datatype_cannot_hold_are_400(instances, datatype, message):
    with pytest.raises(InvalidInput, match=message) as caught:
        column(instances, datatype)
    assert caught.value.status == 400
    assert caught.value.message.startswith("input 'input-0': ")


def test_values_within_range_convert_exactly():
    assert column([0, 255], "UINT8").tolist() == [0, 255]
    assert column([2**64 - 1, 0], "UINT64").tolist() == [2**64 - 1, 0]
    assert column([-(2**31), 2**31 - 1], "INT32").dtype == np.int32
    assert column([[65504.0, 1]], "FP16").tolist() == [[65504.0, 1.0]]
    assert column([[1, 2]], "FP64").dtype == np.float64
    assert column([[True, False]], "BOOL").tolist() == [[True, False]]
    untyped = column([[1.5, 2]], None)
    assert untyped.dtype == np.float32
    assert column([[1, 2]], None).dtype == np.int64  # no declared datatype: JSON's kind
    with pytest.raises(InvalidInput, match="the model takes INT64, got decimals"):
        column([1.5], "INT64")
