"""The floor: a raw ASGI app (no framework) on uvicorn + uvloop + httptools.

It reads the body, parses it (orjson, or the binary tensor extension), calls
model.predict and writes JSON: the least work a Python HTTP model server can do, so
its req/s is the practical limit for Python serving on this CPU.
Env: MODEL_DIR (holds model.joblib, or model.json for XGBoost, model.txt for LightGBM),
MODEL_NAME; FLOOR_ENGINE=onnx (`floor-onnx`) predicts with the ONNX graph modelport's
runtime converts the model to, in ONNX Runtime with modelport's session settings (this
needs modelport's venv), else the framework predicts (`floor`). FLOOR_CHECKED=1
(`floor-onnx-checked`) adds to a V2 request only what the issues require of every answer:
modelport's own V2 codec (decoding with its checks, a complete OIP answer), KServe's
latency histograms and the request metrics, and the access line; no batching, no data
plane, no guards. It shows how much of the gap between floor-onnx and modelport those
alone take. Any POST path: V1
{"instances": ...} or V2 {"inputs": [...]} (JSON data, or binary_data_size with an
Inference-Header-Content-Length header); any GET answers 200 (readiness).
"""

import os

import joblib
import numpy as np
import orjson

NAME = os.environ.get("MODEL_NAME", "model")
MODEL_DIR = os.environ["MODEL_DIR"]


def native_predict():
    """The framework's own predict, as its server calls it (one thread)."""
    if os.path.exists(os.path.join(MODEL_DIR, "model.json")):
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(os.path.join(MODEL_DIR, "model.json"))
        booster.set_param({"nthread": 1})
        return lambda x: booster.predict(xgb.DMatrix(x, nthread=1))
    if os.path.exists(os.path.join(MODEL_DIR, "model.txt")):
        import lightgbm as lgb

        booster = lgb.Booster(model_file=os.path.join(MODEL_DIR, "model.txt"))
        return lambda x: booster.predict(x, num_threads=1)
    return joblib.load(os.path.join(MODEL_DIR, "model.joblib")).predict


def onnx_predict():
    """modelport's converted graph for the default output, run as modelport runs it."""
    from pathlib import Path

    from modelport.base.model import ModelSettings
    from modelport.base.onnxgraph import Engine

    kinds = {
        ".json": "modelport.runtimes.xgboost.model:XGBoostPredictor",
        ".txt": "modelport.runtimes.lightgbm.model:LightGBMPredictor",
        ".joblib": "modelport.runtimes.sklearn.model:SKLearnPredictor",
    }
    path = next(p for p in (Path(MODEL_DIR, f"model{s}") for s in kinds) if p.exists())
    module, _, cls = kinds[path.suffix].partition(":")
    predictor = getattr(__import__(module, fromlist=[cls]), cls)(
        ModelSettings(NAME, Path(MODEL_DIR))
    )
    predictor.load()
    conversion = predictor.conversion()
    engine = Engine(conversion.convert(), conversion, 1)
    output = conversion.outputs[predictor.default_output()]
    dtype = predictor.all_outputs()[predictor.default_output()](
        np.zeros((1, predictor.n_features), dtype=np.float32)
    ).dtype
    session, name, kind = engine.session, engine.input, conversion.input_dtype

    def predict(x):
        y = np.asarray(output(session.run(None, {name: x.astype(kind, copy=False)})))
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        return y.astype(dtype, copy=False)

    return predict


PREDICT = onnx_predict() if os.environ.get("FLOOR_ENGINE") == "onnx" else native_predict()
READY = orjson.dumps({"name": NAME, "ready": True})
JSON_HEADERS = [(b"content-type", b"application/json")]
DTYPES = {"FP32": "<f4", "FP64": "<f8", "INT64": "<i8", "INT32": "<i4"}


def v2_output(y, binary):
    dtype = "INT64" if y.dtype.kind in "iu" else "FP64"
    out = {"name": "output-0", "shape": list(y.shape), "datatype": dtype}
    if not binary:
        out["data"] = y.tolist()
        return orjson.dumps({"model_name": NAME, "outputs": [out]}), JSON_HEADERS
    raw = y.astype(DTYPES[dtype]).tobytes()
    out["parameters"] = {"binary_data_size": len(raw)}
    head = orjson.dumps({"model_name": NAME, "outputs": [out]})
    headers = [
        (b"content-type", b"application/octet-stream"),
        (b"inference-header-content-length", str(len(head)).encode()),
    ]
    return head + raw, headers


def infer(body, header_len):
    if header_len is not None:  # binary tensor extension: JSON header + raw tensors
        req = orjson.loads(body[:header_len])
        inp = req["inputs"][0]
        x = np.frombuffer(body, DTYPES[inp["datatype"]], offset=header_len).reshape(inp["shape"])
        binary = bool((req.get("parameters") or {}).get("binary_data_output", False))
        for out in req.get("outputs") or []:
            binary = bool((out.get("parameters") or {}).get("binary_data", binary))
        return v2_output(PREDICT(x), binary)
    req = orjson.loads(body)
    if "instances" in req:  # V1
        y = PREDICT(np.asarray(req["instances"], dtype=np.float64))
        return orjson.dumps({"predictions": y.tolist()}), JSON_HEADERS
    inp = req["inputs"][0]  # V2 JSON, first input only
    x = np.asarray(inp["data"], dtype=np.float32).reshape(inp["shape"])
    return v2_output(PREDICT(x), False)


async def reply(send, status, body, headers=JSON_HEADERS):
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def plain_app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["method"] != "POST":
        return await reply(send, 200, READY)
    chunks, more = [], True
    while more:
        msg = await receive()
        chunks.append(msg.get("body", b""))
        more = msg.get("more_body", False)
    header_len = None
    for key, value in scope["headers"]:
        if key == b"inference-header-content-length":
            header_len = int(value)
    try:
        body, headers = infer(b"".join(chunks), header_len)
    except Exception as e:  # any bad request is a 400
        return await reply(send, 400, orjson.dumps({"error": str(e)}))
    await reply(send, 200, body, headers)


def checked_app():
    """`floor-onnx-checked`: V2 JSON requests through modelport's codec, metrics and access
    line (V1 and binary requests as the plain floor)."""
    import time

    from modelport.base import metrics
    from modelport.base.logs import AccessLog
    from modelport.base.messages import InferResponse, Tensor
    from modelport.base.protocol import v2

    plane = metrics.process_metrics()
    limits = v2.Limits(64, 1 << 28)
    timers = [
        family.labels(NAME) for family in (plane.preprocess, plane.predict, plane.postprocess)
    ]
    access = AccessLog()
    global infer
    plain_infer = infer

    def checked_infer(body, header_len):
        if header_len is not None or b'"instances"' in body:
            return plain_infer(body, header_len)
        started = time.perf_counter()
        request = v2.decode_request(body, None, limits)  # 400s are this floor's bare 400
        decoded = time.perf_counter()
        y = PREDICT(request.inputs[0].data)
        predicted = time.perf_counter()
        datatype = "INT64" if y.dtype.kind in "iu" else "FP64"
        answer = InferResponse([Tensor("output-0", y, datatype)], id=request.id)
        payload, _ = v2.encode_response(answer, request, NAME, None)
        timers[0].observe(decoded - started)
        timers[1].observe(predicted - decoded)
        timers[2].observe(time.perf_counter() - predicted)
        return payload, JSON_HEADERS

    infer = checked_infer

    async def observed(scope, receive, send):
        started = time.perf_counter()
        await plain_app(scope, receive, send)
        if scope["type"] != "http" or scope["method"] != "POST":
            return
        elapsed = time.perf_counter() - started
        plane.observe_request(NAME, "v2", "infer", 200, elapsed)
        access.write(
            {
                "method": "POST",
                "path": scope["path"],
                "status": 200,
                "duration_ms": round(elapsed * 1000, 3),
                "request_id": None,
                "model": NAME,
            }
        )

    return observed


app = checked_app() if os.environ.get("FLOOR_CHECKED") else plain_app
