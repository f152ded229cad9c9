"""Train the benchmark models and write the request payloads.

Run with any Python that has scikit-learn and joblib (bench/run.sh uses the floor venv):
    python bench/fixtures.py [--work DIR]

Layout under DIR (default $BENCH_WORK or /tmp/modelport-bench):
    models/<model>/model.joblib           the served model dir (only the model file)
    payloads/<model>/v1-1.json            V1   {"instances": [[...]]}
    payloads/<model>/v2-1.json            V2   {"inputs": [{"name": "input-0", "shape": [1, F]...}]}
    payloads/<model>/v2-1000.json         V2 JSON, 1000 rows
    payloads/<model>/v2b-1000.bin         V2 binary tensor extension, 1000 rows (JSON header + raw
                                          little-endian FP32), header length in v2b-1000.hlen
    payloads/<model>/expected.json        {"v1-1": [...], "v2-1": [...], ...} in-process predictions

    payloads/<model>/rows-10000.npy       10,000 FP32 rows for the native-vs-accelerated table

Models: iris (LogisticRegression on iris, 4 features), rf20 (RandomForestClassifier,
100 trees, 20 synthetic features), xgb20 and lgb20 (XGBoost and LightGBM binary
classifiers, 100 trees, the same 20 features; saved as model.json / model.txt, trained only
with `--models` naming them and a Python that has xgboost / lightgbm: run.sh uses the
repo's .venv for them).
"""

import argparse
import json
import os

import joblib
import numpy as np
from sklearn.datasets import load_iris, make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

BATCH = 1000
IRIS_ROW = [6.9, 3.1, 5.4, 2.1]  # a virginica: class 2


def v1_body(x):
    return json.dumps({"instances": x.tolist()}, separators=(",", ":")).encode()


def v2_body(x):
    inp = {
        "name": "input-0",
        "shape": list(x.shape),
        "datatype": "FP32",
        # Short decimal text (as a client would send it); the server reads it as FP32.
        "data": x.ravel().tolist(),
    }
    return json.dumps({"inputs": [inp]}, separators=(",", ":")).encode()


def v2_binary_body(x):
    """Triton binary tensor extension: JSON header, then the raw tensor bytes."""
    raw = np.ascontiguousarray(x, dtype="<f4").tobytes()
    header = {
        "inputs": [
            {
                "name": "input-0",
                "shape": list(x.shape),
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        # Binary answers without naming outputs: servers name the default output differently
        # (output-0, predict), and a server may refuse a requested name it does not know.
        "parameters": {"binary_data_output": True},
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    return head + raw, len(head)


class Saved:
    """A model as the servers see it: `save(directory)` writes its file, `predict(rows)` is
    what a server answers by default (`predict` for scikit-learn, the booster's own
    prediction for XGBoost and LightGBM)."""

    def __init__(self, save, predict):
        self.save, self.predict = save, predict


def sklearn_model(model):
    return Saved(lambda d: joblib.dump(model, os.path.join(d, "model.joblib")), model.predict)


def write(work, name, model, single, batch, correctness):
    mdir = os.path.join(work, "models", name)
    pdir = os.path.join(work, "payloads", name)
    os.makedirs(mdir, exist_ok=True)
    os.makedirs(pdir, exist_ok=True)
    for old in os.listdir(mdir):  # servers refuse a dir with more than one model file
        os.remove(os.path.join(mdir, old))
    model.save(mdir)
    np.save(os.path.join(pdir, "rows-10000.npy"), np.asarray(correctness, dtype=np.float32))

    one = np.asarray([single], dtype=np.float64)
    many = np.asarray(batch, dtype=np.float64)
    bodies = {
        "v1-1": v1_body(one),
        "v2-1": v2_body(one),
        "v1-1000": v1_body(many),
        "v2-1000": v2_body(many),
    }
    expected = {
        "v1-1": model.predict(one).tolist(),
        "v1-1000": model.predict(many).tolist(),
        # V2 payloads carry FP32: predict on what the server will see.
        "v2-1": model.predict(one.astype(np.float32)).tolist(),
        "v2-1000": model.predict(many.astype(np.float32)).tolist(),
    }
    expected["v2b-1000"] = expected["v2-1000"]
    for key, body in bodies.items():
        with open(os.path.join(pdir, f"{key}.json"), "wb") as f:
            f.write(body)
    body, hlen = v2_binary_body(many)
    with open(os.path.join(pdir, "v2b-1000.bin"), "wb") as f:
        f.write(body)
    with open(os.path.join(pdir, "v2b-1000.hlen"), "w") as f:
        f.write(str(hlen))
    with open(os.path.join(pdir, "expected.json"), "w") as f:
        json.dump(expected, f)
    print(f"fixtures: {name} -> {mdir}, single-row prediction {expected['v1-1']}")


def xgboost_model(x, y):
    import xgboost as xgb

    params = {"objective": "binary:logistic", "max_depth": 6, "nthread": 1, "seed": 0}
    booster = xgb.train(params, xgb.DMatrix(x, label=y), num_boost_round=100)
    return Saved(
        lambda d: booster.save_model(os.path.join(d, "model.json")),
        lambda rows: booster.predict(xgb.DMatrix(rows)),
    )


def lightgbm_model(x, y):
    import lightgbm as lgb

    params = {"objective": "binary", "num_threads": 1, "verbose": -1, "seed": 0}
    booster = lgb.train(params, lgb.Dataset(x, label=y), num_boost_round=100)
    return Saved(
        lambda d: booster.save_model(os.path.join(d, "model.txt")),
        lambda rows: booster.predict(rows, num_threads=1),
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=os.environ.get("BENCH_WORK", "/tmp/modelport-bench"))
    ap.add_argument("--models", default="iris,rf20", help="comma list: iris,rf20,xgb20,lgb20")
    args = ap.parse_args()
    models = args.models.split(",")
    rng = np.random.default_rng(0)

    x, y = load_iris(return_X_y=True)
    if "iris" in models:
        lr = LogisticRegression(max_iter=1000).fit(x, y)
        batch = x[rng.integers(0, len(x), BATCH)]
        around = x[rng.integers(0, len(x), 10_000)] + rng.normal(0, 0.3, (10_000, 4))
        write(args.work, "iris", sklearn_model(lr), IRIS_ROW, batch, around)

    xs, ys = make_classification(
        n_samples=5000 + BATCH, n_features=20, n_informative=10, random_state=0
    )
    xs = np.round(xs, 4)
    train = slice(BATCH, None)
    # Correctness rows: the data's rows, jittered (the trained models are unchanged).
    held = xs[rng.integers(0, len(xs), 10_000)] + rng.normal(0, 0.1, (10_000, 20))
    makers = {
        "rf20": lambda: sklearn_model(
            RandomForestClassifier(n_estimators=100, random_state=0).fit(xs[train], ys[train])
        ),
        "xgb20": lambda: xgboost_model(xs[train], ys[train]),
        "lgb20": lambda: lightgbm_model(xs[train], ys[train]),
    }
    for name, make in makers.items():
        if name in models:
            write(args.work, name, make(), xs[0], xs[:BATCH], held)


if __name__ == "__main__":
    main()
