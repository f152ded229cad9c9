"""Image transformer for the PyTorch runtime (KServe's image-transformer example, on modelport).

In:  `{"instances": [{"image_bytes": {"b64": "<PNG/JPEG, base64>"}, "key": "<any>"}]}` (V1).
Out: `{"predictions": [{"label": "red", "index": 0, "key": "<the same key>"}]}`.

`preprocess` decodes each image (Pillow), resizes it to the model's input, normalises it and
sends one NCHW float32 tensor to the predictor (V2: it travels in the binary extension; V1:
as `instances`). `postprocess` maps each row of scores to its label and echoes the `key` the
client sent (it declares `request`, so it receives the client's body).

Run: `python examples/image_transformer/transformer.py --model_name colors
--predictor_host 127.0.0.1:8081 --predictor_protocol v2 --labels_file DIR/labels.txt`
(see README.md for the one command that starts both processes).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import io
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from modelport.base.errors import InvalidInput, ModelLoadError
from modelport.base.messages import InferRequest, InferResponse, Tensor
from modelport.base.server import main
from modelport.base.transformer import Transformer

SIZE = 16
MEAN = np.array([0.5, 0.5, 0.5], dtype=np.float32).reshape(3, 1, 1)
STD = np.array([0.5, 0.5, 0.5], dtype=np.float32).reshape(3, 1, 1)


class ImageTransformer(Transformer):
    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--labels_file", required=True, help="one class label per line")

    def load(self) -> None:
        super().load()
        path = str(self.settings.parameters["labels_file"])
        try:
            with open(path, encoding="utf-8") as handle:
                self.labels = [line.strip() for line in handle if line.strip()]
        except OSError as exc:
            raise ModelLoadError(f"cannot read --labels_file {path}: {exc}") from None

    def preprocess(self, request: Any, headers: dict[str, str]) -> InferRequest:
        instances = request.get("instances") if isinstance(request, dict) else None
        if not isinstance(instances, list) or not instances:
            raise InvalidInput("expected {'instances': [{'image_bytes': {'b64': ...}}, ...]}")
        batch = np.stack([_image(index, item) for index, item in enumerate(instances)])
        return InferRequest(inputs=[Tensor("input-0", batch)])

    def postprocess(
        self, response: Any, headers: dict[str, str], request: Any = None
    ) -> dict[str, Any]:
        if isinstance(response, InferResponse):
            scores = response.outputs[0].data
        else:  # a V1 predictor
            scores = np.asarray(response["predictions"])
        indices = np.asarray(scores).argmax(axis=1)
        instances = request["instances"]
        return {
            "predictions": [
                {"label": self.labels[i], "index": int(i), "key": row.get("key")}
                for i, row in zip(indices.tolist(), instances, strict=True)
            ]
        }


def _image(index: int, item: Any) -> np.ndarray:
    """One instance's image as a normalised CHW float32 array; bad input is a 400."""
    encoded = item.get("image_bytes", {}).get("b64") if isinstance(item, dict) else None
    if not isinstance(encoded, str):
        raise InvalidInput(f"instance {index}: missing image_bytes.b64")
    try:
        image = Image.open(io.BytesIO(base64.b64decode(encoded, validate=True)))
        image = image.convert("RGB").resize((SIZE, SIZE))
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError) as exc:
        raise InvalidInput(f"instance {index}: not a decodable image: {exc}") from None
    pixels = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return (pixels - MEAN) / STD


if __name__ == "__main__":
    main(ImageTransformer)
