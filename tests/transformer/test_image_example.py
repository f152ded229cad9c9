"""The image transformer example end to end: the tiny colour model built by its train.py,
served by the PyTorch runtime, behind examples/image_transformer/transformer.py."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest

from tests.servers import start_server
from tests.transformer.components import start_component

pytest.importorskip("torch")
Image = pytest.importorskip("PIL.Image")  # the example's one extra dependency (test extra)
pytestmark = pytest.mark.heavy

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "image_transformer"


def png(colour: tuple[int, int, int], size: int = 24) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    import importlib.util

    spec = importlib.util.spec_from_file_location("image_example_train", EXAMPLE / "train.py")
    assert spec is not None and spec.loader is not None
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    return train.train(tmp_path_factory.mktemp("colors"))


@pytest.fixture(scope="module")
def predictor(model_dir):
    server = start_server("pytorch", model_dir, "--model_name=colors")
    yield server
    server.stop()


@pytest.mark.parametrize("protocol", ["v2", "v1"])
def test_images_in_labels_and_keys_out(predictor, model_dir, protocol):
    transformer = start_component(
        str(EXAMPLE / "transformer.py"),
        "--model_name=colors",
        f"--predictor_host=127.0.0.1:{predictor.port}",
        f"--predictor_protocol={protocol}",
        f"--labels_file={model_dir / 'labels.txt'}",
    )
    try:
        body = {
            "instances": [
                {"image_bytes": {"b64": png((230, 20, 30))}, "key": "a"},
                {"image_bytes": {"b64": png((10, 220, 40), size=40)}, "key": 7},
                {"image_bytes": {"b64": png((30, 20, 240))}, "key": "c"},
            ]
        }
        response = transformer.post("/v1/models/colors:predict", json=body)
        assert response.status_code == 200, response.text
        assert response.json() == {
            "predictions": [
                {"label": "red", "index": 0, "key": "a"},
                {"label": "green", "index": 1, "key": 7},
                {"label": "blue", "index": 2, "key": "c"},
            ]
        }
        bad = transformer.post(
            "/v1/models/colors:predict",
            json={"instances": [{"image_bytes": {"b64": base64.b64encode(b"no").decode()}}]},
        )
        assert bad.status_code == 400
        assert "instance 0: not a decodable image" in bad.json()["error"]
        missing = transformer.post("/v1/models/colors:predict", json={"instances": [{"key": 1}]})
        assert missing.status_code == 400
        assert missing.json() == {"error": "instance 0: missing image_bytes.b64"}
    finally:
        transformer.stop()
