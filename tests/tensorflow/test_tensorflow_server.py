"""TensorFlow runtime against real servers: SavedModels and a Keras file built here.

The `flowers` model reproduces KServe's documented TensorFlow example (a signature taking a
base64 JPEG `image_bytes` and a `key`) with a tiny dense layer instead of a download.
"""

from __future__ import annotations

import base64
import os

import numpy as np
import pytest

from tests.servers import ServerProcess, start_server, triton_infer

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

pytestmark = [
    pytest.mark.heavy,
    # Keras 3 saving trips a numpy 2 copy-keyword deprecation inside keras itself.
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]

SIDE, CLASSES = 8, 5


class Flowers(tf.Module):
    """decode_jpeg -> resize -> dense -> softmax, answering scores, prediction and key."""

    def __init__(self) -> None:
        super().__init__()
        rng = np.random.default_rng(3)
        self.weights = tf.Variable(
            rng.standard_normal((SIDE * SIDE * 3, CLASSES)), dtype=tf.float32
        )
        self.bias = tf.Variable(rng.standard_normal(CLASSES), dtype=tf.float32)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="image_bytes"),
            tf.TensorSpec([None], tf.string, name="key"),
        ]
    )
    def serve(self, image_bytes, key):
        def pixels(jpeg):
            image = tf.image.resize(tf.io.decode_jpeg(jpeg, channels=3), [SIDE, SIDE]) / 255.0
            return tf.reshape(image, [-1])

        features = tf.map_fn(pixels, image_bytes, fn_output_signature=tf.float32)
        scores = tf.nn.softmax(features @ self.weights + self.bias)
        return {"scores": scores, "prediction": tf.argmax(scores, axis=1), "key": key}


class Calculator(tf.Module):
    """Two signatures; the version number scales the results so versions are told apart."""

    def __init__(self, version: int) -> None:
        super().__init__()
        self.factor = tf.constant(float(version))

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 3], tf.float32, name="x"),
            tf.TensorSpec([None, 3], tf.float32, name="y"),
        ]
    )
    def combine(self, x, y):
        return {"sum": (x + y) * self.factor, "prod": x * y * self.factor}

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def scale(self, x):
        return x * 10.0 * self.factor


def jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    return tf.io.encode_jpeg(pixels).numpy()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tf-models")
    flowers = Flowers()
    tf.saved_model.save(
        flowers, str(root / "flowers"), signatures={"serving_default": flowers.serve}
    )
    for version in (1, 2):
        calc = Calculator(version)
        tf.saved_model.save(
            calc,
            str(root / "calc" / str(version)),
            signatures={"serving_default": calc.combine, "scale": calc.scale},
        )
    keras.utils.set_random_seed(5)
    features = keras.Input((4,), name="features")
    classifier = keras.Model(features, keras.layers.Dense(3, activation="softmax")(features))
    (root / "keras").mkdir()
    classifier.save(root / "keras" / "model.keras")
    return {"root": root, "flowers": flowers, "keras": classifier}


@pytest.fixture(scope="module")
def server(models):
    process = start_server("tensorflow", models["root"])
    yield process
    process.stop()


def test_kserve_image_example_v1(server: ServerProcess, models):
    images = [jpeg(1), jpeg(2)]
    instances = [
        {"image_bytes": {"b64": base64.b64encode(image).decode()}, "key": f"   {index + 1}"}
        for index, image in enumerate(images)
    ]
    response = server.post("/v1/models/flowers:predict", json={"instances": instances})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    expected = models["flowers"].serve(tf.constant(images), tf.constant(["   1", "   2"]))
    assert [set(p) for p in predictions] == [{"scores", "prediction", "key"}] * 2
    assert [p["key"] for p in predictions] == ["   1", "   2"]
    assert [p["prediction"] for p in predictions] == expected["prediction"].numpy().tolist()
    np.testing.assert_allclose(
        [p["scores"] for p in predictions], expected["scores"].numpy(), rtol=1e-5
    )


def test_image_bytes_errors_are_400(server: ServerProcess):
    bad_base64 = {"instances": [{"image_bytes": {"b64": "not base64!"}, "key": "1"}]}
    response = server.post("/v1/models/flowers:predict", json=bad_base64)
    assert response.status_code == 400
    assert "image_bytes" in response.json()["error"]
    assert "base64" in response.json()["error"]
    not_jpeg = {
        "instances": [{"image_bytes": {"b64": base64.b64encode(b"GIF").decode()}, "key": "1"}]
    }
    response = server.post("/v1/models/flowers:predict", json=not_jpeg)
    assert response.status_code == 400
    assert "rejected the input" in response.json()["error"]
    missing_key = {"instances": [{"image_bytes": {"b64": base64.b64encode(jpeg(1)).decode()}}]}
    response = server.post("/v1/models/flowers:predict", json=missing_key)
    assert response.status_code == 400
    assert "missing input 'key'" in response.json()["error"]
    good = {"instances": [{"image_bytes": {"b64": base64.b64encode(jpeg(1)).decode()}, "key": "1"}]}
    assert server.post("/v1/models/flowers:predict", json=good).status_code == 200


def test_image_bytes_over_v2_binary(server: ServerProcess, models):
    images = np.array([jpeg(4), jpeg(5), jpeg(6)], dtype=object)
    keys = np.array([b"a", b"b", b"c"], dtype=object)
    inputs = [("image_bytes", images, "BYTES", True), ("key", keys, "BYTES", False)]
    result = triton_infer(server, "flowers", inputs)
    expected = models["flowers"].serve(tf.constant(list(images)), tf.constant(list(keys)))
    np.testing.assert_allclose(result.as_numpy("scores"), expected["scores"].numpy(), rtol=1e-5)
    assert result.get_output("prediction")["datatype"] == "INT64"
    assert result.as_numpy("key").tolist() == [b"a", b"b", b"c"]


def test_metadata_lists_the_signature(server: ServerProcess):
    meta = server.get("/v2/models/flowers").json()
    assert meta["platform"] == "tensorflow"
    assert meta["inputs"] == [
        {"name": "image_bytes", "datatype": "BYTES", "shape": [-1]},
        {"name": "key", "datatype": "BYTES", "shape": [-1]},
    ]
    outputs = {spec["name"]: spec for spec in meta["outputs"]}
    assert outputs["scores"] == {"name": "scores", "datatype": "FP32", "shape": [-1, CLASSES]}
    assert outputs["prediction"]["datatype"] == "INT64"
    assert outputs["key"]["datatype"] == "BYTES"


def calc_body(x, y) -> dict:
    return {
        "inputs": [
            {"name": name, "datatype": "FP32", "shape": list(np.shape(a)), "data": a}
            for name, a in (("x", x), ("y", y))
        ]
    }


def test_version_directories(server: ServerProcess):
    meta = server.get("/v2/models/calc").json()
    assert sorted(meta["versions"]) == ["1", "2"]
    assert server.get("/v2/models/calc/versions/1").status_code == 200
    x, y = [[1.0, 2.0, 3.0]], [[1.0, 1.0, 1.0]]
    sums = {}
    for path in ("/v2/models/calc/versions/1/infer", "/v2/models/calc/versions/2/infer"):
        response = server.post(path, json=calc_body(x, y))
        assert response.status_code == 200, response.text
        sums[path] = {o["name"]: o["data"] for o in response.json()["outputs"]}["sum"]
    assert sums["/v2/models/calc/versions/1/infer"] == [2.0, 3.0, 4.0]
    assert sums["/v2/models/calc/versions/2/infer"] == [4.0, 6.0, 8.0]
    default = server.post("/v2/models/calc/infer", json=calc_body(x, y)).json()
    assert default["model_version"] == "2"
    v1 = server.post("/v1/models/calc:predict", json={"instances": [{"x": x[0], "y": y[0]}]})
    assert v1.json() == {"predictions": [{"sum": [4.0, 6.0, 8.0], "prod": [2.0, 4.0, 6.0]}]}


def test_v1_columnar_format_and_signature_name(server: ServerProcess):
    columnar = {"inputs": {"x": [[1, 2, 3], [0, 0, 1]], "y": [[1, 1, 1], [2, 2, 2]]}}
    response = server.post("/v1/models/calc:predict", json=columnar)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "outputs": {
            "sum": [[4.0, 6.0, 8.0], [4.0, 4.0, 6.0]],
            "prod": [[2.0, 4.0, 6.0], [0, 0, 4.0]],
        }
    }
    single = {"signature_name": "scale", "inputs": [[1, 2, 3]]}
    assert server.post("/v1/models/calc:predict", json=single).json() == {
        "outputs": [[20.0, 40.0, 60.0]]
    }
    rows = {"signature_name": "scale", "instances": [[1, 2, 3], [0, 0, 0.5]]}
    assert server.post("/v1/models/calc:predict", json=rows).json() == {
        "predictions": [[20.0, 40.0, 60.0], [0.0, 0.0, 10.0]]
    }


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_v2_binary_multi_input_with_tritonclient(server: ServerProcess, protocol: str):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    y = rng.standard_normal((4, 3)).astype(np.float32)
    inputs = [("y", y, "FP32", True), ("x", x, "FP32", True)]
    result = triton_infer(server, "calc", inputs, {"prod": True}, protocol, model_version="1")
    np.testing.assert_allclose(result.as_numpy("prod"), x * y, rtol=1e-6)
    assert result.as_numpy("sum") is None


def test_keras_file(server: ServerProcess, models):
    rows = np.random.default_rng(2).standard_normal((3, 4)).astype(np.float32)
    expected = models["keras"](rows).numpy()
    body = {
        "inputs": [
            {"name": "features", "datatype": "FP32", "shape": [3, 4], "data": rows.ravel().tolist()}
        ]
    }
    response = server.post("/v2/models/keras/infer", json=body)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["name"] == "output-0"
    np.testing.assert_allclose(np.reshape(output["data"], (3, 3)), expected, rtol=1e-5)
    v1 = server.post("/v1/models/keras:predict", json={"instances": rows.tolist()})
    np.testing.assert_allclose(v1.json()["predictions"], expected, rtol=1e-5)
    meta = server.get("/v2/models/keras").json()
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]


def test_bad_inputs_are_400_naming_the_problem(server: ServerProcess):
    x, y = [[1.0, 2.0, 3.0]], [[1.0, 1.0, 1.0]]
    wrong_dtype = calc_body(x, y)
    wrong_dtype["inputs"][1] = {"name": "y", "datatype": "BYTES", "shape": [1], "data": ["a"]}
    wrong_shape = calc_body([[1.0, 2.0]], [[1.0, 2.0]])
    unknown = calc_body(x, y)
    unknown["inputs"][0]["name"] = "z"
    cases = [
        (
            "/v2/models/calc/infer",
            wrong_dtype,
            "input 'y': signature 'serving_default' takes FP32, got BYTES",
        ),
        (
            "/v2/models/calc/infer",
            wrong_shape,
            "does not fit signature 'serving_default' shape [-1, 3]",
        ),
        (
            "/v2/models/calc/infer",
            unknown,
            "unknown input 'z'; signature 'serving_default' takes: x, y",
        ),
        (
            "/v2/models/calc/infer",
            {**calc_body(x, y), "parameters": {"signature_name": "nope"}},
            "no signature 'nope'",
        ),
        ("/v1/models/calc:predict", {"instances": [[1, 2, 3]]}, "takes several inputs (x, y)"),
        (
            "/v1/models/calc:predict",
            {"instances": [{"x": x[0], "y": y[0]}], "inputs": {}},
            "exactly one of",
        ),
        (
            "/v1/models/calc:predict",
            {"instances": [{"x": x[0], "y": y[0]}, {"x": x[0]}]},
            "instance 1 lacks input 'y'",
        ),
        ("/v1/models/calc:predict", {"instances": [{"x": [1.5, 2, "a"], "y": y[0]}]}, "input 'x'"),
    ]
    for path, body, message in cases:
        response = server.post(path, json=body)
        assert response.status_code == 400, (message, response.text)
        assert message in response.json()["error"]
    assert server.post("/v2/models/calc/infer", json=calc_body(x, y)).status_code == 200


def test_signature_flag_on_a_plain_saved_model_dir(models):
    process = start_server(
        "tensorflow", models["root"] / "calc" / "1", "--model_name=scaler", "--signature_name=scale"
    )
    try:
        meta = process.get("/v2/models/scaler").json()
        assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]
        assert [spec["name"] for spec in meta["outputs"]] == ["output_0"]
        response = process.post("/v1/models/scaler:predict", json={"instances": [[1, 1, 1]]})
        assert response.json() == {"predictions": [[10.0, 10.0, 10.0]]}
    finally:
        process.stop()


@pytest.mark.parametrize("model", ["calc", "keras"])
def test_metadata_describes_what_infer_answers(server: ServerProcess, model: str):
    from tests.servers import assert_metadata_describes_infer

    rows = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    inputs = {
        "calc": [
            {"name": name, "shape": [2, 3], "datatype": "FP32", "data": rows} for name in "xy"
        ],
        "keras": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}],
    }[model]
    assert_metadata_describes_infer(server, model, inputs)


def test_finite_values_that_narrow_to_infinity_are_400(server: ServerProcess):
    """FP64 1e300 for a float32 signature would become infinity: V2 blamed the output (500)
    and V1 answered null. Both refuse it now, naming the input."""
    x, y = [[1e300, 1.0, 1.0]], [[1.0, 1.0, 1.0]]
    body = calc_body(x, y)
    for tensor in body["inputs"]:
        tensor["datatype"] = "FP64"
    v2 = server.post("/v2/models/calc/infer", json=body)
    assert v2.status_code == 400, v2.text
    message = "input 'x': signature 'serving_default' takes FP32, got FP64: values out of range"
    assert message in v2.json()["error"]
    v1 = server.post("/v1/models/calc:predict", json={"instances": [{"x": x[0], "y": y[0]}]})
    assert v1.status_code == 400, v1.text
    assert "input 'x'" in v1.json()["error"]
    assert "values out of range" in v1.json()["error"]
    # Infinity sent as such (binary) is the client's choice and still reaches the model.
    sent = np.array([[np.inf, 1.0, 1.0]])
    result = triton_infer(
        server,
        "calc",
        [("x", sent, "FP64", True), ("y", np.ones((1, 3)), "FP64", True)],
        {"sum": True},
    )
    assert result.as_numpy("sum")[0, 0] == np.inf
    fine = server.post(
        "/v1/models/calc:predict", json={"instances": [{"x": [3e38, 1, 1], "y": y[0]}]}
    )
    assert fine.status_code == 200, fine.text


@pytest.mark.parametrize("value", [["scale"], 5, {"name": "scale"}, True])
def test_signature_name_parameter_that_is_not_a_string_is_400(server: ServerProcess, value):
    body = {
        **calc_body([[1.0, 2.0, 3.0]], [[1.0, 1.0, 1.0]]),
        "parameters": {"signature_name": value},
    }
    response = server.post("/v2/models/calc/infer", json=body)
    assert response.status_code == 400, response.text
    expected = f"parameter 'signature_name' must be a string, got {type(value).__name__}"
    assert response.json()["error"] == expected


def test_b64_and_plain_strings_mix_in_one_input(server: ServerProcess):
    """TF Serving reads each string on its own, plain or {"b64": ...}: a column mixing
    non-ASCII bytes with text was refused as "ragged" (numpy cannot stack both)."""
    image = {"b64": base64.b64encode(jpeg(1)).decode()}
    raw_key = {"b64": base64.b64encode(b"\xff\x00k").decode()}
    rows = {
        "instances": [{"image_bytes": image, "key": raw_key}, {"image_bytes": image, "key": "2"}]
    }
    response = server.post("/v1/models/flowers:predict", json=rows)
    assert response.status_code == 200, response.text
    assert [p["key"] for p in response.json()["predictions"]] == [raw_key, "2"]
    columnar = {"inputs": {"image_bytes": [image, image], "key": ["2", raw_key]}}
    response = server.post("/v1/models/flowers:predict", json=columnar)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"]["key"] == ["2", raw_key]


def test_booleans_among_numbers_are_400_naming_the_input(server: ServerProcess):
    """numpy stacks [true, 2, 3] as [1, 2, 3]: TF Serving refuses a boolean for a number,
    and so does V2 here; V1 reached the model with a 1 nobody sent."""
    y = [1.0, 1.0, 1.0]
    bodies = [
        {"instances": [{"x": [True, 2, 3], "y": y}]},
        {"inputs": {"x": [[1.5, 2, False]], "y": [y]}},
        {"signature_name": "scale", "instances": [[1, 2, 3], [4, True, 6]]},
    ]
    for body in bodies:
        response = server.post("/v1/models/calc:predict", json=body)
        assert response.status_code == 400, response.text
        assert response.json()["error"] == (
            "input 'x': values mix booleans with numbers; send numbers only"
        )
    fine = server.post("/v1/models/calc:predict", json={"instances": [{"x": [1, 2, 3], "y": y}]})
    assert fine.status_code == 200, fine.text
