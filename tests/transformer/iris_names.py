"""A transformer with real pre/post-processing, run by the tests as a module: named iris
measurements in (async preprocess), class names out (sync postprocess), headers seen."""

from __future__ import annotations

import asyncio
from typing import Any

from modelport.base.messages import InferRequest, InferResponse
from modelport.base.server import main
from modelport.base.transformer import Transformer

FIELDS = ("sepal_length", "sepal_width", "petal_length", "petal_width")
NAMES = ("setosa", "versicolor", "virginica")


class IrisNames(Transformer):
    async def preprocess(self, request: Any, headers: dict[str, str]) -> Any:
        await asyncio.sleep(0)  # an async hook is awaited on the loop
        if isinstance(request, InferRequest):
            return request
        return {"instances": [[row[f] for f in FIELDS] for row in request["instances"]]}

    def postprocess(self, response: Any, headers: dict[str, str]) -> Any:
        if isinstance(response, InferResponse):
            return response
        return {
            "predictions": [NAMES[i] for i in response["predictions"]],
            "request_id": headers.get("x-request-id"),
        }


if __name__ == "__main__":
    main(IrisNames)
