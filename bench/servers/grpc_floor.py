"""The gRPC floor: grpc.aio's own cost per call, with (almost) no work behind it.

A `grpc.aio` server (the same server KServe's and modelport's gRPC endpoints run) whose
ModelInfer answers from a cache keyed by the request's bytes: the first call with a given
body is parsed, predicted with the scikit-learn model and serialized; every later call
with the same bytes is one dict lookup. The benchmark repeats one body per cell, so what
the floor's req/s measures is the transport (HTTP/2, the completion queue, the hand-off to
the event loop), a bound that no server built on grpc.aio can beat on the same CPU.

usage: python grpc_floor.py --model_dir DIR --grpc_port PORT [--aio_loop asyncio|uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

import grpc
import joblib
import numpy as np

from modelport.base.grpc import inference_pb2 as pb

SERVICE = "inference.GRPCInferenceService"


def answer(model: Any, body: bytes) -> bytes:
    """The OIP answer to one ModelInferRequest (FP32 input, typed or raw; INT64 labels)."""
    request = pb.ModelInferRequest.FromString(body)
    tensor = request.inputs[0]
    if request.raw_input_contents:
        values = np.frombuffer(request.raw_input_contents[0], "<f4")
    else:
        values = np.asarray(tensor.contents.fp32_contents, np.float32)
    labels = model.predict(values.reshape(list(tensor.shape))).astype(np.int64)
    response = pb.ModelInferResponse(model_name=request.model_name, id=request.id)
    output = response.outputs.add(name="output-0", datatype="INT64", shape=list(labels.shape))
    output.contents.int64_contents.extend(labels.tolist())
    return response.SerializeToString()


async def serve(model: Any, port: int) -> None:
    cache: dict[bytes, bytes] = {}

    async def model_infer(body: bytes, context: Any) -> bytes:
        reply = cache.get(body)
        if reply is None:
            reply = cache[body] = answer(model, body)
        return reply

    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", 64 << 20),
            ("grpc.max_send_message_length", 64 << 20),
        ]
    )
    handler = grpc.unary_unary_rpc_method_handler(model_infer)  # bytes in, bytes out
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(SERVICE, {"ModelInfer": handler})]
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model_dir", required=True)
    ap.add_argument("--grpc_port", type=int, required=True)
    ap.add_argument("--aio_loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = ap.parse_args()
    model = joblib.load(os.path.join(args.model_dir, "model.joblib"))
    if args.aio_loop == "uvloop":
        import uvloop

        uvloop.install()
    asyncio.run(serve(model, args.grpc_port))


if __name__ == "__main__":
    main()
