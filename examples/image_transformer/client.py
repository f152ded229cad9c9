"""Send the running example one red and one blue image: `python client.py [URL]`."""

from __future__ import annotations

import base64
import io
import json
import sys

import httpx
from PIL import Image


def png(colour: tuple[int, int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def request() -> dict:
    return {
        "instances": [
            {"image_bytes": {"b64": png((220, 30, 40))}, "key": "first"},
            {"image_bytes": {"b64": png((20, 40, 230))}, "key": "second"},
        ]
    }


if __name__ == "__main__":
    url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080"
    answer = httpx.post(f"{url}/v1/models/colors:predict", json=request(), timeout=30)
    print(answer.status_code, json.dumps(answer.json(), indent=2))
