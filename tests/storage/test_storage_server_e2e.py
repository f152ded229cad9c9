"""A model server started with ``--model_dir s3://...`` downloads through modelport.storage."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from tests.servers import free_port, start_server
from tests.storage.support import SECRET

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("modelport.runtimes.sklearn.__main__") is None,
    reason="the sklearn runtime's entry point is not there yet",
)


def test_sklearn_server_from_s3_prefix(s3_env, s3_admin, bucket, tmp_path):
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    joblib.dump(LogisticRegression(max_iter=1000, random_state=0).fit(x, y), tmp_path / "m.joblib")
    s3_admin.upload_file(str(tmp_path / "m.joblib"), bucket, "models/iris/model.joblib")
    s3_admin.put_object(Bucket=bucket, Key="models/iris-v2/model.joblib", Body=b"not a model")

    server = start_server("sklearn", f"s3://{bucket}/models/iris", "--model_name=iris")
    try:
        assert server.get("/v2/health/ready").status_code == 200
        res = server.post("/v1/models/iris:predict", json={"instances": [[6.8, 2.8, 4.8, 1.4]]})
        assert res.status_code == 200, res.text
        assert res.json() == {"predictions": [1]}
    finally:
        server.stop()


def failed_start(model_dir: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """Start the sklearn server on `model_dir`, which must fail to download: exit status 1,
    no traceback. Returns the run and its last stderr line."""
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelport.runtimes.sklearn",
            f"--model_dir={model_dir}",
            "--model_name=iris",
            f"--http_port={free_port()}",
            "--host=127.0.0.1",
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
    )
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    return res, res.stderr.strip().splitlines()[-1]


def test_model_dir_download_failure_is_one_clear_line(s3_env, bucket):
    """A --model_dir the server cannot download ends in one line on stderr, not a traceback."""
    res, last = failed_start(f"s3://{bucket}/models/missing")
    assert last.startswith("error: cannot download --model_dir: not found: s3://"), last
    assert f"{bucket}/models/missing" in last and SECRET not in res.stderr


@pytest.mark.parametrize(
    ("model_dir", "endpoint"),
    [("s3://bucket/models/iris", "minio:9000"), ("http://[::1/model.joblib", None)],
    ids=["endpoint-without-scheme", "invalid-url"],
)
def test_model_dir_config_error_is_one_clear_line(s3_env, monkeypatch, model_dir, endpoint):
    """A malformed URL or AWS_ENDPOINT_URL raised a ValueError the server did not catch: a
    traceback instead of a line naming the setting."""
    if endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    _, last = failed_start(model_dir)
    assert last.startswith("error: cannot download --model_dir: config: "), last
    assert (endpoint or "invalid URL") in last, last
