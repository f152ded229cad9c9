"""Where modelport's time per request goes, layer by layer, in one process (no HTTP).

    .venv/bin/python bench/overhead.py [--model iris] [--payload v2-1] [--cpu 0] [-- FLAGS]

The wrk benchmark gives whole-request numbers; this takes one request apart. It loads the
fixture model (bench/fixtures.py) the way the server does, then times, as CPU µs per call
(process time, so other jobs on the machine barely matter), median of `--repeats`:

  floor           what the floor app does: orjson parse, np.asarray, model.predict, orjson dump
  model.predict   the framework call alone
  predictor       modelport's TabularPredictor.infer on a decoded request (same thread)
  + thread hop    the same through the predict pool, awaited from the event loop: the hop
                  issue 3 requires (blocking predicts never run on the event loop)
  + protocol      ServerState.v2_infer / v1_predict: decode, batcher, pool, encode, timers
  + ASGI          the whole app (middleware, fast path) called with ASGI messages

Each row's difference to the one above is what that layer costs. uvicorn's HTTP work is
not here: the floor pays it too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout without installing


def measure(
    layers: list[tuple[str, Callable[[], Awaitable[object]]]], calls: int, repeats: int
) -> list[float]:
    """Median CPU µs per call of each layer; layers take turns in every repeat, so a
    disturbance on this shared machine hits them alike instead of one layer's whole run."""

    async def run() -> list[float]:
        for _, call in layers:  # warm-up
            for _ in range(calls // 10):
                await call()
        samples: list[list[float]] = [[] for _ in layers]
        for _ in range(repeats):
            for index, (_, call) in enumerate(layers):
                started = time.process_time()
                for _ in range(calls):
                    await call()
                samples[index].append((time.process_time() - started) / calls * 1e6)
        return [statistics.median(layer) for layer in samples]

    return _LOOP.run_until_complete(run())


_LOOP: asyncio.AbstractEventLoop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="iris")
    ap.add_argument("--payload", default="v2-1", choices=["v1-1", "v2-1", "v2-1000"])
    ap.add_argument("--work", default=os.environ.get("BENCH_WORK", "/tmp/modelport-bench"))
    ap.add_argument("--calls", type=int, default=200, help="calls per layer per repeat")
    ap.add_argument("--repeats", type=int, default=41)
    ap.add_argument("--cpu", type=int, help="pin this process (and its threads) to one CPU")
    ap.add_argument("server_args", nargs="*", help="modelport flags, after --")
    args = ap.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})

    import joblib
    import numpy as np
    import orjson
    import uvloop

    from modelport.base.app import create_app
    from modelport.base.config import parse_config
    from modelport.base.dataplane import DataPlane
    from modelport.base.model import SERVING
    from modelport.base.protocol import v1, v2
    from modelport.base.repository import ModelRepository
    from modelport.runtimes.sklearn.model import SKLearnPredictor

    global _LOOP
    _LOOP = uvloop.new_event_loop()
    asyncio.set_event_loop(_LOOP)
    model_dir = os.path.join(args.work, "models", args.model)
    payload = Path(args.work, "payloads", args.model, f"{args.payload}.json")
    body = payload.read_bytes()
    argv = [
        f"--model_name={args.model}",
        f"--model_dir={model_dir}",
        "--access_log=false",
        *args.server_args,
    ]
    config = parse_config(argv, "overhead", SKLearnPredictor.add_arguments)
    repository = ModelRepository(config, SKLearnPredictor)
    repository.discover()
    _LOOP.run_until_complete(repository.load_all())
    dataplane = DataPlane(config, repository)
    app = create_app(config, repository, dataplane)
    entry = _LOOP.run_until_complete(repository.predictor(args.model, None))
    predictor = entry.predictor
    assert isinstance(predictor, SKLearnPredictor)
    SERVING.set()  # the accelerator converts now; wait for its verdict
    if predictor.accelerator is not None and predictor.accelerator.thread is not None:
        predictor.accelerator.thread.join()
    print(f"engine: {predictor.accelerator.engine_name if predictor.accelerator else 'native'}")
    model = joblib.load(os.path.join(model_dir, "model.joblib"))
    is_v1 = args.payload.startswith("v1")
    request = (
        v1.decode_request(orjson.loads(body))
        if is_v1
        else v2.decode_request(body, None, dataplane.limits)
    )
    features = request.inputs[0].data

    def floor() -> bytes:
        doc = orjson.loads(body)
        if is_v1:
            y = model.predict(np.asarray(doc["instances"], dtype=np.float64))
            return orjson.dumps({"predictions": y.tolist()})
        tensor = doc["inputs"][0]
        y = model.predict(np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"]))
        out = {"name": "output-0", "shape": list(y.shape), "datatype": "INT64", "data": y.tolist()}
        return orjson.dumps({"model_name": args.model, "outputs": [out]})

    path = f"/v1/models/{args.model}:predict" if is_v1 else f"/v2/models/{args.model}/infer"
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.start":
            assert message["status"] == 200, message

    def scope() -> dict[str, object]:
        return {"type": "http", "method": "POST", "path": path, "headers": headers}

    async def direct(function: Callable[[], object]) -> object:
        return function()

    async def codec_and_dataplane() -> object:
        if is_v1:
            return await dataplane.predict_v1(args.model, orjson.loads(body), {})
        decoded = v2.decode_request(body, None, dataplane.limits)
        response = await dataplane.infer(args.model, None, decoded)
        return v2.encode_response(response, decoded, args.model, None)

    layers: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("floor (parse, predict, dump)", lambda: direct(floor)),
        ("model.predict", lambda: direct(lambda: model.predict(features))),
        ("predictor.infer (engine above)", lambda: direct(lambda: predictor.infer(request))),
        ("+ thread hop (predict pool)", lambda: dataplane.pool.run(predictor.infer, request)),
        ("dataplane.infer (runner, timers)", lambda: dataplane.infer(args.model, None, request)),
        ("+ V2 codec (decode, encode)", codec_and_dataplane),
        (
            "(V2 decode alone)",
            lambda: direct(lambda: v2.decode_request(body, None, dataplane.limits)),
        ),
        ("+ ASGI app (middleware, fast path)", lambda: app(scope(), receive, send)),
    ]
    print(f"{args.model} {args.payload}: CPU µs per call, median of {args.repeats} rounds")
    print(f"{'layer':46s} {'µs':>8s} {'÷ floor':>8s} {'layer cost':>11s}")
    results = measure(layers, args.calls, args.repeats)
    floor_us = results[0]
    for index, ((label, _), us) in enumerate(zip(layers, results, strict=True)):
        step = f"{us - results[index - 1]:+.1f}" if index >= 2 else ""
        print(f"{label:46s} {us:8.1f} {us / floor_us:8.2f} {step:>11s}")
    dataplane.shutdown()


if __name__ == "__main__":
    main()
