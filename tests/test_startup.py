"""Start-up behaviour: model discovery errors, CLI usage errors, import hygiene."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.models import IRIS_ROWS, iris_logistic
from tests.servers import start_server


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "modelport.runtimes.sklearn",
            "--http_port=0",
            "--grpc_port=0",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_two_model_files_is_a_clear_error(tmp_path):
    iris_logistic(tmp_path, "a.joblib")
    iris_logistic(tmp_path, "b.pkl")
    (tmp_path / ".hidden.joblib").write_bytes(b"ignored")
    (tmp_path / "README.md").write_text("unrelated files are ignored")
    result = run_cli(f"--model_dir={tmp_path}")
    assert result.returncode != 0
    assert "several model files" in result.stderr
    assert "a.joblib" in result.stderr and "b.pkl" in result.stderr
    assert "--model_file" in result.stderr


def test_model_file_flag_picks_one(serve, tmp_path):
    iris_logistic(tmp_path, "a.joblib")
    (tmp_path / "b.pkl").write_bytes(b"not a pickle")
    server = serve("sklearn", tmp_path, "--model_name=iris", "--model_file=a.joblib")
    response = server.post("/v1/models/iris:predict", json={"instances": IRIS_ROWS})
    assert response.json() == {"predictions": [1, 1]}


def test_no_model_file_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("no model here")
    result = run_cli(f"--model_dir={tmp_path}")
    assert result.returncode != 0
    assert "no model found" in result.stderr
    assert str(tmp_path) in result.stderr


def test_corrupt_model_file_names_file_and_reason(tmp_path):
    (tmp_path / "model.joblib").write_bytes(b"\x00garbage, not a joblib file")
    result = run_cli(f"--model_dir={tmp_path}")
    assert result.returncode != 0
    assert "model.joblib" in result.stderr
    assert "cannot load model file" in result.stderr


def test_missing_model_dir(tmp_path):
    result = run_cli(f"--model_dir={tmp_path / 'absent'}")
    assert result.returncode != 0
    assert "does not exist" in result.stderr


def test_unknown_flag_is_a_usage_error():
    result = run_cli("--model_dri=/tmp")
    assert result.returncode == 2
    assert "unrecognized arguments: --model_dri=/tmp" in result.stderr
    assert "usage:" in result.stderr


def test_kserve_flags_are_accepted(serve, tmp_path):
    iris_logistic(tmp_path)
    # The exact argument style of KServe's ClusterServingRuntime for sklearn.
    server = serve("sklearn", tmp_path, "--model_name=iris", "--grpc_port=0", "--workers=1")
    assert server.get("/v2/models/iris/ready").status_code == 200


def test_readiness_is_false_until_loaded(tmp_path):
    iris_logistic(tmp_path)
    server = start_server("sklearn", tmp_path, "--model_name=iris", wait=False)
    try:
        server.wait_ready()
        assert server.get("/v2/health/ready").json() == {"ready": True}
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        (
            "modelport.base.server",
            ["sklearn", "torch", "tensorflow", "xgboost", "lightgbm", "mlflow", "pandas"],
        ),
        (
            "modelport.runtimes.sklearn.model",
            ["torch", "tensorflow", "xgboost", "lightgbm", "mlflow"],
        ),
    ],
)
def test_imports_pull_no_other_framework(module, forbidden):
    code = (
        f"import sys, {module}\n"
        f"bad = [m for m in {forbidden!r} if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_model_settings_json_is_never_taken_for_a_json_model(tmp_path):
    """An XGBoost model may be `model.json`: `model-settings.json` beside it is not a second
    model file."""
    from modelport.base.model import find_model_file

    (tmp_path / "model.json").write_text("{}")
    (tmp_path / "model-settings.json").write_text('{"name": "m"}')
    assert find_model_file(tmp_path, (".json", ".ubj")) == tmp_path / "model.json"


def test_a_model_dir_url_is_downloaded_without_its_secrets_in_the_log(tmp_path):
    """`--model_dir` may be a presigned or user:password URL; the storage clients log each
    URL they fetch (httpx at INFO), and those lines went out unredacted."""
    import http.server
    import threading

    iris_logistic(tmp_path / "src")
    payload = (tmp_path / "src" / "model.joblib").read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    files = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    try:
        port = files.server_address[1]
        url = (
            f"http://alice:hunter2pw@127.0.0.1:{port}/model.joblib"
            "?X-Amz-Signature=SECRETSIG&X-Amz-Credential=AKIAEXAMPLE"
        )
        server = start_server("sklearn", url, "--model_name=iris")
        try:
            body = {
                "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64", "data": IRIS_ROWS}]
            }
            answer = server.post("/v2/models/iris/infer", json=body)
            assert answer.status_code == 200
            log = server.log()
            assert "model.joblib" in log  # the download was logged...
            for secret in ("hunter2pw", "SECRETSIG", "AKIAEXAMPLE"):
                assert secret not in log  # ...without its secrets
        finally:
            server.stop()
    finally:
        files.shutdown()
