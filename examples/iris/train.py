"""Train the bundled example: LogisticRegression on iris, saved as model.joblib.

No pickle is committed (a pickle is tied to the scikit-learn version that wrote it), so
`make run` trains it on first use; `--force` retrains.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression


def train(out: Path) -> Path:
    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000, random_state=0).fit(x, y)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "model.joblib"
    joblib.dump(model, path)
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "model")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    if args.force or not (args.out / "model.joblib").exists():
        print(f"trained {train(args.out)}")
