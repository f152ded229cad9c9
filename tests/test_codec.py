"""The V2 codec alone: every OIP datatype through JSON and binary, both directions."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest
import tritonclient.http as triton

from modelport.base.errors import InferenceFailed, InvalidInput, OutputNotRepresentable
from modelport.base.messages import InferRequest, InferResponse, RequestedOutput, Tensor
from modelport.base.protocol import v2

LIMITS = v2.Limits()
NUMERIC = [
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
]


def sample(datatype: str) -> np.ndarray:
    dtype = triton.triton_to_np_dtype(datatype)
    if datatype == "BOOL":
        return np.array([[True, False, True], [False, True, True]])
    if datatype == "BYTES":
        return np.array([[b"a", b"bc", b""], [b"\xff\x00", b"x", b"yz"]], dtype=object)
    return np.arange(6, dtype=dtype).reshape(2, 3)


@pytest.mark.parametrize("datatype", NUMERIC)
def test_json_input_each_datatype(datatype):
    data = sample(datatype)
    body = orjson.dumps(
        {
            "inputs": [
                {"name": "x", "shape": [2, 3], "datatype": datatype, "data": data.ravel().tolist()}
            ]
        }
    )
    tensor = v2.decode_request(body, None, LIMITS).inputs[0]
    assert tensor.datatype == datatype
    assert tensor.data.dtype == data.dtype
    assert np.array_equal(tensor.data, data)


@pytest.mark.parametrize("datatype", [*NUMERIC, "BYTES"])
def test_binary_input_each_datatype_via_tritonclient_encoding(datatype):
    data = sample(datatype)
    tensor = triton.InferInput("x", list(data.shape), datatype)
    tensor.set_data_from_numpy(data, binary_data=True)
    body, header_length = triton.InferenceServerClient.generate_request_body([tensor])
    decoded = v2.decode_request(body, header_length, LIMITS).inputs[0]
    assert decoded.shape == [2, 3]
    if datatype == "BYTES":
        assert decoded.data.tolist() == data.tolist()
    else:
        assert np.array_equal(decoded.data, data)


OUTPUT_CASES = [
    (d, b) for d in [*NUMERIC, "BYTES"] for b in (False, True) if (d, b) != ("FP16", False)
]


@pytest.mark.parametrize(("datatype", "binary"), OUTPUT_CASES)
def test_output_round_trip_through_tritonclient_parser(datatype, binary):
    """FP16 in JSON is refused (tested below), as KServe does."""
    data = sample(datatype)
    if datatype == "BYTES" and not binary:
        data = np.array([["a", "bc", ""], ["é", "x", "yz"]], dtype=object)
    request = InferRequest([], outputs=[RequestedOutput("y", {"binary_data": binary})])
    body, header_length = v2.encode_response(
        InferResponse([Tensor("y", data, datatype)]), request, "m", "1"
    )
    result = triton.InferResult.from_response_body(body, header_length=header_length)
    decoded = result.as_numpy("y")
    if datatype == "BYTES":
        # tritonclient yields str for JSON BYTES and bytes for binary ones.
        assert decoded.tolist() == data.tolist()
    else:
        assert np.array_equal(decoded, data)
    assert result.get_response()["model_version"] == "1"


def test_fp16_output_in_json_asks_for_binary():
    request = InferRequest([])
    with pytest.raises(InvalidInput, match="binary"):
        v2.encode_response(
            InferResponse([Tensor("y", np.zeros(2, np.float16))]), request, "m", None
        )


def test_nested_and_flat_data_are_equivalent():
    flat = v2.decode_request(
        b'{"inputs":[{"name":"x","shape":[2,2],"datatype":"INT32","data":[1,2,3,4]}]}', None, LIMITS
    )
    nested = v2.decode_request(
        b'{"inputs":[{"name":"x","shape":[2,2],"datatype":"INT32","data":[[1,2],[3,4]]}]}',
        None,
        LIMITS,
    )
    assert np.array_equal(flat.inputs[0].data, nested.inputs[0].data)


def test_parameters_are_kept():
    request = v2.decode_request(
        b'{"id":"1","parameters":{"content_type":"pd","k":3},"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1],"parameters":{"content_type":"np"}}],"outputs":[{"name":"y","parameters":{"binary_data":true}}]}',
        None,
        LIMITS,
    )
    assert request.id == "1"
    assert request.content_type == "pd"
    assert request.parameters["k"] == 3
    assert request.inputs[0].parameters == {"content_type": "np"}
    assert request.outputs[0].parameters == {"binary_data": True}


def test_caps_are_checked_before_allocation():
    limits = v2.Limits(max_inputs=2, max_tensor_elements=100)
    huge = b'{"inputs":[{"name":"x","shape":[100000,100000],"datatype":"FP32","parameters":{"binary_data_size":0}}]}'
    with pytest.raises(InvalidInput, match="more than 100 elements"):
        v2.decode_request(huge, len(huge), limits)
    many = orjson.dumps(
        {
            "inputs": [
                {"name": f"x{i}", "shape": [1], "datatype": "FP32", "data": [1]} for i in range(3)
            ]
        }
    )
    with pytest.raises(InvalidInput, match="too many inputs"):
        v2.decode_request(many, None, limits)


def test_unclaimed_binary_bytes_are_an_error():
    header = b'{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":4}}]}'
    with pytest.raises(InvalidInput, match="not claimed"):
        v2.decode_request(header + b"\x00" * 8, len(header), LIMITS)


def test_binary_bool_bytes_must_be_zero_or_one():
    header = b'{"inputs":[{"name":"b","shape":[3],"datatype":"BOOL","parameters":{"binary_data_size":3}}]}'
    assert v2.decode_request(header + b"\x00\x01\x00", len(header), LIMITS).inputs[
        0
    ].data.tolist() == [False, True, False]
    with pytest.raises(InvalidInput, match="'b': BOOL bytes must be 0 or 1"):
        v2.decode_request(header + b"\x00\x02\x01", len(header), LIMITS)


def test_an_input_given_twice_is_an_error():
    x = {"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}
    body = orjson.dumps(
        {"inputs": [x, {"name": "y", "shape": [1], "datatype": "FP32", "data": [2.0]}, x]}
    )
    with pytest.raises(InvalidInput, match="'x' is given more than once"):
        v2.decode_request(body, None, LIMITS)


@pytest.mark.parametrize("request_id", [{"a": 1}, [1], True])
def test_an_id_that_is_no_identifier_is_an_error(request_id):
    x = {"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}
    with pytest.raises(InvalidInput, match="'id' must be a string"):
        v2.decode_request(orjson.dumps({"inputs": [x], "id": request_id}), None, LIMITS)
    for accepted, echoed in (("r-1", "r-1"), (7, "7")):
        body = orjson.dumps({"inputs": [x], "id": accepted})
        assert v2.decode_request(body, None, LIMITS).id == echoed


def test_an_output_requested_twice_is_an_error():
    # It would be answered twice; Triton refuses it too ("already exists in request").
    x = {"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}
    outputs = [{"name": "y"}, {"name": "z"}, {"name": "y", "parameters": {"binary_data": True}}]
    body = orjson.dumps({"inputs": [x], "outputs": outputs})
    with pytest.raises(InvalidInput, match="output 'y' is requested more than once"):
        v2.decode_request(body, None, LIMITS)
    assert (
        len(
            v2.decode_request(
                orjson.dumps({"inputs": [x], "outputs": outputs[:2]}), None, LIMITS
            ).outputs
        )
        == 2
    )


def test_v1_json_ready_handles_scalars_half_floats_and_bytes():
    from modelport.base.protocol import v1

    assert v1.json_ready(Tensor("s", np.array(3.5, dtype=np.float32))) == 3.5
    widened = v1.json_ready(Tensor("h", np.array([0.5, 1.5], dtype=np.float16)))
    assert widened.dtype == np.float32 and widened.tolist() == [0.5, 1.5]
    bf16 = np.array([0x3F80, 0x4000], dtype=np.uint16)  # 1.0 and 2.0 as bfloat16 words
    assert v1.json_ready(Tensor("b", bf16, "BF16")).tolist() == [1.0, 2.0]
    text = v1.json_ready(Tensor("t", np.array([[b"a", "b"]], dtype=object)))
    assert text == [["a", "b"]]
    body = orjson.dumps(
        v1.encode_response(InferResponse([Tensor("s", np.array(7))])),
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    assert orjson.loads(body) == {"predictions": 7}


def _tensor_body(shape, **fields) -> bytes:
    return orjson.dumps({"inputs": [{"name": "x", "shape": shape, "datatype": "FP32", **fields}]})


@pytest.mark.parametrize(
    ("shape", "words"),
    [
        ([1] * 65, r"65 dimensions \(at most 64\)"),
        ([9223372036854775808, 0], "non-zero dimensions multiply past"),
        ([2**62, 4, 0], "non-zero dimensions multiply past"),
        ([2**40, 2**40], "more than"),
    ],
    ids=["rank-65", "huge-times-zero", "overflow-times-zero", "product-overflows"],
)
def test_shapes_numpy_cannot_build_are_400_in_json_and_binary(shape, words):
    json_body = _tensor_body(shape, data=[])
    with pytest.raises(InvalidInput, match=words):
        v2.decode_request(json_body, None, LIMITS)
    header = _tensor_body(shape, parameters={"binary_data_size": 0})
    with pytest.raises(InvalidInput, match=words):
        v2.decode_request(header, len(header), LIMITS)


def test_empty_tensors_within_the_caps_still_decode():
    body = _tensor_body([3, 0, 64], data=[])
    assert v2.decode_request(body, None, LIMITS).inputs[0].data.shape == (3, 0, 64)


INT_EXTREMES = {
    "UINT64": [0, 1, 2**63, 2**64 - 1],
    "INT64": [-(2**63), -1, 0, 2**63 - 1],
}


@pytest.mark.parametrize("datatype", list(INT_EXTREMES))
def test_64_bit_extremes_round_trip_exactly_in_json_and_binary(datatype):
    values = INT_EXTREMES[datatype]
    body = orjson.dumps(
        {"inputs": [{"name": "x", "shape": [4], "datatype": datatype, "data": values}]}
    )
    decoded = v2.decode_request(body, None, LIMITS).inputs[0]
    assert decoded.data.dtype == triton.triton_to_np_dtype(datatype)
    assert decoded.data.tolist() == values
    for binary in (False, True):
        request = InferRequest([], outputs=[RequestedOutput("y", {"binary_data": binary})])
        payload, length = v2.encode_response(
            InferResponse([Tensor("y", decoded.data)]), request, "m", None
        )
        result = triton.InferResult.from_response_body(payload, header_length=length)
        assert result.as_numpy("y").tolist() == values
        if not binary:
            assert orjson.loads(payload)["outputs"][0]["data"] == values


@pytest.mark.parametrize(
    ("datatype", "data", "words"),
    [
        ("UINT64", [2**64, 1], "out of range for UINT64"),
        ("UINT64", [-1, 2**63], "out of range for UINT64"),
        ("INT64", [2**63, 1], "out of range for INT64"),
        ("UINT64", [2**63, 1.5], "non-integer data for a UINT64"),
    ],
)
def test_64_bit_values_that_do_not_fit_are_400(datatype, data, words):
    body = json.dumps({"inputs": [{"name": "x", "shape": [2], "datatype": datatype, "data": data}]})
    with pytest.raises(InvalidInput, match=words):
        v2.decode_request(body, None, LIMITS)


@pytest.mark.parametrize(
    "data", [[1.0, None], ["NaN", 1.0], [1.0, "Infinity"], [1.0, 1e39]], ids=str
)
def test_json_inputs_carry_finite_numbers_only(data):
    body = orjson.dumps({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": data}]})
    with pytest.raises(InvalidInput, match=r"input 'x'.*FP32"):
        v2.decode_request(body, None, LIMITS)


@pytest.mark.parametrize(
    ("datatype", "data", "words"),
    [
        ("FP32", [1.0, "2.5"], "non-numeric data for a FP32"),
        ("FP64", [[1.0], [" 7 "]], "non-numeric data for a FP64"),
        ("FP16", [[1.0], [True]], "boolean data for a FP16"),
        ("INT8", [1, True], "boolean data for a INT8"),
        ("INT64", [[5], [False]], "boolean data for a INT64"),
    ],
)
def test_json_numbers_refuse_strings_and_booleans_anywhere(datatype, data, words):
    """numpy reads `"2.5"` as 2.5 and `true` as 1 when they follow a number: the first
    element alone does not tell."""
    body = orjson.dumps(
        {"inputs": [{"name": "x", "shape": [2], "datatype": datatype, "data": data}]}
    )
    with pytest.raises(InvalidInput, match=f"input 'x': {words}"):
        v2.decode_request(body, None, LIMITS)


def test_binary_inputs_carry_nan_and_infinity_exactly():
    values = np.array([np.nan, np.inf, -np.inf, 2.5], dtype=np.float32)
    tensor = triton.InferInput("x", [4], "FP32")
    tensor.set_data_from_numpy(values, binary_data=True)
    body, length = triton.InferenceServerClient.generate_request_body([tensor])
    decoded = v2.decode_request(body, length, LIMITS).inputs[0].data
    assert decoded.tobytes() == values.tobytes()


def test_non_finite_outputs_in_json_ask_for_binary_and_are_a_500():
    data = np.array([1.0, np.nan], dtype=np.float32)
    with pytest.raises(OutputNotRepresentable, match="binary_data") as raised:
        v2.encode_response(InferResponse([Tensor("y", data)]), InferRequest([]), "m", None)
    assert raised.value.status == 500


@pytest.mark.parametrize(
    ("value", "binary"), [("false", False), ("FALSE", False), ("true", True), (True, True)]
)
def test_binary_data_accepts_booleans_as_strings(value, binary):
    request = InferRequest([], parameters={"binary_data_output": value})
    _, length = v2.encode_response(InferResponse([Tensor("y", np.arange(3))]), request, "m", None)
    assert (length is not None) is binary


def test_no_outputs_is_one_500_in_v1_and_v2():
    from modelport.base.protocol import v1

    with pytest.raises(InferenceFailed, match="produced no outputs"):
        v2.encode_response(InferResponse([]), InferRequest([]), "m", None)
    with pytest.raises(InferenceFailed, match="produced no outputs"):
        v1.encode_response(InferResponse([]))
