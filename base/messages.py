"""Protocol-neutral request and response objects that predictors see.

Every wire format (V1 JSON, V2 JSON, V2 binary) is decoded into these and encoded back
from them in `modelport.base.protocol`, so a predictor never parses HTTP bodies. They are
plain slotted dataclasses: no validation framework on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelport.base.datatypes import from_numpy

Parameters = dict[str, Any]
# Request headers: a dict with lower-case names, or raw ASGI header pairs (decoded on use).
Headers = dict[str, str] | list[tuple[bytes, bytes]]


@dataclass(slots=True)
class Tensor:
    """A named tensor. `data` is an ndarray of the datatype's dtype (BYTES: object array)."""

    name: str
    data: np.ndarray
    datatype: str = ""
    parameters: Parameters = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.datatype:
            self.datatype = from_numpy(self.data.dtype)

    @property
    def shape(self) -> list[int]:
        return list(self.data.shape)


@dataclass(slots=True)
class RequestedOutput:
    """An output the client asked for by name, with its parameters (e.g. binary_data)."""

    name: str
    parameters: Parameters = field(default_factory=dict)


@dataclass(slots=True)
class InferRequest:
    """One inference call, whatever protocol carried it."""

    inputs: list[Tensor]
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)
    outputs: list[RequestedOutput] = field(default_factory=list)
    # The incoming request's headers (see `headers`): a dict, or the raw ASGI header pairs,
    # decoded only if something reads them (most predictors never do).
    raw_headers: Headers | None = None

    @property
    def headers(self) -> dict[str, str]:
        """The incoming request's headers (lower-case names) or gRPC metadata, for
        components that forward them (transformers); never written to the wire."""
        headers = self.raw_headers
        if headers is None:
            headers = self.raw_headers = {}
        elif isinstance(headers, list):
            headers = self.raw_headers = {
                key.decode("latin-1"): value.decode("latin-1") for key, value in headers
            }
        return headers

    @headers.setter
    def headers(self, value: dict[str, str]) -> None:
        self.raw_headers = value

    @property
    def content_type(self) -> str | None:
        """`pd` or `np` (OIP request-level content type), when the client set one."""
        return self.parameters.get("content_type")

    @property
    def requested_output_names(self) -> list[str]:
        return [output.name for output in self.outputs]


@dataclass(slots=True)
class InferResponse:
    """The outputs of one inference call; model name and version are added by the server."""

    outputs: list[Tensor]
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)
    # Set by the data plane: the model and version that answered.
    model_name: str = ""
    model_version: str | None = None


@dataclass(slots=True)
class TensorSpec:
    """A tensor in model metadata: name, datatype and shape (-1 for any size)."""

    name: str
    datatype: str
    shape: list[int]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape}
