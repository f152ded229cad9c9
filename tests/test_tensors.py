"""The shared tensor rules (base/tensors.py), in process: what PyTorch, TensorFlow and ONNX
all answer for binding, datatypes, shapes, requested outputs and V1 rows."""

from __future__ import annotations

import numpy as np
import pytest

from modelport.base.errors import NO_OUTPUTS, InferenceFailed, InvalidInput
from modelport.base.messages import InferRequest, InferResponse, RequestedOutput, Tensor
from modelport.base.protocol import v1
from modelport.base.tensors import (
    bind_inputs,
    check_shape,
    datatype_of,
    decode_instances,
    encode_rows,
    output_tensor,
    requested_outputs,
    select_outputs,
    wrong_datatype,
)

OWNER = "model 'm'"


def tensor(name: str, *shape: int, dtype=np.float32) -> Tensor:
    return Tensor(name, np.zeros(shape or (1,), dtype=dtype))


def test_binds_by_name_in_the_models_order():
    given = bind_inputs([tensor("y"), tensor("x")], ["x", "y"], OWNER)
    assert list(given) == ["x", "y"]
    assert given["y"].name == "y"


def test_binds_a_sole_input_by_position_only_when_asked_for_more():
    assert list(bind_inputs([tensor("input-0")], ["x"], OWNER)) == ["x"]
    with pytest.raises(InvalidInput, match="unknown input 'a'; model 'm' takes: x, y"):
        bind_inputs([tensor("a"), tensor("b")], ["x", "y"], OWNER)
    positional = bind_inputs([tensor("a"), tensor("b")], ["x", "y"], OWNER, positional=True)
    assert [t.name for t in positional.values()] == ["a", "b"]
    with pytest.raises(InvalidInput, match=r"takes 1 to 2 input\(s\) \(x, y\), got 3"):
        bind_inputs([tensor("a")] * 3, ["x", "y"], OWNER, required=1, positional=True)


def test_never_binds_by_position_a_tensor_that_names_another_input():
    """`y` beside a typo used to feed `x`: the model answered as if nothing were wrong."""
    with pytest.raises(InvalidInput, match="unknown input 'yy'; model 'm' takes: x, y"):
        bind_inputs([tensor("y"), tensor("yy")], ["x", "y"], OWNER, positional=True)
    with pytest.raises(InvalidInput, match="input 'x' is given twice"):
        bind_inputs([tensor("x"), tensor("x")], ["x", "y"], OWNER, positional=True)
    kept = bind_inputs([tensor("x"), tensor("yy")], ["x", "y"], OWNER, positional=True)
    assert [t.name for t in kept.values()] == ["x", "yy"]


def test_binding_names_missing_and_duplicated_inputs():
    with pytest.raises(InvalidInput, match="missing input 'y'; model 'm' takes: x, y"):
        bind_inputs([tensor("x")], ["x", "y"], OWNER)
    with pytest.raises(InvalidInput, match="input 'x' is given twice"):
        bind_inputs([tensor("x"), tensor("x")], ["x", "y"], OWNER)
    with pytest.raises(InvalidInput, match="no inputs given"):
        bind_inputs([], ["x", "y"], OWNER)
    assert list(bind_inputs([tensor("x")], ["x", "y"], OWNER, required=1)) == ["x"]


def test_datatypes_of_framework_dtypes():
    assert datatype_of(np.dtype(np.float16), "float16") == "FP16"
    assert datatype_of(None, "bfloat16") == "BF16"
    assert datatype_of(np.dtype(object), "string") == "BYTES"
    assert datatype_of(np.dtype(np.complex64), "complex64") == "COMPLEX64"
    assert datatype_of(None, "float8e4m3fn") == "FLOAT8E4M3FN"
    assert output_tensor("t", np.array(["a"])).datatype == "BYTES"
    words = output_tensor("b", np.array([0x3F80], dtype=np.int16), "BF16")
    assert (words.datatype, words.data.dtype) == ("BF16", np.uint16)
    longlong = output_tensor("q", np.array([1, 2], dtype=np.longlong))
    assert (longlong.datatype, longlong.data.dtype.char) == ("INT64", np.dtype(np.int64).char)
    assert type(longlong.data[0]) is np.int64  # what the JSON encoder knows
    with pytest.raises(InferenceFailed, match="output 'c' has dtype complex64"):
        output_tensor("c", np.zeros(1, np.complex64))


def test_datatype_and_shape_checks_name_the_input():
    error = wrong_datatype(tensor("x"), "INT64", OWNER)
    assert error.status == 400
    assert error.message == "input 'x': model 'm' takes INT64, got FP32"
    check_shape(tensor("x", 5, 3), [-1, 3], OWNER)
    check_shape(tensor("x", 5, 3, 2), None, OWNER)
    with pytest.raises(InvalidInput, match=r"input 'x': shape \[5, 4\] does not fit model 'm'"):
        check_shape(tensor("x", 5, 4), [-1, 3], OWNER)
    with pytest.raises(InvalidInput, match=r"shape \[3\] does not fit"):
        check_shape(tensor("x", 3), [-1, 3], OWNER)


def test_requested_outputs_are_checked_and_selected():
    request = InferRequest([], outputs=[RequestedOutput("b")])
    assert requested_outputs(request, ["a", "b"], OWNER) == ["b"]
    assert requested_outputs(InferRequest([]), ["a"], OWNER) == []
    with pytest.raises(InvalidInput, match="unknown output 'b'; model 'm' offers: a"):
        requested_outputs(request, ["a"], OWNER)
    outputs = [tensor("a"), tensor("b")]
    assert [t.name for t in select_outputs(outputs, request, "m")] == ["b"]
    assert select_outputs(outputs, InferRequest([]), "m") == outputs


def test_v1_instances_take_the_declared_datatypes():
    request = decode_instances(
        {"instances": [{"ids": 1, "w": "a"}, {"ids": 2, "w": "b"}]},
        ["ids", "w"],
        {"ids": "INT64", "w": "BYTES"},
    )
    assert [(t.name, t.datatype) for t in request.inputs] == [("ids", "INT64"), ("w", "BYTES")]
    rows = decode_instances({"instances": [[1, 2]]}, ["x"], {"x": "FP16"}).inputs[0]
    assert (rows.name, rows.datatype, rows.shape) == ("input-0", "FP16", [1, 2])
    untyped = decode_instances({"instances": [[1.5]]}, ["x"], {}).inputs[0]
    assert untyped.datatype == "FP32"
    with pytest.raises(InvalidInput, match="input 'ids': the model takes INT64, got decimals"):
        decode_instances({"instances": [{"ids": 1.5}]}, ["ids"], {"ids": "INT64"})
    with pytest.raises(InvalidInput, match="input 'x' is missing from some instances"):
        decode_instances({"instances": [{"x": 1}, {"y": 2}]}, ["x", "y"], {})


def test_v1_rows_out():
    one = InferResponse([Tensor("a", np.array([1, 2]))])
    assert encode_rows(one)["predictions"].tolist() == [1, 2]
    two = InferResponse([Tensor("a", np.array([1, 2])), Tensor("b", np.array([[3], [4]]))])
    rows = encode_rows(two)["predictions"]
    assert [(int(r["a"]), r["b"].tolist()) for r in rows] == [(1, [3]), (2, [4])]
    uneven = InferResponse([Tensor("a", np.array([1, 2])), Tensor("b", np.array([3]))])
    assert set(encode_rows(uneven)["predictions"]) == {"a", "b"}


def test_no_outputs_is_one_model_fault_everywhere():
    empty = InferResponse([])
    for encode in (encode_rows, v1.encode_response):
        with pytest.raises(InferenceFailed) as caught:
            encode(empty)
        assert caught.value.status == 500
        assert caught.value.message == NO_OUTPUTS
