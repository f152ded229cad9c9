"""ONNX graphs for the ONNX runtime's tests, built with onnx.helper (and skl2onnx)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

OPSET = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 2)]
IR_VERSION = 8  # old enough for every onnxruntime this project allows


def save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=OPSET, ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)


def half_graph() -> onnx.GraphProto:
    """FP16 [batch, 3] doubled: exact dtypes and a fixed dimension to violate."""
    two = helper.make_tensor("two", TensorProto.FLOAT16, [], [2.0])
    return helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])],
        "half",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["batch", 3])],
        initializer=[two],
    )


def mixed_graph() -> onnx.GraphProto:
    """INT64 and STRING inputs by name; INT64, BOOL and STRING outputs (strings looked up
    in a table, and echoed)."""
    one = helper.make_tensor("one", TensorProto.INT64, [], [1])
    zero = helper.make_tensor("zero", TensorProto.INT64, [], [0])
    nodes = [
        helper.make_node("Add", ["ids", "one"], ["next_ids"]),
        helper.make_node("Greater", ["ids", "zero"], ["positive"]),
        helper.make_node("Identity", ["words"], ["echo"]),
        helper.make_node(
            "LabelEncoder",
            ["words"],
            ["codes"],
            domain="ai.onnx.ml",
            keys_strings=["ab", "caf\u00e9"],
            values_int64s=[1, 2],
            default_int64=-1,
        ),
    ]
    return helper.make_graph(
        nodes,
        "mixed",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("words", TensorProto.STRING, [None]),
        ],
        [
            helper.make_tensor_value_info("next_ids", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("positive", TensorProto.BOOL, [None]),
            helper.make_tensor_value_info("echo", TensorProto.STRING, [None]),
            helper.make_tensor_value_info("codes", TensorProto.INT64, [None]),
        ],
        initializer=[one, zero],
    )


def brain_graph() -> onnx.GraphProto:
    """BF16 in, FP32 and BF16 out (Cast is one of the CPU provider's bfloat16 kernels)."""
    nodes = [
        helper.make_node("Cast", ["x"], ["wide"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["wide"], ["narrow"], to=TensorProto.BFLOAT16),
    ]
    return helper.make_graph(
        nodes,
        "brain",
        [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, ["n"])],
        [
            helper.make_tensor_value_info("wide", TensorProto.FLOAT, ["n"]),
            helper.make_tensor_value_info("narrow", TensorProto.BFLOAT16, ["n"]),
        ],
    )


def narrow_graph() -> onnx.GraphProto:
    """FP32 in, BF16 and STRING out: bfloat16 answers for a model that takes no bfloat16."""
    nodes = [
        helper.make_node("Cast", ["x"], ["narrow"], to=TensorProto.BFLOAT16),
        helper.make_node("Cast", ["x"], ["text"], to=TensorProto.STRING),
    ]
    return helper.make_graph(
        nodes,
        "narrow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
        [
            helper.make_tensor_value_info("narrow", TensorProto.BFLOAT16, ["n"]),
            helper.make_tensor_value_info("text", TensorProto.STRING, ["n"]),
        ],
    )


def add_graph() -> onnx.GraphProto:
    """Two dynamic vectors added: only the kernel can tell that their lengths differ."""
    return helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["c"])],
        "add",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n"]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["m"]),
        ],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, ["n"])],
    )


def stack_graph() -> onnx.GraphProto:
    """Two vectors declared [n] stacked into [2, n]: equally long, as their shapes say."""
    axis = helper.make_tensor("axis", TensorProto.INT64, [1], [0])
    nodes = [
        helper.make_node("Unsqueeze", ["a", "axis"], ["a2"]),
        helper.make_node("Unsqueeze", ["b", "axis"], ["b2"]),
        helper.make_node("Concat", ["a2", "b2"], ["ab"], axis=0),
    ]
    return helper.make_graph(
        nodes,
        "stack",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n"]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n"]),
        ],
        [helper.make_tensor_value_info("ab", TensorProto.FLOAT, [2, "n"])],
        initializer=[axis],
    )


def reshape_graph() -> onnx.GraphProto:
    """Declares any length but reshapes to 7: a fault of the model, not of its callers."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [1], [7])
    return helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        "reshape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [7])],
        initializer=[shape],
    )


def counter_graph() -> onnx.GraphProto:
    """FP32 [rows, 2] doubled, plus `rows`: how many rows the predict call saw."""
    starts = helper.make_tensor("starts", TensorProto.INT64, [1], [0])
    ends = helper.make_tensor("ends", TensorProto.INT64, [1], [1])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["y"]),
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Slice", ["shape", "starts", "ends"], ["count"]),
        helper.make_node("Expand", ["count", "count"], ["rows"]),
    ]
    return helper.make_graph(
        nodes,
        "counter",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", 2])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", 2]),
            helper.make_tensor_value_info("rows", TensorProto.INT64, ["rows"]),
        ],
        initializer=[starts, ends, two],
    )


def iris_onnx(classifier: Any, sample: np.ndarray, zipmap: bool) -> onnx.ModelProto:
    """A fitted scikit-learn classifier through skl2onnx; ZipMap's dictionaries only when
    asked for (the runtime serves tensors)."""
    from skl2onnx import to_onnx

    options = {id(classifier): {"zipmap": False}} if not zipmap else None
    return to_onnx(classifier, sample.astype(np.float32), options=options, target_opset=17)
