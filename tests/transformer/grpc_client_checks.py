"""grpc-v2 forwarding checks, run as a child process by test_forward.py (see grpc_checks
there): `python -m tests.transformer.grpc_client_checks served|down HOST:PORT`."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from modelport.base.forward import PredictorClient, PredictorRejected, PredictorUnavailable
from modelport.base.messages import RequestedOutput
from tests.models import IRIS_ROWS
from tests.transformer.test_forward import iris_request, run


def served(host: str) -> None:
    from sklearn.datasets import load_iris

    rows, labels = load_iris(return_X_y=True)
    response = run(PredictorClient(host, "grpc-v2"), "infer", "iris", iris_request(rows))
    assert (response.outputs[0].data == labels).mean() > 0.9
    request = iris_request(IRIS_ROWS)
    request.outputs = [RequestedOutput("predict_proba")]
    response = run(PredictorClient(host, "grpc-v2"), "infer", "iris", request)
    np.testing.assert_allclose(response.outputs[0].data.sum(axis=1), 1.0)
    assert run(PredictorClient(host, "grpc-v2"), "is_ready", "iris") is True
    assert run(PredictorClient(host, "grpc-v2"), "is_ready", "nope") is False
    with pytest.raises(PredictorRejected) as caught:
        run(PredictorClient(host, "grpc-v2"), "infer", "nope", iris_request(IRIS_ROWS))
    assert caught.value.status == 404 and caught.value.grpc_code == "NOT_FOUND"
    assert f"predictor {host}: model 'nope' not found" == caught.value.message
    with pytest.raises(PredictorRejected) as caught:
        run(PredictorClient(host, "grpc-v2"), "infer", "iris", iris_request([[1.0, 2.0]]))
    assert caught.value.status == 400
    # An answer over the client's cap is the predictor's 502, not the client's 413.
    small = PredictorClient(host, "grpc-v2", max_answer_size=200)
    with pytest.raises(PredictorUnavailable) as caught:
        run(small, "infer", "iris", iris_request(rows))
    assert caught.value.status == 502
    assert caught.value.message == (
        f"predictor {host} sent an answer of more than 200 bytes, over the limit of 200 "
        "bytes (--max_request_size)"
    )


def down(host: str) -> None:
    client = PredictorClient(host, "grpc-v2", retries=1, timeout=5)
    with pytest.raises(PredictorUnavailable) as caught:
        run(client, "infer", "iris", iris_request(IRIS_ROWS))
    assert caught.value.status == 502
    assert f"predictor {host} is unreachable" in caught.value.message


if __name__ == "__main__":
    {"served": served, "down": down}[sys.argv[1]](sys.argv[2])
    print("ok")
