"""A test runtime that answers its inputs back (as `echo-<name>` outputs).

Served through `model-settings.json` (`"runtime": "tests.echo:EchoPredictor"`), it lets the
transport tests send every datatype (BYTES, BOOL, FP16...) without a framework. A request
parameter `sleep` (seconds) makes it slow, for drain and deadline tests; `started_file`
names a file it creates when the call starts, so a test knows the call is in flight;
`no_outputs` makes it answer with no outputs at all (a faulty model); `echo_parameters`
gives each output its input's parameters.
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson

from modelport.base.messages import InferRequest, InferResponse, Tensor
from modelport.base.model import Predictor
from modelport.base.tensors import select_outputs


def start_call(request: InferRequest) -> None:
    """The test parameters: create `started_file` (the call is in flight), then `sleep`."""
    marker = request.parameters.get("started_file")
    if marker:
        Path(marker).touch()
    delay = float(request.parameters.get("sleep", 0))
    if delay:
        time.sleep(delay)


class EchoPredictor(Predictor):
    runtime = "echo"
    extensions = (".echo",)

    def load(self) -> None:
        self.model_file()  # a model dir holds one `.echo` file, like any runtime's artifact

    def infer(self, request: InferRequest) -> InferResponse:
        start_call(request)
        if request.parameters.get("no_outputs"):  # a faulty model: an answer with nothing in it
            return InferResponse([])
        # `echo_parameters`: each output carries its input's parameters, as a pass-through
        # model that copies whole tensors does.
        keep = bool(request.parameters.get("echo_parameters"))
        outputs = [
            Tensor(
                f"echo-{tensor.name}",
                tensor.data,
                tensor.datatype,
                dict(tensor.parameters) if keep else {},
            )
            for tensor in request.inputs
        ]
        return InferResponse(select_outputs(outputs, request, self.name))


def echo_model(directory: Path, name: str = "echo", **settings: object) -> Path:
    """A model directory the echo runtime serves."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.echo").write_text("echo")
    doc = {"name": name, "runtime": "tests.echo:EchoPredictor", **settings}
    (directory / "model-settings.json").write_bytes(orjson.dumps(doc))
    return directory
