"""Native vs accelerated answers of each bench model on 10,000 rows (run by bench.py).

Run with modelport's venv: python bench/correctness.py --work DIR --models iris,rf20
For each model under DIR/models, the modelport runtime loads it, converts and verifies it
exactly as the server does (modelport.base.accelerate), then both engines answer the
10,000 FP32 rows of DIR/payloads/<model>/rows-10000.npy, whatever batch sizes the timings
would give ONNX Runtime: the share of identical labels (`predict`) and the largest score
difference (`predict_proba`, or the booster's raw probabilities). Prints one JSON line.
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from modelport.base.accelerate import Accelerator
from modelport.base.model import ModelSettings, runtime_class

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench import MODEL_RUNTIME  # noqa: E402


def compare(work: str, model: str) -> dict[str, object]:
    predictor = runtime_class(MODEL_RUNTIME[model])(
        ModelSettings(model, Path(work, "models", model))
    )
    predictor.load()
    conversion = predictor.conversion()
    if conversion is None:
        return {"engine": "native", "status": "no ONNX conversion"}
    accelerator = Accelerator(
        model,
        predictor.model_file(),
        conversion,
        predictor.probe_rows,
        lambda name, rows: np.asarray(predictor.all_outputs()[name](rows)),
        predictor.default_output(),
        predictor.settings.parameters,
    )
    accelerator.run()
    engine = accelerator.engine
    row: dict[str, object] = {"engine": accelerator.engine_name, "status": accelerator.status}
    if engine is None:
        return row
    rows = np.load(Path(work, "payloads", model, "rows-10000.npy"))
    outputs = predictor.all_outputs()
    scores = "predict_proba" if "predict_proba" in engine.dtypes else "raw"
    native_labels = np.asarray(outputs["predict"](rows))
    native_scores = np.asarray(outputs[scores](rows))
    labels, accelerated = engine.run(rows, ["predict", scores])
    row["rows"] = len(rows)
    row["identical_labels"] = float(np.mean(native_labels == labels))
    row["max_score_diff"] = float(np.max(np.abs(native_scores - accelerated)))
    row["score_output"] = scores
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=os.environ.get("BENCH_WORK", "/tmp/modelport-bench"))
    ap.add_argument("--models", default="iris,rf20,xgb20,lgb20")
    args = ap.parse_args()
    tempfile.tempdir = tempfile.mkdtemp(prefix="modelport-correctness-")  # a fresh cache
    table = {}
    for model in args.models.split(","):
        if Path(args.work, "models", model).is_dir():
            try:
                table[model] = compare(args.work, model)
            except Exception as exc:  # one broken model must not hide the others
                table[model] = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(table))


if __name__ == "__main__":
    main()
